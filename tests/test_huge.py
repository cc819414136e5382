"""Long slices and arrays past 2**31 elements: sums that do not saturate, 64-bit indices.

The > 2**31 tests need ~4.5 GiB each (float16, in place) and run only when
/proc/meminfo says that much is available (skipped with the reason otherwise).
They check sampled rows and positions, not the whole array, to stay fast.
"""

import numpy as np
import pytest
from helpers import FLOAT_DTYPES

import rmsnorm_cpu as rn

GiB = 1 << 30


def _available_bytes():
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _needs(nbytes):
    available = _available_bytes()
    if available < nbytes:
        pytest.skip(f"needs {nbytes / GiB:.1f} GiB of available memory, {available / GiB:.1f} GiB available")


@pytest.mark.usefixtures("isa")
@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=str)
def test_long_slice_sums_do_not_saturate(dtype):
    # A float32 running sum stops growing at 2**24 times its terms (the rms of
    # np.ones(2**27, float16) would come out sqrt(2)): the kernels sum blocks
    # of 4096 and add the block sums in double.
    n = 1 << 25
    x = np.ones(n, dtype)
    x[::2] = 3
    expected = np.array([3, 1]) / np.sqrt(5.0)
    tol = 1e-2 if x.itemsize == 2 else 1e-6
    y, rstd = rn.rms_norm(x, return_rstd=True)
    np.testing.assert_allclose(y[:2].astype(np.float64), expected, rtol=tol)
    np.testing.assert_allclose(rstd, [1 / np.sqrt(5.0)], rtol=1e-6)
    np.testing.assert_allclose(rn.add_rms_norm(x, np.zeros_like(x))[0][-2:].astype(np.float64), expected, rtol=tol)
    columns = np.stack([x[: n // 2], x[: n // 2]], axis=1)  # 2 positions of n // 2 channels: column kernel
    np.testing.assert_allclose(rn.rms_norm(columns, axis=0)[:2].astype(np.float64), expected[:, None] * [1, 1],
                               rtol=tol)
    dx, dw, _ = rn.rms_norm_backward(np.ones_like(x), x, np.ones(n, np.float32))
    # dx = rstd * (1 - xhat * mean(xhat)) with mean(xhat) = 2 / sqrt(5)
    r = 1 / np.sqrt(5.0)
    np.testing.assert_allclose(dx[:2].astype(np.float64), r * (1 - np.array([3, 1]) * r * 2 * r),
                               rtol=10 * tol, atol=10 * tol)
    np.testing.assert_allclose(dw[:2], expected, rtol=tol)


def test_row_longer_than_2_31():
    n = (1 << 31) + 17
    _needs(n * 2 + GiB // 2)
    x = np.ones(n, np.float16)
    marks = np.array([0, 5, (1 << 31) - 1, 1 << 31, (1 << 31) + 3, n - 1])
    x[marks] = 4
    ms = (n - marks.size + 16.0 * marks.size) / n
    rstd_expected = 1 / np.sqrt(ms + 1e-6)
    y, rstd = rn.rms_norm(x, 0.5, out=x, return_rstd=True)  # in place: one 4 GiB array
    assert y is x
    np.testing.assert_allclose(rstd, [rstd_expected], rtol=1e-6)
    samples = np.concatenate([marks, marks[1:] - 1, np.random.default_rng(0).integers(0, n, 2000)])
    values = np.where(np.isin(samples, marks), 4.0, 1.0)
    # An unwritten element would still hold 1 or 4; written ones hold half of that.
    np.testing.assert_allclose(y[samples].astype(np.float64), 0.5 * values * rstd_expected, rtol=2**-10)


def test_batch_of_more_than_2_31_elements():
    rows, d = (1 << 16) + 3, 1 << 15
    assert rows * d > 1 << 31
    _needs(rows * d * 2 + GiB // 2)
    x = np.ones((rows, d), np.float16)
    peak = np.arange(rows) * 7 % d  # one 4 per row, at a row-dependent place
    x[np.arange(rows), peak] = 4
    rstd_expected = 1 / np.sqrt((d + 15.0) / d + 1e-6)
    y, rstd = rn.rms_norm(x, 0.5, out=x, return_rstd=True)
    assert y is x
    np.testing.assert_allclose(rstd, rstd_expected, rtol=1e-6)
    checked = np.concatenate([[0, 1, (1 << 16) - 1, 1 << 16, rows - 1],
                              np.random.default_rng(0).integers(0, rows, 200)])
    expected = np.full((checked.size, d), 0.5 * rstd_expected)
    expected[np.arange(checked.size), peak[checked]] *= 4
    np.testing.assert_allclose(y[checked].astype(np.float64), expected, rtol=2**-10)


@pytest.mark.usefixtures("isa")
def test_weight_gradient_of_many_rows_keeps_precision():
    # A float32 running sum of dweight/dbias over 2**16 rows would be 6e-4 off
    # here (0.25% at 2**24 rows): blocks hold at most 1024 rows and their sums
    # are added in double.
    rows = 1 << 22
    x = np.ones((rows, 2), np.float32)
    dy = np.full((rows, 2), 0.1, np.float32)
    _, dw, db = rn.rms_norm_backward(dy, x, np.ones(2, np.float32), np.zeros(2, np.float32))
    exact = float(np.float32(0.1)) * rows
    np.testing.assert_allclose(db, exact, rtol=2e-5)
    np.testing.assert_allclose(dw, exact / np.sqrt(1 + 1e-6), rtol=2e-5)
