"""``slimgrad compress --format gguf``: calibrated codes as llama.cpp blocks.

The codes GPTQ / AWQ / RTN chose are written as they are: 2..4-bit codes in
Q4_1 blocks, 5-bit in Q5_1, 6..8-bit in Q8_0 (8-bit quantized symmetrically),
see :func:`slimgrad.quant.gguf.from_quantized`; only the scales are rounded to
the blocks' float16. Every other tensor (embeddings, LayerNorms, biases,
AWQ-folded biases, layers kept in float) is written in float32, so the file
computes what ``slimgrad compress`` measured, up to those float16 scales, and
:func:`gguf_quality` measures it again from the file's bytes.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..quant import QuantizedTensor, export_gguf
from ..quant import gguf as _blocks
from ._model import cosines, swapped
from ._pipeline import Compressed


def write_gguf(model_dir: str | os.PathLike, output: str | os.PathLike, result: Compressed) -> None:
    """Write ``result`` (the Linear layers) over the checkpoint in ``model_dir`` as a GGUF.

    Raises ``ValueError`` (nothing written) when a layer's codes have no block
    form (see :func:`slimgrad.quant.gguf.from_quantized`).
    """
    replace: dict[str, Any] = dict(result.folded)
    for name, stored in result.stored.items():
        try:
            replace[f"{name}.weight"] = (
                _blocks.from_quantized(stored) if isinstance(stored, QuantizedTensor) else stored
            )
        except ValueError as e:
            raise ValueError(f"layer {name}: {e}") from None
    export_gguf(model_dir, output, "F32", replace=replace)


def _linear_gguf_names(model: Any, n_layer: int) -> dict[str, str]:
    """``swapped``'s parameter names (``<layer>``, ``<layer>.bias``) -> GGUF tensor names."""
    import gguf

    from ..models.calibration import linear_layers

    tmap = gguf.get_tensor_name_map(gguf.MODEL_ARCH.BERT, n_layer)
    suffixes = (".weight", ".bias")
    names = {}
    for layer, module in linear_layers(model.model):
        names[layer] = tmap.get_name(f"{layer}.weight", try_suffixes=suffixes)
        if getattr(module, "bias", None) is not None:
            names[f"{layer}.bias"] = tmap.get_name(f"{layer}.bias", try_suffixes=suffixes)
    return {k: v for k, v in names.items() if v is not None}


def gguf_quality(
    model: Any, path: str | os.PathLike, sentences: Sequence[str], reference: np.ndarray
) -> np.ndarray:
    """Per-sentence cosine with ``reference`` of ``model`` running the Linear
    weights and biases read back from the GGUF file at ``path``."""
    import gguf

    reader = gguf.GGUFReader(path)
    tensors = {t.name: t for t in reader.tensors}
    arrays = {}
    for param, name in _linear_gguf_names(model, model.model.config.num_hidden_layers).items():
        t = tensors[name]
        shape = tuple(int(s) for s in reversed(t.shape))  # GGUF lists the fastest axis first
        kind = t.tensor_type.name
        if kind == "F32":
            arrays[param] = np.asarray(t.data, np.float32).reshape(shape)
        else:
            arrays[param] = _blocks.dequantize(np.ascontiguousarray(t.data), kind, shape)
    with swapped(model, arrays):
        return cosines(reference, model.encode(list(sentences)))
