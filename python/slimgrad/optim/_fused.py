"""The base of the optimizers stepped by ``_core.optim.step`` (SGD ... RAdam).

A subclass gives its algorithm's name (``_algo``, a row of the C++
descriptor table optim_table.hpp, which also gives the state keys) and how
the group's options fill the kernel's argument object (``_set_args``); its
options, declared as fields (:mod:`._options`), reach this class's
constructor as ``defaults``, checked here with :data:`OPTION_CHECKS` (so a
subclass does not check them itself).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .. import _core
from ._base import Optimizer
from ._bucket import Bucket
from ._checks import HALF_DTYPES, check_betas
from ._keywords import FamilyKeywords, take_keywords

__all__ = ["FusedOptimizer", "OPTIMIZER_TABLE"]

# The optimizer descriptor table of the C++ core (optim_table.hpp): name ->
# kind, numeric policy, options, state slots (key, storage, when).
OPTIMIZER_TABLE: dict[str, dict[str, Any]] = _core.optim.optimizers()

# Kernel options (StepArgs fields) whose group key has torch's name, or is one
# item of a pair: field -> (group key, item index or None).
_FROM_GROUP: dict[str, tuple[str, int | None]] = {
    "beta1": ("betas", 0),
    "beta2": ("betas", 1),
    "decoupled": ("decoupled_weight_decay", None),
    "etaminus": ("etas", 0),
    "etaplus": ("etas", 1),
    "step_size_min": ("step_sizes", 0),
    "step_size_max": ("step_sizes", 1),
}


class FusedOptimizer(Optimizer):
    """An optimizer stepped by ``_core.optim.step`` (one algorithm of optim.hpp)."""

    _algo = ""
    _kernel_grad_scale = True  # StepArgs.grad_scale: step(max_norm=...) clips inside the update

    _keywords: type = FamilyKeywords

    def __init__(self, params: Any, defaults: dict[str, Any], **keywords: Any) -> None:
        """``defaults``: the subclass's own options; ``keywords``: the shared tail
        its keyword mixin declares (``self._keywords``: maximize, torch's
        switches, nonfinite, rounding, seed, state_dtype, master_weights),
        defaults filled here."""
        nonfinite, shared = take_keywords(type(self).__name__, self._keywords, keywords)
        defaults = {**defaults, **shared}
        # The options' checks first, in the constructor's argument order (the
        # base class runs them again on the defaults; they are cheap).
        for k, v in defaults.items():
            if k in self._option_checks:
                self._option_checks[k](k, v)
        if "betas" in defaults:  # stored as a tuple of floats, as given to the kernel
            defaults = {**defaults, "betas": check_betas(defaults["betas"])}
        seed = defaults["seed"]
        if not isinstance(seed, (int, np.integer)) or seed < 0:
            raise ValueError(f"seed: expected an int >= 0, got {seed!r}")
        super().__init__(params, {**defaults, "seed": int(seed)}, nonfinite=nonfinite)

    def _state_keys(self, group: dict[str, Any]) -> list[str]:
        """State keys in use for a group's options, in the kernel's slot order.

        From the descriptor table (``_core.optim.optimizers()``): a slot is
        used when its condition is ``"always"`` or names a truthy option of
        the group (``momentum``, ``centered``, ``amsgrad``).
        """
        slots = OPTIMIZER_TABLE[self._algo]["slots"]
        return [key for key, _, when in slots if when == "always" or group.get(when)]

    def _init_state(self, group: dict[str, Any], param: np.ndarray) -> dict[str, Any]:
        return {k: self.state_full(param, group=group) for k in self._state_keys(group)}

    def _set_args(self, args: Any, group: dict[str, Any]) -> None:
        """Copy the group's options into the kernel's argument object.

        Each option of the table row comes from the group key of the same name,
        or of torch's name (``_FROM_GROUP``). Options the group has no key for
        (per-step values such as ASGD's ``eta``) are the subclass's to set.
        """
        for field in OPTIMIZER_TABLE[self._algo]["options"]:
            key, item = _FROM_GROUP.get(field, (field, None))
            if key in group:
                setattr(args, field, group[key] if item is None else group[key][item])

    def _bucket_call(self, group: dict[str, Any], b: Bucket) -> tuple[Any, list, tuple]:
        c = b.cache
        if not c:
            keys = self._state_keys(group)
            c["args"] = _core.optim.StepArgs()
            c["args"].algo = self._algo
            c["states"] = [b.states[k] for k in keys]
            c["names"] = (
                ["params" + lb for lb in b.labels],
                ["grads" + lb for lb in b.labels],
                None if b.masters is None else [f"state{lb}['master']" for lb in b.labels],
                [[f"state{lb}[{k!r}]" for lb in b.labels] for k in keys],
            )
        args = c["args"]
        self._set_args(args, group)
        self._check_layout(group, b)
        args.step = b.step
        args.grad_scale = b.grad_scale
        args.stochastic = group["rounding"] == "stochastic"
        args.seed = group["seed"]
        return args, c["states"], c["names"]

    def load_state_dict(self, state_dict: Any) -> None:
        """As :meth:`Optimizer.load_state_dict`; a state dict saved before the
        ``state_dtype`` / ``master_weights`` options existed loads as if it had
        their defaults (None, True)."""
        groups = state_dict.get("param_groups") if isinstance(state_dict, dict) else None
        if isinstance(groups, (list, tuple)) and any(
            isinstance(g, dict) and "params" in g and "state_dtype" not in g for g in groups
        ):
            filled = [
                {"state_dtype": None, "master_weights": True, **g} if isinstance(g, dict) else g
                for g in groups
            ]
            state_dict = {**state_dict, "param_groups": filled}
        super().load_state_dict(state_dict)

    def _check_layout(self, group: dict[str, Any], b: Bucket) -> None:
        """The group's state_dtype / master_weights must describe the state that
        exists (they decide its layout, so they cannot change after the first
        step); sets the kernel's flags from the state itself."""
        args = b.cache["args"]
        if "layout" not in b.cache:
            arrays = [v[0] for v in b.cache["states"]]
            b.cache["layout"] = (
                arrays[0].dtype if arrays else None,
                b.masters is not None or b.dtype not in HALF_DTYPES,
            )
        have_dtype, have_master = b.cache["layout"]
        want_dtype = self.state_dtype_for(group, b.params[0], "params" + b.labels[0])
        if have_dtype is not None and want_dtype != have_dtype:
            raise ValueError(
                f"state_dtype: cannot change after the first step (state{b.labels[0]} holds "
                f"{have_dtype.name} arrays, the group now asks for {want_dtype.name})"
            )
        want_master = self.uses_master(group, b.params[0]) or b.dtype not in HALF_DTYPES
        if want_master != have_master:
            raise ValueError(
                "master_weights: cannot change after the first step "
                f"(state{b.labels[0]} {'has' if have_master else 'has no'} float32 master copy)"
            )
        args.bf16_state = have_dtype is not None and have_dtype.itemsize == 2
        args.master_weights = have_master

    def _step_bucket(self, group: dict[str, Any], b: Bucket, check: bool) -> tuple[int, int] | None:
        args, states, names = self._bucket_call(group, b)
        return _core.optim.step(args, b.params, b.grads, b.masters, states, names, check)

    def _validate_all(self, buckets: list[Bucket]) -> None:
        for b in buckets:
            args, states, names = self._bucket_call(self.param_groups[b.group_index], b)
            _core.optim.check_step(args, b.params, b.grads, b.masters, states, names)
