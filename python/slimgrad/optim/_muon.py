"""Muon (torch.optim.Muon semantics): orthogonalized momentum for 2-D parameters.

The Newton-Schulz iteration is matrix products: in bfloat16 (the default, as
torch) one C++ call, ``_core.optim.muon_newton_schulz`` (slimgrad's bfloat16
GEMM, cpp/src/bf16_gemm.cpp); in float32 NumPy's BLAS. Everything elementwise
around them is a fused C++ pass (``_core.optim.muon_momentum`` /
``muon_normalize`` / ``ns_combine`` / ``muon_apply``, cpp/src/kernels_muon_*).
:func:`muon_update` is the whole step of a list of arrays; :class:`Muon`
(NumPy) and ``slimgrad.torch.Muon`` both call it.
"""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import numpy as np

from .. import _core
from .._blas import blas_one_thread
from .._runtime import get_num_threads
from ._bucket import Bucket
from ._checks import OPTION_CHECKS, check_betas, check_bool, check_nonneg, check_number
from ._extra import ExtraOptimizer, expected_state, round_back, validate
from ._keywords import NonfiniteKeyword
from ._options import Params

if TYPE_CHECKING:
    from dataclasses import KW_ONLY

__all__ = ["Muon", "muon_update", "newton_schulz_", "NS_COEFFICIENTS"]

# torch.optim.Muon's defaults (Keller Jordan's quintic coefficients).
NS_COEFFICIENTS = (3.4445, -4.7750, 2.0315)
NS_DTYPES = ("bfloat16", "float32")
ADJUST_LR_FNS = (None, "original", "match_rms_adamw")


def _bf16(x: float) -> float:
    """``x`` rounded to bfloat16 (nearest even), as a Python float."""
    from ml_dtypes import bfloat16

    return float(np.float32(x).astype(bfloat16))


def adjusted_lr(lr: float, adjust_lr_fn: str | None, shape: tuple[int, ...]) -> float:
    """torch's ``_adjust_lr``: the learning rate scaled for a ``(A, B)`` matrix."""
    a, b = shape[:2]
    if adjust_lr_fn is None or adjust_lr_fn == "original":
        return lr * math.sqrt(max(1, a / b))
    if adjust_lr_fn == "match_rms_adamw":
        return lr * 0.2 * math.sqrt(max(a, b))
    return lr


def newton_schulz_(
    x: np.ndarray,
    coefficients: tuple[float, float, float],
    steps: int,
    round_bf16: bool,
    scratch: dict[Any, Any] | None = None,
) -> np.ndarray:
    """``steps`` quintic Newton-Schulz iterations on the float32 matrix ``x``, in place.

    torch's order of operations: ``A = X X^T``; ``B = b A + c A A``;
    ``X = a X + B X`` (the Gram matrix of the smaller side: for a tall ``x``
    the same iteration on ``x^T``, written without transposing). With
    ``round_bf16`` every product and combination is rounded to bfloat16 where
    torch's bfloat16 ``matmul`` / ``addmm`` round (the products themselves
    accumulate in float32, as torch's CPU bfloat16 GEMM does). ``scratch``
    caches the work matrices between calls.
    """
    a, b, c = (float(v) for v in coefficients)
    m, n = x.shape
    wide = m <= n
    k = min(m, n)
    scratch = {} if scratch is None else scratch
    key = (m, n)
    if key not in scratch:
        scratch[key] = (
            np.empty((k, k), np.float32),
            np.empty((k, k), np.float32),
            np.empty((m, n), np.float32),
        )
    gram, update, y = scratch[key]
    cur, nxt = x, y
    combine = _core.optim.ns_combine
    for _ in range(steps):
        if wide:
            np.matmul(cur, cur.T, out=gram)
        else:
            np.matmul(cur.T, cur, out=gram)
        if round_bf16:
            combine(gram, None, alpha=1.0, beta=0.0, round_bf16=True)
        np.matmul(gram, gram, out=update)
        combine(update, gram, alpha=c, beta=b, round_bf16=round_bf16)
        if wide:
            np.matmul(update, cur, out=nxt)
        else:
            np.matmul(cur, update, out=nxt)
        combine(nxt, cur, alpha=1.0, beta=a, round_bf16=round_bf16)
        cur, nxt = nxt, cur
    if cur is not x:
        np.copyto(x, cur)
    return x


def _newton_schulz_f32(
    works: list[np.ndarray], coefficients: Any, steps: int, cache: dict[str, Any]
) -> None:
    """The float32 iteration (``ns_dtype="float32"``) in NumPy's BLAS."""
    threads = min(get_num_threads(), len(works))
    with blas_one_thread():
        if threads > 1:
            # One matrix per task, each on one thread: the bits do not depend
            # on the thread count (work matrices allocated per task).
            with ThreadPoolExecutor(threads) as pool:
                list(pool.map(lambda w: newton_schulz_(w, coefficients, steps, False), works))
        else:
            scratch = cache.setdefault("scratch", {})
            for w in works:
                newton_schulz_(w, coefficients, steps, False, scratch)


def muon_update(
    params: list[np.ndarray],
    grads: list[np.ndarray],
    bufs: list[np.ndarray],
    labels: list[str],
    group: dict[str, Any],
    cache: dict[str, Any],
) -> None:
    """One Muon step of 2-D float32/float64 arrays in place (torch.optim.Muon's math).

    ``group`` holds the options (lr, weight_decay, momentum, nesterov,
    ns_coefficients, eps, ns_steps, adjust_lr_fn, ns_dtype); ``cache`` keeps
    the float32 work matrices between steps. Arrays are checked by the
    kernels (TypeError/ValueError naming them) before any is modified.
    """
    rb = group["ns_dtype"] == "bfloat16"
    works = cache.get("works")
    if works is None or [w.shape for w in works] != [p.shape for p in params]:
        works = cache["works"] = [np.empty(p.shape, np.float32) for p in params]
    sums = _core.optim.muon_momentum(
        grads,
        bufs,
        works,
        labels,
        momentum=float(group["momentum"]),
        nesterov=bool(group["nesterov"]),
        round_bf16=rb,
    )
    eps = float(group["eps"])
    norms = []
    for s, w in zip(sums, works):
        # torch: ortho_grad.div_(ortho_grad.norm().clamp(min=eps)) on a bfloat16
        # tensor: the norm and the clamp bound are bfloat16 values.
        norm = math.sqrt(s)
        if not math.isfinite(norm):  # nonfinite="ignore": NaN flows on, as in torch
            w.fill(np.nan)
            norms.append(1.0)
            continue
        norms.append(max(_bf16(norm), _bf16(eps)) if rb else max(float(np.float32(norm)), eps))
    _core.optim.muon_normalize(works, norms, labels, round_bf16=rb)
    coefficients, steps = group["ns_coefficients"], int(group["ns_steps"])
    if rb:
        # torch's bfloat16 iteration on slimgrad's bfloat16 GEMM (cpp/src/bf16_gemm.cpp).
        _core.optim.muon_newton_schulz(
            works, labels, coefficients=[float(v) for v in coefficients], steps=steps
        )
    else:
        _newton_schulz_f32(works, coefficients, steps, cache)
    lr = float(group["lr"])
    lrs = [adjusted_lr(lr, group["adjust_lr_fn"], p.shape) for p in params]
    _core.optim.muon_apply(
        params, works, labels, decay=1.0 - lr * float(group["weight_decay"]), lrs=lrs
    )


def _check_coefficients(name: str, value: Any) -> tuple[float, float, float]:
    if not isinstance(value, (tuple, list)) or len(value) != 3:
        raise ValueError(f"{name}: expected a tuple (a, b, c) of 3 numbers, got {value!r}")
    return tuple(check_number(f"{name}[{i}]", v) for i, v in enumerate(value))  # type: ignore[return-value]


def _check_ns_steps(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not 0 <= value < 100:
        raise ValueError(f"{name}: expected an int in [0, 100) (torch's limit), got {value!r}")
    return int(value)


def _check_choice(choices: tuple[Any, ...]) -> Any:
    def check(name: str, value: Any) -> Any:
        if value not in choices:
            raise ValueError(f"{name}: expected one of {choices}, got {value!r}")
        return value

    return check


def _check_positive(name: str, value: Any) -> float:
    v = check_nonneg(name, value)
    if v == 0.0:
        raise ValueError(f"{name}: expected a finite value > 0, got {value!r}")
    return v


MUON_CHECKS: dict[str, Any] = {
    **OPTION_CHECKS,
    "eps": _check_positive,
    "ns_coefficients": _check_coefficients,
    "ns_steps": _check_ns_steps,
    "adjust_lr_fn": _check_choice(ADJUST_LR_FNS),
    "ns_dtype": _check_choice(NS_DTYPES),
    "use_muon": check_bool,
    "betas": lambda name, v: check_betas(v, name),
}


def _group_params(param_group: Any) -> list[tuple[str, Any]]:
    raw = param_group.get("params") if isinstance(param_group, dict) else None
    if isinstance(raw, np.ndarray):
        return [("[0]", raw)]
    if isinstance(raw, dict):
        return [(f"[{k!r}]", v) for k, v in raw.items()]
    if isinstance(raw, (list, tuple)):
        return [(f"[{i}]", v) for i, v in enumerate(raw)]
    return []


class MuonOptions(Params):
    """Muon's arguments, as ``torch.optim.Muon`` and three more (of :class:`Muon`
    and :class:`slimgrad.torch.Muon`)."""

    lr: float = 1e-3
    weight_decay: float = 0.1
    momentum: float = 0.95
    nesterov: bool = True
    ns_coefficients: tuple[float, float, float] = NS_COEFFICIENTS
    eps: float = 1e-7
    ns_steps: int = 5
    adjust_lr_fn: str | None = None
    _: KW_ONLY
    ns_dtype: str = "bfloat16"
    use_muon: bool = True
    betas: tuple[float, float] = (0.9, 0.95)


class Muon(MuonOptions, NonfiniteKeyword, ExtraOptimizer):
    """Muon: momentum orthogonalized by Newton-Schulz, for 2-D parameters (torch.optim.Muon).

    For each 2-D parameter of shape ``(A, B)``, at each step (``g`` the gradient)::

        buf = lerp(buf, g, 1 - momentum)                  # = momentum*buf + (1-momentum)*g
        u   = lerp(g, buf, momentum) if nesterov else buf
        X   = u / max(||u||_F, eps)                        # transposed view if A > B
        repeat ns_steps:  G = X X^T;  X = a X + (b G + c G G) X
        p   = p * (1 - lr * weight_decay) - adjusted_lr * X

    ``adjusted_lr`` is ``lr * sqrt(max(1, A/B))`` (``adjust_lr_fn=None`` or
    ``"original"``) or ``lr * 0.2 * sqrt(max(A, B))`` (``"match_rms_adamw"``).
    As torch on CPU, the Newton-Schulz iteration runs in bfloat16 by default
    (``ns_dtype="bfloat16"``: the input, the norm and every product rounded to
    bfloat16, products accumulated in float32); ``ns_dtype="float32"`` keeps it
    in float32 (more accurate, not torch's numbers). The bfloat16 products use
    slimgrad's bfloat16 GEMM (AVX512-BF16 where available, the symmetric
    products computed by half, the same bits on every ISA and thread count);
    the float32 ones NumPy's BLAS (each matrix's iteration on one thread, the
    matrices spread over slimgrad's threads, see :func:`blas_one_thread`); the
    elementwise passes are fused C++ on slimgrad's threads.

    AdamW fallback: torch's Muon refuses parameters that are not 2-D, and so
    does this class by default. A param group with ``"use_muon": False`` is
    stepped by AdamW instead (torch.optim.AdamW's math, the fused kernel of
    :class:`slimgrad.optim.AdamW`) with the group's ``lr``, ``betas``, ``eps``
    and ``weight_decay`` - the layout of Keller Jordan's ``MuonWithAuxAdam``::

        Muon([{"params": matrices},
              {"params": others, "use_muon": False, "lr": 3e-4, "eps": 1e-8,
               "weight_decay": 0.01}], lr=0.02)

    Parameters
    ----------
    params
        Dict, list or param groups of C-contiguous float32/float64/float16/
        bfloat16 arrays, updated in place (see :class:`Optimizer`). 2-D in the
        Muon groups.
    lr, weight_decay, momentum, nesterov, ns_coefficients, eps, ns_steps, adjust_lr_fn
        As torch.optim.Muon (defaults 1e-3, 0.1, 0.95, True, (3.4445, -4.7750,
        2.0315), 1e-7, 5, None). ``eps`` must be > 0.
    ns_dtype : {"bfloat16", "float32"}
        Precision of the Newton-Schulz iteration (see above).
    use_muon : bool
        Default of the groups' ``use_muon`` (True: Muon; False: AdamW).
    betas : tuple of float
        The AdamW groups' betas (default (0.9, 0.95)); unused by Muon groups.
    nonfinite : str
        ``"raise"`` (default), ``"skip"`` or ``"ignore"``; see :class:`Optimizer`.

    State per parameter: ``"momentum_buffer"`` (Muon groups) or ``"exp_avg"``,
    ``"exp_avg_sq"`` (AdamW groups), and ``"step"``. float16/bfloat16
    parameters step on a float32 master copy.

    Raises
    ------
    ValueError
        A parameter of a Muon group that is not 2-D; a negative ``lr``,
        ``momentum`` or ``weight_decay``; ``eps <= 0``; ``ns_steps`` outside
        [0, 100); an unknown ``adjust_lr_fn`` or ``ns_dtype``.
    """

    _algo = "muon"
    _option_checks = MUON_CHECKS

    def add_param_group(self, param_group: Any) -> None:
        """As :meth:`Optimizer.add_param_group`; a Muon group's parameters must be 2-D."""
        use_muon = (
            param_group.get("use_muon", self.defaults["use_muon"])
            if isinstance(param_group, dict)
            else True
        )
        if use_muon:
            for where, p in _group_params(param_group):
                if isinstance(p, np.ndarray) and p.ndim != 2:
                    raise ValueError(
                        f"params{where}: Muon only supports 2-D parameters, got shape {p.shape} "
                        "(step it with AdamW in a group with 'use_muon': False)"
                    )
        super().add_param_group(param_group)

    def _init_state(self, group: dict[str, Any], param: np.ndarray) -> dict[str, Any]:
        if group["use_muon"]:
            return {"momentum_buffer": self.state_full(param)}
        return {"exp_avg": self.state_full(param), "exp_avg_sq": self.state_full(param)}

    def _expected_state(self, key: str, param: np.ndarray) -> tuple[tuple[int, ...], np.dtype]:
        if key in ("momentum_buffer", "exp_avg", "exp_avg_sq"):
            return expected_state("math", "always", param, self.state_dtype(param))
        raise ValueError(f"state: unexpected key {key!r} for Muon")

    def _check_kind(self, group: dict[str, Any], bucket: Bucket) -> None:
        want = "momentum_buffer" if group["use_muon"] else "exp_avg"
        if want not in bucket.states:
            raise ValueError(
                f"use_muon: cannot change after the first step (state{bucket.labels[0]} "
                f"holds {sorted(bucket.states)}, the group now asks for {want!r})"
            )
        if group["use_muon"]:
            for p, label in zip(bucket.params, bucket.labels):
                if p.ndim != 2:
                    raise ValueError(
                        f"params{label}: Muon only supports 2-D parameters, got {p.shape}"
                    )

    def _validate_all(self, buckets: list[Bucket]) -> None:
        for b in buckets:
            group = self.param_groups[b.group_index]
            self._check_kind(group, b)
            if group["use_muon"]:
                validate(b, self._expected_state)
            else:
                args, states, names = self._adamw_call(group, b)
                _core.optim.check_step(args, b.params, b.grads, b.masters, states, names)

    def _adamw_call(self, group: dict[str, Any], b: Bucket) -> tuple[Any, list, tuple]:
        c = b.cache
        if "adamw" not in c:
            args = _core.optim.StepArgs()
            args.algo = "adam"
            args.decoupled = True
            states = [b.states["exp_avg"], b.states["exp_avg_sq"]]
            names = (
                ["params" + lb for lb in b.labels],
                ["grads" + lb for lb in b.labels],
                None if b.masters is None else [f"state{lb}['master']" for lb in b.labels],
                [[f"state{lb}[{k!r}]" for lb in b.labels] for k in ("exp_avg", "exp_avg_sq")],
            )
            c["adamw"] = (args, states, names)
        args, states, names = c["adamw"]
        args.lr = float(group["lr"])
        args.beta1, args.beta2 = (float(x) for x in group["betas"])
        args.eps = float(group["eps"])
        args.weight_decay = float(group["weight_decay"])
        args.step = b.step
        return args, states, names

    def _step_bucket(
        self, group: dict[str, Any], bucket: Bucket, check: bool
    ) -> tuple[int, int] | None:
        if not group["use_muon"]:
            self._check_kind(group, bucket)
            args, states, names = self._adamw_call(group, bucket)
            return _core.optim.step(
                args, bucket.params, bucket.grads, bucket.masters, states, names, check
            )
        work, grads, bad = self._prepare(bucket, check)
        if bad is not None:
            return bad
        muon_update(
            work, grads, bucket.states["momentum_buffer"], bucket.labels, group, bucket.cache
        )
        round_back(bucket)
        return None
