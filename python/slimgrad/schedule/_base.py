"""Shared machinery for the schedulers: the base class and hyperparameter access.

Every scheduler computes its value at step ``t`` in closed form from the values the
optimizer had when the scheduler was created (``initial_<hyperparam>`` in each group,
``initial_lr`` for the learning rate, as torch does). Torch's "chainable" schedulers
instead multiply the *current* group value by a ratio each step, which drifts and lets
two schedulers on one optimizer compose. We keep both observable behaviours:

* if the group value is still the one this scheduler wrote last, nothing else touched
  it and the new value is the closed form ``f(base, t)``: no drift;
* otherwise someone else changed it (another scheduler, or the user by hand) and the
  scheduler applies torch's relative update to the current value instead.
"""

from __future__ import annotations

import copy
import types
import warnings
from collections.abc import Callable, Sequence
from typing import Any

__all__ = ["LRScheduler"]

_BETA1 = "beta1"

EPOCH_DEPRECATION_WARNING = (
    "The epoch parameter in `scheduler.step()` is deprecated (as in torch): call "
    "`scheduler.step()` without arguments. While it is accepted, a given epoch sets "
    "last_epoch and the value is computed in closed form where the scheduler has one."
)


def get_value(group: dict[str, Any], key: str) -> float:
    """Read hyperparameter ``key`` of a param group (``"beta1"`` is ``betas[0]``)."""
    if key == _BETA1:
        return group["betas"][0]
    return group[key]


def set_value(group: dict[str, Any], key: str, value: float) -> None:
    """Write hyperparameter ``key`` of a param group, keeping ``betas[1:]``."""
    if key == _BETA1:
        # Optimizers read betas as a tuple; rebuild it rather than mutate in place.
        group["betas"] = (value, *tuple(group["betas"])[1:])
    else:
        group[key] = value


def has_value(group: dict[str, Any], key: str) -> bool:
    if key == _BETA1:
        return "betas" in group
    return key in group


def check_optimizer(optimizer: Any) -> None:
    groups = getattr(optimizer, "param_groups", None)
    if not isinstance(groups, list) or not all(isinstance(g, dict) for g in groups):
        raise TypeError(f"{type(optimizer).__name__} is not an Optimizer")


def check_hyperparam(optimizer: Any, key: str) -> None:
    if not isinstance(key, str):
        raise TypeError(f"hyperparam must be a str, but got {type(key).__name__}")
    for i, group in enumerate(optimizer.param_groups):
        if not has_value(group, key):
            name = "betas" if key == _BETA1 else key
            raise ValueError(
                f"hyperparam {key!r} is not in optimizer.param_groups[{i}] (no {name!r} key)"
            )


def per_group(name: str, optimizer: Any, value: Any) -> list[Any]:
    """Broadcast a scalar to one value per param group, or check a list's length."""
    n = len(optimizer.param_groups)
    if isinstance(value, (list, tuple)):
        if len(value) != n:
            raise ValueError(
                f"{name} must have the same length as optimizer.param_groups. "
                f"{name} has {len(value)} values, param_groups has {n}."
            )
        return list(value)
    return [value] * n


def check_last_epoch(last_epoch: int) -> None:
    if not isinstance(last_epoch, int) or last_epoch < -1:
        raise ValueError(f"Expected integer last_epoch >= -1, but got {last_epoch}")


def check_args(optimizer: Any, last_epoch: int, hyperparam: str) -> None:
    """The checks every scheduler constructor starts with, before any write."""
    check_optimizer(optimizer)
    check_last_epoch(last_epoch)
    check_hyperparam(optimizer, hyperparam)


def check_positive_int(name: str, value: Any, allow_zero: bool = False) -> None:
    ok = isinstance(value, int) and not isinstance(value, bool)
    ok = ok and (value >= 0 if allow_zero else value > 0)
    if not ok:
        kind = "non-negative" if allow_zero else "positive"
        raise ValueError(f"Expected {kind} integer {name}, but got {value}")


def callable_state(fns: Sequence[Callable[..., Any]]) -> list[dict[str, Any] | None]:
    """Torch's convention: save a callable object's ``__dict__``, never a function."""
    return [None if isinstance(fn, types.FunctionType) else dict(vars(fn)) for fn in fns]


def load_callable_state(
    fns: Sequence[Callable[..., Any]], states: Sequence[dict[str, Any] | None]
) -> None:
    for fn, state in zip(fns, states):
        if state is not None:
            vars(fn).update(state)


class LRScheduler:
    """Base class: a closed-form schedule of one hyperparameter per param group.

    Parameters
    ----------
    optimizer : object
        Anything with ``param_groups``, a list of dicts (``slimgrad.optim`` or
        ``torch.optim`` optimizers, or a stand-in).
    last_epoch : int, default -1
        Index of the last step taken; ``-1`` starts a new schedule and stores
        ``initial_<hyperparam>`` in each group (if absent). A value ``>= 0``
        resumes, and requires ``initial_<hyperparam>`` to be present.
    hyperparam : str, default "lr"
        Group key to schedule: ``"lr"``, ``"momentum"``, ``"weight_decay"``,
        ``"beta1"`` (the first entry of ``betas``) or any other key every group has.

    Attributes
    ----------
    last_epoch : int
        Number of ``step()`` calls since the start of the schedule (0 after construction).
    base_values : list of float
        The per-group starting values the closed forms are computed from
        (``base_lrs`` is an alias, as in torch).

    Raises
    ------
    TypeError
        If ``optimizer`` has no ``param_groups`` list.
    ValueError
        If ``hyperparam`` is missing from a group or ``last_epoch < -1``.
    KeyError
        If resuming (``last_epoch >= 0``) and a group lacks ``initial_<hyperparam>``.
    """

    # How torch's version composes in a ChainedScheduler: "absolute" (overwrites),
    # "factor" (multiplies by a ratio) or "recursive" (history-dependent).
    _chain_kind = "absolute"
    # Attributes that never go into state_dict().
    _not_state: tuple[str, ...] = ("optimizer",)

    # False where torch has no closed form for ``step(epoch)`` and applies its
    # recursion to the current value instead (MultiplicativeLR).
    _epoch_closed = True
    # See _keeps_initial.
    _initial_keeps = False

    def __init__(self, optimizer: Any, last_epoch: int = -1, *, hyperparam: str = "lr"):
        check_args(optimizer, last_epoch, hyperparam)
        initial = f"initial_{hyperparam}"
        if last_epoch != -1:
            for i, group in enumerate(optimizer.param_groups):
                if initial not in group:
                    raise KeyError(
                        f"param {initial!r} is not specified in param_groups[{i}] "
                        "when resuming scheduler with last_epoch >= 0."
                    )
        self.optimizer = optimizer
        self.hyperparam = hyperparam
        if last_epoch == -1:
            for group in optimizer.param_groups:
                group.setdefault(initial, get_value(group, hyperparam))
        self.base_values: list[float] = [g[initial] for g in optimizer.param_groups]
        self.last_epoch = last_epoch
        self._written: list[float | None] = [None] * len(optimizer.param_groups)
        # Per group: True once something else changed the value; from then on the
        # value depends on history and only torch's recursion reproduces it.
        self._recursive = [False] * len(optimizer.param_groups)
        self._last_lr: list[float] = []
        self._initial_step()

    # -- the per-scheduler formulas -------------------------------------------------

    def _closed(self, g: int, x: float, t: int) -> float:
        """Value of group ``g`` at step ``t`` when the schedule starts from ``x``."""
        raise NotImplementedError

    def _relative(self, g: int, x: float, t: int) -> float:
        """Torch's ``get_lr`` from the current value ``x`` at step ``t`` (default: absolute).

        Outside torch's initial mode, also at ``t == 0`` (a ChainedScheduler that
        SequentialLR starts steps its children from ``last_epoch == -1``).
        """
        return self._closed(g, self.base_values[g], t)

    def _keeps_initial(self, t: int) -> bool:
        """Whether torch keeps the current value at construction (initial mode) at ``t``.

        ExponentialLR, MultiplicativeLR, PolynomialLR and CosineAnnealingLR always do
        (``_initial_keeps``), LinearLR for ``t > 0``: built with ``last_epoch >= 0`` on
        a resumed optimizer, they leave its value alone and continue from it.
        """
        return self._initial_keeps

    def _advance(self, t: int) -> None:
        """Hook: ``last_epoch`` just became ``t`` (for schedules with running state)."""

    def _check_step(self, t: int) -> None:
        """Hook: raise before a step to ``t`` changes anything."""

    def _after(self, t: int) -> None:
        """Hook: the main values for step ``t`` are written (momentum cycling)."""

    # -- driving ----------------------------------------------------------------------

    def _initial_step(self) -> None:
        n = len(self.optimizer.param_groups)
        self._written, self._recursive = [None] * n, [False] * n
        self.last_epoch += 1
        self._advance(self.last_epoch)
        self._apply(self.last_epoch, initial=True)

    def _apply(self, t: int, initial: bool = False) -> None:
        key = self.hyperparam
        values = []
        for g, group in enumerate(self.optimizer.param_groups):
            current = get_value(group, key)
            expected = self._written[g]
            if expected is None:  # initial step: the group should hold the base value
                expected = self.base_values[g]
            if current != expected:
                self._recursive[g] = True
            if initial and (t > 0 or self._keeps_initial(t)):
                # Torch's initial step: a resumed scheduler (t > 0) updates the
                # current value by its recursion (or keeps it), then goes on from there.
                value = current if self._keeps_initial(t) else self._relative(g, current, t)
                if value != self._closed(g, self.base_values[g], t):
                    self._recursive[g] = True
            elif self._recursive[g]:
                value = self._relative(g, current, t)
            else:
                value = self._closed(g, self.base_values[g], t)
            set_value(group, key, value)
            self._written[g] = value
            values.append(value)
        self._last_lr = values
        self._after(t)

    def _jump(self, t: int) -> None:
        """Torch's ``_update_lr(t)``: set ``last_epoch = t`` and write the closed form.

        Where the class has no closed form (``_epoch_closed`` False) torch applies its
        recursion to the current value, and so do we.
        """
        self.last_epoch = t
        key, closed = self.hyperparam, self._epoch_closed
        values = []
        for g, group in enumerate(self.optimizer.param_groups):
            if closed:
                value = self._closed(g, self.base_values[g], t)
            else:
                value = self._relative(g, get_value(group, key), t)
            set_value(group, key, value)
            self._written[g] = value
            self._recursive[g] = not closed
            values.append(value)
        self._last_lr = values
        self._after(t)

    def _restart(self) -> None:
        """Jump to step 0 (SequentialLR at a milestone, as torch's ``_update_lr(0)``)."""
        self._jump(0)

    def step(self, epoch: int | None = None) -> None:
        """Advance one step and write the new value into every param group.

        Call it once after each ``optimizer.step(...)``.

        Parameters
        ----------
        epoch : int, optional
            Deprecated, as in torch (a ``UserWarning`` says so): sets ``last_epoch``
            to ``epoch`` and writes the closed form for that step (MultiplicativeLR,
            which has none, multiplies the current value by ``lr_lambda(epoch)``).

        Raises
        ------
        ValueError
            If the schedule refuses the step (OneCycleLR past ``total_steps``);
            nothing changes then.
        """
        if epoch is not None:
            warnings.warn(EPOCH_DEPRECATION_WARNING, UserWarning, stacklevel=2)
            self._check_step(epoch)
            self._jump(epoch)
            return
        self._check_step(self.last_epoch + 1)
        self.last_epoch += 1
        self._advance(self.last_epoch)
        self._apply(self.last_epoch)

    def get_last_lr(self) -> list[float]:
        """Return the values last written, one per param group.

        Returns
        -------
        list of float
            Despite the torch name, these are values of ``hyperparam``.
        """
        return list(self._last_lr)

    @property
    def base_lrs(self) -> list[float]:
        """Alias of ``base_values`` (torch's name)."""
        return self.base_values

    # -- state --------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """Return the scheduler state as a dict of plain Python values.

        The optimizer is not included, nor are functions given as lambdas
        (a callable object contributes its ``__dict__``, as in torch).
        """
        return {
            k: copy.deepcopy(v)
            for k, v in vars(self).items()
            if k not in self._not_state and k != "_written"
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Load a state from :meth:`state_dict`.

        The next ``step()`` continues the closed form from the loaded ``last_epoch``
        whatever the optimizer's current values are (load the optimizer state too if
        the value for the current step must be in the groups before that).

        Parameters
        ----------
        state_dict : dict
            As returned by :meth:`state_dict`.
        """
        vars(self).update(copy.deepcopy(state_dict))
        self._adopt()

    def _adopt(self) -> None:
        # Treat the groups' current values as ours so the next step is closed form.
        self._written = [get_value(g, self.hyperparam) for g in self.optimizer.param_groups]

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(hyperparam={self.hyperparam!r}, last_epoch={self.last_epoch})"
        )


class FactorScheduler(LRScheduler):
    """A schedule ``base * factor(t)``; relative update ``x * factor(t) / factor(t-1)``.

    These are torch's multiplicative "chainable" schedulers: in a ChainedScheduler
    their factors multiply.
    """

    _chain_kind = "factor"

    def _factor(self, g: int, t: int) -> float:
        raise NotImplementedError

    def _closed(self, g: int, x: float, t: int) -> float:
        return x * self._factor(g, t)

    def _relative(self, g: int, x: float, t: int) -> float:
        new = self._factor(g, t)
        old = self._factor(g, t - 1) if t > 0 else 1.0
        if new == old:
            return x
        if old == 0.0:
            # Torch would divide by zero here; the closed form is the only sane value.
            return self.base_values[g] * new
        return x * (new / old)
