"""Integer quantization of float tensors: :func:`quantize`, :class:`QuantizedTensor`.

Definitions (every ISA and thread count computes exactly these, bit for bit):

* ``inv = 1.0f / scale`` (float32, once per parameter); ``r = x * inv``, or
  ``r = x / scale`` when ``scale`` is below the smallest normal float32 (so a
  subnormal scale never makes ``inv`` infinite);
* ``q = clamp(round(r + zero_point), qmin, qmax)`` with a float32 add, then the
  rounding: ``"half_even"`` (default, as torch), ``"half_away"`` (from zero) or
  ``"stochastic"`` (``floor(t + u)``, ``u`` in [0, 1) from a counter-based hash
  of ``(seed, flat index)``: the same draw for any thread count and ISA).
  This is torch's ``quantize_per_channel`` formula, so int8 codes agree with
  torch for the same scales and zero points;
* ``x_hat = scale * (q - zero_point)`` (float32).

Ranges: symmetric ``b``-bit codes are signed in ``[-(2^(b-1) - 1), 2^(b-1) - 1]``
(the restricted range: -2^(b-1) is never used, so the grid is symmetric) with
zero point 0 and ``scale = absmax / (2^(b-1) - 1)``; asymmetric codes are
unsigned in ``[0, 2^b - 1]`` with ``lo = min(x.min(), 0)``,
``hi = max(x.max(), 0)``, ``scale = (hi - lo) / (2^b - 1)`` and
``zero_point = clamp(round_half_even(-lo / scale), 0, 2^b - 1)``. Scales are
computed in float64 and rounded once to float32. A parameter whose values are
all equal to ``c`` round-trips exactly: ``c == 0`` gives scale 1 and code 0;
otherwise the scale is ``|c|`` and the code ``sign(c)`` (asymmetric negative
``c``: code 0, zero point 1).

Storage (``qt.data``): for 8 bits the codes themselves, int8 (symmetric) or
uint8 (asymmetric), with the tensor's shape. For 2..7 bits a uint8 array of
shape ``(*shape[:-1], ceil(shape[-1] * bits / 8))``: each row (last axis) is a
little-endian bitstream, code ``j`` in bits ``[j*b, (j+1)*b)`` where bit ``k``
of the row is bit ``k % 8`` of byte ``k // 8``; rows start on a byte, the last
byte of a row is zero-padded. So 4-bit codes are two per byte, the low nibble
holding the even index; 2-bit codes four per byte from the low bits up; 3, 5,
6 and 7-bit codes straddle bytes (8 codes fill exactly ``b`` bytes). Signed
codes are stored as ``b``-bit two's complement fields.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .. import _core
from .._float32 import as_float32

_q = _core.quant

GRANULARITIES = ("tensor", "channel", "group")
ROUNDINGS = ("half_even", "half_away", "stochastic")
CLIPS = ("minmax", "percentile", "mse")
NONFINITE = ("raise", "propagate")
FLT_MIN = np.float32(np.finfo(np.float32).tiny)
MAX_GROUP = 2**58  # group sizes (and every size) the C++ spec accepts stay below this


def _is_int(v: Any) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, bool)


def _check_layout_args(ndim: int, bits: Any, granularity: Any, axis: Any, group_size: Any) -> None:
    """The spec arguments of quantize / from_codes, each named in its ValueError."""
    if not _is_int(bits) or not 2 <= bits <= 8:
        raise ValueError(f"bits: expected an integer in 2..8, got {bits!r}")
    _choice("granularity", granularity, GRANULARITIES)
    if not _is_int(axis) or not -ndim <= axis < ndim:
        raise ValueError(f"axis: expected an integer in [{-ndim}, {ndim - 1}], got {axis!r}")
    if not _is_int(group_size) or group_size < 1:
        raise ValueError(f"group_size: expected a positive integer, got {group_size!r}")
    if group_size >= MAX_GROUP:
        raise ValueError(f"group_size: expected a value below 2**58, got {group_size!r}")


def _float_dtype(dtype: Any, name: str = "dtype") -> np.dtype:
    """A floating-point NumPy dtype (bfloat16 by name too, through ml_dtypes)."""
    import ml_dtypes  # noqa: F401  (registers "bfloat16" and the float8 names)

    try:
        dt = np.dtype(dtype)
    except TypeError:
        raise TypeError(f"{name}: expected a floating-point dtype, got {dtype!r}") from None
    if dt.kind != "f" and dt.name != "bfloat16":
        raise TypeError(f"{name}: expected a floating-point dtype, got {dt.name}")
    return dt


def _choice(name: str, value: Any, allowed: tuple[str, ...]) -> str:
    if value not in allowed:
        raise ValueError(f"{name}: expected one of {', '.join(map(repr, allowed))}, got {value!r}")
    return value


def _as_float32(w: Any, name: str = "w") -> np.ndarray:
    """float32 C-contiguous view of w, or a converted copy (documented in quantize)."""
    if not isinstance(w, np.ndarray):
        raise TypeError(f"{name}: expected a NumPy array of floats, got {type(w).__name__}")
    if w.dtype.kind != "f" and w.dtype.name != "bfloat16":
        raise TypeError(
            f"{name}: expected a floating-point array, got {w.dtype.name} array of shape {w.shape}"
        )
    return as_float32(w)


class QuantizedTensor:
    """Integer codes plus the parameters that map them back to floats.

    Attributes
    ----------
    data : ndarray
        The codes (see the module docstring for the layout): int8 / uint8 with
        the tensor's shape for 8 bits, else densely packed uint8 rows.
    scale : ndarray of float32
        Shape ``()`` per tensor, ``(shape[axis],)`` per channel,
        ``(*shape[:-1], n_groups)`` per group (``n_groups = ceil(shape[-1] / group_size)``).
    zero_point : ndarray of int32
        Same shape as ``scale``; all zero when ``symmetric``.
    shape : tuple of int
        Shape of the original tensor.
    bits, symmetric, granularity, axis, group_size
        The quantization spec (``axis`` only matters per channel, ``group_size``
        only per group).
    source_dtype : numpy.dtype
        dtype of the array that was quantized (float32, float16, bfloat16,
        float64), recorded in the file by ``save``; ``dequantize(dtype=...)``
        can give it back, the default result stays float32.
    """

    def __init__(
        self,
        data: np.ndarray,
        scale: np.ndarray,
        zero_point: np.ndarray,
        shape: tuple[int, ...],
        bits: int,
        symmetric: bool,
        granularity: str,
        axis: int = 0,
        group_size: int = 128,
        source_dtype: Any = np.float32,
    ) -> None:
        self.data = data
        self.scale = scale
        self.zero_point = zero_point
        self.shape = tuple(int(s) for s in shape)
        self.bits = int(bits)
        self.symmetric = bool(symmetric)
        self.granularity = granularity
        self.axis = int(axis)
        self.group_size = int(group_size)
        self.source_dtype = _float_dtype(source_dtype, "source_dtype")
        self._check()

    def _check(self) -> None:
        """Refuses a spec or arrays that do not fit together (``ValueError``), so a
        hand-made or loaded tensor can never make a kernel read outside a buffer.
        Sizes are checked as Python integers: nothing wraps around."""
        if not 2 <= self.bits <= 8:
            raise ValueError(f"bits: expected 2..8, got {self.bits}")
        _choice("granularity", self.granularity, GRANULARITIES)
        if not self.shape or min(self.shape) < 0 or math.prod(self.shape) >= MAX_GROUP:
            raise ValueError(
                f"shape: expected non-negative sizes, below 2**58 in all, got {self.shape}"
            )
        if not 1 <= self.group_size < MAX_GROUP:
            raise ValueError(
                f"group_size: expected an integer in [1, 2**58), got {self.group_size}"
            )
        if self.granularity == "channel" and not 0 <= self.axis < len(self.shape):
            raise ValueError(f"axis: expected 0..{len(self.shape) - 1}, got {self.axis}")
        want = _empty_data(self.shape, self.bits, self.symmetric, alloc=False)
        sshape = _scale_shape(self.shape, self.granularity, self.axis, self.group_size)
        if sshape == ():  # files store a per-tensor scale with shape (1,)
            for name in ("scale", "zero_point"):
                arr = getattr(self, name)
                if isinstance(arr, np.ndarray) and arr.shape == (1,):
                    setattr(self, name, arr.reshape(()))
        for name, arr, dtypes, shape in (
            ("data", self.data, want[1], want[0]),
            ("scale", self.scale, (np.float32,), sshape),
            ("zero_point", self.zero_point, (np.int32,), sshape),
        ):
            if not isinstance(arr, np.ndarray):
                raise TypeError(f"{name}: expected an ndarray, got {type(arr).__name__}")
            if arr.dtype not in [np.dtype(d) for d in dtypes] or arr.shape != shape:
                kinds = " or ".join(np.dtype(d).name for d in dtypes)
                raise ValueError(
                    f"{name}: expected {kinds} array of shape {shape}, "
                    f"got {arr.dtype.name} array of shape {arr.shape}"
                )

    # -- layout ------------------------------------------------------------
    @property
    def size(self) -> int:
        return math.prod(self.shape)

    @property
    def nbytes(self) -> int:
        """Bytes of storage: codes + scales (+ zero points when asymmetric)."""
        return int(
            self.data.nbytes + self.scale.nbytes + (0 if self.symmetric else self.zero_point.nbytes)
        )

    @property
    def qmin(self) -> int:
        return -(2 ** (self.bits - 1) - 1) if self.symmetric else 0

    @property
    def qmax(self) -> int:
        return 2 ** (self.bits - 1) - 1 if self.symmetric else 2**self.bits - 1

    def spec(self) -> dict[str, Any]:
        """The quantization spec as plain values (what ``save`` writes as metadata)."""
        return _spec(*self._layout(), self.source_dtype)

    def _layout(self) -> tuple:
        """(shape, bits, symmetric, granularity, axis, group_size): how the codes lie."""
        return (self.shape, self.bits, self.symmetric, self.granularity, self.axis, self.group_size)

    def _core_spec(self, **extra: Any) -> dict[str, Any]:
        layout = self._layout()
        if extra:
            return _core_spec(*layout, **extra)
        # The plain spec is kept with the layout it was made from: building it
        # took ~0.7 us of a small product's call (the kernels only read it).
        cached = getattr(self, "_spec_cache", None)
        if cached is None or cached[0] != layout:
            cached = (layout, _core_spec(*layout))
            self._spec_cache = cached
        return cached[1]

    def expand(self, values: np.ndarray) -> np.ndarray:
        """Per-parameter ``values`` (shaped like ``scale``) broadcast to one per element."""
        return _expand(values, self.shape, self.granularity, self.axis, self.group_size)

    # -- conversions ---------------------------------------------------------
    def dequantize(self, out: np.ndarray | None = None, *, dtype: Any = None) -> np.ndarray:
        """``scale * (q - zero_point)`` as float32 of shape ``self.shape``.

        Parameters
        ----------
        out : ndarray, optional
            float32 C-contiguous array of shape ``self.shape``, written in place
            and returned. A wrong dtype or layout raises ``TypeError``, a wrong
            shape or a read-only array ``ValueError`` (nothing written).
        dtype : dtype, optional
            Return the float32 values converted to this dtype (a new array);
            ``dtype=qt.source_dtype`` gives back the dtype that was quantized.
            Not together with ``out``. The default stays float32 whatever the
            source was, so code written for float32 results keeps working.
        """
        if dtype is not None:
            if out is not None:
                raise ValueError("dtype: not together with out (out fixes the dtype)")
            return self.dequantize().astype(_float_dtype(dtype))
        if out is None:
            out = _core.empty(tuple(self.shape), np.float32)
        elif isinstance(out, np.ndarray) and out.shape != self.shape:
            raise ValueError(
                f"out: expected float32 C-contiguous array of shape {self.shape}, "
                f"got {out.dtype.name} array of shape {out.shape}"
            )
        if self.size == 0:
            return out
        _q.dequantize(
            self.data, self._core_spec(), self.scale.reshape(-1), self.zero_point.reshape(-1), out
        )
        return out

    def codes(self) -> np.ndarray:
        """The integer codes, one per element, shape ``self.shape``: int8 when
        symmetric, uint8 otherwise (unpacked from ``data``)."""
        codes = _core.empty(tuple(self.shape), np.int8 if self.symmetric else np.uint8)
        if self.size:
            _q.unpack(self.data, self._core_spec(), codes)
        return codes

    @classmethod
    def from_codes(
        cls,
        codes: np.ndarray,
        scale: np.ndarray,
        zero_point: np.ndarray | None = None,
        *,
        bits: int = 8,
        symmetric: bool = True,
        granularity: str = "channel",
        axis: int = 0,
        group_size: int = 128,
        source_dtype: Any = np.float32,
    ) -> QuantizedTensor:
        """Packs given integer ``codes`` (shape of the tensor) with their parameters.

        ``codes`` must lie in the range of the spec (ValueError otherwise);
        ``scale`` / ``zero_point`` must have the shape :func:`quantize` gives;
        ``source_dtype`` is recorded as :attr:`source_dtype` (TypeError if not
        a floating-point dtype).
        """
        codes = np.asarray(codes)
        if codes.ndim == 0 or codes.dtype.kind not in "iu":
            raise ValueError(
                f"codes: expected an integer array of at least one dimension, "
                f"got {codes.dtype.name} array of shape {codes.shape}"
            )
        shape = codes.shape
        _check_layout_args(codes.ndim, bits, granularity, axis, group_size)
        bits, axis, group_size = int(bits), int(axis) % codes.ndim, int(group_size)
        spec = _core_spec(shape, bits, symmetric, granularity, axis, group_size)
        lo, hi = (-(2 ** (bits - 1) - 1), 2 ** (bits - 1) - 1) if symmetric else (0, 2**bits - 1)
        if codes.size and (codes.min() < lo or codes.max() > hi):
            raise ValueError(
                f"codes: expected integers in [{lo}, {hi}], "
                f"got values in [{codes.min()}, {codes.max()}]"
            )
        sshape = _scale_shape(shape, granularity, axis, group_size)
        for name, arr, kinds in (("scale", scale, "fiu"), ("zero_point", zero_point, "iu")):
            dt = np.asarray(arr).dtype if arr is not None else np.dtype(np.int32)
            if dt.kind not in kinds and dt.name != "bfloat16":
                raise TypeError(f"{name}: expected real numbers, got a {dt.name} array")
        scale = np.ascontiguousarray(scale, np.float32)
        zero_point = (
            np.zeros(sshape, np.int32)
            if zero_point is None
            else np.ascontiguousarray(zero_point, np.int32)
        )
        for name, arr in (("scale", scale), ("zero_point", zero_point)):
            if arr.shape != sshape:
                raise ValueError(f"{name}: expected shape {sshape}, got {arr.shape}")
        data = _empty_data(shape, bits, symmetric)
        if codes.size:
            _q.pack(
                np.ascontiguousarray(codes.astype(np.int8 if symmetric else np.uint8)), spec, data
            )
        return cls(
            data,
            scale,
            zero_point,
            shape,
            bits,
            symmetric,
            granularity,
            axis,
            group_size,
            source_dtype,
        )

    def __repr__(self) -> str:
        extra = {"channel": f", axis={self.axis}", "group": f", group_size={self.group_size}"}.get(
            self.granularity, ""
        )
        return (
            f"QuantizedTensor(shape={self.shape}, bits={self.bits}, symmetric={self.symmetric}, "
            f"granularity={self.granularity!r}{extra}, nbytes={self.nbytes})"
        )


# -- layout helpers ------------------------------------------------------------
def _scale_shape(
    shape: tuple[int, ...], granularity: str, axis: int, group_size: int
) -> tuple[int, ...]:
    if granularity == "tensor":
        return ()
    if granularity == "channel":
        return (shape[axis],)
    return (*shape[:-1], -(-shape[-1] // group_size))


def _spec(
    shape: tuple[int, ...],
    bits: int,
    symmetric: bool,
    granularity: str,
    axis: int,
    group_size: int,
    dtype: Any,
) -> dict[str, Any]:
    """:meth:`QuantizedTensor.spec` of a tensor quantized so, known before it is
    (a writer that streams the tensors puts the specs in the header first)."""
    return {
        "bits": int(bits),
        "symmetric": bool(symmetric),
        "granularity": granularity,
        "axis": int(axis),
        "group_size": int(group_size),
        "shape": [int(s) for s in shape],
        "dtype": np.dtype(dtype).name,
    }


def _empty_data(shape: tuple[int, ...], bits: int, symmetric: bool, alloc: bool = True) -> Any:
    """The codes array for ``shape`` (or, without ``alloc``, (its shape, dtypes allowed))."""
    if bits == 8:
        dt: tuple = (np.int8 if symmetric else np.uint8,)
        dshape = shape
    else:
        dt, dshape = (np.uint8,), (*shape[:-1], (shape[-1] * bits + 7) // 8)
    return np.empty(dshape, dt[0]) if alloc else (dshape, dt)


def _core_spec(
    shape: tuple[int, ...],
    bits: int,
    symmetric: bool,
    granularity: str,
    axis: int,
    group_size: int,
    *,
    rounding: str = "half_even",
    seed: int = 0,
    clip: str = "minmax",
    percentile: float = 99.9,
    mse_steps: int = 100,
    mse_min_ratio: float = 0.2,
    propagate: bool = False,
) -> dict[str, Any]:
    size = math.prod(shape)
    cols = shape[-1]
    spec = {
        "bits": bits,
        "symmetric": symmetric,
        "rows": size // cols if cols else 0,
        "cols": cols,
        "layout": "groups" if granularity == "group" else "runs",
        "run": 1,
        "channels": 1,
        "group_size": group_size,
        "rounding": ROUNDINGS.index(rounding),
        "seed": seed,
        "clip": CLIPS.index(clip),
        "percentile": float(percentile),
        "mse_steps": int(mse_steps),
        "mse_min_ratio": float(mse_min_ratio),
        "propagate": propagate,
    }
    if granularity == "tensor":
        spec["run"] = max(size, 1)
    elif granularity == "channel":
        spec["run"] = max(math.prod(shape[axis + 1 :]), 1)
        spec["channels"] = max(shape[axis], 1)
    return spec


def _expand(
    values: np.ndarray, shape: tuple[int, ...], granularity: str, axis: int, group_size: int
) -> np.ndarray:
    values = np.asarray(values)
    if granularity == "tensor":
        return np.broadcast_to(values, shape)
    if granularity == "channel":
        view = [1] * len(shape)
        view[axis] = shape[axis]
        return np.broadcast_to(values.reshape(view), shape)
    return np.repeat(values, group_size, axis=-1)[..., : shape[-1]]


def _index(shape: tuple[int, ...], flat: int) -> tuple[int, ...]:
    return tuple(int(i) for i in np.unravel_index(flat, shape))


# -- public functions -------------------------------------------------------------
def quantize(
    w: np.ndarray,
    bits: int = 8,
    *,
    symmetric: bool = True,
    granularity: str = "channel",
    axis: int = 0,
    group_size: int = 128,
    rounding: str = "half_even",
    clip: str = "minmax",
    seed: int = 0,
    percentile: float = 99.9,
    mse_steps: int = 100,
    mse_min_ratio: float = 0.2,
    nonfinite: str = "raise",
    name: str = "w",
) -> QuantizedTensor:
    """Quantizes ``w`` to ``bits``-bit integer codes; returns a :class:`QuantizedTensor`.

    Parameters
    ----------
    w : ndarray
        Floating-point array of at least one dimension. float32 C-contiguous
        input is read in place; any other float dtype or layout is first
        converted to a float32 C-contiguous copy (explicitly, here).
    bits : int
        2..8. See the module docstring for ranges and the packed layout.
    symmetric : bool
        Signed codes with zero point 0 (True) or unsigned codes with an
        integer zero point (False).
    granularity : {"channel", "tensor", "group"}
        One scale for the whole tensor, one per index along ``axis`` (torch's
        per-channel convention: ``axis=0`` is the output channel of an
        ``(out, in)`` weight), or one per ``group_size`` consecutive elements
        along the last axis (the last group of a row is shorter when
        ``group_size`` does not divide it).
    rounding : {"half_even", "half_away", "stochastic"}
    clip : {"minmax", "percentile", "mse"}
        Range of each parameter: the full range; the ``percentile``-th
        percentile of ``|x|`` (symmetric) or the ``(100 - percentile, percentile)``
        percentiles (asymmetric), linear interpolation as ``np.percentile``; or
        the range scaled by the ratio in ``1, 1 - 1/mse_steps, ...`` (down to
        ``mse_min_ratio``) that minimizes the squared reconstruction error.
    seed : int
        Seed of the stochastic rounding (0 <= seed < 2**64).
    nonfinite : {"raise", "propagate"}
        NaN/inf raise ``ValueError`` naming the first position (default), or
        give the parameters that contain them a NaN scale and codes equal to
        the zero point, so the dequantized group is NaN.
    name : str
        How error messages about the array call it (``"w"``; ``fake_quantize``
        passes ``"x"``, a checkpoint tool the tensor's name).

    Raises
    ------
    TypeError
        ``w`` is not a floating-point ndarray.
    ValueError
        Bad argument values (the message names the argument), or a
        non-finite value with ``nonfinite="raise"``. ``w`` is never modified.
    """
    wf = _as_float32(w, name)
    if w.ndim == 0:
        raise ValueError(f"{name}: expected an array of at least one dimension, got a 0-d array")
    _check_layout_args(wf.ndim, bits, granularity, axis, group_size)
    bits = int(bits)
    _choice("rounding", rounding, ROUNDINGS)
    _choice("clip", clip, CLIPS)
    _choice("nonfinite", nonfinite, NONFINITE)
    axis = int(axis) % wf.ndim
    if not isinstance(seed, (int, np.integer)) or not 0 <= seed < 2**64:
        raise ValueError(f"seed: expected an integer in [0, 2**64), got {seed!r}")
    if not 0 < percentile <= 100:
        raise ValueError(f"percentile: expected a value in (0, 100], got {percentile!r}")
    if not isinstance(mse_steps, (int, np.integer)) or mse_steps < 1:
        raise ValueError(f"mse_steps: expected a positive integer, got {mse_steps!r}")
    if not 0 < mse_min_ratio <= 1:
        raise ValueError(f"mse_min_ratio: expected a value in (0, 1], got {mse_min_ratio!r}")
    shape = wf.shape
    if granularity != "channel":
        axis = 0
    sshape = _scale_shape(shape, granularity, axis, group_size)
    data = _empty_data(shape, bits, symmetric)
    # How the codes are laid out: the kernel's spec and the result share it.
    layout = (shape, bits, bool(symmetric), granularity, axis, int(group_size))
    if wf.size:  # the kernel writes every scale and zero point
        scale = np.empty(sshape, np.float32)
        zero_point = np.empty(sshape, np.int32)
        spec = _core_spec(
            *layout,
            rounding=rounding,
            seed=int(seed),
            clip=clip,
            percentile=percentile,
            mse_steps=int(mse_steps),
            mse_min_ratio=float(mse_min_ratio),
            propagate=nonfinite == "propagate",
        )
        bad = _q.quantize(wf, spec, scale.reshape(-1), zero_point.reshape(-1), data)
        if bad >= 0:
            value = wf.reshape(-1)[bad]
            raise ValueError(
                f"{name}: non-finite value {value} at index {_index(shape, bad)} "
                f"(pass nonfinite='propagate' to keep it as a NaN group)"
            )
    else:
        data[...] = 0
        scale = np.ones(sshape, np.float32)
        zero_point = np.zeros(sshape, np.int32)
    return QuantizedTensor(data, scale, zero_point, *layout, w.dtype.newbyteorder("="))


def dequantize(
    qt: QuantizedTensor, out: np.ndarray | None = None, *, dtype: Any = None
) -> np.ndarray:
    """``qt.dequantize(out, dtype=dtype)``: the reconstruction ``scale * (q - zero_point)``,
    float32 unless ``dtype`` is given (``dtype=qt.source_dtype``: the quantized dtype)."""
    return qt.dequantize(out, dtype=dtype)


def fake_quantize(x: np.ndarray, bits: int = 8, **kwargs: Any) -> tuple[np.ndarray, np.ndarray]:
    """Quantize-dequantize for quantization-aware training.

    Takes the arguments of :func:`quantize`. Returns ``(y, mask)``: ``y`` is
    the float32 reconstruction (shape of ``x``) and ``mask`` (bool) marks the
    entries that were not clipped, i.e. whose rounded code before clamping,
    ``round(x * inv + zero_point)``, lies in ``[qmin, qmax]``: the
    straight-through estimator passes the gradient there
    (``grad_x = grad_y * mask``), as torch's fake_quantize does. With
    stochastic rounding the mask uses half-to-even rounding.
    """
    qt = quantize(x, bits, **{"name": "x", **kwargs})
    y = qt.dequantize()
    xf = _as_float32(x)
    scale = qt.expand(qt.scale)
    zp = qt.expand(qt.zero_point.astype(np.float32))
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        inv = np.float32(1.0) / scale
        r = np.where(scale < FLT_MIN, xf / scale, xf * inv).astype(np.float32) + zp
        if kwargs.get("rounding", "half_even") == "half_away":
            t = np.trunc(r)
            t = t + np.where(np.abs(r - t) >= 0.5, np.sign(r), np.float32(0))
        else:
            t = np.rint(r)
        mask = (t >= qt.qmin) & (t <= qt.qmax)
    return y, mask
