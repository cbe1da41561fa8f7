"""Calibrated compression: GPTQ, SparseGPT and the AWQ search on all-MiniLM-L6-v2's
36 encoder Linear shapes (24 of 384x384, 6 of 1536x384, 6 of 384x1536).

The peer is what users run today: the papers' reference algorithms in torch
(float32, torch's Cholesky; written here from the papers, step for step as
the reference code does it: lazy batches of 128 columns, group parameters
from the weights at the group's first column, act-order for GPTQ; the AWQ
scale grid evaluated on the layer's outputs over calibration tokens). The
Hessians come from random correlated activations (the timing does not
depend on the values).

The layers are MiniLM's, block by block: q, k and v read the same input, so
they share one Hessian, and slimgrad's GPTQ factors it once for the three
(:func:`slimgrad.quant.gptq_shared`); the torch reference factors every
layer's Hessian, as the reference code does (it accumulates one Hessian per
Linear and quantizes each on its own). SparseGPT and AWQ run layer by layer
on both sides.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from .. import prune, quant
from . import Case, optional_import

DEFAULT_SIZE = 36  # layers (all of MiniLM's encoder)
TOKENS = 2048
# One encoder block: q, k, v, attention output, intermediate, output.
BLOCK = [(384, 384)] * 4 + [(1536, 384), (384, 1536)]
SHAPES = BLOCK * 6
SHARES_INPUT = (1, 2)  # k and v read q's input (positions in BLOCK)


def _layers(count: int) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """``(w, x, H)`` per layer; k and v hold q's ``x`` and ``H`` objects."""
    rng = np.random.default_rng(0)
    out: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    for i, (rows, cols) in enumerate(SHAPES[:count]):
        if i % len(BLOCK) in SHARES_INPUT:
            x, h = out[-1][1], out[-1][2]
        else:
            x = rng.standard_normal((TOKENS, cols), dtype=np.float32)
            x[:, ::11] *= 8.0
            h = x.T.astype(np.float64) @ x
        w = rng.standard_normal((rows, cols), dtype=np.float32) * 0.05
        out.append((w, x, h))
    return out


def _by_hessian(
    layers: list[tuple[np.ndarray, np.ndarray, np.ndarray]],
) -> list[tuple[np.ndarray, list[np.ndarray]]]:
    """Runs of consecutive layers that share one Hessian: ``[(H, [w, ...]), ...]``."""
    groups: list[tuple[np.ndarray, list[np.ndarray]]] = []
    for w, _, h in layers:
        if groups and groups[-1][0] is h:
            groups[-1][1].append(w)
        else:
            groups.append((h, [w]))
    return groups


def _torch_inverse_factor(torch, H, damp):  # noqa: ANN001, ANN202
    H = H.clone()
    dead = torch.diag(H) == 0
    H[dead, dead] = 1
    H += damp * torch.mean(torch.diag(H)) * torch.eye(H.shape[0])
    L = torch.linalg.cholesky(H)
    return torch.linalg.cholesky(torch.cholesky_inverse(L), upper=True), dead


def _torch_gptq(torch, W, H, bits=4, group=128, block=128):  # noqa: ANN001, ANN202
    W = W.clone()
    perm = torch.argsort(torch.diag(H), descending=True)
    W, H = W[:, perm], H[perm][:, perm]
    Hinv, dead = _torch_inverse_factor(torch, H, 0.01)
    W[:, dead] = 0
    maxq = 2**bits - 1
    Q = torch.zeros_like(W)
    cols = W.shape[1]
    scale = zero = None
    for i1 in range(0, cols, block):
        i2 = min(i1 + block, cols)
        W1, Err1 = W[:, i1:i2].clone(), torch.zeros(W.shape[0], i2 - i1)
        H1 = Hinv[i1:i2, i1:i2]
        for i in range(i2 - i1):
            if (i1 + i) % group == 0:
                part = W[:, i1 + i : i1 + i + group]
                lo = torch.clamp(part.min(1).values, max=0)
                hi = torch.clamp(part.max(1).values, min=0)
                scale = (hi - lo).clamp(min=1e-8) / maxq
                zero = torch.round(-lo / scale)
            w = W1[:, i]
            q = scale * (torch.clamp(torch.round(w / scale) + zero, 0, maxq) - zero)
            Q[:, i1 + i] = q
            err = (w - q) / H1[i, i]
            W1[:, i:] -= err.unsqueeze(1) @ H1[i, i:].unsqueeze(0)
            Err1[:, i] = err
        W[:, i2:] -= Err1 @ Hinv[i1:i2, i2:]
    return Q[:, torch.argsort(perm)]


def _torch_sparsegpt(torch, W, H, sparsity=0.5, block=128):  # noqa: ANN001, ANN202
    W = W.clone()
    Hinv, dead = _torch_inverse_factor(torch, H, 0.01)
    W[:, dead] = 0
    for i1 in range(0, W.shape[1], block):
        i2 = min(i1 + block, W.shape[1])
        W1, Err1 = W[:, i1:i2].clone(), torch.zeros(W.shape[0], i2 - i1)
        H1 = Hinv[i1:i2, i1:i2]
        score = W1**2 / torch.diag(H1).reshape(1, -1) ** 2
        mask = score <= torch.sort(score.flatten())[0][int(score.numel() * sparsity)]
        for i in range(i2 - i1):
            w = W1[:, i]
            q = w.clone()
            q[mask[:, i]] = 0
            err = (w - q) / H1[i, i]
            W1[:, i:] -= err.unsqueeze(1) @ H1[i, i:].unsqueeze(0)
            Err1[:, i] = err
            W1[:, i] = q
        W[:, i1:i2] = W1
        W[:, i2:] -= Err1 @ Hinv[i1:i2, i2:]
    return W


def _torch_awq(torch, W, X, bits=4, group=128, grid=20):  # noqa: ANN001, ANN202
    y = X @ W.T
    mean = X.abs().mean(0)
    maxq = 2**bits - 1
    best, best_s = float("inf"), None
    for k in range(grid):
        s = mean.pow(k / grid).clamp(min=1e-4)
        s = s / (s.max() * s.min()).sqrt()
        ws = (W * s).reshape(-1, group)
        lo = ws.min(1, keepdim=True).values.clamp(max=0)
        hi = ws.max(1, keepdim=True).values.clamp(min=0)
        scale = (hi - lo).clamp(min=1e-5) / maxq
        zero = torch.round(-lo / scale)
        q = (torch.clamp(torch.round(ws / scale) + zero, 0, maxq) - zero) * scale
        err = (X @ (q.reshape(W.shape) / s).T - y).pow(2).mean().item()
        if err < best:
            best, best_s = err, s
    return best_s


def cases(size: int) -> Iterator[Case]:
    torch = optional_import("torch")
    layers = _layers(min(size, len(SHAPES)))
    note = f"{len(layers)} MiniLM layer shapes, {TOKENS} calibration tokens"
    if torch is not None:
        torch.set_num_threads(max(1, torch.get_num_threads()))
        t_layers = [
            (torch.from_numpy(w), torch.from_numpy(x), torch.from_numpy(h).float())
            for w, x, h in layers
        ]

    groups = _by_hessian(layers)
    impls = {
        "slimgrad": lambda: [quant.gptq_shared(ws, h, bits=4, group_size=128) for h, ws in groups]
    }
    if torch is not None:
        impls["torch reference"] = lambda: [_torch_gptq(torch, w, h) for w, _, h in t_layers]
    yield Case("GPTQ int4 g128 act-order", impls, note=note)

    impls = {"slimgrad": lambda: [prune.sparsegpt(w, h, 0.5) for w, _, h in layers]}
    if torch is not None:
        impls["torch reference"] = lambda: [_torch_sparsegpt(torch, w, h) for w, _, h in t_layers]
    yield Case("SparseGPT 50%", impls, note=note)

    def ours_awq():  # noqa: ANN202
        return [quant.awq_scales(w, np.abs(x).mean(0), 4, 128, H=h) for w, x, h in layers]

    impls = {"slimgrad": ours_awq}
    if torch is not None:
        impls["torch reference"] = lambda: [_torch_awq(torch, w, x) for w, x, _ in t_layers]
    yield Case("AWQ scale search int4 g128", impls, note=note)
