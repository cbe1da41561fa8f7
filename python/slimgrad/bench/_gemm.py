"""What the GEMM suites (qgemm, sparse) share: their weights and the random
stream their inputs come from."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import numpy as np

__all__ = ["gemm_weights"]


def gemm_weights(
    size: int, shapes: Iterable[tuple[int, int]]
) -> Iterator[tuple[np.random.Generator, np.ndarray]]:
    """``(rng, w)`` for a float32 standard normal ``w`` of shape ``(size, size)``,
    then of each ``(out, in)`` of ``shapes``.

    One generator seeded 0 draws every weight; the caller draws its inputs from the
    same ``rng`` between weights, so each run times the same numbers.
    """
    rng = np.random.default_rng(0)
    for out_f, in_f in [(size, size), *shapes]:
        yield rng, rng.standard_normal((out_f, in_f), dtype=np.float32)
