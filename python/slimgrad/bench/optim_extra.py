"""Extra optimizer cases, run as part of the optim suite (after its streaming
probe): Lion, AdamW8bit (vs fp32 AdamW, ours and torch's fused),
clip_grad_norm_ (vs torch), on 16M float32 parameters.

``bytes`` of a case is the traffic the operation itself needs, the same for
every implementation of the case, so "of probe" compares each with the
machine's streaming speed:
  - Lion: read p, g, m; write p, m (20 B/elem);
  - AdamW8bit: read p, g (8), 2 code bytes; write p (4), 2 code bytes, plus
    2 x 4 B of scales per 256 elements read and written (~16.06 B/elem). The
    fp32 peers in that case move 28 B/elem: for them the GB/s column is the
    8-bit traffic over their time (an "effective" rate); compare times;
  - clip_grad_norm_: read g for the norm, read and write g to scale (12 B/elem)
    when it clips; the norm alone (4 B/elem) when the norm is below max_norm
    (ours then skips the multiply by 1; torch does it).
Our optimizers by default also read the gradients once more to check them for
NaN/inf first; the ``nonfinite=ignore`` rows skip that (torch's behaviour).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from .. import optim
from . import Case, optional_import
from .optim import evictor

DEFAULT_SIZE = 1 << 24  # 16M float32 parameters
CALLS_PER_BATCH = 1  # as the optim module's cases (see there)
LR = 1e-4


def _lion(size: int) -> Case:
    rng = np.random.default_rng(1)
    p = rng.standard_normal(size).astype(np.float32)
    g = (rng.standard_normal(size) * 1e-2).astype(np.float32)
    opt = optim.Lion([p], lr=LR, weight_decay=0.1)
    impls = {"slimgrad": lambda: opt.step([g])}
    p2 = p.copy()
    opt2 = optim.Lion([p2], lr=LR, weight_decay=0.1, nonfinite="ignore")
    impls["slimgrad nonfinite=ignore"] = lambda: opt2.step([g])
    p3, m3, s = p.copy(), np.zeros_like(p), np.empty_like(p)
    b1, b2 = np.float32(0.9), np.float32(0.99)

    def numpy_lion():
        np.multiply(m3, b1, out=s)
        np.add(s, np.float32(1 - b1) * g, out=s)
        np.sign(s, out=s)
        np.multiply(p3, np.float32(1 - LR * 0.1), out=p3)
        np.multiply(s, np.float32(-LR), out=s)
        np.add(p3, s, out=p3)
        np.multiply(m3, b2, out=m3)
        np.add(m3, np.float32(1 - b2) * g, out=m3)

    impls["numpy formula"] = numpy_lion
    return Case("Lion float32", impls, bytes=20 * size)


def _adamw8bit(size: int, torch) -> Case:
    rng = np.random.default_rng(2)
    p = rng.standard_normal(size).astype(np.float32)
    g = (rng.standard_normal(size) * 1e-2).astype(np.float32)
    opt = optim.AdamW8bit([p], lr=LR)
    impls = {"slimgrad": lambda: opt.step([g])}
    p2 = p.copy()
    opt2 = optim.AdamW8bit([p2], lr=LR, nonfinite="ignore")
    impls["slimgrad nonfinite=ignore"] = lambda: opt2.step([g])
    adamw = getattr(optim, "AdamW", None)
    if adamw is not None:
        p3 = p.copy()
        opt3 = adamw([p3], lr=LR, nonfinite="ignore")
        impls["slimgrad AdamW fp32 (ignore)"] = lambda: opt3.step([g])
    if torch is not None:
        tp = torch.from_numpy(p.copy()).requires_grad_()
        tp.grad = torch.from_numpy(g)
        topt = torch.optim.AdamW([tp], lr=LR, fused=True)

        def step():
            with torch.no_grad():
                topt.step()

        impls["torch AdamW fused fp32"] = step
    blocks = (size + 255) // 256
    return Case(
        "AdamW8bit float32",
        impls,
        bytes=16 * size + 16 * blocks,
        note="fp32 peers move 28 B/elem; their GB/s is the 8-bit traffic over their time",
    )


def _clip(size: int, torch, clips: bool) -> Case:
    """64 arrays. ``clips``: every call lowers max_norm by 1 % below the last
    norm, so every call scales (12 B/elem; ``setup`` restores the gradients
    before each timed batch); else max_norm = 1e9: the norm alone, 4 B/elem
    (torch multiplies by 1 anyway, ours and the NumPy version skip that)."""
    rng = np.random.default_rng(3)
    n_arrays = 64
    orig = [(rng.standard_normal(size // n_arrays)).astype(np.float32) for _ in range(n_arrays)]
    n = sum(g.size for g in orig)
    gs = [g.copy() for g in orig]
    ng = [g.copy() for g in orig]
    limits = {"slimgrad": 1e9, "torch": 1e9, "numpy": 1e9}

    def max_norm(who: str) -> float:
        if clips:
            limits[who] *= 0.99
        return limits[who]

    def numpy_clip():
        m = max_norm("numpy")
        total = np.sqrt(sum(float(np.dot(g, g)) for g in ng))
        limits["numpy"] = min(limits["numpy"], total)
        coef = np.float32(min(m / (total + 1e-6), 1.0))
        if coef != 1:
            for g in ng:
                g *= coef

    def ours():
        total = optim.clip_grad_norm_(gs, max_norm("slimgrad"))
        limits["slimgrad"] = min(limits["slimgrad"], total)

    impls = {"slimgrad": ours}
    tgs = []
    if torch is not None:
        tps = []
        for g in orig:
            t = torch.zeros(g.shape).requires_grad_()
            t.grad = torch.from_numpy(g.copy())
            tps.append(t)
            tgs.append(t.grad.numpy())

        def torch_clip():
            total = torch.nn.utils.clip_grad_norm_(tps, max_norm("torch"), foreach=True)
            limits["torch"] = min(limits["torch"], float(total))

        impls["torch clip_grad_norm_"] = torch_clip
    impls["numpy dot + scale"] = numpy_clip

    evict = evictor(size)

    def setup():
        if clips:
            for o, *copies in zip(orig, gs, ng, *([tgs] if tgs else [])):
                for c in copies:
                    np.copyto(c, o)
            for k in limits:
                limits[k] = 1e9
        # then the probe over other arrays, as before every optim case's call;
        # twice here: once left 3 x 64 MiB of just-restored copies partly cached
        # (182 % of the probe for ours), twice streams 512 MiB, past the L3
        evict()
        evict()

    label = "clips" if clips else "norm only"
    return Case(
        f"clip_grad_norm_ 64 arr, {label}", impls, bytes=(12 if clips else 4) * n, setup=setup
    )


def cases(size: int) -> Iterator[Case]:
    torch = optional_import("torch")
    yield _lion(size)
    yield _adamw8bit(size, torch)
    yield _clip(size, torch, clips=True)
    yield _clip(size, torch, clips=False)
