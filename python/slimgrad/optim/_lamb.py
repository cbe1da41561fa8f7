"""LAMB (You et al. 2019, "Large Batch Optimization for Deep Learning")."""

from __future__ import annotations

from typing import Any

import numpy as np

from .. import _core
from ._bucket import Bucket
from ._extra import Arrays, ExtraOptimizer, Group, adam_coefficients
from ._keywords import StepKeywords


class LAMB(StepKeywords, ExtraOptimizer):
    """LAMB: Adam's direction scaled per parameter array by a trust ratio.

    For each array, at step ``t`` (``g`` the gradient)::

        m = beta1 * m + (1 - beta1) * g
        v = beta2 * v + (1 - beta2) * g**2
        r = (m / (1 - beta1**t)) / (sqrt(v / (1 - beta2**t)) + eps) + weight_decay * p
        ratio = ||p|| / ||r||      (1 if either norm is 0)
        p = p - lr * ratio * r

    Bias correction: applied, as in the paper's Algorithm 2 and NVIDIA's
    reference implementation (``bias_correction=True``); the paper's scaling
    function phi is the identity (no clamping of ``||p||``). The norms are
    per array (per "layer"), computed by fixed-order reductions in double
    from float32/float64 lane sums, so the ratio — and every result — is
    identical for any thread count. Two passes over memory: the first updates
    ``m``, ``v`` and accumulates both norms, the second recomputes ``r`` with
    the same arithmetic and applies it.

    Parameters
    ----------
    params, lr
        The parameters, updated in place (see :class:`Optimizer`); the learning rate, >= 0.
    betas : tuple of float
        ``(beta1, beta2)`` in [0, 1).
    eps : float
        Added to the denominator, >= 0.
    weight_decay : float
        Weight decay added to the update direction (before the trust ratio), >= 0.
    nonfinite : str
        ``"raise"`` (default), ``"skip"`` or ``"ignore"``; see :class:`Optimizer`.

    State per parameter: ``"exp_avg"``, ``"exp_avg_sq"`` and ``"step"``.

    Raises
    ------
    ValueError
        A negative ``lr``, ``eps`` or ``weight_decay``; a beta outside [0, 1).
    """

    _algo = "lamb"

    lr: float = 1e-3
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-6
    weight_decay: float = 0.0

    def _defaults(self, options: dict[str, Any]) -> dict[str, Any]:
        self.trust_ratios: dict[Any, float] = {}
        """Trust ratio of each parameter at the last step (by state key)."""
        return options

    def _init_state(self, group: dict[str, Any], param: np.ndarray) -> dict[str, Any]:
        return {"exp_avg": self.state_full(param), "exp_avg_sq": self.state_full(param)}

    def _update(self, group: Group, bucket: Bucket, work: Arrays, grads: Arrays) -> None:
        ratios = _core.optim.lamb_step(
            work,
            grads,
            bucket.states["exp_avg"],
            bucket.states["exp_avg_sq"],
            bucket.labels,
            **adam_coefficients(group, bucket.step),
        )
        self.trust_ratios.update(zip(bucket.keys, ratios))
