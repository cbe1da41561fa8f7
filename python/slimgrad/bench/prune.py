"""Prune suite: exact magnitude masks, global masks, 2:4 masks, fused mask application.

Peers do what a user would write instead: NumPy's ``np.partition`` on
``|w|`` then a comparison, torch's ``kthvalue`` / ``topk`` on ``abs()``, and
a NumPy 2:4 mask by ``argsort`` within groups of 4. The peers only find a
threshold (ties are not resolved to an exact count); ours also guarantees
the exact count and the tie rule.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np

from .. import _core, prune
from . import Case, optional_import

DEFAULT_SIZE = 4096  # a 4096 x 4096 float32 matrix (64 MiB)
SPARSITY = 0.5


def _numpy_magnitude(w: np.ndarray, k: int) -> np.ndarray:
    a = np.abs(w)
    kth = np.partition(a.ravel(), k - 1)[k - 1]
    return a > kth


def _numpy_24(w: np.ndarray) -> np.ndarray:
    g = np.abs(w).reshape(-1, 4)
    order = np.argsort(g, axis=1, kind="stable")
    keep = np.ones(g.shape, dtype=bool)
    np.put_along_axis(keep, order[:, :2], False, axis=1)
    return keep.reshape(w.shape)


def cases(size: int) -> Iterator[Case]:
    torch = optional_import("torch")
    rng = np.random.default_rng(0)
    w = rng.standard_normal((size, size), dtype=np.float32)
    k = int(round(SPARSITY * w.size))
    tw = torch.from_numpy(w) if torch is not None else None

    impls: dict[str, Callable[[], object]] = {
        "slimgrad": lambda: prune.magnitude_mask(w, SPARSITY),
        "numpy partition": lambda: _numpy_magnitude(w, k),
    }
    if torch is not None:

        def torch_kth():
            a = tw.abs()
            return a > torch.kthvalue(a.flatten(), k).values

        def torch_topk():
            a = tw.abs().flatten()
            keep = torch.zeros(a.numel(), dtype=torch.bool)
            keep[torch.topk(a, a.numel() - k, sorted=False).indices] = True
            return keep

        impls["torch kthvalue"] = torch_kth
        impls["torch topk"] = torch_topk
    yield Case(f"magnitude_mask {size}x{size} f32", impls, bytes=w.nbytes * 4 + w.size)

    # A half-precision checkpoint's weights, ranked from their own 2 bytes.
    # NumPy's partition of bfloat16 itself (ml_dtypes' generic compare) took
    # ~2 s, so its peer ranks a float32 copy, as a NumPy user would.
    ml_dtypes = optional_import("ml_dtypes")
    if ml_dtypes is not None:
        h = w.astype(ml_dtypes.bfloat16)
        impls = {
            "slimgrad": lambda: prune.magnitude_mask(h, SPARSITY),
            "numpy astype+partition": lambda: _numpy_magnitude(h.astype(np.float32), k),
        }
        if torch is not None:
            th = torch.from_numpy(h.view(np.int16)).view(torch.bfloat16)

            def torch_kth_bf16():
                a = th.abs()
                return a > torch.kthvalue(a.flatten(), k).values

            impls["torch kthvalue"] = torch_kth_bf16
        yield Case(f"magnitude_mask {size}x{size} bf16", impls, bytes=h.nbytes + w.size)

    # Global: the same number of weights as 16 layers of different shapes.
    rows = size * size // 16 // 1024
    layers = {
        f"l{i}": rng.standard_normal((rows + 8 * (i % 3), 1024), dtype=np.float32)
        for i in range(16)
    }
    total = sum(a.size for a in layers.values())
    kg = int(round(SPARSITY * total))

    def numpy_global():
        a = np.abs(np.concatenate([v.ravel() for v in layers.values()]))
        kth = np.partition(a, kg - 1)[kg - 1]
        return {n: np.abs(v) > kth for n, v in layers.items()}

    impls = {
        "slimgrad": lambda: prune.global_magnitude_masks(layers, SPARSITY),
        "numpy concat+partition": numpy_global,
    }
    if torch is not None:
        tl = {n: torch.from_numpy(v) for n, v in layers.items()}

        def torch_global():
            kth = torch.kthvalue(torch.cat([v.abs().flatten() for v in tl.values()]), kg).values
            return {n: v.abs() > kth for n, v in tl.items()}

        impls["torch cat+kthvalue"] = torch_global
    yield Case("global_magnitude_masks 16 arrays", impls, bytes=total * 4 * 4 + total)

    impls = {
        "slimgrad": lambda: prune.nm_mask(w, 2, 4),
        "numpy argsort groups": lambda: _numpy_24(w),
    }
    if torch is not None:

        def torch_24():
            g = tw.abs().reshape(-1, 4)
            keep = torch.zeros(g.shape, dtype=torch.bool)
            keep.scatter_(1, torch.topk(g, 2, dim=1).indices, True)
            return keep.reshape(tw.shape)

        impls["torch topk groups"] = torch_24
    yield Case(f"nm_mask 2:4 {size}x{size} f32", impls, bytes=w.nbytes + w.size)

    # The Pruner's per-step work: zero a weight and two Adam moments.
    mask = prune.magnitude_mask(w, SPARSITY)
    p, m, v = w.copy(), w.copy(), w.copy()
    impls = {"slimgrad": lambda: _core.prune.apply_masks_([mask], [[p, m, v]], [["p", "m", "v"]])}

    def numpy_apply():
        for a in (p, m, v):
            np.multiply(a, mask, out=a)

    impls["numpy multiply x3"] = numpy_apply
    if torch is not None:
        tp, tm, tv, tmask = (torch.from_numpy(a) for a in (p, m, v, mask))
        impls["torch mul_ x3"] = lambda: torch._foreach_mul_([tp, tm, tv], [tmask, tmask, tmask])
    yield Case("apply mask: weight + 2 moments", impls, bytes=3 * 2 * w.nbytes + w.size)
