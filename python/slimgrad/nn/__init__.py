"""Building blocks for NumPy training loops (forward, explicit backward).

Layers follow one protocol (:class:`Module`): ``forward(x)``,
``backward(grad_out) -> grad_in``, ``parameters()`` / ``gradients()`` (live
arrays under the same names, so an optimizer steps ``model.parameters()``
with ``model.gradients()``), ``train()`` / ``eval()``, ``state_dict()`` /
``load_state_dict()``. Dropout, BatchNorm1d and GELU run in C++ on the
arrays' buffers (SIMD, threads; results independent of the thread count).

Example::

    import numpy as np
    from slimgrad import nn

    model = nn.Sequential(nn.Linear(64, 128), nn.BatchNorm1d(128), nn.ReLU(),
                          nn.Dropout(0.2), nn.Linear(128, 10))
    logits = model.forward(x)                      # x: float32 (N, 64)
    loss, grad = nn.cross_entropy(logits, labels)
    model.backward(grad)                           # fills model.gradients()
"""

from __future__ import annotations

from ._layers import GELU, BatchNorm1d, Dropout, Linear, ReLU
from ._module import Module, Sequential
from .functional import cross_entropy, dropout, gelu, log_softmax, softmax

__all__ = [
    "GELU",
    "BatchNorm1d",
    "Dropout",
    "Linear",
    "Module",
    "ReLU",
    "Sequential",
    "cross_entropy",
    "dropout",
    "gelu",
    "log_softmax",
    "softmax",
]
