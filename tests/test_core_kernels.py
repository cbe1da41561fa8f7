"""Core kernels against a float64 NumPy reference, on every ISA and thread count."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import EDGE_SIZES, run_everywhere
from slimgrad import _core, ops

DTYPES = [np.float32, np.float64]
# One FMA vs multiply-then-add differs by at most one rounding of the product.
AXPY_RTOL = {np.float32: 2e-7, np.float64: 4e-16}
# Blocked float32 lanes: error grows with the block length (4096), not with n.
NORM_RTOL = {np.float32: 2e-6, np.float64: 1e-13}


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("n", EDGE_SIZES)
def test_axpy_matches_reference(isa, threads, dtype, n, rng):
    y = rng.standard_normal(n).astype(dtype)
    x = rng.standard_normal(n).astype(dtype)
    expected = y.astype(np.float64) + 0.75 * x.astype(np.float64)
    ops.axpy_(y, x, 0.75)
    np.testing.assert_allclose(y, expected, rtol=AXPY_RTOL[dtype], atol=AXPY_RTOL[dtype])


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("n", EDGE_SIZES)
def test_squared_norm_matches_reference(isa, threads, dtype, n, rng):
    x = rng.standard_normal(n).astype(dtype)
    expected = float(np.sum(x.astype(np.float64) ** 2))
    assert ops.squared_norm(x) == pytest.approx(expected, rel=NORM_RTOL[dtype], abs=0)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_results_identical_across_threads_per_isa(dtype, rng):
    x = rng.standard_normal(300_007).astype(dtype)
    y0 = rng.standard_normal(300_007).astype(dtype)

    def run():
        y = y0.copy()
        ops.axpy_(y, x, -1.5)
        return ops.squared_norm(x), y

    results = run_everywhere(run)
    for (name, _), (norm, y) in results.items():
        ref_norm, ref_y = results[(name, 1)]
        assert norm == ref_norm  # bit-identical for every thread count
        np.testing.assert_array_equal(y, ref_y)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("n", [1, 9, 17, 65, 4097, 100_003])
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_find_nonfinite_finds_the_first(isa, threads, dtype, n, bad, rng):
    x = rng.standard_normal(n).astype(dtype)
    assert ops.find_nonfinite(x) == -1
    positions = sorted({n - 1, n // 2, n // 3})
    for p in reversed(positions):
        x[p] = bad
    assert ops.find_nonfinite(x) == positions[0]


def test_find_nonfinite_empty():
    assert ops.find_nonfinite(np.zeros(0, np.float32)) == -1
    assert ops.squared_norm(np.zeros(0, np.float64)) == 0.0


@pytest.mark.parametrize("n", EDGE_SIZES)
@pytest.mark.parametrize("offset", [0, 1, 4], ids=lambda k: f"offset={k}")
def test_stream_probe_adds_g_to_three_arrays(isa, threads, n, offset, rng):
    # offset shifts the arrays off NumPy's alignment, so the peel loop runs.
    p, m, v, g = (rng.standard_normal(n + offset).astype(np.float32)[offset:] for _ in range(4))
    expected = [a + g for a in (p, m, v)]  # one float32 add each: exact
    _core.stream_probe(p, g, m, v)
    for got, want in zip((p, m, v), expected):
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("half", ["float16", "bfloat16"])
def test_widen_half_is_exact_for_every_bit_pattern(isa, threads, half):
    """float16 / bfloat16 -> float32 (what the mask functions read for
    half-precision weights): every one of the 65536 bit patterns, at odd
    offsets and lengths (vector tails), equals NumPy's / ml_dtypes' astype;
    NaN stays NaN. A new array of x's shape; x is not touched."""
    import ml_dtypes

    dtype = np.dtype(np.float16) if half == "float16" else np.dtype(ml_dtypes.bfloat16)
    bits = np.arange(65536, dtype=np.uint16)
    for start, stop in [(0, 65536), (3, 65536 - 5), (7, 40)]:
        x = bits[start:stop].view(dtype).reshape(-1, 1)
        before = x.copy()
        y = _core.widen_half(x)
        want = x.astype(np.float32)
        assert y.dtype == np.float32 and y.shape == x.shape
        nan = np.isnan(want)
        np.testing.assert_array_equal(np.isnan(y), nan)
        np.testing.assert_array_equal(y.view(np.uint32)[~nan], want.view(np.uint32)[~nan])
        np.testing.assert_array_equal(x.view(np.uint16), before.view(np.uint16))


def test_widen_half_rejects_other_dtypes_and_layouts():
    with pytest.raises(TypeError, match="x: expected"):
        _core.widen_half(np.ones(4, np.float32))
    with pytest.raises(TypeError, match="x: expected"):
        _core.widen_half(np.ones(8, np.float16)[::2])


def narrowing_cases(rng) -> np.ndarray:
    """float32 values for a rounding to float16 / bfloat16: random bit patterns
    (NaN, inf, denormals, both signs), every midpoint between consecutive
    finite float16 values and its neighbours (ties to even, just above and
    below), and every bfloat16 value plus 0x7FFF, 0x8000 and 0x8001 (its ties)."""
    random = rng.integers(0, 2**32, 200_003, dtype=np.uint64).astype(np.uint32)
    f16 = np.arange(0x7C00, dtype=np.uint16).view(np.float16).astype(np.float64)
    mids = ((f16[:-1] + f16[1:]) / 2).astype(np.float32).view(np.uint32)
    high = np.arange(0x8000, dtype=np.uint32) << 16
    bits = np.concatenate(
        [mids - 1, mids, mids + 1, high, high + 0x7FFF, high + 0x8000, high + 0x8001]
    )
    cases = np.concatenate([random, bits, bits | 0x80000000])
    return rng.permutation(cases).view(np.float32)  # every kind in the vector tails too


@pytest.mark.parametrize("half", ["float16", "bfloat16"])
def test_narrow_half_rounds_like_numpy(isa, threads, half, rng):
    """float32 -> float16 / bfloat16 bits (a GGUF export's F16 / BF16
    tensors): round to nearest even, as NumPy's / ml_dtypes' astype, on
    every tie and its neighbours, at odd offsets and lengths (vector tails);
    NaN stays NaN; x is not touched."""
    import ml_dtypes

    dtype = np.dtype(np.float16) if half == "float16" else np.dtype(ml_dtypes.bfloat16)
    x = narrowing_cases(rng)
    with np.errstate(over="ignore", invalid="ignore"):
        want = x.astype(dtype).view(np.uint16)
    for start, stop in [(0, x.size), (3, x.size - 5), (7, 40)]:
        part = x[start:stop]
        before = part.copy()
        got = _core.narrow_half(part, half == "bfloat16")
        assert got.dtype == np.uint16 and got.shape == part.shape
        nan = np.isnan(part)
        np.testing.assert_array_equal(got[~nan], want[start:stop][~nan])
        assert np.isnan(got[nan].view(dtype).astype(np.float32)).all()
        np.testing.assert_array_equal(part.view(np.uint32), before.view(np.uint32))
    with pytest.raises(TypeError, match="x: expected float32 C-contiguous array"):
        _core.narrow_half(np.ones(4, np.float64), False)
    with pytest.raises(TypeError, match="x: expected float32 C-contiguous array"):
        _core.narrow_half(x[::2], True)
    assert _core.narrow_half(np.empty((0, 3), np.float32), True).shape == (0, 3)


def test_widen_half_empty_scalar_and_read_only_inputs():
    import ml_dtypes

    assert _core.widen_half(np.empty((0, 3), np.float16)).shape == (0, 3)
    assert float(_core.widen_half(np.array(1.5, ml_dtypes.bfloat16))) == 1.5
    ro = np.arange(8, dtype=np.float16)
    ro.flags.writeable = False  # only read: accepted, and left as it was
    np.testing.assert_array_equal(_core.widen_half(ro), np.arange(8, dtype=np.float32))
