"""SequentialLR and ChainedScheduler: schedules built from other schedules."""

from __future__ import annotations

import copy
from bisect import bisect_right
from collections.abc import Sequence
from typing import Any

from ._base import LRScheduler, check_last_epoch, check_optimizer, get_value, set_value
from ._plateau import ReduceLROnPlateau

__all__ = ["SequentialLR", "ChainedScheduler"]


def _check_children(name: str, optimizer: Any, schedulers: Sequence[Any], empty_msg: str) -> None:
    if len(schedulers) < 1:
        raise ValueError(empty_msg)
    for i, sched in enumerate(schedulers):
        if not hasattr(sched, "optimizer"):
            raise TypeError(f"{name} at index {i} should have `optimizer` as its attribute.")
        if isinstance(sched, ReduceLROnPlateau):
            raise ValueError(
                f"{name} does not support `ReduceLROnPlateau` scheduler as it "
                "requires additional kwargs to be specified when calling `step`, "
                f"but got one at index {i} in the given schedulers sequence."
            )
        if sched.optimizer is not optimizer:
            raise ValueError(
                f"{name} expects all schedulers to belong to the same optimizer, but "
                f"got scheduler {type(sched).__name__} at index {i} has "
                f"{sched.optimizer}, which is different from {type(optimizer).__name__}."
            )


def _undo_initial_step(sched: Any) -> None:
    for child in getattr(sched, "_schedulers", ()):
        _undo_initial_step(child)
    if not hasattr(sched, "_schedulers") and hasattr(sched, "last_epoch"):
        sched.last_epoch -= 1


class _Composite:
    """state_dict handling shared by the two composites."""

    optimizer: Any
    _schedulers: list[Any]
    _last_lr: list[float]

    def state_dict(self) -> dict[str, Any]:
        """Return own state plus each child's ``state_dict()`` under ``"_schedulers"``."""
        state = {
            k: copy.deepcopy(v)
            for k, v in vars(self).items()
            if k not in ("optimizer", "_schedulers", "_written")
        }
        state["_schedulers"] = [s.state_dict() for s in self._schedulers]
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Load a state from :meth:`state_dict` (children included).

        The saved ``get_last_lr()`` is restored as saved, as torch does.
        """
        state = dict(state_dict)
        children = state.pop("_schedulers")
        vars(self).update(copy.deepcopy(state))
        for sched, child_state in zip(self._schedulers, children):
            sched.load_state_dict(child_state)
        self._adopt()

    def _adopt(self) -> None:
        pass


class SequentialLR(_Composite):
    """Run ``schedulers[i]`` between ``milestones[i-1]`` and ``milestones[i]``.

    At construction the groups are reset to their initial values and the first
    scheduler starts at step 0; at each milestone the next scheduler restarts
    from step 0 (from the base values, so a warmup followed by a decay is
    continuous). Typical use: ``SequentialLR(opt, [LinearLR(...), CosineAnnealingLR(...)],
    milestones=[warmup])``.

    Parameters
    ----------
    optimizer : object
        Optimizer with ``param_groups``; every scheduler must wrap this object.
    schedulers : list of schedulers
        At least one; not ReduceLROnPlateau.
    milestones : list of int
        ``len(schedulers) - 1`` strictly increasing steps.
    last_epoch : int, default -1
        Index of the last step.

    Raises
    ------
    ValueError
        For no schedulers, a ReduceLROnPlateau, schedulers of another optimizer,
        or milestones of the wrong number or not strictly increasing.
    TypeError
        If a scheduler has no ``optimizer`` attribute.
    """

    def __init__(
        self,
        optimizer: Any,
        schedulers: list[Any],
        milestones: list[int],
        last_epoch: int = -1,
    ) -> None:
        check_optimizer(optimizer)
        check_last_epoch(last_epoch)
        name = type(self).__name__
        _check_children(
            name,
            optimizer,
            schedulers,
            f"{name} expects at least one scheduler, but got no scheduler.",
        )
        if len(milestones) != len(schedulers) - 1:
            raise ValueError(
                "Sequential Schedulers expects number of schedulers provided to be one "
                f"more than the number of milestone points, but got number of schedulers "
                f"{len(schedulers)} and the number of milestones to be equal to "
                f"{len(milestones)}"
            )
        ms = list(milestones)
        if any(not isinstance(m, int) for m in ms) or any(b <= a for a, b in zip(ms, ms[1:])):
            raise ValueError(f"milestones must be strictly increasing integers, but got {ms}")
        self.optimizer = optimizer
        self._schedulers = list(schedulers)
        self._milestones = ms
        self.last_epoch = last_epoch + 1

        # Start from the initial values, as if the children had never stepped.
        for key in dict.fromkeys(getattr(s, "hyperparam", "lr") for s in schedulers):
            for group in optimizer.param_groups:
                if f"initial_{key}" in group:
                    set_value(group, key, group[f"initial_{key}"])
        for sched in self._schedulers:
            _undo_initial_step(sched)
        first = self._schedulers[bisect_right(ms, 0)]
        first._initial_step()
        self._last_lr = first.get_last_lr()

    def step(self) -> None:
        """Advance one step: step the active scheduler, or restart it at its milestone.

        Raises
        ------
        ValueError
            If the active scheduler refuses the step (OneCycleLR past its end);
            nothing changes then.
        """
        t = self.last_epoch + 1
        idx = bisect_right(self._milestones, t)
        sched = self._schedulers[idx]
        if idx > 0 and self._milestones[idx - 1] == t:
            if hasattr(sched, "_restart"):
                sched._restart()
            else:  # a torch scheduler
                sched._update_lr(0)
        else:
            sched.step()
        self.last_epoch = t
        self._last_lr = sched.get_last_lr()

    def get_last_lr(self) -> list[float]:
        """Values last written by the active child, one per group."""
        return list(self._last_lr)


class ChainedScheduler(_Composite):
    """Step several schedulers together; their effects compose like torch's.

    In torch the multiplicative schedulers (StepLR, MultiStepLR, ConstantLR,
    LinearLR, ExponentialLR, PolynomialLR, MultiplicativeLR, CosineAnnealingLR with
    ``eta_min=0``) multiply the current value by a ratio, so chained their factors
    multiply, while absolute ones (LambdaLR, CyclicLR, OneCycleLR,
    CosineAnnealingWarmRestarts, WarmupCosine, WarmupStableDecay) overwrite what came
    before them, after which later multiplicative schedulers apply only their
    ratio for the current step. Both rules are closed forms of the step count, so
    the chain is evaluated in closed form at every step: torch's values without
    its drift. Two cases replay torch's recursion (``x * f(t) / f(t-1)`` per child)
    instead: a chain holding a CosineAnnealingLR (torch's chained cosine depends on
    history: at its minimum it wipes the other factors), and groups changed from
    outside since the last step (manual edits are kept, as in torch).

    Children may schedule different hyperparameters; each key is chained separately.

    Parameters
    ----------
    schedulers : sequence of schedulers
        At least one; all on one optimizer; not ReduceLROnPlateau.
    optimizer : object, optional
        Defaults to ``schedulers[0].optimizer``.

    Raises
    ------
    ValueError
        For no schedulers, a ReduceLROnPlateau or schedulers of different optimizers.
    TypeError
        If a scheduler has no ``optimizer`` attribute.
    """

    def __init__(self, schedulers: Sequence[Any], optimizer: Any | None = None) -> None:
        name = type(self).__name__
        if len(schedulers) < 1:
            raise ValueError(
                f"{name} expects at least one scheduler to be chained, but got no scheduler."
            )
        optimizer = optimizer if optimizer is not None else schedulers[0].optimizer
        _check_children(name, optimizer, schedulers, "")
        self.optimizer = optimizer
        self._schedulers = list(schedulers)
        self._closed_form = all(isinstance(s, LRScheduler) for s in schedulers)
        # Torch's chained cosine depends on history (its minimum wipes the other
        # factors), so chains holding one replay torch's recursion instead.
        self._foldable = self._closed_form and all(s._chain_kind != "recursive" for s in schedulers)
        self._keys = list(dict.fromkeys(getattr(s, "hyperparam", "lr") for s in schedulers))
        self._recursive = {k: [False] * len(optimizer.param_groups) for k in self._keys}
        self._adopt()

        self._last_lr = self._lrs()

    def _lrs(self) -> list[float]:
        # Torch's get_last_lr() of a chain is the groups' "lr", whatever the last
        # child schedules.
        return [g["lr"] for g in self.optimizer.param_groups]

    def get_last_lr(self) -> list[float]:
        """The groups' ``"lr"`` values after the last step, one per group (as torch)."""
        return list(self._last_lr)

    def _adopt(self) -> None:
        groups = self.optimizer.param_groups
        self._written = {k: [get_value(g, k) for g in groups] for k in self._keys}

    def _initial_step(self) -> None:
        # SequentialLR starting with this chain: as in torch, every child steps once
        # from last_epoch -1, outside its initial mode (torch's get_lr at t == 0),
        # and the chain replays torch's recursion from then on.
        n = len(self.optimizer.param_groups)
        for sched in self._schedulers:
            if isinstance(sched, LRScheduler):
                sched._recursive = [True] * n
            sched.step()
        self._adopt()
        self._recursive = {k: [True] * n for k in self._keys}
        self._last_lr = self._lrs()

    def _restart(self) -> None:
        raise NotImplementedError(
            "SequentialLR cannot restart a ChainedScheduler at a milestone (torch 2.13 "
            "raises NotImplementedError there too): put the ChainedScheduler first, or "
            "chain SequentialLRs instead"
        )

    def step(self) -> None:
        """Advance every scheduler one step and write the composed values.

        Raises
        ------
        ValueError
            If a child refuses the step (OneCycleLR past its end); nothing changes then.
        """
        if not self._closed_form:
            # Foreign or composite children: plain torch semantics, in order.
            for sched in self._schedulers:
                sched.step()
            self._last_lr = self._lrs()
            return
        for sched in self._schedulers:
            sched._check_step(sched.last_epoch + 1)
        for sched in self._schedulers:
            sched.last_epoch += 1
            sched._advance(sched.last_epoch)
        groups = self.optimizer.param_groups
        for key in self._keys:
            chain = [s for s in self._schedulers if s.hyperparam == key]
            values: dict[int, list[float]] = {id(s): [] for s in chain}
            for g, group in enumerate(groups):
                current = get_value(group, key)
                if current != self._written[key][g]:
                    self._recursive[key][g] = True  # edited from outside: keep the edit
                closed = self._foldable and not self._recursive[key][g]
                x = chain[0].base_values[g] if closed else current
                fresh = True  # x is base times the telescoped factors so far
                for sched in chain:
                    t = sched.last_epoch
                    if closed and (fresh or sched._chain_kind == "absolute"):
                        x = sched._closed(g, x, t)
                        fresh = fresh and sched._chain_kind == "factor"
                    else:
                        # After an absolute value only this step's ratio applies.
                        x = sched._relative(g, x, t)
                    values[id(sched)].append(x)
                set_value(group, key, x)
                self._written[key][g] = x
            for sched in chain:
                sched._last_lr = values[id(sched)]
                sched._written = list(values[id(sched)])
                sched._after(sched.last_epoch)
        self._last_lr = self._lrs()
