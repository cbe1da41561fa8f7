"""Transformer blocks: Embedding, LayerNorm, multi-head self-attention, a BERT encoder layer.

float32 only (the C++ kernels' type); reductions that need it run in float64
inside the kernels (LayerNorm parameter gradients). Dense products go through
NumPy (BLAS): the projections and, per head, ``Q K^T`` and ``P V``. The
C++ kernels do what sits between them: LayerNorm forward/backward, the
scaled, masked softmax forward/backward and GELU (:class:`~slimgrad.nn.GELU`),
on the arrays' buffers, threaded, identical for any thread count.

Masks follow Hugging Face's ``attention_mask``: shape (batch, seq), 1 (or
True) for a real token, 0 for padding; padded keys get probability 0 in every
query row. Padded query rows are computed like any other (their outputs are
meaningless and the caller ignores them, as in BERT's mean pooling).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .. import _core
from ._layers import GELU, Dropout, Linear, _check_count, norm_backward
from ._module import Module, check_grad, check_input, init_skipped
from .functional import check_seed

_nn = _core.nn
_F32 = np.dtype(np.float32)

__all__ = [
    "BertLayer",
    "Embedding",
    "LayerNorm",
    "MultiheadSelfAttention",
    "layer_norm",
    "masked_softmax",
    "masked_softmax_backward",
]


def _f32(dtype: Any) -> None:
    if np.dtype(dtype) != _F32:
        raise TypeError(f"dtype: transformer layers are float32 only, got {np.dtype(dtype).name}")


def _key_mask(mask: object, batch: int, seq: int) -> np.ndarray | None:
    """``attention_mask`` as a C-contiguous bool (batch, seq) array (None stays None)."""
    if mask is None:
        return None
    m = np.asarray(mask)
    if m.dtype.kind not in "biuf":
        raise TypeError(f"attention_mask: expected a bool or integer array, got {m.dtype.name}")
    if m.shape != (batch, seq):
        raise ValueError(f"attention_mask: expected shape ({batch}, {seq}), got {m.shape}")
    return np.ascontiguousarray(m != 0)


def masked_softmax(
    scores: np.ndarray,
    attention_mask: np.ndarray | None = None,
    scale: float = 1.0,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """``softmax(scale * scores)`` over the last axis, padded keys excluded.

    Parameters
    ----------
    scores : float32 ndarray, shape (batch, ..., keys)
        Only read (a strided or byte-swapped array is copied once).
    attention_mask : array of shape (batch, keys) or None
        Nonzero / True for the keys to attend to. A row with no key kept
        (or only ``-inf`` scores) is all zeros, not NaN.
    scale : float
        Multiplies the scores before the softmax (``1 / sqrt(head_dim)``).
    out : float32 ndarray or None
        Written in place (C-contiguous, ``scores``' shape); may be ``scores``.

    Raises ``TypeError`` / ``ValueError`` naming the argument for a wrong dtype
    or shape, before anything is written.
    """
    scores = check_input(scores, "scores", _F32) if out is not scores else scores
    if scores.ndim < 2:
        raise ValueError(f"scores: expected at least 2 dimensions, got shape {scores.shape}")
    keep = _key_mask(attention_mask, scores.shape[0], scores.shape[-1])
    if out is None:
        out = _core.empty(scores.shape, scores.dtype)
    _nn.masked_softmax_forward(scores, out, keep, float(scale))
    return out


def masked_softmax_backward(
    probs: np.ndarray, grad_out: np.ndarray, scale: float = 1.0, out: np.ndarray | None = None
) -> np.ndarray:
    """Gradient of :func:`masked_softmax` with respect to ``scores``: ``scale p (g - sum(g p))``.

    ``probs`` is the forward output (masked keys have ``p == 0`` and get a
    zero gradient); ``grad_out`` the gradient of the probabilities, same
    shape, float32. ``out`` may be ``grad_out`` (in place).
    """
    probs = check_input(probs, "probs", _F32)
    if out is not grad_out:
        grad_out = check_input(grad_out, "grad_out", _F32)
    if out is None:
        out = _core.empty(probs.shape, probs.dtype)
    _nn.masked_softmax_backward(probs, grad_out, out, float(scale))
    return out


def layer_norm(
    x: np.ndarray,
    weight: np.ndarray | None,
    bias: np.ndarray | None,
    eps: float = 1e-5,
) -> np.ndarray:
    """LayerNorm over the last axis (``torch.nn.functional.layer_norm`` with one normalized dim).

    ``x`` float32 of shape (..., n), only read; ``weight`` / ``bias`` float32
    (n,) or None. Returns a new array. Biased variance, ``eps`` inside the
    square root, as torch.
    """
    x = check_input(x, "x", _F32)
    if x.ndim < 1:
        raise ValueError(f"x: expected at least 1 dimension, got shape {x.shape}")
    y = _core.empty(x.shape, x.dtype)
    stats = np.empty(x.shape[:-1], _F32), np.empty(x.shape[:-1], _F32)
    _nn.layer_norm_forward(x, y, weight, bias, stats[0], stats[1], float(eps))
    return y


class Embedding(Module):
    """A lookup table: ``forward(ids) = weight[ids]``.

    ``weight`` (num_embeddings, embedding_dim) float32, initialized N(0, 1) as
    torch (``padding_idx``'s row zeroed). ``ids``: integer array of any shape,
    values in ``[0, num_embeddings)`` (``IndexError`` otherwise). ``backward``
    overwrites ``gradients()["weight"]`` (rows summed with ``np.add.at``;
    ``padding_idx``'s row gets no gradient, as torch) and returns None (ids
    have no gradient).
    """

    def __init__(
        self,
        num_embeddings: int,
        embedding_dim: int,
        padding_idx: int | None = None,
        dtype: object = np.float32,
        seed: int = 0,
    ) -> None:
        super().__init__()
        _f32(dtype)
        self.num_embeddings = _check_count(num_embeddings, "num_embeddings")
        self.embedding_dim = _check_count(embedding_dim, "embedding_dim")
        if padding_idx is not None and not 0 <= padding_idx < self.num_embeddings:
            raise ValueError(
                f"padding_idx: expected a row in [0, {self.num_embeddings}), got {padding_idx}"
            )
        self.padding_idx = padding_idx
        seed = check_seed(seed, "seed")
        shape = (self.num_embeddings, self.embedding_dim)
        if init_skipped():
            w = np.empty(shape, np.float32)
        else:
            w = np.random.default_rng(seed).standard_normal(shape, dtype=np.float32)
            if padding_idx is not None:
                w[padding_idx] = 0.0
        self.weight = self.register_parameter("weight", w)
        self._ids: np.ndarray | None = None

    def forward(self, ids: np.ndarray) -> np.ndarray:
        ids = np.asarray(ids)
        if ids.dtype.kind not in "iu":
            raise TypeError(f"ids: expected an integer array, got {ids.dtype.name}")
        if ids.size and (ids.min() < 0 or ids.max() >= self.num_embeddings):
            raise IndexError(
                f"ids: expected values in [0, {self.num_embeddings}), "
                f"got values in [{ids.min()}, {ids.max()}]"
            )
        self._ids = ids
        return self.weight[ids]

    def backward(self, grad_out: np.ndarray) -> None:  # type: ignore[override]
        ids = self._ids
        shape = None if ids is None else ids.shape + (self.embedding_dim,)
        g = check_grad(grad_out, self.weight if ids is not None else None, "Embedding", shape)
        assert ids is not None
        gw = self._gradients["weight"]
        gw.fill(0)
        np.add.at(gw, ids.reshape(-1), g.reshape(-1, self.embedding_dim))
        if self.padding_idx is not None:
            gw[self.padding_idx] = 0.0
        return None

    def extra_repr(self) -> str:
        pad = "" if self.padding_idx is None else f", padding_idx={self.padding_idx}"
        return f"{self.num_embeddings}, {self.embedding_dim}{pad}"


class LayerNorm(Module):
    """Layer normalization over the last axis, torch's ``nn.LayerNorm(n)``.

    ``y = (x - mean) / sqrt(var + eps) * weight + bias`` per row of ``n``
    values (biased variance). ``x``: float32 of shape (..., n), only read.
    C++ kernels: row statistics in float lanes, two passes; parameter
    gradients summed in float64 over fixed row blocks. ``backward`` overwrites
    ``gradients()["weight"]`` / ``["bias"]``.
    """

    def __init__(
        self,
        normalized_shape: int,
        eps: float = 1e-5,
        elementwise_affine: bool = True,
        bias: bool = True,
        dtype: object = np.float32,
    ) -> None:
        super().__init__()
        _f32(dtype)
        self.normalized_shape = _check_count(normalized_shape, "normalized_shape")
        if not eps >= 0:
            raise ValueError(f"eps: expected a number >= 0, got {eps}")
        self.eps = float(eps)
        n = self.normalized_shape
        self.weight = (
            self.register_parameter("weight", np.ones(n, np.float32))
            if elementwise_affine
            else None
        )
        self.bias = (
            self.register_parameter("bias", np.zeros(n, np.float32))
            if elementwise_affine and bias
            else None
        )
        self._cache: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
        self._y: np.ndarray | None = None

    def forward(self, x: np.ndarray) -> np.ndarray:
        x = check_input(x, "x", _F32)
        if x.ndim < 1 or x.shape[-1] != self.normalized_shape:
            raise ValueError(f"x: expected shape (..., {self.normalized_shape}), got {x.shape}")
        y = _core.empty(x.shape, x.dtype)
        mean = np.empty(x.shape[:-1], np.float32)
        rstd = np.empty(x.shape[:-1], np.float32)
        _nn.layer_norm_forward(x, y, self.weight, self.bias, mean, rstd, self.eps)
        self._cache = (x, mean, rstd)
        self._y = y
        return y

    def backward(self, grad_out: np.ndarray) -> np.ndarray:
        # The cache is (x, mean, rstd).
        return norm_backward(self, _nn.layer_norm_backward, grad_out, "LayerNorm")

    def extra_repr(self) -> str:
        affine = self.weight is not None
        return f"({self.normalized_shape},), eps={self.eps}, elementwise_affine={affine}"


class MultiheadSelfAttention(Module):
    """Multi-head self-attention with key padding masks (BERT's ``attention.self``).

    Children ``query``, ``key``, ``value`` (Linear embed_dim -> embed_dim) and,
    if ``out_proj``, ``out`` (torch's ``out_proj``; BERT keeps it in
    ``attention.output.dense`` instead). ``forward(x, attention_mask)`` with
    ``x`` float32 (batch, seq, embed_dim) and ``attention_mask`` (batch, seq)
    (1 = token, 0 = padding) or None. Per head: ``P = masked_softmax(Q K^T,
    scale=1/sqrt(head_dim))``, then ``P V``, all in C++ on the projections
    as the Linears write them (no per-head copies; float32 sums in order,
    one task per batch element and head); attention dropout ``dropout`` on
    ``P`` in training. ``backward(grad)`` returns the gradient
    with respect to ``x`` and fills the projections' gradients.
    """

    # Linear children that forward() always calls on one and the same input:
    # calibration collects their input statistics once for all three.
    shared_input = ("query", "key", "value")

    def __init__(
        self,
        embed_dim: int,
        num_heads: int,
        dropout: float = 0.0,
        bias: bool = True,
        out_proj: bool = True,
        dtype: object = np.float32,
        seed: int = 0,
    ) -> None:
        super().__init__()
        _f32(dtype)
        self.embed_dim = _check_count(embed_dim, "embed_dim", 1)
        self.num_heads = _check_count(num_heads, "num_heads", 1)
        if self.embed_dim % self.num_heads:
            raise ValueError(
                f"num_heads: expected a divisor of embed_dim={self.embed_dim}, got {num_heads}"
            )
        self.head_dim = self.embed_dim // self.num_heads
        self.scale = 1.0 / math.sqrt(self.head_dim)
        e = self.embed_dim
        self.query = self.register_module("query", Linear(e, e, bias, seed=seed))
        self.key = self.register_module("key", Linear(e, e, bias, seed=seed + 1))
        self.value = self.register_module("value", Linear(e, e, bias, seed=seed + 2))
        self.out = (
            self.register_module("out", Linear(e, e, bias, seed=seed + 3)) if out_proj else None
        )
        self.dropout = self.register_module("dropout", Dropout(dropout, seed=seed + 4))
        self._cache: tuple | None = None

    def forward(self, x: np.ndarray, attention_mask: np.ndarray | None = None) -> np.ndarray:  # type: ignore[override]
        x = check_input(x, "x", _F32)
        if x.ndim != 3 or x.shape[2] != self.embed_dim:
            raise ValueError(f"x: expected shape (batch, seq, {self.embed_dim}), got {x.shape}")
        b, s, _ = x.shape
        keep = _key_mask(attention_mask, b, s)
        # (batch, seq, embed_dim), head h in columns [h d, (h + 1) d)
        q, k, v = (np.ascontiguousarray(p.forward(x)) for p in (self.query, self.key, self.value))
        heads = self.num_heads
        scores = _nn.attention_scores(q, k, heads)  # (b, h, s, s), new
        probs = scores  # in place: the scores are not needed again
        _nn.masked_softmax_forward(scores, probs, keep, self.scale)
        dropped = self.dropout.forward(probs)
        ctx = _nn.attention_context(np.ascontiguousarray(dropped), v)  # (b, s, embed_dim)
        self._cache = (q, k, v, probs, dropped, (b, s))
        return self.out.forward(ctx) if self.out is not None else ctx

    def backward(self, grad_out: np.ndarray) -> np.ndarray:
        if self._cache is None:
            raise RuntimeError("MultiheadSelfAttention.backward: call forward first")
        q, k, v, probs, dropped, (b, s) = self._cache
        if self.out is not None:
            grad_out = self.out.backward(grad_out)
        g = check_grad(grad_out, probs, "MultiheadSelfAttention", (b, s, self.embed_dim))
        g = np.ascontiguousarray(g)
        heads = self.num_heads
        gv = _nn.attention_context(np.ascontiguousarray(dropped), g, True)  # P^T g
        gp = _nn.attention_scores(g, v, heads)  # g v^T, new (b, h, s, s)
        gp = self.dropout.backward(gp)
        gs = gp if gp.flags.writeable and gp.flags.c_contiguous else np.empty_like(gp)
        _nn.masked_softmax_backward(probs, gp, gs, self.scale)
        gq = _nn.attention_context(gs, k)  # S k
        gk = _nn.attention_context(gs, q, True)  # S^T q
        gx = self.query.backward(gq)
        gx += self.key.backward(gk)
        gx += self.value.backward(gv)
        return gx

    def extra_repr(self) -> str:
        return f"embed_dim={self.embed_dim}, num_heads={self.num_heads}"


class _Block(Module):
    """A named container (``attention``, ``attention.output``, ``intermediate``,
    ``output``) so parameter names are Hugging Face's; BertLayer drives it."""


class BertLayer(Module):
    """One BERT encoder layer (post-LayerNorm), Hugging Face's module tree and names.

    ``attention.self`` (:class:`MultiheadSelfAttention` without output
    projection), ``attention.output.{dense, LayerNorm}``,
    ``intermediate.dense`` + GELU, ``output.{dense, LayerNorm}``::

        h = LN1(x + dropout(dense_o(attention(x, mask))))
        y = LN2(h + dropout(dense_2(gelu(dense_1(h)))))

    ``hidden_act``: ``"gelu"`` (erf form, BERT's) or ``"gelu_tanh"``.
    ``x`` float32 (batch, seq, hidden); ``attention_mask`` (batch, seq) or None.
    ``backward(grad)`` returns the gradient with respect to ``x``.
    """

    def __init__(
        self,
        hidden_size: int,
        num_heads: int,
        intermediate_size: int,
        layer_norm_eps: float = 1e-12,
        hidden_act: str = "gelu",
        dropout: float = 0.0,
        attention_dropout: float = 0.0,
        seed: int = 0,
    ) -> None:
        super().__init__()
        if hidden_act not in ("gelu", "gelu_tanh"):
            raise ValueError(f"hidden_act: expected 'gelu' or 'gelu_tanh', got {hidden_act!r}")
        h, i = hidden_size, intermediate_size
        att = self.register_module("attention", _Block())
        self.attn = MultiheadSelfAttention(
            h, num_heads, attention_dropout, out_proj=False, seed=seed
        )
        att.register_module("self", self.attn)
        ao = att.register_module("output", _Block())
        self.attn_dense = ao.register_module("dense", Linear(h, h, seed=seed + 10))
        self.attn_norm = ao.register_module("LayerNorm", LayerNorm(h, layer_norm_eps))
        self.attn_drop = ao.register_module("dropout", Dropout(dropout, seed=seed + 11))
        inter = self.register_module("intermediate", _Block())
        self.ffn_in = inter.register_module("dense", Linear(h, i, seed=seed + 12))
        self.act = inter.register_module("act", GELU("none" if hidden_act == "gelu" else "tanh"))
        out = self.register_module("output", _Block())
        self.ffn_out = out.register_module("dense", Linear(i, h, seed=seed + 13))
        self.out_norm = out.register_module("LayerNorm", LayerNorm(h, layer_norm_eps))
        self.out_drop = out.register_module("dropout", Dropout(dropout, seed=seed + 14))

    def forward(self, x: np.ndarray, attention_mask: np.ndarray | None = None) -> np.ndarray:  # type: ignore[override]
        a = self.attn.forward(x, attention_mask)
        t = self.attn_drop.forward(self.attn_dense.forward(a))
        t += x  # in place: t is a new array no layer keeps (saves a 2nd output per add)
        h = self.attn_norm.forward(t)
        f = self.out_drop.forward(self.ffn_out.forward(self.act.forward(self.ffn_in.forward(h))))
        f += h
        return self.out_norm.forward(f)

    def backward(self, grad_out: np.ndarray) -> np.ndarray:
        g2 = self.out_norm.backward(grad_out)  # gradient of (f + h)
        gh = self.ffn_in.backward(
            self.act.backward(self.ffn_out.backward(self.out_drop.backward(g2)))
        )
        gh += g2
        g1 = self.attn_norm.backward(gh)  # gradient of (t + x)
        gx = self.attn.backward(self.attn_dense.backward(self.attn_drop.backward(g1)))
        gx += g1
        return gx
