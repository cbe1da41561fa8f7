"""Clipping searches (percentile, mse) and fake_quantize (QAT with the STE mask)."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import run_everywhere
from slimgrad import quant

# np.percentile's virtual index and ours differ in the last bits of a double;
# the float32 scale then differs by at most one ulp.
SCALE_RTOL = 2.5e-7


def heavy_tailed(rng, shape):
    w = rng.standard_normal(shape).astype(np.float32)
    w[..., 3] *= 25  # one outlier per row
    return w


@pytest.mark.parametrize("symmetric", [True, False])
def test_percentile_matches_numpy(symmetric, rng):
    w = heavy_tailed(rng, (6, 257))
    p = 99.0
    qt = quant.quantize(w, 8, symmetric=symmetric, clip="percentile", percentile=p)
    w64 = w.astype(np.float64)
    if symmetric:
        hi = np.percentile(np.abs(w64), p, axis=1)
        ref = hi / 127
    else:
        lo = np.minimum(np.percentile(w64, 100 - p, axis=1), 0)
        hi = np.maximum(np.percentile(w64, p, axis=1), 0)
        ref = (hi - lo) / 255
    np.testing.assert_allclose(qt.scale, ref.astype(np.float32), rtol=SCALE_RTOL)
    # outliers are clipped to the end of the grid
    outliers = qt.codes()[:, 3][np.abs(w[:, 3]) > np.abs(hi)]
    assert outliers.size and np.all(np.isin(outliers, [qt.qmin, qt.qmax]))


def reference_mse_scale(g, bits, steps=100, min_ratio=0.2):
    """Brute force over the same ratios, symmetric, half-to-even."""
    qmax = 2 ** (bits - 1) - 1
    amax = float(np.abs(g).max())
    best, best_err = None, np.inf
    for k in range(steps):
        ratio = 1 - k / steps
        if ratio < min_ratio:
            break
        s = np.float32(np.float32(amax * ratio) / qmax)
        q = np.clip(np.rint(g * (np.float32(1) / s)), -qmax, qmax)
        err = float(
            np.sum((g.astype(np.float64) - (s * q.astype(np.float32)).astype(np.float64)) ** 2)
        )
        if err < best_err * (1 - 1e-12):
            best, best_err = s, err
    return best, best_err


def test_mse_search_finds_the_best_ratio(rng):
    w = heavy_tailed(rng, (8, 96))
    qt = quant.quantize(w, 4, clip="mse", granularity="group", group_size=32)
    base = quant.quantize(w, 4, granularity="group", group_size=32)
    err = ((qt.dequantize().astype(np.float64) - w) ** 2).reshape(8, 3, 32).sum(-1)
    base_err = ((base.dequantize().astype(np.float64) - w) ** 2).reshape(8, 3, 32).sum(-1)
    assert np.all(err <= base_err * (1 + 1e-12)) and err.sum() < base_err.sum()
    assert np.all(qt.scale <= base.scale)
    for r in range(8):
        for g in range(3):
            _, ref_err = reference_mse_scale(w[r, 32 * g : 32 * (g + 1)], 4)
            assert err[r, g] == pytest.approx(ref_err, rel=1e-9)


def test_clipping_identical_everywhere(rng):
    w = heavy_tailed(rng, (33, 300))

    def run():
        out = []
        for clip in ("percentile", "mse"):
            for symmetric in (True, False):
                qt = quant.quantize(
                    w, 4, symmetric=symmetric, clip=clip, granularity="group", group_size=64
                )
                out += [qt.data.copy(), qt.scale.copy(), qt.zero_point.copy()]
                qt = quant.quantize(
                    w, 8, symmetric=symmetric, clip=clip, granularity="channel", axis=1
                )
                out += [qt.data.copy(), qt.scale.copy()]
        return out

    results = run_everywhere(run)
    first = next(iter(results.values()))
    for key, arrays in results.items():
        for a, b in zip(arrays, first):
            np.testing.assert_array_equal(a, b, err_msg=str(key))


def test_clipping_keeps_constant_groups_exact():
    w = np.zeros((3, 64), np.float32)
    w[1] = 2.5
    w[2, 10] = 4.0
    for clip in ("percentile", "mse"):
        qt = quant.quantize(w, 4, clip=clip, granularity="group", group_size=32)
        assert np.isfinite(qt.scale).all()
        np.testing.assert_array_equal(qt.dequantize()[:2], w[:2])


def test_fake_quantize_equals_torch(rng):
    torch = pytest.importorskip("torch")
    w = heavy_tailed(rng, (16, 130))
    for symmetric in (True, False):
        for clip in ("minmax", "percentile"):
            bits = 8
            y, mask = quant.fake_quantize(w, bits, symmetric=symmetric, clip=clip, percentile=98.0)
            qt = quant.quantize(w, bits, symmetric=symmetric, clip=clip, percentile=98.0)
            np.testing.assert_array_equal(y, qt.dequantize())
            x = torch.from_numpy(w.copy()).requires_grad_(True)
            t = torch.fake_quantize_per_channel_affine(
                x, torch.from_numpy(qt.scale), torch.from_numpy(qt.zero_point), 0, qt.qmin, qt.qmax
            )
            t.sum().backward()
            np.testing.assert_array_equal(y, t.detach().numpy())
            np.testing.assert_array_equal(mask, x.grad.numpy() == 1)
            if clip == "minmax":
                assert mask.all()
            else:
                assert not mask.all()


def test_fake_quantize_group_mask(rng):
    w = heavy_tailed(rng, (4, 70))
    y, mask = quant.fake_quantize(
        w, 4, granularity="group", group_size=32, clip="percentile", percentile=90.0
    )
    qt = quant.quantize(
        w, 4, granularity="group", group_size=32, clip="percentile", percentile=90.0
    )
    lim = qt.expand(qt.scale) * 7.5
    np.testing.assert_array_equal(mask, np.abs(w) < lim)  # no exact ties here
    np.testing.assert_array_equal(y, qt.dequantize())
    assert y.shape == mask.shape == w.shape and mask.dtype == bool


def test_bad_clip_arguments(rng):
    w = rng.standard_normal((2, 8)).astype(np.float32)
    with pytest.raises(ValueError, match=r"percentile: expected a value in \(0, 100\], got 0"):
        quant.quantize(w, clip="percentile", percentile=0)
    with pytest.raises(ValueError, match="mse_steps: expected a positive integer, got 0"):
        quant.quantize(w, clip="mse", mse_steps=0)


def test_fake_quantize_errors_name_x_and_change_nothing():
    x = np.ones((4, 8), np.float32)
    x[1, 3] = np.nan
    before = x.copy()
    with pytest.raises(ValueError, match=r"^x: non-finite value nan at index \(1, 3\)"):
        quant.fake_quantize(x)
    np.testing.assert_array_equal(x, before)
    with pytest.raises(ValueError, match=r"^x: expected an array of at least one dimension"):
        quant.fake_quantize(np.ones((), np.float32))
