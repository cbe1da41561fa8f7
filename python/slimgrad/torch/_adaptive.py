"""ASGD, Rprop (torch.optim) and Schedule-Free AdamW/SGD (schedulefree) for torch.

Drop-in for ``torch.optim.ASGD`` / ``torch.optim.Rprop`` and
``schedulefree.AdamWScheduleFree`` / ``schedulefree.SGDScheduleFree``: same
signatures, group keys and state (so their state dicts load both ways), each
step one fused pass of slimgrad's elementwise family per bucket of tensors.
As in :mod:`slimgrad.torch._fused`, float16/bfloat16 parameters are stepped
without master copies (float32 math, rounded to nearest even), bfloat16
parameters keep bfloat16 state.
"""

from __future__ import annotations

from typing import Any

import torch

from ..optim import _adaptive as _np
from ._base import check_range
from ._fused import _Fused, _Mirrored

__all__ = ["ASGD", "Rprop", "AdamWScheduleFree", "SGDScheduleFree"]


class ASGD(_Mirrored):
    """``torch.optim.ASGD``: same signature and state (``step``, ``eta``, ``mu``
    as float32 scalar tensors, ``ax``); see :class:`slimgrad.optim.ASGD`."""

    _algo = "asgd"
    _mirrors = torch.optim.ASGD

    _state_keys = _np.ASGD._state_keys

    def _state_dtype(self, group, p, key):
        if key in ("eta", "mu"):
            return torch.float32  # torch's scalar dtype, whatever the parameter's
        return super()._state_dtype(group, p, key)

    def _init_state(self, group, p):
        return {
            "eta": torch.tensor(float(group["lr"]), dtype=torch.float32),
            "mu": torch.ones((), dtype=torch.float32),
            **super()._init_state(group, p),
        }

    def _set_args(self, a, g):
        super()._set_args(a, g)
        a.eta, a.mu = g["_eta"], g["_mu"]

    def _run(self, group, params, step):
        st0 = self.state[params[0]]  # a bucket shares its step count, hence eta and mu
        super()._run({**group, "_eta": st0["eta"].item(), "_mu": st0["mu"].item()}, params, step)
        lr, lambd = float(group["lr"]), group["lambd"]
        eta = lr / ((1 + lambd * lr * step) ** group["alpha"])
        mu = 1 / max(1, step - group["t0"])
        for p in params:
            self.state[p]["eta"].fill_(eta)
            self.state[p]["mu"].fill_(mu)


class Rprop(_Mirrored):
    """``torch.optim.Rprop``: same signature and state (``step``, ``prev``,
    ``step_size``); see :class:`slimgrad.optim.Rprop`."""

    _algo = "rprop"
    _mirrors = torch.optim.Rprop

    _state_keys = _np.Rprop._state_keys

    def _init_state(self, group, p):
        dt = self._state_dtype(group, p, "prev")
        return {
            "prev": torch.zeros_like(p, dtype=dt),
            "step_size": torch.full_like(p, float(group["lr"]), dtype=dt),
        }


# The options of both Schedule-Free optimizers in schedulefree's group-key order.
_SF_ORDER = "lr betas momentum eps r warmup_steps weight_lr_power weight_decay foreach".split()


class _ScheduleFree(_Fused):
    """The per-group schedule and the train/eval switch, as schedulefree."""

    _counts_steps = False  # schedulefree counts steps per group ("k")
    _np_class: Any = None

    def __init__(self, params: Any, defaults: dict[str, Any]) -> None:
        # schedulefree's key order (its state dicts list the group keys so)
        defaults = {k: defaults[k] for k in _SF_ORDER if k in defaults}
        defaults.update(k=0, train_mode=False, weight_sum=0.0, lr_max=-1.0, scheduled_lr=0.0)
        self._pending: dict[int, dict[str, float]] = {}
        super().__init__(params, defaults)

    def _state_keys(self, group):
        return self._np_class._state_keys(self, group)

    def _init_state(self, group, p):
        keys = self._state_keys(group)
        st = {k: torch.zeros_like(p, dtype=self._state_dtype(group, p, k)) for k in keys}
        st["z"].copy_(p.detach())
        return st

    def _set_args(self, a, g):
        self._np_class._set_args(self, a, g)
        a.ckp1 = g["_ckp1"]

    def _run(self, group, params, step):
        s = self._pending[id(group)]
        super()._run({**group, "lr": s["lr"], "_ckp1": s["ckp1"]}, params, group["k"] + 1)

    @torch.no_grad()
    def step(self, closure: Any = None) -> Any:
        """One step (``RuntimeError`` unless in train mode, see :meth:`train`); every
        group's ``k``, ``lr_max``, ``weight_sum``, ``scheduled_lr`` advance."""
        if not self.param_groups[0]["train_mode"]:
            raise RuntimeError(
                "Optimizer was not in train mode when step is called: call optimizer.train() "
                "before training steps and optimizer.eval() before evaluating (Schedule-Free)"
            )
        self._pending = {id(g): _np._ScheduleFree._schedule(g) for g in self.param_groups}
        try:
            loss = super().step(closure)
        finally:
            pending, self._pending = self._pending, {}
        for g in self.param_groups:
            s = pending[id(g)]
            g["k"] += 1
            g["lr_max"], g["weight_sum"], g["scheduled_lr"] = s["lr_max"], s["weight_sum"], s["lr"]
        return loss

    @torch.no_grad()
    def train(self) -> None:
        """Parameters to ``y`` in place: ``p.lerp_(z, 1 - beta)``, as schedulefree."""
        self._switch(True)

    @torch.no_grad()
    def eval(self) -> None:
        """Parameters to ``x`` in place: ``p.lerp_(z, 1 - 1 / beta)``, as schedulefree."""
        self._switch(False)

    def _switch(self, to_train: bool) -> None:
        for group in self.param_groups:
            if group["train_mode"] == to_train:
                continue
            beta = self._np_class._beta(self, group)
            w = 1 - beta if to_train else 1 - 1 / beta
            for p in group["params"]:
                st = self.state.get(p, {})  # .get: no empty entry for a param without state
                if "z" in st:
                    p.lerp_(end=st["z"].to(p.dtype), weight=w)
            group["train_mode"] = to_train


class AdamWScheduleFree(_np.AdamWScheduleFreeOptions, _ScheduleFree):
    """``schedulefree.AdamWScheduleFree``: same signature, group keys and state
    (``z``, ``exp_avg_sq``); see :class:`slimgrad.optim.AdamWScheduleFree`."""

    _algo = "sf_adamw"
    _np_class = _np.AdamWScheduleFree

    foreach: bool | None = True

    def _defaults(self, options: dict[str, Any]) -> dict[str, Any]:
        check_range("learning rate", options["lr"])
        _np.check_sf_betas("betas", options["betas"])
        return options


class SGDScheduleFree(_np.SGDScheduleFreeOptions, _ScheduleFree):
    """``schedulefree.SGDScheduleFree``: same signature, group keys and state
    (``z``); see :class:`slimgrad.optim.SGDScheduleFree`."""

    _algo = "sf_sgd"
    _np_class = _np.SGDScheduleFree

    weight_lr_power: float = 2  # schedulefree's default (2.0 in slimgrad.optim)
    foreach: bool | None = True

    def _defaults(self, options: dict[str, Any]) -> dict[str, Any]:
        check_range("learning rate", options["lr"])
        check_range("weight_decay", options["weight_decay"])
        momentum = options["momentum"]
        if momentum <= 0 or momentum >= 1:
            raise ValueError(f"Momentum must be between 0 and 1 exclusive: {momentum}")
        return options
