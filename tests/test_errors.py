"""Every bad input gets a clear error naming the argument, before anything is written.

Each row here is a row of the README's "Bad input" table.
"""

import numpy as np
import pytest

import rmsnorm_cpu as rn
from numpy.exceptions import AxisError

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
    from rmsnorm_cpu import _core
    with pytest.raises(RuntimeError, match="valid choices"):
        _core.set_isa("sse9")
    missing = [t for t in _core.TIER_NAMES if t not in _core.build_info()["isa_supported"]]
    for tier in missing:
        with pytest.raises(RuntimeError, match=tier):
            _core.set_isa(tier)
