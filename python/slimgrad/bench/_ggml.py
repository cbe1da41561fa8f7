"""llama.cpp's quantizers through the ggml shared library that
llama-cpp-python installs (ctypes; the package itself is never imported).

Used as the outside oracle of the K-quant tests and as the peer in the quant
benchmark. :func:`load_ggml` returns None when the library is absent.
"""

from __future__ import annotations

import ctypes
import importlib.util
import os
from pathlib import Path

import numpy as np

# ggml's type ids and block sizes in bytes (per 256 values).
_TYPES = {
    "Q2_K": (10, 84),
    "Q3_K": (11, 110),
    "Q4_K": (12, 144),
    "Q5_K": (13, 176),
    "Q6_K": (14, 210),
}
_f32p = ctypes.POINTER(ctypes.c_float)


class Ggml:
    """ggml_quantize_chunk and dequantize_row_* of one loaded libggml-base."""

    def __init__(self, lib: ctypes.CDLL, path: Path) -> None:
        self.lib, self.path = lib, path
        f = lib.ggml_quantize_chunk
        f.restype = ctypes.c_size_t
        f.argtypes = [
            ctypes.c_int,
            _f32p,
            ctypes.c_void_p,
            ctypes.c_int64,
            ctypes.c_int64,
            ctypes.c_int64,
            _f32p,
        ]
        self._quantize = f
        self._dequantize = {}
        for name in _TYPES:
            g = getattr(lib, f"dequantize_row_{name[:2].lower()}_K")
            g.restype = None
            g.argtypes = [ctypes.c_void_p, _f32p, ctypes.c_int64]
            self._dequantize[name] = g

    def quantize(
        self, type_name: str, w: np.ndarray, imatrix: np.ndarray | None = None
    ) -> np.ndarray:
        """``ggml_quantize_chunk`` of a float32 (rows, n_per_row) array, on one thread."""
        tid, ts = _TYPES[type_name]
        w = np.ascontiguousarray(w, dtype=np.float32)
        rows, n = w.shape
        out = np.empty((rows, n // 256 * ts), np.uint8)
        qw = None
        if imatrix is not None:
            imatrix = np.ascontiguousarray(imatrix, dtype=np.float32)
            qw = imatrix.ctypes.data_as(_f32p)
        self._quantize(tid, w.ctypes.data_as(_f32p), out.ctypes.data, 0, rows, n, qw)
        return out

    def dequantize(self, type_name: str, data: np.ndarray, n: int) -> np.ndarray:
        """``dequantize_row_*`` of n values (a multiple of 256) held in ``data``."""
        out = np.empty(n, np.float32)
        data = np.ascontiguousarray(data)
        self._dequantize[type_name](data.ctypes.data, out.ctypes.data_as(_f32p), n)
        return out


def load_ggml() -> Ggml | None:
    """The ggml library of the installed llama-cpp-python, or None.

    ``SLIMGRAD_GGML_LIB=/path/to/libggml-base.so`` picks another llama.cpp
    build instead (e.g. one built from source with cmake).
    """
    override = os.environ.get("SLIMGRAD_GGML_LIB")
    if override:
        return Ggml(ctypes.CDLL(override), Path(override))
    spec = importlib.util.find_spec("llama_cpp")
    if spec is None or spec.origin is None:
        return None
    root = Path(spec.origin).parent
    for path in sorted(root.rglob("libggml-base.*")) + sorted(root.rglob("libggml.*")):
        try:
            lib = ctypes.CDLL(str(path))
            return Ggml(lib, path)
        except (OSError, AttributeError):
            continue
    return None
