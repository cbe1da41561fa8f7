"""The buffer contract (docs/architecture.md, "The buffer contract"), checked on the core kernels.

Every row: a bad argument raises the documented exception with a message
naming the argument, the expectation and what was given, and no array changes.
"""

from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest
from slimgrad import ops


def _arrays():
    y = np.arange(12, dtype=np.float32).reshape(3, 4)
    x = np.ones((3, 4), dtype=np.float32)
    return y, x


def _readonly(a):
    a = a.copy()
    a.flags.writeable = False
    return a


BAD_Y = [
    # (id, make bad y from good y, exception, message)
    (
        "int32",
        lambda y: y.astype(np.int32),
        TypeError,
        "y: expected float32 or float64 C-contiguous array, got int32 array of shape (3, 4)",
    ),
    (
        "bfloat16",
        lambda y: y.astype(ml_dtypes.bfloat16),
        TypeError,
        "y: expected float32 or float64 C-contiguous array, got bfloat16 array of shape (3, 4)",
    ),
    (
        "strided",
        lambda y: np.zeros((3, 8), np.float32)[:, ::2],
        TypeError,
        "y: expected float32 or float64 C-contiguous array, got non-contiguous float32 array of shape (3, 4)",
    ),
    (
        "fortran",
        lambda y: np.asfortranarray(y),
        TypeError,
        "y: expected float32 or float64 C-contiguous array, got non-contiguous float32 array of shape (3, 4)",
    ),
    (
        "big-endian",
        lambda y: y.astype(">f4"),
        TypeError,
        "y: expected float32 or float64 C-contiguous array, got non-native byte order float32 array of shape (3, 4)",
    ),
    (
        "list",
        lambda y: y.tolist(),
        TypeError,
        "y: expected float32 or float64 C-contiguous array, got list",
    ),
    (
        "read-only",
        _readonly,
        ValueError,
        "y: expected a writable array, got a read-only float32 array of shape (3, 4)",
    ),
]


@pytest.mark.parametrize("make, exc, message", [r[1:] for r in BAD_Y], ids=[r[0] for r in BAD_Y])
def test_bad_y_raises_and_changes_nothing(make, exc, message):
    y, x = _arrays()
    bad = make(y)
    before = np.array(bad, copy=True)
    x_before = x.copy()
    with pytest.raises(exc) as info:
        ops.axpy_(bad, x, 2.0)
    assert str(info.value) == message
    np.testing.assert_array_equal(np.asarray(bad), before)
    np.testing.assert_array_equal(x, x_before)


BAD_X = [
    (
        "dtype",
        lambda x: x.astype(np.float64),
        TypeError,
        "x: expected float32 C-contiguous array of shape (3, 4), got float64 array of shape (3, 4)",
    ),
    (
        "shape",
        lambda x: x.reshape(4, 3).copy(),
        ValueError,
        "x: expected float32 C-contiguous array of shape (3, 4), got float32 array of shape (4, 3)",
    ),
    (
        "strided",
        lambda x: np.ones((3, 8), np.float32)[:, ::2],
        TypeError,
        "x: expected float32 C-contiguous array of shape (3, 4), got non-contiguous float32 array of shape (3, 4)",
    ),
    (
        "scalar",
        lambda x: 1.0,
        TypeError,
        "x: expected float32 C-contiguous array of shape (3, 4), got float",
    ),
]


@pytest.mark.parametrize("make, exc, message", [r[1:] for r in BAD_X], ids=[r[0] for r in BAD_X])
def test_bad_x_raises_and_changes_nothing(make, exc, message):
    y, x = _arrays()
    y_before = y.copy()
    with pytest.raises(exc) as info:
        ops.axpy_(y, make(x), 2.0)
    assert str(info.value) == message
    np.testing.assert_array_equal(y, y_before)


def test_read_only_input_is_fine():
    y, x = _arrays()
    ops.axpy_(y, _readonly(x), 1.0)
    assert ops.squared_norm(_readonly(x)) == 12.0


def test_unaligned_arrays_refused():
    """Dereferencing a misaligned float* is undefined behaviour (UBSan): such
    arrays are refused, nothing written (docs/reliability.md); a copy works."""
    raw = np.zeros(4 * 101 + 1, dtype=np.uint8)
    y = raw[1:].view(np.float32)  # deliberately misaligned by one byte
    assert y.ctypes.data % 4 != 0 and y.flags.c_contiguous
    y[:] = 1.0
    with pytest.raises(ValueError, match=r"y: expected an array aligned .* \.copy\(\)"):
        ops.axpy_(y, np.full(101, 2.0, np.float32), 0.5)
    np.testing.assert_array_equal(y, np.ones(101, np.float32))
    y = y.copy()
    ops.axpy_(y, np.full(101, 2.0, np.float32), 0.5)
    np.testing.assert_array_equal(y, np.full(101, 2.0, np.float32))


def test_zero_copy_in_place():
    y, x = _arrays()
    address = y.ctypes.data
    out = ops.axpy_(y, x, 1.0)
    assert out is y and y.ctypes.data == address
