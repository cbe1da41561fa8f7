"""Products on quantized weights: weight-only int8 / int4 and int8 x int8 -> int32."""

from __future__ import annotations

import numpy as np

from .. import _core
from ._packed import PackedWeight, prepack
from ._tensor import QuantizedTensor

# 131071 * (-128) * (-128) = 2**31 - 16384 still fits int32; one more term may not
MAX_K_INT8 = (2**31 - 1) // (128 * 128)


def _fused(qt: QuantizedTensor) -> bool:
    if len(qt.shape) != 2:
        return False
    if qt.granularity == "channel" and qt.axis != 0:
        return False
    if qt.bits == 8:
        return True
    return qt.bits == 4 and (qt.granularity != "group" or qt.group_size % 2 == 0)


def matmul(
    x: np.ndarray,
    qt: QuantizedTensor | PackedWeight,
    out: np.ndarray | None = None,
    *,
    activations: str | None = None,
    bias: np.ndarray | None = None,
) -> np.ndarray:
    """``x @ W.T (+ bias)`` for a quantized weight ``W`` of shape ``(out, in)``.

    Two kinds of product:

    - ``activations=None`` (default, weight-only): ``x`` stays float32 and
      the result is the float32 product of ``x`` with ``qt.dequantize()``,
      described below.
    - ``activations="int8"``, or ``qt`` a :class:`PackedWeight` from
      :func:`prepack` (W8A8 / W4A8, as ``torch.ao.nn.quantized.dynamic.Linear``):
      each row of ``x`` is quantized to int8 on the fly (scale
      ``absmax / 127``, half-to-even rounding), products are summed exactly in
      int32 per weight group and the scales applied in float32: VNNI
      (``vpdpbusd``) where present, else ``vpmaddubsw``. Faster at every
      batch size (docs/quant.md has the figures), with the activations'
      rounding error added (relative error about ``0.5 / 127`` of each row's
      absmax per term). A QuantizedTensor is packed on every call: for
      repeated products pack it once with :func:`prepack`. Takes symmetric
      8-bit or 4-bit weights per tensor, per row or in groups (multiples of
      4 / 8); a row of ``x`` with NaN or inf gives a row of NaN.

    For 8-bit weights and 4-bit weights (per tensor, per output channel
    ``axis=0``, or groups of even size along ``in``) dequantization is fused
    into the product in C++: a single row of ``x`` (the decoding case) streams
    the packed weights once, widening codes straight into float FMAs and
    applying each group's scale (and zero point, through the group sums of
    ``x``) once per group; a batch dequantizes four weight rows at a time
    into a small buffer and reuses them for every row of ``x``. Other specs
    (2, 3, 5, 6, 7 bits, channels along axis 1, odd 4-bit groups) fall back
    to ``x @ qt.dequantize().T`` in NumPy. Results agree with the float64
    product of the dequantized weight to float32 accuracy (the summation
    order differs, so results of different ISAs can differ in the last
    bits); every thread count gives identical results.

    Parameters
    ----------
    x : ndarray
        ``(..., in)`` floats; float32 C-contiguous is used in place, anything
        else is converted to a float32 copy first.
    qt : QuantizedTensor or PackedWeight
        A 2-D quantized weight ``(out, in)``; a :class:`PackedWeight` always
        runs with int8 activations.
    out : ndarray, optional
        float32 C-contiguous ``(..., out)``, written in place and returned.
    activations : {None, "int8"}
        ``"int8"``: quantize ``x`` per row (see above).
    bias : ndarray, optional
        float32 ``(out,)``, added to every row of the result.

    Raises
    ------
    TypeError
        ``qt`` is neither type, ``x`` not a float array, ``out`` of the wrong
        dtype or layout.
    ValueError
        Mismatched shapes, an unknown ``activations``, a weight the int8
        kernels do not take (see :func:`prepack`); the message names the
        argument and nothing is written.
    """
    if activations not in (None, "int8"):
        raise ValueError(f"activations: expected None or 'int8', got {activations!r}")
    if isinstance(qt, PackedWeight):
        return qt.matmul(x, bias=bias, out=out)
    if not isinstance(qt, QuantizedTensor):
        raise TypeError(f"qt: expected a QuantizedTensor or PackedWeight, got {type(qt).__name__}")
    if activations == "int8":
        return prepack(qt).matmul(x, bias=bias, out=out)
    if len(qt.shape) != 2:
        raise ValueError(f"qt: expected a 2-D (out, in) weight, got shape {qt.shape}")
    if not isinstance(x, np.ndarray) or x.dtype.kind != "f":
        raise TypeError(
            f"x: expected a floating-point NumPy array, got {getattr(x, 'dtype', type(x).__name__)}"
        )
    n_out, n_in = qt.shape
    if bias is not None and (not isinstance(bias, np.ndarray) or bias.shape != (n_out,)):
        raise ValueError(
            f"bias: expected an array of shape ({n_out},), got "
            f"{getattr(bias, 'shape', type(bias).__name__)}"
        )
    if x.ndim == 0 or x.shape[-1] != n_in:
        raise ValueError(f"x: expected shape (..., {n_in}), got {x.shape}")
    oshape = (*x.shape[:-1], n_out)
    if out is None:
        out = _core.empty(tuple(oshape), np.float32)
    elif not isinstance(out, np.ndarray) or out.dtype != np.float32 or not out.flags.c_contiguous:
        raise TypeError(
            f"out: expected float32 C-contiguous array of shape {oshape}, got "
            f"{getattr(out, 'dtype', type(out).__name__)}"
        )
    elif out.shape != oshape:
        raise ValueError(
            f"out: expected float32 C-contiguous array of shape {oshape}, got shape {out.shape}"
        )
    xf = np.ascontiguousarray(x, dtype=np.float32)
    if out.size == 0 or n_in == 0:
        out[...] = 0
    elif not _fused(qt):
        np.matmul(xf, qt.dequantize().T, out=out)
    else:
        _core.quant.matmul(
            xf, qt.data, qt._core_spec(), qt.scale.reshape(-1), qt.zero_point.reshape(-1), out
        )
    if bias is not None:
        out += bias
    return out


def matmul_int8(a: np.ndarray, b: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """``a @ b.T`` for int8 ``a`` (M, K) and int8 ``b`` (N, K), exact in int32.

    Both operands are row-major along ``K`` (activations and an ``(out, in)``
    weight, the W8A8 layout). AVX2 widens to int16 and uses ``vpmaddwd``;
    with AVX512-VNNI, ``vpdpbusd`` on ``a + 128`` minus ``128 * sum(b)``. Every
    int8 value, -128 included, is handled exactly. Sums are exact while
    ``K * 128 * 128 < 2**31``, so ``K`` is limited to ``MAX_K_INT8`` (131071);
    for longer rows, split ``K`` and add the int32 partial products in int64.

    Raises
    ------
    TypeError
        Not int8 C-contiguous arrays, or ``out`` not int32 C-contiguous.
    ValueError
        Shapes that are not (M, K) and (N, K), ``out`` not (M, N), or
        ``K > 131071`` (the int32 sums could wrap).
    """
    c_shape = (
        (a.shape[0], b.shape[0])
        if getattr(a, "ndim", 0) == 2 and getattr(b, "ndim", 0) == 2
        else None
    )
    if c_shape and a.shape[1] > MAX_K_INT8:
        raise ValueError(
            f"a: K = {a.shape[1]} exceeds {MAX_K_INT8}, the longest row whose int8 products "
            "sum exactly in int32; split K and add the partial products in int64"
        )
    if out is None:
        out = _core.empty(tuple(c_shape) if c_shape else (0, 0), np.int32)
    _core.quant.matmul_int8(a, b, out)
    return out
