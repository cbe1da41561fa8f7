"""bfloat16 optimizer state (``state_dtype``) and half params without a float32
master copy (``master_weights=False``): float32 math, state rounded to
bfloat16 on store, against a NumPy emulation (bit for bit, every ISA and
thread count) and against torch's fused AdamW on bfloat16 params."""

from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest
import slimgrad
from conftest import run_everywhere
from slimgrad import optim
from slimgrad.optim import functional as F
from test_optim import RICH, _opts, reference_init, reference_step
from test_optim_lowp import (
    M64,
    _mix64_int,
    hash_bits,
    problem,
    round_stochastic,
    run,
    step_key,
)

BF16 = np.dtype(ml_dtypes.bfloat16)
F16 = np.dtype(np.float16)
F32 = np.dtype(np.float32)

# Every optimizer with a rich set of options, plus RMSprop with grad_avg but no
# momentum buffer (state slot 2 in use, slot 1 not: the stochastic streams are
# keyed by slot).
CONFIGS = list(RICH.items()) + [("RMSprop", dict(centered=True, alpha=0.9))]
CONFIG_IDS = [f"{n}-{i}" for i, (n, _) in enumerate(CONFIGS)]

# The kernel's state slot of each state array (optim.hpp, state_slots()).
SLOTS = {"RMSprop": {"square_avg": 0, "momentum_buffer": 1, "grad_avg": 2}}

# torch fused AdamW (bf16 params, bf16 moments, no master) against ours in the
# same configuration over TORCH_STEPS steps: both do float32 math and round
# the same values to bfloat16, but maybe in a different order of operations,
# so a value close to a rounding boundary can land one bfloat16 ulp apart.
# Allowed, for the params and each moment: at most TORCH_MAX_DIFF_FRACTION of
# the elements differ, none by more than TORCH_MAX_ULPS bfloat16 ulps (of the
# larger value). (torch 2.13: params identical, ~1e-4 of the moments 1 ulp off.)
TORCH_STEPS = 50
TORCH_MAX_DIFF_FRACTION = 0.01
TORCH_MAX_ULPS = 1

# Training check: fp32 params with bfloat16 moments end within this relative
# distance of the fp32-AdamW loss on the same least-squares problem.
TRAIN_LOSS_RTOL = 0.05


# ------------------------------------------------------------------ emulation
def _state_bits(seed: int, step: int, slot: int, n: int) -> np.ndarray:
    """optim.hpp state_sr_key: slots 0/1 (2) take the low/high 16 bits of a hash
    whose key is apart from the param's."""
    key = _mix64_int((step_key(seed, step) + (slot // 2 + 1) * 0xA0761D6478BD642F) & M64)
    return hash_bits(key, n) >> np.uint32(16 * (slot % 2))


def _round(x, dtype, r):
    """x rounded to dtype: nearest even (r None), or stochastic with the bits r."""
    return x.astype(dtype) if r is None else round_stochastic(x, dtype, r)


def emulate(name, kw, p0, grads, *, state_dtype=None, master=True, rounding="nearest", seed=0):
    """Our step in NumPy: float32 math (the reference formulas), the state rounded
    to bfloat16 after each step, the param rounded from the master (or from
    itself without one). Returns (param, master or None, state)."""
    o = _opts(name, kw)
    half = p0.dtype.itemsize == 2
    math_t = np.float64 if p0.dtype == np.float64 else np.float32
    st = reference_init(name, o, p0.shape, math_t)
    x = p0.astype(math_t)
    p = p0
    slots = SLOTS.get(name)
    for t, g in enumerate(grads, 1):
        x = reference_step(name, o, x, g.astype(math_t), st, t)
        if state_dtype == "bfloat16":
            arrays = [k for k, v in st.items() if isinstance(v, np.ndarray)]
            for j, k in enumerate(arrays):
                slot = slots[k] if slots else j
                r = None if rounding == "nearest" else _state_bits(seed, t, slot, st[k].size)
                st[k] = _round(st[k], BF16, r).astype(np.float32)
        if half:
            r = None if rounding == "nearest" else hash_bits(step_key(seed, t), x.size)
            p = _round(x, p0.dtype, r)
            if not master:
                x = p.astype(np.float32)
        else:
            p = x
    return p, (x if half and master else None), st


def bits(a: np.ndarray) -> np.ndarray:
    return a.view(np.uint16 if a.dtype.itemsize == 2 else np.uint32)


def assert_matches(opt, p, expected, state_dtype):
    ep, em, est = expected
    np.testing.assert_array_equal(bits(p), bits(ep.astype(p.dtype)))
    st = opt.state[0]
    if em is None:
        assert "master" not in st
    else:
        np.testing.assert_array_equal(bits(st["master"]), bits(em))
    for k, v in est.items():
        if isinstance(v, np.ndarray):
            want = BF16 if state_dtype == "bfloat16" else F32
            assert st[k].dtype == want, k
            np.testing.assert_array_equal(bits(st[k]), bits(v.astype(want)), err_msg=k)


# ---------------------------------------------------------------- bit for bit
@pytest.mark.parametrize("rounding", ["nearest", "stochastic"])
@pytest.mark.parametrize("name, kw", CONFIGS, ids=CONFIG_IDS)
def test_fp32_params_bf16_state_match_emulation(name, kw, rounding):
    p0, grads = problem(1000 + 7, np.float32)
    p, opt = run(name, kw, p0, grads, state_dtype="bfloat16", rounding=rounding, seed=3)
    expected = emulate(name, kw, p0, grads, state_dtype="bfloat16", rounding=rounding, seed=3)
    assert_matches(opt, p, expected, "bfloat16")


@pytest.mark.parametrize("rounding", ["nearest", "stochastic"])
@pytest.mark.parametrize("master", [True, False], ids=["master", "no_master"])
@pytest.mark.parametrize("state_dtype", [None, "bfloat16"])
@pytest.mark.parametrize("dtype", [F16, BF16], ids=["float16", "bfloat16"])
@pytest.mark.parametrize("name", ["Adam", "AdamW", "SGD", "RMSprop"])
def test_half_params_match_emulation(name, dtype, state_dtype, master, rounding):
    p0, grads = problem(1000 + 7, dtype, seed=1)
    kw = RICH[name]
    p, opt = run(
        name,
        kw,
        p0,
        grads,
        state_dtype=state_dtype,
        master_weights=master,
        rounding=rounding,
        seed=5,
    )
    expected = emulate(
        name, kw, p0, grads, state_dtype=state_dtype, master=master, rounding=rounding, seed=5
    )
    assert_matches(opt, p, expected, state_dtype)


CASES = [
    # (param dtype, state_dtype, master_weights, rounding)
    (F32, "bfloat16", True, "nearest"),
    (F32, "bfloat16", True, "stochastic"),
    (BF16, "bfloat16", False, "nearest"),
    (BF16, "bfloat16", False, "stochastic"),
    (F16, "bfloat16", True, "stochastic"),
    (BF16, None, False, "stochastic"),
]
CASE_IDS = [f"{d.name}-{s}-{'master' if m else 'nomaster'}-{r}" for d, s, m, r in CASES]


@pytest.mark.parametrize("dtype, state_dtype, master, rounding", CASES, ids=CASE_IDS)
def test_every_isa_and_thread_count(dtype, state_dtype, master, rounding):
    # Sizes around the vector widths and the 32K work item, several arrays in
    # one call (stochastic streams keyed by the position in the list).
    sizes = [1, 7, 8, 9, 15, 16, 17, 33, 4097, 70_001]
    rng = np.random.default_rng(7)
    p0 = [rng.standard_normal(n).astype(dtype) for n in sizes]
    grads = [[rng.standard_normal(n).astype(dtype) for n in sizes] for _ in range(3)]
    kw = dict(amsgrad=True, weight_decay=0.1)

    def go():
        ps = [p.copy() for p in p0]
        opt = optim.AdamW(
            ps, **kw, state_dtype=state_dtype, master_weights=master, rounding=rounding, seed=2
        )
        for g in grads:
            opt.step(g)
        return ps, opt.state_dict()["state"]

    results = run_everywhere(go)
    first_ps, first_st = next(iter(results.values()))
    # The list as one long array: the emulation with each array's offset.
    flat_p0 = np.concatenate(p0)
    expected = emulate(
        "AdamW",
        kw,
        flat_p0,
        [np.concatenate(g) for g in grads],
        state_dtype=state_dtype,
        master=master,
        rounding=rounding,
        seed=2,
    )
    ep = expected[0].astype(dtype)
    np.testing.assert_array_equal(bits(np.concatenate(first_ps)), bits(ep))
    est = expected[2]["exp_avg_sq"].astype(BF16 if state_dtype else F32)
    np.testing.assert_array_equal(
        bits(np.concatenate([first_st[i]["exp_avg_sq"] for i in range(len(sizes))])), bits(est)
    )
    for key, (ps, st) in results.items():
        for i in range(len(sizes)):
            np.testing.assert_array_equal(bits(ps[i]), bits(first_ps[i]), err_msg=str(key))
            for n, v in st[i].items():
                if isinstance(v, np.ndarray):
                    np.testing.assert_array_equal(
                        bits(v), bits(first_st[i][n]), err_msg=f"{key} {n}"
                    )


# Plain Adam / AdamW with bfloat16 moments and nearest rounding, on bfloat16
# params without a master or on float32 params: the avx2 and avx512 levels run
# their own loop there (kernels_optim_simd.hpp, adam_bf16_state). Sizes and
# start offsets cover its head (up to a 64-byte or block boundary), its blocks
# and its tail; lerp weights of 0.1 and 0.7 (the loop takes w < 0.5 only),
# with and without weight decay.
PLAIN = [
    ("AdamW", dict(weight_decay=0.1)),
    ("Adam", dict()),
    ("AdamW", dict(weight_decay=0.1, betas=(0.3, 0.999))),
]
PLAIN_IDS = ["adamw", "adam", "adamw-beta0.3"]
# (param dtype, the optimizer's layout options)
PLAIN_LAYOUTS = [
    (BF16, dict(state_dtype="bfloat16", master_weights=False)),
    (F32, dict(state_dtype="bfloat16")),
]
PLAIN_LAYOUT_IDS = ["bf16-bf16state", "f32-bf16state"]


@pytest.mark.parametrize("dtype, layout", PLAIN_LAYOUTS, ids=PLAIN_LAYOUT_IDS)
@pytest.mark.parametrize("name, kw", PLAIN, ids=PLAIN_IDS)
def test_plain_adam_every_isa_and_thread_count(name, kw, dtype, layout):
    sizes = [15, 16, 17, 31, 33, 47, 4097, 70_001]
    starts = [0, 1, 5, 3, 0, 7, 2, 1]  # elements into a larger buffer: other alignments
    rng = np.random.default_rng(11)
    p0 = [rng.standard_normal(n).astype(dtype) for n in sizes]
    grads = [[(rng.standard_normal(n) * 0.1).astype(dtype) for n in sizes] for _ in range(3)]

    def go():
        ps = []
        for p, k in zip(p0, starts):
            buf = np.zeros(p.size + 8, dtype)
            buf[k : k + p.size] = p
            ps.append(buf[k : k + p.size])
        opt = getattr(optim, name)(ps, lr=1e-2, **kw, **layout)
        for g in grads:
            opt.step(g)
        return [p.copy() for p in ps], opt.state_dict()["state"]

    results = run_everywhere(go)
    for i, n in enumerate(sizes):
        ep, _, est = emulate(
            name,
            dict(lr=1e-2, **kw),
            p0[i],
            [g[i] for g in grads],
            state_dtype="bfloat16",
            master=False,
        )
        for key, (ps, st) in results.items():
            np.testing.assert_array_equal(bits(ps[i]), bits(ep), err_msg=f"{key} size {n}")
            for s in ("exp_avg", "exp_avg_sq"):
                want = bits(est[s].astype(BF16))
                np.testing.assert_array_equal(bits(st[i][s]), want, err_msg=f"{key} {s} {n}")


@pytest.mark.parametrize("dtype, layout", PLAIN_LAYOUTS, ids=PLAIN_LAYOUT_IDS)
@pytest.mark.parametrize("name, kw", PLAIN[:2], ids=PLAIN_IDS[:2])
def test_plain_adam_special_values_give_every_level_the_same_bits(name, kw, dtype, layout):
    # NaN, infinities, huge and tiny values in params and gradients (nonfinite
    # "ignore"): every (ISA, thread count) gives the scalar reference's bits.
    n = 100
    rng = np.random.default_rng(12)
    specials = np.array([np.nan, np.inf, -np.inf, 3e38, -3e38, 1e-38, -0.0, 0.0], np.float32)
    p0 = rng.standard_normal(n).astype(np.float32)
    g0 = rng.standard_normal(n).astype(np.float32)
    p0[rng.choice(n, 24, replace=False)] = rng.choice(specials, 24)
    g0[rng.choice(n, 24, replace=False)] = rng.choice(specials, 24)
    p0, g0 = p0.astype(dtype), g0.astype(dtype)

    def go():
        p = p0.copy()
        opt = getattr(optim, name)([p], lr=1e-2, **kw, **layout, nonfinite="ignore")
        opt.step([g0])
        opt.step([g0])
        st = opt.state[0]
        return p, st["exp_avg"].copy(), st["exp_avg_sq"].copy()

    results = run_everywhere(go)
    first = results[next(iter(results))]
    assert np.isnan(first[0].astype(np.float32)).any()  # the specials reached the update
    for key, arrays in results.items():
        for a, b in zip(arrays, first):
            np.testing.assert_array_equal(bits(a), bits(b), err_msg=str(key))


@pytest.mark.parametrize("dtype", [F32, BF16], ids=["float32", "bfloat16"])
def test_flatten_arena_steps_like_separate_arrays(dtype):
    # Arena: params, grads and (packed) bfloat16 state each lie back to back, so
    # the kernel merges the arrays into one range; the bits must not change.
    rng = np.random.default_rng(4)
    shapes = [(33, 17), (1000,), (7,), (64, 65)]
    ps = [rng.standard_normal(s).astype(dtype) for s in shapes]
    gs = [[rng.standard_normal(s).astype(dtype) for s in shapes] for _ in range(3)]
    kw = dict(state_dtype="bfloat16", master_weights=False, rounding="stochastic", seed=1)
    sep = [p.copy() for p in ps]
    arena = optim.flatten([p.copy() for p in ps])
    o1, o2 = optim.AdamW(sep, **kw), optim.AdamW(arena, **kw)
    for g in gs:
        o1.step(g)
        o2.step(optim.flatten(g))
    for a, b in zip(sep, arena):
        np.testing.assert_array_equal(bits(a), bits(b))
    for i in range(len(shapes)):
        np.testing.assert_array_equal(bits(o1.state[i]["exp_avg"]), bits(o2.state[i]["exp_avg"]))


def test_default_is_unchanged_and_float32_is_the_default():
    p0, grads = problem(999, BF16, steps=3)
    outs = []
    for extra in ({}, {"state_dtype": "float32"}, {"state_dtype": np.float32}):
        p, opt = run("AdamW", {}, p0, grads, **extra)
        outs.append((bits(p).copy(), bits(opt.state[0]["exp_avg"]).copy()))
        assert set(opt.state[0]) == {"step", "exp_avg", "exp_avg_sq", "master"}
    for o in outs[1:]:
        np.testing.assert_array_equal(o[0], outs[0][0])
        np.testing.assert_array_equal(o[1], outs[0][1])


def test_state_memory():
    p = np.zeros((256, 256), BF16)
    opt = optim.AdamW([p], state_dtype=ml_dtypes.bfloat16, master_weights=False)
    opt.step([np.ones_like(p)])
    st = opt.state[0]
    assert set(st) == {"step", "exp_avg", "exp_avg_sq"}
    assert st["exp_avg"].dtype == BF16 and st["exp_avg"].nbytes == p.nbytes
    assert opt.param_groups[0]["state_dtype"] == "bfloat16"


def test_stochastic_state_streams_are_independent():
    # m and v of SGD-like values: with lr=0 the param stays put, and the state
    # roundings must not follow the param's rounding decisions.
    n = 4096
    x = np.full(n, 1.0 + 2.0**-9, np.float32)  # a quarter ulp above 1 in bfloat16
    p = x.copy()
    opt = optim.SGD([p], lr=0.0, momentum=0.5, state_dtype="bfloat16", rounding="stochastic")
    opt.step([x])  # first step: momentum_buffer = g, stochastically rounded
    up = bits(opt.state[0]["momentum_buffer"]) != np.float32(1).astype(BF16).view(np.uint16)
    assert 0.15 < up.mean() < 0.35  # up with probability 1/4
    pb = round_stochastic(x, BF16, hash_bits(step_key(0, 1), n)).view(np.uint16)
    param_up = pb != np.float32(1).astype(BF16).view(np.uint16)
    assert np.count_nonzero(up & param_up) < 0.15 * n  # ~1/16 if independent, 1/4 if shared


# ---------------------------------------------------------------- torch fused
def test_matches_torch_fused_adamw_on_bf16_params():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(11)
    n = 20_000
    p0 = rng.standard_normal(n).astype(BF16)
    grads = [(rng.standard_normal(n) * 0.5).astype(BF16) for _ in range(TORCH_STEPS)]
    kw = dict(lr=1e-2, betas=(0.9, 0.99), eps=1e-8, weight_decay=0.05)
    p = p0.copy()
    opt = optim.AdamW([p], **kw, state_dtype="bfloat16", master_weights=False)
    tp = torch.from_numpy(p0.view(np.int16).copy()).view(torch.bfloat16).requires_grad_()
    topt = torch.optim.AdamW([tp], **kw, fused=True)
    for g in grads:
        opt.step([g])
        tp.grad = torch.from_numpy(g.view(np.int16).copy()).view(torch.bfloat16)
        with torch.no_grad():
            topt.step()
    theirs = tp.detach().view(torch.int16).numpy().view(BF16)
    tst = topt.state[tp]
    assert tst["exp_avg"].dtype == torch.bfloat16  # torch keeps bf16 moments too
    assert_close_bf16(p, theirs)
    # The moments agree as well; near zero (m changes sign) a last-bit
    # difference is large relative to the value, so there the allowance is
    # an ulp of the array's largest value.
    for k in ("exp_avg", "exp_avg_sq"):
        theirs_k = tst[k].view(torch.int16).numpy().view(BF16)
        floor = np.abs(theirs_k.astype(np.float32)).max()
        assert_close_bf16(opt.state[0][k], theirs_k, floor)


def assert_close_bf16(ours: np.ndarray, theirs: np.ndarray, floor: float = 0.0) -> None:
    """At most TORCH_MAX_DIFF_FRACTION of the elements differ, each by at most
    TORCH_MAX_ULPS bfloat16 ulps of max(|value|, floor)."""
    a, b = ours.astype(np.float32), theirs.astype(np.float32)
    assert np.mean(a != b) <= TORCH_MAX_DIFF_FRACTION
    mag = np.maximum(np.maximum(np.abs(a), np.abs(b)), np.float32(floor))
    ulp = np.spacing(mag.astype(BF16)).astype(np.float32)
    assert np.all(np.abs(a - b) <= TORCH_MAX_ULPS * ulp)


# ------------------------------------------------------------- state dict
def test_state_dict_round_trip_resumes_bit_identically(tmp_path):
    p0, grads = problem(3001, BF16, steps=6, seed=2)
    kw = dict(state_dtype="bfloat16", master_weights=False, rounding="stochastic", seed=4)
    full, _ = run("AdamW", {}, p0, grads, **kw)
    p, opt = run("AdamW", {}, p0, grads[:3], **kw)
    sd = opt.state_dict()
    assert sd["state"][0]["exp_avg"].dtype == BF16
    path = tmp_path / "ck.safetensors"
    slimgrad.save(path, params=[p], optimizer=sd)
    ck = slimgrad.load(path)
    q = ck["params"][0]
    opt2 = optim.AdamW([q], **kw)
    opt2.load_state_dict(ck["optimizer"])
    assert opt2.state[0]["exp_avg_sq"].dtype == BF16
    for g in grads[3:]:
        opt2.step([g])
    np.testing.assert_array_equal(bits(q), bits(full))


def test_load_state_dict_with_other_state_dtype_changes_nothing():
    p0, grads = problem(100, np.float32, steps=2)
    _, src = run("Adam", {}, p0, grads)  # float32 state
    p, opt = run("Adam", {}, p0, grads, state_dtype="bfloat16")
    before = {k: (v.copy() if isinstance(v, np.ndarray) else v) for k, v in opt.state[0].items()}
    sd = src.state_dict()
    sd["param_groups"][0]["state_dtype"] = "bfloat16"  # options agree, arrays do not
    with pytest.raises(ValueError, match=r"\['exp_avg'\]: expected bfloat16 array of shape"):
        opt.load_state_dict(sd)
    for k, v in before.items():
        if isinstance(v, np.ndarray):
            np.testing.assert_array_equal(bits(opt.state[0][k]), bits(v))
    # A state dict saying float32 state is loaded as such (the option comes with it).
    opt.load_state_dict(src.state_dict())
    assert opt.state[0]["exp_avg"].dtype == F32 and opt.param_groups[0]["state_dtype"] is None


# ----------------------------------------------------------- bad arguments
@pytest.mark.parametrize("value", ["float16", np.float16, "bf16", np.float64, 3, "torch.bfloat16"])
def test_bad_state_dtype(value):
    p = np.zeros(4, np.float32)
    msg = (
        r"state_dtype: expected None, 'float32' or 'bfloat16' \(or np.float32 / "
        r"ml_dtypes.bfloat16\), got "
    )
    with pytest.raises(ValueError, match=msg):
        optim.AdamW([p], state_dtype=value)
    with pytest.raises(ValueError, match=msg):
        optim.AdamW([{"params": [p], "state_dtype": value}])


@pytest.mark.parametrize("value", [1, 0, "yes", None, 1.0])
def test_bad_master_weights(value):
    p = np.zeros(4, BF16)
    with pytest.raises(ValueError, match=r"master_weights: expected True or False, got "):
        optim.Adam([p], master_weights=value)
    with pytest.raises(ValueError, match=r"master_weights: expected True or False, got "):
        F.adam_(p, p.copy(), np.zeros(4, BF16), np.zeros(4, BF16), step=1, master_weights=value)


@pytest.mark.parametrize("sd", ["bfloat16", "float32"])
def test_float64_params_refuse_a_state_dtype(sd):
    with pytest.raises(
        ValueError,
        match=rf"state_dtype: '{sd}' needs float32, float16 or bfloat16 params; "
        r"params\['w'\] is float64",
    ):
        optim.Adam({"x": np.zeros(3, np.float32), "w": np.zeros(3)}, state_dtype=sd)


@pytest.mark.parametrize(
    "option, value, msg",
    [
        ("state_dtype", "bfloat16", "state_dtype: cannot change after the first step"),
        ("state_dtype", "float16", "state_dtype: expected None, 'float32' or 'bfloat16'"),
        ("master_weights", False, "master_weights: cannot change after the first step"),
    ],
)
def test_editing_layout_options_after_the_first_step_changes_nothing(option, value, msg):
    p0, grads = problem(50, BF16, steps=2)
    p, opt = run("AdamW", {}, p0, grads[:1])
    before_p = bits(p).copy()
    before = {k: (v.copy() if isinstance(v, np.ndarray) else v) for k, v in opt.state[0].items()}
    opt.param_groups[0][option] = value
    with pytest.raises(ValueError, match=msg):
        opt.step([grads[1]])
    np.testing.assert_array_equal(bits(p), before_p)
    assert opt.state[0]["step"] == before["step"]
    for k, v in before.items():
        if isinstance(v, np.ndarray):
            np.testing.assert_array_equal(bits(opt.state[0][k]), bits(v))


def test_bad_option_edited_before_the_first_step_leaves_no_state():
    p = np.zeros(8, np.float32)
    opt = optim.Adam([p])
    opt.param_groups[0]["state_dtype"] = "int8"
    with pytest.raises(ValueError, match="state_dtype: expected None"):
        opt.step([np.ones_like(p)])
    assert opt.state == {} and not p.any()


def test_functional_bf16_state_and_no_master():
    rng = np.random.default_rng(9)
    p0 = rng.standard_normal(257).astype(BF16)
    g = rng.standard_normal(257).astype(BF16)
    m, v = np.zeros(257, BF16), np.zeros(257, BF16)
    p = p0.copy()
    F.adamw_(p, g, m, v, step=1, lr=1e-2, master_weights=False)
    q, opt = run("AdamW", dict(lr=1e-2), p0, [g], state_dtype="bfloat16", master_weights=False)
    np.testing.assert_array_equal(bits(p), bits(q))
    np.testing.assert_array_equal(bits(m), bits(opt.state[0]["exp_avg"]))
    # Mixed state dtypes: the buffer check names the array; nothing is written.
    p = p0.copy()
    v32 = np.zeros(257, np.float32)
    with pytest.raises(TypeError, match=r"exp_avg_sq: expected bfloat16 C-contiguous array"):
        F.adamw_(p, g, np.zeros(257, BF16), v32, step=1, master_weights=False)
    np.testing.assert_array_equal(bits(p), bits(p0))
    assert not v32.any()
    with pytest.raises(ValueError, match="masters: expected None with master_weights=False"):
        F.adamw_(p, g, m, v, step=2, master=np.zeros(257, np.float32), master_weights=False)
    # float64 params cannot have bfloat16 state.
    d = np.zeros(4)
    with pytest.raises(ValueError, match="state_dtype: bfloat16 state needs float32"):
        F.adam_(d, d.copy(), np.zeros(4, BF16), np.zeros(4, BF16), step=1)


# ---------------------------------------------------------------- training
def test_training_with_bf16_moments_reaches_the_fp32_loss():
    # Least squares with a known solution; full-batch gradients in float32.
    rng = np.random.default_rng(0)
    X = rng.standard_normal((512, 64)).astype(np.float32)
    w_true = rng.standard_normal((64, 8)).astype(np.float32)
    Y = X @ w_true + 0.1 * rng.standard_normal((512, 8)).astype(np.float32)
    w0 = (0.1 * rng.standard_normal((64, 8))).astype(np.float32)

    def train(**kw):
        w = w0.copy()
        opt = optim.AdamW([w], lr=3e-2, weight_decay=1e-4, **kw)
        for _ in range(300):
            r = X @ w - Y
            opt.step([(2.0 / len(X)) * (X.T @ r)])
        return float(np.mean((X @ w - Y) ** 2))

    start = float(np.mean((X @ w0 - Y) ** 2))
    ref = train()
    assert ref < 0.05 * start  # the problem is solved, not just started
    for kw in (dict(state_dtype="bfloat16"), dict(state_dtype="bfloat16", rounding="stochastic")):
        loss = train(**kw)
        assert abs(loss - ref) <= TRAIN_LOSS_RTOL * ref, (kw, loss, ref)


# ------------------------------------------------- non-finite scan of half grads
@pytest.mark.parametrize("dtype", [F16, BF16], ids=["float16", "bfloat16"])
def test_half_gradient_scan_finds_the_first_bad_element_everywhere(dtype):
    # The SIMD scan (4 vectors at a time, then element by element) on every
    # ISA: the largest finite value passes; inf/-inf/NaN are found at the
    # first position, in the vector groups and in the tail.
    big = (ml_dtypes.finfo if dtype == BF16 else np.finfo)(dtype).max
    for n, bad_at in [
        (1, [0]),
        (17, [16]),
        (64, [63, 5]),
        (130, [129]),
        (1000, [999, 64, 65]),
        (70_001, [70_000, 40_000]),
    ]:
        for value in (np.inf, -np.inf, np.nan):
            g = np.full(n, big, dtype)
            for j in bad_at:
                g[j] = value
            p0 = np.zeros(n, dtype)

            def go(g=g, p0=p0):
                p = p0.copy()
                opt = optim.AdamW(
                    [p], state_dtype="bfloat16", master_weights=False, nonfinite="skip"
                )
                ok = opt.step([g])
                found = slimgrad._core.optim.find_nonfinite_multi([g])
                return ok, found, bits(p).copy(), opt.state

            for key, (ok, found, pb, state) in run_everywhere(go).items():
                assert ok is False and state == {}, key
                assert found == (0, min(bad_at)), (key, n, value)
                np.testing.assert_array_equal(pb, bits(p0))
    # All finite: nothing found.
    g = np.full(4097, big, dtype)
    assert all(
        v is None
        for v in run_everywhere(lambda: slimgrad._core.optim.find_nonfinite_multi([g])).values()
    )


def test_state_dict_without_the_new_options_still_loads():
    # A state dict saved before state_dtype / master_weights existed.
    p0, grads = problem(100, np.float32, steps=3)
    full, _ = run("Adam", {}, p0, grads)
    p, opt = run("Adam", {}, p0, grads[:2])
    sd = opt.state_dict()
    for g in sd["param_groups"]:
        del g["state_dtype"], g["master_weights"]
    q = p.copy()
    opt2 = optim.Adam([q])
    opt2.load_state_dict(sd)
    opt2.step([grads[2]])
    np.testing.assert_array_equal(bits(q), bits(full))
    assert "state_dtype" not in sd["param_groups"][0]  # the caller's dict is not modified


def test_nearest_bf16_store_of_special_values_everywhere():
    # Ties to even, subnormals, the largest values, inf and NaN through the
    # bfloat16 state store (SGD's first step: momentum_buffer = g) and the
    # bfloat16 param store (lr = 0 from a float32 master), on every ISA.
    from test_optim_lowp import SPECIALS

    ties = np.array(
        [1 + 2.0**-8, 1 + 3 * 2.0**-8, -(1 + 2.0**-8), 3.3895314e38, 1.1754942e-38, 9.2e-41],
        np.float32,
    )
    x = np.tile(np.concatenate([SPECIALS, ties]), 4)  # full vectors and a tail

    def go():
        buf = np.zeros(x.size, BF16)
        p32 = np.zeros(x.size, np.float32)
        F.sgd_(p32, x, buf, step=1, lr=0.0, momentum=0.9)
        p = np.zeros(x.size, BF16)
        F.sgd_(p, np.zeros_like(p), step=1, lr=0.0, master=x.copy())
        return buf, p

    expected = x.astype(BF16)
    nan = np.isnan(x)
    results = run_everywhere(go)
    first = next(iter(results.values()))
    for key, outs in results.items():
        for got, ref in zip(outs, first):
            np.testing.assert_array_equal(bits(got), bits(ref), err_msg=str(key))  # NaN bits too
            np.testing.assert_array_equal(np.isnan(got.astype(np.float32)), nan, err_msg=str(key))
            np.testing.assert_array_equal(bits(got)[~nan], bits(expected)[~nan], err_msg=str(key))
