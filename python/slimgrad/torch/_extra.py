"""Lion and AdamW8bit for torch: slimgrad's own optimizers, in torch's API.

Their kernels work on float32/float64 arrays. float16/bfloat16 parameters are
widened into a float32 copy for the step and rounded back to nearest even (one
copy of the parameter and its gradient per step); their states stay float32
(Lion's ``exp_avg``) or 8-bit codes with float32 scales (AdamW8bit).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from .. import _core
from ..optim._adamw8bit import BLOCK_SIZE, AdamW8bitOptions
from ..optim._extra import adam_coefficients
from ..optim._keywords import MaximizeKeyword
from ..optim._lion import LionOptions
from ._base import HALF, TorchOptimizer, as_array, check_options
from ._fused import _Fused, _lr

__all__ = ["Lion", "AdamW8bit"]


def _work(params: list[torch.Tensor]) -> tuple[list[np.ndarray], list[np.ndarray], bool]:
    """Arrays the float32/float64 kernels step: the params' memory, or float32 copies."""
    if params[0].dtype not in HALF:
        return [as_array(p) for p in params], [as_array(p.grad) for p in params], False
    work = [p.detach().float().numpy() for p in params]
    grads = [p.grad.float().numpy() for p in params]
    return work, grads, True


def _round_back(params: list[torch.Tensor], work: list[np.ndarray]) -> None:
    for p, w in zip(params, work):
        p.detach().copy_(torch.from_numpy(w))  # float32 -> half: round to nearest even


class Lion(LionOptions, MaximizeKeyword, _Fused):
    """Lion (Chen et al., 2023) as a torch optimizer; see :class:`slimgrad.optim.Lion`.

    ``u = sign(beta1 * m + (1 - beta1) * g); p = p * (1 - lr * wd) - lr * u;
    m = beta2 * m + (1 - beta2) * g``, one fused pass of the main optimizer
    family (the ``lion`` row). State: ``step`` and ``exp_avg`` (float32 for
    float16/bfloat16 parameters, the layout of the ``lion-pytorch`` package).
    """

    _algo = "lion"

    def _defaults(self, options: dict[str, Any]) -> dict[str, Any]:
        return check_options(options)

    def _state_keys(self, group: dict[str, Any]) -> list[str]:
        return ["exp_avg"]

    def _state_dtype(self, group: dict[str, Any], p: torch.Tensor, key: str) -> torch.dtype:
        return torch.float32 if p.dtype in HALF else p.dtype

    def _set_args(self, args: Any, group: dict[str, Any]) -> None:
        args.beta1, args.beta2 = (float(b) for b in group["betas"])
        args.weight_decay = float(group["weight_decay"])
        args.maximize = bool(group["maximize"])


class AdamW8bit(AdamW8bitOptions, MaximizeKeyword, TorchOptimizer):
    """AdamW with 8-bit blockwise moments as a torch optimizer.

    See :class:`slimgrad.optim.AdamW8bit` for the codes. State: ``step``,
    ``exp_avg`` (int8), ``exp_avg_sq`` (uint8, codes of ``sqrt(v)``),
    ``exp_avg_scale`` and ``exp_avg_sq_scale`` (float32, one per block of 256).
    """

    _defaults = Lion._defaults

    _DTYPES = {
        "exp_avg": torch.int8,
        "exp_avg_sq": torch.uint8,
        "exp_avg_scale": torch.float32,
        "exp_avg_sq_scale": torch.float32,
    }

    def _state_dtype(self, group, p, key):
        return self._DTYPES[key]

    def _init_state(self, group, p):
        blocks = (p.numel() + BLOCK_SIZE - 1) // BLOCK_SIZE
        return {
            "exp_avg": torch.zeros(p.shape, dtype=torch.int8),
            "exp_avg_sq": torch.zeros(p.shape, dtype=torch.uint8),
            "exp_avg_scale": torch.zeros(blocks, dtype=torch.float32),
            "exp_avg_sq_scale": torch.zeros(blocks, dtype=torch.float32),
        }

    def _run(self, group, params, step):
        work, grads, half = _work(params)
        st = {k: self._states(group, params, k) for k in self._DTYPES}
        _core.optim.adamw8bit_step(
            work,
            grads,
            st["exp_avg"],
            st["exp_avg_sq"],
            st["exp_avg_scale"],
            st["exp_avg_sq_scale"],
            [f"[{i}]" for i in range(len(params))],
            **adam_coefficients(group, step, lr=_lr(group["lr"])),
            maximize=bool(group["maximize"]),
        )
        if half:
            _round_back(params, work)
