"""The Module protocol and Sequential.

A module is a layer with an explicit backward pass, for training loops
written in NumPy: ``y = m.forward(x)`` caches what backward needs,
``grad_x = m.backward(grad_y)`` fills the module's gradient buffers and
returns the gradient with respect to the input. Parameters and gradients are
exposed as ``{name: ndarray}`` dicts with the same names, holding the *live*
arrays: an optimizer updates ``parameters()`` in place from ``gradients()``.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def float_dtype(dtype: Any, name: str = "dtype") -> np.dtype:
    """``np.dtype(dtype)`` if it is float32 or float64, else ``TypeError`` naming ``name``."""
    try:
        dt = np.dtype(dtype)
    except TypeError:
        dt = None
    if dt not in FLOAT_DTYPES:
        raise TypeError(f"{name}: expected float32 or float64, got {dtype!r}")
    return dt


def as_readable(x: Any) -> Any:
    """An input that is only *read*, in the layout the C++ kernels take.

    A float32/float64 ndarray that is a strided view or in non-native byte
    order is copied once, explicitly, to a C-contiguous native-order array
    (what ``np.ascontiguousarray`` does, without its promotion of 0-d arrays
    to 1-d); one that already is C-contiguous and native is returned itself
    (zero copy). Anything else is returned unchanged, so the check that
    follows names what is wrong. Arrays written in place never go through
    this: they keep the strict buffer contract (``TypeError``, no copy).
    """
    if (
        isinstance(x, np.ndarray)
        and x.dtype.newbyteorder("=") in FLOAT_DTYPES
        and not (x.flags.c_contiguous and x.dtype.isnative)
    ):
        return np.asarray(x, dtype=x.dtype.newbyteorder("="), order="C")
    return x


def check_input(x: object, name: str, dtype: np.dtype) -> np.ndarray:
    """``x`` as a C-contiguous native ``dtype`` array (see :func:`as_readable`: a copy
    only for strided or byte-swapped input); ``TypeError`` naming ``name`` if ``x``
    is not an ndarray of ``dtype`` (in either byte order)."""
    if not isinstance(x, np.ndarray):
        raise TypeError(f"{name}: expected a {dtype.name} ndarray, got {type(x).__name__}")
    if x.dtype.newbyteorder("=") != dtype.newbyteorder("="):
        raise TypeError(
            f"{name}: expected a {dtype.name} ndarray, got {x.dtype.name} array of shape {x.shape}"
        )
    return as_readable(x)


def check_grad(
    grad_out: object, like: np.ndarray | None, module: str, shape: tuple[int, ...] | None = None
) -> np.ndarray:
    """The output gradient must match the forward output: ``like``'s dtype and
    shape (or ``shape`` when given, for a module that keeps no output).

    ``grad_out`` is only read: returned C-contiguous and native (a copy only
    for strided or byte-swapped input, see :func:`as_readable`)."""
    if like is None:
        raise RuntimeError(f"{module}.backward: call forward first")
    g = check_input(grad_out, "grad_out", like.dtype)
    expected = like.shape if shape is None else shape
    if g.shape != expected:
        raise ValueError(
            f"grad_out: expected shape {expected} (the forward output's), got {g.shape}"
        )
    return g


_SKIP_INIT = contextvars.ContextVar("slimgrad_no_init_weights", default=False)


@contextlib.contextmanager
def no_init_weights() -> Iterator[None]:
    """Within the block, layers get uninitialized parameters (``np.empty``)
    instead of drawing random ones, as transformers' ``no_init_weights``: for
    a model whose every parameter is loaded right after (``models.bert.load``
    does). Drawing the initial values of a 7B-parameter model would take
    minutes; here they cost nothing. Gradient buffers are zeroed lazily by the
    OS (``np.zeros``) whatever the block."""
    token = _SKIP_INIT.set(True)
    try:
        yield
    finally:
        _SKIP_INIT.reset(token)


def init_skipped() -> bool:
    """True inside :func:`no_init_weights`."""
    return _SKIP_INIT.get()


class Module:
    """Base class: parameters, gradients, buffers, sub-modules, train/eval.

    Subclasses register arrays with :meth:`register_parameter` (a gradient
    buffer of the same shape and dtype is created with it) and
    :meth:`register_buffer` (state that is saved but not trained, e.g.
    BatchNorm's running statistics), and children with :meth:`register_module`.
    Names of children's entries are prefixed ``"<child>."`` like torch's.
    """

    def __init__(self) -> None:
        self.training = True
        self._parameters: dict[str, np.ndarray] = {}
        self._gradients: dict[str, np.ndarray] = {}
        self._buffers: dict[str, np.ndarray] = {}
        self._optional: set[str] = set()  # buffers a strict load may lack (see register_buffer)
        self._modules: dict[str, Module] = {}

    # -- registration -------------------------------------------------------
    def register_parameter(self, name: str, value: np.ndarray) -> np.ndarray:
        """Add a trainable array (and its zeroed gradient buffer); returns it."""
        self._parameters[name] = value
        # np.zeros, not zeros_like: calloc'd pages cost nothing until a
        # backward writes them (an inference-only model never does).
        self._gradients[name] = np.zeros(value.shape, value.dtype)
        return value

    def register_buffer(self, name: str, value: np.ndarray, optional: bool = False) -> np.ndarray:
        """Add a saved, non-trainable array; returns it.

        ``optional=True``: slimgrad-only state (Dropout's mask counter) that a
        strict :meth:`load_state_dict` does not require, so state dicts written by
        torch or before the buffer existed still load; it keeps its value then.
        """
        self._buffers[name] = value
        if optional:
            self._optional.add(name)
        return value

    def register_module(self, name: str, module: Module) -> Module:
        """Add a child module under ``name``; returns it."""
        if not isinstance(module, Module):
            raise TypeError(f"{name}: expected a slimgrad.nn.Module, got {type(module).__name__}")
        self._modules[name] = module
        return module

    # -- the protocol -------------------------------------------------------
    def forward(self, x: np.ndarray) -> np.ndarray:
        """Compute the output and cache what :meth:`backward` needs."""
        raise NotImplementedError

    def backward(self, grad_out: np.ndarray) -> np.ndarray:
        """Fill the gradient buffers (overwritten, not accumulated); return the input gradient."""
        raise NotImplementedError

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self.forward(x)

    def _walk(self, kind: str, prefix: str = "") -> Iterator[tuple[str, np.ndarray]]:
        for name, value in getattr(self, kind).items():
            yield prefix + name, value
        for child_name, child in self._modules.items():
            yield from child._walk(kind, f"{prefix}{child_name}.")

    def _prefixed(self, prefix: str = "") -> Iterator[tuple[str, Module]]:
        yield prefix, self
        for child_name, child in self._modules.items():
            yield from child._prefixed(f"{prefix}{child_name}.")

    def parameters(self) -> dict[str, np.ndarray]:
        """``{name: array}`` of every trainable array, the live arrays (not copies)."""
        return dict(self._walk("_parameters"))

    def gradients(self) -> dict[str, np.ndarray]:
        """``{name: array}`` of the gradient buffers, same names as :meth:`parameters`, live."""
        return dict(self._walk("_gradients"))

    def buffers(self) -> dict[str, np.ndarray]:
        """``{name: array}`` of the non-trainable state (running statistics), live."""
        return dict(self._walk("_buffers"))

    def modules(self) -> Iterator[Module]:
        """This module and every descendant, depth first."""
        yield self
        for child in self._modules.values():
            yield from child.modules()

    def zero_grad(self) -> None:
        """Set every gradient buffer to zero (backward overwrites them anyway)."""
        for g in self.gradients().values():
            g.fill(0)

    def train(self, mode: bool = True) -> Module:
        """Training mode (batch statistics, active dropout) for this module and its children."""
        for m in self.modules():
            m.training = bool(mode)
        return self

    def eval(self) -> Module:
        """Evaluation mode: ``train(False)``."""
        return self.train(False)

    # -- state --------------------------------------------------------------
    def state_dict(self) -> dict[str, np.ndarray]:
        """Copies of the parameters and buffers, ``{name: ndarray}`` (torch's key names)."""
        state = {k: v.copy() for k, v in self._walk("_parameters")}
        state.update((k, v.copy()) for k, v in self._walk("_buffers"))
        return state

    def load_state_dict(self, state: Mapping[str, np.ndarray], strict: bool = True) -> None:
        """Copy ``state`` into the live parameters and buffers (in place).

        Raises ``KeyError`` when ``strict`` and keys are missing or unexpected,
        ``ValueError`` when a shape differs; in both cases nothing is modified.
        Values are cast to each array's dtype (``same_kind`` casting).
        """
        targets = dict(self._walk("_parameters"))
        targets.update(self._walk("_buffers"))
        optional = {f"{p}{n}" for p, m in self._prefixed() for n in m._optional}
        missing = sorted(set(targets) - set(state) - optional)
        unexpected = sorted(set(state) - set(targets))
        if strict and (missing or unexpected):
            raise KeyError(f"state: missing keys {missing}, unexpected keys {unexpected}")
        pairs = []
        for name, dst in targets.items():
            if name not in state:
                continue
            src = np.asarray(state[name])
            if src.shape != dst.shape:
                raise ValueError(f"state[{name!r}]: expected shape {dst.shape}, got {src.shape}")
            pairs.append((dst, src))
        for dst, src in pairs:
            np.copyto(dst, src, casting="same_kind")

    def extra_repr(self) -> str:
        return ""

    def __repr__(self) -> str:
        if not self._modules:
            return f"{type(self).__name__}({self.extra_repr()})"
        lines = [f"  ({k}): " + repr(m).replace("\n", "\n  ") for k, m in self._modules.items()]
        return f"{type(self).__name__}(\n" + "\n".join(lines) + "\n)"


class Sequential(Module):
    """Modules applied in order; backward runs them in reverse.

    Children are named ``"0"``, ``"1"``, ... so parameters are
    ``"0.weight"``, ``"0.bias"``, ``"1.running_mean"``, ... as in torch.
    """

    def __init__(self, *modules: Module) -> None:
        super().__init__()
        for i, m in enumerate(modules):
            self.register_module(str(i), m)

    def forward(self, x: np.ndarray) -> np.ndarray:
        for m in self._modules.values():
            x = m.forward(x)
        return x

    def backward(self, grad_out: np.ndarray) -> np.ndarray:
        for m in reversed(list(self._modules.values())):
            grad_out = m.backward(grad_out)
        return grad_out

    def __getitem__(self, i: int) -> Module:
        return list(self._modules.values())[i]

    def __len__(self) -> int:
        return len(self._modules)

    def __iter__(self) -> Iterator[Module]:
        return iter(self._modules.values())
