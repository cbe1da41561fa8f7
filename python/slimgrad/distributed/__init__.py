"""Data-parallel training and ZeRO-sharded optimizer state over MPI.

Install with ``pip install 'slimgrad[mpi]'`` (mpi4py + mpich).

Run a script on N processes with ``mpiexec -n N python script.py``::

    import slimgrad.distributed as dist
    from slimgrad.optim import AdamW, flatten

    params = flatten(model.parameters())      # one arena: zero-copy communication
    opt = dist.ZeroRedundancyOptimizer(AdamW, params, lr=1e-3)   # state sharded 1/N
    # or: opt = dist.DistributedOptimizer(AdamW(params, lr=1e-3))  # replicated state
    for x, y in batches:
        x, y = x[dist.batch_slice(len(x))], y[dist.batch_slice(len(x))]
        ...                                    # forward / backward on this rank's part
        opt.step(grads)                        # averaged over ranks inside

Importing this module needs no MPI; mpi4py is imported when a
:class:`Communicator` is first made (``ImportError`` naming the ``mpi`` extra
if absent). Loading a sharded checkpoint (:func:`load`) needs no MPI at all.
See ``docs/distributed.md``.
"""

from __future__ import annotations

from ._checkpoint import ShardedState, load, save
from ._comm import CollectiveTimeout, Communicator
from ._data_parallel import (
    DistributedOptimizer,
    allreduce_gradients,
    batch_slice,
    broadcast_parameters,
    default_communicator,
)
from ._zero import ZeroRedundancyOptimizer

__all__ = [
    "CollectiveTimeout",
    "Communicator",
    "DistributedOptimizer",
    "ShardedState",
    "ZeroRedundancyOptimizer",
    "allreduce_gradients",
    "batch_slice",
    "broadcast_parameters",
    "default_communicator",
    "load",
    "save",
]
