"""The package's one safetensors reader / writer (checkpoints, prune and quant files).

The format: an 8-byte little-endian header length, a JSON header
``{name: {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {...}}``
and the tensors' bytes. Reading it directly (rather than through
``safetensors.numpy``) handles bfloat16 and float8 tensors, which the
``safetensors`` package's NumPy loader rejects, and lets tensors we do not
touch be written back byte for byte. Writes are atomic and durable: a
temporary file in the same folder, flushed to disk, renamed over the target.
"""

from __future__ import annotations

import json
import math
import os
import struct
import tempfile

import ml_dtypes
import numpy as np

FLOAT_DTYPES = {"F16": np.float16, "F32": np.float32, "F64": np.float64, "BF16": ml_dtypes.bfloat16}

# every safetensors dtype code NumPy can hold, and the dtype it loads as
DTYPES: dict[str, np.dtype] = {
    code: np.dtype(dt)
    for code, dt in {
        "BOOL": np.bool_,
        "U8": np.uint8,
        "I8": np.int8,
        "U16": np.uint16,
        "I16": np.int16,
        "U32": np.uint32,
        "I32": np.int32,
        "U64": np.uint64,
        "I64": np.int64,
        "F16": np.float16,
        "BF16": ml_dtypes.bfloat16,
        "F32": np.float32,
        "F64": np.float64,
        "F8_E4M3": ml_dtypes.float8_e4m3fn,
        "F8_E5M2": ml_dtypes.float8_e5m2,
    }.items()
}
CODES = {dt.name: code for code, dt in DTYPES.items()}


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


def to_array(name: str, entry: Entry) -> np.ndarray:
    """A writable ndarray of one entry (bfloat16 / float8 as ml_dtypes arrays).

    Raises ``ValueError`` for a dtype NumPy cannot hold or a wrong byte count.
    """
    dt = DTYPES.get(entry.dtype)
    if dt is None:
        raise ValueError(f"{name}: cannot load {entry.dtype} tensors as NumPy arrays")
    if len(entry.data) != dt.itemsize * math.prod(entry.shape):
        raise ValueError(
            f"{name}: {len(entry.data)} bytes do not hold {entry.dtype} {tuple(entry.shape)}"
        )
    little = dt.newbyteorder("<")
    return np.frombuffer(entry.data, little).reshape(entry.shape).astype(dt)  # a copy


def code_of(dtype: np.dtype) -> str | None:
    """The safetensors code of a dtype (either byte order), or None."""
    return CODES.get(np.dtype(dtype).newbyteorder("=").name)


def to_entry(a: np.ndarray, where: str = "array") -> Entry:
    """The safetensors entry of an array (little-endian bytes); ``TypeError`` naming
    ``where`` for a dtype safetensors cannot store."""
    code = code_of(a.dtype)
    if code is None:
        raise TypeError(f"{where}: cannot store {a.dtype.name} arrays in safetensors")
    little = a.dtype.newbyteorder("<")
    if a.dtype == little and a.flags.c_contiguous:
        return Entry(code, list(a.shape), memoryview(a.reshape(-1).view(np.uint8)))  # no copy
    return Entry(code, list(a.shape), np.ascontiguousarray(a, little).tobytes())


def write(path: str, tensors: dict[str, Entry], metadata: dict | None) -> None:
    """Write atomically and durably: a temporary file in the same folder, flushed
    to disk, then renamed over ``path`` (a crash leaves the old file intact)."""
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
    try:
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".slimgrad-", suffix=".safetensors")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(struct.pack("<Q", len(raw)))
                f.write(raw)
                for e in tensors.values():
                    f.write(e.data)
                f.flush()
                os.fsync(f.fileno())
            mask = os.umask(0o022)  # mkstemp made it 0600: the usual mode (umask) instead
            os.umask(mask)
            os.chmod(tmp, 0o666 & ~mask)
            os.replace(tmp, path)
        except BaseException:
            os.unlink(tmp)
            raise
    except OSError as e:  # name the user's path, not the temporary file
        raise type(e)(e.errno, e.strerror or str(e), path) from None
    try:  # make the rename itself durable
        dfd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:
        pass
