"""The bridge: torch CPU tensors as NumPy arrays, and the optimizer base class.

A subclass of :class:`TorchOptimizer` says which state tensors a parameter has
(``_init_state``, ``_state_dtype``) and how one bucket is stepped (``_run``:
the parameters of one group sharing a dtype and a step count, as NumPy views).
The base validates every parameter with a gradient before anything is modified,
creates state lazily in torch's layout, keeps torch's ``"step"`` tensors, and
restores the state dtypes the kernels need after ``load_state_dict`` (torch
casts floating state to the parameter's dtype on load).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from ml_dtypes import bfloat16 as _np_bfloat16

__all__ = ["TorchOptimizer", "as_array"]

PARAM_DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)
HALF = (torch.float16, torch.bfloat16)
UNSUPPORTED_FLAGS = ("capturable", "differentiable")


def as_array(t: torch.Tensor) -> np.ndarray:
    """The memory of a contiguous CPU tensor as a writable NumPy array (no copy).

    bfloat16 tensors are viewed as int16 and reinterpreted as ``ml_dtypes.bfloat16``
    (NumPy has no bfloat16 of its own); every other dtype is ``Tensor.numpy()``.
    """
    t = t.detach()
    if t.dtype == torch.bfloat16:
        return t.view(torch.int16).numpy().view(_np_bfloat16)
    return t.numpy()


def _where(gi: int, pi: int) -> str:
    return f"param_groups[{gi}]['params'][{pi}]"


def _check_param(p: torch.Tensor, gi: int, pi: int) -> None:
    """Raise (naming the parameter and the fix) unless the kernels can step ``p`` in place."""
    where, g = _where(gi, pi), p.grad
    if p.device.type != "cpu":
        raise ValueError(
            f"{where}: slimgrad.torch steps CPU tensors, got one on {p.device} "
            "(keep the parameters, or an offloaded copy of them, in host memory)"
        )
    if p.dtype not in PARAM_DTYPES:
        raise TypeError(f"{where}: expected float32, float64, float16 or bfloat16, got {p.dtype}")
    if g.is_sparse or g.layout != torch.strided:
        raise TypeError(f"{where}: sparse gradients are not supported (got {g.layout})")
    if g.dtype != p.dtype or g.shape != p.shape or g.device != p.device:
        raise TypeError(
            f"{where}.grad: expected {p.dtype} of shape {tuple(p.shape)} on {p.device}, "
            f"got {g.dtype} of shape {tuple(g.shape)} on {g.device}"
        )
    for name, t in ((where, p), (where + ".grad", g)):
        if not t.is_contiguous():
            raise TypeError(
                f"{name}: expected a contiguous tensor (the kernels step memory in place); "
                "make the parameter contiguous before building the optimizer"
            )


def check_flags(defaults: dict[str, Any]) -> None:
    for flag in UNSUPPORTED_FLAGS:
        if defaults.get(flag):
            raise ValueError(
                f"{flag}=True is not supported by slimgrad.torch (CPU tensors, no autograd "
                "through the step); leave it False"
            )


def check_range(name: str, value: Any, low: float = 0.0, high: float | None = None) -> None:
    """torch's argument checks, with torch's wording."""
    if isinstance(value, torch.Tensor):
        value = value.item()
    if not low <= value or (high is not None and not value < high):
        raise ValueError(f"Invalid {name} value: {value}")


# torch's names of the options in its messages.
_TORCH_NAMES = {"lr": "learning rate", "eps": "epsilon", "weight_decay": "weight_decay"}


def check_options(options: dict[str, Any]) -> dict[str, Any]:
    """torch's checks of ``lr``, ``eps``, ``betas`` and ``weight_decay``, those
    in ``options``, in that order and torch's wording; returns ``options``."""
    for key in ("lr", "eps", "betas", "weight_decay"):
        if key == "betas" and key in options:
            for i in (0, 1):
                check_range(f"beta parameter at index {i}", options[key][i], 0.0, 1.0)
        elif key in options:
            check_range(_TORCH_NAMES[key], options[key])
    return options


class TorchOptimizer(torch.optim.Optimizer):
    """Base of the slimgrad.torch optimizers (see the module docstring)."""

    # Whether the state has torch's "step" tensor (SGD has none).
    _counts_steps = True

    def __init__(self, params: Any, defaults: dict[str, Any], **keywords: Any) -> None:
        """``keywords``: the shared keyword tail (``maximize``), kept in the groups
        after the options, as torch keeps it."""
        defaults = {**defaults, **keywords}
        check_flags(defaults)
        super().__init__(params, defaults)

    # -- the subclass contract ----------------------------------------------------

    def _init_state(self, group: dict[str, Any], p: torch.Tensor) -> dict[str, torch.Tensor]:
        """Fresh state tensors of one parameter, without ``"step"``."""
        raise NotImplementedError

    def _state_dtype(self, group: dict[str, Any], p: torch.Tensor, key: str) -> torch.dtype:
        """The dtype the kernel needs for state ``key`` of ``p``."""
        return torch.float32 if p.dtype in HALF else p.dtype

    def _run(self, group: dict[str, Any], params: list[torch.Tensor], step: int) -> None:
        """Step ``params`` (same dtype, same step count, states created) in place."""
        raise NotImplementedError

    # -- helpers for subclasses ---------------------------------------------------

    def _view(self, t: torch.Tensor) -> np.ndarray:
        """``as_array(t)``, cached for tensors that live across steps (params, states).

        An entry is used only while it belongs to the same tensor object at the same
        address and shape (``p.data = ...`` swaps the memory under the object).
        """
        views = self.__dict__.setdefault("_views", {})
        hit = views.get(id(t))
        if hit is not None and hit[0] is t and hit[1] == t.data_ptr() and hit[2].shape == t.shape:
            return hit[2]
        arr = as_array(t)
        views[id(t)] = (t, t.data_ptr(), arr)
        return arr

    def _states(self, group: dict[str, Any], params: list[torch.Tensor], key: str) -> list[Any]:
        """State ``key`` of every parameter as NumPy views, in the dtype the kernel needs."""
        want = self._state_dtype(group, params[0], key)  # one dtype per bucket
        out = []
        for p in params:
            st = self.state[p]
            if st[key].dtype != want:  # e.g. converted by a state dict from elsewhere
                st[key] = st[key].to(want)
            out.append(self._view(st[key]))
        return out

    def _fast_ready(self) -> list[Callable[[], None]] | None:
        """One callable per group that steps it, if every group can take the
        cached path (validated, nothing modified yet); else None."""
        return None

    def _step_of(self, state: dict[str, Any]) -> int:
        """The step count including this step (1 on the first)."""
        if "step" not in state:
            return 1
        return int(state["step"]) + 1

    # -- torch's API ----------------------------------------------------------------

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """Perform one optimization step on every parameter that has a gradient.

        Parameters
        ----------
        closure : callable, optional
            Re-evaluates the model and returns the loss (run with grad enabled).

        Returns
        -------
        The closure's loss, or None.

        Raises
        ------
        ValueError, TypeError
            A parameter not on the CPU, of another dtype, non-contiguous, or with
            a sparse or mismatched gradient: raised before anything is modified.
        """
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        # The steady state (every group stepped as last time, every parameter
        # with a gradient): cached views and arguments, checked in one pass.
        ready_groups = self._fast_ready()
        if ready_groups is not None:
            for run in ready_groups:
                run()
            return loss
        plan = []
        for gi, group in enumerate(self.param_groups):
            ready = []
            for pi, p in enumerate(group["params"]):
                if p.grad is not None:  # torch skips parameters without a gradient
                    _check_param(p, gi, pi)
                    ready.append(p)
            plan.append((group, ready))
        plans = self.__dict__.get("_plans", {})
        for group, ready in plan:
            # A plan is rebuilt by _run when the group is again one bucket
            # (step counts may have diverged here: some gradients were None).
            plans.pop(id(group), None)
            buckets: dict[tuple[torch.dtype, int], list[torch.Tensor]] = {}
            for p in ready:
                state = self.state[p]
                step = self._step_of(state)
                if not state:
                    state.update(self._init_state(group, p))
                    if self._counts_steps:
                        # torch's layout: a float32 scalar tensor.
                        state["step"] = torch.tensor(0.0, dtype=torch.float32)
                buckets.setdefault((p.dtype, step), []).append(p)
            for (_, step), params in buckets.items():
                self._run(group, params, step)
                if self._counts_steps:
                    steps = [self.state[p]["step"] for p in params]
                    if all(isinstance(t, torch.Tensor) for t in steps):
                        torch._foreach_add_(steps, 1)  # one call, as torch's own optimizers
                    else:  # a plain number from an old state dict
                        for p in params:
                            self.state[p]["step"] += 1
        return loss

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Load a state dict in torch's format (from this class or the torch.optim one).

        As :meth:`torch.optim.Optimizer.load_state_dict`, then the state tensors torch
        cast to the parameter's dtype are restored, losslessly from the saved ones,
        to the dtype the kernels use (float32 states of float16 parameters, 8-bit
        codes and float32 scales of AdamW8bit).
        """
        super().load_state_dict(state_dict)
        self.__dict__.pop("_views", None)
        self.__dict__.pop("_plans", None)
        saved_ids = [i for g in state_dict["param_groups"] for i in g["params"]]
        params = [p for g in self.param_groups for p in g["params"]]
        groups = [g for g in self.param_groups for _ in g["params"]]
        for sid, p, group in zip(saved_ids, params, groups):
            saved = state_dict["state"].get(sid)
            if not saved or p not in self.state:
                continue
            for key, value in saved.items():
                if key == "step" or not isinstance(value, torch.Tensor):
                    continue
                want = self._state_dtype(group, p, key)
                if self.state[p][key].dtype != want:
                    self.state[p][key] = value.to(dtype=want, device=p.device, copy=True)
