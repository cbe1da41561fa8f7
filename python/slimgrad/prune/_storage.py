"""Storage formats for pruned weights, each with an honest byte count.

- Bit-packed masks: 1 bit per entry (``pack_mask`` / ``unpack_mask``).
- CSR: kept values + column indices + row pointers (``to_csr`` / ``from_csr``),
  interoperable with ``scipy.sparse.csr_matrix``.
- Compressed 2:4: the 2 kept values of every 4 plus their 2-bit positions,
  4 positions per byte (``compress_24`` / ``decompress_24``): 0.5625x the
  dense bytes for float32, 0.625x for float16.

``nbytes`` counts every array a format needs to rebuild the weight (not the
shape tuple); ``storage_report`` compares them with the dense bytes.
"""

from __future__ import annotations

import math

import numpy as np

from ._masks import _check_array, nm_mask

__all__ = [
    "CSR",
    "Compressed24",
    "compress_24",
    "decompress_24",
    "from_csr",
    "pack_mask",
    "storage_report",
    "to_csr",
    "unpack_mask",
]


def pack_mask(mask: np.ndarray) -> np.ndarray:
    """Pack a bool mask to 1 bit per entry: ``uint8`` array of ``ceil(size / 8)`` bytes.

    Bit order is ``np.packbits``'s default (``bitorder="big"``) over the
    C-order flattening: entry ``i`` is bit ``7 - i % 8`` (the most
    significant bit first) of byte ``i // 8``; the last byte is zero-padded.
    So ``pack_mask(m) == np.packbits(m.ravel())``.

    Raises ``TypeError`` if ``mask`` is not a bool ndarray.
    """
    if not isinstance(mask, np.ndarray) or mask.dtype != np.bool_:
        raise TypeError(f"mask: expected a bool ndarray, got {_describe(mask)}")
    return np.packbits(mask, axis=None)


def unpack_mask(packed: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Inverse of :func:`pack_mask`: a new bool array of ``shape``.

    Raises ``TypeError`` if ``packed`` is not a uint8 ndarray and
    ``ValueError`` if it does not hold exactly ``ceil(prod(shape) / 8)`` bytes.
    """
    if not isinstance(packed, np.ndarray) or packed.dtype != np.uint8:
        raise TypeError(f"packed: expected a uint8 ndarray, got {_describe(packed)}")
    shape = tuple(int(s) for s in shape)
    size = math.prod(shape)
    if packed.size != (size + 7) // 8:
        raise ValueError(
            f"packed: expected {(size + 7) // 8} bytes for shape {shape}, got {packed.size}"
        )
    return np.unpackbits(packed.ravel(), count=size).astype(bool).reshape(shape)


def _describe(obj: object) -> str:
    if isinstance(obj, np.ndarray):
        return f"{obj.dtype} array of shape {obj.shape}"
    return type(obj).__name__


class CSR(tuple):
    """``(data, indices, indptr)`` of a 2-D array in compressed sparse rows.

    Unpacks like a tuple; also has ``shape``, ``nbytes`` (the three arrays),
    ``dense_nbytes`` and ``to_scipy()`` (a ``scipy.sparse.csr_matrix``
    sharing the arrays).
    """

    shape: tuple[int, int]

    def __new__(
        cls, data: np.ndarray, indices: np.ndarray, indptr: np.ndarray, shape: tuple[int, int]
    ) -> CSR:
        self = super().__new__(cls, (data, indices, indptr))
        self.shape = (int(shape[0]), int(shape[1]))
        return self

    def __getnewargs__(self):
        return (*self, self.shape)

    def __repr__(self) -> str:
        # Never the arrays themselves: a weight matrix prints thousands of numbers.
        return (
            f"CSR(shape={self.shape}, nnz={self[0].size:,}, dtype={self[0].dtype}, "
            f"index={self[1].dtype}, nbytes={self.nbytes:,} of {self.dense_nbytes:,} dense)"
        )

    data = property(lambda self: self[0])
    indices = property(lambda self: self[1])
    indptr = property(lambda self: self[2])

    @property
    def nbytes(self) -> int:
        return int(self[0].nbytes + self[1].nbytes + self[2].nbytes)

    @property
    def dense_nbytes(self) -> int:
        return int(self.shape[0] * self.shape[1] * self[0].itemsize)

    def to_scipy(self):
        """The same matrix as ``scipy.sparse.csr_matrix`` (needs scipy; shares the arrays)."""
        from scipy import sparse

        return sparse.csr_matrix((self[0], self[1], self[2]), shape=self.shape)


def _index_dtype(limit: int) -> type:
    # scipy's rule: int32 while every index fits, int64 beyond.
    return np.int32 if limit <= np.iinfo(np.int32).max else np.int64


def to_csr(w: np.ndarray, mask: np.ndarray | None = None) -> CSR:
    """Compressed sparse rows of a 2-D array.

    Parameters
    ----------
    w : ndarray, 2-D
        Any dtype; only read.
    mask : bool ndarray of ``w.shape``, optional
        Entries to store (``True`` = kept, as returned by the mask
        functions). Default: the nonzero entries of ``w``.

    Returns
    -------
    CSR
        ``(data, indices, indptr)``: ``data`` (``w.dtype``) holds the stored
        values row by row, ``indices`` their columns, ``indptr[r]:indptr[r+1]``
        the range of row ``r`` (int32, or int64 when a count exceeds int32),
        as in ``scipy.sparse.csr_matrix``. ``.shape``, ``.nbytes``.

    Raises
    ------
    TypeError / ValueError
        ``w`` not a 2-D ndarray; ``mask`` not a bool array of its shape.
    """
    w = _check_array(w)
    if w.ndim != 2:
        raise ValueError(f"w: expected a 2-D array, got shape {w.shape}")
    if mask is None:
        keep = w != 0
    else:
        if not isinstance(mask, np.ndarray) or mask.dtype != np.bool_ or mask.shape != w.shape:
            raise ValueError(
                f"mask: expected a bool array of shape {w.shape}, got {_describe(mask)}"
            )
        keep = mask
    counts = keep.sum(axis=1)
    nnz = int(counts.sum())
    indptr = np.zeros(w.shape[0] + 1, dtype=_index_dtype(nnz))
    np.cumsum(counts, out=indptr[1:])
    indices: np.ndarray = np.nonzero(keep)[1].astype(_index_dtype(w.shape[1]), copy=False)
    return CSR(w[keep], indices, indptr, w.shape)


def from_csr(csr, shape: tuple[int, int] | None = None) -> np.ndarray:
    """Dense array from CSR: a :class:`CSR`, a ``(data, indices, indptr)``
    tuple with ``shape``, or any ``scipy.sparse`` matrix (``.toarray()``).

    Entries not stored are zero. Raises ``ValueError`` for inconsistent
    arrays or a missing shape.
    """
    if hasattr(csr, "toarray") and not isinstance(csr, tuple):
        return np.asarray(csr.toarray())
    if shape is None:
        shape = getattr(csr, "shape", None)
        if shape is None:
            raise ValueError("shape: required for a plain (data, indices, indptr) tuple")
    data, indices, indptr = csr
    rows, cols = (int(s) for s in shape)
    data, indices, indptr = np.asarray(data), np.asarray(indices), np.asarray(indptr)
    if (
        indptr.shape != (rows + 1,)
        or indptr[0] != 0
        or indptr[-1] != data.size
        or indices.size != data.size
    ):
        raise ValueError(
            f"csr: arrays inconsistent with shape {(rows, cols)}: "
            f"data {data.size}, indices {indices.size}, indptr {indptr.size}"
        )
    out_of_range = indices.size and (indices.min() < 0 or indices.max() >= cols)
    if np.any(np.diff(indptr) < 0) or out_of_range:
        raise ValueError("csr: indptr must be non-decreasing and indices within the columns")
    out = np.zeros((rows, cols), dtype=data.dtype)
    row_of = np.repeat(np.arange(rows), np.diff(indptr))
    out[row_of, indices] = data
    return out


class Compressed24(tuple):
    """``(values, indices)`` of a 2:4-compressed array.

    ``values`` has the weight's shape with the last axis halved (the 2 kept
    entries of every group of 4, in order); ``indices`` is a flat uint8
    array with each kept entry's position in its group (0..3) as 2 bits,
    4 per byte, the first in the low bits: byte ``j`` holds positions
    ``4j .. 4j+3`` of ``values.ravel()``. ``.shape`` (the dense shape),
    ``.nbytes``, ``.dense_nbytes``.
    """

    shape: tuple[int, ...]

    def __new__(cls, values: np.ndarray, indices: np.ndarray) -> Compressed24:
        self = super().__new__(cls, (values, indices))
        self.shape = (*values.shape[:-1], values.shape[-1] * 2)
        return self

    def __getnewargs__(self):
        return tuple(self)

    values = property(lambda self: self[0])
    indices = property(lambda self: self[1])

    @property
    def nbytes(self) -> int:
        return int(self[0].nbytes + self[1].nbytes)

    @property
    def dense_nbytes(self) -> int:
        return int(self[0].nbytes * 2)


def compress_24(w: np.ndarray) -> Compressed24:
    """Compress to 2:4 along the last axis: kept values + 2-bit positions.

    The kept entries are those of ``nm_mask(w, 2, 4)`` (the 2 largest
    ``|w|`` of each group of 4), so ``decompress_24(*compress_24(w))`` equals
    ``w * nm_mask(w, 2, 4)``: lossless for a weight already 2:4 sparse.

    Parameters
    ----------
    w : ndarray
        float32 / float64 / float16 / bfloat16, any layout, at least 1-D,
        last axis divisible by 4. Only read.

    Returns
    -------
    Compressed24
        ``(values, indices)``; see the class. Raises like :func:`nm_mask`.
    """
    keep = nm_mask(w, 2, 4, axis=-1)
    values = w[keep].reshape(*w.shape[:-1], w.shape[-1] // 2)
    positions = np.nonzero(keep.reshape(-1, 4))[1].astype(np.uint8)
    pad = (-positions.size) % 4
    if pad:
        positions = np.concatenate([positions, np.zeros(pad, np.uint8)])
    q = positions.reshape(-1, 4)
    indices = q[:, 0] | (q[:, 1] << 2) | (q[:, 2] << 4) | (q[:, 3] << 6)
    return Compressed24(values, indices)


def decompress_24(values: np.ndarray, indices: np.ndarray) -> np.ndarray:
    """Dense array from :func:`compress_24`'s ``(values, indices)``.

    The result has ``values``' dtype and shape with the last axis doubled;
    the two pruned entries of each group are zero. Raises ``ValueError``
    when ``indices`` has the wrong length or positions that are not two
    distinct increasing slots of a group.
    """
    values = _check_array(values, "values")
    if not isinstance(indices, np.ndarray) or indices.dtype != np.uint8:
        raise TypeError(f"indices: expected a uint8 ndarray, got {_describe(indices)}")
    if values.ndim == 0:
        raise ValueError("values: expected at least one dimension")
    kept = values.size
    if kept % 2 or indices.size != (kept + 3) // 4:
        raise ValueError(
            f"indices: expected {(kept + 3) // 4} bytes for {kept} values, got {indices.size}"
        )
    flat = indices.ravel()
    positions = np.stack([(flat >> s) & 3 for s in (0, 2, 4, 6)], axis=1).ravel()[:kept]
    pairs = positions.reshape(-1, 2).astype(np.intp)
    if np.any(pairs[:, 0] >= pairs[:, 1]):
        raise ValueError("indices: each group's two positions must be distinct and increasing")
    out = np.zeros((kept // 2, 4), dtype=values.dtype)
    rows = np.arange(kept // 2)
    v = values.reshape(-1, 2)
    out[rows, pairs[:, 0]] = v[:, 0]
    out[rows, pairs[:, 1]] = v[:, 1]
    return out.reshape(*values.shape[:-1], values.shape[-1] * 2)


def storage_report(w: np.ndarray, mask: np.ndarray | None = None) -> dict[str, int]:
    """Bytes to store ``w`` pruned by ``mask`` (default: its nonzeros) in each format.

    Keys: ``dense``; ``bitmask`` (kept values + packed mask); ``csr`` (2-D
    only); ``2:4`` (when the last axis is divisible by 4 and every group of 4
    keeps at most 2). Nothing is estimated: each figure is the ``nbytes`` of
    the arrays the format really produces.
    """
    w = _check_array(w)
    keep = (w != 0) if mask is None else mask
    report = {"dense": int(w.nbytes), "bitmask": int(w[keep].nbytes + pack_mask(keep).nbytes)}
    if w.ndim == 2:
        report["csr"] = to_csr(w, keep).nbytes
    if (
        w.ndim >= 1
        and w.shape[-1] % 4 == 0
        and w.size
        and keep.reshape(-1, 4).sum(axis=1).max() <= 2
    ):
        report["2:4"] = compress_24(np.where(keep, w, np.zeros((), w.dtype))).nbytes
    return report
