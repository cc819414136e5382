"""rms_norm against the float64 reference, on every ISA tier."""

import numpy as np
import pytest

import rmsnorm_cpu as rn
from helpers import BF16, FLOAT_DTYPES, assert_matches_reference
from reference import rms_ref

pytestmark = pytest.mark.usefixtures("isa")

TAIL_LENGTHS = list(range(1, 68)) + [127, 128, 129, 4095, 4096, 4097]


def _data(rng, shape, dtype, scale=1.0):
    return (rng.standard_normal(shape) * scale).astype(dtype)


def check(x, *args, n=None, **kw):
    y = rn.rms_norm(x, *args, **kw)
    ref_kw = {k: v for k, v in kw.items() if k in ("axis", "eps", "groups", "eps_mode", "weight_offset")}
    ref, _, scale = rms_ref(x, *args, **ref_kw)
    assert_matches_reference(y, ref, scale, n or x.shape[-1], x.dtype)
    return y


@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=str)
def test_tail_lengths(rng, dtype):
    for n in TAIL_LENGTHS:
        x = _data(rng, (3, n), dtype)
        w = rng.uniform(0.5, 1.5, n).astype(np.float32)
        check(x, w, n=n)


@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=str)
@pytest.mark.parametrize("eps_mode", ["sqrt", "add", "clamp"])
def test_modes_weight_bias_offset(rng, dtype, eps_mode):
    x = _data(rng, (5, 300), dtype, scale=0.01)
    w = rng.standard_normal(300)
    b = rng.standard_normal(300).astype(np.float32)
    check(x, w, b, eps=1e-3, eps_mode=eps_mode, weight_offset=1.0)


@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=str)
def test_axes_groups_layouts(rng, dtype):
    x = _data(rng, (2, 64, 5, 3), dtype)
    check(x, axis=1, n=64)                                    # NCHW channels: column kernel
    check(x, np.ones(64), axis=1, groups=8, n=8)              # GroupNorm-style
    check(x, axis=(-2, -1), n=15)
    check(x, axis=(3, 1), n=192)                              # a set, any order; non-adjacent axes
    check(x, axis=(0, 1, 2, 3), groups=4, n=480)
    check(np.asfortranarray(x[0, :, :, 0]), axis=-1, n=5)     # Fortran order: columns
    check(x[:, ::-2, :, ::-1], axis=1, n=32)                  # negative strides
    check(x[..., ::2], axis=-1, n=2)                          # strided last axis
    check(x.transpose(0, 2, 3, 1), axis=-1, n=64)             # channels-last view of NCHW


@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=str)
def test_column_chunks_follow_the_output_alignment(rng, dtype):
    """The column kernel's chunks of positions start where y meets a cache
    line; any offset of y (and streamed output: 40 MiB) gives the same bits."""
    x = _data(rng, (2, 8, 600), dtype)
    expected = rn.rms_norm(x, axis=1)
    for offset in range(0, 64 // x.itemsize + 1):
        buf = np.empty(x.size + offset, dtype)
        y = buf[offset:].reshape(x.shape)
        rn.rms_norm(x, axis=1, out=y)
        np.testing.assert_array_equal(y.view(np.uint8), expected.view(np.uint8))
    big = _data(rng, (1, 16, 655360 // x.itemsize), dtype)  # x + y: 40 MiB, so y is streamed
    out = np.empty(big.size + 3, dtype)[3:].reshape(big.shape)
    rn.rms_norm(big, axis=1, out=out)
    np.testing.assert_array_equal(out.view(np.uint8), rn.rms_norm(big, axis=1).view(np.uint8))


@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=str)
def test_streamed_rows_any_output_offset(rng, dtype):
    """Outputs of calls over the last-level cache are streamed, their partial
    lines by 16- and 4-byte pieces or plain stores: same bits at any offset."""
    x = _data(rng, (20, (1 << 20) // np.dtype(dtype).itemsize + 3), dtype)  # x + y: 40 MiB
    expected = rn.rms_norm(x)
    for offset in (1, 3, 16 // x.itemsize):
        out = np.empty(x.size + offset, dtype)[offset:].reshape(x.shape)
        rn.rms_norm(x, out=out)
        np.testing.assert_array_equal(out.view(np.uint8), expected.view(np.uint8))


def test_axis_empty_tuple_and_0d():
    x = np.array(-3.0)
    y = rn.rms_norm(x, axis=(), eps=0.0)
    assert y.shape == () and y == -1.0
    y = rn.rms_norm(np.array([2.0, -0.5]), axis=(), eps=0.0)
    np.testing.assert_array_equal(y, [1.0, -1.0])


@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=str)
def test_out_and_in_place(rng, dtype):
    x = _data(rng, (7, 33), dtype)
    expected = rn.rms_norm(x)
    out = np.empty_like(x, order="F")
    assert rn.rms_norm(x, out=out) is out
    np.testing.assert_array_equal(out, expected)
    xc = x.copy()
    assert rn.rms_norm(xc, out=xc) is xc
    np.testing.assert_array_equal(xc, expected)
    big = np.zeros((7, 66), dtype)
    rn.rms_norm(x, out=big[:, ::2])
    np.testing.assert_array_equal(big[:, ::2], expected)
    assert not big[:, 1::2].any()


def test_output_dtype(rng):
    x = _data(rng, (4, 257), np.float32)
    check(x, dtype=np.float16, n=257)
    x16 = _data(rng, (4, 257), np.float16)
    y = rn.rms_norm(x16, dtype=np.float32)
    assert y.dtype == np.float32
    ref, _, scale = rms_ref(x16)
    assert_matches_reference(y, ref, scale, 257)
    y = rn.rms_norm(x16, np.ones(257, np.float64), dtype="float64")
    assert y.dtype == np.float64
    assert_matches_reference(y, ref, scale, 257)


def test_integer_input_upcasts():
    y = rn.rms_norm(np.array([[3, 4]]), eps=0.0)
    assert y.dtype == np.float64
    np.testing.assert_allclose(y, [[3 / np.sqrt(12.5), 4 / np.sqrt(12.5)]])


@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=str)
def test_zero_rows(dtype):
    x = np.zeros((2, 17), dtype)
    np.testing.assert_array_equal(rn.rms_norm(x).astype(np.float64), 0.0)
    assert np.isnan(rn.rms_norm(x, eps=0.0).astype(np.float64)).all()
    for mode in ("add", "clamp"):
        assert np.isnan(rn.rms_norm(x, eps=0.0, eps_mode=mode).astype(np.float64)).all()
        np.testing.assert_array_equal(rn.rms_norm(x, eps_mode=mode).astype(np.float64), 0.0)


def test_no_spurious_overflow_or_underflow():
    np.testing.assert_allclose(rn.rms_norm(np.full(8, 1e30, np.float32)), 1.0, rtol=2e-7)
    np.testing.assert_allclose(rn.rms_norm(np.full(8, 6e4, np.float16)).astype(np.float32), 1.0)
    np.testing.assert_allclose(rn.rms_norm(np.full(8, 1e200), eps=0.0), 1.0, rtol=1e-15)
    tiny32 = np.array([1e-42, -2e-42, 3e-42], np.float32)  # float32 subnormals
    ref, _, scale = rms_ref(tiny32, eps=0.0)
    assert_matches_reference(rn.rms_norm(tiny32, eps=0.0), ref, scale, 3)
    tiny64 = np.array([1e-300, -2e-300, 5e-310])
    ref, _, scale = rms_ref(tiny64, eps=0.0)
    assert_matches_reference(rn.rms_norm(tiny64, eps=0.0), ref, scale, 3)
    x = np.array([[3e19, 4e19], [3.0, 4.0]], np.float32)
    np.testing.assert_allclose(rn.rms_norm(x, eps=0.0), [[0.8485281, 1.1313709]] * 2, rtol=1e-6)


@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=str)
def test_nan_inf_rows_isolated(rng, dtype):
    x = _data(rng, (4, 37), dtype)
    x[1, 5] = np.nan
    x[2, 7] = np.inf
    y = rn.rms_norm(x).astype(np.float64)
    assert np.isnan(y[1]).all()
    assert np.isnan(y[2, 7]) and (y[2, np.arange(37) != 7] == 0).all()
    np.testing.assert_array_equal(y[[0, 3]], rn.rms_norm(x[[0, 3]]).astype(np.float64))
    assert np.isfinite(y[[0, 3]]).all()


def test_zero_size():
    for shape, axis in [((0, 8), -1), ((3, 0), -1), ((2, 0, 4), 1)]:
        x = np.zeros(shape, np.float32)
        y, rstd = rn.rms_norm(x, axis=axis, return_rstd=True)
        assert y.shape == shape
        assert rstd.shape == tuple(s for i, s in enumerate(shape) if i != axis % len(shape)) + (1,)
        assert np.isnan(rstd).all()


@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=str)
def test_row_invariance_bitwise(rng, dtype):
    row = _data(rng, (1, 4099), dtype)
    batch = _data(rng, (1000, 4099), dtype)
    batch[637] = row[0]
    alone = rn.rms_norm(row)
    np.testing.assert_array_equal(rn.rms_norm(batch)[637:638].view(np.uint8), alone.view(np.uint8))
    np.testing.assert_array_equal(rn.rms_norm(batch[637:])[0:1].view(np.uint8), alone.view(np.uint8))
    np.testing.assert_array_equal(rn.rms_norm(batch, n_threads=1)[637:638].view(np.uint8), alone.view(np.uint8))


@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=str)
@pytest.mark.parametrize("n", [1, 7, 17, 64, 100])
def test_row_blocks_bitwise(rng, dtype, n):
    """Short rows run in blocks, one kernel call a block: each row's bits are
    its own, whatever its block, the batch stride, or the path."""
    x = _data(rng, (700, n), dtype)
    w = rng.uniform(0.5, 1.5, n).astype(np.float64 if dtype == np.float64 else np.float32)
    alone = np.concatenate([rn.rms_norm(x[i:i + 1], w) for i in range(0, 700, 37)])
    for y in (rn.rms_norm(x, w), rn.rms_norm(x, w, weight_offset=0), rn.rms_norm(x, w, out=np.empty_like(x))):
        np.testing.assert_array_equal(y[::37].view(np.uint8), alone.view(np.uint8))
    strided = np.repeat(x, 2, axis=0)[::2]  # rows 2n apart
    y, rstd = rn.rms_norm(strided, w, return_rstd=True, weight_offset=0)
    np.testing.assert_array_equal(y[::37].view(np.uint8), alone.view(np.uint8))
    np.testing.assert_array_equal(rstd, rn.rms_norm(x, w, return_rstd=True)[1])


@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=str)
def test_stores_plain_or_streamed_same_bits(rng, dtype):
    """Both kinds of stores the store policy may pick (here forced for small
    arrays) write the same bits, for every op and any output offset."""
    from rmsnorm_cpu import _runtime
    x = _data(rng, (5, 1000), dtype)
    r = _data(rng, (5, 1000), dtype)
    w = rng.uniform(0.5, 1.5, 1000).astype(np.float64 if dtype == np.float64 else np.float32)
    expected = rn.rms_norm(x, w), rn.add_rms_norm(x, r, w), rn.rms_norm_backward(r, x, w)[0]
    previous = _runtime._set_store_policy(0, 0, 1)
    try:
        for choice in (0, 1):
            _runtime._set_store_policy(0, 0, choice)
            for offset in (0, 1, 3):
                outs = [np.empty(x.size + offset, dtype)[offset:].reshape(x.shape) for _ in range(3)]
                rn.rms_norm(x, w, out=outs[0], weight_offset=0)
                rn.add_rms_norm(x, r, w, out=outs[1], residual_out=outs[2], weight_offset=0)
                np.testing.assert_array_equal(outs[0].view(np.uint8), expected[0].view(np.uint8))
                np.testing.assert_array_equal(outs[1].view(np.uint8), expected[1][0].view(np.uint8))
                np.testing.assert_array_equal(outs[2].view(np.uint8), expected[1][1].view(np.uint8))
                rn.rms_norm_backward(r, x, w, dx_out=outs[0])
                np.testing.assert_array_equal(outs[0].view(np.uint8), expected[2].view(np.uint8))
    finally:
        _runtime._set_store_policy(*previous)


def test_store_policy_tries_both_then_keeps_one(rng):
    from rmsnorm_cpu import _runtime
    x = _data(rng, (4, 1024), np.float32)
    out = np.empty_like(x)
    previous = _runtime._set_store_policy(0, 0)
    try:
        assert rn.config()["stream_stores"] == "trying"
        for _ in range(6):
            rn.rms_norm(x, out=out, weight_offset=0)
        assert rn.config()["stream_stores"] in ("plain", "non-temporal")
    finally:
        _runtime._set_store_policy(*previous)


def test_rstd(rng):
    x = _data(rng, (3, 4, 64), np.float32)
    y, rstd = rn.rms_norm(x, groups=4, return_rstd=True)
    assert rstd.shape == (3, 4, 4) and rstd.dtype == np.float32
    _, ref_rstd, _ = rms_ref(x, groups=4)
    np.testing.assert_allclose(rstd, ref_rstd, rtol=1e-6)
    _, rstd64 = rn.rms_norm(x.astype(np.float64), axis=1, return_rstd=True)
    assert rstd64.shape == (3, 64, 1) and rstd64.dtype == np.float64


def test_llama_cast_mode_matches_hf_formula(rng):
    x = _data(rng, (6, 515), np.float16, scale=3.0)
    w = rng.uniform(0.5, 2.0, 515).astype(np.float16)
    y = rn.rms_norm(x, w, cast_mode="llama")
    # LlamaRMSNorm: hs = x.float(); hs *= rsqrt(mean(hs^2) + eps); weight * hs.to(float16)
    hs = x.astype(np.float32)
    t = (hs * (1.0 / np.sqrt((hs.astype(np.float64) ** 2).mean(-1, keepdims=True) + 1e-6))).astype(np.float16)
    expected = (w.astype(np.float32) * t.astype(np.float32)).astype(np.float16)
    diff = np.abs(y.astype(np.float64) - expected.astype(np.float64))
    # t may differ by one float16 ulp where x * rstd lands near a tie.
    assert (diff <= 2 * np.spacing(np.abs(expected)).astype(np.float64)).all()
    assert (diff == 0).mean() > 0.99
    for dtype in (np.float32, np.float64):
        xf = x.astype(dtype)
        np.testing.assert_array_equal(rn.rms_norm(xf, w, cast_mode="llama"), rn.rms_norm(xf, w))


@pytest.mark.skipif(BF16 is None, reason="ml_dtypes not installed")
def test_bfloat16_rounding_keeps_subnormals():
    x = np.array([1e-39, 2e-39, -3e-39], np.float32)  # float32 subnormals, exact in bfloat16? close
    xb = x.astype(BF16)
    y = rn.rms_norm(xb, np.float32(1e-38), eps=0.0)
    expected = (rms_ref(xb, eps=0.0)[0] * 1e-38).astype(np.float32).astype(BF16)
    assert (np.abs(y.astype(np.float64) - expected.astype(np.float64)) <= 2.0**-133).all()
    assert (y.astype(np.float32) != 0).all()
