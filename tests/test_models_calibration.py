"""Calibration: the fused Hessian kernel against float64 NumPy (every ISA, 1 vs
2 threads, tile edges), channel statistics, per-layer collection on a BERT,
save / load."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import run_everywhere, save_random_bert
from slimgrad import _core, nn
from slimgrad.models import Calibration, calibration, hessian_accumulate

# Around the register tiles (avx2 6 x 16, avx512 12 x 32) the 256-row blocks and the 1024-row packs.
DIMS = [1, 6, 13, 32, 33, 100]
TOKENS = [0, 1, 257, 1100]


@pytest.mark.parametrize("d", DIMS)
@pytest.mark.parametrize("n", TOKENS)
@pytest.mark.parametrize("hdtype", [np.float32, np.float64])
def test_hessian_matches_float64(isa, threads, d, n, hdtype, rng):
    x = (rng.standard_normal((n, d)) + 0.5).astype(np.float32)
    h0 = rng.standard_normal((d, d))
    h0 = (h0 + h0.T).astype(hdtype)  # accumulates onto a symmetric start
    h = h0.copy()
    a = np.ones(d)
    q = np.full(d, 2.0)
    hessian_accumulate(x, h, a, q)
    x64 = x.astype(np.float64)
    ref = h0.astype(np.float64) + x64.T @ x64
    tol = 1e-5 * (np.abs(x64).T @ np.abs(x64) + 1) + (1e-6 if hdtype == np.float32 else 0)
    assert np.all(np.abs(h - ref) <= tol * (10 if hdtype == np.float32 else 1))
    assert np.array_equal(h, h.T)
    np.testing.assert_allclose(a, 1 + np.abs(x64).sum(0), rtol=1e-12)
    np.testing.assert_allclose(q, 2 + (x64**2).sum(0), rtol=1e-12)


def test_hessian_accumulates_over_calls_and_is_thread_invariant(rng):
    x = rng.standard_normal((3000, 77)).astype(np.float32)

    def run():
        h = np.zeros((77, 77))
        hessian_accumulate(x[:1000], h)
        hessian_accumulate(x[1000:], h)
        return h

    results = run_everywhere(run)
    ref = x.astype(np.float64).T @ x.astype(np.float64)
    for (isa, _), h in results.items():
        np.testing.assert_array_equal(h, results[(isa, 1)])
        np.testing.assert_allclose(h, ref, rtol=1e-5, atol=1e-3)


@pytest.mark.parametrize("d", DIMS)
@pytest.mark.parametrize("n", TOKENS)
def test_hessian_inner_is_the_quadratic_form(isa, threads, d, n, rng):
    # <H, x^T x> = trace(x H x^T) without forming x^T x (AWQ's search and the
    # compress report): against float64, reading only H's upper triangle.
    x = (rng.standard_normal((n, d)) + 0.5).astype(np.float32)
    y = rng.standard_normal((3 * d, d))
    h = y.T @ y
    x64 = x.astype(np.float64)
    want = np.einsum("ij,ij->", x64 @ h, x64)
    bound = 1e-5 * np.einsum("ij,ij->", np.abs(x64) @ np.abs(h), np.abs(x64)) + 1e-12
    lower_garbage = h + np.tril(np.full((d, d), np.nan), -1)
    for hh in (h, lower_garbage):
        assert abs(_core.nn.hessian_inner(x, hh) - want) <= bound


def test_hessian_inner_is_thread_invariant_and_refuses_bad_input(rng):
    x = rng.standard_normal((1500, 77)).astype(np.float32)
    y = rng.standard_normal((200, 77))
    h = y.T @ y
    results = run_everywhere(lambda: _core.nn.hessian_inner(x, h))
    for (isa, _), value in results.items():
        assert value == results[(isa, 1)]
    h_before = h.copy()
    with pytest.raises(ValueError, match=r"hessian: expected .*\(77, 77\)"):
        _core.nn.hessian_inner(x, np.zeros((77, 76)))
    with pytest.raises(TypeError, match="hessian: expected float64"):
        _core.nn.hessian_inner(x, h.astype(np.float32))
    with pytest.raises(TypeError, match="x: expected float32"):
        _core.nn.hessian_inner(x.astype(np.float64), h)
    with pytest.raises(ValueError, match="x: expected a 2-D"):
        _core.nn.hessian_inner(np.ones(3, np.float32), h)
    np.testing.assert_array_equal(h, h_before)


def test_hessian_strided_input_is_copied_once(rng):
    x = rng.standard_normal((50, 20)).astype(np.float32)
    h = np.zeros((10, 10))
    hessian_accumulate(x[:, ::2], h)
    x64 = x[:, ::2].astype(np.float64)
    np.testing.assert_allclose(h, x64.T @ x64, rtol=1e-5)


def test_hessian_bad_input_names_argument_and_writes_nothing():
    x = np.ones((4, 3), np.float32)
    h = np.full((3, 3), 5.0)
    a = np.full(3, 5.0)
    with pytest.raises(ValueError, match=r"hessian: expected .*\(3, 3\)"):
        hessian_accumulate(x, np.zeros((3, 4)))
    with pytest.raises(ValueError, match=r"abs_sum: expected .*\(3,\)"):
        hessian_accumulate(x, h, np.zeros(4))
    with pytest.raises(TypeError, match="sq_sum: expected float64"):
        hessian_accumulate(x, h, a, np.zeros(3, np.float32))
    with pytest.raises(TypeError, match="x: expected a float32"):
        hessian_accumulate(x.astype(np.float64), h)
    with pytest.raises(ValueError, match="x: expected a 2-D"):
        hessian_accumulate(np.ones(3, np.float32), h)
    assert np.all(h == 5.0) and np.all(a == 5.0)


def test_record_collects_linear_inputs_without_padding(rng):
    model = nn.Sequential(nn.Linear(6, 9, seed=1), nn.GELU(), nn.Linear(9, 4, seed=2))
    x = rng.standard_normal((3, 5, 6)).astype(np.float32)
    mask = rng.random((3, 5)) < 0.6
    calib = Calibration()
    with calib.record(model):
        calib.token_mask = mask.reshape(-1)
        model.forward(x)
    assert "forward" not in vars(model[0])  # the hooks are gone
    assert set(calib.hessians) == {"0", "2"} and calib.tokens["0"] == mask.sum()
    x0 = x[mask].astype(np.float64)
    np.testing.assert_allclose(calib.hessians["0"], x0.T @ x0, rtol=1e-5, atol=1e-5)
    x2 = model[1].forward(model[0].forward(x))[mask].astype(np.float64)
    np.testing.assert_allclose(calib.hessians["2"], x2.T @ x2, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(calib.mean_abs("2"), np.abs(x2).mean(0), rtol=1e-6)
    np.testing.assert_allclose(calib.l2_norm("2"), np.linalg.norm(x2, axis=0), rtol=1e-6)


def test_save_load_roundtrip(tmp_path, rng):
    calib = Calibration()
    calib.add("a.b", rng.standard_normal((20, 7)).astype(np.float32))
    calib.add("c", rng.standard_normal((9, 3)).astype(np.float32))
    path = tmp_path / "calib.safetensors"
    calib.save(path)
    back = Calibration.load(path)
    assert back.tokens == {"a.b": 20, "c": 9}
    for name in calib.hessians:
        np.testing.assert_array_equal(back.hessians[name], calib.hessians[name])
        np.testing.assert_array_equal(back.abs_sums[name], calib.abs_sums[name])
        np.testing.assert_array_equal(back.sq_sums[name], calib.sq_sums[name])
    other = tmp_path / "other.safetensors"
    st = calibration._safetensors
    st.write(str(other), {"w": st.to_entry(np.zeros(3, np.float32))}, None)
    with pytest.raises(ValueError, match="not a slimgrad calibration file"):
        Calibration.load(other)


def test_add_rejects_another_width():
    calib = Calibration()
    calib.add("x", np.ones((2, 4), np.float32))
    with pytest.raises(ValueError, match="x: expected inputs with 4 features, got 5"):
        calib.add("x", np.ones((2, 5), np.float32))
    assert calib.tokens["x"] == 2


def test_calibrate_bert(tmp_path):
    pytest.importorskip("transformers")
    pytest.importorskip("torch")
    from slimgrad.models import bert

    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "b", "c", "d"]
    save_random_bert(tmp_path, vocab, layers=1, hidden=16, heads=2, intermediate=24, positions=32)
    sb = bert.load(tmp_path)
    sentences = ["a b", "a b c d a b c d", "c"]
    calib = calibration.calibrate(sb, sentences, batch_size=2)
    names = [n for n, _ in calibration.linear_layers(sb.model)]
    assert sorted(calib.hessians) == sorted(names) and len(names) == 6
    ids, mask, types = sb.tokenize(sentences)
    assert calib.tokens["encoder.layer.0.attention.self.query"] == mask.sum()
    emb = sb.model.embeddings.forward(ids, types)[mask.astype(bool)].astype(np.float64)
    attn = "encoder.layer.0.attention.self."
    for name in ("query", "key", "value"):  # collected once (shared_input), right for all three
        np.testing.assert_allclose(calib.hessians[attn + name], emb.T @ emb, rtol=1e-4, atol=1e-4)
        assert calib.tokens[attn + name] == mask.sum()
    assert calib.hessians[attn + "key"] is calib.hessians[attn + "query"]
    assert calib.sq_sums[attn + "value"] is calib.sq_sums[attn + "query"]
    assert calib.hessians["encoder.layer.0.output.dense"].shape == (24, 24)
    assert calibration.shared_inputs(sb.model) == {
        attn + "key": attn + "query",
        attn + "value": attn + "query",
    }
    assert calib._followers == {}  # record() leaves nothing behind
    # and the model is as before: no layer is left wrapped
    assert all("forward" not in vars(layer) for _, layer in calibration.linear_layers(sb.model))
