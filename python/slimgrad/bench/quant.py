"""Quant suite: quantize / dequantize, GGUF blocks and quantized GEMV on a
size x size float32 weight (default 4096 x 4096), next to torch, NumPy and
the gguf package."""

from __future__ import annotations

from collections.abc import Iterator
from functools import partial

import numpy as np

from .. import quant
from ..quant import gguf as sg
from . import Case, optional_import

DEFAULT_SIZE = 4096


def _numpy_int8_channel(w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    scale = (np.abs(w).max(axis=1) / np.float32(127)).astype(np.float32)
    inv = np.float32(1) / scale
    return np.clip(np.rint(w * inv[:, None]), -127, 127).astype(np.int8), scale


def _numpy_int4_group(w: np.ndarray, group: int = 32) -> tuple[np.ndarray, np.ndarray]:
    g = w.reshape(w.shape[0], -1, group)
    scale = (np.abs(g).max(axis=2) / np.float32(7)).astype(np.float32)
    q = (
        np.clip(np.rint(g * (np.float32(1) / scale)[..., None]), -7, 7)
        .astype(np.int8)
        .reshape(w.shape)
    )
    u = q.view(np.uint8) & 0x0F
    return u[:, 0::2] | (u[:, 1::2] << 4), scale


def _numpy_int4_dequant(packed: np.ndarray, scale: np.ndarray, group: int = 32) -> np.ndarray:
    lo = (packed & 0x0F).astype(np.int8)
    hi = (packed >> 4).astype(np.int8)
    q = np.empty((packed.shape[0], packed.shape[1] * 2), np.int8)
    q[:, 0::2] = np.where(lo > 7, lo - 16, lo)
    q[:, 1::2] = np.where(hi > 7, hi - 16, hi)
    g = q.reshape(q.shape[0], -1, group).astype(np.float32) * scale[..., None]
    return g.reshape(q.shape)


def cases(size: int) -> Iterator[Case]:
    torch = optional_import("torch")
    gguf = optional_import("gguf")
    rng = np.random.default_rng(0)
    w = rng.standard_normal((size, size), dtype=np.float32)
    n = w.size
    out = np.empty_like(w)

    # int8 per channel (torch's per-channel scheme)
    impls = {"slimgrad": lambda: quant.quantize(w, 8), "numpy": lambda: _numpy_int8_channel(w)}
    if torch is not None:
        import warnings

        warnings.filterwarnings("ignore", message=".*quantize_per_channel.*")
        warnings.filterwarnings("ignore", message=".*quantize_per_tensor.*")
        tw = torch.from_numpy(w)
        zeros = torch.zeros(size, dtype=torch.int64)

        def torch_quantize():
            scale = tw.abs().amax(dim=1).double() / 127
            return torch.quantize_per_channel(tw, scale, zeros, 0, torch.qint8)

        impls["torch quantize_per_channel"] = torch_quantize
    yield Case(
        "quantize int8/channel",
        impls,
        bytes=5 * n,
        note="scales (absmax per row) and codes; torch: amax + quantize_per_channel",
    )

    q8 = quant.quantize(w, 8)
    codes, scale = _numpy_int8_channel(w)
    impls = {
        "slimgrad": lambda: q8.dequantize(out),
        "numpy": lambda: np.multiply(codes, scale[:, None], out=out, dtype=np.float32),
    }
    if torch is not None:
        tq = torch_quantize()
        impls["torch dequantize"] = lambda: tq.dequantize()
    yield Case("dequantize int8/channel", impls, bytes=5 * n)

    yield Case(
        "quantize int4/group32",
        {
            "slimgrad": lambda: quant.quantize(w, 4, granularity="group", group_size=32),
            "numpy": lambda: _numpy_int4_group(w),
        },
        bytes=n * 4 + n // 2,
    )
    q4 = quant.quantize(w, 4, granularity="group", group_size=32)
    packed, scale4 = _numpy_int4_group(w)
    yield Case(
        "dequantize int4/group32",
        {
            "slimgrad": lambda: q4.dequantize(out),
            "numpy": lambda: _numpy_int4_dequant(packed, scale4),
        },
        bytes=n * 4 + n // 2,
    )

    for t, ts in (("Q8_0", 34), ("Q4_0", 18)):
        impls = {"slimgrad": partial(sg.quantize, w, t)}
        if gguf is not None:
            import gguf.quants as gq

            impls["gguf package"] = partial(gq.quantize, w, gguf.GGMLQuantizationType[t])
        yield Case(f"gguf quantize {t}", impls, bytes=4 * n + n // 32 * ts)

    x = rng.standard_normal(size, dtype=np.float32)
    y = np.empty(size, np.float32)
    for name, qt in (("int4/group32", q4), ("int8/channel", q8)):
        impls = {
            "slimgrad": partial(quant.matmul, x, qt, out=y),
            "numpy float32 W @ x": lambda: np.matmul(w, x, out=y),
        }
        if torch is not None:
            impls["torch float32 mv"] = partial(torch.mv, tw, torch.from_numpy(x))
        yield Case(
            f"GEMV {name}",
            impls,
            bytes=qt.nbytes + 4 * size,
            note="y = W x, one row (decoding); bytes = the quantized weight read once",
        )

    batch = 64
    xb = rng.standard_normal((batch, size), dtype=np.float32)
    impls = {"slimgrad": lambda: quant.matmul(xb, q4), "numpy float32 x @ W.T": lambda: xb @ w.T}
    yield Case(f"GEMM int4/group32 batch {batch}", impls, bytes=q4.nbytes + 8 * batch * size)

    a8 = rng.integers(-127, 128, (batch, size), dtype=np.int8)
    impls = {
        "slimgrad": lambda: quant.matmul_int8(a8, q8.data),
        "numpy float32 x @ W.T": lambda: xb @ w.T,
    }
    if torch is not None and hasattr(torch, "_int_mm"):
        ta, tb = torch.from_numpy(a8), torch.from_numpy(np.ascontiguousarray(q8.data.T))

        def torch_int_mm():
            return torch._int_mm(ta, tb)

        try:
            torch_int_mm()
            impls["torch _int_mm"] = torch_int_mm
        except RuntimeError:
            pass
    yield Case(
        f"int8 x int8 -> int32 batch {batch}",
        impls,
        bytes=n + batch * size * 5,
        note="a (64, n) int8 @ W8.T exact int32 (VNNI when present)",
    )
