"""Every bad input gets a clear error naming the argument, before anything is written.

Each row here is a row of the README's "Bad input" table.
"""

import pathlib

import numpy as np
import pytest
from numpy.exceptions import AxisError

import rmsnorm_cpu as rn

X = np.arange(24, dtype=np.float32).reshape(4, 6)

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


def test_backward_bad_input():
    with pytest.raises(ValueError, match="dy of shape"):
        rn.rms_norm_backward(np.ones((4, 5)), X)
    with pytest.raises(ValueError, match="rstd has shape"):
        rn.rms_norm_backward(np.ones((4, 6)), X, rstd=np.ones(4))
    with pytest.raises(TypeError, match="dy must hold"):
        rn.rms_norm_backward(np.ones((4, 6), np.complex128), X)


def test_weight_aliasing_out_is_safe():
    x = np.random.default_rng(0).standard_normal((3, 6)).astype(np.float32)
    expected = rn.rms_norm(x, x[0].copy())
    rn.rms_norm(x, x[0], out=x)  # weight is a row of the array written in place
    np.testing.assert_array_equal(x, expected)


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


def test_isa_env_errors():
    from rmsnorm_cpu import _runtime
    with pytest.raises(RuntimeError, match="valid choices"):
        _runtime.set_isa("sse9")
    missing = [t for t in _runtime.TIER_NAMES if t not in _runtime.build_info()["isa_supported"]]
    for tier in missing:
        with pytest.raises(RuntimeError, match=tier):
            _runtime.set_isa(tier)



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


BAD_BACKWARD_CALLS = [
    # (id, () -> kwargs for rms_norm_backward(dy=ones, x=X, ...), exception, message fragment)
    ("dy None", lambda: dict(dy=None), TypeError, "dy must hold"),
    ("dy complex", lambda: dict(dy=np.ones((4, 6), np.complex128)), TypeError, "dy must hold"),
    ("dy other shape", lambda: dict(dy=np.ones((4, 5))), ValueError, "dy of shape"),
    ("dy broadcastable", lambda: dict(dy=np.ones(6)), ValueError, "dy of shape"),
    ("x string", lambda: dict(x="abc"), TypeError, "x must hold"),
    ("weight extra dim", lambda: dict(weight=np.ones((2, 6))), ValueError, "weight of shape"),
    ("bias wrong length", lambda: dict(bias=np.ones(5)), ValueError, "bias of shape"),
    ("bias string", lambda: dict(bias="abc"), TypeError, "bias must hold"),
    ("rstd wrong shape", lambda: dict(rstd=np.ones(4)), ValueError, "rstd has shape"),
    ("rstd broadcastable", lambda: dict(rstd=np.ones((1, 1))), ValueError, "rstd has shape"),
    ("rstd of other groups", lambda: dict(rstd=np.ones((4, 1)), groups=2), ValueError, "rstd has shape"),
    ("rstd complex", lambda: dict(rstd=np.ones((4, 1), complex)), TypeError, "rstd must hold"),
    ("rstd None list", lambda: dict(rstd=[[None]] * 4), TypeError, "rstd must hold"),
    ("rstd masked", lambda: dict(rstd=np.ma.ones((4, 1))), TypeError, "masked array"),
    ("negative eps", lambda: dict(eps=-1.0), ValueError, "eps"),
    ("unknown eps_mode", lambda: dict(eps_mode="mean"), ValueError, "eps_mode"),
    ("cast_mode keyword", lambda: dict(cast_mode="fused"), TypeError, "cast_mode"),
    ("axis out of range", lambda: dict(axis=2), AxisError, "axis"),
    ("groups zero", lambda: dict(groups=0), ValueError, "groups"),
    ("n_threads zero", lambda: dict(n_threads=0), ValueError, "n_threads"),
    ("weight_offset string", lambda: dict(weight_offset="one"), TypeError, "weight_offset"),
    ("dx_out wrong shape", lambda: dict(dx_out=np.empty((6, 4), np.float32)), ValueError, "dx_out has shape"),
    ("dx_out wrong dtype", lambda: dict(dx_out=np.empty((4, 6))), TypeError, "dx_out has dtype"),
    ("dx_out not an array", lambda: dict(dx_out=[[0.0] * 6] * 4), TypeError, "dx_out must be"),
    ("dx_out read-only", lambda: dict(dx_out=np.broadcast_to(np.empty(6, np.float32), (4, 6))), ValueError,
     "dx_out is read-only"),
    ("dx_out partially overlaps x", lambda: _partial_overlap("x"), ValueError, "partially overlaps"),
]


def _partial_overlap(name):
    """x (or dy) and a dx_out one row further along the same buffer."""
    buf = np.ones(30, np.float32)
    return {name: buf[:24].reshape(4, 6), "dx_out": buf[6:].reshape(4, 6)}


@pytest.mark.parametrize("call", BAD_BACKWARD_CALLS, ids=[c[0] for c in BAD_BACKWARD_CALLS])
def test_bad_backward_input(call):
    _, make, exc, fragment = call
    kwargs = make()
    dy, x = kwargs.pop("dy", np.ones((4, 6), np.float32)), kwargs.pop("x", X)
    with pytest.raises(exc, match=fragment):
        rn.rms_norm_backward(dy, x, **kwargs)


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


def test_n_threads_above_the_default_is_capped(rng):
    # Regression: n_threads=100000 on a parallel-sized input asked OpenMP for a
    # team of 100000 threads and crashed the process (SIGSEGV); 2**40 overflowed
    # the C int.  A request above the OpenMP default now runs the default.
    x = rng.standard_normal((300, 512)).astype(np.float32)
    expected = rn.rms_norm(x, n_threads=1)
    for n_threads in (100_000, 2**40):
        np.testing.assert_array_equal(rn.rms_norm(x, n_threads=n_threads), expected)
        dx, _, _ = rn.rms_norm_backward(x, x, n_threads=n_threads)
        np.testing.assert_array_equal(dx, rn.rms_norm_backward(x, x, n_threads=1)[0])
        np.testing.assert_array_equal(rn.add_rms_norm(x, x, n_threads=n_threads)[0],
                                      rn.add_rms_norm(x, x, n_threads=1)[0])


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


def _readme_rows():
    readme = pathlib.Path(__file__).resolve().parents[1] / "README.md"
    rows = set()
    for line in readme.read_text().splitlines():
        cells = [c.strip().strip("`") for c in line.strip().strip("|").split("|")]
        if len(cells) >= 3:
            rows.add((cells[0], cells[1]))
    return rows


@pytest.mark.parametrize("function, calls", [("rms_norm", BAD_CALLS), ("add_rms_norm", BAD_ADD_CALLS),
                                             ("rms_norm_backward", BAD_BACKWARD_CALLS),
                                             ("output_spec", BAD_SPEC_CALLS)])
def test_readme_bad_input_table_lists_every_row(function, calls):
    missing = [c[0] for c in calls if (function, c[0]) not in _readme_rows()]
    assert not missing, f"README's bad input table lacks rows for {function}: {missing}"
