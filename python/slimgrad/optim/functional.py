"""Stateless optimizer updates on single arrays, for users with their own loop.

Every function updates ``param`` and the state arrays passed to it in place,
in one fused C++ pass (the same kernels as the optimizer classes, so the
same bits), and returns ``param``. The caller owns the state and the step
count: ``step`` is the count *including* this update (1 on the first call),
as in torch.

Arrays: C-contiguous, native-endian. float32/float64 ``param``: ``grad`` and
the states have its dtype and shape. float16/bfloat16 ``param``: ``grad``
has its dtype, ``master`` (required) is the float32 master copy the math
runs on, the states are float32; the rounded result is written to ``param``
(``rounding="nearest"`` or ``"stochastic"`` keyed by ``seed``, ``step`` and
the element index).

State arrays may also be bfloat16 (``ml_dtypes``) for float32, float16 or
bfloat16 params, all of them then: the math stays float32 and each state
value is rounded to bfloat16 on store (nearest even, or stochastic with
``rounding="stochastic"``, a stream per state independent of the param's).
``master_weights=False`` (float16/bfloat16 params, ``master`` None): no
master copy, the param itself is widened, updated and rounded back.

Raises ``TypeError`` (wrong dtype, non-contiguous, not an ndarray) or
``ValueError`` (shape mismatch, read-only output) naming the argument, before
anything is modified. With ``check_finite=True`` a NaN/inf in ``grad``
raises ``FloatingPointError`` (nothing modified); by default it is not
checked (like torch's functional optimizers).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, TypedDict

import numpy as np

from .. import _core

if TYPE_CHECKING:  # typing.Unpack is Python >= 3.11; only the type checker needs it
    from typing_extensions import Unpack

__all__ = [
    "AdamOptions",
    "StepOptions",
    "sgd_",
    "adagrad_",
    "rmsprop_",
    "adadelta_",
    "adam_",
    "adamw_",
    "adamax_",
    "nadam_",
    "radam_",
]


class StepOptions(TypedDict, total=False):
    """Keyword options every update takes, all optional.

    ``maximize`` (False): step along +grad. ``master`` (None): the float32
    master copy of a float16/bfloat16 ``param``. ``master_weights`` (True):
    False with a float16/bfloat16 ``param`` and no ``master``. ``rounding``
    (``"nearest"``) or ``"stochastic"``, keyed by ``seed`` (0). ``check_finite``
    (False): raise ``FloatingPointError`` on a NaN/inf in ``grad``.
    """

    maximize: bool
    master: np.ndarray | None
    master_weights: bool
    rounding: str
    seed: int
    check_finite: bool


def _is_bf16(a: object) -> bool:
    return isinstance(a, np.ndarray) and a.dtype.itemsize == 2 and a.dtype.name == "bfloat16"


def _run(
    algo: str,
    param: np.ndarray,
    grad: np.ndarray,
    states: list[tuple[str, np.ndarray]],
    opts: dict[str, Any],
    *,
    step: int,
    maximize: bool = False,
    master: np.ndarray | None = None,
    master_weights: bool = True,
    rounding: str = "nearest",
    seed: int = 0,
    check_finite: bool = False,
) -> Any:
    """One kernel call: ``opts`` are the algorithm's fields of ``_core.optim.StepArgs``."""
    if rounding not in ("nearest", "stochastic"):
        raise ValueError(f"rounding: expected 'nearest' or 'stochastic', got {rounding!r}")
    if int(step) < 1:
        raise ValueError(
            f"step: expected the step count including this update (>= 1), got {step!r}"
        )
    if not isinstance(master_weights, (bool, np.bool_)):
        raise ValueError(f"master_weights: expected True or False, got {master_weights!r}")
    args = _core.optim.StepArgs()
    args.algo = algo
    # bfloat16 state arrays (float32/float16/bfloat16 params): the kernel's
    # bf16_state mode; the buffer checks then require every state to be bfloat16.
    args.bf16_state = bool(states) and states[0][1] is not None and _is_bf16(states[0][1])
    args.master_weights = bool(master_weights)
    for k, v in opts.items():
        setattr(args, k, v)
    args.maximize = maximize
    args.step = int(step)
    args.stochastic = rounding == "stochastic"
    args.seed = int(seed)
    names = (["param"], ["grad"], ["master"], [[n] for n, _ in states])
    bad = _core.optim.step(
        args,
        [param],
        [grad],
        None if master is None else [master],
        [[a] for _, a in states],
        names,
        check_finite,
    )
    if bad is not None:
        raise FloatingPointError(f"grad has a non-finite value at index {bad[1]}")
    return args


def _adam_states(
    exp_avg: np.ndarray, exp_avg_sq: np.ndarray, extra: tuple[str, np.ndarray | None]
) -> list[tuple[str, np.ndarray]]:
    """Adam-like state list; ``extra`` (name, array or None) is appended if given."""
    states = [("exp_avg", exp_avg), ("exp_avg_sq", exp_avg_sq)]
    if extra[1] is not None:
        states.append((extra[0], extra[1]))
    return states


def sgd_(
    param: np.ndarray,
    grad: np.ndarray,
    momentum_buffer: np.ndarray | None = None,
    *,
    step: int,
    lr: float,
    momentum: float = 0.0,
    dampening: float = 0.0,
    weight_decay: float = 0.0,
    nesterov: bool = False,
    **options: Unpack[StepOptions],
) -> np.ndarray:
    """SGD update (``torch.optim.SGD``'s rule). ``momentum_buffer`` is required when
    ``momentum != 0``; on ``step == 1`` it is set to the gradient (torch's first step)."""
    if (momentum != 0) != (momentum_buffer is not None):
        raise ValueError("momentum_buffer: required exactly when momentum != 0")
    states = [("momentum_buffer", momentum_buffer)] if momentum_buffer is not None else []
    opts = dict(lr=lr, momentum=momentum, dampening=dampening, weight_decay=weight_decay)
    _run("sgd", param, grad, states, {**opts, "nesterov": nesterov}, step=step, **options)
    return param


def adagrad_(
    param: np.ndarray,
    grad: np.ndarray,
    state_sum: np.ndarray,
    *,
    step: int,
    lr: float = 1e-2,
    lr_decay: float = 0.0,
    weight_decay: float = 0.0,
    eps: float = 1e-10,
    **options: Unpack[StepOptions],
) -> np.ndarray:
    """Adagrad update (``torch.optim.Adagrad``'s rule); ``state_sum``: the sum of squares."""
    opts = dict(lr=lr, lr_decay=lr_decay, weight_decay=weight_decay, eps=eps)
    _run("adagrad", param, grad, [("state_sum", state_sum)], opts, step=step, **options)
    return param


def rmsprop_(
    param: np.ndarray,
    grad: np.ndarray,
    square_avg: np.ndarray,
    momentum_buffer: np.ndarray | None = None,
    grad_avg: np.ndarray | None = None,
    *,
    step: int,
    lr: float = 1e-2,
    alpha: float = 0.99,
    eps: float = 1e-8,
    weight_decay: float = 0.0,
    momentum: float = 0.0,
    centered: bool = False,
    **options: Unpack[StepOptions],
) -> np.ndarray:
    """RMSprop update (``torch.optim.RMSprop``'s rule). ``momentum_buffer`` is required
    exactly when ``momentum > 0``, ``grad_avg`` exactly when ``centered``."""
    if (momentum > 0) != (momentum_buffer is not None):
        raise ValueError("momentum_buffer: required exactly when momentum > 0")
    if centered != (grad_avg is not None):
        raise ValueError("grad_avg: required exactly when centered=True")
    states = [("square_avg", square_avg)]
    if momentum_buffer is not None:
        states.append(("momentum_buffer", momentum_buffer))
    if grad_avg is not None:
        states.append(("grad_avg", grad_avg))
    opts = dict(lr=lr, alpha=alpha, eps=eps, weight_decay=weight_decay, momentum=momentum)
    _run("rmsprop", param, grad, states, {**opts, "centered": centered}, step=step, **options)
    return param


def adadelta_(
    param: np.ndarray,
    grad: np.ndarray,
    square_avg: np.ndarray,
    acc_delta: np.ndarray,
    *,
    step: int,
    lr: float = 1.0,
    rho: float = 0.9,
    eps: float = 1e-6,
    weight_decay: float = 0.0,
    **options: Unpack[StepOptions],
) -> np.ndarray:
    """Adadelta update (``torch.optim.Adadelta``'s rule)."""
    states = [("square_avg", square_avg), ("acc_delta", acc_delta)]
    opts = dict(lr=lr, rho=rho, eps=eps, weight_decay=weight_decay)
    _run("adadelta", param, grad, states, opts, step=step, **options)
    return param


def adam_(
    param: np.ndarray,
    grad: np.ndarray,
    exp_avg: np.ndarray,
    exp_avg_sq: np.ndarray,
    *,
    step: int,
    lr: float = 1e-3,
    beta1: float = 0.9,
    beta2: float = 0.999,
    eps: float = 1e-8,
    weight_decay: float = 0.0,
    amsgrad: bool = False,
    max_exp_avg_sq: np.ndarray | None = None,
    decoupled_weight_decay: bool = False,
    **options: Unpack[StepOptions],
) -> np.ndarray:
    """Adam update (``torch.optim.Adam``'s rule); AdamW with ``decoupled_weight_decay=True``.
    ``max_exp_avg_sq`` is required exactly when ``amsgrad``."""
    if amsgrad != (max_exp_avg_sq is not None):
        raise ValueError("max_exp_avg_sq: required exactly when amsgrad=True")
    states = _adam_states(exp_avg, exp_avg_sq, ("max_exp_avg_sq", max_exp_avg_sq))
    opts = dict(lr=lr, beta1=beta1, beta2=beta2, eps=eps, weight_decay=weight_decay)
    opts.update(amsgrad=amsgrad, decoupled=decoupled_weight_decay)
    _run("adam", param, grad, states, opts, step=step, **options)
    return param


class AdamOptions(StepOptions, total=False):
    """The keywords :func:`adamw_` passes on to :func:`adam_` (same defaults:
    ``lr`` 1e-3, ``beta1`` 0.9, ``beta2`` 0.999, ``eps`` 1e-8, ``amsgrad``
    False, ``max_exp_avg_sq`` None), besides :class:`StepOptions`."""

    lr: float
    beta1: float
    beta2: float
    eps: float
    amsgrad: bool
    max_exp_avg_sq: np.ndarray | None


def adamw_(
    param: np.ndarray,
    grad: np.ndarray,
    exp_avg: np.ndarray,
    exp_avg_sq: np.ndarray,
    *,
    step: int,
    weight_decay: float = 1e-2,
    **options: Unpack[AdamOptions],
) -> np.ndarray:
    """AdamW update: :func:`adam_` with decoupled weight decay (default 1e-2)."""
    return adam_(
        param,
        grad,
        exp_avg,
        exp_avg_sq,
        step=step,
        weight_decay=weight_decay,
        decoupled_weight_decay=True,
        **options,
    )


def adamax_(
    param: np.ndarray,
    grad: np.ndarray,
    exp_avg: np.ndarray,
    exp_inf: np.ndarray,
    *,
    step: int,
    lr: float = 2e-3,
    beta1: float = 0.9,
    beta2: float = 0.999,
    eps: float = 1e-8,
    weight_decay: float = 0.0,
    **options: Unpack[StepOptions],
) -> np.ndarray:
    """Adamax update (``torch.optim.Adamax``'s rule)."""
    states = [("exp_avg", exp_avg), ("exp_inf", exp_inf)]
    opts = dict(lr=lr, beta1=beta1, beta2=beta2, eps=eps, weight_decay=weight_decay)
    _run("adamax", param, grad, states, opts, step=step, **options)
    return param


def nadam_(
    param: np.ndarray,
    grad: np.ndarray,
    exp_avg: np.ndarray,
    exp_avg_sq: np.ndarray,
    *,
    step: int,
    mu_product: float,
    lr: float = 2e-3,
    beta1: float = 0.9,
    beta2: float = 0.999,
    eps: float = 1e-8,
    weight_decay: float = 0.0,
    momentum_decay: float = 4e-3,
    decoupled_weight_decay: bool = False,
    **options: Unpack[StepOptions],
) -> float:
    """NAdam update (``torch.optim.NAdam``'s rule).

    ``mu_product`` is the product of the momentum coefficients of the
    previous steps (1.0 before the first); returns the new product, to pass
    to the next call (``param`` is updated in place).
    """
    states = _adam_states(exp_avg, exp_avg_sq, ("", None))
    opts = dict(lr=lr, beta1=beta1, beta2=beta2, eps=eps, weight_decay=weight_decay)
    opts.update(momentum_decay=momentum_decay, decoupled=decoupled_weight_decay)
    args = _run(
        "nadam",
        param,
        grad,
        states,
        {**opts, "mu_product": float(mu_product)},
        step=step,
        **options,
    )
    return float(args.c3)


def radam_(
    param: np.ndarray,
    grad: np.ndarray,
    exp_avg: np.ndarray,
    exp_avg_sq: np.ndarray,
    *,
    step: int,
    lr: float = 1e-3,
    beta1: float = 0.9,
    beta2: float = 0.999,
    eps: float = 1e-8,
    weight_decay: float = 0.0,
    decoupled_weight_decay: bool = False,
    **options: Unpack[StepOptions],
) -> np.ndarray:
    """RAdam update (``torch.optim.RAdam``'s rule)."""
    states = _adam_states(exp_avg, exp_avg_sq, ("", None))
    opts = dict(lr=lr, beta1=beta1, beta2=beta2, eps=eps, weight_decay=weight_decay)
    _run(
        "radam",
        param,
        grad,
        states,
        {**opts, "decoupled": decoupled_weight_decay},
        step=step,
        **options,
    )
    return param
