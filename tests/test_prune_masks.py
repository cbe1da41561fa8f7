"""Pruning masks against sort-based NumPy references, on every ISA and thread count.

The references rank with np.lexsort on (flat index, |w| in float64): the
contract is exact (count, order, tie rule), so masks must be equal, not close.
"""

from __future__ import annotations

import re

import ml_dtypes
import numpy as np
import pytest
from conftest import EDGE_SIZES, run_everywhere
from slimgrad import prune

# float16 and bfloat16 are ranked from their own bits (15-bit keys), not widened.
DTYPES = [np.float32, np.float64, np.float16, ml_dtypes.bfloat16]
SPARSITIES = [0.0, 0.3, 0.5, 0.77, 1.0]
TIE_SIZES = [0, 1, 7, 8, 9, 33, 4097, 32769, 100_003]


def reference_order(w: np.ndarray) -> np.ndarray:
    """Flat indices in pruning order: |w| ascending, ties lower flat index first."""
    a = np.abs(w.astype(np.float64)).ravel()
    return np.lexsort((np.arange(a.size), a))


def mask_from_order(order: np.ndarray, k: int, shape) -> np.ndarray:
    keep = np.ones(order.size, dtype=bool)
    keep[order[:k]] = False
    return keep.reshape(shape)


def reference_mask(w: np.ndarray, k: int) -> np.ndarray:
    """Prune the k smallest |w|, ties lower flat index first, by a full sort."""
    return mask_from_order(reference_order(w), k, w.shape)


def count(s: float, n: int) -> int:
    return int(round(s * n))


def make(kind: str, n: int, dtype, rng) -> np.ndarray:
    """Adversarial data: heavy ties, signed zeros, denormals, infinities."""
    if kind == "normal":
        return rng.standard_normal(n).astype(dtype)
    if kind == "ties":
        w = rng.integers(-3, 4, n).astype(dtype)
        w[rng.random(n) < 0.2] = -0.0
        return w
    if kind == "denormal":
        tiny = ml_dtypes.finfo(dtype).smallest_subnormal
        w = (rng.integers(-5, 6, n) * np.float64(tiny)).astype(dtype)
        w[rng.random(n) < 0.1] = ml_dtypes.finfo(dtype).tiny  # the smallest normal
        return w
    if kind == "inf":
        w = rng.standard_normal(n).astype(dtype)
        w[rng.random(n) < 0.3] = np.inf
        w[rng.random(n) < 0.3] = -np.inf
        w[rng.random(n) < 0.1] = -0.0
        return w
    if kind == "constant":
        return np.full(n, -2.5, dtype)
    raise AssertionError(kind)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("n", EDGE_SIZES)
def test_magnitude_mask_matches_sort_reference(isa, threads, dtype, n, rng):
    w = make("normal", n, dtype, rng)
    before = w.copy()
    order = reference_order(w)
    for s in SPARSITIES:
        mask = prune.magnitude_mask(w, s)
        assert mask.dtype == np.bool_ and mask.shape == w.shape
        assert int((~mask).sum()) == count(s, n)
        np.testing.assert_array_equal(mask, mask_from_order(order, count(s, n), w.shape))
    np.testing.assert_array_equal(w, before)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("kind", ["ties", "denormal", "inf", "constant"])
@pytest.mark.parametrize("n", TIE_SIZES)
def test_magnitude_mask_adversarial(isa, dtype, kind, n, rng):
    w = make(kind, n, dtype, rng)
    order = reference_order(w)
    for s in SPARSITIES:
        expected = mask_from_order(order, count(s, n), w.shape)
        np.testing.assert_array_equal(prune.magnitude_mask(w, s), expected)


# Arrays from 2**18 elements on are selected through a sampled key range:
# cover it with the adversarial data too, and with a sample that misleads.
LARGE = 2**18 + 7


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("kind", ["normal", "ties", "denormal", "inf", "constant"])
def test_magnitude_mask_large_arrays(dtype, kind, rng):
    w = make(kind, LARGE, dtype, rng)
    order = reference_order(w)
    for s in [1e-6, 0.05, 0.5, 0.999, 0.9999999]:
        expected = mask_from_order(order, count(s, LARGE), w.shape)
        np.testing.assert_array_equal(prune.magnitude_mask(w, s), expected)


def test_misleading_sample_falls_back_to_exact(rng):
    # Make exactly the sampled entries tiny, so the guessed range around the
    # median is far too low.
    from slimgrad._core import prune as core_prune

    positions = np.array(core_prune._sample_indices(LARGE))
    w = (1 + rng.random(LARGE)).astype(np.float32)
    w[positions] = rng.random(positions.size).astype(np.float32) * 1e-3
    assert np.count_nonzero(w < 1) == positions.size == 16384
    order = reference_order(w)
    for s in [0.01, 0.3, 0.5, 0.97]:
        expected = mask_from_order(order, count(s, LARGE), w.shape)
        np.testing.assert_array_equal(prune.magnitude_mask(w, s), expected)


@pytest.mark.parametrize("total", [2**18, 2**18 + 7, 4096 * 4096, 11008 * 4096, 3 * 2**31 + 5])
def test_sample_spreads_over_every_column(total):
    """The range guess samples 4096 groups of 4 keys 4 apart (a cache line or
    two), one group per stratum of total / 4096 at a hashed offset: so it
    reaches most columns of a 4096-wide matrix, where evenly spaced keys
    (1024 apart) hit 4 columns, and a guess from weights whose columns
    differ in scale (as an LLM's) missed on every call."""
    from slimgrad._core import prune as core_prune

    idx = np.array(core_prune._sample_indices(total), dtype=np.uint64)
    assert idx.size == 16384
    groups = idx.reshape(4096, 4)
    np.testing.assert_array_equal(np.diff(groups, axis=1), 4)
    g = np.arange(4096, dtype=np.uint64)
    begin, end = (
        g * np.uint64(total) // np.uint64(4096),
        (g + 1) * np.uint64(total) // np.uint64(4096),
    )
    assert np.all(groups[:, 0] >= begin) and np.all(groups[:, 3] < end)
    columns = np.unique(idx % np.uint64(4096)).size
    assert columns > 3800, columns  # 4096 random groups of 4 reach ~3870-4020 of 4096
    with pytest.raises(ValueError, match="total: expected at least 262144, got 262143"):
        core_prune._sample_indices(2**18 - 1)


def test_column_scaled_weights_select_exactly(rng):
    """Columns of very different scales (the case the stratified sample is
    for): exact at every sparsity."""
    w = (rng.standard_normal((2048, 512)) * np.exp(rng.normal(0, 1.0, 512))).astype(np.float32)
    order = reference_order(w)
    for s in [0.1, 0.5, 0.9]:
        np.testing.assert_array_equal(
            prune.magnitude_mask(w, s), mask_from_order(order, count(s, w.size), w.shape)
        )


def test_large_selection_ranks_a_large_bucket(threads, rng):
    """From 2**24 keys on, the k-th key's bucket may hold up to total / 256
    elements and still be ranked in memory (one pass over the weights, not
    the radix select's extra reads): 2**25 keys whose bucket around the
    median holds ~90000 (80000 set there, 4 keys in all; a selection under
    2**24 keys ranks at most 65536), pruned exactly, ties by flat index."""
    n = 2**25
    w = rng.standard_normal(n).astype(np.float32)
    k = n // 2
    median = np.partition(np.abs(w), k)[k]
    near = rng.choice(n, 80000, replace=False)  # about as many on either side: still around rank k
    w[near] = median * (1 + np.float32(1e-7) * rng.integers(0, 4, near.size))  # 4 keys, ~20000 each
    flat = np.arange(n, dtype=np.uint64)
    key = (np.abs(w).view(np.uint32).astype(np.uint64) << np.uint64(25)) | flat
    kth = np.partition(key, k)[k]  # the first key kept: (|w|, flat index) order
    np.testing.assert_array_equal(prune.magnitude_mask(w, 0.5), key >= kth)


def key_bits(dtype) -> int:
    """Bits of the selection keys of a dtype: |x|'s bits, sign cleared."""
    return 8 * np.dtype(dtype).itemsize - 1


def raw_keys(x: np.ndarray) -> np.ndarray:
    """The raw keys of x as the kernels hold them: uint32 lanes for float32
    and the halves, uint64 for float64."""
    bits = key_bits(x.dtype)
    utype = np.uint64 if bits == 63 else np.uint32
    bits_of = x.view({15: np.uint16, 31: np.uint32, 63: np.uint64}[bits]).astype(utype)
    return bits_of & utype(2**bits - 1)


def histogram_reference(x, prior, base, prefix, hi, lo):
    """kernels::histogram in NumPy integers: digit counts of the candidates,
    keys below base, the largest raw key, and the one-pass codes."""
    raw = raw_keys(x)
    utype = raw.dtype.type
    key = raw if prior is None else np.where(prior, raw + utype(1), utype(0))
    k = key - utype(base)  # wraps below base, as the kernel's unsigned keys do
    cand = (k >> utype(hi)) == utype(prefix)
    digit = ((k >> utype(lo)) & utype(2 ** (hi - lo) - 1)).astype(np.int64)
    hist = np.bincount(digit[cand], minlength=2 ** (hi - lo))
    below = int(np.count_nonzero(key < utype(base)))
    codes = np.where(cand, 1 + digit, np.where(key < utype(base), 0, 255)).astype(np.uint8)
    return hist.tolist(), below, int(raw.max(initial=0)), codes


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("n", [1, 31, 33, 64, 1000, 4133, 70_001])
def test_histogram_pass_every_isa(isa, threads, dtype, n, rng):
    """The pass both selections start with (the radix select's digits and the
    one-pass selection's codes), on its own: counts, keys below base, the
    largest key and the codes equal NumPy's on every level and thread count
    (70001 keys: three pieces, their counts merged), with tails, a prior
    mask, a NaN and infinities. Its results only steer the selection
    (a wrong count sends it to the exact fallback), so masks alone would not
    show a wrong one."""
    from slimgrad._core import prune as core_prune

    x = (rng.standard_normal(n) * np.exp(rng.uniform(-5, 5, n))).astype(dtype)
    x[rng.integers(0, n, max(1, n // 50))] = np.inf
    x[rng.integers(0, n, max(1, n // 100))] = -0.0
    if n > 40:
        x[n - 3] = np.nan
    prior = rng.random(n) < 0.7
    bits = key_bits(dtype)
    median = int(np.median(raw_keys(x[np.isfinite(x.astype(np.float64))])))
    # Digits of a long key, of a short one (the halves' 15 bits: 11 + 4)
    deep = [(bits - 12, bits - 23, bits - 20, bits - 27)] if bits > 15 else [(4, 0, 3, 0)]
    for p in (None, prior):
        for base, prefix, hi, lo, codes in [
            (0, 0, bits, bits - 11, False),  # the radix select's first pass
            (median // 2, 0, bits - 3, bits - 14, False),
            (median // 2, 1, deep[0][0], deep[0][1], False),  # a later digit
            (median // 2, 0, bits - 4, bits - 11, True),  # one-pass codes
            (median, 0, deep[0][2], deep[0][3], True),
        ]:
            hist, below, top, got_codes = core_prune._histogram(x, p, base, prefix, hi, lo, codes)
            want = histogram_reference(x, p, base, prefix, hi, lo)
            assert (hist, below, top) == want[:3], (base, prefix, hi, lo)
            if codes:
                np.testing.assert_array_equal(got_codes, want[3])


@pytest.mark.parametrize("bits", [31, 63])
def test_sample_order_statistics_are_exact(bits, rng):
    """The range guess of a large selection takes order statistics of its
    16384-key sample (and the ranking its bucket's first kept element) by a
    histogram of the keys' top 11 bits above the smallest: exact on spread
    keys, on keys crowded in one bin or equal, and on keys up to 2**bits (a
    NaN key plus a prior mask's 1)."""
    from slimgrad._core import prune as core_prune

    top = 2**bits
    spread = rng.integers(0, top, 16384, dtype=np.uint64)
    crowded = (top // 2 + rng.integers(0, 1000, 16384)).astype(np.uint64)  # one bucket
    ties = np.repeat(rng.integers(0, top, 5, dtype=np.uint64), [1, 7000, 3, 9000, 374])
    edge = np.concatenate(
        [spread[:1000], np.full(30, top, np.uint64), np.full(5, top - 1, np.uint64)]
    )
    for keys in (spread, crowded, ties, edge):
        keys = rng.permutation(keys)
        ranks = sorted({0, 1, keys.size // 3, keys.size // 2, keys.size - 2, keys.size - 1})
        got = core_prune._keys_at_ranks(keys.tolist(), ranks, bits)
        assert got == np.sort(keys)[ranks].tolist()
    with pytest.raises(ValueError, match=r"ranks: expected ranks below len\(keys\) \(3\), got 3"):
        core_prune._keys_at_ranks([1, 2, 3], [3], bits)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_one_pass_selection_everywhere(isa, threads, dtype, rng):
    """Large selections write codes into the masks in one read of the weights
    and rank the k-th key's bucket in memory: on every ISA and thread count,
    equal to the reference with repeated values (ties inside the bucket go
    by flat index), a prior mask, several arrays (one selection), vector
    tails, and a NaN found by that pass."""
    from slimgrad.prune._masks import _select

    values = rng.standard_normal(20_000).astype(dtype)
    w = values[rng.integers(0, values.size, LARGE)]  # each value ~13 times
    order = reference_order(w)
    for s in [0.05, 0.5, 0.93]:
        np.testing.assert_array_equal(
            prune.magnitude_mask(w, s), mask_from_order(order, count(s, LARGE), w.shape)
        )
    parts = {"a": w[:100_000].reshape(250, 400), "b": w[100_000:]}
    flat = np.concatenate([p.ravel() for p in parts.values()])
    masks = prune.global_magnitude_masks(parts, 0.4)
    got = np.concatenate([m.ravel() for m in masks.values()])
    np.testing.assert_array_equal(
        got, mask_from_order(reference_order(flat), count(0.4, flat.size), flat.shape)
    )
    prior = rng.random(LARGE) < 0.8  # False = pruned before: those go first
    ranked = np.lexsort((np.arange(LARGE), np.where(prior, np.abs(w.astype(np.float64)), -1.0)))
    for s in [0.1, 0.5]:
        (kept,) = _select([w], ["w"], count(s, LARGE), [prior])
        np.testing.assert_array_equal(kept, mask_from_order(ranked, count(s, LARGE), w.shape))
    w[LARGE - 3] = np.nan  # in the vector tail
    with pytest.raises(ValueError, match=rf"w: NaN at index \({LARGE - 3},\)"):
        prune.magnitude_mask(w, 0.5)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("n", [1000, LARGE])
def test_prior_mask_prunes_previously_pruned_first(n, dtype, rng):
    from slimgrad.prune._masks import _select

    w = make("ties", n, dtype, rng)
    w[::5] = rng.standard_normal(w[::5].size).astype(dtype)
    prior = rng.random(n) < 0.7  # False = pruned before
    # Reference: previously pruned first (in flat order), then by |w|.
    a = np.where(prior, np.abs(w.astype(np.float64)), -1.0)
    order = np.lexsort((np.arange(n), a))
    for s in [0.1, 0.3, 0.5, 0.9]:
        (got,) = _select([w], ["w"], count(s, n), [prior])
        np.testing.assert_array_equal(got, mask_from_order(order, count(s, n), w.shape))


def test_tie_rule_is_lower_flat_index_first():
    w = np.array([[3.0, -1.0, 1.0], [0.0, -0.0, 1.0]], np.float32)
    # |w| = 3 1 1 / 0 0 1: the zeros go first (index 3 then 4), then the 1s
    # by flat index (1, 2, 5).
    expected_pruned = [3, 4, 1, 2, 5, 0]
    for k in range(7):
        mask = prune.magnitude_mask(w, k / 6)
        pruned = sorted(np.flatnonzero(~mask.ravel()))
        assert pruned == sorted(expected_pruned[:k])


def test_half_to_even_count():
    w = np.arange(1, 8, dtype=np.float32)  # 7 entries
    assert (~prune.magnitude_mask(w, 0.5)).sum() == 4  # round(3.5) = 4
    w = np.arange(1, 6, dtype=np.float32)  # 5 entries
    assert (~prune.magnitude_mask(w, 0.5)).sum() == 2  # round(2.5) = 2
    np.testing.assert_array_equal(prune.magnitude_mask(w, 0.5), [False, False, True, True, True])


@pytest.mark.parametrize("dtype", [np.float16, ml_dtypes.bfloat16], ids=["float16", "bfloat16"])
def test_half_dtypes_rank_like_float32(dtype, rng):
    w = make("ties", 5000, np.float32, rng).astype(dtype)
    w[::7] = rng.standard_normal(w[::7].size).astype(dtype)
    for s in SPARSITIES:
        np.testing.assert_array_equal(
            prune.magnitude_mask(w, s), reference_mask(w.astype(np.float32), count(s, w.size))
        )


@pytest.mark.parametrize("dtype", [np.float16, ml_dtypes.bfloat16], ids=["float16", "bfloat16"])
def test_large_half_weights_select_exactly(isa, threads, dtype, rng):
    """A selection over 2**20 half-precision weights runs the sampled
    one-pass path with the heavy ties of their few distinct magnitudes
    (bfloat16: thousands of equal keys at the median, a bucket of one key):
    exact, ties by flat index."""
    w = rng.standard_normal((1024, 1024)).astype(dtype)
    for s in (0.3, 0.5, 0.9):
        np.testing.assert_array_equal(
            prune.magnitude_mask(w, s), reference_mask(w.astype(np.float32), count(s, w.size))
        )


@pytest.mark.parametrize("dtype", [np.float16, ml_dtypes.bfloat16], ids=["float16", "bfloat16"])
def test_half_weights_nan_is_named_and_nothing_changes(isa, threads, dtype, rng):
    """A NaN in half-precision weights (a key above the format's inf: each
    NaN bit pattern, the smallest of either sign too) is reported at its index
    in the weights, which stay as they were; inf alone is no NaN."""
    w = rng.standard_normal((600, 600)).astype(dtype)
    w[0, ::3] = np.inf
    inf_bits = int(np.array(np.inf, dtype).view(np.uint16))
    assert prune.magnitude_mask(w, 0.5)[0, ::3].all()  # the largest keys: kept
    for nan_bits in (inf_bits + 1, 0x7FFF, 0x8000 | (inf_bits + 1), 0xFFFF):
        bad = w.copy()
        bad.view(np.uint16)[5, 7] = nan_bits
        before = bad.view(np.uint16).copy()
        message = "w: NaN at index (5, 7) (flat index 3007); NaN weights have no magnitude to rank"
        with pytest.raises(ValueError, match=re.escape(message)):
            prune.magnitude_mask(bad, 0.5)
        with pytest.raises(ValueError, match=re.escape(message)):
            prune.nm_mask(bad)
        np.testing.assert_array_equal(bad.view(np.uint16), before)


def test_half_weights_are_ranked_without_a_float32_copy(monkeypatch, rng):
    """float16 and bfloat16 arrays, alone or all of one dtype in a global
    selection (a bfloat16 model), are ranked from their own bits: no float32
    copy is made, and the masks equal the reference. Mixed with other dtypes
    they are widened (the selection reads one dtype), with the same masks."""
    from slimgrad.prune import _masks

    parts = {
        "a": rng.standard_normal((300, 1000)).astype(ml_dtypes.bfloat16),
        "b": (rng.standard_normal(5001) * 3).astype(ml_dtypes.bfloat16),
    }
    flat = np.concatenate([p.ravel() for p in parts.values()])
    reference = mask_from_order(reference_order(flat), count(0.6, flat.size), flat.shape)

    def no_copy(w):
        raise AssertionError("a half-precision array was widened to float32")

    with monkeypatch.context() as m:
        m.setattr(_masks, "as_float32", no_copy)
        got = prune.global_magnitude_masks(parts, 0.6)
        np.testing.assert_array_equal(np.concatenate([g.ravel() for g in got.values()]), reference)
        half = parts["a"].astype(np.float16)
        np.testing.assert_array_equal(
            prune.magnitude_mask(half, 0.3), reference_mask(half, count(0.3, half.size))
        )
        np.testing.assert_array_equal(prune.nm_mask(half), reference_nm(half, 2, 4, -1))
    mixed = {
        "a": parts["a"],
        "f16": parts["b"].astype(np.float16),
        "f32": parts["b"].astype(np.float32),
    }
    flat = np.concatenate([p.astype(np.float32).ravel() for p in mixed.values()])
    got = prune.global_magnitude_masks(mixed, 0.6)
    np.testing.assert_array_equal(
        np.concatenate([g.ravel() for g in got.values()]),
        mask_from_order(reference_order(flat), count(0.6, flat.size), flat.shape),
    )


def test_multidimensional_shapes(rng):
    w = rng.standard_normal((5, 7, 3)).astype(np.float32)
    mask = prune.magnitude_mask(w, 0.4)
    assert mask.shape == (5, 7, 3)
    np.testing.assert_array_equal(mask, reference_mask(w, count(0.4, w.size)))
    scalar = np.array(2.0, np.float64)
    assert prune.magnitude_mask(scalar, 1.0).shape == ()


def test_against_torch_l1_unstructured(rng):
    torch = pytest.importorskip("torch")
    from torch.nn.utils import prune as tprune

    for n, s in [(1000, 0.3), (777, 0.5), (4096, 0.9), (513, 0.25)]:
        w = rng.standard_normal(n).astype(np.float32)  # distinct values: same set
        module = torch.nn.Linear(1, 1)
        module.weight = torch.nn.Parameter(torch.from_numpy(w.copy()))
        tprune.l1_unstructured(module, "weight", amount=s)
        torch_keep = module.weight_mask.numpy().astype(bool)
        mask = prune.magnitude_mask(w, s)
        assert (~mask).sum() == (~torch_keep).sum()
        np.testing.assert_array_equal(mask, torch_keep)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_global_matches_reference_on_concatenation(isa, threads, dtype, rng):
    parts = {
        "a": make("ties", 40_000, dtype, rng).reshape(200, 200),
        "b": make("normal", 9, dtype, rng),
        "empty": np.zeros((0, 3), dtype),
        "c": make("inf", 33_000, dtype, rng),
    }
    flat = np.concatenate([p.ravel() for p in parts.values()])
    order = reference_order(flat)
    for s in SPARSITIES:
        masks = prune.global_magnitude_masks(parts, s)
        assert list(masks) == list(parts)
        ref = mask_from_order(order, count(s, flat.size), flat.shape)
        got = np.concatenate([masks[k].ravel() for k in parts])
        np.testing.assert_array_equal(got, ref)
        for k in parts:
            assert masks[k].shape == parts[k].shape


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_global_selection_as_counts_per_array(isa, threads, dtype, rng):
    """The global selection as one count per array (what the prune command
    makes each tensor's mask from, with no mask of the whole model): each
    array's own selection of its count equals its part of the global masks,
    with the k-th value's copies spread over several arrays, empty arrays,
    a large sampled size, and mixed half / float32 dtypes; a NaN is named."""
    from slimgrad.prune._masks import _global_counts, _select

    cases = [
        [make("ties", n, dtype, rng) for n in (1000, 7, 0, 33_333, 70_001)],
        [make("normal", n, dtype, rng) for n in (LARGE, 3, 4097)],
    ]
    if np.dtype(dtype).itemsize == 2:
        cases.append([make("ties", 5000, dtype, rng), make("ties", 3000, np.float32, rng)])
    for parts in cases:
        names = [f"a{i}" for i in range(len(parts))]
        total = sum(p.size for p in parts)
        for s in (0.0, 0.3, 0.5, 0.77, 1.0):
            k = count(s, total)
            counts = _global_counts(parts, names, k)
            assert sum(counts) == k
            for part, name, c, want in zip(parts, names, counts, _select(parts, names, k)):
                np.testing.assert_array_equal(_select([part], [name], c)[0], want)
    bad = make("normal", 100, dtype, rng)
    bad[42] = np.nan
    with pytest.raises(ValueError, match=re.escape("b: NaN at index (42,)")):
        _global_counts([make("normal", 9, dtype, rng), bad], ["a", "b"], 10)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_public_global_counts_give_the_global_masks_one_array_at_a_time(dtype, rng):
    """``magnitude_mask(w, counts[name] / w.size)`` of each array alone is its
    global mask (the documented use), ties spread over arrays, odd sizes,
    non-contiguous views; the counts add up to the global count; the errors
    are global_magnitude_masks'."""
    parts = {
        "a": make("ties", 1000, dtype, rng),
        "b": make("ties", 7, dtype, rng),
        "c": make("normal", 2 * 33_333, dtype, rng)[::2],
        "d": make("ties", 70_007, dtype, rng).reshape(7, 10_001),
    }
    total = sum(p.size for p in parts.values())
    for s in (0.0, 0.3, 0.5, 0.77, 1.0):
        counts = prune.global_magnitude_counts(parts, s)
        masks = prune.global_magnitude_masks(parts, s)
        assert list(counts) == list(parts) and sum(counts.values()) == count(s, total)
        assert all(type(c) is int for c in counts.values())
        for name, w in parts.items():
            np.testing.assert_array_equal(
                prune.magnitude_mask(w, counts[name] / w.size), masks[name]
            )
    bad = dict(parts, b=parts["b"].copy())
    bad["b"][3] = np.nan
    with pytest.raises(ValueError, match=re.escape("weights['b']: NaN at index (3,)")):
        prune.global_magnitude_counts(bad, 0.5)
    with pytest.raises(ValueError, match="sparsity: expected a number in"):
        prune.global_magnitude_counts(parts, 1.5)
    with pytest.raises(TypeError, match="weights: expected a dict of arrays"):
        prune.global_magnitude_counts([parts["a"]], 0.5)
    assert prune.global_magnitude_counts({}, 0.5) == {}


def test_global_single_array_equals_magnitude_mask(rng):
    w = make("ties", 70_001, np.float32, rng)
    for s in SPARSITIES:
        np.testing.assert_array_equal(
            prune.global_magnitude_masks({"w": w}, s)["w"], prune.magnitude_mask(w, s)
        )
    assert prune.global_magnitude_masks({}, 0.5) == {}


def test_global_one_threshold(rng):
    big = rng.standard_normal(10_000).astype(np.float32) * 10
    small = rng.standard_normal(10_000).astype(np.float32) * 0.01
    masks = prune.global_magnitude_masks({"big": big, "small": small}, 0.5)
    # The small-scale array is pruned (almost) entirely, unlike per-array pruning.
    assert (~masks["small"]).sum() > 9_900
    kept = np.concatenate([np.abs(big[masks["big"]]), np.abs(small[masks["small"]])])
    pruned = np.concatenate([np.abs(big[~masks["big"]]), np.abs(small[~masks["small"]])])
    assert pruned.max() <= kept.min()


def reference_nm(w: np.ndarray, n: int, m: int, axis: int) -> np.ndarray:
    moved = np.moveaxis(w, axis, -1)
    groups = np.abs(moved.reshape(-1, m).astype(np.float64))
    position = np.broadcast_to(np.arange(m), groups.shape)
    order = np.lexsort((position, groups), axis=-1)  # per group, pruning order
    keep = np.ones(groups.shape, dtype=bool)
    np.put_along_axis(keep, order[:, : m - n], False, axis=-1)
    return np.moveaxis(keep.reshape(moved.shape), -1, axis)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize(
    "shape, axis, nm",
    [
        (shape, axis, nm)
        for shape, axis in [
            ((1, 4), -1),
            ((3, 8), 1),
            ((257, 12), -1),
            ((8, 5), 0),
            ((4, 12, 3), 1),
            ((1031, 16), 1),
            ((6, 6, 4), -1),
            ((8, 20), 0),
            ((3, 16, 2, 9), 1),
            ((16, 33), 0),
        ]
        for nm in [(2, 4), (1, 4), (4, 8), (0, 4), (4, 4), (1, 2), (5, 16)]
        if shape[axis] % nm[1] == 0
    ],
)
def test_nm_mask_matches_reference(isa, dtype, shape, axis, nm, rng):
    n, m = nm
    for kind in ("normal", "ties"):
        w = make(kind, int(np.prod(shape)), dtype, rng).reshape(shape)
        mask = prune.nm_mask(w, n, m, axis)
        np.testing.assert_array_equal(mask, reference_nm(w, n, m, axis))
        per_group = np.moveaxis(mask, axis, -1).reshape(-1, m).sum(axis=1)
        assert (per_group == n).all()


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_nm_mask_large_is_valid(isa, threads, dtype, rng):
    w = make("ties", 4096 * 33, dtype, rng).reshape(33, 4096)
    mask = prune.nm_mask(w)
    np.testing.assert_array_equal(mask, reference_nm(w, 2, 4, -1))


def reference_structured(w, k, axis, norm):
    others = tuple(i for i in range(w.ndim) if i != axis)
    norms = (
        np.abs(w.astype(np.float64)).sum(axis=others)
        if norm == 1
        else np.sqrt((w.astype(np.float64) ** 2).sum(axis=others))
    )
    keep = reference_mask(norms, k)
    shape = [1] * w.ndim
    shape[axis] = -1
    return np.broadcast_to(keep.reshape(shape), w.shape)


@pytest.mark.parametrize("norm", [1, 2])
@pytest.mark.parametrize("axis", [0, 1, -1])
@pytest.mark.parametrize("amount", [0.0, 0.3, 0.5, 1.0, 2, 0])
def test_structured_mask_matches_reference(norm, axis, amount, rng):
    w = rng.standard_normal((10, 6, 4)).astype(np.float32)
    w[3] = 0.0  # a dead row, and tied rows
    w[5] = w[6]
    slices = w.shape[axis]
    k = amount if isinstance(amount, int) else count(amount, slices)
    mask = prune.structured_mask(w, amount, axis=axis, norm=norm)
    np.testing.assert_array_equal(mask, reference_structured(w, k, axis % 3, norm))


def test_structured_against_torch_ln_structured(rng):
    torch = pytest.importorskip("torch")
    from torch.nn.utils import prune as tprune

    cases = [((16, 8), 0.25, 1, 0), ((12, 10), 3, 2, 1), ((8, 3, 3, 3), 0.5, 2, 0)]
    for shape, amount, norm, dim in cases:
        w = rng.standard_normal(shape).astype(np.float32)
        module = torch.nn.Linear(1, 1)
        module.weight = torch.nn.Parameter(torch.from_numpy(w.copy()))
        tprune.ln_structured(module, "weight", amount=amount, n=norm, dim=dim)
        np.testing.assert_array_equal(
            prune.structured_mask(w, amount, axis=dim, norm=norm),
            module.weight_mask.numpy().astype(bool),
        )


def test_random_mask_exact_and_deterministic(rng):
    w = np.empty((123, 457), np.float32)
    w[:] = np.nan  # values are not used
    for s in SPARSITIES:
        mask = prune.random_mask(w, s, seed=7)
        assert mask.shape == w.shape
        assert (~mask).sum() == count(s, w.size)
    a = run_everywhere(lambda: prune.random_mask(w, 0.5, seed=3))
    for got in a.values():
        np.testing.assert_array_equal(got, next(iter(a.values())))
    assert not np.array_equal(prune.random_mask(w, 0.5, seed=3), prune.random_mask(w, 0.5, seed=4))
    # Roughly uniform: each row pruned about half.
    assert 0.35 < (~prune.random_mask(w, 0.5, seed=3)).mean(axis=1).min()


def test_every_isa_and_thread_count_identical(rng):
    w = make("ties", 300_007, np.float32, rng)
    d = make("inf", 300_007, np.float64, rng)
    v = make("normal", 4 * 100_003, np.float32, rng).reshape(-1, 4)
    h = make("normal", 300_007, ml_dtypes.bfloat16, rng)

    def run():
        return (
            prune.magnitude_mask(w, 0.61),
            prune.magnitude_mask(d, 0.37),
            prune.magnitude_mask(h, 0.45),
            prune.nm_mask(h[:300_000].reshape(-1, 4)),
            prune.global_magnitude_masks({"a": w, "b": w[:1001].copy()}, 0.5)["b"],
            prune.nm_mask(v),
            prune.nm_mask(d[:300_000].reshape(-1, 8), 3, 8),
        )

    results = run_everywhere(run)
    first = next(iter(results.values()))
    for got in results.values():
        for a, b in zip(got, first):
            np.testing.assert_array_equal(a, b)


# ----------------------------------------------------------------- errors
def test_nan_raises_naming_position(isa, threads):
    w = np.ones((300, 400), np.float32)
    w[123, 45] = np.nan
    w[200, 1] = np.nan
    before = w.copy()
    message = "w: NaN at index (123, 45) (flat index 49245); NaN weights have no magnitude to rank"
    for s in (0.0, 0.5):
        with pytest.raises(ValueError) as info:
            prune.magnitude_mask(w, s)
        assert str(info.value) == message
    with pytest.raises(ValueError) as info:
        prune.nm_mask(w)
    assert str(info.value) == message
    with pytest.raises(ValueError, match=r"weights\['b'\]: NaN at index \(123, 45\)"):
        prune.global_magnitude_masks({"a": np.ones(5, np.float32), "b": w}, 0.5)
    with pytest.raises(ValueError, match=r"w: NaN at index \(123, 45\)"):
        prune.structured_mask(w, 0.5)
    np.testing.assert_array_equal(w, before)


BAD = [
    (
        "sparsity>1",
        lambda w: prune.magnitude_mask(w, 1.5),
        ValueError,
        "sparsity: expected a number in [0, 1], got 1.5",
    ),
    (
        "sparsity<0",
        lambda w: prune.magnitude_mask(w, -0.1),
        ValueError,
        "sparsity: expected a number in [0, 1], got -0.1",
    ),
    (
        "sparsity nan",
        lambda w: prune.magnitude_mask(w, float("nan")),
        ValueError,
        "sparsity: expected a number in [0, 1], got nan",
    ),
    (
        "sparsity str",
        lambda w: prune.magnitude_mask(w, "0.5"),
        TypeError,
        "sparsity: expected a number in [0, 1], got str",
    ),
    (
        "int weights",
        lambda w: prune.magnitude_mask(w.astype(np.int32), 0.5),
        TypeError,
        "w: expected float16, bfloat16, float32 or float64 C-contiguous array, got int32 array of shape (4, 8)",
    ),
    (
        "list",
        lambda w: prune.magnitude_mask(w.tolist(), 0.5),
        TypeError,
        "w: expected float16, bfloat16, float32 or float64 C-contiguous array, got list",
    ),
    (
        "mixed global",
        lambda w: prune.global_magnitude_masks({"a": w, "b": w.astype(np.float64)}, 0.5),
        TypeError,
        "weights['b']: expected float32 C-contiguous array, got float64 array of shape (4, 8)",
    ),
    (
        "mixed global, bfloat16 first",  # widened to float32, which float64 cannot join
        lambda w: prune.global_magnitude_masks(
            {"a": w.astype(ml_dtypes.bfloat16), "b": w.astype(np.float64)}, 0.5
        ),
        TypeError,
        "weights['b']: expected float32 C-contiguous array, got float64 array of shape (4, 8)",
    ),
    (
        "mixed global, float16 second",
        lambda w: prune.global_magnitude_masks(
            {"a": w.astype(np.float64), "b": w.astype(np.float16)}, 0.5
        ),
        TypeError,
        "weights['b']: expected float64 C-contiguous array, got float32 array of shape (4, 8)",
    ),
    (
        "nm indivisible",
        lambda w: prune.nm_mask(w[:, :6].copy()),
        ValueError,
        "w: length 6 along axis 1 is not divisible by m=4",
    ),
    (
        "nm axis 0",
        lambda w: prune.nm_mask(w, 2, 8, axis=0),
        ValueError,
        "w: length 4 along axis 0 is not divisible by m=8",
    ),
    (
        "nm n>m",
        lambda w: prune.nm_mask(w, 5, 4),
        ValueError,
        "n, m: expected 0 <= n <= m and m >= 1, got n=5, m=4",
    ),
    (
        "nm bad axis",
        lambda w: prune.nm_mask(w, axis=2),
        ValueError,
        "axis: expected an axis of an array with 2 dimensions, got 2",
    ),
    (
        "nm 0-d",
        lambda w: prune.nm_mask(np.ones((), np.float32)),
        ValueError,
        "w: expected an array with at least one dimension, got a 0-d array",
    ),
    (
        "structured count",
        lambda w: prune.structured_mask(w, 5),
        ValueError,
        "amount: expected a count of slices in [0, 4], got 5",
    ),
    (
        "structured norm",
        lambda w: prune.structured_mask(w, 0.5, norm=3),
        ValueError,
        "norm: expected 1 or 2, got 3",
    ),
    (
        "random seed",
        lambda w: prune.random_mask(w, 0.5, seed=-1),
        ValueError,
        "seed: expected a non-negative int, got -1",
    ),
]


@pytest.mark.parametrize("call, exc, message", [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_arguments_raise_and_change_nothing(call, exc, message, rng):
    w = rng.standard_normal((4, 8)).astype(np.float32)
    before = w.copy()
    with pytest.raises(exc) as info:
        call(w)
    assert str(info.value) == message
    np.testing.assert_array_equal(w, before)


READ_ONLY_VIEWS = {
    "strided": lambda w: w[:, ::2],
    "transposed": lambda w: w.T,
    "big-endian": lambda w: w.astype(">f4"),
    "f64 big-endian strided": lambda w: w.astype(">f8")[::2],
    "f16 transposed": lambda w: w.astype(np.float16).T,
    "bf16 strided": lambda w: w.astype(ml_dtypes.bfloat16)[:, 1::2],
    "negative stride": lambda w: w[::-1],
}


@pytest.mark.parametrize("view", READ_ONLY_VIEWS.values(), ids=READ_ONLY_VIEWS.keys())
def test_read_only_inputs_accept_any_layout_and_byte_order(view, rng):
    # The mask functions only read w: a non-contiguous or non-native array is
    # copied explicitly and gives the masks of its contiguous native copy.
    base = rng.integers(-4, 5, (16, 24)).astype(np.float32)  # ties: order matters
    before = base.copy()
    v = view(base)
    c = np.ascontiguousarray(v, dtype=v.dtype.newbyteorder("="))
    assert not (v.flags.c_contiguous and v.dtype.isnative)
    np.testing.assert_array_equal(prune.magnitude_mask(v, 0.4), prune.magnitude_mask(c, 0.4))
    np.testing.assert_array_equal(
        prune.magnitude_mask(v, 0.4), reference_mask(c, count(0.4, c.size))
    )
    np.testing.assert_array_equal(prune.nm_mask(v, 2, 4), prune.nm_mask(c, 2, 4))
    np.testing.assert_array_equal(prune.nm_mask(v, 1, 4, axis=0), prune.nm_mask(c, 1, 4, axis=0))
    other = rng.integers(-4, 5, 50).astype(c.dtype)
    got = prune.global_magnitude_masks({"v": v, "o": other}, 0.5)
    want = prune.global_magnitude_masks({"v": c, "o": other}, 0.5)
    for k in ("v", "o"):
        np.testing.assert_array_equal(got[k], want[k])
    np.testing.assert_array_equal(prune.structured_mask(v, 0.5), prune.structured_mask(c, 0.5))
    for got, want in zip(prune.compress_24(v), prune.compress_24(c)):
        np.testing.assert_array_equal(got, want)
    assert prune.storage_report(v) == prune.storage_report(c)
    np.testing.assert_array_equal(base, before)


def test_nan_in_a_strided_view_is_named_by_its_own_index():
    w = np.ones((4, 10), np.float32)
    w[2, 6] = np.nan
    with pytest.raises(ValueError) as info:
        prune.magnitude_mask(w[:, ::2], 0.5)
    assert str(info.value) == (
        "w: NaN at index (2, 3) (flat index 13); NaN weights have no magnitude to rank"
    )
