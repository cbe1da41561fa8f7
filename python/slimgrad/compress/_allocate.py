"""Mixed precision under a byte budget: one option per layer (e.g. a bit width),
chosen to lose the least quality in total.

Each layer ``l`` has options ``k`` with a size ``bytes[l][k]`` and a quality
drop ``drop[l][k]`` measured with only that layer compressed (the per-layer
sensitivity table). Drops are treated as additive, the usual first-order
assumption (and what the sensitivity table measures); the choice is then a
multiple-choice knapsack, solved exactly by dynamic programming over sizes
rounded *up* to ``resolution`` bytes, so the chosen sizes never exceed the
budget.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np


def allocate(
    sizes: Sequence[Sequence[int]],
    drops: Sequence[Sequence[float]],
    budget_bytes: int,
    *,
    resolution: int | None = None,
) -> list[int]:
    """Index of the chosen option for every layer.

    Parameters
    ----------
    sizes, drops : one sequence per layer, one entry per option
        Bytes of the layer under each option, and the quality lost with only
        that layer under that option (lower is better; may be negative).
    budget_bytes : int
        Upper bound on the total bytes of the chosen options.
    resolution : int, optional
        Bytes per DP cell (default: budget / 4096, at least 1). Sizes are
        rounded up to it, so a tiny slack of the budget may stay unused.

    Returns
    -------
    list of int
        Minimizes ``sum(drop)`` subject to ``sum(size) <= budget_bytes``; on
        equal totals the smaller size wins.

    Raises
    ------
    ValueError
        Ragged or empty options, negative sizes, non-finite drops, or a budget
        below the smallest possible model (the message gives that size).
    """
    if len(sizes) != len(drops):
        raise ValueError(
            f"sizes, drops: expected one entry per layer, got {len(sizes)} and {len(drops)}"
        )
    layers = []
    for i, (s, d) in enumerate(zip(sizes, drops)):
        s_arr, d_arr = np.asarray(s, dtype=np.int64), np.asarray(d, dtype=np.float64)
        if s_arr.ndim != 1 or s_arr.size == 0 or s_arr.shape != d_arr.shape:
            raise ValueError(
                f"layer {i}: expected as many sizes as drops (at least one), "
                f"got {s_arr.shape} and {d_arr.shape}"
            )
        if np.any(s_arr < 0) or not np.all(np.isfinite(d_arr)):
            raise ValueError(f"layer {i}: sizes must be >= 0 and drops finite")
        layers.append((s_arr, d_arr))
    smallest = int(sum(int(s.min()) for s, _ in layers))
    if budget_bytes < smallest:
        raise ValueError(
            f"budget_bytes: {budget_bytes} is below the smallest model "
            f"these options allow ({smallest} bytes)"
        )
    if not layers:
        return []
    res = resolution or max(1, budget_bytes // 4096)
    cells = budget_bytes // res
    # best[c] = least total drop using at most c cells; choice[l][c] = option taken at layer l
    best = np.zeros(cells + 1)
    choice = np.zeros((len(layers), cells + 1), dtype=np.int64)
    for li, (s, d) in enumerate(layers):
        cost = np.array([math.ceil(int(v) / res) for v in s], dtype=np.int64)
        new = np.full(cells + 1, np.inf)
        for k in np.argsort(s, kind="stable"):  # smaller options first: ties keep them
            if cost[k] > cells:
                continue
            cand = np.full(cells + 1, np.inf)
            cand[cost[k] :] = best[: cells + 1 - cost[k]] + d[k]
            take = cand < new
            new[take] = cand[take]
            choice[li][take] = k
        best = new
    if not np.isfinite(best[cells]):
        raise ValueError(
            f"budget_bytes: {budget_bytes} leaves no room once sizes are rounded up "
            f"to {res} bytes; pass a smaller resolution"
        )
    picks = [0] * len(layers)
    c = cells
    for li in range(len(layers) - 1, -1, -1):
        k = int(choice[li][c])
        picks[li] = k
        c -= math.ceil(int(layers[li][0][k]) / res)
    return picks
