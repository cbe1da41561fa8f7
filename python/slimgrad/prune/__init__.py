"""Pruning: exact magnitude masks, N:M, structured, gradual schedules, sparse storage.

Masks are bool arrays of the weight's shape, ``True`` = kept. Selection runs
in C++ (an O(n) radix select on the bits of ``|w|``, identical for every ISA
and thread count); see the function docstrings for the exact tie rules.
"""

from __future__ import annotations

from ._calibrated import sparsegpt, wanda_mask
from ._masks import (
    global_magnitude_counts,
    global_magnitude_masks,
    magnitude_mask,
    nm_mask,
    random_mask,
    slice_norms,
    structured_mask,
)
from ._pruner import PolynomialSchedule, Pruner, SparsityReport, sensitivity
from ._sparse import SparseWeight, pack_sparse, prefer_sparse, sparse_linear, sparse_matmul
from ._storage import (
    CSR,
    Compressed24,
    compress_24,
    decompress_24,
    from_csr,
    pack_mask,
    storage_report,
    to_csr,
    unpack_mask,
)

__all__ = [
    "CSR",
    "Compressed24",
    "PolynomialSchedule",
    "Pruner",
    "SparseWeight",
    "SparsityReport",
    "compress_24",
    "decompress_24",
    "from_csr",
    "global_magnitude_counts",
    "global_magnitude_masks",
    "magnitude_mask",
    "nm_mask",
    "pack_mask",
    "pack_sparse",
    "prefer_sparse",
    "random_mask",
    "sensitivity",
    "slice_norms",
    "sparse_linear",
    "sparse_matmul",
    "sparsegpt",
    "storage_report",
    "structured_mask",
    "to_csr",
    "unpack_mask",
    "wanda_mask",
]
