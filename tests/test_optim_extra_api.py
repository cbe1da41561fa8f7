"""Lion, LAMB, AdamW8bit, Adafactor and the gradient utilities: bad input must
raise and leave params and state unchanged; state dicts resume bit-identically;
nonfinite policies, half-precision masters, several buckets, the flat arena."""

from __future__ import annotations

import types

import numpy as np
import pytest
from conftest import run_everywhere
from optim_extra_cases import grad_stream, make_params
from slimgrad.optim import (
    LAMB,
    Adafactor,
    AdamW8bit,
    Lion,
    _bucket,
    accumulate_,
    clip_grad_norm_,
    clip_grad_value_,
)

# ------------------------------------------------- bad input, state dicts
OPTIMIZERS = [(Lion, {}), (LAMB, {}), (AdamW8bit, {}), (Adafactor, {})]
OPT_IDS = ["Lion", "LAMB", "AdamW8bit", "Adafactor"]


def _setup(cls, kw, rng, steps=2):
    params = {
        "fc.weight": rng.standard_normal((4, 6)).astype(np.float32),
        "fc.bias": rng.standard_normal(6).astype(np.float32),
    }
    opt = cls(params, **kw)
    for g in grad_stream(rng, params, steps):
        opt.step(g)
    return params, opt


def _snapshot(params, opt):
    return {k: v.copy() for k, v in params.items()}, opt.state_dict()


def _assert_unchanged(params, opt, snap):
    p0, sd0 = snap
    for k in params:
        np.testing.assert_array_equal(params[k], p0[k])
    sd = opt.state_dict()
    for k, st in sd0["state"].items():
        for n, v in st.items():
            np.testing.assert_array_equal(sd["state"][k][n], v)


BAD_GRADS = [
    (
        "dtype",
        lambda g: {**g, "fc.bias": g["fc.bias"].astype(np.float64)},
        TypeError,
        "grads['fc.bias']: expected float32 C-contiguous array of shape (6,), got float64 array of shape (6,)",  # noqa: E501
    ),
    (
        "shape",
        lambda g: {**g, "fc.weight": np.zeros((6, 4), np.float32)},
        ValueError,
        "grads['fc.weight']: expected float32 C-contiguous array of shape (4, 6), got float32 array of shape (6, 4)",  # noqa: E501
    ),
    (
        "strided",
        lambda g: {**g, "fc.weight": np.zeros((4, 12), np.float32)[:, ::2]},
        TypeError,
        "grads['fc.weight']: expected float32 C-contiguous array of shape (4, 6), got non-contiguous float32 array of shape (4, 6)",  # noqa: E501
    ),
    (
        "list",
        lambda g: {**g, "fc.bias": [0.0] * 6},
        TypeError,
        "grads['fc.bias']: expected float32 C-contiguous array of shape (6,), got list",
    ),
    (
        "missing",
        lambda g: {"fc.weight": g["fc.weight"]},
        ValueError,
        "grads: missing 'fc.bias' (a gradient for every parameter is required)",
    ),
    (
        "nan",
        lambda g: {
            **g,
            "fc.bias": np.where(np.arange(6) == 2, np.nan, g["fc.bias"]).astype(np.float32),
        },
        FloatingPointError,
        "grads['fc.bias'] has a non-finite value at index 2",
    ),
]


@pytest.mark.parametrize("cls, kw", OPTIMIZERS, ids=OPT_IDS)
@pytest.mark.parametrize(
    "make, exc, message", [r[1:] for r in BAD_GRADS], ids=[r[0] for r in BAD_GRADS]
)
def test_bad_grads_raise_and_change_nothing(cls, kw, make, exc, message, rng):
    params, opt = _setup(cls, kw, rng)
    good = {k: rng.standard_normal(v.shape).astype(np.float32) for k, v in params.items()}
    snap = _snapshot(params, opt)
    with pytest.raises(exc) as info:
        opt.step(make(good))
    assert str(info.value) == message
    _assert_unchanged(params, opt, snap)


@pytest.mark.parametrize("cls, kw", OPTIMIZERS, ids=OPT_IDS)
def test_nonfinite_skip_and_readonly(cls, kw, rng):
    params, _ = _setup(cls, kw, rng, steps=0)
    opt = cls(params, nonfinite="skip", **kw)
    snap = {k: v.copy() for k, v in params.items()}
    bad = {k: np.full(v.shape, np.inf, np.float32) for k, v in params.items()}
    assert opt.step(bad) is False
    assert opt.state == {}
    for k in params:
        np.testing.assert_array_equal(params[k], snap[k])
    params["fc.bias"].flags.writeable = False
    with pytest.raises(ValueError, match=r"params\['fc.bias'\]: expected a writable array"):
        opt.step({k: np.ones(v.shape, np.float32) for k, v in params.items()})
    for k in params:
        np.testing.assert_array_equal(params[k], snap[k])


@pytest.mark.parametrize("cls, kw", OPTIMIZERS, ids=OPT_IDS)
def test_state_dict_round_trip_resumes_bit_identically(cls, kw, rng):
    params, opt = _setup(cls, kw, rng, steps=3)
    sd = opt.state_dict()
    twin = {k: v.copy() for k, v in params.items()}
    opt2 = cls(twin, **kw)
    opt2.load_state_dict(sd)
    for g in grad_stream(rng, params, 3):
        opt.step(g)
        opt2.step({k: v.copy() for k, v in g.items()})
    for k in params:
        np.testing.assert_array_equal(params[k], twin[k])
    # A mismatched state dict raises and changes nothing.
    bad = opt.state_dict()
    name = next(
        n for n, v in bad["state"]["fc.weight"].items() if isinstance(v, np.ndarray) and v.size
    )
    bad["state"]["fc.weight"][name] = bad["state"]["fc.weight"][name][:-1]
    snap = _snapshot(twin, opt2)
    with pytest.raises(ValueError, match=rf"state_dict\['state'\]\['fc.weight'\]\['{name}'\]"):
        opt2.load_state_dict(bad)
    _assert_unchanged(twin, opt2, snap)


@pytest.mark.parametrize("cls, kw", OPTIMIZERS, ids=OPT_IDS)
def test_half_params_step_on_float32_masters(cls, kw, rng):
    ml_dtypes = pytest.importorskip("ml_dtypes")
    for dt in (np.float16, ml_dtypes.bfloat16):
        p32 = {"w": rng.standard_normal((8, 40)).astype(np.float32)}
        ph = {"w": p32["w"].astype(dt)}
        o32, oh = cls({"w": ph["w"].astype(np.float32)}, **kw), cls(ph, **kw)
        for g in grad_stream(rng, p32, 5):
            o32.step(g)
            oh.step({"w": g["w"].astype(dt)})
        master = oh.state["w"]["master"]
        np.testing.assert_array_equal(ph["w"], master.astype(dt))


def test_bad_constructor_args():
    p = [np.zeros(3, np.float32)]
    with pytest.raises(ValueError, match=r"betas\[1\]: expected 0 <= beta < 1, got 1.0"):
        Lion(p, betas=(0.9, 1.0))
    with pytest.raises(ValueError, match="lr: expected a finite value >= 0, got -1"):
        LAMB(p, lr=-1)
    with pytest.raises(ValueError, match="block_size: expected 256"):
        AdamW8bit(p, block_size=128)
    with pytest.raises(ValueError, match="d: expected >= 1, got 0.5"):
        Adafactor(p, d=0.5)
    with pytest.raises(ValueError, match="beta2_decay: expected <= 0, got 0.1"):
        Adafactor(p, beta2_decay=0.1)


BAD_CLIP = [
    (
        "int",
        lambda g: [g[0], g[1].astype(np.int32)],
        TypeError,
        "grads[1]: expected float32 or float64 C-contiguous array, got int32 array of shape (5,)",
    ),
    (
        "readonly",
        lambda g: [g[0], np.frombuffer(g[1].tobytes(), np.float32)],
        ValueError,
        "grads[1]: expected a writable array, got a read-only float32 array of shape (5,)",
    ),
    (
        "container",
        lambda g: 3.0,
        TypeError,
        "grads: expected a dict, a list of ndarrays or an ndarray, got float",
    ),
]


@pytest.mark.parametrize(
    "make, exc, message", [r[1:] for r in BAD_CLIP], ids=[r[0] for r in BAD_CLIP]
)
def test_clip_bad_input_changes_nothing(make, exc, message, rng):
    g = [rng.standard_normal(4).astype(np.float64) * 100, rng.standard_normal(5).astype(np.float32)]
    bad = make(g)
    before = [x.copy() for x in g]
    for fn in (lambda: clip_grad_norm_(bad, 0.1), lambda: clip_grad_value_(bad, 0.1)):
        with pytest.raises(exc) as info:
            fn()
        assert str(info.value) == message
        for a, b in zip(g, before):
            np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="norm_type: expected a number > 0 or inf, got -1.0"):
        clip_grad_norm_(g, 1.0, norm_type=-1)
    acc = {"a": np.zeros(3, np.float32)}
    with pytest.raises(
        ValueError,
        match=r"grads\['a'\]: expected float32 C-contiguous array of shape \(3,\), got float32 array of shape \(4,\)",  # noqa: E501
    ):
        accumulate_(acc, {"a": np.ones(4, np.float32)})
    with pytest.raises(ValueError, match="grads: missing 'a'"):
        accumulate_(acc, {"b": np.ones(3, np.float32)})
    np.testing.assert_array_equal(acc["a"], np.zeros(3, np.float32))


def test_find_nonfinite_helpers():
    # The extra optimizers rely on the base's multi-tensor check (optim/_bucket.py).
    grads = [np.ones(3, np.float32), np.array([0, np.inf], np.float32)]
    assert _bucket.find_nonfinite(grads) == (1, 1)
    # ... and on find_nonfinite_in to name the bucket holding it.
    b1, b2 = types.SimpleNamespace(grads=grads[:1]), types.SimpleNamespace(grads=grads[1:])
    assert _bucket.find_nonfinite_in([b1, b2]) == (b2, 0, 1)
    assert _bucket.find_nonfinite_in([b1]) is None


@pytest.mark.parametrize("cls, kw", OPTIMIZERS, ids=OPT_IDS)
@pytest.mark.parametrize("nonfinite", ["raise", "ignore"])
def test_several_buckets_checked_before_any_update(cls, kw, nonfinite, rng):
    # Two dtypes: two kernel calls. A bad array in the second bucket must not
    # leave the first one updated.
    params = {"a": rng.standard_normal((3, 4)).astype(np.float32), "b": rng.standard_normal(5)}
    opt = cls(params, nonfinite=nonfinite, **kw)
    opt.step({"a": np.ones((3, 4), np.float32), "b": np.ones(5)})
    snap = _snapshot(params, opt)
    with pytest.raises(
        ValueError, match=r"grads\['b'\]: expected float64 C-contiguous array of shape \(5,\)"
    ):
        opt.step({"a": np.ones((3, 4), np.float32), "b": np.ones(6)})
    _assert_unchanged(params, opt, snap)
    if nonfinite == "raise":
        with pytest.raises(
            FloatingPointError, match=r"grads\['b'\] has a non-finite value at index 4"
        ):
            opt.step({"a": np.ones((3, 4), np.float32), "b": np.array([0, 0, 0, 0, np.nan])})
        _assert_unchanged(params, opt, snap)


@pytest.mark.parametrize("cls, kw", OPTIMIZERS, ids=OPT_IDS)
def test_flatten_arena_gives_the_same_steps(cls, kw, rng):
    from slimgrad.optim import flatten

    # Per-array semantics (LAMB's trust ratio, 8-bit blocks, Adafactor's
    # factors) must survive params that lie back to back in one buffer.
    params = make_params(rng, np.float32, [(5, 7), (300,), (0,), (3, 90), (1,)])
    arena = flatten({k: v.copy() for k, v in params.items()})
    grads = grad_stream(rng, params, 4)
    opt, opt2 = cls(params, **kw), cls(arena, **kw)
    for g in grads:
        opt.step(g)
        opt2.step(g)
    for k in params:
        np.testing.assert_array_equal(arena[k], params[k])


def test_adamw8bit_nonfinite_ignore_flows_like_torch(rng):
    # nonfinite="ignore": a NaN gradient reaches the param and the block's
    # state (scale NaN, codes 0) on every ISA alike, and stays NaN after.
    def run():
        p = {"w": rng.standard_normal(600).astype(np.float32)}
        opt = AdamW8bit(p, nonfinite="ignore")
        g = np.ones(600, np.float32)
        opt.step({"w": g})
        g[300] = np.nan
        g[10] = np.inf
        opt.step({"w": g})
        opt.step({"w": np.ones(600, np.float32)})
        return p["w"].copy(), opt.state_dict()["state"]["w"]

    results = run_everywhere(run)
    for w, st in results.values():
        assert np.isnan(w[256:512]).all() and np.isnan(w[:256]).all()
        assert np.isfinite(w[512:]).all()
        assert np.isnan(st["exp_avg_scale"][:2]).all() and np.isfinite(st["exp_avg_scale"][2])
        assert (st["exp_avg"][:512] == 0).all()
    first = next(iter(results.values()))
    for _, st in results.values():
        np.testing.assert_array_equal(st["exp_avg"], first[1]["exp_avg"])
        np.testing.assert_array_equal(st["exp_avg_sq"], first[1]["exp_avg_sq"])
