"""The demo report's "accuracy vs model size" panel: every stage identifiable, no label
over another label or over a point (the stages of the documented run, where equal sizes
and close accuracies made text labels collide)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

pytest.importorskip("matplotlib")
from slimgrad.demo import report_figure  # noqa: E402

# (stage, bytes, test accuracy) from docs/distill.md's table, seed 0.
STAGES = [
    ("teacher", 340008, 0.9759),
    ("student alone", 4840, 0.9019),
    ("student distilled", 4840, 0.9722),
    ("pruned 50%", 2620, 0.9685),
    ("pruned 2:4", 2620, 0.9481),
    ("int8 per-channel", 1392, 0.9667),
    ("int4 group-wise", 864, 0.9630),
]
MARKER_PX = 6  # half a marker (s=45 points^2) at dpi 110, rounded up


def _report(stages):
    h = {"loss": [1.0, 0.5], "val_accuracy": [0.5, 0.9], "lr": [1e-3] * 4}
    return {
        "config": {"seed": 0},
        "histories": {name: h for name, _, _ in stages[:3]},
        "stages": [{"stage": n, "bytes": b, "accuracy": a} for n, b, a in stages],
    }


@pytest.mark.parametrize(
    "stages",
    [STAGES, [(n, 4840 if i else 9000, 0.95 + 0.001 * i) for i, (n, _, _) in enumerate(STAGES)]],
    ids=["documented-run", "crowded"],
)
def test_size_panel_labels_do_not_overlap(stages):
    import matplotlib.pyplot as plt

    fig = report_figure(_report(stages))
    try:
        fig.canvas.draw()
        renderer = fig.canvas.get_renderer()
        ax = fig.axes[3]
        assert ax.get_title() == "test accuracy vs model size"
        boxes = [t.get_window_extent(renderer) for t in ax.texts if t.get_text()]
        legend = ax.get_legend()
        if legend is not None:
            boxes.append(legend.get_window_extent(renderer))
            names = [t.get_text().rsplit(" (", 1)[0] for t in legend.get_texts()]
        else:
            names = [t.get_text() for t in ax.texts]
        assert sorted(names) == sorted(n for n, _, _ in stages)  # every stage identified
        for a, b in itertools.combinations(boxes, 2):
            assert not a.overlaps(b), (a, b)
        points = ax.transData.transform([(b, 100 * acc) for _, b, acc in stages])
        for box in boxes:
            for x, y in points:
                inside = (box.x0 - MARKER_PX < x < box.x1 + MARKER_PX) and (
                    box.y0 - MARKER_PX < y < box.y1 + MARKER_PX
                )
                # A text label may touch its own point, never cover another one.
                assert not inside or legend is None, (box, (x, y))
        if legend is None:  # annotations: at most their own point each
            for box in boxes:
                hits = sum(
                    box.x0 - MARKER_PX < x < box.x1 + MARKER_PX
                    and box.y0 - MARKER_PX < y < box.y1 + MARKER_PX
                    for x, y in points
                )
                assert hits <= 1
        assert np.all(np.isfinite(points))
    finally:
        plt.close(fig)
