"""Quantized GEMM suite: y = x @ W.T with W int8 per row (W8A8), int4 in groups
of 32 (W4A8) or GGUF blocks (Q4_1, Q5_1: what ``slimgrad compress --format
gguf`` writes; Q4_K, Q5_K, Q6_K: what ``slimgrad quantize --type Q4_K_M``
writes; K-quants only where ``in`` is a multiple of 256), activations
quantized to int8 per row on the fly
(quant.prepack + PackedWeight.matmul), next to the float32 product in NumPy
(OpenBLAS) and torch, and torch's dynamic int8 Linear
(torch.ao.nn.quantized.dynamic.Linear, fbgemm: int8 weights per row, uint8
activations per tensor), on size x size (default 4096 x 4096) and
all-MiniLM-L6-v2's Linear shapes, batches 1, 8, 64, 512.

Ratios > 1 mean slimgrad is faster. Issue 14's goals: W8A8 >= 2x NumPy float32
and >= 1.0x torch dynamic int8 at batch 64; int4 >= 3x NumPy at batch 1 and
>= 1.3x at batch 64 (docs/quant.md has the measured tables).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from functools import partial

import numpy as np

from .. import quant
from ..quant import gguf, kquants
from . import Case, optional_import
from ._gemm import gemm_weights
from .sparse import BATCHES, MINILM_SHAPES, _dense_impls

DEFAULT_SIZE = 4096
GGUF_TYPES = ("Q4_1", "Q5_1", "Q4_K", "Q5_K", "Q6_K")


def _gguf_packed(w: np.ndarray) -> dict[str, quant.PackedWeight]:
    """The GGUF formats ``w``'s row length allows, packed once."""
    out = {}
    for name in GGUF_TYPES:
        kq = name.endswith("_K")
        if w.shape[1] % (256 if kq else 32) == 0:
            blocks = (kquants if kq else gguf).quantize(w, name)
            out[f"GGUF {name}"] = quant.prepack(blocks, name)
    return out


def _torch_dynamic(torch, w: np.ndarray):
    """torch's dynamic int8 Linear (fbgemm) holding ``w``, or None when unavailable."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            lin = torch.nn.Linear(w.shape[1], w.shape[0], bias=False)
            lin.weight.data = torch.from_numpy(w)
            model = torch.ao.quantization.quantize_dynamic(
                torch.nn.Sequential(lin), {torch.nn.Linear}, dtype=torch.qint8
            )
        return model[0]
    except (AttributeError, RuntimeError):
        return None


def cases(size: int) -> Iterator[Case]:
    torch = optional_import("torch")
    for rng, w in gemm_weights(size, MINILM_SHAPES):
        out_f, in_f = w.shape
        packed = {
            "W8A8 int8": quant.prepack(quant.quantize(w, 8)),
            "W4A8 int4/g32": quant.prepack(
                quant.quantize(w, 4, granularity="group", group_size=32)
            ),
        }
        blocks = _gguf_packed(w)
        dyn = _torch_dynamic(torch, w) if torch is not None else None
        for batch in BATCHES:
            x = rng.standard_normal((batch, in_f), dtype=np.float32)
            y = np.empty((batch, out_f), np.float32)
            peers = _dense_impls(x, w, torch)
            if dyn is not None:
                tx = torch.from_numpy(x)
                peers["torch dynamic int8"] = lambda tx=tx, dyn=dyn: dyn(tx)
            # GGUF blocks: next to NumPy float32 and torch dynamic int8 only
            few = {k: v for k, v in peers.items() if k != "torch float32"}
            for name, pw in {**packed, **blocks}.items():
                yield Case(
                    f"{name} {out_f}x{in_f} b{batch}",
                    {
                        "slimgrad": partial(pw.matmul, x, out=y),
                        **(few if name in blocks else peers),
                    },
                    bytes=pw.nbytes + x.nbytes + y.nbytes,
                    note="dynamic int8 activations per row; weight prepacked once",
                )
