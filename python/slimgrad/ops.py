"""Core in-place elementwise kernels (the building blocks of the optimizers).

Every function takes C-contiguous, native-endian float32 or float64 arrays and
never copies: a wrong dtype, a strided view or a list raises ``TypeError``,
a shape mismatch, a read-only output or an array whose address is not a
multiple of its itemsize (e.g. ``np.frombuffer`` at an odd offset) raises
``ValueError``, and in every case nothing is modified.
"""

from __future__ import annotations

import numbers

import numpy as np

from . import _core


def axpy_(y: np.ndarray, x: np.ndarray, alpha: float) -> np.ndarray:
    """``y += alpha * x`` in place; returns ``y``.

    ``x`` must have ``y``'s dtype and shape; it may be ``y`` itself (then
    ``y *= 1 + alpha``), but a view that partly overlaps ``y`` raises
    ``ValueError`` (its result would depend on the ISA and thread count).
    ``alpha`` is a real number (``TypeError`` otherwise), rounded to ``y``'s
    dtype.

    Rounding: the avx2 and avx512 kernels compute one fused multiply-add per
    element (``fma(alpha, x, y)``, rounded once) and agree bit for bit; the
    scalar kernel rounds ``alpha * x`` and then the sum, so it can differ from
    them in the last bit. Every ISA gives the same result for any thread count.
    """
    if isinstance(alpha, (bool, np.bool_)) or not isinstance(alpha, (numbers.Real, np.floating)):
        raise TypeError(f"alpha: expected a real number, got {type(alpha).__name__} {alpha!r}")
    _core.axpy_(y, x, float(alpha))
    return y


def squared_norm(x: np.ndarray) -> float:
    """``sum(x**2)`` as a Python float, identical for every thread count.

    float32 input is summed in float32 lanes within blocks of 4096 elements
    and the block sums are added in float64 in order. Across ISAs the lane
    count (and so the rounding) differs: scalar, avx2 and avx512 results can
    differ in the last bits.
    """
    return float(_core.squared_norm(x))


def find_nonfinite(x: np.ndarray) -> int:
    """Flat index of the first NaN or infinity in ``x``, or ``-1`` if all are finite
    (exact: the same on every ISA and thread count)."""
    return int(_core.find_nonfinite(x))
