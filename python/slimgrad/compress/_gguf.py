"""``slimgrad compress --format gguf``: calibrated codes as llama.cpp blocks.

The codes GPTQ / AWQ / RTN chose are written as they are: 2..4-bit codes in
Q4_1 blocks, 5-bit in Q5_1, 6..8-bit in Q8_0 (8-bit quantized symmetrically),
see :func:`slimgrad.quant.gguf.from_quantized`; only the scales are rounded to
the blocks' float16. The other tensors are written as llama.cpp's converter
and ``llama-quantize`` write them: the token embeddings in Q8_0 (as
``llama-quantize`` gives MiniLM's), the position and token-type embeddings in
float16, LayerNorms and biases in float32 (AWQ-folded biases and layers kept
in float too, in float32).
:func:`gguf_quality` measures the model again from the file's bytes.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..quant import QuantizedTensor, export_gguf
from ..quant import gguf as _blocks
from ._model import cosines
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
    export_gguf(model_dir, output, "F16", replace=replace, token_embedding_type="Q8_0")


def gguf_quality(
    model: Any, path: str | os.PathLike, sentences: Sequence[str], reference: np.ndarray
) -> np.ndarray:
    """Per-sentence cosine with ``reference`` of ``model`` running every parameter
    read back from the GGUF file at ``path`` (the model is restored afterwards)."""
    import gguf

    reader = gguf.GGUFReader(path)
    tensors = {t.name: t for t in reader.tensors}
    tmap = gguf.get_tensor_name_map(gguf.MODEL_ARCH.BERT, model.model.config.num_hidden_layers)
    saved = model.model.state_dict()
    try:
        for param, live in model.model.parameters().items():
            name = tmap.get_name(param, try_suffixes=(".weight", ".bias"))
            if name is None or name not in tensors:
                continue  # not written (the pooler)
            t = tensors[name]
            kind = t.tensor_type.name
            if kind in ("F32", "F16"):
                live[...] = np.asarray(t.data).reshape(live.shape)
            else:
                data = np.ascontiguousarray(t.data)
                live[...] = _blocks.dequantize(data, kind, live.shape)
        return cosines(reference, model.encode(list(sentences)))
    finally:
        model.model.load_state_dict(saved)
