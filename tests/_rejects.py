"""Bad-input checks shared by the calibrated-compression tests (GPTQ, AWQ, ...)."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import numpy as np
import pytest


def assert_rejected_unchanged(
    cases: Iterable[tuple[Callable[[], object], type[Exception], str]], *arrays: np.ndarray
) -> None:
    """Each ``call`` raises ``exc`` with ``message`` in its text, and none of
    ``arrays`` (the inputs the calls read) changed meanwhile."""
    before = [a.copy() for a in arrays]
    for call, exc, message in cases:
        with pytest.raises(exc) as info:
            call()
        assert message in str(info.value), str(info.value)
    for a, a0 in zip(arrays, before, strict=True):
        np.testing.assert_array_equal(a, a0)
