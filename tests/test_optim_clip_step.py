"""Issue 14 item 4: ``opt.step(grads, max_norm=...)``, gradient clipping fused
into the step, equals ``clip_grad_norm_(grads, max_norm)`` followed by
``opt.step(grads)``.

What is compared: parameters, every state array and the step counts after
several steps, with ``assert_array_equal`` (bit for bit) for float32 and
float64 gradients, where both paths do the same arithmetic (the clipped
gradient ``fl(g * coef)`` in the gradient's dtype, then the same update); the
returned norm (``last_grad_norm``) equals ``clip_grad_norm_``'s return value
exactly. float16/bfloat16 gradients are scaled in float32 without rounding
back, so they are compared bit for bit where the factor is a power of two
(the product is then exact in the half type) and to a float64 reference
otherwise. Every elementwise optimizer, every ISA, 1 and 2 threads; the
fused step never writes the gradients.
"""

from __future__ import annotations

import functools
import math

import ml_dtypes
import numpy as np
import pytest
import slimgrad
from slimgrad import _core, optim
from slimgrad.optim._fused import OPTIMIZER_TABLE, FusedOptimizer

# Options that exercise each algorithm's state (others run with defaults).
KWARGS = {
    "sgd": dict(lr=0.05, momentum=0.9, weight_decay=0.01),
    "adagrad": dict(lr=0.05),
    "rmsprop": dict(lr=0.01, momentum=0.5, centered=True),
    "adadelta": dict(),
    "adam": dict(lr=0.01, amsgrad=True, weight_decay=0.01),
    "adamax": dict(lr=0.01),
    "nadam": dict(lr=0.01),
    "radam": dict(lr=0.01),
    "lion": dict(lr=0.01),
}


def _subclasses(cls):
    for sub in cls.__subclasses__():
        yield sub
        yield from _subclasses(sub)


# Every elementwise row of the descriptor table, through its optimizer class.
ELEMENTWISE = {}
for _cls in _subclasses(FusedOptimizer):
    _row = OPTIMIZER_TABLE.get(_cls._algo)
    if _row and _row["kind"] == "elementwise" and _cls._algo not in ELEMENTWISE:
        ELEMENTWISE[_cls._algo] = _cls
ALGOS = sorted(ELEMENTWISE)

# Sizes: empty, 1, around the vector widths, and a large odd one (several
# pieces of the planner, so two threads really split the work).
SHAPES = [(0,), (1,), (15,), (17,), (3, 11), (100_003,)]


def _problem(rng, dtype, shapes=SHAPES, scale=1.0):
    params = [rng.standard_normal(s).astype(dtype) for s in shapes]
    grads = [[(rng.standard_normal(s) * scale).astype(dtype) for s in shapes] for _ in range(3)]
    return params, grads


def _state(opt):
    return {
        k: {n: (v.copy() if isinstance(v, np.ndarray) else v) for n, v in st.items()}
        for k, st in opt.state.items()
    }


def _assert_same_state(a, b):
    assert a.keys() == b.keys()
    for k in a:
        assert a[k].keys() == b[k].keys()
        for n in a[k]:
            if isinstance(a[k][n], np.ndarray):
                np.testing.assert_array_equal(a[k][n], b[k][n], err_msg=f"{k} {n}")
            else:
                assert a[k][n] == b[k][n], (k, n)


def _make(cls, ps, kw, opt_kw):
    opt = cls(ps, **kw, **opt_kw)
    if callable(getattr(opt, "train", None)):
        opt.train()  # Schedule-Free optimizers step in train mode
    return opt


def _steps(cls, kw, params, grads, max_norm, norm_type=2.0, *, inside, **opt_kw):
    """Steps on copies of ``params``: ``clip_grad_norm_`` then ``step`` (``inside``
    False), or ``step(max_norm=...)``, which must only read the gradients."""
    ps = [p.copy() for p in params]
    opt = _make(cls, ps, kw, opt_kw)
    norms = []
    for g in grads:
        copy = [x.copy() for x in g]
        if not inside:
            norms.append(optim.clip_grad_norm_(copy, max_norm, norm_type))
            opt.step(copy)
            continue
        assert opt.step(g, max_norm=max_norm, norm_type=norm_type)
        norms.append(opt.last_grad_norm)
        for x, y in zip(g, copy):
            np.testing.assert_array_equal(x, y)
    return ps, opt, norms


_clip_then_step = functools.partial(_steps, inside=False)
_fused = functools.partial(_steps, inside=True)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("algo", ALGOS)
def test_fused_equals_clip_then_step(algo, dtype, isa, threads):
    cls, kw = ELEMENTWISE[algo], KWARGS.get(algo, {})
    params, grads = _problem(np.random.default_rng(1), dtype)
    total = math.sqrt(sum(float(np.sum(g.astype(np.float64) ** 2)) for g in grads[0]))
    for max_norm in (0.25 * total, 10 * total):  # clipping active, then inactive
        ref_p, ref_opt, ref_n = _clip_then_step(cls, kw, params, grads, max_norm)
        got_p, got_opt, got_n = _fused(cls, kw, params, grads, max_norm)
        assert got_n == ref_n
        for a, b in zip(got_p, ref_p):
            np.testing.assert_array_equal(a, b)
        _assert_same_state(_state(got_opt), _state(ref_opt))


@pytest.mark.parametrize("norm_type", [1.0, 3.0, math.inf])
def test_other_norm_types(norm_type, isa):
    params, grads = _problem(np.random.default_rng(2), np.float32)
    ref_p, ref_opt, ref_n = _clip_then_step(optim.AdamW, {}, params, grads, 0.5, norm_type)
    got_p, got_opt, got_n = _fused(optim.AdamW, {}, params, grads, 0.5, norm_type)
    assert got_n == ref_n
    for a, b in zip(got_p, ref_p):
        np.testing.assert_array_equal(a, b)
    _assert_same_state(_state(got_opt), _state(ref_opt))


def test_same_bits_for_one_and_two_threads(isa):
    params, grads = _problem(np.random.default_rng(3), np.float32, shapes=[(300_001,), (7,)])
    out = []
    for n in (1, 2):
        with slimgrad.num_threads(n):
            ps, opt, norms = _fused(optim.Adam, {}, params, grads, 1.0)
        out.append((ps, _state(opt), norms))
    assert out[0][2] == out[1][2]
    for a, b in zip(out[0][0], out[1][0]):
        np.testing.assert_array_equal(a, b)
    _assert_same_state(out[0][1], out[1][1])


def test_norm_matches_torch_and_float64():
    torch = pytest.importorskip("torch")
    params, grads = _problem(np.random.default_rng(4), np.float32)
    ps, opt, norms = _fused(optim.AdamW, dict(lr=1e-2), params, grads, 1.0)
    # torch: clip_grad_norm_ then AdamW (foreach=False), float32.
    tp = [torch.from_numpy(p.copy()).requires_grad_() for p in params]
    topt = torch.optim.AdamW(tp, lr=1e-2, foreach=False)
    for step, g in enumerate(grads):
        for p, x in zip(tp, g):
            p.grad = torch.from_numpy(x.copy())
        tn = float(torch.nn.utils.clip_grad_norm_(tp, 1.0, foreach=False))
        ref = math.sqrt(sum(float(np.sum(x.astype(np.float64) ** 2)) for x in g))
        assert norms[step] == pytest.approx(ref, rel=1e-6)
        assert norms[step] == pytest.approx(tn, rel=1e-5)
        topt.step()
    for a, b in zip(ps, tp):
        np.testing.assert_allclose(a, b.detach().numpy(), rtol=2e-5, atol=2e-6)


def test_mixed_dtypes_and_groups_equal_clip_then_step(isa):
    rng = np.random.default_rng(5)
    make = lambda: {  # noqa: E731
        "a": rng.standard_normal((40, 33)).astype(np.float32),
        "b": rng.standard_normal(70_001),
        "c": rng.standard_normal(5).astype(np.float32),
    }
    params = make()
    grads = [make() for _ in range(3)]

    def build(ps):
        return optim.Adam(
            [{"params": {"a": ps["a"], "b": ps["b"]}}, {"params": {"c": ps["c"]}, "lr": 0.1}],
            lr=0.01,
        )

    ref_ps = {k: v.copy() for k, v in params.items()}
    ref = build(ref_ps)
    got_ps = {k: v.copy() for k, v in params.items()}
    got = build(got_ps)
    for g in grads:
        gc = {k: v.copy() for k, v in g.items()}
        n = optim.clip_grad_norm_(gc, 2.0)
        ref.step(gc)
        got.step(g, max_norm=2.0)
        assert got.last_grad_norm == n
    for k in params:
        np.testing.assert_array_equal(got_ps[k], ref_ps[k])
    _assert_same_state(_state(got), _state(ref))


@pytest.mark.parametrize("dtype", [np.float16, ml_dtypes.bfloat16], ids=["float16", "bfloat16"])
@pytest.mark.parametrize("master_weights", [True, False])
def test_half_params(dtype, master_weights, isa, threads):
    rng = np.random.default_rng(6)
    shapes = [(17,), (70_001,)]
    params = [rng.standard_normal(s).astype(dtype) for s in shapes]
    # Magnitudes in [0.01, 1): halving keeps float16 values normal (exact).
    grads = [(rng.uniform(0.01, 1.0, s) * rng.choice([-1.0, 1.0], s)).astype(dtype) for s in shapes]
    # The norm of half gradients is the float32 norm of their widened values.
    wide = [g.astype(np.float32) for g in grads]
    total, bad = _core.optim.grad_norm(grads, None, 2.0)
    assert bad is None
    assert total == optim.clip_grad_norm_([w.copy() for w in wide], math.inf)
    ref = math.sqrt(sum(np.sum(w.astype(np.float64) ** 2) for w in wide))
    assert total == pytest.approx(ref, rel=1e-5)  # float32 sums within a piece
    # A factor of exactly 0.5 (max_norm = 0.5 (total + 1e-6) in float32): the
    # clipped gradient is exact in the half type, so the fused step equals
    # the step on grads * 0.5, bit for bit.
    f32 = np.float32
    max_norm = float(f32(0.5) * (f32(total) + f32(1e-6)))
    kw = dict(lr=0.01, master_weights=master_weights)
    ref_p = [p.copy() for p in params]
    ref = optim.AdamW(ref_p, **kw)
    ref.step([(g.astype(np.float32) * f32(0.5)).astype(dtype) for g in grads])
    got_p = [p.copy() for p in params]
    got = optim.AdamW(got_p, **kw)
    got.step(grads, max_norm=max_norm)
    assert got.last_grad_norm == total
    for a, b in zip(got_p, ref_p):
        np.testing.assert_array_equal(a.view(np.uint16), b.view(np.uint16))
    _assert_same_state(_state(got), _state(ref))


def test_half_params_general_factor_against_float64():
    rng = np.random.default_rng(7)
    g = (rng.standard_normal(1001) * 0.1).astype(ml_dtypes.bfloat16)
    p = rng.standard_normal(1001).astype(ml_dtypes.bfloat16)
    master = p.astype(np.float32)
    opt = optim.SGD([p], lr=0.5)
    opt.step([g], max_norm=0.3)
    g64 = g.astype(np.float64)
    coef = 0.3 / (np.sqrt(np.sum(g64**2)) + 1e-6)
    np.testing.assert_allclose(opt.state[0]["master"], master - 0.5 * coef * g64, rtol=1e-6)


def _snapshot(params, opt, grads):
    return [p.copy() for p in params], _state(opt), [g.copy() for g in grads]


def _assert_unchanged(params, opt, grads, snap):
    for a, b in zip(params, snap[0]):
        np.testing.assert_array_equal(a, b)
    _assert_same_state(_state(opt), snap[1])
    for a, b in zip(grads, snap[2]):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_nonfinite_raise_and_skip_modify_nothing(bad, isa):
    rng = np.random.default_rng(8)
    params = [rng.standard_normal(s).astype(np.float32) for s in [(9,), (50_000,), (4,)]]
    grads = [np.ones_like(p) for p in params]
    for policy in ("raise", "skip"):
        opt = optim.Adam(params, nonfinite=policy)
        opt.step(grads, max_norm=1.0)  # state exists: a failed step must not touch it
        g = [x.copy() for x in grads]
        g[1][40_000] = bad
        snap = _snapshot(params, opt, g)
        if policy == "raise":
            with pytest.raises(
                FloatingPointError, match=r"grads\[1\] has a non-finite value at index 40000"
            ):
                opt.step(g, max_norm=1.0)
        else:
            assert opt.step(g, max_norm=1.0) is False
        _assert_unchanged(params, opt, g, snap)
        assert not math.isfinite(opt.last_grad_norm)
        # A first step that fails leaves no state behind.
        fresh = optim.Adam([p.copy() for p in params], nonfinite=policy)
        if policy == "raise":
            with pytest.raises(FloatingPointError):
                fresh.step(g, max_norm=1.0)
        else:
            assert fresh.step(g, max_norm=1.0) is False
        assert fresh.state == {}


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_nonfinite_ignore_equals_clip_then_step(bad, isa):
    # torch's behaviour: the NaN/inf norm scales every gradient (inf: by 0, NaN at inf).
    rng = np.random.default_rng(9)
    params, grads = _problem(rng, np.float32, shapes=[(33,), (40_000,)])
    grads[1][1][7] = bad
    ref_p, ref_opt, ref_n = _clip_then_step(optim.AdamW, {}, params, grads, 1.0, nonfinite="ignore")
    got_p, got_opt, got_n = _fused(optim.AdamW, {}, params, grads, 1.0, nonfinite="ignore")
    np.testing.assert_array_equal(got_n, ref_n)
    for a, b in zip(got_p, ref_p):
        np.testing.assert_array_equal(a, b)
    _assert_same_state(_state(got_opt), _state(ref_opt))


@pytest.mark.parametrize("policy", ["raise", "skip", "ignore"])
def test_error_if_nonfinite_raises_before_anything(policy):
    params = [np.ones(10, np.float32), np.ones(3, np.float32)]
    opt = optim.AdamW(params, nonfinite=policy)
    g = [np.ones(10, np.float32), np.array([1, np.inf, 1], np.float32)]
    snap = _snapshot(params, opt, g)
    with pytest.raises(RuntimeError, match="non-finite, so it cannot be clipped"):
        opt.step(g, max_norm=1.0, error_if_nonfinite=True)
    _assert_unchanged(params, opt, g, snap)
    assert opt.state == {}
    with pytest.raises(RuntimeError, match="non-finite, so it cannot be clipped"):
        optim.clip_grad_norm_([x.copy() for x in g], 1.0, error_if_nonfinite=True)


def test_float64_norm_overflow_is_not_a_nonfinite_gradient():
    # Finite float64 gradients whose squares overflow: the total is inf, the
    # scan finds no bad element, the factor is 0 - as clip-then-step.
    params = [np.ones(4), np.ones(3)]
    grads = [[np.full(4, 1e200), np.ones(3)]]
    ref_p, ref_opt, ref_n = _clip_then_step(optim.SGD, dict(lr=0.1), params, grads, 1.0)
    got_p, got_opt, got_n = _fused(optim.SGD, dict(lr=0.1), params, grads, 1.0)
    assert got_n == ref_n == [math.inf]
    for a, b in zip(got_p, ref_p):
        np.testing.assert_array_equal(a, b)


def test_bad_arguments_modify_nothing():
    params = [np.ones(5, np.float32)]
    opt = optim.Adam(params)
    g = [np.ones(5, np.float32)]
    for kw, msg in [
        (dict(max_norm=math.nan), "max_norm: expected a number"),
        (dict(max_norm=1.0, norm_type=0.0), "norm_type: expected a number > 0"),
        (dict(max_norm=1.0, norm_type=-2.0), "norm_type: expected a number > 0"),
    ]:
        with pytest.raises(ValueError, match=msg):
            opt.step(g, **kw)
    # A bad buffer is reported before the norm is read.
    with pytest.raises(TypeError, match=r"grads\[0\]"):
        opt.step([np.ones(5, np.float64)], max_norm=1.0)
    assert opt.state == {} and np.all(params[0] == 1)


def test_none_gradients_are_left_out_of_the_norm():
    rng = np.random.default_rng(10)
    params, grads = _problem(rng, np.float32, shapes=[(20,), (30,), (10,)])
    ref_p = [p.copy() for p in params]
    ref = optim.Adam(ref_p)
    got_p = [p.copy() for p in params]
    got = optim.Adam(got_p)
    for g in grads:
        present = [g[0].copy(), g[2].copy()]
        n = optim.clip_grad_norm_(present, 0.1)
        ref.step([present[0], None, present[1]])
        got.step([g[0], None, g[2]], max_norm=0.1)
        assert got.last_grad_norm == n
    for a, b in zip(got_p, ref_p):
        np.testing.assert_array_equal(a, b)
    _assert_same_state(_state(got), _state(ref))


@pytest.mark.parametrize(
    "cls,kw",
    [(optim.LAMB, dict(lr=0.01)), (optim.Adafactor, dict(lr=0.01)), (optim.AdamW8bit, dict())],
    ids=["LAMB", "Adafactor", "AdamW8bit"],
)
def test_multipass_optimizers_equal_clip_then_step(cls, kw):
    # Their kernels take no factor: they step on clipped copies (the user's
    # gradients are still not written).
    params, grads = _problem(np.random.default_rng(11), np.float32, shapes=[(64, 40), (300,)])
    ref_p, ref_opt, ref_n = _clip_then_step(cls, kw, params, grads, 0.5)
    got_p, got_opt, got_n = _fused(cls, kw, params, grads, 0.5)
    assert got_n == ref_n
    for a, b in zip(got_p, ref_p):
        np.testing.assert_array_equal(a, b)
    _assert_same_state(_state(got_opt), _state(ref_opt))


def test_clip_grad_norm_nan_factor_like_torch():
    # inf / inf: torch.clamp keeps the NaN factor; both paths of clip_grad_norm_ agree.
    for dtypes in ([np.float32], [np.float32, np.float64]):
        g = [np.array([np.inf, 1.0], dtype=d) for d in dtypes]
        optim.clip_grad_norm_(g, math.inf)
        assert all(np.isnan(x).all() for x in g)


@pytest.mark.parametrize("where", [(0, 5), (2, 99_999), (1, 65_536)])
def test_unclipped_check_with_threads_modifies_nothing(where, isa, threads):
    # The default step's check and update share one parallel region (no
    # barrier between them): a bad gradient anywhere still stops every update.
    rng = np.random.default_rng(12)
    params = [rng.standard_normal(100_003).astype(np.float32) for _ in range(3)]
    grads = [rng.standard_normal(100_003).astype(np.float32) for _ in range(3)]
    opt = optim.Adam(params)
    opt.step(grads)
    ref_p = [p.copy() for p in params]
    ref = optim.Adam(ref_p, nonfinite="ignore")
    ref.load_state_dict(opt.state_dict())
    ref.step(grads)
    opt.step(grads)  # a good step equals the unchecked one
    for a, b in zip(params, ref_p):
        np.testing.assert_array_equal(a, b)
    g = [x.copy() for x in grads]
    g[where[0]][where[1]] = np.inf
    snap = _snapshot(params, opt, g)
    with pytest.raises(FloatingPointError, match=rf"grads\[{where[0]}\] .* index {where[1]}$"):
        opt.step(g)
    _assert_unchanged(params, opt, g, snap)
