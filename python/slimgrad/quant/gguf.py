"""GGUF block quantization, byte-identical to the ``gguf`` package.

:func:`quantize` writes the same bytes as ``gguf.quants.quantize(w, type)``
for Q8_0, Q4_0, Q4_1, Q5_0 and Q5_1 (blocks of 32 values along the last axis;
each block a float16 scale ``d``, for the ``_1`` types a float16 minimum ``m``,
for Q5 a little-endian uint32 of the codes' fifth bits, then the codes: Q8_0
32 int8, the others 16 bytes holding codes ``j`` (low nibble) and ``j + 16``
(high nibble)). It reproduces the package's NumPy float32 arithmetic step by
step: ``d = amax / 127`` and half-away-from-zero rounding for Q8_0;
``d = max / -8`` (``max`` the signed value of the first largest ``|x|``) and
``trunc(x / d + 8.5)`` for Q4_0; ``d = (max - min) / 15`` and
``trunc((x - min) / d + 0.5)`` for Q4_1 (Q5: 16, 16.5, 31), with ``1 / d``
computed once, multiply and add never fused, and NumPy's casts (NaN and
infinity become code 0, which only tiny or huge blocks reach).
:func:`dequantize` equals ``gguf.quants.dequantize``. Both run in C++ (SIMD,
threads), identical on every ISA.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .. import _core
from ._blocks import blocks_shape, check_float_array, nonfinite_error, type_name

# The traits table of quant.hpp (one row per format, in GgufType order).
_FORMATS = _core.quant.gguf_formats()
TYPES = tuple(_FORMATS)
BLOCK_SIZE = _FORMATS["Q8_0"]["block_size"]
TYPE_SIZE = {name: row["type_size"] for name, row in _FORMATS.items()}


def _type_name(type: Any) -> str:
    return type_name(type, TYPES)


def quantize(w: np.ndarray, type: Any) -> np.ndarray:
    """GGUF blocks of ``w`` as uint8, shape ``(*w.shape[:-1], w.shape[-1] // 32 * type_size)``.

    Parameters
    ----------
    w : ndarray
        Floating-point array whose last axis is a multiple of 32. float32
        C-contiguous input is read in place, others are converted to a
        float32 copy first (as the gguf package does).
    type : {"Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1"} or gguf.GGMLQuantizationType

    Raises
    ------
    TypeError
        ``w`` is not a floating-point ndarray.
    ValueError
        Unknown type, a last axis that is not a multiple of 32, or a NaN/inf
        in ``w`` (the message names the first position).

    Notes
    -----
    Like the gguf package, a block whose scale ``d = amax / 127`` (Q8_0; Q4:
    ``/ 8``, Q5: ``/ 16``, or the range ``/ 15`` and ``/ 31`` for the ``_1``
    types) exceeds float16's 65504 gets an infinite ``d`` and dequantizes to
    inf/NaN: the bytes stay identical to the package's. :func:`slimgrad.quant.save_gguf`
    and ``slimgrad quantize --format gguf`` check for this and keep such a
    tensor unquantized.
    """
    return _quantize(w, type, "w")


def _quantize(w: np.ndarray, type: Any, label: str) -> np.ndarray:
    """:func:`quantize` with error messages naming ``label`` instead of ``w``."""
    name = _type_name(type)
    check_float_array(w, label)
    if w.ndim == 0 or w.shape[-1] % BLOCK_SIZE:
        raise ValueError(
            f"{label}: expected a last axis that is a multiple of {BLOCK_SIZE}, got shape {w.shape}"
        )
    wf = np.ascontiguousarray(w, dtype=np.float32)
    out = np.empty((*w.shape[:-1], w.shape[-1] // BLOCK_SIZE * TYPE_SIZE[name]), np.uint8)
    bad = _core.quant.gguf_quantize(wf, TYPES.index(name), out)
    if bad >= 0:  # checked while quantizing; the partial output is dropped
        raise nonfinite_error(label, wf, bad)
    return out


def dequantize(data: np.ndarray, type: Any, shape: tuple[int, ...] | None = None) -> np.ndarray:
    """float32 values of GGUF blocks (as ``gguf.quants.dequantize``).

    Parameters
    ----------
    data : ndarray of uint8
        Blocks as written by :func:`quantize` (C-contiguous).
    type : str or gguf.GGMLQuantizationType
    shape : tuple of int, optional
        Shape of the result; default: ``data``'s shape with the last axis
        converted from bytes to values.
    """
    name = _type_name(type)
    shape = blocks_shape(data, name, TYPE_SIZE[name], BLOCK_SIZE, shape)
    out = np.empty(shape, np.float32)
    _core.quant.gguf_dequantize(data, TYPES.index(name), out)
    return out
