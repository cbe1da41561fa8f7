"""feature_loss against float64 NumPy and torch; the vector exp of the distill kernels."""

from __future__ import annotations

import numpy as np
import pytest
from slimgrad import _core
from slimgrad.distill import feature_loss
from test_distill import DTYPES, EXP_RTOL, GRAD_ATOL, LOSS_RTOL


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("n", [0, 1, 7, 8, 9, 17, 8191, 8193, 100_003])
def test_feature_loss_matches_reference(isa, threads, dtype, n, rng):
    s = rng.standard_normal(n).astype(dtype)
    t = rng.standard_normal(n).astype(dtype)
    loss, grad = feature_loss(s, t)
    d = s.astype(np.float64) - t
    if n == 0:
        assert np.isnan(loss) and grad.shape == (0,)
        return
    assert loss == pytest.approx(np.mean(d * d), rel=LOSS_RTOL[dtype] * 10)
    np.testing.assert_allclose(grad, 2 * d / n, rtol=GRAD_ATOL[dtype] * 2, atol=0)


def test_feature_loss_matches_torch_and_checks_inputs(rng):
    torch = pytest.importorskip("torch")
    s = rng.standard_normal((8, 16)).astype(np.float32)
    t = rng.standard_normal((8, 16)).astype(np.float32)
    ts = torch.tensor(s, requires_grad=True)
    ref = torch.nn.functional.mse_loss(ts, torch.tensor(t))
    ref.backward()
    loss, grad = feature_loss(s, t)
    assert loss == pytest.approx(ref.item(), rel=1e-6)
    np.testing.assert_allclose(grad, ts.grad.numpy(), rtol=1e-6, atol=0)
    with pytest.raises(
        ValueError, match=r"^teacher_feat: expected float32 C-contiguous array of shape \(8, 16\)"
    ):
        feature_loss(s, t[:4].copy())
    with pytest.raises(TypeError, match=r"^student_feat: expected float32 or float64"):
        feature_loss(s.astype(np.float16), t)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_vector_exp_error_and_special_values(isa, dtype):
    lo, hi = (-87.3, 88.0) if dtype == np.float32 else (-708.0, 709.0)
    x = np.linspace(lo, hi, 200_001).astype(dtype)
    x = np.concatenate([x, np.array([0.0, -1e-30, 1e-30, 0.5, -0.5], dtype)])
    out = np.empty_like(x)
    _core.distill.exp(x, out)
    expected = np.exp(x.astype(np.float64))
    rel = np.abs(out - expected) / expected
    assert rel.max() <= EXP_RTOL[dtype]
    special = np.array([-np.inf, np.nan, -1e4, 0.0], dtype)
    out = np.empty_like(special)
    _core.distill.exp(special, out)
    assert out[0] == 0 and np.isnan(out[1]) and out[2] == 0 and out[3] == 1
