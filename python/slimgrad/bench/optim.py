"""Optimizer suite: one step of Adam, AdamW, SGD(momentum), Adagrad, ours next to
torch (foreach and fused CPU kernels) and the NumPy formula, on one big array
and on a transformer-like list of ~100 arrays, plus the streaming probe.

``bytes`` of a case is the traffic the update itself needs (Adam: read p, g,
m, v, write p, m, v = 28 bytes per float32 element), the same for every
implementation, so "of probe" compares each with the machine's streaming
speed. Ours by default also reads the gradients once more to check them for
NaN/inf before touching anything (``nonfinite="raise"``); the row
``slimgrad nonfinite=ignore`` shows the step without that check, which is
what torch does.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np

from .. import _core, optim
from . import PROBE, Case, optional_import

DEFAULT_SIZE = 1 << 24  # 16M float32 parameters

LR = 1e-4


def transformer_shapes(size: int) -> list[tuple[int, ...]]:
    """~100 arrays shaped like a small transformer's, ~``size`` elements in all."""
    d = max(8, int(round(384 * math.sqrt(size / DEFAULT_SIZE) / 8)) * 8)
    shapes: list[tuple[int, ...]] = [(4096, d)]  # token embedding
    for _ in range(8):
        shapes += [
            (d,),
            (d,),
            (3 * d, d),
            (3 * d,),
            (d, d),
            (d,),
            (d,),
            (d,),
            (4 * d, d),
            (4 * d,),
            (d, 4 * d),
            (d,),
        ]
    shapes += [(d,), (d,)]
    return shapes


def _arrays(shapes, rng, dtype=np.float32, scale=1.0):
    return [(rng.standard_normal(s) * scale).astype(dtype) for s in shapes]


# (suite name, our class, our kwargs, torch class name, torch kwargs, arrays moved per element)
OPTIMIZERS = [
    ("Adam", optim.Adam, {}, "Adam", {}, 7),
    ("AdamW", optim.AdamW, {}, "AdamW", {}, 7),
    ("SGD(momentum=0.9)", optim.SGD, {"momentum": 0.9}, "SGD", {"momentum": 0.9}, 5),
    ("Adagrad", optim.Adagrad, {}, "Adagrad", {}, 5),
]


def _numpy_step(name: str, ps, gs, states, scratch):
    """The formula in NumPy, in place, with one scratch buffer per array."""
    states["t"] += 1
    t = states["t"]
    for i, (p, g) in enumerate(zip(ps, gs)):
        s = scratch[i]
        if name in ("Adam", "AdamW"):
            m, v = states["m"][i], states["v"][i]
            b1, b2, eps = 0.9, 0.999, 1e-8
            if name == "AdamW":
                p *= np.float32(1 - LR * 1e-2)
            m *= np.float32(b1)
            np.multiply(g, np.float32(1 - b1), out=s)
            m += s
            v *= np.float32(b2)
            np.multiply(g, g, out=s)
            s *= np.float32(1 - b2)
            v += s
            np.sqrt(v, out=s)
            s /= np.float32(math.sqrt(1 - b2**t))
            s += np.float32(eps)
            np.divide(m, s, out=s)
            s *= np.float32(-LR / (1 - b1**t))
            p += s
        elif name.startswith("SGD"):
            buf = states["m"][i]
            buf *= np.float32(0.9)
            buf += g
            np.multiply(buf, np.float32(-LR), out=s)
            p += s
        else:  # Adagrad
            acc = states["m"][i]
            np.multiply(g, g, out=s)
            acc += s
            np.sqrt(acc, out=s)
            s += np.float32(1e-10)
            np.divide(g, s, out=s)
            s *= np.float32(-LR)
            p += s


def _case(label, name, cls, kw, tname, tkw, arrays_moved, shapes, torch, arena: bool) -> Case:
    rng = np.random.default_rng(0)
    ps = _arrays(shapes, rng)
    gs = _arrays(shapes, rng, scale=1e-2)
    n = sum(p.size for p in ps)
    opt = cls(ps, lr=LR, **kw)
    impls = {"slimgrad": lambda: opt.step(gs)}
    ps2 = [p.copy() for p in ps]
    opt2 = cls(ps2, lr=LR, nonfinite="ignore", **kw)
    impls["slimgrad nonfinite=ignore"] = lambda: opt2.step(gs)
    if arena:
        pa, ga = optim.flatten(ps), optim.flatten(gs)
        opt3 = cls(pa, lr=LR, **kw)
        impls["slimgrad flatten() arena"] = lambda: opt3.step(ga)
    if torch is not None:
        tg = [torch.from_numpy(g) for g in gs]
        for mode in ("foreach", "fused"):
            tp = [torch.from_numpy(p.copy()).requires_grad_() for p in ps]
            for p, g in zip(tp, tg):
                p.grad = g
            topt = getattr(torch.optim, tname)(tp, lr=LR, **tkw, **{mode: True})

            def step(topt=topt):
                with torch.no_grad():
                    topt.step()

            impls[f"torch {mode}=True"] = step
    nps = [p.copy() for p in ps]
    states = {"t": 0, "m": [np.zeros_like(p) for p in ps], "v": [np.zeros_like(p) for p in ps]}
    scratch = [np.empty_like(p) for p in ps]
    impls["numpy formula"] = lambda: _numpy_step(name, nps, gs, states, scratch)
    return Case(f"{label} {name}", impls, bytes=arrays_moved * 4 * n)


def _probe(size: int) -> Case:
    rng = np.random.default_rng(0)
    p, g, m, v = (rng.standard_normal(size).astype(np.float32) * 1e-3 for _ in range(4))
    return Case(PROBE, {"slimgrad": lambda: _core.stream_probe(p, g, m, v)}, bytes=7 * 4 * size)


def cases(size: int) -> Iterator[Case]:
    torch = optional_import("torch")
    yield _probe(size)

    mixed = transformer_shapes(size)
    for name, cls, kw, tname, tkw, moved in OPTIMIZERS:
        yield _case("1 array", name, cls, kw, tname, tkw, moved, [(size,)], torch, arena=False)
        yield _case(
            f"{len(mixed)} arrays", name, cls, kw, tname, tkw, moved, mixed, torch, arena=True
        )

    yield _bf16_case(size, torch)


def _bf16_case(size: int, torch) -> Case:
    """AdamW on bfloat16 params and grads: ours keeps a float32 master and
    float32 moments (reads p, g as 2 bytes, master, m, v as 4; writes p,
    master, m, v: 30 bytes per element); torch's fused AdamW on bfloat16
    params keeps bfloat16 moments and no master (14 bytes per element)."""
    import ml_dtypes

    rng = np.random.default_rng(0)
    p = rng.standard_normal(size).astype(ml_dtypes.bfloat16)
    g = (rng.standard_normal(size) * 1e-2).astype(ml_dtypes.bfloat16)
    opt = optim.AdamW([p], lr=LR)
    impls = {"slimgrad": lambda: opt.step([g])}
    p2 = p.copy()
    opt2 = optim.AdamW([p2], lr=LR, rounding="stochastic")
    impls["slimgrad stochastic"] = lambda: opt2.step([g])
    if torch is not None:
        tp = torch.from_numpy(p.view(np.int16).copy()).view(torch.bfloat16).requires_grad_()
        tp.grad = torch.from_numpy(g.view(np.int16).copy()).view(torch.bfloat16)
        topt = torch.optim.AdamW([tp], lr=LR, fused=True)

        def step():
            with torch.no_grad():
                topt.step()

        impls["torch fused=True (bf16 m, v)"] = step
    return Case(
        "1 array AdamW bf16 params",
        impls,
        bytes=30 * size,
        note="ours: float32 master + moments (30 B/elem); torch: bfloat16 moments, no master",
    )
