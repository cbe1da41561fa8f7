"""A list of arrays seen as one flat range of elements (zero-copy when they are an arena)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

Key = str | int


def _ptr(a: np.ndarray) -> int:
    return int(a.__array_interface__["data"][0])


def _root(a: np.ndarray) -> np.ndarray:
    while isinstance(a.base, np.ndarray):
        a = a.base
    return a


class FlatSpace:
    """Arrays of one dtype, back to back in a virtual flat range ``[0, size)``.

    If the arrays are consecutive views of one buffer (as made by
    :func:`slimgrad.optim.flatten`), :attr:`flat` is a 1-D view of all of
    them and no copy is ever made; otherwise :meth:`gather` / :meth:`scatter`
    copy element ranges to and from a contiguous buffer.
    """

    def __init__(self, arrays: list[np.ndarray]) -> None:
        self.arrays = [a.reshape(-1) for a in arrays]
        self.starts = []
        acc = 0
        for a in self.arrays:
            self.starts.append(acc)
            acc += a.size
        self.size = acc
        self.dtype = arrays[0].dtype if arrays else np.dtype(np.float32)
        self.flat = self._as_one_view()

    def _as_one_view(self) -> np.ndarray | None:
        arrays = [a for a in self.arrays if a.size]
        if not arrays:
            return np.empty(0, self.dtype)
        if len(arrays) == 1:
            return arrays[0]
        root = _root(arrays[0])
        end = _ptr(arrays[0])
        for a in arrays:
            # The same allocation, back to back: then one view may span them.
            if _ptr(a) != end or _root(a) is not root or not root.flags.c_contiguous:
                return None
            end += a.nbytes
        start = _ptr(arrays[0]) - _ptr(root)
        raw = root.reshape(-1).view(np.uint8)
        return raw[start : start + self.size * self.dtype.itemsize].view(self.dtype)

    def pieces(self, lo: int, hi: int) -> list[tuple[int, int, int]]:
        """``(array index, start, stop)`` of the arrays' parts inside ``[lo, hi)``."""
        out = []
        for i, (s, a) in enumerate(zip(self.starts, self.arrays)):
            a_lo, a_hi = max(lo, s), min(hi, s + a.size)
            if a_lo < a_hi or (a.size == 0 and lo <= s < hi):
                out.append((i, a_lo - s, a_hi - s))
        return out

    def gather(self, lo: int, hi: int, dst: np.ndarray) -> None:
        """Copy elements ``[lo, hi)`` into ``dst`` (length ``hi - lo``)."""
        for i, a, b in self.pieces(lo, hi):
            off = self.starts[i] + a - lo
            dst[off : off + b - a] = self.arrays[i][a:b]

    def scatter(self, lo: int, hi: int, src: np.ndarray) -> None:
        """Copy ``src`` (length ``hi - lo``) into elements ``[lo, hi)``."""
        for i, a, b in self.pieces(lo, hi):
            off = self.starts[i] + a - lo
            self.arrays[i][a:b] = src[off : off + b - a]


def keys_of(param_groups: list[dict[str, Any]]) -> list[list[Key]]:
    """Per group, the keys an optimizer gives its params (names, or flat indices for lists)."""
    out, n = [], 0
    for g in param_groups:
        p = g["params"]
        if isinstance(p, Mapping):
            out.append(list(p))
        else:
            out.append(list(range(n, n + len(p))))
        n += len(p)
    return out


def label(key: Key) -> str:
    return f"[{key!r}]" if isinstance(key, str) else f"[{key}]"


def flat_grads(grads: Any, keys: list[Key], params: list[np.ndarray]) -> list[np.ndarray]:
    """``grads`` (dict by name, flat list, or one dict/list per group) in the order of ``keys``.

    Checks every gradient has its parameter's dtype and shape and is C-contiguous;
    ``TypeError`` / ``ValueError`` naming ``grads[key]`` otherwise.
    """
    if isinstance(grads, Mapping):
        missing = [k for k in keys if k not in grads]
        if missing:
            raise ValueError(f"grads: missing {missing[0]!r} (a gradient for every parameter)")
        if len(grads) != len(keys):
            extra = [k for k in grads if k not in set(keys)]
            raise ValueError(f"grads: unexpected name {extra[0]!r} (not a parameter)")
        flat = [grads[k] for k in keys]
    elif isinstance(grads, (list, tuple)):
        flat = list(grads)
        if flat and all(isinstance(g, (Mapping, list, tuple)) for g in flat):
            flat = [
                g for part in flat for g in (part.values() if isinstance(part, Mapping) else part)
            ]
        if len(flat) != len(keys):
            raise ValueError(
                f"grads: expected {len(keys)} arrays (one per parameter), got {len(flat)}"
            )
    else:
        raise TypeError(f"grads: expected a dict or a list of ndarrays, got {type(grads).__name__}")
    for k, g, p in zip(keys, flat, params):
        if not isinstance(g, np.ndarray):
            raise TypeError(f"grads{label(k)}: expected an ndarray, got {type(g).__name__}")
        if g.dtype != p.dtype or g.shape != p.shape or not g.flags.c_contiguous:
            raise TypeError(
                f"grads{label(k)}: expected {p.dtype.name} C-contiguous array of shape {p.shape}, "
                f"got {'' if g.flags.c_contiguous else 'non-contiguous '}{g.dtype.name} {g.shape}"
            )
    return flat
