"""Issue 17 items 3 and 5: overlapping outputs, misaligned arrays (docs/reliability.md).

Element-wise kernels take their output as the very same array as an input
(in place) but refuse a partly overlapping view; every other kernel refuses
any overlap. Both with ``ValueError`` and nothing written. Arrays whose
address is not a multiple of their itemsize are refused (``ValueError``).
"""

from __future__ import annotations

import numpy as np
import pytest
import slimgrad
from slimgrad import _core, ops, quant
from slimgrad.distill import kd_loss
from slimgrad.nn import functional as F

ISAS = slimgrad.available_isas()


def _shifted(n: int, dtype=np.float32, shift: int = 1) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(buffer, a = buf[shift:], b = buf[:-shift]): two views overlapping partly."""
    buf = np.random.default_rng(0).standard_normal(n + shift).astype(dtype)
    return buf, buf[shift:], buf[:-shift]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_axpy_partial_overlap_refused_full_overlap_exact(dtype):
    buf, y, x = _shifted(101, dtype)
    before = buf.copy()
    with pytest.raises(ValueError, match="y: expected either the same array as x"):
        ops.axpy_(y, x, 0.5)
    np.testing.assert_array_equal(buf, before)
    for isa in ISAS:
        with slimgrad.use_isa(isa):
            y = before[:101].copy()
            ref = y.copy()
            ops.axpy_(ref, y.copy(), 0.5)
            ops.axpy_(y, y, 0.5)  # documented: y *= 1 + alpha
            np.testing.assert_array_equal(y, ref)


def test_quant_matmul_out_is_x_refused():
    rng = np.random.default_rng(1)
    qt = quant.quantize(rng.standard_normal((16, 16)).astype(np.float32), 8)
    x = rng.standard_normal((4, 16)).astype(np.float32)
    before = x.copy()
    with pytest.raises(ValueError, match="out: must not share memory with x"):
        quant.matmul(x, qt, out=x)
    np.testing.assert_array_equal(x, before)
    with pytest.raises(ValueError, match="must not share memory"):
        quant.matmul(x[:2], qt, out=x[1:3])
    np.testing.assert_array_equal(x, before)


def test_dropout_gelu_partial_overlap_refused_in_place_exact():
    for fn in (lambda x, out: F.dropout(x, 0.3, 7, out=out), lambda x, out: F.gelu(x, out=out)):
        buf, a, b = _shifted(257)
        before = buf.copy()
        with pytest.raises(ValueError, match="out: expected either the same array as x"):
            fn(b, a)
        np.testing.assert_array_equal(buf, before)
        x = before.copy()
        ref = fn(x.copy(), None)
        np.testing.assert_array_equal(fn(x, x), ref)


def test_kd_loss_out_overlap():
    rng = np.random.default_rng(2)
    s = rng.standard_normal((8, 10)).astype(np.float32)
    t = rng.standard_normal((8, 10)).astype(np.float32)
    labels = rng.integers(0, 10, 8)
    loss, grad = kd_loss(s.copy(), t, labels)
    big = np.zeros(90, np.float32)
    big[:80] = s.ravel()
    student, out = big[:80].reshape(8, 10), big[5:85].reshape(8, 10)
    before = big.copy()
    with pytest.raises(ValueError, match="out: expected either the same array as student_logits"):
        kd_loss(student, t, labels, out=out)
    np.testing.assert_array_equal(big, before)
    s2 = s.copy()
    loss2, grad2 = kd_loss(s2, t, labels, out=s2)  # documented: may overwrite the logits
    assert loss2 == loss and grad2 is s2
    np.testing.assert_array_equal(grad2, grad)
    with pytest.raises(ValueError, match="teacher_logits"):
        kd_loss(s.copy(), t, labels, out=t)


def test_every_other_output_refuses_overlap():
    rng = np.random.default_rng(3)
    w = rng.standard_normal((4, 64)).astype(np.float32)
    qt = quant.quantize(w, 8, granularity="group", group_size=32)
    spec = qt._core_spec()
    zp = qt.zero_point.ravel()
    # dequantize into memory that holds its own scales
    raw = np.zeros(4 * 64, np.float32)
    scale = raw[:8]
    scale[:] = qt.scale.ravel()
    before = raw.copy()
    with pytest.raises(ValueError, match="out: must not share memory with scale"):
        _core.quant.dequantize(qt.data, spec, scale, zp, raw.reshape(4, 64))
    np.testing.assert_array_equal(raw, before)
    # quantize's scales written over its input
    w2 = w.copy()
    with pytest.raises(ValueError, match="scale: must not share memory with w"):
        _core.quant.quantize(
            w2, spec, w2.ravel()[:8], np.zeros(8, np.int32), np.empty((4, 64), np.int8)
        )
    np.testing.assert_array_equal(w2, w)
    # GGUF blocks written over the weights
    with pytest.raises(ValueError, match="out: must not share memory with w"):
        _core.quant.gguf_quantize(w2, 0, w2.view(np.uint8).ravel()[: 8 * 34])
    np.testing.assert_array_equal(w2, w)
    # batch norm: y over x, two outputs in one array
    x = rng.standard_normal((6, 3)).astype(np.float32)
    sm, si = np.empty(3), np.empty(3)
    with pytest.raises(ValueError, match="y: must not share memory with x"):
        _core.nn.batch_norm_forward(x, x, None, None, None, None, sm, si, True, 0.1, 1e-5)
    with pytest.raises(ValueError, match="must not share memory"):
        _core.nn.batch_norm_forward(
            x, np.empty_like(x), None, None, None, None, sm, sm, True, 0.1, 1e-5
        )


def test_matmul_int8_out_over_input():
    a = np.zeros((4, 16), np.int8)
    b = np.ones((4, 16), np.int8)
    out = a.view(np.int32)  # (4, 4) int32 over a's bytes
    with pytest.raises(ValueError, match="out: must not share memory with a"):
        _core.quant.matmul_int8(a, b, out)


# -- alignment -------------------------------------------------------------------------
def _misaligned(n: int, dtype=np.float32) -> np.ndarray:
    raw = bytearray(n * np.dtype(dtype).itemsize + 1)
    a = np.frombuffer(raw, dtype, count=n, offset=1)
    assert a.flags.c_contiguous and not a.flags.aligned and a.flags.writeable
    return a


@pytest.mark.parametrize(
    "call",
    [
        lambda m: ops.axpy_(m, np.ones(m.size, np.float32), 1.0),
        lambda m: ops.axpy_(np.ones(m.size, np.float32), m, 1.0),
        lambda m: ops.squared_norm(m),
        lambda m: ops.find_nonfinite(m),
        lambda m: F.dropout(m, 0.5, 1, out=m),
        lambda m: F.gelu(np.ones(m.size, np.float32), out=m),
        lambda m: quant.quantize(m.reshape(3, 11), 8),
        lambda m: quant.matmul(m.reshape(3, 11), quant.quantize(np.ones((2, 11), np.float32))),
        lambda m: kd_loss(m.reshape(3, 11), np.ones((3, 11), np.float32), np.zeros(3, np.int64)),
    ],
    ids=[
        "axpy y",
        "axpy x",
        "squared_norm",
        "find_nonfinite",
        "dropout",
        "gelu",
        "quantize",
        "matmul",
        "kd_loss",
    ],
)
def test_misaligned_arrays_refused(call):
    m = _misaligned(33)
    before = m.copy()
    with pytest.raises(ValueError, match="aligned"):
        call(m)
    np.testing.assert_array_equal(m, before)
    call(m.copy())  # the same values, aligned: fine


def test_misaligned_float64_and_int_refused():
    with pytest.raises(ValueError, match="8-byte elements"):
        ops.squared_norm(_misaligned(5, np.float64))
    qt = quant.quantize(np.ones((2, 4), np.float32), 8)
    qt.scale = _misaligned(2)
    with pytest.raises(ValueError, match="scale: expected an array aligned to its 4-byte"):
        qt.dequantize()


def test_prune_apply_masks_refuses_mask_inside_a_weight():
    raw = np.ones(64, np.uint8)
    w = raw.view(np.float32).reshape(4, 4)
    mask = raw[:16].view(np.bool_).reshape(4, 4)
    before = raw.copy()
    with pytest.raises(ValueError, match="w: must not share memory with mask w"):
        _core.prune.apply_masks_([mask], [[w]], [["w"]])
    np.testing.assert_array_equal(raw, before)
    other = np.ones((4, 4), np.float32)  # the same weight twice is fine
    _core.prune.apply_masks_([mask.copy()], [[other, other]], [["a", "b"]])
