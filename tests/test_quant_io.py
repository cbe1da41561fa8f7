"""quant.save / quant.load (safetensors), GGUF export and the `slimgrad quantize` command."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import slimgrad
from slimgrad import cli, quant

pytest.importorskip("safetensors")


def make_checkpoint(path, rng):
    from safetensors.numpy import save_file

    tensors = {
        "fc1.weight": rng.standard_normal((64, 96)).astype(np.float32),
        "fc1.bias": rng.standard_normal(64).astype(np.float32),
        "fc2.weight": rng.standard_normal((10, 64)).astype(np.float16),
        "odd": rng.standard_normal((5, 40)).astype(np.float32),
        "steps": np.arange(3, dtype=np.int64),
    }
    save_file(tensors, str(path))
    return tensors


def test_save_load_round_trip(tmp_path, rng):
    w = rng.standard_normal((12, 70)).astype(np.float32)
    tensors = {
        "a": quant.quantize(w, 4, granularity="group", group_size=32),
        "b": quant.quantize(w, 8, symmetric=False),
        "c": quant.quantize(w, 3, granularity="tensor"),
        "d": quant.quantize(w.reshape(3, 4, 70), 6, granularity="channel", axis=1),
        "plain": w,
    }
    path = tmp_path / "q.safetensors"
    quant.save(path, tensors)
    back = quant.load(path)
    assert set(back) == set(tensors)
    np.testing.assert_array_equal(back["plain"], w)
    for name in "abcd":
        q, r = tensors[name], back[name]
        assert isinstance(r, quant.QuantizedTensor) and r.spec() == q.spec()
        for field in ("data", "scale", "zero_point"):
            np.testing.assert_array_equal(getattr(r, field), getattr(q, field))
        np.testing.assert_array_equal(r.dequantize(), q.dequantize())


@pytest.mark.parametrize("bits", [2, 3, 4, 7, 8])
@pytest.mark.parametrize("symmetric", [True, False])
def test_stored_layout_is_what_save_stores(bits, symmetric, rng):
    """The layout a streaming writer puts in the header from the spec alone
    is the dtype, shape and order of what ``save`` stores for the tensor."""
    from slimgrad.quant import io

    for shape, kind in [
        ((5, 31), {"granularity": "channel"}),
        ((6, 9), {"granularity": "channel", "axis": 1}),
        ((3, 4, 100), {"granularity": "group", "group_size": 32}),
        ((7,), {"granularity": "tensor"}),
        ((33, 128), {"granularity": "group", "group_size": 128}),
    ]:
        w = rng.standard_normal(shape).astype(np.float16)
        qt = quant.quantize(w, bits, symmetric=symmetric, **kind)
        stored = io._layout({"w": qt})[0]
        made = {k: (a.dtype, a.shape) for k, a in stored.items()}
        assert list(made.items()) == list(io._stored_layout("w", qt.spec()).items()), kind


def test_save_refuses_collisions_and_keeps_old_file(tmp_path, rng):
    w = rng.standard_normal((4, 8)).astype(np.float32)
    path = tmp_path / "q.safetensors"
    quant.save(path, {"w": w})
    before = path.read_bytes()
    with pytest.raises(ValueError, match="tensors: the stored name 'w.scale' is used twice"):
        quant.save(path, {"w": quant.quantize(w, 8), "w.scale": w})
    with pytest.raises(
        TypeError, match=r"tensors\['x'\]: expected a QuantizedTensor or ndarray, got list"
    ):
        quant.save(path, {"x": [1, 2]})
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["q.safetensors"]
    with pytest.raises(FileNotFoundError, match="no such file"):
        quant.load(tmp_path / "missing.safetensors")


def test_gguf_export_equals_gguf_package(tmp_path, rng):
    gguf = pytest.importorskip("gguf")
    tensors = {
        "w": rng.standard_normal((8, 64)).astype(np.float32),
        "v": rng.standard_normal(8).astype(np.float32),
    }
    path = tmp_path / "m.gguf"
    assert quant.save_gguf(path, tensors, "Q4_1") == {"w": "Q4_1", "v": "F32"}
    reader = gguf.GGUFReader(str(path))
    found = {t.name: t for t in reader.tensors}
    assert found["w"].tensor_type == gguf.GGMLQuantizationType.Q4_1
    expected = gguf.quants.quantize(tensors["w"], gguf.GGMLQuantizationType.Q4_1)
    np.testing.assert_array_equal(np.asarray(found["w"].data).reshape(expected.shape), expected)
    np.testing.assert_array_equal(np.asarray(found["v"].data), tensors["v"])


def test_cli_quantize_safetensors(tmp_path, rng, capsys):
    src = tmp_path / "in.safetensors"
    tensors = make_checkpoint(src, rng)
    out = tmp_path / "out.safetensors"
    assert (
        cli.main(["quantize", str(src), "-o", str(out), "--bits", "4", "--group-size", "32"]) == 0
    )
    table = capsys.readouterr().out
    lines = table.splitlines()
    assert lines[0].split()[:4] == ["tensor", "shape", "dtype", "stored"]
    row = next(ln for ln in lines if ln.startswith("fc1.weight"))
    assert "64x96" in row and "24,576" in row and "3,840" in row  # 64*96*4 bytes -> 64*48 + 64*3*4
    assert "kept" in next(ln for ln in lines if ln.startswith("fc1.bias"))
    back = quant.load(out)
    assert isinstance(back["fc1.weight"], quant.QuantizedTensor) and back["fc1.weight"].bits == 4
    err = float(row.split()[-1])
    w = tensors["fc1.weight"]
    assert err == pytest.approx(
        np.linalg.norm(back["fc1.weight"].dequantize() - w) / np.linalg.norm(w), rel=1e-3
    )
    assert err < 0.12
    np.testing.assert_array_equal(back["steps"], tensors["steps"])


def test_cli_quantize_gguf(tmp_path, rng, capsys):
    pytest.importorskip("gguf")
    src = tmp_path / "in.safetensors"
    make_checkpoint(src, rng)
    out = tmp_path / "out.gguf"
    assert cli.main(["quantize", str(src), "-o", str(out), "--type", "Q8_0"]) == 0
    table = capsys.readouterr().out
    odd = next(ln for ln in table.splitlines() if ln.startswith("odd "))
    assert "Q8_0" in table and odd.split()[3] == "F32" and out.exists()
    assert odd.endswith("row not a multiple of 32")


@pytest.mark.parametrize(
    "argv,message",
    [
        (["--bits", "9"], "--bits: expected 2..8, got 9"),
        (["--bits", "3", "--format", "gguf"], "--bits: not used by --format gguf; choose --type"),
        (
            ["--group-size", "64", "--format", "gguf"],
            "--group-size: not used by --format gguf",
        ),
        (["--group-size", "0"], "--group-size: expected a positive integer, got 0"),
    ],
)
def test_cli_user_errors_exit_2_with_one_line(tmp_path, rng, capsys, argv, message):
    src = tmp_path / "in.safetensors"
    make_checkpoint(src, rng)
    assert cli.main(["quantize", str(src), "-o", str(tmp_path / "o.safetensors"), *argv]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err
    assert not (tmp_path / "o.safetensors").exists()


def test_cli_missing_and_bad_input(tmp_path, capsys):
    assert (
        cli.main(["quantize", str(tmp_path / "none.safetensors"), "-o", str(tmp_path / "o")]) == 2
    )
    assert "none.safetensors: no such file" in capsys.readouterr().err
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a safetensors file")
    assert cli.main(["quantize", str(bad), "-o", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err == (
        f"slimgrad quantize: error: {bad}: not a safetensors file "
        "(header length 7021991845529153390 beyond the end)\n"
    )


def test_load_bfloat16_and_float8_in_a_fresh_process(tmp_path, rng):
    import ml_dtypes

    w = rng.standard_normal((4, 8)).astype(ml_dtypes.bfloat16)
    path = tmp_path / "qb.safetensors"
    quant.save(
        path,
        {
            "q": quant.quantize(w, 8),
            "b": np.arange(3).astype(ml_dtypes.bfloat16),
            "f8": np.arange(3).astype(ml_dtypes.float8_e5m2),
        },
    )
    code = (
        "import sys, slimgrad.quant as Q\n"
        "t = Q.load(sys.argv[1])\n"
        "print(t['q'].source_dtype, t['b'].dtype, t['b'].tolist(), t['f8'].dtype, t['f8'].tolist())\n"
    )
    # the subprocess imports the slimgrad this process runs (installed or PYTHONPATH)
    env = dict(os.environ)
    here = os.path.dirname(os.path.dirname(os.path.abspath(slimgrad.__file__)))
    env["PYTHONPATH"] = here + os.pathsep + env.get("PYTHONPATH", "")
    done = subprocess.run(
        [sys.executable, "-c", code, str(path)], env=env, capture_output=True, text=True
    )
    assert (done.returncode, done.stderr) == (0, "")
    assert done.stdout == "bfloat16 bfloat16 [0.0, 1.0, 2.0] float8_e5m2 [0.0, 1.0, 2.0]\n"


def test_files_without_a_recorded_dtype_load_as_float32(tmp_path, rng):
    from safetensors.numpy import save_file

    qt = quant.quantize(rng.standard_normal((4, 8)).astype(np.float16), 8)
    spec = qt.spec()
    del spec["dtype"]  # written before the dtype was recorded
    meta = {"slimgrad.quant": json.dumps({"version": 1, "tensors": {"w": spec}})}
    path = tmp_path / "old.safetensors"
    save_file({"w": qt.data, "w.scale": qt.scale}, str(path), metadata=meta)
    back = quant.load(path)["w"]
    assert back.source_dtype == np.float32
    np.testing.assert_array_equal(back.dequantize(), qt.dequantize())
