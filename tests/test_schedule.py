"""Tests for slimgrad.schedule: torch parity and closed forms (state, errors,
hyperparam and plot: test_schedule_api.py)."""

from __future__ import annotations

import copy
import warnings

import numpy as np
import pytest
from schedule_cases import (
    CASES,
    CLOSED,
    STEPS,
    AdamLike,
    Opt,
    assert_seq_close,
    close,
    expect,
    values,
)
from slimgrad import schedule as S

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
