"""The constructors written from declared options (slimgrad/optim/_options.py).

Every optimizer of slimgrad.optim and every slimgrad.torch one that is not a
torch.optim mirror gets its constructor from its declared options: these
tests pin what that constructor does (binding, errors naming the class, the
groups' options in signature order, fixed options, subclasses).
"""

from __future__ import annotations

import inspect

import numpy as np
import pytest
import slimgrad.optim as optim
from slimgrad.optim._options import Options, Params

torch = pytest.importorskip("torch")
import slimgrad.torch as storch  # noqa: E402


def _declared(module):
    classes = [getattr(module, n) for n in module.__all__]
    return [c for c in classes if isinstance(c, type) and issubclass(c, Options)]


def _param(cls):
    if cls.__module__.startswith("slimgrad.torch"):
        return [torch.zeros(4, 4, requires_grad=True)]
    return {"w": np.zeros((4, 4), np.float32)}


DECLARED = _declared(optim) + _declared(storch)


def test_every_optimizer_outside_the_torch_mirrors_declares_its_options():
    from slimgrad.optim._base import Optimizer
    from slimgrad.torch._base import TorchOptimizer
    from slimgrad.torch._fused import _Mirrored

    for module, base in ((optim, Optimizer), (storch, TorchOptimizer)):
        for name in module.__all__:
            cls = getattr(module, name)
            if isinstance(cls, type) and issubclass(cls, base) and cls is not base:
                if issubclass(cls, _Mirrored):
                    continue
                assert cls in DECLARED, name
    assert len(DECLARED) >= 25


@pytest.mark.parametrize("cls", DECLARED, ids=lambda c: f"{c.__module__}.{c.__name__}")
def test_positional_and_keyword_arguments_bind_as_the_signature_says(cls):
    sig = inspect.signature(cls)
    assert inspect.signature(cls.__init__).parameters.keys() == {"self", *sig.parameters}
    # lr and eps doubled (valid for every optimizer), the rest by default.
    given = {k: 2 * sig.parameters[k].default for k in ("lr", "eps") if k in sig.parameters}
    given = {k: v for k, v in given.items() if isinstance(v, float)}
    positional = [
        given.get(p.name, p.default)
        for p in sig.parameters.values()
        if p.kind is p.POSITIONAL_OR_KEYWORD and p.name != "params"
    ]
    by_position = cls(_param(cls), *positional)
    by_keyword = cls(_param(cls), **given)
    a, b = by_position.param_groups[0], by_keyword.param_groups[0]
    assert [k for k in a if k != "params"] == [k for k in b if k != "params"]
    for k, v in given.items():
        if k in a:
            assert a[k] == b[k] == v, k


@pytest.mark.parametrize("cls", DECLARED, ids=lambda c: f"{c.__module__}.{c.__name__}")
def test_a_wrong_call_raises_type_error_naming_the_class(cls):
    n = sum(p.kind is p.POSITIONAL_OR_KEYWORD for p in inspect.signature(cls).parameters.values())
    with pytest.raises(TypeError, match=f"^{cls.__name__}\\(\\) got an unexpected keyword"):
        cls(_param(cls), maximise=True)
    with pytest.raises(TypeError, match=f"^{cls.__name__}\\(\\) too many positional"):
        cls(_param(cls), *([0.0] * n))
    with pytest.raises(TypeError, match=f"^{cls.__name__}\\(\\) missing a required argument"):
        cls()


def test_options_go_to_the_groups_in_signature_order():
    opt = optim.Adam({"w": np.zeros(3, np.float32)}, amsgrad=True, lr=0.5, seed=2)
    keys = [k for k in opt.param_groups[0] if k != "params"]
    assert keys[:6] == ["lr", "betas", "eps", "weight_decay", "amsgrad", "decoupled_weight_decay"]
    assert keys[6:] == ["maximize", "rounding", "seed", "state_dtype", "master_weights"]
    assert opt.param_groups[0]["seed"] == 2 and opt.param_groups[0]["amsgrad"] is True


def test_a_classvar_field_leaves_the_signature_and_is_passed_fixed():
    # AdamW is Adam with decoupled_weight_decay fixed to True (not an argument).
    assert "decoupled_weight_decay" not in inspect.signature(optim.AdamW).parameters
    assert "decoupled_weight_decay" in inspect.signature(optim.Adam).parameters
    opt = optim.AdamW({"w": np.zeros(3, np.float32)})
    assert opt.param_groups[0]["decoupled_weight_decay"] is True
    assert opt.param_groups[0]["weight_decay"] == 1e-2
    with pytest.raises(TypeError, match="unexpected keyword argument 'decoupled_weight_decay'"):
        optim.AdamW({"w": np.zeros(3, np.float32)}, decoupled_weight_decay=False)
    assert isinstance(opt, optim.Adam)


def test_defaults_do_not_stay_as_class_attributes():
    # They would hide the framework's methods (Optimizer.state_dtype is one).
    assert callable(optim.Adam.state_dtype)
    assert not hasattr(optim.Adam, "lr") and not hasattr(storch.Lion, "betas")


def test_a_subclass_with_its_own_constructor_keeps_its_own_signature():
    class Fast(optim.AdamW):
        def __init__(self, params, scale=2.0):
            super().__init__(params, lr=1e-3 * scale, amsgrad=True)

    assert list(inspect.signature(Fast).parameters) == ["params", "scale"]
    opt = Fast({"w": np.zeros(3, np.float32)})
    assert opt.param_groups[0]["lr"] == 2e-3 and opt.param_groups[0]["amsgrad"] is True

    class Plain(optim.SGD):  # no own constructor and no own options: SGD's
        pass

    assert inspect.signature(Plain) == inspect.signature(optim.SGD)
    with pytest.raises(TypeError, match=r"^Plain\(\) got an unexpected keyword"):
        Plain([np.zeros(3)], betas=(0.9, 0.9))


def test_a_new_optimizer_declares_options_and_gets_the_constructor():
    from slimgrad.optim._fused import FusedOptimizer
    from slimgrad.optim._keywords import FamilyKeywords

    class Options2(Params):
        lr: float = 0.25
        momentum: float = 0.0

    class MySGD(Options2, FamilyKeywords, FusedOptimizer):
        _algo = "sgd"
        dampening: float = 0.0
        weight_decay: float = 0.0
        nesterov: bool = False

    sig = inspect.signature(MySGD)
    assert list(sig.parameters)[:6] == [
        "params",
        "lr",
        "momentum",
        "dampening",
        "weight_decay",
        "nesterov",
    ]
    assert sig.parameters["maximize"].kind is inspect.Parameter.KEYWORD_ONLY
    w, ref = np.ones(5, np.float32), np.ones(5, np.float32)
    MySGD([w], 0.5, maximize=True).step([np.full(5, 2, np.float32)])
    optim.SGD([ref], 0.5, maximize=True).step([np.full(5, 2, np.float32)])
    np.testing.assert_array_equal(w, ref)
