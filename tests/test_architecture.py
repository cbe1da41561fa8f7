"""The layers of docs/architecture.md: every import inside the package points down.

Reads each module's AST (imports inside functions included, since a lazy
import is still a dependency) and refuses an import of a higher layer or of
another area of the same layer, e.g. a library module importing
``slimgrad.cli`` or the root package.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "python" / "slimgrad"

# Area (first name below slimgrad) -> layer; the table of docs/architecture.md.
LAYERS = {
    "_core": 0,
    "_version": 0,
    "errors": 0,
    "_runtime": 1,
    "_safetensors": 1,
    "_report": 1,
    "_second_order": 1,
    "optim": 2,
    "schedule": 2,
    "nn": 2,
    "prune": 2,
    "quant": 2,
    "ops": 2,
    "checkpoint": 2,
    "distributed": 3,
    "distill": 4,
    "models": 4,
    "torch": 4,
    "compress": 5,
    "_cli_common": 5,
    "demo": 6,
    "bench": 6,
    "cli": 7,
    "": 7,  # the root package slimgrad/__init__.py (a facade)
    "__main__": 8,  # python -m slimgrad
}
COMMANDS = 6  # an area's command module (prune/cli.py, quant/cli.py): with demo and bench


def _layer(module: str) -> int:
    area = _area(module)
    if module.endswith(".cli") and area != "cli":
        return COMMANDS
    return LAYERS[area]


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _area(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def _is_module(name: str) -> bool:
    """True if ``slimgrad.<...>`` names a module or package of the source tree."""
    path = PACKAGE.parent.joinpath(*name.split("."))
    return (
        path.with_suffix(".py").is_file()
        or path.with_suffix(".pyi").is_file()
        or (path / "__init__.py").is_file()
        or name == "slimgrad._core"  # the extension (stubbed by _core.pyi)
    )


def _root_names() -> dict[str, str]:
    """Names the root package imports (statically or for type checkers) -> their module."""
    names = {}
    for node in ast.walk(ast.parse((PACKAGE / "__init__.py").read_text())):
        if isinstance(node, ast.ImportFrom) and node.level == 1 and node.module:
            names.update({a.asname or a.name: f"slimgrad.{node.module}" for a in node.names})
    return names


def imported_modules(module: str, is_package: bool, source: str) -> list[tuple[int, str]]:
    """(line, slimgrad module) of every import of ``source``, the module ``module``.

    ``from slimgrad import name`` counts as an import of the module the root
    package takes ``name`` from (``use_isa``: ``slimgrad._runtime``); a plain
    ``import slimgrad`` is an import of the root package (which reaches every
    subpackage).
    """
    package = module if is_package else module.rpartition(".")[0]
    root = _root_names()
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            # "from . import x": x is a submodule, or a name of the package itself.
            for a in node.names:
                sub = f"{target}.{a.name}"
                if _is_module(sub):
                    found.append((node.lineno, sub))
                elif target == "slimgrad":
                    found.append((node.lineno, root.get(a.name, target)))
                else:
                    found.append((node.lineno, target))
    return [(line, t) for line, t in found if t == "slimgrad" or t.startswith("slimgrad.")]


def violations(module: str, is_package: bool, source: str) -> list[str]:
    """Imports of ``module`` that point up or sideways, as messages."""
    area = _area(module)
    if area not in LAYERS:
        return [
            f"{module}: area {area!r} is not in the layer table "
            "(tests/test_architecture.py, docs/architecture.md)"
        ]
    mine = _layer(module)
    out = []
    for line, target in imported_modules(module, is_package, source):
        to = _area(target)
        if to not in LAYERS:
            out.append(f"{module}:{line}: imports {target}, whose area {to!r} has no layer")
            continue
        theirs = _layer(target)
        # Down, or within the area (but never from a library module to its area's cli).
        if theirs < mine or (to == area and theirs <= mine):
            continue
        out.append(
            f"{module}:{line}: imports {target} (layer {theirs} {to or 'slimgrad'}) "
            f"from layer {mine} {area or 'slimgrad'}: imports must point down"
        )
    return out


def _sources() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def test_every_import_points_down():
    problems = []
    for path in _sources():
        problems += violations(_module_name(path), path.name == "__init__.py", path.read_text())
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize(
    ("module", "source", "expected"),
    [
        ("slimgrad.prune.cli", "from ..cli import UsageError", "imports slimgrad.cli (layer 7"),
        ("slimgrad.demo._pipeline", "import slimgrad", "imports slimgrad (layer 7"),
        (
            "slimgrad.optim._base",
            "from ..schedule import StepLR",
            "imports slimgrad.schedule (layer 2",
        ),
        ("slimgrad.prune._masks", "from . import cli", "imports slimgrad.prune.cli (layer 6"),
        (
            "slimgrad.nn._layers",
            "def f():\n    import slimgrad.distill",
            "imports slimgrad.distill (layer 4",
        ),
        ("slimgrad.quant._tensor", "from slimgrad import optim", "imports slimgrad.optim (layer 2"),
        ("slimgrad.newarea.x", "import numpy", "area 'newarea' is not in the layer table"),
    ],
)
def test_the_check_refuses_upward_and_sideways_imports(module, source, expected):
    found = violations(module, False, source)
    assert len(found) == 1 and expected in found[0], found


@pytest.mark.parametrize(
    ("module", "source"),
    [
        ("slimgrad.prune.cli", "from ..errors import UsageError\nfrom ..quant import io"),
        ("slimgrad.prune.cli", "from ._masks import nm_mask"),
        ("slimgrad.demo._pipeline", "from .. import num_threads\nfrom .. import nn"),
        ("slimgrad.optim._base", "from . import _state_dict\nfrom .._core import optim"),
        ("slimgrad.cli", "from . import bench"),
    ],
)
def test_the_check_accepts_downward_and_same_area_imports(module, source):
    assert violations(module, False, source) == []


def test_every_package_reexports_with_all():
    # Naming convention: a package __init__ lists its public names in __all__,
    # and each of them exists (a static import or a definition).
    for init in sorted(PACKAGE.rglob("__init__.py")):
        tree = ast.parse(init.read_text())
        declared = [
            n
            for n in tree.body
            if isinstance(n, ast.Assign)
            and any(getattr(t, "id", "") == "__all__" for t in n.targets)
        ]
        assert declared, f"{init.relative_to(PACKAGE.parent)}: no __all__"
        names = ast.literal_eval(declared[0].value)
        defined = set()
        for n in tree.body:
            if isinstance(n, ast.ImportFrom):
                defined |= {a.asname or a.name for a in n.names}
            elif isinstance(n, (ast.FunctionDef, ast.ClassDef)):
                defined.add(n.name)
            elif isinstance(n, ast.Assign):
                defined |= {t.id for t in n.targets if isinstance(t, ast.Name)}
        lazy = {"optim", "schedule", "nn", "prune", "quant", "distill", "ops", "save", "load"}
        missing = set(names) - defined - (lazy if init.parent == PACKAGE else set())
        assert not missing, (
            f"{init.relative_to(PACKAGE.parent)}: __all__ names {sorted(missing)} not defined"
        )
