"""GGUF K-quants (Q2_K .. Q6_K), byte-identical to llama.cpp, and imatrix files.

:func:`quantize` writes the bytes llama.cpp's ``ggml_quantize_chunk`` writes
for the same rows: without an importance matrix its reference quantizers
(``quantize_row_q4_K_ref`` and friends), with one the importance-weighted
searches (``quantize_q4_K(..., quant_weights)``). Values are grouped along the
last axis in super-blocks of 256 (ggml's ``QK_K``), each stored as:

======  =====  =============================================================
type    bytes  layout (fp16 = IEEE half, little-endian)
======  =====  =============================================================
Q2_K     84    16 x (4-bit scale, 4-bit min), 64 B of 2-bit codes, d, dmin
Q3_K    110    32 B high bits, 64 B low 2 bits, 12 B of 16 6-bit scales, d
Q4_K    144    d, dmin, 12 B of 8 6-bit scales + 8 6-bit mins, 128 B nibbles
Q5_K    176    d, dmin, 12 B scales/mins, 32 B fifth bits, 128 B nibbles
Q6_K    210    128 B low nibbles, 64 B high 2 bits, 16 int8 scales, d
======  =====  =============================================================

The C++ kernels (scalar reference, AVX2 and AVX-512 with OpenMP threads) give
the same bytes on every ISA and thread count. :func:`dequantize` equals
``gguf.quants.dequantize`` and llama.cpp's ``dequantize_row_*``.

:func:`read_imatrix` reads llama.cpp's importance-matrix files (the GGUF
format of ``llama-imatrix`` and its legacy ``.dat`` format) into one float32
vector per tensor, normalized the way ``llama-quantize`` does before passing
it to the quantizer.
"""

from __future__ import annotations

import os
import struct
from typing import Any

import numpy as np

from .. import _core
from .._float32 import as_float32
from ._blocks import blocks_shape, check_float_array, nonfinite_error, type_name

TYPES = ("Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K")
BLOCK_SIZE = 256
TYPE_SIZE = {"Q2_K": 84, "Q3_K": 110, "Q4_K": 144, "Q5_K": 176, "Q6_K": 210}
TYPE_ID = {"Q2_K": 10, "Q3_K": 11, "Q4_K": 12, "Q5_K": 13, "Q6_K": 14}  # ggml's type ids
# What llama.cpp's quantizer uses instead when a row is not a multiple of 256.
FALLBACK = {"Q2_K": "Q4_0", "Q3_K": "Q4_0", "Q4_K": "Q5_0", "Q5_K": "Q5_1", "Q6_K": "Q8_0"}

__all__ = [
    "BLOCK_SIZE",
    "FALLBACK",
    "TYPES",
    "TYPE_SIZE",
    "dequantize",
    "quantize",
    "read_imatrix",
    "write_imatrix",
]


def _type_name(type: Any) -> str:
    return type_name(type, TYPES)


def quantize(w: np.ndarray, type: Any, imatrix: np.ndarray | None = None) -> np.ndarray:
    """K-quant blocks of ``w`` as uint8, shape ``(*w.shape[:-1], w.shape[-1] // 256 * type_size)``.

    Parameters
    ----------
    w : ndarray
        Floating-point array (float32, float16, bfloat16, float64) whose last
        axis (a row, llama.cpp's ``n_per_row``) is a multiple of 256.
        float32 C-contiguous input is read in place; other input is converted
        to a float32 copy first. ``w`` is never modified.
    type : {"Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K"} or gguf.GGMLQuantizationType
    imatrix : ndarray, optional
        Importance weights, one per column (``w.shape[-1]`` values, shared by
        all rows), e.g. an entry of :func:`read_imatrix`; for a 3-D
        mixture-of-experts ``w`` (n_expert, rows, columns) also one vector per
        expert, shape (n_expert, columns). Without it the bytes
        are those of llama.cpp's reference quantizer; with it those of its
        importance-weighted quantizer (the ``--imatrix`` path of
        ``llama-quantize``).

    Returns
    -------
    ndarray of uint8, a new array.

    Raises
    ------
    TypeError
        ``w`` (or ``imatrix``) is not a floating-point ndarray.
    ValueError
        Unknown type; a last axis that is not a multiple of 256 (llama.cpp
        then uses :data:`FALLBACK` instead); an ``imatrix`` of the wrong size
        or with NaN/inf; a NaN/inf in ``w`` (the message names the first
        position).
    """
    name = _type_name(type)
    check_float_array(w, "w")
    if w.ndim == 0 or w.shape[-1] == 0 or w.shape[-1] % BLOCK_SIZE:
        raise ValueError(
            f"w: {name} needs rows (last axis) that are a positive multiple of {BLOCK_SIZE}, "
            f"got shape {w.shape}; llama.cpp quantizes such a tensor to {FALLBACK[name]} instead"
        )
    n_per_row = w.shape[-1]
    # One importance vector for all rows, or one per expert (the first axis
    # of a 3-D mixture-of-experts weight), as llama-quantize slices it.
    per_expert = imatrix is not None and np.ndim(imatrix) == 2 and w.ndim == 3
    qw = None
    if imatrix is not None:
        if not isinstance(imatrix, np.ndarray) or imatrix.dtype.kind != "f":
            given = getattr(imatrix, "dtype", imatrix.__class__.__name__)
            raise TypeError(f"imatrix: expected a floating-point NumPy array, got {given}")
        want = (w.shape[0], n_per_row) if per_expert else (n_per_row,)
        if imatrix.shape != want and not (not per_expert and imatrix.size == n_per_row):
            raise ValueError(
                f"imatrix: expected {n_per_row} weights (one per column of w), or shape "
                f"(n_expert, {n_per_row}) for a 3-D w, got shape {imatrix.shape} for w {w.shape}"
            )
        qw = np.ascontiguousarray(imatrix, dtype=np.float32).reshape(-1, n_per_row)
        if not np.isfinite(qw).all():
            bad = int(np.flatnonzero(~np.isfinite(qw))[0])
            raise nonfinite_error("imatrix", qw.reshape(imatrix.shape), bad)
    wf = as_float32(w)
    out = _core.empty((*w.shape[:-1], n_per_row // BLOCK_SIZE * TYPE_SIZE[name]), np.uint8)
    groups = w.shape[0] if per_expert else 1
    wg, og = wf.reshape(groups, -1), out.reshape(groups, -1)
    for e in range(groups):
        row_qw = None if qw is None else qw[e]
        bad = _core.quant.kquant_quantize(wg[e], TYPE_ID[name], n_per_row, row_qw, og[e])
        if bad >= 0:  # checked before quantizing each run of blocks; the output is dropped
            bad += e * wg.shape[1]
            raise nonfinite_error("w", wf, bad)
    return out


def dequantize(data: np.ndarray, type: Any, shape: tuple[int, ...] | None = None) -> np.ndarray:
    """float32 values of K-quant blocks (as ``gguf.quants.dequantize``).

    Parameters
    ----------
    data : ndarray of uint8
        Blocks as written by :func:`quantize` (C-contiguous; read only).
    type : str or gguf.GGMLQuantizationType
    shape : tuple of int, optional
        Shape of the result; default: ``data``'s shape with the last axis
        converted from bytes to values.

    Returns
    -------
    ndarray of float32, a new array.

    Raises
    ------
    TypeError
        ``data`` is not a uint8 ndarray.
    ValueError
        Unknown type, or a byte count that does not hold whole blocks of
        ``shape``.
    """
    name = _type_name(type)
    shape = blocks_shape(data, name, TYPE_SIZE[name], BLOCK_SIZE, shape)
    out = _core.empty(tuple(shape), np.float32)
    data = np.ascontiguousarray(data)
    if data.ctypes.data % 2:  # the blocks' fp16 fields are read as uint16
        data = data.copy()
    _core.quant.kquant_dequantize(data, TYPE_ID[name], out)
    return out


def read_imatrix(path: str | os.PathLike[str]) -> dict[str, np.ndarray]:
    """Importance vectors of a llama.cpp imatrix file, by tensor name.

    Parameters
    ----------
    path : str or PathLike
        A GGUF imatrix (``llama-imatrix`` today: tensors ``<name>.in_sum2``
        and ``<name>.counts``) or a legacy ``.dat`` file.

    Returns
    -------
    dict of str to ndarray of float32
        For each weight (llama.cpp's tensor name, e.g.
        ``blk.0.ffn_down.weight``) the values ``llama-quantize`` passes to the
        quantizer: GGUF ``in_sum2 / counts`` (1 where a count is 0), legacy
        ``sums / ncall``. 1-D (one per column) for a plain weight, 2-D
        ``(n_expert, columns)`` for a mixture-of-experts weight.

    Raises
    ------
    ValueError
        The file is neither format, or is truncated or inconsistent (the
        message names the file and the entry).
    ImportError
        A GGUF file and the ``gguf`` package (extra ``slimgrad[gguf]``) is
        not installed.
    """
    path = os.fspath(path)
    with open(path, "rb") as f:
        magic = f.read(4)
    if magic == b"GGUF":
        return _read_imatrix_gguf(path)
    return _read_imatrix_dat(path)


def write_imatrix(
    path: str | os.PathLike[str],
    sums: dict[str, np.ndarray],
    counts: dict[str, Any],
    *,
    datasets: tuple[str, ...] = ("slimgrad",),
    chunk_count: int = 0,
    chunk_size: int = 0,
) -> None:
    """Write a GGUF imatrix as ``llama-imatrix`` does (``llama-quantize --imatrix`` reads it).

    Parameters
    ----------
    path : str or PathLike
        Output file, written atomically (a temporary file renamed over it).
    sums : dict of str to ndarray
        Per weight (llama.cpp's tensor name), the sum over calibration tokens
        of the squared input activations of each column: 1-D ``(columns,)``,
        or 2-D ``(n_expert, columns)`` for a mixture-of-experts weight. For
        activations ``x`` of shape ``(tokens, columns)`` feeding that weight:
        ``(x.astype(np.float32) ** 2).sum(axis=0)``.
    counts : dict of str to int or array of int
        Tokens accumulated per weight (per expert for 2-D sums).
    datasets, chunk_count, chunk_size
        Metadata keys ``imatrix.datasets`` / ``imatrix.chunk_count`` /
        ``imatrix.chunk_size`` (llama-quantize refuses a GGUF imatrix
        without them).

    Raises
    ------
    ValueError
        Names of ``sums`` and ``counts`` differ, a shape or count is wrong,
        or a sum is negative or not finite (nothing is written).
    ImportError
        The ``gguf`` package (extra ``slimgrad[gguf]``) is not installed.
    """
    from gguf import GGUFWriter

    from .io import _atomic

    if set(sums) != set(counts):
        raise ValueError(
            "sums, counts: expected the same names, "
            f"got {sorted(set(sums) ^ set(counts))} in one only"
        )
    tensors = []
    for name in sorted(sums):
        s = np.asarray(sums[name], dtype=np.float32)
        c = np.asarray(counts[name], dtype=np.float64).reshape(-1)
        s2 = s.reshape(1, -1) if s.ndim == 1 else s
        if s.ndim not in (1, 2) or s.size == 0 or c.size != s2.shape[0]:
            raise ValueError(
                f"sums[{name!r}]: expected (columns,) or (n_expert, columns) "
                "with one count per row, "
                f"got shape {s.shape} and {c.size} counts"
            )
        if not np.isfinite(s2).all() or (s2 < 0).any() or (c < 0).any() or (c != np.rint(c)).any():
            raise ValueError(
                f"sums[{name!r}] / counts[{name!r}]: expected finite sums >= 0, whole counts >= 0"
            )
        tensors.append((name, np.ascontiguousarray(s2), c.astype(np.float32).reshape(-1, 1)))

    def fill(tmp: str) -> None:
        w = GGUFWriter(tmp, arch="")
        w.add_string("general.type", "imatrix")
        w.add_array("imatrix.datasets", list(datasets))
        w.add_uint32("imatrix.chunk_count", int(chunk_count))
        w.add_uint32("imatrix.chunk_size", int(chunk_size))
        for name, s2, c in tensors:
            w.add_tensor(f"{name}.in_sum2", s2)
            w.add_tensor(f"{name}.counts", c)
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
        w.close()

    _atomic(path, fill)


def _read_imatrix_gguf(path: str) -> dict[str, np.ndarray]:
    from gguf import GGUFReader

    try:
        reader = GGUFReader(path)
    except Exception as e:  # the package raises ValueError, struct.error, ...
        raise ValueError(f"{path}: not a readable GGUF imatrix ({e})") from e
    sums: dict[str, Any] = {}
    counts: dict[str, Any] = {}
    for t in reader.tensors:
        for suffix, into in ((".in_sum2", sums), (".counts", counts)):
            if t.name.endswith(suffix):
                into[t.name[: -len(suffix)]] = t
    if not sums and not counts:
        raise ValueError(f"{path}: no '<name>.in_sum2' / '<name>.counts' tensors: not an imatrix")
    out: dict[str, np.ndarray] = {}
    for name in sorted(set(sums) | set(counts)):
        if name not in sums or name not in counts:
            raise ValueError(f"{path}: mismatched sums and counts for {name!r}")
        s, c = sums[name], counts[name]
        if s.tensor_type.name != "F32" or c.tensor_type.name != "F32":
            raise ValueError(f"{path}: sums and counts for {name!r} must be F32")
        sv = np.asarray(s.data, dtype=np.float32).reshape(-1)
        cv = np.rint(np.asarray(c.data, dtype=np.float64).reshape(-1))  # llama.cpp: lround
        if cv.size == 0 or sv.size % cv.size:
            raise ValueError(f"{path}: {sv.size} sums of {name!r} are not {cv.size} equal rows")
        rows = sv.reshape(cv.size, -1)
        cf = cv.astype(np.float32)[:, None]
        with np.errstate(divide="ignore", invalid="ignore"):
            vals = np.where(cf > 0, rows / np.where(cf > 0, cf, 1), np.float32(1))
        vals = vals.astype(np.float32)
        out[name] = vals[0] if cv.size == 1 else vals
    return out


def _read_imatrix_dat(path: str) -> dict[str, np.ndarray]:
    with open(path, "rb") as f:
        buf = f.read()
    pos = 0

    def take(n: int, what: str) -> bytes:
        nonlocal pos
        if pos + n > len(buf):
            raise ValueError(f"{path}: truncated legacy imatrix while reading {what}")
        pos += n
        return buf[pos - n : pos]

    (n_entries,) = struct.unpack("<i", take(4, "the entry count"))
    if n_entries < 1:
        raise ValueError(f"{path}: not an imatrix (neither GGUF nor a legacy .dat with entries)")
    out: dict[str, np.ndarray] = {}
    for i in range(n_entries):
        (length,) = struct.unpack("<i", take(4, f"the name length of entry {i}"))
        if length < 0 or length > 1 << 16:
            raise ValueError(f"{path}: entry {i} has an invalid name length {length}")
        name = take(length, f"the name of entry {i}").split(b"\0", 1)[0].decode("utf-8", "replace")
        ncall, nval = struct.unpack("<ii", take(8, f"ncall/nval of {name!r}"))
        if nval < 1:
            raise ValueError(f"{path}: entry {name!r} has {nval} values")
        vals = np.frombuffer(take(4 * nval, f"the values of {name!r}"), dtype="<f4").astype(
            np.float32
        )
        out[name] = vals / np.float32(ncall) if ncall > 0 else vals
    return out
