"""The distillation workflow: train a student on a teacher's softened outputs."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from ._adapters import refuse_torch
from ._losses import kd_loss


@dataclass
class History:
    """What :meth:`Distiller.fit` measured.

    Per epoch (lists of length ``epochs``): ``loss`` (mean training loss, the
    KD objective), ``accuracy`` (training accuracy of the predictions made
    during the epoch, in training mode), ``val_loss`` (cross-entropy on the
    validation set, eval mode) and ``val_accuracy`` (empty without
    validation data). Per optimizer step: ``step_loss`` and ``lr`` (the
    first parameter group's learning rate used for that step).
    """

    loss: list[float] = field(default_factory=list)
    accuracy: list[float] = field(default_factory=list)
    val_loss: list[float] = field(default_factory=list)
    val_accuracy: list[float] = field(default_factory=list)
    step_loss: list[float] = field(default_factory=list)
    lr: list[float] = field(default_factory=list)

    def as_dict(self) -> dict[str, list[float]]:
        """The lists as a plain dict (JSON-ready)."""
        return asdict(self)

    def __repr__(self) -> str:
        last = ", ".join(
            f"{k}={v[-1]:.4g}"
            for k, v in asdict(self).items()
            if v and k not in ("step_loss", "lr")
        )
        head = f"History(epochs={len(self.loss)}, steps={len(self.step_loss)}"
        return f"{head}, {last})" if last else f"{head})"


def _student_dtype(model: Any) -> np.dtype | None:
    """The one float dtype of a module's parameters, None if unknown or mixed."""
    params = getattr(model, "parameters", None)
    if not callable(params):
        return None
    try:
        dtypes = {np.dtype(p.dtype) for p in dict(params()).values()}
    except (TypeError, AttributeError, ValueError):
        return None
    if len(dtypes) != 1:
        return None
    (dtype,) = dtypes
    return dtype if dtype.kind == "f" else None


def _as_student_input(model: Any, x: Any) -> Any:
    # A float64 X for a float32 student (NumPy's default dtype meeting a
    # float32 model) is converted once, here, instead of failing on the first
    # batch with an error about that batch. Other inputs pass unchanged.
    dtype = _student_dtype(model)
    if dtype is not None and isinstance(x, np.ndarray) and x.dtype.kind == "f" and x.dtype != dtype:
        return x.astype(dtype)
    return x


def _has_batch_norm(model: Any) -> bool:
    from ..nn import BatchNorm1d

    modules = getattr(model, "modules", None)
    return callable(modules) and any(isinstance(m, BatchNorm1d) for m in modules())


def _forward(model: Any, x: np.ndarray) -> np.ndarray:
    return model.forward(x) if hasattr(model, "forward") else model(x)


def predict_logits(model: Any, x: np.ndarray, batch_size: int = 1024) -> np.ndarray:
    """Logits of ``model`` on ``x`` in batches (eval mode for modules, restored after).

    ``model`` is a :mod:`slimgrad.nn` module (``forward``) or any callable
    mapping a batch of inputs to a 2-D logits array.
    """
    refuse_torch(model, "model: a {} (torch) cannot take NumPy batches")
    was_training = getattr(model, "training", None)
    if was_training is not None and hasattr(model, "eval"):
        model.eval()
    try:
        parts = [
            _numpy_logits(_forward(model, x[i : i + batch_size]))
            for i in range(0, len(x), batch_size)
        ]
    finally:
        if was_training and hasattr(model, "train"):
            model.train()
    if not parts:
        return np.zeros((0, 0), np.float32)
    return np.concatenate(parts, axis=0)


def _numpy_logits(out: Any) -> np.ndarray:
    refuse_torch(out, "the teacher returned a torch {}, not a NumPy array")
    return np.asarray(out)


def _cross_entropy(logits: np.ndarray, labels: np.ndarray) -> float:
    z = logits.astype(np.float64)
    z -= z.max(axis=1, keepdims=True)
    lse = np.log(np.exp(z).sum(axis=1))
    return float(np.mean(lse - z[np.arange(len(labels)), labels]))


class Distiller:
    """Train ``student`` to match ``teacher`` (Hinton-style knowledge distillation).

    Each step: ``student.forward(x)``, :func:`~slimgrad.distill.kd_loss`
    against the teacher's logits and the labels, ``student.backward(grad)``,
    ``optimizer.step(student.gradients())``, then ``scheduler.step()``.

    Parameters
    ----------
    teacher : callable or module, or None
        Maps a batch of inputs to logits of shape (batch, classes): any
        callable, or an object with ``forward`` (a :mod:`slimgrad.nn` module,
        run in eval mode). Not called when ``alpha == 0`` (then it may be
        None: the student is trained on the labels alone, the baseline).
    student : slimgrad.nn.Module (or the same protocol)
        ``forward``, ``backward``, ``gradients()``, ``train()``, ``eval()``.
    optimizer : slimgrad.optim optimizer (or anything with ``step(grads)``)
        Built on ``student.parameters()``.
    scheduler : optional
        Anything with ``step()``, called after every optimizer step.
    temperature, alpha : float
        As in :func:`~slimgrad.distill.kd_loss`.
    cache_teacher : bool
        Compute the teacher's logits once per training set (the first epoch
        of :meth:`fit` computes them for the whole ``X`` in batches) instead
        of once per batch: teachers are fixed, so this is the same result for
        a fraction of the cost. The cache holds the last
        ``CACHE_SIZE`` input arrays themselves (so a freed array's address can
        never be mistaken for a new one) and matches them by identity: call
        :meth:`clear_cache` after modifying ``X`` in place.

    Raises
    ------
    ValueError
        ``teacher`` is None while ``alpha > 0``; bad temperature or alpha.
    """

    CACHE_SIZE = 4

    def __init__(
        self,
        teacher: Callable[[np.ndarray], np.ndarray] | Any | None,
        student: Any,
        optimizer: Any,
        scheduler: Any | None = None,
        *,
        temperature: float = 2.0,
        alpha: float = 0.5,
        cache_teacher: bool = True,
    ) -> None:
        if not (np.isfinite(temperature) and temperature > 0):
            raise ValueError(f"temperature: expected a finite number > 0, got {temperature}")
        if not 0 <= alpha <= 1:
            raise ValueError(f"alpha: expected a number in [0, 1], got {alpha}")
        if teacher is None and alpha > 0:
            raise ValueError(f"teacher: required when alpha > 0 (alpha={alpha}), got None")
        refuse_torch(teacher, "teacher: a torch {} gets NumPy batches here")
        self.teacher = teacher
        self.student = student
        self.optimizer = optimizer
        self.scheduler = scheduler
        self.temperature = float(temperature)
        self.alpha = float(alpha)
        self.cache_teacher = cache_teacher
        self._cache: list[tuple[np.ndarray, np.ndarray]] = []

    def __repr__(self) -> str:
        teacher = "None" if self.teacher is None else type(self.teacher).__name__
        sched = "" if self.scheduler is None else f", scheduler={type(self.scheduler).__name__}"
        return (
            f"Distiller(teacher={teacher}, student={type(self.student).__name__}, "
            f"optimizer={type(self.optimizer).__name__}{sched}, "
            f"temperature={self.temperature}, alpha={self.alpha})"
        )

    def clear_cache(self) -> None:
        """Forget the cached teacher logits."""
        self._cache.clear()

    def teacher_logits(self, x: np.ndarray, dtype: Any = np.float32) -> np.ndarray:
        """The teacher's logits for ``x`` (C-contiguous, ``dtype``), cached if enabled."""
        dtype = np.dtype(dtype)
        for cached_x, logits in self._cache:
            if cached_x is x and logits.dtype == dtype:
                return logits
        logits = np.ascontiguousarray(predict_logits(self.teacher, x), dtype=dtype)
        if self.cache_teacher:
            self._cache = [*self._cache[-(self.CACHE_SIZE - 1) :], (x, logits)]
        return logits

    def evaluate(self, x: np.ndarray, y: np.ndarray, batch_size: int = 1024) -> tuple[float, float]:
        """``(cross-entropy, accuracy)`` of the student on ``(x, y)`` in eval mode.

        A float ``x`` of another dtype than the student's parameters is
        converted to it first (as in :meth:`fit`).
        """
        logits = predict_logits(self.student, _as_student_input(self.student, x), batch_size)
        return _cross_entropy(logits, y), float(np.mean(np.argmax(logits, axis=1) == y))

    def _lr(self) -> float:
        groups = getattr(self.optimizer, "param_groups", None)
        return float(groups[0]["lr"]) if groups else float("nan")

    def fit(
        self,
        X: np.ndarray,
        y: np.ndarray,
        epochs: int,
        batch_size: int,
        validation: tuple[np.ndarray, np.ndarray] | None = None,
        progress: bool = True,
        seed: int = 0,
        *,
        step_callback: Callable[[], object] | None = None,
        desc: str | None = None,
    ) -> History:
        """Train the student for ``epochs`` passes over ``(X, y)`` in shuffled mini-batches.

        Parameters
        ----------
        X : ndarray (N, ...)
            Inputs. When the student's parameters all have one float dtype
            (e.g. float32) and ``X`` is a float array of another (e.g.
            NumPy's default float64), ``X`` is converted once to the
            student's dtype before training (one copy of ``X``; validation
            inputs too); the teacher is given ``X`` as passed.
        y : ndarray of integers (N,)
            Class labels (needed for the cross-entropy term and the accuracy).
        epochs, batch_size : int
            ``>= 1``. The last batch of an epoch may be smaller. If the
            student contains a :class:`~slimgrad.nn.BatchNorm1d` (which
            cannot train on one sample), a last batch of exactly one sample
            is dropped, like torch's ``DataLoader(drop_last=True)`` for that
            case (a different sample each epoch, since the order is
            shuffled); the per-epoch ``loss`` and ``accuracy`` average over
            the samples used.
        validation : (X_val, y_val), optional
            Evaluated after every epoch.
        progress : bool
            Show a tqdm progress bar (one bar over all steps, with the loss and
            accuracies as postfix).
        seed : int
            Seeds the shuffling (``np.random.default_rng(seed)``): the same
            seed and inputs give the same training run.
        step_callback : callable, optional
            Called with no argument after every optimizer (and scheduler)
            step, e.g. ``pruner.step`` to keep pruned weights at zero.
        desc : str, optional
            Label of the progress bar.

        Data-parallel training: when ``optimizer`` is a
        :mod:`slimgrad.distributed` optimizer (``DistributedOptimizer`` or
        ``ZeroRedundancyOptimizer``, run under ``mpiexec``), every rank passes
        the same ``X`` and ``y``, draws the same order and trains on its
        contiguous part of each batch; gradients are scaled so that their
        average over ranks is the whole batch's mean gradient (the same
        training as one process, up to float rounding, for students without
        BatchNorm1d, whose batch statistics are per rank). A last batch with
        fewer samples than ranks is dropped. ``History`` holds the losses and
        accuracies over all ranks; only rank 0 shows a progress bar.

        Returns
        -------
        History
            The student is left in eval mode.

        Raises
        ------
        ValueError
            ``epochs`` or ``batch_size`` < 1, ``X`` and ``y`` of different
            lengths, an empty training set; a student with BatchNorm1d and
            ``batch_size == 1`` or a single sample (every batch would have
            one sample). Raised before anything is updated.
        """
        from tqdm.auto import tqdm

        if int(epochs) < 1 or int(batch_size) < 1:
            raise ValueError(f"epochs, batch_size: expected ints >= 1, got {epochs}, {batch_size}")
        y = np.asarray(y)
        if len(X) != len(y) or len(X) == 0:
            raise ValueError(f"X, y: expected the same non-zero length, got {len(X)} and {len(y)}")
        y = y.astype(np.int64, copy=False)
        n = len(X)
        # BatchNorm1d cannot train on a batch of one sample (torch raises
        # too): drop such a last batch rather than fail after updates.
        drop_single = _has_batch_norm(self.student)
        if drop_single and min(n, int(batch_size)) == 1:
            raise ValueError(
                "batch_size: a student with BatchNorm1d needs batches of at least 2 samples in "
                f"training, got batch_size={batch_size} with {n} samples"
            )
        drop_last = drop_single and n % batch_size == 1
        used = n - 1 if drop_last else n
        X_student = _as_student_input(self.student, X)
        if validation is not None:
            validation = (_as_student_input(self.student, validation[0]), validation[1])
        # Data-parallel when the optimizer is a slimgrad.distributed one: every
        # rank draws the same order and takes its part of each batch.
        dp = getattr(self.optimizer, "comm", None)
        if dp is not None:
            from ..distributed import batch_slice

            progress = progress and dp.rank == 0
        rng = np.random.default_rng(seed)
        history = History()
        steps = (used + batch_size - 1) // batch_size
        teacher_all = None
        bar = tqdm(
            total=epochs * steps,
            disable=not progress,
            desc=desc or ("distill" if self.alpha > 0 else "train"),
            leave=False,
            dynamic_ncols=True,
        )
        try:
            for _ in range(epochs):
                self.student.train()
                order = rng.permutation(n)
                losses, sizes, used_now, count = [], [], 0, used
                total_loss = 0.0
                correct = 0
                for b in range(0, used, batch_size):
                    idx = order[b : min(b + batch_size, used)]
                    if dp is not None:  # data-parallel: this rank's part of the batch
                        if len(idx) < dp.size:
                            continue  # a last batch smaller than the number of ranks
                        whole, idx = len(idx), idx[batch_slice(len(idx), dp)]
                    xb, yb = X_student[idx], y[idx]
                    logits = np.ascontiguousarray(_forward(self.student, xb))
                    if self.alpha > 0:
                        if self.cache_teacher:
                            if teacher_all is None:
                                teacher_all = self.teacher_logits(X, logits.dtype)
                            tb = teacher_all[idx]
                        else:
                            tb = np.ascontiguousarray(
                                predict_logits(self.teacher, X[idx]), dtype=logits.dtype
                            )
                    else:
                        tb = logits  # not read when alpha == 0
                    loss, grad = kd_loss(
                        logits, tb, yb, temperature=self.temperature, alpha=self.alpha
                    )
                    if dp is not None:
                        # Each rank's mean-loss gradient, scaled so that the
                        # average over ranks is the whole batch's mean gradient.
                        grad *= grad.dtype.type(len(idx) * dp.size / whole)
                    self.student.backward(grad)
                    history.lr.append(self._lr())
                    self.optimizer.step(self.student.gradients())
                    if self.scheduler is not None:
                        self.scheduler.step()
                    if step_callback is not None:
                        step_callback()
                    history.step_loss.append(loss)
                    total_loss += loss * len(idx)
                    if dp is not None:
                        losses.append(loss * len(idx))
                        sizes.append(whole)
                        used_now += len(idx)
                    correct += int(np.sum(np.argmax(logits, axis=1) == yb))
                    bar.update(1)
                if dp is not None:  # sums over ranks (loss of each step too)
                    sums = dp.allgather_float64([total_loss, correct, used_now, *losses]).sum(0)
                    total_loss, correct, count = float(sums[0]), int(sums[1]), int(sums[2])
                    history.step_loss[len(history.step_loss) - len(losses) :] = list(
                        sums[3:] / np.asarray(sizes)
                    )
                history.loss.append(total_loss / count)
                history.accuracy.append(correct / count)
                postfix = {"loss": f"{history.loss[-1]:.4f}", "acc": f"{history.accuracy[-1]:.3f}"}
                if validation is not None:
                    vl, va = self.evaluate(*validation)
                    history.val_loss.append(vl)
                    history.val_accuracy.append(va)
                    postfix["val_acc"] = f"{va:.3f}"
                bar.set_postfix(postfix)
        finally:
            bar.close()
        self.student.eval()
        return history
