"""ISA dispatch, thread count and build information."""

from __future__ import annotations

import contextlib
import os
import platform
import sys
from collections.abc import Iterator
from typing import Any

import numpy as np

from ._version import __version__


def _import_core() -> Any:
    """Import the extension, its OpenMP team waiting passively unless the user chose.

    With OpenMP's default (libgomp: spin 300000 rounds, milliseconds here,
    then sleep) our idle threads spin on the cores where NumPy's OpenBLAS
    runs next, while OpenBLAS's threads spin ~0.1 s after each of its
    products: in a
    calibration run (Linear forwards on NumPy, Hessians on our kernels, in
    turn) the two pools kept taking each other's cores, and ``calibrate`` on
    MiniLM took 4.6 s instead of 1.2 s (docs/architecture.md, "Threads of
    other libraries, and benchmarks"). libgomp reads the policy once, when
    this import loads it, so the variable is set for this import only:
    OpenMP runtimes loaded later (torch bundles its own) see the environment
    as it was. ``OMP_WAIT_POLICY`` or ``GOMP_SPINCOUNT`` set by the user win;
    a libgomp already loaded by another package keeps the policy it has.
    """
    chosen = "OMP_WAIT_POLICY" in os.environ or "GOMP_SPINCOUNT" in os.environ
    if not chosen:
        os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
    try:
        from . import _core as core
    finally:
        if not chosen:
            del os.environ["OMP_WAIT_POLICY"]
    return core


_core = _import_core()


def available_isas() -> list[str]:
    """Instruction-set levels this build has and this CPU can run, lowest first.

    Always starts with ``"scalar"`` (the reference kernels); ``"avx2"`` needs
    AVX2 + FMA + F16C (x86-64-v3), ``"avx512"`` the x86-64-v4 subset.
    """
    return list(_core.available_isas())


def active_isa() -> str:
    """The level kernels currently run on (the best available unless forced)."""
    return str(_core.active_isa())


MAX_THREADS = 4096  # far above any machine; keeps the count a C int


def _set_isa(name: str) -> None:
    if not isinstance(name, str):
        raise TypeError(f"isa: expected a str, got {type(name).__name__}")
    _core.set_active_isa(name)  # ValueError naming what is available


@contextlib.contextmanager
def use_isa(name: str) -> Iterator[str]:
    """Run the kernels on one ISA level inside a ``with`` block.

    Raises ``ValueError`` if ``name`` is unknown or not available here. The
    choice is process-wide (not per thread), like ``SLIMGRAD_ISA``, which
    sets it at import.
    """
    previous = active_isa()
    _set_isa(name)
    try:
        yield name
    finally:
        _core.set_active_isa(previous)


def get_num_threads() -> int:
    """Threads the kernels use (default: OpenMP's, i.e. the cores or ``OMP_NUM_THREADS``)."""
    return int(_core.get_num_threads())


def set_num_threads(n: int) -> None:
    """Set the kernels' thread count (``1 <= n <= 4096``, ``ValueError`` otherwise).

    Results do not depend on it: work is split in fixed chunks and reduced in
    a fixed order. It does not change other OpenMP users in the process.
    """
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)):
        raise TypeError(f"n: expected an int, got {type(n).__name__}")
    if not 1 <= n <= MAX_THREADS:
        raise ValueError(f"n: expected a thread count in [1, {MAX_THREADS}], got {n}")
    _core.set_num_threads(int(n))


@contextlib.contextmanager
def num_threads(n: int) -> Iterator[int]:
    """Use ``n`` threads inside a ``with`` block, then restore the previous count."""
    previous = get_num_threads()
    set_num_threads(n)
    try:
        yield n
    finally:
        set_num_threads(previous)


def cached_output_bytes() -> int:
    """Bytes of freed output arrays kept for reuse (see :func:`release_cached_outputs`)."""
    return int(_core.cached_output_bytes())


def release_cached_outputs() -> None:
    """Free the output blocks slimgrad keeps for reuse.

    Outputs of 1 MiB or more (masks, dequantized tensors, layer outputs and
    gradients) come from a cache of blocks freed by earlier outputs of the
    same byte size, so a loop does not fault fresh pages in on every call
    (4x on a 64 MiB dequantize here). At most ``SLIMGRAD_OUTPUT_CACHE_MB``
    (default 256; 0 turns the cache off) of freed blocks are kept, the oldest
    dropped first; this returns them all to the system now.
    """
    _core.release_cached_outputs()


def build_info() -> dict[str, Any]:
    """Version, compiler, ISA levels built / available / active, OpenMP and threads."""
    return {
        "version": __version__,
        "python": sys.version.split()[0],
        "platform": f"{platform.system()} {platform.machine()}",
        "compiler": str(_core.compiler),
        "isas_built": list(_core.built_isas()),
        "isas_available": available_isas(),
        "isa_active": active_isa(),
        "openmp": bool(_core.openmp_enabled()),
        "threads": get_num_threads(),
    }
