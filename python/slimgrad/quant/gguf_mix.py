"""Which GGUF type each tensor gets: llama.cpp's per-tensor rules, and the kernels.

:func:`choose_types` reproduces ``llama-quantize``'s choices (``src/llama-quant.cpp``:
``tensor_allows_quantization``, ``llama_tensor_get_type_impl`` and
``tensor_type_fallback``) for the file types slimgrad writes, for dense models
(no experts; Falcon's special cases are not modelled):

* never quantized (kept F32): 1-D tensors, names not ending in ``weight``,
  ``*_norm.weight``, ``position_embd.weight``, ``token_types.weight``;
* the output matrix, and the token embedding when the model has no separate
  ``output.weight`` (tied): Q8_0 if its rows are not a multiple of the mix's
  block, else Q6_K (unless the file type is Q8_0);
* ``attn_v`` / ``ffn_down`` get more bits in the layers llama.cpp's
  ``use_more_bits`` picks (the first and last eighth, and every third between)
  for Q4_K_M / Q5_K_M (Q6_K); Q4_K_S: Q5_K for the first 4 ``attn_v`` and the
  first eighth of ``ffn_down``; Q2_K / Q3_K_* have their own rules below;
* rows that are not a multiple of a type's block fall back: Q4_K -> Q5_0,
  Q5_K -> Q5_1, Q6_K -> Q8_0, Q2_K / Q3_K -> Q4_0, and to F16 if even 32 does
  not divide the row.

Overrides, as llama-quantize's ``--tensor-type``, ``--token-embedding-type`` and
``--output-tensor-type``: ``overrides`` is a list of ``(regex, type)`` searched
in order in the GGUF name (first match wins, then only the fallback applies).

The kernels: :func:`quantize_blocks` turns float32 rows into GGUF blocks; the
legacy types come from :mod:`slimgrad.quant.gguf`, the K types from
``slimgrad.quant.kquants`` when it is built (:func:`available`).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = [
    "BLOCK",
    "FILE_TYPES",
    "Choice",
    "allows_quantization",
    "available",
    "choose_types",
    "dequantize_blocks",
    "quantize_blocks",
]

# llama.cpp's LLAMA_FTYPE codes (general.file_type) and each file type's base type
FILE_TYPES: dict[str, tuple[int, str]] = {
    "F32": (0, "F32"),
    "F16": (1, "F16"),
    "BF16": (32, "BF16"),
    "Q4_0": (2, "Q4_0"),
    "Q4_1": (3, "Q4_1"),
    "Q8_0": (7, "Q8_0"),
    "Q5_0": (8, "Q5_0"),
    "Q5_1": (9, "Q5_1"),
    "Q2_K": (10, "Q2_K"),
    "Q3_K_S": (11, "Q3_K"),
    "Q3_K_M": (12, "Q3_K"),
    "Q3_K_L": (13, "Q3_K"),
    "Q4_K_S": (14, "Q4_K"),
    "Q4_K_M": (15, "Q4_K"),
    "Q5_K_S": (16, "Q5_K"),
    "Q5_K_M": (17, "Q5_K"),
    "Q6_K": (18, "Q6_K"),
}
FLOAT_TYPES = ("F32", "F16", "BF16")
# values per block of each type (ggml_blck_size)
BLOCK = {
    "F32": 1,
    "F16": 1,
    "BF16": 1,
    "Q4_0": 32,
    "Q4_1": 32,
    "Q5_0": 32,
    "Q5_1": 32,
    "Q8_0": 32,
    "Q2_K": 256,
    "Q3_K": 256,
    "Q4_K": 256,
    "Q5_K": 256,
    "Q6_K": 256,
}
FALLBACK = {"Q2_K": "Q4_0", "Q3_K": "Q4_0", "Q4_K": "Q5_0", "Q5_K": "Q5_1", "Q6_K": "Q8_0"}
K_TYPES = ("Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K")


@dataclass
class Choice:
    """The type a tensor is written in and why (shown in the CLI's table)."""

    type: str
    reason: str = ""


def _category(name: str) -> str:
    if name == "output.weight":
        return "output"
    if name in ("token_embd.weight", "per_layer_token_embd.weight"):
        return "token_embd"
    for cat in (
        "attn_qkv.weight",
        "attn_kv_b.weight",
        "attn_v.weight",
        "attn_k.weight",
        "attn_q.weight",
        "attn_output.weight",
    ):
        if cat in name:
            return cat[: -len(".weight")]
    for cat in ("ffn_up", "ffn_gate", "ffn_down"):
        if cat in name:
            return cat
    return "other"


def allows_quantization(name: str, ndim: int) -> bool:
    """llama.cpp's ``tensor_allows_quantization`` for dense text models."""
    return (
        ndim >= 2
        and name.endswith("weight")
        and "_norm.weight" not in name
        and name not in ("position_embd.weight", "token_types.weight")
        and "ffn_gate_inp.weight" not in name
    )


def _use_more_bits(i: int, n: int) -> bool:
    return i < n // 8 or i >= 7 * n // 8 or (i - n // 8) % 3 == 2


def _mix_rule(
    ftype: str, base: str, cat: str, i: int, n: int, n_gqa: int, n_layer: int, has_imatrix: bool
) -> str:
    """``llama_tensor_get_type_impl`` for a dense, non-Falcon model (counter ``i`` of ``n``)."""
    t = base
    if cat in ("attn_v", "attn_qkv", "attn_kv_b"):
        if ftype == "Q2_K":
            t = "Q4_K" if n_gqa >= 4 else "Q3_K"
        elif ftype == "Q3_K_M":
            t = "Q5_K" if i < 2 else "Q4_K"
        elif ftype == "Q3_K_L":
            t = "Q5_K"
        elif ftype in ("Q4_K_M", "Q5_K_M") and _use_more_bits(i, n):
            t = "Q6_K"
        elif ftype == "Q4_K_S" and i < 4:
            t = "Q5_K"
        if n_layer == 80 and t in ("Q3_K", "Q4_K"):  # llama.cpp's LLM_TYPE_70B rule
            t = "Q5_K"
    elif cat == "ffn_down":
        if ftype == "Q2_K":
            t = "Q3_K"
        elif ftype == "Q3_K_M":
            t = "Q5_K" if i < n // 16 else "Q4_K"
        elif ftype == "Q3_K_L":
            t = "Q5_K"
        elif ftype == "Q4_K_M":
            if _use_more_bits(i, n):
                t = "Q6_K"
        elif ftype == "Q5_K_M" and _use_more_bits(i, n):
            t = "Q6_K"
        elif ftype == "Q4_K_S" and i < n // 8:
            t = "Q5_K"
        elif ftype in ("Q4_0", "Q5_0") and has_imatrix and i < n // 8:
            t = "Q4_1" if ftype == "Q4_0" else "Q5_1"
    elif cat == "attn_output":
        t = {"Q2_K": "Q3_K", "Q3_K_M": "Q4_K", "Q3_K_L": "Q5_K"}.get(ftype, t)
    return t


def _fallback(t: str, ncols: int) -> tuple[str, str]:
    if ncols % BLOCK[t] == 0:
        return t, ""
    new = FALLBACK.get(t, "F16")
    if ncols % BLOCK.get(new, 1):
        new = "F16"
    return new, f"fallback: {t} needs rows of {BLOCK[t]}, got {ncols}"


def choose_types(
    tensors: Sequence[tuple[str, tuple[int, ...]]],
    ftype: str,
    *,
    n_gqa: int = 1,
    overrides: Sequence[tuple[str, str]] = (),
    token_embedding_type: str | None = None,
    output_tensor_type: str | None = None,
    has_imatrix: bool = False,
) -> dict[str, Choice]:
    """GGUF type of each tensor for the file type ``ftype``, as llama-quantize picks it.

    Parameters
    ----------
    tensors : sequence of (GGUF name, shape)
        In file order (llama.cpp counts ``attn_v`` / ``ffn_down`` tensors in
        that order to find their layer); shapes NumPy-style (rows last).
    ftype : str
        A key of :data:`FILE_TYPES`, e.g. ``"Q4_K_M"``.
    n_gqa : int
        Attention heads per key/value head (Q2_K gives ``attn_v`` Q4_K from 4).
    overrides : sequence of (regex, type)
        First pattern found in a quantizable tensor's name sets its type.

    Raises
    ------
    ValueError
        Unknown ``ftype`` or override type, or a bad regex.
    """
    if ftype not in FILE_TYPES:
        raise ValueError(f"ftype: expected one of {', '.join(FILE_TYPES)}, got {ftype!r}")
    for label, t in (
        ("token_embedding_type", token_embedding_type),
        ("output_tensor_type", output_tensor_type),
    ):
        if t is not None and t not in BLOCK:
            raise ValueError(f"{label}: expected one of {', '.join(BLOCK)}, got {t!r}")
    patterns = []
    for pattern, t in overrides:
        if t not in BLOCK:
            raise ValueError(
                f"overrides: type for {pattern!r}: expected one of {', '.join(BLOCK)}, got {t!r}"
            )
        try:
            patterns.append((re.compile(pattern), t))
        except re.error as e:
            raise ValueError(f"overrides: bad pattern {pattern!r} ({e})") from None
    base = FILE_TYPES[ftype][1]
    names = [n for n, _ in tensors]
    tied = "output.weight" not in names
    quantizable = [_category(n) for n, s in tensors if allows_quantization(n, len(s))]
    n_v = sum(c in ("attn_v", "attn_qkv", "attn_kv_b") for c in quantizable)
    n_down = quantizable.count("ffn_down")  # llama.cpp: n_layer
    i_v = i_down = 0
    out: dict[str, Choice] = {}
    for name, shape in tensors:
        if not allows_quantization(name, len(shape)):
            out[name] = Choice("F32", "kept (llama.cpp never quantizes it)")
            continue
        cat = _category(name)
        ncols = int(shape[-1])
        if token_embedding_type and cat == "token_embd":
            out[name] = Choice(*_fallback(token_embedding_type, ncols))
            continue
        if output_tensor_type and cat == "output":
            out[name] = Choice(*_fallback(output_tensor_type, ncols))
            continue
        if base in FLOAT_TYPES:
            out[name] = Choice(base)
            continue
        manual = next((t for p, t in patterns if p.search(name)), None)
        if manual is not None:
            t = manual
        elif cat == "output" or (tied and cat == "token_embd"):
            t = "Q8_0" if ncols % BLOCK[base] or base == "Q8_0" else "Q6_K"
        elif cat == "token_embd":
            t = base
        else:
            i, n = (i_v, n_v) if cat in ("attn_v", "attn_qkv", "attn_kv_b") else (i_down, n_down)
            t = _mix_rule(ftype, base, cat, i, n, n_gqa, max(n_v, n_down), has_imatrix)
            # llama.cpp counts only tensors its rules saw (not manual overrides)
            i_v += cat in ("attn_v", "attn_qkv", "attn_kv_b")
            i_down += cat == "ffn_down"
        out[name] = Choice(*_fallback(t, ncols))
    return out


# -- kernels ---------------------------------------------------------------------------
def _kquants():
    try:
        from . import kquants  # helper kquant's module (C++ K-quants)
    except ImportError:
        return None
    return kquants


def available() -> tuple[str, ...]:
    """GGUF types :func:`quantize_blocks` can write in this build."""
    from . import gguf as sg

    k = _kquants()
    return (*FLOAT_TYPES, *sg.TYPES, *(t for t in K_TYPES if k is not None and t in k.TYPES))


def quantize_blocks(
    w: np.ndarray, type: str, imatrix: np.ndarray | None = None, label: str = "w"
) -> np.ndarray:
    """GGUF blocks (uint8) of float32 rows ``w`` (last axis a multiple of the block).

    ``imatrix`` (one importance per column) is used by the K types; the legacy
    types ignore it. Raises ``ValueError`` for a type this build lacks.
    """
    from . import gguf as sg

    if type in sg.TYPES:
        return sg._quantize(w, type, label)
    k = _kquants()
    if type in K_TYPES and k is not None and type in k.TYPES:
        return k.quantize(w, type, imatrix=imatrix)
    raise ValueError(
        f"{label}: GGUF type {type} is not available in this build "
        f"(available: {', '.join(available())})"
    )


def dequantize_blocks(data: np.ndarray, type: str, shape: tuple[int, ...]) -> np.ndarray:
    """float32 values of blocks written by :func:`quantize_blocks`."""
    from . import gguf as sg

    if type in sg.TYPES:
        return sg.dequantize(data, type, shape)
    k = _kquants()
    if k is not None and type in getattr(k, "TYPES", ()):
        return k.dequantize(data, type, shape)
    import gguf as gguf_pkg

    return gguf_pkg.quants.dequantize(data, gguf_pkg.GGMLQuantizationType[type]).reshape(shape)
