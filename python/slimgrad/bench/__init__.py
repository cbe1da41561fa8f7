"""Side-by-side benchmarks: ours next to what a user would pick instead.

A suite is one or more modules ``slimgrad.bench.<module>`` (see SUITES), each
with ``DEFAULT_SIZE`` and ``cases(size) -> Iterable[Case]``. Each case holds one callable per
implementation ("slimgrad", "numpy", "torch", ...). The harness times them
interleaved in one process (every repeat runs each implementation once, in
rotating order, so drift and noise from other tenants hit all of them alike),
reports the median and the ratio to ours (> 1 means slimgrad is faster), and
the throughput when the case says how many bytes one call moves.
"""

from __future__ import annotations

import importlib
import os
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from statistics import median
from typing import Any

__all__ = [
    "Case",
    "OURS",
    "PROBE",
    "Result",
    "SUITES",
    "environment",
    "format_table",
    "measure",
    "openblas_thread_timeout",
    "optional_import",
    "run_suite",
    "settle",
    "suite_cases",
]

# suite name (as given to `slimgrad bench --suite`) -> the modules it runs
SUITES = {
    "core": ("core",),
    "optim": ("optim", "optim_extra", "torch_optim", "muon"),
    "quant": ("quant", "qgemm", "kquant"),
    "qgemm": ("qgemm",),  # the quantized GEMM cases of "quant" alone
    "prune": ("prune",),
    "sparse": ("sparse",),
    "distill": ("distill",),
    "nn": ("nn",),
    "distributed": ("distributed",),  # launches mpiexec -n 2 itself
    "calib": ("calib", "compress"),
}
OURS = "slimgrad"
PROBE = "stream probe"


@dataclass
class Case:
    """One benchmark: the same work done by several implementations.

    ``bytes`` is the memory one call must read plus write (0 if not
    meaningful); ``setup`` (optional) runs before every timed batch, untimed;
    ``prelude`` (optional) before every call, untimed: the work a real
    program does between two calls, e.g. a torch forward and backward that
    leave torch's threads spinning when the optimizer steps. ``calls``
    (optional) fixes the calls per timed batch (default: as many as fill
    ``target`` seconds); a module sets it for all its cases with
    ``CALLS_PER_BATCH``.
    """

    name: str
    impls: Mapping[str, Callable[[], object]]
    bytes: int = 0
    setup: Callable[[], object] | None = None
    prelude: Callable[[], object] | None = None
    note: str = ""
    calls: int | None = None
    # Samples measured elsewhere (e.g. inside an mpiexec job): reported as they are.
    measured: dict[str, list[float]] | None = None


@dataclass
class Result:
    suite: str
    case: str
    impl: str
    seconds: float  # median time of one call
    gbps: float | None
    ratio: float | None  # this impl's time / ours: > 1 means ours is faster
    samples: list[float] = field(default_factory=list)
    note: str = ""


def _time_batch(
    fn: Callable[[], object], inner: int, prelude: Callable[[], object] | None = None
) -> float:
    if prelude is None:
        start = time.perf_counter()
        for _ in range(inner):
            fn()
        return (time.perf_counter() - start) / inner
    total = 0.0
    for _ in range(inner):
        prelude()
        start = time.perf_counter()
        fn()
        total += time.perf_counter() - start
    return total / inner


# Settling between batches: poll every SETTLE_POLL s until the process used
# less than SETTLE_IDLE of CPU in one poll, for at most SETTLE_MAX s.
SETTLE_POLL, SETTLE_IDLE, SETTLE_MAX = 0.005, 0.1, 0.5


def settle() -> float:
    """Wait until this process's threads are idle; returns the seconds waited.

    After each product OpenBLAS's worker threads spin for about 0.1 s
    (measured here: 105 ms of CPU in a 0.5 s sleep after one ``x.T @ x``), and
    an OpenMP team without ``OMP_WAIT_POLICY=PASSIVE`` spins too. Timed right
    after, the next implementation would share its cores with those spinners:
    on 2 cores that slows any 2-thread kernel up to 2x (docs/architecture.md,
    "Threads of other libraries, and benchmarks"). So every batch starts on a
    process at rest.
    """
    start = time.perf_counter()
    while time.perf_counter() - start < SETTLE_MAX:
        cpu = time.process_time()
        time.sleep(SETTLE_POLL)
        if time.process_time() - cpu < SETTLE_IDLE * SETTLE_POLL:
            break
    return time.perf_counter() - start


def measure(
    case: Case, repeats: int = 7, target: float = 0.02, rest: bool = True
) -> dict[str, list[float]]:
    """Per implementation, ``repeats`` samples of the mean time of one call.

    A batch of calls lasts about ``target`` seconds so timer resolution and
    call overhead do not dominate small cases (``case.calls``, when set, fixes
    the calls per batch instead). With ``rest`` every batch
    starts after :func:`settle`: no implementation is timed while the
    previous one's idle threads still spin on the cores it needs.
    """
    names = list(case.impls)
    inner: dict[str, int] = {}
    for name in names:  # warm-up, and size the batch
        if case.setup:
            case.setup()
        one = max(_time_batch(case.impls[name], 1, case.prelude), 1e-7)
        inner[name] = case.calls or max(1, min(10_000, int(target / one)))
    samples: dict[str, list[float]] = {name: [] for name in names}
    for r in range(repeats):
        for k in range(len(names)):
            name = names[(r + k) % len(names)]
            if case.setup:
                case.setup()
            if rest:
                settle()
            samples[name].append(_time_batch(case.impls[name], inner[name], case.prelude))
    return samples


def suite_cases(suite: str, size: int | None = None) -> Iterator[Case]:
    """The cases of every module of ``suite``, each at ``size`` or its module's default."""
    for name in SUITES[suite]:
        module = importlib.import_module(f"{__name__}.{name}")
        calls = getattr(module, "CALLS_PER_BATCH", None)
        for case in module.cases(size or module.DEFAULT_SIZE):
            yield case if case.calls or not calls else replace(case, calls=calls)


def run_suite(suite: str, size: int | None = None, repeats: int = 7) -> Iterator[Result]:
    cases: Iterable[Case] = suite_cases(suite, size)
    for case in cases:
        samples = case.measured or measure(case, repeats=repeats)
        ours = median(samples[OURS]) if OURS in samples else None
        for impl, times in samples.items():
            t = median(times)
            yield Result(
                suite=suite,
                case=case.name,
                impl=impl,
                seconds=t,
                gbps=case.bytes / t / 1e9 if case.bytes else None,
                ratio=t / ours if ours else None,
                samples=times,
                note=case.note,
            )


def format_table(results: list[Result]) -> str:
    """A plain-text table; ours first in each case, then the peers."""
    probe = next((r.gbps for r in results if r.case == PROBE and r.impl == OURS), None)
    header = f"{'case':<34} {'impl':<22} {'median':>11} {'GB/s':>7} {'vs ours':>8}"
    if probe:
        header += f" {'of probe':>8}"
    lines = [header, "-" * len(header)]
    for r in results:
        t = r.seconds
        shown = f"{t * 1e3:8.3f} ms" if t >= 1e-4 else f"{t * 1e6:8.2f} us"
        row = f"{r.case:<34} {r.impl:<22} {shown:>11} "
        row += f"{r.gbps:7.1f}" if r.gbps is not None else f"{'':>7}"
        row += f" {r.ratio:7.2f}x" if r.ratio is not None else f" {'':>8}"
        if probe and r.gbps is not None:
            row += f" {100 * r.gbps / probe:7.0f}%"
        lines.append(row)
    return "\n".join(lines)


# `slimgrad bench --like avx2`: an AVX2-only x86-64 CPU (AMD Zen 1-3, Intel
# client chips), approximately, on an AVX-512 one. Our kernels at level avx2,
# and each peer's library held to its AVX2 code where it has a switch: the
# variables are read once, as the libraries load, so the command runs itself
# again with them set (cli._rerun_with_bench_environment).
LIKE: dict[str, dict[str, str]] = {
    "avx2": {
        "SLIMGRAD_ISA": "avx2",
        "OPENBLAS_CORETYPE": "Haswell",  # NumPy's OpenBLAS: its AVX2 sgemm / sgemv
        "NPY_DISABLE_CPU_FEATURES": "X86_V4 AVX512_ICL AVX512_SPR",  # NumPy's own loops
        "ATEN_CPU_CAPABILITY": "avx2",  # torch's ATen kernels
        "MKL_ENABLE_INSTRUCTIONS": "AVX2",  # torch's MKL
        "ONEDNN_MAX_CPU_ISA": "AVX2",  # torch's oneDNN
    }
}
LIKE_CAVEAT = (
    "peers without a switch keep this CPU's code: torch's dynamic int8 (fbgemm) still uses "
    "AVX-512 / VNNI; memory, caches and clocks are this machine's"
)


def openblas_thread_timeout() -> str | None:
    """OpenBLAS's idle spin as this process's environment sets it (OpenBLAS read
    it when NumPy loaded it; ``slimgrad bench`` sets 20), or None: its default."""
    return os.environ.get("OPENBLAS_THREAD_TIMEOUT", os.environ.get("GOTO_THREAD_TIMEOUT"))


def environment() -> dict[str, Any]:
    """What the figures depend on: our build, NumPy's and torch's versions and threads."""
    import numpy as np

    from .._runtime import build_info

    env: dict[str, object] = {"slimgrad": build_info(), "numpy": np.__version__}
    env["openblas_thread_timeout"] = openblas_thread_timeout()
    try:
        import torch

        env["torch"] = torch.__version__
        env["torch_threads"] = torch.get_num_threads()
    except ImportError:
        env["torch"] = None
    try:
        import platform

        with open("/proc/cpuinfo") as f:
            names = (ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name"))
            model = next(names, "")
        env["cpu"] = model or platform.processor()
    except OSError:
        pass
    return env


def optional_import(name: str):
    """The module, or None when it is not installed (peers are optional)."""
    try:
        return importlib.import_module(name)
    except ImportError:
        return None
