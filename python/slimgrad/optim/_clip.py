"""Gradient utilities: clip by total norm, clip by value, accumulate.

Each takes the gradients as a dict ``{name: ndarray}``, a list of ndarrays
(the structures the optimizers take) or a single ndarray; arrays are
C-contiguous float32 or float64 and are modified in place. All arrays of one
dtype are handled by one multi-tensor C++ call (GIL released, OpenMP inside).
Every argument is checked before any array is touched.
"""

from __future__ import annotations

import math
from typing import Any

from .. import _core
from ._clipstep import clip_coef, nonfinite_norm_error
from ._extra import as_array_list, by_dtype, check_float_arrays, check_like

__all__ = ["accumulate_", "clip_grad_norm_", "clip_grad_value_"]


def clip_grad_norm_(
    grads: Any, max_norm: float, norm_type: float = 2.0, error_if_nonfinite: bool = False
) -> float:
    """Scale gradients in place so that their total norm is at most ``max_norm``.

    torch.nn.utils.clip_grad_norm_ semantics: the total norm is the
    ``norm_type``-norm of all elements of all arrays together (``inf``: the
    largest absolute value); then every gradient is multiplied by
    ``min(max_norm / (total_norm + 1e-6), 1)``, computed in the gradients'
    dtype as torch does. A NaN total norm multiplies every gradient by NaN,
    as in torch, unless ``error_if_nonfinite``.

    Before an optimizer step, prefer ``opt.step(grads, max_norm=...)``: the
    same result (same bits for float32/float64) with the clip applied inside
    the update, so the gradients are read twice instead of four times and
    never written. (This function cannot defer its scaling to the next step:
    its contract, as torch's, is that the gradients hold the clipped values
    when it returns, and code between the two calls may read them.)

    The norm is a fixed-order reduction (per-chunk partials in double added in
    order), identical for any thread count.

    Parameters
    ----------
    grads : dict, list or ndarray
        float32/float64 C-contiguous arrays, modified in place.
    max_norm : float
        Largest allowed total norm.
    norm_type : float
        Order of the norm: any number > 0, or ``inf``.
    error_if_nonfinite : bool
        Raise instead of clipping if the total norm is NaN or infinite.

    Returns
    -------
    float
        The total norm of the gradients before clipping.

    Raises
    ------
    TypeError
        ``grads`` is not a dict/list/ndarray, or an array is not a
        C-contiguous float32/float64 ndarray.
    ValueError
        A read-only array, ``norm_type <= 0`` or NaN ``max_norm``.
    RuntimeError
        ``error_if_nonfinite`` and the total norm is not finite (nothing is modified).
    """
    arrays, labels = as_array_list(grads, "grads")
    check_float_arrays(arrays, labels, "grads", writable=True)
    max_norm, norm_type = float(max_norm), float(norm_type)
    if not norm_type > 0.0:
        raise ValueError(f"norm_type: expected a number > 0 or inf, got {norm_type!r}")
    if math.isnan(max_norm):
        raise ValueError("max_norm: expected a number, got nan")
    groups = by_dtype(arrays, labels)
    if len(groups) == 1 and not error_if_nonfinite:
        # The common case: norm and scaling in one multi-tensor C++ call.
        return float(
            _core.optim.clip_grad_norm(
                arrays, labels, max_norm=max_norm, norm_type=norm_type, apply=True
            )
        )
    if not arrays:
        return 0.0
    # The total as opt.step(grads, max_norm=...) computes it (one definition).
    total, _ = _core.optim.grad_norm(arrays, ["grads" + lb for lb in labels], norm_type)
    if error_if_nonfinite and not math.isfinite(total):
        raise nonfinite_norm_error(norm_type)
    for dtype, (idx, lab) in groups.items():
        # torch's arithmetic, in the gradients' dtype (as the C++ path does).
        coef = clip_coef(total, max_norm, dtype)
        if not coef == 1.0:
            _core.optim.grads_scale([arrays[i] for i in idx], lab, scale=coef)
    return float(total)


def clip_grad_value_(grads: Any, clip_value: float) -> None:
    """Clamp every gradient element to ``[-clip_value, clip_value]`` in place.

    torch.nn.utils.clip_grad_value_ semantics (NaN stays NaN).

    Parameters
    ----------
    grads : dict, list or ndarray
        float32/float64 C-contiguous arrays, modified in place.
    clip_value : float
        Bound, >= 0.

    Raises
    ------
    TypeError
        Wrong container or array type/dtype/layout.
    ValueError
        A read-only array, a negative or NaN ``clip_value``.
    """
    arrays, labels = as_array_list(grads, "grads")
    check_float_arrays(arrays, labels, "grads", writable=True)
    clip_value = float(clip_value)
    if not clip_value >= 0.0:
        raise ValueError(f"clip_value: expected a number >= 0, got {clip_value!r}")
    for idx, lab in by_dtype(arrays, labels).values():
        _core.optim.clip_grad_value([arrays[i] for i in idx], lab, clip_value=clip_value)


def accumulate_(acc: Any, grads: Any, scale: float = 1.0) -> Any:
    """``acc += scale * grads`` in place, for gradient accumulation; returns ``acc``.

    ``scale == 1`` is a plain add (no rounding of a product); otherwise one
    fused multiply-add per element on SIMD paths.

    Parameters
    ----------
    acc : dict, list or ndarray
        float32/float64 C-contiguous accumulators, modified in place.
    grads : same structure as ``acc``
        Same names (dict) or order (list), each of its accumulator's dtype and shape; only read.
    scale : float
        Finite multiplier.

    Raises
    ------
    TypeError
        Mismatched containers, wrong array type/dtype/layout.
    ValueError
        Missing/extra names, wrong count, shape mismatch, read-only accumulator,
        non-finite ``scale``.
    """
    acc_arrays, labels = as_array_list(acc, "acc")
    check_float_arrays(acc_arrays, labels, "acc", writable=True)
    if isinstance(acc, dict) != isinstance(grads, dict):
        want = "a dict by name" if isinstance(acc, dict) else "a list in the order of acc"
        raise TypeError(
            f"grads: expected {want} (the structure of acc), got {type(grads).__name__}"
        )
    if isinstance(acc, dict):
        missing = [k for k in acc if k not in grads]
        if missing:
            raise ValueError(
                f"grads: missing {missing[0]!r} (a gradient for every accumulator is required)"
            )
        extra = [k for k in grads if k not in acc]
        if extra:
            raise ValueError(f"grads: unexpected name {extra[0]!r} (not in acc)")
        g_arrays = [grads[k] for k in acc]
    else:
        g_arrays, _ = as_array_list(grads, "grads")
        if len(g_arrays) != len(acc_arrays):
            raise ValueError(
                f"grads: expected {len(acc_arrays)} arrays (one per accumulator), "
                f"got {len(g_arrays)}"
            )
    for a, g, label in zip(acc_arrays, g_arrays, labels):
        check_like(g, "grads" + label, a)
    scale = float(scale)
    if not math.isfinite(scale):
        raise ValueError(f"scale: expected a finite number, got {scale!r}")
    for idx, lab in by_dtype(acc_arrays, labels).values():
        _core.optim.accumulate(
            [acc_arrays[i] for i in idx], [g_arrays[i] for i in idx], lab, scale=scale
        )
    return acc
