"""A minimal safetensors reader / writer that keeps every tensor's bytes.

The format: an 8-byte little-endian header length, a JSON header
``{name: {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {...}}``
and the tensors' bytes. Reading it directly (rather than through
``safetensors.numpy``) handles bfloat16 and float8 tensors, which NumPy
loaders reject, and lets tensors we do not touch be written back byte for
byte.
"""

from __future__ import annotations

import json
import math
import os
import struct
import tempfile

import numpy as np

FLOAT_DTYPES = {"F16": np.float16, "F32": np.float32, "F64": np.float64}
try:
    import ml_dtypes

    FLOAT_DTYPES["BF16"] = ml_dtypes.bfloat16
except ImportError:  # pragma: no cover - ml_dtypes is a dependency
    pass


class Entry:
    """One tensor: dtype code, shape and raw little-endian bytes."""

    def __init__(self, dtype: str, shape: list[int], data: bytes) -> None:
        self.dtype, self.shape, self.data = dtype, [int(s) for s in shape], data

    def array(self) -> np.ndarray:
        """A writable copy as an ndarray (float dtypes only)."""
        dt = np.dtype(FLOAT_DTYPES[self.dtype]).newbyteorder("<")
        return np.frombuffer(self.data, dtype=dt).reshape(self.shape).astype(dt.newbyteorder("="))


def read(path: str) -> tuple[dict[str, Entry], dict | None]:
    """(tensors in file order, metadata). ``ValueError`` for a malformed file."""
    with open(path, "rb") as f:
        blob = f.read()
    if len(blob) < 8:
        raise ValueError(f"{path}: not a safetensors file (too short)")
    (n,) = struct.unpack("<Q", blob[:8])
    if 8 + n > len(blob):
        raise ValueError(f"{path}: not a safetensors file (header length {n} beyond the end)")
    try:
        header = json.loads(blob[8:8 + n])
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: not a safetensors file (bad header: {e})") from None
    if not isinstance(header, dict):
        raise ValueError(f"{path}: not a safetensors file (header is not an object)")
    metadata = header.pop("__metadata__", None)
    body = memoryview(blob)[8 + n:]
    entries = []
    for name, info in header.items():
        try:
            begin, end = (int(v) for v in info["data_offsets"])
            entries.append((begin, end, name, str(info["dtype"]), [int(d) for d in info["shape"]]))
        except (KeyError, TypeError, ValueError):
            raise ValueError(f"{path}: not a safetensors file (bad entry {name!r})") from None
    tensors = {}
    for begin, end, name, dtype, shape in sorted(entries):
        if not 0 <= begin <= end <= len(body):
            raise ValueError(f"{path}: tensor {name!r} lies outside the file")
        tensors[name] = Entry(dtype, shape, bytes(body[begin:end]))
        expected = end - begin  # other dtypes are copied as they are
        if dtype in FLOAT_DTYPES:
            expected = np.dtype(FLOAT_DTYPES[dtype]).itemsize * math.prod(shape)
        if end - begin != expected:
            raise ValueError(f"{path}: tensor {name!r} has {end - begin} bytes, "
                             f"{dtype} {tuple(shape)} needs {expected}")
    return tensors, metadata


def write(path: str, tensors: dict[str, Entry], metadata: dict | None) -> None:
    """Write atomically: a temporary file in the same folder, then a rename."""
    header: dict = {}
    if metadata is not None:
        header["__metadata__"] = metadata
    offset = 0
    for name, e in tensors.items():
        header[name] = {"dtype": e.dtype, "shape": e.shape,
                        "data_offsets": [offset, offset + len(e.data)]}
        offset += len(e.data)
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)  # keeps the data 8-byte aligned
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".slimgrad-", suffix=".safetensors")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(struct.pack("<Q", len(raw)))
            f.write(raw)
            for e in tensors.values():
                f.write(e.data)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
