"""Adafactor, following ``torch.optim.Adafactor`` (torch 2.x) exactly."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .. import _core
from ._bucket import Bucket
from ._checks import OPTION_CHECKS, check_nonneg, check_number
from ._extra import Arrays, ExtraOptimizer, Group
from ._keywords import SignedStepKeywords


def _machine_eps(dtype: np.dtype) -> float:
    try:
        return float(np.finfo(dtype).eps)
    except ValueError:  # bfloat16: NumPy does not know it, ml_dtypes does
        import ml_dtypes

        return float(ml_dtypes.finfo(dtype).eps)


def _check_beta2_decay(name: str, value: Any) -> float:
    v = check_number(name, value)
    if not v <= 0.0:
        raise ValueError(f"{name}: expected <= 0, got {value!r}")
    return v


def _check_eps_pair(name: str, eps: Any) -> tuple[float | None, float]:
    if not isinstance(eps, (tuple, list)) or len(eps) != 2:
        raise ValueError(f"{name}: expected a pair (eps1 or None, eps2), got {eps!r}")
    eps1 = None if eps[0] is None else check_nonneg(f"{name}[0]", eps[0])
    return eps1, check_nonneg(f"{name}[1]", eps[1])


def _check_d(name: str, value: Any) -> float:
    v = check_number(name, value)
    if not v >= 1.0:
        raise ValueError(f"{name}: expected >= 1, got {value!r}")
    return v


class Adafactor(SignedStepKeywords, ExtraOptimizer):
    """Adafactor with torch's arguments, defaults and update rule.

    At step ``t`` for each array ``p`` with gradient ``g`` (negated if
    ``maximize``), as ``torch.optim.Adafactor`` does it::

        beta2_t = 1 - t**beta2_decay                  (lerp weight t**beta2_decay)
        rho = min(lr, 1 / sqrt(t))
        alpha = max(eps2, RMS(p)) * rho               (RMS before weight decay)
        p = p * (1 - lr * weight_decay)
        ndim >= 2 (factored over the last two dims, leading dims are a batch):
            row_var = lerp(row_var, mean(g**2, -1), t**beta2_decay)
            col_var = lerp(col_var, mean(g**2, -2), t**beta2_decay)
            var = row_var @ col_var / max(mean(row_var, -2), eps1)
        else:
            variance = lerp(variance, g**2, t**beta2_decay);  var = variance
        u = g / sqrt(max(var, eps1**2))
        p = p - alpha / max(1, RMS(u) / d) * u

    ``eps1=None`` means the machine epsilon of the parameter's dtype. Each
    array is one C++ call (GIL released, OpenMP inside) of three passes: the
    norms of ``p`` and the row/column sums of ``g**2``, the RMS of ``u``, then
    the update (``u`` recomputed rather than stored). Reductions are
    fixed-order in double, so results are identical for any thread count and
    agree with torch to ~1e-6 relative in float32.

    Parameters
    ----------
    params, lr
        The parameters, updated in place (see :class:`Optimizer`); the learning
        rate (an upper bound on ``rho``), >= 0.
    beta2_decay : float
        Exponent of the second-moment decay, <= 0.
    eps : tuple
        ``(eps1 or None, eps2)``, both >= 0.
    d : float
        Clipping threshold of the update RMS, >= 1.
    weight_decay : float
        Decoupled weight decay (scaled by ``lr``), >= 0.
    foreach, fused, capturable, differentiable
        torch's switches, accepted for drop-in use: ``foreach`` / ``fused``
        are ignored (always fused C++), ``capturable`` / ``differentiable``
        must be False (see :func:`check_torch_flags`); not stored in groups.
    maximize : bool
        Maximize the objective.
    nonfinite : str
        ``"raise"`` (default), ``"skip"`` or ``"ignore"``; see :class:`Optimizer`.

    State per parameter: ``"row_var"`` (shape ``p.shape[:-1] + (1,)``) and
    ``"col_var"`` (``p.shape[:-2] + (1, p.shape[-1])``) for ndim >= 2, else
    ``"variance"`` (``p.shape``), as in torch; the entries a parameter does
    not use are empty arrays (the base class keeps one key set per bucket);
    ``"step"``.

    Raises
    ------
    ValueError
        An argument outside the ranges above (torch's checks).
    """

    _option_checks = {
        **OPTION_CHECKS,
        "eps": _check_eps_pair,
        "beta2_decay": _check_beta2_decay,
        "d": _check_d,
    }

    _algo = "adafactor"

    lr: float = 1e-2
    beta2_decay: float = -0.8
    eps: tuple[float | None, float] = (None, 1e-3)
    d: float = 1.0
    weight_decay: float = 0.0

    def _init_state(self, group: dict[str, Any], param: np.ndarray) -> dict[str, Any]:
        # The base class wants the same state keys for every parameter of a
        # bucket, so the unused ones are empty (0-element) arrays.
        dt = self.state_dtype(param)
        empty = np.zeros(0, dt)
        if param.ndim >= 2:
            shape = param.shape
            return {
                "row_var": np.zeros(shape[:-1] + (1,), dt),
                "col_var": np.zeros(shape[:-2] + (1, shape[-1]), dt),
                "variance": empty,
            }
        return {"row_var": empty, "col_var": empty.copy(), "variance": self.state_full(param)}

    def _update(self, group: Group, bucket: Bucket, work: Arrays, grads: Arrays) -> None:
        t = float(bucket.step)
        lr = float(group["lr"])
        eps1, eps2 = group["eps"]
        weight = t ** group["beta2_decay"]
        rho = min(lr, 1.0 / math.sqrt(t))
        # torch: eps1 defaults to the epsilon of the parameter's own dtype
        # (one dtype per bucket).
        e1 = _machine_eps(bucket.dtype) if eps1 is None else float(eps1)
        for i, (p, g, st) in enumerate(zip(work, grads, bucket.state_dicts)):
            _core.optim.adafactor_step(
                p,
                g,
                st["row_var"],
                st["col_var"],
                st["variance"],
                bucket.labels[i],
                lr=lr,
                rho=rho,
                eps1=e1,
                eps2=float(eps2),
                d=float(group["d"]),
                weight_decay=float(group["weight_decay"]),
                beta2_weight=weight,
                maximize=bool(group["maximize"]),
            )
