"""Optimizers against torch.optim and against a NumPy reference of each formula.

The NumPy reference (``reference_step``) is written from torch's single-tensor
implementation. Run in the optimizer's own dtype with the kernels' order of
operations, it must give the same *bits* as our kernels (IEEE +-*/ and sqrt
are correctly rounded, and no kernel uses FMA); run in float64 it is the
exact-math yardstick for float32 results. Every ISA and thread count must
give the same bits.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import slimgrad
from conftest import EDGE_SIZES, THREADS, assert_steps_agree_everywhere
from slimgrad import optim
from test_optim_torch_compat import OPTIMIZERS

# Normwise relative error (max |ours - theirs| / max |theirs|) after STEPS
# steps: float32 results of two correct implementations drift apart by a few
# ulps per step; float64 by ~1e-16 per step.
TORCH_TOL = {np.float32: 2e-6, np.float64: 1e-12}
# Against exact math, float32 also carries the rounding of the per-step
# constants (e.g. 1 - lr * weight_decay = 0.99999 is off by ~3e-8 in float32,
# compounding over 100 steps), as torch's float32 does.
F64_REF_TOL = {np.float32: 1e-5, np.float64: 1e-12}
STEPS = 100

# (optimizer, options): every option of every optimizer at least once.
CONFIGS = [
    ("SGD", dict(lr=0.01)),
    ("SGD", dict(lr=0.01, momentum=0.9, nesterov=True, weight_decay=0.1)),
    ("SGD", dict(lr=0.01, momentum=0.9, dampening=0.3, maximize=True)),
    ("Adagrad", dict()),
    (
        "Adagrad",
        dict(
            lr_decay=0.01, weight_decay=0.1, initial_accumulator_value=0.5, eps=1e-6, maximize=True
        ),
    ),
    ("RMSprop", dict()),
    ("RMSprop", dict(centered=True, weight_decay=0.1)),
    ("RMSprop", dict(momentum=0.9, centered=True, alpha=0.9, maximize=True)),
    ("RMSprop", dict(momentum=0.5)),
    ("Adadelta", dict()),
    ("Adadelta", dict(lr=0.5, rho=0.8, weight_decay=0.1, maximize=True)),
    ("Adam", dict()),
    ("Adam", dict(amsgrad=True, weight_decay=0.1, betas=(0.8, 0.99))),
    ("Adam", dict(decoupled_weight_decay=True, weight_decay=0.1, maximize=True, eps=1e-6)),
    ("AdamW", dict()),
    ("AdamW", dict(amsgrad=True, betas=(0.3, 0.9))),  # beta1 < 0.5: the other lerp branch
    ("Adamax", dict()),
    ("Adamax", dict(weight_decay=0.1, maximize=True)),
    ("NAdam", dict()),
    ("NAdam", dict(weight_decay=0.1, momentum_decay=0.01)),
    ("NAdam", dict(weight_decay=0.1, decoupled_weight_decay=True, maximize=True)),
    ("RAdam", dict()),
    ("RAdam", dict(weight_decay=0.1, betas=(0.9, 0.9))),  # rho_t > 5 early: rectified path
    ("RAdam", dict(weight_decay=0.1, decoupled_weight_decay=True, maximize=True)),
]
CONFIG_IDS = [
    f"{n}-{'-'.join(f'{k}={v}' for k, v in kw.items()) or 'defaults'}" for n, kw in CONFIGS
]
DTYPES = [np.float32, np.float64]


# ------------------------------------------------------------------ reference
def _opts(name: str, kw: dict) -> dict:
    """The optimizer's full options (defaults filled in) as the reference needs them."""
    opt = getattr(optim, name)([np.zeros(1, np.float32)], **kw)
    return {k: v for k, v in opt.param_groups[0].items() if k != "params"}


def reference_init(name: str, o: dict, shape, dtype) -> dict:
    z = lambda: np.zeros(shape, dtype)  # noqa: E731
    if name == "SGD":
        return {"momentum_buffer": z()} if o["momentum"] != 0 else {}
    if name == "Adagrad":
        return {"sum": np.full(shape, o["initial_accumulator_value"], dtype)}
    if name == "RMSprop":
        st = {"square_avg": z()}
        if o["momentum"] > 0:
            st["momentum_buffer"] = z()
        if o["centered"]:
            st["grad_avg"] = z()
        return st
    if name == "Adadelta":
        return {"square_avg": z(), "acc_delta": z()}
    if name in ("Adam", "AdamW"):
        st = {"exp_avg": z(), "exp_avg_sq": z()}
        if o["amsgrad"]:
            st["max_exp_avg_sq"] = z()
        return st
    if name == "Adamax":
        return {"exp_avg": z(), "exp_inf": z()}
    st = {"exp_avg": z(), "exp_avg_sq": z()}
    if name == "NAdam":
        st["mu_product"] = 1.0
    return st


def reference_step(
    name: str, o: dict, p: np.ndarray, g: np.ndarray, st: dict, t: int
) -> np.ndarray:
    """One step in p's dtype; returns the new p and updates st. Scalars are
    computed in Python floats (double) and rounded to the dtype once."""
    T = p.dtype.type
    c = T  # a double constant, rounded once
    lr = o["lr"]

    def lerp(a, b, w):
        wt = c(w)
        return a + wt * (b - a) if wt < 0.5 else b - (b - a) * (T(1) - wt)

    if o.get("maximize"):
        g = -g
    wd = o.get("weight_decay", 0)
    if wd:
        if o.get("decoupled_weight_decay"):
            p = p * c(1 - lr * wd)
        else:
            g = g + c(wd) * p
    if name == "SGD":
        if o["momentum"] != 0:
            b = (
                g
                if t == 1
                else st["momentum_buffer"] * c(o["momentum"]) + c(1 - o["dampening"]) * g
            )
            st["momentum_buffer"] = b
            g = g + c(o["momentum"]) * b if o["nesterov"] else b
        return p + c(-lr) * g
    if name == "Adagrad":
        clr = lr / (1 + (t - 1) * o["lr_decay"])
        st["sum"] = st["sum"] + g * g
        return p + (-c(clr) * g) / (np.sqrt(st["sum"]) + c(o["eps"]))
    if name == "RMSprop":
        a = o["alpha"]
        st["square_avg"] = st["square_avg"] * c(a) + (c(1 - a) * g) * g
        if o["centered"]:
            ga = lerp(st["grad_avg"], g, 1 - a)
            st["grad_avg"] = ga
            avg = np.sqrt(st["square_avg"] - ga * ga) + c(o["eps"])
        else:
            avg = np.sqrt(st["square_avg"]) + c(o["eps"])
        if o["momentum"] > 0:
            st["momentum_buffer"] = st["momentum_buffer"] * c(o["momentum"]) + g / avg
            return p + c(-lr) * st["momentum_buffer"]
        return p + (c(-lr) * g) / avg
    if name == "Adadelta":
        rho, eps = o["rho"], c(o["eps"])
        st["square_avg"] = st["square_avg"] * c(rho) + (c(1 - rho) * g) * g
        delta = (np.sqrt(st["acc_delta"] + eps) / np.sqrt(st["square_avg"] + eps)) * g
        st["acc_delta"] = st["acc_delta"] * c(rho) + (c(1 - rho) * delta) * delta
        return p + c(-lr) * delta
    b1, b2 = o["betas"]
    eps = c(o["eps"])
    m = lerp(st["exp_avg"], g, 1 - b1)
    st["exp_avg"] = m
    if name == "Adamax":
        st["exp_inf"] = np.maximum(st["exp_inf"] * c(b2), np.abs(g) + eps)
        return p + (-c(lr / (1 - b1**t)) * m) / st["exp_inf"]
    v = st["exp_avg_sq"] * c(b2) + (c(1 - b2) * g) * g
    st["exp_avg_sq"] = v
    bc1, bc2 = 1 - b1**t, 1 - b2**t
    if name in ("Adam", "AdamW"):
        if o["amsgrad"]:
            st["max_exp_avg_sq"] = np.maximum(st["max_exp_avg_sq"], v)
            v = st["max_exp_avg_sq"]
        return p + (-c(lr / bc1) * m) / (np.sqrt(v) / c(math.sqrt(bc2)) + eps)
    if name == "NAdam":
        md = o["momentum_decay"]
        mu = b1 * (1.0 - 0.5 * 0.96 ** (t * md))
        mu_next = b1 * (1.0 - 0.5 * 0.96 ** ((t + 1) * md))
        prod = st["mu_product"] * mu
        st["mu_product"] = prod
        den = np.sqrt(v / c(bc2)) + eps
        p = p + (c(-lr * (1.0 - mu) / (1.0 - prod)) * g) / den
        return p + (c((-lr * mu_next) / (1.0 - prod * mu_next)) * m) / den
    # RAdam
    rho_inf = 2 / (1 - b2) - 1
    rho_t = rho_inf - 2 * t * b2**t / bc2
    bm = m / c(bc1)
    if rho_t > 5:
        rect = math.sqrt(
            (rho_t - 4) * (rho_t - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho_t)
        )
        return p - ((bm * c(lr)) * (c(math.sqrt(bc2)) / (np.sqrt(v) + eps))) * c(rect)
    return p - bm * c(lr)


def problem(n: int, dtype, steps: int = STEPS, seed: int = 0):
    rng = np.random.default_rng(seed)
    p0 = rng.standard_normal(n).astype(dtype)
    grads = [(rng.standard_normal(n) * rng.uniform(0.1, 3)).astype(dtype) for _ in range(steps)]
    return p0, grads


def run_ours(name, kw, p0, grads, **extra):
    p = p0.copy()
    opt = getattr(optim, name)([p], **kw, **extra)
    for g in grads:
        assert opt.step([g]) is True
    return p, opt


def run_reference(name, kw, p0, grads, dtype):
    o = _opts(name, kw)
    p = p0.astype(dtype)
    st = reference_init(name, o, p.shape, dtype)
    for t, g in enumerate(grads, 1):
        p = reference_step(name, o, p, g.astype(dtype), st, t)
    return p


def normwise(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-300))


# ---------------------------------------------------------------------- tests
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize(("name", "kw"), CONFIGS, ids=CONFIG_IDS)
def test_matches_torch(name, kw, dtype):
    torch = pytest.importorskip("torch")
    p0, grads = problem(1000, dtype)
    ours, _ = run_ours(name, kw, p0, grads)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)  # torch's step/mu_product scalars in float64, like ours
    try:
        tp = torch.from_numpy(p0.copy()).requires_grad_()
        topt = getattr(torch.optim, name)([tp], **kw, foreach=False)
        for g in grads:
            tp.grad = torch.from_numpy(g)
            topt.step()
    finally:
        torch.set_default_dtype(previous)
    assert normwise(ours, tp.detach().numpy()) < TORCH_TOL[dtype]


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize(("name", "kw"), CONFIGS, ids=CONFIG_IDS)
def test_matches_numpy_reference(name, kw, dtype):
    p0, grads = problem(1000, dtype, seed=1)
    ours, _ = run_ours(name, kw, p0, grads)
    # Same dtype, same order of operations: the same bits.
    np.testing.assert_array_equal(ours, run_reference(name, kw, p0, grads, dtype))
    # Exact math (float64 reference): close.
    assert normwise(ours, run_reference(name, kw, p0, grads, np.float64)) < F64_REF_TOL[dtype]


# One configuration per algorithm with most of its options on.
RICH = {
    "SGD": dict(lr=0.01, momentum=0.9, nesterov=True, weight_decay=0.1),
    "Adagrad": dict(lr_decay=0.01, weight_decay=0.1, initial_accumulator_value=0.5),
    "RMSprop": dict(momentum=0.9, centered=True, maximize=True),
    "Adadelta": dict(weight_decay=0.1),
    "Adam": dict(amsgrad=True, weight_decay=0.1),
    "AdamW": dict(amsgrad=True),
    "Adamax": dict(weight_decay=0.1),
    "NAdam": dict(weight_decay=0.1, decoupled_weight_decay=True),
    "RAdam": dict(weight_decay=0.1, betas=(0.9, 0.9)),
}


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("name", list(RICH))
def test_every_isa_and_thread_count_gives_the_same_bits(name, dtype):
    kw = RICH[name]
    # Two arrays, the first larger than a work item (kOptimGrain = 32768).
    p0, grads = problem(70_001 + 13, dtype, steps=3)

    reference = run_reference(name, kw, p0, grads, dtype)
    assert_steps_agree_everywhere(lambda ps: getattr(optim, name)(ps, **kw), p0, grads, reference)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("n", EDGE_SIZES)
def test_edge_sizes(isa, dtype, n):
    p0, grads = problem(n, dtype, steps=2, seed=n)
    for name, kw in [
        ("Adam", dict(amsgrad=True, weight_decay=0.1)),
        ("SGD", dict(lr=0.1, momentum=0.9)),
    ]:
        ours, _ = run_ours(name, kw, p0, grads)
        np.testing.assert_array_equal(ours, run_reference(name, kw, p0, grads, dtype))


@pytest.mark.parametrize("betas", [(0.9, 0.999), (0.5, 0.95)])
def test_adam_bits_over_the_whole_value_range(betas):
    """Adam's sqrt(v) / sqrt(1 - beta2^t) is a product in double on the SIMD
    ISAs (vdiv_c1 in kernels_optim_rules_common.hpp): the same bits as the
    scalar reference's float32 division for every magnitude of v, 0, inf and
    NaN included (nonfinite="ignore" lets them through), over several steps
    (a different divisor each)."""
    rng = np.random.default_rng(7)
    n = 1 << 18
    mag = np.exp(rng.uniform(np.log(1e-22), np.log(1e18), n)).astype(np.float32)
    g0 = np.where(rng.random(n) < 0.5, -mag, mag)
    g0[:6] = [0.0, np.inf, -np.inf, np.nan, 3.4e38, 1e-45]
    grads = [np.roll(g0, s) for s in range(5)]
    p0 = rng.standard_normal(n).astype(np.float32)

    def run():
        p = p0.copy()
        opt = optim.Adam([p], lr=1e-3, betas=betas, nonfinite="ignore")
        for g in grads:
            opt.step([g])
        return p

    results = {}
    for name in slimgrad.available_isas():
        for t in THREADS:
            with slimgrad.use_isa(name), slimgrad.num_threads(t):
                results[(name, t)] = run()
    ref = results[("scalar", 1)]
    for key, got in results.items():
        np.testing.assert_array_equal(got.view(np.uint32), ref.view(np.uint32), err_msg=str(key))


def test_state_matches_torch_names_and_values():
    torch = pytest.importorskip("torch")
    p0, grads = problem(64, np.float64, steps=5)
    _, opt = run_ours("Adam", dict(amsgrad=True), p0, grads)
    tp = torch.from_numpy(p0.copy()).requires_grad_()
    topt = torch.optim.Adam([tp], amsgrad=True, foreach=False)
    for g in grads:
        tp.grad = torch.from_numpy(g)
        topt.step()
    ours, theirs = opt.state[0], topt.state[tp]
    assert set(ours) == set(theirs)
    assert ours["step"] == int(theirs["step"]) == 5
    for k in ("exp_avg", "exp_avg_sq", "max_exp_avg_sq"):
        np.testing.assert_allclose(ours[k], theirs[k].numpy(), rtol=1e-13)


def test_defaults_match_torch():
    torch = pytest.importorskip("torch")
    import inspect

    for name in [n for n in OPTIMIZERS if hasattr(torch.optim, n)]:  # Adafactor too
        ours = inspect.signature(getattr(optim, name)).parameters
        theirs = inspect.signature(getattr(torch.optim, name)).parameters
        for arg, par in theirs.items():
            if arg in ("params", "foreach", "fused", "capturable", "differentiable"):
                continue
            assert arg in ours, f"{name}: missing argument {arg}"
            assert ours[arg].default == par.default, f"{name}.{arg}"


def test_lr_edit_in_param_groups_takes_effect():
    p0, grads = problem(100, np.float64, steps=4)
    p = p0.copy()
    opt = optim.SGD([p], lr=0.1)
    opt.step([grads[0]])
    opt.param_groups[0]["lr"] = 0.5
    before = p.copy()
    opt.step([grads[1]])
    np.testing.assert_allclose(p, before - 0.5 * grads[1], rtol=1e-15)


def test_threads_do_not_change_a_big_step():
    p0, grads = problem(300_007, np.float32, steps=2)

    def run():
        p, _ = run_ours("AdamW", {}, p0, grads)
        return p

    outs = []
    for n in THREADS:
        with slimgrad.num_threads(n):
            outs.append(run())
    for o in outs[1:]:
        np.testing.assert_array_equal(o, outs[0])
