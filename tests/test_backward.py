"""rms_norm_backward: finite differences in float64, torch autograd, determinism, on every
ISA tier; errors."""

import numpy as np
import pytest
from numpy.exceptions import AxisError

import rmsnorm_cpu as rn
from rmsnorm_cpu import _spec
from helpers import FLOAT_DTYPES, readme_table_rows, X


def numeric_grads(x, w, b, dy, h=1e-6, **kw):
    """Central differences of sum(dy * rms_norm(x, w, b)) in float64."""
    def f(x_, w_, b_):
        return float(np.sum(dy * rn.rms_norm(x_, w_, b_, **kw)))

    grads = []
    for arr in (x, w, b):
        g = np.zeros_like(arr)
        flat, gflat = arr.reshape(-1), g.reshape(-1)
        for i in range(flat.size):
            old = flat[i]
            flat[i] = old + h
            up = f(x, w, b)
            flat[i] = old - h
            down = f(x, w, b)
            flat[i] = old
            gflat[i] = (up - down) / (2 * h)
        grads.append(g)
    return grads


@pytest.mark.usefixtures("isa")
@pytest.mark.parametrize("kw", [
    {}, {"eps_mode": "add"}, {"eps_mode": "clamp", "eps": 1e-3}, {"groups": 3}, {"axis": 0},
    {"axis": (0, 1)}, {"weight_offset": 1.0}, {"eps": 0.0},
], ids=str)
def test_finite_differences(rng, kw):
    axis = kw.get("axis", -1)
    x = rng.standard_normal((4, 6))
    norm_shape = tuple(x.shape[a] for a in sorted(np.atleast_1d(axis) % 2))
    w = rng.standard_normal(norm_shape)
    w.reshape(-1)[1] = 0.0  # zero weights are fine: never divided by
    b = rng.standard_normal(norm_shape)
    dy = rng.standard_normal(x.shape)
    dx, dw, db = rn.rms_norm_backward(dy, x, w, b, **kw)
    ndx, ndw, ndb = numeric_grads(x, w, b, dy, **kw)
    np.testing.assert_allclose(dx, ndx, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(dw, ndw, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(db, ndb, rtol=1e-6, atol=1e-7)


@pytest.mark.usefixtures("isa")
def test_nchw_axis1_and_broadcast_weight(rng):
    x = rng.standard_normal((2, 6, 3, 3))
    w = rng.standard_normal((6, 1, 1))  # broadcast weight over the normalized (6, 3, 3)
    dy = rng.standard_normal(x.shape)
    for axis in (1, (1, 2, 3)):
        weight = w[:, 0, 0] if axis == 1 else w
        dx, dw, db = rn.rms_norm_backward(dy, x, weight, 0.5, axis=axis)
        ndx, ndw, ndb = numeric_grads(x, np.array(weight, copy=True), np.array(0.5), dy, axis=axis)
        np.testing.assert_allclose(dx, ndx, rtol=1e-6, atol=1e-7)
        np.testing.assert_allclose(dw, ndw, rtol=1e-6, atol=1e-7)
        assert dw.shape == weight.shape and db.shape == () and db.dtype == np.float64
        np.testing.assert_allclose(db, ndb, rtol=1e-6)


@pytest.mark.usefixtures("isa")
def test_clamp_and_add_kinks():
    x = np.zeros((1, 4))
    dy = np.ones((1, 4))
    dx, _, _ = rn.rms_norm_backward(dy, x, eps_mode="add", eps=1e-3)
    np.testing.assert_allclose(dx, 1 / 1e-3)        # rms term's gradient taken as 0
    x = np.full((1, 4), 1e-5)
    dx, _, _ = rn.rms_norm_backward(dy, x, eps_mode="clamp", eps=1e-3)
    np.testing.assert_allclose(dx, 1 / 1e-3)        # constant rstd = 1/eps


@pytest.mark.usefixtures("isa")
@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=str)
def test_rstd_given_matches_recomputed_and_threads_bitwise(rng, dtype):
    x = rng.standard_normal((300, 257)).astype(dtype)
    dy = rng.standard_normal((300, 257)).astype(dtype)
    w = rng.standard_normal(257).astype(np.float32)
    _, rstd = rn.rms_norm(x, w, return_rstd=True)
    a = rn.rms_norm_backward(dy, x, w, 0.0, rstd=rstd, n_threads=1)
    b = rn.rms_norm_backward(dy, x, w, 0.0, n_threads=2)
    for u, v in zip(a, b):
        np.testing.assert_array_equal(np.atleast_1d(u).view(np.uint8), np.atleast_1d(v).view(np.uint8))
    assert a[0].dtype == dtype and a[1].dtype == np.float32 and a[2].dtype == np.float64
    ref = rn.rms_norm_backward(dy.astype(np.float64), x.astype(np.float64), w.astype(np.float64))
    tol = 1e-2 if np.dtype(dtype).itemsize == 2 else 1e-4
    np.testing.assert_allclose(a[0].astype(np.float64), ref[0], rtol=tol, atol=tol)
    np.testing.assert_allclose(a[1], ref[1], rtol=tol, atol=tol * 10)


@pytest.mark.usefixtures("isa")
def test_against_torch_autograd(rng):
    torch = pytest.importorskip("torch")
    x = rng.standard_normal((16, 4096)).astype(np.float32)
    w = rng.standard_normal(4096).astype(np.float32)
    dy = rng.standard_normal((16, 4096)).astype(np.float32)
    tx = torch.tensor(x, requires_grad=True)
    tw = torch.tensor(w, requires_grad=True)
    ty = torch.nn.functional.rms_norm(tx, (4096,), tw, eps=1e-6)
    ty.backward(torch.tensor(dy))
    y = rn.rms_norm(x, w)
    dx, dw, _ = rn.rms_norm_backward(dy, x, w)
    np.testing.assert_allclose(y, ty.detach().numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(dx, tx.grad.numpy(), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(dw, tw.grad.numpy(), rtol=1e-4, atol=1e-3)


@pytest.mark.usefixtures("isa")
def test_zero_size_backward():
    dx, dw, db = rn.rms_norm_backward(np.zeros((0, 8)), np.zeros((0, 8)), np.ones(8), np.zeros(8))
    assert dx.shape == (0, 8)
    np.testing.assert_array_equal(dw, 0.0)
    np.testing.assert_array_equal(db, 0.0)


@pytest.mark.usefixtures("isa")
def test_param_grad_overflow_is_silent_inf():
    # A float16 weight's gradient that overflows float16 is inf like an
    # overflowing dx, not a RuntimeWarning.
    x = np.ones((64, 8), np.float16)
    dy = np.full((64, 8), 60000, np.float16)
    _, dw, db = rn.rms_norm_backward(dy, x, np.ones(8, np.float16), np.zeros(8, np.float16))
    assert dw.dtype == db.dtype == np.float16
    assert np.isposinf(dw).all() and np.isposinf(db).all()


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=str)
def test_param_grad_of_one_block(rng, dtype):
    # One block (a decode row) is returned as it is: the bits of the sum over blocks.
    plan = _spec.plan((3, 37), -1, 1)
    partials = rng.standard_normal((1, 37)).astype(dtype)
    one = _spec.param_grad(partials, np.ones(37, dtype), plan)
    summed = _spec.param_grad(np.concatenate([partials, np.zeros_like(partials)]), np.ones(37, dtype), plan)
    assert one.dtype == summed.dtype == dtype and one.shape == summed.shape == (37,)
    np.testing.assert_array_equal(one.view(f"u{one.itemsize}"), summed.view(f"u{one.itemsize}"))


@pytest.mark.usefixtures("isa")
@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64], ids=str)
def test_dx_out(rng, dtype):
    """dx into a preallocated array (any strides), dy or x itself: the bits of the fresh dx."""
    x = rng.standard_normal((6, 37)).astype(dtype)
    dy = rng.standard_normal((6, 37)).astype(dtype)
    w = rng.uniform(0.5, 1.5, 37).astype(dtype)
    dx, dw, _ = rn.rms_norm_backward(dy, x, w)
    out = np.empty_like(x)
    got = rn.rms_norm_backward(dy, x, w, dx_out=out)
    assert got[0] is out
    np.testing.assert_array_equal(out.view(np.uint8), dx.view(np.uint8))
    np.testing.assert_array_equal(got[1], dw)
    strided = np.zeros((6, 74), dtype)
    rn.rms_norm_backward(dy, x, w, dx_out=strided[:, ::2])
    np.testing.assert_array_equal(strided[:, ::2].copy().view(np.uint8), dx.view(np.uint8))
    assert not strided[:, 1::2].any()
    for target in ("dy", "x"):
        dyc, xc = dy.copy(), x.copy()
        into = dyc if target == "dy" else xc
        assert rn.rms_norm_backward(dyc, xc, w, dx_out=into)[0] is into
        np.testing.assert_array_equal(into.view(np.uint8), dx.view(np.uint8))
    rstd = rn.rms_norm(x, w, return_rstd=True)[1]
    np.testing.assert_array_equal(rn.rms_norm_backward(dy, x, w, rstd=rstd, dx_out=np.empty_like(x))[0], dx)


@pytest.mark.usefixtures("isa")
def test_scalar_parameters_get_0d_arrays():
    x = np.arange(6.0).reshape(2, 3)
    _, dw, db = rn.rms_norm_backward(np.ones((2, 3)), x, 2.0, 1.0)
    assert type(dw) is np.ndarray and dw.shape == () and dw.dtype == np.float64
    assert type(db) is np.ndarray and db.shape == () and db == 2 * 3
    _, dw, _ = rn.rms_norm_backward(np.ones((2, 3), np.float32), x.astype(np.float32), np.float32(2.0))
    assert type(dw) is np.ndarray and dw.shape == () and dw.dtype == np.float32


# ---- bad input: errors before anything is written ------------------------------------------------



def test_backward_bad_input():
    with pytest.raises(ValueError, match="dy of shape"):
        rn.rms_norm_backward(np.ones((4, 5)), X)
    with pytest.raises(ValueError, match="rstd has shape"):
        rn.rms_norm_backward(np.ones((4, 6)), X, rstd=np.ones(4))
    with pytest.raises(TypeError, match="dy must hold"):
        rn.rms_norm_backward(np.ones((4, 6), np.complex128), X)


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


@pytest.mark.parametrize("function, calls", [("rms_norm_backward", BAD_BACKWARD_CALLS)])
def test_readme_bad_input_table_lists_every_row(function, calls):
    missing = [c[0] for c in calls if (function, c[0]) not in readme_table_rows()]
    assert not missing, f"README's bad input table lacks rows for {function}: {missing}"
