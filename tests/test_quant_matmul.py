"""Products on quantized weights (quant.matmul, quant.matmul_int8) against NumPy."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import run_everywhere
from slimgrad import quant

# float32 dot products of length n in a different order than the float64
# reference: relative to sum(|x| |w|), a few ulps times sqrt(n) at most.
MATMUL_RTOL = 2e-6
FUSED = [
    dict(bits=8),
    dict(bits=8, symmetric=False),
    dict(bits=8, granularity="tensor"),
    dict(bits=8, granularity="group", group_size=64),
    dict(bits=4),
    dict(bits=4, symmetric=False),
    dict(bits=4, granularity="group", group_size=32),
    dict(bits=4, symmetric=False, granularity="group", group_size=32),
    dict(bits=4, granularity="group", group_size=50),
    dict(bits=4, granularity="group", group_size=128),
]
FALLBACK = [
    dict(bits=3, granularity="group", group_size=32),
    dict(bits=8, granularity="channel", axis=1),
    dict(bits=4, granularity="group", group_size=7),
]


def check(y, x, qt):
    w = qt.dequantize().astype(np.float64)
    x64 = x.astype(np.float64)
    ref = x64 @ w.T
    bound = np.abs(x64) @ np.abs(w).T
    assert y.shape == ref.shape and y.dtype == np.float32
    assert np.all(np.abs(y - ref) <= MATMUL_RTOL * bound + 1e-30)


# (40, 4196): rows dequantized in pieces of 4096 codes, a group of 50 across
# the piece boundary, panels of 2W rows and a ragged one
@pytest.mark.parametrize("kw", FUSED + FALLBACK, ids=str)
@pytest.mark.parametrize("shape", [(1, 1), (5, 33), (37, 1000), (19, 512), (40, 4196)], ids=str)
def test_matmul_matches_dequantized_product(isa, kw, shape, rng):
    w = rng.standard_normal(shape).astype(np.float32)
    qt = quant.quantize(w, **kw)
    for batch in (None, 1, 6):
        x = rng.standard_normal(shape[1] if batch is None else (batch, shape[1])).astype(np.float32)
        check(quant.matmul(x, qt), x, qt)


# (1093, 1920): above the 2^21 multiply-adds from which the product is
# threaded even at batch 1, 8-bit rows in pairs and an odd last row
@pytest.mark.parametrize("shape", [(203, 777), (101, 1024), (1093, 1920)], ids=str)
def test_matmul_identical_for_any_thread_count(shape, rng):
    w = rng.standard_normal(shape).astype(np.float32)
    x = rng.standard_normal((5, shape[1])).astype(np.float32)
    qts = [quant.quantize(w, **kw) for kw in FUSED[:8]]
    results = run_everywhere(lambda: [quant.matmul(xx, q) for q in qts for xx in (x[0], x)])
    for (name, _), ys in results.items():
        for a, b in zip(ys, results[(name, 1)]):
            np.testing.assert_array_equal(a, b)


def test_matmul_out_and_errors(rng):
    w = rng.standard_normal((6, 40)).astype(np.float32)
    qt = quant.quantize(w, 4, granularity="group", group_size=8)
    x = rng.standard_normal((2, 40)).astype(np.float32)
    out = np.empty((2, 6), np.float32)
    assert quant.matmul(x, qt, out=out) is out
    check(out, x, qt)
    with pytest.raises(ValueError, match=r"x: expected shape \(\.\.\., 40\), got \(2, 41\)"):
        quant.matmul(np.zeros((2, 41), np.float32), qt)
    with pytest.raises(
        TypeError, match="qt: expected a QuantizedTensor or PackedWeight, got ndarray"
    ):
        quant.matmul(x, w)
    with pytest.raises(
        ValueError,
        match=r"out: expected float32 C-contiguous array of shape \(2, 6\), got shape \(6, 2\)",
    ):
        quant.matmul(x, qt, out=np.empty((6, 2), np.float32))
    with pytest.raises(TypeError, match="out: expected float32 C-contiguous array of shape"):
        quant.matmul(x, qt, out=np.empty((2, 6), np.float64))
    with pytest.raises(ValueError, match=r"qt: expected a 2-D \(out, in\) weight"):
        quant.matmul(x, quant.quantize(w.reshape(2, 3, 40), 8))


@pytest.mark.parametrize(
    "mk",
    [
        (1, 1),
        (3, 15),
        (4, 16),
        (5, 17),
        (7, 257),
        (37, 63),
        (8, 64),
        (9, 65),
        (33, 1000),
        (70, 1100),
    ],
    ids=str,
)
def test_matmul_int8_exact(isa_all, threads, mk, rng):
    # AMX (level amx): 32 x 32 blocks of 16 x 16 tiles, k in steps of 64;
    # n = 45 and 97 end in partial blocks, 97 also passes whole ones.
    # VNNI from 4 rows: blocks of 64 columns (97: a whole one and a short
    # one of 3 strips, the last of one column), tiles of 4 / 3 / 2 / 1 rows
    # (m = 8 / 7 / 70 / 5), k past a step of 4 (15, 17, 63, 65, 257).
    m, k = mk
    for n in (1, 3, 4, 6, 45, 97):
        a = rng.integers(-128, 128, (m, k)).astype(np.int8)
        b = rng.integers(-128, 128, (n, k)).astype(np.int8)
        a[0, 0] = b[0, 0] = -128  # the value vpmaddubsw's sign trick gets wrong
        c = quant.matmul_int8(a, b)
        assert c.dtype == np.int32
        np.testing.assert_array_equal(c, a.astype(np.int64) @ b.astype(np.int64).T)


def test_matmul_int8_extremes_and_errors(rng):
    k = 4096
    for v in (-128, 127):
        a = np.full((2, k), v, np.int8)
        b = np.full((3, k), -128, np.int8)
        np.testing.assert_array_equal(quant.matmul_int8(a, b), np.full((2, 3), v * -128 * k))
    with pytest.raises(
        ValueError, match=r"a, b: expected int8 arrays of shapes \(M, K\) and \(N, K\)"
    ):
        quant.matmul_int8(np.zeros((2, 3), np.int8), np.zeros((2, 4), np.int8))
    with pytest.raises(TypeError, match="a: expected int8 C-contiguous array, got int16 array"):
        quant.matmul_int8(np.zeros((2, 3), np.int16), np.zeros((2, 3), np.int8))
    out = np.zeros((2, 2), np.int64)
    with pytest.raises(TypeError, match="out: expected int32 C-contiguous array of shape"):
        quant.matmul_int8(np.zeros((2, 3), np.int8), np.zeros((2, 3), np.int8), out)


def test_matmul_int8_k_limit(isa_all):
    # the longest K whose int32 sums cannot wrap, at the worst case -128 * -128
    k = quant.MAX_K_INT8
    assert k == 131071
    a = np.full((1, k), -128, np.int8)
    np.testing.assert_array_equal(quant.matmul_int8(a, a), [[k * 128 * 128]])
    # 4 rows and more take VNNI's packed path, whose sums start at
    # -128 * sum(a row) and wrap on the way: both extremes at this K
    a = np.full((5, k), -128, np.int8)
    b = np.stack([np.full(k, -128, np.int8), np.full(k, 127, np.int8)])
    want = np.array([[k * 128 * 128, -k * 128 * 127]] * 5, np.int64)
    np.testing.assert_array_equal(quant.matmul_int8(a, b), want)
    a = np.full((1, k + 1), -128, np.int8)
    out = np.full((1, 1), 7, np.int32)
    with pytest.raises(ValueError) as e:
        quant.matmul_int8(a, a, out)
    assert str(e.value) == (
        "a: K = 131072 exceeds 131071, the longest row whose int8 products sum exactly "
        "in int32; split K and add the partial products in int64"
    )
    assert out[0, 0] == 7
