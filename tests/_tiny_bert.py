"""A random 2-layer BERT (hidden 64, 4 heads) as a Hugging Face folder, and
sentences over its vocabulary: the model the compress tests run on (built
here, no download)."""

from __future__ import annotations

import json

import numpy as np
from safetensors.numpy import save_file

WORDS = (
    "the a cat dog sat on mat quick brown fox jumps over lazy model weights are small and "
    "numbers compress well it is good bad ok run fast slow train river city rain house tree"
).split()


def make_tiny_bert(path):
    """Write the model into the folder ``path``; returns ``path``."""
    from slimgrad.models import bert

    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", ".", ","] + WORDS
    (path / "vocab.txt").write_text("\n".join(vocab) + "\n")
    config = {
        "model_type": "bert",
        "architectures": ["BertModel"],
        "vocab_size": len(vocab),
        "hidden_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "intermediate_size": 128,
        "max_position_embeddings": 64,
        "type_vocab_size": 2,
        "layer_norm_eps": 1e-12,
        "hidden_act": "gelu",
        "pad_token_id": 0,
    }
    (path / "config.json").write_text(json.dumps(config))
    rng = np.random.default_rng(7)
    model = bert.BertModel(bert.BertConfig.from_json(str(path / "config.json")))
    state = {}
    for name, value in model.parameters().items():
        noise = rng.standard_normal(value.shape).astype(np.float32)
        state[name] = (value + 0.05 * noise).astype(np.float32)
    save_file(state, str(path / "model.safetensors"))
    return path


def sentences(n, seed=0):
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(WORDS, size=int(rng.integers(4, 14)))) for _ in range(n)]
