"""Distill suite: the fused KD loss (forward + gradient) and the MSE hint.

``size`` is the number of classes V; the batch is 512 rows, so the default
is the issue's 512 x 32768 float32 logits (a 32k-token vocabulary). Every
implementation computes the same loss and the gradient with respect to the
student logits: torch as forward + ``backward()`` (what a training loop
runs), NumPy as the straightforward vectorized formula.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np

from ..distill import feature_loss, kd_loss
from . import Case, optional_import

DEFAULT_SIZE = 1 << 15
BATCH = 512
TEMPERATURE, ALPHA = 2.0, 0.5


def _numpy_kd(s: np.ndarray, t: np.ndarray, y: np.ndarray) -> tuple[float, np.ndarray]:
    b = s.shape[0]
    rows = np.arange(b)

    def log_softmax(x: np.ndarray) -> np.ndarray:
        x = x - x.max(axis=1, keepdims=True)
        return x - np.log(np.exp(x).sum(axis=1, keepdims=True))

    ls, lt, l1 = log_softmax(s / TEMPERATURE), log_softmax(t / TEMPERATURE), log_softmax(s)
    ps, pt, q = np.exp(ls), np.exp(lt), np.exp(l1)
    kl = float((pt * (lt - ls)).sum()) / b
    ce = -float(l1[rows, y].sum()) / b
    q[rows, y] -= 1
    grad = (ALPHA * TEMPERATURE / b) * (ps - pt) + ((1 - ALPHA) / b) * q
    return ALPHA * TEMPERATURE**2 * kl + (1 - ALPHA) * ce, grad


def cases(size: int) -> Iterator[Case]:
    torch = optional_import("torch")
    rng = np.random.default_rng(0)
    b, v = BATCH, size
    s = (rng.standard_normal((b, v), dtype=np.float32) * 3).astype(np.float32)
    t = (rng.standard_normal((b, v), dtype=np.float32) * 3).astype(np.float32)
    y = rng.integers(0, v, b)
    grad = np.empty_like(s)

    kd: dict[str, Callable[[], object]] = {
        "slimgrad": lambda: kd_loss(s, t, y, temperature=TEMPERATURE, alpha=ALPHA, out=grad),
        "slimgrad (new grad)": lambda: kd_loss(s, t, y, temperature=TEMPERATURE, alpha=ALPHA),
        "numpy": lambda: _numpy_kd(s, t, y),
    }
    if torch is not None:
        fn = torch.nn.functional
        ts = torch.from_numpy(s).requires_grad_()
        tt, ty = torch.from_numpy(t), torch.from_numpy(y)

        def torch_kd():
            ts.grad = None
            kl = fn.kl_div(
                fn.log_softmax(ts / TEMPERATURE, 1),
                fn.log_softmax(tt / TEMPERATURE, 1),
                reduction="batchmean",
                log_target=True,
            )
            loss = ALPHA * TEMPERATURE**2 * kl + (1 - ALPHA) * fn.cross_entropy(ts, ty)
            loss.backward()
            return loss.item()

        kd["torch fwd+bwd"] = torch_kd
    yield Case(f"kd_loss {b}x{v} float32", kd, bytes=3 * s.nbytes)

    # Top-k teacher (k = 64), the usual way to ship a large teacher's logits.
    k = 64
    idx = np.ascontiguousarray(np.argpartition(-t, k, axis=1)[:, :k]).astype(np.int64)
    vals = np.ascontiguousarray(np.take_along_axis(t, idx, axis=1))
    topk: dict[str, Callable[[], object]] = {
        "slimgrad": lambda: kd_loss(
            s, vals, y, temperature=TEMPERATURE, alpha=ALPHA, teacher_indices=idx, out=grad
        )
    }
    if torch is not None:
        tv, ti = torch.from_numpy(vals), torch.from_numpy(idx)

        def torch_topk():
            ts.grad = None
            log_ps = fn.log_softmax(ts / TEMPERATURE, 1).gather(1, ti)
            log_pt = fn.log_softmax(tv / TEMPERATURE, 1)
            kl = (log_pt.exp() * (log_pt - log_ps)).sum() / b
            loss = ALPHA * TEMPERATURE**2 * kl + (1 - ALPHA) * fn.cross_entropy(ts, ty)
            loss.backward()
            return loss.item()

        topk["torch fwd+bwd"] = torch_topk
    yield Case(f"kd_loss top-{k} {b}x{v} float32", topk, bytes=2 * s.nbytes)

    n = b * v
    fs, ft = s.reshape(n), t.reshape(n)
    fgrad = grad.reshape(n)

    def numpy_mse():
        d = fs - ft
        return float(np.dot(d, d)) / n, d * np.float32(2 / n)

    mse: dict[str, Callable[[], object]] = {
        "slimgrad": lambda: feature_loss(fs, ft, out=fgrad),
        "numpy": numpy_mse,
    }
    if torch is not None:
        tfs, tft = torch.from_numpy(fs).requires_grad_(), torch.from_numpy(ft)

        def torch_mse():
            tfs.grad = None
            loss = fn.mse_loss(tfs, tft)
            loss.backward()
            return loss.item()

        mse["torch fwd+bwd"] = torch_mse
    yield Case(f"feature_loss {n} float32", mse, bytes=3 * fs.nbytes)
