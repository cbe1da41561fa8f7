"""Shared fixtures: every kernel test runs on every available ISA and thread count."""

from __future__ import annotations

import numpy as np
import pytest
import slimgrad

ALL_ISAS = slimgrad.available_isas()
# Sub-feature levels (avx512_vnni, avx512_bf16, amx) run the avx512 kernels except
# the few that use the feature: those tests take the `isa_all` fixture, the
# rest `isa`.
ISAS = [name for name in ALL_ISAS if name not in ("avx512_vnni", "avx512_bf16", "amx")]
THREADS = sorted({1, max(2, slimgrad.get_num_threads())})


@pytest.fixture(params=ISAS, ids=lambda name: f"isa={name}")
def isa(request):
    """Runs the test with kernels forced to one ISA level."""
    with slimgrad.use_isa(request.param):
        yield request.param


@pytest.fixture(params=ALL_ISAS, ids=lambda name: f"isa={name}")
def isa_all(request):
    """Like ``isa``, sub-feature levels (avx512_vnni, avx512_bf16, amx) included."""
    with slimgrad.use_isa(request.param):
        yield request.param


@pytest.fixture(params=THREADS, ids=lambda n: f"threads={n}")
def threads(request):
    """Runs the test with a given kernel thread count."""
    with slimgrad.num_threads(request.param):
        yield request.param


@pytest.fixture(scope="module")
def torch_single_thread():
    """torch on one thread for tiny tensors: its thread pool makes each op
    take milliseconds when the machine's cores are oversubscribed (results do
    not depend on it). Restored afterwards. Use it per module with
    ``pytestmark = pytest.mark.usefixtures("torch_single_thread")``."""
    try:
        import torch
    except ImportError:
        yield
        return
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture
def rng():
    return np.random.default_rng(12345)


def save_random_bert(path, vocab, layers, hidden, heads, intermediate, positions=64, noise=0.0):
    """A random transformers.BertModel (torch seed 0; ``layers`` layers of width
    ``hidden``, ``heads`` heads, FFN width ``intermediate``, ``positions`` positions)
    saved with ``vocab.txt`` as the Hugging Face folder ``path`` that
    slimgrad.models.bert.load reads. ``noise`` > 0 adds that much normal noise to the
    LayerNorm weights and every bias (non-trivial values). Returns the model in eval
    mode. Needs torch and transformers."""
    import torch
    import transformers

    (path / "vocab.txt").write_text("\n".join(vocab) + "\n")
    config = transformers.BertConfig(
        vocab_size=len(vocab),
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=intermediate,
        max_position_embeddings=positions,
    )
    torch.manual_seed(0)
    model = transformers.BertModel(config).eval()
    if noise:
        with torch.no_grad():
            for name, p in model.named_parameters():
                if "LayerNorm" in name or name.endswith("bias"):
                    p.add_(noise * torch.randn_like(p))
    model.save_pretrained(path, safe_serialization=True)
    return model


def numeric_grad(f, x, h=1e-6):
    """Central differences of the scalar ``f()`` with respect to ``x`` (changed in place, restored)."""
    grad = np.zeros_like(x)
    flat, gflat = x.reshape(-1), grad.reshape(-1)
    for i in range(flat.size):
        old = flat[i]
        flat[i] = old + h
        up = f()
        flat[i] = old - h
        down = f()
        flat[i] = old
        gflat[i] = (up - down) / (2 * h)
    return grad


def check_finite_differences(module, x, rng, before_forward=lambda: None, tol=1e-6):
    """backward() against central differences of sum(forward(x) * r), for x and every parameter."""
    r = rng.standard_normal(module.forward(x).shape)

    def loss():
        before_forward()
        return float(np.sum(module.forward(x) * r))

    loss()
    grad_x = module.backward(r)
    grads = {k: v.copy() for k, v in module.gradients().items()}
    np.testing.assert_allclose(grad_x, numeric_grad(loss, x), rtol=tol, atol=tol)
    for name, p in module.parameters().items():
        np.testing.assert_allclose(
            grads[name], numeric_grad(loss, p), rtol=tol, atol=tol, err_msg=name
        )


def run_everywhere(fn):
    """fn() on every (ISA, thread count) pair: {(isa, threads): result}."""
    out = {}
    for name in ISAS:
        for n in THREADS:
            with slimgrad.use_isa(name), slimgrad.num_threads(n):
                out[(name, n)] = fn()
    return out


def assert_steps_agree_everywhere(make, p0, grads, reference, split=70_001):
    """Step two arrays (``p0`` cut at ``split``) with ``make([a, b])`` on every
    (ISA, thread count): the same bits everywhere, and equal to ``reference``."""

    def run():
        a, b = p0[:split].copy(), p0[split:].copy()
        opt = make([a, b])
        for g in grads:
            opt.step([g[:split], g[split:]])
        return np.concatenate([a, b])

    results = run_everywhere(run)
    first = results[(ISAS[0], THREADS[0])]
    for key, r in results.items():
        np.testing.assert_array_equal(r, first, err_msg=str(key))
    np.testing.assert_array_equal(first, reference)


# Sizes that hit empty, single, every vector tail around the widths used by
# the kernels (8/16 floats, 4/8 doubles), chunk boundaries and a large odd size.
EDGE_SIZES = [0, 1, 3, 7, 8, 9, 15, 16, 17, 31, 33, 63, 65, 4095, 4097, 32769, 100_003]
