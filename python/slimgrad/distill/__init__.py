"""Knowledge distillation: fused KD loss, feature hints and a training workflow.

- :func:`kd_loss`: ``alpha * T^2 * KL(p_teacher || p_student) + (1 - alpha) * CE``
  and its gradient in one fused C++ pass per row (dense or top-k teacher);
- :func:`feature_loss`: MSE hint between intermediate features;
- :class:`Distiller`: trains a :mod:`slimgrad.nn` student against any teacher
  callable, with an optimizer, an optional scheduler and tqdm progress bars.

Usage::

    loss, grad = slimgrad.distill.kd_loss(student_logits, teacher_logits, labels,
                                          temperature=4.0, alpha=0.9)
    model.backward(grad)

The command ``slimgrad demo`` (:mod:`slimgrad.demo`) runs the whole
compression pipeline (teacher, distilled student, pruning, quantization).
"""

from __future__ import annotations

from ._distiller import Distiller, History, predict_logits
from ._losses import feature_loss, kd_loss

__all__ = ["Distiller", "History", "feature_loss", "kd_loss", "predict_logits"]
