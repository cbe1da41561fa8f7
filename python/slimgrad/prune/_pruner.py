"""Gradual pruning during training: the Zhu & Gupta schedule and the Pruner.

Zhu & Gupta, "To prune, or not to prune" (2017): starting at step ``t0`` and
every ``dt`` steps until ``t0 + n dt``, the target sparsity is

    s_t = s_f + (s_i - s_f) * (1 - (t - t0) / (n dt)) ** power,   power = 3,

which prunes fast early (when many weights are redundant) and slowly near
the end. Between updates the masks persist and are applied after every
optimizer step.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from .. import _core
from ._masks import (
    _check_fraction,
    _count,
    _select,
    nm_mask,
    structured_mask,
)

__all__ = ["PolynomialSchedule", "Pruner", "SparsityReport", "sensitivity"]

_METHODS = ("magnitude", "global", "nm", "structured")
_SCHEDULE_ARGS = (
    "final_sparsity",
    "begin_step",
    "end_step",
    "initial_sparsity",
    "frequency",
    "power",
)


def _check_int(value: object, name: str, low: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name}: expected an int, got {type(value).__name__}")
    if int(value) < low:
        raise ValueError(f"{name}: expected an int >= {low}, got {value}")
    return int(value)


class PolynomialSchedule:
    """Target sparsity per step: Zhu & Gupta's polynomial (cubic) ramp.

    Parameters
    ----------
    final_sparsity : float
        ``s_f`` in ``[0, 1]``, reached at ``end_step`` and kept after.
    begin_step, end_step : int
        ``t0`` and ``t0 + n dt`` (``end_step >= begin_step >= 0``); masks are
        first computed at ``begin_step``; no pruning before it.
    initial_sparsity : float
        ``s_i`` in ``[0, 1]`` (default 0), the target at ``begin_step``.
    frequency : int
        ``dt >= 1``: masks are recomputed at ``begin_step + j * frequency``
        and at ``end_step``.
    power : float
        The exponent (3 in the paper; 1 is a linear ramp).
    """

    def __init__(
        self,
        final_sparsity: float,
        begin_step: int = 0,
        end_step: int = 0,
        initial_sparsity: float = 0.0,
        frequency: int = 1,
        power: float = 3.0,
    ) -> None:
        self.initial_sparsity = _check_fraction(initial_sparsity, "initial_sparsity")
        self.final_sparsity = _check_fraction(final_sparsity, "final_sparsity")
        self.begin_step = _check_int(begin_step, "begin_step")
        self.end_step = _check_int(end_step, "end_step", self.begin_step)
        self.frequency = _check_int(frequency, "frequency", 1)
        if isinstance(power, bool) or not isinstance(power, numbers.Real) or not power > 0:
            raise ValueError(f"power: expected a number > 0, got {power!r}")
        self.power: float = float(power)

    def sparsity(self, step: int) -> float:
        """Target sparsity at ``step`` (``s_i`` before the ramp, ``s_f`` after)."""
        if self.end_step == self.begin_step:  # one-shot
            return self.final_sparsity if step >= self.begin_step else self.initial_sparsity
        if step <= self.begin_step:
            return self.initial_sparsity
        if step >= self.end_step:
            return self.final_sparsity
        frac = (step - self.begin_step) / (self.end_step - self.begin_step)
        s_i, s_f = self.initial_sparsity, self.final_sparsity
        return s_f + (s_i - s_f) * (1.0 - frac) ** self.power

    def is_update(self, step: int) -> bool:
        """Whether masks are recomputed at ``step``."""
        if not self.begin_step <= step <= self.end_step:
            return False
        return step == self.end_step or (step - self.begin_step) % self.frequency == 0

    def __repr__(self) -> str:
        return (
            f"PolynomialSchedule(final_sparsity={self.final_sparsity}, "
            f"begin_step={self.begin_step}, "
            f"end_step={self.end_step}, initial_sparsity={self.initial_sparsity}, "
            f"frequency={self.frequency}, power={self.power})"
        )


@dataclass
class SparsityReport:
    """Fraction of pruned entries per array (by its mask) and over all arrays."""

    per_array: dict
    total: float

    def __str__(self) -> str:
        width = max([len(str(k)) for k in self.per_array] + [5])
        rows = [f"{str(k):<{width}}  {v:7.2%}" for k, v in self.per_array.items()]
        return "\n".join([*rows, f"{'total':<{width}}  {self.total:7.2%}"])


def _named(params: object) -> tuple[list, list, list]:
    """(keys, arrays, display names) of a dict or a list of arrays."""
    if isinstance(params, Mapping):
        keys = list(params)
        names = [f"params[{k!r}]" for k in keys]
    elif isinstance(params, Sequence) and not isinstance(params, (str, bytes)):
        keys = list(range(len(params)))
        names = [f"params[{k}]" for k in keys]
    else:
        raise TypeError(f"params: expected a dict or a list of arrays, got {type(params).__name__}")
    arrays = [params[k] for k in keys]
    for a, name in zip(arrays, names):
        if not isinstance(a, np.ndarray):
            raise TypeError(f"{name}: expected an ndarray, got {type(a).__name__}")
    return keys, arrays, names


def _is_moment(v: np.ndarray, w: np.ndarray) -> bool:
    """Whether the optimizer state array ``v`` holds one value per element of ``w``.

    Float moments have ``w``'s shape; integer arrays are 8-bit (or wider)
    codes of quantized moments, one per element, in any shape (AdamW8bit:
    int8 / uint8 of the param's shape; flat layouts count too). Their code
    0 decodes to 0, so zeroing a code zeroes the moment. Block scales
    (float, one per block) have another size and are left alone, and so are
    0-d integer arrays (counters such as a step kept as an array, which
    would otherwise match a one-element parameter).
    """
    if v.dtype.kind in "iu":
        return v.ndim > 0 and v.size == w.size
    return v.shape == w.shape and (v.dtype.kind == "f" or v.dtype.name == "bfloat16")


def _check_optimizer_holds(optimizer: object, arrays: list, names: list) -> None:
    """An optimizer with ``param_groups`` must step every pruned array (same memory):
    otherwise its moments are not the ones pruned and keep moving the weights."""
    groups = getattr(optimizer, "param_groups", None)
    if not isinstance(groups, list):
        return  # duck-typed: only a state mapping
    held = set()
    for g in groups:
        ps = g.get("params", []) if isinstance(g, Mapping) else []
        for p in ps.values() if isinstance(ps, Mapping) else ps:
            if isinstance(p, np.ndarray):
                held.add((p.__array_interface__["data"][0], p.shape, p.dtype.str))
    for a, name in zip(arrays, names):
        if (a.__array_interface__["data"][0], a.shape, a.dtype.str) not in held:
            raise ValueError(
                f"optimizer: does not hold {name} (a {a.dtype} array of shape {a.shape}); pass "
                "the optimizer that steps these arrays, so their moments are pruned with them"
            )


class Pruner:
    """Prunes parameters gradually while training and keeps them pruned.

    Parameters
    ----------
    params : dict of name to ndarray, or list of ndarrays
        The arrays to prune (pass only the weights you want pruned, e.g. the
        matrices and not the biases). float16 / bfloat16 / float32 / float64,
        C-contiguous, native byte order and writable: they are zeroed in
        place, never copied. Checked here, with the messages ``step()``
        would give.
    method : {"magnitude", "global", "nm", "structured"}
        ``magnitude``: each array to the target sparsity; ``global``: one
        magnitude threshold over all arrays; ``nm``: N:M along ``axis``
        (default -1), computed once at the first update; ``structured``:
        whole slices along ``axis`` (default 0) by L``norm`` norm.
    schedule : PolynomialSchedule, dict, float or None
        When and how much: a schedule, the keyword arguments of one, or a
        constant sparsity in ``[0, 1]`` (one-shot at step 0). ``None`` with
        ``nm`` prunes at step 0.
    optimizer : object, optional
        Duck-typed: an object with a ``state`` mapping. For the parameter
        with key ``k`` (dict name, or list index) at position ``i``,
        ``optimizer.state[k]`` (else ``optimizer.state[i]``), if present,
        is a dict; each of its values that is an ndarray holding one value
        per element of the parameter is zeroed at the pruned positions
        together with the weight, so momentum cannot move a pruned weight
        off zero. That is: float arrays of the parameter's shape
        (``exp_avg``, ``exp_avg_sq``, ``max_exp_avg_sq``,
        ``momentum_buffer``, ``master``, ...), and integer arrays with as
        many elements as the parameter, in any shape but 0-d (C order): the
        codes of quantized moments, e.g. :class:`~slimgrad.optim.AdamW8bit`'s
        int8 ``exp_avg`` and uint8 ``exp_avg_sq``, whose code 0 decodes to 0
        whatever the block scale. Scalars, 0-d arrays and arrays of other
        sizes (block scales, factored second moments) are left alone. Looked up at every
        step (state created lazily by the first optimizer step is found);
        those arrays must be writable and C-contiguous (checked before
        anything is zeroed).
    n, m : int
        The N:M pattern (default 2:4).
    axis : int, optional
        Group axis for ``nm`` (default -1), slice axis for ``structured``
        (default 0).
    norm : {1, 2}
        Norm for ``structured``.

    Raises
    ------
    TypeError
        ``params`` not a dict or list of arrays; a parameter not a
        C-contiguous native float16 / bfloat16 / float32 / float64 array
        (named ``params['fc1.weight']`` or ``params[0]``); ``schedule`` of
        the wrong type or a dict with unknown keys.
    ValueError
        Unknown ``method``; a read-only parameter; ``schedule`` or a
        schedule argument out of range (the message names it); for
        ``nm``, an axis not divisible by ``m``.

    Notes
    -----
    Call ``step()`` after each optimizer step. At a schedule update the
    masks are recomputed from the current weights (weights pruned before are
    pruned again first, so nothing is ever revived); at every step, one
    fused C++ pass zeroes each weight and its optimizer moments where its
    mask is False.
    """

    def __init__(
        self,
        params: Mapping | Sequence,
        method: str = "magnitude",
        schedule: PolynomialSchedule | Mapping | float | None = None,
        optimizer: object = None,
        *,
        n: int = 2,
        m: int = 4,
        axis: int | None = None,
        norm: int = 1,
    ) -> None:
        if method not in _METHODS:
            expected = ", ".join(map(repr, _METHODS))
            raise ValueError(f"method: expected one of {expected}, got {method!r}")
        self.keys, self.arrays, self.names = _named(params)
        # The weights are zeroed in place at every step: check them now, with
        # the messages step() would give, rather than steps into training.
        _core.prune.check_weights_(self.arrays, self.names)
        self.method = method
        if isinstance(schedule, PolynomialSchedule):
            self.schedule = schedule
        elif isinstance(schedule, Mapping):
            unknown = [k for k in schedule if k not in _SCHEDULE_ARGS]
            if unknown:
                raise TypeError(
                    f"schedule: unknown keys {unknown}; a PolynomialSchedule "
                    f"takes {', '.join(_SCHEDULE_ARGS)}"
                )
            self.schedule = PolynomialSchedule(**schedule)
        elif schedule is None and method == "nm":
            self.schedule = PolynomialSchedule(0.5)
        elif isinstance(schedule, numbers.Real) and not isinstance(schedule, bool):
            level = _check_fraction(schedule, "schedule")
            self.schedule = PolynomialSchedule(level, 0, 0, initial_sparsity=level)
        else:
            raise TypeError(
                "schedule: expected a PolynomialSchedule, its keyword arguments as a "
                f"dict, or a constant sparsity, got {type(schedule).__name__}"
            )
        _check_optimizer_holds(optimizer, self.arrays, self.names)
        self.optimizer = optimizer
        self.n, self.m, self.norm = n, m, norm
        self.axis = axis if axis is not None else (-1 if method == "nm" else 0)
        if method == "nm":
            for a, name in zip(self.arrays, self.names):  # fail now, not at step begin_step
                if a.ndim == 0 or a.shape[self.axis] % m:
                    raise ValueError(
                        f"{name}: shape {a.shape} has no axis {self.axis} divisible by m={m}"
                    )
        self.masks: dict | None = None
        self.step_count = 0

    # -- masks ---------------------------------------------------------------
    def _compute_masks(self, s: float) -> list:
        old = None if self.masks is None else [self.masks[k] for k in self.keys]
        if self.method == "global":
            total = sum(a.size for a in self.arrays)
            return _select(self.arrays, self.names, _count(s, total), old)
        if self.method == "magnitude":
            return [
                _select([a], [name], _count(s, a.size), None if old is None else [old[i]])[0]
                for i, (a, name) in enumerate(zip(self.arrays, self.names))
            ]
        if self.method == "structured":
            return [
                structured_mask(a, s, self.axis, self.norm, None if old is None else old[i])
                for i, a in enumerate(self.arrays)
            ]
        if old is not None:  # N:M: the pattern is fixed once chosen
            return old
        return [nm_mask(a, self.n, self.m, self.axis) for a in self.arrays]

    def _moments(self, i: int, key: object, w: np.ndarray) -> list:
        state = getattr(self.optimizer, "state", None)
        if not isinstance(state, Mapping):
            return []
        found = key if key in state else i if i in state else None
        entry = state[found] if found is not None else None
        if not isinstance(entry, Mapping):
            return []
        return [
            (f"optimizer.state[{found!r}][{name!r}]", v)
            for name, v in entry.items()
            if isinstance(v, np.ndarray) and v is not w and _is_moment(v, w)
        ]

    def apply(self) -> None:
        """Zero the weights and their optimizer moments where the masks are False.

        One C++ call for all arrays; a no-op before the first mask update.
        Raises ``TypeError`` / ``ValueError`` (before changing anything) if a
        weight or moment is not a writable C-contiguous native array (float,
        or integer codes for a moment).
        """
        if self.masks is None:
            return
        groups, names = [], []
        for i, (k, w, name) in enumerate(zip(self.keys, self.arrays, self.names)):
            moments = self._moments(i, k, w)
            groups.append([w, *(v for _, v in moments)])
            names.append([name, *(label for label, _ in moments)])
        _core.prune.apply_masks_([self.masks[k] for k in self.keys], groups, names)

    def step(self) -> None:
        """Advance one training step: update the masks if the schedule says so, then apply them.

        Raises (and changes nothing: weights, moments, masks, step count)
        if a weight is NaN at an update or an array breaks the buffer
        contract.
        """
        previous = self.masks
        if self.schedule.is_update(self.step_count):
            masks = self._compute_masks(self.schedule.sparsity(self.step_count))
            self.masks = dict(zip(self.keys, masks))
        try:
            self.apply()
        except BaseException:
            self.masks = previous  # a failed step leaves the pruner as it was
            raise
        self.step_count += 1

    def __repr__(self) -> str:
        total = sum(a.size for a in self.arrays)
        opt = "" if self.optimizer is None else f", optimizer={type(self.optimizer).__name__}"
        return (
            f"Pruner(method={self.method!r}, {len(self.arrays)} arrays, {total:,} elements, "
            f"{self.schedule!r}, step={self.step_count}{opt})"
        )

    def sparsity(self) -> SparsityReport:
        """Fraction pruned by the current masks, per array (by key) and in total (0 before any)."""
        if self.masks is None:
            return SparsityReport({k: 0.0 for k in self.keys}, 0.0)
        per = {
            k: (
                1.0 - np.count_nonzero(self.masks[k]) / self.masks[k].size
                if self.masks[k].size
                else 0.0
            )
            for k in self.keys
        }
        total = sum(a.size for a in self.arrays)
        pruned = sum(int(self.masks[k].size - np.count_nonzero(self.masks[k])) for k in self.keys)
        return SparsityReport(per, pruned / total if total else 0.0)

    def state_dict(self) -> dict:
        """``{"step": int, "masks": {key: bool ndarray} or None}`` (copies)."""
        masks = None if self.masks is None else {k: v.copy() for k, v in self.masks.items()}
        return {"step": self.step_count, "masks": masks}

    def load_state_dict(self, state: Mapping) -> None:
        """Restore :meth:`state_dict`; checks every mask's shape first (``ValueError``)."""
        masks = state["masks"]
        if masks is not None:
            for k, w, name in zip(self.keys, self.arrays, self.names):
                mk = masks.get(k) if isinstance(masks, Mapping) else None
                if not isinstance(mk, np.ndarray) or mk.dtype != np.bool_ or mk.shape != w.shape:
                    raise ValueError(
                        f"masks[{k!r}]: expected a bool array of shape {w.shape} for {name}"
                    )
            masks = {k: np.array(masks[k]) for k in self.keys}
        self.step_count = _check_int(state["step"], "step")
        self.masks = masks


def sensitivity(
    evaluate: Callable[[], float],
    params: Mapping | Sequence,
    sparsities: Sequence[float],
    method: str = "magnitude",
) -> dict:
    """Which arrays tolerate pruning: prune one array at a time and measure.

    For every array and every sparsity, the array is pruned in place
    (``magnitude``: ``magnitude_mask``; ``structured``: rows by L1 norm),
    ``evaluate()`` is called, and the array is restored (also when
    ``evaluate`` raises: the exception propagates after the restore).

    Parameters
    ----------
    evaluate : callable
        No arguments; returns the metric (e.g. validation accuracy) of the
        model that uses ``params``.
    params : dict of name to ndarray, or list of ndarrays
        Writable float arrays, modified and restored in place.
    sparsities : sequence of float
        Each in ``[0, 1]``.

    Returns
    -------
    dict
        ``{key: {sparsity: metric}}`` in the order of ``params``.
    """
    from ._masks import magnitude_mask

    if method not in ("magnitude", "structured"):
        raise ValueError(f"method: expected 'magnitude' or 'structured', got {method!r}")
    keys, arrays, names = _named(params)
    levels = [_check_fraction(s, "sparsities") for s in sparsities]
    table: dict = {}
    for key, w, name in zip(keys, arrays, names):
        saved = w.copy()
        row = {}
        try:
            for s in levels:
                if method == "magnitude":
                    mask = magnitude_mask(saved, s)
                else:
                    mask = structured_mask(saved, s)
                np.copyto(w, saved)
                _core.prune.apply_masks_([mask], [[w]], [[name]])
                row[s] = evaluate()
        finally:
            np.copyto(w, saved)
        table[key] = row
    return table
