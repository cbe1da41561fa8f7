"""AWQ (Lin et al. 2023): activation-aware scaling and clipping before quantization.

A few input channels carry much larger activations than the rest; their
weights matter most for the layer's output. AWQ multiplies those weight
columns by a per-channel scale ``s`` before quantizing (so they get
relatively finer steps) and divides the layer's input by ``s`` (folded into
the previous operation: a LayerNorm's weight and bias, or the previous
Linear's output rows). The scale is ``mean|x|^alpha``, ``alpha`` searched on a
grid to minimize the layer's output error. Then each group's range is
clipped where that lowers the output error further.

The output error of a weight change ``D`` over the calibration tokens is
``sum(X D^T)^2 = trace(D H D^T)`` with ``H = X^T X``, so both searches run on
the Hessian the calibration collected (no second pass over the data);
without ``H`` the diagonal ``mean|x|^2`` stands in for it (cross-channel
terms dropped).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .._second_order import check_channel_stats, check_int, check_layer, output_error
from ._tensor import quantize


def _inputs(
    w: object, act_mean: object, H: object | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    cols = w.shape[-1] if isinstance(w, np.ndarray) else 0
    mean = check_channel_stats(act_mean, "act_mean", "mean |x| per input channel", cols)
    w32, h = check_layer(w, H if H is not None else np.diag(np.square(mean)))
    return w32, mean, h


def _fake(w: np.ndarray, bits: int, group_size: int, symmetric: bool) -> np.ndarray:
    return quantize(
        w, bits, symmetric=symmetric, granularity="group", group_size=group_size
    ).dequantize()


def awq_scales(
    w: np.ndarray,
    act_mean: np.ndarray,
    bits: int = 4,
    group_size: int = 128,
    *,
    H: np.ndarray | None = None,
    symmetric: bool = False,
    n_grid: int = 20,
) -> np.ndarray:
    """Per-input-channel AWQ scales ``s`` (shape ``(in,)``, float32).

    Use: quantize ``w * s`` (columns scaled) and divide the layer's input by
    ``s``, i.e. fold ``1 / s`` into the operation before the layer.

    Parameters
    ----------
    w : ndarray, shape (out, in)
        Float weight (only read).
    act_mean : ndarray, shape (in,)
        Mean ``|x|`` of each input channel over the calibration tokens.
    bits, group_size, symmetric
        The quantization the scales are searched for (group-wise
        round-to-nearest, as :func:`slimgrad.quant.quantize`).
    H : ndarray, shape (in, in), optional
        ``X^T X`` of the inputs: the search minimizes the exact output error.
        Without it, ``diag(act_mean^2)`` approximates it.
    n_grid : int
        ``alpha`` in ``0, 1/n, ..., (n-1)/n``; ``s = mean|x|^alpha`` normalized
        so ``max(s) * min(s) = 1``. ``alpha = 0`` (no scaling) is a candidate,
        so the result never does worse than plain quantization on the
        calibration data.

    Raises
    ------
    TypeError, ValueError
        Non-float arrays, shapes, non-finite or negative statistics.
    """
    w32, mean, h = _inputs(w, act_mean, H)
    bits, group_size = check_int(bits, "bits", 2), check_int(group_size, "group_size", 1)
    n_grid = check_int(n_grid, "n_grid", 1)
    base = np.maximum(mean, 1e-4)
    scales = [np.ones(w32.shape[1])]  # alpha = 0: no scaling
    for k in range(1, n_grid):
        s = base ** (k / n_grid)
        scales.append(s / np.sqrt(s.max() * s.min()))

    def w_hat(s: np.ndarray) -> np.ndarray:
        s32 = s.astype(np.float32)
        return _fake(w32 * s32, bits, group_size, symmetric) / s32

    errors = _output_errors(w32, w_hat, scales, h, diagonal=H is None)
    return scales[int(np.argmin(errors))].astype(np.float32)  # ties: the smaller alpha


def _output_errors(
    w32: np.ndarray, w_hat: Any, candidates: list[np.ndarray], h: np.ndarray, diagonal: bool
) -> np.ndarray:
    """``trace(D H D^T)`` for ``D = w_hat(c) - w`` of every candidate ``c``.

    With ``H``: :func:`output_error` (``<H, D^T D>`` on the calibration
    Hessian kernel's tiles). With only the diagonal of ``H`` (no Hessian given) the
    sum is elementwise, in float64.
    """
    errors = np.empty(len(candidates))
    if diagonal:
        d2 = np.diag(h)
        for k, c in enumerate(candidates):
            d = w_hat(c).astype(np.float64) - w32
            errors[k] = float(np.einsum("ij,ij,j->", d, d, d2))
        return errors
    for k, c in enumerate(candidates):
        errors[k] = output_error(np.subtract(w_hat(c), w32, dtype=np.float32), h)
    return errors


def awq_clip(
    w: np.ndarray,
    H: np.ndarray,
    bits: int = 4,
    group_size: int = 128,
    *,
    symmetric: bool = False,
    n_grid: int = 20,
    max_shrink: float = 0.5,
) -> np.ndarray:
    """``w`` with each (row, group) clipped to the range that minimizes its output error.

    For each group of ``group_size`` inputs of each row, the range
    ``[min, max]`` shrinks by ratios ``1, 1 - 1/n_grid, ...`` down to
    ``1 - max_shrink``; the ratio with the smallest output error
    ``d^T H_gg d`` (``H_gg`` the group's block of ``X^T X``) wins, ties to the
    wider range. Returns a new float32 array whose values lie in the chosen
    ranges: quantizing it with min/max scales (``quantize`` or ``gptq``)
    gives the clipped quantization.
    """
    w32, h = check_layer(w, H)
    bits, group_size = check_int(bits, "bits", 2), check_int(group_size, "group_size", 1)
    n_grid = check_int(n_grid, "n_grid", 1)
    rows, cols = w32.shape
    starts = range(0, cols, group_size)
    # Every group at once: one quantize call per ratio (groups are independent),
    # the last group padded with zero weights and zero Hessian (no error).
    padded = -(-cols // group_size) * group_size
    wp = np.zeros((rows, padded), np.float32)
    wp[:, :cols] = w32
    hb = np.zeros((len(starts), group_size, group_size))
    for g, g0 in enumerate(starts):
        part = h[g0 : g0 + group_size, g0 : g0 + group_size]
        hb[g, : part.shape[0], : part.shape[1]] = part
    groups = wp.reshape(rows, -1, group_size)
    lo, hi = groups.min(axis=2, keepdims=True), groups.max(axis=2, keepdims=True)
    if cols % group_size:  # the padding's zeros must not widen the last group's range
        last = w32[:, starts[-1] :]
        lo[:, -1, 0], hi[:, -1, 0] = last.min(axis=1), last.max(axis=1)
    if symmetric:
        hi = np.maximum(-lo, hi)
        lo = -hi
    best = groups.copy()
    best_err = np.full(groups.shape[:2], np.inf)
    for k in range(max(1, int(max_shrink * n_grid))):
        ratio = np.float32(1.0 - k / n_grid)
        clipped = np.clip(groups, lo * ratio, hi * ratio)
        flat = clipped.reshape(rows, padded)[:, :cols]
        d = np.zeros((rows, padded))
        d[:, :cols] = _fake(np.ascontiguousarray(flat), bits, group_size, symmetric) - w32
        dg = d.reshape(rows, -1, group_size).transpose(1, 0, 2)  # (groups, rows, size)
        err = np.einsum("grj,grj->rg", dg @ hb, dg)  # d^T H_gg d per row and group
        better = err < best_err
        best_err = np.where(better, err, best_err)
        best[better] = clipped[better]
    out = np.ascontiguousarray(best.reshape(rows, padded)[:, :cols])
    return out
