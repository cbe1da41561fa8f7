"""Issue 17: a short, fixed-seed fuzz run over the file readers (docs/reliability.md).

Valid files (a checkpoint, a quantized file, a plain file) are mutated by
hypothesis: bytes flipped, inserted or cut anywhere, or one header field
replaced by an arbitrary JSON value. ``slimgrad.load`` and ``quant.load``
must load the result or raise ``ValueError``; the CLIs must end with status
0, or 2 and one line on stderr (no traceback), writing nothing on error.
The budget is ``SLIMGRAD_FUZZ_EXAMPLES`` examples per test (default 40; the
sanitizer job in ``.ci/run`` uses more), derandomized so every run is the same.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import struct
import tempfile

import numpy as np
import slimgrad
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as stg
from slimgrad import _safetensors as st
from slimgrad import quant
from slimgrad.cli import main as cli_main

EXAMPLES = int(os.environ.get("SLIMGRAD_FUZZ_EXAMPLES", "40"))
FUZZ = settings(
    max_examples=EXAMPLES,
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),
)


def _read(p: str) -> bytes:
    with open(p, "rb") as f:
        return f.read()


def _seeds() -> list[bytes]:
    rng = np.random.default_rng(0)
    w = rng.standard_normal((4, 32)).astype(np.float32)
    out = []
    with tempfile.TemporaryDirectory() as d:
        p = os.path.join(d, "f.safetensors")
        slimgrad.save(
            p,
            params={"w": w, "b": np.arange(3, dtype=np.int64)},
            step=3,
            lr=float("inf"),
            names=("a", None),
        )
        out.append(_read(p))
        quant.save(
            p,
            {
                "w": quant.quantize(w, 4, granularity="group", group_size=8, symmetric=False),
                "v": quant.quantize(w, 8),
                "b": np.ones(2, np.float16),
            },
        )
        out.append(_read(p))
        st.write(p, {"w": st.to_entry(w), "h": st.to_entry(w.astype(np.float16))}, {"k": "v"})
        out.append(_read(p))
    return out


SEEDS = _seeds()

_json = stg.recursive(
    stg.none()
    | stg.booleans()
    | stg.integers(-(2**70), 2**70)
    | stg.floats(allow_nan=False)
    | stg.text(max_size=8),
    lambda inner: (
        stg.lists(inner, max_size=4) | stg.dictionaries(stg.text(max_size=6), inner, max_size=4)
    ),
    max_leaves=12,
)


@stg.composite
def byte_mutation(draw) -> bytes:
    blob = bytearray(draw(stg.sampled_from(SEEDS)))
    for _ in range(draw(stg.integers(1, 4))):
        op = draw(stg.sampled_from(["flip", "insert", "cut", "truncate", "length"]))
        i = draw(stg.integers(0, max(len(blob) - 1, 0)))
        if op == "flip" and blob:
            blob[i] ^= 1 << draw(stg.integers(0, 7))
        elif op == "insert":
            blob[i:i] = draw(stg.binary(min_size=1, max_size=8))
        elif op == "cut":
            del blob[i : i + draw(stg.integers(1, 16))]
        elif op == "truncate":
            del blob[i:]
        elif op == "length" and len(blob) >= 8:
            n = draw(stg.integers(0, 2**64 - 1) | stg.integers(0, 4096))
            blob[:8] = struct.pack("<Q", n)
    return bytes(blob)


@stg.composite
def header_mutation(draw) -> bytes:
    blob = draw(stg.sampled_from(SEEDS))
    (n,) = struct.unpack("<Q", blob[:8])
    header, data = json.loads(blob[8 : 8 + n]), blob[8 + n :]
    keys = sorted(header)
    name = draw(stg.sampled_from(keys))
    entry = header[name]
    if name == "__metadata__":
        key = draw(stg.sampled_from(sorted(entry)))
        value = entry[key]
        if draw(stg.booleans()):  # mutate inside the JSON string slimgrad keeps there
            try:
                inner = json.loads(value)
                path_value = draw(_json)
                if isinstance(inner, dict) and inner:
                    inner[draw(stg.sampled_from(sorted(inner)))] = path_value
                entry[key] = json.dumps(inner)
            except ValueError:
                entry[key] = draw(_json)
        else:
            entry[key] = draw(_json)
    else:
        field = draw(stg.sampled_from(["dtype", "shape", "data_offsets", None]))
        if field is None:
            header[name] = draw(_json)
        elif field == "shape" and draw(stg.booleans()):
            entry["shape"] = [draw(stg.integers(-3, 2**64)) for _ in entry["shape"]]
        else:
            entry[field] = draw(_json)
    raw = json.dumps(header).encode()
    return struct.pack("<Q", len(raw)) + raw + data


def _check_all_readers(blob: bytes) -> None:
    with tempfile.TemporaryDirectory() as d:
        p = os.path.join(d, "in.safetensors")
        with open(p, "wb") as f:
            f.write(blob)
        for load in (slimgrad.load, quant.load):
            try:
                load(p)
            except ValueError as e:
                assert "in.safetensors" in str(e)
        for cmd in (["quantize", p], ["prune", p, "--sparsity", "0.5"]):
            out = os.path.join(d, "out.safetensors")
            err = io.StringIO()
            with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
                code = cli_main([*cmd, "-o", out])
            assert code in (0, 2), (cmd, code, err.getvalue())
            if code == 2:
                assert err.getvalue().count("\n") == 1 and not os.path.exists(out), err.getvalue()
            elif os.path.exists(out):
                os.unlink(out)
            assert [n for n in os.listdir(d) if st.TMP_TAG in n] == []


@FUZZ
@given(byte_mutation())
def test_fuzz_bytes(blob):
    _check_all_readers(blob)


@FUZZ
@given(header_mutation())
def test_fuzz_header_fields(blob):
    _check_all_readers(blob)
