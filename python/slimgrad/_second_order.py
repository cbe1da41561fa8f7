"""Argument checks and the inverse-Hessian factor shared by the Hessian-based
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
from typing import Any, cast

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
    checked: list[tuple[np.ndarray, str]] = [*zip(w32s, labels), (h64, "H")]
    for arr, label in checked:
        bad = np.flatnonzero(~np.isfinite(arr))
        if bad.size:
            index = tuple(int(i) for i in np.unravel_index(bad[0], arr.shape))
            raise ValueError(f"{label}: non-finite value {arr.flat[bad[0]]} at index {index}")
    if not _core.gptq.is_symmetric(h64, 1e-5, 1e-8):  # atol 1e-8 * max|H|
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
            raise RuntimeError("factor scratch exhausted")  # a bound in _inverse_factor is wrong
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


_LEAF = 64  # factor leaves (Cholesky + inverse in LAPACK); 128 was 20 % slower at n = 384
_TRI_LEAF = 96  # triangular products below this size are plain GEMMs


def _tri_mul(t: np.ndarray, b: np.ndarray, lower: bool, out: np.ndarray, ws: _Arena) -> None:
    """``out = t @ b`` for a triangular ``t`` (lower or upper; the other half
    holds zeros) by halves, so the zero quarter costs nothing: half the flops
    of the full GEMM, still all GEMMs (NumPy has no ``trmm``)."""
    k = t.shape[0]
    if k <= _TRI_LEAF:
        np.matmul(t, b, out=out)
        return
    h = k // 2
    _tri_mul(t[:h, :h], b[:h], lower, out[:h], ws)
    _tri_mul(t[h:, h:], b[h:], lower, out[h:], ws)
    mark = ws.mark()
    if lower:
        np.add(out[h:], np.matmul(t[h:, :h], b[:h], out=ws.take(k - h, b.shape[1])), out=out[h:])
    else:
        np.add(out[:h], np.matmul(t[:h, h:], b[h:], out=ws.take(h, b.shape[1])), out=out[:h])
    ws.release(mark)


def _inverse_factor(h: np.ndarray, ws: _Arena | None = None) -> np.ndarray:
    """The upper ``U`` with ``U^T U = h^-1``, by halves, so the work is GEMMs
    (BLAS; NumPy has no ``trtri``). ``U = S^-1`` for the upper ``S`` with
    ``S S^T = h`` (the Cholesky factor of the order-reversed ``h``, reversed):
    with ``h = [[A, B], [B^T, C]]``, ``U22 = S22^-1`` from ``C``,
    ``S12 = B U22^T``, ``U11`` from the Schur complement ``A - S12 S12^T``
    (``syrk``: NumPy spots ``a @ a.T``), and ``U12 = -U11 S12 U22``. Working
    in this order needs no reversed copies of ``h`` or ``U``. The products
    with the triangular ``U11``, ``U22`` go through :func:`_tri_mul`:
    ``n^3 / 3`` flops for the factorization and ``n^3 / 3`` for the inverse,
    as LAPACK's ``potrf`` + ``trtri``.
    Temporaries come from ``ws`` (default: the thread's scratch). Raises
    ``np.linalg.LinAlgError`` if ``h`` is not positive definite."""
    n = h.shape[0]
    out = np.empty_like(h)
    # A level of n (halves k >= m) holds at most S12 and S12 U22 (m k each),
    # the Schur complement (k^2) and a product's scratch (m k / 2): 7 n^2 / 8,
    # below (n + 2)^2 also for odd halves; the levels below it, less.
    _inverse_factor_into(h, out, _scratch((n + 2) ** 2) if ws is None else ws)
    return out


def _inverse_factor_into(h: np.ndarray, out: np.ndarray, ws: _Arena) -> None:
    """:func:`_inverse_factor` written into ``out`` (a view of the result, so
    the halves are not copied up the recursion); temporaries from ``ws``."""
    n = h.shape[0]
    if n <= _LEAF:
        s = np.linalg.cholesky(h[::-1, ::-1])[::-1, ::-1]
        out[...] = np.triu(np.linalg.inv(s))
        return
    k = n - n // 2
    mark = ws.mark()
    u22 = out[k:, k:]
    _inverse_factor_into(h[k:, k:], u22, ws)
    s12 = ws.take(n - k, k)
    _tri_mul(u22, h[:k, k:].T, False, s12, ws)  # B U22^T = (U22 B^T)^T
    s12 = s12.T
    schur = np.matmul(s12, s12.T, out=ws.take(k, k))
    np.subtract(h[:k, :k], schur, out=schur)
    u11 = out[:k, :k]
    _inverse_factor_into(schur, u11, ws)
    out[k:, :k] = 0.0
    s12u22 = ws.take(n - k, k)
    _tri_mul(u22.T, s12.T, True, s12u22, ws)  # S12 U22 = (U22^T S12^T)^T
    u12 = out[:k, k:]
    _tri_mul(u11, s12u22.T, False, u12, ws)
    np.negative(u12, out=u12)
    ws.release(mark)


_CONTROLLER: list[Any] = []  # threadpoolctl's, made once (a scan of the loaded libraries)


def blas_limit() -> Any:
    """A context holding NumPy's BLAS to one thread (threadpoolctl), for the
    GEMM-bound parts of the calibrated methods (GPTQ's factor, AWQ's search).
    OpenBLAS's threads spin between products: with 2 threads on a loaded 2-core
    machine GPTQ took 5x longer and AWQ's search 2.7x longer than with one
    (docs/compress.md, "Speed"). GPTQ's column loop runs on slimgrad's threads."""
    if not _CONTROLLER:
        import threadpoolctl

        _CONTROLLER.append(threadpoolctl.ThreadpoolController())
    return _CONTROLLER[0].limit(limits=1, user_api="blas")


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
    damping, Cholesky factor and inverse: ``2 n^3 / 3`` flops) depends on
    ``H`` alone. The results are those of the calls without the block, bit
    for bit. The check is a comparison with a copy of the last ``H``
    (``n^2`` doubles kept until the block ends), so an ``H`` changed in
    place between calls is never mistaken for the old one.
    """
    token = _REUSED.set([])
    try:
        yield
    finally:
        _REUSED.reset(token)


def inverse_factor(h64: np.ndarray, act_order: bool, damp: float) -> tuple[np.ndarray, ...]:
    """``(order, dead, U)`` for ``_core.gptq``: what ``inverse_factor`` in
    ``cpp/src/gptq.cpp`` computes (same order, dead columns and damping), in
    float64, with the Cholesky factorization and triangular inverse as GEMMs
    through NumPy's BLAS (:func:`_inverse_factor`): 2x faster than Eigen
    compiled for the baseline ISA on the 1536-input layers. (A float32 factor,
    as the reference code uses in torch, is faster still but moves scales in
    their last bits and some codes at 3 bits: docs/compress.md, "Speed".) If
    NumPy finds ``H`` not positive definite, Eigen's factorization decides
    (and raises ``ValueError`` naming ``H`` if it agrees).

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
    """:func:`inverse_factor`, computed."""
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
        with blas_limit():
            u = _inverse_factor(hp, ws)
    except np.linalg.LinAlgError:
        return _core.gptq.inverse_factor(h64, act_order, damp)
    return order.astype(np.int64), dead, u
