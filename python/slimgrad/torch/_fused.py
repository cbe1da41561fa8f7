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
import inspect
from typing import Any

import torch

from .. import _core
from ..optim import _optimizers as _np
from ._base import HALF, TorchOptimizer, as_array

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


class _Mirrored(_Fused):
    """A torch.optim optimizer's constructor, as it is: ``_mirrors`` is the torch class.

    The arguments go to torch's own constructor, on a placeholder parameter:
    its signature, argument checks (torch's messages) and defaults are ours,
    for whatever torch version is installed, and nothing is restated here.
    """

    _mirrors: Any = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.__signature__ = inspect.signature(cls._mirrors)  # what help() and IDEs show

    def __init__(self, params: Any, *args: Any, **kwargs: Any) -> None:
        probe = self._mirrors([torch.zeros(1, 1)], *args, **kwargs)
        super().__init__(params, dict(probe.defaults))


class SGD(_Mirrored):
    """``torch.optim.SGD`` (momentum, dampening, nesterov, weight decay, maximize).

    Same signature and state (``momentum_buffer`` when ``momentum != 0``) as torch.
    ``foreach`` and ``fused`` are accepted and ignored (the step is always fused).
    """

    _algo = "sgd"
    _mirrors = torch.optim.SGD
    _counts_steps = False

    def _step_of(self, state: dict[str, Any]) -> int:
        # torch's first step copies the gradient into a missing momentum buffer.
        return 2 if state.get("momentum_buffer") is not None else 1

    # The group keys are torch's, as slimgrad.optim's: share its state slots.
    _state_keys = _np.SGD._state_keys


class Adam(_Mirrored):
    """``torch.optim.Adam`` (amsgrad, maximize, ``decoupled_weight_decay``).

    Same signature, defaults and state (``step``, ``exp_avg``, ``exp_avg_sq``,
    ``max_exp_avg_sq`` with amsgrad) as torch; ``foreach``/``fused`` are accepted
    and ignored, ``capturable``/``differentiable`` must stay False.
    """

    _algo = "adam"
    _mirrors = torch.optim.Adam

    # The group keys are torch's, as slimgrad.optim's: share its state slots.
    _state_keys = _np.Adam._state_keys


class AdamW(Adam):
    """``torch.optim.AdamW``: :class:`Adam` with decoupled weight decay (default 1e-2)."""

    _mirrors = torch.optim.AdamW


class Adagrad(_Mirrored):
    """``torch.optim.Adagrad`` (lr_decay, initial_accumulator_value, maximize).

    State ``step`` and ``sum`` as torch's.
    """

    _algo = "adagrad"
    _mirrors = torch.optim.Adagrad

    def _fill(self, group):
        return float(group["initial_accumulator_value"])

    # The group keys are torch's, as slimgrad.optim's: share its state slots.
    _state_keys = _np.Adagrad._state_keys


class RMSprop(_Mirrored):
    """``torch.optim.RMSprop`` (momentum, centered, maximize).

    State ``step``, ``square_avg``, ``momentum_buffer`` (momentum > 0), ``grad_avg``
    (centered) as torch's.
    """

    _algo = "rmsprop"
    _mirrors = torch.optim.RMSprop

    # The group keys are torch's, as slimgrad.optim's: share its state slots.
    _state_keys = _np.RMSprop._state_keys
