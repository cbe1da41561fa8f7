"""The demo pipeline: data, models, the training stages, the report's rows.

See :mod:`slimgrad.demo` for what each stage does.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from ._evaluate import (
    QuantizedMLP,
    float_bytes,
    param_count,
    scale_rows,
    sparse_bytes,
    stage_row,
)
from ._report import format_scale, format_table, plot_report

__all__ = ["FULL", "QUICK", "STAGES", "Config", "configure", "run"]

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
    """Sizes, epochs and distillation settings of a run; the defaults are the full demo."""

    teacher_hidden: tuple[int, ...] = (256, 256)
    student_hidden: int = 16
    teacher_epochs: int = 60
    alone_epochs: int = 300
    student_epochs: int = 100
    finetune_epochs: int = 40
    batch_size: int = 64
    temperature: float = 2.0
    alpha: float = 1.0
    timing_repeats: int = 50


FULL = Config()
# A reduced run (smaller teacher, a few epochs) for tests.
QUICK = Config(teacher_hidden=(64,), teacher_epochs=3, alone_epochs=3, student_epochs=3,
               finetune_epochs=2, batch_size=128, timing_repeats=3)  # fmt: skip


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
    from ..distill import Distiller

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


def run(args: argparse.Namespace) -> int:
    """Run every stage, print the table, write report.json and report.png; returns 0."""
    from .._runtime import num_threads
    from ..errors import UsageError

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


@dataclass(frozen=True)
class _Stage:
    """A training stage: its model, data, optimizer settings and pruning (see the docstring)."""

    name: str
    start: Callable[[], Any]  # the model to train, built when the stage starts
    data: tuple[np.ndarray, ...]
    epochs: int
    lr: float
    weight_decay: float
    distilled: bool = True  # trained on the teacher's logits (else on labels alone)
    pruning: dict[str, Any] | None = None


def _run(args: argparse.Namespace) -> int:
    cfg = QUICK if args.quick else FULL
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

    # The teacher learns from every label. The student may use a fraction of
    # them: alone, that is all it has; distilled, it also learns from the
    # teacher's logits on every training image (alpha = 1: the transfer set
    # needs no labels; the labels only feed the accuracy shown while training).
    # The pruned students start from the distilled one.
    models: dict[str, Any] = {}
    distilled = lambda: clone(models["student distilled"], student_sizes)  # noqa: E731
    stages = [
        _Stage("teacher", lambda: mlp(teacher_sizes, seed=seed + 100), everything,
               cfg.teacher_epochs, 2e-3, 1e-4, distilled=False),
        _Stage("student alone", lambda: mlp(student_sizes, seed=seed), labelled,
               cfg.alone_epochs, 3e-3, 1e-4, distilled=False),
        _Stage("student distilled", lambda: mlp(student_sizes, seed=seed), everything,
               cfg.student_epochs, 3e-3, 1e-4),
        _Stage("pruned 50%", distilled, everything, cfg.finetune_epochs, 1e-3, 0.0,
               pruning={"method": "magnitude", "sparsity": 0.5}),
        _Stage("pruned 2:4", distilled, everything, cfg.finetune_epochs, 1e-3, 0.0,
               pruning={"method": "nm"}),
    ]  # fmt: skip
    histories: dict[str, dict[str, list[float]]] = {}
    for st in stages:
        model = models[st.name] = st.start()
        histories[st.name] = train(
            model,
            models["teacher"] if st.distilled else None,
            st.data,
            st.epochs,
            cfg,
            alpha=cfg.alpha if st.distilled else 0.0,
            lr=st.lr,
            weight_decay=st.weight_decay,
            seed=seed,
            progress=not args.no_progress,
            desc=st.name,
            pruning=st.pruning,
        )
        if st.name == "teacher":
            model.eval()

    rows = _rows(models, cfg, (x_test, y_test))
    table = format_table(rows, len(x_test), len(x_train), len(x_lab))
    print(table)
    at_scale = scale_rows(max(5, cfg.timing_repeats), seed)
    print()
    print(format_scale(at_scale))
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
        "inference_at_scale": at_scale,
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


def _rows(
    models: dict[str, Any], cfg: Config, test: tuple[np.ndarray, np.ndarray]
) -> list[dict[str, Any]]:
    """The report's rows: the trained stages, then the 50 %-pruned student quantized."""
    from ..distill import predict_logits

    def row(name: str, forward: Any, counts: tuple[int, int], nbytes: int, fmt: str) -> Any:
        return stage_row(name, forward, counts, nbytes, fmt, test, cfg.timing_repeats)

    rows = []
    for name, nbytes, fmt in (
        ("teacher", float_bytes, "float32"),
        ("student alone", float_bytes, "float32"),
        ("student distilled", float_bytes, "float32"),
        ("pruned 50%", lambda m: sparse_bytes(m, "best"), "float32 sparse (smallest format)"),
        ("pruned 2:4", lambda m: sparse_bytes(m, "2:4"), "float32 2:4 compressed"),
    ):
        model = models[name]
        forward = lambda x, model=model: predict_logits(model, x)  # noqa: E731
        rows.append(row(name, forward, param_count(model), nbytes(model), fmt))
    for name, qm, fmt in (
        ("int8 per-channel", QuantizedMLP(models["pruned 50%"], 8, "channel"),
         "int8 per channel, int8 activations, of pruned 50%"),
        ("int4 group-wise", QuantizedMLP(models["pruned 50%"], 4, "group", group_size=32),
         "int4 groups of 32, int8 activations, of pruned 50%"),
    ):  # fmt: skip
        rows.append(row(name, qm.forward, qm.parameters(), qm.nbytes(), fmt))
    return rows
