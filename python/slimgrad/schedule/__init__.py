"""Learning-rate and hyperparameter schedules with torch's names and exact values.

Every scheduler works on any optimizer with ``param_groups`` (``slimgrad.optim``,
``torch.optim`` or a stand-in), follows torch's constructor signatures, and computes
its values in closed form from the step count, so long runs never drift. The extra
keyword ``hyperparam`` schedules another group key the same way: ``"momentum"``,
``"weight_decay"`` or ``"beta1"`` (the first of Adam's ``betas``).

Usage::

    opt = slimgrad.optim.AdamW(params, lr=3e-4)
    sched = slimgrad.schedule.WarmupCosine(opt, warmup_steps=100, total_steps=2000)
    for batch in data:
        opt.step(grads)
        sched.step()
"""

from ._base import LRScheduler
from ._compose import ChainedScheduler, SequentialLR
from ._cosine import CosineAnnealingLR, CosineAnnealingWarmRestarts
from ._cyclic import CyclicLR, OneCycleLR
from ._lr import (
    ConstantLR,
    ExponentialLR,
    LambdaLR,
    LinearLR,
    MultiplicativeLR,
    MultiStepLR,
    PolynomialLR,
    StepLR,
)
from ._plateau import ReduceLROnPlateau
from ._plot import plot, simulate
from ._warmup import WarmupCosine, WarmupStableDecay

__all__ = [
    "ChainedScheduler",
    "ConstantLR",
    "CosineAnnealingLR",
    "CosineAnnealingWarmRestarts",
    "CyclicLR",
    "ExponentialLR",
    "LRScheduler",
    "LambdaLR",
    "LinearLR",
    "MultiStepLR",
    "MultiplicativeLR",
    "OneCycleLR",
    "PolynomialLR",
    "ReduceLROnPlateau",
    "SequentialLR",
    "StepLR",
    "WarmupCosine",
    "WarmupStableDecay",
    "plot",
    "simulate",
]
