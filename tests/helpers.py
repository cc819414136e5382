"""What the test files share: dtypes, the reference assertion, the store policy, the README's tables."""

import contextlib
import pathlib

import numpy as np

from reference import ml_dtypes, ulp

BF16 = None if ml_dtypes is None else np.dtype(ml_dtypes.bfloat16)
FLOAT_DTYPES = [np.dtype(np.float16), np.dtype(np.float32), np.dtype(np.float64)] + ([BF16] if BF16 else [])
UNIT_ROUNDOFF = {"float16": 2.0**-11, "bfloat16": 2.0**-8, "float32": 2.0**-24, "float64": 2.0**-53}


@contextlib.contextmanager
def store_policy(choice, from_bytes=None, min_run_bytes=None):
    """The store policy's choice (0 plain, 1 non-temporal, -1 trying again) and, when
    given, its thresholds, for the block. Streaming still needs outputs in memory."""
    from rmsnorm_cpu import _runtime
    previous = _runtime._set_store_policy(0, 0)
    try:
        _runtime._set_store_policy(previous[0] if from_bytes is None else from_bytes,
                                   previous[1] if min_run_bytes is None else min_run_bytes, choice)
        yield
    finally:
        _runtime._set_store_policy(*previous)


def acc_roundoff(*dtypes):
    """Unit roundoff of the accumulation type: float64 if any dtype is float64, else float32."""
    return 2.0**-53 if any(np.dtype(d) == np.float64 for d in dtypes) else 2.0**-24


def assert_matches_reference(y, ref, scale, n, x_dtype=None):
    """y against the float64 reference.

    Bound: the acc-type sum of n squares has relative error <= ~sqrt(n) u for
    random-sign rounding (4-16 partial sums make it smaller still); rstd gets
    half of that; scale-and-write adds ~3 u.  So |y - ref| <= (8 + 2 sqrt(n)) u
    * scale in the acc type, plus, for float16/bfloat16 outputs, one ulp of the
    correctly rounded result (the kernel rounds once).
    """
    y64 = np.asarray(y, dtype=np.float64)
    ref = np.asarray(ref, dtype=np.float64)
    assert y64.shape == ref.shape
    nan = np.isnan(ref)
    np.testing.assert_array_equal(np.isnan(y64), nan)
    u = acc_roundoff(y.dtype, x_dtype or y.dtype)
    # Plus a few of the acc type's smallest subnormals: x * rstd, * w and + b
    # each round to an absolute quantum where they land in the subnormal range.
    bound = (8 + 2 * np.sqrt(max(n, 1))) * u * scale + 4 * (2.0**-1074 if u < 2.0**-30 else 2.0**-149)
    if y.dtype.itemsize == 2:
        bound = ulp(ref, y.dtype) + bound
    elif y.dtype == np.float32:
        bound = bound + ulp(ref, np.float32) / 2
    finite = ~nan
    with np.errstate(invalid="ignore"):
        err = np.where(finite, np.abs(y64 - np.where(finite, ref, 0)), 0)
    bad = err > np.where(finite, bound, 0) + 0.0
    inf_ok = np.isinf(ref) & (y64 == ref)
    bad &= ~inf_ok
    assert not bad.any(), (
        f"{bad.sum()} elements off: worst at {np.unravel_index(np.argmax(err - bound), err.shape)}, "
        f"got {y64[bad][:4]}, expected {ref[bad][:4]}")


X = np.arange(24, dtype=np.float32).reshape(4, 6)  # the x of the README's bad-input table


def readme_table_rows():
    """The (first cell, second cell) pairs of every table row in the README."""
    readme = pathlib.Path(__file__).resolve().parents[1] / "README.md"
    rows = set()
    for line in readme.read_text().splitlines():
        cells = [c.strip().strip("`") for c in line.strip().strip("|").split("|")]
        if len(cells) >= 3:
            rows.add((cells[0], cells[1]))
    return rows
