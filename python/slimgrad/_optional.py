"""Optional dependencies: import one, or fail with a message naming the extra that
installs it (a leaf module: it imports nothing of slimgrad)."""

from __future__ import annotations

import importlib
from types import ModuleType

__all__ = ["require"]


def require(module: str, message: str) -> ModuleType:
    """``importlib.import_module(module)``; if that fails, ``ImportError(message)``
    chained to the original error (``message`` says what to install)."""
    try:
        # The package first: a submodule already in sys.modules would be
        # returned even where its package is blocked (sys.modules[pkg] = None).
        importlib.import_module(module.partition(".")[0])
        return importlib.import_module(module)
    except ImportError as e:
        raise ImportError(message) from e
