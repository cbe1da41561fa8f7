"""Gradients given in the structure of the params, in the optimizer's flat order."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from ._base import Optimizer

__all__ = ["flat_grads"]


def flat_grads(opt: Optimizer, grads: Any) -> list[Any]:
    """grads in the flat order of params; TypeError/ValueError on a structure mismatch."""
    n = len(opt._keys)
    if isinstance(grads, Mapping):
        if opt._layout == "list" or not opt._str_keys:
            raise TypeError("grads: expected a list in the order of params, got dict")
        try:
            flat = [grads[k] for k in opt._keys]
        except KeyError:
            missing = [k for k in opt._keys if k not in grads]
            raise ValueError(
                f"grads: missing {missing[0]!r} (a gradient for every parameter is required)"
            ) from None
        if len(grads) != n:
            known = set(opt._keys)
            extra = [k for k in grads if k not in known]
            raise ValueError(f"grads: unexpected name {extra[0]!r} (not a parameter)")
        return flat
    if isinstance(grads, np.ndarray) or not isinstance(grads, (list, tuple)):
        want = (
            "a dict by parameter name" if opt._layout == "dict" else "a list in the order of params"
        )
        raise TypeError(f"grads: expected {want}, got {type(grads).__name__}")
    if opt._layout == "dict":
        raise TypeError("grads: expected a dict by parameter name, got list")
    if opt._layout == "groups" and grads and not isinstance(grads[0], np.ndarray):
        # One entry per group, each shaped like that group's params.
        if len(grads) != len(opt.param_groups):
            raise ValueError(f"grads: expected {len(opt.param_groups)} groups, got {len(grads)}")
        flat = []
        for gi, (group, gg) in enumerate(zip(opt.param_groups, grads)):
            gp = group["params"]
            if isinstance(gp, Mapping):
                if not isinstance(gg, Mapping):
                    raise TypeError(
                        f"grads[{gi}]: expected a dict by parameter name, got {type(gg).__name__}"
                    )
                missing = [k for k in gp if k not in gg]
                if missing:
                    raise ValueError(
                        f"grads: missing {missing[0]!r} "
                        "(a gradient for every parameter is required)"
                    )
                if len(gg) != len(gp):
                    extra = [k for k in gg if k not in gp]
                    raise ValueError(f"grads: unexpected name {extra[0]!r} (not a parameter)")
                flat.extend(gg[k] for k in gp)
            else:
                if not isinstance(gg, (list, tuple)):
                    raise TypeError(f"grads[{gi}]: expected a list, got {type(gg).__name__}")
                if len(gg) != len(gp):
                    raise ValueError(f"grads[{gi}]: expected {len(gp)} arrays, got {len(gg)}")
                flat.extend(gg)
        return flat
    if len(grads) != n:
        raise ValueError(f"grads: expected {n} arrays (one per parameter), got {len(grads)}")
    return list(grads)
