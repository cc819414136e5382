"""rms_norm_quant: numerics against the float64 reference (one quantization step),
the fused residual bitwise add_rms_norm's, layouts, determinism, errors."""

import numpy as np
import pytest

import rmsnorm_cpu as rn
from helpers import FLOAT_DTYPES, X, readme_table_rows
from reference import e4m3_step, ml_dtypes, quant_ref

QUANT_DTYPES = ["int8"] + (["float8_e4m3fn"] if ml_dtypes is not None else [])


def values(q):
    """q as float64 numbers (int8 or float8_e4m3fn)."""
    return np.asarray(q.astype(np.float32) if q.dtype != np.int8 else q, dtype=np.float64)


def assert_quant_matches(q, scale, ref_q, ref_scale, quant_dtype):
    """scale to float32 rounding of the amax, q within one step of the reference."""
    np.testing.assert_allclose(scale, ref_scale, rtol=2e-5, atol=0)
    got = values(q)
    nan = np.isnan(ref_q)
    np.testing.assert_array_equal(np.isnan(got), nan)
    step = 1.0 if quant_dtype == "int8" else e4m3_step(np.maximum(np.abs(got), np.abs(ref_q)))
    err = np.where(nan, 0, np.abs(got - np.where(nan, 0, ref_q)))
    assert (err <= step).all(), f"{(err > step).sum()} elements more than one step off"


def bits(a):
    return np.ascontiguousarray(a).view(np.uint8)


@pytest.mark.usefixtures("isa")
@pytest.mark.parametrize("quant_dtype", QUANT_DTYPES)
@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=str)
def test_matches_reference(rng, dtype, quant_dtype):
    for n, affine in ((1, False), (7, True), (64, False), (4097, True)):
        x = (rng.standard_normal((5, n)) * 3).astype(dtype)
        w = rng.standard_normal(n).astype(np.float32) if affine else None
        b = rng.standard_normal(n).astype(np.float32) * 0.1 if affine else None
        q, scale = rn.rms_norm_quant(x, w, b, quant_dtype=quant_dtype)
        assert q.shape == x.shape and scale.shape == (5, 1) and scale.dtype == np.float32
        assert q.dtype == (np.int8 if quant_dtype == "int8" else ml_dtypes.float8_e4m3fn)
        ref_q, ref_scale, _ = quant_ref(x, w, b, quant_dtype=quant_dtype)
        assert_quant_matches(q, scale, ref_q, ref_scale, quant_dtype)


@pytest.mark.usefixtures("isa")
@pytest.mark.parametrize("quant_dtype", QUANT_DTYPES)
@pytest.mark.parametrize("eps_mode", ["sqrt", "add", "clamp"])
def test_groups_eps_modes_offset(rng, quant_dtype, eps_mode):
    x = rng.standard_normal((3, 4, 24)).astype(np.float32)
    w = rng.standard_normal(24).astype(np.float32)
    kw = dict(groups=3, eps=1e-3, eps_mode=eps_mode, weight_offset=1.0, quant_dtype=quant_dtype)
    q, scale = rn.rms_norm_quant(x, w, **kw)
    assert scale.shape == (3, 4, 3)
    ref_q, ref_scale, _ = quant_ref(x, w, **kw)
    assert_quant_matches(q, scale, ref_q, ref_scale, quant_dtype)


@pytest.mark.usefixtures("isa")
@pytest.mark.parametrize("quant_dtype", QUANT_DTYPES)
@pytest.mark.parametrize("x_dtype", FLOAT_DTYPES, ids=str)
@pytest.mark.parametrize("r_dtype", FLOAT_DTYPES, ids=str)
def test_residual_is_add_rms_norm_then_quant(rng, x_dtype, r_dtype, quant_dtype):
    for n in (7, 4097):
        x = rng.standard_normal((3, n)).astype(x_dtype)
        r = rng.standard_normal((3, n)).astype(r_dtype)
        w = rng.standard_normal(n).astype(np.float32)
        q, scale, new_r = rn.rms_norm_quant(x, w, residual=r, quant_dtype=quant_dtype)
        _, expected_r = rn.add_rms_norm(x, r, w)
        np.testing.assert_array_equal(bits(new_r), bits(expected_r))
        assert new_r.dtype == r_dtype
        eq, es = rn.rms_norm_quant(expected_r, w, quant_dtype=quant_dtype)
        np.testing.assert_array_equal(bits(q), bits(eq))
        np.testing.assert_array_equal(bits(scale), bits(es))


@pytest.mark.usefixtures("isa")
def test_residual_matches_reference(rng):
    x = rng.standard_normal((4, 100)).astype(np.float16)
    r = rng.standard_normal((4, 100)).astype(np.float16)
    q, scale, new_r = rn.rms_norm_quant(x, residual=r)
    ref_q, ref_scale, ref_r = quant_ref(x, residual=r)
    np.testing.assert_array_equal(new_r, ref_r)
    assert_quant_matches(q, scale, ref_q, ref_scale, "int8")


@pytest.mark.usefixtures("isa")
@pytest.mark.parametrize("same_dtype", [True, False])
def test_inplace_writes_residual_not_x(rng, same_dtype):
    x = rng.standard_normal((4, 64)).astype(np.float32)
    r = rng.standard_normal((4, 64)).astype(np.float32 if same_dtype else np.float16)
    x0, r0 = x.copy(), r.copy()
    eq, es, er = rn.rms_norm_quant(x0, residual=r0)
    q, scale, new_r = rn.rms_norm_quant(x, residual=r, inplace=True)
    assert new_r is r
    np.testing.assert_array_equal(x, x0)
    np.testing.assert_array_equal(bits(r), bits(er))
    np.testing.assert_array_equal(q, eq)
    np.testing.assert_array_equal(scale, es)


@pytest.mark.usefixtures("isa")
@pytest.mark.parametrize("quant_dtype", QUANT_DTYPES)
def test_layouts_bitwise_the_contiguous_call(rng, quant_dtype):
    base = rng.standard_normal((6, 5, 40)).astype(np.float32)
    w = rng.standard_normal(5).astype(np.float32)
    x = base.transpose(0, 2, 1)  # the normalized axis strided
    eq, es = rn.rms_norm_quant(np.ascontiguousarray(x), w, quant_dtype=quant_dtype)
    for axis in (-1, (2,), 2):
        q, scale = rn.rms_norm_quant(x, w, axis=axis, quant_dtype=quant_dtype)
        np.testing.assert_array_equal(bits(q), bits(eq))
        np.testing.assert_array_equal(scale, es)
    q, scale = rn.rms_norm_quant(base, w, axis=1, quant_dtype=quant_dtype)
    np.testing.assert_array_equal(bits(q.transpose(0, 2, 1)), bits(eq))
    x = base[:, ::2, ::-1]  # negative and non-unit strides, preallocated strided outputs
    out = np.empty((6, 3, 40, 2), np.int8 if quant_dtype == "int8" else ml_dtypes.float8_e4m3fn)[..., 0]
    scale_out = np.empty((6, 3, 2), np.float32)[..., ::2]
    q, scale = rn.rms_norm_quant(x, quant_dtype=quant_dtype, out=out, scale_out=scale_out)
    assert q is out and scale is scale_out
    eq, es = rn.rms_norm_quant(np.ascontiguousarray(x), quant_dtype=quant_dtype)
    np.testing.assert_array_equal(bits(q), bits(eq))
    np.testing.assert_array_equal(scale, es)
    q, scale = rn.rms_norm_quant(base, axis=(1, 2), quant_dtype=quant_dtype)
    assert scale.shape == (6, 1)
    eq, _ = rn.rms_norm_quant(base.reshape(6, -1), quant_dtype=quant_dtype)
    np.testing.assert_array_equal(bits(q.reshape(6, -1)), bits(eq))


@pytest.mark.usefixtures("isa")
def test_rows_independent_of_batch_position_and_threads(rng):
    x = rng.standard_normal((300, 1000)).astype(np.float16)
    r = rng.standard_normal((300, 1000)).astype(np.float16)
    q1, s1, _ = rn.rms_norm_quant(x, residual=r, n_threads=1)
    q2, s2, _ = rn.rms_norm_quant(x, residual=r, n_threads=2)
    np.testing.assert_array_equal(q1, q2)
    np.testing.assert_array_equal(s1, s2)
    for row in (0, 151, 299):
        q, s, _ = rn.rms_norm_quant(x[row:row + 1], residual=r[row:row + 1])
        np.testing.assert_array_equal(q[0], q1[row])
        np.testing.assert_array_equal(s[0], s1[row])


@pytest.mark.usefixtures("isa")
@pytest.mark.parametrize("quant_dtype", QUANT_DTYPES)
def test_scale_ub_saturates(rng, quant_dtype):
    x = rng.standard_normal((4, 256)).astype(np.float32)
    q, scale = rn.rms_norm_quant(x, quant_dtype=quant_dtype, scale_ub=0.5)
    qmax = 127 if quant_dtype == "int8" else 448
    np.testing.assert_array_equal(scale, np.float32(0.5) / np.float32(qmax))
    assert values(q).max() == qmax and values(q).min() >= -qmax - (quant_dtype == "int8")
    ref_q, ref_scale, _ = quant_ref(x, quant_dtype=quant_dtype, scale_ub=0.5)
    assert_quant_matches(q, scale, ref_q, ref_scale, quant_dtype)


@pytest.mark.usefixtures("isa")
@pytest.mark.parametrize("quant_dtype", QUANT_DTYPES)
def test_zero_and_nan_rows(quant_dtype):
    x = np.zeros((3, 33), np.float32)
    x[1, 5] = np.nan
    x[2] = 1.0
    q, scale = rn.rms_norm_quant(x, quant_dtype=quant_dtype)
    qmax = 127 if quant_dtype == "int8" else 448
    assert scale[0, 0] == np.float32(1) / np.float32(qmax * 512) and not values(q[0]).any()
    assert np.isnan(scale[1, 0])
    if quant_dtype == "int8":
        assert not q[1].any()
    else:
        assert np.isnan(values(q[1])).all()
    assert (values(q[2]) == qmax).all()


def test_empty():
    q, scale = rn.rms_norm_quant(np.zeros((3, 0), np.float32))
    assert q.shape == (3, 0) and scale.shape == (3, 1)
    np.testing.assert_array_equal(scale, np.float32(1) / np.float32(127 * 512))
    q, scale = rn.rms_norm_quant(np.zeros((0, 8), np.float32))
    assert q.shape == (0, 8) and scale.shape == (0, 1)


@pytest.mark.skipif(ml_dtypes is None, reason="ml_dtypes not installed")
def test_quant_dtype_spellings():
    x = X + 1
    for spelling in ("float8_e4m3fn", ml_dtypes.float8_e4m3fn, np.dtype(ml_dtypes.float8_e4m3fn)):
        q, _ = rn.rms_norm_quant(x, quant_dtype=spelling)
        assert q.dtype == ml_dtypes.float8_e4m3fn
    for spelling in ("int8", np.int8, np.dtype(np.int8)):
        assert rn.rms_norm_quant(x, quant_dtype=spelling)[0].dtype == np.int8


R = np.ones((4, 6), np.float32)

BAD_QUANT_CALLS = [
    # (id, () -> kwargs for rms_norm_quant(x=X, out=..., scale_out=..., ...), exception, message fragment)
    ("unknown quant_dtype", lambda: dict(quant_dtype="int4"), ValueError, "quant_dtype"),
    ("float quant_dtype", lambda: dict(quant_dtype=np.float16), ValueError, "quant_dtype"),
    ("None quant_dtype", lambda: dict(quant_dtype=None), ValueError, "quant_dtype"),
    ("zero scale_ub", lambda: dict(scale_ub=0.0), ValueError, "scale_ub"),
    ("negative scale_ub", lambda: dict(scale_ub=-1.0), ValueError, "scale_ub"),
    ("inf scale_ub", lambda: dict(scale_ub=float("inf")), ValueError, "scale_ub"),
    ("nan scale_ub", lambda: dict(scale_ub=float("nan")), ValueError, "scale_ub"),
    ("string scale_ub", lambda: dict(scale_ub="big"), ValueError, "scale_ub"),
    ("out wrong dtype", lambda: dict(out=np.empty((4, 6), np.int16)), TypeError, "out has dtype"),
    ("out wrong shape", lambda: dict(out=np.empty((4, 5), np.int8)), ValueError, "out has shape"),
    ("scale_out wrong dtype", lambda: dict(scale_out=np.empty((4, 1), np.float64)), TypeError,
     "scale_out has dtype"),
    ("scale_out wrong shape", lambda: dict(scale_out=np.empty((4,), np.float32)), ValueError,
     "scale_out has shape"),
    ("scale_out read-only", lambda: dict(scale_out=np.broadcast_to(np.float32(0), (4, 1))), ValueError,
     "scale_out is read-only"),
    ("residual_out without residual", lambda: dict(residual_out=np.empty((4, 6), np.float32)), ValueError,
     "residual_out"),
    ("inplace without residual", lambda: dict(inplace=True), ValueError, "pass residual"),
    ("residual other shape", lambda: dict(residual=R[:, :5]), ValueError, "differ"),
    ("residual complex", lambda: dict(residual=R.astype(np.complex64)), TypeError, "residual must hold"),
    ("inplace with residual_out", lambda: dict(residual=R.copy(), inplace=True, residual_out=R.copy()),
     ValueError, "inplace"),
    ("inplace on a list", lambda: dict(residual=R.tolist(), inplace=True), TypeError, "inplace=True needs"),
    ("complex x", lambda: dict(x=X.astype(np.complex64)), TypeError, "x must hold"),
    ("negative eps", lambda: dict(eps=-1.0), ValueError, "eps"),
    ("groups not dividing", lambda: dict(groups=5), ValueError, "groups"),
    ("weight wrong length", lambda: dict(weight=np.ones(5)), ValueError, "weight of shape"),
    ("cast_mode keyword", lambda: dict(cast_mode="llama"), TypeError, "cast_mode"),
]


@pytest.mark.parametrize("call", BAD_QUANT_CALLS, ids=[c[0] for c in BAD_QUANT_CALLS])
def test_bad_input_raises_before_anything_is_written(call):
    _, make, error, fragment = call
    out = np.full((4, 6), 7, np.int8)
    scale_out = np.full((4, 1), 7, np.float32)
    kwargs = dict(out=out, scale_out=scale_out)
    kwargs.update(make())
    x = kwargs.pop("x", X)
    residual = kwargs.get("residual")
    before = None if not isinstance(residual, np.ndarray) else residual.copy()
    with pytest.raises(error, match=fragment):
        rn.rms_norm_quant(x, **kwargs)
    assert (out == 7).all() and (scale_out == 7).all()
    if before is not None:
        np.testing.assert_array_equal(residual, before)


def test_readme_bad_input_table_lists_every_row():
    missing = [c[0] for c in BAD_QUANT_CALLS if ("rms_norm_quant", c[0]) not in readme_table_rows()]
    assert not missing, f"README's bad input table lacks rows for rms_norm_quant: {missing}"


def test_float8_without_ml_dtypes(monkeypatch):
    import sys
    from rmsnorm_cpu import _spec
    monkeypatch.setitem(sys.modules, "ml_dtypes", None)
    monkeypatch.setattr(_spec, "QUANT_BY_NAME", {"int8": _spec.QUANT_BY_NAME["int8"]})
    with pytest.raises(TypeError, match=r"rmsnorm_cpu\[bf16\]"):
        rn.rms_norm_quant(X, quant_dtype="float8_e4m3fn")


@pytest.mark.usefixtures("isa")
@pytest.mark.parametrize("quant_dtype", QUANT_DTYPES)
@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=str)
def test_short_path_is_the_general_path(rng, dtype, quant_dtype):
    """Small C-contiguous calls without outputs (the decode call) take the short
    path; preallocated outputs take the general one: the same bits."""
    x = rng.standard_normal((2, 3, 40)).astype(dtype)
    r = rng.standard_normal((2, 3, 40)).astype(dtype)
    w = rng.standard_normal(40).astype(np.float64 if dtype == np.float64 else np.float32)
    q_dtype = np.int8 if quant_dtype == "int8" else ml_dtypes.float8_e4m3fn
    for kw in (dict(), dict(residual=r), dict(scale_ub=0.5)):
        short = rn.rms_norm_quant(x, w, quant_dtype=quant_dtype, **kw)
        out, scale_out = np.empty(x.shape, q_dtype), np.empty((2, 3, 1), np.float32)
        general = rn.rms_norm_quant(x, w, quant_dtype=quant_dtype, out=out, scale_out=scale_out, **kw)
        assert general[0] is out and len(short) == len(general)
        for a, b in zip(short, general):
            assert a.dtype == b.dtype and a.shape == b.shape
            np.testing.assert_array_equal(bits(a), bits(b))
    r_copy, x_copy = r.copy(), x.copy()
    q, scale, new_r = rn.rms_norm_quant(x, w, residual=r, inplace=True, quant_dtype=quant_dtype)
    _, _, expected_r = rn.rms_norm_quant(x_copy, w, residual=r_copy, quant_dtype=quant_dtype)
    assert new_r is r
    np.testing.assert_array_equal(bits(r), bits(expected_r))
    np.testing.assert_array_equal(bits(x), bits(x_copy))
