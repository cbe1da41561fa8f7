"""torch compatibility of the optimizer API: torch's implementation keywords
(foreach/fused/capturable/differentiable), state dicts carrying scheduler keys
(initial_lr...), and param_groups edits validated before a step."""

from __future__ import annotations

import inspect

import numpy as np
import pytest
from slimgrad import optim
from slimgrad.schedule import StepLR
from test_optim_api import assert_unchanged, snapshot

OPTIMIZERS = [
    "SGD",
    "Adagrad",
    "RMSprop",
    "Adadelta",
    "Adam",
    "AdamW",
    "Adamax",
    "NAdam",
    "RAdam",
    "Lion",
    "LAMB",
    "AdamW8bit",
    "Adafactor",
    "ASGD",
    "Rprop",
]
TORCH_FLAGS = {"foreach": None, "fused": None, "capturable": False, "differentiable": False}


def make(rng, n=300):
    # n > 256 keeps AdamW8bit's blocks honest; 2-D so Adafactor factors.
    p = rng.standard_normal((3, n)).astype(np.float32)
    g = rng.standard_normal((3, n)).astype(np.float32)
    return p, g


# ----------------------------------------------- item 12: torch's keywords
@pytest.mark.parametrize("name", OPTIMIZERS)
def test_torch_flags_in_every_signature_with_torch_defaults(name):
    sig = inspect.signature(getattr(optim, name).__init__).parameters
    for flag, default in TORCH_FLAGS.items():
        assert sig[flag].kind is inspect.Parameter.KEYWORD_ONLY
        assert sig[flag].default is default


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_an_unknown_keyword_raises_type_error_and_builds_nothing(rng, name):
    # The shared keyword tail (optim/_keywords.py) takes only its own keys,
    # as a written-out signature would.
    p, _ = make(rng)
    before = p.copy()
    with pytest.raises(
        TypeError, match=f"^{name}\\(\\) got an unexpected keyword argument 'maximise'$"
    ):
        getattr(optim, name)([p], maximise=True)
    np.testing.assert_array_equal(p, before)


def test_schedule_free_has_no_maximize_keyword(rng):
    p, _ = make(rng)
    for name in ("AdamWScheduleFree", "SGDScheduleFree"):
        assert "maximize" not in inspect.signature(getattr(optim, name)).parameters
        with pytest.raises(TypeError, match="unexpected keyword argument 'maximize'"):
            getattr(optim, name)([p], maximize=True)


@pytest.mark.parametrize("name", OPTIMIZERS)
@pytest.mark.parametrize(
    "flags",
    [
        dict(foreach=True),
        dict(foreach=False),
        dict(fused=True),
        dict(fused=False),
        dict(capturable=False, differentiable=False),
    ],
)
def test_foreach_fused_are_ignored(rng, name, flags):
    p, g = make(rng)
    p2 = p.copy()
    ref = getattr(optim, name)([p])
    opt = getattr(optim, name)([p2], **flags)
    # Not stored: the groups and the state dict are those of the plain optimizer.
    assert opt.param_groups[0].keys() == ref.param_groups[0].keys()
    assert opt.defaults == ref.defaults
    for _ in range(2):
        ref.step([g])
        opt.step([g])
    np.testing.assert_array_equal(p2, p)
    assert opt.state_dict()["param_groups"] == ref.state_dict()["param_groups"]


@pytest.mark.parametrize("name", OPTIMIZERS)
@pytest.mark.parametrize("flag", ["capturable", "differentiable"])
def test_capturable_differentiable_true_raise(rng, name, flag):
    p, _ = make(rng)
    with pytest.raises(ValueError) as e:
        getattr(optim, name)([p], **{flag: True})
    assert str(e.value) == (
        f"{flag}: expected False (slimgrad has no autograd or CUDA graphs), got True"
    )


@pytest.mark.parametrize("flag", ["foreach", "fused"])
def test_foreach_fused_must_be_bool_or_none(rng, flag):
    p, _ = make(rng)
    with pytest.raises(TypeError) as e:
        optim.Adam([p], **{flag: "yes"})
    assert str(e.value) == f"{flag}: expected None, True or False, got 'yes'"


def test_state_dict_with_or_without_torch_flags_loads(rng):
    p, g = make(rng)
    src = optim.Adam([p.copy()], fused=True)
    src.step([g])
    sd = src.state_dict()
    assert not set(TORCH_FLAGS) & set(sd["param_groups"][0])
    # As torch saves it: the flags in every group.
    sd_torch = {
        "state": sd["state"],
        "param_groups": [{**gr, **TORCH_FLAGS} for gr in sd["param_groups"]],
    }
    for d in (sd, sd_torch):
        q = p.copy()
        opt = optim.Adam([q])
        opt.load_state_dict(d)
        opt.step([g])
        src_again = optim.Adam([p.copy()])
        src_again.load_state_dict(sd)
        src_again.step([g])
        np.testing.assert_array_equal(q, src_again.param_groups[0]["params"][0])


# ----------------------------------- item 11: state dicts with scheduler keys
@pytest.mark.parametrize("name", ["AdamW", "SGD", "Lion"])
def test_load_state_dict_saved_with_a_scheduler_resumes(rng, name):
    p, g = make(rng)
    cls = getattr(optim, name)

    def steps(opt, sched, n):
        for _ in range(n):
            opt.step([g])
            sched.step()

    # Uninterrupted: 6 steps with StepLR(2).
    q = p.copy()
    opt = cls([q], lr=0.1)
    steps(opt, StepLR(opt, 2, gamma=0.5), 6)
    # Interrupted after 3: a fresh optimizer without a scheduler loads the state dict.
    r = p.copy()
    a = cls([r], lr=0.1)
    sa = StepLR(a, 2, gamma=0.5)
    steps(a, sa, 3)
    sd, ssd = a.state_dict(), sa.state_dict()
    assert sd["param_groups"][0]["initial_lr"] == 0.1
    r2 = r.copy()
    b = cls([r2])
    b.load_state_dict(sd)
    assert b.param_groups[0]["initial_lr"] == 0.1  # kept, as in torch
    assert b.param_groups[0]["lr"] == sd["param_groups"][0]["lr"]
    sb = StepLR(b, 2, gamma=0.5, last_epoch=2)  # needs initial_lr, as in torch
    sb.load_state_dict(ssd)
    steps(b, sb, 3)
    np.testing.assert_array_equal(r2, q)
    assert b.param_groups[0]["lr"] == opt.param_groups[0]["lr"]
    assert b.state_dict()["param_groups"] == opt.state_dict()["param_groups"]


def test_load_state_dict_with_extra_keys_matches_torch(rng):
    torch = pytest.importorskip("torch")
    p, g = make(rng)
    topt = torch.optim.AdamW([torch.tensor(p)], lr=0.1)
    torch.optim.lr_scheduler.StepLR(topt, 2)
    tsd = topt.state_dict()
    opt = optim.AdamW([p], lr=0.1)
    StepLR(opt, 2)
    sd = opt.state_dict()
    # Every key torch keeps apart from its implementation flags is in ours.
    extra = set(tsd["param_groups"][0]) - set(sd["param_groups"][0])
    assert extra <= set(TORCH_FLAGS) | {"foreach", "fused"}
    assert sd["param_groups"][0]["initial_lr"] == tsd["param_groups"][0]["initial_lr"]


def test_load_state_dict_missing_option_or_bad_value_changes_nothing(rng):
    p, g = make(rng)
    src = optim.AdamW([p.copy()])
    StepLR(src, 2)
    src.step([g])
    sd = src.state_dict()
    opt = optim.AdamW([p])
    opt.step([g])
    snap = snapshot(opt, [p])
    groups_before = [dict(gr) for gr in opt.param_groups]

    missing = {
        **sd,
        "param_groups": [{k: v for k, v in sd["param_groups"][0].items() if k != "eps"}],
    }
    with pytest.raises(ValueError) as e:
        opt.load_state_dict(missing)
    assert str(e.value).startswith(
        "state_dict['param_groups'][0]: missing option(s) ['eps']; expected "
    )

    bad = {**sd, "param_groups": [{**sd["param_groups"][0], "lr": -1.0}]}
    with pytest.raises(ValueError) as e:
        opt.load_state_dict(bad)
    assert (
        str(e.value)
        == "state_dict['param_groups'][0]['lr']: expected a finite value >= 0, got -1.0"
    )

    wrong_shape = {
        **sd,
        "state": {0: {**sd["state"][0], "exp_avg": np.zeros(3, np.float32)}},
    }
    with pytest.raises(ValueError, match=r"\['exp_avg'\]: expected float32 array of shape"):
        opt.load_state_dict(wrong_shape)
    assert_unchanged(opt, [p], snap)
    assert [dict(gr) for gr in opt.param_groups] == groups_before
    assert "initial_lr" not in opt.param_groups[0]


# --------------------------------------- item 15: param_groups edits checked
EDITS = [
    ("Adam", "lr", "x", TypeError, "param_groups[0]['lr']: expected a number, got 'x'"),
    ("Adam", "lr", -1, ValueError, "param_groups[0]['lr']: expected a finite value >= 0, got -1"),
    ("Adam", "lr", None, TypeError, "param_groups[0]['lr']: expected a number, got None"),
    (
        "Adam",
        "betas",
        (0.9,),
        ValueError,
        "param_groups[0]['betas']: expected a pair (beta1, beta2), got (0.9,)",
    ),
    (
        "AdamW",
        "betas",
        (1.5, 0.9),
        ValueError,
        "param_groups[0]['betas'][0]: expected 0 <= beta < 1, got 1.5",
    ),
    (
        "Lion",
        "betas",
        (0.9, "a"),
        TypeError,
        "param_groups[0]['betas'][1]: expected a number, got 'a'",
    ),
    (
        "Adam",
        "eps",
        float("inf"),
        ValueError,
        "param_groups[0]['eps']: expected a finite value >= 0, got inf",
    ),
    (
        "SGD",
        "momentum",
        -0.5,
        ValueError,
        "param_groups[0]['momentum']: expected a finite value >= 0, got -0.5",
    ),
    (
        "SGD",
        "weight_decay",
        "1e-2",
        TypeError,
        "param_groups[0]['weight_decay']: expected a number, got '1e-2'",
    ),
    (
        "SGD",
        "maximize",
        "no",
        TypeError,
        "param_groups[0]['maximize']: expected True or False, got 'no'",
    ),
    (
        "Adadelta",
        "rho",
        2.0,
        ValueError,
        "param_groups[0]['rho']: expected 0 <= value <= 1, got 2.0",
    ),
    (
        "NAdam",
        "momentum_decay",
        -1.0,
        ValueError,
        "param_groups[0]['momentum_decay']: expected a finite value >= 0, got -1.0",
    ),
    (
        "Adafactor",
        "eps",
        (None,),
        ValueError,
        "param_groups[0]['eps']: expected a pair (eps1 or None, eps2), got (None,)",
    ),
    ("Adafactor", "d", 0.5, ValueError, "param_groups[0]['d']: expected >= 1, got 0.5"),
    ("AdamW8bit", "lr", "x", TypeError, "param_groups[0]['lr']: expected a number, got 'x'"),
]


@pytest.mark.parametrize("name,key,value,exc,msg", EDITS)
@pytest.mark.parametrize("after_a_step", [False, True])
def test_bad_param_group_edit_raises_at_step_and_changes_nothing(
    rng, name, key, value, exc, msg, after_a_step
):
    p, g = make(rng)
    opt = getattr(optim, name)([p])
    if after_a_step:  # the validated values are cached: the edit must still be seen
        opt.step([g])
    snap = snapshot(opt, [p])
    opt.param_groups[0][key] = value
    with pytest.raises(exc) as e:
        opt.step([g])
    assert str(e.value) == msg
    assert_unchanged(opt, [p], snap)


def test_betas_edited_in_place_is_seen(rng):
    p, g = make(rng)
    opt = optim.Adam([p])
    opt.param_groups[0]["betas"] = [0.9, 0.999]  # a list, as a user may write it
    opt.step([g])
    snap = snapshot(opt, [p])
    opt.param_groups[0]["betas"][0] = 1.5
    with pytest.raises(ValueError) as e:
        opt.step([g])
    assert str(e.value) == "param_groups[0]['betas'][0]: expected 0 <= beta < 1, got 1.5"
    assert_unchanged(opt, [p], snap)
    opt.param_groups[0]["betas"][0] = 0.8  # fixed: steps again
    assert opt.step([g])


def test_bad_edit_in_second_group_leaves_first_unchanged(rng):
    p, g = make(rng)
    q, h = make(rng)
    opt = optim.SGD([{"params": [p]}, {"params": [q], "lr": 0.5}], lr=0.1, momentum=0.9)
    opt.step([g, h])
    snap = snapshot(opt, [p, q])
    opt.param_groups[1]["lr"] = "fast"
    with pytest.raises(TypeError) as e:
        opt.step([g, h])
    assert str(e.value) == "param_groups[1]['lr']: expected a number, got 'fast'"
    assert_unchanged(opt, [p, q], snap)


def test_good_edits_take_effect(rng):
    p, g = make(rng)
    q = p.copy()
    opt = optim.SGD([p], lr=0.1)
    opt.step([g])
    opt.param_groups[0]["lr"] = 0.25
    opt.step([g])
    np.testing.assert_array_equal(p, (q - np.float32(0.1) * g) - np.float32(0.25) * g)


@pytest.mark.parametrize(
    "group,exc,msg",
    [
        ({"lr": -1}, ValueError, "param_groups[1]['lr']: expected a finite value >= 0, got -1"),
        ({"lr": "x"}, TypeError, "param_groups[1]['lr']: expected a number, got 'x'"),
        (
            {"betas": (1.5, 0.9)},
            ValueError,
            "param_groups[1]['betas'][0]: expected 0 <= beta < 1, got 1.5",
        ),
        (
            {"eps": -1e-8},
            ValueError,
            "param_groups[1]['eps']: expected a finite value >= 0, got -1e-08",
        ),
    ],
)
def test_bad_value_in_a_constructor_group_raises(rng, group, exc, msg):
    p, _ = make(rng)
    q, _ = make(rng)
    with pytest.raises(exc) as e:
        optim.Adam([{"params": [p]}, {"params": [q], **group}])
    assert str(e.value) == msg
    opt = optim.Adam([p])
    with pytest.raises(exc) as e:
        opt.add_param_group({"params": [q], **group})
    assert str(e.value) == msg
    assert len(opt.param_groups) == 1
