"""slimgrad: fast, correct training and compression kernels on NumPy buffers.

Optimizers (:mod:`slimgrad.optim`), learning-rate schedules
(:mod:`slimgrad.schedule`), NumPy training blocks (:mod:`slimgrad.nn`),
pruning (:mod:`slimgrad.prune`), quantization (:mod:`slimgrad.quant`) and
distillation (:mod:`slimgrad.distill`). Kernels run in C++ (SIMD chosen at
run time, OpenMP threads) directly on the arrays you pass: no copies.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._runtime import (
    active_isa,
    available_isas,
    build_info,
    cached_output_bytes,
    get_num_threads,
    num_threads,
    release_cached_outputs,
    set_num_threads,
    use_isa,
)
from ._version import __version__

if TYPE_CHECKING:  # what __getattr__ loads lazily, made visible to type checkers
    from . import distill as distill
    from . import nn as nn
    from . import ops as ops
    from . import optim as optim
    from . import prune as prune
    from . import quant as quant
    from . import schedule as schedule
    from .checkpoint import load, save

__all__ = [
    "__version__",
    "active_isa",
    "available_isas",
    "build_info",
    "cached_output_bytes",
    "get_num_threads",
    "load",
    "num_threads",
    "release_cached_outputs",
    "save",
    "set_num_threads",
    "use_isa",
]


def __getattr__(name: str) -> Any:
    # Subpackages and the checkpoint functions load on first use, so
    # `import slimgrad` stays cheap and an area's import cost is paid only by
    # the programs that use it.
    import importlib

    if name in ("optim", "schedule", "nn", "prune", "quant", "distill", "ops", "distributed"):
        return importlib.import_module(f"{__name__}.{name}")
    if name in ("save", "load"):
        return getattr(importlib.import_module(f"{__name__}.checkpoint"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
