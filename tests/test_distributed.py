"""slimgrad.distributed in one process: the pieces the MPI jobs build on.

The multi-rank behaviour is tested under mpiexec in test_distributed_mpi.py;
here: the ordered reduction, the partition, flat spaces, state cut/assemble,
ZeRO on one rank (= the plain optimizer), sharded checkpoints and errors.
"""

from __future__ import annotations

import json
import os
import sys

import numpy as np
import pytest
import slimgrad.distributed as dist
from slimgrad import optim
from slimgrad.distributed._comm import _ordered_sum, split_counts
from slimgrad.distributed._flat import FlatSpace
from slimgrad.distributed._zero import partition
from slimgrad.distributed._zero_state import assemble, cut

try:
    from ml_dtypes import bfloat16
except ImportError:  # pragma: no cover
    bfloat16 = None


@pytest.fixture(scope="module")
def comm():
    pytest.importorskip("mpi4py", reason="mpi4py not installed (pip install 'slimgrad[mpi]')")
    return dist.Communicator(abort_on_error=False)


def test_missing_mpi4py_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "mpi4py", None)
    with pytest.raises(ImportError, match=r"pip install 'slimgrad\[mpi\]'"):
        dist.Communicator()


# ------------------------------------------------------------ the reduction
@pytest.mark.parametrize("n", [1, 2, 3, 4, 5])
@pytest.mark.parametrize("dtype", ["float32", "float64", "float16", "bfloat16"])
@pytest.mark.parametrize("size", [0, 1, 15, 17, (1 << 15) + 3])
def test_ordered_sum_is_rank_order_then_divide(n, dtype, size):
    if dtype == "bfloat16" and bfloat16 is None:
        pytest.skip("ml_dtypes not installed")
    dt = np.dtype(bfloat16 if dtype == "bfloat16" else dtype)
    rng = np.random.default_rng(size + n)
    pieces = [rng.standard_normal(size).astype(dt) for _ in range(n)]
    wide = np.float32 if dt.itemsize == 2 else dt
    want = pieces[0].astype(wide)
    for p in pieces[1:]:
        want = want + p.astype(wide)
    want = (want / n).astype(dt)
    for alias in [None, *range(n)]:  # out may be a fresh array or any piece
        ps = [p.copy() for p in pieces]
        out = np.empty(size, dt) if alias is None else ps[alias]
        tmp = np.empty(1 << 15, np.float32)
        assert _ordered_sum(ps, out, True, True, tmp)
        assert np.array_equal(out.view(np.uint8), want.view(np.uint8)), alias


def test_ordered_sum_reports_nonfinite():
    a = np.ones(40, np.float32)
    b = np.ones(40, np.float32)
    b[33] = np.inf
    out = np.empty(40, np.float32)
    assert not _ordered_sum([a, b], out, False, True, np.empty(1 << 15, np.float32))
    assert _ordered_sum([a, a], out, False, True, np.empty(1 << 15, np.float32))


@pytest.mark.parametrize("total", [0, 1, 16, 17, 1000, 12345])
@pytest.mark.parametrize("parts", [1, 2, 3, 4, 7])
def test_split_counts(total, parts):
    counts = split_counts(total, parts)
    assert len(counts) == parts and sum(counts) == total and min(counts) >= 0
    starts = np.cumsum([0, *counts[:-1]])
    assert all(s % 16 == 0 or s == total for s in starts)
    assert max(counts) <= -(-total // parts) + 16


# ------------------------------------------------------------- the partition
@pytest.mark.parametrize("granularity", [None, 16, 256])
@pytest.mark.parametrize("parts", [1, 2, 3, 4, 8])
def test_partition_bounds(granularity, parts):
    sizes = [561, 1000, 5, 2100, 0, 7]
    bounds = partition(sizes, parts, granularity)
    starts = list(np.cumsum([0, *sizes]))
    assert bounds[0] == 0 and bounds[-1] == sum(sizes) and len(bounds) == parts + 1
    assert all(a <= b for a, b in zip(bounds, bounds[1:]))
    for b in bounds:
        if granularity is None:
            assert b in starts  # whole arrays only
        else:  # on a multiple of the granularity within its array, or an array's end
            i = max(i for i, s in enumerate(starts) if s <= b)
            assert b in starts or (b - starts[i]) % granularity == 0
    if granularity == 16:
        assert max(np.diff(bounds)) <= sum(sizes) / parts + 16


# -------------------------------------------------------------- flat spaces
def test_flat_space_arena_is_one_view_and_copies_otherwise():
    rng = np.random.default_rng(0)
    params = {"a": rng.standard_normal((3, 5)), "b": rng.standard_normal(7), "c": np.zeros(0)}
    arena = optim.flatten(params)
    space = FlatSpace(list(arena.values()))
    assert space.flat is not None and space.size == 22
    space.flat[:] = np.arange(22)
    assert arena["b"][0] == 15  # a view, not a copy
    loose = FlatSpace([rng.standard_normal((3, 5)), rng.standard_normal(7)])
    assert loose.flat is None
    buf = np.empty(10)
    loose.gather(10, 20, buf)
    assert np.array_equal(buf, np.concatenate([a.ravel() for a in loose.arrays])[10:20])
    loose.scatter(10, 20, -buf)
    assert np.array_equal(loose.arrays[1][:5], -buf[5:])


def test_assemble_and_cut_round_trip():
    rng = np.random.default_rng(1)
    shape, g = (5, 300), 256
    whole = {
        "step": 3,
        "exp_avg": rng.standard_normal(shape).astype(np.float32),
        "exp_avg_scale": rng.standard_normal(-(-1500 // g)).astype(np.float32),
    }
    cuts = [(0, 512), (512, 1024), (1024, 1500)]
    parts = [(lo, hi, False, cut(shape, whole, lo, hi, False, g)) for lo, hi in cuts]
    assert parts[1][3]["exp_avg_scale"].size == 2
    back = assemble(shape, parts[::-1])
    assert back["step"] == 3
    for k in ("exp_avg", "exp_avg_scale"):
        assert np.array_equal(back[k], whole[k])
    with pytest.raises(ValueError, match=r"state\['odd'\]: cannot cut an array of 7 elements"):
        cut(shape, {"odd": np.zeros(7)}, 0, 512, False, g)


# -------------------------------------------------------- ZeRO on one rank
@pytest.mark.parametrize("cls", [optim.SGD, optim.AdamW, optim.LAMB, optim.AdamW8bit])
def test_zero_on_one_rank_is_the_plain_optimizer(comm, cls):
    rng = np.random.default_rng(2)
    p1 = {"w": rng.standard_normal((40, 30)).astype(np.float32), "b": np.ones(30, np.float32)}
    p2 = {k: v.copy() for k, v in p1.items()}
    zero = dist.ZeroRedundancyOptimizer(cls, p1, comm=comm, lr=0.01)
    ref = cls(p2, lr=0.01)
    for _ in range(3):
        g = {k: rng.standard_normal(v.shape).astype(np.float32) for k, v in p1.items()}
        assert zero.step(g) and ref.step(g)
    for k in p1:
        assert np.array_equal(p1[k], p2[k])
    sd, want = zero.state_dict(), ref.state_dict()
    assert sd["param_groups"] == want["param_groups"]
    for k in want["state"]:
        for n, v in want["state"][k].items():
            assert np.array_equal(sd["state"][k][n], v), (k, n)


def test_zero_grads_checked_before_anything(comm):
    p = {"w": np.ones((2, 3), np.float32)}
    zero = dist.ZeroRedundancyOptimizer(optim.AdamW, p, comm=comm)
    with pytest.raises(ValueError, match=r"grads: missing 'w'"):
        zero.step({})
    with pytest.raises(
        TypeError,
        match=r"grads\['w'\]: expected float32 C-contiguous array of shape \(2, 3\), got float64 \(2, 3\)",
    ):
        zero.step({"w": np.ones((2, 3))})
    assert np.array_equal(p["w"], np.ones((2, 3))) and zero.state_nbytes() == 0


def test_zero_bad_options(comm):
    p = {"w": np.ones(3, np.float32)}
    with pytest.raises(ValueError, match="lr"):
        dist.ZeroRedundancyOptimizer(optim.AdamW, p, comm=comm, lr=-1.0)
    with pytest.raises(ValueError, match="max_grad_norm"):
        dist.ZeroRedundancyOptimizer(optim.AdamW, p, comm=comm, max_grad_norm=-1.0)
    with pytest.raises(ValueError, match="bucket_bytes"):
        dist.ZeroRedundancyOptimizer(optim.AdamW, p, comm=comm, bucket_bytes=10)


def test_zero_load_state_dict_checks_everything_first(comm):
    p = {"w": np.ones(300, np.float32)}
    zero = dist.ZeroRedundancyOptimizer(optim.AdamW, p, comm=comm, lr=0.1)
    zero.step({"w": np.ones(300, np.float32)})
    sd = zero.state_dict()
    bad = zero.state_dict()
    bad["state"]["w"]["exp_avg"] = np.zeros(299, np.float32)
    with pytest.raises(
        ValueError, match=r"load_state_dict: nothing was loaded on any rank; rank 0"
    ):
        zero.load_state_dict(bad)
    after = zero.state_dict()
    assert np.array_equal(after["state"]["w"]["exp_avg"], sd["state"]["w"]["exp_avg"])


# ------------------------------------------------------------ checkpoints
def test_sharded_checkpoint_on_one_rank_and_overwrite(comm, tmp_path, monkeypatch):
    rng = np.random.default_rng(3)
    p = {"w": rng.standard_normal(1000).astype(np.float32)}
    zero = dist.ZeroRedundancyOptimizer(optim.Adam, p, comm=comm, lr=0.01)
    zero.step({"w": np.ones(1000, np.float32)})
    dist.save(tmp_path / "ck", optimizer=zero, params=p, epoch=1)
    first = sorted(os.listdir(tmp_path / "ck"))
    zero.step({"w": np.ones(1000, np.float32)})
    dist.save(tmp_path / "ck", optimizer=zero, params=p, epoch=2)
    files = sorted(os.listdir(tmp_path / "ck"))
    assert len(files) == 3 and files != first  # old save's files removed
    ck = dist.load(tmp_path / "ck")
    assert ck["epoch"] == 2 and isinstance(ck["optimizer"], dist.ShardedState)
    plain = optim.Adam({"w": ck["params"]["w"]}, lr=0.01)
    plain.load_state_dict(ck["optimizer"].consolidated())
    assert plain.state["w"]["step"] == 2

    # A save that fails part-way leaves the previous checkpoint the loadable one.
    from slimgrad import checkpoint

    real = checkpoint.save

    def failing(path, **state):
        if "common." in os.fspath(path):
            raise OSError("disk full")
        real(path, **state)

    monkeypatch.setattr(checkpoint, "save", failing)
    with pytest.raises(OSError, match=r"failed; rank 0: OSError: disk full"):
        dist.save(tmp_path / "ck", optimizer=zero, params=p, epoch=3)
    monkeypatch.undo()
    assert dist.load(tmp_path / "ck")["epoch"] == 2


def test_load_errors(tmp_path):
    with pytest.raises(OSError):
        dist.load(tmp_path)
    (tmp_path / "index.json").write_text(json.dumps({"format": "other"}))
    with pytest.raises(ValueError, match="not a slimgrad sharded checkpoint index"):
        dist.load(tmp_path)
    index = {"format": "slimgrad-sharded-checkpoint", "common": "c.safetensors", "shards": []}
    (tmp_path / "index.json").write_text(json.dumps(index))
    with pytest.raises(OSError, match="names 'c.safetensors', which does not exist"):
        dist.load(tmp_path)


# ------------------------------------------------------------ data parallel
def test_data_parallel_helpers_on_one_rank(comm):
    g = {"a": np.arange(5, dtype=np.float32), "b": np.ones(3, np.float16)}
    assert dist.allreduce_gradients(g, comm=comm) is g
    assert np.array_equal(g["a"], np.arange(5))
    with pytest.raises(TypeError, match=r"grads\[0\]: expected a writable C-contiguous ndarray"):
        dist.allreduce_gradients([np.ones(4)[::2]], comm=comm)
    assert dist.batch_slice(10, comm) == slice(0, 10)
    p = {"w": np.ones(4, np.float32)}
    opt = dist.DistributedOptimizer(optim.SGD(p, lr=0.5), comm)
    assert opt.step({"w": np.ones(4, np.float32)})
    assert np.array_equal(p["w"], np.full(4, 0.5)) and opt.param_groups[0]["lr"] == 0.5


def test_zero_with_a_scheduler_saves_and_loads(comm, tmp_path):
    # A scheduler adds "initial_lr" to the param groups: not an optimizer option.
    from slimgrad import schedule

    p = {"w": np.ones(100, np.float32)}
    zero = dist.ZeroRedundancyOptimizer(optim.AdamW, p, comm=comm, lr=0.1)
    sched = schedule.StepLR(zero, step_size=1, gamma=0.5)
    zero.step({"w": np.ones(100, np.float32)})
    sched.step()
    dist.save(tmp_path / "ck", optimizer=zero)
    other = dist.ZeroRedundancyOptimizer(optim.AdamW, {"w": p["w"].copy()}, comm=comm, lr=0.1)
    other.load_state_dict(dist.load(tmp_path / "ck")["optimizer"])
    assert other.param_groups[0]["lr"] == 0.05 and other.param_groups[0]["initial_lr"] == 0.1
    assert other.optimizer.param_groups[0]["lr"] == 0.05
    assert other.state_dict()["state"]["w"]["step"] == 1
