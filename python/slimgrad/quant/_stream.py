"""Tensors of a safetensors file, one at a time, memory mapped (the CLIs and exports).

:func:`open_safetensors` lists the tensors (name, dtype code, shape) from the
header without reading any data; :meth:`Source.array` returns one tensor.
Dtypes the ``safetensors`` package gives NumPy come through
``safetensors.safe_open`` (a memory map: only the tensor asked for is paged
in); bfloat16 and float8, which it does not give NumPy, are read-only views
of the file's own memory map, as ``ml_dtypes`` arrays, so their bytes pass
through unchanged (copied when the file places them at an address that is
not a multiple of their size, which the format allows). Peak memory is the
tensor being worked on, not the file.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .._safetensors import DTYPES, MAX_DEPTH, MAX_HEADER, load_json, read_header

__all__ = ["INDEX", "Info", "Source", "model_files", "open_safetensors"]

_NOT_IN_SAFE_OPEN = ("BF16", "F8_E4M3", "F8_E5M2")
INDEX = "model.safetensors.index.json"  # a sharded checkpoint's map: tensor -> shard file


@dataclass(frozen=True)
class Info:
    """One tensor's header entry."""

    name: str
    dtype: str  # safetensors code: "F32", "BF16", "I64", ...
    shape: tuple[int, ...]
    nbytes: int


class Source:
    """An open safetensors file (use as a context manager)."""

    def __init__(self, path: str) -> None:
        self.path = path
        try:
            size = os.path.getsize(path)
            with open(path, "rb") as f:
                # the package's one validated header parser: offsets, shapes,
                # sizes, nesting, duplicates and tiling checked, ValueError
                # naming the file and the entry
                entries, meta, self._data_start = read_header(path, f, size)
        except OSError as e:
            raise type(e)(f"{path}: cannot read ({e.strerror or e})") from None
        self.metadata: dict[str, str] = dict(meta or {})
        self._offsets: dict[str, tuple[int, int]] = {}
        self.tensors: dict[str, Info] = {}
        for begin, end, name, dtype, shape in entries:  # file order
            self.tensors[name] = Info(name, dtype, tuple(shape), end - begin)
            self._offsets[name] = (begin, end)

    def __enter__(self) -> Source:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Nothing stays open between reads (see :meth:`array`)."""

    def array(self, name: str) -> np.ndarray:
        """The tensor ``name`` as an ndarray (read-only view or a fresh array)."""
        info = self.tensors[name]
        if info.dtype in _NOT_IN_SAFE_OPEN or info.dtype not in DTYPES:
            if info.dtype not in DTYPES:
                raise ValueError(
                    f"{self.path}: tensor {name!r} has dtype {info.dtype}, which NumPy cannot hold"
                )
            dt = DTYPES[info.dtype].newbyteorder("<")
            view = self.raw(name).view(dt).reshape(info.shape)
            # The format does not align the data: a header whose length is not
            # a multiple of 8 leaves a bfloat16 tensor at an odd address, which
            # the kernels refuse. Such a tensor is copied (aligned) instead.
            return view if view.flags.aligned else np.array(view)
        from safetensors import safe_open

        # a fresh memory map per tensor, closed right after: the pages of tensors
        # already done leave the process (one long-lived map would keep every
        # page it touched resident, i.e. the whole input by the end)
        with safe_open(self.path, framework="np") as f:
            return f.get_tensor(name)

    def raw(self, name: str) -> np.ndarray:
        """The tensor's stored bytes: a read-only memory map of just that range."""
        begin, end = self._offsets[name]
        if begin == end:
            return np.zeros(0, np.uint8)
        return np.memmap(
            self.path, np.uint8, "r", offset=self._data_start + begin, shape=(end - begin,)
        )

    def nbytes_total(self) -> int:
        return sum(t.nbytes for t in self.tensors.values())


def open_safetensors(path: str | os.PathLike) -> Source:
    """Opens ``path`` for streaming reads; ``OSError`` / ``ValueError`` name it."""
    path = os.fspath(path)
    if os.path.isdir(path):
        raise IsADirectoryError(f"{path}: is a directory, not a safetensors file")
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path}: no such file")
    return Source(path)


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
