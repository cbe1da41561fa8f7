"""ISA dispatch, threads and build info."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import slimgrad


def test_scalar_is_always_available():
    assert slimgrad.available_isas()[0] == "scalar"
    assert slimgrad.active_isa() in slimgrad.available_isas()


def test_use_isa_switches_and_restores():
    before = slimgrad.active_isa()
    with slimgrad.use_isa("scalar"):
        assert slimgrad.active_isa() == "scalar"
    assert slimgrad.active_isa() == before


def test_use_isa_rejects_unknown_and_unsupported():
    with pytest.raises(
        ValueError,
        match="expected one of 'scalar', 'avx2', 'avx512', 'avx512_vnni', 'avx512_bf16', 'amx', got 'sse9'",
    ):
        with slimgrad.use_isa("sse9"):
            pass
    for name in ("avx2", "avx512", "avx512_vnni", "avx512_bf16", "amx"):
        if name not in slimgrad.available_isas():
            with pytest.raises(ValueError, match=f"ISA '{name}' is not"):
                with slimgrad.use_isa(name):
                    pass


def _import_with_env(value: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, SLIMGRAD_ISA=value)
    code = "import slimgrad; print(slimgrad.active_isa())"
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)


def test_env_forces_level():
    out = _import_with_env("scalar")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "scalar"


def test_env_unknown_level_raises_clearly():
    out = _import_with_env("neon9")
    assert out.returncode != 0
    assert (
        "SLIMGRAD_ISA: expected one of scalar, avx2, avx512, avx512_vnni, avx512_bf16, amx, got 'neon9'"
        in out.stderr
    )


def test_threads_set_get_and_context():
    before = slimgrad.get_num_threads()
    with slimgrad.num_threads(1):
        assert slimgrad.get_num_threads() == 1
    assert slimgrad.get_num_threads() == before
    with pytest.raises(ValueError, match=r"n: expected a thread count in \[1, 4096\], got 0"):
        slimgrad.set_num_threads(0)
    with pytest.raises(TypeError, match="n: expected an int, got float"):
        slimgrad.set_num_threads(2.0)
    assert slimgrad.get_num_threads() == before


def test_build_info_fields():
    info = slimgrad.build_info()
    assert info["version"] == slimgrad.__version__
    assert info["isa_active"] == slimgrad.active_isa()
    assert "scalar" in info["isas_built"]
    assert set(info["isas_available"]) <= set(info["isas_built"])
    assert isinstance(info["openmp"], bool)
    assert info["threads"] == slimgrad.get_num_threads()


def test_info_command_prints_build():
    out = subprocess.run([sys.executable, "-m", "slimgrad", "info"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert slimgrad.__version__ in out.stdout
    assert "isa_active" in out.stdout


def _cpu_flags() -> set[str]:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def test_vnni_is_an_isa_level():
    """VNNI is a level of isa.cpp (not a hidden cpuid probe): listed when the
    CPU has it, selectable, and use_isa("avx512") still reaches plain AVX-512."""
    flags = _cpu_flags()
    have = slimgrad.available_isas()
    if "avx512" in have and "avx512_vnni" in flags:
        assert "avx512_vnni" in have
        top = "avx512_bf16" if "avx512_bf16" in flags else "avx512_vnni"
        assert have[-1] == ("amx" if "amx" in have else top)
        assert slimgrad.active_isa() in have
        with slimgrad.use_isa("avx512"):
            assert slimgrad.active_isa() == "avx512"
        with slimgrad.use_isa("avx512_vnni"):
            assert slimgrad.active_isa() == "avx512_vnni"
    elif flags:
        assert "avx512_vnni" not in have


def test_bf16_is_an_isa_level():
    """AVX512_BF16 (vdpbf16ps, Muon's bfloat16 GEMM) is the level above VNNI:
    listed when the CPU has both, selectable, and use_isa("avx512_vnni")
    still reaches the conversion + FMA path; SLIMGRAD_ISA selects it."""
    flags = _cpu_flags()
    have = slimgrad.available_isas()
    if "avx512_vnni" in have and "avx512_bf16" in flags:
        assert have[-1] == ("amx" if "amx" in have else "avx512_bf16")
        with slimgrad.use_isa("avx512_vnni"):
            assert slimgrad.active_isa() == "avx512_vnni"
        with slimgrad.use_isa("avx512_bf16"):
            assert slimgrad.active_isa() == "avx512_bf16"
        out = _import_with_env("avx512_bf16")
        assert out.returncode == 0, out.stderr
        assert out.stdout.strip() == "avx512_bf16"
    elif flags:
        assert "avx512_bf16" not in have


def test_amx_is_an_isa_level():
    """AMX (tile registers, int8 and bfloat16 tile products) is the level
    above avx512_bf16: listed when the CPU has AMX-TILE, AMX-INT8 and AMX-BF16
    and Linux grants the tile state, selectable, and use_isa("avx512_bf16")
    still reaches the VNNI path; SLIMGRAD_ISA selects it."""
    flags = _cpu_flags()
    have = slimgrad.available_isas()
    amx_flags = {"amx_tile", "amx_int8", "amx_bf16"} <= flags
    if "avx512_bf16" in have and amx_flags:
        assert have[-1] == "amx"
        with slimgrad.use_isa("avx512_bf16"):
            assert slimgrad.active_isa() == "avx512_bf16"
        out = _import_with_env("amx")
        assert out.returncode == 0, out.stderr
        assert out.stdout.strip() == "amx"
    elif flags and not amx_flags:
        assert "amx" not in have


def _openmp_spin(env: dict[str, str]) -> tuple[str, str]:
    """(the spin count libgomp reports when slimgrad loads it, OMP_WAIT_POLICY
    after the import) in a fresh process with ``env`` added."""
    clean = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    clean["OMP_DISPLAY_ENV"] = "VERBOSE"  # libgomp prints its settings on stderr when loaded
    code = "import os, slimgrad; print(os.environ.get('OMP_WAIT_POLICY'))"
    run = subprocess.run(
        [sys.executable, "-c", code], env={**clean, **env}, capture_output=True, text=True
    )
    assert run.returncode == 0, run.stderr
    shown = [
        line.split("=")[1].strip(" '")
        for line in run.stderr.splitlines()
        if "GOMP_SPINCOUNT" in line
    ]
    return shown[0] if shown else "", run.stdout.strip()


@pytest.mark.skipif(not slimgrad.build_info()["openmp"], reason="serial build: no OpenMP runtime")
def test_openmp_team_waits_passively_unless_the_user_chose():
    spin, after = _openmp_spin({})
    if not spin:
        pytest.skip("this OpenMP runtime does not print GOMP_SPINCOUNT (not libgomp)")
    assert (spin, after) == ("0", "None")  # passive, set for our import only
    # the user's choice wins (libgomp's default spin count is 300000)
    assert _openmp_spin({"OMP_WAIT_POLICY": "active"})[1] == "active"
    assert _openmp_spin({"OMP_WAIT_POLICY": "active"})[0] != "0"
    assert _openmp_spin({"GOMP_SPINCOUNT": "1000"}) == ("1000", "None")


# ------------------------------------------------ output cache (outputs.hpp)
def test_output_cache_reuses_a_freed_block_of_the_same_size():
    import numpy as np
    from slimgrad import _core, nn, prune

    _core.release_cached_outputs()
    a = _core.empty((512, 1024), np.float32)  # 2 MiB: through the cache
    assert a.shape == (512, 1024) and a.dtype == np.float32
    assert a.flags["C_CONTIGUOUS"] and a.flags["WRITEABLE"]
    assert _core.empty((7, 3), "int8").base is None  # small: a plain NumPy array
    addr = a.ctypes.data
    view = a[:3]
    del a
    assert _core.cached_output_bytes() == 0  # the view keeps the block alive
    b = _core.empty((512, 1024), np.float32)
    assert b.ctypes.data != addr
    del view
    assert _core.cached_output_bytes() == 2 << 20
    c = _core.empty((1024, 512), np.int32)  # same bytes, other dtype and shape
    assert c.ctypes.data == addr and _core.cached_output_bytes() == 0
    del b, c
    assert slimgrad.cached_output_bytes() == 4 << 20
    slimgrad.release_cached_outputs()
    assert slimgrad.cached_output_bytes() == 0

    # The library's outputs take it: a mask, a BatchNorm forward.
    w = np.random.default_rng(0).standard_normal((1024, 2048)).astype(np.float32)
    m1 = prune.magnitude_mask(w, 0.5)
    first, expected = m1.ctypes.data, m1.copy()
    del m1
    m2 = prune.magnitude_mask(w, 0.5)
    assert m2.ctypes.data == first
    np.testing.assert_array_equal(m2, expected)
    bn = nn.BatchNorm1d(2048)
    y1 = bn.forward(w)
    y_addr = y1.ctypes.data
    del y1
    bn._y = None  # the module's own reference to its output
    assert bn.forward(w).ctypes.data == y_addr


def _vm_flags(addr: int) -> list[str] | None:
    """The VmFlags of the mapping holding ``addr`` (Linux /proc/self/smaps)."""
    inside = False
    with open("/proc/self/smaps") as f:
        for line in f:
            head = line.split()[0] if line.strip() else ""
            if "-" in head and not head.endswith(":"):
                lo, hi = (int(v, 16) for v in head.split("-"))
                inside = lo <= addr < hi
            elif inside and head == "VmFlags:":
                return line.split()[1:]
    return None


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="huge-page advice is Linux only")
def test_output_cache_asks_large_blocks_for_huge_pages():
    import numpy as np
    from slimgrad import _core

    _core.release_cached_outputs()
    big = _core.empty((1 << 20,), np.float32)  # 4 MiB: 2 MiB aligned and advised
    below = _core.empty(((1 << 20) - 1024,), np.float32)  # 4 MiB - 4 KiB: plain pages
    assert big.ctypes.data % (2 << 20) == 0
    assert below.ctypes.data % 64 == 0
    # MADV_HUGEPAGE on its mapping, where the kernel has transparent huge pages
    # ("below" may share NumPy's advised heap: not checked)
    if os.path.exists("/sys/kernel/mm/transparent_hugepage/enabled"):
        assert "hg" in (_vm_flags(big.ctypes.data) or [])
    addr = big.ctypes.data
    del big
    again = _core.empty((1024, 1024), np.int32)  # the same block, reused
    assert again.ctypes.data == addr
    again[...] = 7  # fully writable
    assert int(again.sum()) == 7 << 20


def test_output_cache_limit_from_the_environment():
    code = (
        "import numpy as np, slimgrad; from slimgrad import _core\n"
        "a = _core.empty((1 << 20,), np.float32); del a\n"
        "print(_core.cached_output_bytes())"
    )
    env = dict(os.environ)
    for value, expected in (("0", "0"), ("1", "0"), ("8", str(4 << 20))):
        env["SLIMGRAD_OUTPUT_CACHE_MB"] = value
        out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
        assert out.returncode == 0, out.stderr
        assert out.stdout.strip() == expected, value
    env["SLIMGRAD_OUTPUT_CACHE_MB"] = "lots"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.returncode != 0
    assert "SLIMGRAD_OUTPUT_CACHE_MB: expected a whole number of MiB, got 'lots'" in out.stderr
