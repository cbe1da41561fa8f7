"""AWQ scale and clip searches: never worse than plain quantization on the
calibration data (both grids hold the identity), loud channels scaled up,
uniform activations leave the weights alone, bad input refused."""

from __future__ import annotations

import numpy as np
import pytest
from _rejects import assert_rejected_unchanged
from slimgrad import quant


@pytest.fixture
def layer(rng):
    w = rng.standard_normal((48, 96)).astype(np.float32)
    x = rng.standard_normal((1500, 96))
    x[:, ::9] *= 20.0  # outlier channels, as in real activations
    return w, x, x.T @ x, np.abs(x).mean(axis=0)


def output_error(x, w, w_hat):
    return np.linalg.norm(x @ (w_hat.astype(np.float64) - w).T)


def rtn(w, gs=32):
    return quant.quantize(w, 4, symmetric=False, granularity="group", group_size=gs).dequantize()


def test_scales_lower_the_output_error_and_favour_loud_channels(layer):
    w, x, H, mean = layer
    s = quant.awq_scales(w, mean, 4, 32, H=H)
    assert s.dtype == np.float32 and s.shape == (96,)
    scaled = rtn(w * s) / s
    assert output_error(x, w, scaled) < 0.8 * output_error(x, w, rtn(w))
    loud = np.zeros(96, bool)
    loud[::9] = True
    assert s[loud].min() > s[~loud].max()


@pytest.mark.parametrize("shape", [(48, 96), (300, 64), (5, 200)])  # several candidate batches
@pytest.mark.parametrize("with_h", [True, False, "singular"])
def test_scales_are_the_float64_grid_search(rng, shape, with_h):
    rows, cols = shape
    w = rng.standard_normal(shape).astype(np.float32)
    x = rng.standard_normal((700, cols)) @ rng.standard_normal((cols, cols)) * 0.2
    x[:, ::5] *= 12.0
    if with_h == "singular":  # an input that is always zero: no Cholesky of H
        x[:, 3] = 0.0
    H, mean = x.T @ x, np.abs(x).mean(axis=0)
    h = H if with_h else np.diag(mean**2)
    errors, scales = [], []
    for k in range(20):  # the search written out in float64
        s = np.maximum(mean, 1e-4) ** (k / 20)
        s = s / np.sqrt(s.max() * s.min())
        s32 = s.astype(np.float32)
        q = quant.quantize(w * s32, 4, symmetric=False, granularity="group", group_size=32)
        d = (q.dequantize() / s32).astype(np.float64) - w
        errors.append(np.einsum("ij,jk,ik->", d, h, d))
        scales.append(s.astype(np.float32))
    got = quant.awq_scales(w, mean, 4, 32, H=H if with_h else None)
    np.testing.assert_array_equal(got, scales[int(np.argmin(errors))])


def test_diagonal_approximation_without_hessian(layer):
    w, x, _, mean = layer
    s = quant.awq_scales(w, mean, 4, 32)
    assert output_error(x, w, rtn(w * s) / s) <= output_error(x, w, rtn(w))


def test_uniform_activations_give_unit_scales(layer, rng):
    w, _, _, _ = layer
    np.testing.assert_array_equal(
        quant.awq_scales(w, np.full(96, 0.7), 4, 32), np.ones(96, np.float32)
    )


def test_clip_search_never_hurts_and_stays_in_range(layer):
    w, x, H, _ = layer
    clipped = quant.awq_clip(w, H, 4, 32)
    assert clipped.dtype == np.float32 and clipped.shape == w.shape
    for g in range(0, 96, 32):
        part, c = w[:, g : g + 32], clipped[:, g : g + 32]
        assert np.all(c >= part.min(axis=1, keepdims=True)) and np.all(
            c <= part.max(axis=1, keepdims=True)
        )
        d0 = rtn(part) - part
        d1 = rtn(c) - part
        hg = H[g : g + 32, g : g + 32]
        e0 = np.einsum("ri,ij,rj->r", d0, hg, d0)
        e1 = np.einsum("ri,ij,rj->r", d1, hg, d1)
        assert np.all(e1 <= e0 * (1 + 1e-9))
    assert output_error(x, w, rtn(clipped)) < output_error(x, w, rtn(w))


def test_bad_input_raises_and_changes_nothing(layer):
    w, _, H, mean = layer
    cases = [
        (lambda: quant.awq_scales(w, mean[:5]), ValueError, "act_mean: expected shape (96,)"),
        (lambda: quant.awq_scales(w, -mean), ValueError, "act_mean: expected finite values >= 0"),
        (lambda: quant.awq_scales(w, list(mean)), TypeError, "act_mean: expected a float ndarray"),
        (lambda: quant.awq_scales(w, mean, n_grid=0), ValueError, "n_grid: expected an int >= 1"),
        (lambda: quant.awq_clip(w, H[:3, :3]), ValueError, "H: expected shape (96, 96)"),
    ]
    assert_rejected_unchanged(cases, w, mean)


def test_clip_search_with_a_short_last_group(rng):
    w = rng.standard_normal((20, 100)).astype(np.float32)
    x = rng.standard_normal((400, 100))
    H = x.T @ x
    clipped = quant.awq_clip(w, H, 4, 32)
    last = w[:, 96:]
    assert np.all(clipped[:, 96:] >= last.min(axis=1, keepdims=True))
    assert np.all(clipped[:, 96:] <= last.max(axis=1, keepdims=True))
    assert output_error(x, w, rtn(clipped, 32)) <= output_error(x, w, rtn(w, 32))


def test_scale_search_gives_the_same_scales_on_any_thread_count_and_restores_it(layer):
    # The search runs on our kernels, the same bits on any thread count: the
    # same scales whatever the caller's count, and the count is kept.
    import slimgrad

    w, _, H, mean = layer
    results = []
    for threads in (1, 2):
        with slimgrad.num_threads(threads):
            results.append(quant.awq_scales(w, mean, 4, 32, H=H))
            assert slimgrad.get_num_threads() == threads
    np.testing.assert_array_equal(results[0], results[1])
