"""Typing of the public API: py.typed, the stubs of the compiled module, and
mypy --strict on a user's script (wrong argument types must be caught)."""

from __future__ import annotations

import ast
import inspect
import os
import runpy
import shutil
import subprocess
import sys
import textwrap
import types
from pathlib import Path

import pytest
import slimgrad
from slimgrad import _core

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "python" / "slimgrad"


# ------------------------------------------------------------ py.typed
def test_package_is_marked_typed_and_ships_its_stubs():
    # scikit-build-core puts every file of python/slimgrad that git does not
    # ignore into the wheel: the markers must exist and must not be ignored.
    files = [
        PACKAGE / "py.typed",
        PACKAGE / "_core.pyi",
        *sorted((PACKAGE / "_core_stubs").glob("*.pyi")),
    ]
    assert all(f.is_file() for f in files)
    assert Path(slimgrad.__file__).parent.joinpath("py.typed").is_file()
    if shutil.which("git") and (ROOT / ".git").exists():
        ignored = subprocess.run(
            ["git", "check-ignore", *map(str, files)], cwd=ROOT, capture_output=True, text=True
        )
        assert ignored.stdout == "", f"ignored by git, so left out of the wheel: {ignored.stdout}"


# --------------------------------------------------------------- stubs
def _stub_names(path: Path) -> set[str]:
    """Top-level functions, classes and annotated constants of a stub file."""
    names = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
    return names - {"__all__"}


def _module_names(module: types.ModuleType) -> set[str]:
    return {
        n
        for n, v in vars(module).items()
        if not n.startswith("__") and not isinstance(v, types.ModuleType)
    }


# The module itself and every submodule it has (a new one needs its stub too).
SUBMODULES = ["", *sorted(n for n, v in vars(_core).items() if isinstance(v, types.ModuleType))]


@pytest.mark.parametrize("sub", SUBMODULES)
def test_stub_lists_exactly_the_functions_of_the_built_module(sub):
    module = getattr(_core, sub) if sub else _core
    stub = PACKAGE / "_core_stubs" / f"{sub}.pyi" if sub else PACKAGE / "_core.pyi"
    assert stub.is_file(), f"{stub} missing: run tools/dev-build && tools/gen-stubs"
    built, stubbed = _module_names(module), _stub_names(stub)
    assert built == stubbed, (
        f"_core{'.' + sub if sub else ''}: stub out of date (run tools/dev-build && "
        f"tools/gen-stubs): only built {sorted(built - stubbed)}, only in stub "
        f"{sorted(stubbed - built)}"
    )


def test_stub_signatures_match_the_built_module():
    # The full check: regenerate with pybind11-stubgen and compare every line
    # (argument names and types, not only the names above).
    pytest.importorskip("pybind11_stubgen")
    result = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "gen-stubs"), "--check"],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr


# ---------------------------------------------------------------- mypy
GOOD = """
    import numpy as np

    import slimgrad
    from slimgrad import quant
    from slimgrad.optim import AdamW, functional
    from slimgrad.schedule import StepLR

    w = np.zeros((4, 32), np.float32)
    m, v = np.zeros_like(w), np.zeros_like(w)
    opt = AdamW({"w": w}, lr=1e-3, weight_decay=0.01)
    sched = StepLR(opt, step_size=10, gamma=0.5)
    applied: bool = opt.step({"w": np.ones_like(w)})
    sched.step()
    qt = quant.quantize(w, 8, granularity="channel")
    out: np.ndarray = functional.adamw_(w, np.ones_like(w), m, v, step=1, lr=1e-3, seed=1)
    sgd = slimgrad.optim.SGD([w], lr=0.1, nesterov=False, seed=3, rounding="stochastic")
"""

# Each bad line, and the words mypy's message must contain.
BAD = {
    'opt = AdamW({"w": w}, lr="fast")': 'Argument "lr" to "AdamW" has incompatible type "str"',
    'sched = StepLR(opt, step_size="ten")': 'Argument "step_size" to "StepLR" has incompatible type "str"',
    'qt = quant.quantize(w, bits="eight")': 'Argument "bits" to "quantize" has incompatible type "str"',
    "functional.adam_(w, w, m, v, step=1, rounding=1)": 'Argument "rounding" to "adam_" has incompatible type "int"',
    'sgd = slimgrad.optim.SGD([w], lr="x")': 'Argument "lr" to "SGD" has incompatible type "str"',
    'functional.adamw_(w, w, m, v, step=1, beta1="x")': 'Argument "beta1" to "adamw_" has incompatible type "str"',
    # The shared keyword tail (optim/_keywords.py) is typed too.
    'opt = AdamW({"w": w}, seed="one")': 'Argument "seed" to "AdamW" has incompatible type "str"',
    'opt = AdamW({"w": w}, maximise=True)': 'Unexpected keyword argument "maximise" for "AdamW"',
}


def _mypy(tmp_path: Path, scripts: dict[str, str]) -> str:
    api = pytest.importorskip("mypy.api")
    for name, text in scripts.items():
        (tmp_path / name).write_text(textwrap.dedent(text))
    # The package as a user sees it once installed: its annotations and stubs
    # are used, errors inside it are not the user's (follow_imports = silent).
    config = tmp_path / "mypy.ini"
    config.write_text(
        textwrap.dedent(
            f"""
            [mypy]
            strict = True
            mypy_path = {PACKAGE.parent}
            cache_dir = {tmp_path / ".mypy_cache"}

            [mypy-slimgrad.*]
            follow_imports = silent
            """
        )
    )
    stdout, stderr, _ = api.run(
        ["--config-file", str(config), *(str(tmp_path / n) for n in scripts)]
    )
    return stdout + stderr


def test_mypy_strict_passes_a_correct_script_and_catches_wrong_argument_types(tmp_path):
    bad = textwrap.dedent(GOOD) + "\n".join(BAD) + "\n"
    out = _mypy(tmp_path, {"good.py": GOOD, "bad.py": bad})
    errors = [line for line in out.splitlines() if ": error:" in line]
    assert not [e for e in errors if "good.py" in e], out
    lines = bad.splitlines()
    for code, message in BAD.items():
        lineno = lines.index(code) + 1
        assert any(f"bad.py:{lineno}: error: {message}" in e for e in errors), (code, out)
    # Nothing else is reported: the stubs and annotations are clean for a user.
    assert len(errors) == len(BAD), out


def test_the_correct_script_runs(tmp_path):
    # The script mypy accepts is a real program (guards against a stale API).
    path = tmp_path / "good.py"
    path.write_text(textwrap.dedent(GOOD))
    runpy.run_path(str(path))


def test_optim_names_are_static():
    # No dynamic imports in optim/__init__: every public name is a plain import.
    tree = ast.parse(inspect.getsource(slimgrad.optim))
    imported = {
        a.asname or a.name for n in tree.body if isinstance(n, ast.ImportFrom) for a in n.names
    }
    # A star import re-exports its module's static __all__ (mypy reads it too).
    for n in tree.body:
        if isinstance(n, ast.ImportFrom) and n.names[0].name == "*":
            imported |= set(vars(slimgrad.optim)[n.module].__all__)
    assert set(slimgrad.optim.__all__) <= imported
    assert "importlib" not in inspect.getsource(slimgrad.optim)
    assert os.path.basename(slimgrad.optim.__file__) == "__init__.py"


def test_keyword_tails_are_declared_once_and_spelled_out():
    # An optimizer declaring its options (optim/_options.py) shows, in its
    # signature, the keyword tail of its keyword mixin (optim/_keywords.py),
    # keyword-only, last, in the shared order.
    from slimgrad import optim
    from slimgrad.optim._options import TAIL, Options

    declared = [getattr(optim, n) for n in optim.__all__]
    declared = [c for c in declared if isinstance(c, type) and issubclass(c, Options)]
    assert len(declared) >= 18
    for cls in declared:
        params = list(inspect.signature(cls).parameters.values())
        tail = [p.name for p in params if p.name in TAIL and p.kind is p.KEYWORD_ONLY]
        assert tail == sorted(tail, key=TAIL.index) and tail, cls
        assert [p.name for p in params[-len(tail) :]] == tail, cls
        assert "nonfinite" in tail, cls
