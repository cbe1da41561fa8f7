"""K-quant cases of the quant suite: Q4_K / Q6_K quantize and dequantize of a
size x size float32 weight (default 4096 x 4096), next to llama.cpp's own
quantizer (``ggml_quantize_chunk`` from the ggml library of llama-cpp-python,
one thread, when installed) and the gguf package's dequantize.

llama.cpp's quantizer is single-threaded, so each quantize case also times
slimgrad on one thread: that ratio is the per-thread comparison."""

from __future__ import annotations

from collections.abc import Iterator
from functools import partial

import numpy as np

from .. import num_threads
from ..quant import kquants
from . import Case, optional_import
from ._ggml import load_ggml

DEFAULT_SIZE = 4096


def _one_thread(fn, *args, **kwargs):
    with num_threads(1):
        return fn(*args, **kwargs)


def cases(size: int) -> Iterator[Case]:
    gguf = optional_import("gguf")
    ggml = load_ggml()
    rng = np.random.default_rng(0)
    cols = max(256, size // 256 * 256)
    w = rng.standard_normal((size, cols), dtype=np.float32)
    qw = (rng.standard_normal(cols, dtype=np.float32) ** 2 + np.float32(0.01)).astype(np.float32)
    n = w.size
    for t in ("Q4_K", "Q6_K"):
        ts = kquants.TYPE_SIZE[t]
        for label, imatrix in (("", None), (" imatrix", qw)):
            impls = {
                "slimgrad": partial(kquants.quantize, w, t, imatrix=imatrix),
                "slimgrad 1 thread": partial(_one_thread, kquants.quantize, w, t, imatrix=imatrix),
            }
            if ggml is not None:
                impls["llama.cpp ggml_quantize_chunk"] = partial(ggml.quantize, t, w, imatrix)
            yield Case(
                f"gguf quantize {t}{label}",
                impls,
                bytes=4 * n + n // 256 * ts,
                note="same bytes as llama.cpp; its quantizer runs on one thread",
            )
        q = kquants.quantize(w, t)
        impls = {"slimgrad": partial(kquants.dequantize, q, t)}
        impls["slimgrad 1 thread"] = partial(_one_thread, kquants.dequantize, q, t)
        if gguf is not None:
            import gguf.quants as gq

            impls["gguf package"] = partial(gq.dequantize, q, gguf.GGMLQuantizationType[t])
        if ggml is not None:
            impls["llama.cpp dequantize_row"] = partial(ggml.dequantize, t, q, n)
        yield Case(f"gguf dequantize {t}", impls, bytes=4 * n + n // 256 * ts)
