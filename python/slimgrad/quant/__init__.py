"""Integer quantization: int2..int8 codes per tensor / channel / group,
GGUF-exact blocks (:mod:`slimgrad.quant.gguf`, K-quants in
:mod:`slimgrad.quant.kquants`), products on quantized weights
safetensors / GGUF I/O, GGUF files llama.cpp runs (:func:`export_gguf`, per-tensor
types in :mod:`slimgrad.quant.gguf_mix`) and compressed-tensors output
(:mod:`slimgrad.quant.compressed`). See docs/quant.md for a tour.
"""

from __future__ import annotations

from .._second_order import reuse_factors
from . import compressed, gguf, gguf_mix, kquants
from ._awq import awq_clip, awq_scales
from ._gptq import gptq, gptq_shared
from ._linear import quantize_dynamic, quantize_linear
from ._matmul import MAX_K_INT8, matmul, matmul_int8
from ._packed import PackedWeight, prepack
from ._tensor import QuantizedTensor, dequantize, fake_quantize, quantize
from .gguf_export import export_gguf
from .io import load, save, save_gguf

__all__ = [
    "MAX_K_INT8",
    "PackedWeight",
    "QuantizedTensor",
    "awq_clip",
    "awq_scales",
    "compressed",
    "export_gguf",
    "gguf",
    "gguf_mix",
    "kquants",
    "dequantize",
    "fake_quantize",
    "gptq",
    "gptq_shared",
    "reuse_factors",
    "load",
    "matmul",
    "matmul_int8",
    "prepack",
    "quantize",
    "quantize_dynamic",
    "quantize_linear",
    "save",
    "save_gguf",
]
