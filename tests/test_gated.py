"""rms_norm_gated and rms_norm_gated_backward: the float64 reference on every ISA tier, both gate
orders and activations, layouts, the activation's limits (as torch's), cast_mode="llama", in place,
determinism, finite differences for the backward; errors."""

import numpy as np
import pytest
from numpy.exceptions import AxisError

import rmsnorm_cpu as rn
from helpers import BF16, FLOAT_DTYPES, X, assert_matches_reference, readme_table_rows
from reference import act_ref, gated_ref

GATINGS = [(True, "silu"), (False, "silu"), (True, "sigmoid"), (False, "sigmoid")]
GATING_IDS = [f"{'norm_first' if nbg else 'gate_first'}-{act}" for nbg, act in GATINGS]


def _data(rng, shape, dtype, scale=1.0):
    return (rng.standard_normal(shape) * scale).astype(dtype)


def check(x, gate, *args, n=None, **kw):
    y = rn.rms_norm_gated(x, gate, *args, **kw)
    ref_kw = {k: v for k, v in kw.items()
              if k in ("axis", "eps", "groups", "eps_mode", "weight_offset", "norm_before_gate", "activation")}
    ref, _, scale = gated_ref(x, gate, *args, **ref_kw)
    assert_matches_reference(y, ref, scale, n or x.shape[-1], x.dtype)
    return y


@pytest.mark.usefixtures("isa")
@pytest.mark.parametrize("nbg, activation", GATINGS, ids=GATING_IDS)
@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=str)
def test_matches_reference(rng, dtype, nbg, activation):
    for n in (1, 7, 8, 17, 33, 64, 130, 4097):  # every SIMD tail, the blocked sum
        x, gate = _data(rng, (3, n), dtype), _data(rng, (3, n), dtype, 3.0)
        w, b = rng.standard_normal(n), rng.standard_normal(n)
        check(x, gate, norm_before_gate=nbg, activation=activation)
        check(x, gate, w, b, norm_before_gate=nbg, activation=activation)


@pytest.mark.usefixtures("isa")
@pytest.mark.parametrize("nbg, activation", GATINGS, ids=GATING_IDS)
@pytest.mark.parametrize("kw", [
    {"groups": 4}, {"eps_mode": "add"}, {"eps_mode": "clamp", "eps": 1e-3}, {"weight_offset": 1.0},
    {"eps": 0.0}, {"dtype": np.float32}, {"dtype": np.float64},
], ids=str)
def test_options(rng, kw, nbg, activation):
    x, gate = _data(rng, (5, 48), np.float16), _data(rng, (5, 48), np.float16, 2.0)
    w = rng.standard_normal(48)
    y = check(x, gate, w, 0.25, norm_before_gate=nbg, activation=activation, n=48 // kw.get("groups", 1), **kw)
    assert y.dtype == np.dtype(kw.get("dtype", np.float16))


@pytest.mark.usefixtures("isa")
@pytest.mark.parametrize("nbg, activation", GATINGS, ids=GATING_IDS)
def test_layouts(rng, nbg, activation):
    """Non-trailing axes, several axes, negative and non-unit strides, Fortran order: the row
    kernel at the operand's element stride, each against the reference."""
    kw = dict(norm_before_gate=nbg, activation=activation)
    x, gate = _data(rng, (2, 6, 5, 3), np.float32), _data(rng, (2, 6, 5, 3), np.float32)
    check(x, gate, np.linspace(0.5, 1.5, 6), axis=1, n=6, **kw)  # NCHW channels
    check(x, gate, axis=(1, 2), n=30, groups=3, **kw)
    check(x[:, ::-1, :, ::2], gate[:, ::-1, :, ::2], axis=-1, n=2, **kw)
    xf, gf = np.asfortranarray(x[0, :, :, 0]), np.asfortranarray(gate[0, :, :, 0])
    check(xf, gf, **kw)
    wide, wide_gate = _data(rng, (4, 70), np.float32), _data(rng, (70, 4), np.float32).T
    check(wide[:, ::2], wide_gate[:, 1::2], **kw)  # element strides 2 and 8


GATE_LIMITS = np.array([-np.inf, np.inf, np.nan, -100.0, 100.0, -88.5, 90.0, 0.0], np.float32)
# act at GATE_LIMITS as torch's float32 silu/sigmoid give it (exp(100) is inf in float32).
ACT_LIMITS = {"silu": [np.nan, np.inf, np.nan, -0.0, 100.0, -3.2499854e-37, 90.0, 0.0],
              "sigmoid": [0.0, 1.0, np.nan, 0.0, 1.0, 3.6723e-39, 1.0, 0.5]}


@pytest.mark.usefixtures("isa")
@pytest.mark.parametrize("activation", ["silu", "sigmoid"])
def test_gate_limits(activation):
    """act(+-inf), act(NaN) and large |gate| as torch (silu(-inf) = NaN, sigmoid of large |g|
    exactly 0 or 1): with x = 1 and eps = 0 the gate-after output is act(g) itself."""
    y = rn.rms_norm_gated(np.ones((1, 8), np.float32), GATE_LIMITS[None], eps=0.0, activation=activation)[0]
    np.testing.assert_allclose(y, ACT_LIMITS[activation], rtol=1e-5, atol=0)
    want = np.array(ACT_LIMITS[activation])
    np.testing.assert_array_equal(np.signbit(y[~np.isnan(want)]), np.signbit(want[~np.isnan(want)]))


@pytest.mark.usefixtures("isa")
@pytest.mark.parametrize("nbg, activation", GATINGS, ids=GATING_IDS)
def test_bad_rows_stay_in_their_row(rng, nbg, activation):
    """A NaN or inf in x or the gate makes its row what IEEE arithmetic says; the other rows are
    as computed alone."""
    x, gate = _data(rng, (4, 16), np.float32), _data(rng, (4, 16), np.float32)
    x[1, 3], x[2, 0], gate[3, 5] = np.nan, np.inf, np.nan
    y = rn.rms_norm_gated(x, gate, norm_before_gate=nbg, activation=activation)
    np.testing.assert_array_equal(y[0], rn.rms_norm_gated(x[:1], gate[:1], norm_before_gate=nbg,
                                                          activation=activation)[0])
    ref, _, scale = gated_ref(x, gate, norm_before_gate=nbg, activation=activation)
    assert_matches_reference(y, ref, scale, 16)


@pytest.mark.parametrize("activation", ["silu", "sigmoid"])
def test_activation_as_torch(isa, activation):
    """With x = 1 and eps = 0 the gate-after output is act(g) itself: torch's within 2 ulp (3 on
    the SIMD tiers, whose FMA polynomial has its own last bits), its NaN and inf exactly."""
    torch = pytest.importorskip("torch")
    g = np.concatenate([np.linspace(-100, 100, 2001), [-np.inf, np.inf, np.nan, -88.0, 88.0, 1e-30]]).astype(
        np.float32)
    y = rn.rms_norm_gated(np.ones((1, g.size), np.float32), g[None], eps=0.0, activation=activation)[0]
    fn = torch.nn.functional.silu if activation == "silu" else torch.sigmoid
    want = fn(torch.from_numpy(g)).numpy()
    np.testing.assert_array_equal(np.isnan(y), np.isnan(want))
    ok = ~np.isnan(want)
    np.testing.assert_array_equal(np.isinf(y[ok]), np.isinf(want[ok]))
    finite = np.isfinite(want)
    np.testing.assert_array_equal(y[~finite & ok], want[~finite & ok])
    spacing = np.spacing(np.abs(want[finite])).astype(np.float64)
    ulps = 2 if isa == "scalar" else 3
    assert (np.abs(y[finite].astype(np.float64) - want[finite]) <= ulps * spacing + 1e-40).all()


@pytest.mark.usefixtures("isa")
def test_robust_path():
    """Squares that overflow or underflow float32 take the robust path, gate first or after."""
    x = np.full((2, 8), 1e30, np.float32)
    x[1] = 1e-30
    gate = np.full_like(x, 20.0)
    for nbg in (True, False):
        y = rn.rms_norm_gated(x, gate, eps=0.0, norm_before_gate=nbg)
        np.testing.assert_allclose(y, 1.0 if not nbg else act_ref(20.0, "silu")[0], rtol=1e-6)


@pytest.mark.usefixtures("isa")
@pytest.mark.parametrize("nbg", [True, False])
@pytest.mark.parametrize("dtype", [np.float16, BF16] if BF16 else [np.float16], ids=str)
def test_llama_cast_mode(rng, dtype, nbg):
    """cast_mode="llama" rounds x*rstd and then * weight + bias to x's dtype, then gates in float32
    (NumPy's float32 steps from the kernel's own rstd; one ulp for the activation's last bits)."""
    x, gate = _data(rng, (4, 40), dtype), _data(rng, (4, 40), dtype, 2.0)
    w = rng.standard_normal(40).astype(np.float32)
    y, rstd = rn.rms_norm_gated(x, gate, w, 0.5, cast_mode="llama", norm_before_gate=nbg, return_rstd=True)
    a = act_ref(gate.astype(np.float32), "silu")[0].astype(np.float32)
    v = x.astype(np.float32) if nbg else x.astype(np.float32) * a
    t = (v * rstd).astype(dtype).astype(np.float32)
    p = (t * w + np.float32(0.5)).astype(dtype)
    want = (p.astype(np.float32) * a).astype(dtype) if nbg else p
    diff = np.abs(y.astype(np.float64) - want.astype(np.float64))
    assert (diff <= np.spacing(np.abs(want).astype(np.float32)) * (2 ** (23 - (10 if dtype == np.float16 else 7)))
            ).all()


@pytest.mark.usefixtures("isa")
@pytest.mark.parametrize("nbg", [True, False])
def test_out_in_place_and_rstd(rng, nbg):
    x, gate, w = _data(rng, (6, 40), np.float32), _data(rng, (6, 40), np.float32), rng.standard_normal(40)
    y, rstd = rn.rms_norm_gated(x, gate, w, norm_before_gate=nbg, return_rstd=True)
    assert rstd.shape == (6, 1) and rstd.dtype == np.float32
    v = x if nbg else x * act_ref(gate, "silu")[0]
    np.testing.assert_allclose(rstd, 1 / np.sqrt(np.mean(v.astype(np.float64) ** 2, -1, keepdims=True) + 1e-6),
                               rtol=1e-5)
    for target in ("x", "gate"):
        xc, gc = x.copy(), gate.copy()
        out = xc if target == "x" else gc
        assert rn.rms_norm_gated(xc, gc, w, norm_before_gate=nbg, out=out) is out
        np.testing.assert_array_equal(out, y)
    out = np.empty((40, 6), np.float32).T
    rn.rms_norm_gated(x, gate, w, norm_before_gate=nbg, out=out)
    np.testing.assert_array_equal(out, y)


@pytest.mark.usefixtures("isa")
def test_gate_of_another_dtype(rng):
    """A gate of another dtype: both in their common dtype, the output in x's."""
    x, gate = _data(rng, (3, 20), np.float16), _data(rng, (3, 20), np.float32)
    y = rn.rms_norm_gated(x, gate)
    assert y.dtype == np.float16
    np.testing.assert_array_equal(y, rn.rms_norm_gated(x.astype(np.float32), gate, dtype=np.float16))
    dx, dgate, _, _ = rn.rms_norm_gated_backward(np.ones_like(x), x, gate)
    assert dx.dtype == np.float16 and dgate.dtype == np.float32


def test_deterministic_over_batch_and_threads(rng):
    x, gate = _data(rng, (300, 96), np.float32), _data(rng, (300, 96), np.float32)
    w = rng.standard_normal(96)
    for nbg in (True, False):
        one = rn.rms_norm_gated(x, gate, w, norm_before_gate=nbg, n_threads=1)
        np.testing.assert_array_equal(one, rn.rms_norm_gated(x, gate, w, norm_before_gate=nbg, n_threads=2))
        np.testing.assert_array_equal(one[7:8], rn.rms_norm_gated(x[7:8], gate[7:8], w, norm_before_gate=nbg))
        dy = _data(rng, x.shape, np.float32)
        g1 = rn.rms_norm_gated_backward(dy, x, gate, w, 1.0, norm_before_gate=nbg, n_threads=1)
        g2 = rn.rms_norm_gated_backward(dy, x, gate, w, 1.0, norm_before_gate=nbg, n_threads=2)
        for a, b in zip(g1, g2):
            np.testing.assert_array_equal(a, b)


@pytest.mark.usefixtures("isa")
@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=str)
def test_decode_path_equals_general_path(rng, dtype):
    """The short path of small C-contiguous calls gives the general path's bits (axis=(1,) and a
    list weight take the general one), out= included."""
    x, gate = _data(rng, (2, 4096), dtype), _data(rng, (2, 4096), dtype)
    w = rng.standard_normal(4096).astype(np.float64 if dtype == np.float64 else np.float32)
    for nbg, activation, cast_mode in [(True, "silu", "fused"), (False, "sigmoid", "llama")]:
        kw = dict(norm_before_gate=nbg, activation=activation, cast_mode=cast_mode)
        general = rn.rms_norm_gated(x, gate, list(w), axis=(1,), **kw)
        np.testing.assert_array_equal(rn.rms_norm_gated(x, gate, w, **kw), general)
        out = gate.copy()
        assert rn.rms_norm_gated(x, out, w, out=out, **kw) is out
        np.testing.assert_array_equal(out, general)


@pytest.mark.skipif(BF16 is None, reason="ml_dtypes is not installed")
def test_bfloat16_bits(rng):
    """BFloat16Bits (what the torch adapter passes without ml_dtypes): the same bits as bfloat16."""
    from rmsnorm_cpu._spec import BFloat16Bits
    x, gate, dy = (_data(rng, (3, 40), BF16) for _ in range(3))
    bits = [BFloat16Bits(a.view(np.uint16)) for a in (dy, x, gate)]
    y = rn.rms_norm_gated(bits[1], bits[2])
    assert y.dtype == np.uint16
    np.testing.assert_array_equal(y, rn.rms_norm_gated(x, gate).view(np.uint16))
    for got, want in zip(rn.rms_norm_gated_backward(*bits)[:2], rn.rms_norm_gated_backward(dy, x, gate)[:2]):
        np.testing.assert_array_equal(got, want.view(np.uint16))
    with pytest.raises(TypeError, match="bfloat16 bits"):
        rn.rms_norm_gated(bits[1], gate.astype(np.float32))


def test_empty():
    x = np.empty((0, 8), np.float32)
    y, rstd = rn.rms_norm_gated(x, x, return_rstd=True)
    assert y.shape == (0, 8) and rstd.shape == (0, 1)
    dx, dgate, dw, db = rn.rms_norm_gated_backward(x, x, x, np.ones(8), np.zeros(8))
    assert dx.shape == dgate.shape == (0, 8) and (dw == 0).all() and (db == 0).all()


# ---- backward -------------------------------------------------------------------

def numeric_grads(x, gate, w, b, dy, h=1e-6, **kw):
    """Central differences of sum(dy * rms_norm_gated(x, gate, w, b)) in float64."""
    def f(*args):
        return float(np.sum(dy * rn.rms_norm_gated(*args, **kw)))

    args = [x, gate, w, b]
    grads = []
    for arr in args:
        g = np.zeros_like(arr)
        flat, gflat = arr.reshape(-1), g.reshape(-1)
        for i in range(flat.size):
            old = flat[i]
            flat[i] = old + h
            up = f(*args)
            flat[i] = old - h
            down = f(*args)
            flat[i] = old
            gflat[i] = (up - down) / (2 * h)
        grads.append(g)
    return grads


@pytest.mark.usefixtures("isa")
@pytest.mark.parametrize("nbg, activation", GATINGS, ids=GATING_IDS)
@pytest.mark.parametrize("kw", [
    {}, {"eps_mode": "add"}, {"eps_mode": "clamp", "eps": 1e-3}, {"groups": 3}, {"axis": 0}, {"weight_offset": 1.0},
], ids=str)
def test_finite_differences(rng, kw, nbg, activation):
    axis = kw.get("axis", -1)
    x, gate = rng.standard_normal((4, 6)), 2 * rng.standard_normal((4, 6))
    norm_shape = (x.shape[axis],)
    w, b = rng.standard_normal(norm_shape), rng.standard_normal(norm_shape)
    w[1] = 0.0  # never divided by
    dy = rng.standard_normal(x.shape)
    kw = dict(kw, norm_before_gate=nbg, activation=activation)
    grads = rn.rms_norm_gated_backward(dy, x, gate, w, b, **kw)
    _, rstd = rn.rms_norm_gated(x, gate, w, b, return_rstd=True, **kw)
    given = rn.rms_norm_gated_backward(dy, x, gate, w, b, rstd=rstd, **kw)
    for got, with_rstd, want in zip(grads, given, numeric_grads(x, gate, w, b, dy, **kw)):
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)
        np.testing.assert_allclose(with_rstd, got, rtol=1e-12, atol=1e-14)


@pytest.mark.usefixtures("isa")
@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=str)
def test_backward_dtypes(rng, dtype):
    """Every dtype against the float64 gradient within the precision of the dtype."""
    x, gate, dy = (_data(rng, (3, 37), dtype) for _ in range(3))
    w = rng.standard_normal(37)
    for nbg in (True, False):
        got = rn.rms_norm_gated_backward(dy, x, gate, w, 0.5, norm_before_gate=nbg)
        want = rn.rms_norm_gated_backward(*(a.astype(np.float64) for a in (dy, x, gate)), w, 0.5,
                                          norm_before_gate=nbg)
        assert got[0].dtype == got[1].dtype == dtype and got[2].dtype == np.float64 and got[3].shape == ()
        tol = 1e-5 if np.dtype(dtype).itemsize >= 4 else 3e-2
        for a, b in zip(got, want):
            np.testing.assert_allclose(np.asarray(a, np.float64), b, rtol=tol, atol=tol * np.abs(b).max())


def test_backward_broadcast_weight(rng):
    x, gate, dy = (rng.standard_normal((2, 6, 3, 3)) for _ in range(3))
    w = rng.standard_normal((6, 1, 1))
    dx, dgate, dw, db = rn.rms_norm_gated_backward(dy, x, gate, w, 0.5, axis=(1, 2, 3))
    full = rn.rms_norm_gated_backward(dy, x, gate, np.broadcast_to(w, (6, 3, 3)).copy(), 0.5, axis=(1, 2, 3))
    assert dw.shape == (6, 1, 1) and db.shape == ()
    np.testing.assert_allclose(dw, full[2].sum(axis=(1, 2), keepdims=True), rtol=1e-12)
    np.testing.assert_array_equal(dx, full[0])


# ---- errors -----------------------------------------------------------------------

def _partial_overlap():
    buf = np.zeros(30, np.float32)
    x = buf[:24].reshape(4, 6)
    x[...] = X
    return dict(x=x, out=buf[6:30].reshape(4, 6))


BAD_GATED_CALLS = [
    # (id, () -> kwargs for rms_norm_gated(x=X, gate=ones, ...), exception, message fragment)
    ("gate other shape", lambda: dict(gate=np.ones((4, 5))), ValueError, "gate of shape"),
    ("gate broadcastable", lambda: dict(gate=np.ones(6)), ValueError, "gate of shape"),
    ("gate complex", lambda: dict(gate=np.ones((4, 6), complex)), TypeError, "gate must hold"),
    ("x complex", lambda: dict(x=X.astype(np.complex64)), TypeError, "x must hold"),
    ("unknown activation", lambda: dict(activation="relu"), ValueError, "activation"),
    ("norm_before_gate string", lambda: dict(norm_before_gate="yes"), TypeError, "norm_before_gate"),
    ("axis out of range", lambda: dict(axis=2), AxisError, "axis"),
    ("groups not dividing", lambda: dict(groups=4), ValueError, "groups"),
    ("weight wrong length", lambda: dict(weight=np.ones(5)), ValueError, "weight of shape"),
    ("negative eps", lambda: dict(eps=-1.0), ValueError, "eps"),
    ("unknown cast_mode", lambda: dict(cast_mode="torch"), ValueError, "cast_mode"),
    ("integer dtype", lambda: dict(dtype=np.int32), TypeError, "dtype"),
    ("out wrong dtype", lambda: dict(out=np.empty((4, 6))), TypeError, "out has dtype"),
    ("out read-only", lambda: dict(out=np.broadcast_to(np.empty(6, np.float32), (4, 6))), ValueError,
     "out is read-only"),
    ("out partially overlaps x", _partial_overlap, ValueError, "partially overlaps"),
]


@pytest.mark.parametrize("call", BAD_GATED_CALLS, ids=[c[0] for c in BAD_GATED_CALLS])
def test_bad_input(call):
    _, make, exc, fragment = call
    kwargs = make()
    x, gate = kwargs.pop("x", X), kwargs.pop("gate", np.ones((4, 6), np.float32))
    out = kwargs.get("out")
    before = None if out is None or not out.flags.writeable else out.copy()
    with pytest.raises(exc, match=fragment):
        rn.rms_norm_gated(x, gate, **kwargs)
    if before is not None:
        np.testing.assert_array_equal(out, before)  # nothing written


BAD_GATED_BACKWARD_CALLS = [
    # (id, kwargs for rms_norm_gated_backward(dy=ones, x=X, gate=ones, ...), exception, message fragment)
    ("dy other shape", dict(dy=np.ones((4, 5))), ValueError, "dy of shape"),
    ("gate other shape", dict(gate=np.ones((4, 5))), ValueError, "gate of shape"),
    ("unknown activation", dict(activation="gelu"), ValueError, "activation"),
    ("rstd wrong shape", dict(rstd=np.ones(4)), ValueError, "rstd has shape"),
    ("cast_mode keyword", dict(cast_mode="fused"), TypeError, "cast_mode"),
]


@pytest.mark.parametrize("call", BAD_GATED_BACKWARD_CALLS, ids=[c[0] for c in BAD_GATED_BACKWARD_CALLS])
def test_bad_backward_input(call):
    _, kwargs, exc, fragment = call
    kwargs = dict(kwargs)
    dy, x, gate = (kwargs.pop(k, d) for k, d in (("dy", np.ones((4, 6))), ("x", X), ("gate", np.ones((4, 6)))))
    with pytest.raises(exc, match=fragment):
        rn.rms_norm_gated_backward(dy, x, gate, **kwargs)


@pytest.mark.parametrize("function, calls", [("rms_norm_gated", BAD_GATED_CALLS),
                                             ("rms_norm_gated_backward", BAD_GATED_BACKWARD_CALLS)])
def test_readme_bad_input_table_lists_every_row(function, calls):
    missing = [c[0] for c in calls if (function, c[0]) not in readme_table_rows()]
    assert not missing, f"README's bad input table lacks rows for {function}: {missing}"
