"""`slimgrad quantize` on checkpoints a new user has: bfloat16 / float16 / float8 /
integer tensors, metadata, NaNs, overflowing GGUF scales and bad paths (QA findings)."""

from __future__ import annotations

import json
import math
import struct

import ml_dtypes
import numpy as np
import pytest
from slimgrad import cli, quant

gguf = pytest.importorskip("gguf")

CODES = {
    "float32": "F32",
    "float16": "F16",
    "bfloat16": "BF16",
    "float8_e4m3fn": "F8_E4M3",
    "float8_e5m2": "F8_E5M2",
    "int64": "I64",
    "int32": "I32",
    "int16": "I16",
    "int8": "I8",
    "uint8": "U8",
    "uint16": "U16",
    "uint64": "U64",
    "bool": "BOOL",
}


def write_safetensors(path, tensors, metadata=None):
    """A safetensors file written by hand (any dtype, float8 included); returns
    name -> the tensor's bytes as stored."""
    header, blobs, offset = {}, {}, 0
    if metadata is not None:
        header["__metadata__"] = metadata
    for name, a in tensors.items():
        blobs[name] = np.ascontiguousarray(a).tobytes()
        header[name] = {
            "dtype": CODES[a.dtype.name],
            "shape": list(a.shape),
            "data_offsets": [offset, offset + len(blobs[name])],
        }
        offset += len(blobs[name])
    raw = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + b"".join(blobs.values()))
    return blobs


def read_safetensors(path):
    """(header without metadata, metadata, name -> bytes) read by hand."""
    blob = path.read_bytes()
    (n,) = struct.unpack("<Q", blob[:8])
    header = json.loads(blob[8 : 8 + n])
    meta = header.pop("__metadata__", None)
    body = blob[8 + n :]
    data = {k: body[v["data_offsets"][0] : v["data_offsets"][1]] for k, v in header.items()}
    return header, meta, data


def run(argv, capsys):
    code = cli.main(["quantize", *map(str, argv)])
    out, err = capsys.readouterr()
    return code, out, err


def row(out, name):
    """[name, shape, dtype, stored, bytes before, bytes after, note] of the shared table."""
    return next(ln for ln in out.splitlines() if ln.split()[0] == name).split(maxsplit=6)


def gguf_tensors(path):
    return {t.name: t for t in gguf.GGUFReader(str(path)).tensors}


def rel_error(w, w_hat):
    w = w.astype(np.float64)
    return np.linalg.norm(w - w_hat.astype(np.float64)) / np.linalg.norm(w)


# -- item 1: bfloat16 (and float16) matrices are quantized, not kept ----------------------
@pytest.mark.parametrize("dtype", [ml_dtypes.bfloat16, np.float16])
def test_half_precision_matrices_are_quantized(tmp_path, rng, capsys, dtype):
    w = rng.standard_normal((16, 64)).astype(dtype)
    src = tmp_path / "in.safetensors"
    write_safetensors(src, {"fc.weight": w})
    out = tmp_path / "q.safetensors"
    code, table, _ = run([src, "-o", out, "--bits", "4", "--group-size", "32"], capsys)
    assert code == 0
    r = row(table, "fc.weight")
    code_in = CODES[np.dtype(dtype).name]
    assert r[:6] == [
        "fc.weight",
        "16x64",
        code_in,
        "int4/sym/g32",
        "2,048",
        f"{16 * 32 + 16 * 2 * 4:,}",
    ]
    qt = quant.load(out)["fc.weight"]
    assert isinstance(qt, quant.QuantizedTensor) and qt.bits == 4
    assert qt.source_dtype == dtype  # what was quantized, not the float32 copy it widened to
    expected = quant.quantize(w.astype(np.float32), 4, granularity="group", group_size=32)
    np.testing.assert_array_equal(qt.data, expected.data)
    np.testing.assert_array_equal(qt.scale, expected.scale)
    assert float(r[6]) == pytest.approx(rel_error(w, qt.dequantize()), rel=1e-3)

    code, table, _ = run([src, "-o", tmp_path / "q.gguf", "--type", "Q8_0"], capsys)
    assert code == 0 and row(table, "fc.weight")[5] == f"{16 * 2 * 34:,}"
    t = gguf_tensors(tmp_path / "q.gguf")["fc.weight"]
    assert t.tensor_type == gguf.GGMLQuantizationType.Q8_0
    ref = gguf.quants.quantize(w.astype(np.float32), gguf.GGMLQuantizationType.Q8_0)
    np.testing.assert_array_equal(np.asarray(t.data).reshape(ref.shape), ref)


# -- items 8 and 24: other dtypes copied byte for byte, metadata kept ----------------------
def mixed_checkpoint(rng):
    return {
        "w": rng.standard_normal((4, 32)).astype(np.float32),
        "f8a": rng.standard_normal((4, 32)).astype(ml_dtypes.float8_e4m3fn),
        "f8b": rng.standard_normal((2, 32)).astype(ml_dtypes.float8_e5m2),
        "bf16.bias": rng.standard_normal(5).astype(ml_dtypes.bfloat16),
        "u16": np.array([[0, 65535], [7, 8]], np.uint16),
        "u8": np.array([0, 255, 3], np.uint8),
        "flags": np.array([True, False]),
        "big": np.array([2**31 - 1, 16777217, -(2**62)], np.int64),
        "i16": np.array([-32768, 32767], np.int16),
    }


def mixed_to_gguf(tmp_path, rng, capsys):
    """``slimgrad quantize`` of a mixed_checkpoint to q.gguf: (tensors, out, run's result)."""
    tensors = mixed_checkpoint(rng)
    src = tmp_path / "in.safetensors"
    write_safetensors(src, tensors)
    out = tmp_path / "q.gguf"
    return tensors, out, run([src, "-o", out], capsys)


def test_safetensors_output_keeps_other_tensors_and_metadata(tmp_path, rng, capsys):
    tensors = mixed_checkpoint(rng)
    src = tmp_path / "in.safetensors"
    blobs = write_safetensors(src, tensors, {"format": "pt", "epoch": "3"})
    out = tmp_path / "q.safetensors"
    code, table, err = run([src, "-o", out], capsys)
    assert (code, err) == (0, "")
    header, meta, data = read_safetensors(out)
    for name in tensors:
        if name != "w":
            assert header[name]["dtype"] == CODES[tensors[name].dtype.name], name
            assert data[name] == blobs[name], name
            assert row(table, name)[4:] == [f"{len(blobs[name]):,}"] * 2 + [
                "kept (not a 2-D float tensor)"
            ]
    assert header["w"]["dtype"] == "I8" and "w.scale" in header
    specs = json.loads(meta.pop("slimgrad.quant"))
    # slimgrad's layout never claims "pt": torch loaders must not read codes as weights
    assert meta == {"source": "in.safetensors", "format": "slimgrad", "epoch": "3"}
    assert specs["tensors"]["w"]["dtype"] == "float32"
    back = quant.load(out)
    assert list(back) == list(tensors)  # file order
    assert back["f8a"].dtype == ml_dtypes.float8_e4m3fn
    np.testing.assert_array_equal(back["f8a"].view(np.uint8), tensors["f8a"].view(np.uint8))


def test_gguf_output_keeps_every_value(tmp_path, rng, capsys):
    tensors, out, (code, table, err) = mixed_to_gguf(tmp_path, rng, capsys)
    assert (code, err) == (0, "")
    found = gguf_tensors(out)
    expected = {  # name -> (GGUF type, dtype written, note)
        "w": ("Q8_0", None, None),
        "f8a": ("F16", np.float16, "from F8_E4M3, values unchanged"),
        "f8b": ("F16", np.float16, "from F8_E5M2, values unchanged"),
        "bf16.bias": ("BF16", np.uint16, "kept"),
        "u16": ("I32", np.int32, "from U16, values unchanged"),
        "u8": ("I16", np.int16, "from U8, values unchanged"),
        "flags": ("I8", np.int8, "from BOOL, values unchanged"),
        "big": ("I64", np.int64, "kept"),
        "i16": ("I16", np.int16, "kept"),
    }
    for name, (gtype, dtype, note) in expected.items():
        t = found[name]
        assert t.tensor_type == gguf.GGMLQuantizationType[gtype], name
        r = row(table, name)
        assert (r[3], r[5]) == (gtype, f"{int(t.n_bytes):,}"), name
        if dtype is None:
            continue
        assert r[6] == note
        if dtype is np.uint16:  # the reader gives BF16 as raw bytes
            assert np.asarray(t.data).tobytes() == tensors[name].tobytes()
            continue
        values = np.asarray(t.data).reshape(tensors[name].shape)
        assert values.dtype == dtype
        np.testing.assert_array_equal(values, tensors[name].astype(dtype))
    np.testing.assert_array_equal(np.asarray(found["big"].data), [2**31 - 1, 16777217, -(2**62)])
    assert int(found["u8"].n_bytes) == 6 and row(table, "u8")[4:6] == ["3", "6"]


def test_save_gguf_library_keeps_integers_and_refuses_what_gguf_cannot_hold(tmp_path):
    big = np.array([2**31 - 1, 16777217], np.int64)
    path = tmp_path / "b.gguf"
    assert quant.save_gguf(path, {"big": big, "i8": np.array([-128, 127], np.int8)}) == {
        "big": "I64",
        "i8": "I8",
    }
    np.testing.assert_array_equal(np.asarray(gguf_tensors(path)["big"].data), big)
    with pytest.raises(
        ValueError,
        match=r"^tensors\['u'\]: GGUF has no type that holds uint64 values from 2\*\*63$",
    ):
        quant.save_gguf(tmp_path / "u.gguf", {"u": np.array([2**63], np.uint64)})
    with pytest.raises(
        ValueError, match=r"^tensors\['c'\]: GGUF has no type that holds complex64 tensors$"
    ):
        quant.save_gguf(tmp_path / "c.gguf", {"c": np.zeros(2, np.complex64)})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b.gguf"]


# -- item 6: a block scale beyond float16 ------------------------------------------------
def test_gguf_scale_overflow_keeps_the_tensor_unquantized(tmp_path, capsys):
    w = np.array([[1e7] + [1.0] * 31] * 4, np.float32)
    ok = np.ones((2, 32), np.float32)
    src = tmp_path / "huge.safetensors"
    write_safetensors(src, {"huge": w, "ok": ok})
    out = tmp_path / "h.gguf"
    code, table, err = run([src, "-o", out, "--format", "gguf"], capsys)
    assert (code, err) == (0, "")
    assert row(table, "huge") == [
        "huge",
        "4x32",
        "F32",
        "F32",
        "512",
        "512",
        "a block scale overflows float16, max |w| 1e+07",
    ]
    found = gguf_tensors(out)
    assert found["huge"].tensor_type == gguf.GGMLQuantizationType.F32
    np.testing.assert_array_equal(np.asarray(found["huge"].data), w)
    assert found["ok"].tensor_type == gguf.GGMLQuantizationType.Q8_0
    # Q4_0's d = max / -8 overflows from 8 * 65504 on; just below it still quantizes
    assert quant.save_gguf(tmp_path / "a.gguf", {"a": w * 0.0523, "b": w * 0.0525}, "Q4_0") == {
        "a": "Q4_0",
        "b": "F32",
    }


# -- item 7: errors name the tensor, and --nonfinite ---------------------------------------
@pytest.mark.parametrize("fmt", ["safetensors", "gguf"])
def test_nonfinite_error_names_the_tensor(tmp_path, rng, capsys, fmt):
    w = rng.standard_normal((4, 32)).astype(np.float32)
    w[1, 3] = np.nan
    src = tmp_path / "nan.safetensors"
    write_safetensors(src, {"layer.6.weight": w[::-1].copy(), "layer.7.weight": w})
    out = tmp_path / f"o.{fmt}"
    code, table, err = run([src, "-o", out], capsys)
    assert (code, table) == (2, "")
    # layer.6 comes first and holds the NaN at (2, 3)
    hint = " (--nonfinite propagate keeps going)" if fmt == "safetensors" else ""
    assert err == (
        f"slimgrad quantize: error: layer.6.weight: non-finite value nan at index (2, 3){hint}\n"
    )
    assert not out.exists()

    code, table, err = run([src, "-o", out, "--nonfinite", "propagate"], capsys)
    if fmt == "safetensors":
        assert (code, err) == (0, "")
        deq = quant.load(out)["layer.7.weight"].dequantize()
        assert np.isnan(deq[1]).all() and np.isfinite(np.delete(deq, 1, axis=0)).all()
    else:  # GGUF blocks cannot hold NaN: the option does not apply and is refused
        assert (code, table) == (2, "") and "--nonfinite: not used by --format gguf" in err
        assert not out.exists()


def test_save_gguf_nonfinite_names_the_tensor(tmp_path):
    w = np.ones((2, 32), np.float32)
    w[1, 3] = -np.inf
    with pytest.raises(
        ValueError, match=r"^tensors\['layer.7.weight'\]: non-finite value -inf at index \(1, 3\)$"
    ):
        quant.save_gguf(tmp_path / "x.gguf", {"layer.7.weight": w})
    assert list(tmp_path.iterdir()) == []


# -- item 9 and paths: one line, exit 2, nothing touched ------------------------------------
def test_output_equal_to_input_is_refused(tmp_path, rng, capsys, monkeypatch):
    src = tmp_path / "m.safetensors"
    write_safetensors(src, {"w": rng.standard_normal((4, 32)).astype(np.float32)})
    before = src.read_bytes()
    (tmp_path / "link.safetensors").symlink_to(src)
    monkeypatch.chdir(tmp_path)
    for out in ["m.safetensors", "./m.safetensors", str(src), "link.safetensors"]:
        code, table, err = run(["m.safetensors", "-o", out], capsys)
        assert (code, table) == (2, "")
        assert err == (
            f"slimgrad quantize: error: -o {out}: is the input file; write to another path\n"
        )
    assert src.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link.safetensors", "m.safetensors"]


def test_bad_paths_are_one_clean_line(tmp_path, rng, capsys):
    src = tmp_path / "m.safetensors"
    write_safetensors(src, {"w": rng.standard_normal((4, 32)).astype(np.float32)})
    cases = [
        (
            [src, "-o", tmp_path],
            f"{tmp_path}: is a directory; -o takes the path of the file to write",
        ),
        (
            [src, "-o", tmp_path / "nope" / "o.gguf"],
            f"{tmp_path / 'nope' / 'o.gguf'}: cannot write, no such directory {tmp_path / 'nope'}",
        ),
        (
            [tmp_path, "-o", tmp_path / "o"],
            f"{tmp_path}: is a directory, not a safetensors file "
            "(a model folder is read by --format gguf and compressed-tensors)",
        ),
        ([tmp_path / "none", "-o", tmp_path / "o"], f"{tmp_path / 'none'}: no such file"),
    ]
    for argv, message in cases:
        assert run(argv, capsys) == (2, "", f"slimgrad quantize: error: {message}\n")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.safetensors"]


def test_library_save_paths_are_one_clean_line(tmp_path):
    w = np.ones((2, 32), np.float32)
    missing = tmp_path / "nope" / "q.safetensors"
    with pytest.raises(FileNotFoundError) as e:
        quant.save(missing, {"w": w})
    assert str(e.value) == f"{missing}: folder {missing.parent} does not exist"
    with pytest.raises(IsADirectoryError) as e:
        quant.save_gguf(tmp_path, {"w": w})
    assert str(e.value) == f"{tmp_path}: is a directory"
    with pytest.raises(IsADirectoryError) as e:
        quant.load(tmp_path)
    assert str(e.value) == f"{tmp_path}: is a directory, not a safetensors file"
    assert list(tmp_path.iterdir()) == []


def test_quantized_input_is_refused(tmp_path, rng, capsys):
    q = tmp_path / "q.safetensors"
    quant.save(q, {"w": quant.quantize(rng.standard_normal((4, 32)).astype(np.float32))})
    assert run([q, "-o", tmp_path / "qq.safetensors"], capsys) == (
        2,
        "",
        f"slimgrad quantize: error: {q}: already quantized by slimgrad (slimgrad.quant metadata);"
        " it is read by slimgrad.quant.load(); `slimgrad quantize` takes the float checkpoint\n",
    )


def test_table_totals_are_bytes_written(tmp_path, rng, capsys):
    tensors, out, (code, table, _) = mixed_to_gguf(tmp_path, rng, capsys)
    total = table.splitlines()[-1].split()
    written = sum(int(t.n_bytes) for t in gguf_tensors(out).values())
    assert code == 0 and total[2] == f"{written:,}"
    assert total[1] == f"{sum(math.prod(a.shape) * a.itemsize for a in tensors.values()):,}"


@pytest.mark.parametrize(
    "dtype",
    [ml_dtypes.bfloat16, np.float16, np.float32, np.float64],
    ids=lambda d: np.dtype(d).name,
)
def test_reported_error_matches_float64(dtype, rng):
    """The report's relative error (float32 differences, float64 sums) equals
    the float64 computation to 1e-6 relative: close reconstructions, w_hat
    far from w (zeros, flipped signs), and the zero-norm cases."""
    from slimgrad.quant.cli import _rel_error

    w = (rng.standard_normal((37, 129)) * np.exp(rng.uniform(-8, 8, 129))).astype(dtype)
    w32 = w.astype(np.float32)
    for w_hat in (
        w32 * (1 + rng.uniform(-0.01, 0.01, w.shape)).astype(np.float32),
        np.where(rng.random(w.shape) < 0.3, 0, -w32).astype(np.float32),
    ):
        want = rel_error(w, w_hat)
        assert _rel_error(w, w_hat.copy()) == pytest.approx(want, rel=1e-6)
    zero = np.zeros((3, 5), dtype)
    assert _rel_error(zero, np.zeros((3, 5), np.float32)) == 0.0
    assert _rel_error(zero, np.ones((3, 5), np.float32)) == float("inf")


# -- streaming: the output is laid out from the header, each weight made as it is written --
@pytest.mark.parametrize(
    "options",
    [
        ["--bits", "8"],
        ["--bits", "4", "--group-size", "32", "--asymmetric"],
        ["--bits", "3", "--group-size", "48"],
        ["--format", "compressed-tensors", "--bits", "4", "--group-size", "32"],
        ["--format", "compressed-tensors", "--bits", "5", "--asymmetric"],
    ],
    ids=lambda o: "-".join(o).replace("--", ""),
)
def test_output_is_made_one_weight_at_a_time(tmp_path, rng, capsys, options):
    """Peak traced memory (NumPy's allocations are traced) stays below 1.25
    weights' float32 size: the whole output (16 weights of 1 MiB as bfloat16,
    0.2-0.5 MiB each quantized) is never held. (Collecting the output, as
    before the eighteenth session, peaked at 1.0-2.7 float32 weights with 8
    of them.) The file is what the library writes for the same weights."""
    import tracemalloc

    from slimgrad.quant import compressed

    (tmp_path / "config.json").write_text("{}")
    weights = {
        f"layers.{i}.fc.weight": rng.standard_normal((512, 1024)).astype(ml_dtypes.bfloat16)
        for i in range(16)
    }
    write_safetensors(tmp_path / "model.safetensors", {**weights, "norm": np.ones(3, np.float32)})
    out = tmp_path / "out"
    tracemalloc.start()
    try:
        code, table, err = run([tmp_path / "model.safetensors", "-o", out, *options], capsys)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert code == 0, err
    one = 512 * 1024 * 4  # a weight widened to float32
    assert peak < 1.25 * one, peak / one

    bits = int(options[options.index("--bits") + 1])
    group = int(options[options.index("--group-size") + 1]) if "--group-size" in options else None
    sym = "--asymmetric" not in options
    kind = {"granularity": "group", "group_size": group} if group else {}
    if "compressed-tensors" in options:
        _, _, stored = read_safetensors(out / "model.safetensors")
        want = {}
        for name, w in weights.items():
            qt = quant.quantize(w.astype(np.float32), bits, symmetric=sym, **kind)
            want.update(compressed.tensors(name, qt))
        want["norm"] = np.ones(3, np.float32)
        assert list(stored) == list(want)
        for key, a in want.items():
            assert stored[key] == a.tobytes(), key
    else:
        loaded = quant.load(out)
        for name, w in weights.items():
            qt = quant.quantize(w.astype(np.float32), bits, symmetric=sym, **kind)
            np.testing.assert_array_equal(loaded[name].data, qt.data)
            np.testing.assert_array_equal(loaded[name].scale, qt.scale)
            np.testing.assert_array_equal(loaded[name].zero_point, qt.zero_point)
            assert loaded[name].spec() == {**qt.spec(), "dtype": "bfloat16"}
    assert len(table.splitlines()) == 1 + 17 + 1  # header, every tensor, total


def test_a_stored_name_taken_by_another_tensor_is_refused(tmp_path, rng, capsys):
    """``w``'s scale is stored as ``w.scale``: an input tensor of that name
    would be overwritten, so the command refuses before writing anything."""
    src = tmp_path / "in.safetensors"
    write_safetensors(
        src,
        {
            "fc.weight": rng.standard_normal((8, 32)).astype(np.float32),
            "fc.weight.scale": np.ones(8, np.float32),
        },
    )
    out = tmp_path / "q.safetensors"
    code, table, err = run([src, "-o", out], capsys)
    assert (code, table) == (2, "")
    assert err == (
        f"slimgrad quantize: error: {src}: tensor 'fc.weight.scale': the stored tensor "
        "'fc.weight.scale' is also another tensor's name\n"
    )
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["in.safetensors"]


@pytest.mark.parametrize(
    "command",
    [["quantize", "--bits", "4"], ["prune", "--sparsity", "0.5", "--global"]],
    ids=lambda c: c[0],
)
def test_half_tensors_at_odd_addresses_are_read(tmp_path, rng, capsys, command):
    """safetensors does not align the data: a header of odd length puts a
    bfloat16 tensor at an odd address, which the kernels refuse. The commands
    read such a tensor through an aligned copy, with the results of an
    aligned file."""
    w = rng.standard_normal((16, 64)).astype(ml_dtypes.bfloat16)
    outs = []
    for pad in range(1, 3):  # one of two name lengths gives an odd data start
        src = tmp_path / f"in{pad}.safetensors"
        write_safetensors(src, {"x" * pad: np.ones(1, np.uint8), "fc.weight": w})
        out = tmp_path / f"out{pad}.safetensors"
        code = cli.main([command[0], str(src), "-o", str(out), *command[1:]])
        assert code == 0, capsys.readouterr().err
        outs.append(read_safetensors(out)[2]["fc.weight"])
    assert outs[0] == outs[1]
