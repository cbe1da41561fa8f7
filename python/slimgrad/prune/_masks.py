"""Pruning masks: magnitude (per array and global), N:M, structured, random.

Every mask is a new ``bool`` array of the weight's shape with ``True`` where
the weight is **kept** and ``False`` where it is pruned (``w * mask`` prunes).
Weights are only read. Magnitude and N:M selection run in C++ on the IEEE
bits of ``|w|`` (exact, no sort); ``-0.0`` and ``0.0`` have the same
magnitude, ``inf`` is the largest, and a NaN raises ``ValueError`` naming its
position. float32, float64, float16 and bfloat16 arrays that are
C-contiguous in native byte order are read in place (no copy: a bfloat16
model is ranked from its own 2 bytes a weight); other layouts (strided
views, transposes) and byte orders are first copied to a C-contiguous
native array (an explicit copy: the mask functions only read ``w``). A
selection over several arrays reads one dtype: when float16 or bfloat16
arrays are mixed with other dtypes, those are converted to float32 (an
explicit copy; exact, so the order of magnitudes is unchanged). Other
dtypes raise ``TypeError``. Arrays written in place (the :class:`Pruner`'s
parameters) keep the strict contract: C-contiguous, native, writable, never
copied.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping

import numpy as np

from .. import _core
from .._float32 import as_float32

_core_prune = _core.prune

__all__ = [
    "global_magnitude_counts",
    "global_magnitude_masks",
    "magnitude_mask",
    "nm_mask",
    "random_mask",
    "structured_mask",
]


# The dtypes the selection reads in place, by name.
_HALVES, _WIDE = ("float16", "bfloat16"), ("float32", "float64")


def _native(a: object) -> str:
    """The native-order dtype's name of an array (not the dtype: NumPy takes
    ``dtype == None`` for float64), or "" for anything else."""
    return a.dtype.newbyteorder("=").name if isinstance(a, np.ndarray) else ""


def _keyable(arrays: list) -> list:
    """The arrays one C++ selection reads: each array itself when it can, else an explicit copy.

    float32 / float64 / float16 / bfloat16, C-contiguous, native byte order:
    the array unchanged (read in place, no copy). Other layouts or byte
    orders of these dtypes: a C-contiguous native copy (the mask functions
    only read, so a copy is safe; arrays written in place, such as the
    Pruner's, keep the strict no-copy contract and are checked elsewhere).
    The selection reads one dtype, so float16 / bfloat16 arrays among other
    dtypes become float32 copies (exact), widened by ``_core.widen_half`` on
    the threads (NumPy's ``astype`` took 10-25 ms for 16M values). Anything
    else goes to C++ unchanged, which raises ``TypeError`` naming the
    argument (so do float32 and float64 mixed).
    """
    widen = len({_native(a) for a in arrays}) > 1
    out = []
    for a in arrays:
        name = _native(a)
        if name in _HALVES and widen:
            a = as_float32(a)
        elif name in _HALVES + _WIDE and not (a.flags.c_contiguous and a.dtype.isnative):
            a = np.ascontiguousarray(a, dtype=a.dtype.newbyteorder("="))
        out.append(a)
    return out


def _check_fraction(value: object, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name}: expected a number in [0, 1], got {type(value).__name__}")
    value = float(value)
    if not 0.0 <= value <= 1.0:  # also rejects NaN
        raise ValueError(f"{name}: expected a number in [0, 1], got {value!r}")
    return value


def _count(fraction: float, size: int) -> int:
    # Python's round() rounds half to even: 0.5 of 7 elements prunes 4.
    return int(round(fraction * size))


def _select(arrays: list, names: list, k: int, priors: list | None = None) -> list:
    """Masks pruning exactly ``k`` of all the arrays together (C++ radix select)."""
    return list(_core_prune.magnitude_keep(_keyable(arrays), names, k, priors))


def _global_counts(arrays: list, names: list, k: int) -> list:
    """The selection of ``k`` over all the arrays as one count per array:
    ``_select([a], [name], count)`` of each array alone gives its part of
    ``_select(arrays, names, k)``, with no mask of them all in memory."""
    return list(_core_prune.magnitude_counts(_keyable(arrays), names, k))


def magnitude_mask(w: np.ndarray, sparsity: float) -> np.ndarray:
    """Mask pruning the ``round(sparsity * w.size)`` smallest ``|w|``.

    Parameters
    ----------
    w : ndarray
        float32, float64, float16 or bfloat16: read in place when
        C-contiguous and native, else copied to such an array first. Any
        layout; only read.
    sparsity : float
        Fraction of entries to prune, in ``[0, 1]``. The count is
        ``round(sparsity * w.size)``, rounded half to even.

    Returns
    -------
    ndarray of bool, shape ``w.shape``
        ``True`` = kept, ``False`` = pruned. Exactly that many entries are
        pruned: the smallest magnitudes first, and among equal magnitudes
        the lower flat (C-order) index first.

    Raises
    ------
    TypeError
        ``w`` is not a float ndarray, or sparsity is not a number.
    ValueError
        sparsity outside ``[0, 1]``, or ``w`` holds a NaN (the message names
        its index).

    Notes
    -----
    O(n): one pass over ``w`` guessing the threshold's range from a sample
    and writing a code per element, one pass over the codes; a radix select
    over the bits of ``|w|`` when the guess misses. The result is the same
    for every ISA and thread count.
    """
    s = _check_fraction(sparsity, "sparsity")
    size = int(w.size) if isinstance(w, np.ndarray) else 0
    return _select([w], ["w"], _count(s, size))[0]


def global_magnitude_masks(weights: Mapping[str, np.ndarray], sparsity: float) -> dict:
    """Masks pruning the smallest ``|w|`` across all arrays with one threshold.

    Exactly ``round(sparsity * total)`` entries are pruned over all arrays
    together (``total`` = the sum of their sizes), smallest magnitudes first;
    ties are pruned in the dict's order, then by flat index. The arrays are
    not concatenated: the selection reads C-contiguous native arrays in
    place, so the memory used is the masks plus a few histograms (other
    layouts and byte orders cost a copy each, as in
    :func:`magnitude_mask`). A bfloat16 model is ranked from its own bytes:
    no float32 copy of its weights.

    Parameters
    ----------
    weights : mapping of name to ndarray
        All of one dtype: float32, float64, float16 or bfloat16. float16 /
        bfloat16 entries among other dtypes are converted to float32 (a
        copy each); any layout (see :func:`magnitude_mask`). Only read.
    sparsity : float
        Fraction in ``[0, 1]`` of all entries to prune.

    Returns
    -------
    dict of name to bool ndarray
        ``True`` = kept, in the order of ``weights``. The masks are views
        into one buffer (a single allocation), each C-contiguous and
        writable; copy one to keep it without the others.

    Raises
    ------
    TypeError
        An array is not a float ndarray, or the arrays mix float32 and
        float64 (the message names the array).
    ValueError
        sparsity outside ``[0, 1]`` or a NaN weight (named with its index).
    """
    names, arrays, labels, k = _global_selection(weights, sparsity)
    return dict(zip(names, _select(arrays, labels, k)))


def global_magnitude_counts(weights: Mapping[str, np.ndarray], sparsity: float) -> dict:
    """:func:`global_magnitude_masks` as the number of entries pruned in each
    array, without a mask of them all (one byte per weight: 70 GB for a 70B
    model).

    ``magnitude_mask(w, counts[name] / w.size)`` of each array alone is its
    mask of :func:`global_magnitude_masks`, ties included, so a model can be
    pruned one array at a time (``slimgrad prune --global`` does so while it
    writes the output). The counts add up to ``round(sparsity * total)``.

    Parameters and errors are those of :func:`global_magnitude_masks`.

    Returns
    -------
    dict of name to int
        In the order of ``weights``.

    Notes
    -----
    Radix passes over the whole key until the k-th magnitude ``T`` is known,
    then one pass counting each array's entries below and equal to ``T``;
    ``T``'s copies to prune go to the arrays in order. Memory: a few
    histograms.
    """
    names, arrays, labels, k = _global_selection(weights, sparsity)
    return dict(zip(names, (int(c) for c in _global_counts(arrays, labels, k))))


def _global_selection(weights: Mapping[str, np.ndarray], sparsity: float) -> tuple:
    """(names, arrays, their labels in messages, entries to prune) of a
    global selection's arguments, checked."""
    if not isinstance(weights, Mapping):
        raise TypeError(f"weights: expected a dict of arrays, got {type(weights).__name__}")
    s = _check_fraction(sparsity, "sparsity")
    names = list(weights)
    arrays = [weights[n] for n in names]
    total = sum(int(a.size) for a in arrays if isinstance(a, np.ndarray))
    return names, arrays, [f"weights[{n!r}]" for n in names], _count(s, total)


def _axis(w: np.ndarray, axis: object, name: str = "axis") -> int:
    if isinstance(axis, bool) or not isinstance(axis, numbers.Integral):
        raise TypeError(f"{name}: expected an int, got {type(axis).__name__}")
    if not -w.ndim <= int(axis) < w.ndim:
        raise ValueError(
            f"{name}: expected an axis of an array with {w.ndim} dimensions, got {axis}"
        )
    return int(axis) % w.ndim


def _check_array(w: object, name: str = "w") -> np.ndarray:
    if not isinstance(w, np.ndarray):
        raise TypeError(f"{name}: expected an ndarray, got {type(w).__name__}")
    return w


def nm_mask(w: np.ndarray, n: int = 2, m: int = 4, axis: int = -1) -> np.ndarray:
    """N:M mask: in every group of ``m`` consecutive entries along ``axis``, keep ``n``.

    The ``m - n`` pruned entries of a group are its smallest ``|w|``; among
    equal magnitudes the lower index along ``axis`` is pruned first (the
    rule of :func:`magnitude_mask`, so each group's mask is
    ``magnitude_mask(group, (m - n) / m)``). 2:4 is the pattern sparse
    tensor cores accelerate; 4:8 etc. work alike.

    Parameters
    ----------
    w : ndarray
        float32, float64, float16 or bfloat16 (read in place when
        C-contiguous and native, else copied first). Any layout; only read.
    n, m : int
        Keep ``n`` of every ``m`` (``0 <= n <= m``, ``m >= 1``).
    axis : int
        The axis along which groups are formed (default: the last, the
        input dimension of a ``(out, in)`` weight).

    Returns
    -------
    ndarray of bool, shape ``w.shape`` (``True`` = kept).

    Raises
    ------
    TypeError
        Not a float ndarray, or n, m, axis not ints.
    ValueError
        ``w.shape[axis]`` not divisible by ``m``, bad n / m / axis, a 0-d
        array, or a NaN weight.
    """
    return _nm_mask(w, n, m, axis, "w")


def _nm_mask(w: np.ndarray, n: int, m: int, axis: int, name: str) -> np.ndarray:
    """:func:`nm_mask`, with ``w`` called ``name`` in error messages."""
    w = _check_array(w, name)
    for value, label in ((n, "n"), (m, "m")):
        if isinstance(value, bool) or not isinstance(value, numbers.Integral):
            raise TypeError(f"{label}: expected an int, got {type(value).__name__}")
    n, m = int(n), int(m)
    if m < 1 or not 0 <= n <= m:
        raise ValueError(f"n, m: expected 0 <= n <= m and m >= 1, got n={n}, m={m}")
    if w.ndim == 0:
        raise ValueError(f"{name}: expected an array with at least one dimension, got a 0-d array")
    ax = _axis(w, axis)
    if w.shape[ax] % m:
        raise ValueError(f"{name}: length {w.shape[ax]} along axis {ax} is not divisible by m={m}")
    inner = math.prod(w.shape[ax + 1 :])
    if w.size == 0:
        return np.ones(w.shape, dtype=bool)
    return _core_prune.nm_keep(_keyable([w])[0], name, inner, n, m)


def _first_nan(w: np.ndarray, name: str) -> None:
    bad = np.argwhere(np.isnan(w))
    if len(bad):
        flat = int(np.ravel_multi_index(tuple(bad[0]), w.shape))
        index = tuple(int(i) for i in bad[0])
        raise ValueError(
            f"{name}: NaN at index {index} (flat index {flat}); "
            "NaN weights have no magnitude to rank"
        )


def slice_norms(w: np.ndarray, axis: int = 0, norm: int = 1) -> np.ndarray:
    """Norm of every slice ``w[..., i, ...]`` along ``axis``, in float64.

    ``norm=1``: sum of ``|w|``; ``norm=2``: Euclidean norm; over all the other
    axes. Returns a float64 array of length ``w.shape[axis]``.
    """
    ax = _axis(w, axis)
    others = tuple(i for i in range(w.ndim) if i != ax)
    if norm == 1:
        return np.asarray(np.sum(np.abs(w), axis=others, dtype=np.float64))
    return np.asarray(np.sqrt(np.sum(np.square(w, dtype=np.float64), axis=others)))


def _slice_count(amount: object, slices: int) -> int:
    if isinstance(amount, bool) or not isinstance(amount, numbers.Real):
        raise TypeError(
            f"amount: expected a fraction in [0, 1] or a count, got {type(amount).__name__}"
        )
    if isinstance(amount, numbers.Integral):
        if not 0 <= int(amount) <= slices:
            raise ValueError(f"amount: expected a count of slices in [0, {slices}], got {amount}")
        return int(amount)
    return _count(_check_fraction(amount, "amount"), slices)


def structured_mask(
    w: np.ndarray,
    amount: float | int,
    axis: int = 0,
    norm: int = 1,
    prior: np.ndarray | None = None,
) -> np.ndarray:
    """Mask pruning whole slices along ``axis`` (rows, output channels) by norm.

    Like ``torch.nn.utils.prune.ln_structured(..., amount, n=norm, dim=axis)``:
    the slices ``w.take(i, axis)`` with the smallest L1 or L2 norm (computed
    in float64 over all other axes) are pruned entirely; ties are pruned
    lower index first.

    Parameters
    ----------
    w : ndarray
        Any float array with at least one dimension; only read.
    amount : float or int
        A fraction in ``[0, 1]`` of the slices (``round(amount * slices)``,
        half to even) or an int count of slices.
    axis : int
        The axis whose slices are pruned (0: rows of an ``(out, in)`` weight,
        output channels of a conv kernel).
    norm : {1, 2}
        L1 or L2 norm.
    prior : bool ndarray, optional
        A previous mask of this function: slices it pruned are pruned again
        first (the Pruner uses this so slices never come back).

    Returns
    -------
    ndarray of bool, shape ``w.shape`` (``True`` = kept; a pruned slice is all ``False``).

    Raises
    ------
    TypeError
        ``w`` not a floating-point ndarray, or amount not a number.
    ValueError
        Bad amount, axis or norm, a 0-d array, or a NaN weight.
    """
    w = _check_array(w)
    if w.dtype.kind != "f" and w.dtype.name != "bfloat16":
        raise TypeError(
            f"w: expected a floating-point array, got {w.dtype.name} array of shape {w.shape}"
        )
    if norm not in (1, 2) or isinstance(norm, bool):
        raise ValueError(f"norm: expected 1 or 2, got {norm!r}")
    if w.ndim == 0:
        raise ValueError("w: expected an array with at least one dimension, got a 0-d array")
    ax = _axis(w, axis)
    k = _slice_count(amount, w.shape[ax])
    norms = slice_norms(w, ax, norm)
    if np.isnan(norms).any():
        _first_nan(w, "w")
    priors = None
    if prior is not None:
        index: list[int | slice] = [0] * w.ndim
        index[ax] = slice(None)
        priors = [np.ascontiguousarray(prior[tuple(index)])]
    keep = _select([norms], ["norms"], k, priors)[0]
    shape = [1] * w.ndim
    shape[ax] = w.shape[ax]
    return np.broadcast_to(keep.reshape(shape), w.shape).copy()


_GAMMA = np.uint64(0x9E3779B97F4A7C15)


def _splitmix64(z: np.ndarray) -> np.ndarray:
    """The splitmix64 finalizer on a uint64 array (wrapping arithmetic, in place)."""
    z ^= z >> np.uint64(30)
    z *= np.uint64(0xBF58476D1CE4E5B9)
    z ^= z >> np.uint64(27)
    z *= np.uint64(0x94D049BB133111EB)
    z ^= z >> np.uint64(31)
    return z


def random_mask(w: np.ndarray, sparsity: float, seed: int = 0) -> np.ndarray:
    """Mask pruning exactly ``round(sparsity * w.size)`` entries chosen at random.

    Counter-based: entry ``i`` gets the key ``splitmix64(splitmix64(seed) +
    (i + 1) * golden)`` (a pure function of seed and flat index) and the
    entries with the smallest keys are pruned, with the exact selection of
    :func:`magnitude_mask`. So the mask depends only on ``seed``, the shape
    and the sparsity: not on the thread count, the ISA or the values of
    ``w`` (which may hold NaN). Temporary memory: 16 bytes per entry.

    Parameters
    ----------
    w : ndarray
        Any array; only its shape is used.
    sparsity : float
        Fraction in ``[0, 1]`` to prune (half-to-even rounded count).
    seed : int
        Non-negative; taken modulo 2**64.

    Returns
    -------
    ndarray of bool, shape ``w.shape`` (``True`` = kept).
    """
    w = _check_array(w)
    s = _check_fraction(sparsity, "sparsity")
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
        raise ValueError(f"seed: expected a non-negative int, got {seed!r}")
    base = _splitmix64(np.array([int(seed) % (1 << 64)], dtype=np.uint64))
    z = np.arange(1, w.size + 1, dtype=np.uint64)
    z *= _GAMMA
    z += base
    # The top 53 bits as a float64 in [0, 2**53): exact, so the float order
    # is the integer order and the C++ selection applies unchanged.
    z = _splitmix64(z)
    z >>= np.uint64(11)
    keys = z.astype(np.float64)
    del z
    return _select([keys], ["keys"], _count(s, w.size))[0].reshape(w.shape)
