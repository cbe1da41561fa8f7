"""What ``slimgrad quantize`` and ``slimgrad prune`` share: path checks, the
"already quantized" refusal, include/exclude patterns, the progress bar and the table.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Iterable, Iterator, Sequence
from typing import TypeVar

from ._report import Row, print_table  # noqa: F401 (re-exported for the CLIs)
from .errors import UsageError

__all__ = [
    "NEVER_BY_DEFAULT",
    "Row",
    "UsageError",
    "check_paths",
    "compile_patterns",
    "print_table",
    "progress",
    "refuse_gguf",
    "refuse_quantized",
    "same_file",
    "selected",
]

T = TypeVar("T")

# what llama.cpp-like tools leave alone unless asked: embeddings (token, position,
# token type), norms, biases (1-D anyway), the pooler and the output head
NEVER_BY_DEFAULT = re.compile(
    r"(^|\.)(embed|embeddings|embed_tokens|word_embeddings|position_embeddings|wte|wpe|"
    r"token_type_embeddings)(\.|$)|norm|LayerNorm|(^|\.)ln_|\.bias$|(^|\.)pooler\.|"
    r"(^|\.)lm_head\.|^output\.weight$"
)


def same_file(a: str, b: str) -> bool:
    if os.path.realpath(a) == os.path.realpath(b):
        return True
    try:
        return os.path.samefile(a, b)  # hard links, bind mounts
    except OSError:
        return False


def check_paths(source: str, output: str, output_is_folder: bool = False) -> None:
    """One-line UsageErrors for the input / output paths, before any work."""
    if not os.path.exists(source):
        raise UsageError(f"{source}: no such file")
    if same_file(source, output):
        raise UsageError(f"-o {output}: is the input file; write to another path")
    if output_is_folder:
        if os.path.exists(output) and not os.path.isdir(output):
            raise UsageError(f"-o {output}: exists and is not a folder")
        if os.path.isdir(output) and os.listdir(output):
            raise UsageError(f"-o {output}: folder is not empty; give a new or empty folder")
        parent = os.path.dirname(os.path.abspath(output))
    else:
        if os.path.isdir(output):
            raise UsageError(f"{output}: is a directory; -o takes the path of the file to write")
        parent = os.path.dirname(os.path.abspath(output))
    if not os.path.isdir(parent):
        raise UsageError(f"{output}: cannot write, no such directory {parent}")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise UsageError(f"{output}: cannot write, directory {parent} is not writable")


def refuse_gguf(path: str, command: str) -> None:
    """UsageError when ``path`` is a GGUF file (checked before parsing it as safetensors)."""
    try:
        with open(path, "rb") as f:
            magic = f.read(4)
    except OSError:
        return  # not readable: the reader reports it
    if magic == b"GGUF":
        raise UsageError(
            f"{path}: is a GGUF file; `slimgrad {command}` reads float safetensors "
            "checkpoints (GGUF files are run by llama.cpp)"
        )


def refuse_quantized(
    path: str, metadata: dict[str, str], names: Iterable[str], command: str
) -> None:
    """UsageError when ``path`` is already quantized (by slimgrad or in compressed-tensors),
    naming what reads it."""
    refuse_gguf(path, command)
    if "slimgrad.quant" in metadata:
        raise UsageError(
            f"{path}: already quantized by slimgrad (slimgrad.quant metadata); it is read by "
            f"slimgrad.quant.load(); `slimgrad {command}` takes the float checkpoint"
        )
    parts = [n for n in names if n.endswith((".weight_packed", ".weight_scale"))]
    if parts:
        raise UsageError(
            f"{path}: holds compressed-tensors quantized weights ({parts[0]}); it is read by "
            f"transformers / vLLM; `slimgrad {command}` takes the float checkpoint"
        )


def compile_patterns(option: str, patterns: Sequence[str] | None) -> list[re.Pattern[str]]:
    out = []
    for p in patterns or ():
        try:
            out.append(re.compile(p))
        except re.error as e:
            raise UsageError(f"{option} {p!r}: not a regular expression ({e})") from None
    return out


def selected(
    name: str, include: Sequence[re.Pattern[str]], exclude: Sequence[re.Pattern[str]]
) -> tuple[bool, str]:
    """(whether to work on ``name``, why not): --exclude wins, then --include, then the
    defaults (:data:`NEVER_BY_DEFAULT`)."""
    if any(p.search(name) for p in exclude):
        return False, "kept (--exclude)"
    if any(p.search(name) for p in include):
        return True, ""
    if NEVER_BY_DEFAULT.search(name):
        return False, "kept (embedding/norm/bias/pooler/output; --include to change)"
    return True, ""


def progress(items: Iterable[T], total: int, desc: str) -> Iterator[T]:
    """A tqdm bar over tensors on stderr (hidden when stderr is not a terminal)."""
    try:
        from tqdm import tqdm
    except ImportError:
        yield from items
        return
    yield from tqdm(
        items, total=total, desc=desc, unit="tensor", file=sys.stderr, disable=None, leave=False
    )


def parse_nm(text: str) -> tuple[int, int]:
    """``--nm N:M`` (keep N of every M, 0 < N < M); ``UsageError`` otherwise."""
    match = re.fullmatch(r"\s*(\d+)\s*:\s*(\d+)\s*", text)
    if not match:
        raise UsageError(f"--nm: expected N:M such as 2:4, got {text!r}")
    n, m = int(match[1]), int(match[2])
    if not 0 < n < m:
        raise UsageError(f"--nm: expected 0 < N < M (keep N of every M), got {text!r}")
    return n, m
