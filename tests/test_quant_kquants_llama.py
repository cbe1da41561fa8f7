"""K-quant bytes equal llama.cpp's, through the ggml library that
llama-cpp-python ships (``ggml_quantize_chunk`` via ctypes), with and without
an importance matrix, on random and adversarial blocks, on every ISA."""

from __future__ import annotations

import numpy as np
import pytest
from slimgrad.bench._ggml import load_ggml
from slimgrad.quant import kquants as kq
from test_quant_kquants import blocks, imatrix_for

ggml = load_ggml()
if ggml is None:
    pytest.skip(
        "llama-cpp-python (its ggml shared library) is not installed: "
        "the llama.cpp oracle for the K-quants cannot run",
        allow_module_level=True,
    )


def more_blocks(rng):
    yield from blocks(rng)
    yield "wide rows", rng.standard_normal((3, 4096)).astype(np.float32)
    yield "laplace", rng.laplace(size=(8, 768)).astype(np.float32)
    yield "student-t outliers", rng.standard_t(2, size=(8, 512)).astype(np.float32)
    m = rng.standard_normal((4, 256)).astype(np.float32)
    m[:, ::32] *= 50  # an outlier in every sub-block
    yield "outlier per sub-block", m
    yield "large offsets", (rng.standard_normal((4, 256)) + 10).astype(np.float32)
    yield "negative offsets", (rng.standard_normal((4, 256)) - 10).astype(np.float32)


@pytest.mark.parametrize("type_name", kq.TYPES)
@pytest.mark.parametrize("use_imatrix", [False, True], ids=["ref", "imatrix"])
def test_bytes_equal_llama_cpp(isa, type_name, use_imatrix, rng):
    for name, w in more_blocks(rng):
        w2 = np.ascontiguousarray(w.reshape(-1, w.shape[-1]))
        qw = imatrix_for(np.random.default_rng(3), w.shape[-1]) if use_imatrix else None
        ref = ggml.quantize(type_name, w2, qw)
        ours = kq.quantize(w2, type_name, imatrix=qw)
        assert ours.shape == ref.shape, name
        if not np.array_equal(ours, ref):
            ts = kq.TYPE_SIZE[type_name]
            diff = np.flatnonzero((ours != ref).reshape(-1, ts).any(axis=1))
            pytest.fail(f"{name}: {diff.size} of {ours.size // ts} blocks differ, first {diff[:8]}")
        np.testing.assert_array_equal(
            kq.dequantize(ours, type_name).view(np.uint32),
            ggml.dequantize(type_name, ref, w2.size).reshape(w2.shape).view(np.uint32),
            err_msg=name,
        )


def test_imatrix_with_zero_and_tiny_weights(rng):
    w = rng.standard_normal((6, 512)).astype(np.float32)
    qw = imatrix_for(rng, 512)
    qw[:64] = 0.0
    qw[64:96] = 1e-30
    for t in kq.TYPES:
        np.testing.assert_array_equal(
            kq.quantize(w, t, imatrix=qw), ggml.quantize(t, w, qw), err_msg=t
        )
