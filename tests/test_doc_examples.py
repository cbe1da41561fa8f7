"""Every ```python block of README.md and docs/*.md runs as written, outputs checked.

Per Markdown file, the blocks run in order in one namespace (a later block may
use what an earlier one defined), in a temporary working directory. Shown
outputs are checked two ways:

* a statement ending in a ``# -> expected`` comment: its value (an expression, or
  the value assigned by ``name = expr``) must print as ``expected``, by ``repr``
  or ``str``; ``...`` in ``expected`` matches any text, and numbers in
  ``expected`` match to their shown precision (``0.1235`` matches 0.12347);
* a block of ``>>>`` lines is a doctest (ELLIPSIS, NORMALIZE_WHITESPACE).

New blocks run by default. The only way to skip one is an HTML comment on the line
right before its fence: ``<!-- skip-example: why -->`` (the reason is required).
A block whose optional packages are absent (the modules it imports, and those
named by a ``<!-- needs: mpi4py -->`` comment before its fence, for imports made
inside slimgrad) skips the rest of its file, as the other tests skip an absent
oracle; CI installs them all.
"""

from __future__ import annotations

import ast
import doctest
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FILES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^```(\w*)[^\n]*\n(.*?)^```[ \t]*$", re.S | re.M)
SKIP = re.compile(r"<!--\s*skip-example:\s*(\S.*?)\s*-->\s*$")
NEEDS = re.compile(r"<!--\s*needs:\s*([\w. ]+?)\s*-->\s*$")
NUMBER = re.compile(r"-?\d+\.\d+(?:e[-+]?\d+)?|-?\d+e[-+]?\d+", re.I)


def blocks(path: Path) -> list[tuple[int, str, str | None, list[str]]]:
    """(first line number, code, skip reason or None, modules needed) of each python block."""
    text = path.read_text()
    out = []
    for m in FENCE.finditer(text):
        if m.group(1) not in ("python", "py", "pycon"):
            continue
        line = text.count("\n", 0, m.start()) + 1
        before = text[: m.start()].rstrip("\n").rsplit("\n", 1)[-1]
        skip = SKIP.search(before)
        needs = NEEDS.search(before)
        named = needs.group(1).split() if needs else []
        out.append((line + 1, m.group(2), skip.group(1) if skip else None, named))
    return out


def imported(code: str) -> list[str]:
    """Top-level modules a block imports (``import a.b`` -> ``a``), slimgrad's own left out."""
    try:
        tree = ast.parse(code)
    except SyntaxError:  # a pycon block: run_block reports it
        return []
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [a.name.split(".")[0] for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.append(node.module.split(".")[0])
    return [n for n in dict.fromkeys(names) if n != "slimgrad"]


def _matches(shown: str, expected: str) -> bool:
    """``shown`` equals ``expected`` up to ``...`` wildcards and shown number precision."""
    pattern, pos = "", 0
    for m in NUMBER.finditer(expected):
        pattern += re.escape(expected[pos : m.start()]) + r"(-?[\d.]+(?:e[-+]?\d+)?)"
        pos = m.end()
    pattern += re.escape(expected[pos:])
    pattern = pattern.replace(re.escape("..."), ".*")
    got = re.fullmatch(pattern, shown, re.S)
    if got is None:
        return False
    for want, have in zip(NUMBER.findall(expected), got.groups()):
        digits = len(want.lower().split("e")[0].split(".")[-1]) if "." in want else 0
        try:
            value = float(have)
        except ValueError:
            return False
        mantissa = want.lower().split("e")
        scale = 10 ** int(mantissa[1]) if len(mantissa) > 1 else 1
        if abs(value - float(want)) > 0.5 * 10**-digits * scale * (1 + 1e-9):
            return False
    return True


def check_value(value: object, expected: str, where: str) -> None:
    shown = [repr(value), str(value)]
    if not any(_matches(s.strip(), expected.strip()) for s in shown):
        raise AssertionError(
            f"{where}: shown output\n  {expected}\nbut the code gives\n  {shown[0]}"
        )


def run_block(code: str, ns: dict, where: str) -> None:
    if code.lstrip().startswith(">>>"):
        test = doctest.DocTestParser().get_doctest(code, ns, where, where, 0)
        flags = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE
        runner = doctest.DocTestRunner(optionflags=flags)
        runner.run(test, clear_globs=False)
        failed, _ = runner.summarize(verbose=False)
        assert not failed, f"{where}: doctest failed (see the output above)"
        return
    tree = ast.parse(code, where)
    lines = code.splitlines()
    for stmt in tree.body:
        last = lines[stmt.end_lineno - 1]
        comment = re.search(r"#\s*->\s*(.+)$", last)
        here = f"{where}, line {stmt.lineno}"
        if comment and isinstance(stmt, ast.Expr):
            value = eval(compile(ast.Expression(stmt.value), here, "eval"), ns)  # noqa: S307
            check_value(value, comment.group(1), here)
            continue
        exec(compile(ast.Module([stmt], []), here, "exec"), ns)  # noqa: S102
        if comment and isinstance(stmt, ast.Assign) and len(stmt.targets) == 1:
            target = ast.unparse(stmt.targets[0])
            value = eval(compile(target, here, "eval"), ns)  # noqa: S307
            check_value(value, comment.group(1), here)


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_doc_examples_run(path, tmp_path, monkeypatch):
    found = blocks(path)
    if not found:
        pytest.skip("no python blocks")
    monkeypatch.chdir(tmp_path)  # files the examples write land here
    ns: dict = {"__name__": "__doc_example__"}
    for line, code, skip, needs in found:
        if skip is None:
            for module in needs + imported(code):
                pytest.importorskip(module, reason=f"{path.name}:{line} needs {module}")
            run_block(code, ns, f"{path.name}:{line}")


def test_runner_checks_outputs_and_needs_a_reason_to_skip(tmp_path):
    ns: dict = {}
    run_block("x = 2 + 2  # -> 4\nx * 0.1  # -> 0.4\n'abc'  # -> 'a...'\n", ns, "t")
    with pytest.raises(AssertionError, match="shown output"):
        run_block("1 + 1  # -> 3\n", ns, "t")
    with pytest.raises(AssertionError, match="shown output"):
        run_block("0.12347  # -> 0.1236\n", ns, "t")
    run_block("0.12347  # -> 0.1235\n", ns, "t")
    with pytest.raises(AssertionError, match="doctest failed"):
        run_block(">>> 1 + 1\n3\n", ns, "t")
    md = tmp_path / "x.md"
    md.write_text(
        "<!-- skip-example: needs a GPU -->\n```python\nboom()\n```\n\n"
        "<!-- skip-example: -->\n```python\nx = 1\n```\n```python\ny = 2\n```\n"
    )
    assert [s for _, _, s, _ in blocks(md)] == ["needs a GPU", None, None]
    md.write_text("<!-- needs: mpi4py -->\n```python\nimport torch.nn as nn\n```\n")
    (found,) = blocks(md)
    assert found[3] == ["mpi4py"]
    code = "import os, torch.nn\nfrom slimgrad import optim\nfrom numpy import ones\n"
    assert imported(code) == ["os", "torch", "numpy"]
