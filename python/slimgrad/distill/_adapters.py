"""Teachers from other frameworks: a torch module as a NumPy-in, NumPy-out callable."""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["torch_teacher", "is_torch_object"]

FIX = (
    "wrap the torch model: Distiller(slimgrad.distill.torch_teacher(model), ...) "
    "(it runs the model in eval mode under torch.no_grad() and returns NumPy logits)"
)


def is_torch_object(obj: Any) -> bool:
    """A torch tensor or module (checked by type, without importing torch)."""
    return any(c.__module__.split(".")[0] == "torch" for c in type(obj).__mro__)


def refuse_torch(obj: Any, message: str) -> None:
    """TypeError ``message`` (``{}`` in it: the type's name) and :data:`FIX` if ``obj``
    is a torch tensor or module, which the NumPy workflow cannot take."""
    if is_torch_object(obj):
        raise TypeError(f"{message.format(type(obj).__name__)}; {FIX}")


def torch_teacher(model: Any, device: Any = "cpu", dtype: Any = None) -> Any:
    """A torch module as a teacher for :class:`~slimgrad.distill.Distiller`.

    The returned callable takes a NumPy batch, runs ``model`` on it in eval mode
    under ``torch.no_grad()`` (on ``device``, inputs cast to ``dtype`` when given,
    else to the model's first parameter's dtype for float inputs) and returns the
    logits as a float32 NumPy array: one copy of each batch in, one out.

    Parameters
    ----------
    model : torch.nn.Module
        Maps a batch tensor to 2-D logits.
    device : str or torch.device, default "cpu"
    dtype : torch.dtype, optional

    Returns
    -------
    callable
        ``x (ndarray) -> logits (float32 ndarray)``.
    """
    import torch

    model.eval()
    params = list(model.parameters())
    want = dtype if dtype is not None else (params[0].dtype if params else None)

    def teacher(x: np.ndarray) -> np.ndarray:
        t = torch.from_numpy(np.ascontiguousarray(x)).to(device)
        if want is not None and t.is_floating_point():
            t = t.to(want)
        with torch.no_grad():
            out = model(t)
        return out.detach().float().cpu().numpy()

    return teacher
