"""Issue 15's loose ends: Dropout state, torch teachers, Pruner/optimizer check, reprs."""

from __future__ import annotations

import numpy as np
import pytest
from slimgrad import distill, nn, optim, prune


def model(seed=0):
    return nn.Sequential(
        nn.Linear(6, 16, seed=seed),
        nn.ReLU(),
        nn.Dropout(0.3, seed=7),
        nn.Linear(16, 3, seed=seed + 1),
    )


def train(m, opt, steps, start):
    rng = np.random.default_rng(0)
    batches = [rng.standard_normal((8, 6)).astype(np.float32) for _ in range(start + steps)]
    for x in batches[start:]:
        y = m.forward(x)
        m.backward(np.ones_like(y) / y.size)
        opt.step(m.gradients())


def test_dropout_counter_in_state_dict_resume_is_bit_identical():
    a = model()
    opt_a = optim.AdamW(a.parameters(), lr=1e-2)
    train(a, opt_a, 5, 0)
    saved_model, saved_opt = a.state_dict(), opt_a.state_dict()
    assert int(saved_model["2.calls"]) == 5
    train(a, opt_a, 5, 5)

    b = model(seed=3)  # other weights, counter at 0: all comes from the state dicts
    opt_b = optim.AdamW(b.parameters(), lr=1e-2)
    b.load_state_dict(saved_model)
    opt_b.load_state_dict(saved_opt)
    assert b[2].calls == 5
    train(b, opt_b, 5, 5)
    for k, v in a.state_dict().items():
        assert np.array_equal(v, b.state_dict()[k]), k


def test_state_dict_without_the_counter_still_loads_strictly():
    a = model()
    state = {k: v for k, v in a.state_dict().items() if not k.endswith("calls")}
    b = model()
    b[2].calls = 4
    b.load_state_dict(state)  # a torch-style state dict: no counter, no KeyError
    assert b[2].calls == 4
    with pytest.raises(KeyError):
        b.load_state_dict({k: v for k, v in state.items() if k != "0.bias"})


def test_torch_teacher_gets_a_clear_error_and_the_adapter_works():
    torch = pytest.importorskip("torch")
    teacher = torch.nn.Linear(6, 3)
    student = model()
    opt = optim.SGD(student.parameters(), lr=0.1)
    with pytest.raises(TypeError, match=r"torch_teacher\(model\)"):
        distill.Distiller(teacher, student, opt)

    def returns_tensors(x):
        return teacher(torch.from_numpy(x))

    d = distill.Distiller(returns_tensors, student, opt)
    x = np.random.default_rng(0).standard_normal((10, 6)).astype(np.float32)
    with pytest.raises(TypeError, match="returned a torch Tensor.*torch_teacher"):
        d.teacher_logits(x)
    d = distill.Distiller(distill.torch_teacher(teacher), student, opt)
    with torch.no_grad():
        want = teacher(torch.from_numpy(x)).numpy()
    np.testing.assert_array_equal(d.teacher_logits(x), want)
    y = np.zeros(10, np.int64)
    d.fit(x, y, epochs=1, batch_size=5, progress=False)


def test_pruner_checks_the_optimizer_holds_its_params():
    w = {"a": np.ones((4, 4), np.float32), "b": np.ones(8, np.float32)}
    other = optim.AdamW({"a": w["a"].copy(), "b": w["b"]})
    with pytest.raises(ValueError, match=r"optimizer: does not hold params\['a'\]"):
        prune.Pruner(w, schedule=0.5, optimizer=other)
    prune.Pruner(w, schedule=0.5, optimizer=optim.AdamW(w))  # the right one
    prune.Pruner(w, schedule=0.5, optimizer=optim.AdamW([w["b"], w["a"]]))  # any layout


def test_short_reprs():
    big = np.random.default_rng(0).standard_normal((300, 300)).astype(np.float32)
    p = prune.Pruner({"w": big}, schedule=0.5, optimizer=optim.SGD({"w": big}, lr=0.1))
    csr = prune.to_csr(np.where(big > 1, big, 0))
    h = distill.History(loss=[0.5] * 1000, step_loss=[0.1] * 10_000, lr=[1e-3] * 10_000)
    d = distill.Distiller(lambda x: x, model(), optim.SGD(model().parameters(), lr=0.1))
    for obj, start in (
        (p, "Pruner("),
        (csr, "CSR(shape=(300, 300)"),
        (h, "History(epochs=1000"),
        (d, "Distiller(teacher=function"),
    ):
        text = repr(obj)
        assert text.startswith(start) and len(text) < 200, text
