"""slimgrad.torch's ASGD, Rprop, AdamWScheduleFree, SGDScheduleFree against
torch.optim and schedulefree: 100 steps with hooks, closures, None grads and a
scheduler, the train/eval switch mid-run, state dicts both ways, bfloat16."""

from __future__ import annotations

import copy
import re

import pytest

torch = pytest.importorskip("torch")
st = pytest.importorskip("slimgrad.torch")
sf = pytest.importorskip("schedulefree")

from test_torch_optim import STEPS, assert_close, leaves, make_params, run  # noqa: E402

pytestmark = pytest.mark.usefixtures("torch_single_thread")

CONFIGS = {
    "ASGD": dict(lr=0.05, t0=30, weight_decay=0.01),
    "ASGD_max": dict(lr=0.02, lambd=1e-2, alpha=0.5, maximize=True),
    "Rprop": dict(lr=0.01),
    "Rprop_max": dict(lr=0.05, etas=(0.3, 1.5), step_sizes=(1e-4, 0.1), maximize=True),
    "AdamWScheduleFree": dict(lr=0.01, warmup_steps=10, weight_decay=0.01),
    "SGDScheduleFree": dict(lr=0.05, momentum=0.8, warmup_steps=5, r=0.5),
}
SF = ("AdamWScheduleFree", "SGDScheduleFree")


def algo(name):
    return name.split("_")[0]


def reference(name):
    """The module of the outside reference: schedulefree or torch.optim."""
    return sf if algo(name) in SF else torch.optim


def make(module, name, params, **extra):
    opt = getattr(module, algo(name))(params, **CONFIGS[name], **extra)
    if algo(name) in SF:
        opt.train()
    return opt


def run_switching(opt, params, steps, start=0):
    """``run`` with an eval/train round trip every 25 steps (Schedule-Free)."""
    for t in range(start, start + steps, 25):
        run(opt, params, min(25, start + steps - t), start=t)
        if hasattr(opt, "eval"):
            opt.eval()
            opt.train()


@pytest.mark.parametrize("foreach", [False, True])
@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_float32_matches_the_reference(name, foreach):
    base = make_params(torch.float32)
    a, b = leaves(base), leaves(base)
    mine = make(st, name, a)
    theirs = make(reference(name), name, b, foreach=foreach)
    calls = []
    mine.register_step_pre_hook(lambda o, args, kwargs: calls.append("pre"))
    mine.register_step_post_hook(lambda o, args, kwargs: calls.append("post"))
    if algo(name) in SF:
        run_switching(mine, a, STEPS)
        run_switching(theirs, b, STEPS)
        mine.eval()
        theirs.eval()
    else:
        s_mine, s_theirs = (torch.optim.lr_scheduler.StepLR(o, 30, 0.5) for o in (mine, theirs))
        assert run(mine, a, STEPS, sched=s_mine) == run(theirs, b, STEPS, sched=s_theirs)
    assert calls == ["pre", "post"] * STEPS
    assert_close(a, b, rtol=2e-5, atol=2e-6)
    # None grads: param 3 never stepped (no state), param 2 half as often.
    assert torch.equal(a[3], base[3]) and a[3] not in mine.state
    assert set(mine.state[a[0]]) == set(theirs.state[b[0]])
    for k, v in theirs.state[b[0]].items():
        assert mine.state[a[0]][k].dtype == v.dtype, k
        assert_close([mine.state[a[0]][k]], [v], rtol=2e-5, atol=2e-6)
    if "step" in theirs.state[b[2]]:
        assert float(mine.state[a[2]]["step"]) == float(theirs.state[b[2]]["step"]) == STEPS / 2
    for key in ("k", "lr_max", "weight_sum", "train_mode"):
        if key in theirs.param_groups[0]:
            assert mine.param_groups[0][key] == pytest.approx(theirs.param_groups[0][key])


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_bfloat16_matches_float32_math_on_bfloat16_storage(name):
    base = make_params(torch.bfloat16)
    a = leaves(base)
    ptrs = [p.data_ptr() for p in a]
    mine = make(st, name, a)
    b = [p.float().requires_grad_() for p in base]
    theirs = make(reference(name), name, b, foreach=False)
    for t in range(STEPS):
        run(mine, a, 1, start=t, closure=False)
        run(theirs, b, 1, start=t, closure=False)
        with torch.no_grad():
            for p in b:
                p.copy_(p.bfloat16().float())
                for k, v in theirs.state[p].items():
                    if k not in ("step", "eta", "mu") and torch.is_tensor(v):
                        v.copy_(v.bfloat16().float())
    # Both round the same float32 values; an operation order apart, a value may
    # land one bfloat16 ulp away and carry on from there.
    assert_close(a, b, rtol=2e-2, atol=2e-2)
    assert [p.data_ptr() for p in a] == ptrs  # stepped in place
    for k, v in mine.state[a[0]].items():
        want = torch.float32 if k in ("step", "eta", "mu") else torch.bfloat16
        assert v.dtype == want, k


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_state_dict_round_trips_both_ways(name, dtype):
    base = make_params(dtype)
    for first, second in ((reference(name), st), (st, reference(name))):
        a = leaves(base)
        opt1 = make(first, name, a)
        run(opt1, a, STEPS // 2)
        if algo(name) in SF:
            opt1.eval()  # schedulefree's advice: checkpoints in eval mode
        saved = copy.deepcopy(opt1.state_dict())
        b = [p.detach().clone().requires_grad_() for p in a]
        ref = [p.detach().clone().requires_grad_() for p in a]
        opt2 = getattr(second, algo(name))(b, **CONFIGS[name])
        opt_ref = getattr(first, algo(name))(ref, **CONFIGS[name])
        opt2.load_state_dict(saved)
        opt_ref.load_state_dict(copy.deepcopy(saved))
        for o in (opt2, opt_ref):
            if algo(name) in SF:
                o.train()
        run(opt2, b, STEPS // 2, start=STEPS // 2)
        run(opt_ref, ref, STEPS // 2, start=STEPS // 2)
        if dtype == torch.float32:
            assert_close(b, ref, rtol=2e-5, atol=2e-5)
        else:  # torch's and schedulefree's bfloat16 steps round every operation to
            # bfloat16, ours only the results (float32 math): 50 steps apart.
            assert_close(b, ref, rtol=0.1, atol=0.1)
        assert set(opt2.state_dict()["param_groups"][0]) == set(saved["param_groups"][0])


def test_schedulefree_step_in_eval_mode_raises():
    p = torch.zeros(3, requires_grad=True)
    opt = st.AdamWScheduleFree([p])
    p.grad = torch.ones(3)
    with pytest.raises(RuntimeError, match="not in train mode"):
        opt.step()
    assert opt.param_groups[0]["k"] == 0 and not opt.state


@pytest.mark.parametrize(
    "name, bad", [("Rprop", dict(etas=(1.5, 2.0))), ("Rprop", dict(lr=-1)), ("ASGD", dict(lr=-1))]
)
def test_bad_options_raise_torchs_own_error(name, bad):
    # The constructor is torch's own (slimgrad.torch._fused._Mirrored): same message.
    p = torch.zeros(3, requires_grad=True)
    with pytest.raises(ValueError) as theirs:
        getattr(torch.optim, name)([p], **bad)
    with pytest.raises(ValueError, match=re.escape(str(theirs.value))):
        getattr(st, name)([p], **bad)


def test_unsupported_torch_flags_raise():
    p = torch.zeros(3, requires_grad=True)
    with pytest.raises(ValueError, match="capturable=True is not supported"):
        st.ASGD([p], capturable=True)
    with pytest.raises(ValueError, match="Momentum must be between 0 and 1 exclusive: 1.0"):
        st.SGDScheduleFree([p], momentum=1.0)
    with pytest.raises(ValueError, match=r"betas\[0\]: expected 0 < beta1 < 1"):
        st.AdamWScheduleFree([p], betas=(0.0, 0.9))
