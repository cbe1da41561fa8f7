"""slimgrad compress: the per-layer pipeline on a small random BERT (built
here, no download), AWQ folding exactness, the budget, and the command
line's refusals (one line, exit 2, nothing written)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from _tiny_bert import make_tiny_bert, sentences
from slimgrad import quant
from slimgrad.cli import main
from slimgrad.compress._model import compress, cosines, layer_weights, quality, swapped
from slimgrad.compress._pipeline import Recipe, fold_awq_scales

pytest.importorskip("tokenizers")
from slimgrad.models import bert  # noqa: E402
from slimgrad.models.calibration import calibrate  # noqa: E402


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory):
    return make_tiny_bert(tmp_path_factory.mktemp("tiny_bert"))


@pytest.fixture(scope="module")
def calibrated(tiny_bert):
    model = bert.load(str(tiny_bert))
    return model, calibrate(model, sentences(48))


def test_awq_folding_keeps_the_float_model(calibrated):
    model, calib = calibrated
    layers = layer_weights(model)
    means = {n: calib.mean_abs(n) for n in layers}
    weights, _, folded = fold_awq_scales(layers, calib.hessians, means, Recipe("awq", 4, 32))
    changed = [n for n in layers if not np.array_equal(weights[n], layers[n][0])]
    assert sorted(changed) == sorted(
        f"encoder.layer.{i}.attention.{p}" for i in (0, 1) for p in ("self.value", "output.dense")
    )
    text = sentences(10, seed=1)
    before = model.encode(text)
    with swapped(model, {**weights, **folded}):
        after = model.encode(text)
    assert cosines(before, after).min() > 0.99999


@pytest.mark.parametrize("method", ["rtn", "gptq", "awq", "awq-gptq"])
def test_every_method_compresses_every_layer(calibrated, method):
    model, calib = calibrated
    result = compress(model, calib, Recipe(method, 4, 32))
    layers = layer_weights(model)
    assert set(result.stored) == set(layers)
    for r in result.reports:
        assert isinstance(result.stored[r.name], quant.QuantizedTensor)
        assert 0.0 <= r.error < 0.5
    c = quality(model, result, sentences(8, seed=2), model.encode(sentences(8, seed=2)))
    assert c.min() > 0.9


def test_query_key_value_share_one_factor(calibrated, monkeypatch):
    # Calibration gives q, k and v equal Hessians (the same inputs through the
    # same kernel); compress factors each once, and every layer's result is
    # compress_layer's alone, bit for bit.
    from slimgrad import _second_order
    from slimgrad.compress._pipeline import compress_layer

    model, calib = calibrated
    layers = layer_weights(model)
    attn = "encoder.layer.0.attention.self."
    hs = [calib.hessians[attn + p] for p in ("query", "key", "value")]
    assert np.array_equal(hs[0], hs[1]) and np.array_equal(hs[0], hs[2])
    recipe = Recipe("gptq", 4, 32)
    alone = {
        n: compress_layer(
            layers[n][0], calib.hessians[n], calib.mean_abs(n), calib.l2_norm(n), recipe
        )[0]
        for n in layers
    }
    factors = []
    real = _second_order._factor
    monkeypatch.setattr(_second_order, "_factor", lambda *a: factors.append(a) or real(*a))
    result = compress(model, calib, recipe)
    assert len(factors) == len(layers) - 2 * 2  # two encoder layers: k and v reuse q's
    for n, qt in alone.items():
        np.testing.assert_array_equal(result.stored[n].codes(), qt.codes())
        np.testing.assert_array_equal(result.stored[n].scale, qt.scale)


def test_calibrated_methods_beat_round_to_nearest_on_the_calibration_error(calibrated):
    model, calib = calibrated
    err = {
        m: sum(r.error for r in compress(model, calib, Recipe(m, 3, 32)).reports)
        for m in ("rtn", "gptq", "awq-gptq")
    }
    assert err["gptq"] < err["rtn"] and err["awq-gptq"] < err["rtn"]


@pytest.mark.parametrize("shape", [(1, 1), (7, 33), (40, 300)])
def test_output_error_is_the_float64_quadratic_form(rng, shape):
    from slimgrad._second_order import output_error

    d = rng.standard_normal(shape).astype(np.float32)
    x = rng.standard_normal((500, shape[1]))
    h = x.T @ x
    d64 = d.astype(np.float64)
    want = np.einsum("ij,ij->", d64 @ h, d64)
    assert output_error(d, h) == pytest.approx(want, rel=1e-5)


def test_reported_errors_are_the_relative_output_errors(calibrated):
    model, calib = calibrated
    result = compress(model, calib, Recipe("rtn", 4, 32))
    weights = layer_weights(model)
    for r in result.reports:
        w = weights[r.name][0].astype(np.float64)
        d = result.weights[r.name].astype(np.float64) - w
        h = calib.hessians[r.name]
        want = np.einsum("ij,ij->", d @ h, d) / np.einsum("ij,ij->", w @ h, w)
        assert r.error == pytest.approx(want, rel=1e-4)


@pytest.mark.parametrize("pruner", ["magnitude", "wanda", "sparsegpt"])
def test_pruning_then_quantizing_keeps_the_pattern(calibrated, pruner):
    model, calib = calibrated
    result = compress(model, calib, Recipe("gptq", 4, 32, prune=pruner, nm=(2, 4)))
    for name, w_hat in result.weights.items():
        assert np.all(np.count_nonzero(w_hat.reshape(w_hat.shape[0], -1, 4), axis=-1) <= 2), name


def run_cli(*args):
    return main(["compress", *map(str, args)])


def test_cli_writes_a_loadable_file_and_reports(tiny_bert, tmp_path, capsys):
    calib = tmp_path / "calib.txt"
    calib.write_text("\n".join(sentences(40)))
    held = tmp_path / "held.txt"
    held.write_text("\n".join(sentences(6, seed=3)))
    out = tmp_path / "q.safetensors"
    args = f"-o {out} --method gptq --bits 4 --group-size 32 --calib {calib} --heldout {held}"
    assert run_cli(tiny_bert, *args.split()) == 0
    printed = capsys.readouterr().out
    assert "encoder.layer.1.output.dense" in printed and "held-out embedding cosine" in printed
    loaded = quant.load(out)
    assert isinstance(loaded["encoder.layer.0.attention.self.query.weight"], quant.QuantizedTensor)
    assert loaded["embeddings.word_embeddings.weight"].dtype == np.float32


def test_cli_budget_is_respected(tiny_bert, tmp_path, capsys):
    calib = tmp_path / "calib.txt"
    calib.write_text("\n".join(sentences(40)))
    out = tmp_path / "mixed.safetensors"
    plot = tmp_path / "sensitivity.png"
    budget = 60_000
    args = (
        f"-o {out} --bits 4 --group-size 32 --calib {calib} --budget-bytes {budget} --plot {plot}"
    )
    assert run_cli(tiny_bert, *args.split()) == 0
    stored = quant.load(out)
    total = sum(v.nbytes for k, v in stored.items() if isinstance(v, quant.QuantizedTensor))
    assert total <= budget
    assert "sensitivity" in capsys.readouterr().out
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cli_refusals_write_nothing(tiny_bert, tmp_path, capsys):
    short = tmp_path / "short.txt"
    short.write_text("one sentence only\n")
    wrong_arch = tmp_path / "gpt"
    wrong_arch.mkdir()
    (wrong_arch / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
    out = tmp_path / "out.safetensors"
    cases = [
        ((tmp_path / "missing", "-o", out), "not a directory"),
        ((wrong_arch, "-o", out), "unknown architecture: expected model_type 'bert', got 'gpt2'"),
        ((tiny_bert, "-o", out, "--calib", short), "--calib: expected at least 16 sentences"),
        ((tiny_bert, "-o", out, "--calib", tmp_path / "nope.txt"), "no such file"),
        (
            (tiny_bert, "-o", out, "--budget-bytes", 10),
            "--budget-bytes: 10 is below the smallest model",
        ),
        ((tiny_bert, "-o", out, "--nm", "0:4", "--prune", "wanda"), "--nm: expected 0 < N < M"),
        ((tiny_bert, "-o", out, "--sparsity", "0.5"), "--sparsity/--nm: only with --prune"),
        ((tiny_bert, "-o", out, "--bits", "9"), "--bits: expected 2..8"),
        ((tiny_bert, "-o", tmp_path), "is a directory"),
        ((tiny_bert, "-o", tiny_bert / "model.safetensors"), "is the model's own weights file"),
    ]
    weights = (tiny_bert / "model.safetensors").read_bytes()
    for args, message in cases:
        assert run_cli(*args) == 2, args
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, err
        assert not out.exists()
    assert (tiny_bert / "model.safetensors").read_bytes() == weights


def test_cli_writes_llama_cpp_imatrix(tiny_bert, tmp_path, calibrated):
    pytest.importorskip("gguf")
    from slimgrad.quant import kquants

    calib = tmp_path / "calib.txt"
    calib.write_text("\n".join(sentences(40)))
    out, im = tmp_path / "q.safetensors", tmp_path / "imatrix.gguf"
    assert (
        run_cli(tiny_bert, "-o", out, "--calib", calib, "--group-size", "32", "--imatrix-out", im)
        == 0
    )
    read = kquants.read_imatrix(str(im))
    assert "blk.0.attn_q.weight" in read and "blk.1.ffn_down.weight" in read
    model, _ = calibrated
    direct = calibrate(model, sentences(40))
    name = "encoder.layer.0.attention.self.query"
    expected = direct.sq_sums[name] / direct.tokens[name]
    np.testing.assert_allclose(read["blk.0.attn_q.weight"], expected, rtol=1e-5)
