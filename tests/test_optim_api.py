"""Optimizer API: params structures, param groups, errors (nothing modified),
non-finite gradients, state dicts, flatten, functional layer (checkpoints:
test_checkpoint.py)."""

from __future__ import annotations

import numpy as np
import pytest
import slimgrad
from slimgrad import optim
from slimgrad.optim import functional as F


def model(rng, dtype=np.float32):
    return {
        "fc1.weight": rng.standard_normal((16, 8)).astype(dtype),
        "fc1.bias": rng.standard_normal(16).astype(dtype),
        "fc2.weight": rng.standard_normal((4, 16)).astype(dtype),
    }


def grads_like(params, rng):
    return {k: rng.standard_normal(v.shape).astype(v.dtype) for k, v in params.items()}


def snapshot(opt, params):
    """Deep copy of everything a failed step must leave alone."""
    state = {
        k: {n: (v.copy() if isinstance(v, np.ndarray) else v) for n, v in st.items()}
        for k, st in opt.state.items()
    }
    ps = (
        {k: v.copy() for k, v in params.items()}
        if isinstance(params, dict)
        else [v.copy() for v in params]
    )
    return state, ps


def assert_unchanged(opt, params, snap):
    state, ps = snap
    assert set(opt.state) == set(state)
    for k, st in state.items():
        assert set(opt.state[k]) == set(st)
        for n, v in st.items():
            if isinstance(v, np.ndarray):
                np.testing.assert_array_equal(opt.state[k][n], v)
            else:
                assert opt.state[k][n] == v
    items = params.items() if isinstance(params, dict) else enumerate(params)
    for k, v in items:
        np.testing.assert_array_equal(v, ps[k])


# ------------------------------------------------------------- structures
def test_dict_params_are_updated_in_place(rng):
    params = model(rng)
    ids = {k: id(v) for k, v in params.items()}
    before = {k: v.copy() for k, v in params.items()}
    opt = optim.SGD(params, lr=0.1)
    g = grads_like(params, rng)
    assert opt.step(g) is True
    for k, v in params.items():
        assert id(v) == ids[k]
        np.testing.assert_allclose(v, before[k] - np.float32(0.1) * g[k], rtol=1e-6)
    assert opt.state["fc1.weight"]["step"] == 1


def test_param_groups_with_their_own_options(rng):
    params = model(rng)
    before = {k: v.copy() for k, v in params.items()}
    opt = optim.SGD(
        [
            {"params": {"fc1.weight": params["fc1.weight"]}, "lr": 1.0},
            {"params": {k: params[k] for k in ("fc1.bias", "fc2.weight")}},
        ],
        lr=0.5,
    )
    assert [g["lr"] for g in opt.param_groups] == [1.0, 0.5]
    g = grads_like(params, rng)
    opt.step(g)  # a flat dict by name
    np.testing.assert_allclose(
        params["fc1.weight"], before["fc1.weight"] - g["fc1.weight"], rtol=1e-6
    )
    np.testing.assert_allclose(
        params["fc1.bias"], before["fc1.bias"] - 0.5 * g["fc1.bias"], rtol=1e-6
    )
    # one dict per group works too
    opt.step(
        [
            {"fc1.weight": g["fc1.weight"]},
            {"fc1.bias": g["fc1.bias"], "fc2.weight": g["fc2.weight"]},
        ]
    )
    assert opt.state["fc2.weight"]["step"] == 2


def test_list_params_and_list_groups(rng):
    a, b, c = (rng.standard_normal(5) for _ in range(3))
    opt = optim.Adam([{"params": [a, b]}, {"params": [c], "lr": 0.1}])
    g = [rng.standard_normal(5) for _ in range(3)]
    opt.step(g)  # flat list
    opt.step([g[:2], g[2:]])  # per group
    assert sorted(opt.state) == [0, 1, 2]
    assert opt.state_dict()["param_groups"][1]["params"] == [2]


@pytest.mark.parametrize(
    ("grads", "exc", "msg"),
    [
        (
            lambda g: [g["fc1.weight"]],
            TypeError,
            "grads: expected a dict by parameter name, got list",
        ),
        (
            lambda g: {k: g[k] for k in ("fc1.weight", "fc2.weight")},
            ValueError,
            "grads: missing 'fc1.bias' (a gradient for every parameter is required)",
        ),
        (
            lambda g: {**g, "extra": g["fc1.bias"]},
            ValueError,
            "grads: unexpected name 'extra' (not a parameter)",
        ),
        (
            lambda g: {**g, "fc1.bias": g["fc1.bias"].astype(np.float64)},
            TypeError,
            "grads['fc1.bias']: expected float32 C-contiguous array of shape (16,), got float64 array of shape (16,)",
        ),
        (
            lambda g: {**g, "fc2.weight": g["fc2.weight"].T.copy()},
            ValueError,
            "grads['fc2.weight']: expected float32 C-contiguous array of shape (4, 16), got float32 array of shape (16, 4)",
        ),
        (
            lambda g: {**g, "fc2.weight": np.asfortranarray(g["fc2.weight"])},
            TypeError,
            "grads['fc2.weight']: expected float32 C-contiguous array of shape (4, 16), got non-contiguous float32 array of shape (4, 16)",
        ),
        (
            lambda g: {**g, "fc1.bias": list(g["fc1.bias"])},
            TypeError,
            "grads['fc1.bias']: expected float32 C-contiguous array of shape (16,), got list",
        ),
    ],
    ids=["list-for-dict", "missing", "extra", "dtype", "shape", "fortran", "not-array"],
)
def test_bad_grads_raise_and_change_nothing(rng, grads, exc, msg):
    params = model(rng)
    opt = optim.AdamW(params)
    g = grads_like(params, rng)
    opt.step(g)
    snap = snapshot(opt, params)
    with pytest.raises(exc) as e:
        opt.step(grads(g))
    assert str(e.value) == msg
    assert_unchanged(opt, params, snap)


def test_failed_first_step_leaves_no_state(rng):
    params = model(rng)
    opt = optim.Adam(params)
    g = grads_like(params, rng)
    g["fc2.weight"] = g["fc2.weight"].astype(np.float64)
    with pytest.raises(TypeError):
        opt.step(g)
    assert opt.state == {}


def test_read_only_param_raises(rng):
    params = model(rng)
    params["fc1.bias"].flags.writeable = False
    with pytest.raises(ValueError, match=r"params\['fc1.bias'\]: expected a writable array"):
        optim.SGD(params)
    params["fc1.bias"].flags.writeable = True
    opt = optim.SGD(params, momentum=0.9)
    opt.step(grads_like(params, rng))
    params["fc2.weight"].flags.writeable = False  # after construction: the step refuses it
    snap = snapshot(opt, params)
    with pytest.raises(ValueError) as e:
        opt.step(grads_like(params, rng))
    assert (
        str(e.value)
        == "params['fc2.weight']: expected a writable array, got a read-only float32 array of shape (4, 16)"
    )
    assert_unchanged(opt, params, snap)


@pytest.mark.parametrize(
    ("params", "exc", "msg"),
    [
        (
            np.zeros(3),
            TypeError,
            "params: expected a dict, a list of ndarrays or a list of param groups, got ndarray",
        ),
        ([], ValueError, "params: expected at least one parameter, got an empty list"),
        (
            {"w": np.zeros(3, np.int32)},
            TypeError,
            "params['w']: expected float32, float64, float16 or bfloat16 C-contiguous array, got int32 array of shape (3,)",
        ),
        ({"w": [1.0, 2.0]}, TypeError, "params['w']: expected an ndarray, got list"),
    ],
    ids=["array", "empty", "int", "list"],
)
def test_bad_params(params, exc, msg):
    with pytest.raises(exc) as e:
        optim.Adam(params)
    assert str(e.value) == msg


def test_same_array_twice_is_refused():
    a = np.zeros(3)
    with pytest.raises(ValueError, match="appears more than once"):
        optim.SGD([a, a])


def test_bad_options():
    with pytest.raises(ValueError, match="lr: expected a finite value >= 0"):
        optim.Adam([np.zeros(2)], lr=-1)
    with pytest.raises(ValueError, match=r"betas\[1\]: expected 0 <= beta < 1"):
        optim.Adam([np.zeros(2)], betas=(0.9, 1.0))
    with pytest.raises(ValueError, match="nesterov: requires momentum > 0"):
        optim.SGD([np.zeros(2)], nesterov=True)
    with pytest.raises(ValueError, match="nonfinite: expected one of"):
        optim.SGD([np.zeros(2)], nonfinite="maybe")
    with pytest.raises(ValueError, match="rounding: expected one of"):
        optim.SGD([np.zeros(2)], rounding="up")


# -------------------------------------------------------------- non-finite
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nonfinite_raise_names_the_array(rng, bad):
    params = model(rng)
    opt = optim.Adam(params)
    opt.step(grads_like(params, rng))
    snap = snapshot(opt, params)
    g = grads_like(params, rng)
    g["fc2.weight"].reshape(-1)[17] = bad
    g["fc2.weight"].reshape(-1)[40] = bad
    with pytest.raises(FloatingPointError) as e:
        opt.step(g)
    assert str(e.value) == "grads['fc2.weight'] has a non-finite value at index 17"
    assert_unchanged(opt, params, snap)


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("nonfinite", ["raise", "skip"])
def test_nonfinite_in_large_arrays_changes_nothing(rng, threads, nonfinite):
    # Above the threading threshold (2 * 2^15 elements): the scan and the
    # update share one parallel region, the update tasks skipped on a bad value.
    params = {
        "a": rng.standard_normal(200_001).astype(np.float32),
        "b": rng.standard_normal(70_003).astype(np.float32),
    }
    opt = optim.Adam(params, nonfinite=nonfinite)
    opt.step(grads_like(params, rng))
    snap = snapshot(opt, params)
    g = grads_like(params, rng)
    g["b"][65_537] = np.nan
    g["b"][70_002] = np.inf
    with slimgrad.num_threads(threads):
        if nonfinite == "raise":
            with pytest.raises(FloatingPointError) as e:
                opt.step(g)
            assert str(e.value) == "grads['b'] has a non-finite value at index 65537"
        else:
            assert opt.step(g) is False
        assert_unchanged(opt, params, snap)
        assert opt.step(grads_like(params, rng)) is not False  # and steps again after


def test_nonfinite_skip_returns_false_and_changes_nothing(rng):
    params = model(rng)
    opt = optim.RMSprop(params, momentum=0.9, nonfinite="skip")
    opt.step(grads_like(params, rng))
    snap = snapshot(opt, params)
    g = grads_like(params, rng)
    g["fc1.weight"][3, 2] = np.nan
    assert opt.step(g) is False
    assert_unchanged(opt, params, snap)
    assert opt.step(grads_like(params, rng)) is True
    assert opt.state["fc1.weight"]["step"] == 2


def test_nonfinite_in_a_later_group_leaves_earlier_groups_untouched(rng):
    a = rng.standard_normal(50).astype(np.float32)
    b = rng.standard_normal(50_000)  # another dtype: another bucket
    c = rng.standard_normal(70).astype(np.float32)
    params = [a, b, c]
    opt = optim.Adam([{"params": [a, b]}, {"params": [c], "lr": 0.1}], nonfinite="skip")
    snap = snapshot(opt, params)
    g = [
        rng.standard_normal(50).astype(np.float32),
        rng.standard_normal(50_000),
        rng.standard_normal(70).astype(np.float32),
    ]
    g[2][69] = np.inf
    assert opt.step(g) is False
    assert_unchanged(opt, params, snap)
    opt.nonfinite = "raise"
    with pytest.raises(FloatingPointError, match=r"grads\[2\] has a non-finite value at index 69"):
        opt.step(g)
    g[2][69] = 0
    g[2] = g[2].astype(np.float64)  # a bad array in the last bucket: checked before any update
    with pytest.raises(TypeError, match=r"grads\[2\]"):
        opt.step(g)
    assert_unchanged(opt, params, snap)


def test_nonfinite_ignore_lets_nan_through(rng):
    p = np.zeros(4, np.float32)
    opt = optim.SGD([p], nonfinite="ignore")
    assert opt.step([np.array([1, np.nan, 1, 1], np.float32)]) is True
    assert np.isnan(p[1]) and np.isfinite(p[0])


# ------------------------------------------------------------- state dicts
ROUND_TRIP = [
    ("Adam", dict(amsgrad=True)),
    ("AdamW", {}),
    ("SGD", dict(momentum=0.9)),
    ("Adagrad", {}),
    ("RMSprop", dict(centered=True, momentum=0.5)),
    ("Adadelta", {}),
    ("Adamax", {}),
    ("NAdam", {}),
    ("RAdam", {}),
    ("ASGD", dict(t0=2)),
    ("Rprop", {}),
]


@pytest.mark.parametrize(("name", "kw"), ROUND_TRIP, ids=[n for n, _ in ROUND_TRIP])
def test_state_dict_round_trip_resumes_bit_identically(rng, tmp_path, name, kw):
    params = model(rng)
    grads = [grads_like(params, rng) for _ in range(6)]
    opt = getattr(optim, name)(params, **kw)
    for g in grads[:3]:
        opt.step(g)
    path = tmp_path / "ckpt.safetensors"
    slimgrad.save(path, params=params, optimizer=opt.state_dict())
    for g in grads[3:]:
        opt.step(g)

    ck = slimgrad.load(path)
    params2 = ck["params"]
    opt2 = getattr(optim, name)(params2, **kw)
    opt2.load_state_dict(ck["optimizer"])
    for g in grads[3:]:
        opt2.step(g)
    for k in params:
        np.testing.assert_array_equal(params2[k], params[k])
    for k in opt.state:
        for n, v in opt.state[k].items():
            np.testing.assert_array_equal(opt2.state[k][n], v)


def test_state_dict_is_a_copy(rng):
    params = model(rng)
    opt = optim.Adam(params)
    opt.step(grads_like(params, rng))
    sd = opt.state_dict()
    m = sd["state"]["fc1.bias"]["exp_avg"].copy()
    opt.step(grads_like(params, rng))
    np.testing.assert_array_equal(sd["state"]["fc1.bias"]["exp_avg"], m)
    assert sd["param_groups"][0]["params"] == ["fc1.weight", "fc1.bias", "fc2.weight"]


def _bad_state_dicts(sd):
    import copy

    def edit(fn):
        d = copy.deepcopy(sd)
        fn(d)
        return d

    return [
        (
            edit(lambda d: d["state"]["fc1.bias"].__setitem__("exp_avg", np.zeros(15, np.float32))),
            ValueError,
            "state_dict['state']['fc1.bias']['exp_avg']: expected float32 array of shape (16,), got float32 array of shape (15,)",
        ),
        (
            edit(lambda d: d["state"]["fc1.bias"].__setitem__("exp_avg", np.zeros(16))),
            ValueError,
            "state_dict['state']['fc1.bias']['exp_avg']: expected float32 array of shape (16,), got float64 array of shape (16,)",
        ),
        (
            edit(lambda d: d["state"]["fc1.bias"].pop("exp_avg_sq")),
            ValueError,
            "state_dict['state']['fc1.bias']: expected entries ['exp_avg', 'exp_avg_sq', 'step'], got ['exp_avg', 'step']",
        ),
        (
            edit(lambda d: d["state"].__setitem__("nope", {})),
            ValueError,
            "state_dict['state']: unexpected key 'nope' (not a parameter)",
        ),
        (
            edit(lambda d: d["param_groups"].append(dict(d["param_groups"][0]))),
            ValueError,
            "state_dict: expected 1 param groups, got 2",
        ),
        (
            edit(
                lambda d: d["param_groups"][0].__setitem__(
                    "params", ["fc1.bias", "fc1.weight", "fc2.weight"]
                )
            ),
            ValueError,
            "state_dict['param_groups'][0]['params']: expected keys ['fc1.weight', 'fc1.bias', 'fc2.weight'], "
            "got ['fc1.bias', 'fc1.weight', 'fc2.weight']",
        ),
        (
            edit(lambda d: d["state"]["fc1.bias"].__setitem__("step", -1)),
            ValueError,
            "state_dict['state']['fc1.bias']['step']: expected a non-negative number, got -1",
        ),
        (
            {"state": {}},
            TypeError,
            "state_dict: expected a dict with exactly 'state' and 'param_groups'",
        ),
    ]


def test_load_state_dict_validates_and_changes_nothing(rng):
    params = model(rng)
    opt = optim.Adam(params, lr=0.01)
    opt.step(grads_like(params, rng))
    opt.step(grads_like(params, rng))
    sd = opt.state_dict()
    for bad, exc, msg in _bad_state_dicts(sd):
        snap = snapshot(opt, params)
        with pytest.raises(exc) as e:
            opt.load_state_dict(bad)
        assert str(e.value) == msg
        assert_unchanged(opt, params, snap)
        assert opt.param_groups[0]["lr"] == 0.01


def test_load_state_dict_copies_options(rng):
    params = model(rng)
    opt = optim.Adam(params, lr=0.01)
    opt.step(grads_like(params, rng))
    sd = opt.state_dict()
    sd["param_groups"][0]["lr"] = 0.5
    opt2 = optim.Adam({k: v.copy() for k, v in params.items()})
    opt2.load_state_dict(sd)
    assert opt2.param_groups[0]["lr"] == 0.5
    sd["state"]["fc1.bias"]["exp_avg"][:] = 7  # loading copied the arrays
    assert not np.any(opt2.state["fc1.bias"]["exp_avg"] == 7)


# ---------------------------------------------------------------- flatten
def test_flatten_views_one_buffer(rng):
    params = model(rng)
    flat = optim.flatten(params)
    assert list(flat) == list(params)
    start = flat["fc1.weight"].ctypes.data
    assert start % 64 == 0
    offset = 0
    for k, v in flat.items():
        assert v.ctypes.data == start + offset  # back to back, in order
        assert v.shape == params[k].shape and v.flags.c_contiguous and v.flags.writeable
        np.testing.assert_array_equal(v, params[k])
        offset += v.nbytes


def test_flattened_model_steps_like_separate_arrays(rng):
    params = model(rng)
    grads = [grads_like(params, rng) for _ in range(3)]
    flat = optim.flatten(params)
    sep = {k: v.copy() for k, v in params.items()}
    o1, o2 = optim.AdamW(flat, amsgrad=True), optim.AdamW(sep, amsgrad=True)
    for g in grads:
        o1.step(optim.flatten(g))
        o2.step(g)
    for k in params:
        np.testing.assert_array_equal(flat[k], sep[k])
    # the optimizer placed the state in one buffer as well
    assert o1.state["fc1.bias"]["exp_avg"].base is o1.state["fc2.weight"]["exp_avg"].base


# ------------------------------------------------------------- functional
def test_functional_matches_the_class(rng):
    p0 = rng.standard_normal(1000).astype(np.float32)
    grads = [rng.standard_normal(1000).astype(np.float32) for _ in range(5)]
    p = p0.copy()
    opt = optim.AdamW([p], amsgrad=True, weight_decay=0.1)
    q = p0.copy()
    m, v, vmax = (np.zeros_like(q) for _ in range(3))
    for t, g in enumerate(grads, 1):
        opt.step([g])
        F.adamw_(q, g, m, v, step=t, weight_decay=0.1, amsgrad=True, max_exp_avg_sq=vmax)
    np.testing.assert_array_equal(p, q)
    np.testing.assert_array_equal(m, opt.state[0]["exp_avg"])


def test_functional_nadam_returns_mu_product(rng):
    p0 = rng.standard_normal(10)
    g = rng.standard_normal(10)
    p = p0.copy()
    opt = optim.NAdam([p])
    opt.step([g])
    opt.step([g])
    q, m, v = p0.copy(), np.zeros(10), np.zeros(10)
    mu = F.nadam_(q, g, m, v, step=1, mu_product=1.0)
    mu = F.nadam_(q, g, m, v, step=2, mu_product=mu)
    assert mu == opt.state[0]["mu_product"]
    np.testing.assert_array_equal(p, q)


def test_functional_errors_name_the_argument():
    p = np.zeros(4, np.float32)
    with pytest.raises(TypeError) as e:
        F.sgd_(p, np.zeros(4), step=1, lr=0.1)
    assert (
        str(e.value)
        == "grad: expected float32 C-contiguous array of shape (4,), got float64 array of shape (4,)"
    )
    with pytest.raises(
        ValueError, match="exp_avg_sq: expected float32 C-contiguous array of shape"
    ):
        F.adam_(p, p.copy(), np.zeros(4, np.float32), np.zeros(3, np.float32), step=1)
    with pytest.raises(ValueError, match="momentum_buffer: required exactly when momentum != 0"):
        F.sgd_(p, p.copy(), step=1, lr=0.1, momentum=0.9)
    g = np.array([0, 0, np.nan, 0], np.float32)
    with pytest.raises(FloatingPointError, match="grad has a non-finite value at index 2"):
        F.sgd_(p, g, step=1, lr=0.1, check_finite=True)
    np.testing.assert_array_equal(p, 0)


def test_state_is_placed_at_the_params_cache_line_offset(rng):
    import ml_dtypes

    buf = np.zeros(70_000 + 16, np.float32)
    p = buf[3 : 3 + 70_000]  # 12 bytes past whatever NumPy gave
    h = np.zeros(5000, ml_dtypes.bfloat16)
    opt = optim.Adam([p, h], amsgrad=True)
    opt.step([np.ones_like(p), np.ones_like(h)])
    for name in ("exp_avg", "exp_avg_sq", "max_exp_avg_sq"):
        assert opt.state[0][name].ctypes.data % 64 == p.ctypes.data % 64
        assert opt.state[1][name].ctypes.data % 64 == 0
    assert opt.state[1]["master"].ctypes.data % 64 == 0
    sd = opt.state_dict()
    opt.load_state_dict(sd)  # loading places the copies the same way
    assert opt.state[0]["exp_avg"].ctypes.data % 64 == p.ctypes.data % 64


def test_bench_suite_runs_at_a_tiny_size():
    # Correctness of the suite's plumbing only; speed is never asserted.
    from slimgrad.bench import optim as suite

    names = []
    for case in suite.cases(2048):
        assert case.bytes > 0 and "slimgrad" in case.impls
        for fn in case.impls.values():
            fn()
        names.append(case.name)
    # + 3 low-precision AdamW cases + 2 clip+AdamW cases
    assert names[0] == "stream probe" and len(names) == 14
