"""The float32 copy a float32-only kernel reads in place of another float array.

Shared by the areas that take weights in any float dtype (``quant``'s
quantizers, the commands' reports, ``prune``'s selections over mixed dtypes;
a selection of one half dtype ranks its bits directly): float16 and
bfloat16, a checkpoint's usual dtypes, are widened exactly by
``_core.widen_half`` on the threads, into a reused output block. NumPy's
``astype`` took 11 ms (bfloat16, ml_dtypes) and 25 ms (float16) for 16M
values on the Zen 5 VM, against 2.4-3.1 ms, and more than the kernels that
followed.
"""

from __future__ import annotations

import numpy as np

from . import _core


def as_float32(w: np.ndarray) -> np.ndarray:
    """``w`` (a floating-point array) as float32, C-contiguous: ``w`` itself
    when it already is; float16 / bfloat16 widened exactly (a new array);
    anything else converted by NumPy (a new array)."""
    if w.dtype.itemsize == 2:
        return _core.widen_half(np.ascontiguousarray(w, dtype=w.dtype.newbyteorder("=")))
    return np.ascontiguousarray(w, dtype=np.float32)
