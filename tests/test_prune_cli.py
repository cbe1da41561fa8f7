"""`slimgrad prune` on safetensors checkpoints: pruned tensors, untouched
bytes elsewhere, the printed table, and one-line errors with exit status 2."""

from __future__ import annotations

import json
import struct

import ml_dtypes
import numpy as np
import pytest
from slimgrad import _safetensors as st
from slimgrad import prune
from slimgrad.cli import main

safetensors_numpy = pytest.importorskip("safetensors.numpy")


@pytest.fixture
def checkpoint(tmp_path, rng):
    tensors = {
        "fc1.weight": rng.standard_normal((32, 16)).astype(np.float32),
        "fc1.bias": rng.standard_normal(32).astype(np.float32),
        "conv.weight": rng.standard_normal((8, 4, 3, 4)).astype(np.float64),
        "odd.weight": rng.standard_normal((5, 6)).astype(np.float16),
        "steps": np.arange(4, dtype=np.int64),
    }
    path = tmp_path / "in.safetensors"
    safetensors_numpy.save_file(tensors, str(path), metadata={"format": "np", "epoch": "3"})
    return path, tensors


def _run(args, capsys):
    code = main(["prune", *map(str, args)])
    out, err = capsys.readouterr()
    return code, out, err


def test_sparsity_prunes_matrices_only(checkpoint, tmp_path, capsys):
    path, tensors = checkpoint
    out_path = tmp_path / "out.safetensors"
    code, out, err = _run([path, "-o", out_path, "--sparsity", "0.5"], capsys)
    assert code == 0 and err == ""
    got = safetensors_numpy.load_file(str(out_path))
    assert sorted(got) == sorted(tensors)
    for name in ("fc1.weight", "conv.weight", "odd.weight"):
        expected = tensors[name] * prune.magnitude_mask(tensors[name], 0.5)
        np.testing.assert_array_equal(got[name], expected)
        assert got[name].dtype == tensors[name].dtype
    for name in ("fc1.bias", "steps"):
        np.testing.assert_array_equal(got[name], tensors[name])
    from safetensors import safe_open

    with safe_open(str(out_path), "np") as f:
        assert f.metadata() == {"format": "np", "epoch": "3"}
    lines = out.splitlines()
    assert lines[0].split() == [
        "tensor",
        "shape",
        "dtype",
        "stored",
        "bytes",
        "before",
        "bytes",
        "after",
        "note",
    ]  # the table slimgrad quantize prints too
    row = next(ln for ln in lines if ln.startswith("fc1.weight"))
    assert row.split()[-2:] == ["50.00%", "zero"] and " 32x16 " in row
    assert "kept (< 2-D)" in next(ln for ln in lines if ln.startswith("fc1.bias"))
    assert lines[-1].startswith("total") and (
        "sparsity 0.5: 463 of 926 weights in 3 pruned tensors are zero (50.00%)" in lines[-1]
    )


def test_nm_prunes_last_axis_and_skips_indivisible(checkpoint, tmp_path, capsys):
    path, tensors = checkpoint
    out_path = tmp_path / "out.safetensors"
    code, out, _ = _run([path, "-o", out_path, "--nm", "2:4"], capsys)
    assert code == 0
    got = safetensors_numpy.load_file(str(out_path))
    for name in ("fc1.weight", "conv.weight"):
        np.testing.assert_array_equal(got[name], tensors[name] * prune.nm_mask(tensors[name], 2, 4))
    np.testing.assert_array_equal(got["odd.weight"], tensors["odd.weight"])
    assert "last axis 6 not divisible by 4" in out


def test_global_and_bfloat16(tmp_path, rng, capsys):
    a = rng.standard_normal((16, 16)).astype(ml_dtypes.bfloat16)
    b = (rng.standard_normal((8, 8)) * 100).astype(np.float32)
    entries = {
        "a": st.Entry("BF16", [16, 16], a.tobytes()),
        "b": st.Entry("F32", [8, 8], b.tobytes()),
    }
    path, out_path = tmp_path / "in.safetensors", tmp_path / "out.safetensors"
    st.write(str(path), entries, None)
    code, _, _ = _run([path, "-o", out_path, "--sparsity", "0.5", "--global"], capsys)
    assert code == 0
    got, metadata = st.read(str(out_path))
    assert metadata is None
    masks = prune.global_magnitude_masks({"a": a, "b": b}, 0.5)
    expected_a = np.where(masks["a"], a, 0).astype(ml_dtypes.bfloat16)
    np.testing.assert_array_equal(got["a"].array(), expected_a)
    np.testing.assert_array_equal(got["b"].array(), b * masks["b"])


@pytest.mark.parametrize("sparsity", ["0.3", "0.5", "0.9"])
def test_global_ties_across_tensors(tmp_path, rng, capsys, sparsity):
    """--global makes each tensor's mask from its count of the global
    selection: with a few values shared by every tensor (the k-th value's
    copies spread over several tensors), the output equals the library's
    global masks, ties pruned in tensor order, then by flat index."""
    tensors = {
        f"layer.{i}.weight": rng.integers(-3, 4, (24, 40)).astype(ml_dtypes.bfloat16)
        for i in range(5)
    }
    path, out_path = tmp_path / "in.safetensors", tmp_path / "out.safetensors"
    st.write(str(path), {n: st.to_entry(a) for n, a in tensors.items()}, None)
    code, _, _ = _run([path, "-o", out_path, "--sparsity", sparsity, "--global"], capsys)
    assert code == 0
    got, _ = st.read(str(out_path))
    masks = prune.global_magnitude_masks(tensors, float(sparsity))
    for name, a in tensors.items():
        np.testing.assert_array_equal(
            got[name].array(), np.where(masks[name], a, 0).astype(a.dtype)
        )


# Every user error: exit 2, nothing on stdout, exactly "slimgrad prune: error: <message>"
# as one line on stderr, and no file written (no output, no temporary file).
USER_ERRORS = {
    "nm-format": ("{inp} -o {out} --nm 2-4", "--nm: expected N:M such as 2:4, got '2-4'"),
    "nm-range": (
        "{inp} -o {out} --nm 5:4",
        "--nm: expected 0 < N < M (keep N of every M), got '5:4'",
    ),
    "sparsity-range": (
        "{inp} -o {out} --sparsity 1.5",
        "--sparsity: expected a number in [0, 1], got 1.5",
    ),
    "global-with-nm": ("{inp} -o {out} --nm 2:4 --global", "--global: only with --sparsity"),
    "not-safetensors": (
        "{garbage} -o {out} --sparsity 0.5",
        "{garbage}: not a safetensors file (bad header: Expecting value: line 1 column 1 (char 0))",
    ),
    "entry-keys": (
        "{bad_entry} -o {out} --sparsity 0.5",
        "{bad_entry}: tensor 'x': expected the keys dtype, shape, data_offsets, got ['dtype']",
    ),
    "entry-short": (
        "{short} -o {out} --sparsity 0.5",
        "{short}: tensor 'x': F32 (2, 2) needs 16 bytes, data_offsets [0, 4] hold 4",
    ),
    "missing": ("{missing} -o {out} --sparsity 0.5", "{missing}: no such file"),
    "input-folder-without-weights": (
        "{folder} -o {out} --sparsity 0.5",
        "{folder}: no model.safetensors or model.safetensors.index.json",
    ),
    "output-folder": (
        "{inp} -o {folder} --sparsity 0.5",
        "{folder}: is a directory; -o takes the path of the file to write",
    ),
    "output-parent-missing": (
        "{inp} -o {folder}/none/out.safetensors --sparsity 0.5",
        "{folder}/none/out.safetensors: cannot write, no such directory {folder}/none",
    ),
    "output-parent-a-file": (
        "{inp} -o {inp}/out.safetensors --nm 2:4",
        "{inp}/out.safetensors: cannot write, no such directory {inp}",
    ),
}


@pytest.mark.parametrize("args, message", list(USER_ERRORS.values()), ids=list(USER_ERRORS))
def test_user_errors_are_one_line_exit_2(checkpoint, tmp_path, capsys, args, message):
    path, _ = checkpoint
    folder = tmp_path / "folder"
    folder.mkdir()
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00not json at all!")
    names = {
        "missing": tmp_path / "nope.safetensors",
        "out": tmp_path / "out.safetensors",
        "inp": path,
        "folder": folder,
        "garbage": garbage,
    }
    for key, entry in (
        ("bad_entry", {"x": {"dtype": "F32"}}),
        ("short", {"x": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 4]}}),
    ):
        header = json.dumps(entry).encode()
        names[key] = tmp_path / f"{key}.safetensors"
        names[key].write_bytes(struct.pack("<Q", len(header)) + header + bytes(4))
    before = sorted(p.name for p in tmp_path.rglob("*"))
    code, out, err = _run(args.format(**names).split(), capsys)
    assert (code, out) == (2, "")
    assert err == f"slimgrad prune: error: {message.format(**names)}\n"
    assert sorted(p.name for p in tmp_path.rglob("*")) == before  # no output, no temp file


def test_relative_missing_input_is_named_as_given(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, out, err = _run(
        ["nope.safetensors", "-o", "out.safetensors", "--sparsity", "0.5"], capsys
    )
    assert (code, out, err) == (2, "", "slimgrad prune: error: nope.safetensors: no such file\n")


def test_failed_write_names_the_output_not_the_temporary_file(
    checkpoint, tmp_path, capsys, monkeypatch
):
    path, _ = checkpoint
    out_path = tmp_path / "out.safetensors"

    def refuse(src, dst):  # what a full disk or a vanished folder does at the rename
        raise OSError(28, "No space left on device", src)

    monkeypatch.setattr(st.os, "replace", refuse)
    code, out, err = _run([path, "-o", out_path, "--sparsity", "0.5"], capsys)
    assert (code, out) == (2, "")
    assert err == f"slimgrad prune: error: {out_path}: cannot write (No space left on device)\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.safetensors"]  # temp file removed


@pytest.mark.parametrize(
    "how",
    [["--sparsity", "0.5"], ["--sparsity", "0.5", "--global"], ["--nm", "2:4"]],
    ids=["magnitude", "global", "nm"],
)
def test_nan_weight_error_names_the_tensor(tmp_path, rng, capsys, how):
    tensors = {
        "layer.0.weight": rng.standard_normal((4, 8)).astype(np.float32),
        "layer.7.weight": rng.standard_normal((4, 8)).astype(np.float16),
    }
    tensors["layer.7.weight"][1, 3] = np.nan
    if how[0] == "--nm":  # a tensor --nm keeps unchanged (6 % 4) may hold NaN: first in file
        tensors = {"head.weight": np.full((3, 6), np.nan, np.float32), **tensors}
    path, out_path = tmp_path / "nan.safetensors", tmp_path / "out.safetensors"
    safetensors_numpy.save_file(tensors, str(path))
    code, out, err = _run([path, "-o", out_path, *how], capsys)
    assert (code, out) == (2, "")
    assert err == (
        "slimgrad prune: error: layer.7.weight: NaN at index (1, 3) (flat index 11); "
        "NaN weights have no magnitude to rank\n"
    )
    assert not out_path.exists()


@pytest.mark.parametrize(
    "dtype",
    [np.float16, ml_dtypes.bfloat16, np.float32, np.float64],
    ids=lambda d: np.dtype(d).name,
)
def test_zero_count_takes_both_signs(dtype, rng):
    """The report's zero count (on the bits of half-precision tensors) counts
    +0.0 and -0.0 and nothing else (denormals, infinities, NaN are not zero)."""
    from slimgrad.prune.cli import _zeros

    w = rng.standard_normal(10_001).astype(dtype)
    w[::3] = 0.0
    w[1::7] = -0.0
    w[2::11] = np.inf
    w[5::13] = np.nan
    w[4::17] = ml_dtypes.finfo(dtype).smallest_subnormal
    assert _zeros(w) == int(np.count_nonzero(w.astype(np.float64) == 0.0))


# -- model folders: one file or shards with an index ------------------------------------
def _sharded_folder(folder, tensors, shards=2):
    """A Hugging Face-like model folder: config, a tokenizer file, the tensors
    dealt round-robin into ``shards`` files and their index."""
    folder.mkdir()
    (folder / "config.json").write_text('{"model_type": "llama"}')
    (folder / "tokenizer.json").write_text('{"version": "1.0"}')
    names = list(tensors)
    weight_map = {}
    for k in range(shards):
        file = f"model-{k + 1:05d}-of-{shards:05d}.safetensors"
        part = {n: tensors[n] for n in names[k::shards]}
        st.write(
            str(folder / file), {n: st.to_entry(a, n) for n, a in part.items()}, {"format": "pt"}
        )
        weight_map.update(dict.fromkeys(part, file))
    size = sum(a.nbytes for a in tensors.values())
    index = {"metadata": {"total_size": size}, "weight_map": weight_map}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    return index


@pytest.mark.parametrize(
    "how", [["--sparsity", "0.6", "--global"], ["--nm", "2:4"], ["--sparsity", "0.3"]]
)
def test_sharded_folder_is_pruned_like_one_file(tmp_path, rng, capsys, how):
    """A sharded model folder gives a model folder with the same shards, the
    same index and the other files copied; each tensor is what pruning the
    same tensors in one file gives (--global ranks across the shards)."""
    tensors = {
        f"model.layers.{i}.{kind}.weight": rng.standard_normal((16, 24)).astype(dtype)
        for i in range(3)
        for kind, dtype in (("q_proj", ml_dtypes.bfloat16), ("up_proj", np.float32))
    }
    tensors["model.norm.weight"] = np.ones(24, np.float32)
    index = _sharded_folder(tmp_path / "model", tensors, shards=3)
    one = tmp_path / "one.safetensors"
    st.write(str(one), {n: st.to_entry(a, n) for n, a in tensors.items()}, {"format": "pt"})

    code, table_one, err = _run([one, "-o", tmp_path / "one-out.safetensors", *how], capsys)
    assert (code, err) == (0, "")
    code, table, err = _run([tmp_path / "model", "-o", tmp_path / "out", *how], capsys)
    assert (code, err) == (0, "")
    want, _ = st.read(str(tmp_path / "one-out.safetensors"))
    out = tmp_path / "out"
    assert sorted(p.name for p in out.iterdir()) == sorted(
        p.name for p in (tmp_path / "model").iterdir()
    )
    for file in ("config.json", "tokenizer.json"):
        assert (out / file).read_bytes() == (tmp_path / "model" / file).read_bytes()
    assert json.loads((out / "model.safetensors.index.json").read_text()) == index
    got = {}
    for file in sorted(set(index["weight_map"].values())):
        shard, meta = st.read(str(out / file))
        assert meta == {"format": "pt"}
        assert all(index["weight_map"][n] == file for n in shard)
        got.update(shard)
    assert sorted(got) == sorted(want)
    for name in want:
        assert bytes(got[name].data) == bytes(want[name].data), name
    # the same rows (in shard order), the same totals; the output path aside
    rows, rows_one = table.splitlines(), table_one.splitlines()
    assert sorted(rows[:-1]) == sorted(rows_one[:-1])
    assert rows[-1].split("wrote")[0] == rows_one[-1].split("wrote")[0]
    assert sum(bytes(got[n].data) != tensors[n].tobytes() for n in got) == 6  # pruned


@pytest.mark.parametrize(
    "index, message",
    [
        ("not json", "{index}: not a JSON index (Expecting value: line 1 column 1 (char 0))"),
        ('{"weight_map": []}', "{index}: expected an object with a non-empty weight_map"),
        (
            '{"weight_map": {"w": "../in.safetensors"}}',
            "{index}: weight_map['w']: expected a .safetensors file name in the folder, "
            "got '../in.safetensors'",
        ),
        (
            '{"weight_map": {"w": "model-2.safetensors"}}',
            "{index}: weight_map['w']: no shard {folder}/model-2.safetensors",
        ),
        (
            '{"weight_map": {"w": "a.safetensors", "v": "b.safetensors"}}',
            "{folder}/b.safetensors: tensor 'w' is also in another shard",
        ),
    ],
    ids=["not-json", "no-map", "path-outside", "missing-shard", "twice"],
)
def test_bad_index_is_one_line_and_nothing_is_written(tmp_path, capsys, index, message):
    folder = tmp_path / "model"
    folder.mkdir()
    for file in ("a.safetensors", "b.safetensors"):
        st.write(str(folder / file), {"w": st.to_entry(np.ones((4, 4), np.float32))}, None)
    st.write(
        str(tmp_path / "in.safetensors"), {"w": st.to_entry(np.ones((4, 4), np.float32))}, None
    )
    (folder / "model.safetensors.index.json").write_text(index)
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    code, out, err = _run([folder, "-o", tmp_path / "out", "--sparsity", "0.5"], capsys)
    names = {"index": folder / "model.safetensors.index.json", "folder": folder}
    assert (code, out, err) == (2, "", f"slimgrad prune: error: {message.format(**names)}\n")
    assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == before
