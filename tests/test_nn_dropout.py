"""Philox-4x32-10 and Dropout: known answers, an independent NumPy oracle,
mask statistics, and the same mask for every ISA and thread count."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import EDGE_SIZES, run_everywhere
from slimgrad import _core, nn

DTYPES = [np.float32, np.float64]
MASK32 = np.uint64(0xFFFFFFFF)
# Random123 tests/kat_vectors, the three "philox4x32 10" lines: counter, key, result.
KAT = [
    ((0, 0, 0, 0), (0, 0), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
    ((0xFFFFFFFF,) * 4, (0xFFFFFFFF,) * 2, (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
    (
        (0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344),
        (0xA4093822, 0x299F31D0),
        (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1),
    ),
]
# Binomial keep counts must lie within this many standard deviations.
BINOMIAL_SIGMAS = 6.0


# torch on one thread for these tiny tensors (see conftest.torch_single_thread).
pytestmark = pytest.mark.usefixtures("torch_single_thread")


def philox_numpy(counter, key):
    """Philox-4x32-10 in NumPy uint64 lanes: the oracle, written from the paper."""
    c = [np.asarray(v, np.uint64) & MASK32 for v in counter]
    k0, k1 = (np.asarray(v, np.uint64) & MASK32 for v in key)
    for r in range(10):
        if r:
            k0 = (k0 + np.uint64(0x9E3779B9)) & MASK32
            k1 = (k1 + np.uint64(0xBB67AE85)) & MASK32
        p0 = np.uint64(0xD2511F53) * c[0]
        p1 = np.uint64(0xCD9E8D57) * c[2]
        c = [
            (p1 >> np.uint64(32)) ^ c[1] ^ k0,
            p1 & MASK32,
            (p0 >> np.uint64(32)) ^ c[3] ^ k1,
            p0 & MASK32,
        ]
    return c


def bits_numpy(seed: int, stream: int, n: int) -> np.ndarray:
    """philox::bits(seed, stream, i) for i < n (uint64 holding 32-bit words)."""
    blocks = np.arange((n + 3) // 4, dtype=np.uint64)
    words = philox_numpy(
        (blocks & MASK32, blocks >> np.uint64(32), stream & 0xFFFFFFFF, stream >> 32),
        (seed & 0xFFFFFFFF, seed >> 32),
    )
    return np.stack(words, axis=1).reshape(-1)[:n]


def reference_dropout(x: np.ndarray, p: float, seed: int, stream: int) -> np.ndarray:
    if p == 1.0:
        return np.zeros_like(x)
    keep = bits_numpy(seed, stream, x.size) >= np.uint64(int(np.ceil(p * 2.0**32)))
    scale = x.dtype.type(1.0 / (1.0 - p))
    return np.where(keep.reshape(x.shape), x * scale, x.dtype.type(0))


@pytest.mark.parametrize("counter, key, expected", KAT)
def test_philox_known_answers(counter, key, expected):
    assert _core.nn.philox4x32(counter, key) == expected
    assert tuple(int(w) for w in philox_numpy(counter, key)) == expected


def test_philox_helpers_follow_the_documented_mapping():
    seed, stream = (7 << 32) | 3, (5 << 32) | 11
    ref = bits_numpy(seed, stream, 40)
    for i in (0, 1, 2, 3, 4, 39):
        assert _core.nn.philox_bits(seed, stream, i) == int(ref[i])
        assert _core.nn.philox_uniform(seed, stream, i) == (int(ref[i]) >> 8) * 2.0**-24
    u = [_core.nn.philox_uniform(1, 0, i) for i in range(4000)]
    assert 0.0 <= min(u) and max(u) < 1.0
    assert abs(np.mean(u) - 0.5) < 0.02


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("n", EDGE_SIZES)
def test_dropout_matches_numpy_oracle(isa, threads, dtype, n, rng):
    x = rng.standard_normal(n).astype(dtype)
    p, seed, stream = 0.3, 1234, 5
    out = nn.dropout(x, p, seed, stream)
    np.testing.assert_array_equal(out, reference_dropout(x, p, seed, stream))


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_dropout_offset_starts_and_in_place(isa, dtype, rng):
    # A view starting mid-batch is a new array: its mask starts at index 0 again.
    x = rng.standard_normal(1000).astype(dtype)
    ref = reference_dropout(x, 0.5, 9, 2)
    y = x.copy()
    nn.dropout(y, 0.5, 9, 2, out=y)
    np.testing.assert_array_equal(y, ref)
    for start in (1, 3, 37):
        np.testing.assert_array_equal(
            nn.dropout(x[start:], 0.5, 9, 2), reference_dropout(x[start:], 0.5, 9, 2)
        )


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_same_mask_for_every_isa_and_thread_count(dtype, rng):
    x = rng.standard_normal((301, 1027)).astype(dtype)  # several chunks, odd tail
    results = run_everywhere(lambda: nn.dropout(x, 0.4, 77, 3))
    first = next(iter(results.values()))
    for out in results.values():
        np.testing.assert_array_equal(out, first)


@pytest.mark.parametrize("p", [0.1, 0.5, 0.9])
def test_keep_rate_within_binomial_bounds(p):
    n = 1_000_003
    out = nn.dropout(np.ones(n, np.float32), p, seed=2024, stream=0)
    kept = int(np.count_nonzero(out))
    sd = np.sqrt(n * p * (1 - p))
    assert abs(kept - n * (1 - p)) < BINOMIAL_SIGMAS * sd
    np.testing.assert_array_equal(np.unique(out), [0.0, np.float32(1.0 / (1.0 - p))])
    # keep decisions of neighbours are uncorrelated (the words of one block too)
    m = (out != 0).astype(np.float64)
    corr = np.corrcoef(m[:-1], m[1:])[0, 1]
    assert abs(corr) < BINOMIAL_SIGMAS / np.sqrt(n)


def test_seeds_and_streams_give_different_masks():
    x = np.ones(4096, np.float32)
    masks = [
        nn.dropout(x, 0.5, s, t) != 0 for s, t in [(0, 0), (1, 0), (0, 1), (2**63, 0), (0, 2**40)]
    ]
    for i in range(len(masks)):
        for j in range(i):
            agree = np.mean(masks[i] == masks[j])
            assert 0.45 < agree < 0.55  # independent masks agree half the time


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_p_zero_copies_and_p_one_zeroes(isa, dtype, rng):
    x = rng.standard_normal(1001).astype(dtype)
    x[5] = np.inf
    x[6] = np.nan
    out0 = nn.dropout(x, 0.0, 1)
    np.testing.assert_array_equal(out0, x)
    assert out0 is not x
    out1 = nn.dropout(x, 1.0, 1)
    np.testing.assert_array_equal(out1, np.zeros_like(x))
    almost = nn.dropout(x, 1.0 - 2.0**-40, 1)  # threshold reaches 2**32: nothing kept
    np.testing.assert_array_equal(almost, np.zeros_like(x))


def test_dropped_non_finite_values_become_zero(isa):
    x = np.full(257, np.nan, np.float32)
    out = nn.dropout(x, 0.5, 3)
    dropped = reference_dropout(np.ones(257, np.float32), 0.5, 3, 0) == 0
    assert np.all(out[dropped] == 0)
    assert np.all(np.isnan(out[~dropped]))


@pytest.mark.parametrize("p", [-0.1, 1.5, float("nan")])
def test_invalid_p_raises_before_writing(p):
    x = np.ones(10, np.float32)
    out = np.full(10, 7.0, np.float32)
    with pytest.raises(ValueError, match="dropout probability has to be between 0 and 1, but got"):
        nn.dropout(x, p, 0, out=out)
    with pytest.raises(ValueError, match="p: dropout probability has to be between 0 and 1"):
        _core.nn.dropout(x, out, p, 0, 0)
    np.testing.assert_array_equal(out, 7.0)
    with pytest.raises(
        ValueError, match="dropout probability has to be between 0 and 1, but got 1.5"
    ):
        nn.Dropout(1.5)


def test_bad_buffers_raise_naming_the_argument():
    x = np.ones(10, np.float32)
    with pytest.raises(
        TypeError, match=r"out: expected float32 C-contiguous array of shape \(10,\), got float64"
    ):
        nn.dropout(x, 0.5, 0, out=np.zeros(10, np.float64))
    strided = np.full(20, 7.0, np.float32)[::2]
    with pytest.raises(
        TypeError,
        match=r"^out: expected float32 C-contiguous array of shape \(10,\), got non-contiguous",
    ):
        nn.dropout(x, 0.5, 0, out=strided)  # written in place: strict, no copy
    with pytest.raises(TypeError, match=r"^x: expected float32 or float64 C-contiguous array"):
        nn.dropout(strided, 0.5, 0, out=strided)  # in place: x is written too
    np.testing.assert_array_equal(strided, 7.0)
    with pytest.raises(
        TypeError, match="x: expected a float32 or float64 ndarray, got int64 array"
    ):
        nn.dropout(np.ones(3, np.int64), 0.5, 0)
    with pytest.raises(ValueError, match=r"seed: expected an int in \[0, 2\*\*64\), got -1"):
        nn.Dropout(0.5, seed=-1)
    ro = np.ones(10, np.float32)
    ro.flags.writeable = False
    with pytest.raises(ValueError, match="out: expected a writable array"):
        nn.dropout(x, 0.5, 0, out=ro)


def test_module_train_eval_and_backward_recomputes_mask(rng):
    layer = nn.Dropout(0.25, seed=11)
    x = rng.standard_normal((64, 33)).astype(np.float32)
    y1 = layer.forward(x)
    g = rng.standard_normal(x.shape).astype(np.float32)
    gi = layer.backward(g)
    np.testing.assert_array_equal(y1, reference_dropout(x, 0.25, 11, 0))
    np.testing.assert_array_equal(gi, reference_dropout(g, 0.25, 11, 0))
    y2 = layer.forward(x)  # the next call uses the next stream: a new mask
    np.testing.assert_array_equal(y2, reference_dropout(x, 0.25, 11, 1))
    assert layer.calls == 2
    assert layer.parameters() == {} and layer.gradients() == {}
    layer.eval()
    assert layer.forward(x) is x
    assert layer.backward(g) is g


def test_matches_torch_semantics(rng):
    torch = pytest.importorskip("torch")
    x = rng.uniform(1.0, 2.0, 100_000).astype(np.float32)
    p = 0.3
    ours = nn.dropout(x, p, 5)
    theirs = torch.nn.functional.dropout(torch.from_numpy(x), p=p, training=True).numpy()
    # same scaling of kept elements (to one rounding), zeros elsewhere, similar keep rate
    np.testing.assert_allclose(ours[ours != 0] / x[ours != 0], 1 / (1 - p), rtol=2e-7)
    np.testing.assert_allclose(theirs[theirs != 0] / x[theirs != 0], 1 / (1 - p), rtol=2e-7)
    sd = np.sqrt(x.size * p * (1 - p))
    assert abs(np.count_nonzero(ours) - np.count_nonzero(theirs)) < 2 * BINOMIAL_SIGMAS * sd
    # backward equals torch autograd's through the same mask
    mask = torch.from_numpy((ours != 0).astype(np.float32))
    tx = torch.from_numpy(x).requires_grad_()
    g = rng.standard_normal(x.size).astype(np.float32)
    (tx * mask / (1 - p)).backward(torch.from_numpy(g))
    layer = nn.Dropout(p, seed=5)
    layer.forward(x)
    np.testing.assert_allclose(layer.backward(g), tx.grad.numpy(), rtol=2e-7, atol=0)
