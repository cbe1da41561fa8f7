"""Buckets and the memory layout of optimizer state.

A :class:`Bucket` is the parameters of one param group that share a dtype
(see :mod:`slimgrad.optim._base` for the subclass contract); the functions
here place state arrays so that the kernels' vectors never straddle a cache
line and a bucket of consecutive params steps as one long array.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = [
    "Bucket",
    "Key",
    "empty_at",
    "find_nonfinite",
    "label",
    "pack_state",
    "state_offset",
    "state_replaced",
]

Key = str | int


@dataclass
class Bucket:
    """The parameters of one param group sharing a dtype (see :mod:`slimgrad.optim._base`)."""

    group_index: int
    dtype: np.dtype
    keys: list[Key]
    labels: list[str]
    params: list[np.ndarray]
    masters: list[np.ndarray] | None
    states: dict[str, list[np.ndarray]] = field(default_factory=dict)
    flat_index: list[int] = field(default_factory=list)  # positions in the optimizer's flat order
    grads: list[np.ndarray] = field(default_factory=list)
    step: int = 0
    # State dicts of the params (for step counting), parallel to keys.
    state_dicts: list[dict[str, Any]] = field(default_factory=list)
    # Free for the subclass: whatever it precomputes once per bucket (argument
    # objects, label lists). Rebuilt with the bucket (new state, load_state_dict).
    cache: dict[str, Any] = field(default_factory=dict)
    # step(max_norm=...): the clip factor the kernel applies to each gradient (1: none).
    grad_scale: float = 1.0


def label(key: Key) -> str:
    return f"[{key!r}]" if isinstance(key, str) else f"[{key}]"


def _data_ptr(a: np.ndarray) -> int:
    return int(a.__array_interface__["data"][0])


def empty_at(shape: tuple[int, ...], dtype: np.dtype, offset: int) -> np.ndarray:
    """An uninitialized C-contiguous array whose data address is ``offset`` mod 64."""
    dtype = np.dtype(dtype)
    nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    buf = np.empty(nbytes + 64, np.uint8)
    start = (offset - _data_ptr(buf)) % 64
    return buf[start : start + nbytes].view(dtype).reshape(shape)


def state_offset(param: np.ndarray, dtype: Any = None, master: bool = True) -> int:
    """Where state arrays of ``param`` (of ``dtype``, default the param's) start
    within a 64-byte line.

    The kernels step to a 64-byte boundary of their main stream first: the
    param for float32/float64 params, the float32 master for float16/bfloat16
    params with a master (``master=True``), the param itself without one. A
    state array starts at the main stream's offset scaled by the itemsize
    ratio, so that it is aligned (to 64 bytes, or 32 for 2-byte state of a
    4-byte main stream: one vector of bfloat16) at the same element (NumPy
    gives large arrays an address 16 bytes past a page boundary; split loads
    cost ~40 % of the step with AVX-512 here). Masters and the state of
    float16/bfloat16 params with a master: 0.
    """
    if param.dtype.itemsize == 2 and master:
        return 0
    itemsize = param.dtype.itemsize if dtype is None else np.dtype(dtype).itemsize
    return (_data_ptr(param) % 64) * itemsize // param.dtype.itemsize % 64


def find_nonfinite(arrays: list[np.ndarray]) -> tuple[int, int] | None:
    """(array index, flat element index) of the first NaN/inf in ``arrays``, or None.

    One multi-tensor C++ call when the kernel is available (it is, in any
    build of this package), threads over arrays and chunks; arrays of any
    parameter dtype (float32, float64, float16, bfloat16).
    """
    from .. import _core

    fn = getattr(_core.optim, "find_nonfinite_multi", None)
    if fn is not None:
        first: tuple[int, int] | None = fn(arrays)
        return first
    for i, a in enumerate(arrays):  # fallback, kept only for partial builds
        bad = np.flatnonzero(~np.isfinite(a.astype(np.float32, copy=False)))
        if bad.size:
            return i, int(bad[0])
    return None


def find_nonfinite_in(buckets: list[Bucket]) -> tuple[Bucket, int, int] | None:
    """(bucket, array index in it, flat element index) of the first NaN/inf in
    the buckets' gradients, in bucket order, or None."""
    bad = find_nonfinite([g for b in buckets for g in b.grads])
    if bad is None:
        return None
    i, j = bad
    for b in buckets:
        if i < len(b.grads):
            return b, i, j
        i -= len(b.grads)
    raise AssertionError("find_nonfinite: index past the last bucket")


def pack_state(b: Bucket, sts: list[dict[str, Any]]) -> None:
    """If the bucket's params are consecutive in one buffer, do the same for their state."""
    if len(b.params) < 2:
        return
    end = None
    for p in b.params:
        if end is not None and _data_ptr(p) != end:
            return
        end = _data_ptr(p) + p.nbytes
    for name, v in sts[0].items():
        if not isinstance(v, np.ndarray):
            continue
        found = [st.get(name) for st in sts]
        arrays = [
            a
            for a, p in zip(found, b.params)
            if isinstance(a, np.ndarray) and a.shape == p.shape and a.dtype == v.dtype
        ]
        if len(arrays) != len(found):
            continue
        total = sum(a.size for a in arrays)
        flat = empty_at((total,), v.dtype, state_offset(b.params[0], v.dtype, "master" in sts[0]))
        off = 0
        for st, a in zip(sts, arrays):
            view = flat[off : off + a.size].reshape(a.shape)
            view[...] = a
            st[name] = view
            off += a.size


def state_replaced(state: dict[Key, dict[str, Any]], buckets: list[Bucket]) -> bool:
    """Whether a state dict or state array was replaced since the buckets were built.

    ``opt.state[name][key] = array`` (or a new ``opt.state[name]``) is
    picked up by the next step, whose kernels then check it (dtype,
    shape, layout, writability) before anything is written.
    """
    for b in buckets:
        for k, st in zip(b.keys, b.state_dicts):
            if state.get(k) is not st:
                return True
        for n, arrays in b.states.items():
            for st, a in zip(b.state_dicts, arrays):
                if st.get(n) is not a:
                    return True
        if b.masters is not None:
            for st, a in zip(b.state_dicts, b.masters):
                if st.get("master") is not a:
                    return True
    return False
