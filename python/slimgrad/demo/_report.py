"""The demo's report: the printed table and the figure (report.png)."""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["format_scale", "format_table", "plot_report", "report_figure"]


def format_table(rows: list[dict[str, Any]], n_test: int, n_train: int, n_labels: int) -> str:
    """The stages as a text table, with a note on the data each stage saw."""
    header = (
        f"{'stage':<19} {'params':>8} {'nonzero':>8} {'bytes':>9} {'test acc':>9} {'infer ms':>9}"
    )
    lines = [header, "-" * len(header)]
    for r in rows:
        lines.append(
            f"{r['stage']:<19} {r['parameters']:>8} {r['nonzero']:>8} {r['bytes']:>9} "
            f"{100 * r['accuracy']:>8.2f}% {r['inference_ms']:>9.3f}"
        )
    lines.append(
        f"(teacher: {n_train} labelled images; student: {n_labels} labels, plus the teacher's "
        f"logits on all {n_train} images when distilled;\n test set: {n_test} images; inference: "
        f"the whole test set, median)"
    )
    return "\n".join(lines)


def format_scale(rows: list[dict[str, Any]]) -> str:
    """The "inference at scale" table (:func:`slimgrad.demo._evaluate.scale_rows`)."""
    lines = [
        "inference at MiniLM's FFN size (384-1536-384, random weights pruned 2:4; CSR: pruned",
        "90 %), where a call's fixed cost no longer hides the kernels; 2:4 and CSR run sparse",
        "where prefer_sparse expects a gain for this shape, batch and thread count",
        "(docs/sparse.md), else dense",
        f"{'batch':>5} {'format':<17} {'ms':>9} {'vs float32':>10}",
    ]
    for r in rows:
        lines.append(f"{r['batch']:>5} {r['format']:<17} {r['ms']:>9.3f} {r['speedup']:>9.2f}x")
    return "\n".join(lines)


# One marker per stage in the size panel, so the legend identifies the points.
_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*", "h", "<", ">")


def report_figure(report: dict[str, Any]) -> Any:
    """The report's matplotlib figure (Agg backend): training curves, learning-rate
    schedules and accuracy vs size. The size panel identifies stages by marker and
    colour in a legend placed where it covers no point (``loc="best"``), never by text
    next to the points: stages of equal size and close accuracy would overlap."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(12, 8.5))
    (ax_loss, ax_acc), (ax_lr, ax_size) = axes
    for name, h in report["histories"].items():
        # Epochs differ in length between stages (labelled subset vs all
        # images): plot against optimizer steps, each point at an epoch's end.
        per_epoch = len(h["lr"]) // max(1, len(h["loss"]))
        steps = per_epoch * np.arange(1, len(h["loss"]) + 1)
        ax_loss.plot(steps, h["loss"], label=name)
        ax_acc.plot(steps, [100 * a for a in h["val_accuracy"]], label=name)
        ax_lr.plot(np.arange(len(h["lr"])), h["lr"], label=name)
    ax_loss.set(
        title="training loss per epoch (KD objective, or cross-entropy alone)",
        xlabel="optimizer step",
        yscale="log",
    )
    ax_acc.set(title="test accuracy per epoch", xlabel="optimizer step", ylabel="%")
    ax_lr.set(title="learning rate (AdamW + WarmupCosine)", xlabel="optimizer step", ylabel="lr")
    for ax in (ax_loss, ax_acc, ax_lr):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    for i, r in enumerate(report["stages"]):
        acc = 100 * r["accuracy"]
        ax_size.scatter(
            r["bytes"],
            acc,
            s=45,
            marker=_MARKERS[i % len(_MARKERS)],
            label=f"{r['stage']} ({acc:.1f}%, {r['bytes']:,} B)",
            zorder=3,
        )
    ax_size.set(
        title="test accuracy vs model size", xlabel="bytes (log scale)", ylabel="%", xscale="log"
    )
    ax_size.grid(alpha=0.3)
    ax_size.legend(fontsize=8, loc="best", framealpha=0.9)
    fig.suptitle(f"slimgrad demo on digits (seed {report['config']['seed']})")
    fig.tight_layout()
    return fig


def plot_report(report: dict[str, Any], path: str) -> None:
    """Write :func:`report_figure` to ``path`` (PNG)."""
    import matplotlib.pyplot as plt

    fig = report_figure(report)
    fig.savefig(path, dpi=110)
    plt.close(fig)
