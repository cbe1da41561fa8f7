"""nn.Linear layers on quantized weights: dynamic int8 activations (W8A8 / W4A8).

``quant`` and ``nn`` are independent areas (docs/architecture.md), so the
layer is duck-typed: anything with a float32 2-D ``weight`` and
``set_product`` (``nn.Linear``'s inference hook, also used by
``prune.sparse_linear``).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ._packed import PackedWeight, prepack
from ._tensor import quantize

__all__ = ["quantize_dynamic", "quantize_linear"]

FORMATS = ("int8", "int4")


def _is_linear(layer: Any) -> bool:
    w = getattr(layer, "weight", None)
    return hasattr(layer, "set_product") and isinstance(w, np.ndarray) and w.ndim == 2


def quantize_linear(
    layer: Any, fmt: str | None = "int8", group_size: int = 32
) -> PackedWeight | None:
    """Run ``layer.forward`` (an ``nn.Linear``) on a quantized, prepacked copy of its weight.

    Parameters
    ----------
    layer : nn.Linear
        float32 weight ``(out, in)``.
    fmt : {"int8", "int4"} or None
        ``"int8"``: int8 per output row, W8A8; ``"int4"``: int4 in groups of
        ``group_size`` along ``in``, W4A8. Both quantize each row of ``x`` to
        int8 on the fly (:func:`slimgrad.quant.matmul` with
        ``activations="int8"``). ``None``: back to the float product.
    group_size : int
        For ``"int4"``: a multiple of 8 (32, 64, 128 ...); rows shorter than
        it form one group.

    Returns
    -------
    PackedWeight or None
        The packed copy the layer now uses (a snapshot: call again after
        changing the weight). ``backward`` stays on the float weight.

    Raises
    ------
    TypeError
        ``layer`` is not a float32 Linear.
    ValueError
        Unknown ``fmt`` or a bad ``group_size``; the layer is unchanged.
    """
    if not _is_linear(layer):
        raise TypeError(f"layer: expected an nn.Linear, got {type(layer).__name__}")
    if fmt is None:
        layer.set_product(None)
        return None
    if fmt not in FORMATS:
        raise ValueError(f"fmt: expected 'int8', 'int4' or None, got {fmt!r}")
    w = layer.weight
    if w.dtype != np.float32:
        raise TypeError(f"layer: the quantized kernels need a float32 weight, got {w.dtype}")
    if fmt == "int8":
        qt = quantize(w, 8)
    else:
        if isinstance(group_size, bool) or not isinstance(group_size, int) or group_size < 8:
            raise ValueError(f"group_size: expected an int >= 8, got {group_size!r}")
        if group_size % 8:
            raise ValueError(f"group_size: expected a multiple of 8, got {group_size}")
        gs = min(group_size, -(-max(w.shape[1], 1) // 8) * 8)
        qt = quantize(w, 4, granularity="group", group_size=gs)
    packed = prepack(qt)

    def product(x: np.ndarray, bias: np.ndarray | None) -> np.ndarray:
        return packed.matmul(x, bias)  # the bias in the kernel's epilogue

    product.__name__ = f"{fmt} (int8 activations)"
    layer.set_product(product, adds_bias=True)
    return packed


def quantize_dynamic(model: Any, fmt: str | None = "int8", group_size: int = 32) -> int:
    """:func:`quantize_linear` on every Linear of ``model``.

    As ``torch.ao.quantization.quantize_dynamic(model, {nn.Linear})``.

    ``model`` is an ``nn`` module (its ``modules()``); every float32 layer
    with a 2-D ``weight`` and ``set_product`` is converted in place. Returns
    the number of layers converted. All layers are checked before any is
    changed.
    """
    if not hasattr(model, "modules"):
        raise TypeError(f"model: expected an nn module, got {type(model).__name__}")
    layers = [m for m in model.modules() if _is_linear(m)]
    if fmt is not None and fmt not in FORMATS:
        raise ValueError(f"fmt: expected 'int8', 'int4' or None, got {fmt!r}")
    for layer in layers:
        if layer.weight.dtype != np.float32:
            raise TypeError(f"model: a Linear has a {layer.weight.dtype} weight; expected float32")
    for layer in layers:
        quantize_linear(layer, fmt, group_size)
    return len(layers)
