"""The mixed-precision allocator against brute force, and its refusals."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from slimgrad.compress import allocate


def brute_force(sizes, drops, budget):
    best = None
    for picks in itertools.product(*(range(len(s)) for s in sizes)):
        size = sum(s[k] for s, k in zip(sizes, picks))
        drop = sum(d[k] for d, k in zip(drops, picks))
        if size <= budget and (best is None or drop < best[0] - 1e-12):
            best = (drop, picks)
    return best


@pytest.mark.parametrize("seed", range(20))
def test_matches_brute_force(seed):
    rng = np.random.default_rng(seed)
    layers = int(rng.integers(1, 6))
    sizes = [list(rng.integers(10, 200, size=int(rng.integers(1, 4)))) for _ in range(layers)]
    drops = [list(rng.uniform(-0.01, 1.0, size=len(s))) for s in sizes]
    smallest = sum(min(s) for s in sizes)
    budget = int(smallest + rng.integers(0, 300))
    picks = allocate(sizes, drops, budget, resolution=1)
    drop, _ = brute_force(sizes, drops, budget)
    assert sum(s[k] for s, k in zip(sizes, picks)) <= budget
    assert sum(d[k] for d, k in zip(drops, picks)) == pytest.approx(drop, abs=1e-12)


def test_coarse_resolution_never_exceeds_the_budget():
    sizes = [[100, 300, 500]] * 8
    drops = [[0.3, 0.1, 0.0]] * 8
    picks = allocate(sizes, drops, 2400, resolution=7)
    assert sum(sizes[0][k] for k in picks) <= 2400


def test_ties_pick_the_smaller_option():
    assert allocate([[10, 20]], [[0.0, 0.0]], 100) == [0]


def test_refusals():
    with pytest.raises(
        ValueError,
        match=r"budget_bytes: 5 is below the smallest model these options allow \(20 bytes\)",
    ):
        allocate([[10, 30], [10]], [[1, 0], [0]], 5)
    with pytest.raises(ValueError, match="expected one entry per layer"):
        allocate([[1]], [[0], [1]], 10)
    with pytest.raises(ValueError, match="layer 0: expected as many sizes as drops"):
        allocate([[1, 2]], [[0]], 10)
    with pytest.raises(ValueError, match="drops finite"):
        allocate([[1]], [[float("nan")]], 10)
