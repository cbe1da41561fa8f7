"""GPTQ (or round-to-nearest) of a llama-family checkpoint, one decoder layer at a
time, written as a compressed-tensors folder that transformers and vLLM load, or
as a GGUF that llama.cpp runs.

GPTQ's sequential recipe: the calibration tokens' hidden states go through
the layers already quantized; in each layer every group of Linear layers that
read one input (q/k/v, o, gate/up, down; ``models.llama.GROUPS``) is
quantized right before it runs, from the Hessian ``X^T X`` of the input the
quantized layers before it produce, and the layer runs on with the
quantized weights. The held-out tokens go through the float layers and the
quantized ones alongside, so the perplexity of both comes at the end without
another pass over the model.

Memory: one decoder layer's float32 weights, the calibration and held-out
hidden states (the layer runs them a chunk of sequences at a time, so its MLP
activations are never held for all of them), and the quantized layers not
yet written. The output is
written while the layers are quantized (``st.Deferred``): each shard's
tensors are ordered by layer, so a layer's codes are written soon after it
is quantized. Embeddings, norms and the head are copied as they are (GPTQ
leaves ``lm_head`` in float, as the reference and llm-compressor do). A GGUF
(:func:`write_gguf`) takes every layer's codes at once (the export is given
all its block replacements up front), so it holds them all: ~0.56 bytes per
Linear weight at 4 bits.
"""

from __future__ import annotations

import copy
import functools
import math
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..models import llama
from ..models.calibration import hessian_accumulate
from ._pipeline import LayerReport, Recipe, compress_layer, relative_error

_LAYER = re.compile(r"model\.layers\.(\d+)\.(.+)\.weight")
LINEARS = llama.LINEARS


def token_windows(tokenizer: Any, lines: list[str], length: int) -> np.ndarray:
    """The text of ``lines`` (joined by newlines) as token windows
    (n, ``length``) int64, each starting with the special tokens the
    tokenizer puts before a text (llama's and mistral's BOS; none for
    qwen2); the tail shorter than a window is dropped."""
    ids = tokenizer.encode("\n".join(lines), add_special_tokens=False).ids
    plain = tokenizer.encode("a", add_special_tokens=False).ids
    marked = tokenizer.encode("a", add_special_tokens=True).ids
    start = marked.index(plain[0]) if plain and plain[0] in marked else 0
    prefix = marked[:start]
    step = length - len(prefix)
    windows = [prefix + ids[s : s + step] for s in range(0, len(ids) - step + 1, step)]
    return np.array(windows, dtype=np.int64).reshape(-1, length)


def quantized_name(name: str) -> tuple[int, str] | None:
    """(layer index, Linear name within the layer) of a weight GPTQ quantizes, else None."""
    m = _LAYER.fullmatch(name)
    return (int(m.group(1)), m.group(2)) if m and m.group(2) in LINEARS else None


@dataclass
class Sequential:
    """The checkpoint's decoder layers quantized in order (:meth:`quantized`
    runs as many as needed); :attr:`reports` and :meth:`perplexities` after."""

    checkpoint: llama.Checkpoint
    recipe: Recipe
    calib_ids: np.ndarray
    heldout_ids: np.ndarray
    progress: Callable[[int], None] = lambda layer: None
    reports: list[LayerReport] = field(default_factory=list)

    def __post_init__(self) -> None:
        cfg = self.checkpoint.config
        embed = self.checkpoint.tensor("model.embed_tokens.weight")
        self._x = embed[self.calib_ids]  # calibration, through the quantized layers
        self._float = embed[self.heldout_ids]  # held-out, through the float layers
        self._quant = self._float.copy()  # held-out, through the quantized layers
        length = max(self.calib_ids.shape[1], self.heldout_ids.shape[1])
        self._rope = llama.rope_tables(cfg, length)
        self._done = 0
        self._pending: dict[str, Any] = {}  # weight name -> QuantizedTensor, until written

    def quantized(self, name: str) -> Any:
        """The QuantizedTensor of the weight ``name`` (quantizing the layers up to its own)."""
        layer, _ = quantized_name(name) or (None, None)
        assert layer is not None, name
        while self._done <= layer:
            self._advance()
        return self._pending.pop(name)

    def _advance(self) -> None:
        from .. import quant

        i, cfg = self._done, self.checkpoint.config
        weights = self.checkpoint.layer(i)
        used: dict[str, np.ndarray] = {}

        def hook(group: str, chunks: Callable, floats: dict[str, np.ndarray]) -> dict:
            started = time.perf_counter()
            d = next(iter(floats.values())).shape[1]
            H, abs_sum, sq_sum, tokens = np.zeros((d, d)), np.zeros(d), np.zeros(d), 0
            for rows in chunks():
                hessian_accumulate(rows, H, abs_sum, sq_sum)
                tokens += rows.shape[0]
            act_mean, act_norm = abs_sum / tokens, np.sqrt(sq_sum)
            with quant.reuse_factors():  # the group's layers share H: one factor
                made = {
                    n: compress_layer(w, H, act_mean, act_norm, self.recipe)
                    for n, w in floats.items()
                }
            seconds = (time.perf_counter() - started) / len(made)
            for n, (qt, w_hat) in made.items():
                self._pending[f"model.layers.{i}.{n}.weight"] = qt
                used[f"{n}.weight"] = w_hat
                err = relative_error(floats[n], w_hat, H)
                self.reports.append(
                    LayerReport(
                        f"model.layers.{i}.{n}",
                        w_hat.shape,
                        self.recipe,
                        qt.nbytes,
                        1.0,
                        err,
                        seconds,
                    )
                )
            return {n: w_hat for n, (_, w_hat) in made.items()}

        self._x = llama.decoder_layer(self._x, weights, cfg, self._rope, hook)
        self._float = llama.decoder_layer(self._float, weights, cfg, self._rope)
        self._quant = llama.decoder_layer(self._quant, {**weights, **used}, cfg, self._rope)
        self._done += 1
        self.progress(i)

    def perplexities(self) -> tuple[float, float]:
        """Held-out perplexity of the float model and of the quantized one
        (every layer must have been quantized)."""
        ckpt, cfg = self.checkpoint, self.checkpoint.config
        assert self._done == cfg.num_layers
        norm, head = ckpt.tensor("model.norm.weight"), ckpt.head()
        before, after = (
            perplexity(llama.rms_norm(x, norm, cfg.rms_norm_eps), head, self.heldout_ids)
            for x in (self._float, self._quant)
        )
        return before, after


def write_folder(
    checkpoint: llama.Checkpoint, sequential: Sequential, output: str, recipe: Recipe
) -> None:
    """The compressed-tensors folder: every shard of the checkpoint with its
    quantized weights (ordered by layer), a new index, ``config.json`` with
    the ``quantization_config``, the other files copied."""
    from .. import _safetensors as st
    from ..quant import compressed

    symmetric, bits, group = recipe.symmetric, recipe.bits, recipe.group_size
    made: dict[str, dict[str, np.ndarray]] = {}  # weight -> its stored tensors not yet written

    def part(name: str, key: str) -> memoryview | bytes:
        if name not in made:
            made[name] = compressed.tensors(name, sequential.quantized(name))
        a = made[name].pop(key)
        if not made[name]:
            del made[name]
        return st.to_entry(a, key).data

    def order(name: str) -> tuple[int, str]:
        found = quantized_name(name)
        return (-1, "") if found is None else (found[0], name)

    shards, targets = [], []
    for path, src in zip(checkpoint.files, checkpoint.sources):
        tensors: dict[str, Any] = {}
        for name in sorted(src.tensors, key=order):  # stable: the rest keeps its order
            info = src.tensors[name]
            if quantized_name(name) is None:
                tensors[name] = st.Deferred(
                    info.dtype, list(info.shape), info.nbytes, functools.partial(src.raw, name)
                )
                continue
            targets.append(name[: -len(".weight")])
            for key, (dt, shape) in compressed.layout(
                name, info.shape, bits, symmetric, group
            ).items():
                nbytes = dt.itemsize * math.prod(shape)
                make = functools.partial(part, name, key)
                tensors[key] = st.Deferred(st.code_of(dt), list(shape), nbytes, make)
        name = path.name if checkpoint.index else "model.safetensors"
        shards.append((name, tensors, {**src.metadata, "format": "pt"}))

    compressed.write_folder(
        checkpoint.folder, output, shards, checkpoint.index, targets, bits, symmetric, group
    )


def write_gguf(checkpoint: llama.Checkpoint, sequential: Sequential, output: str) -> None:
    """A GGUF llama.cpp runs: every layer quantized (in order), its codes in
    llama.cpp blocks (``quant.gguf.from_quantized``: 2..4-bit codes in Q4_0,
    5 in Q5_0, 6..8 in Q8_0; only the scales rounded to float16), the rest
    as ``slimgrad quantize --type`` of that block type writes it.
    ``ValueError`` (nothing written) for codes without a block form."""
    from ..quant import export_gguf
    from ..quant import gguf as blocks

    replace = {}
    for i in range(checkpoint.config.num_layers):
        for n in LINEARS:
            name = f"model.layers.{i}.{n}.weight"
            kind, data = blocks.from_quantized(sequential.quantized(name))
            replace[name] = (kind, data.view(np.uint8))
    # the file type of the codes' blocks: the embedding and the head get what
    # llama-quantize gives them in that type (Q4_0: Q4_0 and Q6_K), so the file
    # is the size of llama.cpp's own and differs only in the Linear codes
    kinds = [kind for kind, _ in replace.values()]
    export_gguf(checkpoint.folder, output, max(set(kinds), key=kinds.count), replace=replace)


def gguf_perplexity(checkpoint: llama.Checkpoint, path: str, ids: np.ndarray) -> float:
    """The perplexity of token windows ``ids`` with every tensor read back from
    the GGUF at ``path`` (llama.cpp's names and RoPE row order undone), run by
    the NumPy forward."""
    import gguf

    from ..quant import gguf_mix
    from ..quant.gguf_export import _unpermute

    cfg = checkpoint.config
    tensors = {t.name: t for t in gguf.GGUFReader(path).tensors}
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, cfg.num_layers)

    def read(name: str) -> np.ndarray:
        t = tensors[names.get_name(name, try_suffixes=(".weight",))]
        shape = tuple(int(s) for s in reversed(t.shape))
        if t.tensor_type.name in ("F32", "F16"):
            w = np.asarray(t.data, np.float32).reshape(shape)
        else:
            w = gguf_mix.dequantize_blocks(np.ascontiguousarray(t.data), t.tensor_type.name, shape)
        heads = {"q_proj": cfg.num_heads, "k_proj": cfg.num_kv_heads}.get(name.split(".")[-2])
        if heads:  # back from llama.cpp's interleaved pairs to the halves of each head
            w = _unpermute(w, heads)
        return np.ascontiguousarray(w, np.float32)

    from_file = copy.copy(checkpoint)  # the same config and files, tensors from the GGUF
    from_file.tensor = read  # type: ignore[method-assign]
    head = "model.embed_tokens.weight" if cfg.tie_word_embeddings else "lm_head.weight"
    return perplexity(llama.hidden_states(from_file, ids), read(head), ids)


def perplexity(hidden: np.ndarray, head: np.ndarray, ids: np.ndarray) -> float:
    """``exp`` of the mean next-token negative log-likelihood (float64) of the
    windows ``ids`` (n, T) from their final hidden states (n, T, hidden) and
    the head (vocab, hidden), one window's logits at a time."""
    nll = 0.0
    for x, seq in zip(hidden, ids):
        z = (x[:-1] @ head.T).astype(np.float64)
        z -= z.max(axis=-1, keepdims=True)
        logp = z - np.log(np.exp(z).sum(axis=-1, keepdims=True))
        nll -= float(logp[np.arange(len(seq) - 1), seq[1:]].sum())
    return math.exp(nll / (ids.shape[0] * (ids.shape[1] - 1)))
