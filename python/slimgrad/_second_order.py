"""Argument checks and the inverse-Hessian factor shared by the Hessian-based
methods (GPTQ, SparseGPT).

Both take one Linear layer's weight ``w`` of shape ``(out, in)`` and the
Hessian of its inputs ``H = X^T X`` of shape ``(in, in)`` (from calibration,
any positive scale: only ratios and the damping relative to ``mean(diag H)``
matter). Inputs are only read; conversions to the working dtypes are
explicit copies made here.
"""

from __future__ import annotations

import numbers

import numpy as np

from . import _core


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


def _lower_inverse(L: np.ndarray) -> np.ndarray:
    """``L^-1`` of a lower-triangular ``L`` by halves: ``[[A, 0], [B, C]]^-1 =
    [[A^-1, 0], [-C^-1 B A^-1, C^-1]]``, so the work is two GEMMs per level
    (BLAS) and small leaf inverses. NumPy has no ``trtri``."""
    n = L.shape[0]
    if n <= 64:
        return np.tril(np.linalg.inv(L))
    k = n // 2
    out = np.zeros_like(L)
    a_inv = _lower_inverse(L[:k, :k])
    c_inv = _lower_inverse(L[k:, k:])
    out[:k, :k] = a_inv
    out[k:, k:] = c_inv
    out[k:, :k] = -(c_inv @ (L[k:, :k] @ a_inv))
    return out


def inverse_factor(h64: np.ndarray, act_order: bool, damp: float) -> tuple[np.ndarray, ...]:
    """``(order, dead, U)`` for ``_core.gptq``: what ``inverse_factor`` in
    ``cpp/src/gptq.cpp`` computes (same order, dead columns and damping), with
    the Cholesky factorization and triangular inverse in float32 through
    NumPy's LAPACK / BLAS, as the GPTQ reference code does in torch. Eigen's
    float64 path (compiled for the baseline ISA) is 5-10x slower on the
    1536-input layers; measured on the tests' cases and MiniLM's shapes, the
    float32 factor gives the same codes as the float64 one (docs/compress.md,
    "Speed"). ``H`` is scaled by ``1 / mean(diag H)`` for float32 and ``U``
    scaled back. If the float32 factorization fails (not positive definite
    in float32), Eigen's float64 one decides, and raises ``ValueError`` if it
    fails too.

    Parameters
    ----------
    h64 : float64 ndarray (n, n), C-contiguous, symmetric (only read).
    """
    n = h64.shape[0]
    diag = np.diag(h64).copy()
    dead = diag == 0
    diag[dead] = 1.0
    order = np.argsort(-diag, kind="stable") if act_order else np.arange(n)
    rev = order[::-1]  # Cholesky of the order-reversed H: U = J L^-1 J
    hp = h64[np.ix_(rev, rev)]
    hp[np.diag_indices(n)] = diag[rev]
    mean = float(np.mean(diag))
    hp[np.diag_indices(n)] += damp * mean
    scale = mean if np.isfinite(mean) and mean > 0 else 1.0
    try:
        L = np.linalg.cholesky((hp / scale).astype(np.float32))
    except np.linalg.LinAlgError:
        return _core.gptq.inverse_factor(h64, act_order, damp)
    U = _lower_inverse(L)[::-1, ::-1].astype(np.float64)
    U /= np.sqrt(scale)
    if not np.all(np.isfinite(U)):
        return _core.gptq.inverse_factor(h64, act_order, damp)
    return order.astype(np.int64), dead, np.ascontiguousarray(U)
