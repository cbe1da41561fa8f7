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


_MAX_TREE_DEPTH = 200  # nesting of the saved structure (JSON), checked before parsing


def _decode(obj: Any, tensors: dict[str, np.ndarray], where: str, used: set[str]) -> Any:
    """The saved structure back; ``ValueError`` naming ``where`` for anything
    :func:`_encode` cannot have written (a hand-made or corrupted file)."""
    if isinstance(obj, list):
        return [_decode(v, tensors, f"{where}/{i}", used) for i, v in enumerate(obj)]
    if isinstance(obj, dict):
        if len(obj) != 1:
            raise ValueError(f"{where}: expected one of __tensor__, __dict__, __tuple__, __float__")
        ((tag, v),) = obj.items()
        if tag == "__tensor__":
            if not isinstance(v, str) or v not in tensors:
                raise ValueError(f"{where}: refers to tensor {v!r}, which the file does not hold")
            if v in used:
                raise ValueError(f"{where}: tensor {v!r} is referred to twice")
            used.add(v)
            return tensors[v]
        if tag == "__dict__":
            if not isinstance(v, list) or not all(
                isinstance(kv, list) and len(kv) == 2 and isinstance(kv[0], (str, int)) for kv in v
            ):
                raise ValueError(f"{where}: __dict__ must be a list of [key, value] pairs")
            return {k: _decode(x, tensors, f"{where}/{k}", used) for k, x in v}
        if tag == "__tuple__":
            if not isinstance(v, list):
                raise ValueError(f"{where}: __tuple__ must be a list")
            return tuple(_decode(x, tensors, f"{where}/{i}", used) for i, x in enumerate(v))
        if tag == "__float__":
            if v not in ("nan", "inf", "-inf"):
                raise ValueError(f"{where}: __float__ must be 'nan', 'inf' or '-inf', got {v!r}")
            return float(v)
        raise ValueError(f"{where}: unknown tag {tag!r}")
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    raise ValueError(f"{where}: unexpected {type(obj).__name__}")  # pragma: no cover


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
    path = os.fspath(path)
    entries, meta = st.read(path)
    meta = meta or {}
    tensors = {name: st.to_array(f"{path}: tensor {name!r}", e) for name, e in entries.items()}
    if _KEY not in meta:
        return tensors
    try:
        saved = st.load_json(meta[_KEY], _MAX_TREE_DEPTH)
        if not isinstance(saved, dict) or saved.get("format") != _FORMAT or "tree" not in saved:
            raise ValueError(f"expected format {_FORMAT} with a tree")
        tree = _decode(saved["tree"], tensors, "", set())
    except (ValueError, RecursionError) as e:
        raise ValueError(f"{path}: malformed {_KEY!r} metadata ({e})") from None
    if not isinstance(tree, dict):
        raise ValueError(f"{path}: malformed {_KEY!r} metadata (the tree is not a dict)")
    return tree
