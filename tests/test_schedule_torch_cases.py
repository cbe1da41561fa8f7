"""Regression tests for issue 15's scheduler cases, each compared with torch 2.13.

Cases ported from the situations PyTorch's test_lrscheduler.py exercises: resuming
with ``last_epoch >= 0``, SequentialLR holding a ChainedScheduler, chained state
dicts, ReduceLROnPlateau with a later param group, CosineAnnealingWarmRestarts'
``T_cur``, the bounds CyclicLR/OneCycleLR keep in ``param_groups``, and the
deprecated ``step(epoch)``.
"""

from __future__ import annotations

import copy
import warnings

import pytest
from slimgrad import schedule as S

torch = pytest.importorskip("torch")
TL = torch.optim.lr_scheduler
REL = 1e-12
# Torch's "scheduler.step() before optimizer.step()" advice is not what is tested.
pytestmark = pytest.mark.filterwarnings(
    "ignore:Detected call of:UserWarning",
    "ignore:Seems like:UserWarning",
)


class Groups:
    """Stand-in optimizer for slimgrad's schedulers."""

    def __init__(self, groups, defaults=None):
        self.param_groups = groups
        self.defaults = defaults or {k: v for k, v in groups[0].items() if k != "lr"}


def make_pair(groups=None, adam=False):
    """(slimgrad stand-in, torch Optimizer stand-in) holding equal, separate groups."""
    if groups is None:
        key = ("betas", (0.9, 0.999)) if adam else ("momentum", 0.9)
        groups = [{"lr": 0.1, key[0]: key[1]}, {"lr": 0.05, key[0]: key[1]}]

    class Stand(torch.optim.Optimizer):
        def __init__(self, gs):
            self.param_groups = gs
            self.defaults = {k: v for k, v in gs[0].items() if k != "lr"}

        def step(self, closure=None):
            return None

    return Groups(copy.deepcopy(groups)), Stand(copy.deepcopy(groups))


def lrs(opt, key="lr"):
    return [g[key] for g in opt.param_groups]


def close(a, b):
    return all(abs(x - y) <= REL * max(abs(x), abs(y)) for x, y in zip(a, b)) and len(a) == len(b)


def quiet():
    ctx = warnings.catch_warnings()
    ctx.__enter__()
    warnings.simplefilter("ignore")
    return ctx


def run_both(mine, theirs, mo, to, steps, key="lr"):
    got, want = [lrs(mo, key)], [lrs(to, key)]
    for _ in range(steps):
        mine.step()
        theirs.step()
        got.append(lrs(mo, key))
        want.append(lrs(to, key))
    for t, (g, w) in enumerate(zip(got, want)):
        assert close(g, w), f"step {t}: {g} != torch {w}"
    return got


# ------------------------------------------------------------------ resuming


RESUMABLE = {
    "ExponentialLR": lambda L, o, e: L.ExponentialLR(o, 0.999, last_epoch=e),
    "MultiplicativeLR": lambda L, o, e: L.MultiplicativeLR(o, lambda k: 0.97, last_epoch=e),
    "LinearLR": lambda L, o, e: L.LinearLR(o, 0.25, 0.9, total_iters=12, last_epoch=e),
    "PolynomialLR": lambda L, o, e: L.PolynomialLR(o, total_iters=15, power=1.5, last_epoch=e),
    "CosineAnnealingLR": lambda L, o, e: L.CosineAnnealingLR(o, 10, 1e-3, last_epoch=e),
    "StepLR": lambda L, o, e: L.StepLR(o, 3, 0.5, last_epoch=e),
    "MultiStepLR": lambda L, o, e: L.MultiStepLR(o, [1, 4, 9], 0.5, last_epoch=e),
    "ConstantLR": lambda L, o, e: L.ConstantLR(o, 0.5, 4, last_epoch=e),
    "LambdaLR": lambda L, o, e: L.LambdaLR(o, lambda k: 1 / (k + 1), last_epoch=e),
}


@pytest.mark.parametrize("name", sorted(RESUMABLE))
@pytest.mark.parametrize("last_epoch", [0, 1, 6])
@pytest.mark.parametrize("lr", [0.001, 0.0007])
def test_resume_with_last_epoch_matches_torch(name, last_epoch, lr):
    # A resumed optimizer: initial_lr saved, lr either the initial one or moved on.
    groups = [{"lr": lr, "initial_lr": 0.001, "momentum": 0.9}]
    mo, to = make_pair(groups)
    ctx = quiet()
    mine = RESUMABLE[name](S, mo, last_epoch)
    theirs = RESUMABLE[name](TL, to, last_epoch)
    run_both(mine, theirs, mo, to, 30)
    ctx.__exit__(None, None, None)
    assert mine.last_epoch == theirs.last_epoch


def test_exponential_resume_value_from_the_issue():
    mo, to = make_pair([{"lr": 0.001, "initial_lr": 0.001, "momentum": 0.9}])
    mine = S.ExponentialLR(mo, 0.999, last_epoch=0)
    assert mo.param_groups[0]["lr"] == 0.001  # kept at construction, as torch
    mine.step()
    assert abs(mo.param_groups[0]["lr"] - 0.000999) < 1e-18


# ------------------------------------------------------------------ composites


def test_sequential_holding_chained_matches_torch():
    mo, to = make_pair()
    ctx = quiet()

    def build(L, o):
        chain = L.ChainedScheduler([L.ExponentialLR(o, 0.9), L.StepLR(o, 2, 0.5)])
        return L.SequentialLR(o, [chain, L.ExponentialLR(o, 0.5)], milestones=[5])

    mine, theirs = build(S, mo), build(TL, to)
    assert close(lrs(mo), lrs(to))  # torch's chain starts one step in (0.09, not 0.1)
    run_both(mine, theirs, mo, to, 12)
    assert close(mine.get_last_lr(), theirs.get_last_lr())
    ctx.__exit__(None, None, None)


@pytest.mark.parametrize(
    "children",
    [
        lambda L, o: [L.CosineAnnealingLR(o, 7, 1e-3), L.LinearLR(o, 0.5, 1, 4)],
        lambda L, o: [L.PolynomialLR(o, 6, 2.0), L.MultiplicativeLR(o, lambda k: 0.9)],
        lambda L, o: [L.CosineAnnealingLR(o, 1), L.ConstantLR(o, 0.5, 3)],
    ],
)
def test_sequential_chained_first_children_step_like_torch(children):
    mo, to = make_pair()
    ctx = quiet()
    mine = S.SequentialLR(mo, [S.ChainedScheduler(children(S, mo)), S.StepLR(mo, 2)], [9])
    theirs = TL.SequentialLR(to, [TL.ChainedScheduler(children(TL, to)), TL.StepLR(to, 2)], [9])
    run_both(mine, theirs, mo, to, 8)
    ctx.__exit__(None, None, None)


def test_sequential_chained_at_milestone_raises_like_torch():
    mo, to = make_pair()
    ctx = quiet()
    mine = S.SequentialLR(
        mo, [S.LinearLR(mo, 0.5), S.ChainedScheduler([S.ExponentialLR(mo, 0.9)])], [2]
    )
    theirs = TL.SequentialLR(
        to, [TL.LinearLR(to, 0.5), TL.ChainedScheduler([TL.ExponentialLR(to, 0.9)])], [2]
    )
    mine.step()
    theirs.step()
    with pytest.raises(NotImplementedError):
        theirs.step()
    before = copy.deepcopy(mo.param_groups)
    with pytest.raises(NotImplementedError, match="ChainedScheduler"):
        mine.step()
    assert mo.param_groups == before and mine.last_epoch == 1
    ctx.__exit__(None, None, None)


def test_chained_load_state_dict_keeps_saved_last_lr():
    results = []
    for L in (S, TL):
        o1, o2 = make_pair()
        o = o1 if L is S else o2
        chain = L.ChainedScheduler([L.ExponentialLR(o, 0.9), L.StepLR(o, 2, 0.5)])
        for _ in range(5):
            chain.step()
        state = copy.deepcopy(chain.state_dict())
        saved = list(chain.get_last_lr())
        fresh = make_pair()[0 if L is S else 1]
        other = L.ChainedScheduler([L.ExponentialLR(fresh, 0.9), L.StepLR(fresh, 2, 0.5)])
        other.load_state_dict(state)
        assert other.get_last_lr() == saved != lrs(fresh)
        fresh.param_groups[:] = copy.deepcopy(o.param_groups)  # the optimizer state too
        for _ in range(3):
            other.step()
        results.append(other.get_last_lr())
    assert close(results[0], results[1])


def test_chained_get_last_lr_is_the_lr_even_if_last_child_schedules_weight_decay():
    opt = Groups([{"lr": 0.1, "weight_decay": 0.01}])
    chain = S.ChainedScheduler(
        [S.ExponentialLR(opt, 0.9), S.StepLR(opt, 1, 0.5, hyperparam="weight_decay")]
    )
    for _ in range(3):
        chain.step()
        assert chain.get_last_lr() == [opt.param_groups[0]["lr"]]
    assert opt.param_groups[0]["weight_decay"] == pytest.approx(0.01 * 0.5**3)


# ------------------------------------------------------------------ plateau


@pytest.mark.parametrize("min_lr", [1e-4, [1e-4, 1e-5]])
def test_plateau_with_a_group_added_later_like_torch(min_lr):
    mo, to = make_pair()
    mine = S.ReduceLROnPlateau(mo, patience=0, min_lr=min_lr)
    theirs = TL.ReduceLROnPlateau(to, patience=0, min_lr=min_lr)
    for o in (mo, to):
        o.param_groups.append({"lr": 0.2, "momentum": 0.9})
    mine.step(1.0)
    theirs.step(1.0)
    if isinstance(min_lr, list):
        with pytest.raises(RuntimeError):
            theirs.step(2.0)
        before = copy.deepcopy(mo.param_groups)
        with pytest.raises(RuntimeError, match="param group"):
            mine.step(2.0)
        assert mo.param_groups == before
    else:
        for m in (2.0, 3.0, 0.5, 4.0):
            mine.step(m)
            theirs.step(m)
            assert mine.get_last_lr() == theirs.get_last_lr()
        assert mine.min_lrs == theirs.min_lrs


def test_plateau_step_epoch_warns_like_torch():
    mo, to = make_pair()
    mine, theirs = S.ReduceLROnPlateau(mo), TL.ReduceLROnPlateau(to)
    with pytest.warns(UserWarning, match="deprecated"):
        mine.step(1.0, 7)
    with pytest.warns(UserWarning):
        theirs.step(1.0, 7)
    assert mine.last_epoch == theirs.last_epoch == 7


# ------------------------------------------------------------------ warm restarts


@pytest.mark.parametrize("t_mult", [1, 2])
def test_warm_restarts_t_cur_set_by_hand(t_mult):
    mo, to = make_pair()
    mine = S.CosineAnnealingWarmRestarts(mo, 10, t_mult, eta_min=1e-3)
    theirs = TL.CosineAnnealingWarmRestarts(to, 10, t_mult, eta_min=1e-3)
    run_both(mine, theirs, mo, to, 4)
    mine.T_cur = theirs.T_cur = 8
    run_both(mine, theirs, mo, to, 25)
    assert (mine.T_cur, mine.T_i) == (theirs.T_cur, theirs.T_i)


@pytest.mark.parametrize("t_mult", [1, 2, 3])
def test_warm_restarts_fractional_epochs_like_torch(t_mult):
    mo, to = make_pair()
    mine = S.CosineAnnealingWarmRestarts(mo, 4, t_mult)
    theirs = TL.CosineAnnealingWarmRestarts(to, 4, t_mult)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the fractional step(epoch) is not deprecated here
        for epoch in (0.5, 1.25, 3.9, 4.0, 5.5, 13.2, 2.0, 30.7):
            mine.step(epoch)
            theirs.step(epoch)
            assert close(lrs(mo), lrs(to)), epoch
            assert mine.last_epoch == theirs.last_epoch
    with pytest.raises(ValueError, match="non-negative epoch"):
        mine.step(-1)


def test_warm_restarts_resumed_like_torch():
    groups = [{"lr": 0.05, "initial_lr": 0.1, "momentum": 0.9}]
    mo, to = make_pair(groups)
    mine = S.CosineAnnealingWarmRestarts(mo, 10, 2, last_epoch=25)
    theirs = TL.CosineAnnealingWarmRestarts(to, 10, 2, last_epoch=25)
    run_both(mine, theirs, mo, to, 40)


# ------------------------------------------------------------------ bounds in param_groups


@pytest.mark.parametrize("adam", [False, True])
def test_cyclic_and_onecycle_bounds_in_param_groups(adam):
    for build in (
        lambda L, o: L.CyclicLR(o, 0.01, [0.1, 0.2], 5, base_momentum=0.8, max_momentum=0.95),
        lambda L, o: L.OneCycleLR(o, [0.1, 0.3], total_steps=40, three_phase=True),
    ):
        mo, to = make_pair(adam=adam)
        mine, theirs = build(S, mo), build(TL, to)
        assert set(mo.param_groups[0]) == set(to.param_groups[0])
        for gm, gt in zip(mo.param_groups, to.param_groups):
            for k in gt:
                assert gm[k] == pytest.approx(gt[k], rel=REL), k
        ctx = quiet()
        run_both(mine, theirs, mo, to, 10)
        ctx.__exit__(None, None, None)


def test_onecycle_reads_bounds_edited_in_param_groups_like_torch():
    mo, to = make_pair()
    ctx = quiet()
    mine, theirs = S.OneCycleLR(mo, 0.1, total_steps=50), TL.OneCycleLR(to, 0.1, total_steps=50)
    run_both(mine, theirs, mo, to, 5)
    for o in (mo, to):
        o.param_groups[0]["max_lr"] = 0.5
        o.param_groups[1]["max_momentum"] = 0.99
    run_both(mine, theirs, mo, to, 40)
    assert close(lrs(mo, "momentum"), lrs(to, "momentum"))
    ctx.__exit__(None, None, None)


def test_onecycle_resume_reads_param_groups():
    mo, to = make_pair()
    ctx = quiet()
    S.OneCycleLR(mo, 0.1, total_steps=50)
    TL.OneCycleLR(to, 0.1, total_steps=50)
    mine = S.OneCycleLR(mo, 0.1, total_steps=50, last_epoch=10)
    theirs = TL.OneCycleLR(to, 0.1, total_steps=50, last_epoch=10)
    run_both(mine, theirs, mo, to, 39)
    ctx.__exit__(None, None, None)
    bare = Groups([{"lr": 0.1, "initial_lr": 0.1, "momentum": 0.9}])
    with pytest.raises(KeyError, match="max_lr"):
        S.OneCycleLR(bare, 0.1, total_steps=50, last_epoch=10)


# ------------------------------------------------------------------ step(epoch)


EPOCH_CASES = {
    "StepLR": lambda L, o: L.StepLR(o, 3, 0.5),
    "MultiStepLR": lambda L, o: L.MultiStepLR(o, [2, 5, 5, 9], 0.5),
    "ConstantLR": lambda L, o: L.ConstantLR(o, 0.5, 4),
    "LinearLR": lambda L, o: L.LinearLR(o, 0.25, 1.0, 6),
    "ExponentialLR": lambda L, o: L.ExponentialLR(o, 0.9),
    "PolynomialLR": lambda L, o: L.PolynomialLR(o, 8, 0.9),
    "CosineAnnealingLR": lambda L, o: L.CosineAnnealingLR(o, 10, 1e-3),
    "LambdaLR": lambda L, o: L.LambdaLR(o, lambda k: 0.95**k),
    "MultiplicativeLR": lambda L, o: L.MultiplicativeLR(o, lambda k: 0.9 + 0.001 * k),
    "CyclicLR": lambda L, o: L.CyclicLR(o, 0.01, 0.1, 4),
    "OneCycleLR": lambda L, o: L.OneCycleLR(o, 0.1, total_steps=30),
}


@pytest.mark.parametrize("name", sorted(EPOCH_CASES))
def test_step_epoch_matches_torch_and_warns(name):
    mo, to = make_pair()
    ctx = quiet()
    mine, theirs = EPOCH_CASES[name](S, mo), EPOCH_CASES[name](TL, to)
    ctx.__exit__(None, None, None)
    for epoch in (3, 4, 4, 10, 2, 0, 7):
        with warnings.catch_warnings(record=True) as w:
            warnings.simplefilter("always")
            mine.step(epoch)
        assert len(w) == 1 and issubclass(w[0].category, UserWarning)
        assert "deprecated" in str(w[0].message)
        ctx = quiet()
        theirs.step(epoch)
        ctx.__exit__(None, None, None)
        assert mine.last_epoch == theirs.last_epoch == epoch
        assert close(lrs(mo), lrs(to)), (epoch, lrs(mo), lrs(to))
        assert close(mine.get_last_lr(), theirs.get_last_lr())
    # Plain steps continue from there like torch's.
    ctx = quiet()
    run_both(mine, theirs, mo, to, 6)
    ctx.__exit__(None, None, None)


def test_step_epoch_past_onecycle_end_changes_nothing():
    opt = Groups([{"lr": 0.1, "momentum": 0.9}])
    sched = S.OneCycleLR(opt, 0.1, total_steps=10)
    before = copy.deepcopy(opt.param_groups)
    with pytest.raises(ValueError, match="Tried to step 11 times"):
        with pytest.warns(UserWarning):
            sched.step(11)
    assert opt.param_groups == before and sched.last_epoch == 0


@pytest.mark.parametrize(
    "build",
    [
        lambda L, o: L.StepLR(o, 2),
        lambda L, o: L.ExponentialLR(o, gamma=0.9),
        lambda L, o: L.ConstantLR(o),
        lambda L, o: L.LinearLR(o),
        lambda L, o: L.PolynomialLR(o, power=0.9),
    ],
)
def test_lr_is_constant_for_constant_epoch(build):
    # torch's test_*_is_constant_for_constant_epoch: step(2) ten times, one value.
    mo, to = make_pair()
    mine, theirs = build(S, mo), build(TL, to)
    seen = []
    for _ in range(10):
        with pytest.warns(UserWarning, match="deprecated"):
            mine.step(2)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            theirs.step(2)
        seen.append(mo.param_groups[0]["lr"])
        assert close(lrs(mo), lrs(to))
    assert min(seen) == max(seen)
