"""int8-activation products (quant.prepack, quant.matmul(..., activations="int8")):
W8A8, W4A8, GGUF Q8_0 / Q4_0, against a float64 reference of the same
quantized weights and activations, exact integer sums, every ISA (VNNI and
plain AVX-512 included) and thread count giving the same bits."""

from __future__ import annotations

import numpy as np
import pytest
import slimgrad
from conftest import ALL_ISAS, THREADS
from slimgrad import quant
from slimgrad.quant import gguf

SPECS = [
    dict(bits=8),
    dict(bits=8, granularity="tensor"),
    dict(bits=8, granularity="group", group_size=64),
    dict(bits=8, granularity="group", group_size=4),
    dict(bits=4),
    dict(bits=4, granularity="group", group_size=32),
    dict(bits=4, granularity="group", group_size=8),
    dict(bits=4, granularity="group", group_size=128),
]
# (out, in): single, vector tails of k (4 / 8 / 32 / 64), strips of 16 outputs +-1
SHAPES = [(1, 1), (5, 3), (17, 33), (16, 64), (15, 100), (33, 257), (40, 1000)]
BATCHES = (1, 2, 3, 4, 5, 9)


def quantize_rows(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The activation codes and scales of the definition (docs/quant.md), in NumPy float32."""
    x = x.reshape(-1, x.shape[-1]).astype(np.float32)
    amax = np.abs(x).max(axis=1) if x.shape[1] else np.zeros(len(x), np.float32)
    tiny = amax < np.finfo(np.float32).tiny
    safe = np.where(tiny, np.float32(1), amax)
    inv = (np.float32(127) / safe).astype(np.float32)
    q = np.clip(np.rint((x * inv[:, None]).astype(np.float32)), -127, 127)
    q[tiny] = 0
    xs = np.where(tiny, np.float32(0), (safe / np.float32(127)).astype(np.float32))
    return q, xs


def reference(x: np.ndarray, w_hat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(float64 product of the quantized activations with w_hat, an error bound)."""
    q, xs = quantize_rows(x)
    q64, xs64, w64 = q.astype(np.float64), xs.astype(np.float64)[:, None], w_hat.astype(np.float64)
    ref = (q64 @ w64.T) * xs64
    bound = (np.abs(q64) @ np.abs(w64).T) * xs64
    return ref.reshape(*x.shape[:-1], -1), bound.reshape(*x.shape[:-1], -1)


def check(y: np.ndarray, x: np.ndarray, w_hat: np.ndarray) -> None:
    ref, bound = reference(x, w_hat)
    assert y.dtype == np.float32 and y.shape == ref.shape
    # float32 scale products and one rounding per group: a few ulps of the bound
    assert np.all(np.abs(y - ref) <= 4e-7 * bound + 1e-30), np.max(
        np.abs(y - ref) / (bound + 1e-30)
    )


@pytest.mark.parametrize("kw", SPECS, ids=str)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_matches_float64_reference(isa_all, kw, shape, rng):
    w = rng.standard_normal(shape).astype(np.float32)
    qt = quant.quantize(w, **kw)
    packed = quant.prepack(qt)
    for batch in BATCHES:
        x = rng.standard_normal((batch, shape[1])).astype(np.float32)
        check(packed.matmul(x), x, qt.dequantize())
    x = rng.standard_normal((2, 3, shape[1])).astype(np.float32)  # leading dims
    check(quant.matmul(x, qt, activations="int8"), x, qt.dequantize())


@pytest.mark.parametrize("bits", [8, 4])
def test_integer_sums_are_exact(isa_all, bits, rng):
    # scale 1 and integer x with a row absmax of 127: x's codes are x itself,
    # so y is the exact integer product (every value below 2**24)
    n, k, m = 35, 517, 7
    lo, hi = (-127, 127) if bits == 8 else (-7, 7)
    codes = rng.integers(lo, hi + 1, (n, k)).astype(np.int8)
    qt = quant.QuantizedTensor.from_codes(codes, np.ones(n, np.float32), bits=bits)
    x = rng.integers(-127, 128, (m, k)).astype(np.float32)
    x[:, 0] = 127
    y = quant.prepack(qt).matmul(x)
    np.testing.assert_array_equal(y, x.astype(np.int64) @ codes.astype(np.int64).T)


@pytest.mark.parametrize("kw", [SPECS[0], SPECS[5], SPECS[2]], ids=str)
def test_every_isa_and_thread_count_gives_the_same_bits(kw, rng):
    w = rng.standard_normal((77, 300)).astype(np.float32)
    packed = quant.prepack(quant.quantize(w, **kw))
    x = rng.standard_normal((13, 300)).astype(np.float32)
    bias = rng.standard_normal(77).astype(np.float32)
    results = {}
    for name in ALL_ISAS:
        for n in THREADS:
            with slimgrad.use_isa(name), slimgrad.num_threads(n):
                results[(name, n)] = packed.matmul(x, bias=bias)
    first = next(iter(results.values()))
    for key, y in results.items():
        np.testing.assert_array_equal(y, first, err_msg=str(key))


# The AMX tiles (level amx, qgemm::amx_pays): 8-bit codes from 8 rows of x,
# 4-bit codes from 32 rows with k >= 1024; one group, or groups of 128 k (64
# for 8 bits). Shapes: k past a 64-k tile step (1001, 1160) and on one
# (1024), rows past a 16-row tile and a 32-row block, outputs past a strip.
TILE_CASES = [
    (dict(bits=8), (37, 1001), (8, 15, 16, 17, 33, 70)),
    (dict(bits=8, granularity="tensor"), (16, 64), (8, 32)),
    (dict(bits=8, granularity="group", group_size=64), (17, 1000), (9, 40)),
    (dict(bits=4), (20, 1024), (32, 33)),
    (dict(bits=4, granularity="group", group_size=128), (33, 1160), (32, 47, 65)),
    (dict(bits=4, granularity="group", group_size=256), (50, 1300), (48,)),
    # VNNI's tiles of 4 strips (a whole strip task of 64 outputs), then a
    # task of one short strip; 4-bit codes past kWidenRows rows through the
    # widened byte panel
    (dict(bits=8), (70, 300), (1, 2, 3, 4, 7)),
    (dict(bits=4, granularity="group", group_size=32), (67, 256), (1, 17, 22)),
]


@pytest.mark.parametrize(("kw", "shape", "batches"), TILE_CASES, ids=str)
def test_tile_sizes_match_float64_reference(isa_all, kw, shape, batches, rng):
    w = rng.standard_normal(shape).astype(np.float32)
    qt = quant.quantize(w, **kw)
    packed = quant.prepack(qt)
    bias = rng.standard_normal(shape[0]).astype(np.float32)
    for batch in batches:
        x = rng.standard_normal((batch, shape[1])).astype(np.float32)
        check(packed.matmul(x, bias=bias) - bias, x, qt.dequantize())


@pytest.mark.parametrize(("kw", "shape", "batches"), TILE_CASES, ids=str)
def test_tile_sizes_give_every_level_the_same_bits(kw, shape, batches, rng):
    w = rng.standard_normal(shape).astype(np.float32)
    packed = quant.prepack(quant.quantize(w, **kw))
    bias = rng.standard_normal(shape[0]).astype(np.float32)
    x = rng.standard_normal((max(batches), shape[1])).astype(np.float32)
    x[3] = 0  # a zero row and a non-finite row inside a tile
    x[5, 2] = np.inf
    with slimgrad.use_isa("scalar"):
        want = packed.matmul(x, bias=bias)
    for name in ALL_ISAS:
        for n in THREADS:
            with slimgrad.use_isa(name), slimgrad.num_threads(n):
                np.testing.assert_array_equal(
                    packed.matmul(x, bias=bias), want, err_msg=f"{name}, {n}"
                )


# Products this large run on every thread (qgemm.cpp, threaded(): from 2^21
# multiply-adds on AVX2, 2^23 with VNNI, 2^26 with AMX on 8-bit codes);
# the shapes above are small enough to run on the calling thread at every
# level but AVX2's.
@pytest.mark.parametrize("kw", [SPECS[0], SPECS[5]], ids=str)
def test_threaded_sizes_give_every_level_the_same_bits(kw, rng):
    w = rng.standard_normal((520, 1030)).astype(np.float32)
    qt = quant.quantize(w, **kw)
    packed = quant.prepack(qt)
    x = rng.standard_normal((130, 1030)).astype(np.float32)
    assert 130 * 520 * 1032 >= 2**26
    with slimgrad.use_isa("scalar"):
        want = packed.matmul(x)
    check(want, x, qt.dequantize())
    for name in ALL_ISAS:
        for n in THREADS:
            with slimgrad.use_isa(name), slimgrad.num_threads(n):
                np.testing.assert_array_equal(packed.matmul(x), want, err_msg=f"{name}, {n}")


@pytest.mark.parametrize("fmt", ["Q8_0", "Q4_0"])
def test_gguf_blocks(isa_all, fmt, rng):
    w = rng.standard_normal((21, 96)).astype(np.float32)
    blocks = gguf.quantize(w, fmt)
    packed = quant.prepack(blocks, fmt)
    assert packed.shape == (21, 96) and packed.format == fmt
    x = rng.standard_normal((6, 96)).astype(np.float32)
    check(packed.matmul(x), x, gguf.dequantize(blocks, fmt))
    flat = quant.prepack(blocks.reshape(-1), fmt, shape=(21, 96))
    np.testing.assert_array_equal(flat.matmul(x), packed.matmul(x))


def test_bias_zero_rows_and_non_finite_rows(isa_all, rng):
    w = rng.standard_normal((19, 40)).astype(np.float32)
    qt = quant.quantize(w, 4, granularity="group", group_size=8)
    bias = rng.standard_normal(19).astype(np.float32)
    x = rng.standard_normal((4, 40)).astype(np.float32)
    x[1] = 0
    x[2, 5] = np.nan
    x[3, 7] = -np.inf
    y = quant.matmul(x, qt, activations="int8", bias=bias)
    ref, _ = reference(x[:1], qt.dequantize())
    np.testing.assert_allclose(y[0], ref[0] + bias, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(y[1], bias)
    assert np.isnan(y[2]).all() and np.isnan(y[3]).all()


def test_long_rows_split_into_exact_blocks(rng):
    # per-row scales: k is summed in int32 blocks of 65536 (the exact range)
    w = rng.standard_normal((3, 70_001)).astype(np.float32)
    qt = quant.quantize(w, 8)
    x = rng.standard_normal((2, 70_001)).astype(np.float32)
    check(quant.matmul(x, qt, activations="int8"), x, qt.dequantize())


def test_empty_shapes(rng):
    qt = quant.quantize(rng.standard_normal((5, 8)).astype(np.float32), 8)
    assert quant.matmul(np.zeros((0, 8), np.float32), qt, activations="int8").shape == (0, 5)
    empty = quant.prepack(quant.quantize(np.zeros((4, 0), np.float32), 8))
    np.testing.assert_array_equal(empty.matmul(np.ones((2, 0), np.float32)), np.zeros((2, 4)))


def test_refusals_name_the_argument_and_change_nothing(rng):
    w = rng.standard_normal((6, 40)).astype(np.float32)
    cases = [
        (quant.quantize(w, 8, symmetric=False), "asymmetric 8-bit"),
        (quant.quantize(w, 3), "symmetric 8- or 4-bit weights, got symmetric 3-bit"),
        (quant.quantize(w, 4, granularity="group", group_size=20), "multiple of 8"),
        (quant.quantize(w, 8, granularity="channel", axis=1), "axis 0"),
    ]
    for qt, msg in cases:
        with pytest.raises(ValueError, match=f"w: .*{msg}"):
            quant.prepack(qt)
    blocks = gguf.quantize(w[:, :32], "Q8_0")
    bad = blocks.copy()
    bad[4, 2 + 17] = 0x80  # code -128, which quantize never writes
    before = bad.copy()
    with pytest.raises(ValueError, match=r"w: Q8_0 code -128 at \(row, column\) \(4, 17\)"):
        quant.prepack(bad, "Q8_0")
    np.testing.assert_array_equal(bad, before)
    with pytest.raises(ValueError, match="type: the int8-activation kernels take 'Q8_0', 'Q4_0'"):
        quant.prepack(gguf.quantize(w[:, :32], "Q4_1"), "F16")
    with pytest.raises(
        ValueError, match=r"w: expected 408 bytes of Q8_0 blocks for shape \(6, 64\).*got 204"
    ):
        quant.prepack(blocks, "Q8_0", shape=(6, 64))
    with pytest.raises(TypeError, match="w: expected a QuantizedTensor"):
        quant.prepack(w)

    packed = quant.prepack(quant.quantize(w, 8))
    x = rng.standard_normal((3, 40)).astype(np.float32)
    x_before = x.copy()
    out = np.full((3, 6), 7.0, np.float32)
    with pytest.raises(ValueError, match=r"x: expected shape \(\.\.\., 40\), got \(3, 41\)"):
        packed.matmul(np.zeros((3, 41), np.float32), out=out)
    with pytest.raises(TypeError, match="x: expected a floating-point NumPy array, got int8"):
        packed.matmul(x.astype(np.int8), out=out)
    with pytest.raises(
        TypeError, match=r"out: expected a float32 C-contiguous array of shape \(3, 6\)"
    ):
        packed.matmul(x, out=np.empty((3, 6), np.float64))
    with pytest.raises(ValueError, match=r"bias: expected shape \(6,\), got \(5,\)"):
        packed.matmul(x, bias=np.zeros(5, np.float32), out=out)
    with pytest.raises(TypeError, match="bias: expected a float32"):
        packed.matmul(x, bias=np.zeros(6), out=out)
    with pytest.raises(ValueError, match="activations: expected None or 'int8', got 'int4'"):
        quant.matmul(x, packed, activations="int4")
    np.testing.assert_array_equal(out, 7.0)
    np.testing.assert_array_equal(x, x_before)


def test_packing_copies_and_leaves_the_tensor_alone(rng):
    w = rng.standard_normal((9, 48)).astype(np.float32)
    qt = quant.quantize(w, 4, granularity="group", group_size=16)
    data, scale = qt.data.copy(), qt.scale.copy()
    packed = quant.prepack(qt)
    x = rng.standard_normal((2, 48)).astype(np.float32)
    y = packed.matmul(x)
    np.testing.assert_array_equal(qt.data, data)
    np.testing.assert_array_equal(qt.scale, scale)
    qt.scale[...] = 0  # the packed copy is independent
    np.testing.assert_array_equal(packed.matmul(x), y)
    assert "int4" in repr(packed) and packed.nbytes > 0


def test_linear_runs_on_the_packed_weight(rng):
    from slimgrad import nn

    model = nn.Sequential(nn.Linear(70, 33, seed=1), nn.ReLU(), nn.Linear(33, 9, seed=2))
    x = rng.standard_normal((5, 70)).astype(np.float32)
    dense = model.forward(x)
    assert quant.quantize_dynamic(model, "int8") == 2
    first = model._modules["0"]
    h = quant.matmul(x, quant.quantize(first.weight, 8), activations="int8") + first.bias
    np.testing.assert_array_equal(first.forward(x), h)
    y8 = model.forward(x)
    assert np.abs(y8 - dense).max() < 0.02 * np.abs(dense).max()
    assert "int8" in repr(model)
    packed = quant.quantize_linear(first, "int4", group_size=32)
    assert packed.format == "int4" and packed.group_size == 32
    y4 = model.forward(x)
    assert np.abs(y4 - dense).max() < 0.2 * np.abs(dense).max() and not np.array_equal(y4, y8)
    quant.quantize_dynamic(model, None)
    np.testing.assert_array_equal(model.forward(x), dense)
    with pytest.raises(ValueError, match="fmt: expected 'int8', 'int4' or None, got 'int2'"):
        quant.quantize_linear(first, "int2")
    with pytest.raises(ValueError, match="group_size: expected a multiple of 8, got 12"):
        quant.quantize_linear(first, "int4", group_size=12)
    with pytest.raises(TypeError, match="layer: expected an nn.Linear, got ReLU"):
        quant.quantize_linear(nn.ReLU())
    np.testing.assert_array_equal(model.forward(x), dense)  # refusals changed nothing


@pytest.mark.parametrize("bits", [8, 4])
def test_rows_are_independent_of_the_batch(isa_all, bits, rng):
    # k = 40000: the activation buffer holds 24 rows, so 50 rows take 3 chunks;
    # each row's result must equal that row alone, bit for bit
    k = 40_000
    w = rng.standard_normal((19, k)).astype(np.float32)
    kw = dict(granularity="group", group_size=64) if bits == 4 else {}
    packed = quant.prepack(quant.quantize(w, bits, **kw))
    x = rng.standard_normal((50, k)).astype(np.float32)
    y = packed.matmul(x)
    for t in (0, 23, 24, 25, 49):
        np.testing.assert_array_equal(y[t], packed.matmul(x[t]))
    check(y, x, quant.quantize(w, bits, **kw).dequantize())
