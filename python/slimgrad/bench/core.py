"""Core suite: the streaming-bandwidth probe and the first kernels."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from .. import _core, ops
from . import PROBE, Case, optional_import

DEFAULT_SIZE = 1 << 24  # 16M float32 elements: 64 MiB per array, far beyond cache


def cases(size: int) -> Iterator[Case]:
    torch = optional_import("torch")
    rng = np.random.default_rng(0)
    f = np.float32
    p, g, m, v = (rng.standard_normal(size).astype(f) * 1e-3 for _ in range(4))

    # The probe moves what an Adam step moves: read p, g, m, v; write p, m, v.
    probe = {"slimgrad": lambda: _core.stream_probe(p, g, m, v)}

    def numpy_probe():
        np.add(p, g, out=p)
        np.add(m, g, out=m)
        np.add(v, g, out=v)

    probe["numpy (3 passes)"] = numpy_probe
    if torch is not None:
        tp, tg, tm, tv = (torch.from_numpy(a) for a in (p, g, m, v))
        probe["torch foreach_add_"] = lambda: torch._foreach_add_([tp, tm, tv], [tg, tg, tg])
    yield Case(PROBE, probe, bytes=7 * 4 * size)

    axpy = {"slimgrad": lambda: ops.axpy_(p, g, 1e-3)}
    axpy["numpy p += a*g"] = lambda: np.add(p, np.multiply(g, f(1e-3)), out=p)
    if torch is not None:
        axpy["torch add_(alpha)"] = lambda: tp.add_(tg, alpha=1e-3)
    yield Case("axpy_ float32", axpy, bytes=3 * 4 * size)

    norm = {"slimgrad": lambda: ops.squared_norm(g), "numpy dot": lambda: float(np.dot(g, g))}
    if torch is not None:
        norm["torch dot"] = lambda: float(torch.dot(tg, tg))
    yield Case("squared_norm float32", norm, bytes=4 * size)

    finite = {
        "slimgrad": lambda: ops.find_nonfinite(g),
        "numpy isfinite().all()": lambda: bool(np.isfinite(g).all()),
    }
    if torch is not None:
        finite["torch isfinite().all()"] = lambda: bool(torch.isfinite(tg).all())
    yield Case("find_nonfinite float32", finite, bytes=4 * size)

    # What the masks and quantizers read in place of half-precision weights
    # (slimgrad/_float32.py): a new float32 array per call, for every peer.
    import ml_dtypes

    for name, half in (("bfloat16", ml_dtypes.bfloat16), ("float16", np.float16)):
        h = g.astype(half)
        widen = {
            "slimgrad": lambda h=h: _core.widen_half(h),
            "numpy astype": lambda h=h: h.astype(np.float32),
        }
        if torch is not None:
            th = torch.from_numpy(h.view(np.uint16).astype(np.int16))
            th = th.view(torch.bfloat16 if name == "bfloat16" else torch.float16)
            widen["torch .float()"] = lambda th=th: th.float()
        yield Case(f"widen {name} -> float32", widen, bytes=6 * size)

        # The other way: a GGUF export's F16 / BF16 tensors (gguf_export.py).
        narrow = {
            "slimgrad": lambda bf16=name == "bfloat16": _core.narrow_half(g, bf16),
            "numpy astype": lambda half=half: g.astype(half),
        }
        if torch is not None:
            to = torch.bfloat16 if name == "bfloat16" else torch.float16
            narrow["torch .to()"] = lambda to=to: tg.to(to)
        yield Case(f"narrow float32 -> {name}", narrow, bytes=6 * size)
