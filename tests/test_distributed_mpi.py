"""slimgrad.distributed under real MPI jobs: ``mpiexec -n 2`` and ``-n 4`` (oversubscribed).

Each test launches ``tests/mpi_jobs.py`` with a timeout and checks what the
ranks wrote. Skipped (with the reason) when mpi4py or mpiexec is missing.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("mpi4py", reason="mpi4py not installed (pip install 'slimgrad[mpi]')")
MPIEXEC = shutil.which("mpiexec")
if MPIEXEC is None:
    pytest.skip("no mpiexec on PATH (pip install mpich)", allow_module_level=True)

import mpi_jobs  # noqa: E402  (tests/ is on sys.path under pytest's rootdir conftest)
import slimgrad  # noqa: E402
from slimgrad import optim  # noqa: E402

JOBS = Path(__file__).with_name("mpi_jobs.py")
# The ranks import the slimgrad this process imported: the working tree's
# python/ (with the dev build linked in) or the installed package, as in CI.
PYTHON_DIR = Path(slimgrad.__file__).resolve().parents[1]


def launch(n: int, job: str, out: Path, timeout: float = 90.0) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(PYTHON_DIR), env.get("PYTHONPATH", "")])
    env["OMP_NUM_THREADS"] = "1"  # ranks share the cores
    return subprocess.run(
        [MPIEXEC, "-n", str(n), sys.executable, str(JOBS), job, str(out)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )


def run_ok(n: int, job: str, out: Path, *, read: str | None = None) -> list[dict]:
    proc = launch(n, job, out)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return reports(n, read or job, out)


def reports(n: int, job: str, out: Path) -> list[dict]:
    return [json.loads((out / f"{job}-rank{r}.json").read_text()) for r in range(n)]


_SUITES: dict[int, Path] = {}


@pytest.fixture(params=[2, 4], ids=lambda n: f"ranks={n}")
def suite(request, tmp_path_factory):
    """(n, directory) of one `suite` job on n ranks (launched once per n)."""
    n = request.param
    if n not in _SUITES:
        out = tmp_path_factory.mktemp(f"suite{n}")
        proc = launch(n, "suite", out)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        _SUITES[n] = out
    return n, _SUITES[n]


def test_data_parallel_training_equals_one_process(suite, tmp_path):
    n, out = suite
    for rep in reports(n, "train", out):
        # Same model, same summed batch: float32 rounding apart, the same training.
        assert rep["ddp_vs_single"] < 1e-5
        assert rep["zero_vs_single"] < 1e-5
        # ZeRO averages gradients with the same ordered reduction: same bits.
        assert rep["zero_eq_ddp"]
        assert rep["distill_vs_single"] < 1e-5
        assert rep["distill_steps"][0] == rep["distill_steps"][1] == 12
        np.testing.assert_allclose(rep["distill_loss"][0], rep["distill_loss"][1], rtol=1e-6)
        # allreduce_gradients gives (((g0 + g1) + ...) / N) exactly, arena or not.
        assert len(rep["allreduce_exact"]) >= 6 and all(rep["allreduce_exact"].values()), rep
        # The non-finite policy acts on every rank: raised, nothing modified, no state.
        assert rep["ddp_nonfinite"] == ["grads['w'] has a non-finite value at index 17", True, 0]
    # Every rank holds the same bits.
    arrays = [np.load(out / f"train-rank{r}.npz") for r in range(n)]
    for a in arrays[1:]:
        for k in arrays[0].files:
            assert np.array_equal(a[k], arrays[0][k]), k
    if n == 2:  # and a second run gives the same bits again
        run_ok(n, "train", tmp_path)
        b = np.load(tmp_path / "train-rank0.npz")
        for k in arrays[0].files:
            assert np.array_equal(b[k], arrays[0][k]), k


def test_zero_equals_unsharded_for_every_optimizer_with_1_nth_of_the_state(suite):
    n, out = suite
    reps = reports(n, "zero", out)
    names = [c[0] for c in mpi_jobs.configs()]
    for rank, rep in enumerate(reps):
        for name in names:
            assert name + "-arena" in rep and (n == 4 or name in rep)
            for key in (name, name + "-arena"):
                if key not in rep:
                    continue
                r = rep[key]
                if "stochastic" in name:
                    # Rounding noise drawn at other positions: within one bfloat16 step.
                    assert r["max_rel_diff"] < 2.0**-6, (rank, key, r)
                else:
                    assert r["equal"], (rank, key, r)
        g = rep["groups-schedule-clip"]
        assert g["max_abs_diff"] < 1e-6
        assert g["lr"] == [0.02 * 0.5**4, 0.01 * 0.5**4]
        for ours, ref in g["norms"]:
            assert ours == pytest.approx(ref, rel=1e-6)
        nf = rep["nonfinite"]
        assert nf["raise"]["outcome"].startswith("grads['d'] has a non-finite value at index 38")
        assert nf["skip"]["outcome"] is False
        for policy in ("raise", "skip"):
            assert nf[policy]["params_unchanged"] and nf[policy]["state_unchanged"]
    # Optimizer state memory per rank, measured: 1/N of the unsharded optimizer's
    # (AdamW 8 bytes/param, AdamW8bit ~2, SGD momentum 4), up to a split boundary.
    for name in ("AdamW", "AdamW8bit", "SGD"):
        per_rank = [rep["memory"][name][0] for rep in reps]
        total = reps[0]["memory"][name][1]
        assert sum(per_rank) == total, name
        assert max(per_rank) <= total / n * 1.01, (name, per_rank, total)


def test_checkpoint_round_trip_2_to_4_to_1(tmp_path):
    run_ok(2, "ckpt_save", tmp_path)
    run_ok(4, "ckpt_resume", tmp_path)
    import slimgrad.distributed as dist

    ck = dist.load(tmp_path / "ckpt")  # a single process, no MPI communicator
    assert (ck["phase1_ranks"], ck["phase2_ranks"]) == (2, 4)
    index = json.loads((tmp_path / "ckpt" / "index.json").read_text())
    assert len(index["shards"]) == 4
    assert sorted(os.listdir(tmp_path / "ckpt")) == sorted(
        [index["common"], "index.json", *index["shards"]]
    )

    # The reference: one unsharded optimizer fed the averaged gradients of both phases.
    p_ref = mpi_jobs.make_params(np.float32)
    ref = optim.AdamW8bit(p_ref, lr=0.01)
    for step in range(5):
        ref.step(mpi_jobs.avg_grads(step, 2 if step < 3 else 4, np.float32))
    for k in p_ref:
        assert np.array_equal(ck["params"][k], p_ref[k]), k
    sd = ck["optimizer"].consolidated()
    want = ref.state_dict()
    for k, st in want["state"].items():
        for name, v in st.items():
            assert np.array_equal(sd["state"][k][name], v), (k, name)

    # Onto one process: load into the plain optimizer and continue bit-identically.
    p_one = {k: v.copy() for k, v in ck["params"].items()}
    one = optim.AdamW8bit(p_one, lr=0.01)
    one.load_state_dict(sd)
    g = mpi_jobs.grads_for(5, 0, np.float32)
    one.step(g)
    ref.step(g)
    for k in p_ref:
        assert np.array_equal(p_one[k], p_ref[k]), k


@pytest.mark.parametrize("suite", [2], indirect=True, ids=["ranks=2"])
def test_mismatch_between_ranks_detected_at_construction(suite):
    n, out = suite
    for rep in reports(n, "mismatch", out):  # the same error on every rank
        shape, lr = rep["messages"]
        assert shape == (
            "ZeroRedundancyOptimizer: params['c'] differs between ranks: "
            "rank 0 has ('float32', (5,)), rank 1 has ('float32', (6,))"
        )
        assert lr == (
            "ZeroRedundancyOptimizer: param_groups[0]['lr'] differs between ranks: "
            "rank 0 has '0.01', rank 1 has '0.02'"
        )


@pytest.mark.parametrize(
    "how, expect",
    [
        ("kill", "BAD TERMINATION"),  # the launcher tears the job down
        # our excepthook names the exception in the line before MPI_Abort
        ("raise", "rank 1 raised RuntimeError: rank 1 failed on purpose; aborting job"),
        ("hang", "rank 0 raised slimgrad.distributed.CollectiveTimeout"),  # timeout=2 s
    ],
)
def test_a_failing_rank_ends_the_job_with_an_error(tmp_path, how, expect):
    start = time.monotonic()
    proc = launch(2, f"fail-{how}", tmp_path, timeout=60)
    elapsed = time.monotonic() - start
    assert proc.returncode != 0
    assert expect in proc.stdout + proc.stderr
    assert elapsed < 30
    assert not (tmp_path / f"fail-{how}-rank0.json").exists()
