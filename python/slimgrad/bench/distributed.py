"""``slimgrad bench --suite distributed``: MPI figures, measured in an ``mpiexec -n 2`` job.

The suite launches ``mpiexec -n 2 python -m slimgrad.bench.distributed`` itself
(one thread per rank: ``OMP_NUM_THREADS=1``), which times, interleaved:

* our deterministic ``allreduce_gradients`` vs the MPI library's own
  ``MPI_Allreduce(MPI_SUM)`` on one flat float32 buffer of 64 MiB (GB/s is the
  buffer's size over the time: algorithm bandwidth);
* one ZeRO-1 AdamW step on 2 ranks (state sharded) vs the unsharded AdamW step
  of the same model on rank 0 alone (1 thread, rank 1 sleeping), for a model
  of ``size`` parameters (default 100M) in a flat arena; the note gives the
  optimizer state bytes per rank in both cases.

A sample is the slowest rank's time of one call, between two barriers.
Needs mpi4py and mpiexec (``pip install 'slimgrad[mpi]'``).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator

import numpy as np

from . import Case

DEFAULT_SIZE = 100_000_000
ALLREDUCE_BYTES = 64 * 2**20
REPEATS = 7


def _not_run() -> None:  # measured in the MPI job; the harness only reports
    raise RuntimeError("measured in the mpiexec job")


def cases(size: int) -> Iterator[Case]:
    mpiexec = shutil.which("mpiexec")
    try:
        import mpi4py  # noqa: F401
    except ImportError:
        mpiexec = None
    if mpiexec is None:
        need = "needs mpi4py and mpiexec (pip install 'slimgrad[mpi]')"
        print(f"distributed: skipped, {need}", file=sys.stderr)
        return
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "figures.json")
        env = dict(os.environ, OMP_NUM_THREADS="1")
        here = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        env["PYTHONPATH"] = os.pathsep.join([here, env.get("PYTHONPATH", "")])
        cmd = [mpiexec, "-n", "2", sys.executable, "-m", __name__, str(size), out]
        subprocess.run(cmd, check=True, env=env, timeout=1800)
        with open(out) as f:
            fig = json.load(f)
    ar = fig["allreduce"]
    yield Case(
        f"allreduce {ALLREDUCE_BYTES >> 20} MiB f32, 2 ranks",
        {k: _not_run for k in ar},
        bytes=ALLREDUCE_BYTES,
        measured=ar,
        note="algorithm bandwidth: buffer bytes / time",
    )
    z = fig["zero"]
    mb = 1e-6
    print(
        f"distributed: AdamW state per rank, ZeRO-1 on 2 ranks: "
        f"{z['state_per_rank'][0] * mb:.0f} MB + {z['state_per_rank'][1] * mb:.0f} MB; "
        f"unsharded: {z['state_one_rank'] * mb:.0f} MB; peak RSS of ranks 0 / 1: "
        f"{z['rss_mb'][0]:.0f} / {z['rss_mb'][1]:.0f} MB (rank 0 also holds the unsharded copy)"
    )
    yield Case(
        f"ZeRO-1 AdamW step {size / 1e6:.0f}M, 2 ranks",
        {k: _not_run for k in z["samples"]},
        measured=z["samples"],
        note=(
            f"state per rank: ZeRO-1 {z['state_per_rank'][0] * mb:.0f} + "
            f"{z['state_per_rank'][1] * mb:.0f} MB vs {z['state_one_rank'] * mb:.0f} MB unsharded; "
            f"peak RSS per rank {z['rss_mb'][0]:.0f} / {z['rss_mb'][1]:.0f} MB"
        ),
    )


# --------------------------------------------------------------- the MPI job
def _sleep_wait(req) -> None:
    while not req.Test():  # an idle rank must not spin on the shared cores
        time.sleep(0.0005)


def _timed(comm, fn, solo: bool = False) -> float:
    """Slowest rank's time of ``fn()``; with ``solo`` only rank 0 runs it."""
    _sleep_wait(comm.comm.Ibarrier())
    t0 = time.perf_counter()
    if not solo or comm.rank == 0:
        fn()
    t = time.perf_counter() - t0
    if solo:
        _sleep_wait(comm.comm.Ibarrier())
        return t if comm.rank == 0 else 0.0
    return float(comm.allgather_float64([t]).max())


def _interleaved(comm, impls: dict, solo: set) -> dict[str, list[float]]:
    names = list(impls)
    samples: dict[str, list[float]] = {n: [] for n in names}
    for name in names:  # warm-up (state creation, page faults)
        _timed(comm, impls[name], name in solo)
    for r in range(REPEATS):
        for k in range(len(names)):
            name = names[(r + k) % len(names)]
            samples[name].append(_timed(comm, impls[name], name in solo))
    return samples


def _state_nbytes(opt) -> int:
    return sum(
        v.nbytes for st in opt.state.values() for v in st.values() if isinstance(v, np.ndarray)
    )


def main(size: int, out: str) -> None:
    import resource

    from .. import distributed as dist
    from .. import optim

    comm = dist.default_communicator()
    mpi = comm.comm
    buf = np.zeros(ALLREDUCE_BYTES // 4, np.float32)
    from mpi4py import MPI

    allreduce = _interleaved(
        comm,
        {
            "slimgrad": lambda: dist.allreduce_gradients(buf, comm=comm),
            "MPI_Allreduce": lambda: mpi.Allreduce(MPI.IN_PLACE, buf, MPI.SUM),
        },
        set(),
    )
    arrays = 50
    shapes = {f"layer{i}": (size // arrays,) for i in range(arrays)}
    params = optim.flatten({k: np.zeros(s, np.float32) for k, s in shapes.items()})
    grads = optim.flatten({k: np.full(s, 1e-3, np.float32) for k, s in shapes.items()})
    zero = dist.ZeroRedundancyOptimizer(optim.AdamW, params, lr=1e-4)
    impls: dict[str, Callable[[], object]] = {"slimgrad": lambda: zero.step(grads)}
    plain = None
    if comm.rank == 0:
        p1 = optim.flatten({k: np.zeros(s, np.float32) for k, s in shapes.items()})
        plain = optim.AdamW(p1, lr=1e-4)
        impls["unsharded, 1 rank"] = lambda: plain.step(grads)
    else:
        impls["unsharded, 1 rank"] = lambda: None
    samples = _interleaved(comm, impls, {"unsharded, 1 rank"})
    rss = comm.allgather_float64([resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024])
    per_rank = comm.allgather_float64([zero.state_nbytes()])
    if comm.rank == 0:
        fig = {
            "allreduce": allreduce,
            "zero": {
                "samples": samples,
                "state_per_rank": [int(v) for v in per_rank[:, 0]],
                "state_one_rank": _state_nbytes(plain),
                "rss_mb": [float(v) for v in rss[:, 0]],
            },
        }
        with open(out, "w") as f:
            json.dump(fig, f)


if __name__ == "__main__":
    main(int(sys.argv[1]), sys.argv[2])
