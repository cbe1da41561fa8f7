"""Products with pruned weights kept compressed: ``y = x @ W.T`` from 2:4 or CSR.

The kernels (C++, every ISA, threaded over output rows in fixed chunks so the
thread count never changes a bit) read the compressed arrays directly:
:class:`Compressed24` (``compress_24``) and :class:`CSR` (``to_csr``). They
are not always faster than a dense BLAS product: :func:`prefer_sparse` is
the measured cost model that says which to use for a shape (see
``docs/sparse.md`` for the measurements behind it).
"""

from __future__ import annotations

import numpy as np

from .. import _core
from ._storage import CSR, Compressed24, _describe

__all__ = ["prefer_sparse", "sparse_matmul"]

_core_sparse = _core.sparse


def _as_x(x: object, in_features: int) -> np.ndarray:
    if not isinstance(x, np.ndarray) or x.dtype != np.float32:
        raise TypeError(f"x: expected a float32 ndarray, got {_describe(x)}")
    if x.ndim < 1 or x.shape[-1] != in_features:
        raise ValueError(f"x: expected shape (..., {in_features}), got {x.shape}")
    return np.ascontiguousarray(x.reshape(-1, in_features))


def sparse_matmul(x: np.ndarray, weight: Compressed24 | CSR) -> np.ndarray:
    """``x @ W.T`` for a weight ``W`` (out, in) stored compressed, without densifying it.

    Parameters
    ----------
    x : ndarray, float32, shape (..., in)
        Any layout (a strided ``x`` is copied once to C order). Only read.
    weight : Compressed24 or CSR
        ``compress_24(W)`` (float32 values, ``in`` divisible by 4) or
        ``to_csr(W)`` (float32 data, int32 indices, int32/int64 indptr).

    Returns
    -------
    ndarray, float32, shape (..., out)
        A new array. Float32 accumulation: equal to ``x @ W_masked.T`` up to
        float32 rounding of the sum (the order differs between ISAs, never
        between thread counts).

    Raises
    ------
    TypeError
        ``weight`` of another type, or arrays of the wrong dtype.
    ValueError
        Mismatched shapes, a 2:4 packing that ``compress_24`` cannot have
        written, or an inconsistent CSR structure. Nothing is modified.
    """
    if isinstance(weight, Compressed24):
        values, positions = weight
        if not isinstance(values, np.ndarray) or values.ndim != 2:
            raise ValueError(f"weight: expected a 2-D 2:4 weight, got values {_describe(values)}")
        x2 = _as_x(x, weight.shape[1])
        y = _core_sparse.gemm24(x2, values, positions)
    elif isinstance(weight, CSR):
        data, indices, indptr = weight
        x2 = _as_x(x, weight.shape[1])
        y = _core_sparse.spmm_csr(x2, data, indices, indptr, weight.shape[0])
    else:
        raise TypeError(f"weight: expected a Compressed24 or CSR, got {_describe(weight)}")
    return y.reshape(*np.shape(x)[:-1], y.shape[1])


# Cost model: sparse time / dense time ~ (a + b * batch) * density_factor,
# fitted per format from `slimgrad bench --suite sparse` (docs/sparse.md).
# A sparse kernel runs when it measured faster than NumPy float32 for that
# format up to this batch size, at the stated density.
_MAX_BATCH_24 = 64
_CSR_BREAK_EVEN_DENSITY = {1: 0.45, 8: 0.2, 64: 0.1, 512: 0.05}


def prefer_sparse(weight: Compressed24 | CSR, batch: int) -> bool:
    """Whether :func:`sparse_matmul` is expected to beat a dense float32 product.

    A measured rule, not a guarantee (see ``docs/sparse.md`` for the figures
    it comes from, on AMD Zen 4 with AVX-512): 2:4 wins up to batch
    ``_MAX_BATCH_24``; CSR wins below a density that shrinks as the batch
    grows (its gathers cost more per product than BLAS's packed FMAs). Needs
    the AVX-512 kernels: on lower ISAs the portable kernels are used and
    dense is preferred.

    Parameters
    ----------
    weight : Compressed24 or CSR
    batch : int
        Rows of ``x`` (the product of its leading dimensions).
    """
    if _core.active_isa() != "avx512":
        return False
    if isinstance(weight, Compressed24):
        return batch <= _MAX_BATCH_24
    if isinstance(weight, CSR):
        rows, cols = weight.shape
        density = weight.data.size / max(1, rows * cols)
        for limit, max_density in sorted(_CSR_BREAK_EVEN_DENSITY.items()):
            if batch <= limit:
                return density <= max_density
        return density <= min(_CSR_BREAK_EVEN_DENSITY.values())
    raise TypeError(f"weight: expected a Compressed24 or CSR, got {_describe(weight)}")
