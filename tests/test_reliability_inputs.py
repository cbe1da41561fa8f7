"""Issue 17 item 7 and the bad-input sweep (docs/reliability.md).

The sweep calls public kernels with one argument replaced by a bad value
(wrong type, dtype, shape, layout, byte order, alignment, out-of-range
number...). Each call must either work or raise ``TypeError`` /
``ValueError``, leaving the given arrays unchanged; anything else (another
exception type, a crash, an ASan report in the sanitizer job) fails.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import slimgrad
from slimgrad import ops, prune, quant
from slimgrad.distill import kd_loss
from slimgrad.nn import functional as F


# -- item 7: validation gaps -----------------------------------------------------------
@pytest.mark.parametrize("dtype", [np.int32, np.int64, np.uint8, np.bool_])
def test_structured_mask_refuses_non_float(dtype):
    w = np.ones((4, 3), dtype)
    with pytest.raises(
        TypeError, match=f"w: expected a floating-point array, got {np.dtype(dtype).name}"
    ):
        prune.structured_mask(w, 0.5)


@pytest.mark.parametrize("alpha", ["x", None, [1.0], 1j, np.array([1.0, 2.0])])
def test_axpy_alpha_named(alpha):
    y = np.ones(3, np.float32)
    with pytest.raises(TypeError, match="alpha: expected a real number"):
        ops.axpy_(y, np.ones(3, np.float32), alpha)
    np.testing.assert_array_equal(y, 1)


@pytest.mark.parametrize("alpha", [2, 2.5, np.float32(2), np.float64(-1), np.int64(3)])
def test_axpy_alpha_real_numbers_accepted(alpha):
    y = np.ones(3, np.float64)
    ops.axpy_(y, np.ones(3, np.float64), alpha)
    np.testing.assert_array_equal(y, 1 + float(alpha))


@pytest.mark.parametrize("n", [2**31, 2**64, 10**6, 0, -1])
def test_set_num_threads_range_named(n):
    before = slimgrad.get_num_threads()
    with pytest.raises(ValueError, match=r"n: expected a thread count in \[1, 4096\]"):
        slimgrad.set_num_threads(n)
    assert slimgrad.get_num_threads() == before


@pytest.mark.parametrize(
    "scale", [np.ones(2, np.complex64), np.array([1 + 1j, 2]), np.array(["a", "b"])]
)
def test_from_codes_refuses_non_real_scale(scale):
    with pytest.raises(TypeError, match="scale: expected real numbers"):
        quant.QuantizedTensor.from_codes(np.zeros((2, 4), np.int8), scale)


def test_from_codes_refuses_complex_zero_point():
    with pytest.raises(TypeError, match="zero_point: expected real numbers"):
        quant.QuantizedTensor.from_codes(
            np.zeros((2, 4), np.uint8),
            np.ones(2, np.float32),
            np.ones(2, np.complex64),
            symmetric=False,
        )


# -- the sweep ---------------------------------------------------------------------------
def _bad_arrays(good: np.ndarray) -> list[tuple[str, object]]:
    """Bad replacements for an array argument shaped like ``good``."""
    raw = bytearray(good.nbytes + 1)
    misaligned = np.frombuffer(raw, good.dtype, count=good.size, offset=1).reshape(good.shape)
    ro = good.copy()
    ro.flags.writeable = False
    cases = [
        ("None", None),
        ("str", "x"),
        ("list", good.tolist()),
        ("int64", good.astype(np.int64)),
        ("bool", good.astype(bool)),
        ("complex", good.astype(np.complex64)),
        ("float16", good.astype(np.float16)),
        ("object", good.astype(object)),
        ("0-d", np.array(1.0, good.dtype)),
        ("empty", np.empty((0,), good.dtype)),
        ("wrong shape", np.ones(good.size + 1, good.dtype)),
        ("transposed", np.asfortranarray(good.T) if good.ndim > 1 else good[::-1]),
        ("strided", np.repeat(good, 2, axis=-1)[..., ::2]),
        ("big-endian", good.astype(good.dtype.newbyteorder(">"))),
        ("misaligned", misaligned),
        ("read-only", ro),
    ]
    if good.dtype.kind == "f":
        cases += [
            ("nan", np.full_like(good, np.nan)),
            ("inf", np.full_like(good, np.inf)),
            ("huge", np.full_like(good, 3e38)),
        ]
    else:
        cases += [("float", good.astype(np.float32)), ("negative", -np.ones_like(good))]
    return cases


_NUMBERS = [
    ("None", None),
    ("str", "x"),
    ("nan", float("nan")),
    ("inf", float("inf")),
    ("-1", -1),
    ("0", 0),
    ("2**64", 2**64),
    ("-2**63", -(2**63)),
    ("complex", 1j),
    ("list", [1]),
    ("bool", True),
    ("1e308", 1e308),
]
_STRINGS = [("None", None), ("int", 1), ("unknown", "nope"), ("empty", ""), ("bytes", b"x")]


def _cases():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((6, 32)).astype(np.float32)
    w = rng.standard_normal((4, 32)).astype(np.float32)
    qt = quant.quantize(w, 8)
    q4 = quant.quantize(w, 4, granularity="group", group_size=16)
    labels = rng.integers(0, 32, 6)
    # (name, function, {arg: good value}, {arg: kind})
    return [
        (
            "axpy_",
            ops.axpy_,
            dict(y=x.copy(), x=x.copy(), alpha=0.5),
            dict(y="a", x="a", alpha="n"),
        ),
        ("squared_norm", ops.squared_norm, dict(x=x.copy()), dict(x="a")),
        ("find_nonfinite", ops.find_nonfinite, dict(x=x.copy()), dict(x="a")),
        (
            "dropout",
            F.dropout,
            dict(x=x.copy(), p=0.5, seed=1, stream=0, out=np.empty_like(x)),
            dict(x="a", p="n", seed="n", stream="n", out="a"),
        ),
        (
            "gelu",
            F.gelu,
            dict(x=x.copy(), approximate="none", out=np.empty_like(x)),
            dict(x="a", approximate="s", out="a"),
        ),
        (
            "kd_loss",
            kd_loss,
            dict(
                student_logits=x.copy(),
                teacher_logits=x.copy(),
                labels=labels,
                temperature=2.0,
                alpha=0.5,
                reduction="batchmean",
                out=np.empty_like(x),
            ),
            dict(
                student_logits="a",
                teacher_logits="a",
                labels="a",
                temperature="n",
                alpha="n",
                reduction="s",
                out="a",
            ),
        ),
        (
            "magnitude_mask",
            prune.magnitude_mask,
            dict(w=w.copy(), sparsity=0.5),
            dict(w="a", sparsity="n"),
        ),
        (
            "nm_mask",
            prune.nm_mask,
            dict(w=w.copy(), n=2, m=4, axis=-1),
            dict(w="a", n="n", m="n", axis="n"),
        ),
        (
            "structured_mask",
            prune.structured_mask,
            dict(w=w.copy(), amount=0.5, axis=0, norm=1),
            dict(w="a", amount="n", axis="n", norm="n"),
        ),
        (
            "quantize",
            quant.quantize,
            dict(w=w.copy(), bits=4, granularity="group", group_size=16),
            dict(w="a", bits="n", granularity="s", group_size="n"),
        ),
        (
            "matmul",
            quant.matmul,
            dict(x=x.copy(), qt=qt, out=np.empty((6, 4), np.float32)),
            dict(x="a", out="a"),
        ),
        (
            "matmul q4",
            quant.matmul,
            dict(x=x.copy(), qt=q4, out=np.empty((6, 4), np.float32)),
            dict(x="a", out="a"),
        ),
        ("dequantize", qt.dequantize, dict(out=np.empty((4, 32), np.float32)), dict(out="a")),
        (
            "from_codes",
            quant.QuantizedTensor.from_codes,
            dict(codes=qt.codes(), scale=qt.scale.copy(), bits=8, granularity="channel", axis=0),
            dict(codes="a", scale="a", bits="n", granularity="s", axis="n"),
        ),
        ("fake_quantize", quant.fake_quantize, dict(x=w.copy(), bits=8), dict(x="a", bits="n")),
        ("set_num_threads", slimgrad.set_num_threads, dict(n=1), dict(n="n")),
    ]


def sweep() -> dict[str, int]:
    """Runs every case; returns counts. Raises AssertionError on anything unclean
    (warnings, e.g. NumPy's on casting NaN, are not failures here)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return _sweep()


def _sweep() -> dict[str, int]:
    counts = {"tried": 0, "clean error": 0, "accepted": 0}
    threads = slimgrad.get_num_threads()
    for fname, fn, good, kinds in _cases():
        for arg, kind in kinds.items():
            bads = _bad_arrays(good[arg]) if kind == "a" else _NUMBERS if kind == "n" else _STRINGS
            for label, bad in bads:
                kwargs = {
                    k: (v.copy() if isinstance(v, np.ndarray) else v) for k, v in good.items()
                }
                kwargs[arg] = bad
                snapshot = {
                    k: v.copy()
                    for k, v in kwargs.items()
                    if isinstance(v, np.ndarray) and v.dtype != object
                }
                counts["tried"] += 1
                try:
                    fn(**kwargs)
                except (TypeError, ValueError):
                    counts["clean error"] += 1
                    for k, v in snapshot.items():  # nothing modified
                        np.testing.assert_array_equal(
                            kwargs[k], v, err_msg=f"{fname}({arg}={label}) wrote {k}"
                        )
                except Exception as e:  # noqa: BLE001 - the point of the sweep
                    raise AssertionError(f"{fname}({arg}={label}): {type(e).__name__}: {e}") from e
                else:
                    counts["accepted"] += 1
    slimgrad.set_num_threads(threads)
    return counts


def test_bad_input_sweep():
    counts = sweep()
    assert counts["tried"] > 300
    assert counts["clean error"] + counts["accepted"] == counts["tried"]


if __name__ == "__main__":  # the counts for docs/reliability.md
    print(sweep())
