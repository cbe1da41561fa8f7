"""The demo's "inference at scale" table: dense, int8, int4, 2:4 and CSR variants of one MLP."""

from __future__ import annotations

from slimgrad.demo._evaluate import SCALE_BATCHES, scale_rows
from slimgrad.demo._report import format_scale


def test_scale_rows_time_every_variant_at_every_batch():
    rows = scale_rows(repeats=1)
    formats = ["float32", "int8 (W8A8)", "int4 g32 (W4A8)", "2:4 sparse", "CSR 90 %"]
    assert [(r["batch"], r["format"]) for r in rows] == [
        (b, f) for b in SCALE_BATCHES for f in formats
    ]
    for r in rows:
        assert r["ms"] > 0 and r["speedup"] > 0
        if r["format"] == "float32":
            assert r["speedup"] == 1.0
    text = format_scale(rows)
    assert "384-1536-384" in text and text.count("\n") == 4 + len(rows)
