"""Closed-form schedules with torch.optim.lr_scheduler's names and signatures,
plus WarmupCosine and WarmupStableDecay."""

from __future__ import annotations

import math
from bisect import bisect_right
from collections.abc import Callable, Iterable
from typing import Any

from ._base import (
    FactorScheduler,
    LRScheduler,
    callable_state,
    check_optimizer,
    check_positive_int,
    load_callable_state,
    per_group,
)

__all__ = [
    "LambdaLR",
    "MultiplicativeLR",
    "StepLR",
    "MultiStepLR",
    "ConstantLR",
    "LinearLR",
    "ExponentialLR",
    "PolynomialLR",
    "CosineAnnealingLR",
    "CosineAnnealingWarmRestarts",
    "WarmupCosine",
    "WarmupStableDecay",
]

Lambda = Callable[[int], float]


def _lambdas(optimizer: Any, lr_lambda: Lambda | list[Lambda]) -> list[Lambda]:
    check_optimizer(optimizer)
    n = len(optimizer.param_groups)
    if isinstance(lr_lambda, (list, tuple)):
        if len(lr_lambda) != n:
            raise ValueError(f"Expected {n} lr_lambdas, but got {len(lr_lambda)}")
        fns = list(lr_lambda)
    else:
        fns = [lr_lambda] * n
    for fn in fns:
        if not callable(fn):
            raise TypeError(f"lr_lambda should be a function, but got {type(fn).__name__}")
    return fns


class _LambdaState:
    """state_dict handling for schedulers holding user functions (never pickled)."""

    lr_lambdas: list[Lambda]

    def state_dict(self) -> dict[str, Any]:
        state = LRScheduler.state_dict(self)  # type: ignore[arg-type]
        state["lr_lambdas"] = callable_state(self.lr_lambdas)
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        state = dict(state_dict)
        fns = state.pop("lr_lambdas")
        LRScheduler.load_state_dict(self, state)  # type: ignore[arg-type]
        load_callable_state(self.lr_lambdas, fns)


class LambdaLR(_LambdaState, LRScheduler):
    """Value ``base * lr_lambda(t)``.

    Parameters
    ----------
    optimizer : object
        Optimizer with ``param_groups``.
    lr_lambda : callable or list of callables
        ``int -> float`` factor, one for all groups or one per group.
    last_epoch : int, default -1
        See :class:`LRScheduler`.
    hyperparam : str, default "lr"
        Group key to schedule (``"momentum"``, ``"weight_decay"``, ``"beta1"``...).

    Raises
    ------
    ValueError
        If a list of lambdas does not have one per param group.
    TypeError
        If a lambda is not callable.
    """

    _not_state = ("optimizer", "lr_lambdas")

    def __init__(
        self,
        optimizer: Any,
        lr_lambda: Lambda | list[Lambda],
        last_epoch: int = -1,
        *,
        hyperparam: str = "lr",
    ) -> None:
        self.lr_lambdas = _lambdas(optimizer, lr_lambda)
        super().__init__(optimizer, last_epoch, hyperparam=hyperparam)

    def _closed(self, g: int, x: float, t: int) -> float:
        # Absolute (like torch): a LambdaLR ignores what came before it in a chain.
        return self.base_values[g] * self.lr_lambdas[g](t)


class MultiplicativeLR(_LambdaState, LRScheduler):
    """Value ``base * prod(lr_lambda(k) for k in 1..t)``.

    The product is kept as running state (an arbitrary function has no closed form),
    one multiplication per step, in the same order as torch.

    Parameters
    ----------
    optimizer : object
        Optimizer with ``param_groups``.
    lr_lambda : callable or list of callables
        ``int -> float`` factor applied at each step, one or one per group.
    last_epoch : int, default -1
        See :class:`LRScheduler`.
    hyperparam : str, default "lr"
        Group key to schedule.
    """

    _not_state = ("optimizer", "lr_lambdas")
    _chain_kind = "factor"

    def __init__(
        self,
        optimizer: Any,
        lr_lambda: Lambda | list[Lambda],
        last_epoch: int = -1,
        *,
        hyperparam: str = "lr",
    ) -> None:
        self.lr_lambdas = _lambdas(optimizer, lr_lambda)
        self._products = [1.0] * len(optimizer.param_groups)
        super().__init__(optimizer, last_epoch, hyperparam=hyperparam)

    def _advance(self, t: int) -> None:
        if t == 0:
            self._products = [1.0] * len(self._products)
        else:
            self._products = [p * fn(t) for p, fn in zip(self._products, self.lr_lambdas)]

    def _closed(self, g: int, x: float, t: int) -> float:
        return x * self._products[g]

    def _relative(self, g: int, x: float, t: int) -> float:
        return x * self.lr_lambdas[g](t) if t > 0 else x

    def _restart_value(self, g: int, current: float) -> float:
        # Torch restarts a MultiplicativeLR from the current value times lambda(0).
        self.base_values[g] = current * self.lr_lambdas[g](0)
        return self.base_values[g]


class StepLR(FactorScheduler):
    """Value ``base * gamma ** (t // step_size)``.

    Parameters
    ----------
    optimizer : object
        Optimizer with ``param_groups``.
    step_size : int
        Period of decay, positive.
    gamma : float, default 0.1
        Multiplicative factor per period.
    last_epoch : int, default -1
        See :class:`LRScheduler`.
    hyperparam : str, default "lr"
        Group key to schedule.

    Raises
    ------
    ValueError
        If ``step_size`` is not a positive integer.
    """

    def __init__(
        self,
        optimizer: Any,
        step_size: int,
        gamma: float = 0.1,
        last_epoch: int = -1,
        *,
        hyperparam: str = "lr",
    ) -> None:
        check_positive_int("step_size", step_size)
        self.step_size = step_size
        self.gamma = gamma
        super().__init__(optimizer, last_epoch, hyperparam=hyperparam)

    def _factor(self, g: int, t: int) -> float:
        return self.gamma ** (t // self.step_size)


class MultiStepLR(FactorScheduler):
    """Value ``base * gamma ** (number of milestones <= t)``.

    Parameters
    ----------
    optimizer : object
        Optimizer with ``param_groups``.
    milestones : iterable of int
        Non-decreasing step indices; a repeated milestone applies ``gamma``
        once per occurrence, as torch's counter does.
    gamma : float, default 0.1
        Multiplicative factor at each milestone.
    last_epoch : int, default -1
        See :class:`LRScheduler`.
    hyperparam : str, default "lr"
        Group key to schedule.

    Raises
    ------
    ValueError
        If ``milestones`` decreases somewhere (torch documents increasing
        milestones but does not check them).
    """

    def __init__(
        self,
        optimizer: Any,
        milestones: Iterable[int],
        gamma: float = 0.1,
        last_epoch: int = -1,
        *,
        hyperparam: str = "lr",
    ) -> None:
        self.milestones = _non_decreasing("milestones", milestones)
        self.gamma = gamma
        super().__init__(optimizer, last_epoch, hyperparam=hyperparam)

    def _factor(self, g: int, t: int) -> float:
        return self.gamma ** bisect_right(self.milestones, t)


def _non_decreasing(name: str, values: Iterable[int]) -> list[int]:
    out = list(values)
    if any(not isinstance(v, int) for v in out) or any(b < a for a, b in zip(out, out[1:])):
        raise ValueError(f"{name} must be non-decreasing integers, but got {out}")
    return out


class ConstantLR(FactorScheduler):
    """Value ``base * factor`` for ``t < total_iters``, then ``base``.

    Parameters
    ----------
    optimizer : object
        Optimizer with ``param_groups``.
    factor : float, default 1/3
        In ``[0, 1]``.
    total_iters : int, default 5
        Number of steps at the reduced value, non-negative.
    last_epoch : int, default -1
        See :class:`LRScheduler`.
    hyperparam : str, default "lr"
        Group key to schedule.

    Raises
    ------
    ValueError
        If ``factor`` is outside ``[0, 1]`` or ``total_iters`` is negative.
    """

    def __init__(
        self,
        optimizer: Any,
        factor: float = 1.0 / 3,
        total_iters: int = 5,
        last_epoch: int = -1,
        *,
        hyperparam: str = "lr",
    ) -> None:
        if factor > 1.0 or factor < 0:
            raise ValueError("Constant multiplicative factor expected to be between 0 and 1.")
        check_positive_int("total_iters", total_iters, allow_zero=True)
        self.factor = factor
        self.total_iters = total_iters
        super().__init__(optimizer, last_epoch, hyperparam=hyperparam)

    def _factor(self, g: int, t: int) -> float:
        return self.factor if t < self.total_iters else 1.0


class LinearLR(FactorScheduler):
    """Value ``base * (s + (e - s) * min(t, total_iters) / total_iters)``.

    Parameters
    ----------
    optimizer : object
        Optimizer with ``param_groups``.
    start_factor : float, default 1/3
        ``s``, in ``(0, 1]``.
    end_factor : float, default 1.0
        ``e``, in ``[0, 1]``.
    total_iters : int, default 5
        Steps of the ramp, positive.
    last_epoch : int, default -1
        See :class:`LRScheduler`.
    hyperparam : str, default "lr"
        Group key to schedule.

    Raises
    ------
    ValueError
        If a factor is out of range or ``total_iters`` is not positive.
    """

    def __init__(
        self,
        optimizer: Any,
        start_factor: float = 1.0 / 3,
        end_factor: float = 1.0,
        total_iters: int = 5,
        last_epoch: int = -1,
        *,
        hyperparam: str = "lr",
    ) -> None:
        if start_factor > 1.0 or start_factor <= 0:
            raise ValueError(
                "Starting multiplicative factor expected to be greater than 0 "
                "and less or equal to 1."
            )
        if end_factor > 1.0 or end_factor < 0:
            raise ValueError("Ending multiplicative factor expected to be between 0 and 1.")
        check_positive_int("total_iters", total_iters)
        self.start_factor = start_factor
        self.end_factor = end_factor
        self.total_iters = total_iters
        super().__init__(optimizer, last_epoch, hyperparam=hyperparam)

    def _factor(self, g: int, t: int) -> float:
        ramp = min(self.total_iters, t) / self.total_iters
        return self.start_factor + (self.end_factor - self.start_factor) * ramp


class ExponentialLR(FactorScheduler):
    """Value ``base * gamma ** t``.

    Parameters
    ----------
    optimizer : object
        Optimizer with ``param_groups``.
    gamma : float
        Multiplicative factor per step.
    last_epoch : int, default -1
        See :class:`LRScheduler`.
    hyperparam : str, default "lr"
        Group key to schedule.
    """

    def __init__(
        self,
        optimizer: Any,
        gamma: float,
        last_epoch: int = -1,
        *,
        hyperparam: str = "lr",
    ) -> None:
        self.gamma = gamma
        super().__init__(optimizer, last_epoch, hyperparam=hyperparam)

    def _factor(self, g: int, t: int) -> float:
        return self.gamma**t


class PolynomialLR(FactorScheduler):
    """Value ``base * (1 - min(t, total_iters) / total_iters) ** power``.

    Parameters
    ----------
    optimizer : object
        Optimizer with ``param_groups``.
    total_iters : int, default 5
        Steps until the value reaches 0, positive.
    power : float, default 1.0
        Exponent of the decay.
    last_epoch : int, default -1
        See :class:`LRScheduler`.
    hyperparam : str, default "lr"
        Group key to schedule.

    Raises
    ------
    ValueError
        If ``total_iters`` is not positive.
    """

    def __init__(
        self,
        optimizer: Any,
        total_iters: int = 5,
        power: float = 1.0,
        last_epoch: int = -1,
        *,
        hyperparam: str = "lr",
    ) -> None:
        check_positive_int("total_iters", total_iters)
        self.total_iters = total_iters
        self.power = power
        super().__init__(optimizer, last_epoch, hyperparam=hyperparam)

    def _factor(self, g: int, t: int) -> float:
        return (1.0 - min(self.total_iters, t) / self.total_iters) ** self.power


class CosineAnnealingLR(LRScheduler):
    """Value ``eta_min + (base - eta_min) * (1 + cos(pi * t / T_max)) / 2``.

    Periodic past ``T_max`` (it climbs back to ``base`` at ``2 * T_max``), as torch's
    sequence is. Torch computes it recursively; this closed form agrees with that
    recursion to ~1e-15 relative for the horizons tested (``T_max`` up to a few
    hundred, several periods).

    Parameters
    ----------
    optimizer : object
        Optimizer with ``param_groups``.
    T_max : int
        Half period in steps, positive.
    eta_min : float or list of float, default 0.0
        Minimum value (per group if a list).
    last_epoch : int, default -1
        See :class:`LRScheduler`.
    hyperparam : str, default "lr"
        Group key to schedule.

    Raises
    ------
    ValueError
        If ``T_max`` is not a positive integer or ``eta_min`` has the wrong length.
    """

    _chain_kind = "recursive"

    def __init__(
        self,
        optimizer: Any,
        T_max: int,
        eta_min: float | list[float] = 0.0,
        last_epoch: int = -1,
        *,
        hyperparam: str = "lr",
    ) -> None:
        check_optimizer(optimizer)
        check_positive_int("T_max", T_max)
        self._eta_mins = per_group("eta_min", optimizer, eta_min)
        self.T_max = T_max
        self.eta_min = eta_min
        super().__init__(optimizer, last_epoch, hyperparam=hyperparam)

    def _cos1(self, t: int) -> float:
        # Same expression as torch's recursion so both round alike.
        return 1.0 + math.cos(math.pi * t / self.T_max)

    def _closed(self, g: int, x: float, t: int) -> float:
        eta = self._eta_mins[g]
        return eta + (x - eta) * self._cos1(t) / 2

    def _relative(self, g: int, x: float, t: int) -> float:
        eta = self._eta_mins[g]
        if t == 0:
            return x
        if (t - 1 - self.T_max) % (2 * self.T_max) == 0:
            # Leaving the minimum, where the ratio below would divide by zero.
            return x + (self.base_values[g] - eta) * (1 - math.cos(math.pi / self.T_max)) / 2
        return eta + (x - eta) * self._cos1(t) / self._cos1(t - 1)


class CosineAnnealingWarmRestarts(LRScheduler):
    """Cosine annealing restarted every ``T_i`` steps, ``T_i = T_0 * T_mult ** i``.

    Value ``eta_min + (base - eta_min) * (1 + cos(pi * T_cur / T_i)) / 2`` where
    ``T_cur`` is the number of steps since the last restart, found from ``t`` with
    integer arithmetic (exact for any ``t``).

    Parameters
    ----------
    optimizer : object
        Optimizer with ``param_groups``.
    T_0 : int
        Length of the first period, positive.
    T_mult : int, default 1
        Growth factor of the period, ``>= 1``.
    eta_min : float, default 0.0
        Minimum value.
    last_epoch : int, default -1
        See :class:`LRScheduler`.
    hyperparam : str, default "lr"
        Group key to schedule.

    Raises
    ------
    ValueError
        For a non-positive ``T_0``, ``T_mult < 1`` or a non-numeric ``eta_min``.
    """

    def __init__(
        self,
        optimizer: Any,
        T_0: int,
        T_mult: int = 1,
        eta_min: float = 0.0,
        last_epoch: int = -1,
        *,
        hyperparam: str = "lr",
    ) -> None:
        if not isinstance(T_0, int) or T_0 <= 0:
            raise ValueError(f"Expected positive integer T_0, but got {T_0}")
        if not isinstance(T_mult, int) or T_mult < 1:
            raise ValueError(f"Expected integer T_mult >= 1, but got {T_mult}")
        if not isinstance(eta_min, (float, int)):
            raise ValueError(
                f"Expected float or int eta_min, but got {eta_min} of type {type(eta_min)}"
            )
        self.T_0 = T_0
        self.T_mult = T_mult
        self.eta_min = eta_min
        self.T_i = T_0
        self.T_cur = 0
        super().__init__(optimizer, last_epoch, hyperparam=hyperparam)

    def _advance(self, t: int) -> None:
        if self.T_mult == 1:
            self.T_i, self.T_cur = self.T_0, t % self.T_0
            return
        period, cur = self.T_0, t
        while cur >= period:  # O(log t) iterations
            cur -= period
            period *= self.T_mult
        self.T_i, self.T_cur = period, cur

    def _closed(self, g: int, x: float, t: int) -> float:
        eta = self.eta_min
        return (
            eta + (self.base_values[g] - eta) * (1 + math.cos(math.pi * self.T_cur / self.T_i)) / 2
        )


class WarmupCosine(LRScheduler):
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
    last_epoch : int, default -1
        See :class:`LRScheduler`.
    hyperparam : str, default "lr"
        Group key to schedule.

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
        check_optimizer(optimizer)
        check_positive_int("warmup_steps", warmup_steps, allow_zero=True)
        check_positive_int("total_steps", total_steps)
        if total_steps <= warmup_steps:
            raise ValueError(
                f"total_steps ({total_steps}) must be greater than warmup_steps ({warmup_steps})"
            )
        self.min_lrs = per_group("min_lr", optimizer, min_lr)
        self.warmup_steps = warmup_steps
        self.total_steps = total_steps
        super().__init__(optimizer, last_epoch, hyperparam=hyperparam)

    def _closed(self, g: int, x: float, t: int) -> float:
        base, low = self.base_values[g], self.min_lrs[g]
        w, total = self.warmup_steps, self.total_steps
        if t < w:
            return base * (t + 1) / w
        if t >= total:
            return low
        return low + (base - low) * (1 + math.cos(math.pi * (t - w) / (total - w))) / 2


class WarmupStableDecay(LRScheduler):
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
    last_epoch : int, default -1
        See :class:`LRScheduler`.
    hyperparam : str, default "lr"
        Group key to schedule.

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
        check_optimizer(optimizer)
        check_positive_int("warmup_steps", warmup_steps, allow_zero=True)
        check_positive_int("stable_steps", stable_steps, allow_zero=True)
        check_positive_int("decay_steps", decay_steps, allow_zero=True)
        self.min_lrs = per_group("min_lr", optimizer, min_lr)
        self.warmup_steps = warmup_steps
        self.stable_steps = stable_steps
        self.decay_steps = decay_steps
        super().__init__(optimizer, last_epoch, hyperparam=hyperparam)

    def _closed(self, g: int, x: float, t: int) -> float:
        base, low = self.base_values[g], self.min_lrs[g]
        w = self.warmup_steps
        decay_start = w + self.stable_steps
        if t < w:
            return base * (t + 1) / w
        if t < decay_start:
            return base
        if t >= decay_start + self.decay_steps:
            return low
        return base + (low - base) * (t - decay_start + 1) / self.decay_steps
