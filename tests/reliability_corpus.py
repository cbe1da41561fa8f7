"""Malformed safetensors files for the loader tests, the sanitizer job and the fuzz run.

``format_cases()`` breaks the container (every loader must refuse them);
``checkpoint_cases()`` and ``quant_cases()`` are valid containers whose
slimgrad metadata is wrong (``slimgrad.load`` / ``quant.load`` must refuse
them). Each case is ``(label, bytes)``.
"""

from __future__ import annotations

import json
import struct

import numpy as np


def pack(header: object, data: bytes = b"", raw_header: bytes | None = None) -> bytes:
    """A safetensors file from a header (any JSON value) and a data area."""
    raw = raw_header if raw_header is not None else json.dumps(header).encode()
    return struct.pack("<Q", len(raw)) + raw + data


A = np.arange(4, dtype=np.float32).reshape(2, 2)
B = np.array([7, 8, 9], np.uint8)
DATA = A.tobytes() + B.tobytes()


def good_header() -> dict:
    return {
        "__metadata__": {"k": "v"},
        "a": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 16]},
        "b": {"dtype": "U8", "shape": [3], "data_offsets": [16, 19]},
    }


def with_entry(name: str, **changes: object) -> bytes:
    h = good_header()
    h[name] = {**h[name], **changes}
    return pack(h, DATA)


def format_cases() -> list[tuple[str, bytes]]:
    h = good_header()
    cases = [
        ("empty file", b""),
        ("7 bytes", b"\x01" * 7),
        ("header length beyond the end", struct.pack("<Q", 1000) + b"{}"),
        ("header length 2**63", struct.pack("<Q", 2**63) + b"{}"),
        ("header length 2**64-1", struct.pack("<Q", 2**64 - 1) + b"{}"),
        ("header not JSON", pack(None, DATA, b"{not json")),
        ("header not UTF-8", pack(None, DATA, b'{"\xff\xfe": 1}')),
        ("header a JSON list", pack([1, 2, 3])),
        ("header a JSON string", pack("hello")),
        ("header nested 100000 deep", pack(None, b"", b"[" * 100000 + b"]" * 100000)),
        (
            "metadata nested deep",
            pack(None, b"", b'{"__metadata__":' + b"[" * 5000 + b"]" * 5000 + b"}"),
        ),
        ("metadata a list", pack({**h, "__metadata__": ["x"]}, DATA)),
        ("metadata value an int", pack({**h, "__metadata__": {"k": 1}}, DATA)),
        ("entry a list", pack({**h, "a": [1, 2]}, DATA)),
        ("entry missing shape", pack({**h, "a": {"dtype": "F32", "data_offsets": [0, 16]}}, DATA)),
        ("entry extra key", with_entry("a", extra=1)),
        ("dtype unknown", with_entry("a", dtype="F31")),
        ("dtype an int", with_entry("a", dtype=5)),
        ("dtype null", with_entry("a", dtype=None)),
        ("shape a string", with_entry("a", shape="2,2")),
        ("shape an int", with_entry("a", shape=4)),
        ("shape negative", with_entry("a", shape=[-2, -2])),
        ("shape fractional", with_entry("a", shape=[2.0, 2])),
        ("shape strings", with_entry("a", shape=["2", "2"])),
        ("shape bools", with_entry("a", shape=[True, 4])),
        ("shape 2**70", with_entry("a", shape=[2**70, 0])),
        ("shape 100 dims", with_entry("a", shape=[1] * 100)),
        ("shape nested", with_entry("a", shape=[[2], [2]])),
        ("offsets strings", with_entry("a", data_offsets=["0", "16"])),
        ("offsets floats", with_entry("a", data_offsets=[0.0, 16.0])),
        ("offsets three", with_entry("a", data_offsets=[0, 8, 16])),
        ("offsets one", with_entry("a", data_offsets=[16])),
        ("offsets negative", with_entry("a", data_offsets=[-16, 0])),
        ("offsets reversed", with_entry("a", data_offsets=[16, 0])),
        ("offsets 2**64", with_entry("a", data_offsets=[2**64, 2**64 + 16])),
        ("offsets null", with_entry("a", data_offsets=None)),
        ("offsets overlap", pack({**h, "b": {**h["b"], "data_offsets": [13, 16]}}, DATA[:16])),
        (
            "offsets identical",
            pack(
                {**h, "c": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 16]}},
                DATA,
            ),
        ),
        (
            "offsets leave a gap",
            pack({**h, "b": {**h["b"], "data_offsets": [17, 20]}}, DATA + b"x"),
        ),
        ("data beyond the end", pack(h, DATA[:-1])),
        ("trailing garbage", pack(h, DATA + b"garbage!")),
        (
            "U8 shape 2**40 in 8 bytes",
            pack({"x": {"dtype": "U8", "shape": [2**40], "data_offsets": [0, 8]}}, b"\0" * 8),
        ),
        ("F32 shape mismatch", with_entry("a", shape=[3, 2])),
        (
            "F4 odd bit count",
            pack({"x": {"dtype": "F4", "shape": [3], "data_offsets": [0, 1]}}, b"\0"),
        ),
        (
            "duplicate names",
            pack(
                None,
                DATA,
                b'{"a":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]},'
                b'"a":{"dtype":"U8","shape":[3],"data_offsets":[16,19]}}',
            ),
        ),
        ("NaN in header", pack(None, DATA, json.dumps(h).replace("16]", "NaN]", 1).encode())),
        (
            "Infinity in header",
            pack(None, DATA, json.dumps(h).replace("[2, 2]", "[Infinity, 2]", 1).encode()),
        ),
        (
            "number of 5000 digits",
            pack(
                None, DATA, json.dumps(h).replace("[2, 2]", "[" + "9" * 5000 + ", 2]", 1).encode()
            ),
        ),
        ("empty name", pack({"": h["a"], "b": h["b"]}, DATA)),
        ("header truncated JSON", pack(None, DATA, json.dumps(h).encode()[:-3])),
    ]
    return cases


def checkpoint_cases() -> list[tuple[str, bytes]]:
    """Valid containers with a broken ``slimgrad`` checkpoint tree."""

    def ck(tree_json: str) -> bytes:
        return pack(
            {
                "__metadata__": {"slimgrad": tree_json},
                "x": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 16]},
            },
            A.tobytes(),
        )

    def tree(t: object, fmt: int = 1) -> bytes:
        return ck(json.dumps({"format": fmt, "tree": t}))

    return [
        ("tree not JSON", ck("{oops")),
        ("tree a list", ck("[1, 2]")),
        ("tree without format", ck(json.dumps({"tree": {"__dict__": []}}))),
        ("tree format 99", tree({"__dict__": []}, 99)),
        (
            "tree nested 100000 deep",
            ck('{"format": 1, "tree": ' + "[" * 100000 + "]" * 100000 + "}"),
        ),
        (
            "tree nested 5000 dicts",
            ck('{"format": 1, "tree": ' + '{"__tuple__": [' * 5000 + "]}" * 5000 + "}"),
        ),
        ("tensor missing", tree({"__dict__": [["w", {"__tensor__": "nope"}]]})),
        ("tensor name an int", tree({"__dict__": [["w", {"__tensor__": 3}]]})),
        ("tensor name a list", tree({"__dict__": [["w", {"__tensor__": ["x"]}]]})),
        (
            "tensor used twice",
            tree({"__dict__": [["w", {"__tensor__": "x"}], ["v", {"__tensor__": "x"}]]}),
        ),
        ("dict not a list", tree({"__dict__": {"w": 1}})),
        ("dict pair of 3", tree({"__dict__": [["w", 1, 2]]})),
        ("dict key a list", tree({"__dict__": [[["w"], 1]]})),
        ("dict key null", tree({"__dict__": [[None, 1]]})),
        ("tuple not a list", tree({"__tuple__": 5})),
        ("float bogus", tree({"__dict__": [["f", {"__float__": "1e999999x"}]]})),
        ("float an int", tree({"__dict__": [["f", {"__float__": 5}]]})),
        ("unknown tag", tree({"__dict__": [["f", {"__set__": [1]}]]})),
        ("two tags", tree({"__tensor__": "x", "__dict__": []})),
        ("tree a tensor", tree({"__tensor__": "x"})),
        ("tree an int", tree(5)),
    ]


def quant_cases() -> list[tuple[str, bytes]]:
    """Valid containers with broken ``slimgrad.quant`` metadata."""
    codes = np.zeros((2, 4), np.int8)
    scale = np.ones(2, np.float32)

    def q(spec: object, arrays: dict | None = None, raw_meta: str | None = None) -> bytes:
        arrays = arrays if arrays is not None else {"w": codes, "w.scale": scale}
        header: dict = {}
        data = b""
        codes_of = {"int8": "I8", "uint8": "U8", "float32": "F32", "int32": "I32", "float64": "F64"}
        for name, a in arrays.items():
            header[name] = {
                "dtype": codes_of[a.dtype.name],
                "shape": list(a.shape),
                "data_offsets": [len(data), len(data) + a.nbytes],
            }
            data += a.tobytes()
        meta = raw_meta if raw_meta is not None else json.dumps({"version": 1, "tensors": spec})
        header["__metadata__"] = {"slimgrad.quant": meta}
        return pack(header, data)

    good = {
        "bits": 8,
        "symmetric": True,
        "granularity": "channel",
        "axis": 0,
        "group_size": 128,
        "shape": [2, 4],
        "dtype": "float32",
    }

    def spec(**changes: object) -> dict:
        return {"w": {**good, **changes}}

    group = {**good, "granularity": "group", "group_size": 2**64 - 1}
    return [
        ("meta not JSON", q(None, raw_meta="{oops")),
        ("meta nested deep", q(None, raw_meta='{"tensors": ' + "[" * 5000 + "]" * 5000 + "}")),
        ("tensors a list", q([1])),
        ("spec a list", q({"w": [8]})),
        ("bits a string", q(spec(bits="8"))),
        ("bits 99", q(spec(bits=99))),
        ("bits 1", q(spec(bits=1))),
        ("bits a float", q(spec(bits=8.0))),
        ("symmetric a string", q(spec(symmetric="yes"))),
        ("granularity unknown", q(spec(granularity="row"))),
        ("granularity an int", q(spec(granularity=1))),
        ("axis 5", q(spec(axis=5))),
        ("axis a string", q(spec(axis="0"))),
        ("group_size 0", q(spec(granularity="group", group_size=0))),
        ("group_size -1", q(spec(granularity="group", group_size=-1))),
        (
            "group_size 2**64-1, one scale per row",
            q({"w": group}, {"w": codes, "w.scale": np.ones((2, 1), np.float32)}),
        ),
        (
            "group_size 2**64-1, empty scale",
            q({"w": group}, {"w": codes, "w.scale": np.ones((2, 0), np.float32)}),
        ),
        (
            "group_size 2**64+1",
            q(
                {"w": {**group, "group_size": 2**64 + 1}},
                {"w": codes, "w.scale": np.ones((2, 1), np.float32)},
            ),
        ),
        ("shape a string", q(spec(shape="2,4"))),
        ("shape negative", q(spec(shape=[-2, -4]))),
        ("shape fractional", q(spec(shape=[2.5, 4]))),
        ("shape too large for data", q(spec(shape=[2, 400]))),
        ("shape 2**62", q(spec(shape=[2**62, 4]))),
        ("shape empty", q(spec(shape=[]))),
        ("dtype an int", q(spec(dtype=3))),
        ("dtype not a float", q(spec(dtype="int8"))),
        ("dtype unknown", q(spec(dtype="float99"))),
        ("scale missing", q(spec(), {"w": codes})),
        ("codes missing", q(spec(), {"w.scale": scale})),
        ("scale float64", q(spec(), {"w": codes, "w.scale": scale.astype(np.float64)})),
        ("scale wrong length", q(spec(), {"w": codes, "w.scale": np.ones(3, np.float32)})),
        ("codes wrong dtype", q(spec(), {"w": codes.astype(np.float32), "w.scale": scale})),
        ("codes unsigned for symmetric", q(spec(), {"w": codes.view(np.uint8), "w.scale": scale})),
        (
            "zero_point float",
            q(
                spec(symmetric=False),
                {"w": codes.view(np.uint8), "w.scale": scale, "w.zero_point": scale},
            ),
        ),
        (
            "4-bit codes too short",
            q(spec(bits=4), {"w": np.zeros((2, 1), np.uint8), "w.scale": scale}),
        ),
    ]


def counts() -> dict[str, dict[str, int]]:
    """Per reader: files tried, clean ValueError naming the file, anything else."""
    import contextlib
    import io
    import os
    import tempfile

    import slimgrad
    from slimgrad import quant
    from slimgrad.cli import main

    out: dict[str, dict[str, int]] = {}
    plan = {
        "slimgrad.load": (slimgrad.load, format_cases() + checkpoint_cases()),
        "quant.load": (quant.load, format_cases() + quant_cases()),
    }
    with tempfile.TemporaryDirectory() as d:
        p = os.path.join(d, "bad.safetensors")
        for reader, (fn, cases) in plan.items():
            c = out.setdefault(reader, {"tried": 0, "ValueError": 0, "other": 0})
            for label, blob in cases:
                with open(p, "wb") as f:
                    f.write(blob)
                c["tried"] += 1
                try:
                    fn(p)
                    c["other"] += 1
                    print(f"  {reader}: {label}: accepted")
                except ValueError as e:
                    ok = "bad.safetensors" in str(e)
                    c["ValueError" if ok else "other"] += 1
                except Exception as e:  # noqa: BLE001
                    c["other"] += 1
                    print(f"  {reader}: {label}: {type(e).__name__}: {str(e)[:80]}")
        for cmd in ("quantize", "prune"):
            c = out.setdefault(f"slimgrad {cmd}", {"tried": 0, "exit 2, one line": 0, "other": 0})
            for label, blob in format_cases():
                with open(p, "wb") as f:
                    f.write(blob)
                o = os.path.join(d, "out.safetensors")
                err = io.StringIO()
                c["tried"] += 1
                try:
                    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
                        code = main(
                            [cmd, p, "-o", o] + (["--sparsity", "0.5"] if cmd == "prune" else [])
                        )
                except BaseException as e:  # noqa: BLE001
                    code = type(e).__name__
                clean = code == 2 and err.getvalue().count("\n") == 1 and not os.path.exists(o)
                c["exit 2, one line" if clean else "other"] += 1
                if not clean:
                    print(f"  {cmd}: {label}: {code} {err.getvalue()[-80:]!r}")
                if os.path.exists(o):
                    os.unlink(o)
    return out


if __name__ == "__main__":
    import warnings

    warnings.simplefilter("ignore")
    results = counts()
    for reader, c in results.items():
        print(reader, c)
    raise SystemExit(1 if any(c["other"] for c in results.values()) else 0)
