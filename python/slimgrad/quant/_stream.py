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

import numpy as np

from .._safetensors import DTYPES, read_header

__all__ = ["Info", "Source", "open_safetensors"]

_NOT_IN_SAFE_OPEN = ("BF16", "F8_E4M3", "F8_E5M2")


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
