"""The communicator: mpi4py behind a small wrapper with deterministic reductions and timeouts.

Why our own reduction instead of ``MPI_Allreduce(MPI_SUM)``: the MPI standard
leaves the order (and bracketing) of a reduction to the implementation, and
implementations pick algorithms by message size and rank count, so the bits
of a float sum are not guaranteed to be the same on every rank or across
library versions. Here every element is summed in rank order
``((g0 + g1) + g2) + ...`` by the one rank that owns it (after an
``Alltoallv`` that brings it every rank's contribution), then divided by the
number of ranks, and the result is all-gathered bit for bit. Same bits on
every rank, every run, every MPI library, for a given number of ranks. The
traffic is that of a ring / Rabenseifner allreduce: each rank sends and
receives ``(N-1)/N`` of the buffer twice.

Every collective is nonblocking and polled with a deadline (``timeout``
seconds): a rank that died or diverged makes the others raise
:class:`CollectiveTimeout` instead of hanging, and the excepthook installed
by :class:`Communicator` turns an uncaught exception on any rank into
``MPI_Abort`` of the whole job.
"""

from __future__ import annotations

import os
import pickle
import sys
import time
import traceback
from typing import Any

import numpy as np

from .._optional import require

__all__ = ["CollectiveTimeout", "Communicator", "mpi"]

# Sub-chunk of the ordered sum: the N pieces of one sub-chunk stay in L2 while summed.
_SUM_CHUNK = 1 << 15
DEFAULT_TIMEOUT = float(os.environ.get("SLIMGRAD_MPI_TIMEOUT", "300"))
YIELD_AFTER = 0.001  # seconds of polling before a waiting rank starts yielding its core
ABORT_GRACE = 0.2  # seconds for the launcher to forward a failing rank's traceback


class CollectiveTimeout(RuntimeError):
    """A collective did not complete in time: another rank died, raised or diverged."""

    __module__ = "slimgrad.distributed"  # the name users import it by, also in tracebacks


def mpi() -> Any:
    """``mpi4py.MPI``, imported on first use; ImportError naming the extra if absent."""
    return require(
        "mpi4py.MPI",
        "slimgrad.distributed needs mpi4py and an MPI library: "
        "pip install 'slimgrad[mpi]' (mpi4py + mpich)",
    )


def _raw(a: np.ndarray) -> np.ndarray:
    """The same memory as unsigned integers: MPI only moves bits, it never adds here."""
    return a.view(f"u{a.dtype.itemsize}")


def _mpi_type(a: np.ndarray) -> Any:
    MPI = mpi()
    return {1: MPI.UINT8_T, 2: MPI.UINT16_T, 4: MPI.UINT32_T, 8: MPI.UINT64_T}[a.dtype.itemsize]


_hook_installed = False


def _install_abort_hook(comm: Any) -> None:
    """Uncaught exception on one rank: print it, then abort every rank (no hang)."""
    global _hook_installed
    if _hook_installed:
        return
    previous = sys.excepthook

    def hook(tp: Any, value: Any, tb: Any) -> None:
        try:
            # One write, with the exception named in its first line: MPI_Abort makes the
            # launcher kill every rank and exit, and output that has not reached it yet
            # is lost (hydra forwarded only the first lines of a slow-to-format traceback).
            summary = "".join(traceback.format_exception_only(tp, value)).strip()
            sys.stderr.write(
                f"slimgrad.distributed: rank {comm.Get_rank()} raised {summary}; aborting job\n"
                + "".join(traceback.format_exception(tp, value, tb))
            )
            sys.stderr.flush()
            time.sleep(ABORT_GRACE)
        finally:
            if comm.Get_size() > 1:
                comm.Abort(1)
            previous(tp, value, tb)

    sys.excepthook = hook
    _hook_installed = True


class Communicator:
    """A group of MPI ranks with deterministic, time-bounded collectives on NumPy buffers.

    Parameters
    ----------
    comm : mpi4py.MPI.Comm, optional
        Default ``MPI.COMM_WORLD``.
    timeout : float
        Seconds any collective may wait before raising :class:`CollectiveTimeout`
        (default 300, or ``$SLIMGRAD_MPI_TIMEOUT``).
    abort_on_error : bool
        Install a ``sys.excepthook`` that calls ``MPI_Abort`` on an uncaught
        exception, so that one failing rank ends the whole job (default True).

    Raises
    ------
    ImportError
        mpi4py is not installed (install the ``slimgrad[mpi]`` extra).
    """

    def __init__(
        self, comm: Any = None, *, timeout: float = DEFAULT_TIMEOUT, abort_on_error: bool = True
    ) -> None:
        MPI = mpi()
        self.comm = MPI.COMM_WORLD if comm is None else comm
        self.rank = self.comm.Get_rank()
        self.size = self.comm.Get_size()
        if not timeout > 0:
            raise ValueError(f"timeout: expected seconds > 0, got {timeout!r}")
        self.timeout = float(timeout)
        self._ws: dict[tuple[str, int], np.ndarray] = {}
        if abort_on_error:
            _install_abort_hook(self.comm)

    def __repr__(self) -> str:
        return f"Communicator(rank={self.rank}, size={self.size}, timeout={self.timeout})"

    # --------------------------------------------------------------- waiting
    def wait(self, req: Any, what: str) -> None:
        """Wait for a request, raising :class:`CollectiveTimeout` after ``timeout`` s.

        Polls ``Test`` (which drives MPICH's progress engine; measured here 5x
        faster than a blocking ``Wait`` or a yield every few polls), and only
        after ``YIELD_AFTER`` seconds of waiting starts yielding the core now
        and then, for ranks oversubscribed on fewer cores.
        """
        if req.Test():
            return
        start = time.monotonic()
        deadline = start + self.timeout
        spins = 0
        while not req.Test():
            spins += 1
            if spins & 255 == 0:
                now = time.monotonic()
                if now > deadline:
                    raise CollectiveTimeout(
                        f"{what}: rank {self.rank} of {self.size} waited {self.timeout:g} s; "
                        "another rank has died, raised or is not calling the same collective"
                    )
                if now - start > YIELD_AFTER:
                    os.sched_yield()

    def barrier(self) -> None:
        self.wait(self.comm.Ibarrier(), "barrier")

    # -------------------------------------------------------- small objects
    def allgather_object(self, obj: Any) -> list[Any]:
        """Every rank's ``obj`` (picklable), in rank order, on every rank."""
        data = np.frombuffer(pickle.dumps(obj), np.uint8)
        sizes = np.zeros(self.size, np.int64)
        mine = np.array([data.size], np.int64)
        self.wait(self.comm.Iallgather(mine, sizes), "allgather_object")
        out = np.empty(int(sizes.sum()), np.uint8)
        displs = np.concatenate([[0], np.cumsum(sizes)[:-1]])
        self.wait(
            self.comm.Iallgatherv(data, [out, sizes.tolist(), displs.tolist(), mpi().UINT8_T]),
            "allgather_object",
        )
        return [pickle.loads(out[d : d + s].tobytes()) for d, s in zip(displs, sizes)]

    def bcast_object(self, obj: Any, root: int = 0) -> Any:
        return self.allgather_object(obj if self.rank == root else None)[root]

    def check_same(self, what: str, value: Any) -> None:
        """Raise ValueError on every rank if ``value`` (a dict) differs between ranks.

        The message names the first differing entry and the ranks, e.g.
        ``params['w'].shape differs between ranks: rank 0 has (3, 4), rank 1 has (4, 4)``.
        """
        values = self.allgather_object(value)
        for r, v in enumerate(values):
            if v == values[0]:
                continue
            keys = list(values[0]) + [k for k in v if k not in values[0]]
            for k in keys:
                a, b = values[0].get(k, "<absent>"), v.get(k, "<absent>")
                if a != b:
                    raise ValueError(
                        f"{what}: {k} differs between ranks: rank 0 has {a!r}, rank {r} has {b!r}"
                    )

    # ---------------------------------------------------------- collectives
    def bcast_(self, a: np.ndarray, root: int = 0) -> None:
        """Broadcast ``a`` (C-contiguous, any dtype) from ``root`` in place."""
        self.wait(self.comm.Ibcast([_raw(a), _mpi_type(a)], root=root), "broadcast")

    def _workspace(self, dtype: Any, n: int, slot: int = 0) -> np.ndarray:
        key = (np.dtype(dtype).str, slot)
        ws = self._ws.get(key)
        if ws is None or ws.size < n:
            ws = np.empty(max(n, 1), dtype)
            self._ws[key] = ws
        return ws[:n]

    def reduce_scatter_(
        self,
        send: np.ndarray,
        displs: list[int],
        counts: list[int],
        out: np.ndarray,
        *,
        average: bool,
        check: bool = False,
    ) -> bool:
        """Deterministic reduce-scatter.

        Rank ``i``'s block is ``send[displs[i] : displs[i] + counts[i]]`` (1-D
        C-contiguous ``send``, same dtype on every rank). This rank's block,
        summed over ranks in rank order (float32 accumulation for 2-byte
        dtypes) and divided by the number of ranks if ``average``, is written
        to ``out`` (length ``counts[rank]``; it may be this rank's block of
        ``send`` itself). ``send`` is only read. Returns False if ``check``
        and the result holds a NaN/inf, else True.
        """
        n, r = self.size, self.rank
        mine = counts[r]
        recv = self._workspace(send.dtype, mine * n)
        scounts = list(counts)
        scounts[r] = 0  # no message to ourselves: our block is read in place
        rcounts = [mine] * n
        rcounts[r] = 0
        rdispls = [i * mine for i in range(n)]
        t = _mpi_type(send)
        req = self.comm.Ialltoallv(
            [_raw(send), scounts, displs, t], [_raw(recv), rcounts, rdispls, t]
        )
        self.wait(req, "reduce_scatter")
        own = send[displs[r] : displs[r] + mine]
        pieces = [own if i == r else recv[i * mine : (i + 1) * mine] for i in range(n)]
        return _ordered_sum(pieces, out, average, check, self._workspace(np.float32, _SUM_CHUNK, 1))

    def allgather_(self, buf: np.ndarray, displs: list[int], counts: list[int]) -> None:
        """In place: every rank's block ``buf[displs[i] : +counts[i]]`` is copied to all ranks."""
        t = _mpi_type(buf)
        req = self.comm.Iallgatherv(mpi().IN_PLACE, [_raw(buf), counts, displs, t])
        self.wait(req, "allgather")

    def allreduce_(self, buf: np.ndarray, *, average: bool = False) -> None:
        """Deterministic in-place allreduce of a 1-D C-contiguous buffer (sum, or mean)."""
        counts = split_counts(buf.size, self.size)
        displs = offsets(counts)
        lo = displs[self.rank]
        own = buf[lo : lo + counts[self.rank]]
        self.reduce_scatter_(buf, displs, counts, own, average=average)
        self.allgather_(buf, displs, counts)

    def allgather_float64(self, values: Any) -> np.ndarray:
        """Every rank's small float64 vector, as rows in rank order (combine them in order)."""
        mine = np.ascontiguousarray(values, np.float64).reshape(-1)
        rows = np.zeros((self.size, mine.size), np.float64)
        self.wait(self.comm.Iallgather(mine, rows), "allgather")
        return rows


def split_counts(total: int, parts: int, align: int = 16) -> list[int]:
    """``total`` elements in ``parts`` contiguous blocks, as equal as ``align`` allows."""
    bounds = [min(total, (total * k // parts + align - 1) // align * align) for k in range(parts)]
    bounds.append(total)
    return [bounds[k + 1] - bounds[k] for k in range(parts)]


def offsets(counts: list[int]) -> list[int]:
    out, acc = [], 0
    for c in counts:
        out.append(acc)
        acc += c
    return out


def _ordered_sum(
    pieces: list[np.ndarray], out: np.ndarray, average: bool, check: bool, tmp32: np.ndarray
) -> bool:
    """``out = (((p0 + p1) + p2) + ...) [/ N]`` in sub-chunks; ``out`` may alias a piece."""
    n = len(pieces)
    half = out.dtype.itemsize == 2
    finite = True
    for lo in range(0, out.size, _SUM_CHUNK):
        hi = min(lo + _SUM_CHUNK, out.size)
        dst = out[lo:hi]
        if half:  # accumulate 2-byte floats in float32, round once
            acc = tmp32[: hi - lo]
            acc[...] = pieces[0][lo:hi]
            for p in pieces[1:]:
                np.add(acc, p[lo:hi], out=acc, dtype=np.float32)
            if average:
                np.divide(acc, n, out=acc)
            dst[...] = acc
        elif n == 1:
            if dst is not pieces[0]:
                dst[...] = pieces[0][lo:hi]
            if average:
                np.divide(dst, n, out=dst)
        else:
            # n > 2: partial sums go to a scratch chunk, so `out` (which may
            # alias any piece) is written only by the last add.
            acc = dst if n == 2 else _tmp_like(dst)
            np.add(pieces[0][lo:hi], pieces[1][lo:hi], out=acc)
            for p in pieces[2:-1]:
                np.add(acc, p[lo:hi], out=acc)
            if n > 2:
                np.add(acc, pieces[-1][lo:hi], out=dst)
            if average:
                np.divide(dst, n, out=dst)
        if check and finite and not np.isfinite(dst).all():
            finite = False
    return finite


_tmp_cache: dict[str, np.ndarray] = {}


def _tmp_like(dst: np.ndarray) -> np.ndarray:
    buf = _tmp_cache.get(dst.dtype.str)
    if buf is None:
        buf = np.empty(_SUM_CHUNK, dst.dtype)
        _tmp_cache[dst.dtype.str] = buf
    return buf[: dst.size]
