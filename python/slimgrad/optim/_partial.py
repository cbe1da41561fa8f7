"""Steps where some gradients are None: torch's rule, the parameter is skipped."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._base import Optimizer

__all__ = ["step_present"]


def step_present(opt: Optimizer, flat: list[Any]) -> bool:
    """Step the parameters whose gradient is not None; the others keep state and count.

    The optimizer is stepped as if it held only those parameters: its flat lists
    are narrowed for the step (state is created for a parameter at its first
    gradient, as in torch) and the buckets are rebuilt afterwards, split by step
    count, since skipped parameters fall behind the others.
    """
    present = [i for i, g in enumerate(flat) if g is not None]
    if not present:
        return True
    full = (opt._keys, opt._params, opt._group_of)
    opt._keys = [full[0][i] for i in present]
    opt._params = [full[1][i] for i in present]
    opt._group_of = [full[2][i] for i in present]
    opt._buckets = None
    try:
        return opt._run_step([flat[i] for i in present])
    finally:
        opt._keys, opt._params, opt._group_of = full
        opt._buckets = None  # rebuilt over every parameter at the next step
