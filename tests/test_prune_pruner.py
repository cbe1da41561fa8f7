"""Gradual pruning: the schedule, the Pruner (masks, fused moment zeroing,
no revival), sensitivity, and a small MLP pruned to 80 % on the digits data."""

from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest
from conftest import run_everywhere
from slimgrad import prune


def test_schedule_follows_zhu_gupta():
    s = prune.PolynomialSchedule(
        0.8, begin_step=10, end_step=110, initial_sparsity=0.1, frequency=10
    )
    updates = [t for t in range(200) if s.is_update(t)]
    assert updates == list(range(10, 111, 10))
    assert s.sparsity(10) == 0.1 and s.sparsity(110) == 0.8 and s.sparsity(500) == 0.8
    for t in (20, 60, 95):
        expected = 0.8 + (0.1 - 0.8) * (1 - (t - 10) / 100) ** 3
        assert s.sparsity(t) == pytest.approx(expected, rel=1e-15)
    levels = [s.sparsity(t) for t in updates]
    assert levels == sorted(levels)
    # end_step is always an update even when off the frequency grid
    assert prune.PolynomialSchedule(0.5, 0, 25, frequency=10).is_update(25)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"final_sparsity": 1.2}, "final_sparsity: expected a number in [0, 1], got 1.2"),
        (
            {"final_sparsity": 0.5, "begin_step": 5, "end_step": 4},
            "end_step: expected an int >= 5, got 4",
        ),
        ({"final_sparsity": 0.5, "frequency": 0}, "frequency: expected an int >= 1, got 0"),
        ({"final_sparsity": 0.5, "power": 0}, "power: expected a number > 0, got 0"),
    ],
)
def test_schedule_rejects_bad_values(kwargs, message):
    with pytest.raises(ValueError) as info:
        prune.PolynomialSchedule(**kwargs)
    assert str(info.value) == message


class FakeOptimizer:
    """The duck-typed contract: ``state[key]`` dicts holding ndarrays."""

    def __init__(self, state):
        self.state = state


def test_pruner_zeroes_weights_and_moments_in_one_pass(rng):
    w = rng.standard_normal((32, 16)).astype(np.float32)
    b = rng.standard_normal(7).astype(np.float64)
    moments = {
        k: rng.standard_normal(w.shape).astype(np.float32) + 5
        for k in ("exp_avg", "exp_avg_sq", "max_exp_avg_sq")
    }
    other = np.ones(5, np.float32)
    opt = FakeOptimizer(
        {"w": {**moments, "step": 3, "other": other}, 1: {"momentum_buffer": np.full(7, 2.0)}}
    )  # list index for "b"
    pruner = prune.Pruner({"w": w, "b": b}, schedule=0.5, optimizer=opt)
    expected = prune.magnitude_mask(w, 0.5)
    pruner.step()
    np.testing.assert_array_equal(pruner.masks["w"], expected)
    assert (w[~expected] == 0).all() and (w[expected] != 0).all()
    for v in moments.values():
        assert (v[~expected] == 0).all() and (v[expected] != 0).all()
    assert opt.state["w"]["step"] == 3 and (other == 1).all()
    assert (opt.state[1]["momentum_buffer"] == 0).sum() == int(round(0.5 * 7))
    report = pruner.sparsity()
    assert report.per_array == {"w": 0.5, "b": 4 / 7}
    empty = prune.Pruner({"e": np.zeros((0, 3), np.float32)}, schedule=0.5)
    empty.step()
    assert empty.sparsity().per_array == {"e": 0.0} and empty.sparsity().total == 0.0
    assert report.total == pytest.approx((256 + 4) / (512 + 7))
    assert "total" in str(report)


def test_pruner_list_params_use_index_and_keep_masks(rng):
    w = rng.standard_normal(100).astype(np.float32)
    m = np.ones(100, np.float32)
    opt = FakeOptimizer({0: {"exp_avg": m}})
    pruner = prune.Pruner([w], schedule={"final_sparsity": 0.3, "begin_step": 2, "end_step": 2})
    pruner.optimizer = opt
    pruner.step()
    pruner.step()
    assert pruner.masks is None and (w != 0).all()  # nothing before begin_step
    pruner.step()
    mask = pruner.masks[0]
    assert (~mask).sum() == 30 and (m[~mask] == 0).all()
    w += 1.0  # the optimizer moves every weight, pruned ones too
    m += 1.0
    pruner.step()  # no update: the same mask is applied again
    np.testing.assert_array_equal(pruner.masks[0], mask)
    assert (w[~mask] == 0).all() and (m[~mask] == 0).all()


def test_pruner_never_revives_a_pruned_weight():
    # Two weights become exactly zero after the first update; a plain
    # recomputation would prune them (lower index first) and revive index 3.
    w = np.array([0.5, 0.1, 0.0, 0.0, 9, 9, 9, 9], np.float32)
    pruner = prune.Pruner(
        {"w": w},
        schedule={
            "final_sparsity": 0.375,
            "initial_sparsity": 0.25,
            "begin_step": 0,
            "end_step": 1,
        },
    )
    pruner.step()
    np.testing.assert_array_equal(np.flatnonzero(~pruner.masks["w"]), [2, 3])
    w[:2] = 0.0
    pruner.step()
    np.testing.assert_array_equal(np.flatnonzero(~pruner.masks["w"]), [0, 2, 3])


@pytest.mark.parametrize("method", ["magnitude", "global", "structured"])
def test_pruned_sets_only_grow(method, rng):
    params = {
        "a": rng.standard_normal((40, 30)).astype(np.float32),
        "b": rng.standard_normal((20, 10)).astype(np.float32),
    }
    params["a"][:10] = 0.0  # natural zeros tie with pruned ones
    sched = prune.PolynomialSchedule(0.9, begin_step=0, end_step=50, frequency=5)
    pruner = prune.Pruner(params, method=method, schedule=sched)
    previous = None
    for _ in range(60):
        pruner.step()
        for v in params.values():
            moved = rng.random(v.shape) < 0.5
            v += rng.standard_normal(v.shape).astype(np.float32) * 0.01 * moved
        current = {k: ~m for k, m in pruner.masks.items()}
        if previous is not None:
            for k in params:
                assert not (previous[k] & ~current[k]).any()
        previous = current
    pruner.apply()
    report = pruner.sparsity()
    if method == "structured":
        assert report.per_array == {"a": 0.9, "b": 0.9}
        assert (params["a"][~pruner.masks["a"][:, 0]] == 0).all()
    else:
        expected = round(0.9 * 1400) / 1400 if method == "global" else 0.9
        assert report.total == pytest.approx(expected)
    for k, v in params.items():
        assert (v[~pruner.masks[k]] == 0).all()


def test_pruner_nm_method(rng):
    w = rng.standard_normal((8, 16)).astype(np.float32)
    pruner = prune.Pruner([w], method="nm")
    pruner.step()
    assert (pruner.masks[0].reshape(-1, 4).sum(axis=1) == 2).all()
    assert pruner.sparsity().total == 0.5
    message = r"params\[0\]: shape \(8, 6\) has no axis -1 divisible by m=4"
    with pytest.raises(ValueError, match=message):
        prune.Pruner([np.ones((8, 6), np.float32)], method="nm")


def test_pruner_identical_across_isas_and_threads(rng):
    a0 = rng.integers(-3, 4, (300, 301)).astype(np.float32)
    m0 = rng.standard_normal(a0.shape).astype(np.float32)

    def run():
        a, m = a0.copy(), m0.copy()
        opt = FakeOptimizer({"a": {"exp_avg": m}})
        pruner = prune.Pruner({"a": a}, schedule=0.63, optimizer=opt)
        pruner.step()
        return a, m

    results = run_everywhere(run)
    first = next(iter(results.values()))
    for a, m in results.values():
        np.testing.assert_array_equal(a, first[0])
        np.testing.assert_array_equal(m, first[1])


def test_pruner_errors_change_nothing(rng):
    w = rng.standard_normal((10, 10)).astype(np.float32)
    w[3, 4] = np.nan
    m = np.ones_like(w)
    before = w.copy()
    pruner = prune.Pruner({"w": w}, schedule=0.5, optimizer=FakeOptimizer({"w": {"exp_avg": m}}))
    with pytest.raises(ValueError, match=r"params\['w'\]: NaN at index \(3, 4\)"):
        pruner.step()
    np.testing.assert_array_equal(w, before)
    assert (m == 1).all() and pruner.masks is None and pruner.step_count == 0

    w2 = rng.standard_normal((10, 10)).astype(np.float32)
    strided = np.ones((10, 20), np.float32)[:, ::2]
    opt = FakeOptimizer({"w": {"exp_avg": strided}})
    pruner = prune.Pruner({"w": w2}, schedule=0.5, optimizer=opt)
    before = w2.copy()
    message = (
        r"optimizer.state\['w'\]\['exp_avg'\]: expected float16, bfloat16, float32 or "
        r"float64 C-contiguous array of shape \(10, 10\), got non-contiguous float32"
    )
    with pytest.raises(TypeError, match=message):
        pruner.step()
    np.testing.assert_array_equal(w2, before)
    assert pruner.masks is None and pruner.step_count == 0
    with pytest.raises(ValueError, match="method: expected one of"):
        prune.Pruner({"w": w2}, method="random", schedule=0.5)
    with pytest.raises(TypeError, match=r"params\['x'\]: expected an ndarray, got list"):
        prune.Pruner({"x": [1.0]}, schedule=0.5)


def test_pruner_state_dict_round_trip(rng):
    w = rng.standard_normal((6, 8)).astype(np.float32)
    pruner = prune.Pruner({"w": w}, schedule=0.5)
    pruner.step()
    state = pruner.state_dict()
    other = prune.Pruner({"w": w.copy()}, schedule=0.5)
    other.load_state_dict(state)
    assert other.step_count == 1
    np.testing.assert_array_equal(other.masks["w"], pruner.masks["w"])
    with pytest.raises(ValueError, match=r"masks\['w'\]: expected a bool array of shape \(6, 8\)"):
        other.load_state_dict({"step": 0, "masks": {"w": np.ones((2, 2), bool)}})
    assert other.step_count == 1


def test_sensitivity_prunes_one_array_at_a_time_and_restores(rng):
    params = {
        "a": rng.standard_normal(100).astype(np.float32),
        "b": rng.standard_normal((5, 8)).astype(np.float64),
    }
    saved = {k: v.copy() for k, v in params.items()}

    def evaluate():
        return (int((params["a"] == 0).sum()), int((params["b"] == 0).sum()))

    table = prune.sensitivity(evaluate, params, [0.0, 0.5, 0.9])
    assert table == {
        "a": {0.0: (0, 0), 0.5: (50, 0), 0.9: (90, 0)},
        "b": {0.0: (0, 0), 0.5: (0, 20), 0.9: (0, 36)},
    }
    for k in params:
        np.testing.assert_array_equal(params[k], saved[k])

    calls = []

    def failing():
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("evaluation failed")
        return 0.0

    with pytest.raises(RuntimeError, match="evaluation failed"):
        prune.sensitivity(failing, params, [0.3, 0.6])
    for k in params:
        np.testing.assert_array_equal(params[k], saved[k])


# ------------------------------------------------- a tiny MLP on the digits
def _digits():
    datasets = pytest.importorskip("sklearn.datasets")
    x, y = datasets.load_digits(return_X_y=True)
    x = (x / 16.0).astype(np.float32)
    order = np.random.default_rng(0).permutation(len(x))
    x, y = x[order], y[order]
    return x[:1300], y[:1300], x[1300:], y[1300:]


class MomentumSGD:
    """Plain SGD with momentum; state keyed by parameter name, like torch's."""

    def __init__(self, params, lr=0.1, momentum=0.9):
        self.params, self.lr, self.momentum = params, lr, momentum
        self.state = {k: {"momentum_buffer": np.zeros_like(v)} for k, v in params.items()}

    def step(self, grads):
        for k, p in self.params.items():
            buf = self.state[k]["momentum_buffer"]
            buf *= self.momentum
            buf += grads[k]
            p -= self.lr * buf


def _forward(p, x):
    h = np.maximum(x @ p["w1"] + p["b1"], 0)
    return h, h @ p["w2"] + p["b2"]


def _accuracy(p, x, y):
    return float((_forward(p, x)[1].argmax(axis=1) == y).mean())


def _train_epoch(p, opt, x, y, rng, pruner=None, batch=64):
    order = rng.permutation(len(x))
    for i in range(0, len(x), batch):
        xb, yb = x[order[i : i + batch]], y[order[i : i + batch]]
        h, logits = _forward(p, xb)
        z = np.exp(logits - logits.max(axis=1, keepdims=True))
        g = z / z.sum(axis=1, keepdims=True)
        g[np.arange(len(yb)), yb] -= 1
        g /= len(yb)
        dh = (g @ p["w2"].T) * (h > 0)
        opt.step({"w2": h.T @ g, "b2": g.sum(0), "w1": xb.T @ dh, "b1": dh.sum(0)})
        if pruner is not None:
            pruner.step()
            for k in ("w1", "w2"):  # pruned weights stay zero after every step
                assert (p[k][~pruner.masks[k]] == 0).all() if pruner.masks else True


def test_mlp_pruned_gradually_to_80_percent_keeps_accuracy():
    xtr, ytr, xte, yte = _digits()
    rng = np.random.default_rng(1)
    p = {
        "w1": (rng.standard_normal((64, 64)) * 0.125).astype(np.float32),
        "b1": np.zeros(64, np.float32),
        "w2": (rng.standard_normal((64, 10)) * 0.125).astype(np.float32),
        "b2": np.zeros(10, np.float32),
    }
    opt = MomentumSGD(p, lr=0.05)
    for _ in range(20):
        _train_epoch(p, opt, xtr, ytr, rng)
    dense = _accuracy(p, xte, yte)
    assert dense > 0.93

    steps_per_epoch = -(-len(xtr) // 64)
    sched = prune.PolynomialSchedule(0.8, begin_step=0, end_step=15 * steps_per_epoch, frequency=10)
    pruner = prune.Pruner({"w1": p["w1"], "w2": p["w2"]}, schedule=sched, optimizer=opt)
    for _ in range(20):
        _train_epoch(p, opt, xtr, ytr, rng, pruner)
    pruned = _accuracy(p, xte, yte)
    assert pruner.sparsity().per_array == {"w1": round(0.8 * 4096) / 4096, "w2": 0.8}
    assert (p["w1"] == 0).mean() >= 0.8 and (p["w2"] == 0).mean() >= 0.8
    for k in ("w1", "w2"):
        assert (opt.state[k]["momentum_buffer"][~pruner.masks[k]] == 0).all()
    print(f"digits MLP accuracy: dense {dense:.3f}, 80% pruned {pruned:.3f}")
    assert pruned >= dense - 0.03, (dense, pruned)


@pytest.mark.parametrize("n", [0, 1, 3, 4, 5, 15, 16, 17, 31, 32, 33, 4097, 100_003])
def test_fused_apply_every_width(isa, threads, n, rng):
    # The kernel zeroes by element width (1, 2, 4, 8 bytes): every dtype, tails.
    w = rng.standard_normal(n).astype(np.float16)
    moments = [
        rng.standard_normal(n).astype(dt)
        for dt in (np.float32, np.float64, ml_dtypes.bfloat16, np.float16)
    ]
    moments += [rng.integers(1, 127, n).astype(dt) for dt in (np.int8, np.uint8, np.int32)]
    mask = rng.random(n) < 0.6
    expected = [np.where(mask, a, np.zeros((), a.dtype)) for a in (w, *moments)]
    opt = FakeOptimizer({"w": {f"m{i}": m for i, m in enumerate(moments)}})
    pruner = prune.Pruner({"w": w}, schedule=0.5, optimizer=opt)
    pruner.masks = {"w": mask}
    pruner.apply()
    for got, want in zip((w, *moments), expected):
        np.testing.assert_array_equal(got.view(np.uint8), want.view(np.uint8))  # +0.0 bits


def test_sensitivity_structured(rng):
    w = rng.standard_normal((10, 4)).astype(np.float32)
    table = prune.sensitivity(
        lambda: int((np.abs(w).sum(axis=1) == 0).sum()), {"w": w}, [0.2, 0.5], method="structured"
    )
    assert table == {"w": {0.2: 2, 0.5: 5}}


def test_pruner_zeroes_adamw8bit_codes_so_pruned_weights_stay_zero(rng):
    # AdamW8bit keeps its moments as int8 / uint8 codes with a float32 scale
    # per block of 256: the codes at pruned positions must be zeroed too, or
    # momentum moves pruned weights off zero at the next optimizer step.
    from slimgrad import optim
    from slimgrad.optim import dequantize_moment

    params = {
        "w": rng.standard_normal((16, 64)).astype(np.float32),  # 4 blocks
        "h": rng.standard_normal((5, 67)).astype(np.float16),
    }  # float32 master, tail block
    opt = optim.AdamW8bit(params, lr=1e-2)
    pruner = prune.Pruner(params, "magnitude", schedule=0.5, optimizer=opt)
    for _ in range(3):
        opt.step({k: rng.standard_normal(v.shape).astype(v.dtype) for k, v in params.items()})
        pruner.step()
    for k, w in params.items():
        st, pruned = opt.state[k], ~pruner.masks[k]
        assert pruned.sum() == round(0.5 * w.size)
        assert st["exp_avg"].dtype == np.int8 and st["exp_avg_sq"].dtype == np.uint8
        m = dequantize_moment(st["exp_avg"], st["exp_avg_scale"])
        v = dequantize_moment(st["exp_avg_sq"], st["exp_avg_sq_scale"])
        assert (m[pruned] == 0).all() and (v[pruned] == 0).all()
        assert (m[~pruned] != 0).any() and (v[~pruned] != 0).all()  # the rest is kept
        assert (st["exp_avg_scale"] > 0).all()  # block scales are not pruning targets
    for _ in range(3):  # gradients of a pruned model: zero at pruned weights
        opt.step(
            {
                k: rng.standard_normal(v.shape).astype(v.dtype) * pruner.masks[k]
                for k, v in params.items()
            }
        )
        for k, w in params.items():
            assert (w[~pruner.masks[k]] == 0).all(), k  # before pruner.step(): no revival
        pruner.step()


def test_pruner_zeroes_integer_codes_of_the_params_size_in_any_shape(rng):
    w = rng.standard_normal((6, 8)).astype(np.float32)
    flat = np.full(48, 7, np.int8)  # one code per element, flat layout
    square = np.full((6, 8), 9, np.uint8)
    scales = np.full(48 // 16, 2.0, np.float32)  # another size: left alone
    wide = np.full(96, 5, np.int8)  # another size: left alone
    opt = FakeOptimizer({"w": {"c1": flat, "c2": square, "scale": scales, "wide": wide}})
    pruner = prune.Pruner({"w": w}, schedule=0.25, optimizer=opt)
    pruner.step()
    pruned = ~pruner.masks["w"]
    assert pruned.sum() == 12
    np.testing.assert_array_equal(flat, np.where(pruned.ravel(), 0, 7))
    np.testing.assert_array_equal(square, np.where(pruned, 0, 9))
    assert (scales == 2.0).all() and (wide == 5).all()
    # A one-element parameter: its code is zeroed, a 0-d integer counter is not.
    one = np.ones(1, np.float32)
    state = {"code": np.array([9], np.uint8), "step": np.array(4)}
    prune.Pruner([one], schedule=1.0, optimizer=FakeOptimizer({0: state})).step()
    assert one[0] == 0 and state["code"][0] == 0 and state["step"] == 4


def test_pruner_bad_code_array_raises_and_changes_nothing(rng):
    w = rng.standard_normal((4, 8)).astype(np.float32)
    codes = np.full((4, 16), 3, np.int8)[:, ::2]  # one per element, but strided
    before = w.copy()
    opt = FakeOptimizer({"w": {"exp_avg": codes}})
    pruner = prune.Pruner({"w": w}, schedule=0.5, optimizer=opt)
    with pytest.raises(TypeError) as info:
        pruner.step()
    assert str(info.value) == (
        "optimizer.state['w']['exp_avg']: expected int8, uint8, int16, uint16, int32, uint32, "
        "int64 or uint64 C-contiguous array, got non-contiguous int8 array of shape (4, 8)"
    )
    np.testing.assert_array_equal(w, before)
    assert (codes == 3).all() and pruner.masks is None and pruner.step_count == 0


@pytest.mark.parametrize(
    "schedule, exc, message",
    [
        (1.5, ValueError, "schedule: expected a number in [0, 1], got 1.5"),
        (-0.25, ValueError, "schedule: expected a number in [0, 1], got -0.25"),
        (float("nan"), ValueError, "schedule: expected a number in [0, 1], got nan"),
        (
            True,
            TypeError,
            "schedule: expected a PolynomialSchedule, its keyword arguments as a dict, "
            "or a constant sparsity, got bool",
        ),
        (
            {"final": 0.5},
            TypeError,
            "schedule: unknown keys ['final']; a PolynomialSchedule takes "
            "final_sparsity, begin_step, end_step, initial_sparsity, frequency, power",
        ),
        ({"final_sparsity": 2}, ValueError, "final_sparsity: expected a number in [0, 1], got 2.0"),
    ],
    ids=["above", "below", "nan", "bool", "unknown-key", "dict-value"],
)
def test_pruner_schedule_errors_name_the_argument_given(schedule, exc, message):
    with pytest.raises(exc) as info:
        prune.Pruner({"w": np.ones((2, 2), np.float32)}, schedule=schedule)
    assert str(info.value) == message


def _read_only(a):
    a.flags.writeable = False
    return a


@pytest.mark.parametrize(
    "make, exc, message",
    [
        (
            lambda: np.ones((3, 4), np.int32),
            TypeError,
            "params['w']: expected float16, bfloat16, float32 or float64 C-contiguous array, "
            "got int32 array of shape (3, 4)",
        ),
        (
            lambda: np.ones((3, 8), np.float32)[:, ::2],
            TypeError,
            "params['w']: expected float16, bfloat16, float32 or float64 C-contiguous array, "
            "got non-contiguous float32 array of shape (3, 4)",
        ),
        (
            lambda: np.ones((3, 4), ">f4"),
            TypeError,
            "params['w']: expected float16, bfloat16, float32 or float64 C-contiguous array, "
            "got non-native byte order float32 array of shape (3, 4)",
        ),
        (
            lambda: _read_only(np.ones((3, 4), np.float32)),
            ValueError,
            "params['w']: expected a writable array, got a read-only float32 array of shape (3, 4)",
        ),
    ],
    ids=["int32", "strided", "big-endian", "read-only"],
)
def test_pruner_checks_params_at_construction(make, exc, message):
    good = np.ones((2, 2), np.float32)
    bad = make()
    before = bad.copy()
    with pytest.raises(exc) as info:
        prune.Pruner({"ok": good, "w": bad}, schedule=0.5)
    assert str(info.value) == message
    np.testing.assert_array_equal(bad, before)
    assert (good == 1).all()


def test_pruner_construction_and_step_give_the_same_message(rng):
    w = rng.standard_normal((3, 4)).astype(np.float32)
    pruner = prune.Pruner([w], schedule=0.5)
    w.flags.writeable = False  # after construction: caught at step
    with pytest.raises(ValueError) as at_step:
        pruner.step()
    with pytest.raises(ValueError) as at_init:
        prune.Pruner([w], schedule=0.5)
    assert (
        str(at_init.value)
        == str(at_step.value)
        == ("params[0]: expected a writable array, got a read-only float32 array of shape (3, 4)")
    )
    assert pruner.masks is None and pruner.step_count == 0
