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
   weights quantized, run with the fused quantized matmul.

Prints one table and writes ``report.json`` and ``report.png`` to ``--out``.
Everything is seeded (``--seed``): the same seed on the same machine gives
the same numbers, timings aside.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

STAGES = (
    "teacher",
    "student alone",
    "student distilled",
    "pruned 50%",
    "pruned 2:4",
    "int8 per-channel",
    "int4 group-wise",
)


@dataclass(frozen=True)
class Config:
    teacher_hidden: tuple[int, ...]
    student_hidden: int
    teacher_epochs: int
    alone_epochs: int
    student_epochs: int
    finetune_epochs: int
    batch_size: int
    temperature: float
    alpha: float
    timing_repeats: int


FULL = Config(
    teacher_hidden=(256, 256),
    student_hidden=16,
    teacher_epochs=60,
    alone_epochs=300,
    student_epochs=100,
    finetune_epochs=40,
    batch_size=64,
    temperature=2.0,
    alpha=1.0,
    timing_repeats=50,
)
QUICK = Config(
    teacher_hidden=(64,),
    student_hidden=16,
    teacher_epochs=3,
    alone_epochs=3,
    student_epochs=3,
    finetune_epochs=2,
    batch_size=128,
    temperature=2.0,
    alpha=1.0,
    timing_repeats=3,
)


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--out",
        default="slimgrad-demo",
        metavar="DIR",
        help="directory for report.json and report.png (default: ./slimgrad-demo)",
    )
    parser.add_argument(
        "--seed", type=int, default=0, help="seed of every random choice (default 0)"
    )
    parser.add_argument(
        "--labels",
        type=float,
        default=0.1,
        metavar="FRACTION",
        help="fraction of the training labels the student may use (default 0.1)",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="a reduced run (smaller teacher, a few epochs) for tests",
    )
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="threads for slimgrad and BLAS (default 1: the models are small, and "
        "more threads cost more in synchronisation than they save)",
    )


# ---------------------------------------------------------------- data
def load_data(seed: int, labels: float) -> tuple[np.ndarray, ...]:
    """Digits in [0, 1]: a stratified 70/30 train/test split and the student's labelled subset.

    Returns ``x_train, y_train, x_test, y_test, x_labelled, y_labelled``;
    the labelled subset is a stratified ``labels`` fraction of the training set.
    """
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype(np.float32)
    y = y.astype(np.int64)
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=0.3, random_state=seed, stratify=y
    )
    if labels < 1:
        x_lab, _, y_lab, _ = train_test_split(
            x_train, y_train, train_size=labels, random_state=seed, stratify=y_train
        )
    else:
        x_lab, y_lab = x_train, y_train
    return tuple(np.ascontiguousarray(a) for a in (x_train, y_train, x_test, y_test, x_lab, y_lab))


# -------------------------------------------------------------- models
def mlp(sizes: list[int], seed: int) -> Any:
    from .. import nn

    layers: list[Any] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(a, b, seed=seed + i))
        if i < len(sizes) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


def clone(model: Any, sizes: list[int]) -> Any:
    copy = mlp(sizes, seed=0)
    copy.load_state_dict({k: v.copy() for k, v in model.state_dict().items()})
    return copy


def weights(model: Any) -> dict[str, np.ndarray]:
    return {k: v for k, v in model.parameters().items() if k.endswith("weight")}


def param_count(model: Any) -> tuple[int, int]:
    params = model.parameters().values()
    return sum(p.size for p in params), sum(int(np.count_nonzero(p)) for p in params)


def train(
    model: Any,
    teacher: Any,
    data: tuple[np.ndarray, ...],
    epochs: int,
    cfg: Config,
    *,
    alpha: float,
    lr: float,
    weight_decay: float,
    seed: int,
    progress: bool,
    desc: str,
    pruning: dict | None = None,
) -> dict[str, list[float]]:
    """AdamW + WarmupCosine through a Distiller (alpha == 0: labels only); returns the history."""
    from .. import optim, prune, schedule
    from .distiller import Distiller

    x, y, x_test, y_test = data
    steps = epochs * math.ceil(len(x) / cfg.batch_size)
    opt = optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    sched = schedule.WarmupCosine(opt, warmup_steps=max(1, steps // 10), total_steps=steps)
    callback = None
    if pruning is not None:
        if pruning["method"] == "nm":
            pruner = prune.Pruner(weights(model), "nm", optimizer=opt)
        else:  # gradual: reach the target by 60 % of the steps, then fine-tune with fixed masks
            ramp = prune.PolynomialSchedule(
                pruning["sparsity"],
                begin_step=0,
                end_step=max(1, int(0.6 * steps)),
                frequency=max(1, steps // 30),
            )
            pruner = prune.Pruner(weights(model), "magnitude", schedule=ramp, optimizer=opt)
        pruner.step()  # masks at step 0 (2:4 at once, the ramp's first point)
        callback = pruner.step
    distiller = Distiller(
        teacher if alpha > 0 else None, model, opt, sched, temperature=cfg.temperature, alpha=alpha
    )
    history = distiller.fit(
        x,
        y,
        epochs,
        cfg.batch_size,
        validation=(x_test, y_test),
        progress=progress,
        seed=seed,
        step_callback=callback,
        desc=desc,
    )
    return history.as_dict()


# ---------------------------------------------------- quantized student
class QuantizedMLP:
    """Inference with quantized Linear weights (fused dequantizing matmul), float biases, ReLUs."""

    def __init__(self, model: Any, bits: int, granularity: str, group_size: int = 32) -> None:
        from .. import quant

        self.layers = []
        for layer in model._modules.values():
            if hasattr(layer, "weight"):
                w = np.ascontiguousarray(layer.weight, dtype=np.float32)
                gs = min(group_size, w.shape[1])
                qt = quant.quantize(w, bits, granularity=granularity, axis=0, group_size=gs)
                self.layers.append((qt, layer.bias.astype(np.float32)))

    def forward(self, x: np.ndarray) -> np.ndarray:
        from .. import quant

        for i, (qt, b) in enumerate(self.layers):
            x = quant.matmul(x, qt)
            x += b
            if i < len(self.layers) - 1:
                np.maximum(x, 0, out=x)
        return x

    def nbytes(self) -> int:
        return sum(qt.nbytes + b.nbytes for qt, b in self.layers)

    def parameters(self) -> tuple[int, int]:
        total = sum(qt.size + b.size for qt, b in self.layers)
        nonzero = sum(
            int(np.count_nonzero(qt.dequantize())) + int(np.count_nonzero(b))
            for qt, b in self.layers
        )
        return total, nonzero


# ---------------------------------------------------------- evaluation
def _accuracy(forward: Any, x: np.ndarray, y: np.ndarray) -> float:
    return float(np.mean(np.argmax(forward(x), axis=1) == y))


def _time_ms(forward: Any, x: np.ndarray, repeats: int) -> float:
    forward(x)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        forward(x)
        times.append(time.perf_counter() - start)
    return 1e3 * float(np.median(times))


def _sparse_bytes(model: Any, fmt: str) -> int:
    from .. import prune

    total = 0
    for name, p in model.parameters().items():
        if name.endswith("weight"):
            report = prune.storage_report(p)
            total += (
                min(v for k, v in report.items() if k != "dense") if fmt == "best" else report[fmt]
            )
        else:
            total += p.nbytes
    return total


def run(args: argparse.Namespace) -> int:
    """Run every stage, print the table, write report.json and report.png; returns 0."""
    from .. import num_threads
    from ..cli import UsageError

    try:  # the demo extra: one clear line rather than a traceback
        import matplotlib  # noqa: F401
        import sklearn  # noqa: F401
        from threadpoolctl import threadpool_limits
    except ImportError as e:
        raise UsageError(
            f"needs the demo extra ({e.name} is missing): pip install 'slimgrad[demo]'"
        ) from e

    if args.threads < 1:
        raise ValueError(f"--threads: expected an int >= 1, got {args.threads}")
    with threadpool_limits(limits=args.threads), num_threads(args.threads):
        return _run(args)


def _run(args: argparse.Namespace) -> int:
    from .distiller import predict_logits

    cfg = QUICK if args.quick else FULL
    progress = not args.no_progress
    seed = int(args.seed)
    os.makedirs(args.out, exist_ok=True)
    started = time.perf_counter()

    if not 0 < args.labels <= 1:
        raise ValueError(f"--labels: expected a fraction in (0, 1], got {args.labels}")
    x_train, y_train, x_test, y_test, x_lab, y_lab = load_data(seed, args.labels)
    everything = (x_train, y_train, x_test, y_test)
    labelled = (x_lab, y_lab, x_test, y_test)
    teacher_sizes = [64, *cfg.teacher_hidden, 10]
    student_sizes = [64, cfg.student_hidden, 10]
    histories: dict[str, dict[str, list[float]]] = {}
    common: dict[str, Any] = {"progress": progress, "seed": seed}

    # The teacher learns from every label. The student may use a fraction of
    # them: alone, that is all it has; distilled, it also learns from the
    # teacher's logits on every training image (alpha = 1: the transfer set
    # needs no labels; the labels only feed the accuracy shown while training).
    teacher = mlp(teacher_sizes, seed=seed + 100)
    histories["teacher"] = train(
        teacher,
        None,
        everything,
        cfg.teacher_epochs,
        cfg,
        alpha=0.0,
        lr=2e-3,
        weight_decay=1e-4,
        desc="teacher",
        **common,
    )
    teacher.eval()
    alone = mlp(student_sizes, seed=seed)
    histories["student alone"] = train(
        alone,
        None,
        labelled,
        cfg.alone_epochs,
        cfg,
        alpha=0.0,
        lr=3e-3,
        weight_decay=1e-4,
        desc="student alone",
        **common,
    )
    student = mlp(student_sizes, seed=seed)
    histories["student distilled"] = train(
        student,
        teacher,
        everything,
        cfg.student_epochs,
        cfg,
        alpha=cfg.alpha,
        lr=3e-3,
        weight_decay=1e-4,
        desc="student distilled",
        **common,
    )
    pruned = clone(student, student_sizes)
    histories["pruned 50%"] = train(
        pruned,
        teacher,
        everything,
        cfg.finetune_epochs,
        cfg,
        alpha=cfg.alpha,
        lr=1e-3,
        weight_decay=0.0,
        desc="prune 50%",
        pruning={"method": "magnitude", "sparsity": 0.5},
        **common,
    )
    pruned24 = clone(student, student_sizes)
    histories["pruned 2:4"] = train(
        pruned24,
        teacher,
        everything,
        cfg.finetune_epochs,
        cfg,
        alpha=cfg.alpha,
        lr=1e-3,
        weight_decay=0.0,
        desc="prune 2:4",
        pruning={"method": "nm"},
        **common,
    )
    int8 = QuantizedMLP(pruned, 8, "channel")
    int4 = QuantizedMLP(pruned, 4, "group", group_size=32)

    def dense_row(name: str, model: Any, nbytes: int, fmt: str) -> dict:
        total, nonzero = param_count(model)
        fwd = lambda x: predict_logits(model, x)  # noqa: E731
        return {
            "stage": name,
            "parameters": total,
            "nonzero": nonzero,
            "bytes": nbytes,
            "format": fmt,
            "accuracy": _accuracy(fwd, x_test, y_test),
            "inference_ms": _time_ms(fwd, x_test, cfg.timing_repeats),
        }

    def float_bytes(model: Any) -> int:
        return sum(p.nbytes for p in model.parameters().values())

    rows = [
        dense_row("teacher", teacher, float_bytes(teacher), "float32"),
        dense_row("student alone", alone, float_bytes(alone), "float32"),
        dense_row("student distilled", student, float_bytes(student), "float32"),
        dense_row(
            "pruned 50%", pruned, _sparse_bytes(pruned, "best"), "float32 sparse (smallest format)"
        ),
        dense_row("pruned 2:4", pruned24, _sparse_bytes(pruned24, "2:4"), "float32 2:4 compressed"),
    ]
    for name, qm, fmt in (
        ("int8 per-channel", int8, "int8 per channel, of pruned 50%"),
        ("int4 group-wise", int4, "int4 groups of 32, of pruned 50%"),
    ):
        total, nonzero = qm.parameters()
        rows.append(
            {
                "stage": name,
                "parameters": total,
                "nonzero": nonzero,
                "bytes": qm.nbytes(),
                "format": fmt,
                "accuracy": _accuracy(qm.forward, x_test, y_test),
                "inference_ms": _time_ms(qm.forward, x_test, cfg.timing_repeats),
            }
        )

    table = format_table(rows, len(x_test), len(x_train), len(x_lab))
    print(table)
    report = {
        "config": {
            **cfg.__dict__,
            "seed": seed,
            "quick": bool(args.quick),
            "threads": args.threads,
            "labels": args.labels,
        },
        "data": {
            "train": int(len(x_train)),
            "student_labels": int(len(x_lab)),
            "test": int(len(x_test)),
        },
        "stages": rows,
        "histories": histories,
        "seconds": time.perf_counter() - started,
    }
    with open(os.path.join(args.out, "report.json"), "w") as f:
        json.dump(report, f, indent=2)
    plot_report(report, os.path.join(args.out, "report.png"))
    print(
        f"\nwrote {os.path.join(args.out, 'report.json')} and report.png "
        f"({report['seconds']:.0f} s)"
    )
    return 0


def format_table(rows: list[dict], n_test: int, n_train: int, n_labels: int) -> str:
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


# One marker per stage in the size panel, so the legend identifies the points.
_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*", "h", "<", ">")


def report_figure(report: dict) -> Any:
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


def plot_report(report: dict, path: str) -> None:
    """Write :func:`report_figure` to ``path`` (PNG)."""
    import matplotlib.pyplot as plt

    fig = report_figure(report)
    fig.savefig(path, dpi=110)
    plt.close(fig)
