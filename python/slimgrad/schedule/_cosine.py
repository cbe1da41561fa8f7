"""CosineAnnealingLR and CosineAnnealingWarmRestarts, with torch's values."""

from __future__ import annotations

import math
from typing import Any

from ._base import LRScheduler, check_optimizer, check_positive_int, per_group

__all__ = ["CosineAnnealingLR", "CosineAnnealingWarmRestarts"]


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
    last_epoch, hyperparam
        As for :class:`LRScheduler` (defaults -1 and ``"lr"``).

    Raises
    ------
    ValueError
        If ``T_max`` is not a positive integer or ``eta_min`` has the wrong length.
    """

    _initial_keeps = True
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
        if (t - 1 - self.T_max) % (2 * self.T_max) == 0:
            # Leaving the minimum, where the ratio below would divide by zero.
            return x + (self.base_values[g] - eta) * (1 - math.cos(math.pi / self.T_max)) / 2
        return eta + (x - eta) * self._cos1(t) / self._cos1(t - 1)


class CosineAnnealingWarmRestarts(LRScheduler):
    """Cosine annealing restarted every ``T_i`` steps, ``T_i = T_0 * T_mult ** i``.

    Value ``eta_min + (base - eta_min) * (1 + cos(pi * T_cur / T_i)) / 2`` where
    ``T_cur`` counts the steps since the last restart. As in torch it is a counter
    (an attribute you may set by hand; each step adds one and wraps at ``T_i``),
    and ``step(epoch)`` recomputes it from ``epoch``.

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
    last_epoch, hyperparam
        As for :class:`LRScheduler` (defaults -1 and ``"lr"``).

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
        self.T_cur = last_epoch
        super().__init__(optimizer, last_epoch, hyperparam=hyperparam)

    def _advance(self, t: int) -> None:
        # Torch's counter: T_cur moves by one and wraps once per step, so a T_cur
        # set by hand is honoured; t == 0 is a fresh start (from last_epoch -1).
        if t == 0:
            self.T_i, self.T_cur = self.T_0, 0
            return
        self.T_cur += 1
        if self.T_cur >= self.T_i:
            self.T_cur %= self.T_i
            self.T_i *= self.T_mult

    def step(self, epoch: float | None = None) -> None:
        """Advance one step, or jump to ``epoch`` (which may be fractional).

        As in torch, ``step(epoch)`` is this scheduler's supported way to move by
        fractions of an epoch (no deprecation warning): ``T_cur`` and ``T_i`` are
        found from ``epoch`` (exactly, by subtracting whole periods) and
        ``last_epoch`` becomes ``floor(epoch)``.

        Parameters
        ----------
        epoch : float, optional
            Non-negative.

        Raises
        ------
        ValueError
            For a negative ``epoch``.
        """
        if epoch is None:
            super().step()
            return
        if epoch < 0:
            raise ValueError(f"Expected non-negative epoch, but got {epoch}")
        period, cur = self.T_0, epoch
        while cur >= period:  # O(log epoch) iterations for T_mult > 1
            cur -= period
            period *= self.T_mult
            if self.T_mult == 1:
                cur %= period
        self.T_i, self.T_cur = period, cur
        self._jump(math.floor(epoch))

    def _closed(self, g: int, x: float, t: int) -> float:
        eta = self.eta_min
        return (
            eta + (self.base_values[g] - eta) * (1 + math.cos(math.pi * self.T_cur / self.T_i)) / 2
        )
