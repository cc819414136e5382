"""add_rms_norm: bitwise the two steps apart, in place, mixed dtypes."""

import numpy as np
import pytest

import rmsnorm_cpu as rn
from helpers import FLOAT_DTYPES

pytestmark = pytest.mark.usefixtures("isa")


def two_steps(x, residual, weight=None, **kw):
    acc = np.float64 if np.float64 in (x.dtype, residual.dtype) else np.float32
    new_residual = (x.astype(acc) + residual.astype(acc)).astype(residual.dtype)
    return rn.rms_norm(new_residual, weight, dtype=x.dtype, **kw), new_residual


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


def test_inplace_vllm_convention(rng):
    x = rng.standard_normal((4, 64)).astype(np.float16)
    r = rng.standard_normal((4, 64)).astype(np.float16)
    ey, er = two_steps(x, r, None, eps=1e-5)
    y, new_r = rn.add_rms_norm(x, r, eps=1e-5, inplace=True)
    assert y is x and new_r is r
    np.testing.assert_array_equal(x, ey)
    np.testing.assert_array_equal(r, er)


def test_axis_groups_and_strided(rng):
    x = rng.standard_normal((2, 8, 5))
    r = rng.standard_normal((2, 8, 5))[:, ::-1]
    y, new_r = rn.add_rms_norm(x, r, axis=1, groups=2)
    ey, er = two_steps(x, r, axis=1, groups=2)
    np.testing.assert_array_equal(new_r, er)
    np.testing.assert_allclose(y, ey, rtol=1e-15)


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
