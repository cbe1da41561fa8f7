"""The per-layer sensitivity table as a picture (matplotlib, imported lazily)."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence


def plot_sensitivity(
    drops: Mapping[str, Sequence[float]],
    labels: Sequence[str],
    path: str | os.PathLike[str],
    chosen: Mapping[str, int] | None = None,
) -> None:
    """Writes a PNG/SVG/PDF (by extension) of ``drops`` (layer -> quality drop per option).

    One line per option (e.g. "2 bit", "3 bit", ...) over the layers in order,
    on a log scale; ``chosen`` (layer -> option index) marks the allocator's
    pick. Raises ``ImportError`` naming the extra when matplotlib is missing.
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise ImportError(
            "the sensitivity plot needs matplotlib: pip install 'slimgrad[demo]'"
        ) from None
    names = list(drops)
    fig, ax = plt.subplots(figsize=(max(8.0, 0.28 * len(names)), 4.5))
    x = range(len(names))
    for k, label in enumerate(labels):
        ax.plot(x, [max(drops[n][k], 1e-7) for n in names], marker="o", ms=3, label=label)
    if chosen:
        ax.scatter(
            x,
            [max(drops[n][chosen[n]], 1e-7) for n in names],
            s=60,
            facecolors="none",
            edgecolors="black",
            label="chosen",
            zorder=3,
        )
    ax.set_yscale("log")
    ax.set_ylabel("1 - min cosine, this layer alone")
    ax.set_xticks(list(x))
    ax.set_xticklabels([n.replace("encoder.layer.", "L") for n in names], rotation=90, fontsize=7)
    ax.legend(fontsize=8)
    ax.set_title("Per-layer sensitivity")
    fig.tight_layout()
    fig.savefig(os.fspath(path), dpi=120)
    plt.close(fig)
