"""The bfloat16 GEMM and Muon's bfloat16 Newton-Schulz iteration (cpp/src/bf16_gemm.cpp).

Numeric policy under test: every output element is the same float32 sum,
in the same order, on every ISA level (scalar, avx2, avx512, avx512_vnni,
avx512_bf16's vdpbf16ps) and thread count: k in pairs, the odd element's
product first, each product added with one rounding. So the ISAs and thread
counts are compared bit for bit, the order itself against a Python
emulation, the values against float64 NumPy within the float32 summation
bound, and the optimizer against torch.optim.Muon over 100 steps. Level amx
(AMX tiles, tdpbf16ps) sums in the hardware's own order: the same bits for
any thread count and layout, the same float64 bound, other bits than the
other levels.
"""

from __future__ import annotations

import numpy as np
import pytest
import slimgrad
from slimgrad import _core
from slimgrad.optim._muon import NS_COEFFICIENTS, newton_schulz_

ml_dtypes = pytest.importorskip("ml_dtypes")
BF16 = ml_dtypes.bfloat16
U = 2.0**-24  # float32 unit roundoff

# (m, k, n): empty, one, the AVX-512 tile 12 x 32 and the 16-pair packing
# block +-1, odd k (a half pair), k over one 192-pair block, large odd.
SHAPES = [
    (0, 0, 0),
    (0, 5, 3),
    (3, 0, 4),
    (1, 1, 1),
    (11, 31, 31),
    (12, 32, 32),
    (13, 33, 33),
    (4, 2, 16),
    (25, 65, 97),
    (37, 801, 45),
    (101, 385, 67),
]


# The levels that share the documented order (amx has its own, see above).
ORDERED_ISAS = [name for name in slimgrad.available_isas() if name != "amx"]
AMX = "amx" in slimgrad.available_isas()


def bf16(rng, shape, scale=1.0):
    return (rng.standard_normal(shape) * scale).astype(BF16)


def f64(a):
    return np.asarray(a, np.float64)


def matmul(a, b, trans_b, lower=False):
    return _core.optim.bf16_matmul(a, b, trans_b=trans_b, lower=lower)


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("trans_b", [True, False], ids=["nt", "nn"])
def test_gemm_against_float64_within_summation_bound(rng, isa_all, threads, shape, trans_b):
    m, k, n = shape
    a = bf16(rng, (m, k))
    b = bf16(rng, (n, k) if trans_b else (k, n))
    bm = f64(b).T if trans_b else f64(b)
    want = f64(a) @ bm
    got = matmul(a, b, trans_b)
    assert got.dtype == np.float32 and got.shape == (m, n)
    # products of two bfloat16 are exact in float32: only the k additions round
    bound = 1.01 * k * U * (np.abs(f64(a)) @ np.abs(bm)) + 1e-30
    assert np.all(np.abs(got - want) <= bound)
    if k == 0:
        assert np.all(got == 0.0)


@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_gemm_every_isa_and_thread_count_same_bits(rng, shape):
    m, k, n = shape
    a = bf16(rng, (m, k))
    b = bf16(rng, (n, k))
    bn = np.ascontiguousarray(b.T)
    for group in (ORDERED_ISAS, ["amx"] if AMX else []):  # amx: the same bits among its own runs
        base = None
        for name in group:
            for t in (1, 2):
                with slimgrad.use_isa(name), slimgrad.num_threads(t):
                    nt, nn = matmul(a, b, True), matmul(a, bn, False)
                base = nt if base is None else base
                np.testing.assert_array_equal(nt, base, err_msg=f"{name} {t} nt")
                np.testing.assert_array_equal(nn, base, err_msg=f"{name} {t} nn")


def emulate(a, b):
    """The documented order in Python: acc = fma(a odd, b odd, acc), then the
    even element, one float32 rounding each (a bfloat16 product is exact in
    float64 and float32, and the float64 sum of a float32 and such a product
    of similar magnitude is exact, so rounding it once is the fma)."""
    m, k = a.shape
    n = b.shape[0]
    out = np.zeros((m, n), np.float32)
    for i in range(m):
        for j in range(n):
            acc = np.float32(0.0)
            for kk in range(0, k, 2):
                if kk + 1 < k:
                    acc = np.float32(float(acc) + float(a[i, kk + 1]) * float(b[j, kk + 1]))
                acc = np.float32(float(acc) + float(a[i, kk]) * float(b[j, kk]))
            out[i, j] = acc
    return out


def test_gemm_summation_order_is_the_documented_one(rng, isa_all):
    a = bf16(rng, (5, 41))
    b = bf16(rng, (7, 41))
    want = emulate(a, b)
    if isa_all == "amx":  # the tiles' own order: not this one (the docs say so)
        a, b = bf16(rng, (64, 384)), bf16(rng, (64, 384))
        assert not np.array_equal(matmul(a, b, True), emulate(a, b))
        return
    np.testing.assert_array_equal(matmul(a, b, True), want)
    # and another order really differs somewhere (the test can fail)
    other = (f64(a) @ f64(b).T).astype(np.float32)
    assert not np.array_equal(other, want)


@pytest.mark.parametrize("n", [1, 12, 13, 32, 33, 77])
def test_gemm_lower_is_the_lower_triangle(rng, isa_all, n):
    x = bf16(rng, (n, 50))
    full = matmul(x, x, True)
    low = matmul(x, x, True, lower=True)
    np.testing.assert_array_equal(low, np.tril(full))


def test_gemm_bad_input(rng):
    a = bf16(rng, (4, 6))
    with pytest.raises(ValueError, match="b: expected \\(n, k\\) with k = 6"):
        matmul(a, bf16(rng, (3, 5)), True)
    with pytest.raises(ValueError, match="b: expected \\(k, n\\) with k = 6"):
        matmul(a, bf16(rng, (5, 3)), False)
    with pytest.raises(TypeError, match="a"):
        matmul(np.zeros((4, 6), np.float32), a, True)
    with pytest.raises(ValueError, match="a: expected a 2-D"):
        matmul(bf16(rng, (24,)), a, True)
    with pytest.raises(ValueError, match="lower: needs a square"):
        matmul(a, bf16(rng, (3, 6)), True, lower=True)


# ------------------------------------------------------- Newton-Schulz
NS_SHAPES = [(1, 1), (1, 7), (7, 1), (13, 40), (40, 13), (33, 97), (97, 33), (64, 64), (130, 131)]


def ns_input(rng, shape):
    w = rng.standard_normal(shape).astype(np.float32)
    w /= np.linalg.norm(w)
    return w.astype(BF16).astype(np.float32)


def ns(works, steps=5):
    _core.optim.muon_newton_schulz(works, coefficients=list(NS_COEFFICIENTS), steps=steps)


def test_ns_every_isa_and_thread_count_same_bits(rng):
    ws = [ns_input(rng, s) for s in NS_SHAPES]
    for group in (ORDERED_ISAS, ["amx"] if AMX else []):  # amx: the same bits among its own runs
        base = None
        for name in group:
            for t in (1, 2):
                with slimgrad.use_isa(name), slimgrad.num_threads(t):
                    batch = [w.copy() for w in ws]
                    ns(batch)  # one matrix per thread
                    single = [w.copy() for w in ws]
                    for w in single:  # one matrix: the threads share its products
                        ns([w])
                base = batch if base is None else base
                for x, y, z in zip(batch, single, base):
                    np.testing.assert_array_equal(x, z, err_msg=f"{name} {t}")
                    np.testing.assert_array_equal(y, z, err_msg=f"{name} {t} single")


@pytest.mark.parametrize("shape", NS_SHAPES, ids=str)
def test_ns_matches_numpy_bf16_emulation(rng, isa, shape):
    """Against newton_schulz_(round_bf16=True): NumPy's float32 BLAS products,
    rounded to bfloat16 at the same points. Only the float32 summation order
    differs, so single bfloat16 roundings may flip (one bf16 ulp, 2^-8
    relative) and then propagate; the rest agrees."""
    w = ns_input(rng, shape)
    want = newton_schulz_(w.copy(), NS_COEFFICIENTS, 5, round_bf16=True)
    got = w.copy()
    ns([got])
    assert np.all(got == got.astype(BF16).astype(np.float32))  # bfloat16 values
    err = np.abs(f64(got) - want).max() / max(np.abs(want).max(), 1e-30)
    assert err < 2e-2
    assert np.mean(got == want) > 0.5


def test_ns_orthogonalizes(rng):
    w = ns_input(rng, (96, 160))
    ns([w])
    s = np.linalg.svd(f64(w), compute_uv=False)
    assert 0.5 < s.min() and s.max() < 1.25


def test_ns_zero_steps_and_empty_list(rng):
    w = ns_input(rng, (5, 9))
    before = w.copy()
    ns([w], steps=0)
    np.testing.assert_array_equal(w, before)
    ns([])
    ns([np.zeros((0, 4), np.float32), np.zeros((3, 0), np.float32)])


def test_ns_bad_input_names_the_array_and_modifies_nothing(rng):
    good = ns_input(rng, (6, 9))
    before = good.copy()
    cases = [
        ([good, np.zeros(9, np.float32)], ValueError, r"works\[1\]: expected a 2-D"),
        ([good, np.zeros((3, 3))], TypeError, r"works\[1\]"),
        ([good, np.zeros((6, 9), np.float32)[:, ::2]], (TypeError, ValueError), r"works\[1\]"),
        ([good, good], ValueError, r"works\[0\]|works\[1\]"),
    ]
    for works, exc, match in cases:
        with pytest.raises(exc, match=match):
            ns(works)
        np.testing.assert_array_equal(good, before)
    with pytest.raises(ValueError, match="coefficients: expected 3 values"):
        _core.optim.muon_newton_schulz([good], coefficients=[1.0, 2.0], steps=5)
    with pytest.raises(ValueError, match="steps: expected an int >= 0"):
        _core.optim.muon_newton_schulz([good], coefficients=list(NS_COEFFICIENTS), steps=-1)
    with pytest.raises(ValueError, match="coefficients"):
        _core.optim.muon_newton_schulz([good], coefficients=[1.0, float("nan"), 2.0], steps=5)
    np.testing.assert_array_equal(good, before)


# ------------------------------------------------------------ vs torch
def test_muon_vs_torch_100_steps_minilm_like_shapes(rng):
    """slimgrad.optim.Muon (bfloat16 NS, the default) against torch.optim.Muon
    over 100 steps on MiniLM's matrix shapes scaled down (384 -> 96). Bound:
    max |ours - torch| / max |torch| < 2e-3 and below half of torch's own
    distance from the float32 iteration (measured: ours 5.5e-4 to 9.7e-4,
    torch vs float32 1.7e-3 to 2.9e-3; single bfloat16 roundings flip between
    the two GEMMs' summation orders, as with the earlier NumPy products)."""
    torch = pytest.importorskip("torch")
    if not hasattr(torch.optim, "Muon"):
        pytest.skip("torch.optim.Muon needs torch >= 2.9")
    from slimgrad.optim import Muon

    shapes = [(96, 96), (384, 96), (96, 384)]
    p0 = [(rng.standard_normal(s) * 0.05).astype(np.float32) for s in shapes]
    grads = [[rng.standard_normal(s).astype(np.float32) * 1e-2 for s in shapes] for _ in range(100)]

    def run(**kw):
        ps = [p.copy() for p in p0]
        opt = Muon(ps, lr=0.02, **kw)
        with slimgrad.num_threads(2):
            for step in grads:
                opt.step(list(step))
        return ps

    mine, f32 = run(), run(ns_dtype="float32")
    theirs = [torch.nn.Parameter(torch.from_numpy(p.copy())) for p in p0]
    topt = torch.optim.Muon(theirs, lr=0.02)
    for step in grads:
        for t, g in zip(theirs, step):
            t.grad = torch.from_numpy(g)
        topt.step()
    for p, q, t in zip(mine, f32, theirs):
        want = t.detach().numpy().astype(np.float64)
        err = np.abs(f64(p) - want).max() / np.abs(want).max()
        noise = np.abs(f64(q) - want).max() / np.abs(want).max()
        assert 1e-4 < noise  # the premise: torch's bfloat16 iteration really rounds
        assert err < 2e-3 and err < 0.5 * noise
