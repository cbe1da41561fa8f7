"""GGUF blocks as the int8-activation GEMM's integer codes, scales and shifts.

Every format decodes to ``W[n, k] = scale[n, g] * (c[n, k] + zoff) + shift[n, g]``
with small signed codes ``c`` and float32 ``scale`` / ``shift`` per group ``g``
(32 values; 16 for Q6_K, Q3_K, Q2_K), exactly: each scale and shift is an
fp16 times an integer of at most 8 bits, exact in float32 (ggml computes the
same ``d * sc`` and ``dmin * m`` products). The K-quants keep that split:
``scale`` / ``shift`` hold one float per super-block of 256 (``d``,
``-dmin``) and ``iscale`` / ``ishift`` the int8 sub-scales / sub-mins per
group (``sub`` groups per super-block); :func:`group_factors` multiplies them
out. Codes are centred so the kernels' ranges hold them: ``bits`` 4
(nibbles, [-8, 7]: the unsigned Q4_1 / Q4_K / Q2_K codes ``q`` as ``q - 8``
with ``zoff = 8``), 5 ([-16, 15]: Q5_1 / Q5_K as ``q - 16``, ``zoff = 16``),
6 (Q6_K, [-32, 31]) and 8 (Q8_0). Layouts follow llama.cpp's ``dequantize_row_*``
(ggml-quants.c); tests check the result against ``gguf.dequantize`` /
``kquants.dequantize``.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from . import gguf as _gguf
from . import kquants as _kquants

TYPES = ("Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K")
TYPE_SIZE = {**_gguf.TYPE_SIZE, **_kquants.TYPE_SIZE}
BLOCK_SIZE = {t: 256 if t.endswith("_K") else 32 for t in TYPES}


class Codes(NamedTuple):
    codes: np.ndarray  # (n, k) int8
    scale: np.ndarray  # (n, k / group / sub) float32
    shift: np.ndarray | None  # the same shape, or None
    bits: int  # 8, 6, 5 or 4: how the kernels store the codes
    group: int
    zoff: int
    sub: int = 1  # groups per super-block (K-quants: 256 / group)
    iscale: np.ndarray | None = None  # (n, k / group) int8 when sub > 1
    ishift: np.ndarray | None = None  # (n, k / group) int8 when sub > 1 with a shift


def group_factors(c: Codes) -> tuple[np.ndarray, np.ndarray | None]:
    """float32 (scale, shift) per group, ``(n, k / group)``: the kernels' products."""
    if c.iscale is None:
        return c.scale, c.shift
    scale = np.repeat(c.scale, c.sub, axis=1) * c.iscale.astype(np.float32)
    if c.shift is None or c.ishift is None:
        return scale, c.shift
    return scale, np.repeat(c.shift, c.sub, axis=1) * c.ishift.astype(np.float32)


def _k(
    codes: np.ndarray,
    d: np.ndarray,
    sc: np.ndarray,
    bits: int,
    group: int,
    zoff: int,
    dmin: np.ndarray | None = None,
    mn: np.ndarray | None = None,
) -> Codes:
    """Codes of a K-quant: super-block floats ``d`` (``-dmin``), int sub-scales (sub-mins)."""
    n = codes.shape[0]
    shift = None if dmin is None else -dmin.reshape(n, -1)
    ishift = None if mn is None else mn.astype(np.int8).reshape(n, -1)
    sub = 256 // group
    return Codes(
        codes,
        d.reshape(n, -1),
        shift,
        bits,
        group,
        zoff,
        sub,
        sc.astype(np.int8).reshape(n, -1),
        ishift,
    )


def _f16(b: np.ndarray) -> np.ndarray:
    """float32 of little-endian fp16 pairs along the last axis (..., 2)."""
    return np.ascontiguousarray(b).view("<f2")[..., 0].astype(np.float32)


def _nibbles(qs: np.ndarray) -> np.ndarray:
    """(..., 16) bytes -> (..., 32) values: low nibbles first, then high (ggml's Q4_x)."""
    return np.concatenate([qs & 0x0F, qs >> 4], axis=-1)


def _bits32(qh: np.ndarray) -> np.ndarray:
    """(..., 4) bytes of a little-endian uint32 -> (..., 32) bits, bit i at position i."""
    return np.unpackbits(qh, axis=-1, bitorder="little")


def _scale_min_k4(sc: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Q4_K / Q5_K's 8 6-bit scales and 8 6-bit mins from 12 bytes (ggml's get_scale_min_k4)."""
    s = sc.astype(np.int32)
    lo = np.concatenate([s[..., 0:4] & 63, (s[..., 8:12] & 0x0F) | ((s[..., 0:4] >> 6) << 4)], -1)
    mn = np.concatenate([s[..., 4:8] & 63, (s[..., 8:12] >> 4) | ((s[..., 4:8] >> 6) << 4)], -1)
    return lo, mn


def _q3_k_scales(sc: np.ndarray) -> np.ndarray:
    """Q3_K's 16 6-bit scales (minus 32) from 12 bytes (ggml's kmask1 / kmask2 shuffle)."""
    s = sc.astype(np.int32)
    low = np.concatenate([s[..., 0:8] & 0x0F, s[..., 0:8] >> 4], -1)  # scales 0-7, 8-15
    hi = s[..., 8:12]
    high = np.concatenate([(hi >> (2 * j)) & 3 for j in range(4)], -1)  # 2 bits of 4 scales each
    return (low | (high << 4)) - 32


def decode(blocks: np.ndarray, name: str, n: int, k: int) -> Codes:
    """The codes of ``n`` rows of ``k`` values held in ``blocks`` (uint8, checked by the caller)."""
    ts, bs = TYPE_SIZE[name], BLOCK_SIZE[name]
    b = np.ascontiguousarray(blocks).reshape(n, k // bs, ts)
    if name == "Q8_0":
        return Codes(b[..., 2:].view(np.int8).reshape(n, k), _f16(b[..., :2]), None, 8, 32, 0)
    if name == "Q4_0":
        c = _nibbles(b[..., 2:]).view(np.int8) - np.int8(8)
        return Codes(c.reshape(n, k), _f16(b[..., :2]), None, 4, 32, 0)
    if name == "Q4_1":
        c = _nibbles(b[..., 4:]).view(np.int8) - np.int8(8)
        return Codes(c.reshape(n, k), _f16(b[..., :2]), _f16(b[..., 2:4]), 4, 32, 8)
    if name in ("Q5_0", "Q5_1"):
        o = 2 if name == "Q5_0" else 4
        q = _nibbles(b[..., o + 4 :]) | (_bits32(b[..., o : o + 4]) << 4)
        c = q.view(np.int8) - np.int8(16)
        shift = _f16(b[..., 2:4]) if name == "Q5_1" else None
        return Codes(c.reshape(n, k), _f16(b[..., :2]), shift, 5, 32, 0 if name == "Q5_0" else 16)
    if name in ("Q4_K", "Q5_K"):
        d, dmin = _f16(b[..., 0:2]), _f16(b[..., 2:4])
        sc, mn = _scale_min_k4(b[..., 4:16])
        qs = b[..., -128:].reshape(n, k // 256, 4, 32)  # 4 chunks of 64 values
        q = np.concatenate([qs & 0x0F, qs >> 4], axis=-1)  # (.., 4, 64)
        if name == "Q4_K":
            c = q.view(np.int8) - np.int8(8)
            return _k(c.reshape(n, k), d, sc, 4, 32, 8, dmin, mn)
        qh = b[..., 16:48][..., None, :]  # the same 32 bytes for every chunk
        j = np.arange(4, dtype=np.uint8)[:, None]
        high = np.concatenate([(qh >> (2 * j)) & 1, (qh >> (2 * j + 1)) & 1], axis=-1)
        c = (q | (high << 4)).view(np.int8) - np.int8(16)
        return _k(c.reshape(n, k), d, sc, 5, 32, 16, dmin, mn)
    if name == "Q6_K":
        ql, qh = b[..., 0:128].reshape(n, -1, 2, 64), b[..., 128:192].reshape(n, -1, 2, 1, 32)
        sc = b[..., 192:208].view(np.int8)
        d = _f16(b[..., 208:210])
        low = np.concatenate(
            [ql[..., 0:32] & 0x0F, ql[..., 32:64] & 0x0F, ql[..., 0:32] >> 4, ql[..., 32:64] >> 4],
            -1,
        )
        sh = np.array([0, 2, 4, 6], np.uint8)[:, None]
        high = ((qh >> sh) & 3).reshape(n, -1, 2, 128)
        c = (low | (high << 4)).view(np.int8) - np.int8(32)
        return _k(c.reshape(n, k), d, sc, 6, 16, 0)
    if name == "Q2_K":
        sc = b[..., 0:16]
        qs = b[..., 16:80].reshape(n, -1, 2, 1, 32)
        d, dmin = _f16(b[..., 80:82]), _f16(b[..., 82:84])
        sh = np.array([0, 2, 4, 6], np.uint8)[:, None]
        q = ((qs >> sh) & 3).reshape(n, k)
        return _k(q.view(np.int8) - np.int8(8), d, sc & 0x0F, 4, 16, 8, dmin, sc >> 4)
    if name == "Q3_K":
        hm = b[..., 0:32][..., None, :]  # bit j of hmask[l]: value l of the j-th 32
        qs = b[..., 32:96].reshape(n, -1, 2, 1, 32)
        d = _f16(b[..., 108:110])
        sh = np.array([0, 2, 4, 6], np.uint8)[:, None]
        low = ((qs >> sh) & 3).reshape(n, -1, 256)
        j = np.arange(8, dtype=np.uint8)[:, None]
        high = ((hm >> j) & 1).reshape(n, -1, 256)  # set: no - 4
        c = low.view(np.int8) - np.int8(4) * (1 - high).view(np.int8)
        return _k(c.reshape(n, k), d, _q3_k_scales(b[..., 96:108]), 4, 16, 0)
    raise ValueError(f"type: unknown {name!r}")  # pragma: no cover (checked by the caller)
