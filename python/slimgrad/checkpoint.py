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
from collections.abc import Mapping
from typing import Any

import numpy as np

from . import _safetensors as st

__all__ = ["save", "load"]

_KEY = "slimgrad"
_FORMAT = 1


def _encode(obj: Any, where: str, tensors: dict[str, np.ndarray]) -> Any:
    """JSON-able tree; arrays go to `tensors` under their path."""
    if isinstance(obj, np.ndarray):
        name = where
        while name in tensors:
            name += "'"
        if st.code_of(obj.dtype) is None:  # checked before anything is written
            raise TypeError(f"{where}: cannot store dtype {obj.dtype} in safetensors")
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
    metadata = {_KEY: json.dumps({"format": _FORMAT, "tree": tree})}
    entries = {name: st.to_entry(a, name) for name, a in tensors.items()}
    st.write(os.fspath(path), entries, metadata)


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
    entries, meta = st.read(os.fspath(path))
    meta = meta or {}
    tensors = {name: st.to_array(name, e) for name, e in entries.items()}
    if _KEY not in meta:
        return tensors
    tree = json.loads(meta[_KEY])
    return _decode(tree["tree"], tensors)
