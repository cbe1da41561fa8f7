"""The keyword-only options the optimizers share, declared once.

Each class below is a keyword mixin of :mod:`._options`: an optimizer class
lists the one whose keywords it takes among its bases (``Adam(...,
FamilyKeywords, FusedOptimizer)``), and its constructor's signature ends with
those keywords, in :data:`~._options.TAIL` order. :func:`take_keywords`
(called by the framework bases) fills the defaults, rejects unknown keywords
and checks torch's switches.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._checks import check_torch_flags
from ._options import TAIL, Params

if TYPE_CHECKING:
    from dataclasses import KW_ONLY

__all__ = [
    "FamilyKeywords",
    "MaximizeKeyword",
    "NonfiniteKeyword",
    "PrecisionKeywords",
    "SignedStepKeywords",
    "StepKeywords",
    "take_keywords",
]


class NonfiniteKeyword(Params):
    """``nonfinite``: what a NaN/inf gradient does (see :meth:`Optimizer.step`)."""

    _: KW_ONLY
    nonfinite: str = "raise"


class MaximizeKeyword(Params):
    """``maximize``: step along +grad."""

    _: KW_ONLY
    maximize: bool = False


class StepKeywords(NonfiniteKeyword):
    """torch's implementation switches (accepted, not stored) and ``nonfinite``."""

    _: KW_ONLY
    foreach: bool | None = None
    fused: bool | None = None
    capturable: bool = False
    differentiable: bool = False


class SignedStepKeywords(StepKeywords, MaximizeKeyword):
    """:class:`StepKeywords` and ``maximize``."""


class PrecisionKeywords(StepKeywords):
    """:class:`StepKeywords` and the half-precision path of the elementwise family."""

    _: KW_ONLY
    rounding: str = "nearest"
    seed: int = 0
    state_dtype: Any = None
    master_weights: bool = True


class FamilyKeywords(PrecisionKeywords, MaximizeKeyword):
    """Every keyword of the elementwise family (SGD ... RAdam, Lion, ASGD, Rprop)."""


_TORCH_SWITCHES = ("foreach", "fused", "capturable", "differentiable")


def take_keywords(owner: str, kind: Any, given: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """``nonfinite`` and the options to store in the param groups' defaults.

    The options are ``given`` completed with the defaults of the keyword tail
    declared by ``kind`` (a class of :mod:`._options`), without ``nonfinite``
    and torch's switches (accepted, checked, not stored).

    Raises ``TypeError`` for a keyword ``kind`` does not have (as Python
    does for an unexpected keyword argument, naming ``owner``), and the
    errors of :func:`check_torch_flags`.
    """
    tail = {k: p.default for k, p in kind._signature.parameters.items() if k in TAIL}
    for k in given:
        if k not in tail:
            raise TypeError(f"{owner}() got an unexpected keyword argument {k!r}")
    values = {**tail, **given}
    check_torch_flags(*(values.pop(k, None) for k in _TORCH_SWITCHES))
    return values.pop("nonfinite"), values
