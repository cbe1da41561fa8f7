"""float16 / bfloat16 parameters: float32 master copy, float32 math, rounding
to nearest or stochastic, against a NumPy emulation (bit for bit)."""

from __future__ import annotations

import functools

import ml_dtypes
import numpy as np
import pytest
from conftest import run_everywhere
from slimgrad import optim
from slimgrad.optim import functional as F
from test_optim import RICH, _opts, reference_init, reference_step
from test_optim import problem as _problem
from test_optim import run_ours as run

HALVES = [np.dtype(np.float16), np.dtype(ml_dtypes.bfloat16)]
HALF_IDS = ["float16", "bfloat16"]
M64 = (1 << 64) - 1


# ---------------------------------------------- the counter-based hash (optim.hpp)
def _mix64_int(x: int) -> int:
    x ^= x >> 30
    x = (x * 0xBF58476D1CE4E5B9) & M64
    x ^= x >> 27
    x = (x * 0x94D049BB133111EB) & M64
    return x ^ (x >> 31)


def _fmix32(x: np.ndarray) -> np.ndarray:
    x = x ^ (x >> np.uint32(16))
    x = x * np.uint32(0x85EBCA6B)
    x = x ^ (x >> np.uint32(13))
    x = x * np.uint32(0xC2B2AE35)
    return x ^ (x >> np.uint32(16))


def step_key(seed: int, step: int) -> int:
    """The 64-bit key of the stochastic-rounding stream of (seed, step)."""
    return _mix64_int(
        _mix64_int((seed + 0x9E3779B97F4A7C15) & M64) ^ ((step * 0xD1B54A32D192ED03) & M64)
    )


def sr_bits(seed: int, step: int, n: int, offset: int = 0) -> np.ndarray:
    return hash_bits(step_key(seed, step), n, offset)


def hash_bits(key: int, n: int, offset: int = 0) -> np.ndarray:
    """32 random bits for the elements offset .. offset + n - 1 of the stream ``key``."""
    idx = np.arange(offset, offset + n, dtype=np.uint64)
    lo = (idx & np.uint64(0xFFFFFFFF)).astype(np.uint32)
    hi = (idx >> np.uint64(32)).astype(np.uint32)
    with np.errstate(over="ignore"):
        a = _fmix32(lo * np.uint32(0x9E3779B1) + np.uint32(key & 0xFFFFFFFF))
        return _fmix32(a ^ np.uint32(key >> 32) ^ (hi * np.uint32(0x85EBCA77)))


def round_stochastic(x: np.ndarray, dtype: np.dtype, r: np.ndarray) -> np.ndarray:
    """NumPy emulation of bf16_stochastic / f16_stochastic (finite inputs)."""
    x = x.astype(np.float32)
    if dtype == np.dtype(ml_dtypes.bfloat16):
        bits = x.view(np.uint32).astype(np.uint64) + (r & 0xFFFF)
        sr = (bits >> 16).astype(np.uint16).view(ml_dtypes.bfloat16)
        return np.where(np.isfinite(x), sr, x.astype(ml_dtypes.bfloat16))
    with np.errstate(over="ignore"):
        near = x.astype(np.float16)  # nearest; step toward zero if it went beyond |x|
    nb = near.view(np.uint16).copy()
    with np.errstate(invalid="ignore"):
        over = np.abs(near.astype(np.float32)) > np.abs(x)
    nb[over] -= 1
    down = nb.view(np.float16)
    up = (nb + 1).astype(np.uint16).view(np.float16)
    fd, fu, ax = np.abs(down.astype(np.float32)), np.abs(up.astype(np.float32)), np.abs(x)
    with np.errstate(invalid="ignore", divide="ignore"):
        frac = (ax - fd) / (fu - fd)
    u = (r >> 8).astype(np.float32) * np.float32(2.0**-24)
    out = np.where((fd != ax) & (u < frac), up, down)
    special = ~np.isfinite(x) | (ax > 65504)  # rounded to nearest
    with np.errstate(over="ignore"):
        return np.where(special, x.astype(np.float16), out)


def emulate(name, kw, p0, grads, rounding="nearest", seed=0):
    """Our low-precision step in NumPy: float32 master, reference formula, rounding."""
    o = _opts(name, kw)
    master = p0.astype(np.float32)
    st = reference_init(name, o, p0.shape, np.float32)
    p = p0
    for t, g in enumerate(grads, 1):
        master = reference_step(name, o, master, g.astype(np.float32), st, t)
        if rounding == "nearest":
            p = master.astype(p0.dtype)
        else:
            p = round_stochastic(master, p0.dtype, sr_bits(seed, t, master.size))
    return p, master


# A short run of test_optim's problem (5 steps), stepped by its run_ours.
problem = functools.partial(_problem, steps=5)


@pytest.mark.parametrize("dtype", HALVES, ids=HALF_IDS)
@pytest.mark.parametrize("name", list(RICH))
def test_nearest_matches_numpy_emulation(name, dtype):
    p0, grads = problem(1000 + 7, dtype)
    p, opt = run(name, RICH[name], p0, grads)
    ep, em = emulate(name, RICH[name], p0, grads)
    np.testing.assert_array_equal(opt.state[0]["master"], em)
    np.testing.assert_array_equal(p.view(np.uint16), ep.view(np.uint16))


@pytest.mark.parametrize("dtype", HALVES, ids=HALF_IDS)
def test_state_is_float32_with_a_master_copy(dtype):
    p0, grads = problem(10, dtype, steps=1)
    _, opt = run("Adam", {}, p0, grads)
    st = opt.state[0]
    assert set(st) == {"step", "exp_avg", "exp_avg_sq", "master"}
    assert all(st[k].dtype == np.float32 for k in ("exp_avg", "exp_avg_sq", "master"))


@pytest.mark.parametrize("dtype", HALVES, ids=HALF_IDS)
@pytest.mark.parametrize("name", ["AdamW", "SGD"])
def test_stochastic_matches_numpy_emulation_everywhere(name, dtype):
    p0, grads = problem(70_001, dtype, steps=3, seed=5)
    kw = RICH[name]
    ep, em = emulate(name, kw, p0, grads, rounding="stochastic", seed=11)

    def go():
        return run(name, kw, p0, grads, rounding="stochastic", seed=11)[0]

    for key, p in run_everywhere(go).items():
        np.testing.assert_array_equal(p.view(np.uint16), ep.view(np.uint16), err_msg=str(key))


@pytest.mark.parametrize("dtype", HALVES, ids=HALF_IDS)
def test_stochastic_rounding_is_unbiased(dtype):
    # lr=0: the master stays x and each step rounds it again with new bits.
    x = np.random.default_rng(3).uniform(-4, 4, 64).astype(np.float32)
    x = x[(x.astype(dtype).astype(np.float32) != x)]  # not representable: two neighbours
    p = x.astype(dtype)
    g = np.zeros_like(p)
    n = 4000
    total = np.zeros(x.size)
    seen = [set() for _ in range(x.size)]
    for t in range(1, n + 1):
        F.sgd_(p, g, step=t, lr=0.0, master=x, rounding="stochastic", seed=1)
        v = p.astype(np.float64)
        total += v
        for i, vi in enumerate(v):
            seen[i].add(vi)
    np.testing.assert_array_equal(x, x)  # the master did not move
    assert all(len(s) == 2 for s in seen)  # always one of the two neighbours
    ulp = np.array([max(s) - min(s) for s in seen])
    # mean of n Bernoulli roundings: within 5 standard deviations of x
    assert np.all(np.abs(total / n - x) <= 5 * ulp * 0.5 / np.sqrt(n))


SPECIALS = np.array(
    [
        0.0,
        -0.0,
        1e-6,
        -3e-8,
        1e-9,
        6.1e-5,
        65504.0,
        65505.0,
        65519.0,
        65520.0,
        7e4,
        -7e4,
        1e38,
        3.4e38,
        np.inf,
        -np.inf,
        np.nan,
        1.0,
        -2.5,
        1.0 + 2.0**-12,
        1.5e-45,
    ],
    np.float32,
)


@pytest.mark.parametrize("dtype", HALVES, ids=HALF_IDS)
def test_stochastic_special_values(dtype):
    x = np.tile(SPECIALS, 5)  # 105 elements: full vectors and a tail

    def go():
        p = np.zeros(x.size, dtype)
        F.sgd_(p, np.zeros_like(p), step=3, lr=0.0, master=x.copy(), rounding="stochastic", seed=9)
        return p

    expected = round_stochastic(x, dtype, sr_bits(9, 3, x.size)).astype(np.float32)
    for key, p in run_everywhere(go).items():
        got = p.astype(np.float32)
        nan = np.isnan(expected)
        np.testing.assert_array_equal(np.isnan(got), nan, err_msg=str(key))
        np.testing.assert_array_equal(
            got[~nan].view(np.uint32), expected[~nan].view(np.uint32), err_msg=str(key)
        )


# NaN payloads the rounding bias would carry into the exponent or the sign
# (a NaN must stay a NaN, quieted: the high half with bit 0x40 set), and
# bfloat16 ties (1 + odd multiples of 2^-8: to even).
NAN_PAYLOADS = np.array(
    [0x7F800001, 0xFFFFFFFF, 0x7FFFFFFF, 0xFF800001, 0x7FC00000, 0x7F80FFFF], np.uint32
).view(np.float32)
TIES = np.float32(1) + np.array([1, 3, 5, 7], np.float32) * np.float32(2.0**-8)


@pytest.mark.parametrize("dtype", HALVES, ids=HALF_IDS)
def test_nearest_special_values_give_every_level_the_same_bits(dtype):
    x = np.tile(np.concatenate([SPECIALS, TIES, NAN_PAYLOADS]), 5)  # full vectors and a tail

    def go():
        p = np.zeros(x.size, dtype)
        F.sgd_(p, np.zeros_like(p), step=1, lr=0.0, master=x.copy())
        return p.view(np.uint16)

    results = run_everywhere(go)
    want = results[("scalar", 1)]
    for key, got in results.items():
        np.testing.assert_array_equal(got, want, err_msg=str(key))
    nan = np.isnan(x)
    with np.errstate(over="ignore"):
        np.testing.assert_array_equal(want[~nan], x[~nan].astype(dtype).view(np.uint16))
    assert np.isnan(want.view(dtype)[nan].astype(np.float32)).all()
    if dtype == np.dtype(ml_dtypes.bfloat16):  # quieted, the payload's high half kept
        np.testing.assert_array_equal(
            want[nan], (x[nan].view(np.uint32) >> 16).astype(np.uint16) | 0x40
        )


def test_stochastic_depends_on_seed_and_step():
    x = np.full(1000, 1.0 + 2.0**-8, np.float32)  # halfway between two bfloat16 values (ulp 2^-7)
    outs = []
    for seed, step in [(0, 1), (1, 1), (0, 2), (0, 1)]:
        p = np.zeros(1000, ml_dtypes.bfloat16)
        F.sgd_(
            p,
            np.zeros_like(p),
            step=step,
            lr=0.0,
            master=x.copy(),
            rounding="stochastic",
            seed=seed,
        )
        outs.append(p.view(np.uint16).copy())
    assert not np.array_equal(outs[0], outs[1])
    assert not np.array_equal(outs[0], outs[2])
    np.testing.assert_array_equal(outs[0], outs[3])
    assert 400 < np.count_nonzero(outs[0] != outs[0].min()) < 600


@pytest.mark.parametrize("dtype", HALVES, ids=HALF_IDS)
def test_half_nonfinite_grad_is_detected(dtype):
    p0, grads = problem(100, dtype, steps=1)
    p = p0.copy()
    opt = optim.Adam([p])
    g = grads[0].copy()
    g[42] = np.inf
    with pytest.raises(FloatingPointError, match=r"grads\[0\] has a non-finite value at index 42"):
        opt.step([g])
    np.testing.assert_array_equal(p.view(np.uint16), p0.view(np.uint16))


def test_half_master_must_be_float32():
    p = np.zeros(4, np.float16)
    with pytest.raises(TypeError, match="master: expected float32 C-contiguous array of shape"):
        F.sgd_(p, p.copy(), step=1, lr=0.1, master=np.zeros(4, np.float16))
    with pytest.raises(
        ValueError, match="masters: float16/bfloat16 params need float32 master copies"
    ):
        F.sgd_(p, p.copy(), step=1, lr=0.1)
