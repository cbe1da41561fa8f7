"""Issue 17's optimizer items: all-or-nothing steps for every optimizer and
every mix of dtypes, a clear error for concurrent steps, replaced state
arrays checked at the next step. Each test fails on the code before the fix."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from slimgrad import optim
from test_optim_api import assert_unchanged, grads_like, snapshot

ALL = [
    (optim.SGD, dict(lr=0.1, momentum=0.9)),
    (optim.Adagrad, dict(lr=0.1)),
    (optim.RMSprop, dict(lr=0.01, momentum=0.5, centered=True)),
    (optim.Adadelta, dict()),
    (optim.Adam, dict(lr=0.01, amsgrad=True)),
    (optim.AdamW, dict(lr=0.01)),
    (optim.Adamax, dict(lr=0.01)),
    (optim.NAdam, dict(lr=0.01)),
    (optim.RAdam, dict(lr=0.01)),
    (optim.Lion, dict(lr=0.01)),
    (optim.LAMB, dict(lr=0.01)),
    (optim.AdamW8bit, dict(lr=0.01)),
    (optim.Adafactor, dict(lr=0.01)),
    (optim.ASGD, dict(lr=0.01, t0=1)),
    (optim.Rprop, dict(lr=0.01)),
]
IDS = [c.__name__ for c, _ in ALL]


def _mixed(rng):
    # Two dtypes: two buckets, two kernel calls per step.
    return {
        "a": rng.standard_normal((3, 4)).astype(np.float32),
        "b": rng.standard_normal((2, 5)),
    }


@pytest.mark.parametrize("nonfinite", ["raise", "ignore"])
@pytest.mark.parametrize("cls, kw", ALL, ids=IDS)
def test_mixed_dtype_step_is_all_or_nothing(cls, kw, nonfinite, rng):
    params = _mixed(rng)
    opt = cls(params, nonfinite=nonfinite, **kw)
    opt.step(grads_like(params, rng))
    # A read-only state array in the second bucket: the step must fail
    # before the first bucket's kernel runs.
    key = next(n for n, v in opt.state["b"].items() if isinstance(v, np.ndarray) and v.size)
    opt.state["b"][key].flags.writeable = False
    snap = snapshot(opt, params)
    with pytest.raises(ValueError, match=rf"\['b'\]\[?'?{key}'?\]?.*(writable|read-only)"):
        opt.step(grads_like(params, rng))
    assert_unchanged(opt, params, snap)
    assert opt.state["a"]["step"] == opt.state["b"]["step"] == 1


@pytest.mark.parametrize("cls, kw", ALL, ids=IDS)
def test_replaced_state_array_is_checked_at_the_next_step(cls, kw, rng):
    params = {"w": rng.standard_normal((4, 6)).astype(np.float32)}
    opt = cls(params, **kw)
    opt.step(grads_like(params, rng))
    key = next(n for n, v in opt.state["w"].items() if isinstance(v, np.ndarray) and v.size)
    good = opt.state["w"][key]
    opt.state["w"][key] = np.zeros(good.size + 1, good.dtype)  # wrong shape
    snap = snapshot(opt, params)
    with pytest.raises(ValueError, match=rf"\['w'\].*{key}.*expected .*shape"):
        opt.step(grads_like(params, rng))
    assert_unchanged(opt, params, snap)
    # A valid replacement is the array the next step updates.
    fresh = good.copy()
    opt.state["w"][key] = fresh
    opt.step(grads_like(params, rng))
    assert opt.state["w"][key] is fresh or np.shares_memory(opt.state["w"][key], fresh)
    assert opt.state["w"]["step"] == 2


@pytest.mark.parametrize("cls, kw", ALL, ids=IDS)
def test_concurrent_step_raises(cls, kw, rng):
    params = {"w": rng.standard_normal(64).astype(np.float32)}
    opt = cls(params, **kw)
    grads = grads_like(params, rng)
    entered, release = threading.Event(), threading.Event()
    inner = opt._step_all

    def slow_step_all(flat):
        entered.set()
        assert release.wait(10)
        return inner(flat)

    opt._step_all = slow_step_all
    errors = []

    def first():
        try:
            opt.step(grads)
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    t = threading.Thread(target=first)
    t.start()
    try:
        assert entered.wait(10)
        with pytest.raises(RuntimeError, match="already stepping in another thread"):
            opt.step(grads)
    finally:
        release.set()
        t.join()
    assert not errors
    assert opt.state["w"]["step"] == 1
    opt._step_all = inner
    opt.step(grads)  # the lock is free again
    assert opt.state["w"]["step"] == 2


def test_optimizer_copies_and_pickles_without_its_lock(rng):
    import copy
    import pickle

    params = {"w": rng.standard_normal(8).astype(np.float32)}
    opt = optim.Adam(params, lr=0.1)
    opt.step(grads_like(params, rng))
    for clone in (copy.deepcopy(opt), pickle.loads(pickle.dumps(opt))):
        clone.step(grads_like(params, rng))
        assert clone.state["w"]["step"] == 2


# ------------------------------------------------ AdamW8bit(min_8bit_size)
def test_adamw8bit_small_tensors_keep_float32_state_like_torch_adamw(isa, rng):
    torch = pytest.importorskip("torch")
    params = {
        "small": rng.standard_normal(100).astype(np.float32),
        "big": rng.standard_normal((20, 300)).astype(np.float32),
    }
    start = {k: v.copy() for k, v in params.items()}
    opt = optim.AdamW8bit(params, lr=1e-2, weight_decay=0.1, min_8bit_size=4096)
    ref8 = {"big": start["big"].copy()}
    opt8 = optim.AdamW8bit(ref8, lr=1e-2, weight_decay=0.1)
    tp = torch.tensor(start["small"], requires_grad=True)
    topt = torch.optim.AdamW([tp], lr=1e-2, weight_decay=0.1)
    for _ in range(100):
        g = grads_like(params, rng)
        opt.step(g)
        opt8.step({"big": g["big"]})
        tp.grad = torch.tensor(g["small"])
        topt.step()
    assert opt.state["small"]["exp_avg"].dtype == np.float32
    assert opt.state["small"]["exp_avg_scale"].size == 0
    assert opt.state["big"]["exp_avg"].dtype == np.int8
    np.testing.assert_allclose(params["small"], tp.detach().numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(params["big"], ref8["big"])  # per-tensor: unchanged


def test_adamw8bit_min_8bit_size_checked():
    p = {"w": np.zeros(4, np.float32)}
    with pytest.raises(ValueError, match="min_8bit_size: expected an int >= 0, got -1"):
        optim.AdamW8bit(p, min_8bit_size=-1)
    with pytest.raises(TypeError, match="min_8bit_size: expected an int, got float"):
        optim.AdamW8bit(p, min_8bit_size=4096.0)
