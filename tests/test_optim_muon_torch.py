"""slimgrad.torch.Muon and slimgrad.torch.Prodigy against torch.optim.Muon and
prodigyopt.Prodigy: torch's API (closures, None grads, state dicts both ways),
the same numbers as the NumPy classes, half-precision parameters."""

from __future__ import annotations

import contextlib
import copy
import io

import numpy as np
import pytest

torch = pytest.importorskip("torch")
prodigyopt = pytest.importorskip("prodigyopt")
threadpoolctl = pytest.importorskip("threadpoolctl")
import slimgrad.optim as so  # noqa: E402
import slimgrad.torch as st  # noqa: E402

pytestmark = pytest.mark.usefixtures("torch_single_thread")
if not hasattr(torch.optim, "Muon"):
    pytest.skip("torch.optim.Muon needs torch >= 2.9", allow_module_level=True)


@pytest.fixture(autouse=True)
def blas_single_thread():
    with threadpoolctl.threadpool_limits(1, user_api="blas"):
        yield


def rel(a, b):
    a, b = (
        np.asarray(x.detach() if isinstance(x, torch.Tensor) else x, np.float64) for x in (a, b)
    )
    return float(np.abs(a - b).max() / np.abs(b).max())


def quad_loss(params, target, t):
    g = torch.Generator().manual_seed(t)
    return sum(((p - x) ** 2).sum() + 0.1 * (torch.randn(p.shape, generator=g) * p).sum()
               for p, x in zip(params, target))  # fmt: skip


def train(opt, params, target, steps, closure=False):
    if isinstance(opt, list):  # several optimizers over one loss
        for t in range(steps):
            params[0].grad = None
            for o in opt:
                o.zero_grad()
            quad_loss(params, target, t).backward()
            for o in opt:
                o.step()
        return
    for t in range(steps):
        opt.zero_grad()
        if closure:

            def f(t=t):
                loss = quad_loss(params, target, t)
                loss.backward()
                return loss

            opt.step(f)
        else:
            quad_loss(params, target, t).backward()
            opt.step()


def make(shapes, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    ps = [torch.nn.Parameter(torch.randn(s, generator=g).to(dtype)) for s in shapes]
    target = [torch.randn(s, generator=g) for s in shapes]
    return ps, target


# --------------------------------------------------------------------- Muon
def test_muon_same_numbers_as_numpy_class():
    ps, target = make([(12, 20), (30, 7)])
    opt = st.Muon(ps, lr=0.02, ns_dtype="float32")
    arrays = [p.detach().numpy().copy() for p in ps]
    ref = so.Muon(arrays, lr=0.02, ns_dtype="float32")
    for t in range(10):
        opt.zero_grad()
        quad_loss(ps, target, t).backward()
        grads = [p.grad.numpy().copy() for p in ps]
        opt.step()
        ref.step(grads)
    for p, a in zip(ps, arrays):
        np.testing.assert_array_equal(p.detach().numpy(), a)


def test_muon_matches_torch_with_closure_and_state_dicts():
    shapes = [(1, 7), (7, 1)]  # 1x1 Gram matrices: torch's bits (test_optim_muon.py)
    ps, target = make(shapes)
    qs = [torch.nn.Parameter(p.detach().clone()) for p in ps]
    mine, theirs = st.Muon(ps, lr=0.02), torch.optim.Muon(qs, lr=0.02)
    train(mine, ps, target, 50, closure=True)
    train(theirs, qs, target, 50)
    for p, q in zip(ps, qs):
        assert rel(p, q) < 2e-5
    # torch's state dict into ours and ours into torch's: both continue alike.
    ps2 = [torch.nn.Parameter(q.detach().clone()) for q in qs]
    mine2 = st.Muon(ps2, lr=0.02)
    mine2.load_state_dict(copy.deepcopy(theirs.state_dict()))  # torch's holds live tensors
    qs2 = [torch.nn.Parameter(p.detach().clone()) for p in ps]
    theirs2 = torch.optim.Muon(qs2, lr=0.02)
    theirs2.load_state_dict(copy.deepcopy(mine.state_dict()))
    train(mine2, ps2, target, 50)
    train(theirs, qs, target, 50)
    train(theirs2, qs2, target, 50)
    for a, b in zip(ps2, qs):
        assert rel(a, b) < 2e-5
    for a, b in zip(qs2, qs):
        assert rel(a, b) < 2e-5


def test_muon_skips_params_without_grad_and_refuses_non_2d():
    ps, _ = make([(3, 4), (4, 5)])
    opt = st.Muon(ps, lr=0.1)
    ps[0].grad = torch.ones(3, 4)
    before = ps[1].detach().clone()
    opt.step()
    assert ps[1] not in opt.state and torch.equal(ps[1].detach(), before)
    with pytest.raises(ValueError, match="2D"):
        st.Muon([torch.nn.Parameter(torch.zeros(4))])


def test_muon_adamw_fallback_group_matches_torch_adamw():
    ps, target = make([(5, 6), (6,), (2, 3, 4)])
    qs = [torch.nn.Parameter(p.detach().clone()) for p in ps]
    opt = st.Muon([{"params": ps[:1]},
                   {"params": ps[1:], "use_muon": False, "lr": 1e-2, "eps": 1e-8,
                    "weight_decay": 0.01}], lr=0.02)  # fmt: skip
    ref = torch.optim.AdamW(qs[1:], lr=1e-2, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.01)
    train(opt, ps, target, 30)
    train([ref, torch.optim.Muon(qs[:1], lr=0.02)], qs, target, 30)
    for p, q in zip(ps[1:], qs[1:]):
        assert rel(p, q) < 2e-5


def test_muon_bfloat16_params():
    ps, target = make([(16, 24)])
    qs = [torch.nn.Parameter(p.detach().to(torch.bfloat16)) for p in ps]
    train(st.Muon(ps, lr=0.02), ps, target, 10)
    opt = st.Muon(qs, lr=0.02)
    train(opt, qs, target, 10)
    assert qs[0].dtype == torch.bfloat16
    assert opt.state[qs[0]]["momentum_buffer"].dtype == torch.float32
    assert (qs[0].detach().float() - ps[0].detach()).abs().max() < 0.1


# ------------------------------------------------------------------ Prodigy
VARIANTS = [{}, {"weight_decay": 0.1, "decouple": False}, {"weight_decay": 0.1}]


@pytest.mark.parametrize("kw", VARIANTS, ids=lambda kw: ",".join(kw) or "defaults")
def test_prodigy_matches_prodigyopt_over_100_steps(kw):
    ps, target = make([(20, 30), (7,), (3, 4, 5)])
    qs = [torch.nn.Parameter(p.detach().clone()) for p in ps]
    mine = st.Prodigy(ps, **kw)
    with contextlib.redirect_stdout(io.StringIO()):
        theirs = prodigyopt.Prodigy(qs, **kw)
    train(mine, ps, target, 100, closure=True)
    train(theirs, qs, target, 100)
    for p, q in zip(ps, qs):
        assert rel(p, q) < 2e-5
    assert mine.param_groups[0]["d"] == pytest.approx(theirs.param_groups[0]["d"], rel=2e-5)
    assert mine.param_groups[0]["d"] > 100 * 1e-6


def test_prodigy_state_dicts_both_ways():
    ps, target = make([(10, 10), (5,)])
    qs = [torch.nn.Parameter(p.detach().clone()) for p in ps]
    mine = st.Prodigy(ps)
    with contextlib.redirect_stdout(io.StringIO()):
        theirs = prodigyopt.Prodigy(qs)
    train(mine, ps, target, 20)
    train(theirs, qs, target, 20)
    ps2 = [torch.nn.Parameter(q.detach().clone()) for q in qs]
    mine2 = st.Prodigy(ps2)
    mine2.load_state_dict(copy.deepcopy(theirs.state_dict()))  # torch's holds live tensors
    qs2 = [torch.nn.Parameter(p.detach().clone()) for p in ps]
    with contextlib.redirect_stdout(io.StringIO()):
        theirs2 = prodigyopt.Prodigy(qs2)
    theirs2.load_state_dict(copy.deepcopy(mine.state_dict()))
    for opt, params in ((mine2, ps2), (theirs, qs), (theirs2, qs2)):
        train(opt, params, target, 20)
    for a, b, c in zip(ps2, qs, qs2):
        assert rel(a, b) < 2e-5 and rel(c, b) < 2e-5


def test_prodigy_none_grads_and_half_params():
    ps, target = make([(4, 5), (3,)])
    opt = st.Prodigy(ps)
    ps[0].grad = torch.ones(4, 5)
    opt.step()
    assert ps[1] not in opt.state
    hs, _ = make([(8, 8)], dtype=torch.bfloat16)
    opt = st.Prodigy(hs)
    train(opt, hs, make([(8, 8)])[1], 5)
    assert hs[0].dtype == torch.bfloat16 and opt.state[hs[0]]["exp_avg"].dtype == torch.float32
