"""Calibration statistics of Linear layers: input Hessians and per-channel activation stats.

For each :class:`~slimgrad.nn.Linear` layer, over every calibration token
``x`` (a row of the layer's input, padding excluded):

- ``hessian``: ``H = sum x x^T`` (in_features, in_features), float64 by
  default. GPTQ / SparseGPT use ``2 H / tokens`` (plus damping).
- ``abs_sum``: ``sum |x_j|`` per input channel (AWQ's activation scale is
  ``abs_sum / tokens``, :meth:`Calibration.mean_abs`).
- ``sq_sum``: ``sum x_j^2`` per input channel (Wanda's ``||X_j||_2`` is its
  square root, :meth:`Calibration.l2_norm`; it is also H's diagonal).

``H`` is accumulated by a fused C++ kernel (:func:`hessian_accumulate`): the
rows are packed into panels once, the upper triangle is computed in register
tiles (float32 FMA within a block of 256 tokens, each block's partial added
into H's dtype, so float64 H loses nothing across blocks), threaded over
(block of rows of H, column panel) tasks in one parallel region per 1024
tokens, then mirrored in 64 x 64 blocks; the channel statistics are summed in
float64 while packing. No ``x.T @ x`` temporary per batch.

Layers that a module declares as reading one input (its ``shared_input``
names, e.g. attention's query, key and value) get their statistics
collected once, under every name the same arrays: a third of the work for
q, k and v; consumers see equal Hessians (GPTQ factors them once,
``quant.reuse_factors``).
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from .. import _core, _safetensors
from ..nn import Linear, Module
from ..nn._module import check_input

__all__ = ["Calibration", "calibrate", "hessian_accumulate", "linear_layers", "shared_inputs"]

_FORMAT = "slimgrad-calibration-v1"


def hessian_accumulate(
    x: np.ndarray,
    hessian: np.ndarray,
    abs_sum: np.ndarray | None = None,
    sq_sum: np.ndarray | None = None,
) -> None:
    """``hessian += x.T @ x`` in place, and the channel sums, in one fused C++ pass.

    Parameters
    ----------
    x : float32 ndarray (tokens, d)
        Only read (a strided or byte-swapped array is copied once).
    hessian : float32 or float64 ndarray (d, d), C-contiguous, written in place
        Must be symmetric on entry (only its upper triangle is read; the lower
        one is overwritten with the mirror of the result).
    abs_sum, sq_sum : float64 ndarray (d,) or None, written in place
        ``+= sum |x|`` and ``+= sum x^2`` over the tokens, per column.

    Raises ``TypeError`` / ``ValueError`` naming the argument (dtype, layout,
    shape) before anything is written. Identical results for any thread
    count; across ISAs the float32 block partials differ by rounding.
    """
    x = check_input(x, "x", np.dtype(np.float32))
    _core.nn.hessian_accumulate(x, hessian, abs_sum, sq_sum)


def linear_layers(model: Module, prefix: str = "") -> Iterator[tuple[str, Linear]]:
    """``(name, layer)`` for every Linear in ``model``, depth first, torch-style dotted names."""
    for name, child in model._modules.items():
        full = f"{prefix}{name}"
        if isinstance(child, Linear):
            yield full, child
        yield from linear_layers(child, full + ".")


def shared_inputs(model: Module, prefix: str = "") -> dict[str, str]:
    """``{layer: first layer of its group}`` for the Linear layers that a module
    declares (class attribute ``shared_input``, child names) as always called on
    the same input; the group's first layer is not a key."""
    members = getattr(model, "shared_input", ())
    out = {f"{prefix}{m}": f"{prefix}{members[0]}" for m in members[1:]}
    for name, child in model._modules.items():
        out.update(shared_inputs(child, f"{prefix}{name}."))
    return out


class Calibration:
    """Per-layer calibration statistics (see the module docstring).

    ``hessians``, ``abs_sums``, ``sq_sums``: ``{layer name: ndarray}``;
    ``tokens``: ``{layer name: int}``. Fill them with :meth:`record` (or
    :func:`calibrate`), save with :meth:`save`, read back with :meth:`load`.
    """

    def __init__(self, dtype: Any = np.float64) -> None:
        self.dtype = np.dtype(dtype)
        if self.dtype not in (np.dtype(np.float32), np.dtype(np.float64)):
            raise TypeError(f"dtype: expected float32 or float64, got {self.dtype.name}")
        self.hessians: dict[str, np.ndarray] = {}
        self.abs_sums: dict[str, np.ndarray] = {}
        self.sq_sums: dict[str, np.ndarray] = {}
        self.tokens: dict[str, int] = {}
        self.token_mask: np.ndarray | None = None  # rows to keep of the next inputs (flat)
        # {layer: layers reading the same input}: set by record(), filled by add()
        self._followers: dict[str, list[str]] = {}

    def add(self, name: str, x: np.ndarray) -> None:
        """Accumulate the rows of ``x`` (float32, (..., d)) into layer ``name``."""
        x = check_input(x, "x", np.dtype(np.float32))
        d = x.shape[-1]
        rows = x.reshape(-1, d)
        if self.token_mask is not None and self.token_mask.size == rows.shape[0]:
            rows = rows[self.token_mask]  # drop padding tokens (one gather, O(tokens * d))
        if name not in self.hessians:
            self.hessians[name] = np.zeros((d, d), self.dtype)
            self.abs_sums[name] = np.zeros(d, np.float64)
            self.sq_sums[name] = np.zeros(d, np.float64)
            self.tokens[name] = 0
        elif self.hessians[name].shape[0] != d:
            raise ValueError(
                f"{name}: expected inputs with {self.hessians[name].shape[0]} features, got {d}"
            )
        hessian_accumulate(rows, self.hessians[name], self.abs_sums[name], self.sq_sums[name])
        self.tokens[name] += int(rows.shape[0])
        for other in self._followers.get(name, ()):  # the same arrays under their names
            self.hessians[other], self.abs_sums[other] = self.hessians[name], self.abs_sums[name]
            self.sq_sums[other], self.tokens[other] = self.sq_sums[name], self.tokens[name]

    @contextlib.contextmanager
    def record(self, model: Module) -> Iterator[Calibration]:
        """Within the block, every Linear of ``model`` adds its forward input here.

        The layers' ``forward`` is wrapped per instance and restored on exit;
        of layers declared to read one input (:func:`shared_inputs`) only the
        first is wrapped, and the others get its statistics. Set
        :attr:`token_mask` (flat bool over batch * seq) before a forward to
        leave padding tokens out.
        """
        patched = []
        followers = shared_inputs(model)
        self._followers = {}
        for name, first in followers.items():
            self._followers.setdefault(first, []).append(name)
        try:
            for name, layer in linear_layers(model):
                if name in followers:
                    continue
                original = layer.forward

                def hooked(x: np.ndarray, _name: str = name, _fwd: Any = original) -> np.ndarray:
                    y = _fwd(x)
                    self.add(_name, x)
                    return y

                layer.forward = hooked  # type: ignore[method-assign]
                patched.append(layer)
            yield self
        finally:
            self._followers = {}
            for layer in patched:
                del layer.forward  # back to the class's method

    def mean_abs(self, name: str) -> np.ndarray:
        """Mean ``|x|`` per input channel (AWQ's activation scale), float64."""
        return self.abs_sums[name] / max(self.tokens[name], 1)

    def l2_norm(self, name: str) -> np.ndarray:
        """``||X_j||_2`` per input channel over all tokens (Wanda), float64."""
        return np.sqrt(self.sq_sums[name])

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write a safetensors file: ``<layer>.hessian``, ``.abs_sum``, ``.sq_sum``;
        token counts in the metadata. Atomic (a crash leaves no partial file)."""
        tensors = {}
        for name in self.hessians:
            tensors[f"{name}.hessian"] = _safetensors.to_entry(self.hessians[name], name)
            tensors[f"{name}.abs_sum"] = _safetensors.to_entry(self.abs_sums[name], name)
            tensors[f"{name}.sq_sum"] = _safetensors.to_entry(self.sq_sums[name], name)
        meta = {"format": _FORMAT, "tokens": json.dumps(self.tokens)}
        _safetensors.write(os.fspath(path), tensors, meta)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Calibration:
        """Read a file written by :meth:`save`; ``ValueError`` naming the file and entry
        if it is not one (wrong format, missing or misshapen entries)."""
        path = os.fspath(path)
        entries, meta = _safetensors.read(path)
        if not meta or meta.get("format") != _FORMAT:
            raise ValueError(
                f"{path}: not a slimgrad calibration file (metadata format != {_FORMAT!r})"
            )
        try:
            tokens = json.loads(meta["tokens"])
        except (KeyError, json.JSONDecodeError):
            raise ValueError(f"{path}: metadata 'tokens': expected a JSON object") from None
        dtype = np.float64
        if tokens:
            first = entries.get(f"{next(iter(tokens))}.hessian")
            dtype = np.float32 if first is not None and first.dtype == "F32" else np.float64
        calib = cls(dtype)
        for name, count in tokens.items():
            arrays = []
            for part in ("hessian", "abs_sum", "sq_sum"):
                key = f"{name}.{part}"
                if key not in entries:
                    raise ValueError(f"{path}: missing entry {key!r}")
                arrays.append(_safetensors.to_array(f"{path}: {key}", entries[key]))
            h, a, q = arrays
            d = a.shape[0] if a.ndim == 1 else -1
            if h.shape != (d, d) or q.shape != (d,):
                raise ValueError(
                    f"{path}: {name}: expected hessian (d, d) and sums (d,), got "
                    f"{h.shape}, {a.shape}, {q.shape}"
                )
            calib.hessians[name], calib.abs_sums[name], calib.sq_sums[name] = h, a, q
            calib.tokens[name] = int(count)
        return calib


def calibrate(
    model: Any, sentences: Sequence[str], batch_size: int = 16, dtype: Any = np.float64
) -> Calibration:
    """Run a :class:`~slimgrad.models.bert.SentenceBert` over ``sentences`` and
    collect every Linear layer's statistics (padding tokens excluded).

    Returns a :class:`Calibration` keyed by the layers' parameter prefixes
    (``encoder.layer.0.attention.self.query``, ...).
    """
    if isinstance(sentences, str) or not sentences:
        raise ValueError("sentences: expected a non-empty sequence of str")
    if batch_size < 1:
        raise ValueError(f"batch_size: expected an int >= 1, got {batch_size}")
    calib = Calibration(dtype)
    with calib.record(model.model):
        for start in range(0, len(sentences), batch_size):
            ids, mask, types = model.tokenize(list(sentences[start : start + batch_size]))
            calib.token_mask = mask.reshape(-1) != 0
            model.model.forward(ids, mask, types)
    calib.token_mask = None
    return calib
