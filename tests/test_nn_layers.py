"""Linear, ReLU, GELU, Dropout as a layer, Sequential, the Module protocol and
the losses: against torch (when installed) and finite differences in float64."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import check_finite_differences, numeric_grad
from slimgrad import nn

DTYPES = [np.float32, np.float64]
# Matrix products and transcendental functions: a few roundings of O(1) values.
RTOL = {np.float32: 1e-5, np.float64: 1e-12}
ATOL = {np.float32: 1e-5, np.float64: 1e-12}
FD_TOL = 1e-6  # central differences in float64
GELU_SIZES = [0, 1, 7, 8, 9, 17, 65, 8193, 100_003]
# float32 GELU in SIMD: A&S 7.1.26 for erfc (1.5e-7 on Phi) plus roundings,
# relative to |x|; the derivative is O(1): absolute.
GELU_F32_ERR = 4e-7
GELU_F32_GRAD_ERR = 2e-6


# torch on one thread for these tiny tensors (see conftest.torch_single_thread).
pytestmark = pytest.mark.usefixtures("torch_single_thread")


# ------------------------------------------------------------------ Linear
def test_linear_init_is_torch_default_and_seeded():
    layer = nn.Linear(400, 300, seed=3)
    bound = np.float32(1 / np.sqrt(400))  # float32 rounding may reach the rounded bound
    assert layer.weight.shape == (300, 400) and layer.bias.shape == (300,)
    assert layer.weight.dtype == np.float32
    assert np.abs(layer.weight).max() <= bound and np.abs(layer.bias).max() <= bound
    # U(-b, b): standard deviation b / sqrt(3), 120k samples
    assert layer.weight.std() == pytest.approx(float(bound) / np.sqrt(3), rel=0.01)
    np.testing.assert_array_equal(nn.Linear(400, 300, seed=3).weight, layer.weight)
    assert not np.array_equal(nn.Linear(400, 300, seed=4).weight, layer.weight)
    torch = pytest.importorskip("torch")
    t = torch.nn.Linear(400, 300).weight.detach()
    assert float(t.abs().max()) <= bound
    assert float(t.std()) == pytest.approx(float(layer.weight.std()), rel=0.02)
    assert nn.Linear(3, 2, bias=False).parameters().keys() == {"weight"}


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("shape", [(5, 7), (2, 3, 7), (7,)], ids=str)
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "no-bias"])
def test_linear_matches_torch(dtype, shape, bias, rng):
    torch = pytest.importorskip("torch")
    layer = nn.Linear(7, 4, bias=bias, dtype=dtype, seed=1)
    t = torch.nn.Linear(
        7, 4, bias=bias, dtype=torch.float32 if dtype == np.float32 else torch.float64
    )
    with torch.no_grad():
        t.weight.copy_(torch.from_numpy(layer.weight))
        if bias:
            t.bias.copy_(torch.from_numpy(layer.bias))
    x = rng.standard_normal(shape).astype(dtype)
    y = layer.forward(x)
    tx = torch.from_numpy(x).requires_grad_()
    ty = t(tx)
    np.testing.assert_allclose(y, ty.detach().numpy(), rtol=RTOL[dtype], atol=ATOL[dtype])
    g = rng.standard_normal(y.shape).astype(dtype)
    ty.backward(torch.from_numpy(g))
    np.testing.assert_allclose(
        layer.backward(g), tx.grad.numpy(), rtol=RTOL[dtype], atol=ATOL[dtype]
    )
    np.testing.assert_allclose(
        layer.gradients()["weight"], t.weight.grad.numpy(), rtol=RTOL[dtype], atol=ATOL[dtype]
    )
    if bias:
        np.testing.assert_allclose(
            layer.gradients()["bias"], t.bias.grad.numpy(), rtol=RTOL[dtype], atol=ATOL[dtype]
        )


def test_linear_finite_differences(rng):
    check_finite_differences(nn.Linear(5, 3, dtype=np.float64), rng.standard_normal((4, 5)), rng)
    check_finite_differences(nn.Linear(5, 3, dtype=np.float64), rng.standard_normal((2, 3, 5)), rng)


def test_linear_errors_name_the_argument():
    layer = nn.Linear(4, 2)
    with pytest.raises(
        TypeError, match=r"x: expected a float32 ndarray, got float64 array of shape \(3, 4\)"
    ):
        layer.forward(np.zeros((3, 4)))
    with pytest.raises(TypeError, match="x: expected a float32 ndarray, got list"):
        layer.forward([[1.0] * 4])
    with pytest.raises(ValueError, match=r"x: expected shape \(\.\.\., 4\), got \(3, 5\)"):
        layer.forward(np.zeros((3, 5), np.float32))
    with pytest.raises(RuntimeError, match="Linear.backward: call forward first"):
        layer.backward(np.zeros((3, 2), np.float32))
    layer.forward(np.zeros((3, 4), np.float32))
    with pytest.raises(
        ValueError,
        match=r"grad_out: expected shape \(3, 2\) \(the forward output's\), got \(3, 3\)",
    ):
        layer.backward(np.zeros((3, 3), np.float32))
    with pytest.raises(TypeError, match="dtype: expected float32 or float64, got"):
        nn.Linear(2, 2, dtype=np.float16)
    with pytest.raises(ValueError, match="in_features: expected an int >= 0, got -2"):
        nn.Linear(-2, 2)


@pytest.mark.parametrize("bias", [True, False])
def test_linear_product_hook_with_and_without_the_bias(bias, rng):
    """set_product(product): forward adds the bias to product(x);
    set_product(product, adds_bias=True): product(x, bias) returns the sum
    itself; a product returning None falls back to the dense weight."""
    layer = nn.Linear(6, 4, bias=bias, seed=3)
    x = rng.standard_normal((2, 3, 6)).astype(np.float32)
    dense = layer.forward(x)
    calls = []

    def plain(x_):
        calls.append("plain")
        return np.ones(x_.shape[:-1] + (4,), np.float32)

    def fused(x_, b):
        calls.append(("fused", b is layer.bias))
        return np.full(x_.shape[:-1] + (4,), 7.0, np.float32)

    layer.set_product(plain)
    ones = np.ones((2, 3, 4), np.float32)
    np.testing.assert_array_equal(layer.forward(x), ones + layer.bias if bias else ones)
    layer.set_product(fused, adds_bias=True)
    np.testing.assert_array_equal(layer.forward(x), np.full((2, 3, 4), 7.0, np.float32))
    layer.set_product(lambda x_, b: None, adds_bias=True)  # dense for this call
    np.testing.assert_array_equal(layer.forward(x), dense)
    assert calls == ["plain", ("fused", True)]
    with pytest.raises(TypeError, match="adds_bias"):
        layer.set_product(fused, adds_bias=1)
    layer.set_product(None)
    np.testing.assert_array_equal(layer.forward(x), dense)


# ------------------------------------------------------------ activations
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_relu_matches_torch(dtype, rng):
    torch = pytest.importorskip("torch")
    x = rng.standard_normal((6, 9)).astype(dtype)
    g = rng.standard_normal((6, 9)).astype(dtype)
    layer = nn.ReLU()
    tx = torch.from_numpy(x).requires_grad_()
    ty = torch.relu(tx)
    ty.backward(torch.from_numpy(g))
    np.testing.assert_array_equal(layer.forward(x), ty.detach().numpy())
    np.testing.assert_array_equal(layer.backward(g), tx.grad.numpy())


def test_relu_finite_differences(rng):
    x = rng.standard_normal((5, 4))
    x[np.abs(x) < 1e-3] = 0.5  # keep away from the kink
    check_finite_differences(nn.ReLU(), x, rng)


@pytest.mark.parametrize("approximate", ["none", "tanh"])
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("n", GELU_SIZES)
def test_gelu_matches_torch(threads, approximate, dtype, n, rng):
    torch = pytest.importorskip("torch")
    x = (rng.standard_normal(n) * 3).astype(dtype)
    g = rng.standard_normal(n).astype(dtype)
    layer = nn.GELU(approximate)
    tx = torch.from_numpy(x).requires_grad_()
    ty = torch.nn.functional.gelu(tx, approximate=approximate)
    ty.backward(torch.from_numpy(g))
    np.testing.assert_allclose(
        layer.forward(x), ty.detach().numpy(), rtol=RTOL[dtype], atol=ATOL[dtype]
    )
    np.testing.assert_allclose(
        layer.backward(g), tx.grad.numpy(), rtol=RTOL[dtype], atol=ATOL[dtype]
    )


@pytest.mark.parametrize("approximate", ["none", "tanh"])
def test_gelu_finite_differences_and_reference(approximate, rng):
    x = rng.standard_normal((3, 5)) * 2
    check_finite_differences(nn.GELU(approximate), x, rng)
    if approximate == "tanh":
        ref = 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x**3)))
    else:
        from math import erf

        ref = 0.5 * x * (1 + np.vectorize(erf)(x / np.sqrt(2)))
    np.testing.assert_allclose(nn.gelu(x, approximate), ref, rtol=1e-14, atol=1e-15)


@pytest.mark.parametrize("approximate", ["none", "tanh"])
def test_gelu_float32_error_bound_against_float64(isa, approximate):
    x = np.linspace(-12, 12, 24_001).astype(np.float32)
    x = np.concatenate([x, np.float32([-87.5, -30, 30, 88.5, 1e-30, -1e-30, 0.0])])
    ref_y = nn.gelu(x.astype(np.float64), approximate)  # libm in float64
    layer = nn.GELU(approximate)
    y = layer.forward(x)
    np.testing.assert_array_less(np.abs(y - ref_y), GELU_F32_ERR * np.abs(x) + 1e-38)
    ref_layer = nn.GELU(approximate)
    ref_layer.forward(x.astype(np.float64))
    ref_g = ref_layer.backward(np.ones(x.size))
    g = layer.backward(np.ones_like(x))
    np.testing.assert_allclose(g, ref_g, rtol=0, atol=GELU_F32_GRAD_ERR)


def test_gelu_errors():
    with pytest.raises(ValueError, match="approximate: expected 'none' or 'tanh', got 'fast'"):
        nn.GELU("fast")
    with pytest.raises(ValueError, match="approximate: expected 'none' or 'tanh', got 'fast'"):
        nn.gelu(np.zeros(3, np.float32), "fast")
    strided = np.full((4, 8), 7.0, np.float32)[:, ::2]
    with pytest.raises(
        TypeError,
        match=r"^out: expected float32 C-contiguous array of shape \(4, 4\), got non-contiguous",
    ):
        nn.gelu(np.zeros((4, 4), np.float32), out=strided)  # written: strict, no copy
    with pytest.raises(TypeError, match=r"^x: expected float32 or float64 C-contiguous array"):
        nn.gelu(strided, out=strided)  # in place: x is written too
    np.testing.assert_array_equal(strided, 7.0)
    with pytest.raises(TypeError, match=r"^x: expected float32 or float64 C-contiguous array"):
        nn.GELU().forward(np.zeros((4, 4), np.float16))


def test_dropout_layer_finite_differences(rng):
    layer = nn.Dropout(0.4, seed=8)

    def same_mask():
        layer.calls = 0

    check_finite_differences(layer, rng.standard_normal((6, 7)), rng, before_forward=same_mask)


# ------------------------------------------------------ Module, Sequential
def mlp(dtype=np.float32):
    return nn.Sequential(
        nn.Linear(6, 8, dtype=dtype, seed=1),
        nn.BatchNorm1d(8, dtype=dtype),
        nn.ReLU(),
        nn.Dropout(0.2, seed=2),
        nn.Linear(8, 3, dtype=dtype, seed=3),
    )


def test_sequential_names_and_live_arrays(rng):
    model = mlp()
    params, grads = model.parameters(), model.gradients()
    assert list(params) == ["0.weight", "0.bias", "1.weight", "1.bias", "4.weight", "4.bias"]
    assert list(grads) == list(params)
    assert params["0.weight"] is model[0].weight
    assert list(model.buffers()) == [
        "1.running_mean",
        "1.running_var",
        "1.num_batches_tracked",
        "3.calls",  # Dropout's mask counter
    ]
    x = rng.standard_normal((10, 6)).astype(np.float32)
    model.eval()  # deterministic forward: running statistics, no dropout
    before = model.forward(x)
    params["4.bias"] += 1.0  # an in-place update (what an optimizer does) changes the model
    np.testing.assert_allclose(model.forward(x), before + 1.0, rtol=1e-5, atol=1e-5)
    model.backward(np.ones((10, 3), np.float32))
    assert grads["4.bias"] is model.gradients()["4.bias"]
    np.testing.assert_array_equal(grads["4.bias"], 10.0)
    model.zero_grad()
    assert all(not g.any() for g in model.gradients().values())


def test_train_eval_propagate_and_state_dict_roundtrip(rng):
    model = mlp()
    x = rng.standard_normal((16, 6)).astype(np.float32)
    model.forward(x)
    model.eval()
    assert all(not m.training for m in model.modules())
    y = model.forward(x)
    np.testing.assert_array_equal(model.forward(x), y)  # eval is deterministic
    state = model.state_dict()
    assert set(state) == set(model.parameters()) | set(model.buffers())
    other = mlp()
    other.eval()
    other.load_state_dict(state)
    np.testing.assert_array_equal(other.forward(x), y)
    state["0.weight"][...] = 0  # state_dict holds copies
    assert model[0].weight.any()
    model.train()
    assert all(m.training for m in model.modules())


def test_load_state_dict_errors_change_nothing():
    model = mlp()
    before = model.state_dict()
    bad = dict(before)
    bad["0.weight"] = np.zeros((3, 3), np.float32)
    bad["1.bias"] = np.full(8, 5.0, np.float32)
    with pytest.raises(
        ValueError, match=r"state\['0.weight'\]: expected shape \(8, 6\), got \(3, 3\)"
    ):
        model.load_state_dict(bad)
    missing = dict(before)
    del missing["4.bias"]
    missing["extra"] = np.zeros(1)
    with pytest.raises(KeyError, match=r"missing keys \['4.bias'\], unexpected keys \['extra'\]"):
        model.load_state_dict(missing)
    for k, v in model.state_dict().items():
        np.testing.assert_array_equal(v, before[k])
    model.load_state_dict({"1.bias": np.ones(8)}, strict=False)
    np.testing.assert_array_equal(model[1].bias, 1.0)


def test_sequential_finite_differences(rng):
    model = mlp(np.float64)

    def same_mask():
        model[3].calls = 0

    check_finite_differences(model, rng.standard_normal((7, 6)), rng, before_forward=same_mask)


# ----------------------------------------------------------------- losses
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_softmax_and_log_softmax_match_torch(dtype, rng):
    torch = pytest.importorskip("torch")
    x = (rng.standard_normal((5, 7)) * 30 + 1000).astype(dtype)  # exp would overflow unshifted
    t = torch.from_numpy(x)
    for axis in (0, -1):
        np.testing.assert_allclose(
            nn.softmax(x, axis), torch.softmax(t, axis).numpy(), rtol=RTOL[dtype], atol=ATOL[dtype]
        )
        np.testing.assert_allclose(
            nn.log_softmax(x, axis),
            torch.log_softmax(t, axis).numpy(),
            rtol=RTOL[dtype],
            atol=ATOL[dtype] * 30,
        )
    assert np.isfinite(nn.log_softmax(x)).all()


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("label_smoothing", [0.0, 0.1, 1.0])
def test_cross_entropy_matches_torch(dtype, label_smoothing, rng):
    torch = pytest.importorskip("torch")
    logits = (rng.standard_normal((9, 5)) * 5).astype(dtype)
    labels = rng.integers(0, 5, 9)
    loss, grad = nn.cross_entropy(logits, labels, label_smoothing=label_smoothing)
    t = torch.from_numpy(logits).requires_grad_()
    tl = torch.nn.functional.cross_entropy(
        t, torch.from_numpy(labels), label_smoothing=label_smoothing
    )
    tl.backward()
    assert isinstance(loss, float)
    assert loss == pytest.approx(tl.item(), rel=RTOL[dtype], abs=ATOL[dtype])
    assert grad.dtype == dtype
    np.testing.assert_allclose(grad, t.grad.numpy(), rtol=RTOL[dtype], atol=ATOL[dtype])


@pytest.mark.parametrize("label_smoothing", [0.0, 0.2])
def test_cross_entropy_finite_differences(label_smoothing, rng):
    logits = rng.standard_normal((4, 3))
    labels = np.array([0, 2, 1, 2])
    _, grad = nn.cross_entropy(logits, labels, label_smoothing)
    numeric = numeric_grad(lambda: nn.cross_entropy(logits, labels, label_smoothing)[0], logits)
    np.testing.assert_allclose(grad, numeric, rtol=FD_TOL, atol=FD_TOL)


def test_cross_entropy_is_stable_for_huge_logits():
    logits = np.array([[1e4, 0.0, -1e4]], np.float32)
    loss, grad = nn.cross_entropy(logits, np.array([1]))
    assert loss == pytest.approx(1e4)
    np.testing.assert_allclose(grad, [[1.0, -1.0, 0.0]], atol=1e-6)


INF, NAN = np.inf, np.nan
# (row, label, expected loss kind) for cross_entropy's documented non-finite policy.
NONFINITE_ROWS = [
    ([0.5, -INF, 1.0, -0.3], 0, "finite"),  # a masked class
    ([-INF, 0.0, 1.0, 2.0], 0, "inf"),  # the label is masked
    ([0.0, INF, 1.0, 0.0], 2, "nan"),
    ([0.0, NAN, 1.0, 0.0], 2, "nan"),
    ([-INF, -INF, -INF, -INF], 1, "nan"),  # no softmax at all
]


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("case", range(len(NONFINITE_ROWS)))
def test_cross_entropy_non_finite_policy_without_warnings(dtype, case):
    # filterwarnings = error: any NumPy RuntimeWarning fails the test.
    row, label, kind = NONFINITE_ROWS[case]
    good = [0.3, -1.0, 2.0, 0.1]
    logits = np.array([good, row], dtype)
    labels = np.array([3, label])
    loss, grad = nn.cross_entropy(logits, labels)
    _, grad_good = nn.cross_entropy(np.array([good], dtype), np.array([3]))
    np.testing.assert_allclose(grad[0], grad_good[0] / 2, rtol=1e-6)  # other rows unaffected
    x = np.array(row, np.float64)
    if kind == "nan":
        assert np.isnan(loss) and np.isnan(grad[1]).all()
        return
    assert np.isfinite(grad[1]).all()
    masked = np.isneginf(x)
    masked[label] = False  # the label's gradient is -1/N + p = -1/N
    assert (grad[1][masked] == 0).all()
    finite = x[np.isfinite(x)]
    lse = np.log(np.sum(np.exp(finite)))
    g = np.array(good, np.float64)
    ref_good = np.log(np.sum(np.exp(g))) - g[3]
    if kind == "inf":
        assert loss == np.inf and np.isfinite(grad[1]).all()
    else:
        assert loss == pytest.approx((ref_good + lse - x[label]) / 2, rel=1e-6)
    # Label smoothing puts mass on the masked class: +inf, gradient still finite.
    loss_s, grad_s = nn.cross_entropy(logits, labels, label_smoothing=0.1)
    assert loss_s == np.inf and np.isfinite(grad_s).all()
    for f in (nn.softmax, nn.log_softmax):
        f(logits)  # no warning either


def test_cross_entropy_non_finite_matches_torch():
    torch = pytest.importorskip("torch")
    logits = np.array([row for row, _, _ in NONFINITE_ROWS], np.float32)
    labels = np.array([label for _, label, _ in NONFINITE_ROWS])
    for ls in (0.0, 0.1):
        for rows in ([0], [0, 1], list(range(len(labels)))):
            x = torch.tensor(logits[rows], requires_grad=True)
            ref = torch.nn.functional.cross_entropy(
                x, torch.tensor(labels[rows]), label_smoothing=ls
            )
            ref.backward()
            loss, grad = nn.cross_entropy(logits[rows], labels[rows], ls)
            np.testing.assert_allclose(loss, ref.item(), rtol=1e-6)
            np.testing.assert_allclose(grad, x.grad.numpy(), rtol=1e-6, atol=1e-7)
            np.testing.assert_allclose(
                nn.softmax(logits[rows]), torch.softmax(x.detach(), 1).numpy(), rtol=1e-6
            )


def test_cross_entropy_errors():
    x = np.zeros((3, 4), np.float32)
    with pytest.raises(
        ValueError, match=r"labels: expected values in \[0, 4\), got values in \[0, 4\]"
    ):
        nn.cross_entropy(x, np.array([0, 1, 4]))
    with pytest.raises(ValueError, match=r"labels: expected shape \(3,\), got \(2,\)"):
        nn.cross_entropy(x, np.array([0, 1]))
    with pytest.raises(TypeError, match="labels: expected an integer array, got float64"):
        nn.cross_entropy(x, np.array([0.0, 1.0, 2.0]))
    with pytest.raises(
        ValueError, match=r"logits: expected a 2-D \(N, C\) array, got shape \(4,\)"
    ):
        nn.cross_entropy(np.zeros(4, np.float32), np.array([0]))
    with pytest.raises(
        ValueError, match=r"logits: expected at least one row and one class, got shape \(0, 4\)"
    ):
        nn.cross_entropy(np.zeros((0, 4), np.float32), np.zeros(0, np.int64))
    with pytest.raises(
        TypeError, match="logits: expected a float32 or float64 ndarray, got int64 array"
    ):
        nn.cross_entropy(np.zeros((3, 4), np.int64), np.array([0, 1, 2]))
    with pytest.raises(ValueError, match=r"label_smoothing: expected a value in \[0, 1\], got 1.5"):
        nn.cross_entropy(x, np.array([0, 1, 2]), label_smoothing=1.5)


def test_no_init_weights_draws_nothing_and_gives_zeroed_gradients(monkeypatch):
    from slimgrad.models.bert import BertConfig, BertModel

    def no_draws(*args, **kwargs):
        raise AssertionError("drew random numbers")

    monkeypatch.setattr(np.random, "default_rng", no_draws)
    with nn.no_init_weights():
        model = BertModel(BertConfig(50, hidden_size=8, num_hidden_layers=1, num_attention_heads=2))
        layer = nn.Linear(5, 3)
    assert layer.weight.shape == (3, 5) and layer.bias.shape == (3,)
    assert all(not g.any() for g in model.gradients().values())
    with pytest.raises(AssertionError, match="drew random"):
        nn.Linear(5, 3)  # outside the block: drawn, as before
    with pytest.raises(AssertionError, match="drew random"):
        nn.Embedding(4, 2)
