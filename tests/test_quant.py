"""slimgrad.quant.quantize / dequantize against a NumPy reference of the formulas,
torch's per-channel codes, packing round trips, every ISA and thread count."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import run_everywhere
from slimgrad import quant

FLT_MIN = np.float32(np.finfo(np.float32).tiny)
# Relative RMS error of int8 per-channel on Gaussian rows of 1024: the step is
# ~2 * 3.3 sigma / 254, RMS error step / sqrt(12) ~ 0.0075 sigma.
INT8_CHANNEL_REL_ERR = 0.01
SCHEMES = [
    (b, s, g)
    for b in (2, 3, 4, 5, 6, 7, 8)
    for s in (True, False)
    for g in ("tensor", "channel", "group")
]
SHAPES = [(1,), (7,), (1, 1), (3, 17), (5, 33), (2, 3, 40), (4, 129)]


# -- the NumPy reference ------------------------------------------------------------
def ref_groups(w, granularity, axis, group_size):
    """(lo, hi) per parameter, shaped like qt.scale, in float64."""
    w64 = w.astype(np.float64)
    if granularity == "tensor":
        return np.array(w64.min()), np.array(w64.max())
    if granularity == "channel":
        m = np.moveaxis(w64, axis, 0).reshape(w.shape[axis], -1)
        return m.min(axis=1), m.max(axis=1)
    cols = w.shape[-1]
    g = -(-cols // group_size)
    pad = np.full((*w.shape[:-1], g * group_size), np.nan)
    pad[..., :cols] = w64
    pad = pad.reshape(*w.shape[:-1], g, group_size)
    return np.nanmin(pad, axis=-1), np.nanmax(pad, axis=-1)


def ref_params(lo, hi, bits, symmetric):
    qmax = 2 ** (bits - 1) - 1 if symmetric else 2**bits - 1
    const = lo == hi
    if symmetric:
        scale = (np.maximum(-lo, hi) / qmax).astype(np.float32)
        zp = np.zeros(lo.shape)
        scale = np.where(const, np.abs(lo).astype(np.float32), scale)
    else:
        a, b = np.minimum(lo, 0), np.maximum(hi, 0)
        scale = ((b - a) / qmax).astype(np.float32)
        with np.errstate(divide="ignore", invalid="ignore"):
            zp = np.clip(np.rint(-a / scale.astype(np.float64)), 0, qmax)
        scale = np.where(const, np.abs(lo).astype(np.float32), scale)
        zp = np.where(const, (lo < 0).astype(np.float64), zp)
    scale = np.where(scale == 0, np.float32(1), scale).astype(np.float32)
    return scale, zp.astype(np.int32)


def ref_quantize(w, bits, symmetric, granularity, axis=0, group_size=128, rounding="half_even"):
    lo, hi = ref_groups(w, granularity, axis, group_size)
    scale, zp = ref_params(lo, hi, bits, symmetric)
    s = quant._tensor._expand(scale, w.shape, granularity, axis, group_size)
    z = quant._tensor._expand(zp, w.shape, granularity, axis, group_size).astype(np.float32)
    with np.errstate(over="ignore", invalid="ignore"):  # 1/s of subnormal scales: not used
        inv = np.float32(1) / s
        r = np.where(s < FLT_MIN, w / s, w * inv).astype(np.float32)
    t = (r + z).astype(np.float32)
    if rounding == "half_even":
        t = np.rint(t)
    else:
        tr = np.trunc(t)
        t = tr + np.where(np.abs(t - tr) >= 0.5, np.sign(t), 0)
    qmin, qmax = (-(2 ** (bits - 1) - 1), 2 ** (bits - 1) - 1) if symmetric else (0, 2**bits - 1)
    q = np.clip(t, qmin, qmax).astype(np.int32)
    deq = (s * (q - z).astype(np.float32)).astype(np.float32)
    return q, scale, zp, deq


def ref_pack(codes, bits):
    """Little-endian bitstream per row (last axis), rows byte-aligned."""
    c = codes.astype(np.int64).reshape(-1, codes.shape[-1]) & ((1 << bits) - 1)
    bitplanes = ((c[:, :, None] >> np.arange(bits)) & 1).astype(np.uint8).reshape(c.shape[0], -1)
    packed = np.packbits(bitplanes, axis=1, bitorder="little")
    return packed.reshape(*codes.shape[:-1], -1)


def assert_within_half_step(qt, w):
    # half a step, plus the float32 rounding of the scale (relative 2^-24,
    # times up to 2^b steps) and of the product
    step = qt.expand(qt.scale).astype(np.float64)
    err = np.abs(qt.dequantize().astype(np.float64) - w)
    assert np.all(err <= 0.5 * step + 1e-6 * np.abs(w.astype(np.float64)) + 1e-45)


# -- tests -------------------------------------------------------------------------
@pytest.mark.parametrize("bits,symmetric,granularity", SCHEMES)
def test_every_scheme_matches_reference(bits, symmetric, granularity, rng):
    w = (rng.standard_normal((6, 45)) * rng.uniform(0.01, 10, (6, 1))).astype(np.float32)
    w[2, :7] = 0.25  # a constant group when group_size=7
    w[3] = 0.0  # an all-zero channel
    for rounding in ("half_even", "half_away"):
        qt = quant.quantize(
            w, bits, symmetric=symmetric, granularity=granularity, group_size=7, rounding=rounding
        )
        q, scale, zp, deq = ref_quantize(w, bits, symmetric, granularity, 0, 7, rounding)
        np.testing.assert_array_equal(qt.scale, scale)
        np.testing.assert_array_equal(qt.zero_point, zp)
        np.testing.assert_array_equal(qt.codes(), q)
        np.testing.assert_array_equal(qt.dequantize(), deq)
        if bits < 8:
            np.testing.assert_array_equal(qt.data, ref_pack(q, bits))
        # half a step of error at most (no clipping with minmax)
        assert_within_half_step(qt, w)


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("granularity", ["tensor", "channel", "group"])
def test_shapes_and_tails(isa, threads, shape, granularity, rng):
    w = rng.standard_normal(shape).astype(np.float32)
    for bits, symmetric in ((8, True), (4, True), (3, False)):
        axis = -1 if granularity == "channel" and len(shape) > 1 else 0
        qt = quant.quantize(
            w, bits, symmetric=symmetric, granularity=granularity, axis=axis, group_size=16
        )
        q, scale, zp, deq = ref_quantize(w, bits, symmetric, granularity, axis % w.ndim, 16)
        np.testing.assert_array_equal(qt.codes(), q)
        np.testing.assert_array_equal(qt.scale, scale)
        np.testing.assert_array_equal(qt.dequantize(), deq)


def test_layout_of_fields(rng):
    w = rng.standard_normal((3, 4, 10)).astype(np.float32)
    qt = quant.quantize(w, 8)
    assert qt.data.dtype == np.int8 and qt.data.shape == w.shape and qt.scale.shape == (3,)
    qt = quant.quantize(w, 8, symmetric=False, granularity="channel", axis=1)
    assert qt.data.dtype == np.uint8 and qt.scale.shape == (4,) and qt.zero_point.dtype == np.int32
    qt = quant.quantize(w, 4, granularity="group", group_size=4)
    assert qt.data.shape == (3, 4, 5) and qt.scale.shape == (3, 4, 3)
    assert qt.nbytes == qt.data.nbytes + qt.scale.nbytes
    qt = quant.quantize(w, 3, granularity="tensor", symmetric=False)
    assert qt.data.shape == (3, 4, 4) and qt.scale.shape == () and qt.nbytes == 48 + 8
    # low nibble = even index
    codes = qt_codes = quant.quantize(w, 4).codes()
    data = quant.quantize(w, 4).data
    np.testing.assert_array_equal(data & 0xF, qt_codes[..., 0::2].astype(np.uint8) & 0xF)
    np.testing.assert_array_equal(data >> 4, codes[..., 1::2].astype(np.uint8) & 0xF)


def test_kernel_spec_is_kept_until_the_layout_changes(rng):
    # QuantizedTensor keeps the spec dict it hands the kernels; a changed
    # layout attribute must give a new one (a stale spec would describe the
    # old shape to the kernels).
    w = rng.standard_normal((4, 8)).astype(np.float32)
    qt = quant.quantize(w, 8, granularity="tensor")
    first = qt._core_spec()
    assert qt._core_spec() is first
    assert (first["rows"], first["cols"]) == (4, 8)
    expected = qt.dequantize()
    qt.data, qt.shape = qt.data.reshape(8, 4), (8, 4)
    spec = qt._core_spec()
    assert spec is not first and (spec["rows"], spec["cols"]) == (8, 4)
    np.testing.assert_array_equal(qt.dequantize(), expected.reshape(8, 4))
    assert qt._core_spec(rounding="stochastic") is not spec  # options: built each call


@pytest.mark.parametrize("bits", [2, 3, 4, 5, 6, 7, 8])
@pytest.mark.parametrize("symmetric", [True, False])
def test_pack_unpack_round_trip(isa, bits, symmetric, rng):
    for shape in [(1,), (5, 1), (3, 31), (2, 33), (4, 1000)]:
        lo, hi = (-(2 ** (bits - 1) - 1), 2 ** (bits - 1)) if symmetric else (0, 2**bits)
        codes = rng.integers(lo, hi, shape).astype(np.int8 if symmetric else np.uint8)
        scale = np.ones(shape[0], np.float32)
        qt = quant.QuantizedTensor.from_codes(codes, scale, bits=bits, symmetric=symmetric)
        if bits < 8:
            np.testing.assert_array_equal(qt.data, ref_pack(codes, bits))
        np.testing.assert_array_equal(qt.codes(), codes)


def test_constant_and_zero_groups_round_trip_exactly(recwarn):
    w = np.zeros((6, 40), np.float32)
    w[1] = 3.3
    w[2] = -2.7e-3
    w[3] = 1e-41  # subnormal constant
    w[4] = -3.0e38
    w[5, :20] = 7.0
    for bits in (2, 4, 8):
        for symmetric in (True, False):
            for granularity in ("channel", "group", "tensor"):
                qt = quant.quantize(
                    w, bits, symmetric=symmetric, granularity=granularity, group_size=20
                )
                y = qt.dequantize()
                assert not np.isnan(y).any()
                if granularity != "tensor":
                    np.testing.assert_array_equal(y, w)
    assert len(recwarn) == 0


def test_extreme_values_stay_finite():
    w = np.array(
        [[3.0e38, -3.0e38, 1.0, 0.0], [1e-45, -1e-45, 0.0, 1e-44], [1e-40, 2e-40, 0, 1e-38]],
        np.float32,
    )
    for symmetric in (True, False):
        qt = quant.quantize(w, 8, symmetric=symmetric)
        assert np.isfinite(qt.scale).all() and (qt.scale > 0).all()
        y = qt.dequantize()
        assert np.isfinite(y).all()
        assert_within_half_step(qt, w)


def test_identical_on_every_isa_and_thread_count(rng):
    w = rng.standard_normal((37, 1031)).astype(np.float32)
    w1 = rng.standard_normal(100_003).astype(np.float32)
    cases = [
        dict(bits=8),
        dict(bits=4, granularity="group", group_size=32),
        dict(bits=3, symmetric=False, granularity="group", group_size=100, rounding="half_away"),
        dict(bits=4, granularity="group", group_size=64, rounding="stochastic", seed=7),
        dict(bits=8, granularity="tensor", rounding="stochastic", seed=3),
        dict(bits=5, symmetric=False, granularity="channel", axis=1),
    ]

    def run():
        out = []
        for kw in cases:
            qt = quant.quantize(w, **kw)
            out += [qt.data.copy(), qt.scale.copy(), qt.dequantize()]
        qt = quant.quantize(w1, 6, granularity="tensor", rounding="stochastic", seed=11)
        return out + [qt.data.copy(), qt.dequantize()]

    results = run_everywhere(run)
    first = next(iter(results.values()))
    for key, arrays in results.items():
        for a, b in zip(arrays, first):
            np.testing.assert_array_equal(a, b, err_msg=str(key))


def test_stochastic_rounding_is_unbiased_and_seeded(rng):
    w = rng.standard_normal((4, 2048)).astype(np.float32)
    a = quant.quantize(w, 4, rounding="stochastic", seed=1)
    b = quant.quantize(w, 4, rounding="stochastic", seed=1)
    c = quant.quantize(w, 4, rounding="stochastic", seed=2)
    np.testing.assert_array_equal(a.data, b.data)
    assert (a.data != c.data).mean() > 0.2
    # each code is the floor or the ceiling of r = x / scale
    r = w / a.expand(a.scale)
    q = a.codes().astype(np.float64)
    assert np.all((q == np.floor(r)) | (q == np.ceil(r)) | (np.abs(q) == 7))
    # mean over seeds approaches x (unbiased); half_even's error does not average out
    mean = np.mean(
        [quant.quantize(w, 4, rounding="stochastic", seed=s).dequantize() for s in range(64)],
        axis=0,
    )
    step = a.expand(a.scale)
    assert np.abs(mean - w).mean() < 0.1 * step.mean()


def test_int8_codes_equal_torch_quantize_per_channel(rng):
    torch = pytest.importorskip("torch")
    import warnings

    w = rng.standard_normal((64, 513)).astype(np.float32)
    k = rng.integers(-120, 120, w.shape).astype(np.float32) + 0.5  # exact ties in x / scale
    for x in (w, None):
        for symmetric in (True, False):
            if x is None:
                s = quant.quantize(w, 8, symmetric=symmetric).scale
                x = (k * s[:, None]).astype(np.float32)
            qt = quant.quantize(x, 8, symmetric=symmetric)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                t = torch.quantize_per_channel(
                    torch.from_numpy(x),
                    torch.from_numpy(qt.scale.astype(np.float64)),
                    torch.from_numpy(qt.zero_point.astype(np.int64)),
                    0,
                    torch.qint8 if symmetric else torch.quint8,
                )
            np.testing.assert_array_equal(qt.codes(), t.int_repr().numpy())
            np.testing.assert_array_equal(qt.dequantize(), t.dequantize().numpy())


def test_reconstruction_quality(rng):
    w = rng.standard_normal((256, 1024)).astype(np.float32)

    def rel(qt):
        return np.linalg.norm(qt.dequantize() - w) / np.linalg.norm(w)

    assert rel(quant.quantize(w, 8)) < INT8_CHANNEL_REL_ERR
    assert rel(quant.quantize(w, 4, granularity="group", group_size=32)) < rel(quant.quantize(w, 4))
    assert rel(quant.quantize(w, 4, symmetric=False, granularity="group", group_size=32)) < rel(
        quant.quantize(w, 4, granularity="group", group_size=32)
    )


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nonfinite_raises_naming_position_and_changes_nothing(bad, rng):
    w = rng.standard_normal((5, 40)).astype(np.float32)
    w[3, 17] = bad
    w[4, 2] = bad
    before = w.copy()
    for granularity in ("tensor", "channel", "group"):
        with pytest.raises(ValueError, match=r"w: non-finite value -?(nan|inf) at index \(3, 17\)"):
            quant.quantize(w, 4, granularity=granularity, group_size=8)
    np.testing.assert_array_equal(w, before)


def test_nonfinite_propagate_gives_nan_groups(rng):
    w = rng.standard_normal((3, 16)).astype(np.float32)
    w[1, 5] = np.nan
    qt = quant.quantize(w, 8, granularity="group", group_size=8, nonfinite="propagate")
    y = qt.dequantize()
    assert np.isnan(y[1, :8]).all() and np.isfinite(np.delete(y.reshape(-1), range(16, 24))).all()
    np.testing.assert_array_equal(qt.codes()[1, :8], 0)


@pytest.mark.parametrize(
    "kwargs,message",
    [
        (dict(bits=1), "bits: expected an integer in 2..8, got 1"),
        (dict(bits=9), "bits: expected an integer in 2..8, got 9"),
        (
            dict(granularity="row"),
            "granularity: expected one of 'tensor', 'channel', 'group', got 'row'",
        ),
        (
            dict(rounding="up"),
            "rounding: expected one of 'half_even', 'half_away', 'stochastic', got 'up'",
        ),
        (dict(clip="max"), "clip: expected one of 'minmax', 'percentile', 'mse', got 'max'"),
        (dict(axis=2), r"axis: expected an integer in \[-2, 1\], got 2"),
        (dict(group_size=0), "group_size: expected a positive integer, got 0"),
        (dict(seed=-1), r"seed: expected an integer in \[0, 2\*\*64\), got -1"),
        (dict(nonfinite="ignore"), "nonfinite: expected one of 'raise', 'propagate', got 'ignore'"),
    ],
)
def test_bad_arguments_raise(kwargs, message, rng):
    w = rng.standard_normal((3, 8)).astype(np.float32)
    before = w.copy()
    with pytest.raises(ValueError, match=message):
        quant.quantize(w, **kwargs)
    np.testing.assert_array_equal(w, before)


def test_bad_inputs_raise_type_errors(rng):
    with pytest.raises(TypeError, match="w: expected a NumPy array of floats, got list"):
        quant.quantize([1.0, 2.0])
    with pytest.raises(TypeError, match="w: expected a floating-point array, got int32 array"):
        quant.quantize(np.arange(4, dtype=np.int32))
    with pytest.raises(ValueError, match="w: expected an array of at least one dimension"):
        quant.quantize(np.ones((), np.float32))
    qt = quant.quantize(rng.standard_normal((3, 8)).astype(np.float32), 4)
    out = np.zeros((3, 8), np.float64)
    with pytest.raises(
        TypeError,
        match=r"out: expected float32 C-contiguous array, got float64 array of shape \(3, 8\)",
    ):
        qt.dequantize(out)
    assert not out.any()
    with pytest.raises(
        ValueError, match=r"out: expected float32 C-contiguous array of shape \(3, 8\)"
    ):
        qt.dequantize(np.zeros((8, 3), np.float32))
    ro = np.zeros((3, 8), np.float32)
    ro.flags.writeable = False
    with pytest.raises(ValueError, match="out: expected a writable array"):
        qt.dequantize(ro)


def test_other_float_dtypes_and_empty(rng):
    w = rng.standard_normal((4, 9))
    np.testing.assert_array_equal(
        quant.quantize(w, 8).data, quant.quantize(w.astype(np.float32), 8).data
    )
    qt = quant.quantize(np.zeros((0, 5), np.float32), 4, granularity="group", group_size=2)
    assert qt.data.shape == (0, 3) and qt.dequantize().shape == (0, 5)
    qt = quant.quantize(np.zeros((3, 0), np.float32), 8)
    assert qt.scale.shape == (3,) and qt.dequantize().shape == (3, 0)


def test_dequantize_into_out(rng):
    w = rng.standard_normal((7, 70)).astype(np.float32)
    qt = quant.quantize(w, 4, granularity="group", group_size=32)
    out = np.empty_like(w)
    assert qt.dequantize(out) is out
    np.testing.assert_array_equal(out, quant.dequantize(qt))


@pytest.mark.parametrize("symmetric", [True, False])
def test_channels_on_the_last_axis(isa, symmetric, rng):
    # per-column parameters take a vectorized path unless a column needs the
    # division path (subnormal scale): both must give the reference codes
    w = rng.standard_normal((7, 3, 37)).astype(np.float32)
    for tiny in (False, True):
        if tiny:
            w[..., 5] = rng.standard_normal((7, 3)).astype(np.float32) * 1e-41
        for bits in (8, 4):
            qt = quant.quantize(w, bits, symmetric=symmetric, axis=-1)
            q, scale, zp, deq = ref_quantize(w, bits, symmetric, "channel", 2)
            np.testing.assert_array_equal(qt.codes(), q)
            np.testing.assert_array_equal(qt.scale, scale)
            np.testing.assert_array_equal(qt.dequantize(), deq)
    runs = run_everywhere(lambda: quant.quantize(w, 4, axis=-1, rounding="stochastic", seed=5).data)
    first = next(iter(runs.values()))
    for data in runs.values():
        np.testing.assert_array_equal(data, first)


@pytest.mark.parametrize("granularity,group_size", [("group", 32), ("group", 100), ("channel", 0)])
def test_long_rows_split_into_items(granularity, group_size, rng):
    # rows longer than one work item (8192 columns): items start mid-row
    w = rng.standard_normal((2, 20_001)).astype(np.float32)
    for bits in (8, 3):
        qt = quant.quantize(w, bits, granularity=granularity, group_size=group_size or 1)
        q, scale, _, deq = ref_quantize(w, bits, True, granularity, 0, group_size or 1)
        np.testing.assert_array_equal(qt.codes(), q)
        np.testing.assert_array_equal(qt.scale, scale)
        np.testing.assert_array_equal(qt.dequantize(), deq)


def test_source_dtype_is_recorded_and_optional_on_dequantize(rng):
    import ml_dtypes

    w32 = rng.standard_normal((6, 40)).astype(np.float32)
    for dtype in (np.float16, ml_dtypes.bfloat16, np.float64, np.float32):
        w = w32.astype(dtype)
        qt = quant.quantize(w, 4, granularity="group", group_size=16)
        assert qt.source_dtype == np.dtype(dtype) and qt.spec()["dtype"] == np.dtype(dtype).name
        y = qt.dequantize()
        assert y.dtype == np.float32  # the default does not change with the source
        back = qt.dequantize(dtype=qt.source_dtype)
        assert back.dtype == np.dtype(dtype)
        np.testing.assert_array_equal(back, y.astype(dtype))
        np.testing.assert_array_equal(quant.dequantize(qt, dtype=dtype), back)
    assert quant.quantize(w32.astype(">f4"), 8).source_dtype == np.dtype("=f4")
    with pytest.raises(ValueError, match="^dtype: not together with out"):
        qt.dequantize(np.empty_like(w32), dtype=np.float16)
    with pytest.raises(TypeError, match="^dtype: expected a floating-point dtype, got int8$"):
        qt.dequantize(dtype=np.int8)
    q8 = quant.quantize(w32, 8)
    codes = quant.QuantizedTensor.from_codes(q8.codes(), q8.scale, source_dtype="bfloat16")
    assert codes.source_dtype == ml_dtypes.bfloat16
