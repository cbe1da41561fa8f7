"""End to end: a small MLP (Linear-BatchNorm1d-ReLU-Dropout-Linear) trained on
scikit-learn's digits reaches high test accuracy in a few seconds."""

from __future__ import annotations

import numpy as np
import pytest
from slimgrad import nn

MIN_TEST_ACCURACY = 0.95


class LocalSGD:
    """SGD with momentum in NumPy, so this test does not depend on slimgrad.optim."""

    def __init__(self, params: dict[str, np.ndarray], lr: float, momentum: float) -> None:
        self.params, self.lr, self.momentum = params, lr, momentum
        self.velocity = {k: np.zeros_like(v) for k, v in params.items()}

    def step(self, grads: dict[str, np.ndarray]) -> None:
        for name, p in self.params.items():
            v = self.velocity[name]
            v *= self.momentum
            v += grads[name]
            p -= self.lr * v  # in place: the model's live arrays


def make_optimizer(kind: str, params: dict[str, np.ndarray]):
    if kind == "local-sgd":
        return LocalSGD(params, lr=0.05, momentum=0.9)
    try:
        from slimgrad.optim import AdamW
    except (ImportError, AttributeError):
        pytest.skip("slimgrad.optim.AdamW is not available on this branch")
    return AdamW(params, lr=3e-3, weight_decay=1e-4)


@pytest.mark.parametrize("kind", ["local-sgd", "adamw"])
def test_mlp_learns_digits(kind):
    datasets = pytest.importorskip("sklearn.datasets")
    digits = datasets.load_digits()
    x = (digits.data / 16.0).astype(np.float32)
    y = digits.target.astype(np.int64)
    order = np.random.default_rng(0).permutation(len(x))
    split = int(0.75 * len(x))
    train, test = order[:split], order[split:]

    model = nn.Sequential(
        nn.Linear(64, 128, seed=1),
        nn.BatchNorm1d(128),
        nn.ReLU(),
        nn.Dropout(0.2, seed=2),
        nn.Linear(128, 10, seed=3),
    )
    opt = make_optimizer(kind, model.parameters())
    # BLAS on one thread: for these small matrices its thread pool costs more
    # than the products (milliseconds per call when the cores are shared).
    threadpoolctl = pytest.importorskip("threadpoolctl")
    with threadpoolctl.threadpool_limits(1, user_api="blas"):
        accuracy, losses = train_and_evaluate(model, opt, x, y, train, test)
    assert np.mean(losses[-20:]) < 0.5 * np.mean(losses[:20])
    assert accuracy >= MIN_TEST_ACCURACY, accuracy


def train_and_evaluate(model, opt, x, y, train, test):
    grads = model.gradients()
    rng = np.random.default_rng(1)
    losses = []
    for _epoch in range(15):
        perm = rng.permutation(train)
        for start in range(0, len(perm), 64):
            batch = perm[start : start + 64]
            if len(batch) < 2:
                continue
            loss, grad = nn.cross_entropy(model.forward(x[batch]), y[batch])
            model.backward(grad)
            opt.step(grads)
            losses.append(loss)
    model.eval()
    accuracy = float(np.mean(np.argmax(model.forward(x[test]), axis=1) == y[test]))
    return accuracy, losses
