"""``slimgrad compress --format gguf``: calibrated codes in GGUF blocks.

``quant.gguf.from_quantized`` keeps every code and rounds only the scales to
float16 (checked against the ``gguf`` package's dequantization, exactly);
``export_gguf(replace=...)`` checks what it is given before writing; the
command line writes a file whose read-back quality it reports, and llama.cpp
(when installed) runs it.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
from _tiny_bert import make_tiny_bert, sentences
from slimgrad import quant
from slimgrad.cli import main
from slimgrad.quant import gguf as blocks

gguf = pytest.importorskip("gguf")
pytest.importorskip("tokenizers")

LAYOUTS = [
    {"granularity": "group", "group_size": 32},
    {"granularity": "group", "group_size": 64},
    {"granularity": "group", "group_size": 96},  # last group partial: 160 = 96 + 64
    {"axis": 0},
    {"granularity": "tensor"},
]


def expected_values(qt):
    """What a GGUF reader computes from the blocks: fp16 scales, the same codes."""
    d = qt.expand(qt.scale).astype(np.float16).astype(np.float32)
    codes = qt.codes().astype(np.float32)
    z = qt.expand(qt.zero_point).astype(np.float32)
    if qt.symmetric or qt.bits > 5:
        return d * (codes - z)
    m = (-qt.expand(qt.scale) * z).astype(np.float16).astype(np.float32)
    return d * codes + m


@pytest.mark.parametrize("bits", range(2, 9))
@pytest.mark.parametrize("symmetric", [True, False])
@pytest.mark.parametrize("layout", LAYOUTS, ids=lambda k: "-".join(map(str, k.values())))
def test_blocks_hold_the_codes(bits, symmetric, layout):
    rng = np.random.default_rng(bits)
    w = (rng.standard_normal((5, 160)) * rng.uniform(0.01, 3.0, (5, 1))).astype(np.float32)
    w[1, :32] = 0.0  # an all-zero block
    qt = quant.quantize(w, bits, symmetric=symmetric, **layout)
    if bits == 8 and not symmetric:
        with pytest.raises(ValueError, match="beyond Q8_0's int8"):
            blocks.from_quantized(qt)
        return
    kind, data = blocks.from_quantized(qt)
    assert kind == blocks.block_type(bits, symmetric)
    assert data.dtype == np.uint8 and data.shape == (5, 160 // 32 * blocks.TYPE_SIZE[kind])
    back = gguf.quants.dequantize(data, gguf.GGMLQuantizationType[kind]).reshape(w.shape)
    np.testing.assert_array_equal(back, expected_values(qt))
    np.testing.assert_array_equal(blocks.dequantize(data, kind, w.shape), back)
    # the codes survive: only the float16 rounding of the scales moves the values
    scale = np.abs(qt.expand(qt.scale)).max()
    assert np.abs(back - qt.dequantize()).max() <= scale * 2**-11 * 2**bits


def test_layouts_without_a_block_form_are_refused():
    rng = np.random.default_rng(0)
    w = rng.standard_normal((4, 64)).astype(np.float32)
    cases = [
        (quant.quantize(w[:, :48], 4, granularity="group", group_size=16), "multiple of 32"),
        (quant.quantize(w, 4, granularity="group", group_size=16), "group_size 16"),
        (quant.quantize(w, 4, axis=1), "one scale per column"),
        (quant.quantize(w * 1e6, 4, symmetric=True, axis=0), "exceeds float16"),
    ]
    for qt, message in cases:
        before = qt.data.copy()
        with pytest.raises(ValueError, match=message):
            blocks.from_quantized(qt)
        np.testing.assert_array_equal(qt.data, before)


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory):
    return make_tiny_bert(tmp_path_factory.mktemp("tiny_bert"))


def test_export_checks_replacements_before_writing(tiny_bert, tmp_path):
    out = tmp_path / "m.gguf"
    name = "encoder.layer.0.attention.self.query.weight"
    good = blocks.from_quantized(quant.quantize(np.ones((64, 64), np.float32), 4))
    cases = [
        ({"no.such.weight": np.zeros(3)}, "not a tensor of the checkpoint"),
        ({name: np.zeros((64, 32), np.float32)}, "expected an array of shape"),
        ({name: ("Q4_1", good[1][:, :-1].copy())}, "bytes, expected"),
        ({name: ("F16", good[1])}, "expected a GGUF block type"),
    ]
    for replace, message in cases:
        with pytest.raises(ValueError, match=message):
            quant.export_gguf(tiny_bert, out, "F32", replace=replace)
        assert os.listdir(tmp_path) == []


def run_cli(*args):
    return main(["compress", *map(str, args)])


@pytest.fixture(scope="module")
def compressed_gguf(tiny_bert, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("gguf")
    calib, held = tmp / "calib.txt", tmp / "held.txt"
    calib.write_text("\n".join(sentences(40)))
    held.write_text("\n".join(sentences(6, seed=3)))
    out = tmp / "q4.gguf"  # the extension picks the format
    args = f"-o {out} --bits 4 --group-size 32 --calib {calib} --heldout {held}"
    assert run_cli(tiny_bert, *args.split()) == 0
    return out


def test_cli_writes_the_codes_as_q4_1(compressed_gguf, capsys):
    reader = gguf.GGUFReader(compressed_gguf)
    types = {t.name: t.tensor_type.name for t in reader.tensors}
    assert types["blk.0.attn_q.weight"] == "Q4_1" and types["blk.1.ffn_down.weight"] == "Q4_1"
    assert types["token_embd.weight"] == "Q8_0" and types["blk.0.attn_q.bias"] == "F32"
    file_type = reader.fields["general.file_type"]
    assert int(file_type.parts[file_type.data[0]][0]) == 3  # LLAMA_FTYPE_MOSTLY_Q4_1


def test_cli_gguf_refusals_write_nothing(tiny_bert, tmp_path, capsys):
    out = tmp_path / "q.gguf"
    assert run_cli(tiny_bert, "-o", out, "--group-size", "48") == 2
    err = capsys.readouterr().err
    assert "--group-size 48: GGUF blocks hold 32 values" in err and err.count("\n") == 1
    assert os.listdir(tmp_path) == []


def test_llama_cpp_runs_the_compressed_file(tiny_bert, compressed_gguf):
    """llama.cpp's embeddings of our file equal our model running the file's weights."""
    llama_cpp = pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed")
    from slimgrad.compress._gguf import gguf_quality
    from slimgrad.models import bert

    model = bert.load(str(tiny_bert))
    text = sentences(5, seed=9)
    llm = llama_cpp.Llama(
        model_path=str(compressed_gguf),
        embedding=True,
        verbose=False,
        n_ctx=64,
        pooling_type=llama_cpp.LLAMA_POOLING_TYPE_MEAN,
    )
    theirs = np.array([llm.embed(s) for s in text])
    c = gguf_quality(model, compressed_gguf, text, theirs)
    assert c.min() > 0.9999, c


def test_cli_gguf_budget_mixes_block_types(tiny_bert, tmp_path, capsys):
    calib = tmp_path / "calib.txt"
    calib.write_text("\n".join(sentences(40)))
    out = tmp_path / "mixed.gguf"
    # between all-Q4_1 (20 bytes per 32 weights) and all-Q8_0 (34 bytes)
    weights = 2 * (3 * 64 * 64 + 64 * 64 + 2 * 64 * 128)
    budget = weights // 32 * 27
    assert run_cli(tiny_bert, "-o", out, "--calib", calib, "--budget-bytes", budget) == 0
    reader = gguf.GGUFReader(out)
    linear = [t for t in reader.tensors if t.name.endswith(".weight") and "blk." in t.name
              and "norm" not in t.name]  # fmt: skip
    assert len(linear) == 12
    types = {t.tensor_type.name for t in linear}
    assert types <= {"Q4_1", "Q5_1", "Q8_0"} and len(types) > 1  # a mix, not one type
    assert sum(int(t.n_bytes) for t in linear) <= budget
    assert "as read back from the file" in capsys.readouterr().out
