"""Distiller on the digits data and the `slimgrad demo` command (reduced mode)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import slimgrad
from slimgrad import num_threads
from slimgrad.distill import Distiller, History

sklearn = pytest.importorskip("sklearn")
nn = pytest.importorskip("slimgrad.nn")
optim = pytest.importorskip("slimgrad.optim")

# Fixed seeds; the margin the distilled student must win by (test accuracy points).
DISTILL_MARGIN = 0.03


@pytest.fixture(scope="module")
def digits():
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype(np.float32)
    return train_test_split(x, y, test_size=0.3, random_state=0, stratify=y)


def _mlp(sizes, seed):
    layers = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(a, b, seed=seed + i))
        if i < len(sizes) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


def _accuracy(model, x, y):
    model.eval()
    return float(np.mean(np.argmax(model.forward(x), axis=1) == y))


def test_distiller_transfers_the_teachers_knowledge(digits):
    # The teacher learnt from every label; the student has 100 labelled images.
    # Alone it can only use those; distilled, it learns from the teacher's
    # logits on all training images (a transfer set, alpha = 1: no labels).
    x_train, x_test, y_train, y_test = digits
    with num_threads(1):
        teacher = _mlp([64, 128, 10], seed=10)
        Distiller(None, teacher, optim.AdamW(teacher.parameters(), lr=3e-3), alpha=0.0).fit(
            x_train, y_train, epochs=15, batch_size=32, progress=False
        )
        alone = _mlp([64, 16, 10], seed=0)
        Distiller(None, alone, optim.AdamW(alone.parameters(), lr=3e-3), alpha=0.0).fit(
            x_train[:100], y_train[:100], epochs=150, batch_size=32, progress=False
        )
        student = _mlp([64, 16, 10], seed=0)
        history = Distiller(
            teacher, student, optim.AdamW(student.parameters(), lr=3e-3), temperature=2.0, alpha=1.0
        ).fit(
            x_train, y_train, epochs=12, batch_size=32, validation=(x_test, y_test), progress=False
        )
    teacher_acc, alone_acc = _accuracy(teacher, x_test, y_test), _accuracy(alone, x_test, y_test)
    distilled_acc = _accuracy(student, x_test, y_test)
    assert teacher_acc > 0.95
    assert distilled_acc >= alone_acc + DISTILL_MARGIN, (teacher_acc, alone_acc, distilled_acc)
    assert (
        isinstance(history, History) and len(history.loss) == 12 and len(history.val_accuracy) == 12
    )
    assert history.loss[-1] < history.loss[0]
    assert history.val_accuracy[-1] == pytest.approx(distilled_acc)


def test_distiller_is_deterministic_and_caches_the_teacher(digits):
    x_train, _, y_train, _ = digits
    x, y = x_train[:200], y_train[:200]
    calls = []
    teacher_net = _mlp([64, 32, 10], seed=3)

    def teacher(batch):
        calls.append(len(batch))
        return teacher_net.forward(batch)

    def run():
        student = _mlp([64, 8, 10], seed=1)
        opt = optim.AdamW(student.parameters(), lr=1e-2)
        d = Distiller(teacher, student, opt, temperature=3.0, alpha=0.5)
        h = d.fit(x, y, epochs=3, batch_size=64, progress=False, seed=7)
        return h, student.parameters()

    h1, p1 = run()
    assert calls == [200]  # one pass over the data set, then the cache
    h2, p2 = run()
    assert h1.step_loss == h2.step_loss and len(h1.step_loss) == 3 * 4
    for k in p1:
        np.testing.assert_array_equal(p1[k], p2[k])
    assert len(h1.lr) == 12 and h1.val_accuracy == []


def test_teacher_cache_never_confuses_arrays(digits):
    x_train, _, _, _ = digits
    net = _mlp([64, 10], seed=0)
    d = Distiller(net, _mlp([64, 10], seed=1), None, alpha=1.0)
    for i in range(6):  # fresh arrays of one shape: freed buffers get reused
        x = np.ascontiguousarray(x_train[i * 50 : (i + 1) * 50])
        np.testing.assert_array_equal(d.teacher_logits(x), net.forward(x))
        del x
    assert len(d._cache) == Distiller.CACHE_SIZE
    x = np.ascontiguousarray(x_train[:50])
    first = d.teacher_logits(x)
    assert d.teacher_logits(x) is first
    d.clear_cache()
    assert d.teacher_logits(x) is not first


def test_distiller_scheduler_and_callback(digits):
    from slimgrad import schedule

    x_train, _, y_train, _ = digits
    student = _mlp([64, 8, 10], seed=1)
    opt = optim.AdamW(student.parameters(), lr=1e-2)
    sched = schedule.WarmupCosine(opt, warmup_steps=2, total_steps=8)
    steps = []
    h = Distiller(None, student, opt, sched, alpha=0.0).fit(
        x_train[:256],
        y_train[:256],
        epochs=2,
        batch_size=64,
        progress=False,
        step_callback=lambda: steps.append(1),
    )
    assert len(steps) == 8
    assert h.lr[0] == pytest.approx(5e-3) and h.lr[1] == pytest.approx(1e-2) and h.lr[-1] < 1e-2


def test_strided_and_int32_labels_are_accepted(digits):
    from slimgrad.distill import kd_loss

    rng = np.random.default_rng(0)
    s = rng.standard_normal((4, 6)).astype(np.float32)
    y = np.array([[1, 0], [5, 0], [2, 0], [3, 0]])[:, 0]  # strided view
    assert not y.flags.c_contiguous
    expected = kd_loss(s, s, np.ascontiguousarray(y))[0]
    assert kd_loss(s, s, y)[0] == expected
    assert kd_loss(s, s, y.astype(np.int32))[0] == expected


def test_distiller_bad_arguments():
    student = _mlp([4, 3], seed=0)
    opt = optim.AdamW(student.parameters())
    with pytest.raises(
        ValueError, match=r"^teacher: required when alpha > 0 \(alpha=0.5\), got None$"
    ):
        Distiller(None, student, opt)
    with pytest.raises(ValueError, match=r"^temperature: expected a finite number > 0, got 0$"):
        Distiller(None, student, opt, temperature=0, alpha=0.0)
    with pytest.raises(ValueError, match=r"^alpha: expected a number in \[0, 1\], got 2$"):
        Distiller(None, student, opt, alpha=2)
    d = Distiller(None, student, opt, alpha=0.0)
    x = np.zeros((5, 4), np.float32)
    with pytest.raises(ValueError, match=r"^X, y: expected the same non-zero length, got 5 and 4$"):
        d.fit(x, np.zeros(4, int), epochs=1, batch_size=2, progress=False)
    with pytest.raises(ValueError, match=r"^epochs, batch_size: expected ints >= 1, got 0, 2$"):
        d.fit(x, np.zeros(5, int), epochs=0, batch_size=2, progress=False)


def _bn_student(seed=0):
    return nn.Sequential(
        nn.Linear(64, 16, seed=seed), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, 10, seed=seed)
    )


def _fit(student, x, y, teacher=None, **kw):
    alpha = 0.5 if teacher is not None else 0.0
    opt = optim.AdamW(student.parameters(), lr=1e-2)
    d = Distiller(teacher, student, opt, alpha=alpha)
    return d.fit(x, y, progress=False, **kw)


def test_float64_inputs_are_converted_once_for_a_float32_student(digits):
    x_train, x_test, y_train, y_test = digits
    x, y = x_train[:64], y_train[:64]
    teacher = _mlp([64, 32, 10], seed=3)
    seen = []

    def teacher_fn(batch):
        seen.append(batch.dtype)
        return teacher.forward(batch.astype(np.float32))

    ref_student, student = _mlp([64, 16, 10], seed=0), _mlp([64, 16, 10], seed=0)
    val = (x_test[:50], y_test[:50])
    ref = _fit(ref_student, x, y, teacher_fn, epochs=2, batch_size=16, validation=val)
    seen.clear()
    x64 = x.astype(np.float64)
    got = _fit(
        student,
        x64,
        y,
        teacher_fn,
        epochs=2,
        batch_size=16,
        validation=(val[0].astype(np.float64), val[1]),
    )
    assert got.as_dict() == ref.as_dict()
    assert seen == [np.float64]  # the teacher is given X as passed
    for name, p in student.parameters().items():
        np.testing.assert_array_equal(p, ref_student.parameters()[name])
        assert p.dtype == np.float32


def test_batchnorm_student_drops_a_last_batch_of_one_sample(digits):
    x_train, _, y_train, _ = digits
    x, y = x_train[:65], y_train[:65]  # 65 = 2 * 32 + 1
    student = _bn_student()
    history = _fit(student, x, y, epochs=3, batch_size=32)
    assert len(history.step_loss) == 3 * 2  # the 1-sample batch is dropped every epoch
    assert all(np.isfinite(history.loss)) and 0 <= history.accuracy[-1] <= 1
    history = _fit(_bn_student(), x_train[:66], y_train[:66], epochs=1, batch_size=32)
    assert len(history.step_loss) == 3  # a last batch of 2 is kept
    history = _fit(_mlp([64, 16, 10], seed=0), x, y, epochs=1, batch_size=32)
    assert len(history.step_loss) == 3  # no BatchNorm: nothing dropped


@pytest.mark.parametrize("n, batch_size", [(10, 1), (1, 4)])
def test_batchnorm_student_with_single_sample_batches_raises_before_training(digits, n, batch_size):
    x_train, _, y_train, _ = digits
    student = _bn_student()
    before = {k: v.copy() for k, v in student.state_dict().items()}
    with pytest.raises(
        ValueError,
        match=rf"^batch_size: a student with BatchNorm1d needs batches of at least 2 samples in "
        rf"training, got batch_size={batch_size} with {n} samples$",
    ):
        _fit(student, x_train[:n], y_train[:n], epochs=1, batch_size=batch_size)
    for k, v in student.state_dict().items():
        np.testing.assert_array_equal(v, before[k])


def _slimgrad(*args, cwd):
    # Run the same slimgrad this process imported (the installed package, or the
    # working tree under PYTHONPATH=python), never a source tree without its build.
    env = dict(os.environ)
    here = os.path.dirname(os.path.dirname(os.path.abspath(slimgrad.__file__)))
    env["PYTHONPATH"] = here + os.pathsep + env.get("PYTHONPATH", "")
    return subprocess.run(
        [sys.executable, "-m", "slimgrad", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_demo_quick_writes_a_report_with_every_stage(tmp_path):
    pytest.importorskip("matplotlib")
    from slimgrad.demo import STAGES

    result = _slimgrad("demo", "--quick", "--no-progress", "--out", "tmp", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    report = json.loads((tmp_path / "tmp" / "report.json").read_text())
    assert [s["stage"] for s in report["stages"]] == list(STAGES)
    for s in report["stages"]:
        assert 0 <= s["accuracy"] <= 1 and s["bytes"] > 0 and s["inference_ms"] > 0
        assert s["stage"] in result.stdout
    by = {s["stage"]: s for s in report["stages"]}
    assert by["pruned 50%"]["nonzero"] < 0.6 * by["student distilled"]["nonzero"]
    assert (
        by["int4 group-wise"]["bytes"]
        < by["int8 per-channel"]["bytes"]
        < by["student distilled"]["bytes"]
    )
    assert set(report["histories"]) == {
        "teacher",
        "student alone",
        "student distilled",
        "pruned 50%",
        "pruned 2:4",
    }
    assert (tmp_path / "tmp" / "report.png").stat().st_size > 10_000

    # Deterministic: the same seed in another process gives the same run.
    again = _slimgrad("demo", "--quick", "--no-progress", "--out", "again", cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    report2 = json.loads((tmp_path / "again" / "report.json").read_text())
    assert report2["histories"] == report["histories"]
    assert [s["accuracy"] for s in report2["stages"]] == [s["accuracy"] for s in report["stages"]]


def test_demo_user_errors_are_one_line(tmp_path):
    result = _slimgrad("demo", "--quick", "--threads", "0", "--out", "x", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip() == "slimgrad demo: error: --threads: expected an int >= 1, got 0"
