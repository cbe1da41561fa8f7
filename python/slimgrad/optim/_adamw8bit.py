"""AdamW with both moments stored as 8-bit codes, blockwise scaled."""

from __future__ import annotations

from typing import Any

import numpy as np

from .. import _core
from ._bucket import Bucket
from ._checks import check_torch_flags
from ._extra import ExtraOptimizer, round_back

BLOCK_SIZE = 256


def quantize_moment(x: np.ndarray, signed: bool) -> tuple[np.ndarray, np.ndarray]:
    """8-bit blockwise square-law codes of a float32 array: ``(codes, scales)``.

    ``scale`` is the absmax of each block of 256 consecutive elements (float32,
    one per block; the last block may be shorter). ``signed=True``: int8 codes
    ``c = rint(127 * sqrt(|x| / scale)) * sign(x)`` in [-127, 127], decoded as
    ``scale * (c/127) * |c/127|``; ``signed=False`` (``x >= 0``): uint8 codes
    ``c = rint(255 * sqrt(x / scale))``, decoded as ``scale * (c/255)**2``.
    ``rint`` rounds ties to even; ``1/scale`` is applied as a multiplication.
    A block whose absmax is below the smallest normal float32 is coded as
    zeros. AdamW8bit codes its first moment with the signed map and the
    square root of its second moment with the unsigned one. ``x`` must be a
    C-contiguous float32 array (``TypeError`` otherwise); it is not modified.
    """
    codes = np.empty(x.shape, np.int8 if signed else np.uint8)
    scales = np.empty((x.size + BLOCK_SIZE - 1) // BLOCK_SIZE, np.float32)
    _core.optim.quantize_moment(x, codes, scales)
    return codes, scales


def dequantize_moment(codes: np.ndarray, scales: np.ndarray) -> np.ndarray:
    """Float32 values of 8-bit codes (int8: signed map, uint8: unsigned map), a new array."""
    out = np.empty(codes.shape, np.float32)
    _core.optim.dequantize_moment(codes, scales, out)
    return out


class AdamW8bit(ExtraOptimizer):
    """AdamW (torch semantics) with 8-bit blockwise-quantized moments.

    The update is torch's AdamW::

        p = p * (1 - lr * weight_decay)
        m = beta1 * m + (1 - beta1) * g;   v = beta2 * v + (1 - beta2) * g**2
        p = p - lr / (1 - beta1**t) * m / (sqrt(v) / sqrt(1 - beta2**t) + eps)

    but ``m`` and ``v`` live as one byte per element plus one float32 scale
    (the block's absmax) per block of 256 elements, in the spirit of
    bitsandbytes' blockwise quantization. Instead of its dynamic-tree table
    the maps are square-law companders (see :func:`quantize_moment`), which
    keep resolution for small values, need no table lookups (SIMD-friendly)
    and give the same codes on every ISA:

    * ``m`` (signed, int8): ``m = scale * (c/127) * |c/127|`` — relative
      resolution ~0.8 % near the block's max, smallest non-zero magnitude
      ``scale * 6e-5``;
    * ``v`` (non-negative, uint8) is stored through ``s = sqrt(v)``, the
      quantity the update divides by: ``s = scale * (c/255)**2`` (so
      ``v = scale**2 * (c/255)**4``) — ``s`` resolution ~0.4 % at the top and
      down to ``scale * 1.5e-5``, so elements with a small ``v`` are not
      flushed to 0 (which would turn ``m / (sqrt(v) + eps)`` into ``m / eps``).
      The update computes ``sqrt(v)`` anyway; encoding takes one more root
      per moment (from the 14-bit rsqrt estimate on AVX-512, so a code may
      differ by one near a rounding boundary).

    Each block is dequantized, updated in float32 and requantized in the same
    pass (read p, g, 2 code bytes; write p, 2 code bytes; plus the scales).
    State memory: 2 bytes + 8/256 bytes per element = 25.4 % of fp32 AdamW's
    8 bytes.

    Parameters
    ----------
    params
        Dict, list or param groups of float32/float64/float16/bfloat16
        C-contiguous arrays, updated in place (see :class:`Optimizer`).
    lr, betas, eps, weight_decay, maximize
        As torch.optim.AdamW (``weight_decay`` default 1e-2).
    block_size : int
        Elements per scale; only 256 is supported.
    nonfinite : str
        ``"raise"`` (default), ``"skip"`` or ``"ignore"``; see :class:`Optimizer`.

    State per parameter: ``"exp_avg"`` (int8, param's shape),
    ``"exp_avg_sq"`` (uint8, codes of ``sqrt(v)``), ``"exp_avg_scale"`` and
    ``"exp_avg_sq_scale"`` (float32, one per block: the block's max ``|m|``
    and max ``sqrt(v)``), ``"step"``.

    Raises
    ------
    ValueError
        Negative ``lr``/``eps``/``weight_decay``, a beta outside [0, 1),
        ``block_size`` other than 256.
    """

    _algo = "adamw8bit"

    def __init__(
        self,
        params: Any,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 1e-2,
        block_size: int = BLOCK_SIZE,
        *,
        maximize: bool = False,
        foreach: bool | None = None,
        fused: bool | None = None,
        capturable: bool = False,
        differentiable: bool = False,
        nonfinite: str = "raise",
    ) -> None:
        check_torch_flags(foreach, fused, capturable, differentiable)
        if block_size != BLOCK_SIZE:
            raise ValueError(
                f"block_size: expected {BLOCK_SIZE} (the only size the kernels support), "
                f"got {block_size!r}"
            )
        defaults = dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, maximize=maximize)
        super().__init__(params, defaults, nonfinite=nonfinite)

    def _init_state(self, group: dict[str, Any], param: np.ndarray) -> dict[str, Any]:
        blocks = (param.size + BLOCK_SIZE - 1) // BLOCK_SIZE
        return {
            "exp_avg": np.zeros(param.shape, np.int8),
            "exp_avg_sq": np.zeros(param.shape, np.uint8),
            "exp_avg_scale": np.zeros(blocks, np.float32),
            "exp_avg_sq_scale": np.zeros(blocks, np.float32),
        }

    def _step_bucket(
        self, group: dict[str, Any], bucket: Bucket, check: bool
    ) -> tuple[int, int] | None:
        work, grads, bad = self._prepare(bucket, check)
        if bad is not None:
            return bad
        beta1, beta2 = group["betas"]
        s = bucket.states
        _core.optim.adamw8bit_step(
            work,
            grads,
            s["exp_avg"],
            s["exp_avg_sq"],
            s["exp_avg_scale"],
            s["exp_avg_sq_scale"],
            bucket.labels,
            lr=float(group["lr"]),
            beta1=float(beta1),
            beta2=float(beta2),
            eps=float(group["eps"]),
            weight_decay=float(group["weight_decay"]),
            step=int(bucket.step),
            maximize=bool(group["maximize"]),
        )
        round_back(bucket)
        return None
