"""Prodigy (Mishchenko & Defazio 2023), the ``prodigyopt`` package's semantics.

Adam whose step size ``d`` is estimated from two sums over every parameter,
so a step is two passes: ``_core.optim.prodigy_accumulate`` (moments, the
statistic ``s``, the sums as per-piece partials added in a fixed order) over
all parameters, then the scalar ``d`` update (:func:`next_d`, here in Python
as in prodigyopt), then ``_core.optim.prodigy_apply`` over all parameters.
:class:`Prodigy` (NumPy) and ``slimgrad.torch.Prodigy`` share these pieces.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, NamedTuple

import numpy as np

from .. import _core
from ._bucket import Bucket
from ._checks import OPTION_CHECKS, check_betas, check_bool, check_number
from ._extra import ExtraOptimizer, expected_state, round_back, validate
from ._keywords import NonfiniteKeyword
from ._options import Params

__all__ = ["Prodigy", "Run", "prodigy_step"]


class GlobalStep(dict):  # type: ignore[type-arg]
    """The step-wide scalars prodigyopt reads from the first group (a dict)."""


def global_step(groups: list[dict[str, Any]]) -> GlobalStep:
    """Scalars of this step, from the groups as prodigyopt reads them.

    Raises ``RuntimeError`` (prodigyopt's message) when a group's lr is
    neither the largest lr nor 0.
    """
    g0 = groups[0]
    beta1, beta2 = (float(b) for b in g0["betas"])
    beta3 = math.sqrt(beta2) if g0["beta3"] is None else float(g0["beta3"])
    k = int(g0["k"])
    lr = max(float(g["lr"]) for g in groups)
    for g in groups:
        if float(g["lr"]) not in (lr, 0.0):
            raise RuntimeError(
                "Setting different lr values in different parameter groups is only "
                "supported for values of 0"
            )
    bc = (
        ((1 - beta2 ** (k + 1)) ** 0.5) / (1 - beta1 ** (k + 1)) if g0["use_bias_correction"] else 1
    )
    d = float(g0["d"])
    return GlobalStep(
        beta1=beta1, beta2=beta2, beta3=beta3, lr=lr, d=d, dlr=d * lr * bc,
        d_max=float(g0["d_max"]), d_coef=float(g0["d_coef"]),
        growth_rate=float(g0["growth_rate"]), d_numerator=float(g0["d_numerator"]) * beta3,
    )  # fmt: skip


def pass_coefficients(gs: GlobalStep, group: dict[str, Any]) -> dict[str, Any]:
    """Keyword coefficients of ``_core.optim.prodigy_accumulate`` for one group."""
    d, d0 = gs["d"], float(group["d0"])
    decay = float(group["weight_decay"])
    warm = group["safeguard_warmup"]
    return dict(
        beta1=gs["beta1"],
        beta2=gs["beta2"],
        beta3=gs["beta3"],
        m_scale=d * (1 - gs["beta1"]),
        v_scale=d * d * (1 - gs["beta2"]),
        s_scale=(d / d0) * d if warm else (d / d0) * gs["dlr"],
        coupled_decay=decay if decay != 0 and not group["decouple"] else 0.0,
        slice_p=int(group["slice_p"]),
    )


def next_d(
    gs: GlobalStep, g0: dict[str, Any], delta_numerator: float, d_denom: float
) -> dict[str, float]:
    """prodigyopt's d update from the step's sums; the group entries to write."""
    d, d_max = gs["d"], gs["d_max"]
    numerator = gs["d_numerator"] + delta_numerator
    d_hat = gs["d_coef"] * numerator / d_denom
    if gs["lr"] > 0.0:
        if d == float(g0["d0"]):
            d = max(d, d_hat)
        d_max = max(d_max, d_hat)
        d = min(d_max, d * gs["growth_rate"])
    return dict(d_numerator=numerator, d_denom=d_denom, d=d, d_max=d_max, d_hat=d_hat)


def apply_coefficients(gs: GlobalStep, group: dict[str, Any], d: float) -> dict[str, float]:
    """Keyword coefficients of ``_core.optim.prodigy_apply`` for one group (``d`` the new d)."""
    decay = float(group["weight_decay"])
    dlr = gs["dlr"]
    return dict(
        coupled_decay=decay if decay != 0 and not group["decouple"] else 0.0,
        d_eps=d * float(group["eps"]),
        decoupled=-decay * dlr if decay != 0 and group["decouple"] else 0.0,
        step=-dlr if gs["beta1"] > 0 else -dlr * d,
    )


class Run(NamedTuple):
    """One bucket of a step: the arrays the kernels step (params, or float32
    copies of half params), their gradients, states and labels."""

    group: dict[str, Any]
    params: list[Any]
    grads: list[Any]
    states: Mapping[str, Any]  # exp_avg (None if beta1 == 0), exp_avg_sq, s, p0
    labels: list[str]


def prodigy_step(groups: list[dict[str, Any]], runs: list[Run]) -> bool:
    """Pass 1 over every run, the d update written into ``groups``, pass 2.

    Returns False, after pass 1, when ``sum |s|`` is 0 (prodigyopt returns
    there: d, k and the parameters unchanged). ``RuntimeError`` (before any
    write) for unequal nonzero group lrs.
    """
    gs = global_step(groups)
    delta_numerator, d_denom = 0.0, 0.0
    for r in runs:
        if float(r.group["lr"]) <= 0.0:
            continue  # prodigyopt: no statistics from an lr-0 group
        st = r.states
        sums = _core.optim.prodigy_accumulate(
            r.params, r.grads, st["exp_avg"], st["exp_avg_sq"], st["s"], st["p0"], r.labels,
            **pass_coefficients(gs, r.group),
        )  # fmt: skip
        scale = (gs["d"] / float(r.group["d0"])) * gs["dlr"]
        for num, den in zip(sums[0::2], sums[1::2]):
            delta_numerator += scale * num
            d_denom += den
    if d_denom == 0:
        return False
    new = next_d(gs, groups[0], delta_numerator, d_denom)
    for group in groups:
        group.update(new)
        group["k"] = int(group["k"]) + 1
    for r in runs:
        _core.optim.prodigy_apply(
            r.params, r.grads, r.states["exp_avg"], r.states["exp_avg_sq"], r.labels,
            **apply_coefficients(gs, r.group, new["d"]),
        )  # fmt: skip
    return True


def _check_positive(name: str, value: Any) -> float:
    v = check_number(name, value)
    if not v > 0.0:
        raise ValueError(f"{name}: expected a value > 0, got {value!r}")
    return v


def _check_beta3(name: str, value: Any) -> float | None:
    if value is None:
        return None
    v = check_number(name, value)
    if not 0.0 <= v < 1.0:
        raise ValueError(f"{name}: expected None or 0 <= beta3 < 1, got {value!r}")
    return v


def _check_int(low: int) -> Any:
    def check(name: str, value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
            raise ValueError(f"{name}: expected an int >= {low}, got {value!r}")
        return int(value)

    return check


def _check_no_fsdp(name: str, value: Any) -> bool:
    if check_bool(name, value):
        raise ValueError(f"{name}: slimgrad steps one process's arrays; FSDP is not supported")
    return False


PRODIGY_CHECKS: dict[str, Any] = {
    **OPTION_CHECKS,
    "betas": lambda name, v: check_betas(v, name),
    "beta3": _check_beta3,
    "eps": _check_positive,
    "d": _check_positive,
    "d0": _check_positive,
    "d_max": _check_positive,
    "d_hat": check_number,
    "d_numerator": check_number,
    "d_denom": check_number,
    "d_coef": check_number,
    "k": _check_int(0),
    "growth_rate": _check_positive,
    "use_bias_correction": check_bool,
    "decouple": check_bool,
    "safeguard_warmup": check_bool,
    "fsdp_in_use": _check_no_fsdp,
    "slice_p": _check_int(1),
}


class ProdigyOptions(Params):
    """Prodigy's arguments, as ``prodigyopt.Prodigy`` (of :class:`Prodigy` and
    :class:`slimgrad.torch.Prodigy`)."""

    lr: float = 1.0
    betas: tuple[float, float] = (0.9, 0.999)
    beta3: float | None = None
    eps: float = 1e-8
    weight_decay: float = 0.0
    decouple: bool = True
    use_bias_correction: bool = False
    safeguard_warmup: bool = False
    d0: float = 1e-6
    d_coef: float = 1.0
    growth_rate: float = float("inf")
    fsdp_in_use: bool = False
    slice_p: int = 1


def prodigy_defaults(options: dict[str, Any], **estimate: float) -> dict[str, Any]:
    """The param groups' defaults, in prodigyopt's key order: the options with
    the running estimate (``d = d_max = d0``, ``d_numerator`` and ``estimate``
    after it, ``k``) in place of ``d0`` ... ``d_coef``."""
    o = dict(options)
    late = (
        "growth_rate",
        "use_bias_correction",
        "decouple",
        "safeguard_warmup",
        "fsdp_in_use",
        "slice_p",
    )
    tail = {k: o.pop(k) for k in late}
    d0, d_coef = o.pop("d0"), o.pop("d_coef")
    running = dict(d=d0, d0=d0, d_max=d0, d_numerator=0.0, **estimate, d_coef=d_coef, k=0)
    return {**o, **running, **tail}


class Prodigy(ProdigyOptions, NonfiniteKeyword, ExtraOptimizer):
    """Prodigy: Adam with a learning rate ``d`` estimated on the fly (prodigyopt 1.1).

    At step ``k`` (``lr`` the largest group lr, ``d`` the estimate, sums over
    every parameter and, for ``s``/``p0``, every ``slice_p``-th element)::

        dlr  = d * lr * (sqrt(1 - beta2^(k+1)) / (1 - beta1^(k+1)) if use_bias_correction else 1)
        g    = g + weight_decay * p                   (coupled decay, decouple=False)
        num  = beta3 * num + (d / d0) * dlr * sum(g * (p0 - p))
        m    = beta1 * m + d * (1 - beta1) * g
        v    = beta2 * v + d^2 * (1 - beta2) * g^2
        s    = beta3 * s + (d / d0) * (d if safeguard_warmup else dlr) * g
        d    = min(d_max, d * growth_rate),  d_max = max(d_max, d_coef * num / sum|s|)
        p    = p - weight_decay * dlr * p             (decouple=True)
        p    = p - dlr * m / (sqrt(v) + d * eps)      (beta1 = 0: dlr * d * g instead of m)

    (on the first growth ``d`` also takes ``max(d, d_hat)``; exactly
    prodigyopt's order, including its use of the first group's betas, d and
    growth_rate for every group). The two sums are per-piece partials added
    in a fixed order, so any thread count gives the same bits. The estimate
    lives in the param groups as in prodigyopt (``d``, ``d_max``,
    ``d_numerator``, ``d_hat``, ``d_denom``, ``k``), so ``state_dict``
    carries it. ``beta3`` None means ``sqrt(beta2)``.

    Parameters
    ----------
    params
        Dict, list or param groups of C-contiguous float32/float64/float16/
        bfloat16 arrays, updated in place (see :class:`Optimizer`).
    lr, betas, beta3, eps, weight_decay, decouple, use_bias_correction
        As ``prodigyopt.Prodigy`` (defaults 1.0, (0.9, 0.999), None, 1e-8, 0,
        True, False).
    safeguard_warmup, d0, d_coef, growth_rate, slice_p
        As ``prodigyopt.Prodigy`` (defaults False, 1e-6, 1.0, inf, 1). A group's lr must be the
        largest lr or 0 (``RuntimeError`` at the step otherwise, as prodigyopt).
    fsdp_in_use : bool
        Must be False (accepted for drop-in compatibility).
    nonfinite : str
        ``"raise"`` (default), ``"skip"`` or ``"ignore"``; see :class:`Optimizer`.

    State per parameter: ``"exp_avg"`` (if beta1 > 0), ``"exp_avg_sq"``,
    ``"s"`` and ``"p0"`` (1-D, every ``slice_p``-th element of the flattened
    parameter; ``p0`` is the parameter at its first step), and ``"step"``.

    Raises
    ------
    ValueError
        ``lr``, ``eps`` or ``d0`` not > 0; a beta outside [0, 1); ``slice_p < 1``;
        ``fsdp_in_use=True``.
    """

    _algo = "prodigy"
    _option_checks = PRODIGY_CHECKS

    def _defaults(self, options: dict[str, Any]) -> dict[str, Any]:
        _check_positive("lr", options["lr"])
        _check_positive("d0", options["d0"])  # before d = d0 is checked under its own name
        return prodigy_defaults(options, d_hat=0.0, d_denom=0.0)

    def _has_m(self) -> bool:
        return float(self.param_groups[0]["betas"][0]) > 0

    def _init_state(self, group: dict[str, Any], param: np.ndarray) -> dict[str, Any]:
        sp = int(group["slice_p"])
        dt = self.state_dtype(param)
        st: dict[str, Any] = {}
        if self._has_m():
            st["exp_avg"] = self.state_full(param)
        st["exp_avg_sq"] = self.state_full(param)
        st["s"] = np.zeros(-(-param.size // sp), dt)
        st["p0"] = np.array(param.reshape(-1)[::sp], dtype=dt)  # a copy, never a view
        return st

    def _expected(self, key: str, param: np.ndarray, group: dict[str, Any]) -> Any:
        work = self.state_dtype(param)
        if key in ("s", "p0"):
            return (-(-param.size // int(group["slice_p"])),), work
        if key in ("exp_avg", "exp_avg_sq"):
            return expected_state("math", "always", param, work)
        raise ValueError(f"state: unexpected key {key!r} for Prodigy")

    def _validate_all(self, buckets: list[Bucket]) -> None:
        has_m = self._has_m()
        for b in buckets:
            group = self.param_groups[b.group_index]
            if has_m != ("exp_avg" in b.states):
                raise ValueError(
                    f"betas: beta1 > 0 needs an 'exp_avg' state and beta1 == 0 none; "
                    f"state{b.labels[0]} holds {sorted(b.states)} (beta1 cannot change "
                    "between 0 and > 0 after the first step)"
                )
            validate(b, lambda key, p, g=group: self._expected(key, p, g))

    def _step_bucket(self, group: dict[str, Any], bucket: Bucket, check: bool) -> Any:
        raise NotImplementedError("Prodigy steps all buckets together (_step_all)")

    def _step_all(self, flat: list[Any]) -> bool:
        buckets = self._buckets_for(flat)
        try:
            # Everything that can fail is checked before the first pass writes.
            self._validate_all(buckets)
            global_step(self.param_groups)  # unequal lrs: RuntimeError
            refused = self._refuse_nonfinite(buckets) if self.nonfinite != "ignore" else None
            if refused is not None:
                return refused
            runs = []
            for b in buckets:
                p, g = self._work(b)
                states = {"exp_avg": None, **b.states}
                runs.append(Run(self.param_groups[b.group_index], p, g, states, b.labels))
            if not prodigy_step(self.param_groups, runs):
                return True  # prodigyopt returns here: no progress, d and k unchanged
            for b in buckets:
                round_back(b)
                for st in b.state_dicts:
                    st["step"] = b.step
            self._checked = [self._option_snapshot(g) for g in self.param_groups]
            return True
        finally:
            for b in buckets:
                b.grads = []

    def _work(self, b: Bucket) -> tuple[list[np.ndarray], list[np.ndarray]]:
        if b.masters is None:
            return list(b.params), list(b.grads)
        return list(b.masters), [g.astype(np.float32) for g in b.grads]
