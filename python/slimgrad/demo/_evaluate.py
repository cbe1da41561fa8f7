"""Evaluation of the demo's models: accuracy, inference time, size, and the
quantized student (fused dequantizing matmul)."""

from __future__ import annotations

import time
from typing import Any, Callable

import numpy as np

__all__ = ["QuantizedMLP", "float_bytes", "param_count", "sparse_bytes", "stage_row"]


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
