"""Sparse weight products (prune.sparse_matmul) against float64 references."""

from __future__ import annotations

import numpy as np
import pytest
import slimgrad
from conftest import ISAS, run_everywhere
from slimgrad import prune
from slimgrad.prune import CSR, Compressed24, compress_24, decompress_24, sparse_matmul, to_csr

# float32 sums of n products in another order than the float64 reference:
# bounded by a few ulps times n relative to sum |x| |w| (a wrong column or a
# missed value is off by O(1) of that sum).
RTOL = 1e-5

# (batch, out, in), for both formats: empty, one, vector tails (16 values =
# 32 columns per AVX-512 chunk, 8 per AVX2 chunk), rows whose positions start
# mid-byte (in % 8 == 4), the row chunk (32) +- 1, the 4-row groups + 1-3
# rows, batch tiles (8) +- 1; above batch 8 the packed panels (since the
# 4-vector panels: 64 wide for AVX-512, 32 for AVX2; their tails, row chunks and
# batch groups are covered in test_sparse_panels.py) with k-block tails,
# aligned (in % 8 == 0) and not; then inner sizes that are no multiple of 4
# (CSR only). 2:4 takes the shapes whose `in` is a multiple of 4, CSR all.
SHAPES = [
    (9, 5, 12),
    (16, 6, 8),
    (17, 7, 264),
    (33, 37, 68),
    (31, 3, 520),
    (65, 34, 1032),
    (4, 130, 4100),  # >= 2^20 multiply-adds: threaded (smaller products run on one thread)
    (40, 70, 520),
    (0, 3, 8),
    (1, 1, 4),
    (1, 5, 12),
    (3, 33, 28),
    (7, 65, 36),
    (8, 31, 64),
    (9, 32, 68),
    (17, 3, 516),
    (2, 7, 1028),
    (1, 64, 2052),
    (0, 3, 5),
    (1, 1, 1),
    (1, 5, 7),
    (3, 33, 17),
    (9, 65, 33),
    (17, 31, 100),
    (2, 40, 1031),
    (15, 70, 1031),  # threaded at density 1 (>= 2^20 multiply-adds)
]
SHAPES_24 = [s for s in SHAPES if s[2] % 4 == 0]
SHAPES_CSR = SHAPES


def _check(y, x, w_dense):
    ref = x.astype(np.float64) @ w_dense.astype(np.float64).T
    scale = np.abs(x.astype(np.float64)) @ np.abs(w_dense.astype(np.float64)).T
    assert y.dtype == np.float32 and y.shape == ref.shape
    # a new, writable y on a cache line (threads write neighbouring row chunks)
    assert y.flags.writeable and y.ctypes.data % 64 == 0
    np.testing.assert_array_less(np.abs(y - ref), RTOL * scale + 1e-30)


def _panel_isas_agree(results, batch):
    """Above batch 8 AVX2 and AVX-512 both sum every y entry in k order with
    one FMA per kept value (panel path): identical bits, whatever the panel width."""
    if batch > 8 and ("avx2", 1) in results and ("avx512", 1) in results:
        np.testing.assert_array_equal(results[("avx2", 1)], results[("avx512", 1)])


def _same_per_isa(results):
    for isa in ISAS:
        per = [r for (name, _), r in results.items() if name == isa]
        for r in per[1:]:
            np.testing.assert_array_equal(r, per[0])  # thread count changes nothing


@pytest.mark.parametrize("shape", SHAPES_24, ids=str)
def test_gemm24_matches_float64_reference(shape, rng):
    batch, out, inp = shape
    w = rng.standard_normal((out, inp)).astype(np.float32)
    c = compress_24(w)
    dense = decompress_24(*c)
    x = rng.standard_normal((batch, inp)).astype(np.float32)
    results = run_everywhere(lambda: sparse_matmul(x, c))
    for y in results.values():
        _check(y, x, dense)
    _same_per_isa(results)
    _panel_isas_agree(results, batch)
    packed = prune.pack_sparse(c)
    packed_results = run_everywhere(lambda: sparse_matmul(x, packed))
    if packed.layout == "2:4":  # checked once: the same kernels, the same bits
        for key, y in packed_results.items():
            np.testing.assert_array_equal(y, results[key])
    _slices24_agree_everywhere(x, c, dense)


def _slices24_agree_everywhere(x, c, dense):
    """2:4 slices (pack_sparse's 2:4 layout under AVX-512), on every ISA
    and thread count: within float32 rounding of float64, and one order per
    batch size (4 accumulators up to 8 rows, k order above), so the same bits
    everywhere (the portable std::fma loop is the reference)."""
    arrays = slimgrad._core.sparse.pack_24_slices(*c)
    out, inp = dense.shape
    return _one_order(lambda: slimgrad._core.sparse.gemm24_slices(x, *arrays, out, inp), x, dense)


def _one_order(product, x, w):
    """product() on every ISA and thread count: within float32 rounding of
    float64 (x @ w.T), and the same bits everywhere."""
    results = run_everywhere(product)
    first = next(iter(results.values()))
    for key, y in results.items():
        _check(y, x, w)
        np.testing.assert_array_equal(y, first, err_msg=str(key))
    return first


def test_packed_24_layout(rng):
    """The 2:4 slices hold kept value k of row 16 s + lane at
    values[(s * in / 2 + k) * 16 + lane] and its group's two positions in
    the lane's ctrl word of the group's chunk (4 bits per group, 8 groups a
    word); padding rows are zeros."""
    out, inp = 35, 100  # 3 slices (13 padding rows), 25 groups: 4 words, the last with 1 group
    w = rng.standard_normal((out, inp)).astype(np.float32)
    c = compress_24(w)
    values, ctrl = slimgrad._core.sparse.pack_24_slices(*c)
    assert values.dtype == np.float32 and ctrl.dtype == np.uint32
    assert values.size == 48 * inp // 2 and ctrl.size == 3 * 4 * 16
    rebuilt = np.zeros((48, inp), np.float32)
    for r in range(48):
        s, lane = divmod(r, 16)
        for g in range(inp // 4):
            nib = (int(ctrl[(s * 4 + g // 8) * 16 + lane]) >> (4 * (g % 8))) & 15
            for j, pos in enumerate((nib & 3, nib >> 2)):
                rebuilt[r, 4 * g + pos] += values[(s * (inp // 2) + 2 * g + j) * 16 + lane]
    np.testing.assert_array_equal(rebuilt[:out], decompress_24(*c))
    assert not rebuilt[out:].any() and not ctrl.reshape(3, 4, 16)[2, :, 3:].any()


def test_packed_24_takes_slices_under_simd(rng):
    w = rng.standard_normal((40, 72)).astype(np.float32)
    c = compress_24(w)
    x = rng.standard_normal((3, 72)).astype(np.float32)
    for isa in ISAS:
        with slimgrad.use_isa(isa):
            packed = prune.pack_sparse(c)
        simd = isa != "scalar"
        assert packed.layout == ("2:4 slices" if simd else "2:4") and packed.format == "2:4"
        assert packed.layout in repr(packed)
        assert packed.nbytes == sum(a.nbytes for a in packed.arrays)
        # the same bytes as compress_24's arrays, but for rows padded to a slice of 16
        assert packed.nbytes == (c.nbytes if not simd else 48 * 36 * 4 + 3 * 3 * 16 * 4)
        for a in packed.arrays:
            assert not a.flags.writeable
        _check(sparse_matmul(x, packed), x, decompress_24(*c))
        for out in (0, 5, 17):  # no rows, or in = 0: empty, zeros
            empty = prune.pack_sparse(compress_24(np.zeros((out, 0), np.float32)))
            np.testing.assert_array_equal(
                sparse_matmul(np.ones((2, 0), np.float32), empty), np.zeros((2, out), np.float32)
            )


def test_packed_24_with_inf_and_nan_in_x_matches_gemm24(rng):
    """Every kept value multiplies the x its position selects, nothing
    else: inf and NaN in x reach exactly the rows that keep that column,
    as in the row-major product (a kept zero times inf is NaN in both)."""
    out, inp = 37, 72
    w = rng.standard_normal((out, inp)).astype(np.float32)
    w *= prune.nm_mask(w, 2, 4)
    c = compress_24(w)
    arrays = slimgrad._core.sparse.pack_24_slices(*c)
    for batch in (1, 3, 8, 9):
        x = rng.standard_normal((batch, inp)).astype(np.float32)
        x[:, 5], x[:, 40] = np.inf, np.nan
        want = sparse_matmul(x, c)
        assert np.isnan(want).any() and np.isfinite(want).any()
        product = lambda: slimgrad._core.sparse.gemm24_slices(x, *arrays, out, inp)  # noqa: E731, B023
        for key, y in run_everywhere(product).items():
            np.testing.assert_array_equal(np.isnan(y), np.isnan(want), err_msg=str(key))
            np.testing.assert_allclose(y, want, rtol=1e-5, atol=1e-5, err_msg=str(key))


def test_gemm24_slices_bad_input_raises_and_changes_nothing(rng):
    c = compress_24(rng.standard_normal((20, 16)).astype(np.float32))
    values, ctrl = slimgrad._core.sparse.pack_24_slices(*c)
    x = rng.standard_normal((3, 16)).astype(np.float32)
    keep = [a.copy() for a in (x, values, ctrl, *c)]
    g = slimgrad._core.sparse.gemm24_slices
    with pytest.raises(ValueError, match="x: expected 16 columns"):
        g(x[:, :12].copy(), values, ctrl, 20, 16)
    with pytest.raises(ValueError, match="divisible by 4"):
        g(np.ones((3, 6), np.float32), values, ctrl, 20, 6)
    with pytest.raises(ValueError, match="values"):
        g(x, values[:-1].copy(), ctrl, 20, 16)
    with pytest.raises(ValueError, match="ctrl"):
        g(x, values, ctrl[:-1].copy(), 20, 16)
    with pytest.raises(ValueError, match="values"):
        g(x, values, ctrl, 40, 16)  # out of another slice count
    with pytest.raises(TypeError, match="ctrl"):
        g(x, values, ctrl.view(np.int32), 20, 16)
    with pytest.raises(TypeError, match="x"):
        g(x.astype(np.float64), values, ctrl, 20, 16)
    p = slimgrad._core.sparse.pack_24_slices
    with pytest.raises(ValueError, match="positions"):
        p(c[0], c[1][:-1].copy())
    bad = c[1].copy()
    bad[0] = 0b0000  # both positions 0 in the first group
    with pytest.raises(ValueError, match="positions"):
        p(c[0], bad)
    with pytest.raises(ValueError, match="values"):
        p(c[0][:, :7].copy(), c[1])
    for a, b in zip(keep, (x, values, ctrl, *c), strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("shape", SHAPES_CSR, ids=str)
@pytest.mark.parametrize("density", [0.0, 0.1, 0.5, 1.0])
def test_csr_matches_float64_and_scipy(shape, density, rng):
    batch, out, inp = shape
    w = rng.standard_normal((out, inp)).astype(np.float32)
    w[rng.random(w.shape) >= density] = 0
    c = to_csr(w)
    x = rng.standard_normal((batch, inp)).astype(np.float32)
    results = run_everywhere(lambda: sparse_matmul(x, c))
    for y in results.values():
        _check(y, x, w)
    _same_per_isa(results)
    packed = prune.pack_sparse(c)
    packed_results = run_everywhere(lambda: sparse_matmul(x, packed))
    if packed.layout == "csr":  # the same kernels, the same bits
        for key, y in packed_results.items():
            np.testing.assert_array_equal(y, results[key])
    _slices_agree_everywhere(x, c, w)
    scipy = pytest.importorskip("scipy")
    del scipy
    ref = (c.to_scipy().astype(np.float64) @ x.astype(np.float64).T).T
    np.testing.assert_allclose(results[next(iter(results))], ref, rtol=1e-4, atol=1e-4)


def _slices(c):
    return slimgrad._core.sparse.pack_csr_slices(*c, *c.shape)


def _slices_agree_everywhere(x, c, w):
    """CSR slices (pack_sparse's CSR layout under AVX-512), on every ISA and
    thread count: within float32 rounding of float64, and one order, so the
    same bits everywhere (the portable std::fma loop is the reference)."""
    arrays = _slices(c)
    return _one_order(lambda: slimgrad._core.sparse.spmm_slices(x, *arrays, *c.shape), x, w)


@pytest.mark.parametrize("shape", [(64, 96), (37, 70)], ids=str)
@pytest.mark.parametrize("batch", [1, 3, 8, 9])
def test_reordered_csr_slices_agree_everywhere(shape, batch, rng):
    """A weight whose row lengths vary (one dense row in every 16, as
    magnitude pruning leaves some rows long) is sliced by row length, and
    its sums are scattered back to W's rows: within float32 rounding of
    float64 on every ISA and thread count, with the same bits everywhere,
    and pack_sparse's product equal to them."""
    out, inp = shape
    w = rng.standard_normal((out, inp)).astype(np.float32)
    w[rng.random(w.shape) < 0.9] = 0
    w[1::16] = rng.standard_normal((len(range(1, out, 16)), inp))
    c = to_csr(w)
    assert _slices(c)[4].size == out  # reordered
    x = rng.standard_normal((batch, inp)).astype(np.float32)
    y = _slices_agree_everywhere(x, c, w)
    with slimgrad.use_isa("avx512" if "avx512" in ISAS else ISAS[-1]):
        packed = prune.pack_sparse(c)
    if packed.layout == "csr slices":
        np.testing.assert_array_equal(sparse_matmul(x, packed), y)


def test_spmm_slices_rows_must_match_out(rng):
    w = rng.standard_normal((20, 16)).astype(np.float32)
    values, index, base, starts, rows = _slices(to_csr(w))
    x = rng.standard_normal((2, 16)).astype(np.float32)
    with pytest.raises(ValueError, match=r"rows: expected 0 or 20 entries \(out_features\), got"):
        slimgrad._core.sparse.spmm_slices(
            x, values, index, base, starts, np.zeros(5, np.int32), 20, 16
        )
    with pytest.raises(TypeError, match="rows"):
        slimgrad._core.sparse.spmm_slices(
            x, values, index, base, starts, rows.astype(np.int64), 20, 16
        )


def test_pack_sparse_takes_csr_slices_under_avx512(rng):
    w = rng.standard_normal((40, 70)).astype(np.float32)
    w[rng.random(w.shape) < 0.9] = 0
    c = to_csr(w)
    x = rng.standard_normal((3, 70)).astype(np.float32)
    for isa in ISAS:
        with slimgrad.use_isa(isa):
            packed = prune.pack_sparse(c)
        wide = isa.startswith(("avx512", "amx"))
        assert packed.layout == ("csr slices" if wide else "csr") and packed.format == "csr"
        assert packed.layout in repr(packed)
        assert packed.nbytes == sum(a.nbytes for a in packed.arrays)
        for a in packed.arrays:
            assert not a.flags.writeable
        _check(sparse_matmul(x, packed), x, w)
        for out, inp in ((3, 0), (0, 5), (17, 0)):  # nothing to multiply: zeros, empty
            empty = prune.pack_sparse(to_csr(np.zeros((out, inp), np.float32)))
            y = sparse_matmul(np.ones((2, inp), np.float32), empty)
            np.testing.assert_array_equal(y, np.zeros((2, out), np.float32))


@pytest.mark.parametrize("batch", [1, 3, 4, 6])
def test_packed_csr_with_inf_and_nan_in_x_matches_csr(batch, rng):
    """A slice pads lanes with nothing in a step's window; the padding must
    add nothing even where x is inf or NaN (the masked kernels), as in the
    CSR product, which only reads stored values."""
    out, inp = 37, 70  # a partial slice (16 rows) and a last window past in
    w = rng.standard_normal((out, inp)).astype(np.float32)
    w[rng.random(w.shape) < 0.8] = 0
    # x is not finite at the first column of every window (a multiple of
    # 16), which padding lanes point at (index 0x80: low bits 0); no row
    # stores a value there
    w[:, [0, 16, 32, 48, 64]] = 0
    w[3, 32] = 2.0  # except for row 3, which reads x[:, 32]
    x = rng.standard_normal((batch, inp)).astype(np.float32)
    x[:, 0], x[:, 16], x[:, 32], x[:, 48], x[:, 64] = np.inf, -np.inf, np.nan, np.inf, -np.inf
    c = to_csr(w)
    arrays = _slices(c)
    want = sparse_matmul(x, c)
    assert np.isnan(want[:, 3]).all() and np.isfinite(np.delete(want, 3, axis=1)).all()
    finite = np.isfinite(x)
    product = lambda: slimgrad._core.sparse.spmm_slices(x, *arrays, out, inp)  # noqa: E731
    for key, y in run_everywhere(product).items():
        np.testing.assert_array_equal(np.isnan(y), np.isnan(want), err_msg=str(key))
        # the finite entries: as with the non-finite columns left out of x
        keep = np.delete(np.arange(out), 3)
        ref = np.where(finite, x, 0).astype(np.float64) @ w.astype(np.float64).T
        np.testing.assert_allclose(y[:, keep], ref[:, keep], rtol=1e-5, atol=1e-5, err_msg=str(key))


def _slice_steps(rows: np.ndarray) -> list[int]:
    """The packing sparse.hpp defines, for one slice's rows (bool, up to 16
    x in): the window start of each step. Windows of 32 columns start at
    multiples of 16; the window at b has as many steps as the most values a
    row has left below b + 16, rounded up to an even count (pairs of steps
    share a window), and each step takes every row's next value if it lies
    in the window."""
    left = [list(np.flatnonzero(r)) for r in rows]
    bases = []
    for b in range(0, rows.shape[1], 16):
        most = max((sum(c < b + 16 for c in cols) for cols in left), default=0)
        for _ in range(most + most % 2):
            bases.append(b)
            for cols in left:
                if cols and cols[0] < b + 32:
                    cols.pop(0)
    assert not any(left)
    return bases


@pytest.mark.parametrize("uneven", [False, True], ids=["random", "uneven"])
@pytest.mark.parametrize("shape", [(35, 100), (16, 48), (20, 7), (3, 130), (64, 96)])
def test_packed_csr_layout(shape, uneven, rng):
    """The slices hold W's rows in W's order or, when that takes at most 5/6
    of the steps, ordered by their count of stored values, most first, ties
    in row order (rows; empty for W's order); every stored value once, at
    its row's lane, in a step whose window holds its column, each lane's
    values in column order, with the steps sparse.hpp defines; the rest is
    padding (value 0, index 0x80)."""
    out, inp = shape
    w = rng.standard_normal((out, inp)).astype(np.float32)
    w[rng.random(w.shape) < 0.7] = 0
    w[0, :] = 0  # an empty row
    w[-1, : min(inp, 20)] = 1.0  # a dense run: steps beyond the window's half
    if uneven:  # one dense row in every 16: each slice of W's order waits for it
        w[1::16] = 1.0
    values, index, base, starts, rows = _slices(to_csr(w))
    slices = -(-out // 16)

    def steps(order):
        return sum(
            -(-len(_slice_steps(w[order][16 * s : 16 * s + 16] != 0)) // 4) * 4
            for s in range(slices)
        )

    by_count = np.argsort(-(w != 0).sum(1), kind="stable")
    reorder = 6 * steps(by_count) <= 5 * steps(np.arange(out))
    if reorder:
        np.testing.assert_array_equal(rows, by_count)
    else:
        assert rows.size == 0
    if uneven and out >= 32:
        assert reorder
    w_in_order = w[rows] if rows.size else w
    assert starts[0] == 0 and np.all(np.diff(starts) % 4 == 0) and starts.size == slices + 1
    assert values.size == index.size == 16 * base.size == 16 * starts[-1]
    rebuilt = np.zeros((16 * slices, inp), np.float32)
    for s in range(slices):
        want = _slice_steps(w_in_order[16 * s : 16 * s + 16] != 0)
        t0 = starts[s]
        assert starts[s + 1] - t0 == -(-len(want) // 4) * 4
        np.testing.assert_array_equal(base[t0 : t0 + len(want)], want)
        pairs = base[t0 : starts[s + 1]]
        np.testing.assert_array_equal(pairs[0::2], pairs[1::2])  # the kernel loads x per pair
        last = np.full(16, -1)
        for t in range(t0, starts[s + 1]):
            for lane in range(16):
                col = index[16 * (t & ~3) + 4 * lane + (t & 3)]
                if col & 0x80:
                    assert values[16 * t + lane] == 0
                    continue
                c = base[t] + col
                assert col < 32 and c > last[lane]  # in the window, in column order
                last[lane] = c
                rebuilt[16 * s + lane, c] = values[16 * t + lane]
    np.testing.assert_array_equal(rebuilt[:out], w_in_order)
    assert not rebuilt[out:].any()


def test_csr_int64_indptr_and_leading_dims(rng):
    w = rng.standard_normal((9, 20)).astype(np.float32)
    w[rng.random(w.shape) < 0.7] = 0
    c = to_csr(w)
    c64 = CSR(c.data, c.indices, c.indptr.astype(np.int64), c.shape)
    x = rng.standard_normal((2, 3, 20)).astype(np.float32)
    y = sparse_matmul(x, c64)
    assert y.shape == (2, 3, 9)
    np.testing.assert_array_equal(y, sparse_matmul(x, c))
    np.testing.assert_allclose(y, x @ w.T, rtol=1e-5, atol=1e-5)
    # a strided x is copied, same result
    xs = np.asfortranarray(x.reshape(6, 20))
    np.testing.assert_array_equal(sparse_matmul(xs, c), y.reshape(6, 9))


def test_torch_dense_oracle(rng):
    torch = pytest.importorskip("torch")
    w = rng.standard_normal((48, 64)).astype(np.float32)
    c = compress_24(w)
    x = rng.standard_normal((5, 64)).astype(np.float32)
    ref = torch.nn.functional.linear(
        torch.from_numpy(x).double(), torch.from_numpy(decompress_24(*c)).double()
    )
    np.testing.assert_allclose(sparse_matmul(x, c), ref.numpy(), rtol=1e-5, atol=1e-5)


def _bad_24_cases(rng):
    w = rng.standard_normal((6, 16)).astype(np.float32)
    values, positions = compress_24(w)
    x = rng.standard_normal((3, 16)).astype(np.float32)
    swapped = positions.copy()
    swapped[0] = (swapped[0] & 0xF0) | 0b0001  # positions (1, 0): decreasing
    equal = positions.copy()
    equal[1] = (equal[1] & 0x0F) | 0b0101_0000  # positions (1, 1)
    return x, [
        ((x.astype(np.float64), Compressed24(values, positions)), TypeError, "x"),
        ((x[:, :12].copy(), Compressed24(values, positions)), ValueError, "x"),
        ((x, Compressed24(values.astype(np.float64), positions)), TypeError, "values"),
        ((x, Compressed24(values, positions[:-1].copy())), ValueError, "positions"),
        ((x, Compressed24(values, positions.astype(np.int8))), TypeError, "positions"),
        ((x, Compressed24(values, swapped)), ValueError, "positions"),
        ((x, Compressed24(values, equal)), ValueError, "positions"),
        ((x, w), TypeError, "weight"),
    ]


def _bad_csr_cases(rng):
    w = rng.standard_normal((4, 10)).astype(np.float32)
    w[rng.random(w.shape) < 0.5] = 0
    d, i, p = to_csr(w)
    x = rng.standard_normal((3, 10)).astype(np.float32)
    big = i.copy()
    big[-1] = 10
    neg = i.copy()
    neg[0] = -1
    back = p.copy()
    back[2], back[1] = back[1], back[2] + 1
    return x, [
        ((x, CSR(d.astype(np.float64), i, p, w.shape)), TypeError, "data"),
        ((x, CSR(d, i.astype(np.int64), p, w.shape)), TypeError, "indices"),
        ((x, CSR(d, i[:-1].copy(), p, w.shape)), ValueError, "indices"),
        ((x, CSR(d, big, p, w.shape)), ValueError, "indices"),
        ((x, CSR(d, neg, p, w.shape)), ValueError, "indices"),
        ((x, CSR(d, i, p[:-1].copy(), w.shape)), ValueError, "indptr"),
        ((x, CSR(d, i, back, w.shape)), ValueError, "indptr"),
        ((x, CSR(d, i, p + 1, w.shape)), ValueError, "indptr"),
        ((x[:, :9].copy(), CSR(d, i, p, w.shape)), ValueError, "x"),
    ]


def test_packed_weight_refuses_bad_x_with_its_message(isa, rng):
    """A packed weight's call goes straight to the kernel, which checks x;
    an x it refuses comes back to sparse_matmul's own path: 1-D and 3-D x
    are reshaped, a strided x copied, anything else refused naming x."""
    w = rng.standard_normal((20, 32)).astype(np.float32)
    w[rng.random(w.shape) < 0.9] = 0
    x = rng.standard_normal((3, 32)).astype(np.float32)
    for weight in (compress_24(w), to_csr(w)):
        packed = prune.pack_sparse(weight)  # the layout of this level
        y = sparse_matmul(x, weight)
        np.testing.assert_array_equal(sparse_matmul(x[1], packed), sparse_matmul(x[1:2], packed)[0])
        np.testing.assert_array_equal(sparse_matmul(x[None], packed)[0], sparse_matmul(x, packed))
        np.testing.assert_allclose(sparse_matmul(x, packed), y, rtol=1e-5, atol=1e-5)
        np.testing.assert_array_equal(
            sparse_matmul(np.asfortranarray(x), packed), sparse_matmul(x, packed)
        )
        bad = [
            (x.astype(np.float64), TypeError, "x: expected a float32 ndarray"),
            (x.tolist(), TypeError, "x: expected a float32 ndarray"),
            (x[:, :31].copy(), ValueError, "x"),
            (np.float32(1.0), TypeError, "x: expected a float32 ndarray"),
        ]
        for xb, error, match in bad:
            before = np.array(xb, copy=True)
            with pytest.raises(error, match=match):
                sparse_matmul(xb, packed)
            np.testing.assert_array_equal(np.asarray(xb), before)


@pytest.mark.parametrize("cases", [_bad_24_cases, _bad_csr_cases], ids=["2:4", "csr"])
def test_bad_input_raises_and_changes_nothing(cases, isa, rng):
    _, bad = cases(rng)
    for (x, weight), error, name in bad:
        before = [a.copy() for a in (x, *weight)] if isinstance(weight, tuple) else [x.copy()]
        with pytest.raises(error, match=name):
            sparse_matmul(x, weight)
        after = [x, *weight] if isinstance(weight, tuple) else [x]
        for a, b in zip(before, after, strict=True):
            np.testing.assert_array_equal(a, b)


def test_prefer_sparse_rules(isa):
    w = np.zeros((64, 64), np.float32)
    w[:, ::16] = 1
    small = to_csr(w)  # density 1/16
    big = CSR(*to_csr(np.eye(4096, dtype=np.float32)), (4096, 4096))
    c24 = compress_24(np.ones((8, 8), np.float32))
    simd = isa in ("avx2", "avx512")
    packed = prune.pack_sparse(small)
    raw_csr = [small] if packed.layout == "csr slices" else [small, packed]
    for threads in (1, 2, 4):  # CSR's rules do not depend on the thread count
        for weight in raw_csr:
            assert prune.prefer_sparse(weight, 8, threads) is simd
            assert prune.prefer_sparse(weight, 1, threads) is False  # too small for batch 1
            assert prune.prefer_sparse(weight, 64, threads) is False
        assert prune.prefer_sparse(big, 1, threads) is simd
        assert prune.prefer_sparse(to_csr(np.ones((8, 8), np.float32)), 8, threads) is False
    for weight in (c24, prune.pack_sparse(c24)):  # 1 thread
        assert prune.prefer_sparse(weight, 1, 1) is simd
        assert prune.prefer_sparse(weight, 16, 1) is simd
        assert prune.prefer_sparse(weight, 64, 1) is simd
        assert prune.prefer_sparse(weight, 65, 1) is (isa == "avx512")
        assert prune.prefer_sparse(weight, 512, 1) is (isa == "avx512")
        assert prune.prefer_sparse(weight, 513, 1) is False
        assert prune.prefer_sparse(weight, 0, 1) is False
    with pytest.raises(TypeError, match="weight"):
        prune.prefer_sparse(w, 1)


def test_prefer_sparse_on_every_level(isa_all):
    """Levels above avx512 (avx512_vnni, avx512_bf16, amx) run the avx512
    sparse kernels, so the rules are avx512's there: the amx level once fell
    through to "dense always" and the demo's 2:4 and CSR layers ran dense."""
    c24 = compress_24(np.ones((8, 8), np.float32))
    w = np.zeros((64, 64), np.float32)
    w[:, ::16] = 1
    csr = to_csr(w)
    wide = isa_all.startswith(("avx512", "amx"))
    for weight in (c24, prune.pack_sparse(c24)):
        assert prune.prefer_sparse(weight, 512, 1) is wide
        assert prune.prefer_sparse(weight, 8, 1) is (isa_all != "scalar")
    packed = prune.pack_sparse(csr)
    assert packed.layout == ("csr slices" if wide else "csr")
    assert prune.prefer_sparse(packed, 8, 1) is (isa_all != "scalar")
    assert prune.prefer_sparse(packed, 64, 1) is wide


@pytest.mark.parametrize("threads", [1, 2])
def test_prefer_sparse_rules_for_csr_slices(isa, threads, rng):
    """CSR slices, by density: <= 10 % batch 1-512, <= 20 % 1-64, <= 50 % 2-8,
    on AVX-512 levels only (their kernel); the packed layout depends on the
    level active when packing, the rule on the level active now."""
    if not any(i.startswith(("avx512", "amx")) for i in ISAS):
        pytest.skip("CSR slices are packed under an AVX-512 level only; this CPU has none")
    wide_isa = next(i for i in ISAS if i.startswith(("avx512", "amx")))
    expect = {  # density: batches that prefer it
        0.05: {1, 2, 8, 9, 64, 65, 512},
        0.1: {1, 2, 8, 9, 64, 65, 512},
        0.2: {1, 2, 8, 9, 64},
        0.4: {2, 8},
        0.5: {2, 8},
        0.6: set(),
    }
    for density, batches in expect.items():
        w = np.zeros((40, 100), np.float32)
        w.reshape(-1)[: round(density * w.size)] = 1
        with slimgrad.use_isa(wide_isa):
            packed = prune.pack_sparse(to_csr(w))
        assert packed.layout == "csr slices" and packed.density == pytest.approx(density)
        for batch in (0, 1, 2, 8, 9, 64, 65, 512, 513):
            wanted = batch in batches and isa.startswith(("avx512", "amx"))
            assert prune.prefer_sparse(packed, batch, threads) is wanted, (density, batch)


@pytest.mark.parametrize("threads", [2, 3])
def test_prefer_sparse_rules_threaded(isa, threads):
    """2:4 at >= 2 threads, by weight size: 384x384 (below 2^18 entries),
    1536x384 (MiniLM's FFN), 4096x4096 (above 4M)."""
    simd = isa in ("avx2", "avx512")
    wide = isa == "avx512"
    expect = {  # batch: (384x384, 1536x384, 4096x4096)
        1: (simd, False, simd),
        2: (simd, simd, simd),
        8: (simd, simd, simd),
        9: (simd, simd, simd),
        64: (simd, simd, simd),
        65: (False, False, wide),
        512: (False, False, wide),
        513: (False, False, False),
        0: (False, False, False),
    }
    # prefer_sparse reads only the format and the shape of a Compressed24:
    # zero-strided views stand for the large weights.
    weights = [
        Compressed24(np.broadcast_to(np.float32(1), (o, i // 2)), np.zeros(1, np.uint8))
        for o, i in ((384, 384), (1536, 384), (4096, 4096))
    ]
    for batch, wanted in expect.items():
        got = tuple(prune.prefer_sparse(c, batch, threads) for c in weights)
        assert got == wanted, (batch, got, wanted)
    with slimgrad.num_threads(threads):  # the default: slimgrad's thread count
        assert prune.prefer_sparse(weights[1], 1) is False
    with slimgrad.num_threads(1):
        assert prune.prefer_sparse(weights[1], 1) is simd
    # packed into 2:4 slices under AVX-512, batch 1 wins on every size
    packed = prune.pack_sparse(compress_24(np.ones((1536, 384), np.float32)))
    assert packed.layout == ("2:4 slices" if simd else "2:4")
    assert prune.prefer_sparse(packed, 1, threads) is wide
    for batch, wanted in expect.items():
        if batch != 1:
            assert prune.prefer_sparse(packed, batch, threads) is wanted[1], batch


def test_pack_sparse_is_checked_once_and_immutable(rng):
    w = rng.standard_normal((5, 16)).astype(np.float32)
    c24 = compress_24(w)
    with slimgrad.use_isa("scalar"):  # copies, not slices
        packed = prune.pack_sparse(c24)
    assert packed.format == packed.layout == "2:4" and packed.shape == (5, 16)
    assert packed.nbytes == c24.nbytes
    assert "2:4" in repr(packed)
    for a, b in zip(packed.arrays, c24, strict=True):
        np.testing.assert_array_equal(a, b)
        assert not a.flags.writeable
        with pytest.raises(ValueError):
            a.setflags(write=True)  # an immutable buffer: the checked structure cannot change
    # cache-line aligned copies (the batch <= 8 kernels' 16-value loads; the
    # allocator returns a freed block of the same size on glibc)
    for w_ in (w, rng.standard_normal((384, 1536)).astype(np.float32)):
        for a in prune.pack_sparse(compress_24(w_)).arrays:  # either layout
            assert a.ctypes.data % 64 == 0
    c24.values[0, 0] = 7.0  # the caller's arrays stay theirs: the packed copy is a snapshot
    assert packed.arrays[0][0, 0] != 7.0
    x = rng.standard_normal((2, 3, 16)).astype(np.float32)
    y = sparse_matmul(x, packed)
    assert y.shape == (2, 3, 5)
    np.testing.assert_array_equal(y.reshape(6, 5), sparse_matmul(x.reshape(6, 16), packed))
    xs = np.asfortranarray(x.reshape(6, 16))  # a strided x is copied, same result
    np.testing.assert_array_equal(sparse_matmul(xs, packed), y.reshape(6, 5))


@pytest.mark.parametrize("cases", [_bad_24_cases, _bad_csr_cases], ids=["2:4", "csr"])
def test_pack_sparse_bad_input_raises_and_changes_nothing(cases, rng):
    x, bad = cases(rng)
    for (_, weight), error, name in bad:
        if name == "x" or not isinstance(weight, tuple):
            continue  # a bad x or a non-weight: below / the TypeError case
        before = [a.copy() for a in weight]
        with pytest.raises(error, match=name):
            prune.pack_sparse(weight)
        for a, b in zip(before, weight, strict=True):
            np.testing.assert_array_equal(a, b)
    good = bad[-1][0][1] if cases is _bad_csr_cases else bad[0][0][1]
    packed = prune.pack_sparse(good)
    before = x.copy()
    with pytest.raises(TypeError, match="x"):
        sparse_matmul(x.astype(np.float64), packed)
    with pytest.raises(ValueError, match="x"):
        sparse_matmul(x[:, :-4].copy(), packed)
    with pytest.raises(TypeError, match="x"):
        sparse_matmul(x.tolist(), packed)
    np.testing.assert_array_equal(x, before)
    with pytest.raises(TypeError, match="weight"):
        prune.pack_sparse(np.ones((4, 4), np.float32))


@pytest.mark.parametrize("fmt", ["2:4", "csr"])
def test_linear_with_sparse_weight(fmt, isa, rng):
    from slimgrad import nn

    layer = nn.Linear(64, 24, seed=3)
    w = layer.weight
    if fmt == "2:4":
        w *= prune.nm_mask(w, 2, 4)
    else:
        w[rng.random(w.shape) < 0.95] = 0
    for batch in (1, 5, 700):
        x = rng.standard_normal((batch, 64)).astype(np.float32)
        dense = layer.forward(x)
        prune.sparse_linear(layer, fmt)
        assert f"product={fmt}" in repr(layer)
        np.testing.assert_allclose(layer.forward(x), dense, rtol=1e-5, atol=1e-5)
        prune.sparse_linear(layer, None)
    # the product really is used where prefer_sparse says so
    calls = []
    layer.set_product(lambda x: calls.append(x.shape) or np.zeros((*x.shape[:-1], 24), np.float32))
    y = layer.forward(np.ones((2, 64), np.float32))
    np.testing.assert_array_equal(y, np.broadcast_to(layer.bias, (2, 24)))
    assert calls == [(2, 64)]


def test_sparse_linear_refuses_and_changes_nothing():
    from slimgrad import nn

    layer = nn.Linear(16, 4)
    before = layer.weight.copy()
    with pytest.raises(ValueError, match="2:4"):
        prune.sparse_linear(layer, "2:4")
    with pytest.raises(ValueError, match="fmt"):
        prune.sparse_linear(layer, "bsr")
    assert layer._product is None
    np.testing.assert_array_equal(layer.weight, before)
    with pytest.raises(TypeError, match="float32"):
        prune.sparse_linear(nn.Linear(16, 4, dtype=np.float64), "csr")
    with pytest.raises(TypeError, match="layer"):
        prune.sparse_linear(object(), "csr")
    with pytest.raises(TypeError, match="product"):
        layer.set_product(3)


@pytest.mark.parametrize("byte", [0, 5, 9, 11])  # in the 8-byte words and in the tail
@pytest.mark.parametrize("nibble", range(16))
def test_every_position_pair_checked(byte, nibble, rng):
    w = rng.standard_normal((6, 16)).astype(np.float32)
    values, positions = compress_24(w)
    positions = positions.copy()
    positions[byte] = (positions[byte] & 0xF0) | nibble
    x = rng.standard_normal((2, 16)).astype(np.float32)
    if (nibble & 3) < (nibble >> 2):
        _check(
            sparse_matmul(x, Compressed24(values, positions)), x, decompress_24(values, positions)
        )
    else:
        with pytest.raises(ValueError, match="positions"):
            sparse_matmul(x, Compressed24(values, positions))
