"""The model side of compression: a sentence-embedding model's Linear layers,
calibration, quality as embedding cosine against the float model, per-layer
sensitivity, and the mixed-precision choice under a byte budget."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from ..models.calibration import Calibration, linear_layers
from ._allocate import allocate
from ._pipeline import Compressed, Recipe, compress_layer, compress_model


def layer_weights(model: Any) -> dict[str, tuple[np.ndarray, np.ndarray | None]]:
    """``{name: (weight, bias or None)}`` of every Linear of ``model.model`` (views, not copies)."""
    return {
        name: (layer.weight, getattr(layer, "bias", None))
        for name, layer in linear_layers(model.model)
    }


@contextlib.contextmanager
def swapped(model: Any, arrays: Mapping[str, np.ndarray]) -> Iterator[None]:
    """Within the block, the model's parameters named in ``arrays`` (``<layer>``
    for a Linear weight, ``<layer>.bias`` for a bias) hold those values."""
    params = {}
    for name, layer in linear_layers(model.model):
        params[name] = layer.weight
        if getattr(layer, "bias", None) is not None:
            params[f"{name}.bias"] = layer.bias
    saved = {name: params[name].copy() for name in arrays}
    try:
        for name, value in arrays.items():
            params[name][...] = value
        yield
    finally:
        for name, value in saved.items():
            params[name][...] = value


def cosines(reference: np.ndarray, embeddings: np.ndarray) -> np.ndarray:
    """Cosine of each row of ``embeddings`` with the same row of ``reference`` (float64)."""
    a, b = reference.astype(np.float64), embeddings.astype(np.float64)
    den = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    return np.einsum("ij,ij->i", a, b) / np.maximum(den, 1e-300)


def compress(
    model: Any,
    calib: Calibration,
    recipes: Mapping[str, Recipe] | Recipe,
    progress: Callable[[Iterable[str]], Iterable[str]] = iter,
) -> Compressed:
    """Compress every Linear of ``model`` (unchanged) from ``calib``."""
    layers = layer_weights(model)
    missing = [name for name in layers if name not in calib.hessians]
    if missing:
        raise ValueError(f"calibration: no statistics for layer {missing[0]!r}")
    return compress_model(
        layers,
        calib.hessians,
        {n: calib.mean_abs(n) for n in layers},
        {n: calib.l2_norm(n) for n in layers},
        recipes,
        progress=progress,
    )


def quality(
    model: Any, compressed: Compressed, sentences: Sequence[str], reference: np.ndarray
) -> np.ndarray:
    """Per-sentence cosine of the compressed model's embeddings with ``reference``."""
    with swapped(model, {**compressed.weights, **compressed.folded}):
        return cosines(reference, model.encode(list(sentences)))


def sensitivity(
    model: Any,
    calib: Calibration,
    options: Sequence[Recipe],
    sentences: Sequence[str],
    reference: np.ndarray,
    progress: Callable[[Iterable[str]], Iterable[str]] = iter,
) -> tuple[dict[str, list[float]], dict[str, list[int]]]:
    """Quality drop (``1 - min cosine`` on ``sentences``) with only one layer
    compressed, for each layer and each recipe in ``options``; and the bytes
    of each. Returns ``(drops, sizes)``, each ``{layer: [one per option]}``.

    AWQ's folded scales are left out here (they change two layers at once).
    """
    layers = layer_weights(model)
    drops: dict[str, list[float]] = {}
    sizes: dict[str, list[int]] = {}
    for name in progress(list(layers)):
        w = layers[name][0]
        drops[name], sizes[name] = [], []
        for recipe in options:
            stored, w_hat = compress_layer(
                w, calib.hessians[name], calib.mean_abs(name), calib.l2_norm(name), recipe
            )
            with swapped(model, {name: w_hat}):
                c = cosines(reference, model.encode(list(sentences)))
            drops[name].append(float(1.0 - c.min()))
            sizes[name].append(int(stored.nbytes))
    return drops, sizes


def choose_bits(
    drops: Mapping[str, Sequence[float]],
    sizes: Mapping[str, Sequence[int]],
    options: Sequence[Recipe],
    budget_bytes: int,
) -> dict[str, Recipe]:
    """The recipe per layer that loses the least summed drop within ``budget_bytes``
    (the Linear weights' bytes; other parameters are not counted)."""
    names = list(drops)
    picks = allocate([sizes[n] for n in names], [drops[n] for n in names], budget_bytes)
    return {n: options[k] for n, k in zip(names, picks)}


def write_imatrix(calib: Calibration, path: str, n_layer: int) -> dict[str, str]:
    """Write the calibration's per-channel ``sum(x^2)`` as llama.cpp's GGUF imatrix.

    Names are llama.cpp's BERT tensor names (the ``gguf`` package's name map:
    ``encoder.layer.0.attention.self.query`` -> ``blk.0.attn_q.weight``), so
    ``llama-quantize --imatrix`` and ``slimgrad quantize --imatrix`` read it.
    Returns the name mapping used. Layers with no llama.cpp name are skipped.
    """
    import gguf

    from ..quant import kquants

    tmap = gguf.get_tensor_name_map(gguf.MODEL_ARCH.BERT, n_layer)
    names = {}
    for layer in calib.hessians:
        gname = tmap.get_name(f"{layer}.weight", try_suffixes=(".weight", ".bias"))
        if gname is not None:
            names[layer] = gname
    sums = {names[k]: calib.sq_sums[k].astype(np.float32) for k in names}
    counts = {names[k]: calib.tokens[k] for k in names}
    kquants.write_imatrix(path, sums, counts)
    return names
