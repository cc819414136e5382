"""The call description: every entry point's arguments, checked once, in kernel form.

``forward_call``, ``add_call``, ``backward_call``, ``gated_call`` and
``gated_backward_call`` turn the arguments of ``rms_norm``, ``add_rms_norm``,
``rms_norm_backward``, ``rms_norm_gated`` and ``rms_norm_gated_backward`` into one frozen
:class:`Call`: the operands in the op's kernel order, their kernel dtype
codes (the numbers of ``rmsnorm.h``, read from ``_core``), the normalized
axes (:class:`Plan`), the weight and bias in the accumulator type, and the
options; ``quant_call`` does the same for ``rms_norm_quant`` (a
:class:`QuantCall`).  All checks run here, before anything is written; the adapters
(layer, scikit-learn, torch, Dask) validate through the same functions.
``_core`` takes a Call as it is and lays its operands out for the kernels.
"""

import math
import numbers
from collections import namedtuple

import numpy as np

from . import _core

try:  # NumPy >= 2.0
    from numpy.lib.array_utils import normalize_axis_tuple
except ImportError:  # NumPy 1.25, 1.26
    from numpy.core.numeric import normalize_axis_tuple
from numpy.exceptions import AxisError

# The one table of storage dtypes: name -> kernel code (rmsnorm.h's RMSN_F16..RMSN_F64).
CODE_BY_NAME = _core.DTYPE_CODES
F16, BF16, F32, F64 = (CODE_BY_NAME[name] for name in ("float16", "bfloat16", "float32", "float64"))
_CODES = {np.dtype(name): code for name, code in CODE_BY_NAME.items() if name != "bfloat16"}
_UINT16 = np.dtype(np.uint16)  # the native one, a singleton
_F32_DTYPE, _F64_DTYPE = np.dtype(np.float32), np.dtype(np.float64)
_INF = math.inf
EPS_MODES = {"sqrt": 0, "add": 1, "clamp": 2}
CAST_MODES = {"fused": False, "llama": True}  # round_mid: round x * rstd before the weight


def acc_dtype(*codes):
    """The accumulator rule: float64 when any operand is float64, else float32.
    Weight, bias and rstd are held in it."""
    return _F64_DTYPE if F64 in codes else _F32_DTYPE


def bfloat16():
    """ml_dtypes' bfloat16 dtype (a TypeError when ml_dtypes is missing)."""
    try:
        import ml_dtypes
    except ImportError:
        raise TypeError("dtype='bfloat16' needs the ml_dtypes package (pip install ml_dtypes)") from None
    return np.dtype(ml_dtypes.bfloat16)


def dtype_by_name(name):
    """np.dtype(name), "bfloat16" included."""
    return bfloat16() if name == "bfloat16" else np.dtype(name)


def dtype_code(dt):
    """Kernel code of a storage dtype, or None.  bfloat16 is ml_dtypes' type,
    recognized by name so that ml_dtypes is only imported by users who have it."""
    code = _CODES.get(dt)
    if code is None and dt.name == "bfloat16" and dt.itemsize == 2:
        _CODES[dt] = code = BF16
        _core.register_bfloat16(dt)
    return code


def is_dask(x):
    """A Dask collection, recognized without importing dask."""
    return type(x).__module__.startswith("dask.")


# ---- arrays -----------------------------------------------------------------

def asarray(a, name):
    """np.asarray with errors that name the argument; masked arrays refused,
    since their masked values would silently enter the sums."""
    if isinstance(a, np.ma.MaskedArray):
        raise TypeError(f"{name} is a masked array; masks are not applied: pass np.ma.getdata({name}) "
                        f"to normalize the data as stored, or fill the masked values first")
    try:
        return np.asarray(a)
    except (TypeError, ValueError) as e:
        raise type(e)(f"{name} is not an array of numbers: {e}") from None


class BFloat16Bits:
    """A uint16 ndarray of bfloat16 bit patterns, for adapters whose bfloat16
    data has no NumPy dtype without ml_dtypes (a torch tensor viewed as
    uint16): add_rms_norm and rms_norm_backward take it as bfloat16 data, and
    their bfloat16 results are uint16 arrays of bits like it."""

    __slots__ = ("bits",)

    def __init__(self, bits):
        self.bits = bits


def float_array(a, name):
    """(array, code): float16/bfloat16/float32/float64 as they are (native byte
    order), BFloat16Bits as its bits, integer and bool upcast to float64,
    anything else a TypeError."""
    if type(a) is BFloat16Bits:
        return a.bits, BF16
    a = a if type(a) is np.ndarray else asarray(a, name)
    code = dtype_code(a.dtype)
    if code is not None:
        return a, code
    kind = a.dtype.kind
    if kind == "f" and not a.dtype.isnative:
        a = a.astype(a.dtype.newbyteorder("="))
        return a, _CODES.get(a.dtype)
    if kind in "biu":
        return a.astype(np.float64), F64
    raise TypeError(
        f"{name} must hold float16, bfloat16, float32 or float64 numbers (integers are upcast), "
        f"got dtype {a.dtype}")


def raw_bfloat16(x, dtype):
    """True for a uint16 ndarray with dtype="bfloat16": x holds bfloat16 bit
    patterns (e.g. a torch bfloat16 tensor viewed as int16/uint16), and the
    result is the same representation, so ml_dtypes is not needed."""
    if dtype is None or type(x) is not np.ndarray or x.dtype is not _UINT16:
        return False
    if type(dtype) is str:
        return dtype == "bfloat16"
    try:
        return np.dtype(dtype).name == "bfloat16"
    except TypeError:
        return False


def result_dtype(dtype, x_dtype=None, x_code=None):
    """(dtype, code) of a requested output dtype; x's when dtype is None."""
    if dtype is None:
        return x_dtype, x_code
    if isinstance(dtype, str) and dtype == "bfloat16":
        dt = bfloat16()
    else:
        try:
            dt = np.dtype(dtype)
        except TypeError:
            raise TypeError(f"dtype must be a float dtype, got {dtype!r}") from None
    code = dtype_code(dt)
    if code is None or not dt.isnative:
        raise TypeError(f"dtype must be float16, bfloat16, float32 or float64, got {dt}")
    return dt, code


def input_dtype(dtype):
    """(dtype, code) of data of this dtype as rms_norm takes it (integers as float64)."""
    dt = dtype_by_name(dtype) if isinstance(dtype, str) else np.dtype(dtype)
    code = dtype_code(dt)
    if code is None:
        if dt.kind not in "biu":
            raise TypeError(f"x must hold float16, bfloat16, float32 or float64 numbers, got dtype {dt}")
        return _F64_DTYPE, F64
    return dt, code


# ---- scalars and options ------------------------------------------------------

def check_int(value, name, minimum):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


def _real(value, name):
    try:
        return float(value)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a real number, got {value!r}") from None


Options = namedtuple("Options", "eps eps_mode round_mid n_threads")
Options.__doc__ = """The options every op shares, checked: eps (float), eps_mode (kernel code),
round_mid (cast_mode="llama"), n_threads (None or a count >= 1)."""


def options(eps, eps_mode="sqrt", cast_mode="fused", n_threads=None):
    """The Options of these arguments, or the error the public functions raise."""
    try:
        e = float(eps)
    except (TypeError, ValueError):
        raise ValueError(f"eps must be a finite float >= 0, got {eps!r}") from None
    if not 0.0 <= e < _INF:
        raise ValueError(f"eps must be a finite float >= 0, got {eps!r}")
    mode = EPS_MODES.get(eps_mode) if isinstance(eps_mode, str) else None
    if mode is None:
        raise ValueError(f"eps_mode must be one of {sorted(EPS_MODES)}, got {eps_mode!r}")
    round_mid = CAST_MODES.get(cast_mode) if isinstance(cast_mode, str) else None
    if round_mid is None:
        raise ValueError(f"cast_mode must be one of {sorted(CAST_MODES)}, got {cast_mode!r}")
    return Options(e, mode, round_mid, None if n_threads is None else check_int(n_threads, "n_threads", 1))


def short_path_options(bias, axis, eps, groups, eps_mode, weight_offset, cast_mode, n_threads):
    """round_mid when the arguments besides the arrays are what the short paths
    take (no bias, the last axis, one group, eps_mode "sqrt", no offset, eps a
    finite float >= 0, n_threads a valid count: small calls run on one thread
    whatever it says), else None.  Plain type checks, no conversions: this
    runs before every decode call."""
    if (bias is None and type(axis) is int and axis == -1 and type(groups) is int and groups == 1
            and eps_mode == "sqrt" and type(eps) is float and 0.0 <= eps < _INF
            and type(weight_offset) is float and weight_offset == 0.0
            and (n_threads is None or (type(n_threads) is int and n_threads >= 1))):
        return CAST_MODES.get(cast_mode) if type(cast_mode) is str else None
    return None


def short_rstd(x):
    """The rstd array of a short path call on x (rows of the last axis), or None."""
    if type(x) is not np.ndarray or not x.ndim:
        return None
    return np.empty(x.shape[:-1] + (1,), _F64_DTYPE if x.dtype is _F64_DTYPE else _F32_DTYPE)


# ---- axes ---------------------------------------------------------------------

def last_axis(axis, ndim):
    """-1 for an axis (an int or a 1-tuple) that names the last of ndim axes,
    else axis as given: the short paths take axis=-1 only."""
    only = axis[0] if type(axis) is tuple and len(axis) == 1 else axis
    if type(only) is int and ndim > 0 and (only == -1 or only == ndim - 1):
        return -1
    return axis


class Plan:
    """Which axes are normalized, and the shapes that follow from it."""

    __slots__ = ("ndim", "norm_axes", "batch_axes", "norm_shape", "batch_shape", "size", "groups", "n",
                 "trailing")

    def __init__(self, shape, axis, groups):
        ndim = len(shape)
        if isinstance(axis, numbers.Integral) and not isinstance(axis, bool):
            axes = (axis,)
        else:
            try:
                axes = tuple(axis)
            except TypeError:
                raise TypeError(f"axis must be an int or a tuple of ints, got {axis!r}") from None
            if not all(isinstance(a, numbers.Integral) and not isinstance(a, bool) for a in axes):
                raise TypeError(f"axis must be an int or a tuple of ints, got {axis!r}")
        # AxisError when out of range, ValueError on duplicates (NumPy's own).
        if any(not -ndim <= a < ndim for a in axes):  # before NumPy: 2**70 would be an OverflowError
            raise AxisError(f"axis {axis!r} is out of bounds for array of dimension {ndim}")
        norm_axes = tuple(sorted(normalize_axis_tuple(axes, ndim, "axis")))
        self.ndim = ndim
        self.norm_axes = norm_axes
        self.batch_axes = tuple(a for a in range(ndim) if a not in norm_axes)
        self.norm_shape = tuple(shape[a] for a in norm_axes)
        self.batch_shape = tuple(shape[a] for a in self.batch_axes)
        self.size = math.prod(self.norm_shape)
        self.groups = check_int(groups, "groups", 1)
        if self.size % self.groups:
            raise ValueError(f"groups={groups} does not divide the {self.size} normalized elements evenly")
        self.n = self.size // self.groups
        self.trailing = norm_axes == tuple(range(ndim - len(norm_axes), ndim))

    def rstd_shape(self):
        return self.batch_shape + (self.groups,)


_PLANS = {}


def plan(shape, axis, groups=1):
    """A Plan, cached for plain int arguments (an axis or a tuple of them):
    decode loops call with the same shape thousands of times."""
    if type(groups) is not int or not (type(axis) is int or (type(axis) is tuple
                                                            and all(type(a) is int for a in axis))):
        return Plan(shape, axis, groups)
    key = (shape, axis, groups)
    p = _PLANS.get(key)
    if p is None:
        p = Plan(shape, axis, groups)
        if len(_PLANS) >= 256:
            _PLANS.clear()
        _PLANS[key] = p
    return p


def _broadcast_shape(a, b):
    try:
        return np.broadcast_shapes(a, b)
    except ValueError:
        return None


def affine_param(p, name, plan, acc, offset=0.0):
    """weight + offset (or bias) as a flat acc-typed array over the normalized
    shape, or None.  A user's array already in that form is used as is."""
    if p is None:
        return None if offset == 0.0 else np.full(plan.size, acc.type(1) + acc.type(offset), acc)
    if type(p) is np.ndarray and p.shape == plan.norm_shape and offset == 0.0:
        if p.dtype == acc and p.flags.c_contiguous and p.flags.aligned:
            return p.reshape(-1)
        flat = _core.weights_in_acc(p, acc == np.float64)
        if flat is not None:
            return flat
    a = asarray(p, name)
    if a.dtype.kind not in "fbiu" and dtype_code(a.dtype) is None:
        raise TypeError(f"{name} must hold real numbers, got dtype {a.dtype}")
    if a.ndim > len(plan.norm_shape) or _broadcast_shape(a.shape, plan.norm_shape) != plan.norm_shape:
        raise ValueError(
            f"{name} of shape {a.shape} does not broadcast to the normalized shape {plan.norm_shape} "
            f"(axis={plan.norm_axes}) without changing it")
    flat = np.empty(plan.norm_shape, acc)
    flat[...] = a
    if offset != 0.0:
        flat += acc.type(offset)
    return flat.reshape(-1)


def params(plan, acc, weight, bias, weight_offset):
    """(weight + offset, bias) in kernel form: flat, acc-typed, or None."""
    return (affine_param(weight, "weight", plan, acc, _real(weight_offset, "weight_offset")),
            affine_param(bias, "bias", plan, acc))


# ---- outputs ------------------------------------------------------------------

def _same_view(a, b):
    return (a.shape == b.shape and a.strides == b.strides and a.dtype == b.dtype
            and a.__array_interface__["data"][0] == b.__array_interface__["data"][0])


def _overlaps(a, b):
    if not np.may_share_memory(a, b):
        return False
    try:
        return np.shares_memory(a, b, max_work=1 << 20)
    except np.exceptions.TooHardError:
        return True


def _overlaps_itself(a):
    """Whether two elements of `a` may share memory: with its dims of more
    than one element sorted by |stride|, each stride must clear the extent of
    the ones before it.  (Exotic interleaved layouts that do not overlap are
    refused too; numpy.empty and its views never are.)"""
    if a.size == 0:
        return False
    extent = a.itemsize
    for dim, stride in sorted(((d, abs(s)) for d, s in zip(a.shape, a.strides) if d > 1), key=lambda t: t[1]):
        if stride < extent:
            return True
        extent = stride * (dim - 1) + extent
    return False


def check_output(out, name, shape, dtype, inputs, others=()):
    """A user's output array: right type, shape, dtype, writable; identical to
    an input (in place) or disjoint from it; disjoint from the other outputs."""
    if not isinstance(out, np.ndarray):
        raise TypeError(f"{name} must be a numpy.ndarray, got {type(out).__name__}")
    if out.shape != shape:
        raise ValueError(f"{name} has shape {out.shape}, expected {shape}")
    if out.dtype != dtype:
        raise TypeError(f"{name} has dtype {out.dtype}, expected {dtype}")
    if not out.flags.writeable:
        raise ValueError(f"{name} is read-only")
    if _overlaps_itself(out):
        raise ValueError(f"{name} has elements that share memory (a zero or overlapping stride); "
                         f"pass an array whose elements are distinct, e.g. numpy.empty")
    for a in inputs:
        if out is not a and _overlaps(out, a) and not _same_view(out, a):
            raise ValueError(f"{name} partially overlaps an input; pass the input itself for in-place")
    for other_name, other in others:
        if _overlaps(out, other):
            raise ValueError(f"{name} overlaps {other_name}")
    return out


def _unshared(param, outputs):
    """Copy a weight/bias the kernels would read while writing an output over it."""
    if param is not None and any(np.may_share_memory(param, o) for o in outputs):
        return param.copy()
    return param


# ---- the call description -------------------------------------------------------

Call = namedtuple("Call", "arrays n_inputs codes plan acc weight bias rstd dweight dbias options gate",
                  defaults=(None,))
Call.__doc__ = """One checked call, what _core runs.

arrays: the operands in the op's kernel order, inputs first: forward (x, y),
add (x, residual, residual_out, y), backward (dy, x, dx); n_inputs of them
are read; gated (x, gate, y), gated backward (dy, x, gate, dx, dgate).
codes: their kernel dtype codes, forward and gated (x, y), add (x,
residual), backward and gated backward (x,).  plan: the normalized axes.  acc: the accumulator
dtype, that of weight/bias (flat, weight_offset added), rstd and the
backward's dweight/dbias partial sums (or None).  options: Options.
gate: the gated ops' GateOptions, else None."""


GateOptions = namedtuple("GateOptions", "norm_before_gate silu")
ACTIVATIONS = {"silu": True, "sigmoid": False}


def gate_options(norm_before_gate, activation):
    """The GateOptions of these arguments, or the error the gated functions raise."""
    silu = ACTIVATIONS.get(activation) if isinstance(activation, str) else None
    if silu is None:
        raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, got {activation!r}")
    if not isinstance(norm_before_gate, (bool, np.bool_)):
        raise TypeError(f"norm_before_gate must be a bool, got {norm_before_gate!r}")
    return GateOptions(bool(norm_before_gate), silu)


def _x_and_gate(x, gate):
    """(x, gate, code, (x's own dtype, its code), gate's own dtype): both as
    float arrays of one dtype, the result_type of the two when they differ
    (the kernels read the gate in x's dtype), gate of x's shape."""
    x, tx = float_array(x, "x")
    gate, tg = float_array(gate, "gate")
    if gate.shape != x.shape:
        raise ValueError(f"gate of shape {gate.shape} does not match x of shape {x.shape}")
    own = (x.dtype, tx), gate.dtype
    if tg != tx and _UINT16 in (x.dtype, gate.dtype):
        raise TypeError("bfloat16 bits (BFloat16Bits) need x and gate of one dtype; convert the other first")
    if tg != tx:
        common = np.result_type(x.dtype, gate.dtype)
        code = dtype_code(common)
        if code is None:  # a pairing NumPy has no float type for (bfloat16 with float16)
            common = _F64_DTYPE if F64 in (tx, tg) else _F32_DTYPE
            code = _CODES[common]
        x, gate, tx = x.astype(common), gate.astype(common), code
    return x, gate, tx, own[0], own[1]


def forward_call(x, weight, bias, axis, eps, groups, eps_mode, weight_offset, cast_mode, dtype, out, return_rstd,
                 n_threads):
    """The Call of rms_norm(x, ...)."""
    if raw_bfloat16(x, dtype):
        tin = tout = BF16
        y_dtype = x.dtype
    else:
        x, tin = float_array(x, "x")
        y_dtype, tout = result_dtype(dtype, x.dtype, tin)
    p = plan(x.shape, axis, groups)
    acc = acc_dtype(tin, tout)
    w, b = params(p, acc, weight, bias, weight_offset)
    opts = options(eps, eps_mode, cast_mode, n_threads)
    if out is None:
        y = _core.empty_like(x, y_dtype)
    else:
        y = check_output(out, "out", x.shape, y_dtype, (x,))
        w, b = _unshared(w, (y,)), _unshared(b, (y,))
    rstd = np.empty(p.rstd_shape(), acc) if return_rstd else None
    return Call((x, y), 1, (tin, tout), p, acc, w, b, rstd, None, None, opts)


def add_call(x, residual, weight, bias, axis, eps, groups, eps_mode, weight_offset, cast_mode, out, residual_out,
             inplace, n_threads):
    """The Call of add_rms_norm(x, residual, ...)."""
    if inplace:
        if out is not None or residual_out is not None:
            raise ValueError("inplace=True writes into x and residual; do not pass out or residual_out")
        for name, a in (("x", x), ("residual", residual)):
            if type(a) is not BFloat16Bits and (not isinstance(a, np.ndarray) or dtype_code(a.dtype) is None
                                                or not a.dtype.isnative):
                raise TypeError(f"inplace=True needs {name} to be a float16/bfloat16/float32/float64 ndarray")
    x, tx = float_array(x, "x")
    residual, tr = float_array(residual, "residual")
    if inplace:
        out, residual_out = x, residual
    if x.shape != residual.shape:
        raise ValueError(f"x of shape {x.shape} and residual of shape {residual.shape} differ")
    p = plan(x.shape, axis, groups)
    acc = acc_dtype(tx, tr)
    w, b = params(p, acc, weight, bias, weight_offset)
    opts = options(eps, eps_mode, cast_mode, n_threads)
    inputs = (x, residual)
    ro = _core.empty_like(residual) if residual_out is None else \
        check_output(residual_out, "residual_out", x.shape, residual.dtype, inputs)
    y = _core.empty_like(x) if out is None else \
        check_output(out, "out", x.shape, x.dtype, inputs, (("residual_out", ro),))
    w, b = _unshared(w, (y, ro)), _unshared(b, (y, ro))
    return Call((x, residual, ro, y), 2, (tx, tr), p, acc, w, b, None, None, None, opts)


def backward_call(dy, x, weight, bias, rstd, axis, eps, groups, eps_mode, weight_offset, dx_out, n_threads):
    """The Call of rms_norm_backward(dy, x, ...); bias only shapes dbias and is
    validated like the forward's."""
    x, t = float_array(x, "x")
    dy, p, acc, w, _, rstd, opts, dw, db = _backward_operands(dy, x, t, weight, bias, rstd, axis, eps, groups,
                                                              eps_mode, weight_offset, n_threads)
    if dx_out is None:
        dx = _core.empty_like(x)
    else:
        dx = check_output(dx_out, "dx_out", x.shape, x.dtype, (dy, x))
        w, rstd = _unshared(w, (dx,)), _unshared(rstd, (dx,))
    return Call((dy, x, dx), 2, (t,), p, acc, w, None, rstd, dw, db, opts)


def _backward_operands(dy, x, t, weight, bias, rstd, axis, eps, groups, eps_mode, weight_offset, n_threads):
    """What the backward calls of x (kernel code t) check and make, in this
    order: (dy in x's dtype, plan, acc dtype, weight and bias as the kernels
    take them, rstd in acc or None, options, zeroed dweight and dbias row-block
    partial sums or None)."""
    dy, _ = float_array(dy, "dy")
    if dy.shape != x.shape:
        raise ValueError(f"dy of shape {dy.shape} does not match x of shape {x.shape}")
    if dy.dtype != x.dtype:
        dy = dy.astype(x.dtype)
    p = plan(x.shape, axis, groups)
    acc = acc_dtype(t)
    w, b = params(p, acc, weight, bias, weight_offset)
    opts = options(eps, eps_mode, "fused", n_threads)
    if rstd is not None:
        r, _ = float_array(rstd, "rstd")
        if r.shape != p.rstd_shape():
            raise ValueError(f"rstd has shape {r.shape}, expected {p.rstd_shape()} (the forward's)")
        rstd = np.ascontiguousarray(r, dtype=acc)
    blocks = _core.grad_blocks(math.prod(p.rstd_shape()), p.size)
    dw = np.zeros((blocks, p.size), acc) if weight is not None else None
    db = np.zeros((blocks, p.size), acc) if bias is not None else None
    return dy, p, acc, w, b, rstd, opts, dw, db


def gated_call(x, gate, weight, bias, axis, eps, groups, eps_mode, weight_offset, norm_before_gate, activation,
               cast_mode, dtype, out, return_rstd, n_threads):
    """The Call of rms_norm_gated(x, gate, ...)."""
    x_in, gate_in = x, gate
    x, gate, tin, (x_dtype, x_code), _ = _x_and_gate(x, gate)
    y_dtype, tout = result_dtype(dtype, x_dtype, x_code)
    p = plan(x.shape, axis, groups)
    acc = acc_dtype(tin, tout)
    w, b = params(p, acc, weight, bias, weight_offset)
    opts = options(eps, eps_mode, cast_mode, n_threads)
    gopts = gate_options(norm_before_gate, activation)
    if out is None:
        y = _core.empty(x.shape, y_dtype)
    else:
        inputs = tuple(a for a in (x_in, gate_in, x, gate) if isinstance(a, np.ndarray))
        y = check_output(out, "out", x.shape, y_dtype, inputs)
        w, b = _unshared(w, (y,)), _unshared(b, (y,))
    rstd = np.empty(p.rstd_shape(), acc) if return_rstd else None
    return Call((x, gate, y), 2, (tin, tout), p, acc, w, b, rstd, None, None, opts, gopts)


def gated_backward_call(dy, x, gate, weight, bias, rstd, axis, eps, groups, eps_mode, weight_offset,
                        norm_before_gate, activation, n_threads):
    """(Call, x's dtype, gate's dtype) of rms_norm_gated_backward(dy, x, gate,
    ...): the kernels write dx and dgate in the common dtype, the caller
    converts them to x's and gate's when the two differ."""
    x, gate, t, (x_dtype, _), gate_dtype = _x_and_gate(x, gate)
    dy, p, acc, w, b, rstd, opts, dw, db = _backward_operands(dy, x, t, weight, bias, rstd, axis, eps, groups,
                                                              eps_mode, weight_offset, n_threads)
    gopts = gate_options(norm_before_gate, activation)
    return Call((dy, x, gate, _core.empty_like(x), _core.empty_like(gate)), 3, (t,), p, acc, w, b, rstd, dw, db, opts,
                gopts), x_dtype, gate_dtype


def check_call(shape, dtype, weight=None, bias=None, *, axis=-1, eps=1e-6, groups=1, eps_mode="sqrt",
               weight_offset=0.0, cast_mode="fused", out_dtype=None, n_threads=None):
    """Raise what rms_norm would for x of this shape and dtype and these
    arguments, without data (Dask, scikit-learn's fit, the layers).
    Returns (plan, y dtype, acc dtype)."""
    x_dtype, x_code = input_dtype(dtype)
    y_dtype, y_code = result_dtype(out_dtype, x_dtype, x_code)
    p = plan(shape, axis, groups)
    acc = acc_dtype(x_code, y_code)
    params(p, acc, weight, bias, weight_offset)
    options(eps, eps_mode, cast_mode, n_threads)
    return p, y_dtype, acc


def param_grad(partials, param, plan):
    """Sum the row-block partial sums in block order, reduce over the dims the
    parameter was broadcast along, and give it the parameter's dtype."""
    p = np.asarray(param)
    dtype = p.dtype if dtype_code(p.dtype) is not None else _F64_DTYPE
    if len(partials) == 1 and dtype == partials.dtype and p.shape == plan.norm_shape:
        # One block (a decode row) of the parameter's own shape and dtype: the sums below would give its
        # values back (the kernels add into zeros, so no -0 that the sum would turn into +0).
        return partials[0].reshape(p.shape)
    with np.errstate(over="ignore"):  # overflow gives inf silently, as dx does in the kernels
        full = partials.sum(axis=0, dtype=np.float64).reshape(plan.norm_shape)  # the blocks' sums in double
        lead = full.ndim - p.ndim
        if lead:
            full = full.sum(axis=tuple(range(lead)))
        axes = tuple(i for i, (ps, fs) in enumerate(zip(p.shape, full.shape)) if ps == 1 and fs != 1)
        if axes:
            full = full.sum(axis=axes, keepdims=True)
        return np.asarray(full, dtype).reshape(p.shape)  # a 0-d array for a scalar parameter, not a scalar


# ---- quantized output ------------------------------------------------------------

# The quantized output kinds: name -> (kernel code of ops.h, QMAX).
_QMAX = {"int8": 127.0, "float8_e4m3fn": 448.0}
QUANT_KINDS = {name: (code, _QMAX[name]) for name, code in _core.QUANT_CODES.items()}


# quant_dtype names already resolved: name -> (kernel code, NumPy dtype), for the short path.
QUANT_BY_NAME = {"int8": (QUANT_KINDS["int8"][0], np.dtype(np.int8))}


def quant_dtype(value):
    """(name, NumPy dtype) of rms_norm_quant's quant_dtype: "int8" or
    "float8_e4m3fn" (a name or the dtype; float8 is ml_dtypes' type)."""
    if isinstance(value, str):
        name = value
    else:
        try:
            name = np.dtype(value).name
        except TypeError:
            name = None
    if name not in QUANT_KINDS:
        raise ValueError(f"quant_dtype must be 'int8' or 'float8_e4m3fn', got {value!r}")
    if name == "int8":
        return name, np.dtype(np.int8)
    try:
        import ml_dtypes
    except ImportError:
        raise TypeError("quant_dtype='float8_e4m3fn' needs the ml_dtypes package: "
                        "pip install 'rmsnorm_cpu[bf16]' (or ml_dtypes)") from None
    QUANT_BY_NAME[name] = (QUANT_KINDS[name][0], np.dtype(ml_dtypes.float8_e4m3fn))
    return name, QUANT_BY_NAME[name][1]


def scale_bound(scale_ub):
    """scale_ub as the kernels take it: inf for None, else a finite float > 0."""
    if scale_ub is None:
        return _INF
    try:
        ub = float(scale_ub)
    except (TypeError, ValueError):
        raise ValueError(f"scale_ub must be None or a finite float > 0, got {scale_ub!r}") from None
    if not 0.0 < ub < _INF:
        raise ValueError(f"scale_ub must be None or a finite float > 0, got {scale_ub!r}")
    return ub


def smallest_scale(name):
    """1 / (QMAX * 512) in float32: the scale of an all-zero (or empty) slice."""
    return np.float32(1.0) / np.float32(QUANT_KINDS[name][1] * 512.0)


QuantCall = namedtuple("QuantCall", "arrays n_inputs codes plan weight bias scale scale_out new_residual "
                                    "scale_ub options pre quant_name")
QuantCall.__doc__ = """One checked call of rms_norm_quant, what _core.quant runs.

arrays: (x, q), or (x, residual, residual_out, q) when x and residual share
a dtype, or (new_residual, q) after pre, the add_rms_norm Call that makes
new_residual first (residual of another dtype: two passes).  codes: (dtype
code of the normalized data, quant kind code).  weight/bias: in the
normalized data's acc dtype.  scale: float32, C-contiguous, one per slice;
scale_out: where the caller wants it (scale itself, or a strided array
_api copies into).  new_residual: the residual output or None.  scale_ub:
a float (inf: none).  quant_name: "int8" or "float8_e4m3fn"."""


def quant_call(x, weight, bias, residual, axis, eps, groups, eps_mode, weight_offset, quant_dtype_, scale_ub, out,
               scale_out, residual_out, inplace, n_threads):
    """The QuantCall of rms_norm_quant(x, ...)."""
    if inplace:
        if residual is None:
            raise ValueError("inplace=True writes new_residual into residual; pass residual")
        if residual_out is not None:
            raise ValueError("inplace=True writes into residual; do not pass residual_out")
        if not isinstance(residual, np.ndarray) or dtype_code(residual.dtype) is None \
                or not residual.dtype.isnative:
            raise TypeError("inplace=True needs residual to be a float16/bfloat16/float32/float64 ndarray")
    if residual is None and residual_out is not None:
        raise ValueError("residual_out is the new residual; pass residual too")
    x, tx = float_array(x, "x")
    tr = tx
    if residual is not None:
        residual, tr = float_array(residual, "residual")
        if x.shape != residual.shape:
            raise ValueError(f"x of shape {x.shape} and residual of shape {residual.shape} differ")
    name, q_dtype = quant_dtype(quant_dtype_)
    kind = QUANT_KINDS[name][0]
    ub = scale_bound(scale_ub)
    p = plan(x.shape, axis, groups)
    acc = acc_dtype(tr)
    w, b = params(p, acc, weight, bias, weight_offset)
    opts = options(eps, eps_mode, "fused", n_threads)
    inputs = (x,) if residual is None else (x, residual)
    ro = None
    if residual is not None:
        ro = residual if inplace else _core.empty_like(residual) if residual_out is None else \
            check_output(residual_out, "residual_out", x.shape, residual.dtype, inputs)
    others = () if ro is None else (("residual_out", ro),)
    q = _core.empty(x.shape, q_dtype) if out is None else check_output(out, "out", x.shape, q_dtype, inputs, others)
    if scale_out is None:
        scale = dst = np.empty(p.rstd_shape(), _F32_DTYPE)
    else:
        dst = check_output(scale_out, "scale_out", p.rstd_shape(), _F32_DTYPE, inputs, others + (("out", q),))
        scale = dst if dst.flags.c_contiguous else np.empty(p.rstd_shape(), _F32_DTYPE)
    outputs = (q, scale) if ro is None else (q, scale, ro)
    w, b = _unshared(w, outputs), _unshared(b, outputs)
    pre = None
    if residual is None:
        arrays, n_inputs = (x, q), 1
    elif tx == tr:
        arrays, n_inputs = (x, residual, ro, q), 2
    else:
        pre = Call((x, residual, ro, _core.empty_like(x)), 2, (tx, tr), p, acc_dtype(tx, tr), None, None, None, None,
                   None, opts)
        arrays, n_inputs = (ro, q), 1
    return QuantCall(arrays, n_inputs, (tr, kind), p, w, b, scale, dst, ro, ub, opts, pre, name)
