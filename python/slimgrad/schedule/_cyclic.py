"""CyclicLR and OneCycleLR: schedules that also cycle momentum (or Adam's beta1)."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, Literal

from ._base import (
    LRScheduler,
    callable_state,
    check_args,
    load_callable_state,
    per_group,
    set_value,
)

__all__ = ["CyclicLR", "OneCycleLR"]


def _start_momentum(sched: Any, optimizer: Any) -> None:
    """Torch's start: momentum (or beta1) at its maximum, both bounds in the groups."""
    for high, low, group in zip(sched.max_momentums, sched.base_momentums, optimizer.param_groups):
        set_value(group, sched.momentum_key, high)
        group["max_momentum"] = high
        group["base_momentum"] = low


def _momentum_key(optimizer: Any) -> str:
    """``"beta1"`` for Adam-style optimizers (``betas``), else ``"momentum"``."""
    defaults = getattr(optimizer, "defaults", None)
    groups = optimizer.param_groups
    if isinstance(defaults, dict):
        present = lambda k: k in defaults  # noqa: E731
    else:
        present = lambda k: all(k in g for g in groups)  # noqa: E731
    if present("betas"):
        return "beta1"
    if present("momentum"):
        return "momentum"
    raise ValueError(
        "optimizer must support momentum or beta1 with `cycle_momentum` option enabled"
    )


class CyclicLR(LRScheduler):
    """Cyclical learning rate (Smith, 2017) between ``base_lr`` and ``max_lr``.

    With ``T = step_size_up + step_size_down``, ``r = step_size_up / T``::

        cycle = floor(1 + t / T);  x = 1 + t / T - cycle
        s = x / r if x <= r else (x - 1) / (r - 1)          # 0 -> 1 -> 0
        lr = base_lr + (max_lr - base_lr) * s * scale(cycle or t)
        momentum = max_momentum - (max_momentum - base_momentum) * s * scale(...)

    ``scale`` is 1 (``"triangular"``), ``1 / 2 ** (cycle - 1)`` (``"triangular2"``),
    ``gamma ** t`` (``"exp_range"``) or ``scale_fn``. Torch's values are the same
    closed form; this class writes ``lr`` at construction (to ``base_lr``) and, with
    ``cycle_momentum``, ``momentum`` (SGD/RMSprop groups) or ``betas[0]`` (groups of
    an optimizer with ``betas``, e.g. Adam/AdamW).

    Parameters
    ----------
    optimizer : object
        Optimizer with ``param_groups``.
    base_lr, max_lr : float or list of float
        Lower and upper bounds, per group if lists.
    step_size_up : int, default 2000
        Steps of the rising half, positive.
    step_size_down : int, optional
        Steps of the falling half, positive; ``step_size_up`` if None.
    mode : {"triangular", "triangular2", "exp_range"}, default "triangular"
        Built-in amplitude scaling; ignored when ``scale_fn`` is given.
    gamma : float, default 1.0
        Base of ``"exp_range"``.
    scale_fn : callable, optional
        Custom ``float -> float`` amplitude scaling.
    scale_mode : {"cycle", "iterations"}, default "cycle"
        Argument of ``scale_fn``: the cycle number or the step count.
    cycle_momentum : bool, default True
        Cycle momentum/beta1 inversely to the learning rate. Only used with
        ``hyperparam="lr"``.
    base_momentum, max_momentum : float or list of float, default 0.8, 0.9
        Momentum bounds.
    last_epoch : int, default -1
        See :class:`LRScheduler`.
    hyperparam : str, default "lr"
        Group key to cycle; ``base_lr``/``max_lr`` are then its bounds.

    Raises
    ------
    ValueError
        For an unknown ``mode`` without ``scale_fn``, non-positive step sizes,
        per-group lists of the wrong length, or ``cycle_momentum`` with an optimizer
        that has neither ``momentum`` nor ``betas``.
    """

    _not_state = ("optimizer", "scale_fn")

    def __init__(
        self,
        optimizer: Any,
        base_lr: float | list[float],
        max_lr: float | list[float],
        step_size_up: int = 2000,
        step_size_down: int | None = None,
        mode: Literal["triangular", "triangular2", "exp_range"] = "triangular",
        gamma: float = 1.0,
        scale_fn: Callable[[float], float] | None = None,
        scale_mode: Literal["cycle", "iterations"] = "cycle",
        cycle_momentum: bool = True,
        base_momentum: float | list[float] = 0.8,
        max_momentum: float | list[float] = 0.9,
        last_epoch: int = -1,
        *,
        hyperparam: str = "lr",
    ) -> None:
        # Validate everything before the first write to the optimizer.
        check_args(optimizer, last_epoch, hyperparam)
        base_lrs = per_group("base_lr", optimizer, base_lr)
        self.max_lrs = per_group("max_lr", optimizer, max_lr)
        up = float(step_size_up)
        down = float(step_size_down) if step_size_down is not None else up
        if not up > 0 or not down > 0:
            raise ValueError(
                "Expected positive step_size_up and step_size_down, but got "
                f"{step_size_up} and {step_size_down}"
            )
        if mode not in ("triangular", "triangular2", "exp_range") and scale_fn is None:
            raise ValueError("mode is invalid and scale_fn is None")
        if scale_fn is None:
            # The built-in modes fix what their scale is a function of.
            scale_mode = "iterations" if mode == "exp_range" else "cycle"
        elif scale_mode not in ("cycle", "iterations"):
            raise ValueError(f"scale_mode must be 'cycle' or 'iterations', but got {scale_mode}")
        self.cycle_momentum = bool(cycle_momentum) and hyperparam == "lr"
        if self.cycle_momentum:
            self.momentum_key = _momentum_key(optimizer)
            self.base_momentums = per_group("base_momentum", optimizer, base_momentum)
            self.max_momentums = per_group("max_momentum", optimizer, max_momentum)

        self.total_size = up + down
        self.step_ratio = up / self.total_size
        self.mode = mode
        self.gamma = gamma
        self.scale_fn = scale_fn
        self.scale_mode = scale_mode
        self._base_lrs = base_lrs
        if last_epoch == -1:
            for value, group in zip(base_lrs, optimizer.param_groups):
                set_value(group, hyperparam, value)
            if self.cycle_momentum:
                _start_momentum(self, optimizer)
        super().__init__(optimizer, last_epoch, hyperparam=hyperparam)
        self.base_values = list(base_lrs)

    def _scale(self, cycle: float, t: int) -> float:
        arg = cycle if self.scale_mode == "cycle" else t
        if self.scale_fn is not None:
            return self.scale_fn(arg)
        if self.mode == "triangular":
            return 1.0
        if self.mode == "triangular2":
            return 1 / (2.0 ** (arg - 1))
        return self.gamma**arg

    def _height(self, t: int) -> tuple[float, float]:
        """Position in the cycle (0 at the bounds, 1 at the peak) and amplitude scale."""
        cycle = math.floor(1 + t / self.total_size)
        x = 1.0 + t / self.total_size - cycle
        if x <= self.step_ratio:
            s = x / self.step_ratio
        else:
            s = (x - 1) / (self.step_ratio - 1)
        return s, self._scale(cycle, t)

    def _closed(self, g: int, x: float, t: int) -> float:
        s, scale = self._height(t)
        base = self._base_lrs[g]
        return base + (self.max_lrs[g] - base) * s * scale

    def _after(self, t: int) -> None:
        if not self.cycle_momentum:
            return
        s, scale = self._height(t)
        for g, group in enumerate(self.optimizer.param_groups):
            low, high = self.base_momentums[g], self.max_momentums[g]
            set_value(group, self.momentum_key, high - (high - low) * s * scale)

    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        state["scale_fn"] = None if self.scale_fn is None else callable_state([self.scale_fn])[0]
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        state = dict(state_dict)
        fn_state = state.pop("scale_fn", None)
        super().load_state_dict(state)
        if self.scale_fn is not None and fn_state is not None:
            load_callable_state([self.scale_fn], [fn_state])


class OneCycleLR(LRScheduler):
    """The 1cycle policy (Smith & Topin): warm up to ``max_lr``, anneal far below.

    Per group, ``initial = max_lr / div_factor`` and ``min = initial /
    final_div_factor``. Two phases (default): ``initial -> max`` over steps
    ``0 .. pct_start * total_steps - 1``, then ``max -> min`` until
    ``total_steps - 1``. With ``three_phase``: ``initial -> max -> initial`` over
    two equal phases, then ``initial -> min``. Each phase anneals with
    ``end + (start - end) * (1 + cos(pi * pct)) / 2`` (``"cos"``) or
    ``start + (end - start) * pct`` (``"linear"``), ``pct`` the fraction of the phase
    done. Momentum (or ``betas[0]``) moves the opposite way between
    ``max_momentum`` and ``base_momentum``.

    ``step()`` may be called ``total_steps`` times; one more raises ``ValueError``
    (torch does too) and leaves the scheduler and optimizer unchanged.

    Parameters
    ----------
    optimizer : object
        Optimizer with ``param_groups``.
    max_lr : float or list of float
        Peak value, per group if a list.
    total_steps : int, optional
        Length of the cycle; or give ``epochs`` and ``steps_per_epoch``.
    epochs, steps_per_epoch : int, optional
        ``total_steps = epochs * steps_per_epoch``.
    pct_start : float, default 0.3
        Fraction of the cycle spent increasing.
    anneal_strategy : {"cos", "linear"}, default "cos"
    cycle_momentum : bool, default True
        Cycle momentum/beta1 (only with ``hyperparam="lr"``).
    base_momentum, max_momentum : float or list of float, default 0.85, 0.95
    div_factor : float, default 25.0
    final_div_factor : float, default 1e4
    three_phase : bool, default False
    last_epoch : int, default -1
        See :class:`LRScheduler`.
    hyperparam : str, default "lr"
        Group key to schedule; ``max_lr`` is then its peak.

    Raises
    ------
    ValueError
        For a missing or non-positive length, ``pct_start`` outside ``[0, 1]``, an
        unknown ``anneal_strategy``, per-group lists of the wrong length, an
        optimizer without momentum/betas when cycling momentum, or stepping past
        ``total_steps``.
    """

    def __init__(
        self,
        optimizer: Any,
        max_lr: float | list[float],
        total_steps: int | None = None,
        epochs: int | None = None,
        steps_per_epoch: int | None = None,
        pct_start: float = 0.3,
        anneal_strategy: Literal["cos", "linear"] = "cos",
        cycle_momentum: bool = True,
        base_momentum: float | list[float] = 0.85,
        max_momentum: float | list[float] = 0.95,
        div_factor: float = 25.0,
        final_div_factor: float = 1e4,
        three_phase: bool = False,
        last_epoch: int = -1,
        *,
        hyperparam: str = "lr",
    ) -> None:
        check_args(optimizer, last_epoch, hyperparam)
        if total_steps is not None:
            if not isinstance(total_steps, int) or total_steps <= 0:
                raise ValueError(f"Expected positive integer total_steps, but got {total_steps}")
            self.total_steps = total_steps
        elif epochs is not None and steps_per_epoch is not None:
            if not isinstance(epochs, int) or epochs <= 0:
                raise ValueError(f"Expected positive integer epochs, but got {epochs}")
            if not isinstance(steps_per_epoch, int) or steps_per_epoch <= 0:
                raise ValueError(
                    f"Expected positive integer steps_per_epoch, but got {steps_per_epoch}"
                )
            self.total_steps = epochs * steps_per_epoch
        else:
            raise ValueError("You must define either total_steps OR (epochs AND steps_per_epoch)")
        if not isinstance(pct_start, float) or pct_start < 0 or pct_start > 1:
            raise ValueError(f"Expected float between 0 and 1 pct_start, but got {pct_start}")
        if anneal_strategy not in ("cos", "linear"):
            raise ValueError(
                f"anneal_strategy must be one of 'cos' or 'linear', instead got {anneal_strategy}"
            )
        max_lrs = per_group("max_lr", optimizer, max_lr)
        self.cycle_momentum = bool(cycle_momentum) and hyperparam == "lr"
        if self.cycle_momentum:
            self.momentum_key = _momentum_key(optimizer)
            self.max_momentums = per_group("max_momentum", optimizer, max_momentum)
            self.base_momentums = per_group("base_momentum", optimizer, base_momentum)

        self.anneal_strategy = anneal_strategy
        # Phases as (last step, start, end) with names of the per-group value lists;
        # momentum runs the opposite way.
        n = self.total_steps
        if three_phase:
            self._phases = [
                (float(pct_start * n) - 1, "initial", "max", "high", "low"),
                (float(2 * pct_start * n) - 2, "max", "initial", "low", "high"),
                (n - 1, "initial", "min", "high", "high"),
            ]
        else:
            self._phases = [
                (float(pct_start * n) - 1, "initial", "max", "high", "low"),
                (n - 1, "max", "min", "low", "high"),
            ]
        # As torch, the bounds live in the param groups (edits there take effect)
        # and a resumed scheduler reads them from there.
        self._keys = {
            "initial": f"initial_{hyperparam}",
            "max": f"max_{hyperparam}",
            "min": f"min_{hyperparam}",
            "high": "max_momentum",
            "low": "base_momentum",
        }
        if last_epoch == -1:
            for m, group in zip(max_lrs, optimizer.param_groups):
                group[self._keys["initial"]] = m / div_factor  # overwritten, as in torch
                group[self._keys["max"]] = m
                group[self._keys["min"]] = m / div_factor / final_div_factor
            if self.cycle_momentum:
                _start_momentum(self, optimizer)
        else:
            names = list(self._keys.values())[: 5 if self.cycle_momentum else 3]
            for i, group in enumerate(optimizer.param_groups):
                missing = [k for k in names if k not in group]
                if missing:
                    raise KeyError(
                        f"param {missing[0]!r} is not specified in param_groups[{i}] when "
                        "resuming OneCycleLR with last_epoch >= 0 (load the optimizer's "
                        "state dict first)"
                    )
        super().__init__(optimizer, last_epoch, hyperparam=hyperparam)

    def _anneal(self, start: float, end: float, pct: float) -> float:
        if self.anneal_strategy == "cos":
            return end + (start - end) / 2.0 * (math.cos(math.pi * pct) + 1)
        return (end - start) * pct + start

    def _phase(self, t: int) -> tuple[float, tuple[Any, ...]]:
        start = 0.0
        for i, phase in enumerate(self._phases):
            end = phase[0]
            if t <= end or i == len(self._phases) - 1:
                return (t - start) / (end - start), phase
            start = end
        raise AssertionError("unreachable")

    def _value(self, name: str, g: int) -> float:
        return self.optimizer.param_groups[g][self._keys[name]]

    def _closed(self, g: int, x: float, t: int) -> float:
        pct, phase = self._phase(t)
        return self._anneal(self._value(phase[1], g), self._value(phase[2], g), pct)

    def _after(self, t: int) -> None:
        if not self.cycle_momentum:
            return
        pct, phase = self._phase(t)
        for g, group in enumerate(self.optimizer.param_groups):
            value = self._anneal(self._value(phase[3], g), self._value(phase[4], g), pct)
            set_value(group, self.momentum_key, value)

    def _check_step(self, t: int) -> None:
        if t > self.total_steps:
            raise ValueError(
                f"Tried to step {t} times. "
                f"The specified number of total steps is {self.total_steps}"
            )
