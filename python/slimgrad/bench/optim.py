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

Low-precision cases (AdamW): fp32 params with bfloat16 state (20 bytes per
element), bfloat16 params with the default float32 master and state (30),
and bfloat16 params with bfloat16 state and no master (14, as torch's fused
AdamW on bfloat16 params, run next to it).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Iterator

import numpy as np

from .. import _core, optim
from ..optim._bucket import empty_at
from . import PROBE, Case, optional_import

DEFAULT_SIZE = 1 << 24  # 16M float32 parameters
# One call per timed batch, for every case of the suite's step modules (this
# one, optim_extra, torch_optim). Each implementation steps its own p, m, v,
# so a batch's first call finds them evicted by the previous implementation's
# step, while a second call would find them in cache: on the Intel Xeon VM
# (L3 reported as 300 MiB) the 1-array Adam step took 4.7 ms back to back and
# 8.8 ms after another implementation's. The probe is timed the same way
# (_probe): "of probe" compares like with like (docs/optim.md).
CALLS_PER_BATCH = 1

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


def _aligned_arrays(size: int, rng: np.random.Generator) -> list[np.ndarray]:
    """p, g, m, v for the probe: 64-byte-aligned, small random values."""
    out = [empty_at((size,), np.dtype(np.float32), 0) for _ in range(4)]
    for a in out:
        a[...] = rng.standard_normal(size) * 1e-3
    return out


@functools.cache
def evictor(size: int) -> Callable[[], object]:
    """An untimed setup that leaves the caches as a step case's timed call
    finds them: the probe over 4 arrays of its own (read 4, write 3), as if
    another implementation had just stepped over its own p, g, m, v. One per
    size, shared by the cases that use it (4 x 64 MiB at the default size)."""
    other = _aligned_arrays(size, np.random.default_rng(1))
    return lambda: _core.stream_probe(*other)


def _probe(size: int) -> Case:
    """The probe on 64-byte-aligned arrays: its best case. (On arrays as NumPy
    allocates them, 16 bytes past a page boundary, its unaligned vectors
    straddle cache lines and it runs slower than our peeled steps.) Its
    setup (evictor) runs before each timed call, as every step case's call
    follows another implementation's step over other arrays: timed alone,
    the probe's 256 MiB stayed in the Intel VM's L3 (4.3 ms against 6.2-7.6
    ms after another set), and "of probe" compared cold steps with a cached
    probe."""
    ours = _aligned_arrays(size, np.random.default_rng(0))
    probe = {"slimgrad": lambda: _core.stream_probe(*ours)}
    return Case(PROBE, probe, bytes=7 * 4 * size, setup=evictor(size))


def cases(size: int) -> Iterator[Case]:
    torch = optional_import("torch")
    yield _probe(size)

    mixed = transformer_shapes(size)
    for name, cls, kw, tname, tkw, moved in OPTIMIZERS:
        yield _case("1 array", name, cls, kw, tname, tkw, moved, [(size,)], torch, arena=False)
        yield _case(
            f"{len(mixed)} arrays", name, cls, kw, tname, tkw, moved, mixed, torch, arena=True
        )

    yield from _low_precision_cases(size, torch)
    yield from _clip_cases(size, mixed, torch)


MAX_NORM = 1.0


def _clip_cases(size: int, mixed, torch) -> Iterator[Case]:
    """ "clip to max_norm + AdamW step" (issue 14): ours fused, ``opt.step(grads,
    max_norm=...)`` (one read of the gradients for the norm and the non-finite
    verdict, the factor applied inside the update: 32 B per float32 element),
    next to torch's ``clip_grad_norm_`` + ``AdamW(fused=True)`` on the same
    values (norm read, scale read + write, update: 40 B) and our own unfused
    ``clip_grad_norm_`` + ``step`` (norm, scale, non-finite scan, update: 44 B).
    The gradients' norm is far above ``max_norm``, so every call clips (the
    unfused rows scale the same gradients again each call, by ~1 after the
    first: the same memory traffic).
    """
    for label, shapes in (("1 array", [(size,)]), (f"{len(mixed)} arrays", mixed)):
        rng = np.random.default_rng(0)
        ps = _arrays(shapes, rng)
        gs = _arrays(shapes, rng)
        n = sum(p.size for p in ps)
        fused = optim.AdamW([p.copy() for p in ps], lr=LR)
        impls = {"slimgrad": lambda fused=fused, gs=gs: fused.step(gs, max_norm=MAX_NORM)}
        plain = optim.AdamW([p.copy() for p in ps], lr=LR)
        own = [g.copy() for g in gs]

        def unfused(plain=plain, own=own):
            optim.clip_grad_norm_(own, MAX_NORM)
            plain.step(own)

        impls["slimgrad clip_grad_norm_+step"] = unfused
        if torch is not None:
            tp = [torch.from_numpy(p.copy()).requires_grad_() for p in ps]
            for p, g in zip(tp, gs):
                p.grad = torch.from_numpy(g.copy())
            topt = torch.optim.AdamW(tp, lr=LR, fused=True)

            def torch_step(tp=tp, topt=topt):
                with torch.no_grad():
                    torch.nn.utils.clip_grad_norm_(tp, MAX_NORM)
                    topt.step()

            impls["torch clip + fused=True"] = torch_step
        yield Case(
            f"{label} clip+AdamW",
            impls,
            bytes=32 * n,
            note="bytes: ours fused (g read twice); torch moves 40 B/elem, ours unfused 44",
        )


def _low_precision_cases(size: int, torch) -> Iterator[Case]:
    """AdamW with less state traffic, bytes per element as each moves them:

    - fp32 params, bf16 state: read p, g (4 B each), m, v (2 B); write p (4),
      m, v (2): 20 B (fp32 AdamW: 28);
    - bf16 params and grads, float32 master and moments (the default for
      half params): read p, g (2), master, m, v (4); write p (2), master,
      m, v (4): 30 B;
    - bf16 params, bf16 state, no master (torch's fused AdamW on bf16
      params): read p, g, m, v; write p, m, v, all 2 B: 14 B.
    """
    import ml_dtypes

    bf16 = ml_dtypes.bfloat16
    rng = np.random.default_rng(0)
    p32 = empty_at((size,), np.dtype(np.float32), 16)  # NumPy's usual offset
    p32[...] = rng.standard_normal(size)
    g32 = empty_at((size,), np.dtype(np.float32), 16)
    g32[...] = rng.standard_normal(size) * 1e-2

    def ours(p, g, **kw):
        opt = optim.AdamW([p], lr=LR, **kw)
        return lambda: opt.step([g])

    # Our fp32 AdamW on the same float32 values, interleaved with each case so
    # the time ratio is reliable; it moves 28 B per element, so the GB/s
    # printed for it (the case's bytes / its time) understates it.
    fp32_label = "slimgrad fp32 AdamW (28 B)"

    yield Case(
        "1 array AdamW fp32 params, bf16 state",
        {
            "slimgrad": ours(p32.copy(), g32, state_dtype="bfloat16"),
            "slimgrad nonfinite=ignore": ours(
                p32.copy(), g32, state_dtype="bfloat16", nonfinite="ignore"
            ),
            "slimgrad stochastic": ours(
                p32.copy(), g32, state_dtype="bfloat16", rounding="stochastic"
            ),
            fp32_label: ours(p32.copy(), g32),
        },
        bytes=20 * size,
        note="float32 math, exp_avg/exp_avg_sq stored as bfloat16 (20 B/elem; fp32 AdamW 28)",
    )

    p = p32.astype(bf16)
    g = g32.astype(bf16)
    yield Case(
        "1 array AdamW bf16 params",
        {
            "slimgrad": ours(p.copy(), g),
            "slimgrad stochastic": ours(p.copy(), g, rounding="stochastic"),
        },
        bytes=30 * size,
        note="float32 master + moments (the default for half params, 30 B/elem)",
    )

    no_master = dict(state_dtype="bfloat16", master_weights=False)
    impls = {
        "slimgrad": ours(p.copy(), g, **no_master),
        "slimgrad nonfinite=ignore": ours(p.copy(), g, **no_master, nonfinite="ignore"),
        "slimgrad stochastic": ours(p.copy(), g, **no_master, rounding="stochastic"),
        fp32_label: ours(p32.copy(), g32),
    }
    if torch is not None:
        tp = torch.from_numpy(p.view(np.int16).copy()).view(torch.bfloat16).requires_grad_()
        tp.grad = torch.from_numpy(g.view(np.int16).copy()).view(torch.bfloat16)
        topt = torch.optim.AdamW([tp], lr=LR, fused=True)

        def step():
            with torch.no_grad():
                topt.step()

        impls["torch fused=True"] = step
    yield Case(
        "1 array AdamW bf16 params, bf16 state, no master",
        impls,
        bytes=14 * size,
        note="bf16 params, grads, moments; no master copy (14 B/elem, as torch fused)",
    )
