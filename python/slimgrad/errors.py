"""Exceptions shared by slimgrad's modules (a leaf: it imports nothing of slimgrad).

``UsageError`` lives here, not in :mod:`slimgrad.cli`, so that the modules
behind the commands (``prune/cli.py``, ``quant/cli.py``, the demo) can raise
it without importing the command line: libraries point down, never up.
"""

from __future__ import annotations

__all__ = ["UsageError"]


class UsageError(Exception):
    """A user mistake (bad path, bad value): the command line reports it as one
    line on stderr and exits with status 2, never a traceback."""
