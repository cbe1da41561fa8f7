"""Helpers shared by the multipass optimizers (LAMB, AdamW8bit, Adafactor) and clip.

Their kernels take float32/float64 arrays. float16/bfloat16 parameters are
stepped on the float32 master copies the base class keeps, then rounded to
nearest into the parameters (a second, cheap pass; see docs/optim_extra.md).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from .. import _core
from ._base import Optimizer
from ._bucket import Bucket, find_nonfinite
from ._fused import OPTIMIZER_TABLE
from ._keywords import StepKeywords, take_keywords

BLOCK = 256  # AdamW8bit's elements per scale (kQuantBlock in optim_extra.hpp)

KERNEL_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def describe(a: Any) -> str:
    """How buffers.cpp describes a value in its messages."""
    if not isinstance(a, np.ndarray):
        return type(a).__name__
    prefix = "" if a.flags.c_contiguous else "non-contiguous "
    return f"{prefix}{a.dtype.name} array of shape {a.shape}"


def check_like(g: Any, name: str, p: np.ndarray) -> None:
    """``g`` must be a C-contiguous array of ``p``'s dtype (TypeError) and shape (ValueError)."""
    ok_type = (
        isinstance(g, np.ndarray)
        and g.dtype == p.dtype
        and g.flags.c_contiguous
        and g.dtype.isnative
    )
    if ok_type and g.shape == p.shape:
        return  # the common case, without building a message
    want = f"{p.dtype.name} C-contiguous array of shape {p.shape}"
    if not ok_type:
        raise TypeError(f"{name}: expected {want}, got {describe(g)}")
    raise ValueError(f"{name}: expected {want}, got {describe(g)}")


def check_writable(p: np.ndarray, name: str) -> None:
    if not p.flags.writeable:
        raise ValueError(f"{name}: expected a writable array, got a read-only {describe(p)}")


def _first_nonfinite(grads: list[np.ndarray]) -> tuple[int, int] | None:
    """(array, element) of the first NaN/inf, or None.

    float32/float64: the core kernel per array (measured 5x faster on one
    16M array than the base's multi-tensor scan, which also handles halves).
    """
    if grads and grads[0].dtype in KERNEL_DTYPES:
        for i, g in enumerate(grads):
            j = int(_core.find_nonfinite(g))
            if j >= 0:
                return i, j
        return None
    return find_nonfinite(list(grads))


def expected_state(
    storage: str, when: str, param: np.ndarray, work: np.dtype
) -> tuple[tuple[int, ...], np.dtype]:
    """(shape, dtype) of a state slot of the descriptor table for ``param``.

    ``work`` is the math dtype (the param's, float32 for float16/bfloat16).
    Slots whose condition does not hold (Adafactor's factored/vector slots)
    are empty arrays, so that every param of a bucket has the same keys.
    """
    factored = param.ndim >= 2
    if (when == "factored" and not factored) or (when == "vector" and factored):
        return (0,), work
    if storage == "int8":
        return param.shape, np.dtype(np.int8)
    if storage == "uint8":
        return param.shape, np.dtype(np.uint8)
    if storage == "blocks":
        return ((param.size + BLOCK - 1) // BLOCK,), np.dtype(np.float32)
    if storage == "row":
        return param.shape[:-1] + (1,), work
    if storage == "col":
        return param.shape[:-2] + (1, param.shape[-1]), work
    return param.shape, work


def validate(bucket: Bucket, expect: Any = None) -> None:
    """Every grad like its param (dtype, shape, layout), every param writable,
    every state array as ``expect(key, param) -> (shape, dtype)`` says and writable.

    Raises TypeError/ValueError naming the array; modifies nothing.
    """
    for p, g, label in zip(bucket.params, bucket.grads, bucket.labels):
        check_like(g, "grads" + label, p)
        check_writable(p, "params" + label)
    if expect is None:
        return
    for key, arrays in bucket.states.items():
        for p, a, label in zip(bucket.params, arrays, bucket.labels):
            shape, dtype = expect(key, p)
            name = f"state{label}[{key!r}]"
            ok = isinstance(a, np.ndarray) and a.dtype == dtype and a.flags.c_contiguous
            if not ok or a.shape != shape:
                want = f"{dtype.name} C-contiguous array of shape {shape}"
                error = ValueError if ok else TypeError
                raise error(f"{name}: expected {want}, got {describe(a)}")
            check_writable(a, name)
    # Issue 17: no written buffer may share memory with another, nor with a gradient.
    written, names = list(bucket.params), ["params" + lb for lb in bucket.labels]
    if bucket.masters is not None:
        written += bucket.masters
        names += [f"state{lb}['master']" for lb in bucket.labels]
    for key, arrays in bucket.states.items():
        written += arrays
        names += [f"state{lb}[{key!r}]" for lb in bucket.labels]
    names += ["grads" + lb for lb in bucket.labels]
    _core.optim.check_no_overlap(written, list(bucket.grads), names)


# The arguments of ExtraOptimizer._update: a param group, and the arrays the
# kernels work on.
Group = dict[str, Any]
Arrays = list[np.ndarray]


def adam_coefficients(group: Group, step: int, lr: float | None = None) -> dict[str, Any]:
    """The Adam-like kernels' keyword arguments (``lamb_step``, ``adamw8bit_step``,
    ``StepArgs`` fields) from a group's options; ``lr`` if given replaces the group's."""
    beta1, beta2 = group["betas"]
    return dict(
        lr=float(group["lr"]) if lr is None else lr,
        beta1=float(beta1),
        beta2=float(beta2),
        eps=float(group["eps"]),
        weight_decay=float(group["weight_decay"]),
        step=int(step),
    )


def adamw_step(
    coefficients: dict[str, Any],
    work: Arrays,
    grads: Arrays,
    states: list[Arrays],
    labels: list[str],
    maximize: bool = False,
) -> None:
    """One call of the fused AdamW kernel (the ``adam`` row, decoupled) on
    float32/float64 arrays; ``states``: the ``exp_avg`` and ``exp_avg_sq`` lists."""
    args = _core.optim.StepArgs()
    args.algo, args.decoupled, args.maximize = "adam", True, maximize
    for k, v in coefficients.items():
        setattr(args, k, v)
    names = (
        ["params" + lb for lb in labels],
        ["grads" + lb for lb in labels],
        None,
        [[f"state{lb}[{k!r}]" for lb in labels] for k in ("exp_avg", "exp_avg_sq")],
    )
    _core.optim.step(args, work, grads, None, states, names, False)


class ExtraOptimizer(Optimizer):
    """Base of LAMB, AdamW8bit and Adafactor: validation and half-precision plumbing."""

    _algo = ""  # the row of the optimizer descriptor table (optim_table.hpp)

    def _expected_state(self, key: str, param: np.ndarray) -> tuple[tuple[int, ...], np.dtype]:
        """(shape, dtype) the kernel needs for state ``key`` of ``param`` (from the table)."""
        for k, storage, when in OPTIMIZER_TABLE[self._algo]["slots"]:
            if k == key:
                return expected_state(storage, when, param, self.state_dtype(param))
        raise ValueError(f"state: unexpected key {key!r} for {type(self).__name__}")

    _keywords: type = StepKeywords

    def __init__(self, params: Any, defaults: dict[str, Any], **keywords: Any) -> None:
        """``defaults``: the subclass's own options; ``keywords``: the shared tail
        (``self._keywords``: torch's switches, nonfinite, maximize where it is one)."""
        nonfinite, shared = take_keywords(type(self).__name__, self._keywords, keywords)
        # Options are stored as the kernels take them: each checked by its
        # option check, in the constructor's argument order, and kept as the
        # check returns it (floats, a tuple of betas); maximize as bool(value).
        defaults = {
            k: bool(v) if k == "maximize" else self._option_checks[k](k, v)
            for k, v in {**defaults, **shared}.items()
        }
        super().__init__(params, defaults, nonfinite=nonfinite)

    def _validate_all(self, buckets: list[Bucket]) -> None:
        for b in buckets:
            validate(b, self._expected_state)

    def _step_bucket(
        self, group: dict[str, Any], bucket: Bucket, check: bool
    ) -> tuple[int, int] | None:
        work, grads, bad = self._prepare(bucket, check)
        if bad is not None:
            return bad
        self._update(group, bucket, work, grads)
        round_back(bucket)
        return None

    def _update(self, group: Group, bucket: Bucket, work: Arrays, grads: Arrays) -> None:
        """The kernel call(s) of one bucket: update ``work`` (the params, or the
        float32 masters of float16/bfloat16 params, rounded back afterwards)
        with ``grads``, and the bucket's state, in place."""
        raise NotImplementedError

    def _prepare(
        self, bucket: Bucket, check: bool
    ) -> tuple[list[np.ndarray], list[np.ndarray], tuple[int, int] | None]:
        """Validate; the arrays the kernel works on and the first non-finite gradient.

        Returns ``(work, grads, bad)``: ``work`` is the params (float32/float64)
        or the float32 masters (float16/bfloat16), ``grads`` matching them, and
        ``bad`` the first non-finite gradient (array, element) if ``check``.
        Raises before anything is modified.
        """
        buckets = self._buckets or [bucket]
        if bucket is buckets[0]:
            # A step of several buckets is several kernel calls: check every
            # bucket before the first one runs (also with nonfinite="ignore",
            # where the base does not call _validate_all).
            self._validate_all(buckets)
        if check:
            bad = _first_nonfinite(bucket.grads)
            if bad is not None:
                return [], [], bad
        if bucket.masters is None:
            return list(bucket.params), list(bucket.grads), None
        return list(bucket.masters), [g.astype(np.float32) for g in bucket.grads], None


def round_back(bucket: Bucket) -> None:
    """Write the updated float32 masters into float16/bfloat16 params (round to nearest even)."""
    if bucket.masters is not None:
        for p, m in zip(bucket.params, bucket.masters):
            p[...] = m.astype(p.dtype)


def as_array_list(arrays: Any, what: str) -> tuple[list[Any], list[str]]:
    """A dict, list/tuple or single ndarray as (arrays, labels) in order."""
    if isinstance(arrays, np.ndarray):
        return [arrays], ["[0]"]
    if isinstance(arrays, Mapping):
        return list(arrays.values()), [f"[{k!r}]" for k in arrays]
    if isinstance(arrays, (list, tuple)):
        return list(arrays), [f"[{i}]" for i in range(len(arrays))]
    raise TypeError(
        f"{what}: expected a dict, a list of ndarrays or an ndarray, got {type(arrays).__name__}"
    )


def check_float_arrays(arrays: list[Any], labels: list[str], what: str, writable: bool) -> None:
    """float32/float64 C-contiguous native arrays (TypeError), writable if asked (ValueError)."""
    for a, label in zip(arrays, labels):
        if (
            not isinstance(a, np.ndarray)
            or a.dtype not in KERNEL_DTYPES
            or not a.flags.c_contiguous
            or not a.dtype.isnative
        ):
            raise TypeError(
                f"{what}{label}: expected float32 or float64 C-contiguous array, got {describe(a)}"
            )
        if writable:
            check_writable(a, what + label)


def by_dtype(
    arrays: list[np.ndarray], labels: list[str]
) -> dict[np.dtype, tuple[list[int], list[str]]]:
    """Indices and labels of the arrays of each dtype, in order of first appearance."""
    out: dict[np.dtype, tuple[list[int], list[str]]] = {}
    for i, (a, label) in enumerate(zip(arrays, labels)):
        idx, lab = out.setdefault(a.dtype, ([], []))
        idx.append(i)
        lab.append(label)
    return out
