"""The descriptor tables of the C++ core, as Python sees them.

optim_table.hpp (optimizers) and quant.hpp's GGUF traits are the only copy
of names, state slots and block sizes; these tests check that what the
Python layer uses comes from them and agrees with the outside references.
"""

from __future__ import annotations

import numpy as np
import pytest
import slimgrad
from slimgrad import _core
from slimgrad.quant import gguf as sg


def test_gguf_formats_match_the_gguf_package():
    gguf = pytest.importorskip("gguf")
    from gguf.constants import GGML_QUANT_SIZES

    formats = _core.quant.gguf_formats()
    assert list(formats) == ["Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1"]
    for i, (name, row) in enumerate(formats.items()):
        t = gguf.GGMLQuantizationType[name]
        assert row["type"] == i
        assert row["ggml_type"] == t.value
        assert (row["block_size"], row["type_size"]) == GGML_QUANT_SIZES[t]
    # slimgrad.quant.gguf reads its sizes from the table.
    assert sg.TYPES == tuple(formats)
    assert sg.TYPE_SIZE == {n: r["type_size"] for n, r in formats.items()}
    assert sg.BLOCK_SIZE == 32


def test_gguf_type_out_of_table_is_refused():
    w = np.zeros(32, np.float32)
    out = np.zeros(34, np.uint8)
    with pytest.raises(
        ValueError, match=r"type: expected 0\.\.4 \(Q8_0, Q4_0, Q4_1, Q5_0, Q5_1\), got 5"
    ):
        _core.quant.gguf_quantize(w, 5, out)
    assert not out.any()


def test_optimizer_table_rows():
    table = _core.optim.optimizers()
    elementwise = [n for n, r in table.items() if r["kind"] == "elementwise"]
    assert {"sgd", "adam", "lion"} <= set(elementwise)
    # Every row is reachable: an optimizer class of slimgrad.optim steps it
    # (read from the table, so a new row needs no edit here).
    from slimgrad import optim

    algos = {getattr(getattr(optim, n), "_algo", None) for n in optim.__all__}
    assert set(table) <= algos, sorted(set(table) - algos)
    for name, row in table.items():
        assert row["policy"] in ("bit_exact", "bounded")
        assert row["kind"] in ("elementwise", "multipass")
        keys = [s[0] for s in row["slots"]]
        assert len(keys) == len(set(keys)), name
        for _, storage, when in row["slots"]:
            assert storage in ("math", "int8", "uint8", "blocks", "row", "col")
            assert when in ("always", "momentum", "centered", "amsgrad", "factored", "vector")
    # The names StepArgs accepts are exactly the elementwise rows.
    a = _core.optim.StepArgs()
    for name in elementwise:
        a.algo = name
        assert a.algo == name
    with pytest.raises(ValueError, match="algo: expected one of sgd, .*, lion, .*, got 'lamb'"):
        a.algo = "lamb"


@pytest.mark.parametrize(
    "options, count",
    [
        (dict(algo="sgd"), 0),
        (dict(algo="sgd", momentum=0.9), 1),
        (dict(algo="rmsprop"), 1),
        (dict(algo="rmsprop", momentum=0.5, centered=True), 3),
        (dict(algo="adam"), 2),
        (dict(algo="adam", amsgrad=True), 3),
        (dict(algo="lion"), 1),
        (dict(algo="asgd"), 1),
        (dict(algo="rprop"), 2),
        (dict(algo="sf_adamw"), 2),
        (dict(algo="sf_sgd"), 1),
    ],
)
def test_state_count_follows_the_table(options, count):
    a = _core.optim.StepArgs()
    for k, v in options.items():
        setattr(a, k, v)
    assert _core.optim.state_count(a) == count
    row = _core.optim.optimizers()[options["algo"]]
    used = [
        key
        for key, _, when in row["slots"]
        if when == "always" or (when in options and bool(options[when]))
    ]
    assert len(used) == count


def test_isa_levels_listed_once():
    built = _core.built_isas()
    assert built[0] == "scalar"
    assert set(slimgrad.available_isas()) <= set(built)
