"""Property-based tests: random shapes, axes, groups, strides, dtypes, weights, modes
and out= aliasing, on every ISA tier, against the float64 reference.

CI runs a fixed, bounded set of examples (profile "ci": derandomized, so the
same examples every run).  By hand, for a longer search with fresh examples:

    HYPOTHESIS_PROFILE=long python -m pytest tests/test_properties.py
"""

import math
import os

import numpy as np
import pytest
from helpers import BF16, FLOAT_DTYPES, acc_roundoff, assert_matches_reference
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from reference import ml_dtypes, normalized_view, rms_ref, ulp

import rmsnorm_cpu as rn

pytestmark = pytest.mark.usefixtures("isa")

# The isa fixture is function-scoped on purpose: it pins one tier for all the
# examples of a test, which is what we want.
_COMMON = dict(deadline=None, database=None,
               suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
settings.register_profile("ci", max_examples=400, derandomize=True, **_COMMON)
settings.register_profile("long", max_examples=5000, **_COMMON)
PROFILE = settings.get_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

MAX_ELEMENTS = 6000
DIMS = st.one_of(st.integers(1, 5), st.sampled_from([0, 7, 16, 17, 33, 67, 257]))
# (magnitude of typical values) per special-value regime and dtype: "tiny" and
# "huge" push the float32 sum of squares out of range (the robust path).
MAGNITUDE = {
    "tiny": {"float16": 1e-6, "bfloat16": 1e-39, "float32": 1e-41, "float64": 1e-310},
    "huge": {"float16": 8e3, "bfloat16": 1e25, "float32": 1e25, "float64": 1e200},
}


@st.composite
def arrays(draw, dtypes=FLOAT_DTYPES, special=True, shape=None):
    """A float array of rank 0-5 seen through steps, negative steps and a transpose."""
    dtype = draw(st.sampled_from(dtypes))
    if shape is None:
        rank = draw(st.integers(0, 5))
        pre_shape = draw(st.lists(DIMS, min_size=rank, max_size=rank))
        while math.prod(pre_shape) > MAX_ELEMENTS:
            pre_shape[pre_shape.index(max(pre_shape))] //= 2
        perm = draw(st.permutations(range(rank)))
    else:
        rank, perm = len(shape), draw(st.permutations(range(len(shape))))
        pre_shape = [0] * rank
        for i, p in enumerate(perm):
            pre_shape[p] = shape[i]
    steps = draw(st.lists(st.sampled_from([1, 1, 2, -1, -2]), min_size=rank, max_size=rank))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    base_shape = [d * abs(s) for d, s in zip(pre_shape, steps)]
    regime = draw(st.sampled_from(["normal"] * 6 + ["zeros", "nan", "inf", "tiny", "huge"])) if special \
        else "normal"
    magnitude = MAGNITUDE.get(regime, {}).get(dtype.name) or draw(st.sampled_from([1.0, 1e-3, 1e3]))
    values = np.array(rng.standard_normal(base_shape) * magnitude)
    if values.size and regime in ("zeros", "nan", "inf"):
        flat = values.reshape(-1)
        hit = rng.integers(0, flat.size, size=max(1, flat.size // 20))
        flat[hit] = {"zeros": 0.0, "nan": np.nan, "inf": -np.inf}[regime]
        if regime == "zeros":  # a zero hyperplane: whole zero slices for most axes
            values[slice((values.shape[0] + 1) // 2) if values.ndim else ...] = 0.0
    base = values.astype(dtype)
    view = base[tuple(slice(None, None, s) for s in steps) + (...,)].transpose(perm)
    return view


@st.composite
def axes_for(draw, ndim):
    """axis as NumPy takes it: an int (maybe negative) or a tuple in any order."""
    chosen = draw(st.lists(st.integers(0, ndim - 1), unique=True, max_size=ndim)) if ndim else []
    as_written = [a - ndim if draw(st.booleans()) else a for a in chosen]
    if len(as_written) == 1 and draw(st.booleans()):
        return as_written[0]
    return tuple(as_written)


def _norm_shape(shape, axis):
    axes = (axis,) if isinstance(axis, int) else axis
    return tuple(shape[a] for a in sorted(a % len(shape) for a in axes))


@st.composite
def groups_for(draw, size):
    divisors = [g for g in range(1, max(size, 1) + 1) if size % g == 0][:12] if size else [1, 2, 3]
    return draw(st.sampled_from(divisors))


@st.composite
def affine(draw, norm_shape, kind):
    """None, a Python or NumPy scalar, or an array broadcasting to norm_shape, of any float dtype."""
    choice = draw(st.sampled_from(["none", "scalar", "array", "array", "broadcast"]))
    if choice == "none":
        return None
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    lo = 0.5 if kind == "weight" else -1.0
    if choice == "scalar":
        value = float(rng.uniform(lo, 1.5))
        return value if draw(st.booleans()) else draw(st.sampled_from(FLOAT_DTYPES)).type(value)
    shape = list(norm_shape)
    if choice == "broadcast" and shape:
        shape = shape[draw(st.integers(0, len(shape))):]
        shape = [d if draw(st.booleans()) else 1 for d in shape]
    dtype = draw(st.sampled_from(FLOAT_DTYPES))
    return rng.uniform(lo, 1.5, shape).astype(dtype)


@st.composite
def out_for(draw, x, out_dtype):
    """None, x itself (in place), or a fresh array of another layout."""
    choices = ["none", "C", "F", "strided"] + (["inplace"] if out_dtype == x.dtype else [])
    kind = draw(st.sampled_from(choices))
    if kind == "none":
        return kind, None
    if kind == "inplace":
        return kind, x
    if kind == "strided":
        step = draw(st.sampled_from([2, -1, -3]))
        big = np.full(x.shape[:-1] + (x.shape[-1] * abs(step),), 7, out_dtype) if x.ndim else None
        return kind, (big[..., ::step] if x.ndim else np.full((), 7, out_dtype))
    return kind, np.full(x.shape, 7, out_dtype, order=kind)


def draw_layout(data, x):
    """(axis, normalized shape, groups, weight, bias) drawn for x, shared by the properties."""
    axis = data.draw(axes_for(x.ndim), label="axis")
    norm_shape = _norm_shape(x.shape, axis)
    groups = data.draw(groups_for(math.prod(norm_shape)), label="groups")
    weight = data.draw(affine(norm_shape, "weight"), label="weight")
    bias = data.draw(affine(norm_shape, "bias"), label="bias")
    return axis, norm_shape, groups, weight, bias


def _bitwise_equal(a, b):
    np.testing.assert_array_equal(np.ascontiguousarray(a).view(np.uint8), np.ascontiguousarray(b).view(np.uint8))


@PROFILE
@given(data=st.data())
def test_forward_matches_reference(data):
    x = data.draw(arrays(), label="x")
    axis, norm_shape, groups, weight, bias = draw_layout(data, x)
    size = math.prod(norm_shape)
    eps = data.draw(st.sampled_from([1e-6, 0.0, 1e-3, 1.0]), label="eps")
    eps_mode = data.draw(st.sampled_from(["sqrt", "add", "clamp"]), label="eps_mode")
    weight_offset = data.draw(st.sampled_from([0.0, 0.0, 1.0]), label="weight_offset")
    out_dtype = data.draw(st.sampled_from([None] + FLOAT_DTYPES), label="dtype")
    y_dtype = x.dtype if out_dtype is None else out_dtype
    out_kind, out = data.draw(out_for(x, y_dtype), label="out")
    kw = dict(axis=axis, eps=eps, groups=groups, eps_mode=eps_mode, weight_offset=weight_offset)

    x_before = x.copy()
    expected = rn.rms_norm(x, weight, bias, dtype=out_dtype, **kw) if out_kind == "inplace" else None
    y, rstd = rn.rms_norm(x, weight, bias, dtype=out_dtype, out=out, return_rstd=True, **kw)
    if out is not None:
        assert y is out
    if out_kind != "inplace":
        _bitwise_equal(x, x_before)  # the input is never written
    assert y.shape == x.shape and y.dtype == y_dtype
    acc = np.float64 if np.float64 in (x.dtype, y_dtype) else np.float32
    assert rstd.dtype == acc and rstd.shape == tuple(
        s for i, s in enumerate(x.shape) if x.ndim and i not in {a % x.ndim for a in np.atleast_1d(axis)}
    ) + (groups,)
    if x.size == 0:
        assert np.isnan(rstd).all()
        return
    ref, ref_rstd, scale = rms_ref(x_before, weight, bias, **kw)
    n = size // groups
    assert_matches_reference(y, ref, scale, n, x.dtype)
    with np.errstate(over="ignore"):  # rstd of a subnormal slice with eps=0 may not fit float32: inf
        ref_rstd = ref_rstd.astype(acc)
    assert_matches_reference(rstd, ref_rstd, np.abs(ref_rstd), n, x.dtype)
    if expected is not None:
        np.testing.assert_array_equal(np.asarray(y, np.float64), np.asarray(expected, np.float64))
    if x.dtype.itemsize > 2 and y_dtype == x.dtype:  # cast_mode is a no-op there
        _bitwise_equal(rn.rms_norm(x_before, weight, bias, cast_mode="llama", **kw),
                       rn.rms_norm(x_before, weight, bias, **kw))


@PROFILE
@given(data=st.data())
def test_add_rms_norm_is_two_steps(data):
    x = data.draw(arrays(special=False), label="x")
    residual = data.draw(arrays(special=False, shape=x.shape), label="residual")
    axis, norm_shape, groups, weight, bias = draw_layout(data, x)
    eps_mode = data.draw(st.sampled_from(["sqrt", "add", "clamp"]), label="eps_mode")
    inplace = data.draw(st.booleans(), label="inplace")
    kw = dict(axis=axis, groups=groups, eps_mode=eps_mode)

    acc = np.float64 if np.float64 in (x.dtype, residual.dtype) else np.float32
    new_residual = _round_once(x.astype(acc) + residual.astype(acc), residual.dtype)
    x_in, r_in = x.copy(), residual.copy()
    y, r = rn.add_rms_norm(x, residual, weight, bias, inplace=inplace, **kw)
    if inplace:
        assert y is x and r is residual
    else:
        _bitwise_equal(x, x_in)
        _bitwise_equal(residual, r_in)
    assert y.dtype == x.dtype and r.dtype == residual.dtype
    _bitwise_equal(r, new_residual)
    if x.size == 0:
        return
    # Same slices through the same row kernel (both unit-stride along the
    # normalized axis): bitwise the second step alone.  A strided axis runs the
    # scalar strided kernel, which may differ in the last bits (SPEC).
    rows = rn.rms_norm(np.ascontiguousarray(new_residual), weight, bias, dtype=x.dtype, **kw)
    unit_stride = all(a.ndim == 0 or a.shape[-1] <= 1 or a.strides[-1] == a.itemsize for a in (x, residual))
    if unit_stride and (isinstance(axis, int) and axis % x.ndim == x.ndim - 1 or kw["axis"] == ()):
        _bitwise_equal(y, rows)
    ref, _, scale = rms_ref(new_residual, weight, bias, **kw)
    assert_matches_reference(y, ref, scale, math.prod(norm_shape) // groups, residual.dtype)


def _round_once(v, dtype):
    """v rounded once to dtype.  ml_dtypes casts float64 to bfloat16 through
    float32 (two roundings: 1444.0000216 gives 1440, not 1448), so go through
    float32 rounded to odd instead, which makes the second rounding exact."""
    if dtype != BF16 or v.dtype != np.float64:
        return v.astype(dtype)
    f = v.astype(np.float32)
    bits = f.view(np.uint32)
    toward_zero = np.where(np.abs(f.astype(np.float64)) > np.abs(v), bits - 1, bits)
    odd = np.where(f.astype(np.float64) != v, toward_zero | 1, bits).astype(np.uint32)
    return odd.view(np.float32).astype(dtype)


def _dx_scale(dy, x, w, axis, groups, eps):
    """|rstd * g| + |x| * rstd^2 / (rms n) * sum |g x| per element, in float64
    (g = dy * w): what the roundings of dx = rstd * g - c * x * sum(g x) scale
    with, since c <= rstd^2 / (rms n) in every eps_mode."""
    v, perm, moved_shape = normalized_view(x, axis, groups)
    gv = normalized_view(dy, axis, groups)[0]
    if w is not None:
        gv = gv * w.reshape(groups, -1)
    n = v.shape[-1]
    rms = np.sqrt(np.mean(v**2, axis=-1, keepdims=True))
    with np.errstate(all="ignore"):
        rstd = 1.0 / np.maximum(rms, math.sqrt(eps))
        second = np.where(rms > 0, np.abs(v) * rstd**2 / (rms * n) * np.sum(np.abs(gv * v), -1, keepdims=True), 0)
    scale = (rstd * np.abs(gv) + second).reshape(moved_shape)
    return np.transpose(scale, np.argsort(perm))


@PROFILE
@given(data=st.data())
def test_backward_matches_float64(data):
    x = data.draw(arrays(special=False), label="x")
    dy = data.draw(arrays(dtypes=[x.dtype], special=False, shape=x.shape), label="dy")
    axis, norm_shape, groups, weight, bias = draw_layout(data, x)
    size = math.prod(norm_shape)
    eps_mode = data.draw(st.sampled_from(["sqrt", "add", "clamp"]), label="eps_mode")
    eps = data.draw(st.sampled_from([1e-6, 1e-3]), label="eps")
    pass_rstd = data.draw(st.booleans(), label="pass_rstd")
    kw = dict(axis=axis, eps=eps, groups=groups, eps_mode=eps_mode)

    rstd = rn.rms_norm(x, weight, return_rstd=True, **kw)[1] if pass_rstd else None
    dx, dw, db = rn.rms_norm_backward(dy, x, weight, bias, rstd=rstd, **kw)
    assert dx.shape == x.shape and dx.dtype == x.dtype
    for grad, param in ((dw, weight), (db, bias)):
        if param is None:
            assert grad is None
        else:
            p = np.asarray(param)
            assert grad.shape == p.shape
            assert grad.dtype == (p.dtype if p.dtype in FLOAT_DTYPES else np.float64)
    if x.size == 0:
        return

    def f64(p):
        return None if p is None else np.asarray(p, np.float64)

    x64, dy64 = np.asarray(x, np.float64), np.asarray(dy, np.float64)
    rdx, rdw, rdb = rn.rms_norm_backward(dy64, x64, f64(weight), f64(bias), **kw)
    n = size // groups
    u = acc_roundoff(x.dtype)
    w_full = None if weight is None else np.broadcast_to(f64(weight) + 0.0, norm_shape)
    scale = _dx_scale(dy64, x64, w_full, axis, groups, eps if eps_mode == "sqrt" else 0.0)
    bound = (16 + 4 * np.sqrt(n)) * u * scale
    bound = bound + (ulp(rdx, x.dtype) if x.dtype.itemsize == 2 else ulp(rdx, x.dtype) / 2)
    _assert_within(dx, rdx, bound)
    batch = x.size // max(size, 1)
    for grad, ref, param in ((dw, rdw, weight), (db, rdb, bias)):
        if param is None:
            continue
        # The same reduction over |terms| gives the scale of its rounding errors.
        abs_ref = rn.rms_norm_backward(np.abs(dy64), np.abs(x64), f64(weight), f64(bias), **kw)
        gscale = np.abs(abs_ref[1] if grad is dw else abs_ref[2])
        gbound = (16 + 4 * np.sqrt(batch) + 4 * np.sqrt(n)) * u * gscale
        if grad.dtype.itemsize == 2:
            gbound = gbound + ulp(ref, grad.dtype)
        elif grad.dtype == np.float32:
            gbound = gbound + ulp(ref, np.float32) / 2
        _assert_within(grad, ref, gbound)


def _assert_within(got, ref, bound):
    """|got - ref| <= bound, where got may also have overflowed to inf of the
    right sign if ref is within the bound of got's dtype's largest number."""
    dtype = got.dtype
    got = np.asarray(got, np.float64)
    top = float((ml_dtypes.finfo if dtype == BF16 else np.finfo)(dtype).max)
    err = np.abs(got - ref)
    overflow_ok = np.isinf(got) & (np.sign(got) == np.sign(ref)) & (np.abs(ref) + bound >= top)
    bad = (err > bound) & ~overflow_ok
    assert not bad.any(), f"off by {err[bad][:3]} (bound {np.broadcast_to(bound, bad.shape)[bad][:3]})"



def test_subnormal_results_within_bound():
    # y = 1.24e-40 (a float32 subnormal) is one subnormal quantum from the exact
    # value, as x * rstd and * w each round there; the tolerance helper allows a
    # few quanta.
    x, w = np.array([3.456e-42], np.float32), np.float16(1.137)
    ref, _, scale = rms_ref(x, w, eps=1e-3, axis=())
    assert_matches_reference(rn.rms_norm(x, w, eps=1e-3, axis=()), ref, scale, 1, x.dtype)
