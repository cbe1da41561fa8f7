"""Plot schedules to a PNG without touching anyone's live optimizer."""

from __future__ import annotations

import copy
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

__all__ = ["plot", "simulate"]

Factory = Callable[[Any], Any]
Schedules = Mapping[str, Any] | Sequence[Any] | Any


class _ScratchOptimizer:
    """A throwaway optimizer: one group with every key a scheduler may schedule."""

    def __init__(self, lr: float) -> None:
        self.param_groups = [
            {"lr": lr, "momentum": 0.9, "betas": (0.9, 0.999), "weight_decay": 0.0}
        ]


def _label_items(schedules: Schedules) -> list[tuple[str, Any]]:
    if isinstance(schedules, Mapping):
        return list(schedules.items())
    if not isinstance(schedules, (list, tuple)):
        schedules = [schedules]
    items = []
    for item in schedules:
        name = (
            type(item).__name__
            if hasattr(item, "optimizer")
            else getattr(item, "__name__", type(item).__name__)
        )
        items.append((name, item))
    return items


def simulate(schedule: Any, steps: int, lr: float = 1.0) -> list[float]:
    """Values of a schedule over ``steps`` steps, without side effects.

    Parameters
    ----------
    schedule : scheduler or callable
        A factory ``optimizer -> scheduler`` (called with a scratch optimizer
        whose single group has ``lr``, ``momentum=0.9``, ``betas=(0.9, 0.999)``,
        ``weight_decay=0.0``), or a scheduler instance, which is deep-copied
        together with its optimizer so the original is not advanced.
    steps : int
        Number of values: the value at construction and after each of
        ``steps - 1`` calls of ``step()``.
    lr : float, default 1.0
        Learning rate of the scratch optimizer given to a factory.

    Returns
    -------
    list of float
        The first group's scheduled value at steps ``0 .. steps - 1``.

    Raises
    ------
    ValueError
        If ``steps`` is not a positive integer.
    TypeError
        For a ReduceLROnPlateau (it needs metrics to step).
    """
    if not isinstance(steps, int) or steps <= 0:
        raise ValueError(f"Expected positive integer steps, but got {steps}")
    if hasattr(schedule, "optimizer"):
        sched = copy.deepcopy(schedule)  # copies its optimizer too: the original stays put
    else:
        sched = schedule(_ScratchOptimizer(lr))
    from ._plateau import ReduceLROnPlateau

    if isinstance(sched, ReduceLROnPlateau):
        raise TypeError("ReduceLROnPlateau needs a metric to step and cannot be simulated")
    values = [float(sched.get_last_lr()[0])]
    for _ in range(steps - 1):
        sched.step()
        values.append(float(sched.get_last_lr()[0]))
    return values


def plot(
    schedules: Schedules,
    steps: int,
    path: str | os.PathLike[str],
    *,
    lr: float = 1.0,
    title: str | None = None,
    logy: bool = False,
) -> str:
    """Write a PNG plotting one or more schedules over ``steps`` steps.

    Nothing live is stepped: factories run on a scratch optimizer and scheduler
    instances are simulated on deep copies (see :func:`simulate`).

    Parameters
    ----------
    schedules : mapping, sequence, scheduler or callable
        ``{label: factory_or_scheduler}``; or a sequence / single item, labelled
        by class or function name. A factory is ``optimizer -> scheduler``, e.g.
        ``lambda opt: CosineAnnealingLR(opt, T_max=100)``.
    steps : int
        Number of steps plotted.
    path : str or path-like
        Output PNG file.
    lr : float, default 1.0
        Learning rate of the scratch optimizer (the curves' peak for most schedules).
    title : str, optional
        Figure title.
    logy : bool, default False
        Logarithmic y axis.

    Returns
    -------
    str
        ``path`` as a string.

    Raises
    ------
    ImportError
        If matplotlib is not installed (``pip install slimgrad[demo]``).
    ValueError
        If ``steps`` is not a positive integer.
    """
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as exc:  # optional dependency
        raise ImportError(
            "slimgrad.schedule.plot needs matplotlib: pip install slimgrad[demo]"
        ) from exc
    curves = [(label, simulate(s, steps, lr)) for label, s in _label_items(schedules)]
    # Figure + Agg canvas directly: no pyplot, so no global backend or state changes.
    fig = Figure(figsize=(8, 4.5), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for label, values in curves:
        ax.plot(range(steps), values, label=label, linewidth=1.6)
    ax.set_xlabel("step")
    ax.set_ylabel("value")
    if logy:
        ax.set_yscale("log")
    if title:
        ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(os.fspath(path), format="png")
    return os.fspath(path)
