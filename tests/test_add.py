"""add_rms_norm: bitwise the two steps apart, in place, mixed dtypes, on every ISA tier;
the short path for the common call; errors and allowed aliasing."""

import numpy as np
import pytest
from numpy.exceptions import AxisError

import rmsnorm_cpu as rn
from helpers import BF16, FLOAT_DTYPES, readme_table_rows, X


def two_steps(x, residual, weight=None, **kw):
    acc = np.float64 if np.float64 in (x.dtype, residual.dtype) else np.float32
    new_residual = (x.astype(acc) + residual.astype(acc)).astype(residual.dtype)
    return rn.rms_norm(new_residual, weight, dtype=x.dtype, **kw), new_residual


@pytest.mark.usefixtures("isa")
@pytest.mark.parametrize("x_dtype", FLOAT_DTYPES, ids=str)
@pytest.mark.parametrize("r_dtype", FLOAT_DTYPES, ids=str)
def test_bitwise_equal_to_two_steps(rng, x_dtype, r_dtype):
    for n in (1, 7, 16, 17, 4097):
        x = rng.standard_normal((3, n)).astype(x_dtype)
        r = rng.standard_normal((3, n)).astype(r_dtype)
        w = rng.standard_normal(n).astype(np.float32)
        y, new_r = rn.add_rms_norm(x, r, w)
        ey, er = two_steps(x, r, w)
        np.testing.assert_array_equal(new_r.view(np.uint8), er.view(np.uint8))
        np.testing.assert_array_equal(y.view(np.uint8), ey.view(np.uint8))
        assert y.dtype == x_dtype and new_r.dtype == r_dtype


@pytest.mark.usefixtures("isa")
def test_inplace_vllm_convention(rng):
    x = rng.standard_normal((4, 64)).astype(np.float16)
    r = rng.standard_normal((4, 64)).astype(np.float16)
    ey, er = two_steps(x, r, None, eps=1e-5)
    y, new_r = rn.add_rms_norm(x, r, eps=1e-5, inplace=True)
    assert y is x and new_r is r
    np.testing.assert_array_equal(x, ey)
    np.testing.assert_array_equal(r, er)


@pytest.mark.usefixtures("isa")
def test_axis_groups_and_strided(rng):
    x = rng.standard_normal((2, 8, 5))
    r = rng.standard_normal((2, 8, 5))[:, ::-1]
    y, new_r = rn.add_rms_norm(x, r, axis=1, groups=2)
    ey, er = two_steps(x, r, axis=1, groups=2)
    np.testing.assert_array_equal(new_r, er)
    np.testing.assert_allclose(y, ey, rtol=1e-15)


@pytest.mark.usefixtures("isa")
def test_outputs_must_not_overlap(rng):
    x = rng.standard_normal((4, 8))
    r = rng.standard_normal((4, 8))
    buf = np.empty((4, 8))
    with pytest.raises(ValueError, match="overlaps residual_out"):
        rn.add_rms_norm(x, r, out=buf, residual_out=buf)
    with pytest.raises(ValueError, match="inplace"):
        rn.add_rms_norm(x, r, out=buf, inplace=True)
    with pytest.raises(ValueError, match="shape"):
        rn.add_rms_norm(x, r[:2])
    x_before = x.copy()
    with pytest.raises(ValueError, match="eps"):
        rn.add_rms_norm(x, r, eps=-1.0, inplace=True)
    np.testing.assert_array_equal(x, x_before)


# ---- the short path: the common call, the same bits as the general path --------------------------

PAIRS = [(np.float32, np.float32), (np.float16, np.float32), (np.float64, np.float32), (np.float16, np.float16)] + \
    ([(BF16, BF16), (BF16, np.float32)] if BF16 else [])


@pytest.mark.usefixtures("isa")
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


@pytest.mark.usefixtures("isa")
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


# ---- bad input: errors before anything is written; aliasing that is allowed ----------------------



def _read_only(a):
    a = a.copy()
    a.flags.writeable = False
    return a


def _overlapping():
    """Two (4, 6) float32 views of one buffer, one row apart."""
    buf = np.arange(30, dtype=np.float32)
    return buf[:24].reshape(4, 6), buf[6:30].reshape(4, 6)


def _shared(*names):
    a = np.ones((4, 6), np.float32)
    return {name: a for name in names}


def _f32(shape=(4, 6)):
    return np.zeros(shape, np.float32)


R = np.ones((4, 6), np.float32)

BAD_ADD_CALLS = [
    # (id, () -> kwargs for add_rms_norm(x=X, residual=R, ...), exception, message fragment)
    ("residual None", lambda: dict(residual=None), TypeError, "residual must hold"),
    ("residual complex", lambda: dict(residual=R.astype(np.complex64)), TypeError, "residual must hold"),
    ("x string", lambda: dict(x="abc"), TypeError, "x must hold"),
    ("residual other shape", lambda: dict(residual=R[:, :5]), ValueError, "differ"),
    ("residual broadcastable", lambda: dict(residual=R[:1]), ValueError, "differ"),
    ("weight wrong length", lambda: dict(weight=np.ones(5)), ValueError, "weight of shape"),
    ("negative eps", lambda: dict(eps=-1.0), ValueError, "eps"),
    ("groups not dividing", lambda: dict(groups=4), ValueError, "groups"),
    ("axis out of range", lambda: dict(axis=-3), AxisError, "axis"),
    ("unknown cast_mode", lambda: dict(cast_mode="x"), ValueError, "cast_mode"),
    ("dtype keyword", lambda: dict(dtype=np.float16), TypeError, "dtype"),
    ("out wrong dtype", lambda: dict(out=np.zeros((4, 6))), TypeError, "out has dtype"),
    ("residual_out wrong dtype", lambda: dict(residual_out=np.zeros((4, 6))), TypeError, "residual_out has dtype"),
    ("out wrong shape", lambda: dict(out=_f32((6, 4))), ValueError, "out has shape"),
    ("out not an array", lambda: dict(out=[[0.0] * 6] * 4), TypeError, "out must be"),
    ("out read-only", lambda: dict(out=_read_only(_f32())), ValueError, "out is read-only"),
    ("residual_out read-only", lambda: dict(residual_out=_read_only(_f32())), ValueError,
     "residual_out is read-only"),
    ("residual_out with a zero stride",
     lambda: dict(residual_out=np.lib.stride_tricks.as_strided(_f32((6,)), (4, 6), (0, 4))), ValueError,
     "residual_out has elements that share memory"),
    ("out is residual_out", lambda: _shared("out", "residual_out"), ValueError, "overlaps residual_out"),
    ("out partially overlaps x", lambda: dict(zip(("x", "out"), _overlapping())), ValueError,
     "partially overlaps"),
    ("residual_out partially overlaps x", lambda: dict(zip(("x", "residual_out"), _overlapping())), ValueError,
     "partially overlaps"),
    ("inplace with out", lambda: dict(inplace=True, out=_f32()), ValueError, "inplace"),
    ("inplace on a list", lambda: dict(inplace=True, x=[[1.0] * 6] * 4), TypeError, "inplace=True needs x"),
    ("inplace on integers", lambda: dict(inplace=True, residual=np.ones((4, 6), int)), TypeError,
     "inplace=True needs residual"),
    ("inplace on read-only x", lambda: dict(inplace=True, x=_read_only(X)), ValueError, "read-only"),
    ("inplace with x is residual", lambda: dict(inplace=True, **_shared("x", "residual")), ValueError, "overlaps"),
]


def _snapshots(*arrays):
    return [(a, a.copy()) for a in arrays if isinstance(a, np.ndarray)]


@pytest.mark.parametrize("call", BAD_ADD_CALLS, ids=[c[0] for c in BAD_ADD_CALLS])
def test_bad_add_input(call):
    _, make, exc, fragment = call
    kwargs = make()
    x, residual = kwargs.pop("x", X.copy()), kwargs.pop("residual", R.copy())
    before = _snapshots(x, residual, kwargs.get("out"), kwargs.get("residual_out"))
    with pytest.raises(exc, match=fragment):
        rn.add_rms_norm(x, residual, **kwargs)
    for a, copy in before:  # nothing written
        np.testing.assert_array_equal(a, copy)


def test_add_outputs_may_alias_their_own_inputs(rng):
    """Cases that are allowed: out=residual, residual_out=x, x is residual."""
    x = rng.standard_normal((4, 6)).astype(np.float32)
    r = rng.standard_normal((4, 6)).astype(np.float32)
    ey, er = rn.add_rms_norm(x, r)
    r2 = r.copy()
    y, _ = rn.add_rms_norm(x, r2, out=r2)  # y written over the residual it reads
    np.testing.assert_array_equal(y, ey)
    x2 = x.copy()
    _, new_r = rn.add_rms_norm(x2, r, residual_out=x2)
    np.testing.assert_array_equal(new_r, er)
    np.testing.assert_array_equal(rn.add_rms_norm(x, x)[1], x + x)


@pytest.mark.parametrize("function, calls", [("add_rms_norm", BAD_ADD_CALLS)])
def test_readme_bad_input_table_lists_every_row(function, calls):
    missing = [c[0] for c in calls if (function, c[0]) not in readme_table_rows()]
    assert not missing, f"README's bad input table lacks rows for {function}: {missing}"
