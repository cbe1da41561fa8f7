"""Lion (Chen et al. 2023, "Symbolic Discovery of Optimization Algorithms")."""

from __future__ import annotations

from typing import Any

import numpy as np

from .. import _core
from ._bucket import Bucket
from ._checks import check_betas, check_nonneg, check_torch_flags
from ._extra import ExtraOptimizer, round_back


class Lion(ExtraOptimizer):
    """Lion: the sign of an interpolated momentum, with decoupled weight decay.

    Per element, with ``g`` the gradient (negated if ``maximize``)::

        u = sign(beta1 * m + (1 - beta1) * g)        # sign(0) = 0
        p = p * (1 - lr * weight_decay) - lr * u
        m = beta2 * m + (1 - beta2) * g

    One fused pass over memory (read p, g, m; write p, m), all arrays of a
    bucket in one C++ call. Lion's update has unit magnitude per element, so
    its ``lr`` is typically 3-10x smaller than AdamW's and ``weight_decay``
    3-10x larger.

    Parameters
    ----------
    params
        Dict, list or param groups of float32/float64/float16/bfloat16
        C-contiguous arrays, updated in place (see :class:`Optimizer`).
    lr : float
        Learning rate, >= 0.
    betas : tuple of float
        ``(beta1, beta2)``: interpolation for the update, decay of the momentum.
    weight_decay : float
        Decoupled weight decay, >= 0.
    maximize : bool
        Maximize the objective (step along +g).
    nonfinite : str
        ``"raise"`` (default), ``"skip"`` or ``"ignore"``; see :class:`Optimizer`.

    State per parameter: ``"exp_avg"`` (the momentum, float32 for half
    params, else the param's dtype) and ``"step"``.

    Raises
    ------
    ValueError
        ``lr`` or ``weight_decay`` negative, a beta outside [0, 1).
    """

    def __init__(
        self,
        params: Any,
        lr: float = 1e-4,
        betas: tuple[float, float] = (0.9, 0.99),
        weight_decay: float = 0.0,
        *,
        maximize: bool = False,
        foreach: bool | None = None,
        fused: bool | None = None,
        capturable: bool = False,
        differentiable: bool = False,
        nonfinite: str = "raise",
    ) -> None:
        check_torch_flags(foreach, fused, capturable, differentiable)
        defaults = dict(
            lr=check_nonneg("lr", lr),
            betas=check_betas(betas),
            weight_decay=check_nonneg("weight_decay", weight_decay),
            maximize=bool(maximize),
        )
        super().__init__(params, defaults, nonfinite=nonfinite)

    def _init_state(self, group: dict[str, Any], param: np.ndarray) -> dict[str, Any]:
        return {"exp_avg": self.state_full(param)}  # aligned like the param

    def _step_bucket(
        self, group: dict[str, Any], bucket: Bucket, check: bool
    ) -> tuple[int, int] | None:
        work, grads, bad = self._prepare(bucket, check)
        if bad is not None:
            return bad
        beta1, beta2 = group["betas"]
        _core.optim.lion_step(
            work,
            grads,
            bucket.states["exp_avg"],
            bucket.labels,
            lr=float(group["lr"]),
            beta1=float(beta1),
            beta2=float(beta2),
            weight_decay=float(group["weight_decay"]),
            maximize=bool(group["maximize"]),
        )
        round_back(bucket)
        return None
