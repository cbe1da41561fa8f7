"""Muon's step: slimgrad.torch.Muon next to torch.optim.Muon on MiniLM's matrices.

The 36 two-dimensional weights of all-MiniLM-L6-v2's six layers (query, key,
value, attention output 384 x 384; intermediate 1536 x 384; output 384 x
1536), the parameters Muon is meant for (embeddings and vectors go to AdamW).
Both optimizers step the same float32 values with the same gradients, the
Newton-Schulz iteration in bfloat16 as torch does (``slimgrad``) and, for
reference, slimgrad's float32 iteration (``slimgrad ns=float32``). The step is
GEMM-bound: slimgrad's bfloat16 products run in its own packed bfloat16 GEMM
(cpp/src/bf16_gemm.cpp: vdpbf16ps on avx512_bf16, the symmetric products by
half; threads: ``set_num_threads``), the float32 ones in NumPy's BLAS, torch's
in oneDNN's bfloat16 GEMM (threads: ``torch.set_num_threads``).
"""

from __future__ import annotations

from collections.abc import Iterator

from . import Case, optional_import

DEFAULT_SIZE = 0  # the model fixes the sizes
LR = 0.02


def minilm_matrices() -> list[tuple[int, int]]:
    """The 2-D weights of MiniLM-L6's encoder layers (6 x 6 matrices)."""
    d, ff = 384, 1536
    return [(d, d)] * 4 * 6 + [(ff, d)] * 6 + [(d, ff)] * 6


def cases(size: int) -> Iterator[Case]:
    torch = optional_import("torch")
    if torch is None or not hasattr(torch.optim, "Muon"):
        return
    import slimgrad.torch as st

    shapes = minilm_matrices()
    n = sum(a * b for a, b in shapes)
    gen = torch.Generator().manual_seed(0)
    base = [torch.randn(s, generator=gen) * 0.05 for s in shapes]
    grads = [torch.randn(s, generator=gen) * 1e-2 for s in shapes]
    impls = {}
    for label, make in (
        ("slimgrad", lambda ps: st.Muon(ps, lr=LR)),
        ("torch.optim.Muon", lambda ps: torch.optim.Muon(ps, lr=LR)),
        ("slimgrad ns=float32", lambda ps: st.Muon(ps, lr=LR, ns_dtype="float32")),
    ):
        ps = [p.clone().requires_grad_() for p in base]
        for p, g in zip(ps, grads):
            p.grad = g.clone()
        impls[label] = make(ps).step
    yield Case(
        f"MiniLM-L6 Muon {len(shapes)} matrices",
        impls,
        note=f"slimgrad.torch.Muon vs torch.optim.Muon, {n / 1e6:.1f}M float32 params, 5 NS steps",
    )
