"""rms_norm and output_spec: numerics against the float64 reference on every ISA tier,
layouts, the short path for the common call, and errors."""

import numpy as np
import pytest
from numpy.exceptions import AxisError

import rmsnorm_cpu as rn
from helpers import BF16, FLOAT_DTYPES, assert_matches_reference, readme_table_rows, store_policy, X
from reference import rms_ref

TAIL_LENGTHS = list(range(1, 68)) + [127, 128, 129, 4095, 4096, 4097]


def _data(rng, shape, dtype, scale=1.0):
    return (rng.standard_normal(shape) * scale).astype(dtype)


def check(x, *args, n=None, **kw):
    y = rn.rms_norm(x, *args, **kw)
    ref_kw = {k: v for k, v in kw.items() if k in ("axis", "eps", "groups", "eps_mode", "weight_offset")}
    ref, _, scale = rms_ref(x, *args, **ref_kw)
    assert_matches_reference(y, ref, scale, n or x.shape[-1], x.dtype)
    return y


@pytest.mark.usefixtures("isa")
@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=str)
def test_tail_lengths(rng, dtype):
    for n in TAIL_LENGTHS:
        x = _data(rng, (3, n), dtype)
        w = rng.uniform(0.5, 1.5, n).astype(np.float32)
        check(x, w, n=n)


@pytest.mark.usefixtures("isa")
@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=str)
@pytest.mark.parametrize("eps_mode", ["sqrt", "add", "clamp"])
def test_modes_weight_bias_offset(rng, dtype, eps_mode):
    x = _data(rng, (5, 300), dtype, scale=0.01)
    w = rng.standard_normal(300)
    b = rng.standard_normal(300).astype(np.float32)
    check(x, w, b, eps=1e-3, eps_mode=eps_mode, weight_offset=1.0)


@pytest.mark.usefixtures("isa")
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


@pytest.mark.usefixtures("isa")
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
    out = np.ones(big.size + 3, dtype)[3:].reshape(big.shape)  # written before: in memory
    with store_policy(1):
        rn.rms_norm(big, axis=1, out=out)
    np.testing.assert_array_equal(out.view(np.uint8), rn.rms_norm(big, axis=1).view(np.uint8))


@pytest.mark.usefixtures("isa")
@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=str)
def test_streamed_rows_any_output_offset(rng, dtype):
    """Outputs of calls over the last-level cache are streamed, their partial
    lines by 16- and 4-byte pieces or plain stores: same bits at any offset."""
    x = _data(rng, (20, (1 << 20) // np.dtype(dtype).itemsize + 3), dtype)  # x + y: 40 MiB
    expected = rn.rms_norm(x)
    for offset in (1, 3, 16 // x.itemsize):
        out = np.ones(x.size + offset, dtype)[offset:].reshape(x.shape)  # written before: in memory
        with store_policy(1):
            rn.rms_norm(x, out=out)
        np.testing.assert_array_equal(out.view(np.uint8), expected.view(np.uint8))


@pytest.mark.usefixtures("isa")
def test_axis_empty_tuple_and_0d():
    x = np.array(-3.0)
    y = rn.rms_norm(x, axis=(), eps=0.0)
    assert y.shape == () and y == -1.0
    y = rn.rms_norm(np.array([2.0, -0.5]), axis=(), eps=0.0)
    np.testing.assert_array_equal(y, [1.0, -1.0])


@pytest.mark.usefixtures("isa")
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


@pytest.mark.usefixtures("isa")
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


@pytest.mark.usefixtures("isa")
def test_integer_input_upcasts():
    y = rn.rms_norm(np.array([[3, 4]]), eps=0.0)
    assert y.dtype == np.float64
    np.testing.assert_allclose(y, [[3 / np.sqrt(12.5), 4 / np.sqrt(12.5)]])


@pytest.mark.usefixtures("isa")
@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=str)
def test_zero_rows(dtype):
    x = np.zeros((2, 17), dtype)
    np.testing.assert_array_equal(rn.rms_norm(x).astype(np.float64), 0.0)
    assert np.isnan(rn.rms_norm(x, eps=0.0).astype(np.float64)).all()
    for mode in ("add", "clamp"):
        assert np.isnan(rn.rms_norm(x, eps=0.0, eps_mode=mode).astype(np.float64)).all()
        np.testing.assert_array_equal(rn.rms_norm(x, eps_mode=mode).astype(np.float64), 0.0)


@pytest.mark.usefixtures("isa")
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


@pytest.mark.usefixtures("isa")
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


@pytest.mark.usefixtures("isa")
def test_zero_size():
    for shape, axis in [((0, 8), -1), ((3, 0), -1), ((2, 0, 4), 1)]:
        x = np.zeros(shape, np.float32)
        y, rstd = rn.rms_norm(x, axis=axis, return_rstd=True)
        assert y.shape == shape
        assert rstd.shape == tuple(s for i, s in enumerate(shape) if i != axis % len(shape)) + (1,)
        assert np.isnan(rstd).all()


@pytest.mark.usefixtures("isa")
@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=str)
def test_row_invariance_bitwise(rng, dtype):
    row = _data(rng, (1, 4099), dtype)
    batch = _data(rng, (1000, 4099), dtype)
    batch[637] = row[0]
    alone = rn.rms_norm(row)
    np.testing.assert_array_equal(rn.rms_norm(batch)[637:638].view(np.uint8), alone.view(np.uint8))
    np.testing.assert_array_equal(rn.rms_norm(batch[637:])[0:1].view(np.uint8), alone.view(np.uint8))
    np.testing.assert_array_equal(rn.rms_norm(batch, n_threads=1)[637:638].view(np.uint8), alone.view(np.uint8))


@pytest.mark.usefixtures("isa")
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


@pytest.mark.usefixtures("isa")
@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=str)
def test_stores_plain_or_streamed_same_bits(rng, dtype):
    """Both kinds of stores the store policy may pick (here forced for small
    arrays) write the same bits, for every op and any output offset."""
    x = _data(rng, (5, 1000), dtype)
    r = _data(rng, (5, 1000), dtype)
    w = rng.uniform(0.5, 1.5, 1000).astype(np.float64 if dtype == np.float64 else np.float32)
    expected = rn.rms_norm(x, w), rn.add_rms_norm(x, r, w), rn.rms_norm_backward(r, x, w)[0]
    for choice in (0, 1):
        with store_policy(choice, 0, 0):
            for offset in (0, 1, 3):
                outs = [np.ones(x.size + offset, dtype)[offset:].reshape(x.shape) for _ in range(3)]
                rn.rms_norm(x, w, out=outs[0], weight_offset=0)
                rn.add_rms_norm(x, r, w, out=outs[1], residual_out=outs[2], weight_offset=0)
                np.testing.assert_array_equal(outs[0].view(np.uint8), expected[0].view(np.uint8))
                np.testing.assert_array_equal(outs[1].view(np.uint8), expected[1][0].view(np.uint8))
                np.testing.assert_array_equal(outs[2].view(np.uint8), expected[1][1].view(np.uint8))
                rn.rms_norm_backward(r, x, w, dx_out=outs[0])
                np.testing.assert_array_equal(outs[0].view(np.uint8), expected[2].view(np.uint8))


@pytest.mark.usefixtures("isa")
def test_store_policy_tries_both_then_keeps_one(rng):
    x = _data(rng, (4, 1024), np.float32)
    out = np.ones_like(x)
    with store_policy(-1, 0, 0):
        assert rn.config()["stream_stores"] == "trying"
        for _ in range(6):
            rn.rms_norm(x, out=out, weight_offset=0)
        assert rn.config()["stream_stores"] in ("plain", "non-temporal")


def test_store_policy_streams_only_into_pages_in_memory(rng):
    """Outputs whose pages are new (an out= never written, an output in a fresh
    mapping) are never streamed, so never trials; an output in memory is."""
    x = _data(rng, (1024, 9 << 10), np.float32)  # 36 MiB: a fresh mapping each np.empty
    with store_policy(-1, 0, 0):
        for _ in range(6):
            rn.rms_norm(x, out=np.empty_like(x), weight_offset=0)
            rn.rms_norm(x, weight_offset=0)
        assert rn.config()["stream_stores"] == "trying"
        out = np.ones_like(x)
        for _ in range(6):
            rn.rms_norm(x, out=out, weight_offset=0)
        assert rn.config()["stream_stores"] in ("plain", "non-temporal")


def test_short_rows_take_no_part_in_store_trials(rng):
    """Rows shorter than the minimum run stream (as one run per block) only
    once calls of longer rows chose non-temporal stores."""
    x = _data(rng, (256, 64), np.float32)
    out = np.ones_like(x)  # in memory: only its rows' length keeps it out of the trials
    with store_policy(-1, 0, 4096):
        for _ in range(6):
            rn.rms_norm(x, out=out, weight_offset=0)
        assert rn.config()["stream_stores"] == "trying"


@pytest.mark.usefixtures("isa")
def test_rstd(rng):
    x = _data(rng, (3, 4, 64), np.float32)
    y, rstd = rn.rms_norm(x, groups=4, return_rstd=True)
    assert rstd.shape == (3, 4, 4) and rstd.dtype == np.float32
    _, ref_rstd, _ = rms_ref(x, groups=4)
    np.testing.assert_allclose(rstd, ref_rstd, rtol=1e-6)
    _, rstd64 = rn.rms_norm(x.astype(np.float64), axis=1, return_rstd=True)
    assert rstd64.shape == (3, 64, 1) and rstd64.dtype == np.float64


@pytest.mark.usefixtures("isa")
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


@pytest.mark.usefixtures("isa")
@pytest.mark.skipif(BF16 is None, reason="ml_dtypes not installed")
def test_bfloat16_rounding_keeps_subnormals():
    x = np.array([1e-39, 2e-39, -3e-39], np.float32)  # float32 subnormals, exact in bfloat16? close
    xb = x.astype(BF16)
    y = rn.rms_norm(xb, np.float32(1e-38), eps=0.0)
    expected = (rms_ref(xb, eps=0.0)[0] * 1e-38).astype(np.float32).astype(BF16)
    assert (np.abs(y.astype(np.float64) - expected.astype(np.float64)) <= 2.0**-133).all()
    assert (y.astype(np.float32) != 0).all()


# ---- the short path: the common call, the same bits as the general path --------------------------

@pytest.mark.usefixtures("isa")
@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64] + ([BF16] if BF16 else []), ids=str)
@pytest.mark.parametrize("shape", [(1, 4096), (3, 5, 7), (17,)], ids=str)
def test_fast_path_is_the_general_path(rng, dtype, shape):
    x = rng.standard_normal(shape).astype(dtype)
    acc = np.float64 if dtype == np.float64 else np.float32
    for w in (None, rng.uniform(0.5, 1.5, shape[-1]).astype(acc), rng.uniform(0.5, 1.5, shape[-1])):
        fast = rn.rms_norm(x, w)
        general, general_rstd = rn.rms_norm(x, w, weight_offset=0, return_rstd=True)  # an int: not the fast path
        assert fast.dtype == x.dtype and fast.shape == x.shape
        np.testing.assert_array_equal(fast.view(np.uint8), general.view(np.uint8))
        fast, rstd = rn.rms_norm(x, w, return_rstd=True)
        assert rstd.dtype == general_rstd.dtype and rstd.shape == general_rstd.shape
        np.testing.assert_array_equal(fast.view(np.uint8), general.view(np.uint8))
        np.testing.assert_array_equal(rstd, general_rstd)
        out = np.empty_like(x)
        assert rn.rms_norm(x, w, out=out, n_threads=2) is out
        np.testing.assert_array_equal(out.view(np.uint8), general.view(np.uint8))
        inplace = x.copy()
        assert rn.rms_norm(inplace, w, out=inplace) is inplace
        np.testing.assert_array_equal(inplace.view(np.uint8), general.view(np.uint8))


@pytest.mark.usefixtures("isa")
def test_fast_path_out_edge_cases(rng):
    """out= on the fast path: what it cannot take goes to the general path,
    which gives the same numbers or the same errors."""
    x = rng.standard_normal((4, 8)).astype(np.float32)
    w = rng.uniform(0.5, 1.5, 8).astype(np.float32)
    expected = rn.rms_norm(x, w)
    strided = np.empty((4, 16), np.float32)[:, ::2]
    rn.rms_norm(x, w, out=strided)
    np.testing.assert_array_equal(strided, expected)
    buf = np.empty(40, np.float32)  # out's first row holds the weight
    buf[:8] = w
    out = buf[:32].reshape(4, 8)
    rn.rms_norm(x, out[0], out=out)
    np.testing.assert_array_equal(out, expected)
    buf = np.concatenate([x.ravel(), np.zeros(8, np.float32)])
    with pytest.raises(ValueError, match="partially overlaps"):
        rn.rms_norm(buf[:32].reshape(4, 8), w, out=buf[8:].reshape(4, 8))
    with pytest.raises(TypeError, match="out has dtype"):
        rn.rms_norm(x, w, out=np.empty((4, 8)))
    with pytest.raises(ValueError, match="out has shape"):
        rn.rms_norm(x, w, out=np.empty((8, 4), np.float32))
    with pytest.raises(ValueError, match="read-only"):
        rn.rms_norm(x, w, out=np.broadcast_to(np.empty(8, np.float32), (4, 8)))
    with pytest.raises(ValueError, match="n_threads"):
        rn.rms_norm(x, w, out=np.empty_like(x), n_threads=0)


@pytest.mark.usefixtures("isa")
def test_fast_path_keeps_validation(rng):
    x = rng.standard_normal((2, 8)).astype(np.float32)
    for kw, exc in [({"groups": True}, TypeError), ({"axis": True}, TypeError), ({"eps": float("nan")}, ValueError),
                    ({"eps": -1.0}, ValueError), ({"weight": np.ones(7, np.float32)}, ValueError),
                    ({"weight": np.ones((1, 8), np.float32)}, ValueError)]:
        with pytest.raises(exc):
            rn.rms_norm(x, **kw)
    # A strided row runs another kernel (SPEC: may differ in the last bits).
    np.testing.assert_allclose(rn.rms_norm(x[:, ::2]), rn.rms_norm(np.ascontiguousarray(x[:, ::2])), rtol=1e-6)
    assert rn.rms_norm(x.astype(">f4")).dtype == np.float32


@pytest.mark.usefixtures("isa")
@pytest.mark.skipif(BF16 is None, reason="ml_dtypes not installed")
def test_uint16_holds_bfloat16_bits(rng):
    xb = rng.standard_normal((3, 37)).astype(BF16)
    w = rng.uniform(0.5, 1.5, 37).astype(np.float32)
    expected = rn.rms_norm(xb, w).view(np.uint16)
    bits = xb.view(np.uint16)
    for dtype in ("bfloat16", BF16):
        y = rn.rms_norm(bits, w, dtype=dtype)
        assert y.dtype == np.uint16
        np.testing.assert_array_equal(y, expected)
    y, rstd = rn.rms_norm(bits, w, dtype="bfloat16", return_rstd=True)
    np.testing.assert_array_equal(y, expected)
    np.testing.assert_array_equal(rstd, rn.rms_norm(xb, w, return_rstd=True)[1])
    # The short path takes bits in uint16 only: a strided row goes the general way, same bits.
    np.testing.assert_array_equal(rn.rms_norm(np.repeat(bits, 2, axis=1)[:, ::2], w, dtype="bfloat16"), expected)
    out = np.empty_like(bits)
    assert rn.rms_norm(bits, w, dtype="bfloat16", out=out) is out
    np.testing.assert_array_equal(out, expected)
    with pytest.raises(TypeError, match="out"):
        rn.rms_norm(bits, w, dtype="bfloat16", out=np.empty((3, 37), BF16))
    # Without dtype="bfloat16" a uint16 array is integers, upcast as NumPy does.
    assert rn.rms_norm(bits).dtype == np.float64


@pytest.mark.usefixtures("isa")
def test_short_path_rstd_argument(rng):
    """_core.forward_rows writes rstd only into an array it can take whole; else None (general path)."""
    from rmsnorm_cpu import _core
    x = rng.standard_normal((3, 16)).astype(np.float32)
    expected_y, expected_rstd = rn.rms_norm(x, return_rstd=True, weight_offset=0)
    rstd = np.empty(3, np.float32)
    np.testing.assert_array_equal(_core.forward_rows(x, None, 1e-6, None, rstd), expected_y)
    np.testing.assert_array_equal(rstd, expected_rstd.ravel())
    for bad in (np.empty(3), np.empty(4, np.float32), np.empty(6, np.float32)[::2], x[0, :3]):
        assert _core.forward_rows(x, None, 1e-6, None, bad) is None
    assert _core.forward_rows(x, None, 1e-6, None, None, True) is None  # float32 is not bfloat16 bits


# ---- bad input: errors before anything is written ------------------------------------------------


BAD_CALLS = [
    # (id, kwargs for rms_norm(X, ...), exception, message fragment)
    ("complex x", dict(x=X.astype(np.complex64)), TypeError, "x must hold"),
    ("object x", dict(x=np.array([[1.0, "a"]], dtype=object)), TypeError, "x must hold"),
    ("string x", dict(x="abc"), TypeError, "x must hold"),
    ("axis out of range", dict(axis=2), AxisError, "axis"),
    ("duplicate axes", dict(axis=(1, -1)), ValueError, "repeated axis"),
    ("axis not int", dict(axis=1.0), TypeError, "axis"),
    ("weight wrong length", dict(weight=np.ones(5)), ValueError, "weight of shape"),
    ("weight extra dim", dict(weight=np.ones((1, 6))), ValueError, "weight of shape"),
    ("bias wrong shape", dict(bias=np.ones(4)), ValueError, "bias of shape"),
    ("complex weight", dict(weight=np.ones(6, np.complex64)), TypeError, "weight must hold"),
    ("negative eps", dict(eps=-1e-6), ValueError, "eps"),
    ("nan eps", dict(eps=float("nan")), ValueError, "eps"),
    ("inf eps", dict(eps=float("inf")), ValueError, "eps"),
    ("string eps", dict(eps="small"), ValueError, "eps"),
    ("None eps", dict(eps=None), ValueError, "eps"),
    ("groups not dividing", dict(groups=4), ValueError, "groups"),
    ("groups zero", dict(groups=0), ValueError, "groups"),
    ("groups float", dict(groups=2.0), TypeError, "groups"),
    ("unknown eps_mode", dict(eps_mode="mean"), ValueError, "eps_mode"),
    ("unknown cast_mode", dict(cast_mode="fast"), ValueError, "cast_mode"),
    ("integer dtype", dict(dtype=np.int32), TypeError, "dtype"),
    ("nonsense dtype", dict(dtype="nonsense"), TypeError, "dtype"),
    ("n_threads zero", dict(n_threads=0), ValueError, "n_threads"),
    ("n_threads float", dict(n_threads=1.5), TypeError, "n_threads"),
    ("out wrong shape", dict(out=np.empty((4, 5), np.float32)), ValueError, "out has shape"),
    ("out wrong dtype", dict(out=np.empty((4, 6), np.float64)), TypeError, "out has dtype"),
    ("out not an array", dict(out=[[0.0] * 6] * 4), TypeError, "out must be"),
    ("x None", dict(x=None), TypeError, "x must hold"),
    ("x dict", dict(x={"a": 1.0}), TypeError, "x must hold"),
    ("x ragged list", dict(x=[[1.0, 2.0], [3.0]]), ValueError, "x is not an array of numbers"),
    ("x datetime64", dict(x=np.array(["2020-01-01"], "M8[D]")), TypeError, "x must hold"),
    ("x longdouble", dict(x=X.astype(np.longdouble)), TypeError, "x must hold"),
    ("x masked array", dict(x=np.ma.masked_array(X, mask=X > 3)), TypeError, "masked array"),
    ("weight string", dict(weight="abc"), TypeError, "weight must hold"),
    ("weight list of None", dict(weight=[None] * 6), TypeError, "weight must hold"),
    ("weight ragged list", dict(weight=[[1.0], [1.0, 2.0]]), ValueError, "weight is not an array"),
    ("bias dict", dict(bias={}), TypeError, "bias must hold"),
    ("weight_offset string", dict(weight_offset="a"), TypeError, "weight_offset must be a real number"),
    ("weight_offset None", dict(weight_offset=None), TypeError, "weight_offset must be a real number"),
    ("weight_offset array", dict(weight_offset=np.ones(6)), TypeError, "weight_offset must be a real number"),
    ("eps array", dict(eps=np.ones(2)), ValueError, "eps"),
    ("eps complex", dict(eps=1j), ValueError, "eps"),
    ("groups bool", dict(groups=True), TypeError, "groups"),
    ("groups huge", dict(groups=2**70), ValueError, "groups"),
    ("axis huge", dict(axis=2**70), AxisError, "out of bounds"),
    ("axis string", dict(axis="0"), TypeError, "axis"),
    ("axis bool", dict(axis=True), TypeError, "axis"),
    ("eps_mode None", dict(eps_mode=None), ValueError, "eps_mode"),
    ("big-endian dtype", dict(dtype=">f4"), TypeError, "dtype"),
    ("n_threads negative", dict(n_threads=-2), ValueError, "n_threads"),
    ("n_threads string", dict(n_threads="2"), TypeError, "n_threads"),
    ("out big-endian", dict(out=np.empty((4, 6), ">f4")), TypeError, "out has dtype"),
    ("out 1-d for 2-d", dict(out=np.empty(24, np.float32)), ValueError, "out has shape"),
    ("out with a zero stride", dict(out=np.lib.stride_tricks.as_strided(np.zeros(6, np.float32), (4, 6), (0, 4))),
     ValueError, "share memory"),
    ("out with overlapping rows", dict(out=np.lib.stride_tricks.as_strided(np.zeros(9, np.float32), (4, 6), (4, 4))),
     ValueError, "share memory"),
]


@pytest.mark.parametrize("call", BAD_CALLS, ids=[c[0] for c in BAD_CALLS])
def test_bad_input(call):
    _, kwargs, exc, fragment = call
    kwargs = dict(kwargs)
    x = kwargs.pop("x", X)
    with pytest.raises(exc, match=fragment):
        rn.rms_norm(x, **kwargs)


def test_read_only_out_untouched():
    out = np.zeros((4, 6), np.float32)
    out.flags.writeable = False
    with pytest.raises(ValueError, match="read-only"):
        rn.rms_norm(X, out=out)


def test_partial_overlap_refused_and_untouched():
    buf = np.arange(30, dtype=np.float32)
    x = buf[:24].reshape(4, 6)
    out = buf[6:30].reshape(4, 6)
    before = buf.copy()
    with pytest.raises(ValueError, match="partially overlaps"):
        rn.rms_norm(x, out=out)
    np.testing.assert_array_equal(buf, before)
    with pytest.raises(ValueError, match="partially overlaps"):
        rn.rms_norm(x, out=x[::-1])  # same memory, another view


def test_bad_call_leaves_out_untouched():
    out = np.full((4, 6), 7.0, np.float32)
    for kwargs in ({"eps": -1.0}, {"groups": 5}, {"weight": np.ones(3)}, {"eps_mode": "x"}):
        with pytest.raises(ValueError):
            rn.rms_norm(X, out=out, **kwargs)
        assert (out == 7.0).all()


def test_weight_aliasing_out_is_safe():
    x = np.random.default_rng(0).standard_normal((3, 6)).astype(np.float32)
    expected = rn.rms_norm(x, x[0].copy())
    rn.rms_norm(x, x[0], out=x)  # weight is a row of the array written in place
    np.testing.assert_array_equal(x, expected)


# ---- output_spec ---------------------------------------------------------------------------------

def test_output_spec_matches_and_validates():
    spec = rn.output_spec((2, 512, 4, 4), np.float16, axis=1, groups=8)
    y, rstd = rn.rms_norm(np.zeros((2, 512, 4, 4), np.float16), axis=1, groups=8, return_rstd=True)
    assert spec == {"y": (y.shape, y.dtype), "rstd": (rstd.shape, rstd.dtype)}
    assert rn.output_spec((3, 4), "int64")["y"][1] == np.float64
    with pytest.raises(AxisError):
        rn.output_spec((3, 4), np.float32, axis=5)
    with pytest.raises(ValueError, match="groups"):
        rn.output_spec((3, 4), np.float32, groups=3)
    with pytest.raises(TypeError):
        rn.output_spec((3, 4), np.complex64)
    with pytest.raises(TypeError, match="dtype"):
        rn.output_spec((3, 4), np.float32, out_dtype=np.int8)


BAD_SPEC_CALLS = [
    # (id, args for output_spec, kwargs, exception, message fragment)
    ("shape string", ("ab", np.float32), {}, TypeError, "shape"),
    ("shape of floats", ((2.0, 4), np.float32), {}, TypeError, "shape"),
    ("negative dimension", ((-1, 4), np.float32), {}, ValueError, "negative"),
    ("complex dtype", ((2, 4), np.complex64), {}, TypeError, "x must hold"),
    ("axis out of range", ((2, 4), np.float32), dict(axis=5), AxisError, "axis"),
    ("groups not dividing", ((2, 4), np.float32), dict(groups=3), ValueError, "groups"),
    ("integer out_dtype", ((2, 4), np.float32), dict(out_dtype=np.int8), TypeError, "dtype"),
]


@pytest.mark.parametrize("call", BAD_SPEC_CALLS, ids=[c[0] for c in BAD_SPEC_CALLS])
def test_bad_output_spec_input(call):
    _, args, kwargs, exc, fragment = call
    with pytest.raises(exc, match=fragment):
        rn.output_spec(*args, **kwargs)


@pytest.mark.parametrize("function, calls", [("rms_norm", BAD_CALLS), ("output_spec", BAD_SPEC_CALLS)])
def test_readme_bad_input_table_lists_every_row(function, calls):
    missing = [c[0] for c in calls if (function, c[0]) not in readme_table_rows()]
    assert not missing, f"README's bad input table lacks rows for {function}: {missing}"
