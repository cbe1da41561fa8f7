"""The 2:4 panel path (batch > 8): every batch tail of the 4-vector panels
(64 columns on AVX-512, 32 on AVX2; the last panel 1-4 vectors wide), the
k blocks (64 / 128 values) and their tails, the row chunks (32, a quarter of
W, 128) and the batch groups (panels per half L2), on every ISA and 1 vs 2
threads, against a float64 reference."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import run_everywhere
from slimgrad.prune import compress_24, decompress_24, pack_sparse, sparse_matmul
from test_sparse_matmul import _check, _panel_isas_agree, _same_per_isa

# Every tail width of a 64-wide panel (16 / 32 / 48 / 64 columns, +- 1) in
# the first and the second panel, the first batch on the panel path (9),
# full panels +- 1 around 512 and past it.
TAILS = (15, 16, 17, 31, 33, 47, 49, 63, 64, 65)
PANEL_BATCHES = [9, *TAILS, *(64 + t for t in TAILS), 511, 512, 513, 600]


def _run(batch, out, inp, rng):
    w = rng.standard_normal((out, inp)).astype(np.float32)
    c = compress_24(w)
    x = rng.standard_normal((batch, inp)).astype(np.float32)
    packed = pack_sparse(c)  # "2:4 slices" under AVX-512: its panel path reads the slices
    for weight in (c, packed):  # and the row-major arrays
        results = run_everywhere(lambda: sparse_matmul(x, weight))  # noqa: B023
        for y in results.values():
            _check(y, x, decompress_24(*c))
        _same_per_isa(results)  # 1 vs 2 threads: the same bits
        _panel_isas_agree(results, batch)  # AVX2 and AVX-512 (or the reference): the same bits


@pytest.mark.parametrize("batch", PANEL_BATCHES)
@pytest.mark.parametrize("inp", [264, 132], ids=["aligned", "mid-byte"])
def test_panel_batch_tails(batch, inp, rng):
    # 37 rows: 9 groups of 4 + 1; in = 264: 2 AVX-512 k blocks + 4 values
    # (1 AVX2 block + 4); in = 132: rows start mid-byte (in % 8 == 4).
    _run(batch, 37, inp, rng)


@pytest.mark.parametrize(
    "shape",
    [
        (40, 1103, 68),  # threaded, 128-row chunks: 8 full + 79 rows (groups of 4 + 3)
        (600, 1031, 264),  # 128-row chunks, every panel width, k block tails
        (65, 1024, 8),  # exactly 8 chunks of 128
        (17, 1023, 40),  # one row short of 8 x 128: a quarter of W, capped at 128 rows
        (200, 389, 68),  # threaded, 96-row chunks + 5 rows, many panels per L2 group
        (600, 300, 1032),  # 1 panel per group, 32-row chunks (AVX-512); 3 and 64 rows (AVX2)
        (100, 70, 2056),  # panels too large to group: one group, 32-row chunks
    ],
    ids=str,
)
def test_panel_row_chunks_and_batch_groups(shape, rng):
    _run(*shape, rng)
