"""Storage formats of pruned weights: exact round trips and honest byte counts."""

from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest
from slimgrad import prune

SIZES = [0, 1, 7, 8, 9, 63, 65, 100_003]


@pytest.mark.parametrize("n", SIZES)
def test_pack_mask_round_trip_and_packbits_order(n, rng):
    mask = rng.random(n) < 0.3
    packed = prune.pack_mask(mask)
    assert packed.dtype == np.uint8 and packed.nbytes == (n + 7) // 8
    np.testing.assert_array_equal(packed, np.packbits(mask))
    np.testing.assert_array_equal(prune.unpack_mask(packed, (n,)), mask)


def test_pack_mask_bit_order_and_shape():
    mask = np.zeros((3, 5), bool)
    mask[0, 0] = True  # flat 0 -> most significant bit of byte 0
    mask[1, 4] = True  # flat 9 -> bit 6 (0x40) of byte 1
    np.testing.assert_array_equal(prune.pack_mask(mask), [0x80, 0x40])
    np.testing.assert_array_equal(prune.unpack_mask(prune.pack_mask(mask), (3, 5)), mask)


def test_pack_mask_errors():
    message = r"mask: expected a bool ndarray, got float32 array of shape \(3,\)"
    with pytest.raises(TypeError, match=message):
        prune.pack_mask(np.ones(3, np.float32))
    with pytest.raises(ValueError, match=r"packed: expected 2 bytes for shape \(3, 5\), got 3"):
        prune.unpack_mask(np.zeros(3, np.uint8), (3, 5))


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.float16])
@pytest.mark.parametrize("shape", [(1, 1), (5, 9), (64, 33), (3, 0), (0, 4)])
def test_csr_round_trip(dtype, shape, rng):
    w = rng.standard_normal(shape).astype(dtype)
    w *= prune.random_mask(w, 0.7, seed=1) if w.size else 1
    csr = prune.to_csr(w)
    data, indices, indptr = csr
    nnz = int(np.count_nonzero(w))
    assert data.dtype == w.dtype and data.size == nnz
    assert indices.dtype == np.int32 and indptr.dtype == np.int32 and indptr.size == shape[0] + 1
    assert csr.nbytes == data.nbytes + indices.nbytes + indptr.nbytes
    assert csr.nbytes == nnz * (w.itemsize + 4) + 4 * (shape[0] + 1)
    np.testing.assert_array_equal(prune.from_csr(csr), w)
    np.testing.assert_array_equal(prune.from_csr((data, indices, indptr), shape=shape), w)


def test_csr_with_mask_keeps_explicit_zeros(rng):
    w = rng.standard_normal((6, 7)).astype(np.float32)
    w[0, 0] = 0.0
    mask = np.ones_like(w, dtype=bool)
    mask[1] = False
    csr = prune.to_csr(w, mask)
    assert csr.data.size == 35 and csr.data[0] == 0  # w[0, 0] = 0 is stored: the mask says kept
    np.testing.assert_array_equal(prune.from_csr(csr), np.where(mask, w, 0))


def test_csr_scipy_interop(rng):
    sparse = pytest.importorskip("scipy.sparse")
    w = rng.standard_normal((40, 30)).astype(np.float32)
    w *= prune.magnitude_mask(w, 0.8)
    ours = prune.to_csr(w)
    theirs = sparse.csr_matrix(w)
    np.testing.assert_array_equal(ours.data, theirs.data)
    np.testing.assert_array_equal(ours.indices, theirs.indices)
    np.testing.assert_array_equal(ours.indptr, theirs.indptr)
    np.testing.assert_array_equal(ours.to_scipy().toarray(), w)
    np.testing.assert_array_equal(prune.from_csr(theirs), w)


def test_csr_errors():
    with pytest.raises(ValueError, match=r"w: expected a 2-D array, got shape \(3,\)"):
        prune.to_csr(np.ones(3))
    with pytest.raises(ValueError, match="csr: arrays inconsistent"):
        prune.from_csr(
            (np.ones(2), np.zeros(2, np.int32), np.array([0, 1], np.int32)), shape=(1, 3)
        )
    with pytest.raises(ValueError, match="indices within the columns"):
        prune.from_csr(
            (np.ones(1), np.array([5], np.int32), np.array([0, 1], np.int32)), shape=(1, 3)
        )


@pytest.mark.parametrize(
    "dtype",
    [np.float32, np.float64, np.float16, ml_dtypes.bfloat16],
    ids=["float32", "float64", "float16", "bfloat16"],
)
@pytest.mark.parametrize("shape", [(4,), (1, 8), (3, 12), (2, 5, 16), (1001, 4)])
def test_compress_24_round_trip(dtype, shape, rng):
    dense = rng.standard_normal(shape).astype(dtype)
    w = np.where(prune.nm_mask(dense, 2, 4), dense, np.zeros((), dtype))  # already 2:4 sparse
    values, indices = prune.compress_24(w)
    kept = w.size // 2
    assert values.shape == (*shape[:-1], shape[-1] // 2) and values.dtype == w.dtype
    assert indices.dtype == np.uint8 and indices.size == (kept + 3) // 4
    packed = prune.compress_24(w)
    assert packed.nbytes == values.nbytes + indices.nbytes == kept * w.itemsize + (kept + 3) // 4
    assert packed.shape == shape and packed.dense_nbytes == w.nbytes
    np.testing.assert_array_equal(prune.decompress_24(values, indices), w)


def test_compress_24_of_dense_is_nm_pruned(rng):
    w = rng.standard_normal((16, 32)).astype(np.float32)
    back = prune.decompress_24(*prune.compress_24(w))
    np.testing.assert_array_equal(back, w * prune.nm_mask(w))


def test_compress_24_index_layout():
    w = np.array([[0, 5, 0, 6, 7, 0, 0, 8]], np.float32)
    values, indices = prune.compress_24(w)
    np.testing.assert_array_equal(values, [[5, 6, 7, 8]])
    # positions 1, 3, 0, 3 -> 1 | 3 << 2 | 0 << 4 | 3 << 6
    np.testing.assert_array_equal(indices, [1 | 3 << 2 | 0 << 4 | 3 << 6])


def test_compress_24_errors():
    with pytest.raises(ValueError, match="w: length 6 along axis 1 is not divisible by m=4"):
        prune.compress_24(np.ones((2, 6), np.float32))
    with pytest.raises(ValueError, match=r"indices: expected 1 bytes for 4 values, got 2"):
        prune.decompress_24(np.ones((1, 4), np.float32), np.zeros(2, np.uint8))
    with pytest.raises(ValueError, match="distinct and increasing"):
        prune.decompress_24(np.ones((1, 2), np.float32), np.zeros(1, np.uint8))


def test_storage_report_is_honest(rng):
    w = rng.standard_normal((64, 128)).astype(np.float32)
    w24 = w * prune.nm_mask(w)
    report = prune.storage_report(w24)
    assert report["dense"] == w.nbytes
    assert report["2:4"] == w.size // 2 * 4 + w.size // 8  # values + 2 bits each
    assert report["bitmask"] == w.size // 2 * 4 + w.size // 8
    assert report["csr"] == w.size // 2 * 8 + 65 * 4
    sparse = w * prune.magnitude_mask(w, 0.9)
    report = prune.storage_report(sparse)
    assert "2:4" not in report  # groups with 3 or 4 kept cannot be 2:4
    assert report["csr"] < report["dense"]
