"""add_rms_norm(x, r) is bitwise rms_norm(x + r) on every layout: the sum added
in the accumulator type and rounded once to the residual's dtype, then
normalized by the kernel rms_norm would pick for that layout."""

import numpy as np
import pytest

import rmsnorm_cpu as rn

ml_dtypes = pytest.importorskip("ml_dtypes")

DTYPES = [np.dtype(np.float16), np.dtype(ml_dtypes.bfloat16), np.dtype(np.float32), np.dtype(np.float64)]



# (shape of the data as created, how a view of it is taken, axis, groups)
LAYOUTS = [
    ((6, 33), lambda a: a, 0, 1),                           # the outer axis of a C array (columns)
    ((33, 6), lambda a: a.T, -1, 1),                        # a transposed view, last axis
    ((33, 6), lambda a: a.T, 0, 1),
    ((8, 70), lambda a: a, 0, 2),                           # columns in groups
    ((4, 20, 5), lambda a: a, 1, 1),                        # a middle axis
    ((4, 20, 5), lambda a: a, (0, 1), 4),
    ((4, 20, 5), lambda a: a, (0, 2), 1),
    ((3, 7, 24), lambda a: a[:, :, ::2], -1, 3),            # a strided last axis
    ((2, 3, 16, 9), lambda a: np.moveaxis(a, 1, -1), 1, 1),  # NCHW-like: channels first
    ((9, 300), lambda a: a, 0, 1),                          # more positions than one column chunk
]


def _bits(a):
    return a.view(f"u{a.itemsize}")


def _reference(x, r, weight, axis, groups):
    acc = np.float64 if np.float64 in (x.dtype, r.dtype) else np.float32
    s = (x.astype(acc) + r.astype(acc)).astype(r.dtype)
    return rn.rms_norm(s, weight, axis=axis, groups=groups, dtype=x.dtype), s


@pytest.mark.parametrize("layout", range(len(LAYOUTS)))
@pytest.mark.parametrize("x_dtype", DTYPES, ids=str)
@pytest.mark.parametrize("r_dtype", DTYPES, ids=str)
def test_add_is_bitwise_the_two_steps(isa, rng, layout, x_dtype, r_dtype):
    shape, view, axis, groups = LAYOUTS[layout]
    x = view(rng.standard_normal(shape).astype(x_dtype))
    r = view(rng.standard_normal(shape).astype(r_dtype))
    weight = None if layout % 2 else _weight(x.shape, axis, rng)
    expected_y, expected_r = _reference(x, r, weight, axis, groups)
    y, new_r = rn.add_rms_norm(x, r, weight, axis=axis, groups=groups)
    np.testing.assert_array_equal(_bits(new_r), _bits(expected_r))
    np.testing.assert_array_equal(_bits(y), _bits(expected_y))


def _weight(shape, axis, rng):
    axes = (axis,) if isinstance(axis, int) else axis
    return rng.standard_normal(tuple(shape[a] for a in axes)).astype(np.float32)


@pytest.mark.parametrize("layout", range(len(LAYOUTS)))
def test_add_in_place_is_bitwise_the_two_steps(isa, rng, layout):
    shape, view, axis, groups = LAYOUTS[layout]
    x = view(rng.standard_normal(shape).astype(np.float16))
    r = view(rng.standard_normal(shape).astype(np.float32))
    expected_y, expected_r = _reference(x, r, None, axis, groups)
    y, new_r = rn.add_rms_norm(x, r, axis=axis, groups=groups, inplace=True)
    assert y is x and new_r is r
    np.testing.assert_array_equal(_bits(r), _bits(expected_r))
    np.testing.assert_array_equal(_bits(x), _bits(expected_y))
