"""Inputs that are only read accept any layout and byte order through one explicit,
documented copy to C order (zero copy when already C-contiguous and native); arrays
written in place keep the strict buffer contract (tested with each function's errors)."""

from __future__ import annotations

import numpy as np
import pytest
from slimgrad import nn
from slimgrad.nn._module import as_readable

DTYPES = [np.float32, np.float64]


def _strided(a):
    big = np.zeros(a.shape[:-1] + (2 * a.shape[-1],), a.dtype)
    big[..., ::2] = a
    return big[..., ::2]


def _fortran(a):
    return np.asfortranarray(a)


def _byteswapped(a):
    return a.astype(a.dtype.newbyteorder("S"))


LAYOUTS = {"strided": _strided, "fortran": _fortran, "byteswapped": _byteswapped}


@pytest.fixture(params=list(LAYOUTS), ids=lambda name: f"layout={name}")
def layout(request):
    def make(a):
        v = LAYOUTS[request.param](a)
        assert not (v.flags.c_contiguous and v.dtype.isnative)
        np.testing.assert_array_equal(v, a)
        return v

    return make


def test_as_readable_copies_only_when_needed(layout):
    a = np.arange(12, dtype=np.float32).reshape(3, 4)
    assert as_readable(a) is a  # zero copy
    v = layout(a)
    c = as_readable(v)
    assert c.flags.c_contiguous and c.dtype.isnative and c.dtype == np.float32
    np.testing.assert_array_equal(c, a)
    swapped0d = np.array(2.5, np.dtype(">f8" if np.little_endian else "<f8"))
    assert as_readable(swapped0d).shape == ()  # no 0-d -> 1-d promotion
    ints = np.arange(6)[::2]
    assert as_readable(ints) is ints  # not a float input: left for the check to name
    assert as_readable([1.0]) == [1.0]


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_dropout_layer_reads_any_layout(layout, dtype, rng):
    x = rng.standard_normal((5, 6)).astype(dtype)
    g = rng.standard_normal((5, 6)).astype(dtype)
    layer = nn.Dropout(0.5, seed=3)
    y_ref = layer.forward(x)
    gi_ref = layer.backward(g)
    layer.calls = 0
    xv, gv = layout(x), layout(g)
    y = layer.forward(xv)
    gi = layer.backward(gv)
    np.testing.assert_array_equal(y, y_ref)
    np.testing.assert_array_equal(gi, gi_ref)
    assert y.dtype == dtype and gi.dtype == dtype
    np.testing.assert_array_equal(xv, x)  # inputs untouched
    np.testing.assert_array_equal(gv, g)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("approximate", ["none", "tanh"])
def test_gelu_layer_and_functions_read_any_layout(layout, dtype, approximate, rng):
    x = rng.standard_normal((4, 7)).astype(dtype)
    g = rng.standard_normal((4, 7)).astype(dtype)
    ref = nn.GELU(approximate)
    y_ref, gi_ref = ref.forward(x), ref.backward(g)
    layer = nn.GELU(approximate)
    y = layer.forward(layout(x))
    gi = layer.backward(layout(g))
    np.testing.assert_array_equal(y, y_ref)
    np.testing.assert_array_equal(gi, gi_ref)
    np.testing.assert_array_equal(nn.gelu(layout(x), approximate), y_ref)
    out = np.empty_like(x)
    assert nn.gelu(layout(x), approximate, out=out) is out
    np.testing.assert_array_equal(out, y_ref)
    d_ref = nn.dropout(x, 0.3, seed=5, stream=2)
    np.testing.assert_array_equal(nn.dropout(layout(x), 0.3, seed=5, stream=2), d_ref)
    assert nn.dropout(layout(x), 0.3, seed=5, stream=2, out=out) is out
    np.testing.assert_array_equal(out, d_ref)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_batchnorm_linear_relu_read_any_layout(layout, dtype, rng):
    x = rng.standard_normal((8, 4)).astype(dtype)
    g = rng.standard_normal((8, 4)).astype(dtype)
    ref, bn = nn.BatchNorm1d(4, dtype=dtype), nn.BatchNorm1d(4, dtype=dtype)
    y_ref, gi_ref = ref.forward(x), ref.backward(g)
    np.testing.assert_array_equal(bn.forward(layout(x)), y_ref)
    np.testing.assert_array_equal(bn.backward(layout(g)), gi_ref)
    np.testing.assert_array_equal(bn.running_var, ref.running_var)
    np.testing.assert_array_equal(bn.gradients()["weight"], ref.gradients()["weight"])

    lin = nn.Linear(4, 3, dtype=dtype)
    y_ref = lin.forward(x)
    gi_ref = lin.backward(np.ones((8, 3), dtype))
    w_ref = lin.gradients()["weight"].copy()
    np.testing.assert_allclose(lin.forward(layout(x)), y_ref, rtol=1e-6)
    np.testing.assert_allclose(lin.backward(layout(np.ones((8, 3), dtype))), gi_ref, rtol=1e-6)
    np.testing.assert_allclose(lin.gradients()["weight"], w_ref, rtol=1e-6)

    relu = nn.ReLU()
    relu.forward(x)
    np.testing.assert_array_equal(relu.backward(layout(g)), np.where(x > 0, g, 0))


def test_wrong_dtypes_still_raise_naming_the_argument():
    with pytest.raises(TypeError, match=r"^x: expected a float32 ndarray, got int64 array"):
        nn.BatchNorm1d(4).forward(np.zeros((8, 4), np.int64)[:, ::1])
    with pytest.raises(TypeError, match=r"^x: expected float32 or float64 C-contiguous array"):
        nn.Dropout(0.5).forward(np.zeros((3, 8), np.float16)[:, ::2])
    layer = nn.Dropout(0.5)
    layer.forward(np.ones((3, 4), np.float32))
    with pytest.raises(TypeError, match=r"^grad_out: expected a float32 ndarray, got float64"):
        layer.backward(np.ones((3, 8))[:, ::2])
