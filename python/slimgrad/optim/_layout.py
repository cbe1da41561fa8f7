"""The placement rules of optimizer state, shared by every optimizer (a mixin of Optimizer)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from ._bucket import empty_at, state_offset
from ._checks import HALF_DTYPES, bfloat16_type, normalize_state_dtype

__all__ = ["StateLayout"]


class StateLayout:
    """dtype and placement of state arrays (``Optimizer``'s hooks for subclasses)."""

    @staticmethod
    def state_dtype(param: np.ndarray) -> np.dtype:
        """dtype of state arrays for ``param``: float32 for float16/bfloat16, else the param's."""
        return np.dtype(np.float32) if param.dtype.itemsize == 2 else param.dtype

    @classmethod
    def state_dtype_for(
        cls, group: Mapping[str, Any], param: np.ndarray, label: str = "params"
    ) -> np.dtype:
        """dtype of state arrays for ``param`` under the group's ``state_dtype`` option
        (absent or None: :meth:`state_dtype`). ``ValueError`` for a bad value or
        a float64 param with a float32/bfloat16 state request."""
        sd = normalize_state_dtype(group.get("state_dtype"))
        if sd is None:
            return cls.state_dtype(param)
        if param.dtype == np.float64:
            raise ValueError(
                f"state_dtype: {sd!r} needs float32, float16 or bfloat16 params; "
                f"{label} is float64 (its state is float64: use state_dtype=None)"
            )
        return np.dtype(np.float32) if sd == "float32" else np.dtype(bfloat16_type)

    @staticmethod
    def uses_master(group: Mapping[str, Any], param: np.ndarray) -> bool:
        """True if ``param`` gets a float32 master copy (float16/bfloat16 params,
        unless the group says ``master_weights=False``)."""
        return param.dtype in HALF_DTYPES and bool(group.get("master_weights", True))

    @classmethod
    def state_full(
        cls,
        param: np.ndarray,
        value: float = 0.0,
        group: Mapping[str, Any] | None = None,
    ) -> np.ndarray:
        """A state array for ``param``: its shape, ``state_dtype(param)`` (or, given
        the param's ``group``, :meth:`state_dtype_for`), filled with ``value``,
        placed at ``state_offset`` within a cache line (use it for state arrays
        of the param's shape)."""
        if group is None:
            dt, master = cls.state_dtype(param), True
        else:
            dt, master = cls.state_dtype_for(group, param), cls.uses_master(group, param)
        a = empty_at(param.shape, dt, state_offset(param, dt, master))
        a.fill(value)
        return a
