"""GGUF export of a llama-family decoder: a tiny random LlamaForCausalLM saved by
transformers, exported, read back with the gguf package and run by a NumPy forward in
llama.cpp's layout (interleaved RoPE pairs): its logits must equal transformers'."""

from __future__ import annotations

import json

import numpy as np
import pytest

gguf = pytest.importorskip("gguf")
transformers = pytest.importorskip("transformers")
torch = pytest.importorskip("torch")
tokenizers = pytest.importorskip("tokenizers")

from slimgrad.quant.gguf_export import export_gguf  # noqa: E402

TEXT = ["the cat sat on the mat", "llamas eat grass", "quantized weights, small files"]
CFG = dict(
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=128,
    rms_norm_eps=1e-5,
    rope_theta=10000.0,
    tie_word_embeddings=False,
)


@pytest.fixture(scope="module")
def llama(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny-llama")
    tok = tokenizers.Tokenizer(tokenizers.models.BPE())
    tok.pre_tokenizer = tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = tokenizers.decoders.ByteLevel()
    trainer = tokenizers.trainers.BpeTrainer(
        vocab_size=300,
        special_tokens=["<s>", "</s>"],
        initial_alphabet=tokenizers.pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(TEXT * 20, trainer)
    tok.save(str(folder / "tokenizer.json"))
    (folder / "tokenizer_config.json").write_text(
        json.dumps({"bos_token": "<s>", "eos_token": "</s>", "add_bos_token": True})
    )
    torch.manual_seed(0)
    config = transformers.LlamaConfig(
        vocab_size=tok.get_vocab_size(), bos_token_id=0, eos_token_id=1, **CFG
    )
    model = transformers.LlamaForCausalLM(config).eval()
    model.save_pretrained(str(folder), safe_serialization=True)
    return folder, model, tok


def rms(x, g, eps=CFG["rms_norm_eps"]):
    return x / np.sqrt((x * x).mean(-1, keepdims=True) + eps) * g


def rope_pairs(x, base=CFG["rope_theta"]):
    """llama.cpp's RoPE for llama: rotates adjacent pairs (2i, 2i+1)."""
    n, _, d = x.shape
    theta = np.arange(n)[:, None] * base ** (-np.arange(0, d, 2) / d)[None, :]
    cos, sin = np.cos(theta)[:, None, :], np.sin(theta)[:, None, :]
    out = np.empty_like(x)
    out[..., 0::2] = x[..., 0::2] * cos - x[..., 1::2] * sin
    out[..., 1::2] = x[..., 0::2] * sin + x[..., 1::2] * cos
    return out


def forward(w, ids):
    """Logits (float64) of a llama in GGUF names and layout."""
    nh, nkv = CFG["num_attention_heads"], CFG["num_key_value_heads"]
    x = w["token_embd.weight"][ids]
    n, d = x.shape
    hd = d // nh
    mask = np.triu(np.full((n, n), -np.inf), 1)
    for i in range(CFG["num_hidden_layers"]):
        p = f"blk.{i}."
        h = rms(x, w[p + "attn_norm.weight"])
        q = rope_pairs((h @ w[p + "attn_q.weight"].T).reshape(n, nh, hd))
        k = rope_pairs((h @ w[p + "attn_k.weight"].T).reshape(n, nkv, hd))
        v = (h @ w[p + "attn_v.weight"].T).reshape(n, nkv, hd)
        k, v = (np.repeat(t, nh // nkv, axis=1) for t in (k, v))
        s = np.einsum("qhd,khd->hqk", q, k) / np.sqrt(hd) + mask
        s = np.exp(s - s.max(-1, keepdims=True))
        a = np.einsum("hqk,khd->qhd", s / s.sum(-1, keepdims=True), v).reshape(n, d)
        x = x + a @ w[p + "attn_output.weight"].T
        h = rms(x, w[p + "ffn_norm.weight"])
        g = h @ w[p + "ffn_gate.weight"].T
        x = (
            x
            + ((g / (1 + np.exp(-g))) * (h @ w[p + "ffn_up.weight"].T)) @ w[p + "ffn_down.weight"].T
        )
    return rms(x, w["output_norm.weight"]) @ w["output.weight"].T


def read(path):
    r = gguf.GGUFReader(str(path))
    w = {
        t.name: gguf.quants.dequantize(t.data, t.tensor_type)
        .reshape(tuple(int(s) for s in reversed(t.shape)))
        .astype(np.float64)
        for t in r.tensors
    }
    return r, w


def test_keys_vocab_and_names(llama, tmp_path):
    folder, model, tok = llama
    export_gguf(folder, tmp_path / "l.gguf", "F32")
    r, w = read(tmp_path / "l.gguf")

    def f(key):
        return r.get_field(key).contents()

    assert f("general.architecture") == "llama"
    assert (
        f("llama.block_count"),
        f("llama.embedding_length"),
        f("llama.feed_forward_length"),
        f("llama.attention.head_count"),
        f("llama.attention.head_count_kv"),
        f("llama.rope.dimension_count"),
        f("llama.context_length"),
    ) == (2, 64, 128, 4, 2, 16, 128)
    assert f("llama.attention.layer_norm_rms_epsilon") == pytest.approx(1e-5)
    assert f("llama.rope.freq_base") == 10000.0
    assert f("tokenizer.ggml.model") == "gpt2"
    vocab = sorted(tok.get_vocab().items(), key=lambda kv: kv[1])
    assert f("tokenizer.ggml.tokens") == [t for t, _ in vocab]
    assert len(f("tokenizer.ggml.merges")) > 0
    assert f("tokenizer.ggml.bos_token_id") == 0 and f("tokenizer.ggml.eos_token_id") == 1
    assert f("general.file_type") == 0
    expected = {"token_embd.weight", "output.weight", "output_norm.weight"} | {
        f"blk.{i}.{t}.weight"
        for i in range(2)
        for t in (
            "attn_norm",
            "attn_q",
            "attn_k",
            "attn_v",
            "attn_output",
            "ffn_norm",
            "ffn_gate",
            "ffn_up",
            "ffn_down",
        )
    }
    assert set(w) == expected


@pytest.mark.parametrize("ftype, atol", [("F32", 1e-4), ("Q8_0", 0.05)])
def test_logits_in_llama_cpp_layout_equal_transformers(llama, tmp_path, ftype, atol):
    folder, model, tok = llama
    export_gguf(folder, tmp_path / "l.gguf", ftype)
    _, w = read(tmp_path / "l.gguf")
    for text in TEXT:
        ids = tok.encode(text).ids
        with torch.no_grad():
            ref = model(torch.tensor([ids])).logits[0].double().numpy()
        np.testing.assert_allclose(forward(w, ids), ref, rtol=0, atol=atol)


def test_llama_cpp_runs_the_file(llama, tmp_path):
    llama_cpp = pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed")
    folder, model, tok = llama
    export_gguf(folder, tmp_path / "l.gguf", "F32")
    llm = llama_cpp.Llama(
        model_path=str(tmp_path / "l.gguf"), logits_all=True, verbose=False, n_ctx=128
    )
    ids = tok.encode(TEXT[0]).ids
    llm.eval(ids)
    got = np.array(llm.scores[: len(ids)], np.float64)
    with torch.no_grad():
        ref = model(torch.tensor([ids])).logits[0].double().numpy()
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-3)


def test_given_blocks_are_written_in_llama_cpp_layout(llama, tmp_path):
    """Replacement blocks (GPTQ's codes, say) of q and k get the rows of
    llama.cpp's RoPE layout like float tensors do: every Linear given as
    Q4_0 blocks of slimgrad's int4 codes, the file's logits equal
    transformers' with the blocks' dequantized weights."""
    from slimgrad import quant
    from slimgrad.quant import gguf as blocks

    folder, model, tok = llama
    replace, dequantized = {}, {}
    for name, p in model.named_parameters():
        if name.endswith("_proj.weight"):
            qt = quant.quantize(
                p.detach().numpy(), 4, symmetric=True, granularity="group", group_size=32
            )
            kind, data = blocks.from_quantized(qt)
            replace[name] = (kind, data.view(np.uint8))
            dequantized[name] = blocks.dequantize(data.view(np.uint8), kind, qt.shape)
    export_gguf(folder, tmp_path / "q.gguf", "F32", replace=replace)
    _, w = read(tmp_path / "q.gguf")
    state = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in dequantized.items()}
    quantized = transformers.LlamaForCausalLM(model.config).eval()
    quantized.load_state_dict({**model.state_dict(), **state})
    for text in TEXT:
        ids = tok.encode(text).ids
        with torch.no_grad():
            ref = quantized(torch.tensor([ids])).logits[0].double().numpy()
            plain = model(torch.tensor([ids])).logits[0].double().numpy()
        np.testing.assert_allclose(forward(w, ids), ref, rtol=0, atol=1e-4)
        assert np.abs(ref - plain).max() > 1e-3  # the blocks were used


def test_rope_from_transformers_5_configs(llama, tmp_path):
    """transformers 5 saves ``rope_parameters`` (with ``rope_theta`` inside)
    instead of top-level ``rope_theta`` / ``rope_scaling``: the export reads
    the base from there (it wrote the default 10000 before), and refuses
    llama 3's rescaling, which it does not write (llama.cpp's rope_freqs),
    leaving no file."""
    for scaling, theta in (
        (None, 500.0),
        (
            {
                "rope_type": "llama3",
                "factor": 8.0,
                "low_freq_factor": 1.0,
                "high_freq_factor": 4.0,
                "original_max_position_embeddings": 64,
            },
            500.0,
        ),
    ):
        config = transformers.LlamaConfig(
            vocab_size=300, **{**CFG, "rope_theta": theta}, rope_scaling=scaling
        )
        folder = tmp_path / ("llama3" if scaling else "plain")
        transformers.LlamaForCausalLM(config).save_pretrained(str(folder))
        for name in ("tokenizer.json", "tokenizer_config.json"):
            (folder / name).write_bytes((llama[0] / name).read_bytes())
        saved = json.loads((folder / "config.json").read_text())
        assert "rope_theta" not in saved and saved["rope_parameters"]["rope_theta"] == theta
        out = tmp_path / f"{folder.name}.gguf"
        if scaling:
            with pytest.raises(ValueError, match="rope_scaling type 'llama3' is not supported"):
                export_gguf(folder, out, "F32")
            assert not out.exists()
        else:
            export_gguf(folder, out, "F32")
            field = gguf.GGUFReader(str(out)).get_field("llama.rope.freq_base")
            assert field.contents() == pytest.approx(theta)


def test_a_folder_without_vocabulary_is_named(llama, tmp_path):
    """No tokenizer.json / tokenizer.model: the message names the folder and
    the files (it read "<output>: cannot write (No such file or directory)")."""
    folder = tmp_path / "weights-only"
    folder.mkdir()
    for name in ("config.json", "model.safetensors"):
        (folder / name).write_bytes((llama[0] / name).read_bytes())
    with pytest.raises(FileNotFoundError) as e:
        export_gguf(folder, tmp_path / "o.gguf", "Q8_0")
    assert (
        str(e.value)
        == f"{folder}: no tokenizer.json or tokenizer.model (the GGUF holds the vocabulary)"
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["weights-only"]
