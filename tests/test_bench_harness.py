"""The bench harness's own behaviour (the timing, not the figures)."""

import threading
import time

from slimgrad.bench import SETTLE_MAX, Case, measure, settle


def test_settle_waits_until_other_threads_stop_spinning():
    def spin(seconds):  # as OpenBLAS's workers do after a product
        end = time.perf_counter() + seconds
        while time.perf_counter() < end:
            pass

    spinner = threading.Thread(target=spin, args=(0.15,))
    spinner.start()
    waited = settle()
    spinner.join()
    assert 0.12 <= waited < SETTLE_MAX  # it waited for the spinner, not for its cap


def test_settle_returns_at_once_on_an_idle_process():
    assert settle() < 0.1


def test_measure_times_every_implementation_once_per_repeat():
    calls = {"slimgrad": 0, "other": 0}

    def count(name):
        calls[name] += 1

    samples = measure(Case("c", {n: (lambda n=n: count(n)) for n in calls}), repeats=3, target=0)
    assert {n: len(s) for n, s in samples.items()} == {"slimgrad": 3, "other": 3}
    assert calls == {"slimgrad": 4, "other": 4}  # one warm-up call each, then one per batch


def test_prelude_runs_before_every_call_untimed():
    order = []
    case = Case(
        "c",
        {"slimgrad": lambda: order.append("call")},
        prelude=lambda: (order.append("prelude"), time.sleep(0.02)),
    )
    samples = measure(case, repeats=2, target=0)
    assert order == ["prelude", "call"] * 3  # the warm-up call, then one per batch
    assert max(samples["slimgrad"]) < 0.01  # the prelude's 20 ms are not in the time


def test_calls_fixes_the_batch_and_a_module_sets_it_for_its_cases():
    calls = {"n": 0}

    def count():
        calls["n"] += 1

    # target 1 s would take thousands of these calls per batch; calls=1 takes one
    measure(Case("c", {"slimgrad": count}, calls=1), repeats=3, target=1.0)
    assert calls["n"] == 4  # the warm-up, then one per batch
    from slimgrad.bench import optim, suite_cases

    assert optim.CALLS_PER_BATCH == 1
    # the optim suite's cases are timed one call per batch, as its probe
    first = next(iter(suite_cases("optim", size=1024)))
    assert first.calls == 1 and first.setup is not None
