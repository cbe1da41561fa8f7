"""The layers of docs/architecture.md: every import inside the package points down.

Reads each module's AST (imports inside functions included, since a lazy
import is still a dependency) and refuses an import of a higher layer or of
another area of the same layer, e.g. a library module importing
``slimgrad.cli`` or the root package.
"""

from __future__ import annotations

import ast
import fnmatch
import re
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "python" / "slimgrad"

# Area (first name below slimgrad) -> layer; the table of docs/architecture.md.
LAYERS = {
    "_core": 0,
    "_version": 0,
    "errors": 0,
    "_optional": 0,
    "_blas": 0,
    "_runtime": 1,
    "_safetensors": 1,
    "_report": 1,
    "_second_order": 1,
    "_float32": 1,
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


# ------------------------------------------------------------ naming convention
DOC = PACKAGE.parent.parent / "docs" / "architecture.md"


def _public_modules_in_doc() -> dict[str, set[str]]:
    """Package -> the modules of the "public modules" column of the naming table."""
    text = DOC.read_text()
    section = text[text.index("## Naming convention") : text.index("## Descriptor tables")]
    table = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 3 and cells[0].startswith("`"):
            table[cells[0].strip("`")] = set(re.findall(r"`(\w+)`", cells[2]))
    return table


def _bench_suites() -> set[str]:
    tree = ast.parse((PACKAGE / "bench" / "__init__.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
            getattr(t, "id", "") == "SUITES" for t in node.targets
        ):
            return {m for mods in ast.literal_eval(node.value).values() for m in mods}
    raise AssertionError("bench/__init__.py: no SUITES")


def test_public_modules_are_the_documented_ones():
    # The rule of docs/architecture.md "Naming convention": a module without a
    # leading underscore is public, so each one is listed in the table there.
    documented = _public_modules_in_doc()
    problems = []
    for init in sorted(PACKAGE.rglob("__init__.py")):
        package_dir = init.parent
        package = "slimgrad" if package_dir == PACKAGE else package_dir.name
        public = {
            p.stem
            for p in package_dir.glob("*.py")
            if not p.stem.startswith("_") and p.stem != "__main__"
        }
        if package == "bench":
            suites = _bench_suites()
            problems += [f"slimgrad.bench.{m}: not a suite of SUITES" for m in public - suites]
            continue
        listed = documented.get(package)
        if listed is None:
            problems.append(f"{package}: no row in the naming table of docs/architecture.md")
            continue
        for m in sorted(public - listed):
            problems.append(
                f"{package}/{m}.py: public (no leading underscore) but not listed as a public "
                "module in docs/architecture.md; rename it _" + m + " if it is implementation"
            )
        for m in sorted(listed - public):
            problems.append(f"{package}: docs/architecture.md lists {m!r}, which is not a module")
    assert not problems, "\n".join(problems)


# ------------------------------------------------------------ docs name real files
ROOT = PACKAGE.parent.parent
_PATH_WORD = re.compile(r"[\w./*{},<>-]+")
_FILE_SUFFIXES = (".py", ".pyi", ".cpp", ".hpp", ".h", ".md", ".txt", ".toml")
# Named in the text on purpose although they are not files of the tree: what
# the build generates, and the directory the stubs are NOT (see "Build").
_NOT_IN_TREE = ("build/", "_core/")
_TOP_DIRS = ("cpp/", "python/", "tests/", "docs/", "tools/", "bench/")


def _expand(word: str) -> list[str]:
    """``a.{hpp,cpp}`` -> ``a.hpp``, ``a.cpp`` (one brace group)."""
    m = re.search(r"\{([^}]*)\}", word)
    if not m:
        return [word]
    return [word[: m.start()] + alt + word[m.end() :] for alt in m.group(1).split(",")]


def named_paths(text: str) -> list[str]:
    """The file and directory names in the code of ``text`` (code spans and
    fenced blocks): words with a source-file ending, ending in a slash, or
    under a top-level directory; templates (``<area>``, ``...``) left out."""
    fenced = re.findall(r"```[^\n]*\n(.*?)```", text, flags=re.S)
    spans = re.findall(r"`([^`\n]+)`", re.sub(r"```.*?```", "", text, flags=re.S))
    found = []
    for word in (w for chunk in fenced + spans for w in _PATH_WORD.findall(chunk)):
        word = word.rstrip(".,:;")
        if "<" in word or "..." in word or word.startswith(("-", "/")):
            continue
        for w in _expand(word):
            if w.startswith(_NOT_IN_TREE):
                continue
            if w.endswith(_FILE_SUFFIXES + ("/",)) or w.startswith(_TOP_DIRS):
                found.append(w)
    return found


def _exists(name: str, tree: list[str]) -> bool:
    """True if ``name`` (possibly a tail like ``src/isa.cpp`` or a glob) is the
    end of a path of the repository, on a path-component boundary."""
    pattern = name.rstrip("/")
    for path in tree:
        for i in range(len(path.split("/"))):
            tail = "/".join(path.split("/")[i:])
            if fnmatch.fnmatchcase(tail, pattern) or fnmatch.fnmatchcase(tail, pattern + "/*"):
                return True
    return False


def _repository_paths() -> list[str]:
    skip = {".git", "build", "__pycache__", ".pytest_cache", ".mypy_cache", ".ruff_cache"}
    out = []
    for path in ROOT.rglob("*"):
        rel = path.relative_to(ROOT)
        if not skip.intersection(rel.parts):
            out.append(rel.as_posix())
    return out


def test_docs_architecture_names_only_existing_files():
    tree = _repository_paths()
    missing = sorted({n for n in named_paths(DOC.read_text()) if not _exists(n, tree)})
    assert not missing, f"docs/architecture.md names files that do not exist: {missing}"


def test_the_docs_path_check_finds_names():
    text = "`src/isa.cpp`, `optim_extra.{hpp,cpp}`, `kernels_<area>_simd.hpp`, `quant/io.py: X`"
    assert named_paths(text) == ["src/isa.cpp", "optim_extra.hpp", "optim_extra.cpp", "quant/io.py"]
    tree = ["cpp/src/isa.cpp", "python/slimgrad/quant/io.py"]
    assert _exists("src/isa.cpp", tree) and _exists("quant/io.py", tree)
    assert not _exists("c/isa.cpp", tree) and not _exists("src/gone.cpp", tree)
