"""MPI jobs launched by tests/test_distributed_mpi.py: ``mpiexec -n N python mpi_jobs.py JOB OUT``.

Each job writes what it measured to ``OUT/<job>-rank<r>.json`` / ``.npz``; the
test reads and checks them (so an assertion failure there is a clear pytest
failure, not an MPI abort). References are computed in the job itself, in
one process, from the same deterministic per-(step, rank) gradients.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time

import numpy as np
import slimgrad
import slimgrad.distributed as dist
from slimgrad import nn, optim, schedule

try:
    from ml_dtypes import bfloat16
except ImportError:  # pragma: no cover
    bfloat16 = None


def write(out: str, job: str, rank: int, data: dict, arrays: dict | None = None) -> None:
    with open(os.path.join(out, f"{job}-rank{rank}.json"), "w") as f:
        json.dump(data, f)
    if arrays is not None:
        np.savez(os.path.join(out, f"{job}-rank{rank}.npz"), **arrays)


def average(gs: list[np.ndarray]) -> np.ndarray:
    """The documented reduction: sum in rank order, divided by N (float32 for 2-byte floats)."""
    if gs[0].dtype.itemsize == 2:
        acc = gs[0].astype(np.float32)
        for g in gs[1:]:
            acc = acc + g.astype(np.float32)
        return (acc / len(gs)).astype(gs[0].dtype)
    acc = gs[0] + gs[1] if len(gs) > 1 else gs[0].copy()
    for g in gs[2:]:
        acc = acc + g
    return acc / len(gs)


# ------------------------------------------------------------------ training
def mlp(seed: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(8, 16, seed=seed), nn.ReLU(), nn.Linear(16, 4, seed=seed + 1))


def job_train(out: str) -> None:
    """Data-parallel (allreduce and ZeRO) training and Distiller.fit vs one process."""
    comm = dist.default_communicator()
    rng = np.random.default_rng(0)
    X = rng.standard_normal((96, 8)).astype(np.float32)
    y = rng.integers(0, 4, 96)
    B = 16

    def train(make_opt, split: bool) -> dict:
        model = mlp(1)
        opt = make_opt(model.parameters())
        for b in range(0, len(X), B):
            xb, yb = X[b : b + B], y[b : b + B]
            if split:
                part = dist.batch_slice(B, comm)
                xb, yb = xb[part], yb[part]
            _, grad = nn.cross_entropy(model.forward(xb), yb)
            model.backward(grad)
            opt.step(model.gradients())
        return {k: v.copy() for k, v in model.parameters().items()}

    ref = train(lambda p: optim.AdamW(p, lr=1e-2), split=False)
    ddp = train(lambda p: dist.DistributedOptimizer(optim.AdamW(p, lr=1e-2)), split=True)
    zero = train(lambda p: dist.ZeroRedundancyOptimizer(optim.AdamW, p, lr=1e-2), split=True)

    teacher = mlp(7)
    hist = {}
    distilled = {}
    for name, wrap in (("single", lambda o: o), ("dp", dist.DistributedOptimizer)):
        student = mlp(3)
        opt = wrap(optim.Adam(student.parameters(), lr=1e-2))
        d = slimgrad.distill.Distiller(teacher, student, opt, temperature=2.0, alpha=0.5)
        hist[name] = d.fit(X, y, epochs=2, batch_size=B, progress=False, seed=5).as_dict()
        distilled[name] = {k: v.copy() for k, v in student.parameters().items()}

    # allreduce_gradients: arena (in place) and loose arrays (packed), small
    # buckets, every dtype: the documented formula, bit for bit.
    exact = {}
    dtypes = [np.float32, np.float64, np.float16] + ([bfloat16] if bfloat16 else [])
    for dt in dtypes:
        per_rank = [grads_for(7, q, dt) for q in range(comm.size)]
        want = {k: average([g[k] for g in per_rank]) for k in SHAPES}
        for arena in (True, False):
            mine = {k: v.copy() for k, v in per_rank[comm.rank].items()}
            mine = optim.flatten(mine) if arena else mine
            dist.allreduce_gradients(mine, bucket_bytes=2048)
            exact[f"{np.dtype(dt).name}{'-arena' if arena else ''}"] = all(
                np.array_equal(mine[k].view(np.uint8), want[k].view(np.uint8)) for k in SHAPES
            )

    # A NaN in one rank's gradient reaches every rank through the average.
    p = {"w": np.ones(40, np.float32)}
    ddp_nan = dist.DistributedOptimizer(optim.AdamW(p, lr=0.1))
    g = {"w": np.ones(40, np.float32)}
    if comm.rank == comm.size - 1:
        g["w"][17] = np.nan
    try:
        ddp_nan.step(g)
        nan_outcome = "stepped"
    except FloatingPointError as e:
        nan_outcome = str(e)
    nan_outcome = [nan_outcome, bool(np.all(p["w"] == 1.0)), len(ddp_nan.state)]

    def rel(a: dict, b: dict) -> float:
        return max(float(np.max(np.abs(a[k] - b[k])) / np.max(np.abs(b[k]))) for k in b)

    write(
        out,
        "train",
        comm.rank,
        {
            "ddp_vs_single": rel(ddp, ref),
            "zero_vs_single": rel(zero, ref),
            "zero_eq_ddp": all(np.array_equal(zero[k], ddp[k]) for k in ddp),
            "distill_vs_single": rel(distilled["dp"], distilled["single"]),
            "distill_loss": [hist["dp"]["loss"], hist["single"]["loss"]],
            "distill_steps": [len(hist["dp"]["step_loss"]), len(hist["single"]["step_loss"])],
            "ddp_nonfinite": nan_outcome,
            "allreduce_exact": exact,
        },
        {**{f"ddp/{k}": v for k, v in ddp.items()}, **{f"zero/{k}": v for k, v in zero.items()}},
    )


# ---------------------------------------------------------------------- ZeRO
SHAPES = {"a": (33, 17), "b": (1000,), "c": (5,), "d": (300, 7)}


def make_params(dtype) -> dict:
    rng = np.random.default_rng(42)
    return {k: rng.standard_normal(s).astype(np.float32).astype(dtype) for k, s in SHAPES.items()}


def grads_for(step: int, rank: int, dtype) -> dict:
    rng = np.random.default_rng(1000 * step + rank)
    return {k: rng.standard_normal(s).astype(np.float32).astype(dtype) for k, s in SHAPES.items()}


def avg_grads(step: int, n: int, dtype) -> dict:
    per_rank = [grads_for(step, r, dtype) for r in range(n)]
    return {k: average([g[k] for g in per_rank]) for k in SHAPES}


def configs() -> list[tuple[str, type, dict, object]]:
    f32 = np.float32
    out = [
        ("SGD", optim.SGD, dict(lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.01), f32),
        ("Adagrad", optim.Adagrad, dict(lr=0.1), f32),
        ("RMSprop", optim.RMSprop, dict(lr=0.01, centered=True, momentum=0.5), f32),
        ("Adadelta", optim.Adadelta, dict(), f32),
        ("Adam", optim.Adam, dict(lr=0.01, amsgrad=True), f32),
        ("AdamW", optim.AdamW, dict(lr=0.01), f32),
        ("Adamax", optim.Adamax, dict(lr=0.01), f32),
        ("NAdam", optim.NAdam, dict(lr=0.01), f32),
        ("RAdam", optim.RAdam, dict(lr=0.01), f32),
        ("Lion", optim.Lion, dict(lr=1e-3), f32),
        ("LAMB", optim.LAMB, dict(lr=0.01), f32),
        ("Adafactor", optim.Adafactor, dict(lr=0.01), f32),
        ("AdamW8bit", optim.AdamW8bit, dict(lr=0.01), f32),
        ("AdamW-float64", optim.AdamW, dict(lr=0.01), np.float64),
        ("AdamW-float16", optim.AdamW, dict(lr=0.01), np.float16),
    ]
    if bfloat16 is not None:
        out += [
            ("AdamW-bf16-state", optim.AdamW, dict(lr=0.01, state_dtype="bfloat16"), bfloat16),
            ("AdamW-bf16-stochastic", optim.AdamW, dict(lr=0.01, rounding="stochastic"), bfloat16),
        ]
    return out


def _state_nbytes(opt) -> int:
    return sum(
        v.nbytes for st in opt.state.values() for v in st.values() if isinstance(v, np.ndarray)
    )


def job_zero(out: str) -> None:
    """Every optimizer: ZeRO equals the unsharded optimizer stepped on the averaged gradients."""
    comm = dist.default_communicator()
    n, r = comm.size, comm.rank
    report: dict = {}
    for name, cls, opts, dtype in configs():
        # 4 ranks: the packed (non-arena) path for a few classes only (time).
        packed = n == 2 or name in ("AdamW", "AdamW8bit", "LAMB", "AdamW-float16")
        for arena in (False, True) if packed else (True,):
            p_zero = make_params(dtype)
            if arena:
                p_zero = optim.flatten(p_zero)
            p_ref = make_params(dtype)
            zero = dist.ZeroRedundancyOptimizer(cls, p_zero, bucket_bytes=4096, **opts)
            ref = cls(p_ref, **opts)
            for step in range(3):
                g = grads_for(step, r, dtype)
                # arena: params and grads each one buffer, communicated in place
                zero.step(optim.flatten(g) if arena else g)
                ref.step(avg_grads(step, n, dtype))
            total = _state_nbytes(ref)
            key = f"{name}{'-arena' if arena else ''}"
            report[key] = {
                "equal": all(np.array_equal(p_zero[k], p_ref[k]) for k in SHAPES),
                "max_rel_diff": max(
                    float(
                        np.max(np.abs(p_zero[k].astype(np.float64) - p_ref[k].astype(np.float64)))
                    )
                    / float(np.max(np.abs(p_ref[k].astype(np.float64))))
                    for k in SHAPES
                ),
                "state_nbytes": zero.state_nbytes(),
                "total_nbytes": total,
                "granularity": zero.granularity,
            }
    report["memory"] = _memory(comm)
    report["groups-schedule-clip"] = _groups_schedule_clip(comm)
    report["nonfinite"] = _nonfinite(comm)
    write(out, "zero", r, report)


def _memory(comm) -> dict:
    """Optimizer state bytes on this rank vs the unsharded optimizer's, for a larger model."""
    out = {}
    shapes = {"w": (512, 300), "v": (10007,), "u": (3, 3)}
    for cls in (optim.AdamW, optim.AdamW8bit, optim.SGD):
        rng = np.random.default_rng(0)
        p = optim.flatten({k: rng.standard_normal(s).astype(np.float32) for k, s in shapes.items()})
        g = {k: np.ones_like(v) for k, v in p.items()}
        opts = {"momentum": 0.9} if cls is optim.SGD else {}
        zero = dist.ZeroRedundancyOptimizer(cls, p, lr=1e-3, **opts)
        zero.step(g)
        ref = cls({k: v.copy() for k, v in p.items()}, lr=1e-3, **opts)
        ref.step(g)
        out[cls.__name__] = [zero.state_nbytes(), _state_nbytes(ref)]
    return out


def _groups_schedule_clip(comm) -> dict:
    """Param groups + a scheduler editing lr + global gradient clipping."""

    def groups(p):
        return [
            {"params": {"a": p["a"], "b": p["b"]}, "lr": 0.02},
            {"params": {"c": p["c"], "d": p["d"]}},
        ]

    p_zero, p_ref = make_params(np.float32), make_params(np.float32)
    zero = dist.ZeroRedundancyOptimizer(optim.AdamW, groups(p_zero), lr=0.01, max_grad_norm=1.0)
    ref = optim.AdamW(groups(p_ref), lr=0.01)
    s_zero = schedule.StepLR(zero, step_size=1, gamma=0.5)
    s_ref = schedule.StepLR(ref, step_size=1, gamma=0.5)
    norms = []
    for step in range(4):
        zero.step(grads_for(step, comm.rank, np.float32))
        g = avg_grads(step, comm.size, np.float32)
        norms.append([zero.last_grad_norm, optim.clip_grad_norm_(g, 1.0)])
        ref.step(g)
        s_zero.step()
        s_ref.step()
    diff = max(float(np.max(np.abs(p_zero[k] - p_ref[k]))) for k in SHAPES)
    return {"max_abs_diff": diff, "norms": norms, "lr": [g["lr"] for g in zero.param_groups]}


def _nonfinite(comm) -> dict:
    """A NaN in one rank's gradient: every rank raises (or skips); nothing changes anywhere."""
    res = {}
    for policy in ("raise", "skip"):
        p = make_params(np.float32)
        zero = dist.ZeroRedundancyOptimizer(optim.AdamW, p, lr=0.01, nonfinite=policy)
        zero.step(grads_for(0, comm.rank, np.float32))
        before = {k: v.copy() for k, v in p.items()}
        sd_before = zero.state_dict()
        g = grads_for(1, comm.rank, np.float32)
        if comm.rank == comm.size - 1:
            g["d"][5, 3] = np.nan
        try:
            outcome = zero.step(g)
        except FloatingPointError as e:
            outcome = str(e)
        sd_after = zero.state_dict()
        same_state = all(
            np.array_equal(sd_before["state"][k][n], sd_after["state"][k][n])
            for k in sd_before["state"]
            for n in ("exp_avg", "exp_avg_sq", "step")
        )
        res[policy] = {
            "outcome": outcome,
            "params_unchanged": all(np.array_equal(before[k], p[k]) for k in p),
            "state_unchanged": same_state,
        }
    return res


# -------------------------------------------------------------- checkpoints
def _ckpt_setup(comm):
    p = make_params(np.float32)
    zero = dist.ZeroRedundancyOptimizer(optim.AdamW8bit, p, lr=0.01, bucket_bytes=4096)
    return p, zero


def job_ckpt_save(out: str) -> None:
    """Phase 1 (N ranks): 3 steps, save."""
    comm = dist.default_communicator()
    p, zero = _ckpt_setup(comm)
    for step in range(3):
        zero.step(grads_for(step, comm.rank, np.float32))
    dist.save(os.path.join(out, "ckpt"), optimizer=zero, params=p, phase1_ranks=comm.size)
    write(out, "ckpt_save", comm.rank, {"ok": True})


def job_ckpt_resume(out: str) -> None:
    """Phase 2 (another N): load, 2 more steps, save again."""
    comm = dist.default_communicator()
    ck = dist.load(os.path.join(out, "ckpt"))
    p, zero = _ckpt_setup(comm)
    for k in p:
        p[k][...] = ck["params"][k]
    zero.load_state_dict(ck["optimizer"])
    for step in range(3, 5):
        zero.step(grads_for(step, comm.rank, np.float32))
    ranks = {"phase1_ranks": ck["phase1_ranks"], "phase2_ranks": comm.size}
    dist.save(os.path.join(out, "ckpt"), optimizer=zero, params=p, **ranks)
    write(out, "ckpt_resume", comm.rank, {"ok": True})


# ------------------------------------------------------------------ failures
def job_mismatch(out: str) -> None:
    """Rank 1 builds a different model / options: construction fails on every rank."""
    comm = dist.default_communicator()
    msgs = []
    for case in ("shape", "lr"):
        p = make_params(np.float32)
        lr = 0.01
        if comm.rank == 1 and case == "shape":
            p["c"] = np.zeros(6, np.float32)
        if comm.rank == 1 and case == "lr":
            lr = 0.02
        try:
            dist.ZeroRedundancyOptimizer(optim.AdamW, p, lr=lr)
            msgs.append(None)
        except ValueError as e:
            msgs.append(str(e))
    write(out, "mismatch", comm.rank, {"messages": msgs})


def job_fail(out: str, how: str) -> None:
    """Rank 1 dies (SIGKILL), raises, or hangs at step 3; the others must not hang."""
    comm = dist.Communicator(timeout=2.0) if how == "hang" else dist.default_communicator()
    p = make_params(np.float32)
    zero = dist.ZeroRedundancyOptimizer(optim.AdamW, p, lr=0.01, comm=comm)
    for step in range(100):
        if step == 3 and comm.rank == 1:
            if how == "kill":
                os.kill(os.getpid(), signal.SIGKILL)
            elif how == "raise":
                raise RuntimeError("rank 1 failed on purpose")
            else:
                time.sleep(60)
        zero.step(grads_for(step, comm.rank, np.float32))
    write(out, f"fail-{how}", comm.rank, {"finished": True})


def job_suite(out: str) -> None:
    """One launch for the equivalence checks (MPI start-up dominates small jobs)."""
    if dist.default_communicator().size == 2:
        job_mismatch(out)
    job_train(out)
    job_zero(out)


if __name__ == "__main__":
    job, out = sys.argv[1], sys.argv[2]
    if job.startswith("fail-"):
        job_fail(out, job[5:])
    else:
        globals()[f"job_{job}"](out)
