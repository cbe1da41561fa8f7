"""The keyword-only options the optimizers share, declared once.

A constructor lists its own options (torch's positional ones, ``lr``,
``betas`` ...) and takes the shared keyword tail as ``**keywords:
Unpack[<one of the TypedDicts below>]``, naming the same TypedDict in its
class attribute ``_keywords``. :func:`take_keywords` fills the defaults,
rejects unknown keywords and checks torch's switches;
:func:`spell_out_signature` (run by ``Optimizer.__init_subclass__``) writes
the tail back into the constructor's ``__signature__``, so ``help()``,
``inspect.signature`` and IDEs show every keyword with its default, while a
type checker reads the TypedDict.
"""

from __future__ import annotations

import inspect
from typing import Any, TypedDict

from ._checks import check_torch_flags

__all__ = [
    "KEYWORD_DEFAULTS",
    "FamilyKeywords",
    "PrecisionKeywords",
    "SignedStepKeywords",
    "StepKeywords",
    "spell_out_signature",
    "take_keywords",
]


class StepKeywords(TypedDict, total=False):
    """torch's implementation switches (accepted, not stored) and ``nonfinite``."""

    foreach: bool | None
    fused: bool | None
    capturable: bool
    differentiable: bool
    nonfinite: str


class SignedStepKeywords(StepKeywords, total=False):
    """:class:`StepKeywords` and ``maximize``."""

    maximize: bool


class PrecisionKeywords(StepKeywords, total=False):
    """:class:`StepKeywords` and the half-precision path of the elementwise family."""

    rounding: str
    seed: int
    state_dtype: Any
    master_weights: bool


class FamilyKeywords(PrecisionKeywords, total=False):
    """Every keyword of the elementwise family (SGD ... RAdam, Lion, ASGD, Rprop)."""

    maximize: bool


# Defaults of every shared keyword, in the order signatures show them.
KEYWORD_DEFAULTS: dict[str, Any] = {
    "maximize": False,
    "foreach": None,
    "fused": None,
    "capturable": False,
    "differentiable": False,
    "nonfinite": "raise",
    "rounding": "nearest",
    "seed": 0,
    "state_dtype": None,
    "master_weights": True,
}
_TORCH_SWITCHES = ("foreach", "fused", "capturable", "differentiable")


def _names(kind: type) -> list[str]:
    keys = kind.__annotations__  # a TypedDict's own and inherited keys
    return [k for k in KEYWORD_DEFAULTS if k in keys]


def take_keywords(owner: str, kind: type, given: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """``nonfinite`` and the options to store in the param groups' defaults.

    The options are ``given`` completed with the defaults of ``kind``'s keys,
    without ``nonfinite`` and torch's switches (accepted, checked, not stored).

    Raises ``TypeError`` for a keyword ``kind`` does not have (as Python
    does for an unexpected keyword argument, naming ``owner``), and the
    errors of :func:`check_torch_flags`.
    """
    names = _names(kind)
    for k in given:
        if k not in names:
            raise TypeError(f"{owner}() got an unexpected keyword argument {k!r}")
    values = {k: given.get(k, KEYWORD_DEFAULTS[k]) for k in names}
    check_torch_flags(*(values.pop(k, None) for k in _TORCH_SWITCHES))
    return values.pop("nonfinite"), values


def spell_out_signature(init: Any, kind: type) -> None:
    """Give ``init`` (whose last parameter is ``**keywords``) the full signature.

    The ``**keywords`` parameter is replaced by one keyword-only parameter
    per key of ``kind``, with its default from :data:`KEYWORD_DEFAULTS`.
    """
    sig = inspect.signature(init)
    if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in sig.parameters.values()):
        return  # a constructor with its own explicit keywords
    own = [p for p in sig.parameters.values() if p.kind is not inspect.Parameter.VAR_KEYWORD]
    hints = kind.__annotations__  # ForwardRefs (postponed annotations): show their text
    tail = [
        inspect.Parameter(
            k,
            inspect.Parameter.KEYWORD_ONLY,
            default=KEYWORD_DEFAULTS[k],
            annotation=getattr(hints[k], "__forward_arg__", hints[k]),
        )
        for k in _names(kind)
        if k not in sig.parameters
    ]
    init.__signature__ = sig.replace(parameters=own + tail)
