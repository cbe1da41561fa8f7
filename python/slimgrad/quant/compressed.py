"""slimgrad's quantized weights in the ``compressed-tensors`` format (vLLM, transformers).

Layout (the ``pack-quantized`` format of the ``compressed-tensors`` package, weight-only
integer quantization of ``Linear`` layers), for a layer ``L`` with weight ``L.weight``
of shape ``(out, in)`` quantized to ``b`` bits:

* ``L.weight_packed``: int32 ``(out, ceil(in * b / 32))``. Each row is a little-endian
  bitstream: code ``j`` sits in bits ``[j*b, (j+1)*b)``, stored as the unsigned
  value ``q + 2^(b-1)`` (codes are signed, in ``[-2^(b-1), 2^(b-1) - 1]``);
* ``L.weight_scale``: float32 ``(out, 1)`` per channel or ``(out, in / group)``;
* ``L.weight_zero_point`` (asymmetric only): the signed zero points, packed the same
  way but along the output axis (int32 ``(ceil(out * b / 32), groups)``);
* ``L.weight_shape``: int64 ``[out, in]``.

Dequantization is ``(q - zero_point) * scale``: for slimgrad's codes (unsigned
``u`` with zero point ``z`` when asymmetric) the stored code is ``u - 2^(b-1)`` and
the zero point ``z - 2^(b-1)``, so every value equals slimgrad's own dequantization.
``config.json`` gets a ``quantization_config`` naming exactly the quantized layers
as targets (:func:`quantization_config`).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ._tensor import QuantizedTensor

__all__ = ["FORMAT", "layout", "pack_int32", "quantization_config", "tensors", "write_folder"]

FORMAT = "pack-quantized"


def pack_int32(codes: np.ndarray, bits: int) -> np.ndarray:
    """Signed ``bits``-bit codes (rows last) as compressed-tensors' int32 words."""
    if not 1 <= bits <= 8:
        raise ValueError(f"bits: expected 1..8, got {bits}")
    rows = int(np.prod(codes.shape[:-1], dtype=np.int64))
    cols = codes.shape[-1]
    u = (codes.reshape(rows, cols).astype(np.int16) + (1 << (bits - 1))).astype(np.uint8)
    padded = -(-cols // 32) * 32  # 32 codes fill exactly `bits` words
    if padded != cols:
        u = np.pad(u, ((0, 0), (0, padded - cols)))
    if bits == 8:
        raw = u
    elif bits == 4:
        raw = u[:, 0::2] | (u[:, 1::2] << 4)
    else:
        bit = (u[:, :, None] >> np.arange(bits, dtype=np.uint8)) & 1
        raw = np.packbits(bit.reshape(rows, -1), axis=1, bitorder="little")
    words = np.ascontiguousarray(raw).view("<i4")[:, : -(-cols * bits // 32)]
    return np.ascontiguousarray(words).astype(np.int32).reshape(*codes.shape[:-1], -1)


def _words_of_packed(qt: QuantizedTensor) -> np.ndarray | None:
    """compressed-tensors' int32 words straight from ``qt.data``, or None when
    a row does not fill whole words (``cols * bits % 32``).

    Both formats are little-endian bitstreams per row; compressed-tensors
    stores ``code + 2**(bits - 1)``, which for a ``bits``-bit two's
    complement code is the code with its top bit flipped (asymmetric codes
    are stored as they are). One XOR over the packed bytes instead of
    unpacking, widening and repacking every code: 42 ms -> ~2 ms per 45M int4
    codes (seventeenth session).
    """
    rows, cols = qt.shape
    if cols * qt.bits % 32:
        return None
    raw = np.ascontiguousarray(qt.data).reshape(rows, -1).view(np.uint8)
    if qt.symmetric:  # the top bit of each of the 8 codes that fill `bits` bytes
        period = np.zeros(qt.bits, np.uint8)
        for j in range(8):
            top = j * qt.bits + qt.bits - 1
            period[top // 8] |= 1 << (top % 8)
        # a row holds cols * bits / 8 bytes: whole periods, or (8 bits, cols
        # a multiple of 4 but not 8) half of one at the end
        raw = raw ^ np.tile(period, -(-cols // 8))[: cols * qt.bits // 8]
    return np.ascontiguousarray(raw).view("<i4").astype(np.int32, copy=False)


def tensors(name: str, qt: QuantizedTensor) -> dict[str, np.ndarray]:
    """The stored tensors of the quantized weight ``name`` (``"L.weight"``)."""
    if (
        len(qt.shape) != 2
        or qt.granularity == "tensor"
        or (qt.granularity == "channel" and qt.axis != 0)
    ):
        raise ValueError(
            f"{name}: compressed-tensors stores 2-D weights quantized per output "
            f"channel or per group, got {qt.granularity} of shape {qt.shape}"
        )
    layer = name[: -len(".weight")] if name.endswith(".weight") else name
    off = 0 if qt.symmetric else 1 << (qt.bits - 1)
    packed = _words_of_packed(qt)
    if packed is None:
        packed = pack_int32(qt.codes().astype(np.int16) - off, qt.bits)
    scale = qt.scale.reshape(qt.shape[0], -1).astype(np.float32)
    out = {
        f"{layer}.weight_packed": packed,
        f"{layer}.weight_scale": scale,
        f"{layer}.weight_shape": np.array(qt.shape, np.int64),
    }
    if not qt.symmetric:
        zp = qt.zero_point.reshape(scale.shape).astype(np.int16) - off
        out[f"{layer}.weight_zero_point"] = np.ascontiguousarray(pack_int32(zp.T, qt.bits).T)
    return out


def layout(
    name: str, shape: Sequence[int], bits: int, symmetric: bool, group_size: int | None
) -> dict[str, tuple[np.dtype, tuple[int, ...]]]:
    """(dtype, shape) of each tensor :func:`tensors` stores for the weight
    ``name`` of ``shape`` (out, in) quantized per channel or per
    ``group_size`` columns, in the same order, known before it is quantized:
    a writer that streams the tensors writes the header first."""
    rows, cols = (int(s) for s in shape)
    layer = name[: -len(".weight")] if name.endswith(".weight") else name
    groups = -(-cols // group_size) if group_size else 1
    out = {
        f"{layer}.weight_packed": (np.dtype(np.int32), (rows, -(-cols * bits // 32))),
        f"{layer}.weight_scale": (np.dtype(np.float32), (rows, groups)),
        f"{layer}.weight_shape": (np.dtype(np.int64), (2,)),
    }
    if not symmetric:  # packed along the output axis
        out[f"{layer}.weight_zero_point"] = (np.dtype(np.int32), (-(-rows * bits // 32), groups))
    return out


def quantization_config(
    targets: Sequence[str], bits: int, symmetric: bool, group_size: int | None
) -> dict[str, Any]:
    """``config.json``'s ``quantization_config`` for the layers ``targets`` (module names)."""
    return {
        "quant_method": "compressed-tensors",
        "format": FORMAT,
        "quantization_status": "compressed",
        "config_groups": {
            "group_0": {
                "targets": sorted(targets),
                "weights": {
                    "num_bits": bits,
                    "type": "int",
                    "symmetric": symmetric,
                    "strategy": "group" if group_size else "channel",
                    "group_size": group_size,
                    "dynamic": False,
                    "actorder": None,
                    "observer": "minmax",
                    "block_structure": None,
                },
                "input_activations": None,
                "output_activations": None,
                "format": FORMAT,
            }
        },
        "ignore": [],
        "kv_cache_scheme": None,
        "sparsity_config": {},
    }


def write_folder(
    source: Path,
    output: str,
    shards: Sequence[tuple[str, dict[str, Any], dict | None]],
    index: dict | None,
    targets: Sequence[str],
    bits: int,
    symmetric: bool,
    group_size: int | None,
) -> None:
    """The compressed-tensors model folder ``output``: the ``shards`` (file name,
    tensors, metadata; ``_safetensors.write_shards``, with a new index for a
    sharded ``source``), ``source``'s ``config.json`` with the
    ``quantization_config`` of ``targets``, the other files of ``source``
    copied; built aside, then renamed (``_safetensors.write_model_folder``)."""
    from .. import _safetensors as st

    def fill(tmp: Path) -> None:
        with open(source / "config.json", encoding="utf-8") as f:
            config = json.load(f)
        config["quantization_config"] = quantization_config(targets, bits, symmetric, group_size)
        with open(tmp / "config.json", "w", encoding="utf-8") as f:
            json.dump(config, f, indent=2)
        st.write_shards(tmp, shards, index)

    st.write_model_folder(source, output, fill)
