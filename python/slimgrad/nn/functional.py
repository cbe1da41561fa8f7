"""Stateless functions: softmax, log_softmax, cross_entropy, dropout, gelu."""

from __future__ import annotations

import numpy as np

from .. import _core
from ._module import FLOAT_DTYPES, as_readable

_nn = _core.nn
_UINT64 = 1 << 64


def _float_array(x: object, name: str) -> np.ndarray:
    # Either byte order: these inputs are only read (NumPy ufuncs, or a copy
    # to native C order by as_readable before a kernel).
    if not isinstance(x, np.ndarray) or x.dtype.newbyteorder("=") not in FLOAT_DTYPES:
        got = f"{x.dtype.name} array" if isinstance(x, np.ndarray) else type(x).__name__
        raise TypeError(f"{name}: expected a float32 or float64 ndarray, got {got}")
    return x


def check_seed(value: object, name: str) -> int:
    """An int in [0, 2**64) (the Philox key), else ``TypeError``/``ValueError`` naming it."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name}: expected an int, got {type(value).__name__}")
    if not 0 <= int(value) < _UINT64:
        raise ValueError(f"{name}: expected an int in [0, 2**64), got {value}")
    return int(value)


def check_probability(p: object) -> float:
    """Dropout's ``p`` as a float in [0, 1]; ``ValueError`` with torch's message otherwise."""
    if isinstance(p, bool) or not isinstance(p, (int, float, np.floating, np.integer)):
        raise TypeError(f"p: expected a float, got {type(p).__name__}")
    if not 0.0 <= float(p) <= 1.0:
        raise ValueError(f"dropout probability has to be between 0 and 1, but got {p}")
    return float(p)


def softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    """``exp(x) / sum(exp(x))`` along ``axis``, shifted by the max for stability.

    Float32 or float64 input of any shape; returns a new array of the same
    dtype. ``TypeError`` for other dtypes. Non-finite values as torch, with
    no NumPy warning: ``-inf`` gets probability 0; a slice holding NaN or
    ``+inf``, or only ``-inf``, is NaN.
    """
    _float_array(x, "x")
    with np.errstate(invalid="ignore"):  # inf - inf: NaN is the documented result
        e = np.exp(x - np.max(x, axis=axis, keepdims=True))
        return e / np.sum(e, axis=axis, keepdims=True)


def log_softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    """``x - logsumexp(x)`` along ``axis`` (max-shifted, no overflow for large logits).

    Float32 or float64 input; returns a new array of the same dtype.
    Non-finite values as :func:`softmax` (``-inf`` stays ``-inf``; NaN or
    ``+inf`` in a slice, or only ``-inf``, gives NaN), with no NumPy warning.
    """
    _float_array(x, "x")
    with np.errstate(invalid="ignore", divide="ignore"):  # documented NaN / -inf results
        shifted = x - np.max(x, axis=axis, keepdims=True)
        return shifted - np.log(np.sum(np.exp(shifted), axis=axis, keepdims=True))


def cross_entropy(
    logits: np.ndarray, labels: np.ndarray, label_smoothing: float = 0.0
) -> tuple[float, np.ndarray]:
    """Mean cross-entropy of ``logits`` (N, C) against integer ``labels`` (N,), and its gradient.

    With label smoothing ``e`` the target is ``(1 - e) * onehot + e / C``, as
    in ``torch.nn.functional.cross_entropy``. Returns ``(loss, grad_logits)``:
    the loss as a Python float and ``d loss / d logits`` (a new array, the
    logits' dtype), i.e. ``(softmax(logits) - target) / N``.

    Raises ``TypeError`` for non-float logits or non-integer labels,
    ``ValueError`` for wrong shapes, an empty batch, labels outside
    ``[0, C)`` or ``label_smoothing`` outside ``[0, 1]``.

    Non-finite logits never raise and emit no NumPy warning; the results
    are torch's: a ``-inf`` logit is a masked class (probability 0, gradient
    0 there) and the loss stays finite, unless it is a row's label or label
    smoothing gives it target mass (then the loss is ``+inf``, the gradient
    finite). A NaN or ``+inf`` logit, or a row of only ``-inf``, makes the
    loss NaN and that row's gradient NaN; other rows are unaffected.
    """
    _float_array(logits, "logits")
    if logits.ndim != 2:
        raise ValueError(f"logits: expected a 2-D (N, C) array, got shape {logits.shape}")
    n, c = logits.shape
    if n == 0 or c == 0:
        raise ValueError(
            f"logits: expected at least one row and one class, got shape {logits.shape}"
        )
    labels = np.asarray(labels)
    if labels.dtype.kind not in "iu":
        raise TypeError(f"labels: expected an integer array, got {labels.dtype.name}")
    if labels.shape != (n,):
        raise ValueError(f"labels: expected shape ({n},), got {labels.shape}")
    if labels.min() < 0 or labels.max() >= c:
        raise ValueError(
            f"labels: expected values in [0, {c}), got values in [{labels.min()}, {labels.max()}]"
        )
    if not 0.0 <= label_smoothing <= 1.0:
        raise ValueError(f"label_smoothing: expected a value in [0, 1], got {label_smoothing}")
    logp = log_softmax(logits)
    rows = np.arange(n)
    nll = -logp[rows, labels]
    loss = float(np.mean(nll, dtype=np.float64))
    target_rest = label_smoothing / c
    if label_smoothing:
        smooth = -np.mean(logp, axis=1, dtype=np.float64)
        loss = (1.0 - label_smoothing) * loss + label_smoothing * float(np.mean(smooth))
    grad = np.exp(logp)
    grad -= logits.dtype.type(target_rest)
    grad[rows, labels] -= logits.dtype.type(1.0 - label_smoothing)
    grad /= logits.dtype.type(n)
    return loss, grad


def dropout(
    x: np.ndarray, p: float, seed: int, stream: int = 0, out: np.ndarray | None = None
) -> np.ndarray:
    """Inverted dropout: ``x / (1 - p)`` where kept, 0 where dropped (probability ``p``).

    The mask of element ``i`` (flat, C order) is a pure function of
    ``(seed, stream, i)`` (Philox-4x32-10): the same for any thread count and
    ISA, so calling this again with the same ``seed`` and ``stream`` on the
    output gradient gives the backward pass. ``x``: float32 or float64;
    unless it is ``out`` (in place) it is only read, so a strided or
    byte-swapped ``x`` is copied once to a C-contiguous native array (zero
    copy when it already is one). ``out`` (optional, may be ``x`` for
    in-place) is written: C-contiguous, ``x``'s dtype and shape, no copy.
    ``p == 0`` copies, ``p == 1`` gives zeros. Dropped elements are +0 even
    for NaN or infinite input.

    Raises ``ValueError`` if ``p`` is outside [0, 1], ``TypeError``/
    ``ValueError`` (naming ``x`` or ``out``) for a wrong dtype, layout or shape.
    """
    p = check_probability(p)
    seed = check_seed(seed, "seed")
    stream = check_seed(stream, "stream")
    if out is not x:  # x only read: copied once if strided or byte-swapped
        x = as_readable(x)
    if out is None:
        _float_array(x, "x")
        out = _core.empty(x.shape, x.dtype)
    _nn.dropout(x, out, p, seed, stream)
    return out


def gelu(x: np.ndarray, approximate: str = "none", out: np.ndarray | None = None) -> np.ndarray:
    """GELU: ``x * Phi(x)`` (``approximate="none"``) or its tanh approximation.

    float32/float64 input; unless it is ``out`` (in place) it is only read,
    so a strided or byte-swapped ``x`` is copied once to a C-contiguous
    native array (zero copy when it already is one). ``out`` optional (may
    be ``x``), written: C-contiguous, ``x``'s dtype and shape, no copy.
    Matches ``torch.nn.functional.gelu``. ``ValueError`` for an unknown
    ``approximate``. Same result for any thread count; float64 results are
    the same on every ISA, float32 ones of different ISAs can differ in the
    last bit.
    """
    if out is not x:  # x only read: copied once if strided or byte-swapped
        x = as_readable(x)
    if out is None:
        _float_array(x, "x")
        out = _core.empty(x.shape, x.dtype)
    _nn.gelu_forward(x, out, approximate)
    return out
