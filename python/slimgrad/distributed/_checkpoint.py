"""Sharded checkpoints: one :func:`slimgrad.save` file per rank plus an index.

``save(directory, **state)`` (a collective) writes, for a save tagged ``T``:

* ``rank-00000-of-00004.T.safetensors`` ... one per rank: each
  :class:`ZeroRedundancyOptimizer` entry's pieces and their state;
* ``common.T.safetensors`` (rank 0): every other entry (params, epoch,
  scheduler state...) and what the optimizer entries need to be read back
  (param groups, names, shapes, class);
* ``index.json`` last, atomically (temporary file + fsync + rename): it
  names the files of the save. Files of older saves are removed after it.

Each file is written atomically by :func:`slimgrad.save`; since the index is
replaced only once every file of the new save is complete, a crash at any
point leaves the previous checkpoint loadable.

``load(directory)`` needs no MPI: it returns the entries, the optimizer ones
as :class:`ShardedState` handles that load onto any number of ranks
(``zero.load_state_dict(handle)``) or into one unsharded optimizer
(``opt.load_state_dict(handle.consolidated())``).
"""

from __future__ import annotations

import json
import os
import secrets
from typing import Any

from ._zero_state import _outer_groups as outer_groups
from ._zero_state import assemble

__all__ = ["ShardedState", "load", "save"]

INDEX = "index.json"
FORMAT = "slimgrad-sharded-checkpoint"


def _write_json_atomic(path: str, obj: Any) -> None:
    tmp = f"{path}.tmp{os.getpid()}"
    try:
        with open(tmp, "w") as f:
            json.dump(obj, f, indent=1)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def save(directory: str | os.PathLike, **state: Any) -> None:
    """Write a sharded checkpoint of ``state`` into ``directory`` (created if needed).

    A collective: every rank calls it with the same entry names. Entries that
    are a :class:`~slimgrad.distributed.ZeroRedundancyOptimizer` are written
    as one file per rank (each rank writes only its shard); all other entries
    are taken from rank 0 and written once, as :func:`slimgrad.save` would.

    Raises
    ------
    OSError
        A rank could not write (raised on every rank; the previous checkpoint
        in ``directory``, if any, is still the one ``load`` reads).
    """
    from .. import checkpoint
    from ._data_parallel import default_communicator
    from ._zero import ZeroRedundancyOptimizer

    zeros = {k: v for k, v in state.items() if isinstance(v, ZeroRedundancyOptimizer)}
    common = {k: v for k, v in state.items() if k not in zeros}
    comm = next(iter(zeros.values())).comm if zeros else default_communicator()
    directory = os.fspath(directory)
    tag = comm.bcast_object(secrets.token_hex(4))
    n, r = comm.size, comm.rank
    shard = f"rank-{r:05d}-of-{n:05d}.{tag}.safetensors"
    error = None
    try:
        os.makedirs(directory, exist_ok=True)
        checkpoint.save(
            os.path.join(directory, shard), **{k: z.local_state() for k, z in zeros.items()}
        )
        if r == 0:
            meta = {
                k: {
                    "class": z.optimizer_class.__name__,
                    "keys": z._keys,
                    "shapes": [list(p.shape) for p in z._params],
                    "param_groups": outer_groups(z),
                }
                for k, z in zeros.items()
            }
            common_path = os.path.join(directory, f"common.{tag}.safetensors")
            checkpoint.save(common_path, __sharded__=meta, **common)
    except (OSError, TypeError, ValueError) as e:
        error = f"rank {r}: {type(e).__name__}: {e}"
    errors = [e for e in comm.allgather_object(error) if e is not None]
    if errors:
        raise OSError(f"slimgrad.distributed.save({directory!r}) failed; {errors[0]}")
    pieces = {k: [[list(t) for t in rp] for rp in z.all_pieces] for k, z in zeros.items()}
    if r == 0:
        files = [f"rank-{i:05d}-of-{n:05d}.{tag}.safetensors" for i in range(n)]
        index = {
            "format": FORMAT,
            "version": 1,
            "world_size": n,
            "common": f"common.{tag}.safetensors",
            "shards": files,
            "pieces": pieces,
        }
        _write_json_atomic(os.path.join(directory, INDEX), index)
        keep = set(files) | {index["common"], INDEX}
        for name in os.listdir(directory):  # files of earlier saves
            if (
                name.endswith(".safetensors")
                and name.startswith(("rank-", "common."))
                and name not in keep
            ):
                os.remove(os.path.join(directory, name))
    comm.barrier()


class ShardedState:
    """An optimizer entry of a sharded checkpoint, read lazily from its rank files."""

    def __init__(self, directory: str, index: dict[str, Any], name: str, meta: dict[str, Any]):
        self.directory = directory
        self.name = name
        self.index = index
        self.keys = list(meta["keys"])
        self.shapes = {k: tuple(s) for k, s in zip(self.keys, meta["shapes"])}
        self.optimizer_class = meta["class"]
        self.param_groups = meta["param_groups"]
        self._files: dict[int, Any] = {}

    def __getitem__(self, item: str) -> Any:
        if item == "param_groups":
            return self.param_groups
        if item == "state":
            return self.full_state(self.keys)
        raise KeyError(item)

    def _shard(self, rank: int) -> dict[str, Any]:
        from .. import checkpoint

        if rank not in self._files:
            path = os.path.join(self.directory, self.index["shards"][rank])
            self._files[rank] = checkpoint.load(path)[self.name]
        return self._files[rank]

    def full_state(self, keys: list[Any]) -> dict[Any, dict[str, Any]]:
        """Whole state of the parameters ``keys``, reading only the files that hold them."""
        wanted = set(keys)
        parts: dict[Any, list] = {}
        for rank, pieces in enumerate(self.index["pieces"][self.name]):
            hits = [p for p in pieces if p[0] in wanted]
            if not hits:
                continue
            shard = self._shard(rank)
            for key, lo, hi, whole in shard["pieces"]:
                name = str(key) if whole else f"{key}@{lo}:{hi}"
                if key in wanted and name in shard["state"]:
                    parts.setdefault(key, []).append((lo, hi, whole, shard["state"][name]))
        return {k: assemble(self.shapes[k], parts[k]) for k in keys if k in parts}

    def consolidated(self) -> dict[str, Any]:
        """The unsharded optimizer's state dict (for ``optimizer.load_state_dict``)."""
        return {"state": self.full_state(self.keys), "param_groups": self.param_groups}

    def __repr__(self) -> str:
        return (
            f"ShardedState({self.optimizer_class}, {len(self.keys)} params, "
            f"{self.index['world_size']} shards in {self.directory!r})"
        )


def load(directory: str | os.PathLike) -> dict[str, Any]:
    """Read a checkpoint written by :func:`save` (any number of ranks, or no MPI at all).

    Returns
    -------
    dict
        The entries as saved; each sharded optimizer entry is a
        :class:`ShardedState` (pass it to ``ZeroRedundancyOptimizer.load_state_dict``,
        or its ``consolidated()`` to an unsharded optimizer's ``load_state_dict``).

    Raises
    ------
    OSError
        No ``index.json`` in ``directory``, or a file it names is missing.
    ValueError
        ``index.json`` is not a slimgrad sharded checkpoint index.
    """
    from .. import checkpoint

    directory = os.fspath(directory)
    path = os.path.join(directory, INDEX)
    with open(path) as f:
        index = json.load(f)
    if not isinstance(index, dict) or index.get("format") != FORMAT:
        raise ValueError(f"{path}: not a slimgrad sharded checkpoint index (format {FORMAT!r})")
    for name in [index["common"], *index["shards"]]:
        if not os.path.exists(os.path.join(directory, name)):
            raise OSError(f"{path}: names {name!r}, which does not exist (incomplete checkpoint)")
    out = checkpoint.load(os.path.join(directory, index["common"]))
    meta = out.pop("__sharded__", {})
    for name, m in meta.items():
        out[name] = ShardedState(directory, index, name, m)
    return out
