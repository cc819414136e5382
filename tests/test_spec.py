"""The call description (_spec): one table of dtype codes, one accumulator
rule, one validation path for every entry point, and the short paths the
adapters reach through it."""

import pathlib
import re

import numpy as np
import pytest

import rmsnorm_cpu as rn
from rmsnorm_cpu import _core, _spec

HEADER = pathlib.Path(__file__).resolve().parents[1] / "include" / "rmsnorm_cpu" / "rmsnorm.h"


def test_dtype_codes_are_the_c_library_s():
    names = {"RMSN_F16": "float16", "RMSN_BF16": "bfloat16", "RMSN_F32": "float32", "RMSN_F64": "float64"}
    if not HEADER.exists():
        pytest.skip("no source tree")
    found = dict(re.findall(r"\b(RMSN_B?F\d\d)\s*=\s*(\d+)", HEADER.read_text()))
    assert {names[k]: int(v) for k, v in found.items() if k in names} == _spec.CODE_BY_NAME
    assert _spec.CODE_BY_NAME is _core.DTYPE_CODES


def test_torch_codes_come_from_the_one_table():
    torch = pytest.importorskip("torch")
    from rmsnorm_cpu import torch as rt

    assert {str(dt).removeprefix("torch."): code for dt, code in rt._CODES.items()} == _spec.CODE_BY_NAME
    assert rt._acc(torch.float16) == torch.float32 and rt._acc(torch.float64) == torch.float64


def test_accumulator_rule():
    assert _spec.acc_dtype(_spec.F16, _spec.BF16) == np.float32
    assert _spec.acc_dtype(_spec.F32) == np.float32
    assert _spec.acc_dtype(_spec.F16, _spec.F64) == np.float64
    assert rn.output_spec((2, 3), "float16", out_dtype="float64")["rstd"][1] == np.float64


def test_dtype_by_name():
    assert _spec.dtype_by_name("float16") == np.float16
    ml_dtypes = pytest.importorskip("ml_dtypes")
    assert _spec.dtype_by_name("bfloat16") == np.dtype(ml_dtypes.bfloat16)


def test_call_is_frozen_and_complete(rng):
    x = rng.standard_normal((3, 4, 5)).astype(np.float16)
    call = _spec.forward_call(x, np.ones(4), None, 1, 1e-5, 2, "add", 1.0, "llama", "float32", None, True, 2)
    assert call.codes == (_spec.F16, _spec.F32) and call.acc == np.float32
    assert call.plan.norm_axes == (1,) and call.plan.n == 2 and call.plan.groups == 2
    assert call.options == _spec.Options(1e-5, _spec.EPS_MODES["add"], True, 2)
    np.testing.assert_array_equal(call.weight, np.full(4, 2.0, np.float32))  # weight + offset, in acc
    assert call.rstd.shape == (3, 5, 2) and call.arrays[1].dtype == np.float32
    with pytest.raises(AttributeError):
        call.plan = None


BAD = [
    (dict(eps=-1.0), ValueError, "eps"),
    (dict(eps_mode="mul"), ValueError, "eps_mode"),
    (dict(cast_mode="half"), ValueError, "cast_mode"),
    (dict(groups=3), ValueError, "groups"),
    (dict(axis=5), np.exceptions.AxisError, "axis"),
    (dict(axis=1.5), TypeError, "axis"),
    (dict(weight=np.ones(3)), ValueError, "weight"),
    (dict(weight_offset="one"), TypeError, "weight_offset"),
    (dict(n_threads=0), ValueError, "n_threads"),
]


@pytest.mark.parametrize("kwargs, error, name", BAD, ids=[b[2] for b in BAD])
def test_one_validation_path(kwargs, error, name):
    """The public function, output_spec-like checks without data, scikit-learn's
    fit and the Dask path raise the same error for the same argument."""
    x = np.ones((2, 4), np.float32)
    kwargs = dict(kwargs)
    weight = kwargs.pop("weight", None)
    with pytest.raises(error, match=name):
        rn.rms_norm(x, weight, **kwargs)
    with pytest.raises(error, match=name):
        _spec.check_call(x.shape, x.dtype, weight, **kwargs)
    with pytest.raises(error, match=name):
        rn.add_rms_norm(x, x.copy(), weight, **kwargs)


def test_sklearn_fit_checks_through_the_spec():
    pytest.importorskip("sklearn")
    from rmsnorm_cpu.sklearn import RMSNormalizer

    for kwargs, error, name in BAD:
        if "cast_mode" in kwargs or "n_threads" in kwargs:
            continue  # not parameters of the transformer
        with pytest.raises(error, match=name):
            RMSNormalizer(**kwargs).fit(np.ones((2, 4)))


@pytest.fixture
def no_general_path(monkeypatch):
    """Make the general path fail, so that a call passing shows the short path ran."""
    def refuse(*args, **kwargs):
        raise AssertionError("the general path ran")
    monkeypatch.setattr(_spec, "forward_call", refuse)
    monkeypatch.setattr(_spec, "add_call", refuse)


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_decode_calls_take_the_short_path(no_general_path, dtype):
    x = np.ones((1, 64), dtype)
    rn.rms_norm(x)
    rn.rms_norm(x, cast_mode="llama")
    rn.rms_norm(x, return_rstd=True)
    rn.add_rms_norm(x, x.copy())
    rn.add_rms_norm(x, x.copy(), cast_mode="llama")


def test_layer_takes_the_short_path(no_general_path):
    x = np.ones((2, 64), np.float32)
    rn.RMSNorm(64)(x)
    rn.RMSNorm(64, axis=(1,))(x)  # a 1-tuple naming the last axis
    rn.RMSNorm(64, axis=(-1,), cast_mode="llama")(x.astype(np.float16))


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_short_path_llama_is_the_general_path(rng, dtype):
    x = rng.standard_normal((3, 37)).astype(dtype)
    w = rng.standard_normal(37).astype(_spec.acc_dtype(_spec.dtype_code(np.dtype(dtype))))
    short = rn.rms_norm(x, w, cast_mode="llama")
    general = rn.rms_norm(x, w, axis=(1,), cast_mode="llama")
    np.testing.assert_array_equal(short, general)
    y, r = rn.add_rms_norm(x, x, w, cast_mode="llama")
    y2, r2 = rn.add_rms_norm(x, x, w, axis=(1,), cast_mode="llama")
    np.testing.assert_array_equal(y, y2)
    np.testing.assert_array_equal(r, r2)


@pytest.mark.parametrize("chars", ["eee", "efe", "fff", "ddd"])
def test_gufunc_strided_weight(rng, chars):
    """The gufunc converts a strided weight with the C library's rmsn_to_acc."""
    x_dtype, w_dtype = np.dtype(chars[0]), np.dtype(chars[1])
    x = rng.standard_normal((4, 33)).astype(x_dtype)
    w = rng.standard_normal(66).astype(w_dtype)[::2]
    expected = rn.rms_norm(x, w)
    np.testing.assert_array_equal(rn.rms_norm_gufunc(x, w), expected)
    np.testing.assert_array_equal(rn.rms_norm_gufunc(x, np.broadcast_to(w, x.shape)), expected)


@pytest.mark.parametrize("axis", [0, 1, (0, 1)])
def test_layout_negative_and_size_one_strides(rng, axis):
    """_core's layout takes normalized axes of any stride sign, and drops batch dims of one element."""
    base = rng.standard_normal((6, 5, 1))
    for x in (base[::-1], base[:, ::-2], base[::-2, ::-1], base.transpose(2, 1, 0)):
        expected = rn.rms_norm(np.ascontiguousarray(x), axis=axis)
        np.testing.assert_allclose(rn.rms_norm(x, axis=axis), expected, rtol=1e-13, atol=0)
        y = np.empty_like(x.transpose())
        np.testing.assert_allclose(rn.rms_norm(x, axis=axis, out=y.transpose()), expected, rtol=1e-13, atol=0)


@pytest.fixture(params=["short path", "general path"])
def weight_path(request, monkeypatch):
    """Run the test on the short paths, or with them turned off."""
    if request.param == "general path":
        for name in ("forward_rows", "add_rows", "gated_rows", "quant_rows"):
            monkeypatch.setattr(_core, name, lambda *args, **kwargs: None)
    return request.param


@pytest.mark.parametrize("x_dtype", [np.float16, np.float64])
@pytest.mark.parametrize("w_dtype", ["float16", "bfloat16", "float32", "float64"])
def test_weights_of_any_float_dtype(rng, weight_path, x_dtype, w_dtype):
    """A weight in its own dtype (a float16 or bfloat16 model's) gives the bits
    of the same weight converted by NumPy first, on every path and op; the C
    conversion keeps signed zeros, subnormals, inf and NaN as astype does."""
    if w_dtype == "bfloat16":
        w_dtype = pytest.importorskip("ml_dtypes").bfloat16
    n = 37
    x = rng.standard_normal((3, n)).astype(x_dtype)
    special = [0.0, -0.0, 1.0, 65504.0, -6e-8, 3e-5, 6.1e-5, np.inf, -np.inf, np.nan]
    w = np.concatenate([special, rng.standard_normal(n - len(special))]).astype(w_dtype)
    acc = _spec.acc_dtype(_spec.dtype_code(np.dtype(x_dtype)))
    with np.errstate(invalid="ignore", over="ignore"):
        for op in (lambda w: rn.rms_norm(x, w), lambda w: rn.add_rms_norm(x, x, w),
                   lambda w: rn.rms_norm_gated(x, x, w), lambda w: rn.rms_norm_quant(x, w)):
            got, want = op(w), op(w.astype(acc))
            for a, b in zip(got if type(got) is tuple else (got,), want if type(want) is tuple else (want,)):
                np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("f64", [False, True])
def test_weight_conversion_of_every_float16(f64):
    """rmsn_to_acc's branch-free float16 loop against NumPy on all 65536 bit
    patterns: the same bits (NaN payloads too, in float32; to float64 through
    float32, a signaling NaN comes out quiet)."""
    h = np.arange(65536, dtype=np.uint32).astype(np.uint16).view(np.float16)
    got, want = _core.weights_in_acc(h, f64), h.astype(np.float64 if f64 else np.float32)
    bits = np.uint64 if f64 else np.uint32
    same = got.view(bits) == want.view(bits)
    assert same.all() if not f64 else (same | (np.isnan(got) & np.isnan(want))).all()
