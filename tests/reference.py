"""The float64 NumPy oracle: SPEC.md's formula written the obvious way.

Slow and simple on purpose; every kernel is tested against it.
"""

import numpy as np

try:
    import ml_dtypes
except ImportError:  # bfloat16 tests skip without it
    ml_dtypes = None


def normalized_view(x, axis, groups):
    """x as float64 with the normalized axes last, reshaped to batch + (groups, m)."""
    if isinstance(axis, int):
        axis = (axis,)
    axes = sorted(a % x.ndim for a in axis) if x.ndim else []
    batch_axes = [a for a in range(x.ndim) if a not in axes]
    moved = np.transpose(np.asarray(x, dtype=np.float64), batch_axes + axes)
    batch_shape = moved.shape[: len(batch_axes)]
    return moved.reshape(batch_shape + (groups, -1)), batch_axes + axes, moved.shape


def rms_ref(x, weight=None, bias=None, axis=-1, eps=1e-6, groups=1, eps_mode="sqrt", weight_offset=0.0):
    """(y, rstd, scale) in float64; scale = |x * rstd * w| + |b|, for error bounds."""
    v, perm, moved_shape = normalized_view(x, axis, groups)
    amax = np.max(np.abs(v), axis=-1, keepdims=True) if v.shape[-1] else np.zeros(v.shape[:-1] + (1,))
    safe = np.where((amax > 0) & np.isfinite(amax), amax, 1.0)
    with np.errstate(all="ignore"):
        rms = safe * np.sqrt(np.mean((v / safe) ** 2, axis=-1, keepdims=True))
        if eps_mode == "sqrt":
            rstd = 1.0 / np.hypot(rms, np.sqrt(eps))
        elif eps_mode == "add":
            rstd = 1.0 / (rms + eps)
        else:
            rstd = 1.0 / np.maximum(rms, eps)
        xhat = (v * rstd).reshape(moved_shape)
    w = 1.0 if weight is None else np.asarray(weight, dtype=np.float64)
    w = w + weight_offset
    b = 0.0 if bias is None else np.asarray(bias, dtype=np.float64)
    with np.errstate(all="ignore"):
        y = xhat * w + b
        scale = np.abs(xhat * w) + np.abs(b)
    inv = np.argsort(perm)
    return np.transpose(y, inv), rstd[..., 0], np.transpose(scale, inv)


def round_to(y, dtype):
    """float64 -> dtype with one correct rounding (float16: via NumPy; bfloat16: via ml_dtypes)."""
    return np.asarray(y, dtype=np.float64).astype(dtype)


def ulp(values, dtype):
    """The spacing of `dtype` at each value (float64 result)."""
    v = np.abs(np.asarray(values, dtype=np.float64))
    v = np.where(np.isfinite(v), v, 0.0)  # inf/NaN: compared exactly by the callers
    finfo = {np.dtype(np.float16): (10, -14), np.dtype(np.float32): (23, -126), np.dtype(np.float64): (52, -1022)}
    mant, emin = finfo.get(np.dtype(dtype), (7, -126))  # bfloat16: 7 explicit mantissa bits
    with np.errstate(divide="ignore"):
        e = np.floor(np.log2(np.where(v > 0, v, 1.0)))
    e = np.maximum(e, emin)
    return np.ldexp(1.0, (e - mant).astype(int))


def act_ref(gate, activation):
    """(act(gate), d act / d gate) in float64: silu = g * sigmoid(g), or sigmoid."""
    g = np.asarray(gate, dtype=np.float64)
    with np.errstate(all="ignore"):
        s = 1.0 / (1.0 + np.exp(-g))
        if activation == "silu":
            return g * s, s + g * s * (1 - s)
        return s, s * (1 - s)


def gated_ref(x, gate, weight=None, bias=None, axis=-1, eps=1e-6, groups=1, eps_mode="sqrt", weight_offset=0.0,
              norm_before_gate=True, activation="silu"):
    """(y, rstd, scale) of rms_norm_gated in float64, as rms_ref."""
    a, _ = act_ref(gate, activation)
    kw = dict(axis=axis, eps=eps, groups=groups, eps_mode=eps_mode, weight_offset=weight_offset)
    if not norm_before_gate:
        with np.errstate(all="ignore"):
            return rms_ref(np.asarray(x, dtype=np.float64) * a, weight, bias, **kw)
    y, rstd, scale = rms_ref(x, weight, bias, **kw)
    with np.errstate(all="ignore"):
        return y * a, rstd, scale * np.abs(a)


QMAX = {"int8": 127.0, "float8_e4m3fn": 448.0}


def quant_ref(x, weight=None, bias=None, residual=None, axis=-1, eps=1e-6, groups=1, eps_mode="sqrt",
              weight_offset=0.0, quant_dtype="int8", scale_ub=None):
    """(q as float64 values, scale float32, new_residual or None) of rms_norm_quant.

    new_residual: x + residual in float64 (exact for these dtypes' sums),
    rounded once to residual's dtype.  q from the float64 y divided by the
    float32 scale, rounded half to even and saturated."""
    new_residual = None
    data = x
    if residual is not None:
        new_residual = round_to(np.asarray(x, np.float64) + np.asarray(residual, np.float64), residual.dtype)
        data = new_residual
    y, _, _ = rms_ref(data, weight, bias, axis, eps, groups, eps_mode, weight_offset)
    v, perm, moved_shape = normalized_view(y, axis, groups)
    qmax = np.float32(QMAX[quant_dtype])
    with np.errstate(invalid="ignore"):
        amax = np.max(np.abs(v), axis=-1) if v.shape[-1] else np.zeros(v.shape[:-1])
        amax = amax.astype(np.float32)
        if scale_ub is not None:
            amax = np.where(amax > np.float32(scale_ub), np.float32(scale_ub), amax)
        scale = amax / qmax
        smallest = np.float32(1.0) / (qmax * np.float32(512.0))
        scale = np.where(scale < smallest, smallest, scale).astype(np.float32)
        t = np.clip(v / scale[..., None].astype(np.float64), -qmax, qmax)
    if quant_dtype == "int8":
        q = np.where(np.isnan(t), 0.0, np.clip(np.rint(t), -128, 127))
    else:
        q = t.astype(ml_dtypes.float8_e4m3fn).astype(np.float64)
    q = np.transpose(q.reshape(moved_shape), np.argsort(perm))
    return q, scale, new_residual


def e4m3_step(values):
    """The spacing of float8_e4m3fn at each value (subnormals: 2**-9)."""
    v = np.abs(np.asarray(values, dtype=np.float64))
    with np.errstate(divide="ignore"):
        e = np.floor(np.log2(np.where(v > 0, v, 1.0)))
    return np.ldexp(1.0, (np.maximum(e, -6) - 3).astype(int))
