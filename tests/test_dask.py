"""rms_norm on Dask arrays, run on a real dask.distributed cluster of worker processes."""

import numpy as np
import pytest

da = pytest.importorskip("dask.array", reason="dask[array] is not installed")
distributed = pytest.importorskip("distributed", reason="dask.distributed is not installed")

import rmsnorm_cpu as rn


@pytest.fixture(scope="module")
def client():
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) \
            as cluster, distributed.Client(cluster) as client:
        yield client


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


def test_layer_with_dask(client, rng):
    layer = rn.RMSNorm(16, bias=True)
    layer.weight[...] = rng.uniform(0.5, 1.5, 16)
    x = rng.standard_normal((12, 16))
    lazy = layer(da.from_array(x, chunks=(4, 16)))
    assert isinstance(lazy, da.Array)
    np.testing.assert_array_equal(client.compute(lazy).result(), rn.rms_norm(x, layer.weight, layer.bias))


def test_split_normalized_axis_raises_at_call_time_with_the_fix():
    x = da.ones((8, 16), chunks=(4, 8))
    with pytest.raises(ValueError, match=r"rechunk first: x\.rechunk\(\{1: -1\}\)"):
        rn.rms_norm(x)
    assert rn.rms_norm(x.rechunk({1: -1})).numblocks == (2, 1)


def test_bad_arguments_raise_at_call_time():
    x = da.ones((4, 6), chunks=(2, 6))
    with pytest.raises(ValueError, match="eps"):
        rn.rms_norm(x, eps=-1.0)
    with pytest.raises(ValueError, match="weight"):
        rn.rms_norm(x, np.ones(5))
    with pytest.raises(np.exceptions.AxisError):
        rn.rms_norm(x, axis=2)
    with pytest.raises(TypeError, match="out"):
        rn.rms_norm(x, out=np.empty((4, 6)))
