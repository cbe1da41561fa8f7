"""Building blocks for NumPy training loops (forward, explicit backward).

Layers follow one protocol (:class:`Module`): ``forward(x)``,
``backward(grad_out) -> grad_in``, ``parameters()`` / ``gradients()`` (live
arrays under the same names, so an optimizer steps ``model.parameters()``
with ``model.gradients()``), ``train()`` / ``eval()``, ``state_dict()`` /
``load_state_dict()``. Transformer blocks (Embedding, LayerNorm,
MultiheadSelfAttention, BertLayer; float32) are in ``_transformer.py``.
Dropout, BatchNorm1d, GELU, LayerNorm and the masked softmax run in C++ on the
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
from ._module import Module, Sequential, no_init_weights
from ._transformer import (
    BertLayer,
    Embedding,
    LayerNorm,
    MultiheadSelfAttention,
    layer_norm,
    masked_softmax,
    masked_softmax_backward,
)
from .functional import cross_entropy, dropout, gelu, log_softmax, softmax

__all__ = [
    "GELU",
    "BatchNorm1d",
    "BertLayer",
    "Dropout",
    "Embedding",
    "LayerNorm",
    "Linear",
    "Module",
    "MultiheadSelfAttention",
    "ReLU",
    "Sequential",
    "cross_entropy",
    "dropout",
    "gelu",
    "layer_norm",
    "log_softmax",
    "masked_softmax",
    "masked_softmax_backward",
    "no_init_weights",
    "softmax",
]
