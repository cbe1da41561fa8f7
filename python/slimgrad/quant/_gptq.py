"""GPTQ (Frantar et al. 2022): quantization that uses a layer's input Hessian.

Round-to-nearest (:func:`slimgrad.quant.quantize`) rounds every weight on its
own. GPTQ quantizes one input column at a time and moves each column's
rounding error onto the columns not yet quantized, weighted by the inverse
Hessian of the layer's inputs, so the layer's *output* on the calibration
data changes as little as possible. The Hessian's Cholesky factor comes from
NumPy's BLAS (``_second_order.hessian_factor``); the column loop (lazy
batches of columns as per-ISA FMA kernels, rows split over threads) is in
``cpp/src/gptq.cpp``: left-looking, it needs the inverse factor only for
the first few rows (``_second_order.inverse_top``).
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import Any

import numpy as np

from .. import _core
from .._second_order import check_int, check_layers, check_real, hessian_factor, inverse_top
from ._tensor import QuantizedTensor


def gptq(
    w: np.ndarray,
    H: np.ndarray,
    bits: int = 4,
    group_size: int | None = 128,
    act_order: bool = True,
    damp: float = 0.01,
    symmetric: bool = False,
    *,
    block_size: int = 128,
) -> QuantizedTensor:
    """Quantizes a Linear weight with GPTQ; returns a :class:`QuantizedTensor`.

    Parameters
    ----------
    w : ndarray, shape (out, in)
        The weight (any float dtype; converted to float32, only read).
    H : ndarray, shape (in, in)
        ``X^T X`` of the layer's inputs over the calibration tokens (any float
        dtype, converted to float64; symmetric; only read). Its scale does not
        matter.
    bits : int
        2..8; codes and ranges as :func:`slimgrad.quant.quantize`.
    group_size : int or None
        Input columns per scale (``granularity="group"``); ``None`` for one
        scale per output row (``granularity="channel"``, ``axis=0``).
    act_order : bool
        Quantize columns by decreasing ``H[j, j]`` (the most active inputs
        first, while the most columns are left to absorb their error). Groups
        stay contiguous ranges of columns, so the result is an ordinary
        :class:`QuantizedTensor` that every path (dequantize, matmul, save,
        GGUF export) reads.
    damp : float
        ``H + damp * mean(diag H) * I`` before inverting (``>= 0``).
    symmetric : bool
        Signed codes with zero point 0, or (default) unsigned codes with a zero
        point per group (affine: better at 4 bits and below).
    block_size : int
        Columns per lazy batch (speed only; the result is the same).

    Returns
    -------
    QuantizedTensor
        A group's scale and zero point are the min/max rule of
        :func:`~slimgrad.quant.quantize` applied to the group's weights *as
        updated by GPTQ* when its first column is reached. With a diagonal
        ``H`` nothing moves and the codes equal round-to-nearest's exactly.

    Raises
    ------
    TypeError
        ``w``/``H`` not float arrays, or options of the wrong type.
    ValueError
        Shapes, non-finite values, an asymmetric ``H``, options out of range,
        or ``H`` not positive definite after damping (raise ``damp``).
    """
    return _gptq([w], H, ["w"], bits, group_size, act_order, damp, symmetric, block_size)[0]


def gptq_shared(
    weights: Sequence[np.ndarray], H: np.ndarray, **options: Any
) -> list[QuantizedTensor]:
    """:func:`gptq` of several weights that read the same inputs, hence share
    one Hessian (q, k and v of an attention layer): the factor of ``H`` (its
    act-order permutation, damping, Cholesky factor and inverse, which depend
    on ``H`` alone) is computed once for all of them.

    Parameters
    ----------
    weights : list or tuple of ndarray, each of shape (out_i, in)
        The weights (any float dtype; converted to float32, only read).
    H : ndarray, shape (in, in)
        As :func:`gptq`.
    **options
        ``bits``, ``group_size``, ``act_order``, ``damp``, ``symmetric``,
        ``block_size``: as :func:`gptq`, with its defaults.

    Returns
    -------
    list of QuantizedTensor
        ``gptq(weights[i], H, **options)`` for each ``i``, bit for bit.

    Raises
    ------
    TypeError, ValueError
        As :func:`gptq`, naming the weight as ``weights[i]``; an empty list
        or an unknown option.
    """
    if not isinstance(weights, (list, tuple)):
        raise TypeError(
            f"weights: expected a list or tuple of ndarrays, got {type(weights).__name__}"
        )
    if not weights:
        raise ValueError("weights: expected at least one weight, got an empty sequence")
    # gptq's own signature names the options and holds their defaults
    bound = inspect.signature(gptq).bind(None, H, **options)
    bound.apply_defaults()
    opt = bound.arguments
    labels = [f"weights[{i}]" for i in range(len(weights))]
    return _gptq(
        weights,
        H,
        labels,
        opt["bits"],
        opt["group_size"],
        opt["act_order"],
        opt["damp"],
        opt["symmetric"],
        opt["block_size"],
    )


def _gptq(
    ws: Sequence[np.ndarray],
    H: np.ndarray,
    labels: list[str],
    bits: int,
    group_size: int | None,
    act_order: bool,
    damp: float,
    symmetric: bool,
    block_size: int,
) -> list[QuantizedTensor]:
    """:func:`gptq_shared` with the weights' labels for messages."""
    w32s, h64 = check_layers(ws, H, labels)
    bits = check_int(bits, "bits", 2)
    if bits > 8:
        raise ValueError(f"bits: expected 2..8, got {bits}")
    gs = 0 if group_size is None else check_int(group_size, "group_size", 1)
    damp = check_real(damp, "damp", 0.0)
    block_size = check_int(block_size, "block_size", 1)
    if not isinstance(act_order, bool) or not isinstance(symmetric, bool):
        raise TypeError("act_order, symmetric: expected bools")
    factor = None  # computed once, for the first weight that is not empty
    out = []
    for w, w32 in zip(ws, w32s):
        if factor is None and w32.size:
            f = hessian_factor(h64, act_order, damp)
            # act-order scatters groups: their weights as of their first
            # column need the first rows of U = S^-1 (a few dozen)
            top = inverse_top(f, _core.gptq.top_rows(f[0], w32.shape[1], gs))
            factor = (*f[:3], top)
        out.append(_quantize(w, w32, factor, bits, gs, symmetric, block_size))
    return out


def _quantize(
    w: np.ndarray,
    w32: np.ndarray,
    factor: tuple[np.ndarray, ...] | None,
    bits: int,
    gs: int,
    symmetric: bool,
    block_size: int,
) -> QuantizedTensor:
    """One checked weight with the factor of its ``H`` (``None`` if ``w`` is empty)."""
    rows, cols = w32.shape
    n_groups = -(-cols // gs) if gs else 1
    codes = np.zeros((rows, cols), np.int8 if symmetric else np.uint8)
    scale = np.ones((rows, n_groups), np.float32)
    zero_point = np.zeros((rows, n_groups), np.int32)
    if factor is not None:
        order, dead, S, top = factor
        _core.gptq.quantize(
            w32, order, dead, S, top, bits, symmetric, gs, block_size, codes, scale, zero_point
        )
    if gs:
        return QuantizedTensor.from_codes(
            codes,
            scale,
            zero_point,
            bits=bits,
            symmetric=symmetric,
            granularity="group",
            group_size=gs,
            source_dtype=w.dtype,
        )
    return QuantizedTensor.from_codes(
        codes,
        scale[:, 0],
        zero_point[:, 0],
        bits=bits,
        symmetric=symmetric,
        granularity="channel",
        axis=0,
        source_dtype=w.dtype,
    )
