"""Gradient clipping fused into the step: ``opt.step(grads, max_norm=...)``.

``clip_grad_norm_(grads, max_norm)`` followed by ``opt.step(grads)`` reads the
gradients four times (norm; scale, which also writes them; the step's
non-finite scan; the update). The fused step reads them twice and writes them
never:

1. one read: ``_core.optim.grad_norm`` gives the total norm (the reduction of
   ``clip_grad_norm_``: per-piece partials added in piece order, identical
   for any thread count) and, for free, the finiteness verdict (a finite
   total proves every element finite; a non-finite one triggers a scan that
   names the first bad element);
2. the update: each kernel multiplies the gradient by the clip factor as it
   loads it (``StepArgs.grad_scale``), in the gradient's dtype, exactly as
   ``clip_grad_norm_`` would have left it in memory, so parameters and state
   get the same bits as clip-then-step (float32/float64; see the tests).

Every buffer is validated before the read, and every error (bad buffer,
``error_if_nonfinite``, a non-finite gradient with ``nonfinite="raise"``) is
raised before any bucket is stepped: nothing is modified.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np

from .. import _core

if TYPE_CHECKING:
    from ._base import Optimizer
    from ._bucket import Bucket

__all__ = ["check_clip_args", "clip_coef", "clipped_step", "nonfinite_norm_error"]


def check_clip_args(max_norm: Any, norm_type: Any) -> tuple[float, float]:
    """``(max_norm, norm_type)`` as floats; ValueError as ``clip_grad_norm_`` raises it."""
    max_norm, norm_type = float(max_norm), float(norm_type)
    if not norm_type > 0.0:
        raise ValueError(f"norm_type: expected a number > 0 or inf, got {norm_type!r}")
    if math.isnan(max_norm):
        raise ValueError("max_norm: expected a number, got nan")
    return max_norm, norm_type


def clip_coef(total: float, max_norm: float, dtype: np.dtype) -> float:
    """torch's factor ``clamp(max_norm / (total + 1e-6), max=1)`` in ``dtype``'s arithmetic.

    float16/bfloat16 gradients use float32 (their math type in the kernels).
    NaN propagates (a NaN total, or inf / inf), as ``torch.clamp`` does.
    """
    t = np.float64 if np.dtype(dtype) == np.float64 else np.float32
    with np.errstate(all="ignore"):  # inf / inf, a max_norm beyond float32: IEEE results wanted
        c = t(max_norm) / (t(total) + t(1e-6))
    return float(c if (c < 1.0 or c != c) else t(1.0))


def nonfinite_norm_error(norm_type: float) -> RuntimeError:
    """torch's error for ``error_if_nonfinite=True``, in torch's words."""
    return RuntimeError(
        f"The total norm of order {norm_type} for gradients is non-finite, "
        "so it cannot be clipped. "
        "To disable this error and scale the gradients by the non-finite norm anyway, "
        "set error_if_nonfinite=False"
    )


def _scaled_copies(grads: list[np.ndarray], coef: float) -> list[np.ndarray]:
    """Optimizers whose kernels take no factor: clipped copies (the user's grads stay)."""
    out = []
    for g in grads:
        if g.dtype.itemsize == 2:  # float16/bfloat16: the product rounded back, as a clip would
            out.append((g.astype(np.float32) * np.float32(coef)).astype(g.dtype))
        else:
            out.append(g * g.dtype.type(coef))
    return out


def clipped_step(
    opt: Optimizer,
    buckets: list[Bucket],
    flat: list[Any],
    clip: tuple[float, float, bool],
) -> bool:
    """One step with fused clipping (see the module docstring); ``opt._step_all``'s clip branch."""
    max_norm, norm_type, error_if_nonfinite = clip
    opt._validate_all(buckets)  # every buffer, before anything is read
    total, bad = _core.optim.grad_norm(flat, None, norm_type)
    opt.last_grad_norm = total
    if error_if_nonfinite and not math.isfinite(total):
        raise nonfinite_norm_error(norm_type)
    if bad is not None and opt.nonfinite != "ignore":
        i, j = bad
        for b in buckets:
            if i in b.flat_index:
                return opt._nonfinite(b, b.flat_index.index(i), j)
    for b in buckets:
        coef = clip_coef(total, max_norm, b.dtype)
        if opt._kernel_grad_scale:
            b.grad_scale = coef
        elif coef != 1.0:
            b.grads = _scaled_copies(b.grads, coef)
    try:
        return opt._run_buckets(buckets, check=False)
    finally:
        for b in buckets:
            b.grad_scale = 1.0
