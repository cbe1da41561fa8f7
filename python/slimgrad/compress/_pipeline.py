"""Compress every Linear layer of a model from its calibration statistics.

One recipe (method, bits, group size, optional pruning) per layer; the
pipeline prunes first (magnitude, Wanda or SparseGPT), then quantizes the
remaining weights (round-to-nearest, GPTQ, AWQ, or AWQ followed by GPTQ) and
reports, per layer, the relative output error on the calibration data,
``trace(D H D^T) / trace(W H W^T)`` for the weight change ``D``: the quantity
every calibrated method minimizes, so the table shows where each one helps.

AWQ scales are applied only where they can be folded exactly into the
previous operation. In a BERT (post-LayerNorm) block that is the attention
output projection, whose input channels are the value projection's outputs
(``W_o[:, j] * s_j``, ``W_v[j, :] / s_j``, ``b_v[j] / s_j``). The LayerNorms
before the query/key/value and feed-forward layers also feed the residual
stream, and GELU is not positive-homogeneous, so there AWQ keeps only its
clipping search. (Pre-LN models such as llama fold the scales into the RMSNorm
weights.)
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np

from .. import prune as _prune
from .. import quant as _quant
from .._second_order import output_error

METHODS = ("rtn", "gptq", "awq", "awq-gptq")
PRUNERS = ("magnitude", "wanda", "sparsegpt")


@dataclass(frozen=True)
class Recipe:
    """How one layer is compressed.

    ``bits`` None keeps the layer in float32 (pruning only). ``group_size``
    None: one scale per output row. ``sparsity`` or ``nm = (n, m)`` (keep n of
    every m) with ``prune``. ``symmetric``: codes around zero without a zero
    point (GGUF's Q8_0 holds 8-bit codes only in that form).
    """

    method: str = "gptq"
    bits: int | None = 4
    group_size: int | None = 128
    prune: str | None = None
    sparsity: float | None = None
    nm: tuple[int, int] | None = None
    damp: float = 0.01
    symmetric: bool = False

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"method: expected one of {', '.join(METHODS)}, got {self.method!r}")
        if self.bits is not None and not 2 <= self.bits <= 8:
            raise ValueError(f"bits: expected 2..8, got {self.bits}")
        if self.prune is not None:
            if self.prune not in PRUNERS:
                raise ValueError(f"prune: expected one of {', '.join(PRUNERS)}, got {self.prune!r}")
            if (self.sparsity is None) == (self.nm is None):
                raise ValueError("prune: give either a sparsity or an N:M pattern")
        elif self.sparsity is not None or self.nm is not None:
            raise ValueError("sparsity / nm: only with a pruning method (prune=...)")


@dataclass
class LayerReport:
    """One row of the per-layer table."""

    name: str
    shape: tuple[int, int]
    recipe: Recipe
    nbytes: int
    kept: float  # fraction of nonzero weights kept
    error: float  # relative output error on the calibration data
    seconds: float


@dataclass
class Compressed:
    """The result: per-layer weights to store (QuantizedTensor, or float32
    when only pruned), the float32 weights they stand for (to run or evaluate
    the model), the reports, and the folded AWQ transforms applied to other
    parameters (name -> new array)."""

    stored: dict[str, _quant.QuantizedTensor | np.ndarray] = field(default_factory=dict)
    weights: dict[str, np.ndarray] = field(default_factory=dict)
    reports: list[LayerReport] = field(default_factory=list)
    folded: dict[str, np.ndarray] = field(default_factory=dict)


def relative_error(w: np.ndarray, w_hat: np.ndarray, H: np.ndarray) -> float:
    """``trace(D H D^T) / trace(W H W^T)`` with ``D = w_hat - w`` (float32 ``D``
    and ``W``, float64 sums: ``_second_order.output_error``)."""
    w32, h64 = np.ascontiguousarray(w, np.float32), np.ascontiguousarray(H, np.float64)
    den = output_error(w32, h64)
    return output_error(np.subtract(w_hat, w32, dtype=np.float32), h64) / den if den > 0 else 0.0


def compress_layer(
    w: np.ndarray,
    H: np.ndarray,
    act_mean: np.ndarray,
    act_norm: np.ndarray,
    recipe: Recipe,
) -> tuple[_quant.QuantizedTensor | np.ndarray, np.ndarray]:
    """``(stored, float32 weights it stands for)`` for one Linear weight ``(out, in)``."""
    w = np.ascontiguousarray(w, np.float32)
    keep = None
    if recipe.prune is not None:
        n, m = recipe.nm if recipe.nm else (None, None)
        if recipe.prune == "sparsegpt":
            w, keep = _prune.sparsegpt(w, H, recipe.sparsity, n=n, m=m, damp=recipe.damp)
        elif recipe.prune == "wanda":
            keep = _prune.wanda_mask(w, act_norm.astype(np.float32), recipe.sparsity, n=n, m=m)
        elif recipe.nm:
            keep = _prune.nm_mask(w, n, m, axis=1)
        else:
            keep = _prune.magnitude_mask(w, recipe.sparsity)
        w = np.where(keep, w, np.float32(0))
    if recipe.bits is None:
        return w, w
    bits, gs = recipe.bits, recipe.group_size
    if recipe.method in ("awq", "awq-gptq") and gs is not None:
        w_in = _quant.awq_clip(w, H, bits, gs, symmetric=recipe.symmetric)
        if keep is not None:
            w_in = np.where(keep, w_in, np.float32(0))
    else:
        w_in = w
    if recipe.method in ("gptq", "awq-gptq"):
        qt = _quant.gptq(w_in, H, bits, gs, True, recipe.damp, recipe.symmetric)
    else:
        granularity = {"granularity": "group", "group_size": gs} if gs else {"axis": 0}
        qt = _quant.quantize(w_in, bits, symmetric=recipe.symmetric, **granularity)
    w_hat = qt.dequantize()
    if keep is not None and not np.all(w_hat[~keep] == 0):
        # GPTQ moved error into pruned weights: put them back to exactly zero
        # (code = zero point), so the sparsity pattern survives quantization.
        codes = qt.codes()
        zp = qt.expand(qt.zero_point).astype(codes.dtype)
        codes[~keep] = zp[~keep]
        qt = _quant.QuantizedTensor.from_codes(
            codes,
            qt.scale,
            qt.zero_point,
            bits=qt.bits,
            symmetric=qt.symmetric,
            granularity=qt.granularity,
            axis=qt.axis,
            group_size=qt.group_size,
        )
        w_hat = qt.dequantize()
    return qt, w_hat


def awq_fold_pairs(names: Iterable[str]) -> dict[str, str]:
    """``{layer whose input scale folds into a producer: producer}`` for BERT blocks."""
    names = set(names)
    pairs = {}
    for name in names:
        if name.endswith(".attention.output.dense"):
            value = name[: -len("output.dense")] + "self.value"
            if value in names:
                pairs[name] = value
    return pairs


def fold_awq_scales(
    layers: Mapping[str, tuple[np.ndarray, np.ndarray | None]],
    hessians: Mapping[str, np.ndarray],
    act_means: Mapping[str, np.ndarray],
    recipes: Mapping[str, Recipe] | Recipe,
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], dict[str, np.ndarray]]:
    """AWQ's input scales, folded into the producer wherever that is exact.

    Returns ``(weights, hessians, folded)``: every layer's weight (scaled
    where a fold applies), the Hessians of the scaled inputs, and the
    producers' changed biases (``<producer>.bias``). The float model with
    these weights and biases computes the same function as before.
    """
    weights = {name: wb[0] for name, wb in layers.items()}
    hessians = dict(hessians)
    folded: dict[str, np.ndarray] = {}
    for name, producer in awq_fold_pairs(layers).items():
        recipe = recipes if isinstance(recipes, Recipe) else recipes[name]
        if recipe.method not in ("awq", "awq-gptq") or not (recipe.bits and recipe.group_size):
            continue
        s = _quant.awq_scales(
            weights[name],
            act_means[name].astype(np.float32),
            recipe.bits,
            recipe.group_size,
            H=hessians[name],
            symmetric=recipe.symmetric,
        ).astype(np.float64)
        weights[name] = (weights[name] * s).astype(np.float32)
        hessians[name] = hessians[name] / np.outer(s, s)
        weights[producer] = (weights[producer] / s[:, None]).astype(np.float32)
        bias = layers[producer][1]
        if bias is not None:
            folded[f"{producer}.bias"] = (bias / s).astype(np.float32)
    return weights, hessians, folded


def compress_model(
    layers: Mapping[str, tuple[np.ndarray, np.ndarray | None]],
    hessians: Mapping[str, np.ndarray],
    act_means: Mapping[str, np.ndarray],
    act_norms: Mapping[str, np.ndarray],
    recipes: Mapping[str, Recipe] | Recipe,
    *,
    progress: Callable[[Iterable[str]], Iterable[str]] = iter,
) -> Compressed:
    """Compress every layer of ``layers`` (``name -> (weight, bias or None)``).

    ``hessians``, ``act_means``, ``act_norms``: the calibration statistics by
    the same names. ``recipes``: one for all layers, or one per name.
    ``progress`` wraps the iteration over names (e.g. ``tqdm``). The inputs
    are not modified.
    """
    out = Compressed()
    weights, hessians, out.folded = fold_awq_scales(layers, hessians, act_means, recipes)
    with _quant.reuse_factors():  # q, k, v: equal Hessians, one GPTQ / SparseGPT factor
        for name in progress(list(layers)):
            _compress_into(out, name, weights[name], hessians[name], act_means, act_norms, recipes)
    return out


def _compress_into(
    out: Compressed,
    name: str,
    w: np.ndarray,
    H: np.ndarray,
    act_means: Mapping[str, np.ndarray],
    act_norms: Mapping[str, np.ndarray],
    recipes: Mapping[str, Recipe] | Recipe,
) -> None:
    """One layer of :func:`compress_model`: compressed, timed and reported into ``out``."""
    recipe = recipes if isinstance(recipes, Recipe) else recipes[name]
    start = time.perf_counter()
    stored, w_hat = compress_layer(w, H, act_means[name], act_norms[name], recipe)
    seconds = time.perf_counter() - start
    out.stored[name] = stored
    out.weights[name] = w_hat
    nbytes = stored.nbytes if isinstance(stored, _quant.QuantizedTensor) else w_hat.nbytes
    kept = float(np.count_nonzero(w_hat) / w_hat.size)
    error = relative_error(w, w_hat, H)
    out.reports.append(LayerReport(name, tuple(w.shape), recipe, int(nbytes), kept, error, seconds))
