"""The package's one safetensors reader and one atomic file writer, and the
Hugging Face model folders made of them (one file, or shards with an index).

The format: an 8-byte little-endian header length ``n``, ``n`` bytes of JSON
``{name: {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {str: str}}``
and the tensors' bytes.

Reading (:func:`read`) validates the whole header before any tensor is
touched, so a malformed or hostile file raises ``ValueError`` naming the file
and the entry, never another exception or a memory error further down:
header length and JSON nesting are bounded, names are unique, dtypes known,
shapes non-negative integers whose byte size matches the dtype, offsets
integers that tile the data area exactly (in range, no overlap, no gap, no
trailing bytes). The tensors are then read through the ``safetensors``
package for every dtype it can give NumPy; bfloat16 and float8 (which its
NumPy loader refuses) are read directly, so those tensors still load (as
``ml_dtypes`` arrays) and pass through the CLIs byte for byte.

Writing (:func:`atomic`, used by :func:`write`, ``quant.save`` and the GGUF
writer) goes to a temporary file next to the target, named
``.<name>.slimgrad-tmp-<pid>-<random>``, flushed to disk and renamed over the
target; it is removed on any exception, and temporary files left by killed
processes (their pid no longer running) are removed by the next write to the
same target. The final file gets the mode a plain ``open(path, "w")`` gives:
an existing target keeps its mode, a new one gets ``0o666`` minus the umask.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import struct
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

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

# bits per element of every dtype code of the format (safetensors 0.8): the
# ones NumPy cannot hold are still checked and passed through byte for byte
BITS = {
    "BOOL": 8, "U8": 8, "I8": 8, "F8_E4M3": 8, "F8_E5M2": 8, "F8_E8M0": 8,
    "U16": 16, "I16": 16, "F16": 16, "BF16": 16,
    "U32": 32, "I32": 32, "F32": 32,
    "U64": 64, "I64": 64, "F64": 64, "C64": 64,
    "F4": 4, "F6_E2M3": 6, "F6_E3M2": 6,
}  # fmt: skip
# what safetensors.numpy reads (the rest is read here, raw)
_PACKAGE_READS = {"BOOL", "U8", "I8", "U16", "I16", "U32", "I32", "U64", "I64", "F16", "F32", "F64"}

INDEX = "model.safetensors.index.json"  # a sharded checkpoint's map: tensor -> shard file
MAX_HEADER = 100 * 2**20  # bytes of JSON header (the safetensors package's own limit)
MAX_DEPTH = 8  # JSON nesting of the header (a valid one has 3)
MAX_DIMS = 64  # dimensions of one tensor
_ENTRY_KEYS = {"dtype", "shape", "data_offsets"}


class Entry:
    """One tensor: dtype code, shape and raw little-endian bytes."""

    def __init__(self, dtype: str, shape: list[int], data: bytes | memoryview) -> None:
        self.dtype, self.shape, self.data = dtype, [int(s) for s in shape], data

    def array(self) -> np.ndarray:
        """A writable copy as an ndarray (float dtypes only)."""
        dt = np.dtype(FLOAT_DTYPES[self.dtype]).newbyteorder("<")
        return np.frombuffer(self.data, dtype=dt).reshape(self.shape).astype(dt.newbyteorder("="))


class Deferred:
    """One tensor whose bytes are made while the file is written: ``make()``
    returns exactly ``nbytes`` little-endian bytes. A writer of deferred
    tensors holds one of them at a time, not the whole output (a pruned
    7B-parameter bfloat16 checkpoint is 14 GB)."""

    def __init__(
        self, dtype: str, shape: list[int], nbytes: int, make: Callable[[], bytes | memoryview]
    ) -> None:
        self.dtype, self.shape = dtype, [int(s) for s in shape]
        self.nbytes, self.make = nbytes, make


# -- reading -------------------------------------------------------------------------
def json_depth(text: str) -> int:
    """Deepest nesting of ``[`` / ``{`` in a JSON text (strings ignored), without
    recursion, so a hostile text cannot exhaust the stack before it is refused."""
    bare = re.sub(r'"(?:[^"\\]|\\.)*"', "", text).encode()
    b = np.frombuffer(bare, np.uint8)
    step = np.isin(b, (ord("["), ord("{"))).astype(np.int64) - np.isin(b, (ord("]"), ord("}")))
    return int(np.cumsum(step).max(initial=0))


def _no_constants(token: str) -> float:
    raise ValueError(f"{token} is not JSON")


def _unique_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in pairs:
        if k in out:
            raise ValueError(f"name {k!r} appears twice")
        out[k] = v
    return out


def load_json(text: str | bytes, max_depth: int) -> Any:
    """``json.loads`` refusing duplicate keys, NaN/Infinity and nesting deeper than
    ``max_depth`` with ``ValueError``."""
    if isinstance(text, bytes):
        text = text.decode("utf-8")
    if json_depth(text) > max_depth:
        raise ValueError(f"JSON nested deeper than {max_depth}")
    return json.loads(text, object_pairs_hook=_unique_pairs, parse_constant=_no_constants)


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _entry(path: str, name: str, info: Any) -> tuple[int, int, str, str, list[int]]:
    """(begin, end, name, dtype, shape) of one header entry, fully checked."""
    where = f"{path}: tensor {name!r}"
    if not name:
        raise ValueError(f"{path}: a tensor has an empty name")
    if not isinstance(info, dict) or set(info) != _ENTRY_KEYS:
        keys = sorted(info) if isinstance(info, dict) else type(info).__name__
        raise ValueError(f"{where}: expected the keys dtype, shape, data_offsets, got {keys}")
    dtype, shape, offsets = info["dtype"], info["shape"], info["data_offsets"]
    if not isinstance(dtype, str) or dtype not in BITS:
        raise ValueError(f"{where}: unknown dtype {dtype!r}")
    if (
        not isinstance(shape, list)
        or len(shape) > MAX_DIMS
        or not all(_is_int(d) and 0 <= d < 2**63 for d in shape)
    ):
        raise ValueError(f"{where}: shape must be a list of non-negative integers, got {shape!r}")
    if not (
        isinstance(offsets, list)
        and len(offsets) == 2
        and all(_is_int(o) for o in offsets)
        and 0 <= offsets[0] <= offsets[1]
    ):
        raise ValueError(
            f"{where}: data_offsets must be two integers 0 <= begin <= end, got {offsets!r}"
        )
    bits = BITS[dtype]
    for d in shape:  # Python ints: no wrap-around, whatever the shape
        bits *= d
    if bits % 8 or bits // 8 != offsets[1] - offsets[0]:
        raise ValueError(
            f"{where}: {dtype} {tuple(shape)} needs {bits / 8:.0f} bytes, "
            f"data_offsets {offsets} hold {offsets[1] - offsets[0]}"
        )
    return offsets[0], offsets[1], name, dtype, shape


def read_header(path: str, f: Any, file_size: int) -> tuple[list[tuple], dict | None, int]:
    """([(begin, end, name, dtype, shape)] sorted by offset, metadata, data start)
    of the open file ``f``; ``ValueError`` naming ``path`` and the entry."""
    head = f.read(8)
    if len(head) < 8:
        raise ValueError(f"{path}: not a safetensors file (shorter than 8 bytes)")
    (n,) = struct.unpack("<Q", head)
    if 8 + n > file_size:
        raise ValueError(f"{path}: not a safetensors file (header length {n} beyond the end)")
    if n > MAX_HEADER:
        raise ValueError(
            f"{path}: not a safetensors file (header of {n} bytes, limit {MAX_HEADER})"
        )
    try:
        header = load_json(f.read(n), MAX_DEPTH)
    except (UnicodeDecodeError, ValueError) as e:
        raise ValueError(f"{path}: not a safetensors file (bad header: {e})") from None
    if not isinstance(header, dict):
        raise ValueError(f"{path}: not a safetensors file (header is not a JSON object)")
    metadata = header.pop("__metadata__", None)
    if metadata is not None and not (
        isinstance(metadata, dict) and all(isinstance(v, str) for v in metadata.values())
    ):
        raise ValueError(f"{path}: __metadata__ must map strings to strings")
    entries = sorted(_entry(path, name, info) for name, info in header.items())
    end = 0  # the tensors must tile the data area: no gap, no overlap, nothing after
    for begin, stop, name, _, _ in entries:
        if begin != end:
            what = "overlaps the previous tensor" if begin < end else f"leaves a gap at {end}"
            raise ValueError(f"{path}: tensor {name!r} at bytes [{begin}, {stop}) {what}")
        end = stop
    data_size = file_size - 8 - n
    if end != data_size:
        what = "lie beyond the end of" if end > data_size else "leave trailing bytes in"
        raise ValueError(
            f"{path}: the tensors ({end} bytes) {what} the data area ({data_size} bytes)"
        )
    return entries, metadata, 8 + n


def read(path: str) -> tuple[dict[str, Entry], dict | None]:
    """(tensors in file order, metadata). ``ValueError`` naming ``path`` and the
    entry for a malformed file; ``OSError`` if it cannot be read."""
    from safetensors import SafetensorError, safe_open

    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        entries, metadata, start = read_header(path, f, size)
        raw = {}
        for begin, end, name, dtype, _ in entries:
            if dtype not in _PACKAGE_READS:
                f.seek(start + begin)
                raw[name] = f.read(end - begin)
                if len(raw[name]) != end - begin:
                    raise ValueError(f"{path}: tensor {name!r}: the file shrank while read")
    tensors: dict[str, Entry] = {}
    try:
        with safe_open(path, framework="numpy") as sf:
            for _, _, name, dtype, shape in entries:
                if name in raw:
                    tensors[name] = Entry(dtype, shape, raw[name])
                    continue
                a = sf.get_tensor(name)
                if a.shape != tuple(shape) or a.dtype != DTYPES[dtype]:
                    raise ValueError(f"{path}: tensor {name!r} changed while the file was read")
                tensors[name] = Entry(dtype, shape, memoryview(a.reshape(-1).view(np.uint8)))
    except SafetensorError as e:  # a file that changed under us, or a stricter rule
        raise ValueError(f"{path}: not a safetensors file ({e})") from None
    return tensors, metadata


def to_array(name: str, entry: Entry, copy: bool = True) -> np.ndarray:
    """A writable ndarray of one entry (bfloat16 / float8 as ml_dtypes arrays);
    ``copy=False``: a read-only little-endian view of the entry's bytes (for a
    caller that copies it into place anyway: a fresh copy costs its page faults).

    Raises ``ValueError`` for a dtype NumPy cannot hold or a wrong byte count.
    """
    dt = DTYPES.get(entry.dtype)
    if dt is None:
        raise ValueError(f"{name}: cannot load {entry.dtype} tensors as NumPy arrays")
    n = dt.itemsize
    for d in entry.shape:
        n *= d
    if len(entry.data) != n:
        raise ValueError(
            f"{name}: {len(entry.data)} bytes do not hold {entry.dtype} {tuple(entry.shape)}"
        )
    view = np.frombuffer(entry.data, dt.newbyteorder("<")).reshape(entry.shape)
    return view.astype(dt) if copy else view


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


# -- writing -------------------------------------------------------------------------
TMP_TAG = ".slimgrad-tmp-"


def _tmp_prefix(name: str) -> str:
    # short enough that prefix + pid + random stays under NAME_MAX (255)
    return f".{name[:200]}{TMP_TAG}"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True  # someone else's process, or not a pid at all: leave it
    return True


def remove_stale(path: str) -> list[str]:
    """Removes the temporary files of writes to ``path`` whose process is gone
    (killed mid-write); returns their names. Files of running processes stay."""
    folder, name = os.path.split(os.path.abspath(path))
    prefix = _tmp_prefix(name)
    removed = []
    try:
        names = os.listdir(folder)
    except OSError:
        return removed
    for other in names:
        m = re.fullmatch(re.escape(prefix) + r"(\d{1,10})-[0-9a-f]+", other)
        if m and int(m.group(1)) != os.getpid() and not _alive(int(m.group(1))):
            try:
                os.unlink(os.path.join(folder, other))
                removed.append(other)
            except OSError:
                pass
    return removed


def _umask() -> int:
    mask = os.umask(0o022)  # the only portable way to read it
    os.umask(mask)
    return mask


def atomic(path: str | os.PathLike, fill: Callable[[str], None]) -> None:
    """Creates or replaces ``path`` all at once: ``fill(tmp)`` writes a temporary
    file next to it, which is flushed to disk and renamed over ``path``.

    The temporary file is removed if anything raises (the target is then
    untouched); stale ones of killed writers are removed first. ``OSError``
    names ``path`` (not the temporary file).
    """
    path = os.fspath(path)
    folder, name = os.path.split(os.path.abspath(path))
    remove_stale(path)
    tmp = os.path.join(folder, f"{_tmp_prefix(name)}{os.getpid()}-{secrets.token_hex(4)}")
    try:
        try:
            mode = os.stat(path).st_mode & 0o7777  # what open(path, "w") would keep
        except FileNotFoundError:
            mode = 0o666 & ~_umask()  # what open(path, "w") would create
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except OSError as e:
            raise type(e)(e.errno, e.strerror or str(e), path) from None
        try:
            os.close(fd)
            fill(tmp)
            fd = os.open(tmp, os.O_RDONLY)
            try:
                os.fchmod(fd, mode)
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, path)
        except OSError as e:  # name the user's path, not the temporary file
            raise type(e)(e.errno, e.strerror or str(e), path) from None
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    try:  # make the rename itself durable
        dfd = os.open(folder or ".", os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:
        pass


def write(
    path: str | os.PathLike, tensors: dict[str, Entry | Deferred], metadata: dict | None
) -> None:
    """Writes a safetensors file through :func:`atomic` (tensors in the given
    order, data 8-byte aligned; deferred tensors made one at a time as they
    are written). ``TypeError`` for metadata that is not str -> str; what a
    ``make()`` raises leaves no file behind."""
    header: dict = {}
    if metadata is not None:
        for k, v in metadata.items():
            if not isinstance(k, str) or not isinstance(v, str):
                raise TypeError(f"metadata[{k!r}]: expected str -> str, got {type(v).__name__}")
        header["__metadata__"] = metadata
    offset = 0
    for name, e in tensors.items():
        size = e.nbytes if isinstance(e, Deferred) else len(e.data)
        header[name] = {"dtype": e.dtype, "shape": e.shape, "data_offsets": [offset, offset + size]}
        offset += size
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)  # keeps the data 8-byte aligned

    def fill(tmp: str) -> None:
        with open(tmp, "wb") as f:
            f.write(struct.pack("<Q", len(raw)))
            f.write(raw)
            for name, e in tensors.items():
                if not isinstance(e, Deferred):
                    f.write(e.data)
                    continue
                data = e.make()
                if len(data) != e.nbytes:
                    raise ValueError(f"{name}: made {len(data)} bytes, expected {e.nbytes}")
                f.write(data)
                del data  # before the next tensor is made

    atomic(path, fill)


# -- model folders: one file, or shards with their index ----------------------------
def model_files(source: str | os.PathLike) -> tuple[Path, list[Path], dict | None]:
    """(model folder, safetensors files, index) of a model folder or one
    .safetensors file. A folder holds ``model.safetensors`` or shards listed
    by ``model.safetensors.index.json`` (its ``weight_map``: tensor -> file
    in the folder); the index is returned as read (None without one).

    Raises ``FileNotFoundError`` for a missing folder, weights or shard and
    ``ValueError`` naming the index and the entry for an index that is not
    a JSON object whose ``weight_map`` maps tensor names to file names in the
    folder (a path elsewhere is refused).
    """
    source = Path(source)
    if source.is_file():
        return source.parent, [source], None
    if not source.is_dir():
        raise FileNotFoundError(f"{source}: no such file or folder")
    path = source / INDEX
    if not path.exists():
        single = source / "model.safetensors"
        if not single.exists():
            raise FileNotFoundError(f"{source}: no model.safetensors or {INDEX}")
        return source, [single], None
    if path.stat().st_size > MAX_HEADER:
        raise ValueError(f"{path}: an index of {path.stat().st_size} bytes, limit {MAX_HEADER}")
    try:
        index = load_json(path.read_bytes(), MAX_DEPTH)
    except (UnicodeDecodeError, ValueError) as e:
        raise ValueError(f"{path}: not a JSON index ({e})") from None
    weight_map = index.get("weight_map") if isinstance(index, dict) else None
    if not isinstance(weight_map, dict) or not weight_map:
        raise ValueError(f"{path}: expected an object with a non-empty weight_map")
    files = []
    for name, file in weight_map.items():
        plain = isinstance(file, str) and Path(file).name == file
        if not (plain and file.endswith(".safetensors")):
            raise ValueError(
                f"{path}: weight_map[{name!r}]: expected a .safetensors file name in the "
                f"folder, got {file!r}"
            )
        if file not in files:
            if not (source / file).is_file():
                raise FileNotFoundError(f"{path}: weight_map[{name!r}]: no shard {source / file}")
            files.append(file)
    return source, [source / file for file in sorted(files)], index


# files of a model folder that hold weights: not copied into a new model folder
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".gguf", ".pt", ".pth", ".h5", ".msgpack")


def write_model_folder(folder: Path, output: str, fill: Callable[[Path], None]) -> None:
    """A new model folder at ``output``: the files of ``folder`` that are not
    weights (config, tokenizer, README, ...) are copied into a folder built
    next to ``output``, ``fill(tmp)`` writes the weights there (and may
    replace ``config.json``), and the folder is renamed to ``output``. A
    failure leaves nothing; ``output`` is new or an empty folder (the
    commands check it before any work)."""
    final = Path(output)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=final.parent.resolve()))
    try:
        for item in folder.iterdir():
            if item.suffix in _WEIGHT_SUFFIXES or item.name == INDEX:
                continue
            if item.is_dir():
                shutil.copytree(item, tmp / item.name)
            else:
                shutil.copy2(item, tmp / item.name)
        fill(tmp)
        os.chmod(tmp, 0o777 & ~_umask())  # what mkdir gives, not mkdtemp's 0700
        if final.exists():
            final.rmdir()
        os.replace(tmp, final)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


def write_shards(
    folder: Path, shards: Sequence[tuple[str, dict[str, Any], dict | None]], index: dict | None
) -> None:
    """Writes each ``(file name, tensors, metadata)`` of ``shards`` into
    ``folder`` and, for a sharded checkpoint (``index`` given: the input's
    ``model.safetensors.index.json``), a new index: its ``weight_map`` names
    the file of every tensor written, its ``total_size`` their bytes, the
    rest of it is kept."""
    weight_map, total = {}, 0
    for name, tensors, metadata in shards:
        write(str(folder / name), tensors, metadata)
        weight_map.update(dict.fromkeys(tensors, name))
        total += sum(t.nbytes if isinstance(t, Deferred) else len(t.data) for t in tensors.values())
    if index is not None:
        index = {**index, "metadata": {**index.get("metadata", {}), "total_size": total}}
        index["weight_map"] = dict(sorted(weight_map.items()))  # as transformers writes it
        with open(folder / INDEX, "w", encoding="utf-8") as f:
            json.dump(index, f, indent=2)
