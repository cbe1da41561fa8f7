"""Issue 17: malformed files, temporary files, kills, modes (docs/reliability.md).

Every malformed file raises ``ValueError`` naming the file from
``slimgrad.load`` and ``quant.load``, and ends the CLIs with one line on
stderr and exit status 2, with nothing written. Writes leave no temporary
file after an exception, clean up the ones of killed writers, and give the
mode ``open(path, "w")`` would.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import slimgrad
from reliability_corpus import checkpoint_cases, format_cases, quant_cases
from slimgrad import _safetensors as st
from slimgrad import quant
from slimgrad.cli import main as cli_main

FORMAT = format_cases()
CHECKPOINT = checkpoint_cases()
QUANT = quant_cases()
PYTHON_PATH = str(Path(slimgrad.__file__).parent.parent)


def _write(tmp_path: Path, blob: bytes) -> Path:
    p = tmp_path / "bad.safetensors"
    p.write_bytes(blob)
    return p


def _stray(folder: Path) -> list[str]:
    return sorted(n for n in os.listdir(folder) if st.TMP_TAG in n)


# -- malformed files -------------------------------------------------------------------
@pytest.mark.parametrize(
    "label, blob", FORMAT + CHECKPOINT, ids=[c[0] for c in FORMAT + CHECKPOINT]
)
def test_checkpoint_load_refuses_malformed_file(tmp_path, label, blob):
    p = _write(tmp_path, blob)
    with pytest.raises(ValueError, match="bad.safetensors"):
        slimgrad.load(p)


@pytest.mark.parametrize("label, blob", FORMAT + QUANT, ids=[c[0] for c in FORMAT + QUANT])
def test_quant_load_refuses_malformed_file(tmp_path, label, blob):
    p = _write(tmp_path, blob)
    with pytest.raises(ValueError, match="bad.safetensors"):
        quant.load(p)


@pytest.mark.parametrize("command", ["quantize", "prune"])
@pytest.mark.parametrize("label, blob", FORMAT, ids=[c[0] for c in FORMAT])
def test_cli_refuses_malformed_file_in_one_line(tmp_path, capsys, command, label, blob):
    p = _write(tmp_path, blob)
    out = tmp_path / "out.safetensors"
    extra = ["--sparsity", "0.5"] if command == "prune" else []
    assert cli_main([command, str(p), "-o", str(out), *extra]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "error:" in err and "Traceback" not in err
    assert not out.exists() and _stray(tmp_path) == []
    assert p.read_bytes() == blob


def test_good_corpus_base_loads(tmp_path):
    """The corpus breaks a file that is otherwise valid (so each case tests one thing)."""
    from reliability_corpus import DATA, A, B, good_header, pack

    p = _write(tmp_path, pack(good_header(), DATA))
    got = slimgrad.load(p)
    np.testing.assert_array_equal(got["a"], A)
    np.testing.assert_array_equal(got["b"], B)
    assert set(quant.load(p)) == {"a", "b"}


def test_wrapped_group_size_is_refused_never_read(tmp_path):
    """group_size near 2**64 made ceil(cols / group_size) wrap to 0 in C++: an
    empty scale passed the size check and dequantize read past it."""
    codes = np.zeros((2, 4), np.int8)

    def int8_groups(n_groups, group_size):
        # 8-bit symmetric group codes of a (2, 4) tensor, scales (2, n_groups)
        scale, zp = np.ones((2, n_groups), np.float32), np.zeros((2, n_groups), np.int32)
        return quant.QuantizedTensor(codes, scale, zp, (2, 4), 8, True, "group", 0, group_size)

    with pytest.raises(ValueError, match="group_size"):
        int8_groups(0, 2**64 - 1)
    # the C++ side re-checks on its own: the wrapped count is gone, huge sizes refused
    spec = int8_groups(1, 8)._core_spec()
    out = np.empty((2, 4), np.float32)
    for g in (2**64 - 1, 2**63, 2**58):
        with pytest.raises(ValueError, match="group_size|scale"):
            slimgrad._core.quant.dequantize(
                codes, {**spec, "group_size": g}, np.ones(0, np.float32), np.zeros(0, np.int32), out
            )
    x = np.ones((3, 4), np.float32)
    y = np.empty((3, 2), np.float32)
    with pytest.raises(ValueError, match="group_size|scale"):
        slimgrad._core.quant.matmul(
            x,
            codes,
            {**spec, "group_size": 2**64 - 2},
            np.ones(0, np.float32),
            np.zeros(0, np.int32),
            y,
        )
    with pytest.raises(ValueError, match="spec\\['bits'\\]"):
        slimgrad._core.quant.dequantize(
            codes, {**spec, "bits": "8"}, np.ones(2, np.float32), np.zeros(2, np.int32), out
        )


def test_huge_group_size_that_fits_still_works():
    """A group size larger than the row is one group per row, as before."""
    w = np.random.default_rng(0).standard_normal((3, 10)).astype(np.float32)
    a = quant.quantize(w, 8, granularity="group", group_size=10)
    b = quant.quantize(w, 8, granularity="group", group_size=2**40)
    np.testing.assert_array_equal(a.dequantize(), b.dequantize())


# -- temporary files -------------------------------------------------------------------
def test_no_temporary_file_after_an_exception(tmp_path, monkeypatch):
    target = tmp_path / "ck.safetensors"
    slimgrad.save(target, w=np.ones(3, np.float32))
    before = target.read_bytes()

    def boom(*a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError, match="ck.safetensors"):
        slimgrad.save(target, w=np.zeros(5, np.float32))
    with pytest.raises(OSError, match="q.safetensors"):
        quant.save(tmp_path / "q.safetensors", {"w": np.zeros(5, np.float32)})
    monkeypatch.undo()

    def interrupted(tmp):
        Path(tmp).write_bytes(b"partial")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        st.atomic(target, interrupted)
    assert _stray(tmp_path) == [] and target.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["ck.safetensors"]


def test_temporary_name_is_recognisable_and_next_to_target(tmp_path):
    seen = []
    st.atomic(
        tmp_path / "model.safetensors", lambda tmp: (seen.append(tmp), Path(tmp).write_bytes(b"x"))
    )
    name = os.path.basename(seen[0])
    assert os.path.dirname(seen[0]) == str(tmp_path)
    assert name.startswith(".model.safetensors.slimgrad-tmp-") and f"-{os.getpid()}-" in name


def test_stale_temporary_files_are_cleaned_by_the_next_write(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    target = tmp_path / "ck.safetensors"
    stale = tmp_path / f".ck.safetensors{st.TMP_TAG}{dead.pid}-0123abcd"
    alive = tmp_path / f".ck.safetensors{st.TMP_TAG}1-0123abcd"  # pid 1 always runs
    other = tmp_path / f".other.safetensors{st.TMP_TAG}{dead.pid}-0123abcd"
    for p in (stale, alive, other):
        p.write_bytes(b"junk")
    slimgrad.save(target, w=np.ones(2, np.float32))
    assert not stale.exists() and alive.exists() and other.exists()


def test_deferred_tensors_are_made_in_order_and_a_failure_leaves_no_file(tmp_path):
    """A writer's deferred tensors (the prune command's pruned copies) are made
    one at a time, in order, while the file is written, and give the same file
    as eager entries; a make() that raises or makes the wrong byte count
    leaves the target as it was and no temporary file."""
    a, b = np.arange(6, dtype=np.float32).reshape(2, 3), np.ones(5, np.float16)
    made = []

    def deferred(name, arr):
        def make():
            made.append(name)
            return st.to_entry(arr).data

        return st.Deferred(st.code_of(arr.dtype), list(arr.shape), arr.nbytes, make)

    eager, lazy = tmp_path / "eager.safetensors", tmp_path / "lazy.safetensors"
    st.write(eager, {"a": st.to_entry(a), "b": st.to_entry(b)}, {"k": "v"})
    st.write(lazy, {"a": deferred("a", a), "b": deferred("b", b)}, {"k": "v"})
    assert made == ["a", "b"] and lazy.read_bytes() == eager.read_bytes()

    before = lazy.read_bytes()

    def fails():
        raise ValueError("w: NaN at index (1,)")

    short = st.Deferred("F32", [2, 3], a.nbytes, lambda: b"\0" * 8)
    for entry, message in [
        (st.Deferred("F32", [2, 3], a.nbytes, fails), r"w: NaN at index \(1,\)"),
        (short, "b: made 8 bytes, expected 24"),
    ]:
        with pytest.raises(ValueError, match=message):
            st.write(lazy, {"a": st.to_entry(a), "b": entry}, None)
        assert lazy.read_bytes() == before and _stray(tmp_path) == []


def test_output_mode_follows_umask(tmp_path):
    old = os.umask(0o027)
    try:
        slimgrad.save(tmp_path / "a.safetensors", w=np.ones(2, np.float32))
        quant.save(tmp_path / "b.safetensors", {"w": np.ones(2, np.float32)})
        quant.save_gguf(tmp_path / "c.gguf", {"w": np.ones((2, 32), np.float32)})
        with open(tmp_path / "ref", "w"):
            pass
        want = os.stat(tmp_path / "ref").st_mode & 0o777
        assert want == 0o640
        for n in ("a.safetensors", "b.safetensors", "c.gguf"):
            assert os.stat(tmp_path / n).st_mode & 0o777 == want, n
        os.chmod(tmp_path / "a.safetensors", 0o600)  # an existing file keeps its mode
        slimgrad.save(tmp_path / "a.safetensors", w=np.zeros(2, np.float32))
        assert os.stat(tmp_path / "a.safetensors").st_mode & 0o777 == 0o600
    finally:
        os.umask(old)


_WRITER = """
import sys, numpy as np
sys.path.insert(0, {path!r})
import slimgrad
from slimgrad import quant
from slimgrad.cli import main
kind, target = sys.argv[1], sys.argv[2]
big = np.arange(6_000_000, dtype=np.float32).reshape(3000, 2000)
while True:
    if kind == "save":
        slimgrad.save(target, w=big)
    elif kind == "quant":
        quant.save(target, {{"w": big}})
    else:
        main(["quantize", sys.argv[3], "-o", target, "--bits", "8"])
"""


def _kill_mid_write(tmp_path: Path, kind: str, target: Path, source: Path | None) -> None:
    prog = _WRITER.format(path=PYTHON_PATH)
    args = [sys.executable, "-c", prog, kind, str(target)] + ([str(source)] if source else [])
    child = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while not _stray(tmp_path):  # a write is under way
            assert child.poll() is None and time.monotonic() < deadline
            time.sleep(0.0005)
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.kill()
        child.wait()


@pytest.mark.parametrize("kind", ["save", "quant", "cli"])
def test_kill_9_mid_write_keeps_target_and_next_write_cleans_up(tmp_path, kind):
    target = tmp_path / "out.safetensors"
    source = None
    if kind == "cli":
        source = tmp_path / "in.safetensors"
        st.write(source, {"w": st.to_entry(np.ones((2000, 2000), np.float32))}, None)
    _kill_mid_write(tmp_path, kind, target, source)
    assert _stray(tmp_path), "the kill should leave the temporary file behind"
    if target.exists():  # a completed earlier write: intact
        (slimgrad.load if kind == "save" else quant.load)(target)
    # the next write to the same target removes the dead writer's file
    if kind == "save":
        slimgrad.save(target, w=np.ones(2, np.float32))
    elif kind == "quant":
        quant.save(target, {"w": np.ones(2, np.float32)})
    else:
        assert cli_main(["quantize", str(source), "-o", str(target)]) == 0
    assert _stray(tmp_path) == []
