"""rms_norm's fast path for the common call, and bfloat16 bits in uint16 arrays."""

import numpy as np
import pytest

import rmsnorm_cpu as rn
from helpers import BF16

pytestmark = pytest.mark.usefixtures("isa")


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


PAIRS = [(np.float32, np.float32), (np.float16, np.float32), (np.float64, np.float32), (np.float16, np.float16)] + \
    ([(BF16, BF16), (BF16, np.float32)] if BF16 else [])


@pytest.mark.parametrize("tx, tr", PAIRS, ids=str)
def test_add_short_path_is_the_general_path(rng, tx, tr):
    x = rng.standard_normal((3, 1037)).astype(tx)
    r = rng.standard_normal((3, 1037)).astype(tr)
    acc = np.float64 if np.float64 in (tx, tr) else np.float32
    for w in (None, rng.uniform(0.5, 1.5, 1037).astype(acc)):
        general = rn.add_rms_norm(x, r, w, weight_offset=0)  # an int offset: not the short path
        for got in (rn.add_rms_norm(x, r, w), rn.add_rms_norm(x, r, w, n_threads=2)):
            for a, b in zip(got, general):
                assert a.dtype == b.dtype
                np.testing.assert_array_equal(a.view(np.uint8), b.view(np.uint8))
        xc, rc = x.copy(), r.copy()
        y, ro = rn.add_rms_norm(xc, rc, w, inplace=True)
        assert y is xc and ro is rc
        for a, b in zip((y, ro), general):
            np.testing.assert_array_equal(a.view(np.uint8), b.view(np.uint8))


def test_add_short_path_edge_cases(rng):
    """What the short path cannot take goes to the general path: same numbers, same errors."""
    x = rng.standard_normal((2, 8)).astype(np.float32)
    r = rng.standard_normal((2, 8)).astype(np.float32)
    expected = rn.add_rms_norm(x, r, r[0].copy())
    xc, rc = x.copy(), r.copy()
    rn.add_rms_norm(xc, rc, rc[0], inplace=True)  # the weight is a view of residual: read before it is written
    np.testing.assert_array_equal(xc, expected[0])
    np.testing.assert_array_equal(rc, expected[1])
    same = rn.add_rms_norm(x, x)  # x is residual, not in place
    np.testing.assert_array_equal(same[1], x + x)
    with pytest.raises(ValueError, match="overlaps"):
        rn.add_rms_norm(xc, xc, inplace=True)
    read_only = x.copy()
    read_only.flags.writeable = False
    with pytest.raises(ValueError, match="read-only"):
        rn.add_rms_norm(read_only, r.copy(), inplace=True)
    with pytest.raises(ValueError, match="differ"):
        rn.add_rms_norm(x, r[:1])


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
