"""A llama-family decoder (llama, mistral, qwen2) in NumPy float32, one layer at a time.

What calibrated compression of a large language model needs: the checkpoint
stays in its memory map (:class:`Checkpoint`), a decoder layer's weights are
read when that layer runs (:meth:`Checkpoint.layer`), and the layer's forward
(:func:`decoder_layer`) hands each group of Linear layers that read one input
(q/k/v, o, gate/up, down) to a callback that may record the input and choose
the weights to use: GPTQ quantizes each group right before it runs, on the
inputs the already-quantized layers produce (``compress.llama``).

The computation is transformers' ``LlamaForCausalLM`` in eager mode, float32:
RMSNorm ``x / sqrt(mean(x^2) + eps) * w``; rotary embeddings on the halves of
each head (``rotate_half``) with ``rope_theta``; grouped-query attention with
a causal mask; ``down(silu(gate(x)) * up(x))``; the final norm and the head
(``lm_head``, or the token embedding when tied). q/k/v biases (qwen2's
``attention_bias``) and MLP biases are applied when the checkpoint has them.
The default rotary embedding and llama 3's rescaled one (``rope_type``
``llama3``) are computed; other scalings (yarn, linear, dynamic) are refused,
not approximated. A sliding attention window (mistral) equals
full causal attention on sequences no longer than the window, so it is
accepted and such longer sequences are refused.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .._float32 import as_float32

__all__ = [
    "ARCHITECTURES",
    "Checkpoint",
    "Config",
    "decoder_layer",
    "hidden_states",
    "logits",
    "rope_tables",
]

ARCHITECTURES = ("llama", "mistral", "qwen2")
# the Linear layers of a decoder layer, grouped by the input they read
GROUPS = {
    "self_attn.q_proj": ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"),
    "self_attn.o_proj": ("self_attn.o_proj",),
    "mlp.gate_proj": ("mlp.gate_proj", "mlp.up_proj"),
    "mlp.down_proj": ("mlp.down_proj",),
}
LINEARS = tuple(n for group in GROUPS.values() for n in group)


@dataclass(frozen=True)
class Config:
    """The hyperparameters of ``config.json`` the forward pass reads."""

    model_type: str
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    rms_norm_eps: float
    rope_theta: float
    vocab_size: int
    tie_word_embeddings: bool
    sliding_window: int | None = None  # tokens a query attends to, when limited
    # llama 3's rotary rescaling: (factor, low_freq_factor, high_freq_factor,
    # original_max_position_embeddings), or None for the default rotary embedding
    rope_llama3: tuple[float, float, float, float] | None = None

    @classmethod
    def read(cls, path: str | Path) -> Config:
        """The config of ``path/config.json``; ``ValueError`` naming the file
        and the key for what is missing, wrong or not supported."""
        path = Path(path) / "config.json"
        try:
            cfg = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise FileNotFoundError(f"{path}: no such file") from None
        except (UnicodeDecodeError, ValueError) as e:
            raise ValueError(f"{path}: not JSON ({e})") from None
        if not isinstance(cfg, dict):
            raise ValueError(f"{path}: expected a JSON object")
        arch = cfg.get("model_type")
        if arch not in ARCHITECTURES:
            raise ValueError(
                f"{path}: model_type: expected one of {', '.join(ARCHITECTURES)}, got {arch!r}"
            )

        def integer(key: str, default: int | None = None) -> int:
            value = cfg.get(key, default)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{path}: {key}: expected a positive integer, got {value!r}")
            return value

        def number(key: str, value: Any) -> float:
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
                raise ValueError(f"{path}: {key}: expected a positive number, got {value!r}")
            return float(value)

        rope = cfg.get("rope_parameters") or cfg.get("rope_scaling") or {}
        if not isinstance(rope, dict):
            raise ValueError(f"{path}: rope_parameters: expected an object, got {rope!r}")
        kind = rope.get("rope_type", rope.get("type", "default"))
        if kind not in ("default", "llama3"):
            raise ValueError(
                f"{path}: rope_type {kind!r}: the default and llama 3's rotary "
                "embeddings are supported (not yarn, linear, dynamic, ...)"
            )
        llama3 = None
        if kind == "llama3":  # llama 3.1+'s frequency-dependent rescaling
            keys = ("factor", "low_freq_factor", "high_freq_factor")
            llama3 = tuple(number(f"rope_parameters.{k}", rope.get(k)) for k in keys)
            old = rope.get("original_max_position_embeddings")
            llama3 += (number("rope_parameters.original_max_position_embeddings", old),)
            if llama3[2] <= llama3[1]:
                raise ValueError(
                    f"{path}: rope_parameters: expected high_freq_factor > low_freq_factor, "
                    f"got {llama3[2]} and {llama3[1]}"
                )
        window = cfg.get("sliding_window")
        if not cfg.get("use_sliding_window", arch == "mistral"):
            window = None
        if window is not None and (isinstance(window, bool) or not isinstance(window, int)):
            raise ValueError(f"{path}: sliding_window: expected an integer, got {window!r}")
        hidden, heads = integer("hidden_size"), integer("num_attention_heads")
        head_dim = integer("head_dim", cfg.get("head_dim") or hidden // heads)
        kv_heads = integer("num_key_value_heads", cfg.get("num_key_value_heads") or heads)
        if heads % kv_heads or head_dim % 2:
            raise ValueError(
                f"{path}: expected num_attention_heads ({heads}) a multiple of "
                f"num_key_value_heads ({kv_heads}) and an even head_dim ({head_dim})"
            )
        return cls(
            model_type=arch,
            hidden_size=hidden,
            intermediate_size=integer("intermediate_size"),
            num_layers=integer("num_hidden_layers"),
            num_heads=heads,
            num_kv_heads=kv_heads,
            head_dim=head_dim,
            rms_norm_eps=number("rms_norm_eps", cfg.get("rms_norm_eps", 1e-6)),
            rope_theta=number("rope_theta", rope.get("rope_theta", cfg.get("rope_theta", 1e4))),
            vocab_size=integer("vocab_size"),
            tie_word_embeddings=bool(cfg.get("tie_word_embeddings", False)),
            sliding_window=window or None,
            rope_llama3=llama3,
        )


class Checkpoint:
    """A Hugging Face llama-family folder read through its memory map: the
    config, and each tensor as float32 when asked for (the file stays on
    disk; a 7B model is never in memory at once)."""

    def __init__(self, folder: str | Path) -> None:
        from .._safetensors import model_files
        from ..quant._stream import open_safetensors

        self.folder = Path(folder)
        self.config = Config.read(self.folder)
        _, self.files, self.index = model_files(self.folder)
        self.sources = [open_safetensors(f) for f in self.files]
        self.where = {name: src for src in self.sources for name in src.tensors}

    def __contains__(self, name: str) -> bool:
        return name in self.where

    def tensor(self, name: str) -> np.ndarray:
        """The tensor ``name`` as float32 (a copy, or the file's own float32
        bytes read-only); ``KeyError`` naming the checkpoint if absent."""
        if name not in self.where:
            raise KeyError(f"{self.folder}: no tensor {name!r}")
        return as_float32(np.asarray(self.where[name].array(name)))

    def check(self) -> None:
        """``ValueError`` naming the checkpoint and the tensor when a tensor the
        forward pass reads is missing or has the wrong shape."""
        cfg = self.config
        hidden, inner = cfg.hidden_size, cfg.intermediate_size
        q, kv = cfg.num_heads * cfg.head_dim, cfg.num_kv_heads * cfg.head_dim
        want = {
            "model.embed_tokens.weight": (cfg.vocab_size, hidden),
            "model.norm.weight": (hidden,),
        }
        if not cfg.tie_word_embeddings:
            want["lm_head.weight"] = (cfg.vocab_size, hidden)
        for i in range(cfg.num_layers):
            for name, shape in {
                "input_layernorm": (hidden,),
                "post_attention_layernorm": (hidden,),
                "self_attn.q_proj": (q, hidden),
                "self_attn.k_proj": (kv, hidden),
                "self_attn.v_proj": (kv, hidden),
                "self_attn.o_proj": (hidden, q),
                "mlp.gate_proj": (inner, hidden),
                "mlp.up_proj": (inner, hidden),
                "mlp.down_proj": (hidden, inner),
            }.items():
                want[f"model.layers.{i}.{name}.weight"] = shape
        for name, shape in want.items():
            if name not in self.where:
                raise ValueError(f"{self.folder}: no tensor {name!r} (config.json expects it)")
            got = self.where[name].tensors[name].shape
            if got != shape:
                raise ValueError(
                    f"{self.folder}: tensor {name!r}: expected shape {shape} from config.json, "
                    f"got {got}"
                )

    def layer(self, i: int) -> dict[str, np.ndarray]:
        """Decoder layer ``i``'s tensors by their names within the layer
        (``self_attn.q_proj.weight``, ``input_layernorm.weight``, ...)."""
        prefix = f"model.layers.{i}."
        return {n[len(prefix) :]: self.tensor(n) for n in self.where if n.startswith(prefix)}

    def head(self) -> np.ndarray:
        """The output projection (vocab, hidden): ``lm_head``, or the tied embedding."""
        if "lm_head.weight" in self.where and not self.config.tie_word_embeddings:
            return self.tensor("lm_head.weight")
        return self.tensor("model.embed_tokens.weight")


def rms_norm(x: np.ndarray, weight: np.ndarray, eps: float) -> np.ndarray:
    """``x / sqrt(mean(x^2, -1) + eps) * weight`` (float32, as transformers)."""
    var = np.mean(np.square(x), axis=-1, keepdims=True)
    return (x / np.sqrt(var + np.float32(eps))) * weight


def rope_tables(cfg: Config, length: int) -> tuple[np.ndarray, np.ndarray]:
    """(cos, sin), each (length, head_dim) float32, for positions 0..length-1."""
    half = np.arange(0, cfg.head_dim, 2, dtype=np.int64).astype(np.float32) / cfg.head_dim
    inv_freq = (1.0 / (cfg.rope_theta**half)).astype(np.float32)
    if cfg.rope_llama3 is not None:
        # long wavelengths divided by the factor, short ones kept, the band
        # between interpolated (transformers' _compute_llama3_parameters)
        factor, low, high, old = cfg.rope_llama3
        wavelen = 2 * math.pi / inv_freq
        scaled = np.where(wavelen > old / low, inv_freq / factor, inv_freq)
        smooth = (old / wavelen - low) / (high - low)
        mid = ~(wavelen < old / high) & ~(wavelen > old / low)
        inv_freq = np.where(mid, (1 - smooth) * scaled / factor + smooth * scaled, scaled)
    angles = np.outer(np.arange(length, dtype=np.float32), inv_freq.astype(np.float32))
    angles = np.concatenate([angles, angles], axis=-1)
    return np.cos(angles).astype(np.float32), np.sin(angles).astype(np.float32)


def _rotate(x: np.ndarray, cos: np.ndarray, sin: np.ndarray) -> np.ndarray:
    """transformers' ``x * cos + rotate_half(x) * sin`` on (..., T, head_dim)."""
    half = x.shape[-1] // 2
    turned = np.concatenate([-x[..., half:], x[..., :half]], axis=-1)
    return x * cos + turned * sin


def _linear(x: np.ndarray, w: np.ndarray, b: np.ndarray | None) -> np.ndarray:
    """``x @ w.T + b`` over the last axis, as one GEMM of all the rows (a
    (batch, T, in) @ (in, out) product in NumPy is one small GEMM per sequence)."""
    y = (x.reshape(-1, x.shape[-1]) @ w.T).reshape(*x.shape[:-1], w.shape[0])
    return y if b is None else y + b


# (group, a function giving the group's input as row chunks (tokens, in), the
# layer's float32 weights by name) -> the weights to run the group with
Hook = Callable[[str, Callable[[], Iterator[np.ndarray]], dict[str, np.ndarray]], dict]

CHUNK_FLOATS = 1 << 25  # a chunk's MLP activations (tokens x intermediate): 128 MiB


def _attention(h: np.ndarray, w: dict, b: dict, cfg: Config, rope: tuple) -> np.ndarray:
    """The attention context (batch, T, heads * head_dim) of normed inputs ``h``."""
    batch, length, _ = h.shape
    heads, kv, dim = cfg.num_heads, cfg.num_kv_heads, cfg.head_dim

    def project(name: str, n: int) -> np.ndarray:
        y = _linear(h, w[name], b.get(name)).reshape(batch, length, n, dim)
        return y.transpose(0, 2, 1, 3)

    cos, sin = rope[0][:length], rope[1][:length]
    q = _rotate(project("self_attn.q_proj", heads), cos, sin)
    k = _rotate(project("self_attn.k_proj", kv), cos, sin)
    v = project("self_attn.v_proj", kv)
    q = q.reshape(batch, kv, heads // kv, length, dim)  # query heads per key/value head
    causal = np.triu(np.full((length, length), -np.inf, np.float32), 1)
    context = np.empty((batch, heads, length, dim), np.float32)
    for i in range(batch):  # one sequence's scores at a time: heads * T * T floats
        scores = (q[i] @ k[i, :, None].swapaxes(-1, -2)) * np.float32(1.0 / math.sqrt(dim))
        scores += causal
        scores -= scores.max(axis=-1, keepdims=True)
        probs = np.exp(scores)
        probs /= probs.sum(axis=-1, keepdims=True)
        context[i] = (probs @ v[i, :, None]).reshape(heads, length, dim)
    return context.transpose(0, 2, 1, 3).reshape(batch, length, heads * dim)


def decoder_layer(
    x: np.ndarray,
    weights: dict[str, np.ndarray],
    cfg: Config,
    rope: tuple[np.ndarray, np.ndarray],
    hook: Hook | None = None,
    chunk: int | None = None,
) -> np.ndarray:
    """One decoder layer on ``x`` (batch, T, hidden) float32; returns the new hidden states.

    ``weights``: :meth:`Checkpoint.layer`'s. The sequences run ``chunk`` at a
    time (default: as many as keep a chunk's MLP activations within
    :data:`CHUNK_FLOATS`), so the memory is a few copies of ``x``, not of its
    MLP activations. With a ``hook``, before each group of :data:`GROUPS`
    runs, ``hook(group, chunks, {name: weight})`` gets a function yielding
    the group's input as (tokens, in) row chunks, and returns the weights to
    run the group with; the layer is then run in stages, each group's input
    coming from the groups before it as the hook chose them (the MLP's
    activations are computed twice).
    """
    batch, length, _ = x.shape
    if cfg.sliding_window is not None and length > cfg.sliding_window:
        raise ValueError(
            f"sequences of {length} tokens: longer than the sliding attention window "
            f"({cfg.sliding_window}), which is not computed here"
        )
    if chunk is None:
        chunk = max(1, CHUNK_FLOATS // (length * cfg.intermediate_size))
    spans = [slice(s, s + chunk) for s in range(0, batch, chunk)]
    used = {n: weights[f"{n}.weight"] for n in LINEARS}
    biases = {n: weights[f"{n}.bias"] for n in LINEARS if f"{n}.bias" in weights}
    eps = cfg.rms_norm_eps

    def stage(group: str, inputs: Callable[[slice], np.ndarray]) -> None:
        if hook is not None:
            rows = _rows(inputs, spans)
            used.update(hook(group, rows, {n: used[n] for n in GROUPS[group]}))

    def attn_in(s: slice) -> np.ndarray:
        return rms_norm(x[s], weights["input_layernorm.weight"], eps)

    stage("self_attn.q_proj", attn_in)
    context = np.empty((batch, length, cfg.num_heads * cfg.head_dim), np.float32)
    for s in spans:
        context[s] = _attention(attn_in(s), used, biases, cfg, rope)
    stage("self_attn.o_proj", lambda s: context[s])
    out = np.empty_like(x)
    for s in spans:
        out[s] = x[s] + _linear(
            context[s], used["self_attn.o_proj"], biases.get("self_attn.o_proj")
        )

    def mlp_in(s: slice) -> np.ndarray:
        return rms_norm(out[s], weights["post_attention_layernorm.weight"], eps)

    def act(s: slice) -> np.ndarray:
        h = mlp_in(s)
        gate = _linear(h, used["mlp.gate_proj"], biases.get("mlp.gate_proj"))
        up = _linear(h, used["mlp.up_proj"], biases.get("mlp.up_proj"))
        return gate / (1.0 + np.exp(-gate)) * up  # silu(gate) * up

    stage("mlp.gate_proj", mlp_in)
    stage("mlp.down_proj", act)
    for s in spans:
        out[s] += _linear(act(s), used["mlp.down_proj"], biases.get("mlp.down_proj"))
    return out


def _rows(inputs: Callable[[slice], np.ndarray], spans: list[slice]) -> Callable:
    """A function yielding ``inputs(s)`` for every span as C-contiguous (tokens, in) rows."""

    def chunks() -> Iterator[np.ndarray]:
        for s in spans:
            a = inputs(s)
            yield np.ascontiguousarray(a.reshape(-1, a.shape[-1]))

    return chunks


def hidden_states(checkpoint: Checkpoint, ids: np.ndarray) -> np.ndarray:
    """The final (normed) hidden states (batch, T, hidden) float32 of token
    ``ids`` (batch, T): what the head turns into logits."""
    cfg = checkpoint.config
    ids = np.asarray(ids)
    x = checkpoint.tensor("model.embed_tokens.weight")[ids]
    rope = rope_tables(cfg, ids.shape[1])
    for i in range(cfg.num_layers):
        x = decoder_layer(x, checkpoint.layer(i), cfg, rope)
    return rms_norm(x, checkpoint.tensor("model.norm.weight"), cfg.rms_norm_eps)


def logits(checkpoint: Checkpoint, ids: np.ndarray) -> np.ndarray:
    """The next-token logits (batch, T, vocab) float32 of token ``ids`` (batch, T)."""
    return hidden_states(checkpoint, ids) @ checkpoint.head().T
