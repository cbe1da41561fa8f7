"""Issue 17 item 6 (numeric promises): what each kernel's docstring says about ISAs.

``SAME_ON_EVERY_ISA`` kernels are documented bit-identical across ISAs and
thread counts: checked exactly. The others are documented thread-count
independent but ISA dependent in the last bits: checked bit-identical across
thread counts per ISA, close across ISAs. ``axpy_`` is checked against its
exact rounding contract (one FMA on avx2/avx512, two roundings on scalar).
"""

from __future__ import annotations

import numpy as np
import pytest
import slimgrad
from slimgrad import nn, ops, prune, quant
from slimgrad.distill import kd_loss
from slimgrad.nn import functional as F

ISAS = slimgrad.available_isas()
rng = np.random.default_rng(0)
X = rng.standard_normal((37, 129)).astype(np.float32)
W = rng.standard_normal((64, 129)).astype(np.float32)
LABELS = rng.integers(0, 129, 37)


def _bn(x):
    m = nn.BatchNorm1d(x.shape[1])
    y = m(x)
    return y, m.backward(np.ones_like(y) * 0.3 + x)


SAME_ON_EVERY_ISA = {
    "find_nonfinite": lambda: ops.find_nonfinite(np.where(X > 2.5, np.inf, X)),
    "dropout": lambda: F.dropout(X, 0.3, 5),
    "gelu float64": lambda: F.gelu(X.astype(np.float64)),
    "quantize 8 channel": lambda: quant.quantize(W, 8).data,
    "quantize 4 group asym": lambda: (
        quant.quantize(W, 4, granularity="group", group_size=32, symmetric=False).data
    ),
    "quantize stochastic mse": lambda: quant.quantize(W, 3, rounding="stochastic", clip="mse").data,
    "dequantize": lambda: quant.quantize(W, 5).dequantize(),
    "matmul_int8": lambda: quant.matmul_int8(
        np.arange(9 * 64).astype(np.int8).reshape(9, 64),
        np.arange(5 * 64).astype(np.int8).reshape(5, 64),
    ),
    "gguf Q4_1": lambda: quant.gguf.quantize(W[:, :128], "Q4_1"),
    "gguf Q8_0 round trip": lambda: quant.gguf.dequantize(
        quant.gguf.quantize(W[:, :128], "Q8_0"), "Q8_0", (64, 128)
    ),
    "magnitude_mask": lambda: prune.magnitude_mask(W, 0.5),
    "nm_mask": lambda: prune.nm_mask(W[:, :128]),
}
THREADS_ONLY = {
    "axpy_ float32": lambda: ops.axpy_(X.copy(), X[::-1].copy(), 0.37),
    "squared_norm": lambda: ops.squared_norm(X),
    "gelu float32": lambda: F.gelu(X),
    "kd_loss": lambda: kd_loss(X, X[::-1].copy(), LABELS)[1],
    "batch_norm": lambda: np.concatenate([a.ravel() for a in _bn(X)]),
    "quant.matmul": lambda: quant.matmul(X, quant.quantize(W, 8)),
    "quant.matmul 4-bit groups": lambda: quant.matmul(
        X, quant.quantize(W, 4, granularity="group", group_size=32)
    ),
}


def _run(fn, isa, threads):
    with slimgrad.use_isa(isa), slimgrad.num_threads(threads):
        return np.asarray(fn())


@pytest.mark.parametrize("name", sorted(SAME_ON_EVERY_ISA))
def test_bit_identical_on_every_isa_and_thread_count(name):
    fn = SAME_ON_EVERY_ISA[name]
    ref = _run(fn, "scalar", 1)
    for isa in ISAS:
        for t in (1, 2):
            np.testing.assert_array_equal(_run(fn, isa, t), ref, err_msg=f"{isa}, {t} threads")


@pytest.mark.parametrize("name", sorted(THREADS_ONLY))
def test_thread_count_independent_isa_close(name):
    fn = THREADS_ONLY[name]
    ref = _run(fn, "scalar", 1).astype(np.float64)
    for isa in ISAS:
        one = _run(fn, isa, 1)
        np.testing.assert_array_equal(_run(fn, isa, 2), one, err_msg=f"{isa}: 1 vs 2 threads")
        np.testing.assert_allclose(one, ref, rtol=2e-5, atol=2e-5, err_msg=isa)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n", [0, 1, 7, 8, 9, 15, 16, 17, 1001])
def test_axpy_rounding_contract(dtype, n):
    """Values in [1, 2) make float64 (float32 case) / exact rationals (float64
    case) references exact: fma(alpha, x, y) rounded once on avx2/avx512;
    round(round(alpha * x) + y) on scalar, as the docstring says."""
    from fractions import Fraction

    r = np.random.default_rng(n)
    y0 = (1 + r.random(n)).astype(dtype)
    x = (1 + r.random(n)).astype(dtype)
    alpha = dtype(1.2345678)
    if dtype == np.float32:
        fused = (alpha.astype(np.float64) * x + y0).astype(
            np.float32
        )  # exact in float64, then one rounding
    else:
        fused = np.array(
            [
                float(Fraction(float(alpha)) * Fraction(float(a)) + Fraction(float(b)))
                for a, b in zip(x, y0)
            ],
            np.float64,
        )
    twice = (alpha * x).astype(dtype) + y0
    for isa in ISAS:
        for t in (1, 2):
            y = y0.copy()
            with slimgrad.use_isa(isa), slimgrad.num_threads(t):
                ops.axpy_(y, x, alpha)
            np.testing.assert_array_equal(
                y, twice if isa == "scalar" else fused, err_msg=f"{isa} {t}"
            )


def test_each_kernel_documents_its_isa_behaviour():
    from slimgrad.distill import _losses as losses
    from slimgrad.quant import _matmul

    for fn in (
        ops.axpy_,
        ops.squared_norm,
        ops.find_nonfinite,
        F.dropout,
        F.gelu,
        losses.kd_loss,
        _matmul.matmul,
        nn.BatchNorm1d,
        prune.magnitude_mask,
    ):
        assert "ISA" in (fn.__doc__ or ""), fn.__qualname__
    assert "every ISA" in quant._tensor.__doc__ and "every ISA" in quant.gguf.__doc__
