"""Compress an MLP on scikit-learn's digits: teacher, distillation, pruning, quantization.

Stages (each evaluated on the same held-out test set):

1. ``teacher``: an MLP trained on every training label with AdamW and a
   warmup-cosine schedule;
2. ``student alone``: a model 70 times smaller, trained on the labels it is
   given: a stratified fraction of the training set (``--labels``, 10 %);
3. ``student distilled``: the same student (same initialization, optimizer
   and schedule) trained with :func:`~slimgrad.distill.kd_loss` on the
   teacher's logits for every training image (a transfer set: it needs no
   labels, ``alpha = 1``). This is distillation's usual setting: a teacher
   trained on much data, a student taught through it;
4. ``pruned 50%`` / ``pruned 2:4``: the distilled student pruned gradually
   (Zhu & Gupta schedule; 2:4 at once) while fine-tuning with the teacher;
5. ``int8 per-channel`` / ``int4 group-wise``: the 50 %-pruned student's
   weights quantized and prepacked, run with int8 activations (W8A8 / W4A8,
   :func:`slimgrad.quant.prepack`).

A second table times an MLP of all-MiniLM-L6-v2's feed-forward shape
(384-1536-384) dense, int8, int4 and 2:4 at batches 1, 8 and 64: in the
student (64-16-10) a call's fixed cost is a large part of the time, that
table shows the kernels at a size where they decide it.

Prints one table and writes ``report.json`` and ``report.png`` to ``--out``.
Everything is seeded (``--seed``): the same seed on the same machine gives
the same numbers, timings aside.
"""

from __future__ import annotations

from ._evaluate import QuantizedMLP
from ._pipeline import FULL, QUICK, STAGES, Config, configure, run
from ._report import format_table, plot_report, report_figure

__all__ = [
    "FULL",
    "QUICK",
    "STAGES",
    "Config",
    "QuantizedMLP",
    "configure",
    "format_table",
    "plot_report",
    "report_figure",
    "run",
]
