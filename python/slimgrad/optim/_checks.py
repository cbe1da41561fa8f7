"""Checks of optimizer options: each takes ``(name, value)`` and raises
``TypeError`` / ``ValueError`` naming ``name``; ``OPTION_CHECKS`` maps an option
name to its check (used on defaults, on param groups, on ``param_groups``
edits before a step and on loaded state dicts).
"""

from __future__ import annotations

import math
import numbers
from typing import Any

import numpy as np

try:  # ml_dtypes is a dependency, but the float32/float64 paths do not need it
    from ml_dtypes import bfloat16 as bfloat16_type
except ImportError:  # pragma: no cover
    bfloat16_type = None

__all__ = [
    "HALF_DTYPES",
    "NONFINITE_POLICIES",
    "OPTION_CHECKS",
    "PARAM_DTYPES",
    "ROUNDING_MODES",
    "STATE_DTYPES",
    "bfloat16_type",
    "check_betas",
    "check_bool",
    "check_master_weights",
    "check_nonneg",
    "check_number",
    "check_torch_flags",
    "check_unit",
    "normalize_state_dtype",
]

PARAM_DTYPES = tuple(
    np.dtype(d) for d in (np.float32, np.float64, np.float16, bfloat16_type) if d is not None
)
HALF_DTYPES = tuple(d for d in PARAM_DTYPES if d.itemsize == 2)
NONFINITE_POLICIES = ("raise", "skip", "ignore")
ROUNDING_MODES = ("nearest", "stochastic")
STATE_DTYPES = (None, "float32", "bfloat16")


def normalize_state_dtype(value: Any) -> str | None:
    """``state_dtype`` as stored in a param group: None, ``"float32"`` or ``"bfloat16"``.

    Accepts those strings, ``np.float32``, ``ml_dtypes.bfloat16`` or their
    ``np.dtype``; anything else raises ``ValueError`` naming the argument.
    """
    if value is None:
        return None
    if isinstance(value, str):
        if value in ("float32", "bfloat16"):
            return value
    else:
        try:
            dt = np.dtype(value)
        except TypeError:
            dt = None
        if dt == np.dtype(np.float32):
            return "float32"
        if bfloat16_type is not None and dt == np.dtype(bfloat16_type):
            return "bfloat16"
    raise ValueError(
        "state_dtype: expected None, 'float32' or 'bfloat16' (or np.float32 / "
        f"ml_dtypes.bfloat16), got {value!r}"
    )


def check_master_weights(value: Any) -> bool:
    """``master_weights`` must be a bool (``ValueError`` naming the argument otherwise)."""
    if not isinstance(value, (bool, np.bool_)):
        raise ValueError(f"master_weights: expected True or False, got {value!r}")
    return bool(value)


def check_number(name: str, value: Any) -> float:
    """``float(value)`` for a real number; ``TypeError`` naming ``name`` otherwise."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name}: expected a number, got {value!r}")
    return float(value)


def check_betas(betas: Any, name: str = "betas") -> tuple[float, float]:
    if not isinstance(betas, (tuple, list)) or len(betas) != 2:
        raise ValueError(f"{name}: expected a pair (beta1, beta2), got {betas!r}")
    b1, b2 = (check_number(f"{name}[{i}]", b) for i, b in enumerate(betas))
    for i, b in enumerate((b1, b2)):
        if not 0.0 <= b < 1.0:
            raise ValueError(f"{name}[{i}]: expected 0 <= beta < 1, got {b}")
    return b1, b2


def check_nonneg(name: str, value: Any) -> float:
    v = check_number(name, value)
    if not (v >= 0.0) or math.isinf(v):
        raise ValueError(f"{name}: expected a finite value >= 0, got {value!r}")
    return v


def check_unit(name: str, value: Any) -> float:
    v = check_number(name, value)
    if not 0.0 <= v <= 1.0:
        raise ValueError(f"{name}: expected 0 <= value <= 1, got {value!r}")
    return v


def check_bool(name: str, value: Any) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name}: expected True or False, got {value!r}")
    return bool(value)


def check_torch_flags(
    foreach: Any = None, fused: Any = None, capturable: Any = False, differentiable: Any = False
) -> None:
    """torch's implementation switches, accepted for drop-in compatibility.

    ``foreach`` / ``fused`` (None or a bool) are ignored: slimgrad's kernels are
    always fused multi-tensor kernels. ``capturable`` / ``differentiable`` only
    mean something with CUDA graphs / autograd, which slimgrad has not: False
    is accepted, True raises ``ValueError`` naming the argument. They are not
    stored in the param groups.
    """
    for name, v in (("foreach", foreach), ("fused", fused)):
        if v is not None and not isinstance(v, (bool, np.bool_)):
            raise TypeError(f"{name}: expected None, True or False, got {v!r}")
    for name, v in (("capturable", capturable), ("differentiable", differentiable)):
        if v is None or v is False or (isinstance(v, np.bool_) and not v):
            continue
        raise ValueError(
            f"{name}: expected False (slimgrad has no autograd or CUDA graphs), got {v!r}"
        )


# Checks of the options every optimizer may have; each takes (name, value),
# raises TypeError/ValueError naming ``name`` and returns nothing useful.
# Used on per-group values and, before every step, on param_groups edits.
OPTION_CHECKS: dict[str, Any] = {
    **{
        k: check_nonneg
        for k in (
            "lr",
            "eps",
            "weight_decay",
            "momentum",
            "lr_decay",
            "initial_accumulator_value",
            "alpha",
            "momentum_decay",
        )
    },
    "dampening": check_number,
    "betas": lambda name, v: check_betas(v, name),
    "rho": check_unit,
    **{
        k: check_bool
        for k in ("maximize", "nesterov", "amsgrad", "centered", "decoupled_weight_decay")
    },
}
