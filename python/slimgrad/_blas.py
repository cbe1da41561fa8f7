"""NumPy's BLAS threads, held to one where slimgrad's own threads need the cores."""

from __future__ import annotations

from typing import Any

_BLAS_CONTROLLER: list[Any] = []  # threadpoolctl's, made once (it scans the loaded libraries)


def blas_one_thread() -> Any:
    """A context in which NumPy's BLAS runs on one thread (threadpoolctl).

    For NumPy products between slimgrad's threaded kernels: OpenBLAS's workers
    spin for ~0.1 s after each product they share, and slimgrad's threads then
    share the cores with them (docs/architecture.md, "Threads of other
    libraries"). Measured: GPTQ 5x and AWQ's search 2.7x slower with a 2-thread
    OpenBLAS on a loaded 2-core machine (docs/compress.md, "Speed"), Muon's
    step 15-30x.
    """
    if not _BLAS_CONTROLLER:
        from threadpoolctl import ThreadpoolController

        _BLAS_CONTROLLER.append(ThreadpoolController())
    return _BLAS_CONTROLLER[0].limit(limits=1, user_api="blas")
