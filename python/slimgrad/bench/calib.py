"""calib suite: the fused Hessian accumulation ``H += X^T X`` against NumPy's float32 GEMM.

Shapes are MiniLM's Linear inputs: (tokens, 384) for the attention and
FFN-in projections, (tokens, 1536) for the FFN-out projection.
  - slimgrad: ``models.hessian_accumulate`` into a float64 H (float32 FMA
    within 256-token blocks), plus the per-channel |x| and x^2 sums.
  - slimgrad f32 H: the same into a float32 H, no channel statistics.
  - numpy X^T X: ``np.matmul(x.T, x, out=t)`` (OpenBLAS sgemm on the same
    shapes, full square product), no accumulation: the GEMM alone.
  - numpy X^T Y: a GEMM with a second operand (no symmetric shortcut
    possible), the same flop count.
  - numpy H += X^T X: what a calibration loop in NumPy does per batch
    (GEMM into a temporary, then a float64 add).
The goal is ours at >= 70 % of NumPy's GEMM throughput ("vs ours" >= 0.7
for the numpy rows). ``bytes`` is not meaningful here (compute-bound):
the note gives the GEMM's flops (2 * tokens * d^2).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from ..models.calibration import hessian_accumulate
from . import Case

DEFAULT_SIZE = 2048  # tokens per batch


def cases(size: int) -> Iterator[Case]:
    rng = np.random.default_rng(0)
    for d in (384, 1536):
        x = rng.standard_normal((size, d), dtype=np.float32)
        y = rng.standard_normal((size, d), dtype=np.float32)
        h64 = np.zeros((d, d))
        h32 = np.zeros((d, d), np.float32)
        a, q = np.zeros(d), np.zeros(d)
        t = np.empty((d, d), np.float32)
        impls = {
            "slimgrad": lambda x=x, h=h64, a=a, q=q: hessian_accumulate(x, h, a, q),
            "slimgrad f32 H": lambda x=x, h=h32: hessian_accumulate(x, h),
            "numpy X^T X": lambda x=x, t=t: np.matmul(x.T, x, out=t),
            "numpy X^T Y": lambda x=x, y=y, t=t: np.matmul(x.T, y, out=t),
            "numpy H += X^T X": lambda x=x, h=h64: np.add(h, x.T @ x, out=h),
        }
        gflop = 2 * size * d * d / 1e9
        yield Case(f"hessian {size}x{d}", impls, note=f"{gflop:.2f} GFLOP per call")
