"""WarmupCosine and WarmupStableDecay: the two warmup schedules LLM training uses."""

from __future__ import annotations

import math
from typing import Any

from ._base import LRScheduler, check_optimizer, check_positive_int, per_group

__all__ = ["WarmupCosine", "WarmupStableDecay"]


class _LinearWarmup(LRScheduler):
    """Base of the warmup schedules: ``base * (t + 1) / warmup_steps`` for
    ``t < warmup_steps``, then the subclass's ``_after_warmup``, which ends at
    ``min_lr`` (absolute, one per group)."""

    def __init__(
        self,
        optimizer: Any,
        warmup_steps: int,
        min_lr: float | list[float],
        last_epoch: int,
        hyperparam: str,
    ) -> None:
        check_optimizer(optimizer)
        check_positive_int("warmup_steps", warmup_steps, allow_zero=True)
        self.min_lrs = per_group("min_lr", optimizer, min_lr)
        self.warmup_steps = warmup_steps
        super().__init__(optimizer, last_epoch, hyperparam=hyperparam)

    def _after_warmup(self, base: float, low: float, t: int) -> float:
        raise NotImplementedError

    def _closed(self, g: int, x: float, t: int) -> float:
        base = self.base_values[g]
        if t < self.warmup_steps:
            return base * (t + 1) / self.warmup_steps
        return self._after_warmup(base, self.min_lrs[g], t)


class WarmupCosine(_LinearWarmup):
    """Linear warmup, then cosine decay to ``min_lr``.

    With ``W = warmup_steps`` and ``T = total_steps``::

        t <  W:      base * (t + 1) / W
        W <= t < T:  min_lr + (base - min_lr) * (1 + cos(pi * (t - W) / (T - W))) / 2
        t >= T:      min_lr

    The warmup starts at ``base / W`` (never 0, so the first optimizer step is not
    wasted) and reaches ``base`` at ``t = W - 1``; the cosine then starts from
    ``base`` at ``t = W`` and reaches ``min_lr`` at ``t = T``.

    Parameters
    ----------
    optimizer : object
        Optimizer with ``param_groups``.
    warmup_steps : int
        ``W``, non-negative (0: no warmup).
    total_steps : int
        ``T``, greater than ``warmup_steps``.
    min_lr : float or list of float, default 0.0
        Final value (per group if a list), absolute, not a factor.
    last_epoch, hyperparam
        As for :class:`LRScheduler` (defaults -1 and ``"lr"``).

    Raises
    ------
    ValueError
        For negative steps, ``total_steps <= warmup_steps`` or a ``min_lr`` list of
        the wrong length.
    """

    def __init__(
        self,
        optimizer: Any,
        warmup_steps: int,
        total_steps: int,
        min_lr: float | list[float] = 0.0,
        last_epoch: int = -1,
        *,
        hyperparam: str = "lr",
    ) -> None:
        check_positive_int("total_steps", total_steps)
        if isinstance(warmup_steps, int) and total_steps <= warmup_steps:
            raise ValueError(
                f"total_steps ({total_steps}) must be greater than warmup_steps ({warmup_steps})"
            )
        self.total_steps = total_steps
        super().__init__(optimizer, warmup_steps, min_lr, last_epoch, hyperparam)

    def _after_warmup(self, base: float, low: float, t: int) -> float:
        w, total = self.warmup_steps, self.total_steps
        if t >= total:
            return low
        return low + (base - low) * (1 + math.cos(math.pi * (t - w) / (total - w))) / 2


class WarmupStableDecay(_LinearWarmup):
    """Warmup-stable-decay ("trapezoid"): linear warmup, constant, linear decay.

    With ``W, S, D`` the three lengths::

        t <  W:               base * (t + 1) / W
        W <= t < W + S:       base
        W + S <= t < W+S+D:   base + (min_lr - base) * (t - W - S + 1) / D
        t >= W + S + D:       min_lr

    Both ramps move on the first step of their phase and arrive on its last step:
    the warmup reaches ``base`` at ``t = W - 1`` and the decay reaches ``min_lr`` at
    ``t = W + S + D - 1``.

    Parameters
    ----------
    optimizer : object
        Optimizer with ``param_groups``.
    warmup_steps, stable_steps, decay_steps : int
        Non-negative phase lengths.
    min_lr : float or list of float, default 0.0
        Final value (per group if a list).
    last_epoch, hyperparam
        As for :class:`LRScheduler` (defaults -1 and ``"lr"``).

    Raises
    ------
    ValueError
        For a negative or non-integer phase length, or a ``min_lr`` list of the
        wrong length.
    """

    def __init__(
        self,
        optimizer: Any,
        warmup_steps: int,
        stable_steps: int,
        decay_steps: int,
        min_lr: float | list[float] = 0.0,
        last_epoch: int = -1,
        *,
        hyperparam: str = "lr",
    ) -> None:
        check_positive_int("stable_steps", stable_steps, allow_zero=True)
        check_positive_int("decay_steps", decay_steps, allow_zero=True)
        self.stable_steps = stable_steps
        self.decay_steps = decay_steps
        super().__init__(optimizer, warmup_steps, min_lr, last_epoch, hyperparam)

    def _after_warmup(self, base: float, low: float, t: int) -> float:
        decay_start = self.warmup_steps + self.stable_steps
        if t < decay_start:
            return base
        if t >= decay_start + self.decay_steps:
            return low
        return base + (low - base) * (t - decay_start + 1) / self.decay_steps
