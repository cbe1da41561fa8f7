"""GPTQ, SparseGPT and Wanda against float64 NumPy transcriptions of the papers'
algorithms (column by column, no lazy batches), round-to-nearest and
magnitude pruning as their limiting cases, threads, and bad input."""

from __future__ import annotations

import numpy as np
import pytest
import slimgrad
from _rejects import assert_rejected_unchanged
from conftest import run_everywhere
from slimgrad import prune, quant

FLT_MIN = np.float32(np.finfo(np.float32).tiny)


def calibration(rng, rows, cols, tokens=400, correlated=True):
    """A weight and the Hessian of correlated inputs (so GPTQ has work to do)."""
    w = rng.standard_normal((rows, cols)).astype(np.float32)
    x = rng.standard_normal((tokens, cols))
    if correlated:
        x = x @ rng.standard_normal((cols, cols)) * 0.3 + x
        x[:, ::7] *= 5.0  # a few loud channels, as real activations have
    return w, x, x.T @ x


def inverse_cholesky(H, order, damp):
    """Upper U with U^T U = (H + damp mean(diag) I)^-1, in processing order."""
    Hp = H[np.ix_(order, order)].copy()
    Hp[np.diag_indices_from(Hp)] += damp * np.mean(np.diag(Hp))
    return np.linalg.cholesky(np.linalg.inv(Hp)).T


def prepared(w, H, act_order, damp):
    w = w.astype(np.float64).copy()
    H = H.copy()
    dead = np.diag(H) == 0
    H[dead, dead] = 1.0
    w[:, dead] = 0.0
    order = np.argsort(-np.diag(H), kind="stable") if act_order else np.arange(H.shape[0])
    return w, order, inverse_cholesky(H, order, damp)


def gptq_reference(w, H, bits, group_size, act_order, damp, symmetric):
    """The GPTQ algorithm column by column in float64 (float32 quantization step)."""
    W, order, U = prepared(w, H, act_order, damp)
    rows, cols = W.shape
    gs = group_size or cols
    n_groups = -(-cols // gs)
    codes = np.zeros((rows, cols), np.int32)
    scale = np.zeros((rows, n_groups), np.float32)
    zero = np.zeros((rows, n_groups), np.int32)
    qmax = 2 ** (bits - 1) - 1 if symmetric else 2**bits - 1
    qmin = -qmax if symmetric else 0
    have = set()
    for i, c in enumerate(order):
        g = c // gs
        if g not in have:  # group parameters from the group's current weights
            have.add(g)
            part = W[:, g * gs : (g + 1) * gs].astype(np.float32)
            rt = quant.quantize(part, bits, symmetric=symmetric, granularity="channel", axis=0)
            scale[:, g], zero[:, g] = rt.scale, rt.zero_point
        s, z = scale[:, g], zero[:, g].astype(np.float32)
        x = W[:, c].astype(np.float32)
        with np.errstate(divide="ignore"):
            r = np.where(s < FLT_MIN, x / s, x * (np.float32(1) / s))
        t = np.clip(np.rint(r + z), qmin, qmax).astype(np.float32)
        codes[:, c] = t
        err = (W[:, c] - (s * (t - z)).astype(np.float64)) / U[i, i]
        later = order[i + 1 :]
        W[:, later] -= np.outer(err, U[i, i + 1 :])
    return codes, scale, zero


CASES = [
    # bits, group_size, act_order, symmetric, block_size, shape
    (4, 32, False, False, 16, (37, 96)),
    (4, 32, True, False, 16, (37, 96)),
    (3, 24, True, True, 40, (20, 100)),  # groups straddle blocks, a short last group
    (4, None, True, False, 128, (33, 64)),
    (8, 16, False, True, 7, (5, 50)),
    (2, 64, True, False, 1000, (70, 130)),
    (4, 24, False, False, 40, (20, 100)),  # contiguous groups straddle blocks
    (4, None, False, True, 32, (9, 70)),
    (4, 16, True, False, 32, (40, 200)),  # many scattered groups: U's first rows
]


def core_gptq(w, H, bits, gs, act_order, damp, symmetric, block):
    """The C++ loop on Eigen's float64 factor (quant.gptq factors with NumPy)."""
    core = slimgrad._core.gptq
    order, dead, S = core.factor(H, act_order, damp)
    rows, cols = w.shape
    g = gs or cols
    top = core.inverse_top(S, core.top_rows(order, cols, g))
    codes = np.zeros((rows, cols), np.int8 if symmetric else np.uint8)
    scale = np.ones((rows, -(-cols // g)), np.float32)
    zero = np.zeros(scale.shape, np.int32)
    core.quantize(w, order, dead, S, top, bits, symmetric, g, block, codes, scale, zero)
    return codes.astype(np.int32), scale, zero


@pytest.mark.parametrize("bits,gs,act_order,symmetric,block,shape", CASES)
def test_gptq_equals_the_column_by_column_reference(
    rng, bits, gs, act_order, symmetric, block, shape
):
    w, _, H = calibration(rng, *shape)
    codes, scale, zero = gptq_reference(w, H, bits, gs, act_order, 0.01, symmetric)
    qt = quant.gptq(w, H, bits, gs, act_order, 0.01, symmetric, block_size=block)
    np.testing.assert_array_equal(qt.codes().astype(np.int32), codes)
    np.testing.assert_array_equal(qt.scale.reshape(scale.shape[0], -1), scale)
    if not symmetric:
        np.testing.assert_array_equal(qt.zero_point.reshape(zero.shape[0], -1), zero)
    # the C++ loop on Eigen's factor (the C++ API's path): the same
    c64, s64, z64 = core_gptq(w, H, bits, gs, act_order, 0.01, symmetric, block)
    np.testing.assert_array_equal(c64, codes)
    np.testing.assert_array_equal(s64, scale)
    np.testing.assert_array_equal(z64, zero)


@pytest.mark.parametrize("act_order", [False, True])
@pytest.mark.parametrize("cols", [1, 7, 64, 65, 200])
def test_lapack_factor_matches_eigen_and_numpy(rng, act_order, cols):
    from slimgrad._second_order import hessian_factor, inverse_top

    _, _, H = calibration(rng, 3, cols)
    H[2 % cols, :] = H[:, 2 % cols] = 0.0  # a dead column
    f = hessian_factor(H, act_order, 0.01)
    order, dead, S, v = f
    e_order, e_dead, e_S = slimgrad._core.gptq.factor(H, act_order, 0.01)
    np.testing.assert_array_equal(order, e_order)
    np.testing.assert_array_equal(dead, e_dead)
    _, ref_order, ref_U = prepared(np.zeros((1, cols)), H, act_order, 0.01)
    np.testing.assert_array_equal(order, ref_order)
    ref_S = np.linalg.inv(ref_U)  # S S^T = H, U = S^-1
    for got in (S, e_S):
        np.testing.assert_allclose(got, ref_S, rtol=1e-9, atol=1e-12 * np.abs(ref_S).max())
        assert np.all(np.tril(got, -1) == 0)
    # the first rows of U = S^-1, in NumPy and in Eigen
    for rows in (0, 1, min(cols, 70), cols):
        for top in (inverse_top(f, rows), slimgrad._core.gptq.inverse_top(e_S, rows)):
            assert top.shape == (rows, cols)
            np.testing.assert_allclose(
                top, ref_U[:rows], rtol=1e-9, atol=1e-12 * np.abs(ref_U).max()
            )


def test_factor_scratch_is_kept_only_up_to_its_limit(rng, monkeypatch):
    # Small factors reuse the thread's buffer (no fresh pages per call); a
    # factor above the limit gets its own, so a thread does not hold it after.
    from slimgrad import _second_order as so

    h = rng.standard_normal((40, 40))
    h = h @ h.T + 40 * np.eye(40)
    expected = so.hessian_factor(h, True, 0.01)[2]  # S
    monkeypatch.setattr(so._SCRATCH, "buf", None, raising=False)
    first = so._scratch(100).buf
    assert so._scratch(50).buf is first
    monkeypatch.setattr(so, "_KEEP_DOUBLES", 1000)
    big = so._scratch(5000).buf
    assert big is not first and so._SCRATCH.buf is first
    np.testing.assert_array_equal(so.hessian_factor(h, True, 0.01)[2], expected)


def test_hessian_check_is_allclose_and_finite(rng):
    check = slimgrad._core.gptq.check_hessian  # 0 symmetric, 1 non-finite, 2 asymmetric
    for n in (0, 1, 5, 63, 64, 65, 200):
        h = rng.standard_normal((n, n))
        h = h + h.T
        assert check(h, 1e-5, 1e-8) == 0
        if n < 2:
            continue
        i, j = rng.choice(n, 2, replace=False)
        atol = 1e-3 * np.abs(h).max()
        for step, rtol, atol_scale in (
            (3e-5, 1e-5, 0),
            (1e-6, 1e-5, 0),
            (2 * atol, 0, 1e-3),
            (atol / 2, 0, 1e-3),
        ):
            g = h.copy()
            g[i, j] += step * (abs(g[i, j]) if atol_scale == 0 else 1)
            want = np.allclose(g, g.T, rtol=rtol, atol=atol_scale * np.abs(g).max())
            assert want == (step in (1e-6, atol / 2))
            assert check(g, rtol, atol_scale) == (0 if want else 2)
            assert check(g.T.copy(), rtol, atol_scale) == (0 if want else 2)
        corners = ((n - 1, 0), (0, n - 1))  # lower and upper triangle, blocks apart for n > 64
        for bad in (np.nan, np.inf, -np.inf):
            for at in ((j, i), (i, j), (i, i), (n - 1, n - 1), *corners):
                g = h.copy()
                g[at] = bad
                assert check(g, 1e-5, 1e-8) == 1
                g[at[::-1]] = bad  # symmetric, still not finite
                assert check(g, 1e-5, 1e-8) == 1


def test_eigen_fallback_gives_the_same_codes(rng, monkeypatch):
    # when NumPy's factorization refuses H, Eigen's factor (and the leaf inverses
    # computed from it) takes over
    from slimgrad import _second_order as so

    w, _, H = calibration(rng, 20, 152)
    expected = quant.gptq(w, H, 3, 16)
    expected_keep = prune.sparsegpt(w, H, n=2, m=4)[1]

    def refuse(*a):
        raise np.linalg.LinAlgError("refused")

    monkeypatch.setattr(so, "_cholesky", refuse)
    got = quant.gptq(w, H, 3, 16)
    np.testing.assert_array_equal(got.codes(), expected.codes())
    np.testing.assert_array_equal(got.scale, expected.scale)
    np.testing.assert_array_equal(prune.sparsegpt(w, H, n=2, m=4)[1], expected_keep)


def test_factor_refuses_what_is_not_positive_definite():
    from slimgrad._second_order import hessian_factor

    with pytest.raises(ValueError, match="H: not positive definite"):
        hessian_factor(-np.eye(3), False, 0.0)
    with pytest.raises(ValueError, match="H: not positive definite"):
        hessian_factor(-np.eye(300), True, 0.0)  # past the recursion's leaf size


def test_block_size_changes_nothing(rng):
    # every sum over earlier columns is one FMA chain in order, whatever the blocks
    w, _, H = calibration(rng, 40, 96)
    for act_order in (False, True):
        a = quant.gptq(w, H, 4, 32, act_order, block_size=8).dequantize()
        for block in (1, 13, 96, 500):
            got = quant.gptq(w, H, 4, 32, act_order, block_size=block).dequantize()
            np.testing.assert_array_equal(got, a)
    p = prune.sparsegpt(w, H, n=2, m=4, block_size=8)[0]
    np.testing.assert_array_equal(prune.sparsegpt(w, H, n=2, m=4, block_size=96)[0], p)


@pytest.mark.parametrize("symmetric", [False, True])
@pytest.mark.parametrize("gs", [32, 20, None])
def test_diagonal_hessian_is_round_to_nearest(rng, symmetric, gs):
    w, _, H = calibration(rng, 23, 80)
    D = np.diag(np.diag(H))
    qt = quant.gptq(w, D, 4, gs, act_order=True, symmetric=symmetric)
    if gs:
        rt = quant.quantize(w, 4, symmetric=symmetric, granularity="group", group_size=gs)
    else:
        rt = quant.quantize(w, 4, symmetric=symmetric, granularity="channel", axis=0)
    np.testing.assert_array_equal(qt.codes(), rt.codes())
    np.testing.assert_array_equal(qt.scale, rt.scale)
    np.testing.assert_array_equal(qt.zero_point, rt.zero_point)


def test_subnormal_scales_take_the_dividing_path(rng):
    # a row of tiny weights gets a subnormal scale: the quantizer divides there
    w, _, H = calibration(rng, 20, 64)
    w[3] *= np.float32(1e-39)
    w[7, :32] = np.float32(1e-44)
    D = np.diag(np.diag(H))
    qt = quant.gptq(w, D, 4, 32, act_order=True)
    rt = quant.quantize(w, 4, symmetric=False, granularity="group", group_size=32)
    assert (rt.scale < np.finfo(np.float32).tiny).any()
    np.testing.assert_array_equal(qt.codes(), rt.codes())
    np.testing.assert_array_equal(qt.scale, rt.scale)


def test_gptq_beats_round_to_nearest_on_the_layer_output(rng):
    w, x, H = calibration(rng, 64, 128)
    y = x @ w.T
    rtn = quant.quantize(w, 4, symmetric=False, granularity="group", group_size=32).dequantize()
    gq = quant.gptq(w, H, 4, 32).dequantize()
    e_rtn, e_gptq = (np.linalg.norm(x @ q.T - y) for q in (rtn, gq))
    assert e_gptq < 0.8 * e_rtn


def test_dead_inputs_are_zeroed(rng):
    w, x, _ = calibration(rng, 10, 32)
    x[:, 5] = 0.0
    qt = quant.gptq(w, x.T @ x, 4, 16)
    assert np.all(qt.dequantize()[:, 5] == 0.0)


@pytest.mark.parametrize("rows", [1, 7, 8, 9, 15, 17, 150])  # vector tails, several row chunks
def test_threads_and_isas_give_the_same_result(rng, rows):
    w, _, H = calibration(rng, rows, 96)
    out = run_everywhere(
        lambda: (
            quant.gptq(w, H, 4, 32).data.copy(),
            quant.gptq(w, H, 3, 24, act_order=False, block_size=40).data.copy(),
            prune.sparsegpt(w, H, 0.5)[0],
            prune.sparsegpt(w, H, n=2, m=4)[0],
        )
    )
    first = next(iter(out.values()))
    for got in out.values():
        for a, b in zip(got, first, strict=True):
            np.testing.assert_array_equal(a, b)


def test_result_is_an_ordinary_quantized_tensor(rng, tmp_path):
    w, x, H = calibration(rng, 16, 64)
    qt = quant.gptq(w, H, 4, 32)
    np.testing.assert_allclose(
        quant.matmul(x.astype(np.float32), qt), x @ qt.dequantize().T, rtol=1e-4, atol=1e-3
    )
    quant.save(tmp_path / "q.safetensors", {"w": qt})
    back = quant.load(tmp_path / "q.safetensors")["w"]
    np.testing.assert_array_equal(back.dequantize(), qt.dequantize())


def test_empty_and_single(rng):
    qt = quant.gptq(np.zeros((0, 8), np.float32), np.eye(8), 4, 4)
    assert qt.shape == (0, 8)
    w = np.array([[0.5]], np.float32)
    assert quant.gptq(w, np.eye(1), 8, None).dequantize()[0, 0] == pytest.approx(0.5, rel=1e-2)


# -- SparseGPT -------------------------------------------------------------------
def sparsegpt_reference(w, H, sparsity, n, m, damp, block):
    W, order, U = prepared(w, H, False, damp)
    rows, cols = W.shape
    keep = np.ones((rows, cols), bool)
    d = np.diag(U)

    def prune_smallest(r, cols_, k):
        score = W[r, cols_] ** 2 / d[cols_] ** 2
        idx = np.lexsort((cols_, score))[:k]  # smallest score, then lower column
        keep[r, np.asarray(cols_)[idx]] = False

    for i1 in range(0, cols, block):
        i2 = min(cols, i1 + block)
        if not m:
            for r in range(rows):
                prune_smallest(r, np.arange(i1, i2), int(np.rint(sparsity * (i2 - i1))))
        for i in range(i1, i2):
            if m and (i - i1) % m == 0:
                for r in range(rows):
                    prune_smallest(r, np.arange(i, i + m), m - n)
            q = np.where(keep[:, i], W[:, i], 0.0)
            err = (W[:, i] - q) / U[i, i]
            W[:, i] = q
            W[:, i + 1 :] -= np.outer(err, U[i, i + 1 :])
    return W.astype(np.float32), keep


@pytest.mark.parametrize(
    "sparsity,n,m,block",
    [(0.5, None, None, 32), (0.7, None, None, 50), (None, 2, 4, 32), (None, 1, 8, 16)],
)
def test_sparsegpt_equals_the_reference(rng, sparsity, n, m, block):
    w, _, H = calibration(rng, 21, 96)
    out, keep = prune.sparsegpt(w, H, sparsity, n=n, m=m, block_size=block)
    ref_w, ref_keep = sparsegpt_reference(w, H, sparsity, n, m, 0.01, block)
    np.testing.assert_array_equal(keep, ref_keep)
    np.testing.assert_allclose(out, ref_w, rtol=1e-5, atol=1e-5)
    assert np.all(out[~keep] == 0.0)


def test_sparsegpt_patterns_and_counts(rng):
    w, x, H = calibration(rng, 40, 128)
    _, keep = prune.sparsegpt(w, H, n=2, m=4)
    assert np.all(keep.reshape(40, -1, 4).sum(-1) == 2)
    _, keep = prune.sparsegpt(w, H, 0.5, block_size=64)
    assert np.all(keep.reshape(40, 2, 64).sum(-1) == 32)
    # and it beats magnitude pruning on the layer output
    y = x @ w.T
    out, _ = prune.sparsegpt(w, H, 0.5)
    mag = w * prune.magnitude_mask(w, 0.5)
    assert np.linalg.norm(x @ out.T - y) < 0.9 * np.linalg.norm(x @ mag.T - y)


def test_sparsegpt_with_identity_hessian_is_magnitude_pruning_per_row(rng):
    w = rng.standard_normal((9, 64)).astype(np.float32)
    out, keep = prune.sparsegpt(w, np.eye(64), 0.25, block_size=64)
    for r in range(9):
        np.testing.assert_array_equal(keep[r], prune.magnitude_mask(w[r], 0.25))
    np.testing.assert_array_equal(out, w * keep)


# -- Wanda ---------------------------------------------------------------------
def test_wanda_with_uniform_norms_is_magnitude_pruning_per_row(rng):
    w = rng.standard_normal((12, 40)).astype(np.float32)
    mask = prune.wanda_mask(w, np.full(40, 2.0, np.float32), 0.5)
    for r in range(12):
        np.testing.assert_array_equal(mask[r], prune.magnitude_mask(w[r], 0.5))
    np.testing.assert_array_equal(
        prune.wanda_mask(w, np.ones(40), n=2, m=4), prune.nm_mask(w, 2, 4)
    )


def test_wanda_ranks_by_weight_times_norm(rng):
    w = rng.standard_normal((6, 32)).astype(np.float32)
    norms = rng.uniform(0.1, 10, 32).astype(np.float32)
    mask = prune.wanda_mask(w, norms, 0.75)
    score = np.abs(w) * norms
    for r in range(6):
        kept = np.sort(np.argsort(score[r], kind="stable")[24:])
        np.testing.assert_array_equal(np.flatnonzero(mask[r]), kept)


@pytest.mark.parametrize("act_order, group_size", [(True, 16), (False, None)])
def test_gptq_shared_equals_gptq_per_weight_with_one_factor(
    rng, monkeypatch, act_order, group_size
):
    w, _, H = calibration(rng, 12, 48)
    ws = [w, rng.standard_normal((5, 48)).astype(np.float32), np.zeros((0, 48), np.float32)]
    expected = [quant.gptq(v, H, 3, group_size, act_order) for v in ws]
    import slimgrad.quant._gptq as module

    calls = []
    real = module.hessian_factor
    monkeypatch.setattr(module, "hessian_factor", lambda *a: calls.append(a) or real(*a))
    got = quant.gptq_shared(ws, H, bits=3, group_size=group_size, act_order=act_order)
    assert len(calls) == 1
    for a, b in zip(got, expected, strict=True):
        np.testing.assert_array_equal(a.codes(), b.codes())
        np.testing.assert_array_equal(a.scale, b.scale)
        np.testing.assert_array_equal(a.zero_point, b.zero_point)


def test_reuse_factors_factors_an_equal_hessian_once(rng, monkeypatch):
    # q, k, v (equal H, a copy each as calibration gives them), then another
    # H, then the first H changed in place: 3 factors, the results bit for bit
    # those of the calls without the block; SparseGPT (no act-order) and a
    # different damp get factors of their own.
    from slimgrad import _second_order as so

    w, _, H = calibration(rng, 12, 48)
    H2 = H + np.diag(rng.uniform(0.5, 1.0, 48))
    calls_of = [
        lambda h: quant.gptq(w, h, 4, 16, True),
        lambda h: quant.gptq(w, h, 3, None, True),
        lambda h: quant.gptq(w, h, 4, 16, True, 0.05),
        lambda h: prune.sparsegpt(w, h, 0.5),
    ]
    hs = [H.copy(), H.copy(), H.copy(), H2, H2.copy()]
    expected = [[f(h) for f in calls_of[:2]] for h in hs]
    expected_other = [calls_of[2](H), calls_of[3](H)]
    factors = []
    real = so._factor
    monkeypatch.setattr(so, "_factor", lambda *a: factors.append(a) or real(*a))
    with quant.reuse_factors():
        got = [[f(h) for f in calls_of[:2]] for h in hs]
        assert len(factors) == 2  # H (x3), H2 (x2): one factor each
        H_changed = hs[4]
        H_changed[3, 3] *= 2.0  # in place: equal to nothing factored before
        changed = quant.gptq(w, H_changed, 4, 16, True)
        assert len(factors) == 3
        other = [calls_of[2](H), calls_of[3](H)]
        assert len(factors) == 5
    np.testing.assert_array_equal(changed.codes(), quant.gptq(w, H_changed, 4, 16, True).codes())
    for a, b in zip([q for row in got for q in row], [q for row in expected for q in row]):
        np.testing.assert_array_equal(a.codes(), b.codes())
        np.testing.assert_array_equal(a.scale, b.scale)
    np.testing.assert_array_equal(other[0].codes(), expected_other[0].codes())
    np.testing.assert_array_equal(other[1][0], expected_other[1][0])
    np.testing.assert_array_equal(other[1][1], expected_other[1][1])
    assert so._REUSED.get() is None  # the block's memory is gone with it


def test_gptq_shared_rejects_bad_input_naming_the_weight(rng):
    w, _, H = calibration(rng, 4, 8)
    bad = w.copy()
    bad[1, 2] = np.inf
    cases = [
        (lambda: quant.gptq_shared(w, H), TypeError, "weights: expected a list or tuple"),
        (lambda: quant.gptq_shared([], H), ValueError, "weights: expected at least one"),
        (lambda: quant.gptq_shared([w, bad], H), ValueError, "weights[1]: non-finite value inf"),
        (lambda: quant.gptq_shared([w, w[:, :4]], H), ValueError, "for weights[1] of shape (4, 4)"),
        (lambda: quant.gptq_shared([w, None], H), TypeError, "weights[1]: expected a floating"),
        (
            lambda: quant.gptq_shared([w], H, bitz=4),
            TypeError,
            "unexpected keyword argument 'bitz'",
        ),
        (lambda: quant.gptq_shared([w], H, bits=9), ValueError, "bits: expected 2..8, got 9"),
    ]
    assert_rejected_unchanged(cases, w, H, bad)


# -- bad input -------------------------------------------------------------------
def test_bad_input_raises_and_changes_nothing(rng):
    w, _, H = calibration(rng, 8, 16)
    cases = [
        (lambda: quant.gptq(w, H[:8, :8]), ValueError, "H: expected shape (16, 16)"),
        (lambda: quant.gptq(w[0], H), ValueError, "w: expected a 2-d array"),
        (
            lambda: quant.gptq(w.astype(np.int32), H),
            TypeError,
            "w: expected a floating-point ndarray",
        ),
        (lambda: quant.gptq(w, H, bits=9), ValueError, "bits: expected 2..8"),
        (lambda: quant.gptq(w, H, group_size=0), ValueError, "group_size: expected an int >= 1"),
        (lambda: quant.gptq(w, H, damp=-1), ValueError, "damp: expected a number in [0.0"),
        (
            lambda: quant.gptq(w, H + np.triu(np.ones_like(H), 1)),
            ValueError,
            "H: expected a symmetric",
        ),
        (lambda: quant.gptq(w, -np.eye(16), damp=0.0), ValueError, "H: not positive definite"),
        (
            lambda: prune.sparsegpt(w, H, 0.5, n=2, m=4),
            ValueError,
            "give either sparsity or n and m",
        ),
        (lambda: prune.sparsegpt(w, H, n=2, m=3), ValueError, "m: must divide"),
        (lambda: prune.sparsegpt(w, H, 1.5), ValueError, "sparsity: expected a number in [0, 1]"),
        (
            lambda: prune.wanda_mask(w, np.ones(15), 0.5),
            ValueError,
            "act_norms: expected shape (16,)",
        ),
        (
            lambda: prune.wanda_mask(w, -np.ones(16), 0.5),
            ValueError,
            "act_norms: expected finite values >= 0",
        ),
    ]
    bad = w.copy()
    bad[3, 4] = np.nan
    cases.append(
        (lambda: quant.gptq(bad, H), ValueError, "w: non-finite value nan at index (3, 4)")
    )
    bad_h = H.copy()
    bad_h[5, 2] = bad_h[2, 5] = np.inf  # symmetric: named as non-finite, the first in row order
    cases += [
        (lambda: quant.gptq(w, bad_h), ValueError, "H: non-finite value inf at index (2, 5)"),
        (lambda: prune.sparsegpt(w, bad_h, 0.5), ValueError, "H: non-finite value inf"),
    ]
    assert_rejected_unchanged(cases, w, H, bad_h)


@pytest.mark.parametrize("n", [0, 1, 7, 8, 9, 65, 301])
def test_permute_symmetric_equals_numpy_take(rng, n):
    H = rng.standard_normal((n, n))
    order = rng.permutation(n).astype(np.int64)
    H0 = H.copy()

    def run():
        out = np.full((n, n), np.nan)
        slimgrad._core.gptq.permute_symmetric(H, order, out)
        return out

    for out in run_everywhere(run).values():
        np.testing.assert_array_equal(out, H[np.ix_(order, order)])
    np.testing.assert_array_equal(H, H0)


def test_permute_symmetric_rejects_bad_buffers(rng):
    H, order = rng.standard_normal((6, 6)), np.arange(6)[::-1].copy()
    out = np.zeros((6, 6))
    permute = slimgrad._core.gptq.permute_symmetric
    with pytest.raises(ValueError, match="order: expected a permutation"):
        permute(H, np.array([0, 1, 2, 3, 4, 4]), out)
    with pytest.raises(ValueError, match=r"order: expected .*shape \(6,\)"):
        permute(H, order[:5], out)
    with pytest.raises(ValueError, match=r"out: expected .*shape \(6, 6\)"):
        permute(H, order, out[:5])
    with pytest.raises(ValueError, match="H: expected a square array"):
        permute(H[:5], order, out)
    with pytest.raises(ValueError, match="out: must not share memory with H"):
        permute(H, order, H)
    assert not out.any()


def test_core_binding_rechecks_buffers(rng):
    w, _, H = calibration(rng, 4, 8)
    order, dead, S = slimgrad._core.gptq.factor(H, False, 0.01)
    top = np.zeros((0, 8))
    scale, zero = np.ones((4, 2), np.float32), np.zeros((4, 2), np.int32)
    core = slimgrad._core.gptq.quantize
    with pytest.raises(ValueError, match="codes: expected uint8"):
        core(w, order, dead, S, top, 4, False, 4, 128, np.zeros((4, 7), np.uint8), scale, zero)
    codes = np.zeros((4, 8), np.uint8)
    with pytest.raises(ValueError, match="order: expected a permutation"):
        core(w, np.zeros(8, np.int64), dead, S, top, 4, False, 4, 128, codes, scale, zero)
    with pytest.raises(ValueError, match="order: expected a permutation"):
        core(w, order + 1, dead, S, top, 4, False, 4, 128, codes, scale, zero)
    with pytest.raises(TypeError, match="S: expected float64"):
        core(w, order, dead, S.astype(np.float32), top, 4, False, 4, 128, codes, scale, zero)
    with pytest.raises(ValueError, match=r"S: expected .*shape \(8, 8\)"):
        core(w, order, dead, S[:4], top, 4, False, 4, 128, codes, scale, zero)
    # a group scattered by the order needs the first rows of U = S^-1
    scattered = np.array([0, 4, 1, 5, 2, 6, 3, 7], np.int64)
    assert slimgrad._core.gptq.top_rows(scattered, 8, 4) == 1
    with pytest.raises(ValueError, match=r"top: expected .*rows >= 1"):
        core(w, scattered, dead, S, top, 4, False, 4, 128, codes, scale, zero)
    assert not codes.any()
