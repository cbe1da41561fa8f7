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
from .._float32 import as_float32
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
    wf = as_float32(w)
    out = _core.empty((*w.shape[:-1], w.shape[-1] // BLOCK_SIZE * TYPE_SIZE[name]), np.uint8)
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
    out = _core.empty(tuple(shape), np.float32)
    _core.quant.gguf_dequantize(data, TYPES.index(name), out)
    return out


# Block layouts as NumPy records (packed: itemsize == TYPE_SIZE, checked below).
_RECORDS = {
    "Q8_0": np.dtype([("d", "<f2"), ("qs", "i1", 32)]),
    "Q4_0": np.dtype([("d", "<f2"), ("qs", "u1", 16)]),
    "Q4_1": np.dtype([("d", "<f2"), ("m", "<f2"), ("qs", "u1", 16)]),
    "Q5_0": np.dtype([("d", "<f2"), ("qh", "<u4"), ("qs", "u1", 16)]),
    "Q5_1": np.dtype([("d", "<f2"), ("m", "<f2"), ("qh", "<u4"), ("qs", "u1", 16)]),
}
assert all(r.itemsize == TYPE_SIZE[t] for t, r in _RECORDS.items())


def block_type(bits: int, symmetric: bool) -> str:
    """The GGUF type :func:`from_quantized` uses for ``bits``-bit codes."""
    if bits <= 4:
        return "Q4_0" if symmetric else "Q4_1"
    if bits == 5:
        return "Q5_0" if symmetric else "Q5_1"
    return "Q8_0"


def from_quantized(qt: Any) -> tuple[str, np.ndarray]:
    """``(type, blocks)``: GGUF blocks holding a :class:`QuantizedTensor`'s codes.

    The codes are kept as they are (GPTQ's or AWQ's choices survive the
    conversion); only the scales are rounded to the blocks' float16:

    * 2..4-bit codes: ``Q4_0`` (symmetric, ``q = code + 8``) or ``Q4_1``
      (``d = scale``, ``m = -scale * zero_point``);
    * 5-bit: ``Q5_0`` / ``Q5_1`` likewise (``q = code + 16`` when symmetric);
    * 6..8-bit: ``Q8_0`` with ``q = code - zero_point`` (8-bit asymmetric
      codes fit only when every ``code - zero_point`` is in -128..127).

    The dequantized blocks equal ``fp16(scale) * (code - zero_point)`` (``_1``
    types: ``fp16(scale) * code + fp16(-scale * zero_point)``).

    Raises
    ------
    ValueError
        The layout has no block form: a last axis that is not a multiple of
        32, groups that are not a multiple of 32, one scale per column (per
        channel along the last axis), a scale beyond float16, or 8-bit
        asymmetric codes that do not fit int8.
    """
    shape, bits = qt.shape, qt.bits
    if not shape or shape[-1] % BLOCK_SIZE:
        raise ValueError(
            f"qt: GGUF blocks need a last axis that is a multiple of {BLOCK_SIZE}, "
            f"got shape {shape}"
        )
    if qt.granularity == "group" and qt.group_size % BLOCK_SIZE:
        raise ValueError(
            f"qt: group_size {qt.group_size} is not a multiple of the GGUF block ({BLOCK_SIZE})"
        )
    if qt.granularity == "channel" and len(shape) > 1 and qt.axis % len(shape) == len(shape) - 1:
        raise ValueError("qt: one scale per column (channel axis = last) has no GGUF block form")
    first = (slice(None),) * (len(shape) - 1) + (slice(None, None, BLOCK_SIZE),)
    scale = qt.expand(qt.scale)[first].reshape(-1).astype(np.float32)
    zero = qt.expand(qt.zero_point)[first].reshape(-1).astype(np.int32)
    too_big = np.flatnonzero(np.abs(scale) > np.finfo(np.float16).max)
    if too_big.size:
        bad = int(too_big[0])
        raise ValueError(f"qt: scale {scale[bad]} of block {bad} exceeds float16's range")
    d = scale.astype(np.float16)
    codes = qt.codes().reshape(-1, BLOCK_SIZE).astype(np.int32)
    type = block_type(bits, qt.symmetric)
    blocks = np.zeros(codes.shape[0], _RECORDS[type])
    blocks["d"] = d
    if type == "Q8_0":
        q = codes - zero[:, None]
        if q.size and (q.min() < -128 or q.max() > 127):
            raise ValueError(
                f"qt: {bits}-bit asymmetric codes span {q.min()}..{q.max()} around the zero "
                "point, beyond Q8_0's int8 (quantize with symmetric=True)"
            )
        blocks["qs"] = q
    else:
        if qt.symmetric:
            q = codes + (8 if type == "Q4_0" else 16)
        else:
            q = codes
            blocks["m"] = (-scale * zero).astype(np.float16)
        blocks["qs"] = (q[:, :16] & 15) | ((q[:, 16:] & 15) << 4)
        if type in ("Q5_0", "Q5_1"):
            high = ((q >> 4) & 1).astype(np.uint32) << np.arange(32, dtype=np.uint32)
            blocks["qh"] = np.bitwise_or.reduce(high, axis=1)
    per_row = shape[-1] // BLOCK_SIZE * TYPE_SIZE[type]
    return type, blocks.view(np.uint8).reshape(*shape[:-1], per_row)
