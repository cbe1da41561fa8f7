"""Checkpoints: ``slimgrad.save(path, **state)`` / ``slimgrad.load(path)``.

One safetensors file: every ndarray found in ``state`` (params, optimizer
state dicts, scheduler state...) is a tensor, and the structure around them
(dicts, lists, tuples, Python scalars, strings, None) is JSON in the
header's ``__metadata__["slimgrad"]``, with each array replaced by a
reference to its tensor. Any safetensors reader can read the tensors;
:func:`load` also rebuilds the structure.

Writes are atomic: the file is written to a temporary file in the same
directory, flushed to disk, then renamed over ``path`` (``os.replace``), so
a crash mid-write leaves the previous checkpoint intact.
"""

from __future__ import annotations

import json
import math
import os
import struct
import tempfile
from collections.abc import Mapping
from typing import Any

import numpy as np

__all__ = ["save", "load"]

_DTYPES = {
    "F64": np.dtype("<f8"),
    "F32": np.dtype("<f4"),
    "F16": np.dtype("<f2"),
    "I64": np.dtype("<i8"),
    "I32": np.dtype("<i4"),
    "I16": np.dtype("<i2"),
    "I8": np.dtype("i1"),
    "U64": np.dtype("<u8"),
    "U32": np.dtype("<u4"),
    "U16": np.dtype("<u2"),
    "U8": np.dtype("u1"),
    "BOOL": np.dtype("?"),
}
try:
    from ml_dtypes import bfloat16 as _bf16

    _DTYPES["BF16"] = np.dtype(_bf16)
except ImportError:  # pragma: no cover
    pass
_CODES = {dt: code for code, dt in _DTYPES.items()}
_KEY = "slimgrad"
_FORMAT = 1


def _code(a: np.ndarray, where: str) -> str:
    dt = a.dtype.newbyteorder("<") if a.dtype.byteorder == ">" else a.dtype
    code = _CODES.get(np.dtype(dt))
    if code is None:
        raise TypeError(f"{where}: cannot store dtype {a.dtype} in safetensors")
    return code


def _encode(obj: Any, where: str, tensors: dict[str, np.ndarray]) -> Any:
    """JSON-able tree; arrays go to `tensors` under their path."""
    if isinstance(obj, np.ndarray):
        name = where
        while name in tensors:
            name += "'"
        _code(obj, where)
        tensors[name] = obj
        return {"__tensor__": name}
    if isinstance(obj, Mapping):
        items = []
        for k, v in obj.items():
            if not isinstance(k, (str, int)) or isinstance(k, bool):
                raise TypeError(
                    f"{where}: dict keys must be str or int to be saved, got {type(k).__name__}"
                )
            items.append([k, _encode(v, f"{where}/{k}", tensors)])
        return {"__dict__": items}
    if isinstance(obj, (list, tuple)):
        enc = [_encode(v, f"{where}/{i}", tensors) for i, v in enumerate(obj)]
        return {"__tuple__": enc} if isinstance(obj, tuple) else enc
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        f = float(obj)
        return f if math.isfinite(f) else {"__float__": repr(f)}
    if obj is None or isinstance(obj, str):
        return obj
    raise TypeError(
        f"{where}: cannot save a {type(obj).__name__} "
        "(arrays, dicts, lists, tuples, scalars, str, None)"
    )


def _decode(obj: Any, tensors: dict[str, np.ndarray]) -> Any:
    if isinstance(obj, list):
        return [_decode(v, tensors) for v in obj]
    if isinstance(obj, dict):
        if "__tensor__" in obj:
            return tensors[obj["__tensor__"]]
        if "__dict__" in obj:
            return {k: _decode(v, tensors) for k, v in obj["__dict__"]}
        if "__tuple__" in obj:
            return tuple(_decode(v, tensors) for v in obj["__tuple__"])
        if "__float__" in obj:
            return float(obj["__float__"])
    return obj


def save(path: str | os.PathLike, **state: Any) -> None:
    """Write ``state`` to ``path`` as one safetensors file, atomically.

    Parameters
    ----------
    path
        Destination; replaced atomically if it exists.
    **state
        Anything built from ndarrays (any dtype safetensors knows, incl.
        bfloat16), dicts with str/int keys, lists, tuples, Python/NumPy
        scalars, str and None, e.g.
        ``save("ckpt.safetensors", params=params, optimizer=opt.state_dict(), epoch=3)``.

    Raises
    ------
    TypeError
        An object or dtype that cannot be stored (nothing is written).
    OSError
        The directory is not writable (the previous file is untouched).
    """
    tensors: dict[str, np.ndarray] = {}
    tree = _encode(dict(state), "", tensors)
    header: dict[str, Any] = {"__metadata__": {_KEY: json.dumps({"format": _FORMAT, "tree": tree})}}
    offset = 0
    arrays = []
    for name, a in tensors.items():
        if not a.flags.c_contiguous:  # (not ascontiguousarray: it turns 0-d into 1-d)
            a = a.copy(order="C")
        if a.dtype.byteorder == ">":
            a = a.astype(a.dtype.newbyteorder("<"))
        header[name] = {
            "dtype": _code(a, name),
            "shape": list(a.shape),
            "data_offsets": [offset, offset + a.nbytes],
        }
        offset += a.nbytes
        arrays.append(a)
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)  # the data starts 8-byte aligned
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".safetensors", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(struct.pack("<Q", len(raw)))
            f.write(raw)
            for a in arrays:
                f.write(memoryview(a.reshape(-1).view(np.uint8)))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    try:  # make the rename itself durable
        dfd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:
        pass


def load(path: str | os.PathLike) -> dict[str, Any]:
    """Read a checkpoint written by :func:`save`: the same structure, arrays as writable copies.

    A safetensors file written by another tool loads as ``{name: ndarray}``.

    Raises
    ------
    OSError
        The file cannot be read.
    ValueError
        The file is not a valid safetensors file (truncated, bad header).
    """
    with open(path, "rb") as f:
        data = f.read()
    if len(data) < 8:
        raise ValueError(f"{os.fspath(path)}: not a safetensors file (too short)")
    (n,) = struct.unpack("<Q", data[:8])
    if n > len(data) - 8:
        raise ValueError(
            f"{os.fspath(path)}: not a safetensors file (header length {n} beyond the end)"
        )
    try:
        header = json.loads(data[8 : 8 + n])
    except ValueError as e:
        raise ValueError(f"{os.fspath(path)}: bad safetensors header: {e}") from None
    body = memoryview(data)[8 + n :]
    meta = header.pop("__metadata__", None) or {}
    tensors = {}
    for name, info in header.items():
        dt = _DTYPES.get(info.get("dtype"))
        if dt is None:
            raise ValueError(
                f"{os.fspath(path)}: tensor {name!r} has unsupported dtype {info.get('dtype')!r}"
            )
        b, e = info["data_offsets"]
        shape = tuple(info["shape"])
        if not 0 <= b <= e <= len(body) or e - b != dt.itemsize * math.prod(shape):
            raise ValueError(f"{os.fspath(path)}: tensor {name!r} has bad data offsets {[b, e]}")
        tensors[name] = (
            np.frombuffer(body[b:e], dtype=dt)
            .reshape(shape)
            .astype(dt.newbyteorder("="), copy=True)
        )
    if _KEY not in meta:
        return tensors
    tree = json.loads(meta[_KEY])
    return _decode(tree["tree"], tensors)
