"""The command line's own commands (info, bench): output and user errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import slimgrad
from slimgrad import bench
from slimgrad.cli import main


def test_bench_core_runs_and_writes_json(tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert (
        main(["bench", "--suite", "core", "--size", "1000", "--repeats", "1", "--json", str(out)])
        == 0
    )
    printed = capsys.readouterr().out
    assert "stream probe" in printed and "vs ours" in printed
    report = json.loads(out.read_text())
    cases = {(r["case"], r["impl"]) for r in report["results"]}
    assert ("stream probe", "slimgrad") in cases and ("axpy_ float32", "numpy p += a*g") in cases
    ours = [r for r in report["results"] if r["impl"] == "slimgrad"]
    assert all(r["ratio"] == 1.0 and r["seconds"] > 0 for r in ours)
    assert report["environment"]["slimgrad"]["isa_active"]
    # called with a list, main runs in this process: no re-run with OpenBLAS's spin cut
    assert report["environment"]["openblas_thread_timeout"] == os.environ.get(
        "OPENBLAS_THREAD_TIMEOUT", os.environ.get("GOTO_THREAD_TIMEOUT")
    )


def _clean_env(**extra: str) -> dict[str, str]:
    drop = ("OPENBLAS_THREAD_TIMEOUT", "GOTO_THREAD_TIMEOUT", "OPENBLAS_NUM_THREADS")
    return {**{k: v for k, v in os.environ.items() if k not in drop}, **extra}


def _program_bench(tmp_path, *flags: str, **env: str) -> tuple[dict, str]:
    """(the environment `slimgrad bench` records, its first line), run as the program."""
    out = tmp_path / "bench.json"
    run = subprocess.run(
        [sys.executable, "-m", "slimgrad", "bench", "--suite", "core", "--size", "1000"]
        + ["--repeats", "1", "--json", str(out), *flags],
        env=_clean_env(**env),
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, run.stderr
    return json.loads(out.read_text())["environment"], run.stdout.splitlines()[0]


def test_program_bench_cuts_openblas_idle_spin_unless_the_user_chose(tmp_path):
    env, first = _program_bench(tmp_path)
    assert env["openblas_thread_timeout"] == "20" and "OPENBLAS_THREAD_TIMEOUT=20" in first
    assert (
        _program_bench(tmp_path, OPENBLAS_THREAD_TIMEOUT="24")[0]["openblas_thread_timeout"] == "24"
    )
    assert _program_bench(tmp_path, GOTO_THREAD_TIMEOUT="22")[0]["openblas_thread_timeout"] == "22"


@pytest.mark.skipif("avx2" not in slimgrad.available_isas(), reason="no AVX2 level here")
def test_program_bench_like_avx2_runs_every_library_at_avx2(tmp_path):
    env, first = _program_bench(tmp_path, "--like", "avx2")
    assert env["slimgrad"]["isa_active"] == "avx2" and "(avx2, " in first
    assert env["like"] == bench.LIKE["avx2"]  # what the re-run process had
    assert env["openblas_thread_timeout"] == "20"


@pytest.mark.skipif(slimgrad.active_isa() == "avx2", reason="the best level here is avx2")
def test_bench_like_refuses_to_measure_at_another_level(capsys):
    # called with a list, main runs in this process: no re-run, so the level
    # is not the one asked for, and nothing is measured under a wrong label
    assert main(["bench", "--suite", "core", "--size", "1000", "--like", "avx2"]) == 2
    captured = capsys.readouterr()
    assert "stream probe" not in captured.out
    assert captured.err.startswith(
        f"slimgrad bench: error: --like avx2: slimgrad runs at level {slimgrad.active_isa()}"
    )


def _blas_name() -> str:
    try:
        return str(np.show_config(mode="dicts")["Build Dependencies"]["blas"]["name"])
    except (TypeError, KeyError):  # NumPy < 1.26 prints only
        return ""


def _idle_spin_seconds(timeout: str) -> float:
    """CPU seconds the process burns in a 90 ms sleep right after one threaded product."""
    code = (
        "import time, numpy as np\n"
        "x = np.ones((512, 512), np.float32)\n"
        "x @ x\n"
        "cpu = time.process_time()\n"
        "time.sleep(0.09)\n"
        "print(time.process_time() - cpu)\n"
    )
    env = _clean_env(OPENBLAS_NUM_THREADS="2", OPENBLAS_THREAD_TIMEOUT=timeout)
    run = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    return float(run.stdout)


@pytest.mark.skipif("openblas" not in _blas_name(), reason="NumPy is not built on OpenBLAS")
@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="one core: OpenBLAS starts no worker threads")
def test_openblas_honours_the_timeout_the_program_sets():
    # The premise of _rerun_with_bench_environment: OpenBLAS's workers spin ~0.1 s after a
    # product by default (2^28 cycles), ~0.4 ms with the program's value.
    # (measured here: 44-51 ms of CPU against 0.1-3 ms, on a quiet and a busy
    # machine; the 90 ms leave room for the spinner's smaller share of a core
    # when the machine is loaded)
    assert _idle_spin_seconds("20") < 0.01 < 0.02 < _idle_spin_seconds("28")


@pytest.mark.parametrize(
    "flag, value", [("--size", "0"), ("--size", "-5"), ("--repeats", "0"), ("--repeats", "x")]
)
def test_bench_rejects_bad_numbers_naming_the_flag(flag, value, capsys):
    with pytest.raises(SystemExit) as info:
        main(["bench", flag, value])
    assert info.value.code == 2
    assert f"argument {flag}: expected an integer >= 1, got '{value}'" in capsys.readouterr().err


def test_bench_unwritable_json_fails_before_measuring(capsys):
    assert main(["bench", "--json", "/proc/no/such/dir/out.json"]) == 2
    captured = capsys.readouterr()
    assert "stream probe" not in captured.out
    assert captured.err.strip() == (
        "slimgrad bench: error: --json /proc/no/such/dir/out.json: cannot write "
        "(No such file or directory)"
    )


def test_info_json(capsys):
    assert main(["info", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert set(info) >= {"version", "isa_active", "openmp", "threads"}
