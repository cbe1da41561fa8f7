"""Saving quantized tensors: safetensors with a spec per tensor, and GGUF.

safetensors layout written by :func:`save`: a QuantizedTensor ``name`` is
stored as ``name`` (its ``data``: int8/uint8 codes), ``name.scale`` (float32)
and, when asymmetric, ``name.zero_point`` (int32); the file's metadata key
``slimgrad.quant`` holds JSON ``{name: {"bits", "symmetric", "granularity",
"axis", "group_size", "shape", "dtype"}, ...}`` plus a format version, so any
reader can rebuild the tensors (``dtype``, the dtype that was quantized, was
added later in version 1: files without it load as float32). Plain arrays
are stored as they are. Files are written to a temporary name in the same
directory and renamed, so a crash never leaves a half-written file under the
final name.

Reading goes through :mod:`slimgrad._safetensors` (not ``safetensors.numpy``),
so bfloat16 and float8 tensors load in any process, as ``ml_dtypes`` arrays.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .. import _safetensors as st
from .._safetensors import CODES, DTYPES, to_array, to_entry  # noqa: F401 (re-exported)
from ._tensor import QuantizedTensor, _empty_data, _scale_shape

META_KEY = "slimgrad.quant"
FORMAT_VERSION = 1

FLOAT_CODES = ("F16", "BF16", "F32", "F64")  # what the quantizers accept


# -- paths ---------------------------------------------------------------------------
def _cannot(path: str | os.PathLike, verb: str, e: OSError) -> OSError:
    """``e`` as one line naming ``path`` (not the temporary file), same type."""
    return type(e)(f"{os.fspath(path)}: cannot {verb} ({e.strerror or e})")


def check_output(path: str | os.PathLike) -> None:
    """Raises a one-line OSError if ``path`` is a directory or its folder is
    missing or not writable; called before any work so users learn early."""
    p = Path(path)
    if p.is_dir():
        raise IsADirectoryError(f"{os.fspath(path)}: is a directory")
    parent = p.parent
    if not parent.is_dir():
        raise FileNotFoundError(f"{os.fspath(path)}: folder {parent} does not exist")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise PermissionError(f"{os.fspath(path)}: folder {parent} is not writable")


def _atomic(path: str | os.PathLike, write: Callable[[str], None]) -> None:
    """``write(tmp)`` then rename over ``path``: :func:`slimgrad._safetensors.atomic`
    (stale temporary files cleaned, mode as ``open(path, "w")``) with the
    early, one-line checks of :func:`check_output`."""
    check_output(path)
    try:
        st.atomic(path, write)
    except OSError as e:
        raise _cannot(path, "write", e) from None


def read_checkpoint(path: str | os.PathLike) -> tuple[dict[str, st.Entry], dict[str, Any]]:
    """(tensors as raw entries in file order, metadata) of a safetensors file.

    Raises
    ------
    FileNotFoundError, IsADirectoryError, PermissionError
        One line naming ``path``.
    ValueError
        Not a safetensors file.
    """
    p = Path(path)
    if p.is_dir():
        raise IsADirectoryError(f"{os.fspath(path)}: is a directory, not a safetensors file")
    if not p.exists():
        raise FileNotFoundError(f"{os.fspath(path)}: no such file")
    try:
        tensors, metadata = st.read(os.fspath(path))
    except OSError as e:
        raise _cannot(path, "read", e) from None
    if metadata is not None and not isinstance(metadata, dict):
        raise ValueError(
            f"{os.fspath(path)}: not a safetensors file (__metadata__ is not an object)"
        )
    return tensors, dict(metadata or {})


# -- safetensors ---------------------------------------------------------------------
def _layout(
    tensors: Mapping[str, Any], raw_ok: bool = False
) -> tuple[dict[str, Any], dict[str, Any]]:
    """(stored name -> array (or, with ``raw_ok``, an untouched st.Entry), specs)."""
    stored: dict[str, Any] = {}
    specs: dict[str, Any] = {}

    def put(key: str, value: Any) -> None:
        if key in stored:
            raise ValueError(f"tensors: the stored name {key!r} is used twice")
        stored[key] = np.ascontiguousarray(value) if isinstance(value, np.ndarray) else value

    for name, t in tensors.items():
        if isinstance(t, QuantizedTensor):
            put(name, t.data)
            put(f"{name}.scale", t.scale)
            if not t.symmetric:
                put(f"{name}.zero_point", t.zero_point)
            specs[name] = t.spec()
        elif isinstance(t, np.ndarray) or (raw_ok and isinstance(t, st.Entry)):
            put(name, t)
        else:
            raise TypeError(
                f"tensors[{name!r}]: expected a QuantizedTensor or ndarray, got {type(t).__name__}"
            )
    return stored, specs


def _stored_layout(name: str, spec: Mapping[str, Any]) -> dict[str, tuple[np.dtype, tuple]]:
    """(dtype, shape) of each tensor :func:`_layout` stores for the quantized
    tensor ``name`` of ``spec`` (:meth:`QuantizedTensor.spec`), known before it
    is quantized: a writer that streams the tensors writes the header first."""
    shape = tuple(spec["shape"])
    dshape, dtypes = _empty_data(shape, spec["bits"], spec["symmetric"], alloc=False)
    # a per-tensor scale, shape (), is stored with shape (1,) (ascontiguousarray)
    sshape = _scale_shape(shape, spec["granularity"], spec["axis"], spec["group_size"]) or (1,)
    out = {
        name: (np.dtype(dtypes[0]), tuple(dshape)),
        f"{name}.scale": (np.dtype(np.float32), sshape),
    }
    if not spec["symmetric"]:
        out[f"{name}.zero_point"] = (np.dtype(np.int32), sshape)
    return out


def _metadata(metadata: Mapping[str, str] | None, specs: dict[str, Any]) -> dict[str, str]:
    meta = dict(metadata or {})
    meta["format"] = "slimgrad"  # not "pt": torch loaders must not take the codes as weights
    meta[META_KEY] = json.dumps({"version": FORMAT_VERSION, "tensors": specs})
    return meta


def save(
    path: str | os.PathLike,
    tensors: Mapping[str, QuantizedTensor | np.ndarray],
    metadata: Mapping[str, str] | None = None,
) -> None:
    """Writes ``tensors`` (name -> QuantizedTensor or ndarray) to a safetensors file.

    ``metadata`` (str -> str) is stored next to the ``slimgrad.quant`` key.
    Arrays of any dtype safetensors knows are stored as they are (bfloat16
    and float8 as ``ml_dtypes`` arrays).

    Raises
    ------
    TypeError
        A value that is neither a QuantizedTensor nor an ndarray.
    ValueError
        Two stored names collide (e.g. an array named ``"w.scale"`` next to a
        quantized ``"w"``).
    OSError
        The file cannot be written: one line naming ``path`` (the previous
        file, if any, is untouched).
    """
    arrays, specs = _layout(tensors)
    write_entries(
        path, {name: to_entry(a, name) for name, a in arrays.items()}, _metadata(metadata, specs)
    )


def write_entries(path: str | os.PathLike, entries: dict[str, st.Entry], meta: dict) -> None:
    """:func:`slimgrad._safetensors.write` with the early checks of
    :func:`check_output` and a one-line ``OSError`` naming ``path``."""
    check_output(path)
    try:
        st.write(path, entries, meta)
    except OSError as e:
        raise _cannot(path, "write", e) from None


def load(path: str | os.PathLike) -> dict[str, QuantizedTensor | np.ndarray]:
    """Reads a file written by :func:`save`: name -> QuantizedTensor or ndarray.

    A safetensors file without slimgrad metadata loads as plain arrays;
    bfloat16 and float8 tensors load as ``ml_dtypes`` arrays, in any process.

    Raises
    ------
    OSError
        The file is missing, a directory or unreadable (one line naming it).
    ValueError
        Not a safetensors file, a dtype NumPy cannot hold, or metadata that is
        malformed or refers to missing tensors.
    """
    entries, meta = read_checkpoint(path)
    arrays = {
        name: to_array(f"{os.fspath(path)}: tensor {name!r}", e) for name, e in entries.items()
    }
    specs: dict[str, Any] = {}
    if META_KEY in meta:
        try:
            specs = st.load_json(meta[META_KEY], 8)["tensors"]
        except (ValueError, KeyError, TypeError) as e:
            raise ValueError(f"{path}: malformed {META_KEY} metadata ({e})") from None
    if not isinstance(specs, dict):
        raise ValueError(f"{path}: malformed {META_KEY} metadata (tensors is not an object)")
    quantized: dict[str, QuantizedTensor] = {}
    for name, spec in specs.items():
        quantized[name] = _from_spec(os.fspath(path), name, spec, arrays)
    parts = {f"{name}.{part}" for name in quantized for part in ("scale", "zero_point")}
    out: dict[str, QuantizedTensor | np.ndarray] = {}
    for name, a in arrays.items():  # file order
        if name in quantized:
            out[name] = quantized[name]
        elif name not in parts:
            out[name] = a
    return out


_SPEC_TYPES: dict[str, tuple[type, ...]] = {
    "bits": (int,),
    "symmetric": (bool,),
    "granularity": (str,),
    "axis": (int,),
    "group_size": (int,),
    "shape": (list,),
    "dtype": (str,),
}


def _from_spec(path: str, name: str, spec: Any, arrays: dict[str, np.ndarray]) -> QuantizedTensor:
    """The QuantizedTensor ``name`` of a file; ``ValueError`` naming the file and
    the tensor for a spec of the wrong types or arrays that do not fit it."""
    where = f"{path}: quantized tensor {name!r}"
    if not isinstance(spec, dict):
        raise ValueError(f"{where}: the spec is not an object")
    for key, types in _SPEC_TYPES.items():
        if key not in spec and key != "dtype":
            raise ValueError(f"{where}: the spec has no {key!r}")
        v = spec.get(key, "float32")
        if not isinstance(v, types) or (isinstance(v, bool) and bool not in types):
            raise ValueError(f"{where}: spec[{key!r}] must be {types[0].__name__}, got {v!r}")
    if not all(isinstance(d, int) and not isinstance(d, bool) for d in spec["shape"]):
        raise ValueError(f"{where}: spec['shape'] must be a list of integers, got {spec['shape']}")
    for part in ("", ".scale"):
        if f"{name}{part}" not in arrays:
            raise ValueError(f"{where}: the file has no tensor {name + part!r}")
    scale = arrays[f"{name}.scale"]
    zp = arrays.get(f"{name}.zero_point")
    if zp is None:
        zp = np.zeros(scale.shape, np.int32)
    try:
        return QuantizedTensor(
            arrays[name],
            scale,
            zp,
            tuple(spec["shape"]),
            spec["bits"],
            spec["symmetric"],
            spec["granularity"],
            spec["axis"],
            spec["group_size"],
            spec.get("dtype", "float32"),
        )
    except (TypeError, ValueError) as e:
        raise ValueError(f"{where}: {e}") from None


# -- GGUF ----------------------------------------------------------------------------
GGUF_TYPES = {
    (8, True): "Q8_0",
    (4, True): "Q4_0",
    (4, False): "Q4_1",
    (5, True): "Q5_0",
    (5, False): "Q5_1",
}
# dtypes GGUF stores as they are ...
_GGUF_PLAIN = {
    "float32": "F32",
    "float16": "F16",
    "bfloat16": "BF16",
    "float64": "F64",
    "int8": "I8",
    "int16": "I16",
    "int32": "I32",
    "int64": "I64",
}
# ... and those it lacks, widened to a type that holds every value exactly
_GGUF_WIDEN = {
    "bool": np.int8,
    "uint8": np.int16,
    "uint16": np.int32,
    "uint32": np.int64,
    "uint64": np.int64,  # only when every value is below 2**63
    "float8_e4m3fn": np.float16,
    "float8_e5m2": np.float16,
}


@dataclass
class GgufTensor:
    """One tensor as it goes into a GGUF file."""

    name: str
    type: str  # the GGUF type written: "Q4_0", "F32", "I64", ...
    array: np.ndarray  # what the writer gets: blocks (uint8) or values
    note: str = ""  # why it is not quantized, or what it was converted from

    @property
    def nbytes(self) -> int:
        return int(self.array.nbytes)


def gguf_plain(name: str, w: np.ndarray, note: str = "", label: str | None = None) -> GgufTensor:
    """``w`` stored unquantized: in its own GGUF type, or widened without changing
    a value (bool -> I8, U8 -> I16, U16 -> I32, U32/U64 -> I64, float8 -> F16).

    Raises ``ValueError`` (naming ``label``, default ``name``) for a dtype GGUF
    cannot hold exactly (uint64 values from 2**63, complex, ...).
    """
    label = label or name
    dt = w.dtype.newbyteorder("=").name
    w = np.ascontiguousarray(w, w.dtype.newbyteorder("="))
    if w.ndim == 0:
        w = w.reshape(1)  # GGUF tensors have at least one dimension
    if dt not in _GGUF_PLAIN:
        target = _GGUF_WIDEN.get(dt)
        if target is None or (dt == "uint64" and w.size and int(w.max()) >= 2**63):
            what = "uint64 values from 2**63" if target is not None else f"{dt} tensors"
            raise ValueError(f"{label}: GGUF has no type that holds {what}")
        w = w.astype(target)
        code = CODES.get(dt, dt)
        note = "; ".join(filter(None, [note, f"from {code}, values unchanged"]))
    return GgufTensor(name, _GGUF_PLAIN[w.dtype.name], w, note)


def _scales_finite(blocks: np.ndarray, type: str) -> bool:
    """Whether every block's float16 scale ``d`` (and minimum ``m``) is finite."""
    from . import gguf as sg

    heads = blocks.reshape(-1, sg.TYPE_SIZE[type])[:, : 4 if type.endswith("_1") else 2]
    return bool(np.isfinite(np.ascontiguousarray(heads).view(np.float16)).all())


def gguf_tensor(name: str, w: np.ndarray, type: str, label: str | None = None) -> GgufTensor:
    """``w`` as ``type`` blocks where GGUF allows, else unquantized (see gguf_plain).

    A float array of at least 2 dimensions whose last axis is a multiple of
    32 becomes blocks; if a block's float16 scale overflows (values beyond
    about 65504 * 127 for Q8_0), the tensor is kept unquantized with a note.

    Raises ``ValueError`` naming ``label`` (default ``name``) for a NaN/inf.
    """
    from . import gguf as sg

    label = label or name
    is_float = w.dtype.kind == "f" or w.dtype.name == "bfloat16"
    if not (is_float and w.ndim >= 2 and w.size and w.dtype.name in _GGUF_PLAIN):
        return gguf_plain(name, w, label=label)
    if w.shape[-1] % sg.BLOCK_SIZE:
        return gguf_plain(name, w, f"row not a multiple of {sg.BLOCK_SIZE}", label)
    blocks = sg._quantize(w, type, label)
    if not _scales_finite(blocks, type):
        amax = float(np.abs(w.astype(np.float32)).max())
        return gguf_plain(name, w, f"a block scale overflows float16, max |w| {amax:.3g}", label)
    return GgufTensor(name, type, blocks)


def write_gguf(path: str | os.PathLike, tensors: list[GgufTensor], arch: str = "slimgrad") -> None:
    """Writes prepared tensors through ``gguf.GGUFWriter``, atomically."""
    import gguf as gguf_pkg

    def write(tmp: str) -> None:
        writer = gguf_pkg.GGUFWriter(tmp, arch)
        writer.add_name(Path(path).stem)
        for t in tensors:
            raw = gguf_pkg.GGMLQuantizationType[t.type]
            if t.type == "BF16":  # the writer takes BF16 as raw 16-bit words
                writer.add_tensor(t.name, t.array.view(np.uint16), raw_dtype=raw)
            elif t.array.dtype == np.uint8 and t.type not in _GGUF_PLAIN.values():
                writer.add_tensor(t.name, t.array, raw_dtype=raw)
            else:
                writer.add_tensor(t.name, t.array)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()

    _atomic(path, write)


def save_gguf(
    path: str | os.PathLike,
    tensors: Mapping[str, np.ndarray],
    type: str = "Q4_0",
    *,
    arch: str = "slimgrad",
) -> dict[str, str]:
    """Writes ``tensors`` to a GGUF file through the ``gguf`` package's GGUFWriter.

    Float tensors of 2 or more dimensions whose last axis is a multiple of 32
    are stored as ``type`` blocks (bytes from :func:`slimgrad.quant.gguf.quantize`,
    identical to the gguf package's). Every other tensor keeps its values:
    F32 / F16 / BF16 / F64 and I8 / I16 / I32 / I64 as they are; types GGUF
    lacks are widened exactly (bool -> I8, uint8 -> I16, uint16 -> I32,
    uint32 and uint64 -> I64, float8 -> F16). A tensor for which a block's
    float16 scale would overflow (|w| beyond ~8.3e6 for Q8_0; the gguf
    package writes inf there) is stored unquantized in its own type.
    Returns name -> stored GGUF type.

    Raises
    ------
    ValueError
        Unknown ``type``; a NaN/inf in a tensor to quantize, or a dtype GGUF
        cannot hold (uint64 from 2**63, complex): the message names the
        tensor as ``tensors['name']``.
    OSError
        The file cannot be written (one line naming ``path``).
    """
    from . import gguf as sg

    qtype = sg._type_name(type)
    prepared = [
        gguf_tensor(name, np.asarray(w), qtype, f"tensors[{name!r}]") for name, w in tensors.items()
    ]
    write_gguf(path, prepared, arch)
    return {t.name: t.type for t in prepared}
