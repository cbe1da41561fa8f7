"""SGD, Adam, AdamW, Adagrad, RMSprop: torch's signatures, slimgrad's multi-tensor kernel.

Each bucket (one group's parameters sharing a dtype and step count) is one call of
``_core.optim.step``: a fused pass per tensor, threads over tensors and elements.
float16/bfloat16 parameters are stepped as torch steps them, without master
copies: each value is widened to float32, updated and rounded to nearest even.
States: bfloat16 parameters keep bfloat16 states (torch's layout and memory; the
math is float32), float16 parameters float32 states (the kernels have no float16
state), the others their own dtype.
"""

from __future__ import annotations

import functools
from typing import Any

import torch

from .. import _core
from ..optim import _optimizers as _np
from ._base import HALF, TorchOptimizer, as_array, check_range

__all__ = ["SGD", "Adam", "AdamW", "Adagrad", "RMSprop"]


def _lr(lr: Any) -> float:
    return float(lr.item() if isinstance(lr, torch.Tensor) else lr)


@functools.lru_cache(maxsize=64)
def _names(n: int, keys: tuple[str, ...]) -> tuple[Any, ...]:
    """The names the kernel's buffer checks use in messages (built once per shape)."""
    labels = [f"[{i}]" for i in range(n)]
    return (
        ["params" + lb for lb in labels],
        ["grads" + lb for lb in labels],
        None,
        [[f"state{lb}[{k!r}]" for lb in labels] for k in keys],
    )


class _Fused(TorchOptimizer):
    """An optimizer stepped by ``_core.optim.step`` (one algorithm of optim.hpp)."""

    _algo = ""

    def _state_keys(self, group: dict[str, Any]) -> list[str]:
        raise NotImplementedError

    # the kernel's arguments from the group, read from the descriptor table's
    # options as for slimgrad.optim (one mapping of torch's group keys)
    _set_args = _np.FusedOptimizer._set_args

    def _state_dtype(self, group: dict[str, Any], p: torch.Tensor, key: str) -> torch.dtype:
        if p.dtype == torch.bfloat16:
            return torch.bfloat16
        return torch.float32 if p.dtype in HALF else p.dtype

    def _init_state(self, group: dict[str, Any], p: torch.Tensor) -> dict[str, torch.Tensor]:
        fill = self._fill(group)
        return {
            k: torch.full_like(p, fill, dtype=self._state_dtype(group, p, k))
            for k in self._state_keys(group)
        }

    def _fill(self, group: dict[str, Any]) -> float:
        return 0.0

    def _run(self, group: dict[str, Any], params: list[torch.Tensor], step: int) -> None:
        keys = self._state_keys(group)
        args = _core.optim.StepArgs()
        args.algo = self._algo
        self._set_args(args, group)
        args.lr = _lr(group["lr"])
        args.step = step
        args.stochastic, args.seed = False, 0
        args.master_weights = params[0].dtype not in HALF  # torch keeps no master copy
        states = [self._states(group, params, k) for k in keys]
        args.bf16_state = (
            bool(keys) and self._state_dtype(group, params[0], keys[0]) == torch.bfloat16
        )
        names = _names(len(params), tuple(keys))
        views = [self._view(p) for p in params]
        grads = [as_array(p.grad) for p in params]
        _core.optim.step(args, views, grads, None, states, names, False)
        if len(params) == len(group["params"]) and any(group is g for g in self.param_groups):
            # Every parameter of the group in one bucket: cache this call. (Not
            # for a copy of the group with per-step extras, as ASGD and the
            # Schedule-Free optimizers pass: they take the full path each step.)
            self.__dict__.setdefault("_plans", {})[id(group)] = _Plan(
                self, group, params, keys, args, views, states, names
            )

    def _fast_ready(self) -> list[Any] | None:
        plans = self.__dict__.get("_plans")
        if not plans:
            return None
        runs = []
        for group in self.param_groups:
            plan = plans.get(id(group))
            run = plan.prepare(self, group) if plan is not None else None
            if run is None:
                return None
            runs.append(run)
        return runs


class _Plan:
    """The cached arguments of one group's step (all its parameters in one bucket).

    Valid while the group holds the same parameter objects at the same
    addresses, each with a gradient, and the same state dicts and tensors
    (``load_state_dict`` drops every plan); each step re-reads the options,
    the step count and the gradients (new gradient tensors are viewed again).
    """

    def __init__(self, opt, group, params, keys, args, views, states, names):
        self.group = group
        self.params = list(params)
        self.ids = [id(p) for p in params]
        self.ptrs = [p.data_ptr() for p in params]
        self.state = opt.state
        self.dicts = [opt.state[p] for p in params]
        self.tensors = [[st[k] for st in self.dicts] for k in keys]
        self.keys = keys
        self.counts = opt._counts_steps
        self.steps = [st["step"] for st in self.dicts] if self.counts else []
        self.args, self.views, self.states, self.names = args, views, states, names
        self.grads: dict[int, tuple[torch.Tensor, int, Any]] = {}

    def prepare(self, opt: _Fused, group: dict[str, Any]) -> Any:
        """A callable stepping the group, or None if the cache does not apply."""
        params = group["params"]
        if group is not self.group or opt.state is not self.state or len(params) != len(self.ids):
            return None
        grads = []
        cache, new_cache = self.grads, {}
        for p, pid, ptr, st in zip(params, self.ids, self.ptrs, self.dicts):
            g = p.grad
            if id(p) != pid or g is None or p.data_ptr() != ptr or opt.state.get(p) is not st:
                return None
            hit = cache.get(id(g))
            if hit is None or hit[0] is not g or hit[1] != g.data_ptr():
                if (
                    g.dtype != p.dtype
                    or g.shape != p.shape
                    or g.layout != torch.strided
                    or g.device.type != "cpu"
                    or not g.is_contiguous()
                ):
                    return None  # the full path raises the precise error
                hit = (g, g.data_ptr(), as_array(g))
            new_cache[id(g)] = hit
            grads.append(hit[2])
        for k, tensors in zip(self.keys, self.tensors):
            for st, t in zip(self.dicts, tensors):
                if st[k] is not t:
                    return None
        if not all(isinstance(t, torch.Tensor) for t in self.steps) or any(
            st["step"] is not t for st, t in zip(self.dicts, self.steps)
        ):
            return None  # (the full path also handles plain-number steps)
        self.grads = new_cache
        args = self.args
        opt._set_args(args, group)
        args.lr = _lr(group["lr"])
        # Equal for every parameter: a plan exists only while all step together.
        args.step = opt._step_of(self.dicts[0])

        def run() -> None:
            _core.optim.step(args, self.views, grads, None, self.states, self.names, False)
            if self.counts:
                torch._foreach_add_(self.steps, 1)

        return run


class SGD(_Fused):
    """``torch.optim.SGD`` (momentum, dampening, nesterov, weight decay, maximize).

    Same signature and state (``momentum_buffer`` when ``momentum != 0``) as torch.
    ``foreach`` and ``fused`` are accepted and ignored (the step is always fused).
    """

    _algo = "sgd"
    _counts_steps = False

    def __init__(
        self,
        params: Any,
        lr: float = 1e-3,
        momentum: float = 0,
        dampening: float = 0,
        weight_decay: float = 0,
        nesterov: bool = False,
        *,
        maximize: bool = False,
        foreach: bool | None = None,
        differentiable: bool = False,
        fused: bool | None = None,
    ) -> None:
        check_range("learning rate", lr)
        check_range("momentum", momentum)
        check_range("weight_decay", weight_decay)
        if nesterov and (momentum <= 0 or dampening != 0):
            raise ValueError("Nesterov momentum requires a momentum and zero dampening")
        defaults = dict(
            lr=lr,
            momentum=momentum,
            dampening=dampening,
            weight_decay=weight_decay,
            nesterov=nesterov,
            maximize=maximize,
            foreach=foreach,
            differentiable=differentiable,
            fused=fused,
        )
        super().__init__(params, defaults)

    def _step_of(self, state: dict[str, Any]) -> int:
        # torch's first step copies the gradient into a missing momentum buffer.
        return 2 if state.get("momentum_buffer") is not None else 1

    # The group keys are torch's, as slimgrad.optim's: share its state slots.
    _state_keys = _np.SGD._state_keys


class Adam(_Fused):
    """``torch.optim.Adam`` (amsgrad, maximize, ``decoupled_weight_decay``).

    Same signature, defaults and state (``step``, ``exp_avg``, ``exp_avg_sq``,
    ``max_exp_avg_sq`` with amsgrad) as torch; ``foreach``/``fused`` are accepted
    and ignored, ``capturable``/``differentiable`` must stay False.
    """

    _algo = "adam"
    _decoupled_default = False

    def __init__(
        self,
        params: Any,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0,
        amsgrad: bool = False,
        *,
        foreach: bool | None = None,
        maximize: bool = False,
        capturable: bool = False,
        differentiable: bool = False,
        fused: bool | None = None,
        decoupled_weight_decay: bool | None = None,
    ) -> None:
        check_range("learning rate", lr)
        check_range("epsilon", eps)
        check_range("beta parameter at index 0", betas[0], 0.0, 1.0)
        check_range("beta parameter at index 1", betas[1], 0.0, 1.0)
        check_range("weight_decay", weight_decay)
        if decoupled_weight_decay is None:
            decoupled_weight_decay = self._decoupled_default
        defaults = dict(
            lr=lr,
            betas=betas,
            eps=eps,
            weight_decay=weight_decay,
            amsgrad=amsgrad,
            maximize=maximize,
            foreach=foreach,
            capturable=capturable,
            differentiable=differentiable,
            fused=fused,
            decoupled_weight_decay=decoupled_weight_decay,
        )
        super().__init__(params, defaults)

    # The group keys are torch's, as slimgrad.optim's: share its state slots.
    _state_keys = _np.Adam._state_keys


class AdamW(Adam):
    """``torch.optim.AdamW``: :class:`Adam` with decoupled weight decay (default 1e-2)."""

    _decoupled_default = True

    def __init__(
        self,
        params: Any,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 1e-2,
        amsgrad: bool = False,
        *,
        maximize: bool = False,
        foreach: bool | None = None,
        capturable: bool = False,
        differentiable: bool = False,
        fused: bool | None = None,
    ) -> None:
        super().__init__(
            params,
            lr,
            betas,
            eps,
            weight_decay,
            amsgrad,
            maximize=maximize,
            foreach=foreach,
            capturable=capturable,
            differentiable=differentiable,
            fused=fused,
            decoupled_weight_decay=True,
        )


class Adagrad(_Fused):
    """``torch.optim.Adagrad`` (lr_decay, initial_accumulator_value, maximize).

    State ``step`` and ``sum`` as torch's.
    """

    _algo = "adagrad"

    def __init__(
        self,
        params: Any,
        lr: float = 1e-2,
        lr_decay: float = 0,
        weight_decay: float = 0,
        initial_accumulator_value: float = 0,
        eps: float = 1e-10,
        foreach: bool | None = None,
        *,
        maximize: bool = False,
        differentiable: bool = False,
        fused: bool | None = None,
    ) -> None:
        check_range("learning rate", lr)
        check_range("lr_decay", lr_decay)
        check_range("weight_decay", weight_decay)
        check_range("initial_accumulator_value", initial_accumulator_value)
        check_range("epsilon", eps)
        defaults = dict(
            lr=lr,
            lr_decay=lr_decay,
            eps=eps,
            weight_decay=weight_decay,
            initial_accumulator_value=initial_accumulator_value,
            foreach=foreach,
            maximize=maximize,
            differentiable=differentiable,
            fused=fused,
        )
        super().__init__(params, defaults)

    def _fill(self, group):
        return float(group["initial_accumulator_value"])

    # The group keys are torch's, as slimgrad.optim's: share its state slots.
    _state_keys = _np.Adagrad._state_keys


class RMSprop(_Fused):
    """``torch.optim.RMSprop`` (momentum, centered, maximize).

    State ``step``, ``square_avg``, ``momentum_buffer`` (momentum > 0), ``grad_avg``
    (centered) as torch's.
    """

    _algo = "rmsprop"

    def __init__(
        self,
        params: Any,
        lr: float = 1e-2,
        alpha: float = 0.99,
        eps: float = 1e-8,
        weight_decay: float = 0,
        momentum: float = 0,
        centered: bool = False,
        capturable: bool = False,
        foreach: bool | None = None,
        maximize: bool = False,
        differentiable: bool = False,
    ) -> None:
        check_range("learning rate", lr)
        check_range("epsilon", eps)
        check_range("momentum", momentum)
        check_range("weight_decay", weight_decay)
        check_range("alpha", alpha)
        defaults = dict(
            lr=lr,
            momentum=momentum,
            alpha=alpha,
            eps=eps,
            centered=centered,
            weight_decay=weight_decay,
            capturable=capturable,
            foreach=foreach,
            maximize=maximize,
            differentiable=differentiable,
        )
        super().__init__(params, defaults)

    # The group keys are torch's, as slimgrad.optim's: share its state slots.
    _state_keys = _np.RMSprop._state_keys
