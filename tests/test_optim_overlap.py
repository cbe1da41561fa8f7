"""Issue 17 (left over): the optimizer step refuses param/grad/master/state
buffers that overlap in memory, with a ValueError naming both arrays, and
modifies nothing. Gradients may share memory with each other (only read);
arrays that lie back to back (the flatten() arena) are not overlapping."""

from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest
import slimgrad
from slimgrad import optim

MSG = "expected separate buffers"


def _state(opt):
    return {
        k: {n: (v.copy() if isinstance(v, np.ndarray) else v) for n, v in st.items()}
        for k, st in opt.state.items()
    }


def _assert_state(opt, snap):
    for k in snap:
        for n, v in snap[k].items():
            if isinstance(v, np.ndarray):
                np.testing.assert_array_equal(opt.state[k][n], v)
            else:
                assert opt.state[k][n] == v


def test_params_partly_overlapping():
    buf = np.arange(10, dtype=np.float32)
    opt = optim.Adam([buf[:6], buf[4:]])
    before = buf.copy()
    with pytest.raises(ValueError, match=rf"params\[0\] and params\[1\]: {MSG}"):
        opt.step([np.ones(6, np.float32), np.ones(6, np.float32)])
    np.testing.assert_array_equal(buf, before)
    assert opt.state == {}


@pytest.mark.parametrize("max_norm", [None, 1.0])
def test_grad_is_a_param(max_norm):
    p = np.ones(8, np.float32)
    opt = optim.SGD({"w": p}, lr=0.1)
    with pytest.raises(ValueError, match=rf"params\['w'\] and grads\['w'\]: {MSG}"):
        opt.step({"w": p}, max_norm=max_norm)
    np.testing.assert_array_equal(p, 1)


def test_grad_overlaps_another_params_state():
    rng = np.random.default_rng(0)
    params = {"a": rng.standard_normal(16).astype(np.float32), "b": np.ones(4, np.float32)}
    opt = optim.Adam(params)
    opt.step({k: np.ones_like(v) for k, v in params.items()})
    snap = _state(opt)
    p0 = {k: v.copy() for k, v in params.items()}
    grads = {"a": np.ones(16, np.float32), "b": opt.state["a"]["exp_avg_sq"][2:6]}
    with pytest.raises(ValueError, match=rf"grads\['b'\] and state\['a'\]\['exp_avg_sq'\]: {MSG}"):
        opt.step(grads)
    for k in params:
        np.testing.assert_array_equal(params[k], p0[k])
    _assert_state(opt, snap)


def test_replaced_state_overlapping_a_param():
    params = [np.ones(8, np.float32), np.ones(8, np.float32)]
    opt = optim.Adam(params)
    opt.step([np.ones(8, np.float32)] * 2)
    opt.state[1]["exp_avg"] = params[0]  # replaced by the other param itself
    with pytest.raises(ValueError, match=rf"params\[0\] and state\[1\]\['exp_avg'\]: {MSG}"):
        opt.step([np.ones(8, np.float32)] * 2)
    assert opt.state[0]["step"] == 1


def test_master_overlapping_state():
    p = np.ones(8, ml_dtypes.bfloat16)
    opt = optim.Adam([p])
    opt.step([np.ones(8, ml_dtypes.bfloat16)])
    opt.state[0]["exp_avg"] = opt.state[0]["master"]
    with pytest.raises(
        ValueError, match=rf"state\[0\]\['master'\] and state\[0\]\['exp_avg'\]: {MSG}"
    ):
        opt.step([np.ones(8, ml_dtypes.bfloat16)])


def test_shared_gradients_and_arena_are_accepted(isa):
    # One gradient array for two params (only read), and params/grads in
    # one buffer each, back to back: both fine.
    params = optim.flatten({"a": np.ones(10, np.float32), "b": np.ones(10, np.float32)})
    g = np.full(10, 0.5, np.float32)
    opt = optim.Adam(params, lr=0.1)
    opt.step({"a": g, "b": g})
    grads = optim.flatten({"a": g.copy(), "b": g.copy()})
    opt.step(grads)
    np.testing.assert_array_equal(params["a"], params["b"])
    assert opt.state["a"]["step"] == 2


def test_torch_optimizer_refuses_a_grad_sharing_the_param():
    torch = pytest.importorskip("torch")
    import slimgrad.torch as st

    p = torch.ones(6, requires_grad=True)
    p.grad = p.detach()  # the same memory
    opt = st.AdamW([p])
    with pytest.raises(ValueError, match=MSG):
        opt.step()
    assert torch.all(p == 1)


def test_large_lists_are_checked(isa):
    # Hundreds of arrays: the check sorts ranges, the last pair still found.
    with slimgrad.num_threads(1):
        params = [np.ones(3, np.float32) for _ in range(300)]
        opt = optim.SGD(params, lr=0.1)
        grads = [np.ones(3, np.float32) for _ in range(300)]
        grads[299] = params[150]
        with pytest.raises(ValueError, match=rf"params\[150\] and grads\[299\]: {MSG}"):
            opt.step(grads)
        assert all(np.all(p == 1) for p in params)


@pytest.mark.parametrize(
    "cls", [optim.LAMB, optim.AdamW8bit, optim.Adafactor], ids=["LAMB", "AdamW8bit", "Adafactor"]
)
def test_multipass_optimizers_refuse_a_grad_sharing_a_param(cls):
    rng = np.random.default_rng(1)
    params = [rng.standard_normal((16, 32)).astype(np.float32), np.ones(300, np.float32)]
    opt = cls(params)
    opt.step([np.ones_like(p) for p in params])
    snap = _state(opt)
    p0 = [p.copy() for p in params]
    with pytest.raises(ValueError, match=rf"params\[1\] and grads\[1\]: {MSG}"):
        opt.step([np.ones_like(params[0]), params[1]])
    for a, b in zip(params, p0):
        np.testing.assert_array_equal(a, b)
    _assert_state(opt, snap)


def test_lamb_refuses_a_state_shared_by_two_params():
    params = [np.ones(8, np.float32), np.ones(8, np.float32)]
    opt = optim.LAMB(params)
    opt.step([np.ones(8, np.float32)] * 2)
    opt.state[1]["exp_avg"] = opt.state[0]["exp_avg"]
    with pytest.raises(ValueError, match=MSG):
        opt.step([np.ones(8, np.float32)] * 2)
    assert opt.state[0]["step"] == 1
