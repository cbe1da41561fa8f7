"""SGD, Adagrad, RMSprop, Adadelta, Adam, AdamW, Adamax, NAdam, RAdam.

torch.optim's names, argument names, defaults and update rules (the
single-tensor "for-loop" implementation of torch 2.x is the reference,
including where ``eps`` goes and the bias corrections). Each step is one C++
call per (param group, dtype): it checks every array, then updates params and
states in one fused pass per array, threaded, with the GIL released.

Extras over torch, on every optimizer here (keyword-only):

``nonfinite="raise" | "skip" | "ignore"``
    what a NaN/inf gradient does (see :meth:`Optimizer.step`);
``rounding="nearest" | "stochastic"``, ``seed=0``
    rounding of float16/bfloat16 params from their float32 master copy;
    stochastic rounding is keyed by (seed, step, element index), so it is
    reproducible and identical for any thread count or ISA;
``state_dtype=None | "float32" | "bfloat16"`` (or ``np.float32`` /
``ml_dtypes.bfloat16``)
    storage of the state arrays (``exp_avg``, ``exp_avg_sq``, ...). None: the
    param's dtype (float32 for float16/bfloat16 params). ``"bfloat16"`` (float32,
    float16 or bfloat16 params): the math stays float32 and each state value is
    rounded to bfloat16 when stored (``rounding`` applies, with streams of
    their own), halving the state's memory and traffic;
``master_weights=True | False``
    float16/bfloat16 params only: False keeps no float32 master copy; the
    param itself is widened, updated in float32 and rounded back (with
    ``state_dtype="bfloat16"``: 14 bytes moved per element, like torch's fused
    AdamW on bfloat16 params, against 30 with master and float32 state).

torch's ``foreach=None, fused=None, capturable=False, differentiable=False``
    accepted on every optimizer (not stored in the groups): ``foreach`` /
    ``fused`` are ignored (always fused multi-tensor C++), ``capturable`` /
    ``differentiable`` must be False (no autograd, no CUDA graphs).

Options that decide which state arrays exist (``momentum`` of SGD/RMSprop
being zero or not, ``centered``, ``amsgrad``) must not change after the first
step (the step raises ``ValueError``); every other option (``lr``, betas,
weight decay...) can be edited in ``param_groups`` between steps: ``step``
validates edited values first, with the constructor's checks (``TypeError`` /
``ValueError`` naming ``param_groups[i]['key']``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

from ._checks import check_nonneg
from ._fused import FusedOptimizer
from ._keywords import FamilyKeywords
from ._options import Params

if TYPE_CHECKING:
    from dataclasses import KW_ONLY

__all__ = ["SGD", "Adagrad", "RMSprop", "Adadelta", "Adam", "AdamW", "Adamax", "NAdam", "RAdam"]


class SGD(FamilyKeywords, FusedOptimizer):
    """Stochastic gradient descent with momentum, as ``torch.optim.SGD``.

    ``g = -g if maximize; g += weight_decay * p; buf = g`` (first step) or
    ``buf = momentum * buf + (1 - dampening) * g``; ``g = g + momentum * buf``
    (nesterov) or ``buf``; ``p -= lr * g``. State: ``momentum_buffer`` when
    ``momentum != 0``. See :mod:`slimgrad.optim._optimizers` for the extra
    keyword options and :class:`Optimizer` for params/grads/errors.
    """

    _algo = "sgd"

    lr: float = 1e-3
    momentum: float = 0
    dampening: float = 0
    weight_decay: float = 0
    nesterov: bool = False

    def _defaults(self, options: dict[str, Any]) -> dict[str, Any]:
        momentum, dampening = options["momentum"], options["dampening"]
        if options["nesterov"] and (check_nonneg("momentum", momentum) <= 0 or dampening != 0):
            raise ValueError("nesterov: requires momentum > 0 and dampening == 0")
        return options


class Adagrad(FamilyKeywords, FusedOptimizer):
    """Adagrad, as ``torch.optim.Adagrad``.

    ``clr = lr / (1 + (step - 1) * lr_decay); sum += g * g;
    p -= clr * g / (sqrt(sum) + eps)``. State: ``sum`` (starts at
    ``initial_accumulator_value``).
    """

    _algo = "adagrad"

    lr: float = 1e-2
    lr_decay: float = 0
    weight_decay: float = 0
    initial_accumulator_value: float = 0
    eps: float = 1e-10

    def _init_state(self, group, param):
        return {"sum": self.state_full(param, group["initial_accumulator_value"], group)}


class RMSprop(FamilyKeywords, FusedOptimizer):
    """RMSprop, as ``torch.optim.RMSprop``.

    ``sq = alpha * sq + (1 - alpha) * g * g``; centered: ``ga = lerp(ga, g, 1 - alpha)``,
    ``avg = sqrt(sq - ga * ga) + eps`` else ``sqrt(sq) + eps``; momentum > 0:
    ``buf = momentum * buf + g / avg; p -= lr * buf``, else ``p -= lr * g / avg``.
    State: ``square_avg``, ``momentum_buffer`` (momentum > 0), ``grad_avg`` (centered).
    """

    _algo = "rmsprop"

    lr: float = 1e-2
    alpha: float = 0.99
    eps: float = 1e-8
    weight_decay: float = 0
    momentum: float = 0
    centered: bool = False


class Adadelta(FamilyKeywords, FusedOptimizer):
    """Adadelta, as ``torch.optim.Adadelta``.

    ``sq = rho * sq + (1 - rho) * g * g; delta = sqrt(acc + eps) / sqrt(sq + eps) * g;
    acc = rho * acc + (1 - rho) * delta * delta; p -= lr * delta``.
    State: ``square_avg``, ``acc_delta``.
    """

    _algo = "adadelta"

    lr: float = 1.0
    rho: float = 0.9
    eps: float = 1e-6
    weight_decay: float = 0


class AdamFamilyOptions(Params):
    """The arguments Adam, Adamax, NAdam, RAdam, AdamW8bit and Schedule-Free AdamW
    begin with, as torch's (a class redeclares ``lr`` or ``weight_decay`` for
    another default)."""

    lr: float = 1e-3
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    weight_decay: float = 0


class Adam(AdamFamilyOptions, FamilyKeywords, FusedOptimizer):
    """Adam, as ``torch.optim.Adam`` (and AdamW with ``decoupled_weight_decay=True``).

    ``m = lerp(m, g, 1 - beta1); v = beta2 * v + (1 - beta2) * g * g``;
    amsgrad: ``vmax = max(vmax, v)`` used instead of ``v``;
    ``p -= lr / (1 - beta1^t) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)``.
    Weight decay adds ``weight_decay * p`` to ``g``, or (decoupled) scales
    ``p`` by ``1 - lr * weight_decay`` first. State: ``exp_avg``,
    ``exp_avg_sq``, ``max_exp_avg_sq`` (amsgrad).
    """

    _algo = "adam"

    amsgrad: bool = False
    _: KW_ONLY
    decoupled_weight_decay: bool = False


class AdamW(Adam):
    """AdamW, as ``torch.optim.AdamW``: Adam with decoupled weight decay (default 1e-2)."""

    weight_decay: float = 1e-2
    # Not an argument of AdamW (a ClassVar leaves the signature), always True.
    # (Type checkers still list it, as for a dataclass field redeclared so.)
    decoupled_weight_decay: ClassVar[bool] = True  # type: ignore[misc]


class Adamax(AdamFamilyOptions, FamilyKeywords, FusedOptimizer):
    """Adamax, as ``torch.optim.Adamax``.

    ``m = lerp(m, g, 1 - beta1); u = max(beta2 * u, |g| + eps);
    p -= lr / (1 - beta1^t) * m / u``. State: ``exp_avg``, ``exp_inf``.
    """

    _algo = "adamax"

    lr: float = 2e-3


class NAdam(AdamFamilyOptions, FamilyKeywords, FusedOptimizer):
    """NAdam, as ``torch.optim.NAdam`` (momentum decay schedule, optional decoupled weight decay).

    ``mu_t = beta1 (1 - 0.5 * 0.96^(t * momentum_decay))``; ``m``, ``v`` as Adam;
    ``den = sqrt(v / (1 - beta2^t)) + eps``;
    ``p += -lr (1 - mu_t) / (1 - prod mu) * g / den``
    ``- lr mu_{t+1} / (1 - prod mu * mu_{t+1}) * m / den``.
    State: ``exp_avg``, ``exp_avg_sq``, ``mu_product`` (a float, kept in float64;
    torch keeps it as a float32 scalar tensor unless its default dtype is float64).
    """

    _algo = "nadam"

    lr: float = 2e-3
    momentum_decay: float = 4e-3
    decoupled_weight_decay: bool = False

    def _init_state(self, group, param):
        return {**super()._init_state(group, param), "mu_product": 1.0}

    def _bucket_call(self, group, b):
        args, states, names = super()._bucket_call(group, b)
        args.mu_product = b.state_dicts[0]["mu_product"]
        return args, states, names

    def _step_bucket(self, group, b, check):
        bad = super()._step_bucket(group, b, check)
        if bad is None:
            # Safe to commit here: a later bucket cannot fail any more (with
            # several buckets, all are validated and checked before the first runs).
            new = b.cache["args"].c3
            for st in b.state_dicts:
                st["mu_product"] = new
        return bad


class RAdam(AdamFamilyOptions, FamilyKeywords, FusedOptimizer):
    """RAdam, as ``torch.optim.RAdam`` (optional decoupled weight decay).

    ``m``, ``v`` as Adam; ``rho_t = rho_inf - 2 t beta2^t / (1 - beta2^t)``; if
    ``rho_t > 5``: ``p -= m / (1 - beta1^t) * lr * sqrt(1 - beta2^t) / (sqrt(v) + eps) * rect``
    else ``p -= m / (1 - beta1^t) * lr``. State: ``exp_avg``, ``exp_avg_sq``.
    """

    _algo = "radam"

    decoupled_weight_decay: bool = False
