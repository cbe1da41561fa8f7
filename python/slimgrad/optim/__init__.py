"""Optimizers with torch.optim semantics on NumPy arrays, stepped in C++.

    import slimgrad.optim as optim
    opt = optim.AdamW(model.parameters(), lr=1e-3)
    ...
    opt.step(model.gradients())        # params updated in place

See :mod:`slimgrad.optim._base` for params / param groups / state, and
``docs/optim.md`` for a tour and benchmarks.
"""

from __future__ import annotations

import importlib

from ._base import Optimizer

__all__ = ["Optimizer"]

# name -> module. Each module is imported if present: the second half of the
# optimizers (part B: Lion, LAMB, AdamW8bit, Adafactor, clipping) lives in its
# own modules, written in parallel; until a module exists its names are
# simply absent (an explicit list, so a typo here is not silently hidden).
_EXPORTS = {
    "_optimizers": [
        "SGD",
        "Adagrad",
        "RMSprop",
        "Adadelta",
        "Adam",
        "AdamW",
        "Adamax",
        "NAdam",
        "RAdam",
    ],
    "_arena": ["flatten"],
    "lion": ["Lion"],
    "lamb": ["LAMB"],
    "adamw8bit": ["AdamW8bit"],
    "adafactor": ["Adafactor"],
    "clip": ["clip_grad_norm_", "clip_grad_value_", "accumulate_"],
}
_PART_B = {"lion", "lamb", "adamw8bit", "adafactor", "clip"}

for _mod, _names in _EXPORTS.items():
    try:
        _m = importlib.import_module(f"{__name__}.{_mod}")
    except ModuleNotFoundError as _e:
        # Only a part-B module that does not exist yet may be missing.
        if _mod not in _PART_B or _e.name != f"{__name__}.{_mod}":
            raise
        continue
    for _n in _names:
        globals()[_n] = getattr(_m, _n)
        __all__.append(_n)

from . import functional  # noqa: E402, F401  (exported through __all__ below)

__all__.append("functional")

del importlib, _mod, _names
