"""Argument checks shared by the Hessian-based methods (GPTQ, SparseGPT).

Both take one Linear layer's weight ``w`` of shape ``(out, in)`` and the
Hessian of its inputs ``H = X^T X`` of shape ``(in, in)`` (from calibration,
any positive scale: only ratios and the damping relative to ``mean(diag H)``
matter). Inputs are only read; conversions to the working dtypes are
explicit copies made here.
"""

from __future__ import annotations

import numbers

import numpy as np


def is_float(dtype: np.dtype) -> bool:
    """float16/32/64 or ml_dtypes' bfloat16 (whose NumPy kind is 'V')."""
    return dtype.kind == "f" or dtype.name == "bfloat16"


def describe(x: object) -> str:
    """``"float32 array of shape (3, 4)"`` for an ndarray, else the type's name."""
    if isinstance(x, np.ndarray):
        return f"{x.dtype.name} array of shape {x.shape}"
    return type(x).__name__


def check_channel_stats(
    values: object, label: str, meaning: str, cols: int, dtype: type = np.float64
) -> np.ndarray:
    """A per-input-channel statistic (shape ``(cols,)``, finite in ``dtype``, ``>= 0``)
    converted to ``dtype``.

    ``TypeError`` / ``ValueError`` naming ``label``; ``meaning`` says what it holds.
    """
    if not isinstance(values, np.ndarray) or not is_float(values.dtype):
        raise TypeError(f"{label}: expected a float ndarray ({meaning}), got {describe(values)}")
    if values.shape != (cols,):
        raise ValueError(f"{label}: expected shape ({cols},), got {values.shape}")
    out = values.astype(dtype)
    if not np.all(np.isfinite(out)) or np.any(out < 0):
        raise ValueError(f"{label}: expected finite values >= 0")
    return out


def check_layer(w: object, H: object) -> tuple[np.ndarray, np.ndarray]:
    """``(w as float32 C-contiguous, H as float64 C-contiguous)``, validated.

    Raises ``TypeError`` for non-float arrays, ``ValueError`` for shapes,
    non-finite values (naming the first index) or an asymmetric ``H``.
    """
    for value, label in ((w, "w"), (H, "H")):
        if not isinstance(value, np.ndarray) or not is_float(value.dtype):
            raise TypeError(f"{label}: expected a floating-point ndarray, got {describe(value)}")
    if w.ndim != 2:
        raise ValueError(f"w: expected a 2-d array (out, in), got shape {w.shape}")
    if H.shape != (w.shape[1], w.shape[1]):
        raise ValueError(
            f"H: expected shape {(w.shape[1], w.shape[1])} (in, in) for w of shape {w.shape}, "
            f"got {H.shape}"
        )
    w32 = np.ascontiguousarray(w, dtype=np.float32)
    h64 = np.ascontiguousarray(H, dtype=np.float64)
    for arr, label in ((w32, "w"), (h64, "H")):
        bad = np.flatnonzero(~np.isfinite(arr))
        if bad.size:
            index = tuple(int(i) for i in np.unravel_index(bad[0], arr.shape))
            raise ValueError(f"{label}: non-finite value {arr.flat[bad[0]]} at index {index}")
    if h64.size and not np.allclose(h64, h64.T, rtol=1e-5, atol=1e-8 * float(np.abs(h64).max())):
        raise ValueError("H: expected a symmetric matrix (X^T X), got an asymmetric one")
    return w32, h64


def check_real(value: object, label: str, low: float, high: float = float("inf")) -> float:
    """A real number in ``[low, high]`` (``TypeError`` / ``ValueError`` naming ``label``)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{label}: expected a number, got {type(value).__name__}")
    value = float(value)
    if not low <= value <= high:  # also rejects NaN
        raise ValueError(f"{label}: expected a number in [{low}, {high}], got {value!r}")
    return value


def check_int(value: object, label: str, low: int) -> int:
    """An int ``>= low`` (``TypeError`` / ``ValueError`` naming ``label``)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{label}: expected an int, got {type(value).__name__}")
    if value < low:
        raise ValueError(f"{label}: expected an int >= {low}, got {value}")
    return int(value)
