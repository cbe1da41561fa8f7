"""BERT from a Hugging Face directory, and sentence embeddings as sentence-transformers.

``load(path)`` reads

- ``config.json``: ``model_type`` must be ``"bert"`` (absolute position
  embeddings, ``hidden_act`` ``gelu`` or a tanh GELU);
- ``model.safetensors``: the ``BertModel`` weights, with or without the
  ``bert.`` prefix of task heads; ``pooler.*`` / ``cls.*`` heads and the
  ``position_ids`` buffer are not used; float16 / bfloat16 weights are
  widened to float32;
- the tokenizer through the ``tokenizers`` package: ``tokenizer.json``, else
  ``vocab.txt`` (WordPiece; ``do_lower_case`` from ``tokenizer_config.json``,
  default True);
- sentence-transformers' files when present: ``modules.json`` (a
  ``Normalize`` module means L2-normalized embeddings), the pooling folder's
  ``config.json`` (mean, CLS or max pooling) and ``sentence_bert_config.json``
  (``max_seq_length``). Without them: mean pooling, no normalization, and
  sequences cut at ``max_position_embeddings``.

all-MiniLM-L6-v2 has modules Transformer -> Pooling (``pooling_mode_mean_tokens``)
-> Normalize and ``max_seq_length`` 256: its embeddings are the mean of the
last hidden states over the real tokens (attention mask 1), then divided by
their L2 norm.

Errors name the file: ``FileNotFoundError`` for a missing directory or file,
``ValueError`` for an unknown architecture, a missing or misshapen weight.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .. import _safetensors
from ..nn import BertLayer, Dropout, Embedding, LayerNorm, Module, Sequential, no_init_weights

__all__ = ["BertConfig", "BertEmbeddings", "BertModel", "SentenceBert", "load"]

_ACTS = {"gelu": "gelu", "gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh"}


def _read_json(path: str) -> Any:
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no such file")
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from None


@dataclass
class BertConfig:
    """The fields of a Hugging Face ``BertConfig`` this implementation uses."""

    vocab_size: int
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    hidden_act: str = "gelu"
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12
    pad_token_id: int = 0

    @classmethod
    def from_json(cls, path: str) -> BertConfig:
        """Read ``config.json``; ``ValueError`` naming it for another architecture."""
        raw = _read_json(path)
        if not isinstance(raw, dict):
            raise ValueError(f"{path}: expected a JSON object")
        kind = raw.get("model_type")
        if kind != "bert":
            archs = raw.get("architectures")
            raise ValueError(
                f"{path}: unknown architecture: expected model_type 'bert', got {kind!r} "
                f"(architectures {archs!r})"
            )
        pos = raw.get("position_embedding_type", "absolute")
        if pos != "absolute":
            raise ValueError(f"{path}: position_embedding_type: expected 'absolute', got {pos!r}")
        act = raw.get("hidden_act", "gelu")
        if act not in _ACTS:
            raise ValueError(f"{path}: hidden_act: expected one of {sorted(_ACTS)}, got {act!r}")
        if "vocab_size" not in raw:
            raise ValueError(f"{path}: missing vocab_size")
        fields = {k: raw[k] for k in cls.__dataclass_fields__ if k in raw}
        fields["hidden_act"] = _ACTS[act]
        return cls(**fields)


class BertEmbeddings(Module):
    """Word + position + token-type embeddings, then LayerNorm and dropout (HF names)."""

    def __init__(self, config: BertConfig, seed: int = 0) -> None:
        super().__init__()
        c = config
        self.word_embeddings: Embedding = self.register_module(  # type: ignore[assignment]
            "word_embeddings", Embedding(c.vocab_size, c.hidden_size, c.pad_token_id, seed=seed)
        )
        self.position_embeddings: Embedding = self.register_module(  # type: ignore[assignment]
            "position_embeddings",
            Embedding(c.max_position_embeddings, c.hidden_size, seed=seed + 1),
        )
        self.token_type_embeddings: Embedding = self.register_module(  # type: ignore[assignment]
            "token_type_embeddings", Embedding(c.type_vocab_size, c.hidden_size, seed=seed + 2)
        )
        self.norm = self.register_module("LayerNorm", LayerNorm(c.hidden_size, c.layer_norm_eps))
        self.dropout = self.register_module(
            "dropout", Dropout(c.hidden_dropout_prob, seed=seed + 3)
        )

    def forward(
        self, input_ids: np.ndarray, token_type_ids: np.ndarray | None = None
    ) -> np.ndarray:  # type: ignore[override]
        ids = np.asarray(input_ids)
        if ids.ndim != 2:
            raise ValueError(f"input_ids: expected shape (batch, seq), got {ids.shape}")
        seq = ids.shape[1]
        if seq > self.position_embeddings.num_embeddings:
            raise ValueError(
                f"input_ids: {seq} tokens, more than max_position_embeddings="
                f"{self.position_embeddings.num_embeddings}"
            )
        types = np.zeros_like(ids) if token_type_ids is None else np.asarray(token_type_ids)
        if types.shape != ids.shape:
            raise ValueError(f"token_type_ids: expected shape {ids.shape}, got {types.shape}")
        x = self.word_embeddings.forward(ids)
        x += self.position_embeddings.forward(np.arange(seq)[None, :])  # broadcast over the batch
        x += self.token_type_embeddings.forward(types)
        return self.dropout.forward(self.norm.forward(x))

    def backward(self, grad_out: np.ndarray) -> None:  # type: ignore[override]
        g = self.norm.backward(self.dropout.backward(grad_out))
        self.word_embeddings.backward(g)
        self.position_embeddings.backward(g.sum(axis=0, keepdims=True))
        self.token_type_embeddings.backward(g)
        return None


class BertModel(Module):
    """The BERT encoder: ``embeddings``, then ``encoder.layer.<i>`` (BertLayer).

    ``forward(input_ids, attention_mask=None, token_type_ids=None)`` returns the
    last hidden states, float32 (batch, seq, hidden_size). Parameter names are
    Hugging Face's ``BertModel`` names. Built in eval mode (no dropout).
    """

    def __init__(self, config: BertConfig, seed: int = 0) -> None:
        super().__init__()
        c = self.config = config
        self.embeddings = BertEmbeddings(c, seed)
        self.register_module("embeddings", self.embeddings)
        layers = [
            BertLayer(
                c.hidden_size,
                c.num_attention_heads,
                c.intermediate_size,
                c.layer_norm_eps,
                c.hidden_act,
                c.hidden_dropout_prob,
                c.attention_probs_dropout_prob,
                seed=seed + 100 * (i + 1),
            )
            for i in range(c.num_hidden_layers)
        ]
        encoder = self.register_module("encoder", Module())
        self.layers = layers
        encoder.register_module("layer", Sequential(*layers))
        self.eval()

    def forward(  # type: ignore[override]
        self,
        input_ids: np.ndarray,
        attention_mask: np.ndarray | None = None,
        token_type_ids: np.ndarray | None = None,
    ) -> np.ndarray:
        x = self.embeddings.forward(input_ids, token_type_ids)
        for layer in self.layers:
            x = layer.forward(x, attention_mask)
        return x

    def backward(self, grad_out: np.ndarray) -> None:  # type: ignore[override]
        """Fill every parameter's gradient from the gradient of the last hidden states."""
        for layer in reversed(self.layers):
            grad_out = layer.backward(grad_out)
        self.embeddings.backward(grad_out)
        return None


def mean_pool(hidden: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
    """Mean of ``hidden`` (batch, seq, h) over the tokens where ``attention_mask`` is 1.

    Summed in float64, returned float32; a row without tokens gives zeros
    (sentence-transformers divides by ``max(count, 1e-9)``).
    """
    m = np.asarray(attention_mask, dtype=np.float64)[:, :, None]
    total = np.sum(hidden * m, axis=1, dtype=np.float64)
    return (total / np.maximum(m.sum(axis=1), 1e-9)).astype(np.float32)


class SentenceBert:
    """A :class:`BertModel` with its tokenizer and sentence-transformers' pooling.

    Attributes: ``model`` (:class:`BertModel`), ``tokenizer`` (a
    ``tokenizers.Tokenizer``), ``pooling`` (``"mean"``, ``"cls"`` or
    ``"max"``), ``normalize`` (L2-normalize the embeddings),
    ``max_seq_length`` (longer inputs are truncated), ``path``.
    """

    def __init__(
        self,
        model: BertModel,
        tokenizer: Any,
        pooling: str = "mean",
        normalize: bool = False,
        max_seq_length: int = 512,
        path: str = "",
    ) -> None:
        if pooling not in ("mean", "cls", "max"):
            raise ValueError(f"pooling: expected 'mean', 'cls' or 'max', got {pooling!r}")
        self.model, self.tokenizer = model, tokenizer
        self.pooling, self.normalize = pooling, bool(normalize)
        self.max_seq_length = int(max_seq_length)
        self.path = path
        self.tokenizer.no_padding()
        self.tokenizer.enable_truncation(self.max_seq_length)

    def tokenize(self, sentences: Sequence[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(input_ids, attention_mask, token_type_ids)``, int64 (batch, longest), right-padded."""
        if isinstance(sentences, str) or not all(isinstance(s, str) for s in sentences):
            raise TypeError("sentences: expected a sequence of str")
        encs = self.tokenizer.encode_batch(list(sentences))
        seq = max((len(e.ids) for e in encs), default=0)
        shape = (len(encs), seq)
        ids = np.full(shape, self.model.config.pad_token_id, np.int64)
        mask = np.zeros(shape, np.int64)
        types = np.zeros(shape, np.int64)
        for i, e in enumerate(encs):
            n = len(e.ids)
            ids[i, :n], mask[i, :n], types[i, :n] = e.ids, e.attention_mask, e.type_ids
        return ids, mask, types

    def encode(
        self, sentences: Sequence[str], batch_size: int = 32, normalize: bool | None = None
    ) -> np.ndarray:
        """Sentence embeddings, float32 (len(sentences), hidden_size).

        Batches of ``batch_size`` sentences (sorted by length to limit padding,
        results in input order); pooled over the attention mask as configured;
        L2-normalized if ``normalize`` (default: the directory's setting).
        """
        if isinstance(sentences, str):
            sentences = [sentences]
        if batch_size < 1:
            raise ValueError(f"batch_size: expected an int >= 1, got {batch_size}")
        normalize = self.normalize if normalize is None else normalize
        out = np.zeros((len(sentences), self.model.config.hidden_size), np.float32)
        order = sorted(range(len(sentences)), key=lambda i: len(sentences[i]))
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            ids, mask, types = self.tokenize([sentences[i] for i in idx])
            hidden = self.model.forward(ids, mask, types)
            out[idx] = self.pool(hidden, mask)
        if normalize:
            norm = np.linalg.norm(out.astype(np.float64), axis=1, keepdims=True)
            out = (out / np.maximum(norm, 1e-12)).astype(np.float32)
        return out

    def pool(self, hidden: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        """Pool (batch, seq, h) hidden states to (batch, h) with this model's pooling."""
        if self.pooling == "cls":
            return np.ascontiguousarray(hidden[:, 0])
        if self.pooling == "max":
            masked = np.where(np.asarray(attention_mask)[:, :, None] != 0, hidden, -1e9)
            return masked.max(axis=1).astype(np.float32)
        return mean_pool(hidden, attention_mask)


def _load_weights(model: BertModel, path: str) -> None:
    try:
        entries, _ = _safetensors.read(path)
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no such file") from None
    state = {}
    for name, entry in entries.items():
        key = name[5:] if name.startswith("bert.") else name
        if key.startswith(("pooler.", "cls.")) or key.endswith("position_ids"):
            continue
        state[key] = entry
    targets = model.parameters()  # the weights a checkpoint holds (not dropout counters)
    missing = sorted(set(targets) - set(state))
    unexpected = sorted(set(state) - set(targets))
    if missing or unexpected:
        raise ValueError(
            f"{path}: missing weights {missing[:8]}, unexpected weights {unexpected[:8]}"
        )
    arrays = {}
    for key, entry in state.items():
        a = _safetensors.to_array(f"{path}: {key}", entry, copy=False)  # copied into place below
        if a.shape != targets[key].shape:
            raise ValueError(
                f"{path}: {key}: expected shape {targets[key].shape} (config.json), got {a.shape}"
            )
        arrays[key] = a
    model.load_state_dict(arrays)  # float16 / bfloat16 checkpoints: converted by the copy


def _load_tokenizer(path: str) -> Any:
    import tokenizers

    tj = os.path.join(path, "tokenizer.json")
    if os.path.isfile(tj):
        return tokenizers.Tokenizer.from_file(tj)
    vocab = os.path.join(path, "vocab.txt")
    if not os.path.isfile(vocab):
        raise FileNotFoundError(f"{path}: no tokenizer.json or vocab.txt")
    lower = True
    tc = os.path.join(path, "tokenizer_config.json")
    if os.path.isfile(tc):
        lower = bool(_read_json(tc).get("do_lower_case", True))
    return tokenizers.BertWordPieceTokenizer(vocab, lowercase=lower)


def _sentence_settings(path: str, config: BertConfig) -> tuple[str, bool, int]:
    pooling, normalize = "mean", False
    max_len = config.max_position_embeddings
    modules_path = os.path.join(path, "modules.json")
    if os.path.isfile(modules_path):
        for mod in _read_json(modules_path):
            kind = str(mod.get("type", ""))
            if kind.endswith("Normalize"):
                normalize = True
            elif kind.endswith("Pooling"):
                cfg = _read_json(os.path.join(path, mod.get("path", ""), "config.json"))
                modes = [
                    k
                    for k in ("cls", "mean", "max")
                    if cfg.get(f"pooling_mode_{k}_token" + ("s" if k != "cls" else ""))
                ]
                if len(modes) != 1:
                    raise ValueError(
                        f"{os.path.join(path, mod.get('path', ''), 'config.json')}: "
                        f"expected exactly one of CLS, mean or max pooling, got {modes or 'none'}"
                    )
                pooling = modes[0]
    sb = os.path.join(path, "sentence_bert_config.json")
    if os.path.isfile(sb):
        max_len = int(_read_json(sb).get("max_seq_length", max_len))
    return pooling, normalize, min(max_len, config.max_position_embeddings)


def load(path: str | os.PathLike[str]) -> SentenceBert:
    """Load a Hugging Face BERT directory as a :class:`SentenceBert`.

    Raises ``FileNotFoundError`` naming the missing path (directory,
    config.json, model.safetensors, tokenizer files) and ``ValueError`` naming
    the file for an unknown architecture or weights that do not fit the config.
    """
    path = os.fspath(path)
    if not os.path.isdir(path):
        raise FileNotFoundError(f"{path}: not a directory (expected a Hugging Face BERT folder)")
    config = BertConfig.from_json(os.path.join(path, "config.json"))
    weights = os.path.join(path, "model.safetensors")
    if not os.path.isfile(weights):
        raise FileNotFoundError(f"{weights}: no such file (only safetensors weights are read)")
    tokenizer = _load_tokenizer(path)
    pooling, normalize, max_len = _sentence_settings(path, config)
    with no_init_weights():  # every parameter is loaded next (checked there)
        model = BertModel(config)
    _load_weights(model, weights)
    return SentenceBert(model, tokenizer, pooling, normalize, max_len, path)
