"""The ``slimgrad`` command line.

``info`` and ``bench`` live here; the other commands belong to their areas
and are found through COMMANDS: a module with ``configure(parser)`` and
``run(args) -> int``. User mistakes (bad paths, bad values) end in one line
on stderr and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import shlex
import sys
from collections.abc import Sequence

from .errors import UsageError

__all__ = ["COMMANDS", "UsageError", "build_parser", "main"]

# command -> module providing configure(parser) and run(args)
COMMANDS = {
    "demo": "slimgrad.demo",
    "quantize": "slimgrad.quant.cli",
    "prune": "slimgrad.prune.cli",
    "compress": "slimgrad.compress.cli",
}

# OpenBLAS's idle spin in `slimgrad bench`: 2^20 time-stamp cycles, ~0.4 ms at
# 2.6 GHz (OpenBLAS's default is 2^28, ~0.1 s). See _rerun_with_bench_environment.
OPENBLAS_THREAD_TIMEOUT = "20"


def _rerun_with_bench_environment(like: str | None = None) -> None:
    """Run this program again with NumPy's OpenBLAS threads idling ~0.4 ms, not 0.1 s
    (and, with ``like``, every library held to that instruction set).

    The bench alternates NumPy's products and our threaded kernels. After each
    product OpenBLAS's workers spin for 2^28 cycles (~0.1 s) before they
    sleep, and even when ``bench.settle`` waits that out, our 2-thread kernels
    timed next ran up to 2x slower (measured; NumPy's own times do not change
    with the shorter spin: docs/architecture.md, "Threads of other
    libraries"). OpenBLAS reads ``OPENBLAS_THREAD_TIMEOUT`` once, when NumPy
    loads it, long before this point: hence a new process (``exec``, the same
    command line) with the variable set. A value the user set (or
    ``GOTO_THREAD_TIMEOUT``) wins; no re-run off POSIX. With ``like``
    (``--like avx2``) the new process also gets ``bench.LIKE[like]``, which
    every library reads once as it loads too.
    """
    from . import bench

    if os.name != "posix" or not (sys.executable and sys.orig_argv):
        return
    wanted = dict(bench.LIKE[like]) if like else {}
    if bench.openblas_thread_timeout() is None:
        wanted["OPENBLAS_THREAD_TIMEOUT"] = OPENBLAS_THREAD_TIMEOUT
    if all(os.environ.get(key) == value for key, value in wanted.items()):
        return
    env = dict(os.environ, **wanted)
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, sys.orig_argv, env)


def _info(args: argparse.Namespace) -> int:
    from ._runtime import build_info

    info = build_info()
    if args.json:
        print(json.dumps(info, indent=2))
    else:
        width = max(map(len, info))
        for key, value in info.items():
            shown = ", ".join(value) if isinstance(value, list) else value
            print(f"{key:<{width}}  {shown}")
    return 0


def _bench(args: argparse.Namespace) -> int:
    from . import bench

    suites = tuple(bench.SUITES) if args.suite == "all" else (args.suite,)
    if args.json:  # fail now, not after minutes of measuring
        try:
            open(args.json, "a").close()
        except OSError as e:
            raise UsageError(f"--json {args.json}: cannot write ({e.strerror})") from None
    env = bench.environment()
    like = bench.LIKE.get(args.like, {})
    if like:
        if env["slimgrad"]["isa_active"] != args.like:
            raise UsageError(
                f"--like {args.like}: slimgrad runs at level {env['slimgrad']['isa_active']} "
                f"(this CPU or build has no {args.like} level, or the command did not re-run)"
            )
        env["like"] = {key: os.environ.get(key) for key in like}
    print(
        f"slimgrad bench on {env.get('cpu', '?')}: slimgrad {env['slimgrad']['version']} "
        f"({env['slimgrad']['isa_active']}, {env['slimgrad']['threads']} threads), "
        f"numpy {env['numpy']} (OPENBLAS_THREAD_TIMEOUT={env['openblas_thread_timeout']}), "
        f"torch {env['torch']}"
    )
    if like:
        shown = " ".join(f"{key}={shlex.quote(value)}" for key, value in like.items())
        print(f"--like {args.like}: {shown}\n{bench.LIKE_CAVEAT}")
    print(
        "median of interleaved repeats; "
        "'vs ours' = peer time / slimgrad time (> 1: slimgrad faster)"
    )
    results = []
    for suite in suites:
        rows = list(bench.run_suite(suite, args.size, repeats=args.repeats))
        print(f"\n== {suite} ==")
        print(bench.format_table(rows))
        results += rows
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"environment": env, "results": [r.__dict__ for r in results]}, f, indent=2)
        print(f"\nwrote {args.json}")
    return 0


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    from . import bench
    from ._version import __version__

    parser = argparse.ArgumentParser(
        prog="slimgrad", description="Fast training and compression kernels on NumPy buffers."
    )
    parser.add_argument("--version", action="version", version=f"slimgrad {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("info", help="print version, compiler, ISA levels, OpenMP, threads")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(run=_info)

    p = sub.add_parser("bench", help="time kernels side by side with NumPy / torch / others")
    p.add_argument("--suite", default="all", choices=(*bench.SUITES, "all"))
    p.add_argument(
        "--size", type=_positive_int, default=None, help="problem size (suite default if omitted)"
    )
    p.add_argument(
        "--repeats", type=_positive_int, default=7, help="interleaved repeats per case (median)"
    )
    p.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    p.add_argument(
        "--like",
        choices=tuple(bench.LIKE),
        default=None,
        help="run slimgrad at that level and cap the peers' libraries to it where they allow "
        "(an AVX2-only CPU, approximately: same memory and clocks)",
    )
    p.set_defaults(run=_bench)

    for name, module_name in COMMANDS.items():
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            continue  # area not built into this version
        p = sub.add_parser(name, help=(module.__doc__ or "").strip().splitlines()[0])
        module.configure(p)
        p.set_defaults(run=module.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """The program (``argv`` None: ``sys.argv``), or a call with a list of arguments.

    As the program, ``bench`` first re-runs itself with OpenBLAS's idle spin
    cut (``_rerun_with_bench_environment``; with ``--like``, the libraries capped too); a
    call with ``argv`` runs in this process as it is.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    if argv is None and args.command == "bench":
        _rerun_with_bench_environment(args.like)
    try:
        return int(args.run(args) or 0)
    except (UsageError, ValueError, TypeError, OSError, KeyError) as e:
        message = e.args[0] if isinstance(e, KeyError) and e.args else e
        print(f"slimgrad {args.command}: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
