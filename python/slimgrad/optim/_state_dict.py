"""``Optimizer.state_dict`` / ``load_state_dict``: copy out, check everything, copy in.

Loading checks the whole state dict before it changes anything: first the
param groups (:func:`_checked_groups`), then each parameter's state against
the state this optimizer would create (:func:`_checked_state`); only then
are the groups updated and the state replaced.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from ._bucket import Key, label

if TYPE_CHECKING:
    from ._base import Optimizer

__all__ = ["load_state_dict", "state_dict"]


def state_dict(opt: Optimizer) -> dict[str, Any]:
    """A copy of ``opt``'s state (see :meth:`Optimizer.state_dict`)."""
    state = {
        k: {n: (v.copy() if isinstance(v, np.ndarray) else v) for n, v in st.items()}
        for k, st in opt.state.items()
    }
    groups = []
    for gi, g in enumerate(opt.param_groups):
        d = {n: copy.deepcopy(v) for n, v in g.items() if n != "params"}
        d["params"] = opt._group_keys(gi)
        groups.append(d)
    return {"state": state, "param_groups": groups}


def load_state_dict(opt: Optimizer, state_dict: Mapping[str, Any]) -> None:
    """Load ``state_dict`` into ``opt`` (see :meth:`Optimizer.load_state_dict`)."""
    if not isinstance(state_dict, Mapping) or set(state_dict) != {"state", "param_groups"}:
        raise TypeError("state_dict: expected a dict with exactly 'state' and 'param_groups'")
    groups, state = state_dict["param_groups"], state_dict["state"]
    if not isinstance(groups, (list, tuple)) or not isinstance(state, Mapping):
        raise TypeError("state_dict: 'param_groups' must be a list and 'state' a dict")
    new_groups = _checked_groups(opt, groups)
    new_state = _checked_state(opt, new_groups, state)
    # All checked: commit.
    for mine, new in zip(opt.param_groups, new_groups):
        mine.update(new)
    opt.state = new_state
    opt._buckets = None


def _checked_groups(opt: Optimizer, groups: list[Any] | tuple[Any, ...]) -> list[dict[str, Any]]:
    """The options of the state dict's groups, checked and copied (without "params")."""
    if len(groups) != len(opt.param_groups):
        raise ValueError(
            f"state_dict: expected {len(opt.param_groups)} param groups, got {len(groups)}"
        )
    new_groups = []
    for gi, (mine, theirs) in enumerate(zip(opt.param_groups, groups)):
        if not isinstance(theirs, Mapping) or "params" not in theirs:
            raise TypeError(f"state_dict['param_groups'][{gi}]: expected a dict with 'params'")
        keys = opt._group_keys(gi)
        if list(theirs["params"]) != keys:
            raise ValueError(
                f"state_dict['param_groups'][{gi}]['params']: expected keys {keys}, "
                f"got {list(theirs['params'])}"
            )
        # Extra keys (a scheduler's "initial_lr", torch's "foreach"...) are
        # kept, as torch does; every option of this optimizer must be there.
        if not set(mine) <= set(theirs):
            raise ValueError(
                f"state_dict['param_groups'][{gi}]: missing option(s) "
                f"{sorted(set(mine) - set(theirs))}; expected {sorted(set(mine) - {'params'})}"
            )
        for k, v in theirs.items():
            if k in opt._option_checks:
                opt._option_checks[k](f"state_dict['param_groups'][{gi}][{k!r}]", v)
        new_groups.append({n: copy.deepcopy(v) for n, v in theirs.items() if n != "params"})
    return new_groups


def _checked_state(
    opt: Optimizer, new_groups: list[dict[str, Any]], state: Mapping[Any, Any]
) -> dict[Key, dict[str, Any]]:
    """The state dict's per-parameter state, checked and copied into fresh arrays."""
    unknown = [k for k in state if k not in set(opt._keys)]
    if unknown:
        raise ValueError(f"state_dict['state']: unexpected key {unknown[0]!r} (not a parameter)")
    new_state: dict[Key, dict[str, Any]] = {}
    for gi, group in enumerate(new_groups):
        steps = set()
        keys = opt._group_keys(gi)
        present = [k for k in keys if k in state]
        if present and len(present) != len(keys):
            missing = next(k for k in keys if k not in state)
            raise ValueError(f"state_dict['state']: missing {missing!r} (its group has state)")
        for k in present:
            p = opt._params[opt._keys.index(k)]
            template = opt._full_init_state({**opt.param_groups[gi], **group}, p)
            st = _checked_param_state(f"state_dict['state']{label(k)}", template, state[k])
            steps.add(st["step"])
            new_state[k] = st
        if len(steps) > 1:
            raise ValueError(
                f"state_dict['state']: group {gi} has different step counts {sorted(steps)}"
            )
    return new_state


def _checked_param_state(where: str, template: dict[str, Any], theirs: Any) -> dict[str, Any]:
    """One parameter's state: the entries of ``template`` (fresh state) filled from ``theirs``."""
    if not isinstance(theirs, Mapping):
        raise TypeError(f"{where}: expected a dict, got {type(theirs).__name__}")
    if set(theirs) != set(template):
        raise ValueError(f"{where}: expected entries {sorted(template)}, got {sorted(theirs)}")
    st: dict[str, Any] = {}
    for n, t in template.items():
        v = theirs[n]
        if isinstance(t, np.ndarray):
            if not isinstance(v, np.ndarray) or v.shape != t.shape or v.dtype != t.dtype:
                got = (
                    f"{v.dtype.name} array of shape {v.shape}"
                    if isinstance(v, np.ndarray)
                    else type(v).__name__
                )
                raise ValueError(
                    f"{where}[{n!r}]: expected {t.dtype.name} array of shape {t.shape}, got {got}"
                )
            t[...] = v  # the fresh array is placed like the optimizer's own state
            st[n] = t
        else:
            ok = isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool)
            if not ok or (n == "step" and (int(v) != v or v < 0)):
                raise ValueError(f"{where}[{n!r}]: expected a non-negative number, got {v!r}")
            st[n] = type(t)(v)
    return st
