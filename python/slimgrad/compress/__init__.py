"""Whole-model compression: calibrated methods per layer, sensitivity, and a
mixed-precision allocator under a byte budget (``slimgrad compress``)."""

from __future__ import annotations

from ._allocate import allocate

__all__ = ["allocate"]
