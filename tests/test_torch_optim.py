"""slimgrad.torch against torch.optim: 100 steps with hooks, closures, None grads,
schedulers and state-dict round trips in both directions, float32 and bfloat16."""

from __future__ import annotations

import copy
import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")
st = pytest.importorskip("slimgrad.torch")

STEPS = 100
SHAPES = [(37, 19), (300,), (1,), (17,), (8, 8)]

CONFIGS = {
    "AdamW": {},
    "AdamW_amsgrad": {"amsgrad": True, "weight_decay": 0.1, "betas": (0.8, 0.95)},
    "Adam": {"weight_decay": 0.05},
    "Adam_max": {"maximize": True, "eps": 1e-6},
    "SGD": {"lr": 0.01},
    "SGD_momentum": {"lr": 0.01, "momentum": 0.9, "weight_decay": 1e-3, "dampening": 0.1},
    "SGD_nesterov": {"lr": 0.01, "momentum": 0.9, "nesterov": True},
    "Adagrad": {"lr_decay": 1e-3, "initial_accumulator_value": 0.1, "weight_decay": 1e-2},
    "RMSprop": {"momentum": 0.5, "centered": True, "weight_decay": 1e-3},
    "RMSprop_plain": {"lr": 1e-3},
}
NO_FUSED = {"RMSprop"}  # torch has no fused RMSprop


def algo(name):
    return name.split("_")[0]


def make_params(dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(s, generator=g).to(dtype) for s in SHAPES]


def grads_at(step, params, seed=1):
    """Gradients of step ``step``: param 3 never has one, param 2 only on even steps."""
    g = torch.Generator().manual_seed(seed * 100003 + step)
    out = []
    for i, p in enumerate(params):
        if i == 3 or (i == 2 and step % 2):
            out.append(None)
        else:
            out.append(torch.randn(p.shape, generator=g).to(p.dtype))
    return out


def run(opt, params, steps, start=0, sched=None, closure=True):
    """``steps`` steps through a closure (which sets the grads); returns the losses."""
    losses = []
    for t in range(start, start + steps):
        grads = grads_at(t, params)

        def closure_fn(grads=grads, t=t):
            for p, g in zip(params, grads):
                p.grad = None if g is None else g.clone()
            return float(t)

        if closure:
            losses.append(opt.step(closure_fn))
        else:
            closure_fn()
            opt.step()
        opt.zero_grad()
        if sched is not None:
            sched.step()
    return losses


def leaves(params):
    return [p.clone().requires_grad_() for p in params]


def assert_close(mine, theirs, rtol, atol):
    for i, (a, b) in enumerate(zip(mine, theirs)):
        np.testing.assert_allclose(
            a.detach().double().numpy(),
            b.detach().double().numpy(),
            rtol=rtol,
            atol=atol,
            err_msg=f"param {i}",
        )


@pytest.mark.parametrize("fused", [False, True])
@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_float32_matches_torch(name, fused):
    if fused and algo(name) in NO_FUSED:
        pytest.skip("torch has no fused RMSprop")
    kw = CONFIGS[name]
    base = make_params(torch.float32)
    a, b = leaves(base), leaves(base)
    mine = getattr(st, algo(name))(a, **kw)
    theirs = getattr(torch.optim, algo(name))(b, **kw, **({"fused": True} if fused else {}))
    calls = []
    mine.register_step_pre_hook(lambda o, args, kwargs: calls.append("pre"))
    mine.register_step_post_hook(lambda o, args, kwargs: calls.append("post"))
    cycle = "momentum" in mine.defaults or "betas" in mine.defaults
    s_mine, s_theirs = (
        torch.optim.lr_scheduler.OneCycleLR(o, 0.02, STEPS, cycle_momentum=cycle)
        for o in (mine, theirs)
    )
    losses = run(mine, a, STEPS, sched=s_mine)
    assert losses == run(theirs, b, STEPS, sched=s_theirs)
    assert calls == ["pre", "post"] * STEPS
    assert_close(a, b, rtol=2e-5, atol=2e-6)
    # None grads: param 3 never stepped (no state), param 2 half as often.
    assert torch.equal(a[3], base[3]) and a[3] not in mine.state
    if "step" in theirs.state[b[2]]:
        assert float(mine.state[a[2]]["step"]) == float(theirs.state[b[2]]["step"]) == STEPS / 2
    assert set(mine.state[a[0]]) == set(theirs.state[b[0]])


def bf16_oracle(name, kw, base):
    """torch's float32 optimizer with params and states rounded to bfloat16 after
    every step: float32 math, bfloat16 storage, which is what the kernels do."""
    b = [p.float().requires_grad_() for p in base]
    opt = getattr(torch.optim, algo(name))(b, **kw, foreach=False)

    def round_all():
        with torch.no_grad():
            for p in b:
                p.copy_(p.bfloat16().float())
                for k, v in opt.state[p].items():
                    if k != "step" and torch.is_tensor(v):
                        v.copy_(v.bfloat16().float())

    return b, opt, round_all


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_bfloat16_matches_torch(name):
    kw = CONFIGS[name]
    base = make_params(torch.bfloat16)
    a = leaves(base)
    ptrs = [p.data_ptr() for p in a]
    mine = getattr(st, algo(name))(a, **kw)
    if algo(name) in ("Adam", "AdamW"):
        # torch's fused CPU Adam(W) is float32 math on bfloat16 storage: the same
        # bits for AdamW's defaults; an operation order apart with the options.
        b = leaves(base)
        theirs = getattr(torch.optim, algo(name))(b, **kw, fused=True)
        run(mine, a, STEPS)
        run(theirs, b, STEPS)
        if name == "AdamW":
            for x, y in zip(a, b):
                assert torch.equal(x, y)
            for k, v in theirs.state[b[0]].items():
                assert torch.equal(mine.state[a[0]][k], v), k
        assert_close(a, b, rtol=2e-2, atol=2e-2)
    else:
        b, theirs, round_all = bf16_oracle(name, kw, base)
        for t in range(STEPS):
            run(mine, a, 1, start=t, closure=False)
            run(theirs, b, 1, start=t, closure=False)
            round_all()
        # Both round the same float32 values; an order of operations apart, a value
        # may land one bfloat16 ulp away and carry on from there.
        assert_close(a, b, rtol=2e-2, atol=2e-2)
    assert [p.data_ptr() for p in a] == ptrs  # stepped in place
    assert all(v.dtype == torch.bfloat16 for k, v in mine.state[a[0]].items() if k != "step")


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("name", ["AdamW", "Adam", "SGD_momentum", "Adagrad", "RMSprop"])
def test_state_dict_round_trips_both_ways(name, dtype):
    kw = CONFIGS[name]
    base = make_params(dtype)
    # torch's fused bfloat16 SGD/Adagrad drift from the float64 reference (SGD by
    # ~0.1 after 3 steps where ours and torch's foreach stay within 0.02), so the
    # bfloat16 round trips use its foreach path there.
    fused_ok = algo(name) in ("Adam", "AdamW") or dtype == torch.float32
    fused = {"fused": True} if fused_ok and algo(name) != "RMSprop" else {}
    for first, second in ((torch.optim, st), (st, torch.optim)):
        a = leaves(base)
        opt1 = getattr(first, algo(name))(a, **kw, **(fused if first is torch.optim else {}))
        run(opt1, a, STEPS // 2)
        saved = copy.deepcopy(opt1.state_dict())
        b = [p.detach().clone().requires_grad_() for p in a]
        opt2 = getattr(second, algo(name))(b, **kw, **(fused if second is torch.optim else {}))
        opt2.load_state_dict(saved)
        ref = [p.detach().clone().requires_grad_() for p in a]
        opt_ref = getattr(first, algo(name))(ref, **kw, **(fused if first is torch.optim else {}))
        opt_ref.load_state_dict(copy.deepcopy(saved))
        run(opt2, b, STEPS // 2, start=STEPS // 2)
        run(opt_ref, ref, STEPS // 2, start=STEPS // 2)
        if dtype == torch.float32:
            assert_close(b, ref, rtol=2e-5, atol=2e-5)
        else:  # two bfloat16 implementations: a few ulps apart after 50 steps
            assert_close(b, ref, rtol=2e-2, atol=2e-2 if fused_ok else 0.1)
        assert opt2.state_dict()["param_groups"][0]["lr"] == saved["param_groups"][0]["lr"]


def test_adamw_state_dict_from_torch_is_torch_format():
    a = leaves(make_params(torch.float32))
    mine = st.AdamW(a, lr=1e-3)
    run(mine, a, 3)
    sd = mine.state_dict()
    ref = torch.optim.AdamW(leaves(make_params(torch.float32)), lr=1e-3)
    assert set(sd["param_groups"][0]) == set(ref.state_dict()["param_groups"][0])
    assert sd["state"][0]["step"].dtype == torch.float32 and sd["state"][0]["step"].ndim == 0


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_lion_and_adamw8bit_match_slimgrad_optim(dtype):
    import ml_dtypes
    from slimgrad import optim

    np_dtype = {
        torch.float32: np.float32,
        torch.bfloat16: ml_dtypes.bfloat16,
        torch.float16: np.float16,
    }[dtype]
    for cls, kw in (("Lion", {"lr": 1e-3, "weight_decay": 0.1}), ("AdamW8bit", {"lr": 1e-2})):
        base = make_params(dtype)[:3]
        a = leaves(base)
        mine = getattr(st, cls)(a, **kw)
        arrays = [p.float().numpy().astype(np_dtype) for p in base]
        ref = getattr(optim, cls)(arrays, **kw)
        for t in range(30):
            grads = [torch.randn(p.shape, generator=torch.Generator().manual_seed(t)) for p in a]
            for p, g in zip(a, grads):
                p.grad = g.to(dtype)
            mine.step()
            ref.step([g.to(dtype).float().numpy().astype(np_dtype) for g in grads])
            if dtype != torch.float32:
                # slimgrad.optim keeps float32 masters; slimgrad.torch, like torch,
                # steps from the rounded parameter: give the reference the same start.
                for i, arr in enumerate(arrays):
                    ref.state[i]["master"][...] = arr.astype(np.float32)
        for p, r in zip(a, arrays):
            got = p.detach().float().numpy()
            np.testing.assert_allclose(got, r.astype(np.float32), rtol=1e-6, atol=1e-7)
        # A round trip through its own state dict continues identically.
        b = [p.detach().clone().requires_grad_() for p in a]
        other = getattr(st, cls)(b, **kw)
        other.load_state_dict(copy.deepcopy(mine.state_dict()))
        for k, v in mine.state[a[0]].items():
            assert other.state[b[0]][k].dtype == v.dtype and torch.equal(other.state[b[0]][k], v)


def test_works_with_slimgrad_schedules_and_torch_schedulers():
    from slimgrad import schedule

    a = leaves(make_params(torch.float32))
    opt = st.AdamW(a, lr=0.1)
    sched = schedule.WarmupCosine(opt, warmup_steps=5, total_steps=20)
    seen = []
    opt.register_step_pre_hook(lambda o, args, kw: seen.append(o.param_groups[0]["lr"]))
    run(opt, a, 10, sched=sched)
    assert seen[:5] == pytest.approx([0.1 * (t + 1) / 5 for t in range(5)], rel=1e-12)
    assert seen[5] == pytest.approx(0.1) and seen[9] < seen[8] < seen[5]


def test_zero_grad_and_add_param_group():
    a = leaves(make_params(torch.float32))
    opt = st.SGD(a[:2], lr=0.1)
    opt.add_param_group({"params": a[2:], "lr": 0.0})
    run(opt, a, 3, closure=False)
    assert all(p.grad is None for p in a)
    before = [p.detach().clone() for p in a[2:]]
    for p in a:
        p.grad = torch.ones_like(p)
    opt.step()
    assert all(torch.equal(p, q) for p, q in zip(a[2:], before))  # lr 0


def test_bad_input_raises_before_modifying_anything():
    p = torch.randn(4, 6).requires_grad_()
    q = torch.randn(5).requires_grad_()
    opt = st.AdamW([q, p])
    q.grad = torch.ones(5)
    p.grad = torch.ones(6, 4).t()  # non-contiguous gradient
    before = (q.detach().clone(), p.detach().clone())
    with pytest.raises(
        TypeError, match=r"param_groups\[0\]\['params'\]\[1\].grad: expected a contiguous"
    ):
        opt.step()
    assert torch.equal(q, before[0]) and torch.equal(p, before[1]) and not opt.state
    with pytest.raises(ValueError, match="capturable=True is not supported"):
        st.Adam([p], capturable=True)
    with pytest.raises(ValueError, match="Invalid learning rate"):
        st.SGD([p], lr=-1)
    x = torch.arange(4, dtype=torch.int64)
    with pytest.raises(TypeError, match="expected float32"):
        y = torch.zeros(3, dtype=torch.int32)
        y.grad = torch.zeros(3, dtype=torch.int32)
        st.SGD([y], lr=0.1).step()
    del x


def test_missing_torch_gives_a_clear_error():
    code = (
        "import sys; sys.modules['torch'] = None\n"
        "try:\n    import slimgrad.torch\nexcept ImportError as e:\n    print(e)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={**__import__("os").environ},
    ).stdout
    assert "slimgrad[torch]" in out
