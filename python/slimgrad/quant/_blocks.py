"""Argument checks shared by the block formats (``gguf.py``: Q4_0 ... Q8_0,
``kquants.py``: Q2_K ... Q6_K): one message per mistake, whichever format."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np


def type_name(type: Any, types: Sequence[str]) -> str:
    """The format name of ``type`` (a name or a ``gguf.GGMLQuantizationType``)."""
    name = getattr(type, "name", type)
    if name not in types:
        raise ValueError(f"type: expected one of {', '.join(map(repr, types))}, got {type!r}")
    return str(name)


def check_float_array(w: Any, label: str) -> None:
    """``TypeError`` naming ``label`` unless ``w`` is a floating-point ndarray."""
    if not isinstance(w, np.ndarray) or (w.dtype.kind != "f" and w.dtype.name != "bfloat16"):
        given = getattr(w, "dtype", w.__class__.__name__)
        raise TypeError(f"{label}: expected a floating-point NumPy array, got {given}")


def nonfinite_error(label: str, values: np.ndarray, flat_index: int) -> ValueError:
    """The error for a NaN/inf at ``flat_index`` of ``values`` (C order)."""
    where = tuple(int(i) for i in np.unravel_index(flat_index, values.shape))
    return ValueError(
        f"{label}: non-finite value {values.reshape(-1)[flat_index]} at index {where}"
    )


def blocks_shape(
    data: Any, name: str, type_size: int, block_size: int, shape: tuple[int, ...] | None
) -> tuple[int, ...]:
    """The value shape ``data`` (uint8 blocks of format ``name``) decodes to.

    ``shape`` given: checked against the byte count; None: ``data``'s shape
    with the last axis converted from bytes to values.
    """
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8:
        given = getattr(data, "dtype", data.__class__.__name__)
        raise TypeError(f"data: expected a uint8 NumPy array, got {given}")
    if shape is None:
        if data.ndim == 0 or data.shape[-1] % type_size:
            raise ValueError(
                f"data: expected a last axis that is a multiple of {type_size} bytes ({name}), "
                f"got shape {data.shape}"
            )
        shape = (*data.shape[:-1], data.shape[-1] // type_size * block_size)
    shape = tuple(int(s) for s in shape)
    n = math.prod(shape)
    if n % block_size or data.size != n // block_size * type_size:
        raise ValueError(f"data: {data.size} bytes do not hold {name} blocks of shape {shape}")
    return shape
