"""kd_loss against float64 NumPy, torch autograd and finite differences (feature_loss: test_distill_feature.py)."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import run_everywhere
from slimgrad.distill import feature_loss, kd_loss

DTYPES = [np.float32, np.float64]
# Loss: float32 exponentials (2 ulp) summed in float32 lanes within 512-logit
# chunks, chunk sums in float64; float64: a few ulp of the float64 reference.
LOSS_RTOL = {np.float32: 3e-6, np.float64: 1e-13}
# Gradient, relative to the largest coefficient (alpha*T*kl_scale + ...):
# each element is a difference of probabilities computed to a few ulp.
GRAD_ATOL = {np.float32: 1e-6, np.float64: 1e-14}
# Measured max relative error of the vector exp (documented in kernels_distill_simd.hpp).
EXP_RTOL = {np.float32: 2.4e-7, np.float64: 4e-16}
CLASSES = [1, 3, 7, 8, 9, 15, 16, 17, 511, 512, 513, 1031, 4097]
TEMPERATURES = [1.0, 2.0, 8.0]
ALPHAS = [0.0, 0.5, 1.0]
REDUCTIONS = ["batchmean", "mean", "sum"]


def _lse(x):
    m = x.max(axis=1, keepdims=True)
    return m + np.log(np.exp(x - m).sum(axis=1, keepdims=True))


def _scales(reduction, b, v):
    return {"batchmean": (1 / b, 1 / b), "mean": (1 / (b * v), 1 / b), "sum": (1.0, 1.0)}[reduction]


def reference(s, t, y, temperature, alpha, reduction="batchmean", idx=None):
    """Float64 loss and gradient written from the definition (dense or top-k teacher)."""
    s = s.astype(np.float64)
    t = t.astype(np.float64)
    b, v = s.shape
    kl_scale, ce_scale = _scales(reduction, b, v)
    log_ps = s / temperature - _lse(s / temperature)
    log_pt = t / temperature - _lse(t / temperature)
    pt = np.exp(log_pt)
    log_ps_t = log_ps if idx is None else np.take_along_axis(log_ps, idx, axis=1)
    # A class with p_t == 0 (a masked -inf teacher logit) contributes 0: 0 log 0 = 0,
    # also where log_ps is -inf too (-inf - -inf is NaN, never used).
    with np.errstate(invalid="ignore"):
        diff = log_pt - log_ps_t
    kl_rows = np.multiply(pt, diff, out=np.zeros_like(pt), where=pt > 0).sum(axis=1)
    if idx is None:
        pt_full = pt
    else:
        pt_full = np.zeros_like(s)
        np.put_along_axis(pt_full, idx, pt, axis=1)
    loss, grad = 0.0, np.zeros_like(s)
    if alpha > 0:
        loss += alpha * temperature**2 * kl_scale * kl_rows.sum()
        grad += alpha * temperature * kl_scale * (np.exp(log_ps) - pt_full)
    if alpha < 1:
        log_q = s - _lse(s)
        rows = np.arange(b)
        loss += (1 - alpha) * ce_scale * -log_q[rows, y].sum()
        onehot = np.zeros_like(s)
        onehot[rows, y] = 1
        grad += (1 - alpha) * ce_scale * (np.exp(log_q) - onehot)
    return loss, grad


def _coef(temperature, alpha, reduction, b, v):
    kl_scale, ce_scale = _scales(reduction, b, v)
    return alpha * temperature * kl_scale + (1 - alpha) * ce_scale


def _data(rng, b, v, dtype, scale=3.0):
    s = (rng.standard_normal((b, v)) * scale).astype(dtype)
    t = (rng.standard_normal((b, v)) * scale).astype(dtype)
    y = rng.integers(0, v, b)
    return s, t, y


def _check(s, t, y, temperature, alpha, reduction="batchmean", idx=None, **kw):
    dtype = s.dtype.type
    loss, grad = kd_loss(
        s,
        t,
        y,
        temperature=temperature,
        alpha=alpha,
        reduction=reduction,
        teacher_indices=idx,
        **kw,
    )
    ref_loss, ref_grad = reference(s, t, y, temperature, alpha, reduction, idx)
    assert grad.dtype == s.dtype and grad.shape == s.shape
    # The float64 reference itself forms s/T - lse(s/T): it loses the ulps of
    # |s/T| (5000 ulps for logits of 1e4 at T=2), more than our float64 does.
    mag = (
        max(1.0, float(np.abs(s[np.isfinite(s)]).max(initial=0)) / temperature)
        if dtype == np.float64
        else 1.0
    )
    assert loss == pytest.approx(ref_loss, rel=LOSS_RTOL[dtype] * mag, abs=LOSS_RTOL[dtype] * mag)
    tol = GRAD_ATOL[dtype] * _coef(temperature, alpha, reduction, *s.shape) * mag
    np.testing.assert_allclose(grad, ref_grad, rtol=0, atol=tol)
    return loss, grad


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("temperature", TEMPERATURES)
@pytest.mark.parametrize("alpha", ALPHAS)
def test_kd_loss_matches_reference(isa, threads, dtype, temperature, alpha, rng):
    for v in CLASSES:
        s, t, y = _data(rng, 3, v, dtype)
        _check(s, t, y, temperature, alpha)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_kd_loss_reductions(isa, dtype, reduction, rng):
    s, t, y = _data(rng, 6, 37, dtype)
    for temperature in (1.0, 3.0):
        for alpha in ALPHAS:
            _check(s, t, y, temperature, alpha, reduction)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("temperature", TEMPERATURES)
def test_kd_loss_extreme_logits(isa, dtype, temperature, rng):
    # +-1e4: every naive exp overflows; the max-shifted form must stay finite.
    for v in (2, 9, 513):
        s, t, y = _data(rng, 4, v, dtype)
        s = np.where(s > 0, 1e4, -1e4).astype(dtype)
        t = np.where(t > 0, 1e4, -1e4).astype(dtype)
        s[0, :] = t[0, :]  # a row with KL == 0 exactly
        for alpha in ALPHAS:
            loss, grad = _check(s, t, y, temperature, alpha)
            assert np.isfinite(loss) and np.isfinite(grad).all()


def test_kd_loss_large_batch_chunks_and_rescaling(isa, threads, rng):
    # Maxima that grow chunk after chunk exercise the online rescaling.
    v = 5000
    ramp = np.linspace(-30, 30, v)
    s = (ramp + rng.standard_normal((4, v))).astype(np.float64)
    t = (ramp[::-1] * 0.5 + rng.standard_normal((4, v))).astype(np.float64)
    y = rng.integers(0, v, 4)
    for temperature in (1.0, 2.5):
        _check(s, t, y, temperature, 0.5)
        _check(s.astype(np.float32), t.astype(np.float32), y, temperature, 0.5)


@pytest.mark.parametrize("temperature", TEMPERATURES)
@pytest.mark.parametrize("alpha", ALPHAS)
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_kd_loss_matches_torch_autograd(temperature, alpha, reduction, rng):
    torch = pytest.importorskip("torch")
    import warnings

    fn = torch.nn.functional
    for scale, v in ((3.0, 10), (3.0, 1000), (1e4, 10), (1e4, 257)):
        s, t, y = _data(rng, 5, v, np.float64, scale)
        if scale > 100:
            s, t = np.where(s > 0, 1e4, -1e4), np.where(t > 0, 1e4, -1e4)
        for dtype in DTYPES:
            sd, td = s.astype(dtype), t.astype(dtype)
            ts = torch.tensor(sd, requires_grad=True)
            tt = torch.tensor(td)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # torch warns about reduction="mean"
                kl = fn.kl_div(
                    fn.log_softmax(ts / temperature, 1),
                    fn.log_softmax(tt / temperature, 1),
                    reduction=reduction,
                    log_target=True,
                )
            ce = fn.cross_entropy(
                ts, torch.tensor(y), reduction="sum" if reduction == "sum" else "mean"
            )
            (alpha * temperature**2 * kl + (1 - alpha) * ce).backward()
            expected_loss = (alpha * temperature**2 * kl + (1 - alpha) * ce).item()
            loss, grad = kd_loss(
                sd, td, y, temperature=temperature, alpha=alpha, reduction=reduction
            )
            # torch computes in the input dtype too: allow both errors.
            rtol = 4 * LOSS_RTOL[dtype]
            assert loss == pytest.approx(expected_loss, rel=rtol, abs=rtol)
            tol = 4 * GRAD_ATOL[dtype] * _coef(temperature, alpha, reduction, *s.shape)
            np.testing.assert_allclose(grad, ts.grad.numpy(), rtol=0, atol=tol)


@pytest.mark.parametrize("temperature", TEMPERATURES)
@pytest.mark.parametrize("alpha", ALPHAS)
def test_kd_loss_gradient_matches_finite_differences(temperature, alpha, rng):
    s, t, y = _data(rng, 3, 11, np.float64)
    idx = rng.permutation(11)[:5].reshape(1, 5).repeat(3, 0)
    for teacher, indices in ((t, None), (np.take_along_axis(t, idx, 1), idx)):
        _, grad = kd_loss(
            s, teacher, y, temperature=temperature, alpha=alpha, teacher_indices=indices
        )
        h = 1e-6
        numeric = np.empty_like(s)
        for i in np.ndindex(s.shape):
            sp, sm = s.copy(), s.copy()
            sp[i] += h
            sm[i] -= h
            lp = kd_loss(
                sp, teacher, y, temperature=temperature, alpha=alpha, teacher_indices=indices
            )[0]
            lm = kd_loss(
                sm, teacher, y, temperature=temperature, alpha=alpha, teacher_indices=indices
            )[0]
            numeric[i] = (lp - lm) / (2 * h)
        np.testing.assert_allclose(grad, numeric, rtol=0, atol=1e-8 * max(1.0, temperature))


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("temperature", [1.0, 3.0])
@pytest.mark.parametrize("alpha", ALPHAS)
def test_top_k_matches_reference_and_dense(isa, dtype, temperature, alpha, rng):
    b, v = 4, 600
    s, t, y = _data(rng, b, v, dtype)
    for k in (1, 7, 64, v):
        idx = np.argsort(-t, axis=1, kind="stable")[:, :k].astype(np.int64)
        vals = np.ascontiguousarray(np.take_along_axis(t, idx, axis=1))
        _check(s, vals, y, temperature, alpha, idx=idx)
        # The renormalised top-k teacher is the dense teacher whose other
        # logits are so low that their probability is 0 (exp underflows).
        dense = np.full_like(t, -1e4)
        np.put_along_axis(dense, idx, vals, axis=1)
        lk, gk = kd_loss(s, vals, y, temperature=temperature, alpha=alpha, teacher_indices=idx)
        ld, gd = kd_loss(s, dense, y, temperature=temperature, alpha=alpha)
        assert lk == pytest.approx(ld, rel=LOSS_RTOL[dtype], abs=LOSS_RTOL[dtype])
        tol = GRAD_ATOL[dtype] * _coef(temperature, alpha, "batchmean", b, v)
        np.testing.assert_allclose(gk, gd, rtol=0, atol=tol)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_identical_for_every_thread_count_and_close_across_isas(dtype, rng):
    s, t, y = _data(rng, 37, 3001, dtype)
    idx = np.argsort(-t, axis=1)[:, :20].astype(np.int64)
    vals = np.ascontiguousarray(np.take_along_axis(t, idx, axis=1))

    def run():
        return (
            kd_loss(s, t, y, temperature=2.0, alpha=0.5),
            kd_loss(s, vals, y, temperature=2.0, alpha=0.7, teacher_indices=idx),
            feature_loss(s, t),
        )

    results = run_everywhere(run)
    scalar = results[("scalar", 1)]
    for (name, _), got in results.items():
        ref = results[(name, 1)]
        for (loss, grad), (ref_loss, ref_grad), (s_loss, s_grad) in zip(got, ref, scalar):
            assert loss == ref_loss  # bit-identical for any thread count
            np.testing.assert_array_equal(grad, ref_grad)
            assert loss == pytest.approx(s_loss, rel=LOSS_RTOL[dtype])
            np.testing.assert_allclose(grad, s_grad, rtol=0, atol=GRAD_ATOL[dtype])


def test_out_and_in_place(rng):
    s, t, y = _data(rng, 5, 33, np.float32)
    loss, grad = kd_loss(s, t, y)
    out = np.full_like(s, np.nan)
    loss2, grad2 = kd_loss(s, t, y, out=out)
    assert grad2 is out and loss2 == loss
    np.testing.assert_array_equal(out, grad)
    s_copy = s.copy()
    loss3, grad3 = kd_loss(s_copy, t, y, out=s_copy)  # gradient overwrites the logits
    assert grad3 is s_copy and loss3 == loss
    np.testing.assert_array_equal(s_copy, grad)


def test_int32_labels_and_empty_batch(rng):
    s, t, y = _data(rng, 4, 10, np.float64)
    assert kd_loss(s, t, y.astype(np.int32))[0] == kd_loss(s, t, y)[0]
    e = np.zeros((0, 10))
    no = np.zeros(0, np.int64)
    assert kd_loss(e, e, no, reduction="sum")[0] == 0.0
    loss, grad = kd_loss(e, e, no)
    assert np.isnan(loss) and grad.shape == (0, 10)


def test_non_finite_logits_give_non_finite_loss(rng):
    s, t, y = _data(rng, 3, 20, np.float32)
    s[1, 4] = np.nan
    loss, grad = kd_loss(s, t, y)
    assert np.isnan(loss) and np.isnan(grad[1]).all() and np.isfinite(grad[[0, 2]]).all()


MASK_CLASSES = [1, 2, 9, 17, 513, 1031]  # 1031: whole masked 512-logit chunks first


def _masked(rng, b, v, dtype):
    """Logits with masked (-inf) teacher classes in every pattern the kernels meet."""
    s, t, y = _data(rng, b, v, dtype)
    ninf = -np.inf
    if v == 1:
        return s, t, y
    h = v // 2
    t[0, h:] = ninf  # trailing classes masked
    t[1, :h] = ninf  # leading classes masked (whole chunks when v > 1024)
    t[2, 1::3] = ninf  # scattered
    s[3, :h] = t[3, :h] = ninf  # masked in both: 0 log 0 for the teacher, p_s = 0
    y[3] = v - 1
    return s, t, y


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("temperature", [1.0, 2.0])
@pytest.mark.parametrize("alpha", [0.5, 1.0])
def test_masked_teacher_classes_contribute_zero(isa, threads, dtype, temperature, alpha, rng):
    for v in MASK_CLASSES:
        s, t, y = _masked(rng, 4, v, dtype)
        loss, grad = _check(s, t, y, temperature, alpha)
        assert np.isfinite(loss) and np.isfinite(grad).all()


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_masked_top_k_teacher_values_contribute_zero(isa, dtype, rng):
    s, t, y = _data(rng, 3, 40, dtype)
    idx = np.argsort(-t, axis=1, kind="stable")[:, :6]
    vals = np.ascontiguousarray(np.take_along_axis(t, idx, axis=1))
    vals[0, 3:] = -np.inf
    vals[1, :2] = -np.inf
    for alpha in (0.5, 1.0):
        loss, grad = _check(s, vals, y, 2.0, alpha, idx=idx)
        assert np.isfinite(loss) and np.isfinite(grad).all()


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_masked_teacher_matches_torch_kl_div(dtype, rng):
    torch = pytest.importorskip("torch")
    for v in (10, 1031):
        s, t, _ = _masked(rng, 4, v, dtype)
        # Rows 0-2 only: torch's kl_div gives NaN where both are -inf (0 * -inf),
        # a case we define as 0 (see kd_loss's Notes).
        s, t = s[:3].copy(), t[:3].copy()
        for temperature in (1.0, 2.0):
            ts = torch.tensor(s, requires_grad=True)
            ref = temperature**2 * torch.nn.functional.kl_div(
                torch.log_softmax(ts / temperature, dim=1),
                torch.softmax(torch.tensor(t) / temperature, dim=1),
                reduction="batchmean",
            )
            ref.backward()
            loss, grad = kd_loss(s, t, temperature=temperature, alpha=1.0)
            assert np.isfinite(ref.item())
            assert loss == pytest.approx(ref.item(), rel=LOSS_RTOL[dtype] * 10)
            np.testing.assert_allclose(
                grad, ts.grad.numpy(), rtol=0, atol=GRAD_ATOL[dtype] * 10 * temperature / 3
            )


def test_other_non_finite_logits_follow_the_documented_policy(isa, rng):
    # -inf student logit where the teacher has mass: p_s = 0 under p_t > 0, KL = +inf.
    s, t, y = _data(rng, 2, 9, np.float32)
    s[0, 2] = -np.inf
    loss, grad = kd_loss(s, t, y, alpha=1.0)
    assert loss == np.inf and np.isfinite(grad).all()
    for where, value in (("s", np.inf), ("t", np.inf), ("t", np.nan)):
        s, t, y = _data(rng, 3, 20, np.float32)
        (s if where == "s" else t)[1, 4] = value
        loss, grad = kd_loss(s, t, y)
        assert np.isnan(loss), (where, value)
        assert np.isfinite(grad[[0, 2]]).all()
    # A row with every teacher class masked has no teacher distribution: NaN (torch too).
    s, t, y = _data(rng, 2, 600, np.float32)
    t[1] = -np.inf
    assert np.isnan(kd_loss(s, t, y, alpha=1.0)[0])


def _strided(a):
    big = np.zeros(a.shape[:-1] + (2 * a.shape[-1],), a.dtype)
    big[..., ::2] = a
    return big[..., ::2]


READ_LAYOUTS = {
    "strided": _strided,
    "fortran": np.asfortranarray,
    "byteswapped": lambda a: a.astype(a.dtype.newbyteorder("S")),
}


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("layout", list(READ_LAYOUTS))
def test_read_only_inputs_accept_any_layout_and_byte_order(dtype, layout, rng):
    make = READ_LAYOUTS[layout]
    s, t, y = _data(rng, 5, 33, dtype)
    sv, tv = make(s), make(t)
    assert not (sv.flags.c_contiguous and sv.dtype.isnative)
    loss_ref, grad_ref = kd_loss(s, t, y, temperature=2.0)
    for args in ((sv, t), (s, tv), (sv, tv)):
        loss, grad = kd_loss(*args, y, temperature=2.0)
        assert loss == loss_ref
        np.testing.assert_array_equal(grad, grad_ref)
        assert grad.flags.c_contiguous and grad.dtype == dtype and grad.dtype.isnative
    out = np.empty_like(s)
    assert kd_loss(sv, tv, y, temperature=2.0, out=out)[1] is out
    np.testing.assert_array_equal(out, grad_ref)
    idx = np.argsort(-t, axis=1, kind="stable")[:, :4]
    vals = np.take_along_axis(t, idx, axis=1)
    ref_k = kd_loss(s, np.ascontiguousarray(vals), y, teacher_indices=idx)
    got_k = kd_loss(sv, make(vals), y, teacher_indices=idx)
    assert got_k[0] == ref_k[0]
    np.testing.assert_array_equal(got_k[1], ref_k[1])
    np.testing.assert_array_equal(sv, s)  # inputs untouched
    np.testing.assert_array_equal(tv, t)
    f_ref = feature_loss(s, t)
    for args in ((sv, t), (s, tv), (sv, tv)):
        f = feature_loss(*args)
        assert f[0] == f_ref[0]
        np.testing.assert_array_equal(f[1], f_ref[1])


def test_written_arrays_keep_the_strict_contract(rng):
    s, t, y = _data(rng, 3, 5, np.float32)
    sv = _strided(s)
    before = sv.copy()
    # student_logits passed as out is written in place: no copy, TypeError.
    with pytest.raises(TypeError, match=r"^student_logits: expected float32 or float64 C-contig"):
        kd_loss(sv, t, y, out=sv)
    with pytest.raises(TypeError, match=r"^out: expected float32 C-contiguous array of shape"):
        kd_loss(s, t, y, out=_strided(np.zeros_like(s)))
    with pytest.raises(TypeError, match=r"^student_feat: expected float32 or float64 C-contig"):
        feature_loss(sv, t, out=sv)
    with pytest.raises(TypeError, match=r"^out: expected float32 C-contiguous array of shape"):
        feature_loss(s, t, out=_strided(np.zeros_like(s)))
    np.testing.assert_array_equal(sv, before)


def _bad_kd_cases():
    f, d = np.float32, np.float64
    s = np.zeros((3, 5), f)
    idx = np.array([[0, 1], [2, 3], [4, 0]])
    return [
        (
            dict(student_logits=s.astype(d)),
            TypeError,
            "teacher_logits: expected float64 C-contiguous array of shape (3, 5), got float32 array of shape (3, 5)",  # noqa: E501
        ),
        (
            dict(student_logits=s.tolist()),
            TypeError,
            "student_logits: expected float32 or float64 C-contiguous array, got list",
        ),
        (
            dict(out=np.zeros((3, 10), f)[:, ::2]),  # written in place: strict, no copy
            TypeError,
            "out: expected float32 C-contiguous array of shape (3, 5), got non-contiguous float32 array of shape (3, 5)",  # noqa: E501
        ),
        (
            dict(student_logits=np.zeros(5, f), teacher_logits=np.zeros(5, f)),
            ValueError,
            "student_logits: expected a 2-D array (batch, classes), got float32 array of shape (5,)",  # noqa: E501
        ),
        (
            dict(student_logits=np.zeros((3, 0), f), teacher_logits=np.zeros((3, 0), f)),
            ValueError,
            "student_logits: expected at least one class, got float32 array of shape (3, 0)",
        ),
        (
            dict(teacher_logits=np.zeros((3, 4), f)),
            ValueError,
            "teacher_logits: expected float32 C-contiguous array of shape (3, 5), got float32 array of shape (3, 4)",  # noqa: E501
        ),
        (
            dict(labels=None),  # the default alpha=0.5: say how to fix it
            ValueError,
            "labels: required when alpha < 1 (alpha=0.5), got None; pass labels, or alpha=1.0 for pure distillation",  # noqa: E501
        ),
        (
            dict(labels=np.array([0, 1, 5])),
            ValueError,
            "labels: expected class indices in [0, 5), got 5 at flat position 2",
        ),
        (
            dict(labels=np.array([0, -1, 2])),
            ValueError,
            "labels: expected class indices in [0, 5), got -1 at flat position 1",
        ),
        (
            dict(labels=np.array([0, 1])),
            ValueError,
            "labels: expected int64 C-contiguous array of shape (3,), got int64 array of shape (2,)",  # noqa: E501
        ),
        (
            dict(labels=np.array([0.0, 1.0, 2.0])),
            TypeError,
            "labels: expected int64 C-contiguous array of shape (3,), got float64 array of shape (3,)",  # noqa: E501
        ),
        (dict(temperature=0.0), ValueError, "temperature: expected a finite number > 0, got 0.0"),
        (
            dict(temperature=float("inf")),
            ValueError,
            "temperature: expected a finite number > 0, got inf",
        ),
        (dict(alpha=1.5), ValueError, "alpha: expected a number in [0, 1], got 1.5"),
        (dict(alpha=float("nan")), ValueError, "alpha: expected a number in [0, 1], got nan"),
        (
            dict(reduction="avg"),
            ValueError,
            "reduction: expected 'batchmean', 'mean' or 'sum', got 'avg'",
        ),
        (
            dict(teacher_logits=np.zeros((3, 2), f), teacher_indices=idx + 5),
            ValueError,
            "teacher_indices: expected class indices in [0, 5), got 5 at flat position 0",
        ),
        (
            dict(
                teacher_logits=np.zeros((3, 2), f),
                teacher_indices=np.array([[0, 1], [2, 2], [4, 0]]),
            ),
            ValueError,
            "teacher_indices: expected distinct indices in each row, got 2 twice in row 1",
        ),
        (
            dict(teacher_logits=np.zeros((3, 2), f), teacher_indices=idx.astype(np.float64)),
            TypeError,
            "teacher_indices: expected int64 C-contiguous array of shape (3, 2), got float64 array of shape (3, 2)",  # noqa: E501
        ),
        (
            dict(teacher_logits=np.zeros((3, 6), f), teacher_indices=np.zeros((3, 6), np.int64)),
            ValueError,
            "teacher_logits: expected top-k values of shape (3, k) with 1 <= k <= 5, got float32 array of shape (3, 6)",  # noqa: E501
        ),
        (
            dict(out=np.zeros((3, 5), d)),
            TypeError,
            "out: expected float32 C-contiguous array of shape (3, 5), got float64 array of shape (3, 5)",  # noqa: E501
        ),
    ]


@pytest.mark.parametrize("case", range(len(_bad_kd_cases())))
def test_kd_loss_bad_inputs_raise_and_change_nothing(case):
    kwargs, exc, message = _bad_kd_cases()[case]
    args = dict(
        student_logits=np.ones((3, 5), np.float32),
        teacher_logits=np.ones((3, 5), np.float32),
        labels=np.array([0, 1, 4]),
        temperature=2.0,
        alpha=0.5,
        reduction="batchmean",
        teacher_indices=None,
        out=np.full((3, 5), 7.0, np.float32),
    )
    args.update(kwargs)
    before = {k: np.copy(v) for k, v in args.items() if isinstance(v, np.ndarray)}
    with pytest.raises(exc) as info:
        kd_loss(args.pop("student_logits"), args.pop("teacher_logits"), args.pop("labels"), **args)
    assert str(info.value) == message
    for k, v in before.items():
        np.testing.assert_array_equal(kwargs.get(k, v), v)
    if "out" not in kwargs:
        np.testing.assert_array_equal(args["out"], 7.0)


def test_kd_loss_read_only_or_overlapping_out_raises():
    s = np.ones((2, 3), np.float32)
    t = np.ones((2, 3), np.float32)
    y = np.array([0, 2])
    ro = np.zeros((2, 3), np.float32)
    ro.flags.writeable = False
    with pytest.raises(
        ValueError, match=r"^out: expected a writable array, got a read-only float32"
    ):
        kd_loss(s, t, y, out=ro)
    with pytest.raises(ValueError, match=r"^out: expected memory not shared with teacher_logits"):
        kd_loss(s, t, y, out=t)
    np.testing.assert_array_equal(t, 1.0)
