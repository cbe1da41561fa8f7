"""``flatten``: one contiguous buffer per dtype for a whole model."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from ._bucket import empty_at

__all__ = ["flatten"]


def flatten(params: Mapping[str, np.ndarray] | list[np.ndarray]) -> Any:
    """Copy arrays into one contiguous buffer per dtype; return views in the same structure.

    Parameters
    ----------
    params
        A dict ``{name: ndarray}`` or a list of ndarrays (any shapes; any
        dtypes, each dtype gets its own buffer).

    Returns
    -------
    dict or list
        The same names (or order) and shapes, holding the same values, as
        C-contiguous writable views that lie back to back in one buffer per
        dtype, in the given order. Each buffer starts on a 64-byte boundary.

    Why: an optimizer given params that are consecutive views of one buffer
    places their state the same way, and its C++ step merges arrays that are
    back to back in memory, so the whole model (params, grads if flattened
    too, states) is stepped as one long array: one kernel pass, big chunks,
    no per-array overhead. Flatten the gradients the same way (e.g.
    ``grads = flatten({k: np.zeros_like(v) for k, v in params.items()})``)
    and write them in place.

    Raises
    ------
    TypeError
        ``params`` is not a dict or list of ndarrays.
    """
    items: list[tuple[Any, np.ndarray]]
    if isinstance(params, Mapping):
        items = list(params.items())
    elif isinstance(params, (list, tuple)):
        items = list(enumerate(params))
    else:
        raise TypeError(
            f"params: expected a dict or a list of ndarrays, got {type(params).__name__}"
        )
    for k, a in items:
        if not isinstance(a, np.ndarray):
            raise TypeError(f"params[{k!r}]: expected an ndarray, got {type(a).__name__}")
    totals: dict[np.dtype, int] = {}
    for _, a in items:
        totals[a.dtype] = totals.get(a.dtype, 0) + a.size
    # 64-byte aligned: every arena (params, grads, the optimizer's state)
    # starts on a cache line, so the kernels' vectors never straddle two.
    buffers = {dt: empty_at((n,), dt, 0) for dt, n in totals.items()}
    offsets = dict.fromkeys(totals, 0)
    out = []
    for k, a in items:
        off = offsets[a.dtype]
        view = buffers[a.dtype][off : off + a.size].reshape(a.shape)
        view[...] = a
        offsets[a.dtype] = off + a.size
        out.append((k, view))
    if isinstance(params, Mapping):
        return dict(out)
    return [v for _, v in out]
