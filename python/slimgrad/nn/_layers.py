"""Layers: Linear, ReLU, GELU, Dropout, BatchNorm1d."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

from .. import _core
from ._module import Module, as_readable, check_grad, check_input, float_dtype, init_skipped
from .functional import check_probability, check_seed

_nn = _core.nn


def _check_count(value: object, name: str, minimum: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name}: expected an int, got {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name}: expected an int >= {minimum}, got {value}")
    return int(value)


def norm_backward(
    module: Any, kernel: Callable[..., None], grad_out: np.ndarray, name: str
) -> np.ndarray:
    """Backward of a normalization layer (BatchNorm1d, LayerNorm) into a new grad_in.

    ``module._cache`` is ``(x, *statistics)`` saved by its forward; ``kernel`` takes
    ``(x, grad_out, grad_in, weight, *statistics, weight grad, bias grad)``, the two
    gradients None (not accumulated) when the module has none.
    """
    g = check_grad(grad_out, module._y, name)
    assert module._cache is not None
    x, *statistics = module._cache
    grad_in = _core.empty(g.shape, g.dtype)
    gradients = module._gradients
    kernel(
        x, g, grad_in, module.weight, *statistics, gradients.get("weight"), gradients.get("bias")
    )
    return grad_in


class Linear(Module):
    """``y = x @ weight.T + bias`` with ``weight`` of shape (out_features, in_features).

    Initialization is torch's default (``kaiming_uniform_(a=sqrt(5))``): weight
    and bias ~ U(-1/sqrt(in_features), 1/sqrt(in_features)), drawn from
    ``np.random.default_rng(seed)`` (weight first). ``x`` has shape
    (..., in_features) and the layer's dtype (``TypeError`` otherwise,
    ``ValueError`` for a wrong last dimension), any layout or byte order (a
    strided or byte-swapped ``x`` is copied once to C order). The matrix products run in
    NumPy (BLAS). ``backward`` overwrites ``gradients()["weight"]`` and
    ``["bias"]``. ``set_product`` lets ``forward`` use another product
    (``prune.sparse_linear``: a compressed copy of a pruned weight).
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        dtype: object = np.float32,
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.in_features = _check_count(in_features, "in_features")
        self.out_features = _check_count(out_features, "out_features")
        self.dtype = float_dtype(dtype)
        seed = check_seed(seed, "seed")
        shapes = [(self.out_features, self.in_features)] + ([(self.out_features,)] if bias else [])
        if init_skipped():
            values = [np.empty(shape, self.dtype) for shape in shapes]
        else:  # weight first, then bias, from one generator
            rng = np.random.default_rng(seed)
            bound = 1.0 / math.sqrt(self.in_features) if self.in_features > 0 else 0.0
            values = [rng.uniform(-bound, bound, shape).astype(self.dtype) for shape in shapes]
        self.weight = self.register_parameter("weight", values[0])
        self.bias = self.register_parameter("bias", values[1]) if bias else None
        self._x: np.ndarray | None = None
        self._y_shape: tuple[int, ...] | None = None
        self._product: Callable[..., np.ndarray | None] | None = None
        self._product_adds_bias = False

    def set_product(
        self, product: Callable[..., np.ndarray | None] | None, adds_bias: bool = False
    ) -> None:
        """Let ``product(x)`` compute ``x @ weight.T`` in ``forward`` (inference).

        ``product`` gets the checked ``x`` and returns the product (without
        bias), or ``None`` to use the dense weight for that call; ``None``
        removes it. With ``adds_bias=True`` it is called as ``product(x,
        bias)`` (``bias`` None for a layer without one) and returns ``x @
        weight.T + bias`` itself: a kernel that adds the bias while it writes
        its output saves the layer a pass over it (``quant.quantize_linear``;
        0.47 ms of 1.7 for a 1024 x 1536 output). ``prune.sparse_linear``
        installs one that runs on a compressed 2:4 or CSR copy of the weight.
        ``backward`` stays dense.
        """
        if product is not None and not callable(product):
            raise TypeError(f"product: expected a callable or None, got {type(product).__name__}")
        if not isinstance(adds_bias, bool):
            raise TypeError(f"adds_bias: expected a bool, got {type(adds_bias).__name__}")
        self._product = product
        self._product_adds_bias = adds_bias

    def forward(self, x: np.ndarray) -> np.ndarray:
        x = check_input(x, "x", self.dtype)
        if x.ndim < 1 or x.shape[-1] != self.in_features:
            raise ValueError(f"x: expected shape (..., {self.in_features}), got {x.shape}")
        y = None
        if self._product is not None:
            if self._product_adds_bias:
                y = self._product(x, self.bias)
                if y is not None:
                    self._x = x
                    return y
            else:
                y = self._product(x)
        if y is None:
            # One GEMM over all leading indices: NumPy's matmul on a (batch, seq,
            # in) stack runs one small product per batch entry (2.8x slower for
            # BERT's 32 x 18 tokens).
            y = (x.reshape(-1, self.in_features) @ self.weight.T).reshape(
                x.shape[:-1] + (self.out_features,)
            )
        if self.bias is not None:
            y += self.bias
        self._x = x
        return y

    def backward(self, grad_out: np.ndarray) -> np.ndarray:
        x = self._x
        shape = None if x is None else x.shape[:-1] + (self.out_features,)
        g = check_grad(grad_out, x, "Linear", shape)
        assert x is not None
        g2 = g.reshape(-1, self.out_features)
        x2 = x.reshape(-1, self.in_features)
        np.matmul(g2.T, x2, out=self._gradients["weight"])
        if self.bias is not None:
            np.sum(g2, axis=0, out=self._gradients["bias"])
        return (g2 @ self.weight).reshape(x.shape)

    def extra_repr(self) -> str:
        bias = self.bias is not None
        text = f"in_features={self.in_features}, out_features={self.out_features}, bias={bias}"
        if self._product is not None:
            text += f", product={getattr(self._product, '__name__', 'custom')}"
        return text


class ReLU(Module):
    """``max(x, 0)``; backward passes the gradient where ``x > 0``."""

    def __init__(self) -> None:
        super().__init__()
        self._x: np.ndarray | None = None

    def forward(self, x: np.ndarray) -> np.ndarray:
        if not isinstance(x, np.ndarray):
            raise TypeError(f"x: expected an ndarray, got {type(x).__name__}")
        self._x = x
        return np.maximum(x, x.dtype.type(0))

    def backward(self, grad_out: np.ndarray) -> np.ndarray:
        x = self._x
        g = check_grad(grad_out, x, "ReLU")
        assert x is not None
        return np.where(x > 0, g, g.dtype.type(0))


class GELU(Module):
    """GELU, ``x * Phi(x)`` (``approximate="none"``) or the tanh approximation.

    C++ kernel (libm erf/tanh, threaded; the ISAs as :func:`slimgrad.nn.gelu`).
    ``x``: float32/float64, any layout
    and byte order: it is only read, so a strided or byte-swapped ``x`` (and
    ``grad_out``) is copied once to a C-contiguous native array (zero copy
    when it already is one). Other dtypes raise ``TypeError`` naming ``x``.
    """

    def __init__(self, approximate: str = "none") -> None:
        super().__init__()
        if approximate not in ("none", "tanh"):
            raise ValueError(f"approximate: expected 'none' or 'tanh', got {approximate!r}")
        self.approximate = approximate
        self._x: np.ndarray | None = None

    def forward(self, x: np.ndarray) -> np.ndarray:
        x = as_readable(x)  # only read: strided or byte-swapped input is copied once
        y = _core.empty(x.shape, x.dtype) if isinstance(x, np.ndarray) else x
        _nn.gelu_forward(x, y, self.approximate)
        self._x = x
        return y

    def backward(self, grad_out: np.ndarray) -> np.ndarray:
        x = self._x
        g = check_grad(grad_out, x, "GELU")
        grad_in = _core.empty(g.shape, g.dtype)
        _nn.gelu_backward(x, g, grad_in, self.approximate)
        return grad_in

    def extra_repr(self) -> str:
        return f"approximate={self.approximate!r}"


class Dropout(Module):
    """Inverted dropout: zero each element with probability ``p``, scale the rest by ``1/(1-p)``.

    Training only; in eval mode (and for ``p == 0``) forward returns ``x``
    itself. The mask is Philox-4x32-10 keyed by ``(seed, call number, element
    index)``: every forward call in training draws a new mask (the call
    counter advances), the same for any thread count and ISA, and backward
    recomputes it instead of storing it. ``x``: float32/float64, any layout
    and byte order: it is only read, so a strided or byte-swapped ``x`` (and
    ``grad_out``) is copied once to a C-contiguous native array (zero copy
    when it already is one). ``ValueError`` if ``p`` is outside [0, 1]
    (torch's message).
    """

    def __init__(self, p: float = 0.5, seed: int = 0) -> None:
        super().__init__()
        self.p = check_probability(p)
        self.seed = check_seed(seed, "seed")
        # The Philox stream of the next training forward: a buffer, so a resumed run
        # draws the same masks (optional: torch's state dicts have no such key).
        self._calls = self.register_buffer("calls", np.zeros((), np.int64), optional=True)
        self._stream: int | None = None  # the stream of the last forward, None if identity
        self._y: np.ndarray | None = None

    def forward(self, x: np.ndarray) -> np.ndarray:
        if not self.training or self.p == 0.0:
            self._stream = None
            self._y = x
            return x
        x = as_readable(x)  # only read: strided or byte-swapped input is copied once
        y = _core.empty(x.shape, x.dtype) if isinstance(x, np.ndarray) else x
        stream = int(self._calls)
        _nn.dropout(x, y, self.p, self.seed, stream)
        self._stream = stream
        self._calls[()] = stream + 1
        self._y = y
        return y

    def backward(self, grad_out: np.ndarray) -> np.ndarray:
        g = check_grad(grad_out, self._y, "Dropout")
        if self._stream is None:
            return g
        grad_in = _core.empty(g.shape, g.dtype)
        _nn.dropout(g, grad_in, self.p, self.seed, self._stream)
        return grad_in

    @property
    def calls(self) -> int:
        """Number of training forwards so far (the next mask's stream); settable."""
        return int(self._calls)

    @calls.setter
    def calls(self, value: int) -> None:
        self._calls[()] = value

    def extra_repr(self) -> str:
        return f"p={self.p}, seed={self.seed}"


class BatchNorm1d(Module):
    """Batch normalization over (N, C) or (N, C, L) input, with torch's semantics.

    Training: normalize with the batch mean and biased variance (per channel,
    summed in float64 in a fixed order: the same result for any thread
    count; results of different ISAs can differ in the last bits), then
    update ``running_mean`` / ``running_var`` (unbiased
    variance) with ``momentum``, or with the cumulative average
    ``1 / num_batches_tracked`` when ``momentum`` is None. Eval: normalize
    with the running statistics (batch statistics if
    ``track_running_stats=False``). ``affine=False`` drops ``weight``/``bias``.

    ``x`` must be an array of the layer's dtype (``TypeError`` otherwise),
    any layout or byte order (only read: a strided or byte-swapped ``x`` is
    copied once to a C-contiguous native array, zero copy when it already
    is one), with C = ``num_features`` (``ValueError``); a batch with one
    value per channel in training raises torch's ``ValueError``. ``backward``
    overwrites ``gradients()["weight"]`` and ``["bias"]``.
    """

    def __init__(
        self,
        num_features: int,
        eps: float = 1e-5,
        momentum: float | None = 0.1,
        affine: bool = True,
        track_running_stats: bool = True,
        dtype: object = np.float32,
    ) -> None:
        super().__init__()
        self.num_features = _check_count(num_features, "num_features")
        self.dtype = float_dtype(dtype)
        if not eps > 0:
            raise ValueError(f"eps: expected a positive number, got {eps}")
        self.eps = float(eps)
        self.momentum = None if momentum is None else float(momentum)
        self.affine = bool(affine)
        self.track_running_stats = bool(track_running_stats)
        c = self.num_features
        self.running_mean: np.ndarray | None = None
        self.running_var: np.ndarray | None = None
        self.num_batches_tracked: np.ndarray | None = None
        self.weight = self.register_parameter("weight", np.ones(c, self.dtype)) if affine else None
        self.bias = self.register_parameter("bias", np.zeros(c, self.dtype)) if affine else None
        if self.track_running_stats:
            self.running_mean = self.register_buffer("running_mean", np.zeros(c, self.dtype))
            self.running_var = self.register_buffer("running_var", np.ones(c, self.dtype))
            self.num_batches_tracked = self.register_buffer(
                "num_batches_tracked", np.zeros((), np.int64)
            )
        self._cache: tuple[np.ndarray, np.ndarray, np.ndarray, bool] | None = None
        self._y: np.ndarray | None = None

    def forward(self, x: np.ndarray) -> np.ndarray:
        x = check_input(x, "x", self.dtype)
        c = self.num_features
        if x.ndim not in (2, 3) or x.shape[1] != c:
            raise ValueError(
                f"x: expected a 2-D (N, {c}) or 3-D (N, {c}, L) array, got shape {x.shape}"
            )
        batch_stats = self.training or not self.track_running_stats
        if batch_stats and x.shape[0] * math.prod(x.shape[2:]) == 1:
            raise ValueError(  # torch's message
                "Expected more than 1 value per channel when training, "
                f"got input size {tuple(x.shape)}"
            )
        update = self.training and self.track_running_stats
        factor = 0.0
        if update:  # the counter advances after the kernel accepted every argument
            assert self.num_batches_tracked is not None
            batches = int(self.num_batches_tracked) + 1
            factor = 1.0 / batches if self.momentum is None else self.momentum
        y = _core.empty(x.shape, x.dtype)
        save_mean = np.empty(c, np.float64)
        save_invstd = np.empty(c, np.float64)
        use_running = update or not batch_stats
        _nn.batch_norm_forward(
            x,
            y,
            self.weight,
            self.bias,
            self.running_mean if use_running else None,
            self.running_var if use_running else None,
            save_mean,
            save_invstd,
            batch_stats,
            factor,
            self.eps,
        )
        if update:
            assert self.num_batches_tracked is not None
            self.num_batches_tracked[...] += 1  # in place: the live buffer
        self._cache = (x, save_mean, save_invstd, batch_stats)
        self._y = y
        return y

    def backward(self, grad_out: np.ndarray) -> np.ndarray:
        # The cache is (x, save_mean, save_invstd, batch_stats).
        return norm_backward(self, _nn.batch_norm_backward, grad_out, "BatchNorm1d")

    def extra_repr(self) -> str:
        return (
            f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, affine={self.affine}, "
            f"track_running_stats={self.track_running_stats}"
        )
