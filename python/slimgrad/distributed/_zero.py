"""ZeRO stage 1: each rank keeps the optimizer state of its shard of the parameters only.

Layout. The parameters of one param group and one dtype form a *segment*, a
virtual flat range of elements in parameter order. Each segment is cut into
``N`` contiguous ranges, one per rank, as equal as the optimizer allows:
element-wise optimizers (SGD, Adam, AdamW, ... Lion) may cut an array
anywhere on a 16-element boundary (of the array), AdamW8bit on a 256-element
boundary (its quantization blocks, so blocks are the same as unsharded),
every other optimizer (LAMB's per-array trust ratio, Adafactor's factored
moments, user classes) only between arrays. (Stochastic rounding of
float16/bfloat16 params draws from counters of the element's position in the
kernel call, so its noise differs from an unsharded run: equally valid, still
reproducible for a given number of ranks.) A rank's *pieces* are the parts of arrays in
its ranges; it builds one ordinary slimgrad optimizer of ``optimizer_class``
on them (views into the user's arrays, so no parameter is copied), which
creates state for the pieces only.

One step: (1) the local gradients are reduce-scattered in rounds of
``bucket_bytes`` (every rank sends ``bucket_bytes/N`` to each other rank and
receives its own range's contributions, summed in rank order and averaged:
deterministic); (2) one small allgather agrees on non-finite gradients and,
with ``max_grad_norm``, on the global norm; (3) the inner optimizer steps the
shard; (4) the updated parameters are all-gathered in rounds, in place.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from . import _zero_state
from ._comm import Communicator, offsets
from ._data_parallel import (
    DEFAULT_BUCKET_BYTES,
    _bucket_elems,
    broadcast_parameters,
    default_communicator,
    describe_optimizer,
)
from ._flat import FlatSpace, Key, flat_grads, keys_of, label

__all__ = ["ZeroRedundancyOptimizer"]

# Optimizers whose update of an element reads only that element's param, grad and state.
_ELEMENTWISE = "SGD Adagrad RMSprop Adadelta Adam AdamW Adamax NAdam RAdam Lion".split()


def split_granularity(optimizer_class: type, groups: list[dict[str, Any]]) -> int | None:
    """Where an array may be cut between ranks: every g elements, or None (whole arrays)."""
    from .. import optim

    if any(optimizer_class is getattr(optim, n, None) for n in _ELEMENTWISE):
        return 16
    if optimizer_class is getattr(optim, "AdamW8bit", None):
        return 256
    return None


def partition(sizes: list[int], parts: int, granularity: int | None) -> list[int]:
    """Bounds ``b_0 = 0 <= ... <= b_parts = sum(sizes)`` of contiguous ranges, balanced."""
    starts = offsets(sizes)
    total = sum(sizes)
    bounds = [0]
    for k in range(1, parts):
        target = total * k // parts
        b = total
        for s, n in zip(starts, sizes):
            if s <= target < s + n:
                if granularity is None:
                    b = s if target - s <= s + n - target else s + n
                else:
                    b = s + min(n, round((target - s) / granularity) * granularity)
                break
        bounds.append(max(b, bounds[-1]))
    bounds.append(total)
    return bounds


@dataclass
class Piece:
    """The part ``[lo, hi)`` (flat, in the array) of parameter ``key`` owned by this rank."""

    group: int
    key: Key
    index: int  # position of the parameter in the flat order of all params
    lo: int
    hi: int
    whole: bool
    name: str  # the piece's name in the inner optimizer


@dataclass
class Segment:
    group: int
    dtype: np.dtype
    index: list[int]  # params of the segment, positions in the flat order
    bounds: list[int]
    params: FlatSpace
    grad: np.ndarray  # this rank's averaged gradients (its range)


def _aligned_empty(n: int, dtype: np.dtype) -> np.ndarray:
    dtype = np.dtype(dtype)
    raw = np.empty(n * dtype.itemsize + 64, np.uint8)
    start = (-raw.__array_interface__["data"][0]) % 64
    return raw[start : start + n * dtype.itemsize].view(dtype)


def _group_params(group: dict[str, Any]) -> list[np.ndarray]:
    p = group["params"]
    return list(p.values()) if isinstance(p, dict) else list(p)


class ZeroRedundancyOptimizer:
    """Data-parallel optimizer whose state is sharded over ranks (ZeRO stage 1).

    Parameters
    ----------
    optimizer_class : type
        Any slimgrad optimizer class (``slimgrad.optim.AdamW``, ...).
    params
        As for the optimizer: a dict, a list or param groups, the same names,
        shapes, dtypes and options on every rank (checked here: ``ValueError``
        on every rank naming the first difference). The arrays are updated in
        place and stay the caller's; rank 0's values are broadcast first.
        Keep them in a :func:`~slimgrad.optim.flatten` arena (and the
        gradients too) for zero-copy communication.
    comm : Communicator, optional
        Default :func:`default_communicator`.
    bucket_bytes : int
        Bytes per round of the reduce-scatter and the all-gather.
    max_grad_norm : float, optional
        Clip the averaged gradients to this global norm (over all ranks,
        ``grad_norm_type``; torch's ``clip_grad_norm_`` rule) before the step.
        The norm is :attr:`last_grad_norm`.
    nonfinite : str
        ``"raise"`` (default) / ``"skip"`` / ``"ignore"``: a NaN/inf in the
        averaged gradient (i.e. on any rank) raises ``FloatingPointError`` /
        skips the step on every rank, with nothing modified anywhere.
    **options
        The optimizer's options (``lr``, ``betas``, ``state_dtype``, ...).

    Attributes
    ----------
    param_groups : list of dict
        The full parameter groups; edit options (a scheduler does) and the
        next step uses them on every rank.
    optimizer
        The inner optimizer of this rank's pieces (None if the rank has none).
    """

    def __init__(
        self,
        optimizer_class: type,
        params: Any,
        *,
        comm: Communicator | None = None,
        bucket_bytes: int = DEFAULT_BUCKET_BYTES,
        max_grad_norm: float | None = None,
        grad_norm_type: float = 2.0,
        nonfinite: str = "raise",
        **options: Any,
    ) -> None:
        self.comm = comm or default_communicator()
        self.optimizer_class = optimizer_class
        self.options = dict(options)
        # The class parses params and validates options (state is lazy, so
        # this allocates nothing); its param_groups are ours.
        self._ref = optimizer_class(params, nonfinite=nonfinite, **options)
        self.param_groups: list[dict[str, Any]] = self._ref.param_groups
        self.nonfinite = nonfinite
        self.bucket_bytes = int(bucket_bytes)
        _bucket_elems(self.bucket_bytes, 1)
        if max_grad_norm is not None and not float(max_grad_norm) >= 0:
            raise ValueError(
                f"max_grad_norm: expected a number >= 0 or None, got {max_grad_norm!r}"
            )
        if not float(grad_norm_type) > 0:
            raise ValueError(
                f"grad_norm_type: expected a number > 0 or inf, got {grad_norm_type!r}"
            )
        self.max_grad_norm = None if max_grad_norm is None else float(max_grad_norm)
        self.grad_norm_type = float(grad_norm_type)
        self.last_grad_norm: float | None = None
        group_keys = keys_of(self.param_groups)
        self._keys: list[Key] = [k for ks in group_keys for k in ks]
        self._params = [p for g in self.param_groups for p in _group_params(g)]
        self._group_of = [gi for gi, ks in enumerate(group_keys) for _ in ks]
        self.granularity = split_granularity(optimizer_class, self.param_groups)
        info = describe_optimizer(self._ref, self._params, self._keys)
        info.update(
            bucket_bytes=self.bucket_bytes,
            max_grad_norm=self.max_grad_norm,
            grad_norm_type=self.grad_norm_type,
            options=repr(sorted(options.items())),
        )
        self.comm.check_same("ZeroRedundancyOptimizer", info)
        broadcast_parameters(self._params, 0, self.comm)
        self._layout()
        self.optimizer = self._new_inner()

    # ---------------------------------------------------------------- layout
    def _layout(self) -> None:
        n, r = self.comm.size, self.comm.rank
        self.segments: list[Segment] = []
        self.pieces: list[Piece] = []
        self.all_pieces: list[list[tuple[Key, int, int]]] = [[] for _ in range(n)]
        seen: dict[tuple[int, np.dtype], list[int]] = {}
        for i, (p, gi) in enumerate(zip(self._params, self._group_of)):
            seen.setdefault((gi, p.dtype), []).append(i)
        for (gi, dtype), index in seen.items():
            sizes = [self._params[i].size for i in index]
            bounds = partition(sizes, n, self.granularity)
            space = FlatSpace([self._params[i] for i in index])
            for rank in range(n):
                lo, hi = bounds[rank], bounds[rank + 1]
                for j, a, b in space.pieces(lo, hi):
                    i = index[j]
                    self.all_pieces[rank].append((self._keys[i], a, b))
                    if rank == r:
                        whole = a == 0 and b == self._params[i].size
                        key = self._keys[i]
                        name = str(key) if whole else f"{key}@{a}:{b}"
                        self.pieces.append(Piece(gi, key, i, a, b, whole, name))
            grad = _aligned_empty(bounds[r + 1] - bounds[r], dtype)
            self.segments.append(Segment(gi, dtype, index, bounds, space, grad))
        # Zero-size params belong to no range: rank 0 keeps them (state: a step count).
        for i, p in enumerate(self._params):
            if p.size == 0 and not any(pc.index == i for pc in self.pieces) and r == 0:
                self.pieces.append(
                    Piece(self._group_of[i], self._keys[i], i, 0, 0, True, str(self._keys[i]))
                )
        self.pieces.sort(key=lambda pc: (pc.group, pc.index, pc.lo))
        # Inner gradients: views of the segments' gradient buffers, per piece.
        self._piece_grads: dict[str, np.ndarray] = {}
        for seg in self.segments:
            my_lo = seg.bounds[self.comm.rank]
            for pc in self.pieces:
                if pc.group != seg.group or pc.index not in seg.index:
                    continue
                j = seg.index.index(pc.index)
                off = seg.params.starts[j] + pc.lo - my_lo
                g = seg.grad[off : off + pc.hi - pc.lo]
                self._piece_grads[pc.name] = (
                    g.reshape(self._params[pc.index].shape) if pc.whole else g
                )
        for pc in self.pieces:  # zero-size params: a zero-size gradient
            p = self._params[pc.index]
            self._piece_grads.setdefault(pc.name, np.zeros(p.shape, p.dtype))
        self._inner_grads = [
            {pc.name: self._piece_grads[pc.name] for pc in self.pieces if pc.group == gi}
            for gi in self._inner_groups()
        ]

    def _piece_view(self, pc: Piece) -> np.ndarray:
        p = self._params[pc.index]
        return p if pc.whole else p.reshape(-1)[pc.lo : pc.hi]

    def _inner_groups(self) -> list[int]:
        return sorted({pc.group for pc in self.pieces})

    def _new_inner(self) -> Any:
        groups = []
        for gi in self._inner_groups():
            # Only the class's options: a scheduler's "initial_lr" is not one.
            opts = {k: v for k, v in self.param_groups[gi].items() if k in self._ref.defaults}
            ps = {pc.name: self._piece_view(pc) for pc in self.pieces if pc.group == gi}
            groups.append({"params": ps, **opts})
        if not groups:
            return None
        # The non-finite check is done here, across ranks, before the inner step.
        return self.optimizer_class(groups, nonfinite="ignore", **self.options)

    # ------------------------------------------------------------------ step
    def _sync_groups(self) -> None:
        if self.optimizer is None:
            return
        for inner, gi in zip(self.optimizer.param_groups, self._inner_groups()):
            for k, v in self.param_groups[gi].items():
                if k != "params":
                    inner[k] = v

    def step(self, local_grads: Any) -> bool:
        """Average ``local_grads`` over ranks, step this rank's shard, all-gather the params.

        Parameters
        ----------
        local_grads
            This rank's gradients, the structure of ``params`` (dict by name,
            flat list, or one dict/list per group), each of its parameter's
            dtype and shape. Only read.

        Returns
        -------
        bool
            False if the step was skipped (``nonfinite="skip"`` and a
            non-finite averaged gradient); the same on every rank.

        Raises
        ------
        FloatingPointError
            ``nonfinite="raise"`` and an averaged gradient is NaN/inf (on
            every rank, the same message; nothing is modified).
        TypeError, ValueError
            A gradient of the wrong structure, dtype or shape.
        """
        flat = flat_grads(local_grads, self._keys, self._params)
        self._sync_groups()
        check = self.nonfinite != "ignore"
        finite = True
        for seg in self.segments:
            finite &= self._reduce_scatter(seg, FlatSpace([flat[i] for i in seg.index]), check)
        row = [0.0 if finite else 1.0]
        if self.max_grad_norm is not None:
            row.append(self._local_norm() if finite else 0.0)
        rows = self.comm.allgather_float64(row)
        if rows[:, 0].any():
            return self._nonfinite()
        if self.max_grad_norm is not None:
            self._clip(rows[:, 1])
        if self.optimizer is not None:
            self.optimizer.step(self._inner_grads)
        for seg in self.segments:
            self._allgather(seg)
        return True

    def _rounds(self, seg: Segment) -> tuple[int, int]:
        per_rank = max(16, _bucket_elems(self.bucket_bytes, seg.dtype.itemsize) // self.comm.size)
        longest = max(b - a for a, b in zip(seg.bounds[:-1], seg.bounds[1:]))
        return per_rank, -(-longest // per_rank)

    def _round(self, seg: Segment, k: int, c: int) -> tuple[list[int], list[int]]:
        counts = [max(0, min(c, b - a - k * c)) for a, b in zip(seg.bounds[:-1], seg.bounds[1:])]
        return [a + k * c for a in seg.bounds[:-1]], counts

    def _reduce_scatter(self, seg: Segment, grads: FlatSpace, check: bool) -> bool:
        c, rounds = self._rounds(seg)
        finite, r = True, self.comm.rank
        for k in range(rounds):
            starts, counts = self._round(seg, k, c)
            out = seg.grad[k * c : k * c + counts[r]]
            if grads.flat is not None:
                send, displs = grads.flat, starts
            else:  # pack the round's blocks (one per rank) into one buffer
                displs = offsets(counts)
                send = self.comm._workspace(seg.dtype, sum(counts), slot=2)
                for a, d, m in zip(starts, displs, counts):
                    grads.gather(a, a + m, send[d : d + m])
            finite &= self.comm.reduce_scatter_(
                send, displs, counts, out, average=True, check=check
            )
        return finite

    def _allgather(self, seg: Segment) -> None:
        c, rounds = self._rounds(seg)
        r, space = self.comm.rank, seg.params
        for k in range(rounds):
            starts, counts = self._round(seg, k, c)
            if space.flat is not None:
                self.comm.allgather_(space.flat, starts, counts)
                continue
            displs = offsets(counts)
            buf = self.comm._workspace(seg.dtype, sum(counts), slot=2)
            space.gather(starts[r], starts[r] + counts[r], buf[displs[r] : displs[r] + counts[r]])
            self.comm.allgather_(buf, displs, counts)
            for i, (a, d, m) in enumerate(zip(starts, displs, counts)):
                if i != r:
                    space.scatter(a, a + m, buf[d : d + m])

    # ------------------------------------------------------ clip, non-finite
    def _local_norm(self) -> float:
        """This rank's ``sum |g|**p`` (or max |g| for inf) over its averaged gradients."""
        p = self.grad_norm_type
        parts = []
        for seg in self.segments:
            g = seg.grad
            for lo in range(0, g.size, 1 << 16):
                x = np.abs(g[lo : lo + (1 << 16)].astype(np.float64))
                parts.append(float(x.max(initial=0.0)) if math.isinf(p) else float(np.sum(x**p)))
        if math.isinf(p):
            return max(parts, default=0.0)
        return math.fsum(parts)

    def _clip(self, partials: np.ndarray) -> None:
        p = self.grad_norm_type
        if math.isinf(p):
            total = float(partials.max())
        else:
            acc = 0.0
            for v in partials:  # rank order: the same bits on every rank
                acc += float(v)
            total = acc ** (1.0 / p)
        self.last_grad_norm = total
        coef = float(self.max_grad_norm or 0.0) / (total + 1e-6)
        if coef < 1.0:
            for seg in self.segments:
                if seg.dtype.itemsize == 2:
                    seg.grad[...] = seg.grad.astype(np.float32) * np.float32(coef)
                else:
                    np.multiply(seg.grad, seg.dtype.type(coef), out=seg.grad)

    def _nonfinite(self) -> bool:
        first = None
        for pc in self.pieces:
            g = self._piece_grads.get(pc.name)
            if g is None or g.size == 0:
                continue
            bad = np.flatnonzero(~np.isfinite(g.reshape(-1).astype(np.float32)))
            if bad.size:
                first = (pc.index, pc.lo + int(bad[0]))
                break
        found = [f for f in self.comm.allgather_object(first) if f is not None]
        i, j = min(found)
        if self.nonfinite == "skip":
            return False
        raise FloatingPointError(
            f"grads{label(self._keys[i])} has a non-finite value at index {j} "
            f"(in the gradient averaged over {self.comm.size} ranks); nothing was updated"
        )

    # -------------------------------------------------------------- queries
    def state_nbytes(self) -> int:
        """Bytes of optimizer state arrays held by this rank (its shard, incl. master copies)."""
        if self.optimizer is None:
            return 0
        arrays = [v for st in self.optimizer.state.values() for v in st.values()]
        return sum(v.nbytes for v in arrays if isinstance(v, np.ndarray))

    def __repr__(self) -> str:
        return (
            f"ZeroRedundancyOptimizer({self.optimizer_class.__name__}, rank {self.comm.rank} of "
            f"{self.comm.size}, {len(self.pieces)} pieces, granularity {self.granularity})"
        )

    # State dicts (kept in their own file): consolidated, per-rank, loading.
    consolidated_state_dict = _zero_state.consolidated_state_dict
    state_dict = _zero_state.state_dict
    load_state_dict = _zero_state.load_state_dict
    local_state = _zero_state.local_state
