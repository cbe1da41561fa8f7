"""ReduceLROnPlateau: cut the value when a monitored metric stops improving."""

from __future__ import annotations

import copy
import math
import warnings
from typing import Any, Literal, SupportsFloat

from ._base import (
    EPOCH_DEPRECATION_WARNING,
    check_hyperparam,
    check_optimizer,
    check_positive_int,
    get_value,
    set_value,
)

__all__ = ["ReduceLROnPlateau"]


class ReduceLROnPlateau:
    """Multiply the value by ``factor`` after ``patience`` steps without improvement.

    A metric ``a`` improves on the best ``b`` when (``mode``, ``threshold_mode``):
    ``a < b * (1 - threshold)`` (min, rel), ``a < b - threshold`` (min, abs),
    ``a > b * (1 + threshold)`` (max, rel), ``a > b + threshold`` (max, abs).
    A reduction sets ``max(value * factor, min_lr)``, skipped if it would change the
    value by ``eps`` or less, and starts ``cooldown`` steps during which bad steps
    are not counted. Same rules and order as torch; the reduction is relative to the
    group's current value, so it composes with manual edits.

    Parameters
    ----------
    optimizer : object
        Optimizer with ``param_groups``.
    mode : {"min", "max"}, default "min"
    factor : float, default 0.1
        ``< 1``.
    patience : int, default 10
        Bad steps tolerated before a reduction, non-negative.
    threshold : float, default 1e-4
    threshold_mode : {"rel", "abs"}, default "rel"
    cooldown : int, default 0
        Non-negative.
    min_lr : float or list of float, default 0
        Floor, per group if a list.
    eps : float, default 1e-8
    hyperparam : str, default "lr"
        Group key to reduce (``"weight_decay"``, ``"momentum"``, ``"beta1"``, ...).

    Raises
    ------
    ValueError
        For ``factor >= 1``, an unknown mode or threshold mode, negative
        ``patience``/``cooldown``, or a ``min_lr`` list of the wrong length.
    """

    def __init__(
        self,
        optimizer: Any,
        mode: Literal["min", "max"] = "min",
        factor: float = 0.1,
        patience: int = 10,
        threshold: float = 1e-4,
        threshold_mode: Literal["rel", "abs"] = "rel",
        cooldown: int = 0,
        min_lr: list[float] | float = 0,
        eps: float = 1e-8,
        *,
        hyperparam: str = "lr",
    ) -> None:
        if factor >= 1.0:
            raise ValueError("Factor should be < 1.0.")
        check_optimizer(optimizer)
        check_hyperparam(optimizer, hyperparam)
        n = len(optimizer.param_groups)
        if isinstance(min_lr, (list, tuple)):
            if len(min_lr) != n:
                raise ValueError(f"expected {n} min_lrs, got {len(min_lr)}")
            self.min_lrs = list(min_lr)
            self.default_min_lr: float | None = None
        else:
            self.min_lrs = [min_lr] * n
            self.default_min_lr = min_lr
        if mode not in ("min", "max"):
            raise ValueError(f"mode {mode} is unknown!")
        if threshold_mode not in ("rel", "abs"):
            raise ValueError(f"threshold mode {threshold_mode} is unknown!")
        check_positive_int("patience", patience, allow_zero=True)
        check_positive_int("cooldown", cooldown, allow_zero=True)
        self.optimizer = optimizer
        self.hyperparam = hyperparam
        self.mode = mode
        self.factor = factor
        self.patience = patience
        self.threshold = threshold
        self.threshold_mode = threshold_mode
        self.cooldown = cooldown
        self.eps = eps
        self.last_epoch = 0
        self.best = math.inf if mode == "min" else -math.inf
        self.num_bad_epochs = 0
        self.cooldown_counter = 0
        self._last_lr = [get_value(g, hyperparam) for g in optimizer.param_groups]

    @property
    def in_cooldown(self) -> bool:
        """True while bad steps are not being counted after a reduction."""
        return self.cooldown_counter > 0

    def is_better(self, a: float, best: float) -> bool:
        """Whether metric ``a`` improves on ``best`` by more than the threshold."""
        if self.mode == "min":
            if self.threshold_mode == "rel":
                return a < best * (1.0 - self.threshold)
            return a < best - self.threshold
        if self.threshold_mode == "rel":
            return a > best * (self.threshold + 1.0)
        return a > best + self.threshold

    def step(self, metrics: SupportsFloat, epoch: int | None = None) -> None:
        """Record one metric value (e.g. a validation loss) and reduce if due.

        Parameters
        ----------
        metrics : float-like
            The monitored quantity; anything ``float()`` accepts.
        epoch : int, optional
            Deprecated, as in torch (a ``UserWarning`` says so): sets ``last_epoch``.

        Raises
        ------
        RuntimeError
            If a reduction is due, param groups were added since construction and
            ``min_lr`` was given as a list (torch's rule; a scalar ``min_lr`` is
            extended to the new groups).
        """
        current = float(metrics)
        if epoch is None:
            epoch = self.last_epoch + 1
        else:
            warnings.warn(EPOCH_DEPRECATION_WARNING, UserWarning, stacklevel=2)
        self.last_epoch = epoch
        if self.is_better(current, self.best):
            self.best = current
            self.num_bad_epochs = 0
        else:
            self.num_bad_epochs += 1
        if self.in_cooldown:
            self.cooldown_counter -= 1
            self.num_bad_epochs = 0  # bad steps during cooldown do not count
        if self.num_bad_epochs > self.patience:
            self._reduce()
            self.cooldown_counter = self.cooldown
            self.num_bad_epochs = 0
        self._last_lr = [get_value(g, self.hyperparam) for g in self.optimizer.param_groups]

    def _reduce(self) -> None:
        n = len(self.optimizer.param_groups)
        if n != len(self.min_lrs):
            if self.default_min_lr is None:
                raise RuntimeError(
                    f"The number of param groups in the optimizer ({n}) differs from "
                    f"when ReduceLROnPlateau was created ({len(self.min_lrs)}), usually "
                    "because a param group was added: set `min_lrs` to one value per group"
                )
            self.min_lrs = [self.default_min_lr] * n
        for group, floor in zip(self.optimizer.param_groups, self.min_lrs):
            old = float(get_value(group, self.hyperparam))
            new = max(old * self.factor, floor)
            if old - new > self.eps:
                set_value(group, self.hyperparam, new)

    def get_last_lr(self) -> list[float]:
        """Values after the last ``step``, one per param group."""
        return list(self._last_lr)

    def state_dict(self) -> dict[str, Any]:
        """Return the state (counters, best metric, settings) without the optimizer."""
        return {k: copy.deepcopy(v) for k, v in vars(self).items() if k != "optimizer"}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Load a state from :meth:`state_dict`."""
        vars(self).update(copy.deepcopy(state_dict))

    def __repr__(self) -> str:
        return (
            f"ReduceLROnPlateau(mode={self.mode!r}, factor={self.factor}, patience={self.patience})"
        )
