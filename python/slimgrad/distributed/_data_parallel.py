"""Data parallelism: broadcast parameters, average gradients, wrap an optimizer."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from ._comm import Communicator
from ._flat import FlatSpace, keys_of

__all__ = [
    "DEFAULT_BUCKET_BYTES",
    "DistributedOptimizer",
    "allreduce_gradients",
    "batch_slice",
    "broadcast_parameters",
    "default_communicator",
]

DEFAULT_BUCKET_BYTES = 25 * 2**20  # torch DDP's default bucket (25 MiB)

_default: Communicator | None = None


def default_communicator() -> Communicator:
    """The :class:`Communicator` on ``MPI.COMM_WORLD`` used when none is given (created once)."""
    global _default
    if _default is None:
        _default = Communicator()
    return _default


def _arrays(tree: Any, what: str) -> list[np.ndarray]:
    if isinstance(tree, np.ndarray):
        items = [tree]
    elif isinstance(tree, Mapping):
        items = list(tree.values())
    elif isinstance(tree, (list, tuple)):
        items = list(tree)
    else:
        raise TypeError(f"{what}: expected a dict, a list or an ndarray, got {type(tree).__name__}")
    for i, a in enumerate(items):
        if not isinstance(a, np.ndarray) or not a.flags.c_contiguous or not a.flags.writeable:
            got = (
                type(a).__name__
                if not isinstance(a, np.ndarray)
                else "a read-only or non-contiguous array"
            )
            raise TypeError(f"{what}[{i}]: expected a writable C-contiguous ndarray, got {got}")
    return items


def _by_dtype(arrays: list[np.ndarray]) -> list[FlatSpace]:
    groups: dict[np.dtype, list[np.ndarray]] = {}
    for a in arrays:
        groups.setdefault(a.dtype, []).append(a)
    return [FlatSpace(v) for v in groups.values()]


def _bucket_elems(bucket_bytes: int, itemsize: int) -> int:
    if int(bucket_bytes) < 1024:
        raise ValueError(f"bucket_bytes: expected >= 1024, got {bucket_bytes!r}")
    return max(1, int(bucket_bytes) // itemsize)


def broadcast_parameters(params: Any, root: int = 0, comm: Communicator | None = None) -> None:
    """Overwrite ``params`` on every rank with rank ``root``'s values, in place.

    Parameters
    ----------
    params : dict, list or ndarray
        Writable C-contiguous arrays of any dtype, the same structure on every rank.
        Arrays of one :func:`~slimgrad.optim.flatten` arena go in one message per dtype.
    root : int
        The rank whose values are kept.
    comm : Communicator, optional
        Default: :func:`default_communicator`.
    """
    comm = comm or default_communicator()
    for space in _by_dtype(_arrays(params, "params")):
        if space.flat is not None:
            comm.bcast_(space.flat, root)
        else:
            for a in space.arrays:
                comm.bcast_(a, root)


def allreduce_gradients(
    grads: Any,
    average: bool = True,
    *,
    comm: Communicator | None = None,
    bucket_bytes: int = DEFAULT_BUCKET_BYTES,
) -> Any:
    """Sum (or average) gradients over all ranks, in place, deterministically.

    Parameters
    ----------
    grads : dict, list or ndarray
        Writable C-contiguous float arrays (float32, float64, float16,
        bfloat16), the same names, shapes and dtypes on every rank.
    average : bool
        Divide the sum by the number of ranks (default True).
    comm : Communicator, optional
        Default: :func:`default_communicator`.
    bucket_bytes : int
        Size of one flat bucket: one allreduce (a reduce-scatter + an
        all-gather) per bucket. Arrays of one dtype that are consecutive views
        of one buffer (a :func:`~slimgrad.optim.flatten` arena) are reduced
        directly in that buffer, with no copy; other arrays are packed into a
        bucket buffer and unpacked after.

    Returns
    -------
    The same ``grads`` object; every rank holds the same bits: for each
    element ``(((g_0 + g_1) + g_2) + ...) / N`` in rank order (2-byte floats
    accumulated in float32 and rounded once).

    Raises
    ------
    TypeError
        ``grads`` is not a dict/list/ndarray of writable C-contiguous arrays.
    CollectiveTimeout
        Another rank did not take part within the communicator's timeout.
    """
    comm = comm or default_communicator()
    spaces = _by_dtype(_arrays(grads, "grads"))
    for space in spaces:
        if space.dtype.kind != "f" and space.dtype.name != "bfloat16":
            raise TypeError(f"grads: expected float arrays, got {space.dtype.name}")
    if comm.size == 1:
        return grads
    for space in spaces:
        step = _bucket_elems(bucket_bytes, space.dtype.itemsize)
        for lo in range(0, space.size, step):
            hi = min(lo + step, space.size)
            if space.flat is not None:
                comm.allreduce_(space.flat[lo:hi], average=average)
            else:
                buf = comm._workspace(space.dtype, hi - lo, slot=2)
                space.gather(lo, hi, buf)
                comm.allreduce_(buf, average=average)
                space.scatter(lo, hi, buf)
    return grads


def batch_slice(n: int, comm: Communicator | None = None) -> slice:
    """This rank's contiguous part of a batch of ``n`` samples (sizes differ by at most one)."""
    comm = comm or default_communicator()
    lo = n * comm.rank // comm.size
    return slice(lo, n * (comm.rank + 1) // comm.size)


def describe_optimizer(opt: Any, params: list[np.ndarray], keys: list[Any]) -> dict[str, Any]:
    """What must agree between ranks: class, options, names, shapes, dtypes."""
    out: dict[str, Any] = {
        "optimizer": type(opt).__name__,
        "nonfinite": getattr(opt, "nonfinite", None),
    }
    for gi, g in enumerate(opt.param_groups):
        for k, v in g.items():
            if k != "params":
                out[f"param_groups[{gi}][{k!r}]"] = repr(v)
    out["parameter names"] = keys
    for k, p in zip(keys, params):
        out[f"params[{k!r}]"] = (p.dtype.name, p.shape)
    return out


class DistributedOptimizer:
    """Data-parallel wrapper: ``step(grads)`` averages gradients over ranks, then steps.

    Every rank holds the whole model and the whole optimizer state (see
    :class:`ZeroRedundancyOptimizer` to shard the state). At construction the
    ranks check they hold the same optimizer class, options, names, shapes and
    dtypes (``ValueError`` on every rank naming the first difference) and
    rank 0's parameters are broadcast. The averaged gradients are the same
    bits on every rank, so every rank takes the same step, and the
    non-finite policy (raise / skip) acts alike on every rank.

    Parameters
    ----------
    optimizer
        A slimgrad optimizer (anything with ``param_groups``, ``step(grads)``).
    comm : Communicator, optional
    bucket_bytes : int
        See :func:`allreduce_gradients`.
    broadcast : bool
        Broadcast rank 0's parameters at construction (default True).

    ``step(grads)`` overwrites ``grads`` with their average (in place).
    ``param_groups``, ``state``, ``state_dict``, ``load_state_dict`` are the
    wrapped optimizer's, so schedulers work unchanged.
    """

    def __init__(
        self,
        optimizer: Any,
        comm: Communicator | None = None,
        *,
        bucket_bytes: int = DEFAULT_BUCKET_BYTES,
        broadcast: bool = True,
    ) -> None:
        self.optimizer = optimizer
        self.comm = comm or default_communicator()
        self.bucket_bytes = int(bucket_bytes)
        _bucket_elems(self.bucket_bytes, 1)
        keys = [k for ks in keys_of(optimizer.param_groups) for k in ks]
        params = [
            p
            for g in optimizer.param_groups
            for p in (g["params"].values() if isinstance(g["params"], Mapping) else g["params"])
        ]
        info = describe_optimizer(optimizer, params, keys)
        info["bucket_bytes"] = self.bucket_bytes
        self.comm.check_same("DistributedOptimizer", info)
        if broadcast:
            broadcast_parameters(params, 0, self.comm)

    @property
    def param_groups(self) -> list[dict[str, Any]]:
        return self.optimizer.param_groups

    @property
    def state(self) -> Any:
        return self.optimizer.state

    def state_dict(self) -> dict[str, Any]:
        return self.optimizer.state_dict()

    def load_state_dict(self, state_dict: Any) -> None:
        self.optimizer.load_state_dict(state_dict)

    def step(self, grads: Any) -> bool:
        """Average ``grads`` over ranks (in place), then step; returns the optimizer's result."""
        allreduce_gradients(grads, True, comm=self.comm, bucket_bytes=self.bucket_bytes)
        return self.optimizer.step(grads)

    def __repr__(self) -> str:
        return f"DistributedOptimizer({self.comm!r}, {self.optimizer!r})"
