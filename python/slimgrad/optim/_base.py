"""The optimizer base class: parameters, param groups, state, state dicts.

Writing an optimizer (the subclass contract)
--------------------------------------------
A subclass does three things; the base class does everything else (parsing
``params``, matching ``grads`` to them, lazy state creation, float32 master
copies of float16/bfloat16 parameters, non-finite policy, step counting,
``state_dict`` / ``load_state_dict``)::

    class Sign(Optimizer):
        def __init__(self, params, lr=1e-3, *, nonfinite="raise",
                     rounding="nearest", seed=0):
            if lr < 0:
                raise ValueError(f"lr: expected >= 0, got {lr}")
            super().__init__(params, dict(lr=lr, rounding=rounding, seed=seed),
                             nonfinite=nonfinite)

        def _init_state(self, group, param):
            # Fresh state of one parameter, without "step" and "master"
            # (the base adds them). Arrays use self.state_dtype(param):
            # float32 for float16/bfloat16 params, the param's dtype otherwise;
            # self.state_full(param, value) also aligns them like the param.
            # (With a "state_dtype" option in the defaults, pass the group:
            # self.state_full(param, value, group) honours it; a
            # "master_weights" option decides whether the base adds "master".)
            return {"exp_avg": self.state_full(param)}

        def _step_bucket(self, group, bucket, check):
            # Update every array of the bucket in place, in one C++ call if
            # possible. If `check` is true, first look for a non-finite
            # gradient and, if there is one, return (array index in the
            # bucket, flat element index) WITHOUT modifying anything.
            # Return None after a successful update.
            ...

``_step_bucket`` is called once per *bucket*: the parameters of one param
group that share a dtype, in group order. A :class:`Bucket` holds parallel
lists: ``params`` (the user's arrays, updated in place), ``grads``,
``masters`` (float32 master copies for float16/bfloat16 params, else None),
``states[key]`` (the arrays ``_init_state`` returned under ``key``),
``labels`` (``"['fc1.weight']"`` or ``"[3]"``, so ``"grads" + label`` names
an array in messages), ``step`` (the step count *including* this step, as in
torch: 1 on the first call) and ``keys`` (state keys). For float16/bfloat16
params the math must run on ``masters`` in float32 and write the rounded
result to ``params`` in the same pass (``group["rounding"]``: ``"nearest"``
or ``"stochastic"`` with ``group["seed"]``).

Non-finite gradients: with ``nonfinite="raise"`` or ``"skip"``, when the
whole step is one bucket the base passes ``check=True`` (detection inside the
same kernel call); with several buckets it checks every gradient first in one
multi-tensor C++ call and passes ``check=False``, so that a bad gradient in
the last bucket cannot leave the first ones updated. ``nonfinite="ignore"``
passes ``check=False`` always (torch's behaviour: NaN flows into the params).

Optional hooks: ``_validate_all(buckets)`` runs before the first bucket of a
several-bucket step; override it to run your kernel's buffer checks without
the kernel, so a bad array in a later bucket raises before any bucket is
updated (the default does nothing). ``bucket.cache`` is a dict for whatever a
subclass precomputes per bucket (argument objects, label lists); buckets are
rebuilt, with an empty cache, when state is created or loaded or a group is
added.

State layout: ``opt.state[key]`` is a dict per parameter (``key`` is the
name for dict params, the flat index for list params), holding ``"step"``
(int), the arrays from ``_init_state`` and, for float16/bfloat16 params,
``"master"``. When the parameters of a bucket are consecutive views of one
buffer (see :func:`slimgrad.optim.flatten`), state arrays of the parameter's
shape are placed in one buffer as well, so the whole bucket is one range in
memory and steps as a single array.
"""

from __future__ import annotations

import copy
import math
import numbers
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Union

import numpy as np

try:  # ml_dtypes is a dependency, but the float32/float64 paths do not need it
    from ml_dtypes import bfloat16 as _bfloat16
except ImportError:  # pragma: no cover
    _bfloat16 = None

__all__ = ["Bucket", "Optimizer", "find_nonfinite", "state_offset", "HALF_DTYPES", "PARAM_DTYPES"]

Key = Union[str, int]

PARAM_DTYPES = tuple(
    np.dtype(d) for d in (np.float32, np.float64, np.float16, _bfloat16) if d is not None
)
HALF_DTYPES = tuple(d for d in PARAM_DTYPES if d.itemsize == 2)
NONFINITE_POLICIES = ("raise", "skip", "ignore")
ROUNDING_MODES = ("nearest", "stochastic")
STATE_DTYPES = (None, "float32", "bfloat16")


def normalize_state_dtype(value: Any) -> str | None:
    """``state_dtype`` as stored in a param group: None, ``"float32"`` or ``"bfloat16"``.

    Accepts those strings, ``np.float32``, ``ml_dtypes.bfloat16`` or their
    ``np.dtype``; anything else raises ``ValueError`` naming the argument.
    """
    if value is None:
        return None
    if isinstance(value, str):
        if value in ("float32", "bfloat16"):
            return value
    else:
        try:
            dt = np.dtype(value)
        except TypeError:
            dt = None
        if dt == np.dtype(np.float32):
            return "float32"
        if _bfloat16 is not None and dt == np.dtype(_bfloat16):
            return "bfloat16"
    raise ValueError(
        "state_dtype: expected None, 'float32' or 'bfloat16' (or np.float32 / "
        f"ml_dtypes.bfloat16), got {value!r}"
    )


def check_master_weights(value: Any) -> bool:
    """``master_weights`` must be a bool (``ValueError`` naming the argument otherwise)."""
    if not isinstance(value, (bool, np.bool_)):
        raise ValueError(f"master_weights: expected True or False, got {value!r}")
    return bool(value)


@dataclass
class Bucket:
    """The parameters of one param group sharing a dtype (see the module docstring)."""

    group_index: int
    dtype: np.dtype
    keys: list[Key]
    labels: list[str]
    params: list[np.ndarray]
    masters: list[np.ndarray] | None
    states: dict[str, list[np.ndarray]] = field(default_factory=dict)
    flat_index: list[int] = field(default_factory=list)  # positions in the optimizer's flat order
    grads: list[np.ndarray] = field(default_factory=list)
    step: int = 0
    # State dicts of the params (for step counting), parallel to keys.
    state_dicts: list[dict[str, Any]] = field(default_factory=list)
    # Free for the subclass: whatever it precomputes once per bucket (argument
    # objects, label lists). Rebuilt with the bucket (new state, load_state_dict).
    cache: dict[str, Any] = field(default_factory=dict)


def _label(key: Key) -> str:
    return f"[{key!r}]" if isinstance(key, str) else f"[{key}]"


def _data_ptr(a: np.ndarray) -> int:
    return int(a.__array_interface__["data"][0])


def _empty_at(shape: tuple[int, ...], dtype: np.dtype, offset: int) -> np.ndarray:
    """An uninitialized C-contiguous array whose data address is ``offset`` mod 64."""
    dtype = np.dtype(dtype)
    nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    buf = np.empty(nbytes + 64, np.uint8)
    start = (offset - _data_ptr(buf)) % 64
    return buf[start : start + nbytes].view(dtype).reshape(shape)


def state_offset(param: np.ndarray, dtype: Any = None, master: bool = True) -> int:
    """Where state arrays of ``param`` (of ``dtype``, default the param's) start
    within a 64-byte line.

    The kernels step to a 64-byte boundary of their main stream first: the
    param for float32/float64 params, the float32 master for float16/bfloat16
    params with a master (``master=True``), the param itself without one. A
    state array starts at the main stream's offset scaled by the itemsize
    ratio, so that it is aligned (to 64 bytes, or 32 for 2-byte state of a
    4-byte main stream: one vector of bfloat16) at the same element (NumPy
    gives large arrays an address 16 bytes past a page boundary; split loads
    cost ~40 % of the step with AVX-512 here). Masters and the state of
    float16/bfloat16 params with a master: 0.
    """
    if param.dtype.itemsize == 2 and master:
        return 0
    itemsize = param.dtype.itemsize if dtype is None else np.dtype(dtype).itemsize
    return (_data_ptr(param) % 64) * itemsize // param.dtype.itemsize % 64


def find_nonfinite(arrays: list[np.ndarray]) -> tuple[int, int] | None:
    """(array index, flat element index) of the first NaN/inf in ``arrays``, or None.

    One multi-tensor C++ call when the kernel is available (it is, in any
    build of this package), threads over arrays and chunks; arrays of any
    parameter dtype (float32, float64, float16, bfloat16).
    """
    from .. import _core

    fn = getattr(_core.optim, "find_nonfinite_multi", None)
    if fn is not None:
        return fn(arrays)
    for i, a in enumerate(arrays):  # fallback, kept only for partial builds
        bad = np.flatnonzero(~np.isfinite(a.astype(np.float32, copy=False)))
        if bad.size:
            return i, int(bad[0])
    return None


class Optimizer:
    """Base class of slimgrad's optimizers (torch.optim semantics on NumPy arrays).

    Parameters
    ----------
    params
        A dict ``{name: ndarray}``, a list of ndarrays, or a list of param-group
        dicts ``{"params": dict | list, "lr": ..., ...}`` whose options
        override ``defaults``. Arrays must be C-contiguous, writable,
        float32, float64, float16 or bfloat16 (``ml_dtypes.bfloat16``); they
        are updated in place and stay the objects the caller holds.
    defaults
        Default options of every group.
    nonfinite
        ``"raise"`` (default): ``step`` raises ``FloatingPointError`` naming the
        first array with a NaN/inf gradient and changes nothing; ``"skip"``:
        ``step`` changes nothing and returns False; ``"ignore"``: no check
        (torch's behaviour).

    Raises
    ------
    TypeError
        A parameter is not an ndarray or has an unsupported dtype; ``params``
        has an unsupported structure.
    ValueError
        Empty ``params``, a parameter given twice, a duplicate name, a
        read-only or non-contiguous parameter, an unknown option value.
    """

    def __init__(self, params: Any, defaults: dict[str, Any], *, nonfinite: str = "raise") -> None:
        if nonfinite not in NONFINITE_POLICIES:
            raise ValueError(f"nonfinite: expected one of {NONFINITE_POLICIES}, got {nonfinite!r}")
        if "rounding" in defaults and defaults["rounding"] not in ROUNDING_MODES:
            raise ValueError(
                f"rounding: expected one of {ROUNDING_MODES}, got {defaults['rounding']!r}"
            )
        defaults = dict(defaults)
        for k, v in defaults.items():
            if k in self._option_checks:
                self._option_checks[k](k, v)
        if "state_dtype" in defaults:
            defaults["state_dtype"] = normalize_state_dtype(defaults["state_dtype"])
        if "master_weights" in defaults:
            defaults["master_weights"] = check_master_weights(defaults["master_weights"])
        self.defaults = defaults
        self.nonfinite = nonfinite
        self.param_groups: list[dict[str, Any]] = []
        self.state: dict[Key, dict[str, Any]] = {}
        # How params were given: "dict", "list" or "groups"; grads must match.
        self._layout = ""
        self._keys: list[Key] = []  # flat order of all params
        self._params: list[np.ndarray] = []
        self._group_of: list[int] = []
        self._buckets: list[Bucket] | None = None
        self._str_keys = True  # every param has a name (grads may be a dict)
        # Per group, the checked option values as last validated (see _check_groups).
        self._checked: list[dict[str, Any]] = []

        if isinstance(params, np.ndarray):
            raise TypeError(
                "params: expected a dict, a list of ndarrays or a list of param groups, got ndarray"
            )
        if isinstance(params, Mapping):
            self._layout = "dict"
            groups: list[Any] = [{"params": params}]
        else:
            if not isinstance(params, Iterable):
                raise TypeError(
                    f"params: expected a dict, a list of ndarrays or a list of param groups, got {type(params).__name__}"
                )
            items = list(params)
            if not items:
                raise ValueError("params: expected at least one parameter, got an empty list")
            if all(isinstance(g, Mapping) and "params" in g for g in items):
                self._layout = "groups"
                groups = items
            elif any(isinstance(g, Mapping) for g in items):
                raise TypeError("params: a list must hold only ndarrays or only param-group dicts")
            else:
                self._layout = "list"
                groups = [{"params": items}]
        for g in groups:
            self.add_param_group(g)

    # ------------------------------------------------------------ structure
    def add_param_group(self, param_group: Mapping[str, Any]) -> None:
        """Add a group ``{"params": dict | list, option: value, ...}``.

        Options not given take the optimizer's defaults. Names (dict keys)
        must be unique across groups; list params are keyed by their index in
        the optimizer's flat order of all params.
        """
        if not isinstance(param_group, Mapping) or "params" not in param_group:
            raise TypeError("param_group: expected a dict with a 'params' entry")
        unknown = set(param_group) - set(self.defaults) - {"params"}
        if unknown:
            raise ValueError(
                f"param_group: unknown option(s) {sorted(unknown)}; known: {sorted(self.defaults)}"
            )
        raw = param_group["params"]
        if isinstance(raw, np.ndarray):
            raw = [raw]
        if isinstance(raw, Mapping):
            pairs: list[tuple[Key, Any]] = []
            for k, v in raw.items():
                if not isinstance(k, str):
                    raise TypeError(f"params: names must be str, got {type(k).__name__} {k!r}")
                pairs.append((k, v))
        else:
            pairs = [(len(self._keys) + i, v) for i, v in enumerate(raw)]
        if not pairs:
            raise ValueError("params: expected at least one parameter in each group, got none")
        seen_ids = {id(p) for p in self._params}
        seen_keys = set(self._keys)
        for k, p in pairs:
            label = "params" + _label(k)
            if not isinstance(p, np.ndarray):
                raise TypeError(f"{label}: expected an ndarray, got {type(p).__name__}")
            if p.dtype not in PARAM_DTYPES:
                raise TypeError(
                    f"{label}: expected float32, float64, float16 or bfloat16 C-contiguous array, "
                    f"got {p.dtype.name} array of shape {p.shape}"
                )
            if not p.flags.c_contiguous or not p.dtype.isnative:
                raise TypeError(
                    f"{label}: expected {p.dtype.name} C-contiguous array, got a non-contiguous "
                    f"or non-native {p.dtype.name} array of shape {p.shape}"
                )
            if not p.flags.writeable:
                raise ValueError(
                    f"{label}: expected a writable array, got a read-only {p.dtype.name} array"
                )
            if id(p) in seen_ids:
                raise ValueError(f"{label}: this array appears more than once in params")
            if k in seen_keys:
                raise ValueError(f"{label}: duplicate parameter name")
            seen_ids.add(id(p))
            seen_keys.add(k)
        gi = len(self.param_groups)
        for k, v in param_group.items():
            if k in self._option_checks:
                self._option_checks[k](f"param_groups[{gi}][{k!r}]", v)
        group = {**self.defaults, **{k: v for k, v in param_group.items() if k != "params"}}
        if group.get("rounding", "nearest") not in ROUNDING_MODES:
            raise ValueError(
                f"rounding: expected one of {ROUNDING_MODES}, got {group['rounding']!r}"
            )
        if "state_dtype" in group:
            group["state_dtype"] = normalize_state_dtype(group["state_dtype"])
            for k, p in pairs:
                self.state_dtype_for(group, p, "params" + _label(k))
        if "master_weights" in group:
            group["master_weights"] = check_master_weights(group["master_weights"])
        group["params"] = dict(pairs) if isinstance(raw, Mapping) else [p for _, p in pairs]
        self.param_groups.append(group)
        self._checked.append(self._option_snapshot(group))
        self._str_keys = self._str_keys and isinstance(raw, Mapping)
        for k, p in pairs:
            self._keys.append(k)
            self._params.append(p)
            self._group_of.append(gi)
        self._buckets = None

    # Checks of option values by name: (name, value) -> raises TypeError/ValueError.
    # (OPTION_CHECKS, set below the class; a subclass may extend or override it.)
    _option_checks: Mapping[str, Any] = {}

    def _option_snapshot(self, group: Mapping[str, Any]) -> dict[str, Any]:
        # Lists are copied to tuples so that an edit in place shows as a change.
        return {
            k: tuple(v) if isinstance(v, list) else v
            for k, v in group.items()
            if k in self._option_checks
        }

    def _check_groups(self) -> None:
        """Validate options edited into ``param_groups`` since the last check.

        Runs before a step touches anything; only a group whose checked values
        changed is checked again (one dict comparison per group otherwise).
        """
        for gi, group in enumerate(self.param_groups):
            snap = self._option_snapshot(group)
            if gi < len(self._checked) and snap == self._checked[gi]:
                continue
            for k, v in group.items():
                if k in self._option_checks:
                    self._option_checks[k](f"param_groups[{gi}][{k!r}]", v)
            self._checked[gi : gi + 1] = [snap]

    def _group_keys(self, gi: int) -> list[Key]:
        return [k for k, g in zip(self._keys, self._group_of) if g == gi]

    # ---------------------------------------------------------------- hooks
    @staticmethod
    def state_dtype(param: np.ndarray) -> np.dtype:
        """dtype of state arrays for ``param``: float32 for float16/bfloat16, else the param's."""
        return np.dtype(np.float32) if param.dtype.itemsize == 2 else param.dtype

    @classmethod
    def state_dtype_for(
        cls, group: Mapping[str, Any], param: np.ndarray, label: str = "params"
    ) -> np.dtype:
        """dtype of state arrays for ``param`` under the group's ``state_dtype`` option
        (absent or None: :meth:`state_dtype`). ``ValueError`` for a bad value or
        a float64 param with a float32/bfloat16 state request."""
        sd = normalize_state_dtype(group.get("state_dtype"))
        if sd is None:
            return cls.state_dtype(param)
        if param.dtype == np.float64:
            raise ValueError(
                f"state_dtype: {sd!r} needs float32, float16 or bfloat16 params; "
                f"{label} is float64 (its state is float64: use state_dtype=None)"
            )
        return np.dtype(np.float32) if sd == "float32" else np.dtype(_bfloat16)

    @staticmethod
    def uses_master(group: Mapping[str, Any], param: np.ndarray) -> bool:
        """True if ``param`` gets a float32 master copy (float16/bfloat16 params,
        unless the group says ``master_weights=False``)."""
        return param.dtype in HALF_DTYPES and bool(group.get("master_weights", True))

    @classmethod
    def state_full(
        cls,
        param: np.ndarray,
        value: float = 0.0,
        group: Mapping[str, Any] | None = None,
    ) -> np.ndarray:
        """A state array for ``param``: its shape, ``state_dtype(param)`` (or, given
        the param's ``group``, :meth:`state_dtype_for`), filled with ``value``,
        placed at ``state_offset`` within a cache line (use it for state arrays
        of the param's shape)."""
        if group is None:
            dt, master = cls.state_dtype(param), True
        else:
            dt, master = cls.state_dtype_for(group, param), cls.uses_master(group, param)
        a = _empty_at(param.shape, dt, state_offset(param, dt, master))
        a.fill(value)
        return a

    def _init_state(self, group: dict[str, Any], param: np.ndarray) -> dict[str, Any]:
        """Fresh state of one param (without "step"/"master"); see the module docstring."""
        return {}

    def _step_bucket(
        self, group: dict[str, Any], bucket: Bucket, check: bool
    ) -> tuple[int, int] | None:
        """Update one bucket in place; see the module docstring."""
        raise NotImplementedError

    # ---------------------------------------------------------------- state
    def _full_init_state(self, group: dict[str, Any], param: np.ndarray) -> dict[str, Any]:
        st: dict[str, Any] = {"step": 0}
        st.update(self._init_state(group, param))
        if self.uses_master(group, param):
            master = _empty_at(param.shape, np.dtype(np.float32), state_offset(param))
            master[...] = param
            st["master"] = master
        return st

    def _ensure_state(self) -> list[Key]:
        """Create missing state (lazily, at the first step); returns the keys created."""
        if self._buckets is not None:
            return []  # buckets exist only while every param has its state
        created = []
        try:
            for k, p, gi in zip(self._keys, self._params, self._group_of):
                if k not in self.state:
                    self.state[k] = self._full_init_state(self.param_groups[gi], p)
                    created.append(k)
            self._build_buckets()
        except BaseException:  # e.g. an option edited to a bad value: no state left behind
            self._forget(created)
            raise
        return created

    def _build_buckets(self) -> None:
        buckets: dict[tuple[int, np.dtype], Bucket] = {}
        order: list[Bucket] = []
        for i, (k, p, gi) in enumerate(zip(self._keys, self._params, self._group_of)):
            b = buckets.get((gi, p.dtype))
            if b is None:
                half = p.dtype in HALF_DTYPES
                b = Bucket(gi, p.dtype, [], [], [], [] if half else None)
                buckets[(gi, p.dtype)] = b
                order.append(b)
            b.keys.append(k)
            b.labels.append(_label(k))
            b.params.append(p)
            b.flat_index.append(i)
        for b in order:
            sts = [self.state[k] for k in b.keys]
            steps = {st["step"] for st in sts}
            if len(steps) != 1:
                raise RuntimeError(
                    f"parameters of one group have different step counts {sorted(steps)}"
                )
            self._pack_state(b, sts)
            b.state_dicts = sts
            if b.masters is not None:
                # master_weights=False: half params without a master copy.
                b.masters = [st["master"] for st in sts] if "master" in sts[0] else None
            names = [n for n, v in sts[0].items() if isinstance(v, np.ndarray) and n != "master"]
            b.states = {n: [st[n] for st in sts] for n in names}
        self._buckets = order

    @staticmethod
    def _pack_state(b: Bucket, sts: list[dict[str, Any]]) -> None:
        """If the bucket's params are consecutive in one buffer, do the same for their state."""
        if len(b.params) < 2:
            return
        end = None
        for p in b.params:
            if end is not None and _data_ptr(p) != end:
                return
            end = _data_ptr(p) + p.nbytes
        for name, v in sts[0].items():
            if not isinstance(v, np.ndarray):
                continue
            arrays = [st.get(name) for st in sts]
            if not all(
                isinstance(a, np.ndarray) and a.shape == p.shape and a.dtype == v.dtype
                for a, p in zip(arrays, b.params)
            ):
                continue
            total = sum(a.size for a in arrays)
            flat = _empty_at(
                (total,), v.dtype, state_offset(b.params[0], v.dtype, "master" in sts[0])
            )
            off = 0
            for st, a in zip(sts, arrays):
                view = flat[off : off + a.size].reshape(a.shape)
                view[...] = a
                st[name] = view
                off += a.size

    # ----------------------------------------------------------------- step
    def _flat_grads(self, grads: Any) -> list[Any]:
        """grads in the flat order of params; TypeError/ValueError on a structure mismatch."""
        n = len(self._keys)
        if isinstance(grads, Mapping):
            if self._layout == "list" or not self._str_keys:
                raise TypeError("grads: expected a list in the order of params, got dict")
            try:
                flat = [grads[k] for k in self._keys]
            except KeyError:
                missing = [k for k in self._keys if k not in grads]
                raise ValueError(
                    f"grads: missing {missing[0]!r} (a gradient for every parameter is required)"
                ) from None
            if len(grads) != n:
                known = set(self._keys)
                extra = [k for k in grads if k not in known]
                raise ValueError(f"grads: unexpected name {extra[0]!r} (not a parameter)")
            return flat
        if isinstance(grads, np.ndarray) or not isinstance(grads, (list, tuple)):
            want = (
                "a dict by parameter name"
                if self._layout == "dict"
                else "a list in the order of params"
            )
            raise TypeError(f"grads: expected {want}, got {type(grads).__name__}")
        if self._layout == "dict":
            raise TypeError("grads: expected a dict by parameter name, got list")
        if self._layout == "groups" and grads and not isinstance(grads[0], np.ndarray):
            # One entry per group, each shaped like that group's params.
            if len(grads) != len(self.param_groups):
                raise ValueError(
                    f"grads: expected {len(self.param_groups)} groups, got {len(grads)}"
                )
            flat = []
            for gi, (group, gg) in enumerate(zip(self.param_groups, grads)):
                gp = group["params"]
                if isinstance(gp, Mapping):
                    if not isinstance(gg, Mapping):
                        raise TypeError(
                            f"grads[{gi}]: expected a dict by parameter name, got {type(gg).__name__}"
                        )
                    missing = [k for k in gp if k not in gg]
                    if missing:
                        raise ValueError(
                            f"grads: missing {missing[0]!r} (a gradient for every parameter is required)"
                        )
                    if len(gg) != len(gp):
                        extra = [k for k in gg if k not in gp]
                        raise ValueError(f"grads: unexpected name {extra[0]!r} (not a parameter)")
                    flat.extend(gg[k] for k in gp)
                else:
                    if not isinstance(gg, (list, tuple)):
                        raise TypeError(f"grads[{gi}]: expected a list, got {type(gg).__name__}")
                    if len(gg) != len(gp):
                        raise ValueError(f"grads[{gi}]: expected {len(gp)} arrays, got {len(gg)}")
                    flat.extend(gg)
            return flat
        if len(grads) != n:
            raise ValueError(f"grads: expected {n} arrays (one per parameter), got {len(grads)}")
        return list(grads)

    def step(self, grads: Any) -> bool:
        """One optimization step; parameters (and state) are updated in place.

        Parameters
        ----------
        grads
            Same structure as ``params``: a dict by the same names, or a list
            in the same order (with param groups: a flat dict by name, a flat
            list in the order of all params, or one dict/list per group).
            Each gradient has its parameter's dtype and shape and is only read.

        Returns
        -------
        bool
            True if the step was applied; False if it was skipped because a
            gradient is not finite and ``nonfinite="skip"``.

        Raises
        ------
        TypeError
            Wrong container, a gradient that is not a C-contiguous ndarray of
            its parameter's dtype.
        ValueError
            Missing or unexpected name, wrong count, a shape mismatch, a
            parameter or state array that became read-only.
        FloatingPointError
            ``nonfinite="raise"`` and a gradient holds NaN or inf; the message
            names the first such array and element, e.g.
            ``grads['fc1.weight'] has a non-finite value at index 17``.

        On any exception nothing (params, state, step counts) is modified.
        """
        self._check_groups()
        flat = self._flat_grads(grads)
        created = self._ensure_state()
        try:
            applied = self._step_all(flat)
        except BaseException:
            self._forget(created)
            raise
        if not applied:
            self._forget(created)
        return applied

    def _forget(self, created: list[Key]) -> None:
        # A failed or skipped first step leaves no state behind.
        for k in created:
            del self.state[k]
        if created:
            self._buckets = None

    def _step_all(self, flat: list[Any]) -> bool:
        buckets = self._buckets
        assert buckets is not None
        for b in buckets:
            b.grads = [flat[i] for i in b.flat_index] if len(b.flat_index) != len(flat) else flat
            b.step = b.state_dicts[0]["step"] + 1
        check = self.nonfinite != "ignore"
        if check and len(buckets) > 1:
            # Several kernel calls: check every gradient before the first one runs.
            self._validate_all(buckets)
            bad = find_nonfinite([g for b in buckets for g in b.grads])
            if bad is not None:
                i, j = bad
                for b in buckets:
                    if i < len(b.grads):
                        return self._nonfinite(b, i, j)
                    i -= len(b.grads)
            check = False
        for b in buckets:
            # With several buckets, a bucket may only fail in ways checked above.
            bad = self._step_bucket(self.param_groups[b.group_index], b, check)
            if bad is not None:
                return self._nonfinite(b, *bad)
        for b in buckets:
            for st in b.state_dicts:
                st["step"] = b.step
            b.grads = []
        return True

    def _validate_all(self, buckets: list[Bucket]) -> None:
        """Check every bucket's arrays before any kernel runs (steps with several buckets).

        Override to run the buffer checks of your kernel without running it,
        so that a bad array in a later bucket cannot leave earlier buckets
        updated. Must not modify anything.
        """

    def _nonfinite(self, b: Bucket, i: int, j: int) -> bool:
        b.grads = []
        if self.nonfinite == "skip":
            return False
        raise FloatingPointError(f"grads{b.labels[i]} has a non-finite value at index {j}")

    # ----------------------------------------------------------- state dict
    def state_dict(self) -> dict[str, Any]:
        """A copy of the optimizer state: plain dicts, Python scalars and ndarrays.

        ``{"state": {key: {"step": int, name: ndarray, ...}}, "param_groups":
        [{option: value, ..., "params": [keys]}]}``. Arrays are copies, so
        later steps do not change a state dict already taken.
        """
        state = {
            k: {n: (v.copy() if isinstance(v, np.ndarray) else v) for n, v in st.items()}
            for k, st in self.state.items()
        }
        groups = []
        for gi, g in enumerate(self.param_groups):
            d = {n: copy.deepcopy(v) for n, v in g.items() if n != "params"}
            d["params"] = self._group_keys(gi)
            groups.append(d)
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Replace options and state by those of ``state_dict`` (as from :meth:`state_dict`).

        Everything is checked first: the same groups with the same parameter
        keys in the same order, every option of this optimizer with a valid
        value (extra keys, such as a scheduler's ``initial_lr``, are copied
        into the groups as torch does), for each parameter either
        no state or exactly the state arrays this optimizer would create, each
        of the same shape and dtype, and equal step counts within a group.
        Arrays are copied in. ``ValueError`` (``TypeError`` for a wrong
        container type) on any mismatch, and then nothing is changed.
        """
        if not isinstance(state_dict, Mapping) or set(state_dict) != {"state", "param_groups"}:
            raise TypeError("state_dict: expected a dict with exactly 'state' and 'param_groups'")
        groups, state = state_dict["param_groups"], state_dict["state"]
        if not isinstance(groups, (list, tuple)) or not isinstance(state, Mapping):
            raise TypeError("state_dict: 'param_groups' must be a list and 'state' a dict")
        if len(groups) != len(self.param_groups):
            raise ValueError(
                f"state_dict: expected {len(self.param_groups)} param groups, got {len(groups)}"
            )
        new_groups = []
        for gi, (mine, theirs) in enumerate(zip(self.param_groups, groups)):
            if not isinstance(theirs, Mapping) or "params" not in theirs:
                raise TypeError(f"state_dict['param_groups'][{gi}]: expected a dict with 'params'")
            keys = self._group_keys(gi)
            if list(theirs["params"]) != keys:
                raise ValueError(
                    f"state_dict['param_groups'][{gi}]['params']: expected keys {keys}, got {list(theirs['params'])}"
                )
            # Extra keys (a scheduler's "initial_lr", torch's "foreach"...) are
            # kept, as torch does; every option of this optimizer must be there.
            if not set(mine) <= set(theirs):
                raise ValueError(
                    f"state_dict['param_groups'][{gi}]: missing option(s) "
                    f"{sorted(set(mine) - set(theirs))}; expected {sorted(set(mine) - {'params'})}"
                )
            for k, v in theirs.items():
                if k in self._option_checks:
                    self._option_checks[k](f"state_dict['param_groups'][{gi}][{k!r}]", v)
            new_groups.append({n: copy.deepcopy(v) for n, v in theirs.items() if n != "params"})
        unknown = [k for k in state if k not in set(self._keys)]
        if unknown:
            raise ValueError(
                f"state_dict['state']: unexpected key {unknown[0]!r} (not a parameter)"
            )
        new_state: dict[Key, dict[str, Any]] = {}
        for gi, group in enumerate(new_groups):
            steps = set()
            keys = self._group_keys(gi)
            present = [k for k in keys if k in state]
            if present and len(present) != len(keys):
                missing = next(k for k in keys if k not in state)
                raise ValueError(f"state_dict['state']: missing {missing!r} (its group has state)")
            for k in present:
                p = self._params[self._keys.index(k)]
                where = f"state_dict['state']{_label(k)}"
                theirs = state[k]
                if not isinstance(theirs, Mapping):
                    raise TypeError(f"{where}: expected a dict, got {type(theirs).__name__}")
                template = self._full_init_state({**self.param_groups[gi], **group}, p)
                if set(theirs) != set(template):
                    raise ValueError(
                        f"{where}: expected entries {sorted(template)}, got {sorted(theirs)}"
                    )
                st: dict[str, Any] = {}
                for n, t in template.items():
                    v = theirs[n]
                    if isinstance(t, np.ndarray):
                        if (
                            not isinstance(v, np.ndarray)
                            or v.shape != t.shape
                            or v.dtype != t.dtype
                        ):
                            got = (
                                f"{v.dtype.name} array of shape {v.shape}"
                                if isinstance(v, np.ndarray)
                                else type(v).__name__
                            )
                            raise ValueError(
                                f"{where}[{n!r}]: expected {t.dtype.name} array of shape {t.shape}, got {got}"
                            )
                        t[...] = v  # the fresh array is placed like the optimizer's own state
                        st[n] = t
                    else:
                        ok = isinstance(
                            v, (int, float, np.integer, np.floating)
                        ) and not isinstance(v, bool)
                        if not ok or (n == "step" and (int(v) != v or v < 0)):
                            raise ValueError(
                                f"{where}[{n!r}]: expected a non-negative number, got {v!r}"
                            )
                        st[n] = type(t)(v)
                steps.add(st["step"])
                new_state[k] = st
            if len(steps) > 1:
                raise ValueError(
                    f"state_dict['state']: group {gi} has different step counts {sorted(steps)}"
                )
        # All checked: commit.
        for mine, new in zip(self.param_groups, new_groups):
            mine.update(new)
        self.state = new_state
        self._buckets = None

    def __repr__(self) -> str:
        lines = [f"{type(self).__name__} ("]
        for gi, g in enumerate(self.param_groups):
            n = len(g["params"])
            lines.append(f"  group {gi}: {n} arrays")
            for k in sorted(k for k in g if k != "params"):
                lines.append(f"    {k}: {g[k]}")
        lines.append(")")
        return "\n".join(lines)


def _check_number(name: str, value: Any) -> float:
    """``float(value)`` for a real number; ``TypeError`` naming ``name`` otherwise."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name}: expected a number, got {value!r}")
    return float(value)


def _check_betas(betas: Any, name: str = "betas") -> tuple[float, float]:
    if not isinstance(betas, (tuple, list)) or len(betas) != 2:
        raise ValueError(f"{name}: expected a pair (beta1, beta2), got {betas!r}")
    b1, b2 = (_check_number(f"{name}[{i}]", b) for i, b in enumerate(betas))
    for i, b in enumerate((b1, b2)):
        if not 0.0 <= b < 1.0:
            raise ValueError(f"{name}[{i}]: expected 0 <= beta < 1, got {b}")
    return b1, b2


def _check_nonneg(name: str, value: Any) -> float:
    v = _check_number(name, value)
    if not (v >= 0.0) or math.isinf(v):
        raise ValueError(f"{name}: expected a finite value >= 0, got {value!r}")
    return v


def _check_unit(name: str, value: Any) -> float:
    v = _check_number(name, value)
    if not 0.0 <= v <= 1.0:
        raise ValueError(f"{name}: expected 0 <= value <= 1, got {value!r}")
    return v


def _check_bool(name: str, value: Any) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name}: expected True or False, got {value!r}")
    return bool(value)


def check_torch_flags(
    foreach: Any = None, fused: Any = None, capturable: Any = False, differentiable: Any = False
) -> None:
    """torch's implementation switches, accepted for drop-in compatibility.

    ``foreach`` / ``fused`` (None or a bool) are ignored: slimgrad's kernels are
    always fused multi-tensor kernels. ``capturable`` / ``differentiable`` only
    mean something with CUDA graphs / autograd, which slimgrad has not: False
    is accepted, True raises ``ValueError`` naming the argument. They are not
    stored in the param groups.
    """
    for name, v in (("foreach", foreach), ("fused", fused)):
        if v is not None and not isinstance(v, (bool, np.bool_)):
            raise TypeError(f"{name}: expected None, True or False, got {v!r}")
    for name, v in (("capturable", capturable), ("differentiable", differentiable)):
        if v is None or v is False or (isinstance(v, np.bool_) and not v):
            continue
        raise ValueError(
            f"{name}: expected False (slimgrad has no autograd or CUDA graphs), got {v!r}"
        )


# Checks of the options every optimizer may have; each takes (name, value),
# raises TypeError/ValueError naming ``name`` and returns nothing useful.
# Used on per-group values and, before every step, on param_groups edits.
OPTION_CHECKS: dict[str, Any] = {
    **{
        k: _check_nonneg
        for k in (
            "lr",
            "eps",
            "weight_decay",
            "momentum",
            "lr_decay",
            "initial_accumulator_value",
            "alpha",
            "momentum_decay",
        )
    },
    "dampening": _check_number,
    "betas": lambda name, v: _check_betas(v, name),
    "rho": _check_unit,
    **{
        k: _check_bool
        for k in ("maximize", "nesterov", "amsgrad", "centered", "decoupled_weight_decay")
    },
}

Optimizer._option_checks = OPTION_CHECKS
