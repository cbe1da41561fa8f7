"""slimgrad.optim with torch's habits: None gradients skipped, cast=, torch state dicts."""

from __future__ import annotations

import copy

import numpy as np
import pytest
from slimgrad import optim

torch = pytest.importorskip("torch")

SHAPES = [(7, 5), (33,), (1,), (16,)]


def arrays(seed=0):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(s).astype(np.float32) for s in SHAPES]


def grads(t, missing):
    rng = np.random.default_rng(1000 + t)
    return [
        None if i in missing(t) else rng.standard_normal(s).astype(np.float32)
        for i, s in enumerate(SHAPES)
    ]


CASES = [
    ("AdamW", {"lr": 1e-2}),
    ("Adam", {"lr": 1e-2, "weight_decay": 0.1}),
    ("SGD", {"lr": 1e-2, "momentum": 0.9}),
    ("Adagrad", {"lr": 1e-2}),
    ("RMSprop", {"lr": 1e-3, "momentum": 0.5}),
]


def torch_run(name, kw, base, steps, missing, start=0, opt=None, params=None):
    params = params or [torch.tensor(a).requires_grad_() for a in base]
    opt = opt or getattr(torch.optim, name)(params, **kw, foreach=False)
    for t in range(start, start + steps):
        for p, g in zip(params, grads(t, missing)):
            p.grad = None if g is None else torch.tensor(g)
        opt.step()
    return opt, params


@pytest.mark.parametrize("layout", ["list", "groups"])
@pytest.mark.parametrize("name,kw", CASES)
def test_none_grads_skip_like_torch(name, kw, layout):
    # param 3 gets its first gradient at step 5; param 2 only every third step.
    def missing(t):
        return {i for i, skip in ((3, t < 5), (2, t % 3 != 0), (0, t == 7)) if skip}

    base = arrays()
    mine = [a.copy() for a in base]
    params = mine if layout == "list" else [{"params": mine[:2]}, {"params": mine[2:], "lr": 1e-3}]
    opt = getattr(optim, name)(params, **kw)
    tparams = [torch.tensor(a).requires_grad_() for a in base]
    tgroups = (
        tparams
        if layout == "list"
        else [{"params": tparams[:2]}, {"params": tparams[2:], "lr": 1e-3}]
    )
    topt = getattr(torch.optim, name)(tgroups, **kw, foreach=False)
    for t in range(30):
        g = grads(t, missing)
        opt.step(g if layout == "list" else [g[:2], g[2:]])
        for p, gg in zip(tparams, g):
            p.grad = None if gg is None else torch.tensor(gg)
        topt.step()
        if t == 3:  # no state before the first gradient, as torch (Adagrad: eager state)
            assert 3 not in opt.state
            assert (tparams[3] in topt.state) == (name == "Adagrad")
    for a, p in zip(mine, tparams):
        np.testing.assert_allclose(a, p.detach().numpy(), rtol=2e-5, atol=1e-6)
    if name != "SGD":
        assert [opt.state[i]["step"] for i in range(4)] == [
            int(topt.state[p]["step"]) for p in tparams
        ]
    # The uneven step counts survive a state dict round trip.
    other = getattr(optim, name)(
        [a.copy() for a in mine]
        if layout == "list"
        else [
            {"params": [a.copy() for a in mine[:2]]},
            {"params": [a.copy() for a in mine[2:]], "lr": 1e-3},
        ],
        **kw,
    )
    other.load_state_dict(copy.deepcopy(opt.state_dict()))
    assert other.state_dict()["state"][2]["step"] == opt.state[2]["step"]


def test_all_none_is_a_no_op_and_nothing_created():
    a = arrays()
    opt = optim.AdamW(a)
    before = [x.copy() for x in a]
    assert opt.step([None] * 4) is True
    assert not opt.state and all(np.array_equal(x, y) for x, y in zip(a, before))


def test_bad_grad_among_none_changes_nothing():
    a = arrays()
    opt = optim.Adam(a)
    opt.step(grads(0, lambda t: set()))
    snap = copy.deepcopy(opt.state_dict())
    before = [x.copy() for x in a]
    bad = grads(1, lambda t: {1})
    bad[2] = np.zeros(3, np.float32)  # wrong shape
    with pytest.raises(ValueError):
        opt.step(bad)
    assert all(np.array_equal(x, y) for x, y in zip(a, before))
    assert opt.state_dict()["state"][0]["step"] == snap["state"][0]["step"] == 1


def test_cast_converts_other_float_dtypes_once():
    import ml_dtypes

    a, b = arrays(), arrays()
    opt_a, opt_b = optim.AdamW(a), optim.AdamW(b)
    g = grads(0, lambda t: set())
    g64 = [x.astype(np.float64) for x in g]
    g64[1] = g[1].astype(ml_dtypes.bfloat16)
    ref = list(g)
    ref[1] = g64[1].astype(np.float32)
    with pytest.raises(TypeError, match="float32"):
        opt_a.step(g64)
    opt_a.step(g64, cast=True)
    opt_b.step(ref)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert g64[0].dtype == np.float64  # the caller's arrays are not touched
    with pytest.raises(TypeError, match=r"grads\[0\]: cast=True converts float gradients only"):
        opt_a.step([np.zeros(s, np.int32) for s in SHAPES], cast=True)


@pytest.mark.parametrize("name,kw", CASES)
def test_torch_state_dict_imports(name, kw):
    base = arrays()
    never = {3}
    topt, tparams = torch_run(name, kw, base, 20, lambda t: never)
    sd = copy.deepcopy(topt.state_dict())
    mine = [p.detach().numpy().copy() for p in tparams]
    opt = getattr(optim, name)(mine, **kw)
    opt.load_state_dict(optim.from_torch_state_dict(opt, sd))
    assert (3 in opt.state) == (name == "Adagrad")  # torch's Adagrad makes state eagerly
    torch_run(name, kw, base, 20, lambda t: never, start=20, opt=topt, params=tparams)
    for t in range(20, 40):
        opt.step(grads(t, lambda t: never))
    for a, p in zip(mine, tparams):
        np.testing.assert_allclose(a, p.detach().numpy(), rtol=2e-5, atol=1e-6)


def test_torch_state_dict_mismatch_is_named():
    base = arrays()
    topt, _ = torch_run("AdamW", {}, base, 2, lambda t: set())
    sd = topt.state_dict()
    opt = optim.AdamW(arrays()[:3])
    with pytest.raises(ValueError, match=r"param_groups'\]\[0\]: expected 3 params, got 4"):
        optim.from_torch_state_dict(opt, sd)
