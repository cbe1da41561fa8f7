"""Tests for slimgrad.schedule: torch parity, closed forms, state, errors, hyperparam."""

from __future__ import annotations

import copy
import math
import warnings

import numpy as np
import pytest
from slimgrad import schedule as S

REL_TOL = 1e-12  # torch parity and closed forms, relative, over hundreds of steps
STEPS = 400


class Opt:
    """Stand-in optimizer: just param_groups (what the schedulers rely on)."""

    def __init__(self, lrs=(0.1, 0.05), **extra):
        self.param_groups = [
            {"lr": lr, "momentum": 0.9, "weight_decay": 1e-2, **extra} for lr in lrs
        ]


class AdamLike:
    def __init__(self, lrs=(0.1, 0.05)):
        self.param_groups = [{"lr": lr, "betas": (0.9, 0.999), "weight_decay": 1e-2} for lr in lrs]
        self.defaults = {"lr": 1e-3, "betas": (0.9, 0.999)}


def close(a, b, rel=REL_TOL):
    return abs(a - b) <= rel * max(abs(a), abs(b)) or a == b


def assert_seq_close(got, want, rel=REL_TOL):
    assert len(got) == len(want)
    for t, (g, w) in enumerate(zip(got, want)):
        assert all(close(x, y, rel) for x, y in zip(g, w)), f"step {t}: {g} != {w}"


# --------------------------------------------------------------------------- torch


@pytest.fixture(scope="module")
def torch():
    return pytest.importorskip("torch")


def torch_opt(torch, lrs=(0.1, 0.05), adam=False):
    """A torch.optim.Optimizer holding the same groups as ``Opt`` / ``AdamLike``.

    Torch's schedulers only use ``param_groups``, ``defaults`` and ``step``; skipping
    Optimizer.__init__ saves seconds of lazy imports and keeps the file fast.
    """

    class Stand(torch.optim.Optimizer):
        def __init__(self, source):
            self.param_groups = source.param_groups
            self.defaults = {k: v for k, v in source.param_groups[0].items() if k != "lr"}

        def step(self, closure=None):
            return None

    return Stand(AdamLike(lrs) if adam else Opt(lrs))


def run(opt, scheds, n, key="lr", optimizer_step=None):
    """Values of ``key`` for every group at steps 0..n-1 (stepping all ``scheds``)."""
    scheds = scheds if isinstance(scheds, tuple) else (scheds,)
    out = []
    for i in range(n):
        out.append([g["betas"][0] if key == "beta1" else g[key] for g in opt.param_groups])
        if i == n - 1:
            break
        if optimizer_step:
            optimizer_step()
        for s in scheds:
            s.step()
    return out


def both(name):
    """(slimgrad factory, torch factory) for a scheduler spec; ``L`` is the module."""
    return CASES[name]


CASES = {
    "LambdaLR": lambda L, o: L.LambdaLR(o, lambda e: 1.0 / (1.0 + 0.05 * e)),
    "LambdaLR_list": lambda L, o: L.LambdaLR(o, [lambda e: 0.99**e, lambda e: 1 / (e + 1)]),
    "MultiplicativeLR": lambda L, o: L.MultiplicativeLR(o, lambda e: 0.995),
    "StepLR": lambda L, o: L.StepLR(o, step_size=30, gamma=0.5),
    "MultiStepLR": lambda L, o: L.MultiStepLR(o, milestones=[10, 60, 250], gamma=0.3),
    # torch counts a repeated milestone twice
    "MultiStepLR repeated": lambda L, o: L.MultiStepLR(o, milestones=[10, 60, 60, 250], gamma=0.3),
    "ConstantLR": lambda L, o: L.ConstantLR(o, factor=0.3, total_iters=17),
    "ConstantLR_default": lambda L, o: L.ConstantLR(o),
    "LinearLR": lambda L, o: L.LinearLR(o, start_factor=0.1, end_factor=0.7, total_iters=123),
    "LinearLR_to0": lambda L, o: L.LinearLR(o, start_factor=1.0, end_factor=0.0, total_iters=90),
    "ExponentialLR": lambda L, o: L.ExponentialLR(o, gamma=0.99),
    "PolynomialLR": lambda L, o: L.PolynomialLR(o, total_iters=300, power=2.0),
    "CosineAnnealingLR": lambda L, o: L.CosineAnnealingLR(o, T_max=100, eta_min=1e-3),
    "CosineAnnealingLR_0": lambda L, o: L.CosineAnnealingLR(o, T_max=37),
    "WarmRestarts": lambda L, o: L.CosineAnnealingWarmRestarts(o, T_0=10, T_mult=2, eta_min=1e-4),
    "WarmRestarts_1": lambda L, o: L.CosineAnnealingWarmRestarts(o, T_0=33),
    "CyclicLR": lambda L, o: L.CyclicLR(o, 0.01, 0.1, step_size_up=20),
    "CyclicLR_tri2": lambda L, o: L.CyclicLR(
        o, [0.01, 0.02], [0.1, 0.3], step_size_up=15, step_size_down=35, mode="triangular2"
    ),
    "CyclicLR_exp": lambda L, o: L.CyclicLR(
        o,
        0.01,
        0.1,
        step_size_up=20,
        mode="exp_range",
        gamma=0.995,
        base_momentum=[0.8, 0.85],
        max_momentum=0.95,
    ),
    "CyclicLR_fn": lambda L, o: L.CyclicLR(
        o, 0.01, 0.1, step_size_up=10, scale_fn=lambda x: 1 / (1 + x), scale_mode="iterations"
    ),
    "OneCycleLR": lambda L, o: L.OneCycleLR(o, max_lr=0.1, total_steps=STEPS - 1),
    "OneCycleLR_3": lambda L, o: L.OneCycleLR(
        o,
        max_lr=[0.1, 0.3],
        epochs=7,
        steps_per_epoch=57,
        three_phase=True,
        anneal_strategy="linear",
        pct_start=0.25,
    ),
    "SequentialLR": lambda L, o: L.SequentialLR(
        o, [L.LinearLR(o, 0.01, 1.0, 50), L.CosineAnnealingLR(o, 200, 1e-3)], milestones=[50]
    ),
    "SequentialLR_3": lambda L, o: L.SequentialLR(
        o,
        [L.ConstantLR(o, 0.1, 20), L.ExponentialLR(o, 0.99), L.MultiplicativeLR(o, lambda e: 0.98)],
        milestones=[20, 150],
    ),
    "SequentialLR_restarts": lambda L, o: L.SequentialLR(
        o, [L.LinearLR(o, 0.1, 1, 20), L.CosineAnnealingWarmRestarts(o, 30, 2)], milestones=[20]
    ),
    "ChainedScheduler": lambda L, o: L.ChainedScheduler(
        [L.ConstantLR(o, factor=0.1, total_iters=20), L.ExponentialLR(o, gamma=0.99)]
    ),
    "ChainedScheduler_cos": lambda L, o: L.ChainedScheduler(
        [L.LinearLR(o, 0.1, 1, 30), L.CosineAnnealingLR(o, 100), L.StepLR(o, 40, 0.5)]
    ),
    "ChainedScheduler_cos_eta": lambda L, o: L.ChainedScheduler(
        [L.CosineAnnealingLR(o, 100, 1e-3), L.ExponentialLR(o, 0.995)]
    ),
    "ChainedScheduler_abs": lambda L, o: L.ChainedScheduler(
        [
            L.ExponentialLR(o, 0.99),
            L.LambdaLR(o, lambda e: 1 / (1 + e)),
            L.StepLR(o, 7, 0.5),
            L.MultiplicativeLR(o, lambda e: 0.999),
        ]
    ),
    "ChainedScheduler_cyclic": lambda L, o: L.ChainedScheduler(
        [L.CyclicLR(o, 0.01, 0.1, 25), L.ExponentialLR(o, 0.99)]
    ),
    # Two chainable schedulers stepped independently on one optimizer.
    "independent": lambda L, o: (L.StepLR(o, 10, 0.5), L.ExponentialLR(o, 0.99)),
    "independent_cos": lambda L, o: (L.CosineAnnealingLR(o, 50, 1e-3), L.ExponentialLR(o, 0.99)),
}


@pytest.mark.parametrize("name", sorted(CASES))
@pytest.mark.parametrize("adam", [False, True], ids=["sgd", "adamw"])
def test_matches_torch(torch, name, adam):
    tl = torch.optim.lr_scheduler
    mine_opt = AdamLike() if adam else Opt()
    theirs_opt = torch_opt(torch, adam=adam)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch's "scheduler before optimizer" warnings
        mine = CASES[name](S, mine_opt)
        theirs = CASES[name](tl, theirs_opt)
        keys = ["lr", "beta1" if adam else "momentum"]
        got = run(mine_opt, mine, STEPS, key="lr")
        want = run(theirs_opt, theirs, STEPS, key="lr", optimizer_step=theirs_opt.step)
    assert_seq_close(got, want)
    # Momentum / beta1 (cycled by CyclicLR and OneCycleLR, untouched otherwise).
    momentum = [
        [g["betas"][0] if adam else g["momentum"] for g in o.param_groups]
        for o in (mine_opt, theirs_opt)
    ]
    assert all(close(a, b) for a, b in zip(*momentum)), (keys, momentum)


def test_momentum_cycling_matches_torch(torch):
    tl = torch.optim.lr_scheduler
    for adam in (False, True):
        for make in (
            lambda L, o: L.CyclicLR(o, 0.01, 0.1, step_size_up=13, mode="triangular2"),
            lambda L, o: L.OneCycleLR(o, [0.1, 0.2], total_steps=300, three_phase=True),
            lambda L, o: L.OneCycleLR(o, 0.1, total_steps=300, anneal_strategy="linear"),
        ):
            mo, to = (AdamLike() if adam else Opt()), torch_opt(torch, adam=adam)
            key = "beta1" if adam else "momentum"
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ms, ts = make(S, mo), make(tl, to)
                got = run(mo, ms, 300, key=key)
                want = run(to, ts, 300, key=key, optimizer_step=to.step)
            assert_seq_close(got, want)
            if adam:  # beta2 untouched
                assert all(g["betas"][1] == 0.999 for g in mo.param_groups)


def test_reduce_on_plateau_matches_torch(torch):
    rng = np.random.default_rng(0)
    # A scripted metric: improving, plateauing, noisy, improving again.
    metric = np.concatenate(
        [
            np.linspace(1.0, 0.5, 40),
            np.full(30, 0.5),
            0.5 + 0.01 * rng.standard_normal(80),
            np.linspace(0.5, 0.1, 50),
            np.full(100, 0.1),
        ]
    )
    configs = [
        {},
        {"mode": "max", "factor": 0.5, "patience": 3, "threshold_mode": "abs", "threshold": 1e-3},
        {"patience": 0, "cooldown": 4, "min_lr": [1e-3, 1e-4]},
        {"factor": 0.9, "patience": 2, "eps": 1e-3, "threshold": 0.0},
    ]
    for cfg in configs:
        mo, to = Opt(), torch_opt(torch)
        ms = S.ReduceLROnPlateau(mo, **cfg)
        ts = torch.optim.lr_scheduler.ReduceLROnPlateau(to, **cfg)
        sign = -1.0 if cfg.get("mode") == "max" else 1.0
        for m in metric:
            ms.step(sign * m)
            ts.step(sign * m)
            assert ms.get_last_lr() == ts.get_last_lr()
            assert ms.num_bad_epochs == ts.num_bad_epochs
            assert ms.cooldown_counter == ts.cooldown_counter


def test_onecycle_raises_past_total_steps_like_torch(torch):
    to = torch_opt(torch)
    ts = torch.optim.lr_scheduler.OneCycleLR(to, 0.1, total_steps=10)
    mo = Opt()
    ms = S.OneCycleLR(mo, 0.1, total_steps=10)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for _ in range(10):
            ts.step()
            ms.step()
        with pytest.raises(ValueError) as want:
            ts.step()
    before = copy.deepcopy(mo.param_groups)
    with pytest.raises(ValueError) as got:
        ms.step()
    assert str(got.value) == str(want.value)
    assert mo.param_groups == before and ms.last_epoch == 10


def test_real_slimgrad_optimizers():
    optim = pytest.importorskip("slimgrad.optim")
    if not hasattr(optim, "SGD") or not hasattr(optim, "AdamW"):
        pytest.skip("slimgrad.optim has no SGD/AdamW yet")
    sgd = optim.SGD([np.zeros(3, np.float32)], lr=0.1, momentum=0.9)
    sched = S.OneCycleLR(sgd, max_lr=0.5, total_steps=20)
    assert sgd.param_groups[0]["momentum"] == pytest.approx(0.95)
    for _ in range(19):  # the last step of the cycle lands exactly on min_lr
        sgd.step([np.ones(3, np.float32)])
        sched.step()
    assert sgd.param_groups[0]["lr"] == pytest.approx(0.5 / 25 / 1e4)
    assert sgd.param_groups[0]["momentum"] == pytest.approx(0.95)
    adamw = optim.AdamW([np.zeros(4, np.float32)], lr=1e-3)
    cyc = S.CyclicLR(adamw, 1e-4, 1e-3, step_size_up=5)
    for _ in range(5):
        adamw.step([np.ones(4, np.float32)])
        cyc.step()
    assert adamw.param_groups[0]["lr"] == pytest.approx(1e-3)
    assert adamw.param_groups[0]["betas"][0] == pytest.approx(0.8)
    wd = S.WarmupCosine(adamw, 0, 10, hyperparam="weight_decay")
    for _ in range(10):
        wd.step()
    assert adamw.param_groups[0]["weight_decay"] == 0.0


# ---------------------------------------------------------------- closed forms


def values(sched, n):
    out = [sched.get_last_lr()]
    for _ in range(n - 1):
        sched.step()
        out.append(sched.get_last_lr())
    return out


def expect(fn, lrs=(0.1, 0.05), n=STEPS):
    return [[fn(base, t) for base in lrs] for t in range(n)]


CLOSED = {
    "StepLR": (lambda o: S.StepLR(o, 30, 0.5), lambda b, t: b * 0.5 ** (t // 30)),
    "MultiStepLR": (
        lambda o: S.MultiStepLR(o, [10, 60], 0.3),
        lambda b, t: b * 0.3 ** ((t >= 10) + (t >= 60)),
    ),
    "ConstantLR": (lambda o: S.ConstantLR(o, 0.5, 10), lambda b, t: b * (0.5 if t < 10 else 1)),
    "LinearLR": (
        lambda o: S.LinearLR(o, 0.2, 0.9, 50),
        lambda b, t: b * (0.2 + 0.7 * min(t, 50) / 50),
    ),
    "ExponentialLR": (lambda o: S.ExponentialLR(o, 0.97), lambda b, t: b * 0.97**t),
    "PolynomialLR": (
        lambda o: S.PolynomialLR(o, 100, 0.5),
        lambda b, t: b * (1 - min(t, 100) / 100) ** 0.5,
    ),
    "CosineAnnealingLR": (
        lambda o: S.CosineAnnealingLR(o, 64, 1e-3),
        lambda b, t: 1e-3 + (b - 1e-3) * (1 + math.cos(math.pi * t / 64)) / 2,
    ),
    "WarmRestarts": (
        lambda o: S.CosineAnnealingWarmRestarts(o, 5, 3),
        # periods 5, 15, 45, 135, ... start at 0, 5, 20, 65, 200
        lambda b, t: b * (1 + math.cos(math.pi * _cur(t, 5, 3)[0] / _cur(t, 5, 3)[1])) / 2,
    ),
    "LambdaLR": (lambda o: S.LambdaLR(o, lambda e: 1 / (1 + e)), lambda b, t: b / (1 + t)),
    "MultiplicativeLR": (lambda o: S.MultiplicativeLR(o, lambda e: 0.99), lambda b, t: b * 0.99**t),
    "WarmupCosine": (
        lambda o: S.WarmupCosine(o, warmup_steps=20, total_steps=300, min_lr=1e-4),
        lambda b, t: (
            b * (t + 1) / 20
            if t < 20
            else (
                1e-4 + (b - 1e-4) * (1 + math.cos(math.pi * (t - 20) / 280)) / 2
                if t < 300
                else 1e-4
            )
        ),
    ),
    "WarmupStableDecay": (
        lambda o: S.WarmupStableDecay(o, 10, 100, 50, min_lr=1e-3),
        lambda b, t: (
            b * (t + 1) / 10
            if t < 10
            else (b if t < 110 else (b + (1e-3 - b) * (t - 109) / 50 if t < 160 else 1e-3))
        ),
    ),
    "CyclicLR": (
        lambda o: S.CyclicLR(o, 0.01, 0.1, step_size_up=10, step_size_down=30),
        lambda b, t: 0.01 + 0.09 * ((t % 40) / 10 if t % 40 <= 10 else 1 - (t % 40 - 10) / 30),
    ),
}


def _cur(t, t0, mult):
    period = t0
    while t >= period:
        t -= period
        period *= mult
    return t, period


@pytest.mark.parametrize("name", sorted(CLOSED))
def test_closed_form(name):
    make, formula = CLOSED[name]
    got = values(make(Opt()), STEPS)
    assert_seq_close(got, expect(formula), rel=1e-12)


def test_warmup_schedules_endpoints():
    o = Opt((1.0,))
    s = S.WarmupCosine(o, warmup_steps=4, total_steps=10)
    v = [x[0] for x in values(s, 12)]
    assert v[:5] == [0.25, 0.5, 0.75, 1.0, 1.0]
    assert v[10:] == [0.0, 0.0]
    o = Opt((1.0,))
    s = S.WarmupStableDecay(o, 2, 3, 4, min_lr=0.2)
    v = [x[0] for x in values(s, 11)]
    assert v[:5] == [0.5, 1.0, 1.0, 1.0, 1.0]
    assert v[8] == pytest.approx(0.2) and v[9:] == [0.2, 0.2]
    # No warmup / no decay phases.
    assert values(S.WarmupCosine(Opt((1.0,)), 0, 5), 1) == [[1.0]]
    assert [x[0] for x in values(S.WarmupStableDecay(Opt((1.0,)), 0, 2, 0, 0.1), 4)] == [
        1.0,
        1.0,
        0.1,
        0.1,
    ]


def test_closed_form_does_not_drift():
    # 100000 steps of ExponentialLR: the closed form equals base * gamma**t exactly.
    o = Opt((1.0,))
    s = S.ExponentialLR(o, 0.9999)
    for _ in range(100_000):
        s.step()
    assert o.param_groups[0]["lr"] == 0.9999**100_000


def test_manual_edit_is_kept_like_torch():
    o = Opt((1.0,))
    s = S.ExponentialLR(o, 0.5)
    s.step()
    o.param_groups[0]["lr"] = 10.0  # user changes lr by hand
    s.step()
    s.step()
    assert o.param_groups[0]["lr"] == 2.5


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
