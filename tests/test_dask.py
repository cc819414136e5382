"""rms_norm, add_rms_norm, rms_norm_backward and the gated norm on Dask arrays: lazy, block by block, the eager results and errors."""

import threading

import numpy as np
import pytest

da = pytest.importorskip("dask.array", reason="dask[array] is not installed")
distributed = pytest.importorskip("distributed", reason="dask.distributed is not installed")

import dask
from helpers import BF16, X
from test_add import BAD_ADD_CALLS
from test_backward import BAD_BACKWARD_CALLS
from test_forward import BAD_CALLS
from test_gated import BAD_GATED_BACKWARD_CALLS, BAD_GATED_CALLS

import rmsnorm_cpu as rn
from rmsnorm_cpu import _api

FLOATS = [np.float32, np.float16, np.float64] + ([] if BF16 is None else [BF16])


@pytest.fixture(scope="module")
def client():
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) \
            as cluster, distributed.Client(cluster) as client:
        yield client


@pytest.fixture
def local_scheduler():
    """The threaded scheduler, whatever Client an earlier test left as the default."""
    with dask.config.set(scheduler="threads"):
        yield


def _boom(block):
    raise RuntimeError("a block was computed")


def _exploding(shape, chunks, dtype=np.float32):
    """A Dask array whose blocks raise when computed, so a call that computes
    (or materializes) anything at call time fails."""
    return da.zeros(shape, dtype, chunks=chunks).map_blocks(_boom, dtype=dtype)


# -- on a real cluster of worker processes (the tasks pickle) ------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.float32, np.float16, np.float64])
def test_lazy_block_by_block_equals_numpy(client, rng, dtype):
    x = rng.standard_normal((40, 24)).astype(dtype)
    w = rng.uniform(0.5, 1.5, 24).astype(np.float32)
    lazy = rn.rms_norm(da.from_array(x, chunks=(10, 24)), w, eps=1e-5)
    assert isinstance(lazy, da.Array) and lazy.dtype == dtype and lazy.numblocks == (4, 1)
    np.testing.assert_array_equal(client.compute(lazy).result(), rn.rms_norm(x, w, eps=1e-5))


def test_channels_axis_groups_and_rstd(client, rng):
    x = rng.standard_normal((6, 8, 5, 5)).astype(np.float32)
    dx = da.from_array(x, chunks=(2, 8, 5, 3))
    y, rstd = rn.rms_norm(dx, np.ones(8), axis=1, groups=2, return_rstd=True)
    assert rstd.shape == (6, 5, 5, 2) and rstd.dtype == np.float32
    want_y, want_rstd = rn.rms_norm(x, np.ones(8), axis=1, groups=2, return_rstd=True)
    got_y, got_rstd = client.compute([y, rstd], sync=True)
    # A block of 3 positions runs the column kernel's tail where the whole
    # array runs full tiles: the last bits may differ (SPEC, layouts).
    np.testing.assert_allclose(got_y, want_y, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(got_rstd, want_rstd, rtol=1e-6)


def test_add_and_backward_on_the_cluster(client, rng):
    x = rng.standard_normal((30, 16)).astype(np.float32)
    r = rng.standard_normal((30, 16)).astype(np.float32)
    w = rng.uniform(0.5, 1.5, 16).astype(np.float32)
    lazy_x = da.from_array(x, chunks=(8, 16))
    got = client.compute([*rn.add_rms_norm(lazy_x, r, w), *rn.rms_norm_backward(r, lazy_x, w)], sync=True)
    want = [*rn.add_rms_norm(x, r, w), *rn.rms_norm_backward(r, x, w)]
    for g, e in zip(got[:3], want[:3]):  # y, new_residual, dx
        np.testing.assert_array_equal(g, e)
    _close_to(got[3], want[3], np.float32)
    assert want[4] is None and got[4] is None


def test_layer_with_dask(client, rng):
    layer = rn.RMSNorm(16, bias=True)
    layer.weight[...] = rng.uniform(0.5, 1.5, 16)
    x = rng.standard_normal((12, 16))
    lazy = layer(da.from_array(x, chunks=(4, 16)))
    assert isinstance(lazy, da.Array)
    np.testing.assert_array_equal(client.compute(lazy).result(), rn.rms_norm(x, layer.weight, layer.bias))


# -- nothing is computed at call time --------------------------------------------------------------------------------

BIG = (200_000, 1024)  # 800 MB of float32 if anything were materialized
BIG_CHUNKS = (10_000, 1024)


def _lazy_calls():
    big = _exploding(BIG, BIG_CHUNKS)
    rows = np.ones((BIG[0], 1), np.float32)
    # Dask copies a NumPy argument (da.from_array): a smaller one keeps the test light.
    small = _exploding((2000, 1024), (500, 1024))
    return {
        "rms_norm": lambda: [rn.rms_norm(big, np.ones(1024))],
        "rms_norm return_rstd": lambda: rn.rms_norm(big, return_rstd=True),
        "add_rms_norm x": lambda: rn.add_rms_norm(small, np.ones(small.shape, np.float16)),
        "add_rms_norm residual": lambda: rn.add_rms_norm(np.ones(small.shape, np.float16), small),
        "add_rms_norm both": lambda: rn.add_rms_norm(big, big, np.ones(1024), np.zeros(1024)),
        "rms_norm_backward": lambda: rn.rms_norm_backward(big, big, np.ones(1024), 0.0),
        "rms_norm_backward rstd": lambda: rn.rms_norm_backward(big, big, 2.0, rstd=rows),
        "rms_norm_backward Dask rstd": lambda: rn.rms_norm_backward(big, big, rstd=da.from_array(rows)),
        "Dask weight and bias": lambda: [rn.rms_norm(da.ones((4, 1024), chunks=(2, 1024)), _exploding(1024, 1024),
                                                     _exploding(1024, 1024))],
        "Dask weight of backward": lambda: rn.rms_norm_backward(big, big, _exploding(1024, 1024)),
        "rms_norm_gated": lambda: [rn.rms_norm_gated(big, big, np.ones(1024))],
        "rms_norm_gated gate": lambda: [rn.rms_norm_gated(np.ones(small.shape, np.float16), small)],
        "rms_norm_gated return_rstd": lambda: rn.rms_norm_gated(big, big, return_rstd=True),
        "rms_norm_gated_backward": lambda: rn.rms_norm_gated_backward(big, big, big, np.ones(1024), 0.0,
                                                                      rstd=rows),
    }


@pytest.mark.parametrize("name", list(_lazy_calls()))
def test_nothing_is_computed_at_call_time(local_scheduler, name):
    results = [r for r in _lazy_calls()[name]() if r is not None]
    assert results and all(dask.is_dask_collection(r) for r in results)
    with pytest.raises(RuntimeError, match="a block was computed"):
        results[0].compute()


def _counting(monkeypatch, name):
    """Count the calls of the eager function `name` that the Dask path runs."""
    calls = []
    lock = threading.Lock()
    eager = getattr(_api, name)

    def counted(*args, **kwargs):
        with lock:
            calls.append(1)
        return eager(*args, **kwargs)

    monkeypatch.setattr(_api, name, counted)
    return calls


@pytest.mark.parametrize("name, call", [
    ("rms_norm", lambda x: rn.rms_norm(x, return_rstd=True)),
    ("add_rms_norm", lambda x: rn.add_rms_norm(x, x)),
    ("rms_norm_backward", lambda x: rn.rms_norm_backward(x, x, np.ones(6), np.ones(6))),
    ("rms_norm_gated", lambda x: rn.rms_norm_gated(x, x, return_rstd=True)),
    ("rms_norm_gated_backward", lambda x: rn.rms_norm_gated_backward(x, x, x, np.ones(6), np.ones(6))),
])
def test_one_task_per_block_computes_every_output(local_scheduler, monkeypatch, name, call):
    calls = _counting(monkeypatch, name)
    results = call(da.ones((12, 6), np.float32, chunks=(3, 6)))
    at_call_time = len(calls)  # the checks, on empty stand-ins
    dask.compute(*results)
    assert len(calls) - at_call_time == 4


# -- the eager results ------------------------------------------------------------------------------------------------

FORWARD_CASES = {
    # id: (shape, chunks, kwargs); only batch dims chunked: the blocks run the kernel of the whole array
    "rows": ((40, 24), (7, 24), {}),
    "groups": ((9, 32), (4, 32), dict(groups=4, eps_mode="add")),
    "last two axes": ((6, 4, 10), (2, 4, 10), dict(axis=(-2, -1), weight_offset=1.0)),
    "channels": ((6, 8, 5, 5), (2, 8, 5, 5), dict(axis=1, groups=2, eps_mode="clamp")),
    "first axis": ((12, 3, 7), (12, 1, 7), dict(axis=0)),
    "one slice": ((16,), (16,), {}),
    "each element": ((5, 3), (2, 3), dict(axis=())),
}


def _params(shape, kwargs, rng):
    norm_axes = np.lib.array_utils.normalize_axis_tuple(kwargs.get("axis", -1), len(shape))
    norm_shape = tuple(shape[a] for a in sorted(norm_axes))
    return rng.uniform(0.5, 1.5, norm_shape).astype(np.float32), rng.standard_normal(norm_shape).astype(np.float16)


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("case", list(FORWARD_CASES))
def test_rms_norm_equals_eager(local_scheduler, rng, case, dtype):
    shape, chunks, kwargs = FORWARD_CASES[case]
    x = rng.standard_normal(shape).astype(dtype)
    w, b = _params(shape, kwargs, rng)
    y, rstd = dask.compute(*rn.rms_norm(da.from_array(x, chunks=chunks), w, b, return_rstd=True, **kwargs))
    want_y, want_rstd = rn.rms_norm(x, w, b, return_rstd=True, **kwargs)
    assert y.dtype == want_y.dtype and rstd.dtype == want_rstd.dtype and rstd.shape == want_rstd.shape
    np.testing.assert_array_equal(y, want_y)
    np.testing.assert_array_equal(rstd, want_rstd)


@pytest.mark.parametrize("dask_args", [("x",), ("residual",), ("x", "residual")])
@pytest.mark.parametrize("case", ["rows", "groups", "channels", "first axis"])
def test_add_rms_norm_equals_eager(local_scheduler, rng, case, dask_args):
    shape, chunks, kwargs = FORWARD_CASES[case]
    arrays = {"x": rng.standard_normal(shape).astype(np.float16),
              "residual": rng.standard_normal(shape).astype(np.float32)}
    w, b = _params(shape, kwargs, rng)
    lazy = {name: da.from_array(a, chunks=chunks) if name in dask_args else a for name, a in arrays.items()}
    if len(dask_args) == 2:  # chunked otherwise: rechunked to x's chunks
        lazy["residual"] = da.from_array(arrays["residual"], chunks=-1)
    y, new_residual = dask.compute(*rn.add_rms_norm(lazy["x"], lazy["residual"], w, b, **kwargs))
    want_y, want_residual = rn.add_rms_norm(arrays["x"], arrays["residual"], w, b, **kwargs)
    assert y.dtype == np.float16 and new_residual.dtype == np.float32
    np.testing.assert_array_equal(y, want_y)
    np.testing.assert_array_equal(new_residual, want_residual)


def _close_to(got, want, x_dtype):
    """dweight/dbias: the blocks' partial sums (in float32 for float32 x) are
    reduced in another order than the eager row blocks' (running sums over up
    to 16 slices), so close to the eager result, not bitwise."""
    if want is None:
        assert got is None
        return
    assert got.shape == want.shape and got.dtype == want.dtype
    rtol = max(16 * np.finfo(x_dtype).eps, 2 * np.finfo(want.dtype).eps)
    np.testing.assert_allclose(got.astype(np.float64), want.astype(np.float64), rtol=rtol, atol=rtol)


BACKWARD_PARAMS = {
    # id: (weight, bias) as functions of the normalized shape
    "float32 weight": (lambda s: np.linspace(0.5, 1.5, np.prod(s)).reshape(s).astype(np.float32), None),
    "float16 weight and bias": (lambda s: np.full(s, 1.25, np.float16), lambda s: np.zeros(s, np.float16)),
    "scalar weight and bias": (lambda s: 2.0, lambda s: 0.5),
    "no parameters": (None, None),
    "broadcast weight": (lambda s: np.linspace(0.5, 1.5, s[-1]).astype(np.float64), lambda s: np.zeros((1,) * len(s))),
}


@pytest.mark.parametrize("params", list(BACKWARD_PARAMS))
@pytest.mark.parametrize("case", ["rows", "groups", "last two axes", "channels", "first axis", "one slice"])
def test_rms_norm_backward_equals_eager(local_scheduler, rng, case, params):
    shape, chunks, kwargs = FORWARD_CASES[case]
    x = rng.standard_normal(shape).astype(np.float32)
    dy = rng.standard_normal(shape).astype(np.float32)
    norm_shape = _params(shape, kwargs, rng)[0].shape
    w, b = (None if make is None else make(norm_shape) for make in BACKWARD_PARAMS[params])
    got = dask.compute(*rn.rms_norm_backward(da.from_array(dy, chunks=chunks), x, w, b, **kwargs))
    want = rn.rms_norm_backward(dy, x, w, b, **kwargs)
    np.testing.assert_array_equal(got[0], want[0])
    _close_to(got[1], want[1], x.dtype)
    _close_to(got[2], want[2], x.dtype)


def test_dask_weight_and_bias(local_scheduler, rng):
    x = rng.standard_normal((12, 3, 16)).astype(np.float32)
    dy = rng.standard_normal((12, 3, 16)).astype(np.float32)
    w = rng.uniform(0.5, 1.5, (3, 16)).astype(np.float16)
    b = rng.standard_normal((1, 16)).astype(np.float32)
    lazy_x = da.from_array(x, chunks=(5, 3, 16))
    lazy_w, lazy_b = da.from_array(w, chunks=(1, 8)), da.from_array(b)
    np.testing.assert_array_equal(rn.rms_norm(lazy_x, lazy_w, lazy_b, axis=(1, 2)).compute(),
                                  rn.rms_norm(x, w, b, axis=(1, 2)))
    got = dask.compute(*rn.rms_norm_backward(dy, lazy_x, lazy_w, lazy_b, axis=(1, 2)))
    want = rn.rms_norm_backward(dy, x, w, b, axis=(1, 2))
    np.testing.assert_array_equal(got[0], want[0])
    _close_to(got[1], want[1], x.dtype)
    _close_to(got[2], want[2], x.dtype)
    with pytest.raises(ValueError, match="weight of shape"):
        rn.rms_norm(lazy_x, lazy_w)


@pytest.mark.parametrize("rstd_kind", ["numpy", "dask"])
def test_rms_norm_backward_with_rstd(local_scheduler, rng, rstd_kind):
    x = rng.standard_normal((20, 3, 16)).astype(np.float16)
    dy = rng.standard_normal((20, 3, 16)).astype(np.float32)  # converted to x's dtype, as eager does
    w = rng.uniform(0.5, 1.5, 16).astype(np.float32)
    _, rstd = rn.rms_norm(x, w, groups=2, return_rstd=True)
    lazy_rstd = rstd if rstd_kind == "numpy" else da.from_array(rstd, chunks=(7, 2, 1))
    got = dask.compute(*rn.rms_norm_backward(da.from_array(dy, chunks=(5, 3, 16)), da.from_array(x, chunks=(4, 1, 16)),
                                             w, rstd=lazy_rstd, groups=2))
    want = rn.rms_norm_backward(dy, x, w, rstd=rstd, groups=2)
    np.testing.assert_array_equal(got[0], want[0])
    _close_to(got[1], want[1], np.float32)  # float16 x is reduced in float32


# -- errors: at call time, of the type the eager functions raise ------------------------------------------------------


def _daskable(a):
    return type(a) is np.ndarray and a.dtype.kind in "fiu" and a.ndim > 0


def _as_dask(a):
    return da.from_array(a, chunks=(2,) + a.shape[1:])


def _cases(calls, defaults, lazy_names):
    """(call, the argument made Dask) for each bad call that passes no output
    (the Dask path refuses every output: see below) and each argument that
    is an array Dask would hold."""
    cases = []
    for call in calls:
        kwargs = call[1]() if callable(call[1]) else call[1]
        if {"out", "residual_out", "dx_out", "inplace"} & set(kwargs):
            continue
        cases += [pytest.param(call, name, id=f"{call[0]}-{name}") for name in lazy_names
                  if _daskable(kwargs.get(name, defaults.get(name)))]
    return cases


def _arguments(call, lazy, defaults):
    kwargs = dict(call[1]() if callable(call[1]) else call[1])
    kwargs.update((name, kwargs.get(name, a)) for name, a in defaults.items())
    kwargs[lazy] = _as_dask(kwargs[lazy])
    return kwargs


@pytest.mark.parametrize("call, lazy", _cases(BAD_CALLS, {"x": X}, ["x"]))
def test_rms_norm_errors_as_eager(call, lazy):
    kwargs = _arguments(call, lazy, {"x": X})
    with pytest.raises(call[2], match=call[3]):
        rn.rms_norm(kwargs.pop("x"), **kwargs)


ADD_DEFAULTS = {"x": X, "residual": np.ones((4, 6), np.float32)}


@pytest.mark.parametrize("call, lazy", _cases(BAD_ADD_CALLS, ADD_DEFAULTS, ["x", "residual"]))
def test_add_rms_norm_errors_as_eager(call, lazy):
    kwargs = _arguments(call, lazy, ADD_DEFAULTS)
    with pytest.raises(call[2], match=call[3]):
        rn.add_rms_norm(kwargs.pop("x"), kwargs.pop("residual"), **kwargs)


BACKWARD_DEFAULTS = {"dy": np.ones((4, 6), np.float32), "x": X}


@pytest.mark.parametrize("call, lazy", _cases(BAD_BACKWARD_CALLS, BACKWARD_DEFAULTS, ["dy", "x", "rstd"]))
def test_rms_norm_backward_errors_as_eager(call, lazy):
    kwargs = _arguments(call, lazy, BACKWARD_DEFAULTS)
    if lazy == "rstd":  # with a Dask x
        kwargs["x"] = _as_dask(kwargs["x"])
    with pytest.raises(call[2], match=call[3]):
        rn.rms_norm_backward(kwargs.pop("dy"), kwargs.pop("x"), **kwargs)


def test_mismatched_shapes_are_named_as_they_are():
    lazy = da.ones((4, 6), chunks=(2, 6))
    with pytest.raises(ValueError, match=r"x of shape \(4, 6\) and residual of shape \(4, 5\) differ"):
        rn.add_rms_norm(lazy, np.ones((4, 5)))
    with pytest.raises(ValueError, match=r"rstd has shape \(3, 1\), expected \(4, 1\)"):
        rn.rms_norm_backward(lazy, lazy, rstd=da.ones((3, 1)))


@pytest.mark.parametrize("call", [
    lambda x: rn.rms_norm(x, out=np.empty((8, 16))),
    lambda x: rn.add_rms_norm(x, x, out=np.empty((8, 16))),
    lambda x: rn.add_rms_norm(x, x, residual_out=np.empty((8, 16))),
    lambda x: rn.add_rms_norm(x, np.ones((8, 16)), inplace=True),
    lambda x: rn.rms_norm_backward(x, x, dx_out=np.empty((8, 16))),
])
def test_outputs_are_refused(call):
    with pytest.raises(TypeError, match="Dask arrays are immutable"):
        call(da.ones((8, 16), chunks=(4, 16)))


@pytest.mark.parametrize("call, name", [
    (lambda x: rn.rms_norm(x), "x"),
    (lambda x: rn.add_rms_norm(np.ones((8, 16)), x), "residual"),
    (lambda x: rn.rms_norm_backward(x, x.rechunk({1: -1})), "dy"),
])
def test_split_normalized_axis_raises_at_call_time_with_the_fix(call, name):
    with pytest.raises(ValueError, match=rf"rechunk first: {name}\.rechunk\(\{{1: -1\}}\)"):
        call(da.ones((8, 16), chunks=(4, 8)))
    assert rn.rms_norm(da.ones((8, 16), chunks=(4, 8)).rechunk({1: -1})).numblocks == (2, 1)


def test_unknown_chunk_sizes_are_refused():
    x = da.ones((8, 16), chunks=(4, 16))
    with pytest.raises(ValueError, match="compute_chunk_sizes"):
        rn.rms_norm(x[x[:, 0] > 0])


@pytest.mark.parametrize("nbg", [True, False])
@pytest.mark.parametrize("case", ["rows", "groups", "channels", "first axis", "one slice"])
def test_rms_norm_gated_equals_eager(local_scheduler, rng, case, nbg):
    shape, chunks, kwargs = FORWARD_CASES[case]
    kwargs = dict(kwargs, norm_before_gate=nbg)
    x, gate = rng.standard_normal(shape).astype(np.float32), rng.standard_normal(shape).astype(np.float16)
    w, b = _params(shape, kwargs, rng)
    y, rstd = rn.rms_norm_gated(x, gate, w, b, return_rstd=True, **kwargs)
    lazy_y, lazy_rstd = rn.rms_norm_gated(da.from_array(x, chunks=chunks), gate, w, b, return_rstd=True, **kwargs)
    np.testing.assert_array_equal(lazy_y.compute(), y)
    np.testing.assert_array_equal(lazy_rstd.compute(), rstd)
    np.testing.assert_array_equal(rn.rms_norm_gated(x, da.from_array(gate, chunks=chunks), w, b, **kwargs).compute(),
                                  y)
    dy = rng.standard_normal(shape).astype(np.float32)
    want = rn.rms_norm_gated_backward(dy, x, gate, w, b, rstd=rstd, **kwargs)
    got = dask.compute(*rn.rms_norm_gated_backward(da.from_array(dy, chunks=chunks), x, gate, w, b, rstd=rstd,
                                                   **kwargs))
    for a, e in zip(got, want):
        assert a.dtype == e.dtype and a.shape == e.shape
        np.testing.assert_allclose(a, e, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_array_equal(got[1], want[1])


GATED_DEFAULTS = {"x": X, "gate": np.ones((4, 6), np.float32)}
GATED_BACKWARD_DEFAULTS = {"dy": np.ones((4, 6)), "x": X, "gate": np.ones((4, 6))}


@pytest.mark.parametrize("call, lazy", _cases(BAD_GATED_CALLS, GATED_DEFAULTS, ["x", "gate"]))
def test_rms_norm_gated_errors_as_eager(call, lazy):
    kwargs = _arguments(call, lazy, GATED_DEFAULTS)
    with pytest.raises(call[2], match=call[3]):
        rn.rms_norm_gated(kwargs.pop("x"), kwargs.pop("gate"), **kwargs)


@pytest.mark.parametrize("call, lazy", _cases(BAD_GATED_BACKWARD_CALLS, GATED_BACKWARD_DEFAULTS, ["dy", "x", "gate"]))
def test_rms_norm_gated_backward_errors_as_eager(call, lazy):
    kwargs = _arguments(call, lazy, GATED_BACKWARD_DEFAULTS)
    with pytest.raises(call[2], match=call[3]):
        rn.rms_norm_gated_backward(kwargs.pop("dy"), kwargs.pop("x"), kwargs.pop("gate"), **kwargs)


# -- rms_norm_quant ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("residual_dtype", [None, np.float32, np.float16])
def test_rms_norm_quant_equals_eager(local_scheduler, rng, residual_dtype):
    x = rng.standard_normal((10, 3, 16)).astype(np.float32)
    kw = dict(axis=-1, groups=2, quant_dtype="int8", scale_ub=2.0)
    if residual_dtype is None:
        q, scale = rn.rms_norm_quant(da.from_array(x, chunks=(3, 2, 16)), **kw)
        expected = rn.rms_norm_quant(x, **kw)
        got = (q, scale)
    else:
        r = rng.standard_normal(x.shape).astype(residual_dtype)
        got = rn.rms_norm_quant(da.from_array(x, chunks=(4, 3, 16)), residual=r, **kw)
        expected = rn.rms_norm_quant(x, residual=r, **kw)
    assert all(dask.is_dask_collection(a) for a in got)
    for lazy, eager in zip(got, expected):
        assert lazy.shape == eager.shape and lazy.dtype == eager.dtype
        np.testing.assert_array_equal(lazy.compute(), eager)


def test_rms_norm_quant_is_lazy_and_checks_now(local_scheduler):
    big = _exploding((8, 1024), (2, 1024))
    results = rn.rms_norm_quant(big, residual=big)
    with pytest.raises(RuntimeError, match="a block was computed"):
        results[0].compute()
    with pytest.raises(ValueError, match="quant_dtype"):
        rn.rms_norm_quant(big, quant_dtype="int4")
    with pytest.raises(ValueError, match="scale_ub"):
        rn.rms_norm_quant(big, scale_ub=0.0)
    with pytest.raises(TypeError, match="not supported for Dask"):
        rn.rms_norm_quant(big, out=np.empty((8, 1024), np.int8))
    with pytest.raises(ValueError, match="rechunk"):
        rn.rms_norm_quant(da.zeros((8, 1024), chunks=(2, 512)))
