"""Parameters and gradient streams shared by test_optim_extra*.py."""

from __future__ import annotations

import numpy as np

# Shapes crossing vector widths (4/8/16 lanes), a quantization block (256),
# a work item (32768 elements) and an empty array. Trajectory tests run on
# every ISA with the default thread count; thread-count independence is
# checked bit-exactly, once, by test_results_identical_across_threads_per_isa.
SHAPES = [(1,), (7,), (9,), (17,), (0,), (3, 5), (257,), (3, 11_000), (8, 16)]


def make_params(rng, dtype, shapes=SHAPES):
    return {f"w{i}": np.asarray(rng.standard_normal(s), dtype) for i, s in enumerate(shapes)}


def grad_stream(rng, params, steps, scale=1.0):
    """Gradients of mixed magnitude per array, like a real model's layers."""
    mags = {k: 10.0 ** rng.uniform(-3, 1) for k in params}
    return [
        {
            k: np.asarray(scale * mags[k] * rng.standard_normal(p.shape), p.dtype)
            for k, p in params.items()
        }
        for _ in range(steps)
    ]
