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

import threading
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from . import _state_dict
from ._bucket import (
    Bucket,
    Key,
    empty_at,
    find_nonfinite_in,
    label,
    pack_state,
    state_offset,
    state_replaced,
)
from ._checks import (
    HALF_DTYPES,
    NONFINITE_POLICIES,
    OPTION_CHECKS,
    PARAM_DTYPES,
    ROUNDING_MODES,
    check_master_weights,
    normalize_state_dtype,
)
from ._clipstep import check_clip_args, clipped_step
from ._grads import cast_grads, flat_grads
from ._layout import StateLayout
from ._partial import step_present

__all__ = ["Optimizer"]


class Optimizer(StateLayout):
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
        # Held during step(): a second thread stepping this optimizer at the
        # same time gets a RuntimeError instead of silently losing updates.
        self._step_lock = threading.Lock()
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
                    "params: expected a dict, a list of ndarrays or a list of param groups, "
                    f"got {type(params).__name__}"
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
            where = "params" + label(k)
            if not isinstance(p, np.ndarray):
                raise TypeError(f"{where}: expected an ndarray, got {type(p).__name__}")
            if p.dtype not in PARAM_DTYPES:
                raise TypeError(
                    f"{where}: expected float32, float64, float16 or bfloat16 C-contiguous array, "
                    f"got {p.dtype.name} array of shape {p.shape}"
                )
            if not p.flags.c_contiguous or not p.dtype.isnative:
                raise TypeError(
                    f"{where}: expected {p.dtype.name} C-contiguous array, got a non-contiguous "
                    f"or non-native {p.dtype.name} array of shape {p.shape}"
                )
            if not p.flags.writeable:
                raise ValueError(
                    f"{where}: expected a writable array, got a read-only {p.dtype.name} array"
                )
            if id(p) in seen_ids:
                raise ValueError(f"{where}: this array appears more than once in params")
            if k in seen_keys:
                raise ValueError(f"{where}: duplicate parameter name")
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
                self.state_dtype_for(group, p, "params" + label(k))
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

    # The total gradient norm of the last step(max_norm=...) (None before one).
    last_grad_norm: float | None = None
    # Clip arguments of the step in progress (set by step(), read by _step_all).
    _clip: tuple[float, float, bool] | None = None
    # Whether the kernels apply Bucket.grad_scale as they load each gradient
    # (else step(max_norm=...) steps on clipped copies of the gradients).
    _kernel_grad_scale = False

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
    # (state_dtype, state_dtype_for, uses_master, state_full: from StateLayout)
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
            master = empty_at(param.shape, np.dtype(np.float32), state_offset(param))
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
        # One bucket per group, dtype and step count (counts differ only after
        # steps where some gradients were None).
        buckets: dict[tuple[int, np.dtype, int], Bucket] = {}
        order: list[Bucket] = []
        for i, (k, p, gi) in enumerate(zip(self._keys, self._params, self._group_of)):
            b = buckets.get((gi, p.dtype, self.state[k]["step"]))
            if b is None:
                half = p.dtype in HALF_DTYPES
                b = Bucket(gi, p.dtype, [], [], [], [] if half else None)
                buckets[(gi, p.dtype, self.state[k]["step"])] = b
                order.append(b)
            b.keys.append(k)
            b.labels.append(label(k))
            b.params.append(p)
            b.flat_index.append(i)
        for b in order:
            sts = [self.state[k] for k in b.keys]
            pack_state(b, sts)
            b.state_dicts = sts
            if b.masters is not None:
                # master_weights=False: half params without a master copy.
                b.masters = [st["master"] for st in sts] if "master" in sts[0] else None
            names = [n for n, v in sts[0].items() if isinstance(v, np.ndarray) and n != "master"]
            b.states = {n: [st[n] for st in sts] for n in names}
        self._buckets = order

    # ----------------------------------------------------------------- step
    def step(
        self,
        grads: Any,
        *,
        cast: bool = False,
        max_norm: float | None = None,
        norm_type: float = 2.0,
        error_if_nonfinite: bool = False,
    ) -> bool:
        """One optimization step; parameters (and state) are updated in place.

        Parameters
        ----------
        grads
            Same structure as ``params``: a dict by the same names, or a list
            in the same order (with param groups: a flat dict by name, a flat
            list in the order of all params, or one dict/list per group).
            Each gradient has its parameter's dtype and shape and is only read.
            ``None`` for a parameter without a gradient: it is skipped, its
            state and step count unchanged (created only at its first
            gradient), as torch skips a parameter whose ``.grad`` is None.
        cast : bool, default False
            Accept gradients of another float dtype (float16/bfloat16/float32/
            float64) and convert each such gradient to its parameter's dtype:
            one copy of that gradient per step (the math itself stays in the
            parameter's precision). Without it a dtype mismatch is a TypeError.
        max_norm : float, optional
            Clip the gradients to this total norm inside the step, as
            ``clip_grad_norm_(grads, max_norm, norm_type, error_if_nonfinite)``
            followed by ``step(grads)`` would, but without writing the
            gradients: one read gives the total norm and the non-finite
            verdict, and the update pass multiplies each gradient by the
            factor as it loads it (same bits as clip-then-step for float32 and
            float64; float16/bfloat16 gradients are scaled in float32 without
            rounding back). The norm is over the present gradients in parameter
            order; it is stored in ``last_grad_norm`` (also when the step is
            skipped or raises for a non-finite gradient).
        norm_type : float, default 2.0
            Order of the norm (> 0 or ``inf``), with ``max_norm``.
        error_if_nonfinite : bool, default False
            With ``max_norm``: raise ``RuntimeError`` (torch's message) when the
            total norm is NaN or inf, before the non-finite policy applies.

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
        RuntimeError
            Another thread is stepping this optimizer at the same time; or
            ``error_if_nonfinite`` and the total gradient norm is not finite.

        On any exception nothing (params, state, step counts) is modified.
        """
        if not self._step_lock.acquire(blocking=False):
            raise RuntimeError(
                f"step: this {type(self).__name__} is already stepping in another thread; "
                "an optimizer must not be stepped concurrently (use a lock, or one optimizer "
                "per thread)"
            )
        try:
            self._clip = None
            if max_norm is not None:
                self._clip = (*check_clip_args(max_norm, norm_type), bool(error_if_nonfinite))
            self._check_groups()
            flat = flat_grads(self, grads)
            if cast:
                flat = cast_grads(flat, self._params, self._keys)
            if self._buckets is not None and state_replaced(self.state, self._buckets):
                self._buckets = None  # rebuilt below: the kernels check the new arrays
            if any(g is None for g in flat):
                return step_present(self, flat)
            return self._run_step(flat)
        finally:
            self._step_lock.release()

    def _run_step(self, flat: list[Any]) -> bool:
        created = self._ensure_state()
        try:
            applied = self._step_all(flat)
        except BaseException:
            self._forget(created)
            raise
        if not applied:
            self._forget(created)
        return applied

    def __getstate__(self) -> dict[str, Any]:
        d = self.__dict__.copy()
        del d["_step_lock"]  # a lock cannot be copied or pickled
        d["_buckets"] = None  # a cache (holding kernel argument objects): rebuilt at the next step
        return d

    def __setstate__(self, d: dict[str, Any]) -> None:
        self.__dict__.update(d)
        self._step_lock = threading.Lock()

    def _forget(self, created: list[Key]) -> None:
        # A failed or skipped first step leaves no state behind.
        for k in created:
            del self.state[k]
        if created:
            self._buckets = None

    def _buckets_for(self, flat: list[Any]) -> list[Bucket]:
        """The buckets, given this step's gradients (``flat``, in param order) and step counts."""
        buckets = self._buckets
        assert buckets is not None
        for b in buckets:
            b.grads = [flat[i] for i in b.flat_index] if len(b.flat_index) != len(flat) else flat
            b.step = b.state_dicts[0]["step"] + 1
        return buckets

    def _refuse_nonfinite(self, buckets: list[Bucket]) -> bool | None:
        """The step's result when a gradient of any bucket is not finite (nothing
        is modified: ``_nonfinite`` raises or returns False), else None."""
        bad = find_nonfinite_in(buckets)
        return None if bad is None else self._nonfinite(*bad)

    def _step_all(self, flat: list[Any]) -> bool:
        buckets = self._buckets_for(flat)
        if self._clip is not None:
            return clipped_step(self, buckets, flat, self._clip)
        check = self.nonfinite != "ignore"
        if len(buckets) > 1:
            # Several kernel calls: check every bucket's arrays (and, unless
            # nonfinite="ignore", every gradient) before the first one runs,
            # so a step is all-or-nothing for any mix of dtypes.
            self._validate_all(buckets)
            refused = self._refuse_nonfinite(buckets) if check else None
            if refused is not None:
                return refused
            check = False
        return self._run_buckets(buckets, check)

    def _run_buckets(self, buckets: list[Bucket], check: bool) -> bool:
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
        return _state_dict.state_dict(self)

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
        _state_dict.load_state_dict(self, state_dict)

    def __repr__(self) -> str:
        lines = [f"{type(self).__name__} ("]
        for gi, g in enumerate(self.param_groups):
            n = len(g["params"])
            lines.append(f"  group {gi}: {n} arrays")
            for k in sorted(k for k in g if k != "params"):
                lines.append(f"    {k}: {g[k]}")
        lines.append(")")
        return "\n".join(lines)


# Checks of option values by name (a subclass may extend or override it).
Optimizer._option_checks = OPTION_CHECKS
