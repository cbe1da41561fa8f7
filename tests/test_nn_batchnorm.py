"""BatchNorm1d against torch, a float64 NumPy reference and finite
differences; fixed-order statistics (identical for any thread count)."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import check_finite_differences, run_everywhere
from slimgrad import _core, nn

DTYPES = [np.float32, np.float64]
# Outputs are O(1) after normalization; float32 loses a few roundings in the
# coefficients and the FMA, float64 a few ulps.
RTOL = {np.float32: 2e-5, np.float64: 1e-12}
ATOL = {np.float32: 2e-5, np.float64: 1e-12}
FD_RTOL = 1e-6  # central differences in float64, step 1e-6
# (n, c) and (n, c, l) shapes: channel tails around the vector widths, l tails.
SHAPES = [(2, 1), (5, 3), (17, 8), (9, 17), (64, 33), (3, 4, 1), (4, 3, 7), (6, 5, 17), (2, 9, 33)]


# torch on one thread for these tiny tensors (see conftest.torch_single_thread).
pytestmark = pytest.mark.usefixtures("torch_single_thread")


def reference_forward(x, weight, bias, eps, mean=None, var=None):
    x64 = x.astype(np.float64)
    axes = (0,) if x.ndim == 2 else (0, 2)
    if mean is None:
        mean = x64.mean(axis=axes)
        var = x64.var(axis=axes)
    shape = (1, -1) if x.ndim == 2 else (1, -1, 1)
    xhat = (x64 - mean.reshape(shape)) / np.sqrt(var.reshape(shape) + eps)
    return xhat * weight.astype(np.float64).reshape(shape) + bias.astype(np.float64).reshape(shape)


def make(shape, dtype, rng, **kwargs):
    bn = nn.BatchNorm1d(shape[1], dtype=dtype, **kwargs)
    if bn.affine:
        bn.weight[...] = rng.uniform(0.5, 1.5, shape[1])
        bn.bias[...] = rng.standard_normal(shape[1])
    return bn


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_forward_matches_float64_reference(isa, threads, dtype, shape, rng):
    x = (rng.standard_normal(shape) * 3 + 10).astype(
        dtype
    )  # offset mean: tests the two-pass variance
    bn = make(shape, dtype, rng)
    y = bn.forward(x)
    np.testing.assert_allclose(
        y, reference_forward(x, bn.weight, bn.bias, bn.eps), rtol=RTOL[dtype], atol=ATOL[dtype]
    )
    bn.eval()
    y = bn.forward(x)
    ref = reference_forward(
        x,
        bn.weight,
        bn.bias,
        bn.eps,
        bn.running_mean.astype(np.float64),
        bn.running_var.astype(np.float64),
    )
    np.testing.assert_allclose(y, ref, rtol=RTOL[dtype], atol=ATOL[dtype])


@pytest.mark.parametrize("shape", [(2048, 3), (64, 2, 33)], ids=str)
def test_variance_stable_far_from_zero(isa, threads, shape, rng):
    # Mean 1e6, standard deviation 1 and an outlier first row: summing x and
    # x^2 in double would lose ~12 digits here (the variance off by ~1e-4);
    # the per-block shift by a value of the block loses at most log10 of the
    # block's count.
    x = rng.standard_normal(shape) + 1e6
    x[0] += 1e3
    bn = make(shape, np.float64, rng, momentum=1.0)
    y = bn.forward(x)
    axes = (0,) if x.ndim == 2 else (0, 2)
    np.testing.assert_allclose(bn.running_mean, x.mean(axis=axes), rtol=1e-13, atol=0)
    np.testing.assert_allclose(bn.running_var, x.var(axis=axes, ddof=1), rtol=1e-9, atol=0)
    np.testing.assert_allclose(
        y, reference_forward(x, bn.weight, bn.bias, bn.eps), rtol=1e-9, atol=1e-9
    )


@pytest.mark.parametrize("shape", [(9, 3), (2048, 3), (64, 3, 33)], ids=str)
def test_nan_in_a_channel_spreads_like_torch(shape, rng):
    # A NaN makes its channel's mean, variance and outputs NaN (torch's
    # behaviour); the other channels are unaffected. One block and several.
    x = rng.standard_normal(shape).astype(np.float32)
    x[shape[0] // 2, 1] = np.nan
    bn = make(shape, np.float32, rng)
    y = bn.forward(x)
    assert np.isnan(bn.running_mean[1]) and np.isnan(bn.running_var[1])
    assert np.isnan(y[:, 1]).all()
    assert np.isfinite(bn.running_mean[[0, 2]]).all() and np.isfinite(bn.running_var[[0, 2]]).all()
    assert np.isfinite(y[:, [0, 2]]).all()


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("shape", [(8, 5), (33, 17), (4, 3, 9), (16, 12, 5)], ids=str)
@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"momentum": None},
        {"affine": False},
        {"track_running_stats": False},
        {"momentum": 0.5, "eps": 1e-3},
    ],
    ids=["default", "cumulative", "no-affine", "no-running", "momentum-eps"],
)
def test_matches_torch_over_several_steps(dtype, shape, kwargs, rng):
    torch = pytest.importorskip("torch")
    tdtype = torch.float32 if dtype == np.float32 else torch.float64
    bn = make(shape, dtype, rng, **kwargs)
    tb = torch.nn.BatchNorm1d(shape[1], dtype=tdtype, **kwargs)
    if bn.affine:
        with torch.no_grad():
            tb.weight.copy_(torch.from_numpy(bn.weight))
            tb.bias.copy_(torch.from_numpy(bn.bias))
    for step in range(4):
        if step == 3:
            bn.eval()
            tb.eval()
        x = (rng.standard_normal(shape) * (step + 1) + step).astype(dtype)
        g = rng.standard_normal(shape).astype(dtype)
        y = bn.forward(x)
        gi = bn.backward(g)
        tx = torch.from_numpy(x).requires_grad_()
        if tb.affine:
            tb.zero_grad()
        ty = tb(tx)
        ty.backward(torch.from_numpy(g))
        tol = {"rtol": RTOL[dtype], "atol": ATOL[dtype]}
        np.testing.assert_allclose(y, ty.detach().numpy(), **tol)
        np.testing.assert_allclose(gi, tx.grad.numpy(), **tol)
        if bn.affine:
            gw, gb = bn.gradients()["weight"], bn.gradients()["bias"]
            scale = float(np.abs(g).sum(axis=(0, 2) if len(shape) == 3 else 0).max())
            np.testing.assert_allclose(
                gw, tb.weight.grad.numpy(), rtol=RTOL[dtype], atol=ATOL[dtype] * scale
            )
            np.testing.assert_allclose(
                gb, tb.bias.grad.numpy(), rtol=RTOL[dtype], atol=ATOL[dtype] * scale
            )
        if bn.track_running_stats:
            np.testing.assert_allclose(bn.running_mean, tb.running_mean.numpy(), **tol)
            np.testing.assert_allclose(bn.running_var, tb.running_var.numpy(), **tol)
            assert int(bn.num_batches_tracked) == int(tb.num_batches_tracked)
    sd = bn.state_dict()
    assert set(sd) == set(tb.state_dict())


@pytest.mark.parametrize("shape", [(6, 3), (4, 2, 3)], ids=str)
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_backward_matches_finite_differences(isa, shape, training, rng):
    bn = make(shape, np.float64, rng)
    bn.running_mean[...] = rng.standard_normal(shape[1])
    bn.running_var[...] = rng.uniform(0.5, 2.0, shape[1])
    bn.train(training)
    check_finite_differences(bn, rng.standard_normal(shape), rng, tol=FD_RTOL)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("shape", [(3000, 37), (40, 3001), (257, 6, 40)], ids=str)
def test_identical_for_any_thread_count(dtype, shape, rng):
    x = (rng.standard_normal(shape) + 3).astype(dtype)
    g = rng.standard_normal(shape).astype(dtype)

    def run():
        bn = nn.BatchNorm1d(shape[1], dtype=dtype)
        y = bn.forward(x)
        gi = bn.backward(g)
        return y, gi, bn.running_mean.copy(), bn.running_var.copy(), bn.gradients()["weight"].copy()

    results = run_everywhere(run)
    isas = {name for name, _ in results}
    for name in isas:
        for k, v in results.items():
            if k[0] == name:
                for a, b in zip(v, results[(name, 1)]):
                    np.testing.assert_array_equal(a, b)
    # Across ISAs only the rounding differs.
    ref = results[("scalar", 1)]
    for v in results.values():
        for a, b in zip(v, ref):
            np.testing.assert_allclose(a, b, rtol=RTOL[dtype], atol=ATOL[dtype] * 10)


def test_batch_of_one_raises_like_torch():
    bn = nn.BatchNorm1d(3)
    for shape in [(1, 3), (1, 3, 1)]:
        n = shape[0]
        with pytest.raises(
            ValueError,
            match=rf"Expected more than 1 value per channel when training, got input size \({n}, 3",
        ):
            bn.forward(np.zeros(shape, np.float32))
    assert int(bn.num_batches_tracked) == 0
    np.testing.assert_array_equal(bn.running_var, 1.0)
    bn.eval()
    assert bn.forward(np.ones((1, 3), np.float32)).shape == (1, 3)  # eval uses running stats


def test_empty_batch_leaves_running_stats():
    bn = nn.BatchNorm1d(4)
    y = bn.forward(np.zeros((0, 4), np.float32))
    assert y.shape == (0, 4)
    np.testing.assert_array_equal(bn.running_mean, 0.0)
    np.testing.assert_array_equal(bn.running_var, 1.0)
    assert bn.backward(np.zeros((0, 4), np.float32)).shape == (0, 4)


def test_bad_inputs_raise_naming_the_argument():
    bn = nn.BatchNorm1d(4)
    rm = bn.running_mean.copy()
    with pytest.raises(
        ValueError, match=r"x: expected a 2-D \(N, 4\) or 3-D \(N, 4, L\) array, got shape \(8, 5\)"
    ):
        bn.forward(np.zeros((8, 5), np.float32))
    with pytest.raises(
        ValueError,
        match=r"x: expected a 2-D \(N, 4\) or 3-D \(N, 4, L\) array, got shape \(8, 4, 2, 2\)",
    ):
        bn.forward(np.zeros((8, 4, 2, 2), np.float32))
    with pytest.raises(
        TypeError, match=r"x: expected a float32 ndarray, got float64 array of shape \(8, 4\)"
    ):
        bn.forward(np.zeros((8, 4)))
    np.testing.assert_array_equal(bn.running_mean, rm)
    assert int(bn.num_batches_tracked) == 0
    bn.forward(np.ones((8, 4), np.float32))
    with pytest.raises(
        ValueError,
        match=r"grad_out: expected shape \(8, 4\) \(the forward output's\), got \(8, 3\)",
    ):
        bn.backward(np.zeros((8, 3), np.float32))
    x = np.zeros((8, 4), np.float32)
    y = np.zeros((8, 4), np.float32)
    sm, si = np.zeros(4), np.zeros(4)
    with pytest.raises(
        TypeError, match=r"weight: expected float32 C-contiguous array of shape \(4,\), got float64"
    ):
        _core.nn.batch_norm_forward(x, y, np.ones(4), None, None, None, sm, si, True, 0.1, 1e-5)
    with pytest.raises(
        ValueError,
        match=r"running_var: expected float32 C-contiguous array of shape \(4,\), "
        r"got float32 array of shape \(3,\)",
    ):
        _core.nn.batch_norm_forward(
            x,
            y,
            None,
            None,
            np.zeros(4, np.float32),
            np.zeros(3, np.float32),
            sm,
            si,
            True,
            0.1,
            1e-5,
        )
    with pytest.raises(
        TypeError,
        match=r"save_mean: expected float64 C-contiguous array of shape \(4,\), got float32",
    ):
        _core.nn.batch_norm_forward(
            x, y, None, None, None, None, sm.astype(np.float32), si, True, 0.1, 1e-5
        )
    with pytest.raises(ValueError, match="eps: expected a positive number, got 0.0"):
        _core.nn.batch_norm_forward(x, y, None, None, None, None, sm, si, True, 0.1, 0.0)
    with pytest.raises(ValueError, match="num_features: expected an int >= 0, got -1"):
        nn.BatchNorm1d(-1)
    with pytest.raises(TypeError, match="dtype: expected float32 or float64, got"):
        nn.BatchNorm1d(3, dtype=np.int32)


def test_running_stats_in_state_dict_roundtrip(rng):
    bn = make((16, 5), np.float32, rng)
    for _ in range(3):
        bn.forward(rng.standard_normal((16, 5)).astype(np.float32))
    state = bn.state_dict()
    assert set(state) == {"weight", "bias", "running_mean", "running_var", "num_batches_tracked"}
    other = nn.BatchNorm1d(5)
    other.load_state_dict(state)
    for k, v in other.state_dict().items():
        np.testing.assert_array_equal(v, state[k])
    assert int(other.num_batches_tracked) == 3
