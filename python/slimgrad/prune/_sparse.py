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
from ._storage import CSR, Compressed24, _describe, compress_24, decompress_24, to_csr

__all__ = ["SparseWeight", "pack_sparse", "prefer_sparse", "sparse_linear", "sparse_matmul"]

_core_sparse = _core.sparse


# Cache line: the batch <= 8 kernels load 16 values at a time (a zmm), and a
# load straddling two lines costs two (a 2:4 product at batch 1 measured
# 15-21 % slower on values at a 16-byte offset than on 64-byte aligned ones).
_ALIGN = 64


def _kernel_isa() -> str:
    """The sparse kernels' unit for the active level: every level above avx512
    (avx512_vnni, avx512_bf16, amx) runs the avx512 kernels."""
    isa = str(_core.active_isa())
    return "avx512" if isa.startswith(("avx512", "amx")) else isa


def _frozen(a: np.ndarray) -> np.ndarray:
    """A C-order copy of ``a`` over an immutable buffer: nobody can write it
    (``setflags(write=True)`` raises), so a check made once stays true.

    The copy starts on a cache line when the allocator allows it: a bytes
    object cannot be written after it is made, so the padding in front is
    chosen from the address of a first try (same size, so the allocator
    usually hands out the same block again); after a few misses the copy
    stays unaligned (same results, slower).
    """
    data = np.ascontiguousarray(a).tobytes()

    def copy(pad: int) -> bytes:  # one allocation of len(data) + _ALIGN bytes every time
        return b"".join((bytes(pad), data, bytes(_ALIGN - pad)))

    pad = 0
    buf = copy(pad)
    for _ in range(8):
        addr = np.frombuffer(buf, np.uint8).ctypes.data
        if (addr + pad) % _ALIGN == 0:
            break
        pad = -addr % _ALIGN
        del buf  # free the block first, so the next copy can get it back
        buf = copy(pad)
    return np.frombuffer(buf, a.dtype, count=a.size, offset=pad).reshape(a.shape)


class SparseWeight:
    """A compressed weight checked once, for :func:`sparse_matmul` (see :func:`pack_sparse`).

    Holds immutable arrays (``arrays``), the ``format`` (``"2:4"`` or
    ``"csr"``), their ``layout``, the dense ``shape`` (out, in), ``nbytes``
    and ``density``. The arrays are copies of ``(values, positions)`` or
    ``(data, indices, indptr)`` (``layout`` ``"2:4"``, ``"csr"``), except
    for a weight packed while a SIMD level is active: then its values are
    regrouped into slices of 16 rows that advance together, one SIMD lane
    per row: a 2:4 weight under AVX2 or AVX-512 (``layout="2:4 slices"``:
    ``values, ctrl``, the same bytes as the 2:4 arrays but for rows padded
    to 16), a CSR under AVX-512 (``layout="csr slices"``: ``values, index,
    base, starts, rows``, with padding about 1.6x the stored values at 90 %
    sparsity; ``rows`` is empty, or W's rows in slice order when ordering
    them by their count of stored values saves a sixth of the steps, as on
    magnitude-pruned weights; docs/sparse.md).
    Because the arrays cannot change, products skip the per-call structure
    checks (the 2:4 positions pass, CSR's indptr and column-range passes):
    at batch 1 on MiniLM-sized weights those passes cost as much as the
    product.
    """

    __slots__ = ("_product", "arrays", "density", "format", "layout", "nbytes", "shape")

    def __init__(self, weight: Compressed24 | CSR) -> None:
        self.layout = "2:4" if isinstance(weight, Compressed24) else "csr"
        isa = _kernel_isa()
        if isinstance(weight, Compressed24):
            values, positions = weight
            self.format = "2:4"
            if isa in ("avx2", "avx512"):
                # Regrouped into 16-row slices (slimgrad/sparse.hpp) after
                # gemm24's checks, made by pack_24_slices itself: batch 2-8
                # 1.4-3.6x the row-major kernel (AVX2 2.5-3x), batch 1 up to
                # 1.4x (AVX2 2x), above 8 within a few % (docs/sparse.md).
                self.layout = "2:4 slices"
                self.arrays = tuple(
                    _frozen(a) for a in _core_sparse.pack_24_slices(values, positions)
                )
            else:
                self.arrays = (_frozen(values), _frozen(positions))
            self.density = 0.5
        elif isinstance(weight, CSR):
            self.format = "csr"
            if isa == "avx512":
                # Regrouped into 16-row slices (slimgrad/sparse.hpp) after the same
                # checks as spmm_csr's, made by pack_csr_slices itself: 1.5-3.4x the
                # CSR kernel on MiniLM's shapes at batch 1-512, even with it on a
                # memory-bound 4096x4096 batch 1 (docs/sparse.md).
                self.layout = "csr slices"
                self.arrays = tuple(
                    _frozen(a) for a in _core_sparse.pack_csr_slices(*weight, *weight.shape)
                )
            else:
                self.arrays = tuple(_frozen(a) for a in weight)
            self.density = weight.data.size / max(1, weight.shape[0] * weight.shape[1])
        else:
            raise TypeError(f"weight: expected a Compressed24 or CSR, got {_describe(weight)}")
        self.shape = (int(weight.shape[0]), int(weight.shape[-1]))
        self.nbytes = int(sum(a.nbytes for a in self.arrays))
        # x (batch, in) float32 C order -> y: the kernel with the structure
        # checks skipped. Positional arguments held by the closure one by one
        # (keywords cost ~0.3 us a call; unpacking a tuple and looking the
        # function up in the module another ~0.1 us at batch 1 on 384x384).
        out_f, in_f = self.shape
        if self.layout == "csr slices":
            spmm, (values, index, base, starts, rows) = _core_sparse.spmm_slices, self.arrays
            self._product = lambda x: spmm(x, values, index, base, starts, rows, out_f, in_f)
            return
        if self.layout == "2:4 slices":
            gemm, (values, ctrl) = _core_sparse.gemm24_slices, self.arrays
            self._product = lambda x: gemm(x, values, ctrl, out_f, in_f)
            return
        # The full checks, once, on the copies: an empty x runs them alone.
        packed = (
            Compressed24(*self.arrays) if self.format == "2:4" else CSR(*self.arrays, self.shape)
        )
        sparse_matmul(np.empty((0, self.shape[1]), np.float32), packed)
        if self.format == "2:4":
            values, positions = self.arrays
            self._product = lambda x: _core_sparse.gemm24(x, values, positions, True)
        else:
            args = (*self.arrays, self.shape[0], True, self.shape[1])  # prechecked, in
            self._product = lambda x: _core_sparse.spmm_csr(x, *args)

    def __repr__(self) -> str:
        return (
            f"SparseWeight(format={self.format!r}, layout={self.layout!r}, shape={self.shape}, "
            f"density={self.density:.3f}, nbytes={self.nbytes:,})"
        )


def pack_sparse(weight: Compressed24 | CSR) -> SparseWeight:
    """Check a compressed weight once and keep it ready for fast products.

    Parameters
    ----------
    weight : Compressed24 or CSR
        ``compress_24(W)`` (2-D, float32 values) or ``to_csr(W)`` (float32
        data, int32 indices, int32/int64 indptr). Only read; copied.

    Returns
    -------
    SparseWeight
        Immutable copies of the arrays, checked: :func:`sparse_matmul` with
        it skips the structure checks every raw ``Compressed24`` / ``CSR``
        call pays. With a SIMD level active the values are regrouped into
        16-row slices: a 2:4 weight's (AVX2 and AVX-512, ``layout="2:4
        slices"``) runs 1.4-3.6x faster at batch 2-8, a CSR's (AVX-512,
        ``"csr slices"``) 1.5-3.4x on MiniLM-sized weights.
        ``prune.sparse_linear`` packs its weight this way.

    Raises
    ------
    TypeError, ValueError
        As :func:`sparse_matmul` for a bad weight; nothing is modified.
    """
    return SparseWeight(weight)


def _as_x(x: object, in_features: int) -> np.ndarray:
    if not isinstance(x, np.ndarray) or x.dtype != np.float32:
        raise TypeError(f"x: expected a float32 ndarray, got {_describe(x)}")
    if x.ndim < 1 or x.shape[-1] != in_features:
        raise ValueError(f"x: expected shape (..., {in_features}), got {x.shape}")
    rows = int(np.prod(x.shape[:-1]))  # not -1: with in_features 0 it is ambiguous
    return np.ascontiguousarray(x.reshape(rows, in_features))


def sparse_matmul(x: np.ndarray, weight: Compressed24 | CSR | SparseWeight) -> np.ndarray:
    """``x @ W.T`` for a weight ``W`` (out, in) stored compressed, without densifying it.

    Parameters
    ----------
    x : ndarray, float32, shape (..., in)
        Any layout (a strided ``x`` is copied once to C order). Only read.
    weight : Compressed24, CSR or SparseWeight
        ``compress_24(W)`` (float32 values, ``in`` divisible by 4) or
        ``to_csr(W)`` (float32 data, int32 indices, int32/int64 indptr),
        checked on every call; or ``pack_sparse(...)`` of one, checked once.

    Returns
    -------
    ndarray, float32, shape (..., out)
        A new array. Float32 accumulation: equal to ``x @ W_masked.T`` up to
        float32 rounding of the sum (the order differs between ISAs, never
        between thread counts; a CSR weight in ``"csr slices"`` layout
        gives the same bits on every ISA, in an order of its own, so not
        always the bits of the unpacked CSR; likewise a 2:4 weight in
        ``"2:4 slices"`` layout).

    Raises
    ------
    TypeError
        ``weight`` of another type, or arrays of the wrong dtype.
    ValueError
        Mismatched shapes, a 2:4 packing that ``compress_24`` cannot have
        written, or an inconsistent CSR structure. Nothing is modified.
    """
    if type(weight) is SparseWeight:  # checked when packed: dtype/shape of x only
        # The common call (x float32, 2-D, C order, in columns) goes straight
        # to the kernel, which checks x itself and raises TypeError or
        # ValueError before it reads anything; any other x comes back here to
        # be copied or reshaped, or refused with the message below. (At batch
        # 1 on MiniLM's 384x384 Python's checks of x took 0.25 us of a
        # 2.2 us call.)
        try:
            return weight._product(x)
        except (TypeError, ValueError):
            pass
        if not isinstance(x, np.ndarray) or x.dtype != np.float32:
            raise TypeError(f"x: expected a float32 ndarray, got {_describe(x)}")
        out_f, in_f = weight.shape
        if x.ndim == 2 and x.shape[1] == in_f and x.flags.c_contiguous:
            x2 = x
        else:
            x2 = _as_x(x, in_f)
        y = weight._product(x2)
        return y if x2 is x else y.reshape(*x.shape[:-1], out_f)
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


# Cost model, from `slimgrad bench --suite sparse` on AMD EPYC (Zen 4; AVX-512
# and SLIMGRAD_ISA=avx2), weights packed once, NumPy (OpenBLAS) on as many
# threads as slimgrad; the tables are in docs/sparse.md ("Cost model").
# 1 thread: 2:4 beats NumPy float32 at batch 8 on every shape (1.7-2.6x).
# Above batch 8 (the panel path: 4-vector x panels, 64 columns with AVX-512,
# 32 with AVX2) AVX-512 beats it at 64 (1.2-2.2x) and 512 (1.2-1.4x) on
# every shape, not at 1024-2048 on 384x384 and 384x1536 (0.8-0.9x); AVX2 at
# 64 (1.4-2.2x), at 512 only about even (0.96-1.20x). At batch 1 2:4
# streams half the bytes: 1.2-2.9x. CSR at 90 % sparsity: batch 8 on every
# shape (1.5-3.8x), batch 1 reliably only on 4096x4096 (3.5-5x; 0.4-1.4x on
# the MiniLM shapes), never at 64 or 512.
_MAX_BATCH_24 = {"avx512": 512, "avx2": 64}
_MAX_BATCH_CSR = 16
_MIN_WEIGHTS_CSR_BATCH1 = 4_000_000
# CSR was measured at 90 % sparsity; denser weights go dense (not measured).
_CSR_MAX_DENSITY = 0.1
# 2 threads and more: BLAS gains more from the second core than the sparse
# kernels do. Products under 2^20 multiply-adds run on one thread (waking a
# PASSIVE OpenMP worker costs more), against OpenBLAS's two spinning
# threads: 2:4 at batch 1 wins on weights that small BLAS barely threads
# (384x384: 1.4-1.6x) and on large ones (threaded: 4096x4096 1.4x), not in
# between (1536x384 and 384x1536: 0.73-0.90x); at batch 2-64 it is about
# even or better on every shape (0.85-2.1x); at 512 it wins only on
# 4096x4096 (1.3-1.4x; the MiniLM shapes 0.64-0.78x).
_MAX_WEIGHTS_24_BATCH1_MT = 1 << 18
# The 2:4 slices (pack_sparse) under AVX-512, Intel Xeon (Emerald Rapids), 2
# threads: batch 1 1.1-2.6x NumPy on all four shapes over four runs
# (1536x384 and 384x1536 included), so at batch 1 they win there; the other rules
# hold as for the row-major kernel (batch 2-64 1.1-5.1x, 512 on MiniLM's
# shapes 0.93-1.01x; docs/sparse.md, "2:4 slices"). AVX2's batch 1 on the
# mid-sized shapes stays with the rule above (0.72-1.06x against OpenBLAS's
# AVX-512 GEMV on that CPU).
_LARGE_WEIGHTS_MT = 4_000_000
_MAX_BATCH_24_MT = 64
# CSR slices (pack_sparse under AVX-512), Intel Xeon (Emerald Rapids), 1 and 2
# threads, on the four shapes at densities 0.1-0.5 (docs/sparse.md, "CSR
# slices"): density <= 0.1 beat NumPy float32 at every batch 1-512 (1.1-9x),
# <= 0.2 up to batch 64 (1.03-5.4x; 0.77-1.08x at 512), <= 0.5 at batch 8
# (1.3-2.6x; 0.5-1.5x at batch 1, 0.6-1.2x at 64).
_SLICES_RULES = ((0.1, 1, 512), (0.2, 1, 64), (0.5, 2, 8))  # (density <=, batch from, to)


def _prefer_24_threaded(isa: str, batch: int, weights: int, sliced: bool) -> bool:
    """2:4 at >= 2 threads (see the comment above)."""
    large = weights >= _LARGE_WEIGHTS_MT
    if batch == 1:
        if sliced and isa == "avx512":
            return True
        return weights <= _MAX_WEIGHTS_24_BATCH1_MT or large
    if batch <= _MAX_BATCH_24_MT:
        return batch <= _MAX_BATCH_24[isa]
    return large and batch <= _MAX_BATCH_24[isa]


def prefer_sparse(
    weight: Compressed24 | CSR | SparseWeight, batch: int, threads: int | None = None
) -> bool:
    """Whether :func:`sparse_matmul` is expected to beat a dense float32 product.

    A rule read off measurements (``docs/sparse.md``, AMD Zen 4, 1 and 2
    threads, NumPy's BLAS on as many threads), not a guarantee. On one
    thread, 2:4: ``1 <= batch <= 512`` with AVX-512, ``<= 64`` with AVX2.
    On two or more, 2:4: batch 1 for weights of at most 2^18 or at least
    4M entries (any size for a ``"2:4 slices"`` weight under AVX-512),
    batch 2-64 always (AVX2 too), 65-512 (AVX-512) from 4M entries. CSR at
    density <= 10 % (any thread count): ``2 <= batch <= 16``, and batch 1
    for weights of at least 4M entries. CSR packed into
    slices (``pack_sparse`` under AVX-512; any thread count): density <=
    10 % at batch 1-512, <= 20 % at 1-64, <= 50 % at 2-8. Never on the
    scalar ISA.

    Parameters
    ----------
    weight : Compressed24, CSR or SparseWeight
    batch : int
        Rows of ``x`` (the product of its leading dimensions).
    threads : int, optional
        The thread count the product will run with; default
        ``slimgrad.get_num_threads()``.

    Raises
    ------
    TypeError
        ``weight`` is none of these.
    """
    if isinstance(weight, SparseWeight):
        fmt, density = weight.layout, weight.density
    elif isinstance(weight, Compressed24):
        fmt, density = "2:4", 0.5
    elif isinstance(weight, CSR):
        fmt, density = "csr", weight.data.size / max(1, weight.shape[0] * weight.shape[1])
    else:
        raise TypeError(
            f"weight: expected a Compressed24, CSR or SparseWeight, got {_describe(weight)}"
        )
    isa = _kernel_isa()
    if isa not in _MAX_BATCH_24 or batch < 1:
        return False
    weights = weight.shape[0] * weight.shape[-1]
    if threads is None:
        threads = _core.get_num_threads()
    if fmt in ("2:4", "2:4 slices"):  # one rule: the slices are at or above row-major's figures
        if threads >= 2:
            return _prefer_24_threaded(isa, batch, weights, fmt == "2:4 slices")
        return batch <= _MAX_BATCH_24[isa]
    if fmt == "csr slices":
        return isa == "avx512" and any(
            density <= most and lo <= batch <= hi for most, lo, hi in _SLICES_RULES
        )
    if density > _CSR_MAX_DENSITY or batch > _MAX_BATCH_CSR:
        return False
    return batch > 1 or weights >= _MIN_WEIGHTS_CSR_BATCH1


def sparse_linear(layer, fmt: str | None = "2:4"):
    """Run ``layer.forward`` (an ``nn.Linear``) on a compressed copy of its pruned weight.

    Parameters
    ----------
    layer : nn.Linear
        float32; its weight already pruned (2:4 for ``"2:4"``).
    fmt : {"2:4", "csr"} or None
        ``"2:4"``: :func:`compress_24` of the weight, which must already be
        2:4 sparse (e.g. ``w *= nm_mask(w, 2, 4)``); ``"csr"``: :func:`to_csr`
        of its nonzeros; ``None``: back to the dense product.

    Returns
    -------
    Compressed24, CSR or None
        The compressed copy; the layer uses :func:`pack_sparse` of it
        (checked once, so a call pays no structure checks).

    The copy is a snapshot: call again after changing the weight. Each
    ``forward`` uses :func:`sparse_matmul` where :func:`prefer_sparse`
    expects it to win and the dense weight otherwise (same values up to
    float32 rounding); ``backward`` is dense.

    Raises
    ------
    TypeError
        ``layer`` has no float32 2-D ``weight`` / ``set_product``.
    ValueError
        An unknown ``fmt``, or ``"2:4"`` for a weight that is not 2:4 sparse.
        The layer is unchanged.
    """
    weight = getattr(layer, "weight", None)
    if not hasattr(layer, "set_product") or not isinstance(weight, np.ndarray):
        raise TypeError(f"layer: expected an nn.Linear, got {type(layer).__name__}")
    if fmt is None:
        layer.set_product(None)
        return None
    if weight.dtype != np.float32 or weight.ndim != 2:
        raise TypeError(
            f"layer: the sparse kernels need a float32 2-D weight, got {_describe(weight)}"
        )
    sparse: Compressed24 | CSR
    if fmt == "2:4":
        if weight.shape[1] % 4:
            raise ValueError(f"fmt: 2:4 needs in_features divisible by 4, got {weight.shape[1]}")
        sparse = compress_24(weight)
        if not np.array_equal(decompress_24(*sparse), weight):
            raise ValueError(
                "layer: weight is not 2:4 sparse (prune it with nm_mask(w, 2, 4) first)"
            )
    elif fmt == "csr":
        sparse = to_csr(weight)
    else:
        raise ValueError(f"fmt: expected '2:4', 'csr' or None, got {fmt!r}")
    packed = pack_sparse(sparse)
    in_features = weight.shape[1]

    def product(x: np.ndarray) -> np.ndarray | None:
        if not prefer_sparse(packed, x.size // max(1, in_features)):
            return None
        return sparse_matmul(x, packed)

    product.__name__ = "2:4" if fmt == "2:4" else "csr"
    layer.set_product(product)
    return sparse
