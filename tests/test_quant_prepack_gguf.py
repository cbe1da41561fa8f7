"""GGUF block formats through the int8-activation GEMM (quant.prepack(blocks, type)):
Q8_0, Q4_0, Q4_1, Q5_0, Q5_1 and the K-quants Q2_K .. Q6_K.

Two references: the float64 product of the same int8-quantized activations
with the float64 weight ``scale * (code + zoff) + shift`` (exact but for the
float32 epilogue, bound below), and the float64 ``x @ W.T`` with the error of
rounding ``x`` to int8 added. The decoded weight itself is checked against
the ``gguf`` package's ``dequantize`` (the outside oracle) and slimgrad's."""

from __future__ import annotations

from functools import partial

import numpy as np
import pytest
import slimgrad
from conftest import ALL_ISAS, THREADS
from slimgrad import quant
from slimgrad.quant import _gguf_codes, gguf, kquants
from test_quant_matmul_int8act import quantize_rows

LEGACY = ("Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1")
KQUANTS = ("Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K")
TYPES = LEGACY + KQUANTS
BATCHES = (1, 3, 4, 5, 17)


def blocks_of(w: np.ndarray, name: str) -> np.ndarray:
    return (kquants if name.endswith("_K") else gguf).quantize(w, name)


def shapes(name: str) -> list[tuple[int, int]]:
    # out: 1, strips of 16 +- 1, odd; in: one block, several blocks
    b = _gguf_codes.BLOCK_SIZE[name]
    return [(1, b), (15, 2 * b), (17, b), (33, 3 * b)]


def weight64(blocks: np.ndarray, name: str, n: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(W in float64, |scale * (code + zoff)| + |shift|: the epilogue's term sizes)."""
    c = _gguf_codes.decode(blocks, name, n, k)
    g, (scale, shift) = c.group, _gguf_codes.group_factors(c)
    scaled = np.repeat(scale.astype(np.float64), g, 1) * (c.codes.astype(np.float64) + c.zoff)
    shift = np.zeros_like(scaled) if shift is None else np.repeat(shift.astype(np.float64), g, 1)
    return scaled + shift, np.abs(scaled) + np.abs(shift)


def check(y: np.ndarray, x: np.ndarray, w64: np.ndarray, terms: np.ndarray) -> None:
    """y against both references (see the module docstring)."""
    q, xs = quantize_rows(x)
    q64, xs64 = q.astype(np.float64), xs.astype(np.float64)[:, None]
    ref = (q64 @ w64.T) * xs64
    # float32 epilogue: two fmas per group on partial sums no larger than the
    # sum of |terms|; observed within a few ulps of it (rigorous: (2G + 2) ulps)
    bound = (np.abs(q64) @ terms.T) * xs64
    y2 = y.reshape(ref.shape)
    assert np.all(np.abs(y2 - ref) <= 4e-7 * bound + 1e-30), np.max(
        np.abs(y2 - ref) / (bound + 1e-30)
    )
    # against the float product: |x - xs * q| <= xs / 2 per term (+ float32 rounding)
    x64 = x.reshape(ref.shape[0], -1).astype(np.float64)
    act = 0.5 * xs64 * np.abs(w64).sum(axis=1)[None, :] + 1e-6 * (np.abs(x64) @ np.abs(w64).T)
    assert np.all(np.abs(y2 - x64 @ w64.T) <= act + 4e-7 * bound + 1e-30)


@pytest.mark.parametrize("name", TYPES)
def test_decoded_codes_equal_the_gguf_package(name, rng):
    gq = pytest.importorskip("gguf.quants")
    from gguf import GGMLQuantizationType

    n, k = 7, 2 * _gguf_codes.BLOCK_SIZE[name]
    w = rng.standard_normal((n, k)).astype(np.float32) * np.float32(3)
    w[0, :40] += 5  # one-sided blocks: non-trivial mins / shifts
    blocks = blocks_of(w, name)
    w64, terms = weight64(blocks, name, n, k)
    oracle = gq.dequantize(blocks, GGMLQuantizationType[name]).astype(np.float64)
    # the packages compute d * q + m in float32: one rounding of the terms
    np.testing.assert_array_less(np.abs(w64 - oracle), 2**-23 * terms + 1e-30)
    mine = (kquants if name.endswith("_K") else gguf).dequantize(blocks, name)
    np.testing.assert_array_less(np.abs(w64 - mine), 2**-23 * terms + 1e-30)
    c = _gguf_codes.decode(blocks, name, n, k)
    lo, hi = (-127, 127) if c.bits == 8 else (-(2 ** (c.bits - 1)), 2 ** (c.bits - 1) - 1)
    assert c.codes.dtype == np.int8 and lo <= c.codes.min() and c.codes.max() <= hi


@pytest.mark.parametrize("name", TYPES)
def test_matches_float64_references(isa_all, name, rng):
    for n, k in shapes(name):
        w = rng.standard_normal((n, k)).astype(np.float32)
        blocks = blocks_of(w, name)
        packed = quant.prepack(blocks, name)
        assert packed.shape == (n, k) and packed.format == name
        w64, terms = weight64(blocks, name, n, k)
        for batch in BATCHES:
            x = rng.standard_normal((batch, k)).astype(np.float32)
            x[0, : k // 3] *= 10  # uneven rows: block sums far from zero
            check(packed.matmul(x), x, w64, terms)
        x = rng.standard_normal((2, 3, k)).astype(np.float32) + np.float32(0.5)
        check(quant.matmul(x, packed), x, w64, terms)


@pytest.mark.parametrize("name", ["Q4_1", "Q5_1", "Q2_K", "Q4_K", "Q5_K"])
def test_shift_and_offset_terms_are_exact_on_integer_data(isa_all, name, rng):
    # all-positive x with a row absmax of 127 is its own int8 code (xs = 1):
    # every term is an exact small float, so y equals the float64 product
    n, k = 19, 2 * _gguf_codes.BLOCK_SIZE[name]
    w = rng.standard_normal((n, k)).astype(np.float32) + np.float32(1)
    blocks = blocks_of(w, name)
    c = _gguf_codes.decode(blocks, name, n, k)
    x = rng.integers(0, 128, (5, k)).astype(np.float32)
    x[:, 0] = 127
    w64, _ = weight64(blocks, name, n, k)
    y = quant.prepack(blocks, name).matmul(x)
    ref = x.astype(np.float64) @ w64.T
    assert _gguf_codes.group_factors(c)[1] is not None
    np.testing.assert_allclose(y, ref, rtol=2e-6, atol=1e-3 * np.abs(w64).max())


def _run(isa_name: str, threads: int, fn):
    with slimgrad.use_isa(isa_name), slimgrad.num_threads(threads):
        return fn()


@pytest.mark.parametrize("name", ["Q4_1", "Q5_0", "Q6_K", "Q4_K", "Q3_K"])
def test_every_isa_and_thread_count_gives_the_same_bits(name, rng):
    k = 2 * _gguf_codes.BLOCK_SIZE[name]
    w = rng.standard_normal((77, k)).astype(np.float32)
    packed = quant.prepack(blocks_of(w, name), name)
    bias = rng.standard_normal(77).astype(np.float32)
    for batch in (1, 3, 17):
        x = rng.standard_normal((batch, k)).astype(np.float32)
        results = {
            (isa_name, n): _run(isa_name, n, partial(packed.matmul, x, bias=bias))
            for isa_name in ALL_ISAS
            for n in THREADS
        }
        first = next(iter(results.values()))
        for key, y in results.items():
            np.testing.assert_array_equal(y, first, err_msg=f"{key} batch {batch}")


@pytest.mark.parametrize("name", ["Q4_K", "Q6_K"])
def test_rows_are_independent_of_the_batch(isa_all, name, rng):
    # 300 rows: more than one chunk of activation rows (256 at this k)
    w = rng.standard_normal((40, 512)).astype(np.float32)
    blocks = blocks_of(w, name)
    packed = quant.prepack(blocks, name)
    x = rng.standard_normal((300, 512)).astype(np.float32)
    whole = packed.matmul(x)
    check(whole, x, *weight64(blocks, name, 40, 512))
    for t in (0, 3, 255, 256, 299):
        np.testing.assert_array_equal(packed.matmul(x[t : t + 1])[0], whole[t])


def test_reader_tensors_are_packed_directly(tmp_path, rng):
    g = pytest.importorskip("gguf")
    w = {name: rng.standard_normal((20, 512)).astype(np.float32) for name in ("Q4_K", "Q5_1")}
    path = tmp_path / "w.gguf"
    writer = g.GGUFWriter(str(path), "test")
    for name, wn in w.items():
        writer.add_tensor(name, blocks_of(wn, name), raw_dtype=g.GGMLQuantizationType[name])
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    x = rng.standard_normal((3, 512)).astype(np.float32)
    for tensor in g.GGUFReader(str(path)).tensors:
        packed = quant.prepack(tensor)
        direct = quant.prepack(blocks_of(w[tensor.name], tensor.name), tensor.name)
        assert packed.format == tensor.name and packed.shape == (20, 512)
        np.testing.assert_array_equal(packed.matmul(x), direct.matmul(x))
        with pytest.raises(TypeError, match="type, shape: taken from the GGUF reader tensor"):
            quant.prepack(tensor, "Q4_K")


def test_refusals_name_the_argument_and_change_nothing(rng):
    w = rng.standard_normal((6, 512)).astype(np.float32)
    blocks = blocks_of(w, "Q4_K")
    before = blocks.copy()
    with pytest.raises(ValueError, match=r"type: the int8-activation kernels take .*got 'Q4_2'"):
        quant.prepack(blocks, "Q4_2")
    with pytest.raises(ValueError, match=r"type: .*got 'F16'"):
        quant.prepack(blocks, "F16")
    with pytest.raises(
        ValueError, match=r"w: expected 864 bytes of Q4_K blocks for shape \(3, 512\).*got 1728"
    ):
        quant.prepack(blocks, "Q4_K", shape=(3, 512))
    with pytest.raises(ValueError, match=r"in a multiple of 256"):
        quant.prepack(blocks.reshape(-1)[: 6 * 144], "Q4_K", shape=(6, 128))
    with pytest.raises(
        ValueError, match=r"w: expected Q6_K blocks of shape \(out, in / 256 \* 210\)"
    ):
        quant.prepack(blocks, "Q6_K")  # 288 bytes a row: not whole Q6_K blocks
    with pytest.raises(ValueError, match=r"w: expected Q5_0 blocks"):
        quant.prepack(blocks[:, :-1], "Q5_0")
    with pytest.raises(TypeError, match="w: expected GGUF blocks as a uint8 NumPy array, got int8"):
        quant.prepack(blocks.view(np.int8), "Q4_K")
    with pytest.raises(TypeError, match="got float32"):
        quant.prepack(w, "Q4_K")
    with pytest.raises(ValueError, match=r"shape: expected \(out, in\)"):
        quant.prepack(blocks.reshape(-1), "Q4_K", shape=(6, 2, 256))
    np.testing.assert_array_equal(blocks, before)

    # products: the checks of every PackedWeight (test_quant_matmul_int8act.py)
    out = np.full((3, 6), 7.0, np.float32)
    with pytest.raises(ValueError, match=r"x: expected shape \(\.\.\., 512\), got \(3, 256\)"):
        quant.prepack(blocks, "Q4_K").matmul(np.zeros((3, 256), np.float32), out=out)
    np.testing.assert_array_equal(out, 7.0)
    np.testing.assert_array_equal(blocks, before)


def test_non_finite_and_zero_rows(isa_all, rng):
    w = rng.standard_normal((19, 256)).astype(np.float32)
    packed = quant.prepack(blocks_of(w, "Q4_K"), "Q4_K")
    bias = rng.standard_normal(19).astype(np.float32)
    x = rng.standard_normal((3, 256)).astype(np.float32)
    x[1] = 0
    x[2, 9] = np.inf
    y = packed.matmul(x, bias=bias)
    np.testing.assert_array_equal(y[1], bias)
    assert np.isnan(y[2]).all() and np.isfinite(y[0]).all()
