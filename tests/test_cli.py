"""The command line's own commands (info, bench): output and user errors."""

from __future__ import annotations

import json

import pytest
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
