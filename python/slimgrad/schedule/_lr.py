"""Closed-form schedules with torch.optim.lr_scheduler's names and signatures:
the lambda and multiplicative ones (cosine ones are in _cosine.py)."""

from __future__ import annotations

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


class _LambdaState(LRScheduler):
    """The constructor of the schedulers of user functions, and their state_dict
    handling (the functions are never pickled)."""

    lr_lambdas: list[Lambda]
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
        self._start_state()
        super().__init__(optimizer, last_epoch, hyperparam=hyperparam)

    def _start_state(self) -> None:
        """Hook: running state, set before the base constructor takes step 0."""

    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        state["lr_lambdas"] = callable_state(self.lr_lambdas)
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        state = dict(state_dict)
        fns = state.pop("lr_lambdas")
        super().load_state_dict(state)
        load_callable_state(self.lr_lambdas, fns)


class LambdaLR(_LambdaState):
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

    def _closed(self, g: int, x: float, t: int) -> float:
        # Absolute (like torch): a LambdaLR ignores what came before it in a chain.
        return self.base_values[g] * self.lr_lambdas[g](t)


class MultiplicativeLR(_LambdaState):
    """Value ``base * prod(lr_lambda(k) for k in 1..t)``.

    The product is kept as running state (an arbitrary function has no closed form),
    one multiplication per step, in the same order as torch.

    Parameters
    ----------
    optimizer : object
        Optimizer with ``param_groups``.
    lr_lambda : callable or list of callables
        ``int -> float`` factor applied at each step, one or one per group.
    last_epoch, hyperparam
        As for :class:`LRScheduler` (defaults -1 and ``"lr"``).
    """

    _chain_kind = "factor"
    _epoch_closed = False

    _initial_keeps = True

    def _start_state(self) -> None:
        self._products = [1.0] * len(self.lr_lambdas)

    def _advance(self, t: int) -> None:
        if t == 0:
            self._products = [1.0] * len(self._products)
        else:
            self._products = [p * fn(t) for p, fn in zip(self._products, self.lr_lambdas)]

    def _closed(self, g: int, x: float, t: int) -> float:
        return x * self._products[g]

    def _relative(self, g: int, x: float, t: int) -> float:
        return x * self.lr_lambdas[g](t)


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
    last_epoch, hyperparam
        As for :class:`LRScheduler` (defaults -1 and ``"lr"``).

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
    last_epoch, hyperparam
        As for :class:`LRScheduler` (defaults -1 and ``"lr"``).

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
    last_epoch, hyperparam
        As for :class:`LRScheduler` (defaults -1 and ``"lr"``).

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
    last_epoch, hyperparam
        As for :class:`LRScheduler` (defaults -1 and ``"lr"``).

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

    def _relative(self, g: int, x: float, t: int) -> float:
        # Torch's recursion, term for term (it rounds differently from a ratio).
        s, e, n = self.start_factor, self.end_factor, self.total_iters
        if t == 0:
            return x * s
        if t > n:
            return x
        return x * (1.0 + (e - s) / (n * s + (t - 1) * (e - s)))

    def _keeps_initial(self, t: int) -> bool:
        return t > 0


class ExponentialLR(FactorScheduler):
    """Value ``base * gamma ** t``.

    Parameters
    ----------
    optimizer : object
        Optimizer with ``param_groups``.
    gamma : float
        Multiplicative factor per step.
    last_epoch, hyperparam
        As for :class:`LRScheduler` (defaults -1 and ``"lr"``).
    """

    _initial_keeps = True

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

    def _relative(self, g: int, x: float, t: int) -> float:
        return x * self.gamma


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
    last_epoch, hyperparam
        As for :class:`LRScheduler` (defaults -1 and ``"lr"``).

    Raises
    ------
    ValueError
        If ``total_iters`` is not positive.
    """

    _initial_keeps = True

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

    def _relative(self, g: int, x: float, t: int) -> float:
        n = self.total_iters
        if t > n:
            return x
        return x * ((1.0 - t / n) / (1.0 - (t - 1) / n)) ** self.power
