"""Pruning with calibration data: Wanda (Sun et al. 2023) and SparseGPT
(Frantar & Alistarh 2023).

Magnitude pruning ranks ``|w|`` alone. Wanda ranks ``|w_ij| * ||x_j||``: a
small weight on a large input matters as much as a large weight on a small
one; it needs only per-input-channel activation norms and keeps the other
weights as they are. SparseGPT ranks by the Optimal Brain Surgeon saliency
``w^2 / [H^-1]_jj^2`` and also *updates* the weights that stay, moving each
pruned weight's contribution onto the columns not yet processed (the C++ core
shares GPTQ's Cholesky and lazy-batch machinery: ``cpp/src/gptq.cpp``).
"""

from __future__ import annotations

import numpy as np

from .. import _core
from .._second_order import (
    check_channel_stats,
    check_int,
    check_layer,
    check_real,
    describe,
    hessian_factor,
    is_float,
)
from ._masks import _check_fraction, magnitude_mask, nm_mask


def _pattern(sparsity: float | None, n: int | None, m: int | None) -> tuple[float, int, int]:
    """``(sparsity, n, m)`` from exactly one of sparsity or (n, m); ``m == 0`` if unstructured."""
    if sparsity is not None and (n is not None or m is not None):
        raise ValueError("sparsity, n, m: give either sparsity or n and m, not both")
    if sparsity is not None:
        return _check_fraction(sparsity, "sparsity"), 0, 0
    if n is None or m is None:
        raise ValueError("sparsity, n, m: give sparsity, or both n and m (keep n of every m)")
    n, m = check_int(n, "n", 0), check_int(m, "m", 1)
    if n > m:
        raise ValueError(f"n, m: expected 0 <= n <= m, got n={n}, m={m}")
    return 0.0, n, m


def wanda_mask(
    w: np.ndarray,
    act_norms: np.ndarray,
    sparsity: float | None = None,
    *,
    n: int | None = None,
    m: int | None = None,
) -> np.ndarray:
    """Wanda mask: prune the smallest ``|w_ij| * act_norms[j]`` of each output row.

    Parameters
    ----------
    w : ndarray, shape (out, in)
        Float weight (only read).
    act_norms : ndarray, shape (in,)
        L2 norm of each input channel over the calibration tokens (finite,
        ``>= 0``).
    sparsity : float, optional
        Fraction pruned in every row: ``round(sparsity * in)`` per row, the
        rule and tie order of :func:`magnitude_mask` applied to the row's
        scores. Or give ``n`` and ``m``:
    n, m : int, keyword-only
        Keep ``n`` of every ``m`` consecutive inputs of a row (:func:`nm_mask`
        on the scores).

    Returns
    -------
    ndarray of bool, shape ``w.shape`` (``True`` = kept). With all norms
    equal, the mask is magnitude pruning per row.

    Raises
    ------
    TypeError, ValueError
        Non-float arrays, shapes, negative or non-finite norms, NaN weights,
        a bad pattern.
    """
    if not isinstance(w, np.ndarray) or not is_float(w.dtype) or w.ndim != 2:
        raise TypeError(f"w: expected a 2-d float ndarray (out, in), got {describe(w)}")
    norms = check_channel_stats(
        act_norms, "act_norms", "||x_j|| per input channel", w.shape[1], np.float32
    )
    s, n, m = _pattern(sparsity, n, m)
    score = np.abs(w.astype(np.float32)) * norms
    if m:
        return nm_mask(score, n, m, axis=1)
    mask = _core.empty(w.shape, bool)
    for r in range(w.shape[0]):
        mask[r] = magnitude_mask(score[r], s)
    return mask


def sparsegpt(
    w: np.ndarray,
    H: np.ndarray,
    sparsity: float | None = None,
    *,
    n: int | None = None,
    m: int | None = None,
    damp: float = 0.01,
    block_size: int = 128,
) -> tuple[np.ndarray, np.ndarray]:
    """SparseGPT: prune a Linear weight and update the weights that stay.

    Parameters
    ----------
    w : ndarray, shape (out, in)
        Float weight (only read; converted to float32).
    H : ndarray, shape (in, in)
        ``X^T X`` of the layer's inputs (symmetric; converted to float64).
    sparsity : float, optional
        Unstructured: in every block of ``block_size`` columns each row prunes
        ``round(sparsity * block)`` weights with the smallest saliency
        ``w^2 / [H^-1]_jj^2`` (the paper ranks a block over all rows at once;
        per row keeps every output equally sparse and rows independent). Or:
    n, m : int, keyword-only
        Keep ``n`` of every ``m`` consecutive inputs of a row; each group is
        chosen from the weights as updated so far. ``m`` must divide the
        number of inputs and ``block_size``.
    damp : float
        ``H + damp * mean(diag H) * I`` before inverting.
    block_size : int
        Columns per lazy batch (and per unstructured selection).

    Returns
    -------
    (weights, mask)
        float32 weights of ``w``'s shape (pruned entries exactly 0, the others
        updated) and the bool mask (``True`` = kept). Ties prune the lower
        column first. Identical for every thread count.

    Raises
    ------
    TypeError, ValueError
        As :func:`slimgrad.quant.gptq`, plus a bad pattern.
    """
    w32, h64 = check_layer(w, H)
    s, n, m = _pattern(sparsity, n, m)
    damp = check_real(damp, "damp", 0.0)
    block_size = check_int(block_size, "block_size", 1)
    if m and (w32.shape[1] % m or block_size % m):
        raise ValueError(
            f"m: must divide the number of inputs ({w32.shape[1]}) and "
            f"block_size ({block_size}), got {m}"
        )
    out = np.zeros(w32.shape, np.float32)
    keep = np.ones(w32.shape, dtype=bool)
    if w32.size:
        order, dead, S, _ = hessian_factor(h64, False, damp)
        _core.gptq.prune(w32, order, dead, S, s, n, m, block_size, out, keep)
    return out, keep
