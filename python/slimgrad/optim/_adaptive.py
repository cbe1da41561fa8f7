"""ASGD and Rprop (torch.optim), Schedule-Free AdamW and SGD (the ``schedulefree`` package).

Rows of the elementwise family (``optim_table.hpp``): each step is one fused
C++ pass per array, with the family's extras (``nonfinite``, ``rounding``,
``seed``, ``state_dtype``, ``master_weights``; see
:mod:`slimgrad.optim._optimizers`). What is per tensor or per group rather
than per element lives here, in Python:

- ASGD's ``eta`` and ``mu`` (torch keeps them as float32 scalar tensors in
  each parameter's state; here floats rounded to float32 as torch rounds
  them, so a torch state dict imports and the steps agree).
- Schedule-Free's running ``k``, ``lr_max``, ``weight_sum`` and
  ``train_mode`` are per param group, under schedulefree's names, so its
  state dicts import too. The averaging weight ``ckp1`` and the warmed-up
  ``lr`` of a step are computed once per group and passed to the kernel.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ._checks import (
    HALF_DTYPES,
    OPTION_CHECKS,
    check_betas,
    check_bool,
    check_nonneg,
    check_number,
)
from ._fused import FusedOptimizer
from ._keywords import FamilyKeywords, PrecisionKeywords
from ._optimizers import AdamFamilyOptions
from ._options import Params

__all__ = ["ASGD", "Rprop", "AdamWScheduleFree", "SGDScheduleFree"]


def _f32(x: float) -> float:
    """``x`` rounded to float32, as torch stores a float32 scalar state tensor."""
    return float(np.float32(x))


def _check_pair(name: str, value: Any) -> tuple[float, float]:
    if not isinstance(value, (tuple, list)) or len(value) != 2:
        raise ValueError(f"{name}: expected a pair of numbers, got {value!r}")
    a, b = (check_number(f"{name}[{i}]", v) for i, v in enumerate(value))
    return a, b


def check_etas(name: str, value: Any) -> tuple[float, float]:
    """Rprop's ``etas``: ``0 < etaminus < 1 < etaplus``."""
    lo, hi = _check_pair(name, value)
    if not 0.0 < lo < 1.0 < hi or np.isinf(hi):
        raise ValueError(f"{name}: expected 0 < etaminus < 1 < etaplus (finite), got {value!r}")
    return lo, hi


def check_step_sizes(name: str, value: Any) -> tuple[float, float]:
    """Rprop's ``step_sizes``: ``0 <= min <= max``."""
    lo, hi = _check_pair(name, value)
    if not 0.0 <= lo <= hi:
        raise ValueError(f"{name}: expected 0 <= min <= max, got {value!r}")
    return lo, hi


def check_count(name: str, value: Any) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name}: expected an int, got {value!r}")
    if value < 0:
        raise ValueError(f"{name}: expected an int >= 0, got {value!r}")
    return int(value)


def check_open_unit(name: str, value: Any) -> float:
    v = check_number(name, value)
    if not 0.0 < v < 1.0:
        raise ValueError(f"{name}: expected 0 < value < 1, got {value!r}")
    return v


def check_sf_betas(name: str, value: Any) -> tuple[float, float]:
    b1, b2 = check_betas(value, name)
    if b1 <= 0.0:  # eval() interpolates with weight 1 - 1/beta1
        raise ValueError(f"{name}[0]: expected 0 < beta1 < 1 (eval() divides by it), got {b1}")
    return b1, b2


class ASGD(FamilyKeywords, FusedOptimizer):
    """Averaged SGD, as ``torch.optim.ASGD``.

    ``g = -g if maximize; g += weight_decay * p; p *= 1 - lambd * eta;
    p -= eta * g``; ``ax = p`` while ``mu == 1``, then ``ax += (p - ax) * mu``.
    After the step ``eta = lr / (1 + lambd * lr * step)^alpha`` and
    ``mu = 1 / max(1, step - t0)``. State: ``ax`` (the average, an array),
    ``eta`` and ``mu`` (floats, rounded to float32 as torch's scalar tensors;
    ``eta`` starts at ``lr``). See :mod:`slimgrad.optim._optimizers` for the
    extra keyword options.
    """

    _algo = "asgd"
    _option_checks = {**OPTION_CHECKS, "lambd": check_nonneg, "t0": check_number}

    lr: float = 1e-2
    lambd: float = 1e-4
    alpha: float = 0.75
    t0: float = 1e6
    weight_decay: float = 0

    def _init_state(self, group, param):
        return {**super()._init_state(group, param), "eta": _f32(group["lr"]), "mu": 1.0}

    def _bucket_call(self, group, b):
        args, states, names = super()._bucket_call(group, b)
        # A bucket's params share their step count, hence eta and mu.
        args.eta, args.mu = b.state_dicts[0]["eta"], b.state_dicts[0]["mu"]
        return args, states, names

    def _step_bucket(self, group, b, check):
        bad = super()._step_bucket(group, b, check)
        if bad is None:  # committed here as NAdam's mu_product (a later bucket cannot fail)
            lr, lambd, t = group["lr"], group["lambd"], b.step
            eta = _f32(lr / ((1 + lambd * lr * t) ** group["alpha"]))
            mu = _f32(1 / max(1, t - group["t0"]))
            for st in b.state_dicts:
                st["eta"], st["mu"] = eta, mu
        return bad


class Rprop(FamilyKeywords, FusedOptimizer):
    """Resilient backpropagation, as ``torch.optim.Rprop``.

    Per element, with ``s = sign(g * prev)``: the step size is multiplied by
    ``etaplus`` (s > 0), ``etaminus`` (s < 0) or 1 and clamped to
    ``step_sizes``; where ``s < 0`` the gradient counts as 0 (no step, and
    ``prev = 0``); ``p -= sign(g) * step_size; prev = g``. ``lr`` is the
    initial step size. State: ``prev``, ``step_size`` (starts at ``lr``).
    """

    _algo = "rprop"
    _option_checks = {
        **OPTION_CHECKS,
        "etas": check_etas,
        "step_sizes": check_step_sizes,
    }

    lr: float = 1e-2
    etas: tuple[float, float] = (0.5, 1.2)
    step_sizes: tuple[float, float] = (1e-6, 50)

    def _defaults(self, options: dict[str, Any]) -> dict[str, Any]:
        etas = check_etas("etas", options["etas"])
        return {
            **options,
            "etas": etas,
            "step_sizes": check_step_sizes("step_sizes", options["step_sizes"]),
        }

    def _init_state(self, group, param):
        return {
            "prev": self.state_full(param, group=group),
            "step_size": self.state_full(param, group["lr"], group),
        }


# Options of both Schedule-Free optimizers, and their running per-group values.
_SF_CHECKS = {
    **OPTION_CHECKS,
    "warmup_steps": check_count,
    "r": check_number,
    "weight_lr_power": check_nonneg,
    "k": check_count,
    "train_mode": check_bool,
    "weight_sum": check_nonneg,
    "lr_max": check_number,
    "scheduled_lr": check_number,
}


class _ScheduleOptions(Params):
    """The schedule arguments both Schedule-Free optimizers end with (schedulefree's)."""

    warmup_steps: int = 0
    r: float = 0.0
    weight_lr_power: float = 2.0


class _ScheduleFree(FusedOptimizer):
    """What Schedule-Free AdamW and SGD share: the per-group schedule and train/eval.

    The parameters hold ``y`` (where gradients are taken) in train mode and
    ``x`` (the average, to evaluate) in eval mode; ``z`` is state. As
    schedulefree, an optimizer starts in eval mode and :meth:`step` raises
    unless :meth:`train` was called.
    """

    def __init__(self, params, defaults, **keywords):
        defaults = dict(
            defaults, k=0, train_mode=False, weight_sum=0.0, lr_max=-1.0, scheduled_lr=0.0
        )
        self._pending: list[dict[str, float]] | None = None
        super().__init__(params, defaults, **keywords)

    def _beta(self, group: dict[str, Any]) -> float:
        """beta1 (AdamW) or momentum (SGD): the y = (1 - beta) z + beta x interpolation."""
        raise NotImplementedError

    @staticmethod
    def _schedule(group: dict[str, Any]) -> dict[str, float]:
        """This step's lr (after warmup), lr_max, weight_sum and ckp1, as schedulefree."""
        k, warmup = group["k"], group["warmup_steps"]
        lr = group["lr"] * ((k + 1) / warmup if k < warmup else 1.0)
        lr_max = max(lr, group["lr_max"])
        weight = ((k + 1) ** group["r"]) * (lr_max ** group["weight_lr_power"])
        weight_sum = group["weight_sum"] + weight
        ckp1 = weight / weight_sum if weight_sum != 0 else 0.0
        return dict(lr=lr, lr_max=lr_max, weight_sum=weight_sum, ckp1=ckp1)

    def _init_state(self, group, param):
        st = super()._init_state(group, param)
        st["z"][...] = param  # z starts at y
        return st

    def _bucket_call(self, group, b):
        args, states, names = super()._bucket_call(group, b)
        assert self._pending is not None
        sched = self._pending[b.group_index]
        args.lr, args.ckp1 = sched["lr"], sched["ckp1"]
        args.step = group["k"] + 1  # the group's count: schedulefree's bias correction
        return args, states, names

    def _step_all(self, flat):
        self._pending = [self._schedule(g) for g in self.param_groups]
        return super()._step_all(flat)

    def step(self, grads: Any, **options: Any) -> bool:
        """As :meth:`Optimizer.step`; ``RuntimeError`` unless in train mode (see :meth:`train`).

        Every group's ``k``, ``lr_max``, ``weight_sum`` and ``scheduled_lr``
        advance when the step is applied (also for a group whose gradients
        are all None, as schedulefree).
        """
        for gi, g in enumerate(self.param_groups):
            if not g["train_mode"]:
                raise RuntimeError(
                    f"step: param_groups[{gi}] is in eval mode; call optimizer.train() before "
                    "training steps and optimizer.eval() before evaluating (Schedule-Free)"
                )
        self._pending = None
        try:
            applied = super().step(grads, **options)  # options: as Optimizer.step (cast=...)
            if applied:
                pending = self._pending or [self._schedule(g) for g in self.param_groups]
                for g, s in zip(self.param_groups, pending):
                    g["k"] += 1
                    g["lr_max"], g["weight_sum"], g["scheduled_lr"] = (
                        s["lr_max"],
                        s["weight_sum"],
                        s["lr"],
                    )
        finally:
            self._pending = None
        return applied

    def train(self) -> None:
        """Switch every parameter to ``y`` (the point gradients are taken at), in place.

        ``p = lerp(p, z, 1 - beta)``; a no-op for groups already in train
        mode and for parameters without state. float16/bfloat16 parameters
        are switched on their float32 master copy (or, without one, in
        float32) and rounded to nearest.
        """
        self._switch(True)

    def eval(self) -> None:
        """Switch every parameter to ``x`` (the average, to evaluate or save), in place.

        ``p = lerp(p, z, 1 - 1 / beta)``; see :meth:`train`.
        """
        self._switch(False)

    def _switch(self, to_train: bool) -> None:
        for gi, group in enumerate(self.param_groups):
            if group["train_mode"] == to_train:
                continue
            beta = self._beta(group)
            w = 1 - beta if to_train else 1 - 1 / beta
            for k in self._group_keys(gi):
                st = self.state.get(k)
                if st is not None and "z" in st:
                    _lerp_param(self._params[self._keys.index(k)], st, w)
            group["train_mode"] = to_train


def _lerp_param(p: np.ndarray, st: dict[str, Any], w: float) -> None:
    """``p = lerp(p, z, w)`` in place, in the step's math type, as torch's lerp."""
    master = st.get("master")
    x = master if master is not None else p.astype(np.float32) if p.dtype in HALF_DTYPES else p
    t = x.dtype.type
    z = st["z"].astype(x.dtype, copy=False)
    new = x + t(w) * (z - x) if w < 0.5 else z - (z - x) * (t(1) - t(w))
    if master is not None:
        master[...] = new
    p[...] = new  # rounds to nearest for float16/bfloat16


# A class's fields follow its bases' in reverse MRO order: the schedule comes last.
class AdamWScheduleFreeOptions(_ScheduleOptions, AdamFamilyOptions):
    """AdamWScheduleFree's arguments (of :class:`AdamWScheduleFree` and
    :class:`slimgrad.torch.AdamWScheduleFree`)."""

    lr: float = 0.0025


class AdamWScheduleFree(AdamWScheduleFreeOptions, PrecisionKeywords, _ScheduleFree):
    """Schedule-Free AdamW, as ``schedulefree.AdamWScheduleFree``.

    Per step (``k`` counts the group's steps; warmup: ``lr_k = lr * min(1,
    (k + 1) / warmup_steps)``; ``lr_max = max(lr_max, lr_k)``; ``weight =
    (k + 1)^r * lr_max^weight_lr_power``; ``ckp1 = weight / weight_sum``):
    ``v = beta2 v + (1 - beta2) g^2; u = g / (sqrt(v / (1 - beta2^(k+1))) + eps)
    + weight_decay * y; y = lerp(y, z, ckp1) + lr_k (beta1 (1 - ckp1) - 1) u;
    z -= lr_k u``. The parameters hold ``y`` in train mode, ``x`` in eval mode
    (:meth:`train` / :meth:`eval`). State: ``z``, ``exp_avg_sq``; the group
    keeps ``k``, ``lr_max``, ``weight_sum``, ``scheduled_lr``, ``train_mode``.
    """

    _algo = "sf_adamw"
    _option_checks = {**_SF_CHECKS, "betas": check_sf_betas}

    def _beta(self, group):
        return group["betas"][0]

    def _set_args(self, a, g):
        (a.beta1, a.beta2), a.eps, a.weight_decay = g["betas"], g["eps"], g["weight_decay"]


class _SGDOptions(Params):
    lr: float = 1.0
    momentum: float = 0.9
    weight_decay: float = 0


class SGDScheduleFreeOptions(_ScheduleOptions, _SGDOptions):
    """SGDScheduleFree's arguments (of :class:`SGDScheduleFree` and
    :class:`slimgrad.torch.SGDScheduleFree`)."""


class SGDScheduleFree(SGDScheduleFreeOptions, PrecisionKeywords, _ScheduleFree):
    """Schedule-Free SGD, as ``schedulefree.SGDScheduleFree``.

    ``u = g + weight_decay * y; y = lerp(y, z, ckp1) + lr_k (momentum (1 - ckp1) - 1) u;
    z -= lr_k u`` with ``lr_k`` and ``ckp1`` as :class:`AdamWScheduleFree`.
    State: ``z``; the group keeps ``k``, ``lr_max``, ``weight_sum``,
    ``scheduled_lr``, ``train_mode``.
    """

    _algo = "sf_sgd"
    _option_checks = {**_SF_CHECKS, "momentum": check_open_unit}

    def _beta(self, group):
        return group["momentum"]

    def _set_args(self, a, g):
        a.momentum, a.weight_decay = g["momentum"], g["weight_decay"]
