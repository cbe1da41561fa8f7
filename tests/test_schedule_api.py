"""Tests for slimgrad.schedule: state_dict, argument errors, other hyperparameters
than lr, and plot/simulate (torch parity and closed forms: test_schedule.py)."""

from __future__ import annotations

import copy

import pytest
from schedule_cases import CASES, CLOSED, STEPS, AdamLike, Opt, assert_seq_close, values
from slimgrad import schedule as S

# ------------------------------------------------------------------ state_dict


STATEFUL = {
    **{k: (lambda make: lambda o: make(o))(v[0]) for k, v in CLOSED.items()},
    "OneCycleLR": lambda o: S.OneCycleLR(o, [0.1, 0.2], total_steps=STEPS),
    "SequentialLR": lambda o: CASES["SequentialLR_3"](S, o),
    "ChainedScheduler": lambda o: CASES["ChainedScheduler_abs"](S, o),
    "ChainedScheduler_cos": lambda o: CASES["ChainedScheduler_cos"](S, o),
}


@pytest.mark.parametrize("name", sorted(STATEFUL))
@pytest.mark.parametrize("load_optimizer", [True, False], ids=["opt-loaded", "fresh-opt"])
def test_state_dict_round_trip(name, load_optimizer):
    if name == "ChainedScheduler_cos" and not load_optimizer:
        pytest.skip(
            "a chain holding CosineAnnealingLR is history-dependent (as in torch): "
            "it needs the optimizer state loaded too"
        )
    make = STATEFUL[name]
    ref_opt = Opt()
    ref = make(ref_opt)
    reference = values(ref, 300)

    opt = Opt()
    sched = make(opt)
    for _ in range(137):
        sched.step()
    state = sched.state_dict()
    assert not any(callable(v) for v in state.values())
    saved_groups = copy.deepcopy(opt.param_groups)

    opt2 = Opt()
    sched2 = make(opt2)
    if load_optimizer:
        opt2.param_groups = saved_groups
    sched2.load_state_dict(copy.deepcopy(state))
    assert sched2.last_epoch == sched.last_epoch if hasattr(sched, "last_epoch") else True
    rest = []
    for _ in range(300 - 138):
        sched2.step()
        rest.append(sched2.get_last_lr())
    assert_seq_close(rest, reference[138:])


def test_state_dict_keeps_callable_objects_state():
    class Decay:
        def __init__(self):
            self.rate = 0.9

        def __call__(self, epoch):
            return self.rate**epoch

    fn = Decay()
    s = S.LambdaLR(Opt(), fn)
    fn.rate = 0.5
    state = s.state_dict()
    assert state["lr_lambdas"] == [{"rate": 0.5}, {"rate": 0.5}]
    fn2 = Decay()
    s2 = S.LambdaLR(Opt(), fn2)
    s2.load_state_dict(state)
    assert fn2.rate == 0.5
    assert S.LambdaLR(Opt(), lambda e: 1.0).state_dict()["lr_lambdas"] == [None, None]


def test_reduce_on_plateau_state_round_trip():
    metric = [1.0, 0.9, 0.9, 0.9, 0.9, 0.8, 0.8, 0.8, 0.8, 0.8, 0.8, 0.8]
    a = S.ReduceLROnPlateau(Opt(), patience=1, cooldown=1)
    for m in metric[:5]:
        a.step(m)
    b = S.ReduceLROnPlateau(Opt(), patience=1, cooldown=1)
    b.optimizer.param_groups = copy.deepcopy(a.optimizer.param_groups)
    b.load_state_dict(a.state_dict())
    for m in metric[5:]:
        a.step(m)
        b.step(m)
        assert a.get_last_lr() == b.get_last_lr()


# ------------------------------------------------------------------- errors

BAD = [
    (lambda o: S.StepLR(o, 0), "Expected positive integer step_size, but got 0"),
    (lambda o: S.StepLR(o, -3), "Expected positive integer step_size, but got -3"),
    (
        lambda o: S.MultiStepLR(o, [30, 10]),
        "milestones must be non-decreasing integers, but got [30, 10]",
    ),
    (
        lambda o: S.ConstantLR(o, factor=1.5),
        "Constant multiplicative factor expected to be between 0 and 1.",
    ),
    (
        lambda o: S.LinearLR(o, start_factor=0),
        "Starting multiplicative factor expected to be greater than 0 and less or equal to 1.",
    ),
    (
        lambda o: S.LinearLR(o, end_factor=2),
        "Ending multiplicative factor expected to be between 0 and 1.",
    ),
    (lambda o: S.LinearLR(o, total_iters=0), "Expected positive integer total_iters, but got 0"),
    (
        lambda o: S.PolynomialLR(o, total_iters=-1),
        "Expected positive integer total_iters, but got -1",
    ),
    (lambda o: S.CosineAnnealingLR(o, T_max=0), "Expected positive integer T_max, but got 0"),
    (lambda o: S.CosineAnnealingWarmRestarts(o, T_0=0), "Expected positive integer T_0, but got 0"),
    (
        lambda o: S.CosineAnnealingWarmRestarts(o, T_0=5, T_mult=0),
        "Expected integer T_mult >= 1, but got 0",
    ),
    (lambda o: S.LambdaLR(o, [lambda e: 1.0]), "Expected 2 lr_lambdas, but got 1"),
    (lambda o: S.CyclicLR(o, 0.01, 0.1, mode="zigzag"), "mode is invalid and scale_fn is None"),
    (
        lambda o: S.CyclicLR(o, [0.01], 0.1),
        "base_lr must have the same length as optimizer.param_groups. "
        "base_lr has 1 values, param_groups has 2.",
    ),
    (
        lambda o: S.CyclicLR(o, 0.01, 0.1, step_size_up=0),
        "Expected positive step_size_up and step_size_down, but got 0 and None",
    ),
    (
        lambda o: S.OneCycleLR(o, 0.1),
        "You must define either total_steps OR (epochs AND steps_per_epoch)",
    ),
    (
        lambda o: S.OneCycleLR(o, 0.1, total_steps=-5),
        "Expected positive integer total_steps, but got -5",
    ),
    (
        lambda o: S.OneCycleLR(o, 0.1, epochs=0, steps_per_epoch=3),
        "Expected positive integer epochs, but got 0",
    ),
    (
        lambda o: S.OneCycleLR(o, 0.1, total_steps=10, pct_start=1.5),
        "Expected float between 0 and 1 pct_start, but got 1.5",
    ),
    (
        lambda o: S.OneCycleLR(o, 0.1, total_steps=10, anneal_strategy="exp"),
        "anneal_strategy must be one of 'cos' or 'linear', instead got exp",
    ),
    (
        lambda o: S.OneCycleLR(o, [0.1, 0.2, 0.3], total_steps=10),
        "max_lr must have the same length as optimizer.param_groups. "
        "max_lr has 3 values, param_groups has 2.",
    ),
    (
        lambda o: S.WarmupCosine(o, warmup_steps=100, total_steps=50),
        "total_steps (50) must be greater than warmup_steps (100)",
    ),
    (
        lambda o: S.WarmupCosine(o, warmup_steps=-1, total_steps=50),
        "Expected non-negative integer warmup_steps, but got -1",
    ),
    (
        lambda o: S.WarmupCosine(o, 10, 100, min_lr=[0.0]),
        "min_lr must have the same length as optimizer.param_groups. "
        "min_lr has 1 values, param_groups has 2.",
    ),
    (
        lambda o: S.WarmupStableDecay(o, 10, -1, 10),
        "Expected non-negative integer stable_steps, but got -1",
    ),
    (
        lambda o: S.WarmupStableDecay(o, 10, 10, 2.5),
        "Expected non-negative integer decay_steps, but got 2.5",
    ),
    (lambda o: S.ReduceLROnPlateau(o, factor=1.0), "Factor should be < 1.0."),
    (lambda o: S.ReduceLROnPlateau(o, mode="up"), "mode up is unknown!"),
    (lambda o: S.ReduceLROnPlateau(o, threshold_mode="pct"), "threshold mode pct is unknown!"),
    (lambda o: S.ReduceLROnPlateau(o, min_lr=[0.1]), "expected 2 min_lrs, got 1"),
    (
        lambda o: S.ReduceLROnPlateau(o, patience=-1),
        "Expected non-negative integer patience, but got -1",
    ),
    (
        lambda o: S.ExponentialLR(o, 0.9, hyperparam="betas2"),
        "hyperparam 'betas2' is not in optimizer.param_groups[0] (no 'betas2' key)",
    ),
    (
        lambda o: S.StepLR(o, 3, hyperparam="beta1"),
        "hyperparam 'beta1' is not in optimizer.param_groups[0] (no 'betas' key)",
    ),
    (
        lambda o: S.ExponentialLR(o, 0.9, last_epoch=-2),
        "Expected integer last_epoch >= -1, but got -2",
    ),
    (
        lambda o: S.SequentialLR(o, [], milestones=[]),
        "SequentialLR expects at least one scheduler, but got no scheduler.",
    ),
    (
        lambda o: S.ChainedScheduler([]),
        "ChainedScheduler expects at least one scheduler to be chained, but got no scheduler.",
    ),
]


@pytest.mark.parametrize("make,message", BAD, ids=[m[:40] for _, m in BAD])
def test_bad_arguments(make, message):
    o = Opt()
    before = copy.deepcopy(o.param_groups)
    with pytest.raises(ValueError) as err:
        make(o)
    assert str(err.value) == message
    assert o.param_groups == before  # nothing changed


def test_bad_composites_leave_groups_alone():
    o = Opt()
    a, b = S.ExponentialLR(o, 0.9), S.StepLR(o, 3)
    c = S.StepLR(o, 4)
    before = copy.deepcopy(o.param_groups)
    with pytest.raises(ValueError, match="strictly increasing"):
        S.SequentialLR(o, [a, b, c], milestones=[5, 5])
    with pytest.raises(ValueError) as err:
        S.SequentialLR(o, [a], milestones=[3])
    assert str(err.value) == (
        "Sequential Schedulers expects number of schedulers provided to be one more than the "
        "number of milestone points, but got number of schedulers 1 and the number of "
        "milestones to be equal to 1"
    )
    other = Opt()
    with pytest.raises(ValueError, match="same optimizer"):
        S.ChainedScheduler([a, S.StepLR(other, 3)])
    with pytest.raises(ValueError, match="does not support `ReduceLROnPlateau`"):
        S.ChainedScheduler([a, S.ReduceLROnPlateau(o)])
    assert o.param_groups == before


def test_type_errors():
    with pytest.raises(TypeError, match="list is not an Optimizer"):
        S.StepLR([], 3)
    with pytest.raises(TypeError, match="lr_lambda should be a function, but got int"):
        S.LambdaLR(Opt(), 3)
    with pytest.raises(ValueError, match="optimizer must support momentum or beta1"):
        S.OneCycleLR(type("O", (), {"param_groups": [{"lr": 0.1}]})(), 0.1, total_steps=5)
    o = Opt()
    with pytest.raises(KeyError, match="initial_lr"):
        S.StepLR(o, 3, last_epoch=5)


# --------------------------------------------------------------- hyperparam


def test_hyperparam_momentum_and_weight_decay():
    o = Opt((0.1,))
    lr_s = S.CosineAnnealingLR(o, 10)
    wd = S.LinearLR(o, 1.0, 0.0, total_iters=10, hyperparam="weight_decay")
    mom = S.WarmupStableDecay(o, 0, 5, 5, min_lr=0.5, hyperparam="momentum")
    assert o.param_groups[0]["initial_weight_decay"] == 1e-2
    assert o.param_groups[0]["initial_momentum"] == 0.9
    for _ in range(10):
        lr_s.step()
        wd.step()
        mom.step()
    g = o.param_groups[0]
    assert g["weight_decay"] == 0.0
    assert g["momentum"] == 0.5
    assert g["lr"] == pytest.approx(0.0, abs=1e-18)
    assert wd.get_last_lr() == [0.0]


def test_hyperparam_beta1_keeps_beta2():
    o = AdamLike()
    s = S.ExponentialLR(o, 0.5, hyperparam="beta1")
    s.step()
    assert [g["betas"] for g in o.param_groups] == [(0.45, 0.999), (0.45, 0.999)]
    assert [g["lr"] for g in o.param_groups] == [0.1, 0.05]


def test_hyperparam_cyclic_and_plateau():
    o = Opt()
    s = S.CyclicLR(o, 0.0, 1e-2, step_size_up=4, hyperparam="weight_decay")
    for _ in range(4):
        s.step()
    assert [g["weight_decay"] for g in o.param_groups] == [1e-2, 1e-2]
    assert [g["momentum"] for g in o.param_groups] == [0.9, 0.9]  # not cycled
    p = S.ReduceLROnPlateau(o, patience=0, hyperparam="momentum")
    p.step(1.0)
    p.step(2.0)
    assert [g["momentum"] for g in o.param_groups] == pytest.approx([0.09, 0.09])


def test_chained_different_hyperparams():
    o = Opt((1.0,))
    s = S.ChainedScheduler([S.ExponentialLR(o, 0.5), S.StepLR(o, 1, 0.5, hyperparam="momentum")])
    s.step()
    s.step()
    assert o.param_groups[0]["lr"] == 0.25
    assert o.param_groups[0]["momentum"] == 0.9 * 0.25


# ---------------------------------------------------------------------- plot


def test_plot_writes_png_without_touching_live_optimizer(tmp_path):
    pytest.importorskip("matplotlib")
    o = Opt()
    live = S.StepLR(o, 5)
    before = copy.deepcopy(o.param_groups)
    path = S.plot(
        {
            "cosine": lambda opt: S.CosineAnnealingLR(opt, 50),
            "live StepLR (deep-copied)": live,
        },
        100,
        tmp_path / "s.png",
        title="t",
    )
    with open(path, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    assert o.param_groups == before and live.last_epoch == 0


def test_simulate():
    v = S.simulate(lambda opt: S.StepLR(opt, 2, 0.5), 5, lr=1.0)
    assert v == [1.0, 1.0, 0.5, 0.5, 0.25]
    with pytest.raises(ValueError, match="Expected positive integer steps, but got 0"):
        S.simulate(lambda opt: S.StepLR(opt, 2), 0)


def test_plot_without_matplotlib(monkeypatch, tmp_path):
    import builtins

    real_import = builtins.__import__

    def fake_import(name, *args, **kwargs):
        if name.startswith("matplotlib"):
            raise ImportError("no matplotlib")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", fake_import)
    with pytest.raises(ImportError, match=r"pip install slimgrad\[demo\]"):
        S.plot(lambda opt: S.StepLR(opt, 2), 10, tmp_path / "x.png")
