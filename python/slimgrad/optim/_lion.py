"""Lion (Chen et al. 2023, "Symbolic Discovery of Optimization Algorithms")."""

from __future__ import annotations

from typing import Any

from ._fused import FusedOptimizer
from ._keywords import FamilyKeywords
from ._options import Params

__all__ = ["Lion", "LionOptions"]


class LionOptions(Params):
    """Lion's arguments (of :class:`Lion` and :class:`slimgrad.torch.Lion`)."""

    lr: float = 1e-4
    betas: tuple[float, float] = (0.9, 0.99)
    weight_decay: float = 0.0


class Lion(LionOptions, FamilyKeywords, FusedOptimizer):
    """Lion: the sign of an interpolated momentum, with decoupled weight decay.

    Per element, with ``g`` the gradient (negated if ``maximize``)::

        u = sign(beta1 * m + (1 - beta1) * g)        # sign(0) = sign(NaN) = 0
        p = p * (1 - lr * weight_decay) - lr * u
        m = beta2 * m + (1 - beta2) * g

    One fused pass over memory (read p, g, m; write p, m), all arrays of a
    bucket in one C++ call: the ``lion`` row of the optimizer descriptor
    table, on the same kernel, planner and half-precision path as Adam
    (``rounding``, ``state_dtype``, ``master_weights``), bit-identical on every
    ISA. Lion's update has unit magnitude per element, so its ``lr`` is
    typically 3-10x smaller than AdamW's and ``weight_decay`` 3-10x larger.

    Parameters
    ----------
    params, lr
        The parameters, updated in place (see :class:`Optimizer`); the learning rate, >= 0.
    betas : tuple of float
        ``(beta1, beta2)``: interpolation for the update, decay of the momentum.
    weight_decay : float
        Decoupled weight decay, >= 0.
    maximize : bool
        Maximize the objective (step along +g).
    nonfinite : str
        ``"raise"`` (default), ``"skip"`` or ``"ignore"``; see :class:`Optimizer`.
    rounding, seed, state_dtype, master_weights
        Low-precision options, as for :class:`~slimgrad.optim.AdamW`.

    State per parameter: ``"exp_avg"`` (the momentum: float32 for half
    params, bfloat16 with ``state_dtype="bfloat16"``, else the param's dtype)
    and ``"step"``.

    Raises
    ------
    ValueError
        ``lr`` or ``weight_decay`` negative, a beta outside [0, 1).
    """

    _algo = "lion"

    def _set_args(self, a: Any, g: dict[str, Any]) -> None:
        a.lr, (a.beta1, a.beta2) = g["lr"], g["betas"]
        a.weight_decay, a.maximize = g["weight_decay"], g["maximize"]
