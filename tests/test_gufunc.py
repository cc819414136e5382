"""rms_norm_gufunc: a real np.ufunc with the same numbers as rms_norm."""

import doctest

import numpy as np
import pytest

import rmsnorm_cpu as rn
from rmsnorm_cpu import rms_norm_gufunc

DTYPES = [np.float16, np.float32, np.float64]
# Tight enough to catch a wrong stride or weight, loose enough for a strided
# kernel that may round differently in the last bits (SPEC: layouts).
RTOL = {np.float16: 2e-3, np.float32: 1e-6, np.float64: 1e-14}


def test_is_a_generalized_ufunc():
    assert isinstance(rms_norm_gufunc, np.ufunc)
    assert rms_norm_gufunc.signature == "(n),(n)->(n)"
    assert (rms_norm_gufunc.nin, rms_norm_gufunc.nout) == (2, 1)
    assert {"ee->e", "ef->e", "ff->f", "dd->d"} <= set(rms_norm_gufunc.types)


def test_docstring_example():
    test = doctest.DocTestParser().get_doctest(rms_norm_gufunc.__doc__, {}, "rms_norm_gufunc", None, 0)
    runner = doctest.DocTestRunner(optionflags=doctest.NORMALIZE_WHITESPACE)
    runner.run(test)
    assert runner.tries > 0 and runner.failures == 0


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", [1, 7, 16, 17, 4097])
def test_bitwise_same_as_rms_norm(isa, rng, dtype, n):
    x = rng.standard_normal((3, 5, n)).astype(dtype)
    w = rng.uniform(0.5, 1.5, n).astype(dtype)
    y = rms_norm_gufunc(x, w)
    assert y.dtype == dtype
    np.testing.assert_array_equal(y, rn.rms_norm(x, w))


def test_float16_data_float32_weight_keeps_float16(isa, rng):
    x = rng.standard_normal((4, 33)).astype(np.float16)
    w = rng.uniform(0.5, 1.5, 33).astype(np.float32)
    y = rms_norm_gufunc(x, w)
    assert y.dtype == np.float16
    np.testing.assert_array_equal(y, rn.rms_norm(x, w))


@pytest.mark.parametrize("dtype", DTYPES)
def test_non_contiguous_core_and_outer_steps(isa, rng, dtype):
    base = rng.standard_normal((6, 2, 40)).astype(dtype)
    x = base[::2, 1, ::-3]                      # outer and core steps both strided
    wbase = rng.uniform(0.5, 1.5, 3 * x.shape[-1]).astype(dtype)
    w = wbase[::3]
    out = np.zeros((x.shape[0], 2 * x.shape[1]), dtype)[:, ::2]
    got = rms_norm_gufunc(x, w, out=out)
    assert got is out
    np.testing.assert_allclose(out, rn.rms_norm(np.ascontiguousarray(x), np.ascontiguousarray(w)),
                               rtol=RTOL[dtype], atol=0)


def test_weight_broadcast_per_row(isa, rng):
    """A weight that changes along the outer loop is converted row by row."""
    x = rng.standard_normal((2, 3, 9)).astype(np.float32)
    w = rng.uniform(0.5, 1.5, (3, 9)).astype(np.float32)
    y = rms_norm_gufunc(x, w)
    for i in range(2):
        for j in range(3):
            np.testing.assert_array_equal(y[i, j], rn.rms_norm(x[i, j], w[j]))


def test_axes_keyword(isa, rng):
    x = rng.standard_normal((8, 5)).astype(np.float64)
    w = rng.uniform(0.5, 1.5, 8)
    y = rms_norm_gufunc(x, w, axes=[(0,), (0,), (0,)])
    np.testing.assert_allclose(y, rn.rms_norm(x, w, axis=0), rtol=1e-14)


def test_out_in_place(isa, rng):
    x = rng.standard_normal((4, 12)).astype(np.float32)
    w = rng.uniform(0.5, 1.5, 12).astype(np.float32)
    expected = rn.rms_norm(x, w)
    assert rms_norm_gufunc(x, w, out=x) is x
    np.testing.assert_array_equal(x, expected)


def test_no_floating_point_warnings(isa):
    """The robust path overflows internally; NaN follows IEEE; neither warns."""
    with np.errstate(all="raise"):
        np.testing.assert_array_equal(rms_norm_gufunc(np.full(8, 1e30, np.float32), np.ones(8, np.float32)),
                                      np.ones(8, np.float32))
        y = rms_norm_gufunc(np.array([[1.0, np.nan], [1.0, 1.0]]), np.ones(2))
    assert np.isnan(y[0]).all() and np.isfinite(y[1]).all()


def test_empty(isa):
    assert rms_norm_gufunc(np.empty((0, 4), np.float32), np.ones(4, np.float32)).shape == (0, 4)
    assert rms_norm_gufunc(np.empty((3, 0)), np.empty(0)).shape == (3, 0)


def test_bad_input_raises():
    with pytest.raises(TypeError):
        rms_norm_gufunc(np.ones(3, np.complex128), np.ones(3))
    with pytest.raises(ValueError, match="mismatch"):
        rms_norm_gufunc(np.ones((2, 3)), np.ones(4))


def test_array_ufunc_override_sees_the_call(rng):
    class Tagged:
        def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
            return ("seen", ufunc, method)

    assert rms_norm_gufunc(Tagged(), np.ones(3)) == ("seen", rms_norm_gufunc, "__call__")


def test_dask_array_stays_lazy(rng):
    da = pytest.importorskip("dask.array", reason="dask[array] is not installed")
    x = rng.standard_normal((6, 16)).astype(np.float32)
    w = rng.uniform(0.5, 1.5, 16).astype(np.float32)
    lazy = rms_norm_gufunc(da.from_array(x, chunks=(2, 16)), w)
    assert isinstance(lazy, da.Array)
    np.testing.assert_array_equal(lazy.compute(scheduler="synchronous"), rn.rms_norm(x, w))


def test_unaligned_input(isa, rng):
    """A byte stride that is not a multiple of the itemsize (a packed record
    field): NumPy hands the loop an aligned copy."""
    rec = np.zeros((4, 10), dtype=[("tag", "u1"), ("value", "<f4")])
    rec["value"] = rng.standard_normal((4, 10))
    x = rec["value"]
    assert not x.flags.aligned and x.strides == (50, 5)
    w = rng.uniform(0.5, 1.5, 10).astype(np.float32)
    np.testing.assert_array_equal(rms_norm_gufunc(x, w), rn.rms_norm(np.ascontiguousarray(x), w))
