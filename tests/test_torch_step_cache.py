"""slimgrad.torch's cached step (a plan per group, reused while the group is
stepped as before) gives the same bits as the uncached path whatever changes
between steps: new gradient tensors, a swapped parameter memory, a replaced
state tensor, a scheduler's lr, a None gradient, a loaded state dict; and bad
input still gets the full path's error with nothing modified."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
import slimgrad.torch as st  # noqa: E402
from slimgrad.torch._base import TorchOptimizer  # noqa: E402
from slimgrad.torch._fused import _Plan  # noqa: E402

pytestmark = pytest.mark.usefixtures("torch_single_thread")

SHAPES = [(7, 5), (33,), (1,)]


def _params(dtype):
    gen = torch.Generator().manual_seed(0)
    return [torch.randn(s, generator=gen).to(dtype).requires_grad_() for s in SHAPES]


def _scenario(opt_cls, dtype, cached, monkeypatch, **kw):
    if not cached:
        monkeypatch.setattr(TorchOptimizer, "_fast_ready", lambda self: None)
        monkeypatch.setattr(opt_cls, "_fast_ready", lambda self: None, raising=False)
    ps = _params(dtype)
    opt = opt_cls(ps, lr=0.01, **kw)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.5)
    gen = torch.Generator().manual_seed(1)
    for step in range(12):
        opt.zero_grad(set_to_none=True)
        for p in ps:
            p.grad = torch.randn(p.shape, generator=gen).to(dtype)
        if step == 4:
            ps[0].data = ps[0].data.clone()  # new memory under the same tensor
        if step == 6:
            key = next(k for k in opt.state[ps[1]] if k != "step")
            opt.state[ps[1]][key] = opt.state[ps[1]][key].clone()
        if step == 8:
            ps[2].grad = None
        if step == 10:
            opt.load_state_dict(opt.state_dict())
        opt.step()
        sched.step()
    if not cached:
        monkeypatch.undo()
    return ps, opt


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["float32", "bfloat16"])
@pytest.mark.parametrize(
    "opt_cls,kw",
    [(st.AdamW, {}), (st.SGD, dict(momentum=0.9)), (st.Adam, dict(amsgrad=True)), (st.Lion, {})],
    ids=["AdamW", "SGD", "Adam", "Lion"],
)
def test_cached_equals_uncached(opt_cls, kw, dtype, monkeypatch):
    ref_ps, ref = _scenario(opt_cls, dtype, False, monkeypatch, **kw)
    used = []
    prepare = _Plan.prepare

    def spy(self, opt, group):
        run = prepare(self, opt, group)
        used.append(run is not None)
        return run

    monkeypatch.setattr(_Plan, "prepare", spy)
    got_ps, got = _scenario(opt_cls, dtype, True, monkeypatch, **kw)
    assert sum(used) >= 4, used  # the cached path ran (and was refused after each change)
    for a, b in zip(got_ps, ref_ps):
        assert torch.equal(a.detach(), b.detach())
    for pa, pb in zip(got_ps, ref_ps):
        for k, v in ref.state[pb].items():
            assert torch.equal(got.state[pa][k], v), k


def test_bad_gradient_after_caching_gets_the_full_error():
    ps = _params(torch.float32)
    opt = st.AdamW(ps)
    for p in ps:
        p.grad = torch.ones_like(p)
    opt.step()
    opt.step()  # cached now
    before = [p.detach().clone() for p in ps]
    ps[1].grad = torch.ones(66)[::2]  # non-contiguous
    with pytest.raises(TypeError, match="contiguous"):
        opt.step()
    for a, b in zip(ps, before):
        assert torch.equal(a.detach(), b)
    assert all(int(opt.state[p]["step"]) == 2 for p in ps)


def test_no_plan_for_a_copy_of_the_group():
    # Optimizers that pass a copy of the group with per-step extras (ASGD,
    # Schedule-Free) keep taking the full path: no plan, none piling up.
    class Copying(st.AdamW):
        def _run(self, group, params, step):
            super()._run({**group}, params, step)

    ps = _params(torch.float32)
    opt = Copying(ps)
    for _ in range(5):
        for p in ps:
            p.grad = torch.ones_like(p)
        opt.step()
    assert not opt.__dict__.get("_plans")
