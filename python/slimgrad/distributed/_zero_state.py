"""State dicts of a ZeroRedundancyOptimizer: from pieces to whole arrays and back.

The *consolidated* form is exactly what the unsharded optimizer's
``state_dict()`` gives (``{"state": {key: {...}}, "param_groups": [...]}``),
so state moves freely between a single process and any number of ranks.
A piece's state arrays are 1-D slices of the whole arrays (param-shaped
entries cut at the piece's elements; AdamW8bit's per-block scales cut at its
256-element blocks), so consolidation is a concatenation in element order.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np


def assemble(shape: tuple[int, ...], parts: list[tuple[int, int, bool, Mapping[str, Any]]]) -> dict:
    """Whole-parameter state from its pieces' states ``(lo, hi, whole, state)``."""
    parts = sorted(parts, key=lambda t: t[0])
    if len(parts) == 1 and parts[0][2]:
        return dict(parts[0][3])
    size = int(np.prod(shape, dtype=np.int64))
    out: dict[str, Any] = {}
    for name, v in parts[0][3].items():
        if isinstance(v, np.ndarray):
            cat = np.concatenate([np.asarray(t[3][name]).reshape(-1) for t in parts])
            out[name] = cat.reshape(shape) if cat.size == size else cat
        else:
            out[name] = v
    return out


def cut(
    shape: tuple[int, ...], state: Mapping[str, Any], lo: int, hi: int, whole: bool, g: int | None
) -> dict:
    """The state of piece ``[lo, hi)`` of a parameter from its whole state."""
    if whole:
        return dict(state)
    size = int(np.prod(shape, dtype=np.int64))
    out: dict[str, Any] = {}
    for name, v in state.items():
        if not isinstance(v, np.ndarray):
            out[name] = v
        elif v.size == size:
            out[name] = v.reshape(-1)[lo:hi]
        elif g is not None and v.size == -(-size // g):
            out[name] = v.reshape(-1)[lo // g : -(-hi // g)]
        else:
            raise ValueError(
                f"state[{name!r}]: cannot cut an array of {v.size} elements for a parameter of "
                f"shape {tuple(shape)}"
            )
    return out


# ----------------------------------------------------------- ZeRO methods
def local_state(self: Any) -> dict[str, Any]:
    """This rank's pieces and their inner state (what a shard file holds)."""
    inner = {} if self.optimizer is None else self.optimizer.state
    return {
        "pieces": [[pc.key, pc.lo, pc.hi, pc.whole] for pc in self.pieces],
        "state": {pc.name: dict(inner[pc.name]) for pc in self.pieces if pc.name in inner},
    }


def _outer_groups(self: Any, groups: list[Mapping[str, Any]] | None = None) -> list[dict]:
    from ._flat import keys_of

    out = []
    for gi, ks in enumerate(keys_of(self.param_groups)):
        src = self.param_groups[gi] if groups is None else groups[gi]
        d = {k: v for k, v in src.items() if k != "params"}
        d["params"] = ks
        out.append(d)
    return out


def consolidated_state_dict(self: Any) -> dict[str, Any]:
    """The whole optimizer's state dict, on every rank (a collective: every rank calls it).

    Equal to what the unsharded ``optimizer_class`` would return, so it loads
    into one with ``load_state_dict``. Every rank receives every shard: for
    big models prefer :func:`slimgrad.distributed.save`.
    """
    shards = self.comm.allgather_object(local_state(self))
    parts: dict[Any, list] = {}
    for shard in shards:
        for key, lo, hi, whole in shard["pieces"]:
            name = str(key) if whole else f"{key}@{lo}:{hi}"
            if name in shard["state"]:
                parts.setdefault(key, []).append((lo, hi, whole, shard["state"][name]))
    state = {}
    for k, p in zip(self._keys, self._params):
        if k in parts:
            state[k] = assemble(p.shape, parts[k])
    return {"state": state, "param_groups": _outer_groups(self)}


state_dict = consolidated_state_dict


def load_state_dict(self: Any, state_dict: Any) -> None:
    """Load a whole state dict (from ``state_dict()`` of this class or of the unsharded
    optimizer) or a sharded checkpoint entry (:func:`slimgrad.distributed.load`), on
    any number of ranks. A collective.

    Each rank takes the slices of its pieces. Everything is checked first, on
    every rank; an error on any rank raises ``ValueError`` on all of them and
    nothing is changed anywhere.
    """
    error = None
    fresh = None
    try:
        groups = state_dict["param_groups"]
        mine = _outer_groups(self)
        if len(groups) != len(mine):
            raise ValueError(f"state_dict: expected {len(mine)} param groups, got {len(groups)}")
        for gi, (g, m) in enumerate(zip(groups, mine)):
            if list(g["params"]) != m["params"]:
                raise ValueError(
                    f"state_dict['param_groups'][{gi}]['params']: expected keys {m['params']}, "
                    f"got {list(g['params'])}"
                )
        needed = sorted({pc.key for pc in self.pieces}, key=self._keys.index)
        if hasattr(state_dict, "full_state"):
            whole = state_dict.full_state(needed)
        else:
            whole = {k: state_dict["state"][k] for k in needed if k in state_dict["state"]}
        inner_state = {}
        for pc in self.pieces:
            if pc.key in whole:
                shape = self._params[pc.index].shape
                inner_state[pc.name] = cut(
                    shape, whole[pc.key], pc.lo, pc.hi, pc.whole, self.granularity
                )
        inner_groups = []
        for gi in self._inner_groups():
            d = {k: v for k, v in groups[gi].items() if k != "params"}
            d["params"] = [pc.name for pc in self.pieces if pc.group == gi]
            inner_groups.append(d)
        fresh = self._new_inner()
        if fresh is not None:
            fresh.load_state_dict({"state": inner_state, "param_groups": inner_groups})
    except (KeyError, TypeError, ValueError) as e:
        error = f"rank {self.comm.rank}: {type(e).__name__}: {e}"
    errors = [e for e in self.comm.allgather_object(error) if e is not None]
    if errors:
        raise ValueError(f"load_state_dict: nothing was loaded on any rank; {errors[0]}")
    for gi, g in enumerate(groups):
        self.param_groups[gi].update({k: v for k, v in g.items() if k != "params"})
    self.optimizer = fresh
