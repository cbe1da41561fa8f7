"""slimgrad.quant.gguf: bytes equal to the gguf package's, on random and adversarial inputs."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from conftest import run_everywhere
from slimgrad.quant import gguf as sg

gguf = pytest.importorskip("gguf")
gq = pytest.importorskip("gguf.quants")


def adversarial(rng):
    """(name, array) pairs aimed at each rounding rule of the reference."""
    yield "gaussian", rng.standard_normal((33, 256)).astype(np.float32)
    yield "ties", (rng.integers(-16, 17, (16, 128)) * 0.5).astype(np.float32)
    yield (
        "ties/127",
        (rng.integers(-254, 255, (16, 128)) * (np.float32(1.7) / 254)).astype(np.float32),
    )
    z = np.zeros((6, 64), np.float32)
    z[1] = 3.0
    z[2] = -1e-3
    z[3, :32] = -0.0
    z[4, 7] = -2.5
    z[5, :] = 65504.0
    yield "zeros/constants", z
    # Signed zeros as a block's min or max, in either order: the reference
    # keeps the first one (a vector reduction's order would not).
    s = np.abs(rng.standard_normal((4, 64))).astype(np.float32)
    s[0, [3, 9]] = [0.0, -0.0]  # min 0: +0 first
    s[1, [3, 9]] = [-0.0, 0.0]  # min 0: -0 first
    s[2:] = -s[2:]
    s[2, [3, 9]] = [0.0, -0.0]  # max 0
    s[3, [3, 9]] = [-0.0, 0.0]
    s[:, 40:44] = [0.0, -0.0, 0.0, -0.0]
    yield "signed zeros", s
    yield "huge", (rng.standard_normal((8, 64)) * 3e37).astype(np.float32)
    yield "max range", np.array([3e38, -3e38] * 32, np.float32).reshape(2, 32)
    yield "tiny 1e-38", (rng.standard_normal((8, 64)) * 1e-38).astype(np.float32)
    yield "subnormal", (rng.standard_normal((8, 64)) * 1e-42).astype(np.float32)
    yield "smallest subnormals", (rng.integers(-3, 4, (4, 64)) * 1e-45).astype(np.float32)
    a = rng.standard_normal((8, 64)).astype(np.float32)
    a[:, 5] = -np.abs(a).max(1) * 2  # negative absmax ...
    a[:, 9] = -a[:, 5]  # ... tied with a later positive one: the first wins
    yield "negative absmax", a
    yield "f16 overflow of d", (rng.standard_normal((8, 64)) * 1e7).astype(np.float32)
    yield "f16 subnormal d", (rng.standard_normal((8, 64)) * 1e-6).astype(np.float32)
    yield "3-d", rng.standard_normal((2, 3, 96)).astype(np.float32)


@pytest.mark.parametrize("type_name", sg.TYPES)
def test_bytes_equal_gguf_package(isa, threads, type_name, rng):
    qtype = gguf.GGMLQuantizationType[type_name]
    for name, w in adversarial(rng):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the reference warns on its own NaN casts
            ref = gq.quantize(w, qtype)
            ref_deq = gq.dequantize(ref, qtype)
        ours = sg.quantize(w, type_name)
        assert ours.dtype == np.uint8 and ours.shape == ref.shape, name
        np.testing.assert_array_equal(ours, ref, err_msg=name)
        deq = sg.dequantize(ours, type_name)
        np.testing.assert_array_equal(deq.view(np.uint32), ref_deq.view(np.uint32), err_msg=name)
        assert sg.dequantize(ours, qtype, w.shape).shape == w.shape


def test_identical_everywhere_on_a_large_tensor(rng):
    w = rng.standard_normal((67, 4096)).astype(np.float32)
    results = run_everywhere(lambda: [sg.quantize(w, t) for t in sg.TYPES])
    first = next(iter(results.values()))
    for key, outs in results.items():
        for a, b in zip(outs, first):
            np.testing.assert_array_equal(a, b, err_msg=str(key))


@pytest.mark.parametrize(
    "where",
    [
        [0],
        [31],
        [32 * 16],
        [32 * 17 + 5, 32 * 40],
        [32 * 17 + 5, 32 * 1500],
        [32 * 1500, 32 * 2047 + 31],
    ],
)
def test_first_nonfinite_is_named_everywhere(where, rng):
    # 2048 blocks: two chunks of 1024, each checked in runs of 16 blocks just
    # before they are quantized; a chunk stops at its first bad value, and the
    # first position over all chunks is the one named.
    w = rng.standard_normal((2, 32 * 1024)).astype(np.float32)
    flat = w.reshape(-1)
    for i, k in enumerate(where):
        flat[k] = np.inf if i else np.nan  # the first is NaN, a later one inf
    before = w.copy()
    first = np.unravel_index(where[0], w.shape)
    pattern = rf"w: non-finite value nan at index \({first[0]}, {first[1]}\)"

    def call():
        with pytest.raises(ValueError, match=pattern):
            sg.quantize(w, "Q4_0")
        return True

    assert all(run_everywhere(call).values())
    np.testing.assert_array_equal(w.view(np.uint32), before.view(np.uint32))


def test_accepts_gguf_enum_and_float64(rng):
    w = rng.standard_normal((2, 64))
    np.testing.assert_array_equal(
        sg.quantize(w, gguf.GGMLQuantizationType.Q4_0),
        gq.quantize(w.astype(np.float32), gguf.GGMLQuantizationType.Q4_0),
    )


def test_bad_inputs(rng):
    w = rng.standard_normal((2, 48)).astype(np.float32)
    with pytest.raises(
        ValueError, match=r"w: expected a last axis that is a multiple of 32, got shape \(2, 48\)"
    ):
        sg.quantize(w, "Q8_0")
    with pytest.raises(
        ValueError, match="type: expected one of 'Q8_0', 'Q4_0', 'Q4_1', 'Q5_0', 'Q5_1', got 'Q2_K'"
    ):
        sg.quantize(w[:, :32], "Q2_K")
    w = w[:, :32].copy()
    w[1, 3] = np.nan
    with pytest.raises(ValueError, match=r"w: non-finite value nan at index \(1, 3\)"):
        sg.quantize(w, "Q4_1")
    with pytest.raises(TypeError, match="data: expected a uint8 NumPy array"):
        sg.dequantize(np.zeros(34, np.int8), "Q8_0")
    with pytest.raises(
        ValueError, match=r"data: 33 bytes do not hold Q8_0 blocks of shape \(32,\)"
    ):
        sg.dequantize(np.zeros(33, np.uint8), "Q8_0", (32,))
