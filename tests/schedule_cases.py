"""Scheduler cases and helpers shared by test_schedule*.py: stand-in optimizers,
the torch-parity table CASES (one factory for slimgrad and torch) and the
closed-form table CLOSED (factory, formula)."""

from __future__ import annotations

import math

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
