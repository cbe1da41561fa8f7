"""Optimizers with torch.optim semantics on NumPy arrays, stepped in C++.

The base class is :class:`slimgrad.optim.Optimizer` (see its module,
``slimgrad.optim._base``, for the subclass contract). The optimizers
themselves are being added.
"""

from __future__ import annotations

from ._base import Bucket, Optimizer

__all__ = ["Bucket", "Optimizer"]
