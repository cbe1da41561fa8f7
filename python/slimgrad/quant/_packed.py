"""Weights packed once for the int8-activation GEMM (W8A8, W4A8, GGUF blocks, K-quants)."""

from __future__ import annotations

from typing import Any

import numpy as np

from .. import _core
from . import _gguf_codes as _codes
from ._tensor import QuantizedTensor

_F32 = np.dtype(np.float32)

__all__ = ["PackedWeight", "prepack"]

_MAX_GROUP = 65536  # k per exact int32 sum (128 * 127 * 65536 < 2**31)


def _gguf_blocks(blocks: Any, name: str, shape: Any) -> tuple[int, int]:
    """``(out, in)`` of GGUF blocks of type ``name``, checked against their byte count."""
    ts, bs = _codes.TYPE_SIZE[name], _codes.BLOCK_SIZE[name]
    if not isinstance(blocks, np.ndarray) or blocks.dtype != np.uint8:
        given = getattr(blocks, "dtype", type(blocks).__name__)
        raise TypeError(f"w: expected GGUF blocks as a uint8 NumPy array, got {given}")
    if shape is None:
        if blocks.ndim != 2 or blocks.shape[1] % ts:
            raise ValueError(
                f"w: expected {name} blocks of shape (out, in / {bs} * {ts}), "
                f"got shape {blocks.shape}"
            )
        shape = (blocks.shape[0], blocks.shape[1] // ts * bs)
    if len(shape) != 2:
        raise ValueError(f"shape: expected (out, in), got {tuple(shape)}")
    n, k = (int(s) for s in shape)
    if n < 0 or k < 0 or k % bs or blocks.size != n * (k // bs) * ts:
        raise ValueError(
            f"w: expected {max(n, 0) * (max(k, 0) // bs) * ts} bytes of {name} blocks for shape "
            f"{tuple(shape)} (in a multiple of {bs}), got {blocks.size}"
        )
    return n, k


class PackedWeight:
    """A 2-D weight ``W (out, in)`` packed once for :func:`matmul` with int8 activations.

    Made by :func:`prepack`. The product quantizes each row of ``x`` to int8
    on the fly (one scale per row, ``absmax / 127``), sums ``q_x * q_w``
    exactly in int32 per weight group, and applies the scales in float32 (see
    docs/quant.md, "int8 activations"). The packed arrays are private copies:
    changing the source tensor afterwards does not change this weight.

    Attributes
    ----------
    shape : tuple of int
        ``(out, in)``.
    format : str
        ``"int8"``, ``"int4"`` or the GGUF type (``"Q8_0"``, ``"Q4_0"``,
        ``"Q4_1"``, ``"Q5_0"``, ``"Q5_1"``, ``"Q2_K"`` ... ``"Q6_K"``).
    group_size : int
        ``in`` values per exact int32 sum: the weight's group, or for one
        scale per row ``in`` rounded up to 4 (8 bits) / 8 (4 bits), at most
        65536.
    nbytes : int
        Bytes of the packed arrays.
    """

    def __init__(
        self,
        codes: np.ndarray,
        scale: np.ndarray,
        bits: int,
        group: int,
        fmt: str,
        shift: np.ndarray | None = None,
        zoff: int = 0,
        sub: int = 1,
        iscale: np.ndarray | None = None,
        ishift: np.ndarray | None = None,
    ):
        n, k = codes.shape
        self.shape = (int(n), int(k))
        self.format = fmt
        self.bits = bits
        self.group_size = int(group)
        self._zoff = int(zoff)
        self._sub = int(sub)
        wbytes, nf, ni, _, _ = _core.quant.qgemm_sizes(bits, n, k, group, sub)
        self._w = np.empty(wbytes, np.uint8)
        self._scale = np.empty(nf, np.float32)
        self._shift = None if shift is None else np.empty(nf, np.float32)
        self._iscale = None if iscale is None else np.empty(ni, np.int8)
        self._ishift = None if ishift is None else np.empty(ni, np.int8)
        _core.quant.qgemm_pack(
            bits,
            codes,
            scale,
            shift,
            iscale,
            ishift,
            group,
            sub,
            self._w,
            self._scale,
            self._shift,
            self._iscale,
            self._ishift,
        )

    @property
    def nbytes(self) -> int:
        parts = (self._w, self._scale, self._shift, self._iscale, self._ishift)
        return sum(a.nbytes for a in parts if a is not None)

    def matmul(
        self, x: np.ndarray, bias: np.ndarray | None = None, out: np.ndarray | None = None
    ) -> np.ndarray:
        """``x @ W.T (+ bias)`` with ``x`` quantized per row to int8; see :func:`matmul`."""
        n, k = self.shape
        if not isinstance(x, np.ndarray) or x.dtype.kind != "f":
            given = getattr(x, "dtype", type(x).__name__)
            raise TypeError(f"x: expected a floating-point NumPy array, got {given}")
        if x.ndim == 0 or x.shape[-1] != k:
            raise ValueError(f"x: expected shape (..., {k}), got {x.shape}")
        oshape = (*x.shape[:-1], n)
        if bias is not None:
            if not isinstance(bias, np.ndarray) or bias.dtype != np.float32:
                given = getattr(bias, "dtype", type(bias).__name__)
                raise TypeError(
                    f"bias: expected a float32 NumPy array of shape ({n},), got {given}"
                )
            if bias.shape != (n,):
                raise ValueError(f"bias: expected shape ({n},), got {bias.shape}")
            bias = np.ascontiguousarray(bias)
        if out is None:
            out = _core.empty(oshape, _F32)  # 1 MiB and more: from the cache of freed outputs
        elif (
            not isinstance(out, np.ndarray)
            or out.dtype != np.float32
            or not out.flags.c_contiguous
            or out.shape != oshape
        ):
            given = getattr(out, "dtype", type(out).__name__)
            raise TypeError(
                f"out: expected a float32 C-contiguous array of shape {oshape}, got {given} "
                f"of shape {getattr(out, 'shape', None)}"
            )
        if out.size == 0:
            return out
        if k == 0:
            out[...] = 0 if bias is None else bias
            return out
        xf = np.ascontiguousarray(x, dtype=np.float32)
        _core.quant.qgemm(
            xf,
            self.bits,
            n,
            k,
            self.group_size,
            self._sub,
            self._w,
            self._scale,
            self._shift,
            self._iscale,
            self._ishift,
            self._zoff,
            bias,
            out,
        )
        return out

    __call__ = matmul

    def __repr__(self) -> str:
        return (
            f"PackedWeight(shape={self.shape}, format={self.format!r}, "
            f"group_size={self.group_size}, nbytes={self.nbytes})"
        )


def prepack(w: Any, type: Any = None, *, shape: Any = None) -> PackedWeight:
    """Pack a quantized weight once for fast products with int8 activations.

    Parameters
    ----------
    w : QuantizedTensor, ndarray of uint8, or gguf.ReaderTensor
        A 2-D ``(out, in)`` :class:`QuantizedTensor`, symmetric, 8 or 4 bits,
        per tensor, per output channel (``axis=0``) or in groups along ``in``
        (group size a multiple of 4 for 8 bits, of 8 for 4 bits); or GGUF
        blocks as :func:`slimgrad.quant.gguf.quantize` /
        :func:`slimgrad.quant.kquants.quantize` (and llama.cpp) write them:
        shape ``(out, in / block * type_size)``, or any shape with
        ``shape=(out, in)``; or a 2-D quantized tensor of a
        ``gguf.GGUFReader`` (type and shape taken from it).
    type : str or gguf.GGMLQuantizationType, optional
        ``"Q8_0"``, ``"Q4_0"``, ``"Q4_1"``, ``"Q5_0"``, ``"Q5_1"``,
        ``"Q2_K"``, ``"Q3_K"``, ``"Q4_K"``, ``"Q5_K"`` or ``"Q6_K"``. Required
        for GGUF blocks given as an array, must be omitted otherwise.
    shape : tuple of int, optional
        ``(out, in)`` of GGUF blocks; ``in`` a multiple of 32 (256 for the
        K-quants).

    Returns
    -------
    PackedWeight
        A copy in the kernels' panel layout, about the size of the GGUF
        blocks: codes as nibbles (plus one or two bit planes for the 5- and
        6-bit types), a float32 scale (and shift for Q4_1, Q5_1, Q4_K, Q5_K,
        Q2_K) per 32 values, or for the K-quants one float per 256 values and
        int8 sub-scales per 16 / 32 (docs/quant.md, "GGUF blocks").

    Raises
    ------
    TypeError
        ``w`` is none of these or not uint8; ``type`` given with a
        QuantizedTensor or a reader tensor.
    ValueError
        Asymmetric or 2/3/5/6/7-bit QuantizedTensors, channels along axis 1,
        a group size the kernels do not take, an 8-bit code of -128 (the
        kernels take [-127, 127]), an unknown GGUF type, GGUF bytes that do
        not match the shape. ``w`` is never modified.
    """
    if isinstance(w, QuantizedTensor):
        if type is not None:
            raise TypeError("type: only for GGUF blocks, not with a QuantizedTensor")
        return _from_tensor(w)
    if hasattr(w, "tensor_type") and hasattr(w, "data") and not isinstance(w, np.ndarray):
        if type is not None or shape is not None:
            raise TypeError("type, shape: taken from the GGUF reader tensor, not given")
        dims = [int(d) for d in w.shape]  # GGUF order: in first
        if len(dims) != 2:
            raise ValueError(f"w: expected a 2-D GGUF tensor, got {w.name!r} of shape {dims}")
        type, shape = w.tensor_type, (dims[1], dims[0])
        w = np.asarray(w.data)
    if type is None:
        raise TypeError(
            f"w: expected a QuantizedTensor, or GGUF blocks with type='Q8_0', 'Q4_K', ..., "
            f"got {getattr(w, 'dtype', None) or w.__class__.__name__}"
        )
    name = str(getattr(type, "name", type))
    if name not in _codes.TYPES:
        raise ValueError(
            f"type: the int8-activation kernels take {', '.join(map(repr, _codes.TYPES))}, "
            f"got {type!r}"
        )
    n, k = _gguf_blocks(w, name, shape)
    c = _codes.decode(w, name, n, k)
    if name == "Q8_0" and c.codes.size and c.codes.min() < -127:
        bad = np.unravel_index(int(np.argmin(c.codes)), c.codes.shape)
        raise ValueError(
            f"w: Q8_0 code -128 at (row, column) {tuple(map(int, bad))}; expected [-127, 127]"
        )
    return PackedWeight(
        np.ascontiguousarray(c.codes),
        np.ascontiguousarray(c.scale),
        c.bits,
        c.group,
        name,
        None if c.shift is None else np.ascontiguousarray(c.shift),
        c.zoff,
        c.sub,
        c.iscale,
        c.ishift,
    )


def _from_tensor(qt: QuantizedTensor) -> PackedWeight:
    if len(qt.shape) != 2:
        raise ValueError(f"w: expected a 2-D (out, in) weight, got shape {qt.shape}")
    if qt.bits not in (4, 8) or not qt.symmetric:
        kind = "symmetric" if qt.symmetric else "asymmetric"
        raise ValueError(
            f"w: the int8-activation kernels take symmetric 8- or 4-bit weights, got {kind} "
            f"{qt.bits}-bit"
        )
    n, k = qt.shape
    step = 4 if qt.bits == 8 else 8
    codes = np.ascontiguousarray(qt.codes()).view(np.int8).reshape(n, k)
    if qt.granularity == "group":
        group = qt.group_size
        if group % step or group > _MAX_GROUP:
            raise ValueError(
                f"w: {qt.bits}-bit groups for the int8-activation kernels must be a multiple of "
                f"{step} up to {_MAX_GROUP}, got group_size={group}"
            )
        scale = np.ascontiguousarray(qt.scale, dtype=np.float32).reshape(n, -1)
    else:
        if qt.granularity == "channel" and qt.axis != 0:
            raise ValueError(f"w: expected channels along axis 0 (output rows), got axis={qt.axis}")
        kpad = -(-k // step) * step
        group = max(step, min(kpad, _MAX_GROUP))
        per_row = np.broadcast_to(np.asarray(qt.scale, np.float32).reshape(-1), (n,))
        scale = np.ascontiguousarray(np.repeat(per_row[:, None], -(-k // group), axis=1))
    if qt.bits == 8 and codes.size and codes.min() < -127:
        bad = np.unravel_index(int(np.argmin(codes)), codes.shape)
        raise ValueError(f"w: 8-bit code -128 at {tuple(map(int, bad))}; expected [-127, 127]")
    fmt = "int8" if qt.bits == 8 else "int4"
    return PackedWeight(codes, scale, qt.bits, group, fmt)
