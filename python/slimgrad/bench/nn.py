"""nn suite: Dropout, BatchNorm1d and GELU forward+backward on (size, 1024) float32,
and a BERT encoder forward at all-MiniLM-L6-v2's shapes.

Each implementation does what a training step does: forward, then backward
with a given output gradient, allocating its outputs like a layer would.
  - slimgrad: the nn layers (C++ kernels; the dropout mask is recomputed in
    backward from the Philox counter, BatchNorm statistics in float64).
  - numpy: the textbook formulas (a boolean mask kept for backward; float32
    statistics through NumPy's pairwise sums).
  - torch: torch.nn.functional.dropout / torch.nn.BatchNorm1d / F.gelu with
    autograd.
``bytes`` is the compulsory traffic: forward reads x and writes y, backward
reads the output gradient (and x for BatchNorm and GELU) and writes the input
gradient. The BERT case runs slimgrad.models.bert.BertModel (random weights,
MiniLM's config: 6 layers, hidden 384, 12 heads, intermediate 1536) on a
batch of 32 sequences of 32 tokens, next to transformers' BertModel holding
the same weights (eval, torch.no_grad; only when transformers is installed);
then the same encoder quantized to W8A8 (``quant.quantize_dynamic``) next to
torch's dynamic int8 quantization of transformers' model.
NumPy has no erf, so GELU has no NumPy peer (scipy.special.erf
would be one more dependency).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator

import numpy as np

from .. import nn
from . import Case, optional_import

DEFAULT_SIZE = 4096  # rows; 1024 features: 16 MiB per float32 array
FEATURES = 1024
P = 0.1
EPS = 1e-5


def cases(size: int) -> Iterator[Case]:
    torch = optional_import("torch")
    rng = np.random.default_rng(0)
    shape = (size, FEATURES)
    n = size * FEATURES
    x = rng.standard_normal(shape, dtype=np.float32)
    g = rng.standard_normal(shape, dtype=np.float32)
    tx = tg = None
    if torch is not None:
        tx = torch.from_numpy(x.copy()).requires_grad_()
        tg = torch.from_numpy(g)

    # ------------------------------------------------------------- Dropout
    drop = nn.Dropout(P, seed=0)

    def ours_dropout():
        drop.forward(x)
        return drop.backward(g)

    np_rng = np.random.default_rng(1)
    scale = np.float32(1.0 / (1.0 - P))

    def numpy_dropout():
        keep = np_rng.random(shape, dtype=np.float32) >= P
        y = np.where(keep, x * scale, np.float32(0))
        return y, np.where(keep, g * scale, np.float32(0))

    impls = {"slimgrad": ours_dropout, "numpy (bool mask)": numpy_dropout}
    if torch is not None:

        def torch_dropout():
            tx.grad = None
            torch.nn.functional.dropout(tx, p=P, training=True).backward(tg)

        impls["torch F.dropout+autograd"] = torch_dropout
    yield Case(f"Dropout fwd+bwd f32 {size}x{FEATURES}", impls, bytes=4 * 4 * n)

    # --------------------------------------------------------- BatchNorm1d
    bn = nn.BatchNorm1d(FEATURES)

    def ours_bn():
        bn.forward(x)
        return bn.backward(g)

    w = np.ones(FEATURES, np.float32)
    b = np.zeros(FEATURES, np.float32)

    def numpy_bn():
        mean = x.mean(axis=0)
        xc = x - mean
        var = np.mean(xc * xc, axis=0)
        invstd = 1.0 / np.sqrt(var + np.float32(EPS))
        xhat = xc * invstd
        y = xhat * w + b
        # backward
        gw = np.sum(g * xhat, axis=0)
        gb = np.sum(g, axis=0)
        dx = (w * invstd) * (g - gb / size - xhat * (gw / size))
        return y, dx, gw, gb

    impls = {"slimgrad": ours_bn, "numpy (textbook)": numpy_bn}
    if torch is not None:
        tbn = torch.nn.BatchNorm1d(FEATURES)

        def torch_bn():
            tx.grad = None
            tbn.zero_grad(set_to_none=True)
            tbn(tx).backward(tg)

        impls["torch BatchNorm1d+autograd"] = torch_bn
    yield Case(f"BatchNorm1d fwd+bwd f32 {size}x{FEATURES}", impls, bytes=5 * 4 * n)

    # ---------------------------------------------------------------- GELU
    gelu = nn.GELU()

    def ours_gelu():
        gelu.forward(x)
        return gelu.backward(g)

    impls = {"slimgrad": ours_gelu}
    if torch is not None:

        def torch_gelu():
            tx.grad = None
            torch.nn.functional.gelu(tx).backward(tg)

        impls["torch F.gelu+autograd"] = torch_gelu
    yield Case(f"GELU (erf) fwd+bwd f32 {size}x{FEATURES}", impls, bytes=5 * 4 * n)

    yield from bert_cases()


def bert_cases() -> Iterator[Case]:
    """BERT encoder forward at MiniLM's shapes (see the module docstring)."""
    from ..models import bert

    config = bert.BertConfig(
        vocab_size=30522, hidden_size=384, num_hidden_layers=6, num_attention_heads=12,
        intermediate_size=1536,
    )  # fmt: skip
    model = bert.BertModel(config)
    rng = np.random.default_rng(0)
    batch, seq = 32, 32
    ids = rng.integers(1000, 30000, size=(batch, seq))
    mask = np.ones((batch, seq), np.int64)
    mask[batch // 2 :, seq // 2 :] = 0  # half the batch padded to half length
    impls = {"slimgrad": lambda: model.forward(ids, mask)}
    transformers = optional_import("transformers")
    if transformers is not None:
        import torch

        theirs = transformers.BertModel(
            transformers.BertConfig(**vars(config)), add_pooling_layer=False
        ).eval()
        theirs.load_state_dict({k: torch.from_numpy(v) for k, v in model.parameters().items()})
        t_ids, t_mask = torch.from_numpy(ids), torch.from_numpy(mask)

        def torch_bert():
            with torch.no_grad():
                return theirs(input_ids=t_ids, attention_mask=t_mask).last_hidden_state

        impls["transformers BertModel (torch)"] = torch_bert
    yield Case(f"BERT forward MiniLM shapes {batch}x{seq} tokens", impls)

    # The same encoder with every Linear in W8A8 (int8 weights per channel,
    # int8 activations per token), next to torch's dynamic int8 quantization of
    # transformers' model: what a user who compresses MiniLM for CPU compares.
    from .. import quant

    quantized = bert.BertModel(config)  # the same weights (deterministic init)
    quant.quantize_dynamic(quantized, "int8")
    impls = {"slimgrad": lambda: quantized.forward(ids, mask)}
    if transformers is not None:
        with warnings.catch_warnings():  # torch.ao's deprecation notice (moving to torchao)
            warnings.simplefilter("ignore")
            theirs_q = torch.ao.quantization.quantize_dynamic(
                theirs, {torch.nn.Linear}, dtype=torch.qint8
            )

        def torch_bert_int8():
            with torch.no_grad():
                return theirs_q(input_ids=t_ids, attention_mask=t_mask).last_hidden_state

        impls["torch dynamic int8 BertModel"] = torch_bert_int8
        impls["transformers BertModel (torch)"] = torch_bert
    yield Case(f"BERT forward W8A8 MiniLM {batch}x{seq} tokens", impls)
