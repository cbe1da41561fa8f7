"""Distillation losses: the fused KD loss and the MSE feature hint (C++ kernels)."""

from __future__ import annotations

import numpy as np

from .. import _core
from ..nn._module import as_readable

_REDUCTIONS = ("batchmean", "mean", "sum")


def _as_labels(labels: object) -> object:
    # Labels and indices are read-only: an int64 C-contiguous copy of other
    # integer arrays (B or B x k elements) is harmless and saves users a cast.
    # Anything else goes to the binding as is, which names what is wrong.
    if isinstance(labels, np.ndarray) and labels.dtype.kind in "iu":
        return np.ascontiguousarray(labels, dtype=np.int64)
    return labels


def kd_loss(
    student_logits: np.ndarray,
    teacher_logits: np.ndarray,
    labels: np.ndarray | None = None,
    *,
    temperature: float = 2.0,
    alpha: float = 0.5,
    reduction: str = "batchmean",
    teacher_indices: np.ndarray | None = None,
    out: np.ndarray | None = None,
) -> tuple[float, np.ndarray]:
    """Knowledge-distillation loss and its gradient with respect to the student logits.

    ``loss = alpha * T**2 * KL(p_t || p_s) + (1 - alpha) * CE(student_logits, labels)``
    with ``p = softmax(logits / T)`` for the KL term and the cross-entropy at
    ``T = 1`` (Hinton et al., 2015). It equals, in torch,
    ``alpha * T**2 * kl_div(log_softmax(s / T), log_softmax(t / T), reduction,
    log_target=True) + (1 - alpha) * cross_entropy(s, labels)``, and the returned
    gradient is that expression's gradient with respect to ``s``.

    One fused, numerically stable pass per row (online log-sum-exp over chunks
    of the class axis) then one pass writing the gradient: nothing of size
    ``B x V`` is allocated besides the gradient. Rows run in parallel; the
    result is identical for any thread count.

    Parameters
    ----------
    student_logits : ndarray, float32 or float64, shape (B, V)
        Read only (unless passed as ``out``): any layout or byte order; a
        strided view or byte-swapped array is copied once, explicitly, to a
        C-contiguous native array (``np.ascontiguousarray``), one that
        already is C-contiguous is used in place (zero copy).
    teacher_logits : ndarray, same dtype
        Shape (B, V); or, with ``teacher_indices``, the teacher's top-k logits,
        shape (B, k) with ``1 <= k <= V``. Not read when ``alpha == 0``.
        Read only: copied like ``student_logits`` when strided.
    labels : ndarray of integers, shape (B,), or None
        Class indices in ``[0, V)``. Required when ``alpha < 1``, so also
        with the default ``alpha=0.5`` (the ``ValueError`` says: pass labels,
        or ``alpha=1.0`` for pure distillation). Integer arrays that are not
        int64 C-contiguous are copied to one (B elements).
    temperature : float
        ``T > 0``. Logits are scaled by ``1 / T`` (a multiplication, exact
        when T is a power of two).
    alpha : float
        Weight of the distillation term, in ``[0, 1]``; ``alpha == 0`` is plain
        cross-entropy, ``alpha == 1`` pure distillation (labels not needed).
    reduction : {"batchmean", "mean", "sum"}
        ``"batchmean"`` (default): both terms summed over the batch and
        divided by B (torch's ``kl_div(reduction="batchmean")`` and the mean
        cross-entropy: the true KL divergence per sample). ``"mean"``: torch's
        ``kl_div(reduction="mean")``, the KL term divided by ``B * V`` (every
        logit counted as a sample), the cross-entropy by B. ``"sum"``: both
        summed over the batch.
    teacher_indices : ndarray of integers, shape (B, k), or None
        Top-k teacher: the class index of each value in ``teacher_logits``,
        distinct within a row (int64; other integer arrays are copied). The
        teacher distribution is renormalised over the k given classes,
        ``p_t = softmax(values / T)`` on those classes and 0 elsewhere (the
        mass the teacher put outside its top k is dropped), so
        ``KL = sum_j p_t[j] * (log p_t[j] - log p_s[idx[j]])``.
    out : ndarray, optional
        Where to write the gradient, shape and dtype of ``student_logits``,
        C-contiguous and writable (written in place: never copied, a strided
        ``out`` raises ``TypeError``); may be ``student_logits`` itself
        (overwritten in place) but must not share memory with the other
        inputs. A new array when None.

    Returns
    -------
    (loss, grad) : (float, ndarray)
        The reduced loss (computed in float64 from per-row terms) and the
        gradient (``out`` if given). An empty batch gives loss 0.0 for "sum"
        and NaN for the means (0 / 0, as torch).

    Raises
    ------
    TypeError
        An array argument of the wrong dtype or not an ndarray; an ``out``
        that is not C-contiguous.
    ValueError
        Wrong shapes, labels / indices out of range, repeated top-k indices,
        ``labels`` missing while ``alpha < 1``, ``temperature <= 0``,
        ``alpha`` outside [0, 1], an unknown ``reduction``, a read-only or
        overlapping ``out``. Nothing is written when an exception is raised.

    Notes
    -----
    Non-finite logits never raise or crash; per row:

    - a teacher logit of ``-inf`` (a masked class, dense or top-k) gives
      ``p_t = 0`` there and the class contributes 0 to the KL term
      (``0 * log 0 = 0``): the loss stays finite and equals torch's
      ``T**2 * kl_div(log_softmax(s / T), softmax(t / T))``. This holds also
      where the student logit is ``-inf`` too (torch gives NaN there);
    - a student logit of ``-inf`` where the teacher has mass gives a loss of
      ``+inf`` (the true KL divergence) and a finite gradient; at the label
      the cross-entropy is ``+inf``;
    - a NaN or ``+inf`` logit, or a row whose student or teacher logits are
      all ``-inf`` (no softmax), gives a NaN loss and NaN gradient entries in
      that row; the other rows' gradients are unaffected.
    """
    if student_logits is not out:  # only read: zero copy unless strided / byte-swapped
        student_logits = as_readable(student_logits)
    loss, grad = _core.distill.kd_loss(
        student_logits,
        as_readable(teacher_logits),
        _as_labels(labels),
        float(temperature),
        float(alpha),
        str(reduction),
        _as_labels(teacher_indices),
        out,
    )
    return float(loss), grad


def feature_loss(
    student_feat: np.ndarray, teacher_feat: np.ndarray, *, out: np.ndarray | None = None
) -> tuple[float, np.ndarray]:
    """Mean squared error "hint" between features, and its gradient.

    ``loss = mean((student_feat - teacher_feat) ** 2)`` and
    ``grad = 2 * (student_feat - teacher_feat) / n`` with ``n`` the number of
    elements (torch's ``mse_loss(reduction="mean")``), in one fused pass.

    Parameters
    ----------
    student_feat, teacher_feat : ndarray, float32 or float64, same shape
        Any shape, layout and byte order. Read only (``student_feat`` may be
        passed as ``out``): a strided view or byte-swapped array is copied
        once, explicitly, to a C-contiguous native array
        (``np.ascontiguousarray``); a C-contiguous one is used in place.
    out : ndarray, optional
        Where to write the gradient; same shape and dtype, C-contiguous and
        writable (never copied: a strided ``out`` raises ``TypeError``);
        must not share memory with ``teacher_feat``.

    Returns
    -------
    (loss, grad) : (float, ndarray)
        The squared differences are summed in blocks of 8192 (T lanes) whose
        sums are added in float64 in order: identical for any thread count.
        An empty input gives NaN (the mean of nothing, as torch).

    Raises
    ------
    TypeError
        Wrong dtype, not an ndarray, or an ``out`` that is not C-contiguous.
    ValueError
        Shape mismatch, read-only or overlapping ``out``. Nothing is written.
    """
    if student_feat is not out:  # only read: zero copy unless strided / byte-swapped
        student_feat = as_readable(student_feat)
    loss, grad = _core.distill.mse_loss(student_feat, as_readable(teacher_feat), out)
    return float(loss), grad
