"""AdamW with both moments stored as 8-bit codes, blockwise scaled."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from .. import _core
from ._bucket import Bucket
from ._extra import Arrays, ExtraOptimizer, Group, adam_coefficients, adamw_step
from ._keywords import SignedStepKeywords
from ._optimizers import AdamFamilyOptions

if TYPE_CHECKING:
    from dataclasses import KW_ONLY

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


class AdamW8bitOptions(AdamFamilyOptions):
    """AdamW's arguments, as torch.optim.AdamW's (of :class:`AdamW8bit` and
    :class:`slimgrad.torch.AdamW8bit`)."""

    weight_decay: float = 1e-2


class AdamW8bit(AdamW8bitOptions, SignedStepKeywords, ExtraOptimizer):
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
    min_8bit_size : int
        Parameters with fewer elements keep float32 moments (the param's
        dtype for float64) and take plain AdamW steps, as bitsandbytes does
        (its default is 4096; here 0, every parameter 8-bit, keeps the
        earlier behaviour). Their ``exp_avg_scale``/``exp_avg_sq_scale``
        are empty.
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

    block_size: int = BLOCK_SIZE
    _: KW_ONLY
    min_8bit_size: int = 0

    def _defaults(self, options: dict[str, Any]) -> dict[str, Any]:
        min_8bit_size, block_size = options.pop("min_8bit_size"), options.pop("block_size")
        if isinstance(min_8bit_size, bool) or not isinstance(min_8bit_size, (int, np.integer)):
            raise TypeError(f"min_8bit_size: expected an int, got {type(min_8bit_size).__name__}")
        if min_8bit_size < 0:
            raise ValueError(f"min_8bit_size: expected an int >= 0, got {min_8bit_size}")
        self.min_8bit_size = int(min_8bit_size)
        if block_size != BLOCK_SIZE:
            raise ValueError(
                f"block_size: expected {BLOCK_SIZE} (the only size the kernels support), "
                f"got {block_size!r}"
            )
        return options

    def _init_state(self, group: dict[str, Any], param: np.ndarray) -> dict[str, Any]:
        if param.size < self.min_8bit_size:
            empty = np.zeros(0, np.float32)
            return {
                "exp_avg": self.state_full(param),
                "exp_avg_sq": self.state_full(param),
                "exp_avg_scale": empty,
                "exp_avg_sq_scale": empty.copy(),
            }
        blocks = (param.size + BLOCK_SIZE - 1) // BLOCK_SIZE
        return {
            "exp_avg": np.zeros(param.shape, np.int8),
            "exp_avg_sq": np.zeros(param.shape, np.uint8),
            "exp_avg_scale": np.zeros(blocks, np.float32),
            "exp_avg_sq_scale": np.zeros(blocks, np.float32),
        }

    def _expected_state(self, key: str, param: np.ndarray) -> tuple[tuple[int, ...], np.dtype]:
        if param.size >= self.min_8bit_size:
            return super()._expected_state(key, param)
        if key in ("exp_avg", "exp_avg_sq"):  # float32 moments (min_8bit_size)
            return param.shape, self.state_dtype(param)
        return (0,), np.dtype(np.float32)

    def _update(self, group: Group, bucket: Bucket, work: Arrays, grads: Arrays) -> None:
        coefficients = adam_coefficients(group, bucket.step)
        s = bucket.states
        big = [i for i, a in enumerate(s["exp_avg"]) if a.dtype == np.int8]
        small = [i for i, a in enumerate(s["exp_avg"]) if a.dtype != np.int8]
        if big and small:  # two kernel calls: both checked before the first runs
            self._validate_all([bucket])
        if big:
            _core.optim.adamw8bit_step(
                [work[i] for i in big],
                [grads[i] for i in big],
                [s["exp_avg"][i] for i in big],
                [s["exp_avg_sq"][i] for i in big],
                [s["exp_avg_scale"][i] for i in big],
                [s["exp_avg_sq_scale"][i] for i in big],
                [bucket.labels[i] for i in big],
                **coefficients,
                maximize=bool(group["maximize"]),
            )
        if small:  # float32 moments: the fused AdamW kernel (the adam row, decoupled)
            adamw_step(
                coefficients,
                [work[i] for i in small],
                [grads[i] for i in small],
                [[s[k][i] for i in small] for k in ("exp_avg", "exp_avg_sq")],
                [bucket.labels[i] for i in small],
                maximize=bool(group["maximize"]),
            )
