"""slimgrad.save / slimgrad.load: nested structures with optimizer state,
safetensors-readable files, atomic writes, refusal of unknown objects and garbage."""

from __future__ import annotations

import os

import numpy as np
import pytest
import slimgrad
from slimgrad import optim


def test_checkpoint_structure_round_trip(tmp_path):
    import ml_dtypes

    state = {
        "params": {
            "w": np.arange(6, dtype=np.float32).reshape(2, 3),
            "h": np.ones(3, ml_dtypes.bfloat16),
        },
        "optimizer": {
            "state": {0: {"step": 3, "m": np.zeros(2)}},
            "param_groups": [{"betas": (0.9, 0.99), "lr": 1e-3}],
        },
        "extra": [1, 2.5, None, "x", True, float("inf")],
        "shapes": [np.full((), 2.0), np.zeros((0, 3), np.int8), np.ones((3, 4))[:, 1]],
    }
    path = tmp_path / "c.safetensors"
    slimgrad.save(path, **state)
    back = slimgrad.load(path)
    assert back["extra"] == [1, 2.5, None, "x", True, float("inf")]
    assert back["optimizer"]["param_groups"] == [{"betas": (0.9, 0.99), "lr": 1e-3}]
    assert list(back["optimizer"]["state"]) == [0]
    np.testing.assert_array_equal(back["params"]["w"], state["params"]["w"])
    assert back["params"]["h"].dtype == ml_dtypes.bfloat16
    assert back["params"]["w"].flags.writeable
    for a, b in zip(back["shapes"], state["shapes"]):  # 0-d, empty, non-contiguous
        assert a.shape == b.shape and a.dtype == b.dtype
        np.testing.assert_array_equal(a, b)


def test_zero_d_and_empty_params_step_and_round_trip(tmp_path):
    ps = {"a": np.zeros((0, 3), np.float32), "b": np.array(1.5, np.float32)}
    opt = optim.Adam(ps, lr=0.1)
    assert opt.step({k: np.ones_like(v) for k, v in ps.items()})
    assert ps["b"] == np.float32(1.5) - np.float32(0.1)
    slimgrad.save(tmp_path / "c.safetensors", opt=opt.state_dict())
    opt.load_state_dict(slimgrad.load(tmp_path / "c.safetensors")["opt"])
    assert opt.state["b"]["exp_avg"].shape == ()


def test_checkpoint_is_readable_by_safetensors(tmp_path):
    st = pytest.importorskip("safetensors.numpy")
    path = tmp_path / "c.safetensors"
    w = np.arange(12, dtype=np.float32).reshape(3, 4)
    slimgrad.save(path, params={"w": w})
    loaded = st.load_file(str(path))
    np.testing.assert_array_equal(loaded["/params/w"], w)


def test_checkpoint_write_is_atomic(tmp_path, monkeypatch):
    path = tmp_path / "c.safetensors"
    slimgrad.save(path, params={"w": np.ones(4)})
    good = path.read_bytes()

    def crash(*args, **kwargs):
        raise OSError("disk on fire")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="disk on fire"):
        slimgrad.save(path, params={"w": np.zeros(4)})
    assert path.read_bytes() == good
    assert [p.name for p in tmp_path.iterdir()] == ["c.safetensors"]  # no temporary left


def test_checkpoint_refuses_unknown_objects(tmp_path):
    with pytest.raises(TypeError, match="cannot save a object"):
        slimgrad.save(tmp_path / "c.safetensors", x=object())
    assert not (tmp_path / "c.safetensors").exists()


def test_load_rejects_garbage(tmp_path):
    path = tmp_path / "bad.safetensors"
    path.write_bytes(b"\xff" * 16)
    with pytest.raises(ValueError, match="not a safetensors file"):
        slimgrad.load(path)
