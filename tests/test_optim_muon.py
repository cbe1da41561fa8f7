"""Muon: kernels against NumPy references on every ISA, the optimizer against a
float64 reference of torch.optim.Muon's math and against torch itself.

torch 2.13 computes the Newton-Schulz iteration in bfloat16 on CPU (every
product and addmm rounded to bfloat16, float32 accumulation). slimgrad's
default (``ns_dtype="bfloat16"``) rounds at the same points: where the
float32 accumulation order of the GEMMs agrees (small matrices) the results
are torch's bits; otherwise single bfloat16 roundings flip and the two differ
by less than torch differs from exact arithmetic (checked below).
``ns_dtype="float32"`` is checked against the float64 reference at 2e-5.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import slimgrad
from slimgrad import _core
from slimgrad.optim import AdamW, Muon
from slimgrad.optim._muon import NS_COEFFICIENTS, newton_schulz_

ml_dtypes = pytest.importorskip("ml_dtypes")
pytestmark = pytest.mark.usefixtures("torch_single_thread", "blas_single_thread")


@pytest.fixture(scope="module")
def blas_single_thread():
    """NumPy's BLAS on one thread: its spin-waiting threads make the small
    products of these tests take seconds on an oversubscribed machine
    (results do not depend on it)."""
    threadpoolctl = pytest.importorskip("threadpoolctl")
    with threadpoolctl.threadpool_limits(1, user_api="blas"):
        yield


STEPS = 100


def rel(a, b):
    return float(np.abs(np.asarray(a, np.float64) - b).max() / np.abs(b).max())


def reference(p0, grads, *, lr=0.02, weight_decay=0.1, momentum=0.95, nesterov=True,
              coefficients=NS_COEFFICIENTS, eps=1e-7, ns_steps=5, adjust_lr_fn=None):  # fmt: skip
    """torch.optim.Muon's formulas in float64, no bfloat16."""
    p = p0.astype(np.float64)
    buf = np.zeros_like(p)
    a, b, c = coefficients
    for g in grads:
        g = g.astype(np.float64)
        buf = buf + (1 - momentum) * (g - buf)
        u = g + momentum * (buf - g) if nesterov else buf
        tall = u.shape[0] > u.shape[1]
        x = u.T if tall else u
        x = x / max(np.linalg.norm(x), eps)
        for _ in range(ns_steps):
            gram = x @ x.T
            x = a * x + (b * gram + c * gram @ gram) @ x
        x = x.T if tall else x
        rows, cols = p.shape
        if adjust_lr_fn == "match_rms_adamw":
            scale = 0.2 * math.sqrt(max(rows, cols))
        else:
            scale = math.sqrt(max(1, rows / cols))
        p = p * (1 - lr * weight_decay) - lr * scale * x
    return p


def run(p0, grads, **kw):
    p = p0.copy()
    opt = Muon([p], **kw)
    for g in grads:
        assert opt.step([g])
    return p, opt


def problem(rng, shape, steps=STEPS, dtype=np.float32):
    p0 = rng.standard_normal(shape).astype(dtype)
    return p0, [rng.standard_normal(shape).astype(dtype) for _ in range(steps)]


def bf16(x):
    return np.asarray(x, np.float32).astype(ml_dtypes.bfloat16).astype(np.float32)


# ------------------------------------------------------------------ kernels
SIZES = [0, 1, 7, 8, 9, 15, 16, 17, 33, 1000, 70001]


@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("nesterov", [True, False])
@pytest.mark.parametrize("round_bf16", [True, False])
def test_momentum_kernel_matches_numpy(isa, threads, rng, n, nesterov, round_bf16):
    g = rng.standard_normal(n).astype(np.float32)
    buf = rng.standard_normal(n).astype(np.float32)
    work = np.full(n, np.nan, np.float32)
    mu = 0.95
    # torch's lerp with its fused multiply-add, exact in float64 then rounded once
    w = np.float32(1 - mu)
    want_buf = (buf.astype(np.float64) + np.float64(w) * (g - buf).astype(np.float64)).astype(
        np.float32
    )
    coeff = np.float64(np.float32(mu) - np.float32(1))
    blend = (want_buf + coeff * (want_buf - g).astype(np.float64)).astype(np.float32)
    want = blend if nesterov else want_buf
    want = bf16(want) if round_bf16 else want
    b = buf.copy()
    sums = _core.optim.muon_momentum([g], [b], [work], momentum=mu, nesterov=nesterov,
                                     round_bf16=round_bf16)  # fmt: skip
    np.testing.assert_array_equal(b, want_buf)
    np.testing.assert_array_equal(work, want)
    assert sums[0] == pytest.approx(float(np.sum(want.astype(np.float64) ** 2)), rel=1e-5, abs=0)


@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("round_bf16", [True, False])
def test_combine_and_normalize_kernels_match_numpy(isa, threads, rng, n, round_bf16):
    out = rng.standard_normal(n).astype(np.float32)
    c = rng.standard_normal(n).astype(np.float32)
    want = np.float32(-4.775) * c + np.float32(2.0315) * out  # two products, one add
    o = out.copy()
    _core.optim.ns_combine(o, c, alpha=2.0315, beta=-4.775, round_bf16=round_bf16)
    np.testing.assert_array_equal(o, bf16(want) if round_bf16 else want)
    w = out.copy()
    _core.optim.muon_normalize([w], [3.25], round_bf16=round_bf16)
    want = out / np.float32(3.25)
    np.testing.assert_array_equal(w, bf16(want) if round_bf16 else want)


@pytest.mark.parametrize("n", SIZES)
def test_apply_kernel_matches_numpy(isa, threads, rng, n):
    p = rng.standard_normal(n).astype(np.float32)
    w = rng.standard_normal(n).astype(np.float32)
    decay, lr = 1 - 0.02 * 0.1, 0.03
    want = ((p * np.float32(decay)).astype(np.float64) + np.float64(np.float32(-lr)) * w).astype(
        np.float32
    )
    q = p.copy()
    _core.optim.muon_apply([q], [w], decay=decay, lrs=[lr])
    np.testing.assert_array_equal(q, want)


# --------------------------------------------------------- against references
@pytest.mark.parametrize("shape", [(37, 53), (53, 37), (1, 9), (9, 1), (130, 70)])
@pytest.mark.parametrize(
    "options",
    [
        {},
        {"nesterov": False, "weight_decay": 0.0},
        {"adjust_lr_fn": "match_rms_adamw", "momentum": 0.9, "lr": 0.01},
        {"ns_steps": 3, "coefficients": (2.0, -1.5, 0.5), "adjust_lr_fn": "original"},
    ],
)
def test_float32_newton_schulz_matches_float64_reference(rng, shape, options):
    p0, grads = problem(rng, shape)
    kw = {"lr": 0.02, **options}
    coefficients = kw.pop("coefficients", NS_COEFFICIENTS)
    p, _ = run(p0, grads, ns_dtype="float32", ns_coefficients=coefficients, **kw)
    want = reference(p0, grads, coefficients=coefficients, **kw)
    assert rel(p, want) < 2e-5


def test_float64_params(rng):
    p0, grads = problem(rng, (20, 30), dtype=np.float64)
    p, opt = run(p0, grads, lr=0.02, ns_dtype="float32")
    assert p.dtype == np.float64 and opt.state[0]["momentum_buffer"].dtype == np.float64
    assert rel(p, reference(p0, grads)) < 2e-5


def _torch_muon(p0, grads, **kw):
    torch = pytest.importorskip("torch")
    if not hasattr(torch.optim, "Muon"):
        pytest.skip("torch.optim.Muon needs torch >= 2.9")
    t = torch.nn.Parameter(torch.from_numpy(p0.copy()))
    opt = torch.optim.Muon([t], **kw)
    for g in grads:
        t.grad = torch.from_numpy(g)
        opt.step()
    return t.detach().numpy()


@pytest.mark.parametrize("shape", [(1, 5), (5, 1)])
def test_bfloat16_matches_torch_on_vectors(rng, shape):
    # A 1x1 Gram matrix: every product is a short dot product whose float32
    # sum agrees with torch's, so every bfloat16 rounding does and the
    # results are torch's bits. (From 2x3 on, torch's bfloat16 GEMM, oneDNN,
    # sums in another order and single roundings flip: next test.)
    p0, grads = problem(rng, shape)
    want = _torch_muon(p0, grads, lr=0.02)
    p, _ = run(p0, grads, lr=0.02)
    assert rel(p, want) < 2e-5


@pytest.mark.parametrize("shape", [(37, 53), (53, 37), (64, 96), (120, 72)])
def test_bfloat16_within_torchs_own_rounding_noise(rng, shape):
    p0, grads = problem(rng, shape)
    torch_p = _torch_muon(p0, grads, lr=0.02)
    exact = reference(p0, grads)
    p, _ = run(p0, grads, lr=0.02)
    noise = rel(torch_p, exact)  # torch's bfloat16 iteration against exact math
    assert 1e-5 < noise < 2e-3  # (the test's premise: torch really rounds)
    assert rel(p, torch_p) < noise
    assert rel(p, exact) < 1.5 * noise


# ------------------------------------------------------- ISAs and threads
def test_every_isa_and_thread_count_same_result(rng):
    p0, grads = problem(rng, (300, 250), steps=3)  # 75000 elements: 3 planner pieces
    results = {}
    for name in slimgrad.available_isas():
        for n in (1, 2):
            with slimgrad.use_isa(name), slimgrad.num_threads(n):
                results[(name, n)], _ = run(p0, grads, lr=0.02)
    base = results[("scalar", 1)]
    for key, p in results.items():
        # bfloat16 NS: the norm is rounded to bfloat16, so the ISA's lane
        # order of the sum of squares does not reach the result. Level amx
        # sums its products in AMX's own order: the same bits at any thread
        # count, within bfloat16 rounding of the others.
        if key[0] == "amx":
            np.testing.assert_array_equal(p, results[("amx", 1)], err_msg=str(key))
            np.testing.assert_allclose(p, base, rtol=0, atol=2e-2 * np.abs(base).max())
        else:
            np.testing.assert_array_equal(p, base, err_msg=str(key))


def test_float32_mode_isas_agree(rng):
    p0, grads = problem(rng, (30, 40), steps=5)
    base, _ = run(p0, grads, ns_dtype="float32")
    for name in slimgrad.available_isas():
        with slimgrad.use_isa(name):
            p, _ = run(p0, grads, ns_dtype="float32")
        np.testing.assert_allclose(p, base, rtol=0, atol=1e-6)


def test_newton_schulz_orthogonalizes(rng):
    x = rng.standard_normal((40, 60)).astype(np.float32)
    x /= np.linalg.norm(x)
    newton_schulz_(x, NS_COEFFICIENTS, 5, round_bf16=False)
    s = np.linalg.svd(x.astype(np.float64), compute_uv=False)
    assert 0.5 < s.min() and s.max() < 1.25  # Keller Jordan's US'V^T, S' ~ U(0.5, 1.5)


# -------------------------------------------------------------- behaviour
def test_half_params_step_on_master(rng):
    p0, grads = problem(rng, (16, 24), steps=10)
    want, _ = run(p0, grads, lr=0.02)
    for dt in (np.float16, ml_dtypes.bfloat16):
        p = p0.astype(dt)
        opt = Muon([p], lr=0.02)
        for g in grads:
            opt.step([g.astype(dt)])
        assert opt.state[0]["master"].dtype == np.float32
        np.testing.assert_allclose(p.astype(np.float32), want, atol=0.05)


def test_adamw_fallback_group_is_adamw(rng):
    mat = rng.standard_normal((6, 7)).astype(np.float32)
    bias = rng.standard_normal(7).astype(np.float32)
    conv = rng.standard_normal((2, 3, 4)).astype(np.float32)
    grads = [[rng.standard_normal(a.shape).astype(np.float32) for a in (mat, bias, conv)]
             for _ in range(20)]  # fmt: skip
    m, b, c = mat.copy(), bias.copy(), conv.copy()
    opt = Muon(
        [{"params": [m]},
         {"params": [b, c], "use_muon": False, "lr": 3e-3, "betas": (0.8, 0.9), "eps": 1e-8,
          "weight_decay": 0.01}],
        lr=0.02,
    )  # fmt: skip
    b2, c2 = bias.copy(), conv.copy()
    ref = AdamW([b2, c2], lr=3e-3, betas=(0.8, 0.9), eps=1e-8, weight_decay=0.01)
    for g in grads:
        opt.step(g)
        ref.step(g[1:])
    np.testing.assert_array_equal(b, b2)
    np.testing.assert_array_equal(c, c2)
    assert sorted(opt.state[1]) == ["exp_avg", "exp_avg_sq", "step"]
    assert sorted(opt.state[0]) == ["momentum_buffer", "step"]


def test_not_2d_raises_like_torch(rng):
    with pytest.raises(ValueError, match=r"params\[1\]: Muon only supports 2-D.*use_muon"):
        Muon([np.zeros((3, 4), np.float32), np.zeros(4, np.float32)])
    with pytest.raises(ValueError, match="2-D"):
        Muon({"w": np.zeros((2, 3, 4), np.float32)})


@pytest.mark.parametrize(
    "kw, match",
    [
        ({"lr": -1.0}, "lr"),
        ({"eps": 0.0}, "eps"),
        ({"ns_steps": 100}, "ns_steps"),
        ({"ns_coefficients": (1.0, 2.0)}, "ns_coefficients"),
        ({"adjust_lr_fn": "rms"}, "adjust_lr_fn"),
        ({"ns_dtype": "float16"}, "ns_dtype"),
    ],
)
def test_bad_options_raise(kw, match):
    with pytest.raises(ValueError, match=match):
        Muon([np.zeros((2, 2), np.float32)], **kw)


def test_bad_grad_raises_and_changes_nothing(rng):
    p = rng.standard_normal((5, 6)).astype(np.float32)
    q = rng.standard_normal((3, 3)).astype(np.float32)
    opt = Muon([p, q], lr=0.02)
    opt.step([np.ones_like(p), np.ones_like(q)])
    before = (p.copy(), q.copy(), opt.state_dict())
    bad_grads = [
        [np.ones_like(p), np.ones((3, 3), np.float64)],  # dtype
        [np.ones_like(p), np.ones((3, 4), np.float32)],  # shape
        [np.ones_like(p), np.full((3, 3), np.nan, np.float32)],  # non-finite
    ]
    for grads in bad_grads:
        with pytest.raises((TypeError, ValueError, FloatingPointError), match=r"grads\[1\]"):
            opt.step(grads)
        np.testing.assert_array_equal(p, before[0])
        np.testing.assert_array_equal(q, before[1])
        after = opt.state_dict()
        for k in (0, 1):
            np.testing.assert_array_equal(
                after["state"][k]["momentum_buffer"], before[2]["state"][k]["momentum_buffer"]
            )
            assert after["state"][k]["step"] == before[2]["state"][k]["step"] == 1


def test_state_dict_round_trip(rng):
    p0, grads = problem(rng, (12, 9), steps=6)
    p, opt = run(p0, grads[:3], lr=0.02, nesterov=False)
    q = p.copy()
    opt2 = Muon([q], lr=0.5)
    opt2.load_state_dict(opt.state_dict())
    assert opt2.param_groups[0]["lr"] == 0.02 and opt2.param_groups[0]["nesterov"] is False
    for g in grads[3:]:
        opt.step([g])
        opt2.step([g])
    np.testing.assert_array_equal(p, q)


def test_nonfinite_ignore_lets_nan_through_like_torch(rng):
    p = rng.standard_normal((4, 6)).astype(np.float32)
    opt = Muon([p], lr=0.02, nonfinite="ignore")
    g = np.ones_like(p)
    g[1, 2] = np.nan
    assert opt.step([g])
    assert np.isnan(p).all()


def test_several_matrices_same_bits_for_any_thread_count(rng):
    # With several threads each matrix's Newton-Schulz runs as one task.
    shapes = [(30, 20), (20, 30), (17, 17), (1, 9), (64, 40)]
    p0 = [rng.standard_normal(s).astype(np.float32) for s in shapes]
    grads = [[rng.standard_normal(s).astype(np.float32) for s in shapes] for _ in range(3)]
    out = []
    for n in (1, 2, 3):
        ps = [p.copy() for p in p0]
        opt = Muon(ps, lr=0.02)
        with slimgrad.num_threads(n):
            for g in grads:
                opt.step(g)
        out.append(ps)
    for ps in out[1:]:
        for a, b in zip(ps, out[0]):
            np.testing.assert_array_equal(a, b)
