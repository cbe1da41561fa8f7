"""Optimizers with torch.optim semantics on NumPy arrays, stepped in C++.

    import slimgrad.optim as optim
    opt = optim.AdamW(model.parameters(), lr=1e-3)
    ...
    opt.step(model.gradients())        # params updated in place

See :mod:`slimgrad.optim._base` for params / param groups / state, and
``docs/optim.md`` for a tour and benchmarks.

Layout: the implementation lives in ``_``-modules (``_base``: the
:class:`Optimizer` machinery; ``_checks``: option checks; ``_bucket``: state
placement; ``_state_dict``; ``_fused``: the base of the optimizers stepped by
one C++ call; ``_optimizers``: SGD ... RAdam; ``_lion``, ``_lamb``,
``_adamw8bit``, ``_adafactor``, ``_clip``, ``_muon``, ``_prodigy``; ``_adaptive``: ASGD,
Rprop, Schedule-Free AdamW/SGD); ``functional`` is public as a
module. This file only re-exports the public names (``_optimizers``'
``__all__`` as a whole).
"""

from __future__ import annotations

from . import _optimizers, functional
from ._adafactor import Adafactor
from ._adamw8bit import AdamW8bit, dequantize_moment, quantize_moment
from ._adaptive import ASGD, AdamWScheduleFree, Rprop, SGDScheduleFree
from ._arena import flatten
from ._base import Optimizer
from ._bucket import Bucket
from ._clip import accumulate_, clip_grad_norm_, clip_grad_value_
from ._lamb import LAMB
from ._lion import Lion
from ._muon import Muon

# The elementwise family's module exports what its __all__ lists (SGD ... RAdam),
# so a new optimizer there needs no line here.
from ._optimizers import *  # noqa: F403
from ._prodigy import Prodigy
from ._torch_import import from_torch_state_dict

__all__ = [
    "ASGD",
    "AdamWScheduleFree",
    "Rprop",
    "SGDScheduleFree",
    "Adafactor",
    "AdamW8bit",
    "Bucket",
    "LAMB",
    "Lion",
    "Muon",
    "Optimizer",
    "Prodigy",
    "accumulate_",
    "clip_grad_norm_",
    "clip_grad_value_",
    "dequantize_moment",
    "flatten",
    "from_torch_state_dict",
    "functional",
    "quantize_moment",
]
__all__ += _optimizers.__all__
