"""slimgrad.quant.kquants: same bytes on every ISA and thread count, round trip
through the gguf package, refusals, and llama.cpp's imatrix files.

Byte equality with llama.cpp itself is in test_quant_kquants_llama.py (needs
llama-cpp-python)."""

from __future__ import annotations

import struct

import numpy as np
import pytest
from conftest import run_everywhere
from slimgrad.quant import kquants as kq

gguf = pytest.importorskip("gguf")
gq = pytest.importorskip("gguf.quants")

# Relative RMS error of the round trip on Gaussian rows (llama.cpp's own
# quantizers give about 0.30 / 0.17 / 0.09 / 0.045 / 0.022 here).
RMSE_BUDGET = {"Q2_K": 0.40, "Q3_K": 0.22, "Q4_K": 0.11, "Q5_K": 0.055, "Q6_K": 0.028}


def blocks(rng):
    """(name, array) pairs: random rows and adversarial blocks (256 columns each)."""
    yield "gaussian", rng.standard_normal((5, 512)).astype(np.float32)
    yield "one row", rng.standard_normal((1, 256)).astype(np.float32)
    yield "large odd", rng.standard_normal((37, 1280)).astype(np.float32)
    z = np.zeros((9, 256), np.float32)
    z[1] = 3.0  # constant
    z[2] = -1e-3  # negative constant
    z[3, 17] = 5.0  # one outlier in zeros
    z[4] = rng.standard_normal(256) * 1e-3
    z[4, 100] = 40.0  # one outlier among small values
    z[5] = -np.abs(rng.standard_normal(256))  # negatives only
    z[6] = np.abs(rng.standard_normal(256))  # positives only
    z[7, :32] = rng.standard_normal(32)  # one non-zero sub-block
    z[8] = (rng.integers(-8, 9, 256) * 0.25).astype(np.float32)  # ties
    yield "zeros/constants/outliers", z
    yield "tiny 1e-30", (rng.standard_normal((3, 256)) * 1e-30).astype(np.float32)
    yield "subnormal", (rng.standard_normal((2, 256)) * 1e-42).astype(np.float32)
    yield "huge 1e30", (rng.standard_normal((3, 256)) * 1e30).astype(np.float32)
    yield "f16 overflow", (rng.standard_normal((2, 256)) * 1e6).astype(np.float32)
    yield "1e19 (x^2 overflows)", (rng.standard_normal((2, 256)) * 1e19).astype(np.float32)
    yield "max range +-3e38", np.array([3e38, -3e38] * 128, np.float32).reshape(1, 256)
    mixed = np.concatenate([rng.standard_normal(128) * 1e-20, rng.standard_normal(128) * 1e20])
    yield "1e-20 and 1e20 sub-blocks", mixed.astype(np.float32).reshape(1, 256)
    yield "smallest subnormals", (rng.integers(-3, 4, (2, 256)) * 1e-45).astype(np.float32)
    yield "3-d, odd rows", rng.standard_normal((3, 7, 256)).astype(np.float32)


def imatrix_for(rng, n):
    return (rng.standard_normal(n) ** 2).astype(np.float32) + np.float32(0.01)


@pytest.mark.parametrize("type_name", kq.TYPES)
@pytest.mark.parametrize("use_imatrix", [False, True], ids=["ref", "imatrix"])
def test_same_bytes_on_every_isa_and_thread_count(type_name, use_imatrix, rng):
    cases = list(blocks(rng))

    def run():
        out = []
        for _, w in cases:
            qw = imatrix_for(np.random.default_rng(7), w.shape[-1]) if use_imatrix else None
            out.append(kq.quantize(w, type_name, imatrix=qw))
        return out

    results = run_everywhere(run)
    first = next(iter(results.values()))
    for key, outs in results.items():
        for (name, _), a, b in zip(cases, outs, first):
            np.testing.assert_array_equal(a, b, err_msg=f"{name} {key}")


@pytest.mark.parametrize("type_name", kq.TYPES)
def test_dequantize_equals_gguf_package(isa, threads, type_name, rng):
    qtype = gguf.GGMLQuantizationType[type_name]
    for name, w in blocks(rng):
        q = kq.quantize(w, type_name)
        assert q.dtype == np.uint8 and q.shape == (
            *w.shape[:-1],
            w.shape[-1] // 256 * kq.TYPE_SIZE[type_name],
        )
        with np.errstate(all="ignore"):  # the package's own inf * 0 on f16-overflow blocks
            ref = gq.dequantize(q, qtype)
        ours = kq.dequantize(q, type_name)
        assert ours.shape == w.shape, name
        np.testing.assert_array_equal(ours.view(np.uint32), ref.view(np.uint32), err_msg=name)
        assert kq.dequantize(q, qtype, w.shape).shape == w.shape


def test_dequantize_of_an_unaligned_view(rng):
    q = kq.quantize(rng.standard_normal((2, 256)).astype(np.float32), "Q6_K")
    buf = np.empty(q.size + 1, np.uint8)
    buf[1:] = q.reshape(-1)
    np.testing.assert_array_equal(
        kq.dequantize(buf[1:], "Q6_K"), kq.dequantize(q.reshape(-1), "Q6_K")
    )


@pytest.mark.parametrize("type_name", kq.TYPES)
@pytest.mark.parametrize("use_imatrix", [False, True], ids=["ref", "imatrix"])
def test_round_trip_error_budget(type_name, use_imatrix, rng):
    w = rng.standard_normal((16, 1024)).astype(np.float32)
    qw = imatrix_for(rng, 1024) if use_imatrix else None
    deq = kq.dequantize(kq.quantize(w, type_name, imatrix=qw), type_name)
    err = np.sqrt(np.mean((deq.astype(np.float64) - w) ** 2) / np.mean(w.astype(np.float64) ** 2))
    assert err < RMSE_BUDGET[type_name], err
    # Exact zeros and constants survive (a scale search that broke would not).
    z = np.zeros((1, 256), np.float32)
    np.testing.assert_array_equal(kq.dequantize(kq.quantize(z, type_name), type_name), z)


def test_imatrix_changes_the_result_where_it_should(rng):
    w = rng.standard_normal((4, 256)).astype(np.float32)
    qw = np.ones(256, np.float32)
    qw[:32] = 1000.0  # the first sub-block matters most
    for t in ("Q4_K", "Q5_K", "Q6_K"):
        plain = kq.dequantize(kq.quantize(w, t), t)
        weighted = kq.dequantize(kq.quantize(w, t, imatrix=qw), t)
        e_plain = np.abs(plain - w)[:, :32].mean()
        e_weighted = np.abs(weighted - w)[:, :32].mean()
        assert e_weighted <= e_plain, t


def test_imatrix_per_expert_equals_per_slice(rng):
    w = rng.standard_normal((3, 5, 256)).astype(np.float32)
    qw = rng.random((3, 256)).astype(np.float32)
    got = kq.quantize(w, "Q4_K", imatrix=qw)
    for e in range(3):
        np.testing.assert_array_equal(got[e], kq.quantize(w[e], "Q4_K", imatrix=qw[e]))
    bad = w.copy()
    bad[2, 4, 255] = np.nan
    with pytest.raises(ValueError, match=r"w: non-finite value nan at index \(2, 4, 255\)"):
        kq.quantize(bad, "Q4_K", imatrix=qw)
    with pytest.raises(ValueError, match=r"imatrix: expected 256 weights .* got shape \(2, 256\)"):
        kq.quantize(w, "Q4_K", imatrix=qw[:2])
    qw[1, 7] = np.inf
    with pytest.raises(ValueError, match=r"imatrix: non-finite value inf at index \(1, 7\)"):
        kq.quantize(w, "Q4_K", imatrix=qw)


def test_accepts_enum_float64_bfloat16_and_keeps_input(rng):
    w = rng.standard_normal((2, 256))
    before = w.copy()
    a = kq.quantize(w, gguf.GGMLQuantizationType.Q4_K)
    np.testing.assert_array_equal(w, before)
    np.testing.assert_array_equal(a, kq.quantize(w.astype(np.float32), "Q4_K"))
    import ml_dtypes

    wb = w.astype(ml_dtypes.bfloat16)
    np.testing.assert_array_equal(
        kq.quantize(wb, "Q6_K"), kq.quantize(wb.astype(np.float32), "Q6_K")
    )
    assert kq.quantize(np.zeros((0, 256), np.float32), "Q5_K").shape == (0, 176)


def test_refusals(rng):
    w = rng.standard_normal((3, 384)).astype(np.float32)
    with pytest.raises(
        ValueError, match=r"w: Q4_K needs rows .* multiple of 256, got shape \(3, 384\).*Q5_0"
    ):
        kq.quantize(w, "Q4_K")
    with pytest.raises(ValueError, match="multiple of 256"):
        kq.quantize(np.zeros((2, 0), np.float32), "Q6_K")
    with pytest.raises(ValueError, match="type: expected one of"):
        kq.quantize(np.zeros((1, 256), np.float32), "Q4_0")
    with pytest.raises(TypeError, match="w: expected a floating-point"):
        kq.quantize(np.zeros((1, 256), np.int32), "Q4_K")
    good = rng.standard_normal((2, 512)).astype(np.float32)
    with pytest.raises(ValueError, match=r"imatrix: expected 512 weights .* got shape \(256,\)"):
        kq.quantize(good, "Q4_K", imatrix=np.ones(256, np.float32))
    bad_qw = np.ones(512, np.float32)
    bad_qw[3] = np.nan
    with pytest.raises(ValueError, match=r"imatrix: non-finite value nan at index \(3,\)"):
        kq.quantize(good, "Q4_K", imatrix=bad_qw)
    nan = good.copy()
    nan[1, 300] = np.inf
    with pytest.raises(ValueError, match=r"w: non-finite value inf at index \(1, 300\)"):
        kq.quantize(nan, "Q6_K")
    assert np.isinf(nan[1, 300]) and np.isfinite(np.delete(nan.ravel(), 812)).all()  # unchanged
    with pytest.raises(TypeError, match="data: expected a uint8"):
        kq.dequantize(np.zeros(144, np.int8), "Q4_K")
    with pytest.raises(ValueError, match="data: expected a last axis that is a multiple of 144"):
        kq.dequantize(np.zeros(145, np.uint8), "Q4_K")
    with pytest.raises(ValueError, match="do not hold Q4_K blocks"):
        kq.dequantize(np.zeros(144, np.uint8), "Q4_K", (2, 256))


# ------------------------------------------------------------------ imatrix


def write_gguf_imatrix(path, entries, counts):
    w = gguf.GGUFWriter(str(path), arch="")
    w.add_string("general.type", "imatrix")
    w.add_array("imatrix.datasets", ["test.txt"])
    w.add_uint32("imatrix.chunk_count", 3)
    w.add_uint32("imatrix.chunk_size", 512)
    for name, sums in entries.items():
        w.add_tensor(f"{name}.in_sum2", sums.astype(np.float32))
        w.add_tensor(f"{name}.counts", np.asarray(counts[name], np.float32).reshape(-1, 1))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def test_read_gguf_imatrix(tmp_path, rng):
    sums = rng.random(512).astype(np.float32) * 100
    experts = rng.random((3, 256)).astype(np.float32) * 10
    path = tmp_path / "imatrix.gguf"
    write_gguf_imatrix(
        path,
        {"blk.0.ffn_down.weight": sums.reshape(1, -1), "blk.0.ffn_down_exps.weight": experts},
        {"blk.0.ffn_down.weight": [1536.0], "blk.0.ffn_down_exps.weight": [512.0, 0.0, 1024.0]},
    )
    got = kq.read_imatrix(path)
    assert set(got) == {"blk.0.ffn_down.weight", "blk.0.ffn_down_exps.weight"}
    np.testing.assert_array_equal(got["blk.0.ffn_down.weight"], sums / np.float32(1536))
    e = got["blk.0.ffn_down_exps.weight"]
    assert e.shape == (3, 256) and e.dtype == np.float32
    np.testing.assert_array_equal(e[0], experts[0] / np.float32(512))
    np.testing.assert_array_equal(
        e[1], np.ones(256, np.float32)
    )  # count 0: ones, as llama-quantize
    np.testing.assert_array_equal(e[2], experts[2] / np.float32(1024))


def test_write_imatrix_round_trip_and_refusals(tmp_path, rng):
    x = rng.standard_normal((100, 512)).astype(np.float32)  # activations (tokens, columns)
    sums = {
        "blk.0.ffn_down.weight": (x**2).sum(axis=0),
        "exps": rng.random((2, 256)).astype(np.float32),
    }
    path = tmp_path / "im.gguf"
    kq.write_imatrix(
        path, sums, {"blk.0.ffn_down.weight": 100, "exps": [4, 8]}, chunk_count=1, chunk_size=100
    )
    got = kq.read_imatrix(path)
    np.testing.assert_array_equal(
        got["blk.0.ffn_down.weight"], sums["blk.0.ffn_down.weight"] / np.float32(100)
    )
    np.testing.assert_array_equal(got["exps"], sums["exps"] / np.array([[4], [8]], np.float32))
    before = path.read_bytes()
    with pytest.raises(ValueError, match="expected the same names"):
        kq.write_imatrix(path, sums, {"exps": [4, 8]})
    with pytest.raises(
        ValueError, match=r"sums\['exps'\]: expected .* got shape \(2, 256\) and 1 counts"
    ):
        kq.write_imatrix(path, {"exps": sums["exps"]}, {"exps": 3})
    with pytest.raises(ValueError, match="finite sums >= 0"):
        kq.write_imatrix(path, {"a": -np.ones(256, np.float32)}, {"a": 1})
    assert path.read_bytes() == before  # nothing written by a refused call


def test_read_legacy_dat_imatrix(tmp_path, rng):
    vals = {
        "blk.0.attn_q.weight": rng.random(256).astype(np.float32),
        "output.weight": rng.random(512),
    }
    raw = struct.pack("<i", len(vals))
    for name, v in vals.items():
        b = name.encode()
        raw += struct.pack("<i", len(b)) + b + struct.pack("<ii", 10, v.size)
        raw += np.asarray(v, "<f4").tobytes()
    raw += struct.pack("<i", 10) + struct.pack("<i", 4) + b"wiki"  # optional trailer
    path = tmp_path / "imatrix.dat"
    path.write_bytes(raw)
    got = kq.read_imatrix(path)
    for name, v in vals.items():
        np.testing.assert_array_equal(got[name], np.asarray(v, np.float32) / np.float32(10))
    path.write_bytes(raw[:40])
    with pytest.raises(ValueError, match="truncated legacy imatrix"):
        kq.read_imatrix(path)
    path.write_bytes(b"\0\0\0\0")
    with pytest.raises(ValueError, match="not an imatrix"):
        kq.read_imatrix(path)


def test_bench_cases_run_at_a_small_size():
    from slimgrad.bench import kquant as bench_kquant

    names = []
    for case in bench_kquant.cases(256):
        names.append(case.name)
        for fn in case.impls.values():
            fn()
    assert "gguf quantize Q4_K" in names and "gguf dequantize Q6_K" in names
