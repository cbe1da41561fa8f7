"""torch.optim optimizers whose step runs slimgrad's fused kernels on CPU tensors.

Drop-in subclasses of :class:`torch.optim.Optimizer` (``zero_grad``, closures,
step and state-dict hooks, ``add_param_group``, torch's LR schedulers and state
dict format all come from torch)::

    import slimgrad.torch as st
    opt = st.AdamW(model.parameters(), lr=3e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=3e-4, total_steps=1000)
    for x, y in data:
        opt.zero_grad()
        loss_fn(model(x), y).backward()
        opt.step()
        sched.step()

``step`` reads each CPU tensor's memory as a NumPy array (no copy; bfloat16
through an int16 view reinterpreted as ``ml_dtypes.bfloat16``) and updates
parameters and state in place, one fused C++ pass per group of same-dtype
tensors. Needs PyTorch: ``pip install 'slimgrad[torch]'``. See docs/torch.md.
"""

from __future__ import annotations

try:
    import torch as _torch  # noqa: F401
except ImportError as exc:  # pragma: no cover - exercised only without torch
    raise ImportError(
        "slimgrad.torch needs PyTorch, which is not installed: "
        "pip install 'slimgrad[torch]' (or pip install torch)"
    ) from exc

from ._adaptive import ASGD, AdamWScheduleFree, Rprop, SGDScheduleFree
from ._extra import AdamW8bit, Lion
from ._fused import SGD, Adagrad, Adam, AdamW, RMSprop
from ._muon_prodigy import Muon, Prodigy

__all__ = [
    "SGD",
    "Adam",
    "AdamW",
    "Adagrad",
    "RMSprop",
    "Lion",
    "AdamW8bit",
    "ASGD",
    "Rprop",
    "AdamWScheduleFree",
    "SGDScheduleFree",
    "Muon",
    "Prodigy",
]
