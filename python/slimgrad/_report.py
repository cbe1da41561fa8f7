"""The per-tensor table that ``slimgrad quantize``, ``slimgrad prune`` and the GGUF
export print (one format for all)."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["Row", "print_table"]


@dataclass
class Row:
    """One tensor of a run: the table ``quantize`` and ``prune`` (and the GGUF export) print."""

    name: str
    shape: tuple[int, ...]
    dtype: str  # as read
    stored: str  # as written: GGUF type, scheme or dtype; "-" when not written
    bytes_before: int
    bytes_after: int
    note: str = ""  # relative error, sparsity, or why it was kept / skipped


def print_table(rows: Sequence[Row], summary: str, file: Any = None) -> None:
    """The shared table: tensor, shape, dtype in, stored as, bytes before/after, note."""
    file = file or sys.stdout
    width = max([len("tensor")] + [len(r.name) for r in rows])
    shapes = ["x".join(map(str, r.shape)) or "scalar" for r in rows]
    sw = max([len("shape")] + [len(s) for s in shapes])
    tw = max([len("stored")] + [len(r.stored) for r in rows])
    print(
        f"{'tensor':<{width}}  {'shape':<{sw}}  {'dtype':<5}  {'stored':<{tw}}  "
        f"{'bytes before':>13}  {'bytes after':>12}  note",
        file=file,
    )
    before = after = 0
    for r, s in zip(rows, shapes):
        before += r.bytes_before
        after += r.bytes_after
        print(
            f"{r.name:<{width}}  {s:<{sw}}  {r.dtype:<5}  {r.stored:<{tw}}  "
            f"{r.bytes_before:>13,}  {r.bytes_after:>12,}  {r.note}",
            file=file,
        )
    ratio = f"{before / after:.2f}x smaller" if after else "nothing written"
    print(
        f"{'total':<{width}}  {'':<{sw}}  {'':<5}  {'':<{tw}}  {before:>13,}  {after:>12,}  "
        f"({ratio}; {summary})",
        file=file,
    )
