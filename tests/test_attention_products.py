"""The attention products (_core.nn.attention_scores / attention_context)
against float64 NumPy: every ISA, 1 vs 2 threads (the same bits), odd
sizes and vector tails, the threaded and the serial path; bad input raises
naming the argument and changes nothing."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import run_everywhere
from slimgrad import _core

_nn = _core.nn

# (batch, seq, heads, head_dim): a single entry, odd sizes below, at and
# above a vector (8 / 16 lanes; tiles of 2 vectors, rows in 4s), MiniLM's
# heads (threaded: >= 2^20 multiply-adds), a long sequence.
SHAPES = [
    (1, 1, 1, 1),
    (2, 5, 3, 7),
    (3, 33, 4, 17),
    (1, 16, 2, 16),
    (2, 9, 5, 33),
    (32, 32, 12, 32),
    (1, 70, 2, 40),
]


def _heads(t, heads):  # (b, s, h * d) -> (b, h, s, d), float64
    b, s, e = t.shape
    return t.reshape(b, s, heads, e // heads).transpose(0, 2, 1, 3).astype(np.float64)


def _merge(t):  # (b, h, s, d) -> (b, s, h * d)
    b, h, s, d = t.shape
    return t.transpose(0, 2, 1, 3).reshape(b, s, h * d)


def _within(y, ref, scale):
    """float32 sums in order against float64: a few ulps of sum |a| |b| (a
    wrong column or a missed term is off by O(1) of it)."""
    assert y.dtype == np.float32 and y.shape == ref.shape and y.flags.c_contiguous
    np.testing.assert_array_less(np.abs(y - ref), 1e-5 * scale + 1e-30)


def _same_bits_per_isa(results):
    for (isa, _), y in results.items():
        np.testing.assert_array_equal(y, results[(isa, 1)], err_msg=isa)


@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_scores_match_float64(shape, rng):
    b, s, h, d = shape
    a = rng.standard_normal((b, s, h * d)).astype(np.float32)
    c = rng.standard_normal((b, s, h * d)).astype(np.float32)
    ah, ch = _heads(a, h), _heads(c, h)
    ref, scale = ah @ ch.transpose(0, 1, 3, 2), np.abs(ah) @ np.abs(ch).transpose(0, 1, 3, 2)
    results = run_everywhere(lambda: _nn.attention_scores(a, c, h))
    for y in results.values():
        _within(y, ref, scale)
    _same_bits_per_isa(results)


@pytest.mark.parametrize("transpose", [False, True])
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_context_matches_float64(shape, transpose, rng):
    b, s, h, d = shape
    p = rng.standard_normal((b, h, s, s)).astype(np.float32)
    v = rng.standard_normal((b, s, h * d)).astype(np.float32)
    p64 = p.astype(np.float64)
    if transpose:
        p64 = p64.transpose(0, 1, 3, 2)
    vh = _heads(v, h)
    ref, scale = _merge(p64 @ vh), _merge(np.abs(p64) @ np.abs(vh))
    results = run_everywhere(lambda: _nn.attention_context(p, v, transpose))
    for y in results.values():
        _within(y, ref, scale)
    _same_bits_per_isa(results)


def test_bad_input_raises_and_changes_nothing(rng):
    a = rng.standard_normal((2, 5, 12)).astype(np.float32)
    p = rng.standard_normal((2, 3, 5, 5)).astype(np.float32)
    keep = [a.copy(), p.copy()]
    cases = [
        (lambda: _nn.attention_scores(a, a, 5), ValueError, "a: .*divisible by heads = 5"),
        (lambda: _nn.attention_scores(a, a, 0), ValueError, "heads = 0"),
        (
            lambda: _nn.attention_scores(a[0].copy(), a[0].copy(), 3),
            ValueError,
            "a: expected a 3-D",
        ),
        (lambda: _nn.attention_scores(a, a[:, :4].copy(), 3), ValueError, "c"),
        (lambda: _nn.attention_scores(a.astype(np.float64), a, 3), TypeError, "a"),
        (lambda: _nn.attention_scores(a[:, ::2], a[:, ::2], 3), TypeError, "a: .*C-contiguous"),
        (lambda: _nn.attention_context(p[0].copy(), a), ValueError, "p: expected a 4-D"),
        (lambda: _nn.attention_context(p[:, :, :, :4].copy(), a), ValueError, "p: expected a 4-D"),
        (lambda: _nn.attention_context(p, a[:, :4].copy()), ValueError, "v: expected shape"),
        (lambda: _nn.attention_context(p, a[:1].copy()), ValueError, "v: expected shape"),
        (lambda: _nn.attention_context(p[:, :2].copy(), a[:, :, :11].copy()), ValueError, "v: "),
        (lambda: _nn.attention_context(p.astype(np.float16), a), TypeError, "p"),
    ]
    for call, error, match in cases:
        with pytest.raises(error, match=match):
            call()
    for before, after in zip(keep, (a, p), strict=True):
        np.testing.assert_array_equal(before, after)


def test_empty_shapes():
    for b, s, h, d in ((0, 3, 2, 4), (2, 0, 2, 4), (2, 3, 2, 0)):
        a = np.ones((b, s, h * d), np.float32)
        scores = _nn.attention_scores(a, a, h)
        assert scores.shape == (b, h, s, s) and not scores.any()
        out = _nn.attention_context(scores, a)
        assert out.shape == a.shape
