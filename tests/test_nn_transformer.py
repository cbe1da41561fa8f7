"""Transformer blocks against torch and float64 references: LayerNorm, masked
softmax, multi-head self-attention, Embedding, a BERT layer; every ISA, 1 vs
2 threads, odd sizes."""

from __future__ import annotations

import math

import numpy as np
import pytest
from conftest import run_everywhere
from slimgrad import nn

torch = pytest.importorskip("torch")
F = torch.nn.functional

ROW_SIZES = [1, 7, 8, 9, 16, 17, 33, 384, 1001]


def t64(a):
    return torch.from_numpy(np.asarray(a, dtype=np.float64))


# ------------------------------------------------------------- LayerNorm
@pytest.mark.parametrize("n", ROW_SIZES)
@pytest.mark.parametrize("rows", [0, 1, 301])
def test_layer_norm_matches_torch(isa, threads, n, rows, rng):
    x = (rng.standard_normal((rows, n)) * 3 + 1.5).astype(np.float32)
    g = rng.standard_normal((rows, n)).astype(np.float32)
    ln = nn.LayerNorm(n, eps=1e-5)
    ln.weight[:] = rng.standard_normal(n)
    ln.bias[:] = rng.standard_normal(n)
    y = ln.forward(x)
    gx = ln.backward(g)
    tx = t64(x).requires_grad_()
    tw, tb = t64(ln.weight).requires_grad_(), t64(ln.bias).requires_grad_()
    ty = F.layer_norm(tx, (n,), tw, tb, 1e-5)
    ty.backward(t64(g))
    scale = max(1.0, float(np.abs(ty.detach().numpy()).max())) if rows else 1.0
    np.testing.assert_allclose(y, ty.detach().numpy(), rtol=0, atol=3e-6 * scale)
    gscale = 1.0 + (float(np.abs(tx.grad.numpy()).max()) if rows else 0.0)
    np.testing.assert_allclose(gx, tx.grad.numpy(), rtol=0, atol=2e-5 * gscale)
    np.testing.assert_allclose(ln.gradients()["weight"], tw.grad.numpy(), rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(ln.gradients()["bias"], tb.grad.numpy(), rtol=1e-5, atol=1e-4)


def test_layer_norm_same_for_any_thread_count(rng):
    x = rng.standard_normal((2000, 385)).astype(np.float32)
    g = rng.standard_normal((2000, 385)).astype(np.float32)

    def run():
        ln = nn.LayerNorm(385)
        y = ln.forward(x)
        return y, ln.backward(g), ln.gradients()["weight"].copy()

    results = run_everywhere(run)
    for (isa, _), out in results.items():
        ref = results[(isa, 1)]
        for a, b in zip(out, ref):
            np.testing.assert_array_equal(a, b)


def test_layer_norm_functional_and_no_affine(rng):
    x = rng.standard_normal((4, 9)).astype(np.float32)
    ln = nn.LayerNorm(9, elementwise_affine=False)
    ref = F.layer_norm(t64(x), (9,), eps=1e-5).numpy()
    np.testing.assert_allclose(ln.forward(x), ref, atol=3e-6)
    np.testing.assert_allclose(nn.layer_norm(x, None, None), ref, atol=3e-6)
    assert ln.parameters() == {}


def test_layer_norm_bad_input_names_argument(rng):
    ln = nn.LayerNorm(8)
    with pytest.raises(TypeError, match="x: expected a float32"):
        ln.forward(np.zeros((2, 8)))
    with pytest.raises(ValueError, match=r"x: expected shape \(\.\.\., 8\)"):
        ln.forward(np.zeros((2, 7), np.float32))
    with pytest.raises(RuntimeError, match="call forward first"):
        nn.LayerNorm(8).backward(np.zeros((2, 8), np.float32))
    with pytest.raises(TypeError, match="float32 only"):
        nn.LayerNorm(8, dtype=np.float64)


# -------------------------------------------------------- masked softmax
def _mask(rng, b, n):
    m = rng.random((b, n)) < 0.7
    m[:, 0] = True  # every row keeps a key
    return m


@pytest.mark.parametrize("n", ROW_SIZES)
def test_masked_softmax_matches_torch(isa, threads, n, rng):
    b, h, q = 3, 2, 5
    s = (rng.standard_normal((b, h, q, n)) * 4).astype(np.float32)
    keep = _mask(rng, b, n)
    scale = 0.37
    p = nn.masked_softmax(s, keep, scale)
    ts = t64(s).requires_grad_()
    bias = torch.where(torch.from_numpy(keep), 0.0, -math.inf).to(torch.float64)[:, None, None, :]
    tp = torch.softmax(ts * scale + bias, dim=-1)
    np.testing.assert_allclose(p, tp.detach().numpy(), rtol=0, atol=2e-6)
    assert np.all(p[np.broadcast_to(~keep[:, None, None, :], p.shape)] == 0)
    g = rng.standard_normal(s.shape).astype(np.float32)
    tp.backward(t64(g))
    gs = nn.masked_softmax_backward(p, g, scale)
    np.testing.assert_allclose(gs, ts.grad.numpy(), rtol=0, atol=2e-5)


def test_masked_softmax_without_mask_and_in_place(isa, rng):
    s = rng.standard_normal((2, 7, 33)).astype(np.float32)
    ref = torch.softmax(t64(s), -1).numpy()
    np.testing.assert_allclose(nn.masked_softmax(s), ref, atol=2e-6)
    out = nn.masked_softmax(s, None, 1.0, out=s)
    assert out is s
    np.testing.assert_allclose(s, ref, atol=2e-6)


def test_masked_softmax_fully_masked_row_is_zero(isa):
    s = np.ones((2, 3, 17), np.float32)
    keep = np.ones((2, 17), bool)
    keep[1] = False
    p = nn.masked_softmax(s, keep)
    assert np.all(p[1] == 0)
    np.testing.assert_allclose(p[0], 1 / 17, rtol=1e-6)


def test_masked_softmax_same_for_any_thread_count(rng):
    s = rng.standard_normal((4, 12, 77, 77)).astype(np.float32)
    keep = _mask(rng, 4, 77)
    results = run_everywhere(lambda: nn.masked_softmax(s, keep, 0.125))
    for (isa, _), out in results.items():
        np.testing.assert_array_equal(out, results[(isa, 1)])


def test_masked_softmax_bad_mask_names_it_and_writes_nothing():
    s = np.zeros((2, 3, 5), np.float32)
    out = np.full_like(s, 7.0)
    with pytest.raises(ValueError, match=r"attention_mask: expected shape \(2, 5\)"):
        nn.masked_softmax(s, np.ones((2, 4)), out=out)
    with pytest.raises(TypeError, match="scores: expected a float32"):
        nn.masked_softmax(s.astype(np.float64))
    assert np.all(out == 7.0)


# ------------------------------------------------------------- Embedding
def test_embedding_matches_torch(rng):
    emb = nn.Embedding(11, 6, padding_idx=2, seed=3)
    assert np.all(emb.weight[2] == 0)
    ids = rng.integers(0, 11, (4, 9))
    g = rng.standard_normal((4, 9, 6)).astype(np.float32)
    te = torch.nn.Embedding(11, 6, padding_idx=2)
    with torch.no_grad():
        te.weight.copy_(torch.from_numpy(emb.weight))
    y = emb.forward(ids)
    ty = te(torch.from_numpy(ids))
    np.testing.assert_array_equal(y, ty.detach().numpy())
    emb.backward(g)
    ty.backward(torch.from_numpy(g))
    np.testing.assert_allclose(emb.gradients()["weight"], te.weight.grad.numpy(), atol=1e-5)
    with pytest.raises(IndexError, match=r"ids: expected values in \[0, 11\)"):
        emb.forward(np.array([11]))
    with pytest.raises(TypeError, match="ids: expected an integer array"):
        emb.forward(np.array([1.0]))


# ------------------------------------------------- multi-head attention
@pytest.mark.parametrize("seq", [1, 5, 17])
def test_attention_matches_torch_multihead_attention(isa, threads, seq, rng):
    b, e, h = 3, 24, 4
    att = nn.MultiheadSelfAttention(e, h, seed=1)
    mha = torch.nn.MultiheadAttention(e, h, batch_first=True, dtype=torch.float64)
    with torch.no_grad():
        mha.in_proj_weight.copy_(
            t64(np.concatenate([att.query.weight, att.key.weight, att.value.weight]))
        )
        mha.in_proj_bias.copy_(t64(np.concatenate([att.query.bias, att.key.bias, att.value.bias])))
        mha.out_proj.weight.copy_(t64(att.out.weight))
        mha.out_proj.bias.copy_(t64(att.out.bias))
    x = rng.standard_normal((b, seq, e)).astype(np.float32)
    keep = _mask(rng, b, seq)
    g = rng.standard_normal((b, seq, e)).astype(np.float32)
    y = att.forward(x, keep.astype(np.int64))
    gx = att.backward(g)
    tx = t64(x).requires_grad_()
    ty, _ = mha(tx, tx, tx, key_padding_mask=torch.from_numpy(~keep), need_weights=False)
    ty.backward(t64(g))
    np.testing.assert_allclose(y, ty.detach().numpy(), atol=2e-5)
    np.testing.assert_allclose(gx, tx.grad.numpy(), atol=5e-5)
    gw = att.gradients()
    wq_grad = mha.in_proj_weight.grad.numpy()
    np.testing.assert_allclose(gw["query.weight"], wq_grad[:e], atol=1e-4)
    np.testing.assert_allclose(gw["key.weight"], wq_grad[e : 2 * e], atol=1e-4)
    np.testing.assert_allclose(gw["value.weight"], wq_grad[2 * e :], atol=1e-4)
    np.testing.assert_allclose(gw["out.weight"], mha.out_proj.weight.grad.numpy(), atol=1e-4)


def test_attention_matches_torch_sdpa_without_projection(rng):
    att = nn.MultiheadSelfAttention(16, 2, out_proj=False, seed=5)
    x = rng.standard_normal((2, 9, 16)).astype(np.float32)
    keep = _mask(rng, 2, 9)
    y = att.forward(x, keep)

    def heads(lin):
        t = t64(x) @ t64(lin.weight).T + t64(lin.bias)
        return t.reshape(2, 9, 2, 8).transpose(1, 2)

    ref = F.scaled_dot_product_attention(
        heads(att.query),
        heads(att.key),
        heads(att.value),
        attn_mask=torch.from_numpy(keep)[:, None, None, :],
    )
    np.testing.assert_allclose(y, ref.transpose(1, 2).reshape(2, 9, 16).numpy(), atol=2e-5)


def test_attention_bad_input():
    att = nn.MultiheadSelfAttention(8, 2)
    with pytest.raises(ValueError, match=r"x: expected shape \(batch, seq, 8\)"):
        att.forward(np.zeros((2, 8), np.float32))
    with pytest.raises(ValueError, match="attention_mask: expected shape"):
        att.forward(np.zeros((2, 3, 8), np.float32), np.ones((3, 2)))
    with pytest.raises(ValueError, match="num_heads: expected a divisor"):
        nn.MultiheadSelfAttention(10, 3)


# ------------------------------------------------------------ BERT layer
def torch_bert_layer(params, x, keep, heads, eps):
    """BERT's post-LayerNorm encoder layer, written in torch (float64, autograd)."""
    p = {k: t64(v).requires_grad_() for k, v in params.items()}
    b, s, e = x.shape
    d = e // heads

    def lin(t, name):
        return t @ p[f"{name}.weight"].T + p[f"{name}.bias"]

    def split(t):
        return t.reshape(b, s, heads, d).transpose(1, 2)

    q = split(lin(x, "attention.self.query"))
    k = split(lin(x, "attention.self.key"))
    v = split(lin(x, "attention.self.value"))
    bias = torch.where(torch.from_numpy(keep), 0.0, -math.inf).to(torch.float64)[:, None, None, :]
    probs = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(d) + bias, -1)
    ctx = (probs @ v).transpose(1, 2).reshape(b, s, e)
    h = F.layer_norm(
        lin(ctx, "attention.output.dense") + x,
        (e,),
        p["attention.output.LayerNorm.weight"],
        p["attention.output.LayerNorm.bias"],
        eps,
    )
    f = lin(F.gelu(lin(h, "intermediate.dense")), "output.dense")
    y = F.layer_norm(f + h, (e,), p["output.LayerNorm.weight"], p["output.LayerNorm.bias"], eps)
    return y, p


@pytest.mark.parametrize("seq", [3, 13])
def test_bert_layer_matches_torch(isa, threads, seq, rng):
    e, heads, inter, b = 32, 4, 50, 3
    layer = nn.BertLayer(e, heads, inter, layer_norm_eps=1e-12, seed=7)
    for name, w in layer.parameters().items():
        if "LayerNorm" in name:
            w[:] = rng.standard_normal(w.shape) * 0.3 + (1.0 if name.endswith("weight") else 0.0)
    params = {k: v.copy() for k, v in layer.parameters().items()}
    x = rng.standard_normal((b, seq, e)).astype(np.float32)
    keep = _mask(rng, b, seq)
    g = rng.standard_normal((b, seq, e)).astype(np.float32)
    y = layer.forward(x, keep)
    gx = layer.backward(g)
    tx = t64(x).requires_grad_()
    ty, p = torch_bert_layer(params, tx, keep, heads, 1e-12)
    ty.backward(t64(g))
    np.testing.assert_allclose(y, ty.detach().numpy(), atol=5e-5)
    np.testing.assert_allclose(gx, tx.grad.numpy(), atol=2e-4, rtol=1e-4)
    for name, grad in layer.gradients().items():
        ref = p[name].grad.numpy()
        np.testing.assert_allclose(grad, ref, atol=3e-4 * (1 + np.abs(ref).max()), err_msg=name)


def test_bert_layer_names_and_thread_invariance(rng):
    layer = nn.BertLayer(16, 2, 24, seed=1)
    assert set(layer.parameters()) >= {
        "attention.self.query.weight",
        "attention.output.dense.bias",
        "attention.output.LayerNorm.weight",
        "intermediate.dense.weight",
        "output.LayerNorm.bias",
    }
    x = rng.standard_normal((2, 11, 16)).astype(np.float32)
    keep = _mask(rng, 2, 11)
    results = run_everywhere(lambda: layer.forward(x, keep))
    for (isa, _), out in results.items():
        np.testing.assert_array_equal(out, results[(isa, 1)])
    with pytest.raises(ValueError, match="hidden_act"):
        nn.BertLayer(16, 2, 24, hidden_act="relu")
