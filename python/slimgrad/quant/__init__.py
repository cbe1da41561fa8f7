"""Integer quantization: int2..int8 codes per tensor / channel / group,
GGUF-exact blocks (:mod:`slimgrad.quant.gguf`, K-quants in
:mod:`slimgrad.quant.kquants`), products on quantized weights
and safetensors / GGUF I/O. See docs/quant.md for a tour.
"""

from __future__ import annotations

from . import gguf, kquants
from ._matmul import MAX_K_INT8, matmul, matmul_int8
from ._tensor import QuantizedTensor, dequantize, fake_quantize, quantize
from .io import load, save, save_gguf

__all__ = [
    "MAX_K_INT8",
    "QuantizedTensor",
    "gguf",
    "kquants",
    "dequantize",
    "fake_quantize",
    "load",
    "matmul",
    "matmul_int8",
    "quantize",
    "save",
    "save_gguf",
]
