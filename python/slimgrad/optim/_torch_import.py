"""Import a torch.optim state dict into a slimgrad.optim optimizer."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from ._base import Optimizer

__all__ = ["from_torch_state_dict"]

# torch's execution flags: no meaning here, dropped unless the optimizer has them.
_TORCH_FLAGS = ("foreach", "fused", "capturable", "differentiable")


def _scalar(v: Any) -> Any:
    """torch tensors (a tensor lr, a step) and tuples of them as Python numbers."""
    if hasattr(v, "item") and hasattr(v, "detach"):
        return v.item()
    if isinstance(v, tuple):
        return tuple(_scalar(x) for x in v)
    return v


def _array(v: Any, like: np.ndarray, where: str) -> np.ndarray:
    """A torch tensor (any float dtype, bfloat16 included) or array as ``like``'s dtype."""
    if hasattr(v, "detach"):
        t = v.detach().cpu()
        v = t.double().numpy() if t.is_floating_point() else t.numpy()
    a = np.asarray(v)
    if a.shape != like.shape:
        raise ValueError(f"{where}: expected shape {like.shape}, got {a.shape}")
    return a.astype(like.dtype)


def from_torch_state_dict(optimizer: Optimizer, state_dict: Mapping[str, Any]) -> dict[str, Any]:
    """This optimizer's state dict holding the state of a torch.optim state dict.

    ``optimizer.load_state_dict(from_torch_state_dict(optimizer, torch_sd))`` continues
    a run of the torch optimizer of the same algorithm (``torch.optim.AdamW`` into
    :class:`AdamW`, ...) on the same parameters, given in the same order and groups.
    Torch numbers parameters 0, 1, ... across its groups; they are matched to this
    optimizer's parameters by position. Group options come from torch (a tensor
    ``lr`` becomes a float, ``foreach``/``fused``/``capturable``/``differentiable``
    are dropped, scheduler keys such as ``initial_lr`` kept); options torch does not
    have (``rounding``, ``seed``, ...) keep this optimizer's values. State tensors
    are converted to the dtypes this optimizer keeps (float32 moments for
    float16/bfloat16 parameters, whose float32 ``master`` copy is made from the
    parameter); ``step`` tensors become ints, scalar state tensors (NAdam's
    ``mu_product``, ASGD's ``eta`` and ``mu``) floats, and a torch SGD momentum buffer
    counts as one step taken. Torch is not imported: tensors are read through
    ``.detach()``.

    Parameters
    ----------
    optimizer : slimgrad.optim.Optimizer
        The optimizer to load into (its parameters hold the values to continue from).
    state_dict : dict
        ``torch.optim.Optimizer.state_dict()`` output (or ``torch.load`` of one).

    Returns
    -------
    dict
        A state dict for ``optimizer.load_state_dict`` (which checks it again).

    Raises
    ------
    ValueError
        Different numbers of groups or parameters, a parameter id torch lists in
        no group, or a state tensor of another shape.
    """
    theirs = state_dict["param_groups"]
    ours = optimizer.state_dict()["param_groups"]
    if len(theirs) != len(ours):
        raise ValueError(
            f"state_dict['param_groups']: expected {len(ours)} groups, got {len(theirs)}"
        )
    keys: dict[Any, Any] = {}
    groups = []
    for gi, (gt, go) in enumerate(zip(theirs, ours)):
        if len(gt["params"]) != len(go["params"]):
            raise ValueError(
                f"state_dict['param_groups'][{gi}]: expected {len(go['params'])} params, "
                f"got {len(gt['params'])}"
            )
        keys.update(zip(gt["params"], go["params"]))
        group = dict(go)
        for k, v in gt.items():
            if k != "params" and (k not in _TORCH_FLAGS or k in go):
                group[k] = _scalar(v)
        groups.append(group)
    state = {}
    for pid, st in state_dict["state"].items():
        if pid not in keys:
            raise ValueError(f"state_dict['state'][{pid!r}]: not a parameter of any group")
        key = keys[pid]
        i = optimizer._keys.index(key)
        p, group = optimizer._params[i], groups[optimizer._group_of[i]]
        template = optimizer._full_init_state(
            {**optimizer.param_groups[optimizer._group_of[i]], **group}, p
        )
        entry: dict[str, Any] = {}
        for name, v in st.items():
            if v is None:
                continue  # torch's SGD without momentum keeps momentum_buffer=None
            if name == "step":
                entry["step"] = int(_scalar(v))
            elif name in template and not isinstance(template[name], np.ndarray):
                entry[name] = _scalar(v)  # a per-tensor scalar (NAdam's mu_product, ASGD's eta)
            elif name in template:
                entry[name] = _array(v, template[name], f"state_dict['state'][{pid!r}][{name!r}]")
            else:
                entry[name] = v  # load_state_dict names what it does not expect
        if not any(k != "step" for k in entry) and "step" not in entry:
            continue
        entry.setdefault("step", 1)  # SGD: a momentum buffer means a step was taken
        if "master" in template:
            entry["master"] = p.astype(np.float32)
        state[key] = entry
    return {"state": state, "param_groups": groups}
