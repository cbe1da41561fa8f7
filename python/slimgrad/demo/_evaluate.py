"""Evaluation of the demo's models: accuracy, inference time, size, and the
quantized student (fused dequantizing matmul)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np

__all__ = [
    "QuantizedMLP",
    "float_bytes",
    "param_count",
    "scale_rows",
    "sparse_bytes",
    "stage_row",
]


class QuantizedMLP:
    """Inference with quantized Linear weights, float biases, ReLUs.

    Each weight is quantized (int8 per row, or int4 in groups) and prepacked
    once; products quantize the activations to int8 per row on the fly
    (:func:`slimgrad.quant.matmul` with ``activations="int8"``: W8A8 / W4A8).
    """

    def __init__(self, model: Any, bits: int, granularity: str, group_size: int = 32) -> None:
        from .. import quant

        self.layers = []
        for layer in model._modules.values():
            if hasattr(layer, "weight"):
                w = np.ascontiguousarray(layer.weight, dtype=np.float32)
                gs = min(group_size, -(-w.shape[1] // 8) * 8)
                qt = quant.quantize(w, bits, granularity=granularity, axis=0, group_size=gs)
                self.layers.append((qt, quant.prepack(qt), layer.bias.astype(np.float32)))

    def forward(self, x: np.ndarray) -> np.ndarray:
        for i, (_, packed, b) in enumerate(self.layers):
            x = packed.matmul(x, bias=b)
            if i < len(self.layers) - 1:
                np.maximum(x, 0, out=x)
        return x

    def nbytes(self) -> int:
        return sum(qt.nbytes + b.nbytes for qt, _, b in self.layers)

    def parameters(self) -> tuple[int, int]:
        total = sum(qt.size + b.size for qt, _, b in self.layers)
        nonzero = sum(
            int(np.count_nonzero(qt.dequantize())) + int(np.count_nonzero(b))
            for qt, _, b in self.layers
        )
        return total, nonzero


def param_count(model: Any) -> tuple[int, int]:
    """(parameters, non-zero parameters) of a :mod:`slimgrad.nn` model."""
    params = model.parameters().values()
    return sum(p.size for p in params), sum(int(np.count_nonzero(p)) for p in params)


def float_bytes(model: Any) -> int:
    """Bytes of a model's parameters stored dense."""
    return sum(p.nbytes for p in model.parameters().values())


def sparse_bytes(model: Any, fmt: str) -> int:
    """Bytes of a model with its weights in sparse format ``fmt`` (``"best"``: the smallest)."""
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


def _accuracy(forward: Callable[[np.ndarray], np.ndarray], x: np.ndarray, y: np.ndarray) -> float:
    return float(np.mean(np.argmax(forward(x), axis=1) == y))


def _time_ms(forward: Callable[[np.ndarray], np.ndarray], x: np.ndarray, repeats: int) -> float:
    forward(x)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        forward(x)
        times.append(time.perf_counter() - start)
    return 1e3 * float(np.median(times))


def stage_row(
    name: str,
    forward: Callable[[np.ndarray], np.ndarray],
    counts: tuple[int, int],
    nbytes: int,
    fmt: str,
    test: tuple[np.ndarray, np.ndarray],
    repeats: int,
) -> dict[str, Any]:
    """One row of the report: sizes, test accuracy and median inference time of ``forward``."""
    x_test, y_test = test
    return {
        "stage": name,
        "parameters": counts[0],
        "nonzero": counts[1],
        "bytes": nbytes,
        "format": fmt,
        "accuracy": _accuracy(forward, x_test, y_test),
        "inference_ms": _time_ms(forward, x_test, repeats),
    }


# all-MiniLM-L6-v2's feed-forward block: the size where compressed products pay
SCALE_SIZES = (384, 1536, 384)
SCALE_BATCHES = (1, 8, 64)


def scale_rows(repeats: int, seed: int = 0) -> list[dict[str, Any]]:
    """Inference time of an MLP of MiniLM's FFN shape (384-1536-384, random
    weights pruned 2:4) dense, int8 (W8A8), int4 groups of 32 (W4A8) and 2:4
    sparse, and of the same MLP pruned to 90 % (unstructured) in CSR, at
    batches 1, 8 and 64: the kernels at a size where a call's fixed cost no
    longer dominates, unlike the demo's 64-16-10 student. Timings are
    interleaved medians; ``speedup`` is dense time / this time (a dense
    product's time does not depend on how many weights are zero)."""
    from .. import nn, prune, quant

    def build(sparsity: float | None = None) -> Any:
        a, h, b = SCALE_SIZES
        first, second = nn.Linear(a, h, seed=seed), nn.Linear(h, b, seed=seed + 1)
        for layer in (first, second):
            if sparsity is None:  # the same weights in every variant but the CSR one
                layer.weight *= prune.nm_mask(layer.weight, 2, 4)
            else:
                layer.weight *= prune.magnitude_mask(layer.weight, sparsity)
        return nn.Sequential(first, nn.ReLU(), second).eval()

    variants = {
        name: build() for name in ("float32", "int8 (W8A8)", "int4 g32 (W4A8)", "2:4 sparse")
    }
    variants["CSR 90 %"] = build(sparsity=0.9)
    quant.quantize_dynamic(variants["int8 (W8A8)"], "int8")
    quant.quantize_dynamic(variants["int4 g32 (W4A8)"], "int4", group_size=32)
    for fmt, name in (("2:4", "2:4 sparse"), ("csr", "CSR 90 %")):
        for m in variants[name].modules():
            if hasattr(m, "set_product"):
                prune.sparse_linear(m, fmt)
    rng = np.random.default_rng(seed)
    rows = []
    for batch in SCALE_BATCHES:
        x = rng.standard_normal((batch, SCALE_SIZES[0])).astype(np.float32)
        times: dict[str, list[float]] = {name: [] for name in variants}
        for model in variants.values():
            model.forward(x)
        for r in range(repeats):
            names = list(variants)
            for name in names[r % len(names) :] + names[: r % len(names)]:
                start = time.perf_counter()
                variants[name].forward(x)
                times[name].append(time.perf_counter() - start)
        dense = float(np.median(times["float32"]))
        for name, t in times.items():
            ms = 1e3 * float(np.median(t))
            rows.append({"batch": batch, "format": name, "ms": ms, "speedup": 1e3 * dense / ms})
    return rows
