"""llama-family models: the NumPy forward against transformers, and `slimgrad compress`
on a llama folder (GPTQ layer by layer into compressed-tensors) checked through
transformers: the weights it loads, its logits, its perplexity, and GPTQ's
sequential inputs recomputed by transformers' own modules."""

from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pytest
from slimgrad import _safetensors as st
from slimgrad import cli, quant
from slimgrad.models import llama

CALIB = "the quick brown fox jumps over the lazy dog near the river bank at dawn\n" * 40
# llama 3's rotary rescaling, with a context short enough that the test's
# frequencies fall in all three bands (kept, interpolated, divided)
LLAMA3 = {
    "rope_type": "llama3",
    "factor": 8.0,
    "low_freq_factor": 1.0,
    "high_freq_factor": 4.0,
    "original_max_position_embeddings": 64,
}


def _tokenizer(folder):
    """A byte-level BPE of 300 tokens trained on the calibration text."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator(CALIB.splitlines(), trainer)
    tok.save(str(folder / "tokenizer.json"))


def _model(tmp_path, arch="llama", shard=None, **extra):
    """A random transformers model of ``arch`` saved (in shards of ``shard``) with a tokenizer."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    config_class = {
        "llama": transformers.LlamaConfig,
        "qwen2": transformers.Qwen2Config,
        "mistral": transformers.MistralConfig,
    }[arch]
    sizes = dict(
        vocab_size=300,
        hidden_size=64,
        intermediate_size=96,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=128,
        initializer_range=0.2,
    )
    cfg = config_class(**{**sizes, **extra})
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(cfg).eval()
    folder = tmp_path / arch
    model.save_pretrained(folder, **({"max_shard_size": shard} if shard else {}))
    _tokenizer(folder)
    return folder, model


@pytest.mark.parametrize(
    "arch, extra",
    [
        ("llama", {}),
        ("llama", {"tie_word_embeddings": True, "rope_theta": 500.0}),
        ("qwen2", {}),  # q/k/v biases
        ("mistral", {"sliding_window": None}),
        ("mistral", {"sliding_window": 23}),  # no longer than the window: full attention
        ("llama", {"rope_theta": 500.0, "rope_scaling": LLAMA3}),
    ],
    ids=["llama", "llama-tied", "qwen2", "mistral", "mistral-window", "llama3-rope"],
)
def test_forward_equals_transformers(tmp_path, arch, extra):
    torch = pytest.importorskip("torch")
    folder, model = _model(tmp_path, arch, **extra)
    ids = np.random.default_rng(0).integers(0, 300, (3, 23))
    with torch.no_grad():
        want = model(torch.from_numpy(ids)).logits.double().numpy()
    got = llama.logits(llama.Checkpoint(folder), ids)
    assert got.dtype == np.float32
    assert np.abs(got - want).max() < 1e-5 * np.abs(want).max(), np.abs(got - want).max()


def _folder(tmp_path, config, tensors):
    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(config))
    st.write(str(folder / "model.safetensors"), {n: st.to_entry(a) for n, a in tensors.items()}, {})
    return folder


def test_config_and_tensors_are_checked(tmp_path):
    base = {
        "model_type": "llama",
        "hidden_size": 8,
        "intermediate_size": 12,
        "num_hidden_layers": 1,
        "num_attention_heads": 2,
        "vocab_size": 11,
    }
    tensors = {"model.embed_tokens.weight": np.zeros((11, 8), np.float32)}
    cases = [
        ({"model_type": "bert"}, "model_type: expected one of llama, mistral, qwen2, got 'bert'"),
        ({"hidden_size": 0}, "hidden_size: expected a positive integer, got 0"),
        (
            {"rope_scaling": {"rope_type": "yarn", "factor": 8.0}},
            "rope_type 'yarn': the default and llama 3's rotary embeddings are supported",
        ),
        (
            {"rope_scaling": {"rope_type": "llama3", "factor": 8.0}},
            "rope_parameters.low_freq_factor: expected a positive number, got None",
        ),
        ({"model_type": "mistral", "sliding_window": "4k"}, "sliding_window: expected an"),
        ({"num_key_value_heads": 3}, "num_attention_heads (2) a multiple of num_key_value_heads"),
    ]
    for change, message in cases:
        folder = _folder(tmp_path, {**base, **change}, tensors)
        with pytest.raises(ValueError, match=re_escape(message)):
            llama.Checkpoint(folder)
        shutil.rmtree(folder)
    folder = _folder(tmp_path, base, tensors)
    with pytest.raises(ValueError, match=re_escape("no tensor 'model.norm.weight'")):
        llama.Checkpoint(folder).check()
    shutil.rmtree(folder)
    folder = _folder(tmp_path, base, {"model.embed_tokens.weight": np.zeros((11, 9), np.float32)})
    with pytest.raises(ValueError, match=re_escape("expected shape (11, 8) from config.json")):
        llama.Checkpoint(folder).check()


def re_escape(text):
    import re

    return re.escape(text)


def _run(argv, capsys):
    code = cli.main(["compress", *map(str, argv)])
    out, err = capsys.readouterr()
    return code, out, err


def _dense_weights(model, layers=2):
    """The Linear weights transformers runs a compressed-tensors model with
    (compressed-tensors decompresses each on its first forward)."""
    import torch

    with torch.no_grad():
        model(torch.zeros((1, 2), dtype=torch.long))
    out = {n: p.detach().numpy().copy() for n, p in model.named_parameters()}
    out = {n: w for n, w in out.items() if n.endswith("_proj.weight")}
    assert len(out) == 7 * layers, sorted(out)
    return out


def _perplexity(logits, ids):
    z = logits[:, :-1].astype(np.float64)
    z -= z.max(-1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(-1, keepdims=True))
    picked = np.take_along_axis(logp, ids[:, 1:, None], -1)
    return math.exp(-picked.mean())


def test_gptq_folder_loads_in_transformers(tmp_path, capsys):
    """A model saved in shards, compressed with GPTQ int4 g32: the same shards
    and an index; transformers loads the folder, its weights are on the int4
    group grid and differ from the float ones, its logits are the NumPy
    forward's with those weights; the printed float perplexity is
    transformers' own on the held-out windows; every Linear has a row."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    pytest.importorskip("compressed_tensors")
    from slimgrad.compress._llama import token_windows
    from tokenizers import Tokenizer

    folder, model = _model(tmp_path, shard="60KB")
    assert len(list(folder.glob("model-*.safetensors"))) > 1
    (tmp_path / "calib.txt").write_text(CALIB)
    held = "a lazy dog sleeps by the quick river while the fox waits\n" * 8
    (tmp_path / "held.txt").write_text(held)
    out = tmp_path / "q"
    argv = [folder, "-o", out, "--bits", "4", "--group-size", "32", "--seq-len", "32"]
    argv += ["--calib", tmp_path / "calib.txt", "--heldout", tmp_path / "held.txt"]
    code, table, err = _run(argv, capsys)
    assert code == 0, err
    assert sorted(p.name for p in out.glob("*.safetensors")) == sorted(
        p.name for p in folder.glob("*.safetensors")
    )
    index = json.loads((out / "model.safetensors.index.json").read_text())
    assert "model.layers.1.mlp.down_proj.weight_packed" in index["weight_map"]
    assert len([ln for ln in table.splitlines() if ln.startswith("model.layers.")]) == 7 * 2

    q = transformers.AutoModelForCausalLM.from_pretrained(out).eval()
    weights = _dense_weights(q)
    floats = {n: p.detach().numpy() for n, p in model.named_parameters()}
    for name, w in weights.items():
        groups = w.reshape(-1, 32)  # symmetric int4: at most 15 values (-7..7) a group
        assert max(len(np.unique(g)) for g in groups) <= 15, name
        assert not np.array_equal(w, floats[name]), name
    ckpt = llama.Checkpoint(folder)
    read = ckpt.tensor
    ckpt.tensor = lambda n: weights[n] if n.endswith("_proj.weight") else read(n)
    ids = np.random.default_rng(1).integers(0, 300, (2, 31))
    with torch.no_grad():
        theirs = q(torch.from_numpy(ids)).logits.numpy()
    assert np.abs(llama.logits(ckpt, ids) - theirs).max() < 1e-5 * np.abs(theirs).max()

    windows = token_windows(
        Tokenizer.from_file(str(folder / "tokenizer.json")), held.splitlines(), 32
    )
    with torch.no_grad():
        want = _perplexity(model(torch.from_numpy(windows)).logits.numpy(), windows)
        after = _perplexity(q(torch.from_numpy(windows)).logits.numpy(), windows)
    line = next(ln for ln in table.splitlines() if "held-out perplexity" in ln)
    printed = line.split("float ")[1].split(",")[0]
    assert float(printed) == pytest.approx(want, rel=1e-4)
    assert float(line.split("gptq int4 ")[1].split()[0]) == pytest.approx(after, rel=1e-4)


def test_gptq_runs_each_group_on_the_quantized_layers_inputs(tmp_path, capsys):
    """GPTQ's sequential recipe, recomputed with transformers' modules: layer
    0's o_proj is GPTQ of the Hessian of its input with q/k/v already
    quantized, layer 1's q/k/v of the input layer 0 (quantized) gives; and
    --method rtn stores plain round-to-nearest codes."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    pytest.importorskip("compressed_tensors")
    from slimgrad.compress._llama import token_windows
    from tokenizers import Tokenizer

    folder, model = _model(tmp_path)
    (tmp_path / "calib.txt").write_text(CALIB)
    runs = {}
    for method in ("gptq", "rtn"):
        out = tmp_path / method
        argv = [folder, "-o", out, "--method", method, "--bits", "4", "--group-size", "32"]
        code, _, err = _run([*argv, "--seq-len", "32", "--calib", tmp_path / "calib.txt"], capsys)
        assert code == 0, err
        q = transformers.AutoModelForCausalLM.from_pretrained(out).eval()
        runs[method] = _dense_weights(q)
    floats = {n: p.detach().numpy().copy() for n, p in model.named_parameters()}
    for name, w in floats.items():
        if name.endswith("_proj.weight"):
            rtn = quant.quantize(w, 4, symmetric=True, granularity="group", group_size=32)
            np.testing.assert_array_equal(runs["rtn"][name], rtn.dequantize())

    windows = token_windows(
        Tokenizer.from_file(str(folder / "tokenizer.json")), CALIB.splitlines(), 32
    )
    gptq = runs["gptq"]
    captured = {}

    def capture(name):
        def hook(module, args):
            captured[name] = args[0].detach().reshape(-1, args[0].shape[-1]).double().numpy()

        return hook

    layers = model.model.layers
    handles = [
        layers[0].self_attn.o_proj.register_forward_pre_hook(capture("o0")),
        layers[1].self_attn.q_proj.register_forward_pre_hook(capture("q1")),
    ]
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.startswith("model.layers.0.") and name.endswith("_proj.weight"):
                p.copy_(torch.from_numpy(gptq[name]))  # layer 0 quantized, as GPTQ ran it
        model(torch.from_numpy(windows))
    for h in handles:
        h.remove()
    for key, targets in (
        ("o0", ["model.layers.0.self_attn.o_proj.weight"]),
        ("q1", [f"model.layers.1.self_attn.{p}_proj.weight" for p in "qkv"]),
    ):
        x = captured[key]
        H = x.T @ x
        ref = quant.gptq_shared(
            [floats[t] for t in targets], H, bits=4, group_size=32, symmetric=True
        )
        for t, qt in zip(targets, ref):
            same = np.mean(np.isclose(qt.dequantize(), gptq[t], rtol=0, atol=1e-6))
            assert same > 0.99, (t, same)  # float32 vs float64 inputs: rare ties flip


def test_windows_start_with_the_tokens_put_before_a_text(tmp_path):
    from slimgrad.compress._llama import token_windows
    from tokenizers import Tokenizer, processors

    _tokenizer(tmp_path)
    tok = Tokenizer.from_file(str(tmp_path / "tokenizer.json"))
    plain = tok.encode("\n".join(CALIB.splitlines()), add_special_tokens=False).ids
    w = token_windows(tok, CALIB.splitlines(), 16)
    assert w.shape == (len(plain) // 16, 16)  # qwen2-like: no special tokens
    np.testing.assert_array_equal(w.reshape(-1), plain[: w.size])
    tok.add_special_tokens(["<s>", "</s>"])
    bos, eos = tok.token_to_id("<s>"), tok.token_to_id("</s>")
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>", special_tokens=[("<s>", bos), ("</s>", eos)]
    )
    w = token_windows(tok, CALIB.splitlines(), 16)
    assert (w[:, 0] == bos).all() and eos not in w  # BOS before each window, EOS nowhere
    np.testing.assert_array_equal(w[:, 1:].reshape(-1), plain[: w.shape[0] * 15])


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--prune", "wanda", "--sparsity", "0.5"], "--prune, --sparsity: not for llama-family"),
        (["--method", "awq"], "--method awq: llama-family models take gptq or rtn"),
        (["--bits", "0"], "--bits: expected 2..8 for a llama-family model, got 0"),
        (["--seq-len", "1"], "--seq-len: expected at least 2 tokens, got 1"),
        (["--seq-len", "100000"], "--calib: the text is shorter than one window"),
        (["--format", "gguf", "--group-size", "48"], "--group-size 48: GGUF blocks hold 32"),
    ],
    ids=["prune", "awq", "bits", "seq-len", "short-text", "gguf-group"],
)
def test_llama_user_errors_are_one_line_and_write_nothing(tmp_path, capsys, extra, message):
    folder, _ = _model(tmp_path)
    capsys.readouterr()  # transformers' save
    before = sorted(p.name for p in tmp_path.rglob("*"))
    code, out, err = _run([folder, "-o", tmp_path / "q", *extra], capsys)
    assert (code, out) == (2, "")
    assert err.startswith("slimgrad compress: error: ") and err.count("\n") == 1, err
    assert message in err
    assert sorted(p.name for p in tmp_path.rglob("*")) == before


def test_llama_without_tokenizer_is_refused(tmp_path, capsys):
    folder, _ = _model(tmp_path)
    capsys.readouterr()  # transformers' save
    (folder / "tokenizer.json").unlink()
    code, out, err = _run([folder, "-o", tmp_path / "q"], capsys)
    assert (code, out) == (2, "") and "no tokenizer.json" in err
    assert not (tmp_path / "q").exists()


def test_gguf_output_holds_the_codes_and_its_perplexity_is_read_back(tmp_path, capsys):
    """``-o OUT.gguf``: the Linear layers in Q4_0 blocks of the same GPTQ
    codes as the compressed-tensors folder (only the scales in float16), the
    rest typed as ``slimgrad quantize --type Q4_0`` types it (the same file
    size); the printed read-back perplexity is the one an independent
    GGUF-layout forward (the gguf package's dequantization, llama.cpp's
    interleaved RoPE: tests/test_gguf_export_llama.py) computes."""
    gguf = pytest.importorskip("gguf")
    pytest.importorskip("transformers")
    pytest.importorskip("compressed_tensors")
    import test_gguf_export_llama as layout
    from slimgrad.compress._llama import token_windows
    from tokenizers import Tokenizer

    cfg = {k: v for k, v in layout.CFG.items() if k != "max_position_embeddings"}
    folder, model = _model(tmp_path, **cfg)
    capsys.readouterr()
    (tmp_path / "calib.txt").write_text(CALIB)
    common = ["--bits", "4", "--group-size", "32", "--seq-len", "32"]
    common += ["--calib", tmp_path / "calib.txt", "--heldout", tmp_path / "calib.txt"]
    code, table, err = _run([folder, "-o", tmp_path / "q.gguf", *common], capsys)
    assert code == 0, err
    code, _, err = _run([folder, "-o", tmp_path / "q", *common], capsys)
    assert code == 0, err
    reader = gguf.GGUFReader(str(tmp_path / "q.gguf"))
    types = {t.name: t.tensor_type.name for t in reader.tensors}
    assert {types[f"blk.{i}.{n}.weight"] for i in range(2) for n in ("attn_q", "ffn_down")} == {
        "Q4_0"
    }
    assert reader.get_field("general.file_type").contents() == 2  # MOSTLY_Q4_0

    # the same codes as the compressed-tensors folder: equal up to float16 scales
    import transformers

    dense = _dense_weights(transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "q").eval())
    _, w = layout.read(tmp_path / "q.gguf")
    down = w["blk.1.ffn_down.weight"]
    np.testing.assert_allclose(
        down, dense["model.layers.1.mlp.down_proj.weight"], rtol=2e-3, atol=1e-6
    )

    windows = token_windows(
        Tokenizer.from_file(str(folder / "tokenizer.json")), CALIB.splitlines(), 32
    )
    nll = 0.0
    for ids in windows:
        z = layout.forward(w, ids)[:-1]
        z = z - z.max(-1, keepdims=True)
        logp = z - np.log(np.exp(z).sum(-1, keepdims=True))
        nll -= logp[np.arange(len(ids) - 1), ids[1:]].sum()
    want = math.exp(nll / (windows.shape[0] * (windows.shape[1] - 1)))
    line = next(ln for ln in table.splitlines() if "as read back from the file" in ln)
    assert float(line.rsplit("perplexity ", 1)[1]) == pytest.approx(want, rel=1e-4)


def test_a_layer_in_chunks_equals_one_pass(tmp_path):
    """The sequences run a chunk at a time (the memory of a 7B model's
    calibration): the same hidden states, and a hook sees the same inputs,
    as all sequences at once."""
    folder, _ = _model(tmp_path)
    ckpt = llama.Checkpoint(folder)
    cfg, weights = ckpt.config, ckpt.layer(1)
    x = np.random.default_rng(2).standard_normal((5, 9, cfg.hidden_size)).astype(np.float32)
    rope = llama.rope_tables(cfg, 9)
    seen = {}

    def hook(chunk):
        def record(group, chunks, floats):
            rows = np.concatenate(list(chunks()))
            seen.setdefault(group, {})[chunk] = rows
            return {n: w * np.float32(0.9) for n, w in floats.items()}  # "quantized"

        return record

    for chunk in (5, 2, 1):
        plain = llama.decoder_layer(x, weights, cfg, rope, chunk=chunk)
        hooked = llama.decoder_layer(x, weights, cfg, rope, hook(chunk), chunk=chunk)
        if chunk == 5:
            want_plain, want_hooked = plain, hooked
        # float32 GEMMs of other row counts round differently: 1e-5 of the scale
        tol = 1e-5 * np.abs(want_plain).max()
        np.testing.assert_allclose(plain, want_plain, rtol=0, atol=tol)
        np.testing.assert_allclose(hooked, want_hooked, rtol=0, atol=tol)
    assert np.abs(want_plain - want_hooked).max() > 100 * tol  # the hook's weights were used
    for group, rows in seen.items():
        assert rows[5].shape == (45, rows[5].shape[1]), group
        tol = 1e-5 * np.abs(rows[5]).max()
        np.testing.assert_allclose(rows[2], rows[5], rtol=0, atol=tol)
        np.testing.assert_allclose(rows[1], rows[5], rtol=0, atol=tol)


def test_sequences_longer_than_the_sliding_window_are_refused(tmp_path, capsys):
    folder, _ = _model(tmp_path, "mistral", sliding_window=16)
    capsys.readouterr()
    ckpt = llama.Checkpoint(folder)
    assert ckpt.config.sliding_window == 16
    x = np.zeros((1, 17, ckpt.config.hidden_size), np.float32)
    rope = llama.rope_tables(ckpt.config, 17)
    with pytest.raises(ValueError, match="longer than the sliding attention window"):
        llama.decoder_layer(x, ckpt.layer(0), ckpt.config, rope)
    code, out, err = _run([folder, "-o", tmp_path / "q", "--seq-len", "32"], capsys)
    assert (code, out) == (2, "")
    assert "--seq-len 32: longer than the model's sliding attention window (16)" in err
    assert not (tmp_path / "q").exists()


def test_llama3_rotary_rescaling_is_computed_and_not_exported_to_gguf(tmp_path, capsys):
    """llama 3's rotary rescaling changes the logits (so the forward test above
    checks it), and GGUF output of such a model is refused before any work:
    the GGUF export does not write llama.cpp's rope_freqs."""
    folder, _ = _model(tmp_path, rope_theta=500.0, rope_scaling=LLAMA3)
    capsys.readouterr()
    cfg = llama.Checkpoint(folder).config
    assert cfg.rope_llama3 == (8.0, 1.0, 4.0, 64.0)
    default = llama.rope_tables(llama.Config(**{**cfg.__dict__, "rope_llama3": None}), 8)
    scaled = llama.rope_tables(cfg, 8)
    assert not np.allclose(default[0], scaled[0])
    code, out, err = _run([folder, "-o", tmp_path / "q.gguf"], capsys)
    assert (code, out) == (2, "") and "does not write llama 3's rotary rescaling" in err
    assert not (tmp_path / "q.gguf").exists()
