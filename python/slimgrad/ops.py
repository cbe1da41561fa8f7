"""Core in-place elementwise kernels (the building blocks of the optimizers).

Every function takes C-contiguous, native-endian float32 or float64 arrays and
never copies: a wrong dtype, a strided view or a list raises ``TypeError``,
a shape mismatch or a read-only output raises ``ValueError``, and in both
cases nothing is modified.
"""

from __future__ import annotations

import numpy as np

from . import _core


def axpy_(y: np.ndarray, x: np.ndarray, alpha: float) -> np.ndarray:
    """``y += alpha * x`` in place (one fused multiply-add per element); returns ``y``.

    ``x`` must have ``y``'s dtype and shape.
    """
    _core.axpy_(y, x, float(alpha))
    return y


def squared_norm(x: np.ndarray) -> float:
    """``sum(x**2)`` as a Python float, identical for every thread count.

    float32 input is summed in float32 lanes within blocks of 4096 elements
    and the block sums are added in float64 in order.
    """
    return float(_core.squared_norm(x))


def find_nonfinite(x: np.ndarray) -> int:
    """Flat index of the first NaN or infinity in ``x``, or ``-1`` if all are finite."""
    return int(_core.find_nonfinite(x))
