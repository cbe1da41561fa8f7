"""ASGD, Rprop, Schedule-Free AdamW/SGD: bad options, all-or-nothing steps,
state dicts (round trip, torch's and schedulefree's imported), the train/eval
switch and the per-group schedule of the Schedule-Free optimizers."""

from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest
from slimgrad import optim
from test_optim_adaptive import SF, make, problem
from test_optim_api import assert_unchanged, snapshot

pytestmark = pytest.mark.usefixtures("torch_single_thread")

ALL = ["ASGD", "Rprop", "AdamWScheduleFree", "SGDScheduleFree"]

BAD = [
    ("ASGD", dict(lr=-1.0), ValueError, "lr: expected a finite value >= 0, got -1.0"),
    ("ASGD", dict(lambd="x"), TypeError, "lambd: expected a number, got 'x'"),
    ("ASGD", dict(t0=None), TypeError, "t0: expected a number, got None"),
    ("ASGD", dict(alpha=-0.5), ValueError, "alpha: expected a finite value >= 0, got -0.5"),
    ("ASGD", dict(weight_decay=-1), ValueError, "weight_decay: expected a finite value >= 0"),
    ("ASGD", dict(capturable=True), ValueError, "capturable: expected False"),
    (
        "Rprop",
        dict(etas=(1.5, 1.2)),
        ValueError,
        r"etas: expected 0 < etaminus < 1 < etaplus (finite), got (1.5, 1.2)",
    ),
    ("Rprop", dict(etas=0.5), ValueError, "etas: expected a pair of numbers, got 0.5"),
    (
        "Rprop",
        dict(step_sizes=(1.0, 0.1)),
        ValueError,
        "step_sizes: expected 0 <= min <= max, got (1.0, 0.1)",
    ),
    ("Rprop", dict(step_sizes=(1e-6, "big")), TypeError, "step_sizes[1]: expected a number"),
    ("Rprop", dict(maximize="yes"), TypeError, "maximize: expected True or False, got 'yes'"),
    (
        "AdamWScheduleFree",
        dict(betas=(0.0, 0.9)),
        ValueError,
        "betas[0]: expected 0 < beta1 < 1 (eval() divides by it), got 0.0",
    ),
    ("AdamWScheduleFree", dict(betas=(0.9, 1.0)), ValueError, "betas[1]: expected 0 <= beta < 1"),
    ("AdamWScheduleFree", dict(warmup_steps=2.5), TypeError, "warmup_steps: expected an int"),
    ("AdamWScheduleFree", dict(warmup_steps=-1), ValueError, "warmup_steps: expected an int >= 0"),
    ("AdamWScheduleFree", dict(r="a"), TypeError, "r: expected a number, got 'a'"),
    (
        "AdamWScheduleFree",
        dict(weight_lr_power=-2),
        ValueError,
        "weight_lr_power: expected a finite value >= 0, got -2",
    ),
    (
        "SGDScheduleFree",
        dict(momentum=1.0),
        ValueError,
        "momentum: expected 0 < value < 1, got 1.0",
    ),
    ("SGDScheduleFree", dict(momentum=0), ValueError, "momentum: expected 0 < value < 1, got 0"),
    ("SGDScheduleFree", dict(lr="1"), TypeError, "lr: expected a number, got '1'"),
]


@pytest.mark.parametrize("name,kw,exc,msg", BAD, ids=[f"{b[0]}-{list(b[1])[0]}" for b in BAD])
def test_bad_options_raise_naming_the_argument(name, kw, exc, msg):
    with pytest.raises(exc) as e:
        getattr(optim, name)([np.zeros(3, np.float32)], **kw)
    assert msg in str(e.value)


EDITS = [b for b in BAD if "capturable" not in b[1]]  # group options only


@pytest.mark.parametrize("name,kw,exc,msg", EDITS, ids=[f"{b[0]}-{list(b[1])[0]}" for b in EDITS])
def test_bad_param_group_edit_raises_at_step_and_changes_nothing(name, kw, exc, msg):
    p, grads = problem(50, np.float32, steps=2)
    opt = make(name, [p])
    opt.step([grads[0]])
    snap = snapshot(opt, [p])
    groups = [dict(g) for g in opt.param_groups]
    key, value = next(iter(kw.items()))
    opt.param_groups[0][key] = value
    with pytest.raises(exc) as e:
        opt.step([grads[1]])
    assert f"param_groups[0][{key!r}]" in str(e.value) and msg.split(": ", 1)[1] in str(e.value)
    assert_unchanged(opt, [p], snap)
    opt.param_groups[0][key] = groups[0][key]
    assert opt.param_groups == [{**g, "params": opt.param_groups[0]["params"]} for g in groups]


@pytest.mark.parametrize("name", ALL)
def test_nonfinite_gradient_changes_nothing(name):
    params = {"a": np.ones(20, np.float32), "b": np.ones(7)}  # two buckets
    opt = make(name, params)
    good = {"a": np.full(20, 0.5, np.float32), "b": np.full(7, 0.5)}
    opt.step(good)
    snap = snapshot(opt, params)
    groups = [{k: v for k, v in g.items() if k != "params"} for g in opt.param_groups]
    bad = {"a": good["a"], "b": good["b"].copy()}
    bad["b"][3] = np.nan
    with pytest.raises(FloatingPointError, match=r"grads\['b'\] has a non-finite value at index 3"):
        opt.step(bad)
    assert_unchanged(opt, params, snap)
    opt.nonfinite = "skip"
    assert opt.step(bad) is False
    assert_unchanged(opt, params, snap)
    assert [{k: v for k, v in g.items() if k != "params"} for g in opt.param_groups] == groups


@pytest.mark.parametrize("name", ALL)
def test_state_dict_round_trip_resumes_bit_identically(name):
    p0, grads = problem(300, np.float32, steps=8)
    p = p0.copy()
    opt = make(name, [p], lr=0.01)
    for g in grads[:4]:
        opt.step([g])
    sd = opt.state_dict()
    saved = p.copy()
    for g in grads[4:]:
        opt.step([g])
    p2 = saved.copy()
    opt2 = getattr(optim, name)([p2], lr=0.01)
    opt2.load_state_dict(sd)
    for g in grads[4:]:
        opt2.step([g])
    np.testing.assert_array_equal(p2, p)
    assert opt2.state_dict()["param_groups"] == opt.state_dict()["param_groups"]


def test_asgd_and_rprop_import_a_torch_state_dict():
    torch = pytest.importorskip("torch")
    p0, grads = problem(200, np.float32, steps=60)
    for name, kw in [("ASGD", dict(lr=0.05, t0=20)), ("Rprop", dict(lr=0.05))]:
        tp = torch.from_numpy(p0.copy()).requires_grad_()
        topt = getattr(torch.optim, name)([tp], **kw)
        for g in grads[:30]:
            tp.grad = torch.from_numpy(g.copy())
            topt.step()
        p = tp.detach().numpy().copy()
        opt = getattr(optim, name)([p], **kw)
        opt.load_state_dict(optim.from_torch_state_dict(opt, topt.state_dict()))
        for g in grads[30:]:
            opt.step([g])
            tp.grad = torch.from_numpy(g.copy())
            topt.step()
        np.testing.assert_allclose(p, tp.detach().numpy(), rtol=0, atol=1e-6)
        assert opt.state[0]["step"] == 60


@pytest.mark.parametrize("name", SF)
def test_schedulefree_state_dict_imports(name):
    torch = pytest.importorskip("torch")
    sf = pytest.importorskip("schedulefree")
    p0, grads = problem(200, np.float32, steps=40)
    kw = dict(lr=0.01, warmup_steps=5)
    tp = torch.from_numpy(p0.copy()).requires_grad_()
    topt = getattr(sf, name)([tp], **kw)
    topt.train()
    for g in grads[:20]:
        tp.grad = torch.from_numpy(g.copy())
        topt.step()
    topt.eval()  # schedulefree's advice: save in eval mode
    p = tp.detach().numpy().copy()
    opt = getattr(optim, name)([p], **kw)
    opt.load_state_dict(optim.from_torch_state_dict(opt, topt.state_dict()))
    assert opt.param_groups[0]["k"] == 20 and opt.param_groups[0]["train_mode"] is False
    opt.train()
    topt.train()
    for g in grads[20:]:
        opt.step([g])
        tp.grad = torch.from_numpy(g.copy())
        topt.step()
    np.testing.assert_allclose(p, tp.detach().numpy(), rtol=0, atol=1e-6)


# ------------------------------------------------------------ Schedule-Free
@pytest.mark.parametrize("name", SF)
def test_step_in_eval_mode_raises_and_changes_nothing(name):
    p, grads = problem(30, np.float32, steps=2)
    opt = getattr(optim, name)([p])
    with pytest.raises(
        RuntimeError, match=r"param_groups\[0\] is in eval mode; call optimizer.train"
    ):
        opt.step([grads[0]])
    assert opt.state == {} and opt.param_groups[0]["k"] == 0
    opt.train()
    opt.step([grads[0]])
    opt.eval()
    snap = snapshot(opt, [p])
    with pytest.raises(RuntimeError):
        opt.step([grads[1]])
    assert_unchanged(opt, [p], snap)
    assert opt.param_groups[0]["k"] == 1


@pytest.mark.parametrize("half", [None, np.float16, ml_dtypes.bfloat16])
@pytest.mark.parametrize("name", SF)
def test_train_eval_switch_in_place(name, half):
    p0, grads = problem(100, np.float32, steps=10)
    p = p0.astype(half) if half else p0.copy()
    opt = make(name, {"w": p}, lr=0.05)
    for g in grads:
        opt.step({"w": g.astype(p.dtype)})
    st = opt.state["w"]
    y = (st["master"] if half else p).copy()
    beta = opt._beta(opt.param_groups[0])
    opt.eval()
    x = st["master"] if half else p
    # y = (1 - beta) z + beta x
    np.testing.assert_allclose((1 - beta) * st["z"] + beta * x, y, rtol=0, atol=1e-5)
    if half:
        np.testing.assert_array_equal(p, st["master"].astype(p.dtype))
    opt.eval()  # already in eval mode: nothing moves
    np.testing.assert_array_equal(x, st["master"] if half else p)
    opt.train()
    np.testing.assert_allclose(st["master"] if half else p, y, rtol=0, atol=1e-5)


@pytest.mark.parametrize("name", SF)
def test_groups_without_gradients_still_advance_k(name):
    a, b = np.ones(4, np.float32), np.ones(3, np.float32)
    opt = getattr(optim, name)([{"params": {"a": a}}, {"params": {"b": b}, "lr": 0.5}])
    opt.train()
    opt.step({"a": np.ones(4, np.float32), "b": None})
    assert [g["k"] for g in opt.param_groups] == [1, 1]  # as schedulefree
    assert "b" not in opt.state
    opt.step({"a": None, "b": None})
    assert [g["k"] for g in opt.param_groups] == [2, 2]
    assert opt.state["a"]["step"] == 1


def test_asgd_eta_and_mu_follow_torch_formulas():
    p = np.zeros(5, np.float32)
    opt = optim.ASGD([p], lr=0.1, lambd=0.01, alpha=0.5, t0=2)
    assert opt.step([np.ones(5, np.float32)])
    st = opt.state[0]
    assert st["eta"] == float(np.float32(0.1 / (1 + 0.01 * 0.1 * 1) ** 0.5))
    assert st["mu"] == 1.0
    for _ in range(3):
        opt.step([np.ones(5, np.float32)])
    assert st["mu"] == float(np.float32(1 / 2))  # 1 / max(1, 4 - 2)


def test_scalar_state_tensors_import_as_floats():
    # NAdam's mu_product (like ASGD's eta/mu) is a scalar tensor in torch's state:
    # it used to fail with "'float' object has no attribute 'shape'".
    torch = pytest.importorskip("torch")
    t = torch.zeros(5, requires_grad=True)
    topt = torch.optim.NAdam([t])
    t.grad = torch.ones(5)
    topt.step()
    p = t.detach().numpy().copy()
    opt = optim.NAdam([p])
    opt.load_state_dict(optim.from_torch_state_dict(opt, topt.state_dict()))
    assert opt.state[0]["mu_product"] == topt.state[t]["mu_product"].item()
