"""Muon and Prodigy for torch: slimgrad's kernels behind torch.optim.Muon's and
prodigyopt.Prodigy's API.

float16/bfloat16 parameters are widened into a float32 copy for the step and
rounded back to nearest even (one copy of the parameter and its gradient per
step); their states are float32. The math is :func:`slimgrad.optim._muon.muon_update`
and the Prodigy passes of :mod:`slimgrad.optim._prodigy`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from ..optim._extra import adam_coefficients, adamw_step
from ..optim._muon import MUON_CHECKS, MuonOptions, muon_update
from ..optim._prodigy import (
    PRODIGY_CHECKS,
    ProdigyOptions,
    Run,
    global_step,
    prodigy_defaults,
    prodigy_step,
)
from ._base import HALF, TorchOptimizer, _check_param, check_range
from ._extra import _round_back, _work
from ._fused import _lr

__all__ = ["Muon", "Prodigy"]


def _labels(n: int) -> list[str]:
    return [f"[{i}]" for i in range(n)]


class Muon(MuonOptions, TorchOptimizer):
    """torch.optim.Muon on slimgrad's kernels; see :class:`slimgrad.optim.Muon`.

    Same constructor as torch 2.13's Muon (2-D parameters only, ``ValueError``
    otherwise) plus keyword-only ``ns_dtype`` ("bfloat16" as torch, or
    "float32"), ``use_muon`` and ``betas`` (a group with ``"use_muon": False``
    is stepped by AdamW with its lr, betas, eps, weight_decay). State:
    ``momentum_buffer`` (float32 for float16/bfloat16 parameters), as torch;
    AdamW groups: ``step``, ``exp_avg``, ``exp_avg_sq``.
    """

    _counts_steps = False  # torch's Muon state has no "step"

    def _defaults(self, options: dict[str, Any]) -> dict[str, Any]:
        check_range("learning rate", options["lr"])
        check_range("momentum", options["momentum"])
        check_range("weight decay", options["weight_decay"])
        for k in ("ns_coefficients", "eps", "ns_steps", "adjust_lr_fn", "ns_dtype", "use_muon"):
            MUON_CHECKS[k](k, options[k])
        return options

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        super().add_param_group(param_group)
        group = self.param_groups[-1]
        if group["use_muon"]:
            for p in group["params"]:
                if p.ndim != 2:
                    self.param_groups.pop()
                    raise ValueError(
                        f"Muon only supports 2D parameters whereas we found a parameter with "
                        f"size: {p.size()} (use a group with 'use_muon': False for AdamW)"
                    )

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """As torch's; a state dict of ``torch.optim.Muon`` (without ``ns_dtype``,
        ``use_muon``, ``betas``) gets this optimizer's defaults for them."""
        super().load_state_dict(state_dict)
        for group in self.param_groups:
            for k, v in self.defaults.items():
                group.setdefault(k, v)

    def _init_state(self, group: dict[str, Any], p: torch.Tensor) -> dict[str, torch.Tensor]:
        dt = torch.float32 if p.dtype in HALF else p.dtype
        if group["use_muon"]:
            return {"momentum_buffer": torch.zeros(p.shape, dtype=dt)}
        return {
            "step": torch.tensor(0.0, dtype=torch.float32),
            "exp_avg": torch.zeros(p.shape, dtype=dt),
            "exp_avg_sq": torch.zeros(p.shape, dtype=dt),
        }

    def _step_of(self, state: dict[str, Any]) -> int:
        return int(state["step"]) + 1 if "step" in state else 1

    def _run(self, group: dict[str, Any], params: list[torch.Tensor], step: int) -> None:
        for k in ("eps", "ns_coefficients", "ns_steps", "adjust_lr_fn", "ns_dtype"):
            MUON_CHECKS[k](f"param_groups[...][{k!r}]", group[k])
        labels = _labels(len(params))
        work, grads, half = _work(params)
        if group["use_muon"]:
            caches = self.__dict__.setdefault("_muon_cache", {})
            opts = {**group, "lr": _lr(group["lr"])}
            bufs = self._states(group, params, "momentum_buffer")
            muon_update(work, grads, bufs, labels, opts, caches.setdefault(id(group), {}))
        else:
            coefficients = adam_coefficients(group, step, lr=_lr(group["lr"]))
            states = [self._states(group, params, k) for k in ("exp_avg", "exp_avg_sq")]
            adamw_step(coefficients, work, grads, states, labels)
            for p in params:
                self.state[p]["step"] += 1
        if half:
            _round_back(params, work)


class Prodigy(ProdigyOptions, TorchOptimizer):
    """prodigyopt.Prodigy on slimgrad's kernels; see :class:`slimgrad.optim.Prodigy`.

    Same constructor and param-group entries as prodigyopt 1.1 (the estimate
    ``d``, ``d_max``, ``d_numerator``, ``k``... lives in the groups, so its
    state dicts load here and ours load there). ``fsdp_in_use`` must be
    False. State: ``step`` (int), ``s``, ``p0``, ``exp_avg`` (beta1 > 0),
    ``exp_avg_sq``; float32 for float16/bfloat16 parameters.
    """

    def _defaults(self, options: dict[str, Any]) -> dict[str, Any]:
        lr, betas, eps, d0 = (options[k] for k in ("lr", "betas", "eps", "d0"))
        if not 0.0 < d0:
            raise ValueError(f"Invalid d0 value: {d0}")
        if not 0.0 < lr:
            raise ValueError(f"Invalid learning rate: {lr}")
        if not 0.0 < eps:
            raise ValueError(f"Invalid epsilon value: {eps}")
        for i in (0, 1):
            if not 0.0 <= betas[i] < 1.0:
                raise ValueError(f"Invalid beta parameter at index {i}: {betas[i]}")
        for k in ("fsdp_in_use", "slice_p"):
            PRODIGY_CHECKS[k](k, options[k])
        return prodigy_defaults(options)

    def _state(self, group: dict[str, Any], p: torch.Tensor, beta1: float) -> dict[str, Any]:
        st = self.state[p]
        dt = torch.float32 if p.dtype in HALF else p.dtype
        sp = int(group["slice_p"])
        n = -(-p.numel() // sp)
        if "step" not in st:
            st["step"] = 0
            st["s"] = torch.zeros(n, dtype=dt)
            st["p0"] = p.detach().flatten()[::sp].to(dt, copy=True)
            if beta1 > 0:
                st["exp_avg"] = torch.zeros(p.shape, dtype=dt)
            st["exp_avg_sq"] = torch.zeros(p.shape, dtype=dt)
        elif st["p0"].ndim == 0:  # prodigyopt's p0 of an all-zero parameter
            st["p0"] = torch.zeros(n, dtype=dt)
        return st

    def _state_views(self, params: list[torch.Tensor], key: str) -> list[np.ndarray] | None:
        if key not in self.state[params[0]]:
            return None
        want = torch.float32 if params[0].dtype in HALF else params[0].dtype
        out = []
        for p in params:
            st = self.state[p]
            if st[key].dtype != want:  # cast by torch's load_state_dict
                st[key] = st[key].to(want)
            out.append(self._view(st[key]))
        return out

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """One Prodigy step over every parameter with a gradient (prodigyopt's order).

        Raises ``ValueError``/``TypeError`` for a parameter the kernels cannot
        step and ``RuntimeError`` for unequal nonzero group lrs, before
        anything is modified.
        """
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        beta1 = global_step(self.param_groups)["beta1"]  # unequal lrs: RuntimeError
        plan = []
        for gi, group in enumerate(self.param_groups):
            PRODIGY_CHECKS["slice_p"]("slice_p", group["slice_p"])
            buckets: dict[torch.dtype, list[torch.Tensor]] = {}
            for pi, p in enumerate(group["params"]):
                if p.grad is not None:
                    _check_param(p, gi, pi)
                    buckets.setdefault(p.dtype, []).append(p)
            plan.append((group, list(buckets.values())))
        runs, tensors = [], []
        for group, buckets in plan:
            for params in buckets:
                for p in params:
                    self._state(group, p, beta1)
                work, grads, half = _work(params)
                states = {
                    k: self._state_views(params, k) for k in ("exp_avg", "exp_avg_sq", "s", "p0")
                }
                runs.append(Run(group, work, grads, states, _labels(len(params))))
                tensors.append((params, half))
        if not prodigy_step(self.param_groups, runs):
            return loss
        for run, (params, half) in zip(runs, tensors):
            if half:
                _round_back(params, run.params)
            for p in params:
                self.state[p]["step"] += 1
        return loss
