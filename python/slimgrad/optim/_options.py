"""Optimizer constructors written once, from the options a class declares.

An optimizer class (of :mod:`slimgrad.optim` or :mod:`slimgrad.torch`)
declares its constructor's options as annotated class attributes with their
defaults, in signature order, as a dataclass does; a keyword mixin of
:mod:`._keywords` adds the shared keyword tail::

    class Lion(LionOptions, FamilyKeywords, FusedOptimizer):
        ...

    class LionOptions(Params):
        lr: float = 1e-4
        betas: tuple[float, float] = (0.9, 0.99)
        weight_decay: float = 0.0

:class:`Options` writes the constructor: it binds the arguments to the
declared signature (``TypeError`` naming the class for an unknown keyword),
hands the options to :meth:`Options._defaults` (per-class checks, derived
group entries) and calls the framework base's ``__init__(params, defaults,
**tail)``. ``inspect.signature`` and ``help()`` show the declared signature;
type checkers read the same declarations through ``dataclass_transform``
(PEP 681), so ``AdamW(params, lr="fast")`` is an error for mypy.

Rules, as dataclasses': a field after ``_: KW_ONLY`` is keyword-only; a
subclass redeclaring a field keeps its position and takes the new default;
a field redeclared as ``ClassVar`` leaves the signature and is passed with
that value (AdamW's ``decoupled_weight_decay``; type checkers, which follow
dataclasses there, still list it). The shared keyword tail (:data:`TAIL`)
comes last, in that order. The defaults do not stay as class attributes.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:  # typing.dataclass_transform is Python >= 3.11; only type checkers read it
    from typing_extensions import dataclass_transform
else:

    def dataclass_transform(**_: Any) -> Callable[[type], type]:
        return lambda cls: cls


__all__ = ["TAIL", "Options", "Params"]

# The shared keyword tail (declared in _keywords.py), in the order signatures show it.
TAIL = (
    "maximize",
    "foreach",
    "fused",
    "capturable",
    "differentiable",
    "nonfinite",
    "rounding",
    "seed",
    "state_dtype",
    "master_weights",
)

_KW = inspect.Parameter.KEYWORD_ONLY
_POS = inspect.Parameter.POSITIONAL_OR_KEYWORD


def _declare(cls: type) -> list[tuple[str, str, Any, bool]]:
    """The fields ``cls`` declares itself: (name, hint, default, keyword-only).

    The defaults leave the class (they would hide methods of the framework
    base: ``state_dtype`` is one); the signature keeps them."""
    declared, kw = [], False
    if hasattr(inspect, "get_annotations"):  # Python >= 3.10 (and 3.14's lazy annotations)
        own = inspect.get_annotations(cls)
    else:
        own = vars(cls).get("__annotations__", {})
    for name, hint in own.items():
        hint = str(hint)  # annotations are postponed: their source text
        if hint == "KW_ONLY":
            kw = True
        elif hint.startswith("ClassVar") and name in vars(cls):
            declared.append((name, hint, vars(cls)[name], kw))  # fixed (see the docstring)
        elif not hint.startswith("ClassVar"):
            declared.append((name, hint, vars(cls).get(name, inspect.Parameter.empty), kw))
            if name in vars(cls):
                delattr(cls, name)
    return declared


def _fields(cls: type) -> tuple[list[inspect.Parameter], dict[str, Any]]:
    """The declared signature of ``cls`` (without ``self``) and its fixed options."""
    fields: dict[str, inspect.Parameter] = {}
    fixed: dict[str, Any] = {}
    for k in reversed(cls.__mro__):
        for name, hint, default, kw in vars(k).get("_declared", ()):
            old = fields.get(name)
            if hint.startswith("ClassVar"):
                if old is not None:
                    fixed[name] = default
                continue
            kind = old.kind if old else _KW if kw else _POS  # a redeclared field keeps its place
            fields[name] = inspect.Parameter(name, kind, default=default, annotation=hint)
    own = [p for p in fields.values() if p.name not in fixed]
    tail = [p for p in own if p.kind is _KW and p.name in TAIL]
    tail.sort(key=lambda p: TAIL.index(p.name))
    rest = [p for p in own if p not in tail]
    return [p for p in rest if p.kind is _POS] + [p for p in rest if p.kind is _KW] + tail, fixed


@dataclass_transform()
class Options:
    """Root of the declared-options classes (see the module's docstring)."""

    _signature: ClassVar[inspect.Signature]
    _fixed: ClassVar[dict[str, Any]]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls._declared = _declare(cls)  # type: ignore[attr-defined]
        params, cls._fixed = _fields(cls)
        cls._signature = inspect.Signature(params, return_annotation="None")
        # The keyword tail the framework base accepts is this class's own.
        cls._keywords = cls  # type: ignore[attr-defined]
        # An optimizer (an options class on a framework base: FusedOptimizer,
        # TorchOptimizer...) gets the constructor, unless it writes its own.
        base = next(k for k in cls.__mro__ if not issubclass(k, Options))
        if base is not object and "__init__" not in vars(cls):
            cls.__init__ = _constructor(cls, base)  # type: ignore[method-assign]

    def _defaults(self, options: dict[str, Any]) -> dict[str, Any]:
        """The param groups' defaults from the constructor's options (the
        arguments but ``params`` and the keyword tail, in signature order).

        A subclass overrides it for what its constructor does beyond storing
        the options: checks with the messages of the API it mirrors, derived
        group entries, options kept as attributes rather than in the groups.
        Runs before the framework base's constructor."""
        return options


class Params(Options):
    """The first argument of every optimizer."""

    params: Any


def _constructor(cls: type[Options], base: type) -> Callable[..., None]:
    """``cls.__init__``: bind, ``_defaults``, then ``base.__init__(params, defaults, **tail)``."""
    sig = cls._signature
    tail = [p.name for p in sig.parameters.values() if p.kind is _KW and p.name in TAIL]

    def __init__(self: Options, *args: Any, **kwargs: Any) -> None:
        try:
            bound = sig.bind(*args, **kwargs)
        except TypeError as e:  # as Python's own message, naming the class
            raise TypeError(f"{cls.__name__}() {e}") from None
        bound.apply_defaults()
        options = dict(bound.arguments)
        params = options.pop("params")
        keywords = {k: options.pop(k) for k in tail}
        options.update(cls._fixed)
        base.__init__(self, params, self._defaults(options), **keywords)  # type: ignore[call-arg]

    __init__.__qualname__ = f"{cls.__qualname__}.__init__"
    __init__.__signature__ = sig.replace(  # type: ignore[attr-defined]
        parameters=[inspect.Parameter("self", _POS), *sig.parameters.values()]
    )
    return __init__
