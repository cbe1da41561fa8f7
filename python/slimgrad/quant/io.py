"""Saving quantized tensors: safetensors with a spec per tensor, and GGUF.

safetensors layout written by :func:`save`: a QuantizedTensor ``name`` is
stored as ``name`` (its ``data``: int8/uint8 codes), ``name.scale`` (float32)
and, when asymmetric, ``name.zero_point`` (int32); the file's metadata key
``slimgrad.quant`` holds JSON ``{name: {"bits", "symmetric", "granularity",
"axis", "group_size", "shape"}, ...}`` plus a format version, so any reader
can rebuild the tensors. Plain arrays are stored as they are. Files are
written to a temporary name in the same directory and renamed, so a crash
never leaves a half-written file under the final name.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from ._tensor import QuantizedTensor

META_KEY = "slimgrad.quant"
FORMAT_VERSION = 1


def _atomic(path: str | os.PathLike, write) -> None:
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent or ".")
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def save(
    path: str | os.PathLike,
    tensors: Mapping[str, QuantizedTensor | np.ndarray],
    metadata: Mapping[str, str] | None = None,
) -> None:
    """Writes ``tensors`` (name -> QuantizedTensor or ndarray) to a safetensors file.

    Raises
    ------
    TypeError
        A value that is neither a QuantizedTensor nor an ndarray.
    ValueError
        Two stored names collide (e.g. an array named ``"w.scale"`` next to a
        quantized ``"w"``).
    OSError
        The file cannot be written (the previous file, if any, is untouched).
    """
    from safetensors.numpy import save_file

    arrays: dict[str, np.ndarray] = {}
    specs: dict[str, Any] = {}

    def put(key: str, value: np.ndarray) -> None:
        if key in arrays:
            raise ValueError(f"tensors: the stored name {key!r} is used twice")
        arrays[key] = np.ascontiguousarray(value)

    for name, t in tensors.items():
        if isinstance(t, QuantizedTensor):
            put(name, t.data)
            put(f"{name}.scale", t.scale)
            if not t.symmetric:
                put(f"{name}.zero_point", t.zero_point)
            specs[name] = t.spec()
        elif isinstance(t, np.ndarray):
            put(name, t)
        else:
            raise TypeError(
                f"tensors[{name!r}]: expected a QuantizedTensor or ndarray, got {type(t).__name__}"
            )
    meta = dict(metadata or {})
    meta[META_KEY] = json.dumps({"version": FORMAT_VERSION, "tensors": specs})
    _atomic(path, lambda tmp: save_file(arrays, tmp, metadata=meta))


def load(path: str | os.PathLike) -> dict[str, QuantizedTensor | np.ndarray]:
    """Reads a file written by :func:`save`: name -> QuantizedTensor or ndarray.

    A safetensors file without slimgrad metadata loads as plain arrays.

    Raises
    ------
    OSError
        The file is missing or unreadable.
    ValueError
        The metadata is malformed or refers to missing tensors.
    """
    from safetensors import safe_open
    from safetensors.numpy import load_file

    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no such file")
    with safe_open(str(path), framework="numpy") as f:
        meta = f.metadata() or {}
    arrays = load_file(str(path))
    specs: dict[str, Any] = {}
    if META_KEY in meta:
        try:
            specs = json.loads(meta[META_KEY])["tensors"]
        except (ValueError, KeyError, TypeError) as e:
            raise ValueError(f"{path}: malformed {META_KEY} metadata ({e})") from None
    out: dict[str, QuantizedTensor | np.ndarray] = {}
    used: set[str] = set()
    for name, spec in specs.items():
        try:
            data, scale = arrays[name], arrays[f"{name}.scale"]
            zp = arrays.get(f"{name}.zero_point", np.zeros(scale.shape, np.int32))
            out[name] = QuantizedTensor(
                data,
                scale,
                zp,
                tuple(spec["shape"]),
                spec["bits"],
                spec["symmetric"],
                spec["granularity"],
                spec["axis"],
                spec["group_size"],
            )
        except KeyError as e:
            raise ValueError(f"{path}: quantized tensor {name!r} is missing {e}") from None
        used |= {name, f"{name}.scale", f"{name}.zero_point"}
    for name, a in arrays.items():
        if name not in used:
            out[name] = a
    return out


GGUF_TYPES = {
    (8, True): "Q8_0",
    (4, True): "Q4_0",
    (4, False): "Q4_1",
    (5, True): "Q5_0",
    (5, False): "Q5_1",
}


def save_gguf(
    path: str | os.PathLike,
    tensors: Mapping[str, np.ndarray],
    type: str = "Q4_0",
    *,
    arch: str = "slimgrad",
) -> dict[str, str]:
    """Writes float ``tensors`` to a GGUF file through the ``gguf`` package's GGUFWriter.

    2-D (or higher) tensors whose last axis is a multiple of 32 are stored as
    ``type`` blocks (bytes from :func:`slimgrad.quant.gguf.quantize`, identical
    to the gguf package's); the others (vectors, odd shapes) as F32.
    Returns name -> stored GGUF type.
    """
    import gguf as gguf_pkg

    from . import gguf as sg

    qtype = gguf_pkg.GGMLQuantizationType[sg._type_name(type)]
    stored: dict[str, str] = {}

    def write(tmp: str) -> None:
        writer = gguf_pkg.GGUFWriter(tmp, arch)
        writer.add_name(Path(path).stem)
        for name, w in tensors.items():
            w = np.asarray(w)
            if w.ndim >= 2 and w.shape[-1] % sg.BLOCK_SIZE == 0 and w.dtype.kind == "f":
                writer.add_tensor(name, sg.quantize(w, qtype.name), raw_dtype=qtype)
                stored[name] = qtype.name
            else:
                writer.add_tensor(name, np.ascontiguousarray(w, dtype=np.float32))
                stored[name] = "F32"
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()

    _atomic(path, write)
    return stored
