"""ISA tiers: they agree with each other, each is deterministic, forcing a bad tier fails cleanly."""

import os
import subprocess
import sys

import numpy as np
import pytest

import rmsnorm_cpu as rn
from helpers import FLOAT_DTYPES, assert_matches_reference, store_policy
from rmsnorm_cpu import _runtime

TIERS = _runtime.build_info()["isa_supported"]


def _on_tier(tier, fn, extensions=True):
    previous = _runtime.set_isa(tier, extensions)
    try:
        return fn()
    finally:
        _runtime.set_isa(previous)


def _cases(rng, dtype):
    """Results of every kernel family (row, column, llama, add, backward) for one dtype."""
    x = rng.standard_normal((5, 1037)).astype(dtype)
    r = rng.standard_normal((5, 1037)).astype(dtype)
    w = rng.uniform(0.5, 1.5, 1037).astype(np.float32)
    b = rng.standard_normal(1037).astype(np.float32)
    nchw = rng.standard_normal((2, 96, 7, 11)).astype(dtype)

    def run():
        return {
            "row": rn.rms_norm(x, w, b),
            "llama": rn.rms_norm(x, w, cast_mode="llama"),
            "cols": rn.rms_norm(nchw, axis=1),
            "add": rn.add_rms_norm(x, r, w)[0],
            "dx": rn.rms_norm_backward(r, x, w)[0],
        }
    return run


@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=str)
def test_tiers_agree_within_tolerance(rng, dtype):
    """Tiers differ only in the order of the sum of squares: each is within the
    reference bound (helpers.assert_matches_reference), so two tiers are within
    twice that bound of each other."""
    run = _cases(rng, dtype)
    results = {tier: _on_tier(tier, run) for tier in TIERS}
    base = results["scalar"]
    for tier in TIERS:
        for name, y in results[tier].items():
            ref = base[name].astype(np.float64)
            n = 96 if name == "cols" else 1037
            scale = 2 * np.maximum(np.abs(ref), 4.0)  # |x * rstd| <= sqrt(n); dx terms of order 1
            assert_matches_reference(y, ref, scale, n, dtype)


@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=str)
@pytest.mark.parametrize("tier", TIERS)
def test_each_tier_is_bitwise_deterministic(rng, dtype, tier):
    run = _cases(rng, dtype)
    first, again = _on_tier(tier, run), _on_tier(tier, run)
    for name in first:
        np.testing.assert_array_equal(first[name].view(np.uint8), again[name].view(np.uint8), err_msg=name)
    big = rng.standard_normal((64, 4099)).astype(dtype)  # above the one-thread threshold
    one = _on_tier(tier, lambda: rn.rms_norm(big, n_threads=1))
    two = _on_tier(tier, lambda: rn.rms_norm(big, n_threads=2))
    np.testing.assert_array_equal(one.view(np.uint8), two.view(np.uint8))


@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=str)
@pytest.mark.parametrize("tier", TIERS)
def test_streamed_output_is_the_same(rng, dtype, tier):
    """Outputs (y of the forward and of the fused add, dx) of 32 MiB and more,
    in memory, written with non-temporal stores; rows of odd length start at
    every alignment, so the aligned head is exercised."""
    dtype = np.dtype(dtype)
    rows = (32 << 20) // (4099 * dtype.itemsize) + 1
    x = rng.standard_normal((rows, 4099), dtype=np.float32).astype(dtype)
    w = rng.uniform(0.5, 1.5, 4099).astype(np.float32)
    r = x[::-1]  # a residual / a dy
    y, y_add, ro, dx = (np.ones_like(x) for _ in range(4))
    with store_policy(1):
        _on_tier(tier, lambda: rn.rms_norm(x, w, out=y, n_threads=1))
        _on_tier(tier, lambda: rn.add_rms_norm(x, r, w, out=y_add, residual_out=ro, n_threads=1))
        _on_tier(tier, lambda: rn.rms_norm_backward(r, x, w, dx_out=dx, n_threads=1))
    for i in (0, 1, 2, 3, rows // 2, rows - 1):
        row = slice(i, i + 1)
        for big, alone in [(y, lambda: rn.rms_norm(x[row], w)), (y_add, lambda: rn.add_rms_norm(x[row], r[row], w)[0]),
                           (dx, lambda: rn.rms_norm_backward(r[row], x[row], w)[0])]:
            np.testing.assert_array_equal(big[row].view(np.uint8), _on_tier(tier, alone).view(np.uint8))


def test_unknown_isa_at_import_names_the_choices():
    env = dict(os.environ, RMSNORM_CPU_ISA="bogus")
    proc = subprocess.run([sys.executable, "-c", "import rmsnorm_cpu"], env=env, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode != 0
    assert "RuntimeError" in proc.stderr
    assert "valid choices: scalar, avx2, avx512, neon" in proc.stderr


def test_isa_env_errors():
    from rmsnorm_cpu import _runtime
    with pytest.raises(RuntimeError, match="valid choices"):
        _runtime.set_isa("sse9")
    missing = [t for t in _runtime.TIER_NAMES if t not in _runtime.build_info()["isa_supported"]]
    for tier in missing:
        with pytest.raises(RuntimeError, match=tier):
            _runtime.set_isa(tier)


@pytest.mark.parametrize("tier", TIERS)
def test_forced_tier_at_import(tier):
    env = dict(os.environ, RMSNORM_CPU_ISA=tier)
    code = "import rmsnorm_cpu as rn; print(rn.config()['isa'])"
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == tier


@pytest.mark.skipif("avx512_bf16" not in _runtime.build_info()["isa_extensions"],
                    reason="the tier in use has no AVX512-BF16 extension on this CPU")
@pytest.mark.parametrize("case", ["forward", "backward"])
def test_bf16_extension_gives_the_integer_rounding_bits(rng, case):
    """VCVTNEPS2BF16 flushes subnormal inputs; the avx512bf16 kernels take those
    lanes from the integer rounding, so every bfloat16 output, NaN payloads,
    infinities, ties and subnormals included, has the avx512 kernels' bits.
    A row of ones with eps=0 has rstd exactly 1, so y is the weight rounded."""
    bf16 = pytest.importorskip("ml_dtypes").bfloat16
    bits = rng.integers(0, 2**32, 4096, dtype=np.uint64).astype(np.uint32)
    special = np.array([0x00000001, 0x00400000, 0x007fffff, 0x80000001, 0x00800000, 0x3f808000, 0x3f818000,
                        0x7f7fffff, 0x7f7f8000, 0x7f800000, 0xff800000, 0x7f800001, 0x7fc00001, 0xffa5a5a5,
                        0x00008000, 0x00018000], np.uint32)
    w = np.concatenate([special, bits]).view(np.float32)
    if case == "forward":
        x = np.ones((3, w.size), np.float32)

        def run():
            return rn.rms_norm(x, w, eps=0.0, dtype="bfloat16")
    else:
        x = rng.standard_normal((3, w.size)).astype(bf16)
        dy = (rng.standard_normal((3, w.size)) * 1e-38).astype(bf16)  # subnormal gradients

        def run():
            return rn.rms_norm_backward(dy, x, np.where(np.isfinite(w), w, 1.0).astype(np.float32))[0]

    with np.errstate(all="ignore"):
        integer = _on_tier("avx512", run, extensions=False)
        hardware = _on_tier("avx512", run)
    assert rn.config()["isa_extensions"] == ["avx512_bf16"]
    np.testing.assert_array_equal(hardware.view(np.uint16), integer.view(np.uint16))
