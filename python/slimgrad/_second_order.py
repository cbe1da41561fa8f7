"""Argument checks and the Hessian factor shared by the Hessian-based
methods (GPTQ, SparseGPT).

Both take one Linear layer's weight ``w`` of shape ``(out, in)`` and the
Hessian of its inputs ``H = X^T X`` of shape ``(in, in)`` (from calibration,
any positive scale: only ratios and the damping relative to ``mean(diag H)``
matter). Inputs are only read; conversions to the working dtypes are
explicit copies made here.
"""

from __future__ import annotations

import contextlib
import contextvars
import numbers
import threading
from collections.abc import Iterator, Sequence
from typing import cast

import numpy as np

from . import _core
from ._blas import blas_one_thread


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


def check_layers(
    ws: Sequence[object], H: object, labels: Sequence[str]
) -> tuple[list[np.ndarray], np.ndarray]:
    """:func:`check_layer` for weights that read the same inputs (one ``H``,
    checked once): ``([each w as float32 C-contiguous], H as float64)``;
    messages name a weight by its entry of ``labels``."""
    for value, label in (*zip(ws, labels), (H, "H")):
        if not isinstance(value, np.ndarray) or not is_float(value.dtype):
            raise TypeError(f"{label}: expected a floating-point ndarray, got {describe(value)}")
    arrays = cast(list[np.ndarray], list(ws))
    H = cast(np.ndarray, H)
    for w, label in zip(arrays, labels):
        if w.ndim != 2:
            raise ValueError(f"{label}: expected a 2-d array (out, in), got shape {w.shape}")
        if H.shape != (w.shape[1], w.shape[1]):
            raise ValueError(
                f"H: expected shape {(w.shape[1], w.shape[1])} (in, in) for {label} of shape "
                f"{w.shape}, got {H.shape}"
            )
    w32s = [np.ascontiguousarray(w, dtype=np.float32) for w in arrays]
    h64 = np.ascontiguousarray(H, dtype=np.float64)
    hessian = _core.gptq.check_hessian(h64, 1e-5, 1e-8)  # one pass; atol 1e-8 * max|H|
    checked: list[tuple[np.ndarray, str]] = [*zip(w32s, labels)]
    if hessian == 1:
        checked.append((h64, "H"))
    for arr, label in checked:
        bad = np.flatnonzero(~np.isfinite(arr))
        if bad.size:
            index = tuple(int(i) for i in np.unravel_index(bad[0], arr.shape))
            raise ValueError(f"{label}: non-finite value {arr.flat[bad[0]]} at index {index}")
    if hessian == 2:
        raise ValueError("H: expected a symmetric matrix (X^T X), got an asymmetric one")
    return w32s, h64


def check_layer(w: object, H: object) -> tuple[np.ndarray, np.ndarray]:
    """``(w as float32 C-contiguous, H as float64 C-contiguous)``, validated.

    Raises ``TypeError`` for non-float arrays, ``ValueError`` for shapes,
    non-finite values (naming the first index) or an asymmetric ``H``.
    """
    (w32,), h64 = check_layers([w], H, ["w"])
    return w32, h64


def output_error(d: np.ndarray, h: np.ndarray) -> float:
    """``trace(D H D^T)``, the output error over the calibration inputs of a
    weight change ``D`` (float32, C-contiguous, (out, in)) for a symmetric
    float64 ``H``, as ``<H, D^T D>`` without forming ``D^T D``
    (``_core.nn.hessian_inner``: the calibration Hessian kernel's register
    tiles, float32 within 256 rows and float64 above, each dotted with H's
    upper triangle; slimgrad's threads, the same bits on any count): half the
    flops of ``D @ H`` and no factor of ``H``."""
    return float(_core.nn.hessian_inner(d, h))


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


class _Arena:
    """Scratch matrices for the factor, taken from one float64 buffer (last
    in, first out: :meth:`mark` / :meth:`release`). The buffer is the calling
    thread's and kept between calls (:func:`_scratch`): NumPy temporaries of
    a few MB are fresh pages from the kernel on every call, whose faults and
    zeroing took ~17 % of the factor's CPU time at n = 1536 (perf, rusage),
    and a fresh scratch per call cost 60 % more than the factor at n = 384."""

    def __init__(self, buf: np.ndarray) -> None:
        self.buf = buf
        self.top = 0

    def take(self, rows: int, cols: int) -> np.ndarray:
        end = self.top + rows * cols
        if end > self.buf.size:
            raise RuntimeError("factor scratch exhausted")  # a bound in _cholesky is wrong
        out: np.ndarray = self.buf[self.top : end].reshape(rows, cols)
        self.top = end
        return out

    def mark(self) -> int:
        return self.top

    def release(self, mark: int) -> None:
        self.top = mark


_SCRATCH = threading.local()


# Largest scratch kept between calls: 2^23 doubles (64 MB; n = 1536 needs 38 MB).
# Page faults cost O(n^2) against the factor's O(n^3), so above this the fresh
# buffer's faults are a small part of the call, and a thread does not hold
# gigabytes after factoring one large layer (n = 11008: 1.9 GB).
_KEEP_DOUBLES = 1 << 23


def _scratch(size: int) -> _Arena:
    """An arena of at least ``size`` doubles: the calling thread's buffer,
    grown to the largest ``size`` asked up to :data:`_KEEP_DOUBLES` and kept
    between calls (``n^2 + (n + 2)^2`` doubles for a GPTQ factor: 38 MB for
    n = 1536); a larger one is the call's own and freed with it."""
    if size > _KEEP_DOUBLES:
        return _Arena(np.empty(size))
    buf = getattr(_SCRATCH, "buf", None)
    if buf is None or buf.size < size:
        buf = _SCRATCH.buf = np.empty(size)
    return _Arena(buf)


_LEAF = 64  # factor leaves (LAPACK's Cholesky / inverse); 128 was 20 % slower at n = 384

# The recursions below split a size k at k - k // 2 down to leaves of at most
# _LEAF, so the triangular solves on S or any diagonal block of it meet the
# leaves of the factorization: their inverses are computed once, with the
# leaf's Cholesky factor, and kept in ``v`` (rows of S, _LEAF columns: the
# leaf [a, b) of S holds inv(S[a:b, a:b]) in v[a:b, :b - a]). Inverting them
# in every solve instead took ~12 ms of the 42 at n = 1536 (0.1 ms per call).


def _leaf_inverses(s: np.ndarray, v: np.ndarray) -> None:
    """``v`` (rows of ``s``, ``_LEAF`` columns) for an upper ``s``."""
    n = s.shape[0]
    if n <= _LEAF:
        v[:, :n] = np.linalg.inv(s)
        return
    k = n - n // 2
    _leaf_inverses(s[:k, :k], v[:k])
    _leaf_inverses(s[k:, k:], v[k:])


def _solve_upper(t: np.ndarray, v: np.ndarray, b: np.ndarray, out: np.ndarray, ws: _Arena) -> None:
    """``out = t^-1 b`` for an upper triangular ``t`` (``trsm``; NumPy has
    none) by halves, so the work is GEMMs: ``k^2 m / 2`` multiply-adds for
    ``t`` k x k and ``b`` k x m; ``v``: ``t``'s leaf inverses."""
    k = t.shape[0]
    if k <= _LEAF:
        np.matmul(v[:, :k], b, out=out)
        return
    h = k - k // 2
    _solve_upper(t[h:, h:], v[h:], b[h:], out[h:], ws)
    mark = ws.mark()
    rhs = np.matmul(t[:h, h:], out[h:], out=ws.take(h, b.shape[1]))
    np.subtract(b[:h], rhs, out=rhs)
    _solve_upper(t[:h, :h], v[:h], rhs, out[:h], ws)
    ws.release(mark)


def _solve_right(t: np.ndarray, v: np.ndarray, b: np.ndarray, out: np.ndarray, ws: _Arena) -> None:
    """``out = b t^-1`` for an upper triangular ``t`` by halves (as
    :func:`_solve_upper`, from the right)."""
    k = t.shape[0]
    if k <= _LEAF:
        np.matmul(b, v[:, :k], out=out)
        return
    h = k - k // 2
    _solve_right(t[:h, :h], v[:h], b[:, :h], out[:, :h], ws)
    mark = ws.mark()
    rhs = np.matmul(out[:, :h], t[:h, h:], out=ws.take(b.shape[0], k - h))
    np.subtract(b[:, h:], rhs, out=rhs)
    _solve_right(t[h:, h:], v[h:], rhs, out[:, h:], ws)
    ws.release(mark)


def _cholesky(h: np.ndarray, ws: _Arena | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``(S, v)``: the upper ``S`` with ``S S^T = h`` (the Cholesky factor of
    the order-reversed ``h``, reversed: what GPTQ's loop reads, ``U = S^-1``
    being the paper's factor) and the inverses of its leaves (``v``, above),
    by halves so the work is GEMMs (``potrf`` as a recursion on NumPy's BLAS:
    LAPACK's own, through ``np.linalg.cholesky``, took 70 ms for n = 1536
    here against 31): with ``h = [[A, B], [B^T, C]]``, ``S22`` from ``C``,
    ``S12 = B S22^-T`` (:func:`_solve_upper`), ``S11`` from the Schur
    complement ``A - S12 S12^T`` (``syrk``: NumPy spots ``a @ a.T``).
    ``n^3 / 6`` multiply-adds, half of the former factor and inverse.
    Temporaries come from ``ws`` (default: the thread's scratch). Raises
    ``np.linalg.LinAlgError`` if ``h`` is not positive definite."""
    n = h.shape[0]
    out = np.empty_like(h)
    v = np.empty((n, _LEAF))
    # A level of n (halves k >= m) holds S12^T (m k), the Schur complement (k^2)
    # and a solve's right-hand side (<= m k / 2): below (n + 2)^2.
    _cholesky_into(h, out, v, _scratch((n + 2) ** 2) if ws is None else ws)
    return out, v


def _cholesky_into(h: np.ndarray, out: np.ndarray, v: np.ndarray, ws: _Arena) -> None:
    """:func:`_cholesky` written into ``out`` and ``v`` (views of the
    results, so the halves are not copied up the recursion)."""
    n = h.shape[0]
    if n <= _LEAF:
        out[...] = np.linalg.cholesky(h[::-1, ::-1])[::-1, ::-1]
        v[:, :n] = np.linalg.inv(out)
        return
    k = n - n // 2
    _cholesky_into(h[k:, k:], out[k:, k:], v[k:], ws)
    mark = ws.mark()
    s12t = ws.take(n - k, k)  # S12^T = S22^-1 B^T
    _solve_upper(out[k:, k:], v[k:], h[:k, k:].T, s12t, ws)
    out[:k, k:] = s12t.T
    out[k:, :k] = 0.0
    schur = np.matmul(s12t.T, s12t, out=ws.take(k, k))
    np.subtract(h[:k, :k], schur, out=schur)
    _cholesky_into(schur, out[:k, :k], v[:k], ws)
    ws.release(mark)


def inverse_top(factor: tuple[np.ndarray, ...], rows: int) -> np.ndarray:
    """``U[:rows, :]`` for ``U = S^-1``, ``factor`` from :func:`hessian_factor`
    (only read): the rows of the paper's factor that GPTQ still needs when
    act-order scatters a group (``_core.gptq.top_rows``), as
    ``[I 0] S^-1`` (:func:`_solve_right` on GEMMs): ``rows n^2 / 2``
    multiply-adds, a few percent of the factor for the rows act-order
    needs (~30 for n = 1536)."""
    s, v = factor[2], factor[3]
    n = s.shape[0]
    top = np.zeros((rows, n))
    if rows == 0:
        return top
    b = np.zeros((rows, n))
    b[:, :rows] = np.eye(rows)
    with blas_one_thread():  # GPTQ / AWQ: GEMM-bound, between our threaded kernels
        _solve_right(s, v, b, top, _scratch(rows * n))
    return top


# The last factor computed inside a reuse_factors() block: (H's copy, act_order, damp, factor).
_REUSED: contextvars.ContextVar[list[tuple[np.ndarray, bool, float, tuple[np.ndarray, ...]]] | None]
_REUSED = contextvars.ContextVar("slimgrad_reused_factor", default=None)


@contextlib.contextmanager
def reuse_factors() -> Iterator[None]:
    """Within the block, GPTQ and SparseGPT reuse the last factor computed in
    it when they get an ``H`` equal to its ``H`` bit for bit, with the same
    ``act_order`` and ``damp``.

    q, k and v of an attention layer read the same inputs, so calibration
    gives them equal Hessians, and the factor (act-order permutation,
    damping, Cholesky factor: ``n^3 / 3`` flops) depends on ``H`` alone.
    The results are those of the calls without the block, bit for bit. The
    check is a comparison with a copy of the last ``H`` (``n^2`` doubles
    kept until the block ends), so an ``H`` changed in place between calls
    is never mistaken for the old one.
    """
    token = _REUSED.set([])
    try:
        yield
    finally:
        _REUSED.reset(token)


def hessian_factor(h64: np.ndarray, act_order: bool, damp: float) -> tuple[np.ndarray, ...]:
    """``(order, dead, S, v)``: ``(order, dead, S)`` for ``_core.gptq``, what
    ``factor`` in ``cpp/src/gptq.cpp`` computes (same order, dead columns and
    damping), in float64, with the Cholesky factorization as GEMMs through
    NumPy's BLAS (:func:`_cholesky`; ``v``: its leaves' inverses, for
    :func:`inverse_top`). ``S`` is upper with ``S S^T = H`` (damped, in
    processing order); ``U = S^-1`` is the paper's inverse factor, which the
    loop no longer needs (docs/compress.md, "GPTQ, fourth round"). (A float32
    factor, as the reference code uses in torch, is faster still but moves
    scales in their last bits and some codes at 3 bits: docs/compress.md,
    "Speed".) If NumPy finds ``H`` not positive definite, Eigen's
    factorization decides (and raises ``ValueError`` naming ``H`` if it
    agrees).

    Parameters
    ----------
    h64 : float64 ndarray (n, n), C-contiguous, symmetric (only read).
    """
    reused = _REUSED.get()
    if reused:  # inside reuse_factors(): the last H of the block, bit for bit?
        h, last_order, last_damp, factor = reused[0]
        if (last_order, last_damp) == (act_order, damp) and np.array_equal(h, h64):
            return factor
    factor = _factor(h64, act_order, damp)
    if reused is not None:
        reused[:] = [(h64.copy(), act_order, damp, factor)]
    return factor


def _factor(h64: np.ndarray, act_order: bool, damp: float) -> tuple[np.ndarray, ...]:
    """:func:`hessian_factor`, computed."""
    n = h64.shape[0]
    diag = np.diag(h64).copy()
    dead = diag == 0
    diag[dead] = 1.0
    order = np.argsort(-diag, kind="stable") if act_order else np.arange(n)
    ws = _scratch(n * n + (n + 2) ** 2)  # H in processing order, then the factor's
    hp = ws.take(n, n)
    if act_order:  # one pass in C++ (NumPy's two takes were a tenth of a 1536-input layer)
        _core.gptq.permute_symmetric(h64, order, hp)
    else:
        np.copyto(hp, h64)
    hp[np.diag_indices(n)] = diag[order] + damp * float(np.mean(diag))
    try:
        with blas_one_thread():  # GPTQ / AWQ: GEMM-bound, between our threaded kernels
            s, v = _cholesky(hp, ws)
    except np.linalg.LinAlgError:
        order, dead, s = _core.gptq.factor(h64, act_order, damp)
        v = np.empty((n, _LEAF))
        _leaf_inverses(s, v)
    return order.astype(np.int64), dead, s, v
