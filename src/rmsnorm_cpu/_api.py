"""The public functions: argument checks, axes -> (batch, normalized) layout, dtype rules.

Nothing here loops over data; ``_core`` does.  Every check runs before
anything is written, so a bad call never leaves a partly written ``out``.
"""

import math
import numbers
import operator

import numpy as np

from . import _core

try:  # NumPy >= 2.0
    from numpy.lib.array_utils import normalize_axis_tuple
except ImportError:  # NumPy 1.25, 1.26
    from numpy.core.numeric import normalize_axis_tuple
from numpy.exceptions import AxisError

__all__ = ["rms_norm", "rms_norm_backward", "add_rms_norm", "output_spec"]

# Storage dtype -> kernel code (the order of rmsn_f16/bf16/f32/f64 in rmsnorm.h).
_F16, _BF16, _F32, _F64 = 0, 1, 2, 3
_CODES = {np.dtype(np.float16): _F16, np.dtype(np.float32): _F32, np.dtype(np.float64): _F64}
_ACC = {False: np.dtype(np.float32), True: np.dtype(np.float64)}
_UINT16 = np.dtype(np.uint16)  # the native one, a singleton
_INF = math.inf
_F64_DTYPE = np.dtype(np.float64)
_EPS_MODES = {"sqrt": 0, "add": 1, "clamp": 2}
_CAST_MODES = {"fused": False, "llama": True}


def _dtype_code(dt):
    """Kernel code of a storage dtype, or None.  bfloat16 is ml_dtypes' type,
    recognized by name so that ml_dtypes is only imported by users who have it."""
    code = _CODES.get(dt)
    if code is None and dt.name == "bfloat16" and dt.itemsize == 2:
        _CODES[dt] = code = _BF16
        _core.register_bfloat16(dt)
    return code


def _bfloat16():
    try:
        import ml_dtypes
    except ImportError:
        raise TypeError("dtype='bfloat16' needs the ml_dtypes package (pip install ml_dtypes)") from None
    return np.dtype(ml_dtypes.bfloat16)


def _is_dask(x):
    """A Dask collection, recognized without importing dask."""
    return type(x).__module__.startswith("dask.")


def _asarray(a, name):
    """np.asarray with errors that name the argument; masked arrays refused,
    since their masked values would silently enter the sums."""
    if isinstance(a, np.ma.MaskedArray):
        raise TypeError(f"{name} is a masked array; masks are not applied: pass np.ma.getdata({name}) "
                        f"to normalize the data as stored, or fill the masked values first")
    try:
        return np.asarray(a)
    except (TypeError, ValueError) as e:
        raise type(e)(f"{name} is not an array of numbers: {e}") from None


class _BFloat16Bits:
    """A uint16 ndarray of bfloat16 bit patterns, for adapters whose bfloat16
    data has no NumPy dtype without ml_dtypes (a torch tensor viewed as
    uint16): add_rms_norm and rms_norm_backward take it as bfloat16 data, and
    their bfloat16 results are uint16 arrays of bits like it."""

    __slots__ = ("bits",)

    def __init__(self, bits):
        self.bits = bits


def _as_float_array(a, name):
    """(array, code): float16/bfloat16/float32/float64 as they are (native byte
    order), _BFloat16Bits as its bits, integer and bool upcast to float64,
    anything else a TypeError."""
    if type(a) is _BFloat16Bits:
        return a.bits, _BF16
    a = a if type(a) is np.ndarray else _asarray(a, name)
    code = _dtype_code(a.dtype)
    if code is not None:
        return a, code
    kind = a.dtype.kind
    if kind == "f" and not a.dtype.isnative:
        a = a.astype(a.dtype.newbyteorder("="))
        return a, _CODES.get(a.dtype)
    if kind in "biu":
        return a.astype(np.float64), _F64
    raise TypeError(
        f"{name} must hold float16, bfloat16, float32 or float64 numbers (integers are upcast), "
        f"got dtype {a.dtype}")


def _raw_bfloat16(x, dtype):
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


def _out_dtype(dtype, x_dtype, x_code):
    if dtype is None:
        return x_dtype, x_code
    if isinstance(dtype, str) and dtype == "bfloat16":
        dt = _bfloat16()
    else:
        try:
            dt = np.dtype(dtype)
        except TypeError:
            raise TypeError(f"dtype must be a float dtype, got {dtype!r}") from None
    code = _dtype_code(dt)
    if code is None or not dt.isnative:
        raise TypeError(f"dtype must be float16, bfloat16, float32 or float64, got {dt}")
    return dt, code


def _check_int(value, name, minimum):
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


def _options(eps, eps_mode, cast_mode="fused"):
    try:
        e = float(eps)
    except (TypeError, ValueError):
        raise ValueError(f"eps must be a finite float >= 0, got {eps!r}") from None
    if not 0.0 <= e < float("inf"):
        raise ValueError(f"eps must be a finite float >= 0, got {eps!r}")
    mode = _EPS_MODES.get(eps_mode) if isinstance(eps_mode, str) else None
    if mode is None:
        raise ValueError(f"eps_mode must be one of {sorted(_EPS_MODES)}, got {eps_mode!r}")
    round_mid = _CAST_MODES.get(cast_mode) if isinstance(cast_mode, str) else None
    if round_mid is None:
        raise ValueError(f"cast_mode must be one of {sorted(_CAST_MODES)}, got {cast_mode!r}")
    return e, mode, round_mid


def _n_threads(n_threads):
    return None if n_threads is None else _check_int(n_threads, "n_threads", 1)


class _Plan:
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
        self.groups = _check_int(groups, "groups", 1)
        if self.size % self.groups:
            raise ValueError(f"groups={groups} does not divide the {self.size} normalized elements evenly")
        self.n = self.size // self.groups
        self.trailing = norm_axes == tuple(range(ndim - len(norm_axes), ndim))

    def rstd_shape(self):
        return self.batch_shape + (self.groups,)


_PLANS = {}


def _plan(shape, axis, groups):
    """A _Plan, cached for plain int arguments: decode loops call with the same
    shape thousands of times."""
    if type(axis) is not int or type(groups) is not int:
        return _Plan(shape, axis, groups)
    key = (shape, axis, groups)
    plan = _PLANS.get(key)
    if plan is None:
        plan = _Plan(shape, axis, groups)
        if len(_PLANS) >= 256:
            _PLANS.clear()
        _PLANS[key] = plan
    return plan


def _affine_param(p, name, plan, acc, offset):
    """weight + offset (or bias) as a flat acc-typed array over the normalized
    shape, or None.  A user's array already in that form is used as is."""
    if p is None:
        return None if offset == 0.0 else np.full(plan.size, acc.type(1) + acc.type(offset), acc)
    if type(p) is np.ndarray and p.dtype == acc and p.shape == plan.norm_shape and offset == 0.0 \
            and p.flags.c_contiguous and p.flags.aligned:
        return p.reshape(-1)
    a = _asarray(p, name)
    if a.dtype.kind not in "fbiu" and _dtype_code(a.dtype) is None:
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


def _call_args(plan, acc, weight, bias, weight_offset, eps, eps_mode, cast_mode, n_threads):
    """The arguments every public function shares, checked and in kernel form:
    (weight + offset, bias, eps, eps_mode code, round_mid, n_threads)."""
    w = _affine_param(weight, "weight", plan, acc, _real(weight_offset, "weight_offset"))
    b = _affine_param(bias, "bias", plan, acc, 0.0)
    eps, mode, round_mid = _options(eps, eps_mode, cast_mode)
    return w, b, eps, mode, round_mid, _n_threads(n_threads)


def _broadcast_shape(a, b):
    try:
        return np.broadcast_shapes(a, b)
    except ValueError:
        return None


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


def _check_output(out, name, shape, dtype, inputs, others=()):
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


def _short_path_args(bias, axis, eps, groups, eps_mode, weight_offset, cast_mode, n_threads):
    """Whether the arguments besides the arrays are what the short paths take:
    the defaults (eps any finite float >= 0).  Small calls run on one thread
    whatever n_threads says, so it only has to be a valid count."""
    return (bias is None and type(axis) is int and axis == -1 and type(groups) is int and groups == 1
            and eps_mode == "sqrt" and cast_mode == "fused" and type(eps) is float and 0.0 <= eps < _INF
            and type(weight_offset) is float and weight_offset == 0.0
            and (n_threads is None or (type(n_threads) is int and n_threads >= 1)))


def _short_rstd(x):
    """The rstd array of a short path call on x (rows of the last axis), or None."""
    if type(x) is not np.ndarray or not x.ndim:
        return None
    return np.empty(x.shape[:-1] + (1,), _ACC[x.dtype is _F64_DTYPE])


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


def _unshared(param, outputs):
    """Copy a weight/bias the kernels would read while writing an output over it."""
    if param is not None and any(np.may_share_memory(param, o) for o in outputs):
        return param.copy()
    return param


def _norm_stride(shape, strides, itemsize):
    """Element stride of the normalized dims flattened to one, or None."""
    stride = expected = None
    for dim, st in zip(reversed(shape), reversed(strides)):
        if dim == 1:
            continue
        if stride is None:
            stride = st
        elif st != expected:
            return None
        expected = st * dim
    if stride is None:
        return 1
    return stride // itemsize if stride % itemsize == 0 else None


def _layout(plan, arrays, n_inputs):
    """Describe same-shape arrays as batch dims x one normalized dim for _core.

    Returns (arrays, batch_shape, byte strides per array, element stride per
    array, writebacks).  The normalized axes are moved last (a view).  An
    array whose normalized axes do not flatten to one stride (or that is
    unaligned) is replaced: an input by a contiguous copy, an output by a
    temporary that is copied into it afterwards (the writebacks).
    """
    nb = len(plan.batch_axes)
    if plan.trailing and all(a.flags.c_contiguous and a.flags.aligned for a in arrays):
        batch = math.prod(plan.batch_shape)
        return arrays, (batch,), [[plan.size * a.itemsize] for a in arrays], [1] * len(arrays), []
    perm = plan.batch_axes + plan.norm_axes
    views, nstrides, writebacks = [], [], []
    for k, a in enumerate(arrays):
        v = a.transpose(perm)
        ns = _norm_stride(v.shape[nb:], v.strides[nb:], v.itemsize) if a.flags.aligned else None
        if ns is None:
            if k < n_inputs:
                v = np.ascontiguousarray(v)
            else:
                tmp = np.empty(v.shape, v.dtype)
                writebacks.append((v, tmp))
                v = tmp
            ns = 1
        views.append(v)
        nstrides.append(ns)
    shape = list(views[0].shape[:nb])
    strides = [list(v.strides[:nb]) for v in views]
    keep = [d for d in range(nb) if shape[d] != 1]
    shape = [shape[d] for d in keep]
    strides = [[st[d] for d in keep] for st in strides]
    d = len(shape) - 1
    while d > 0:  # merge dim d into d-1 where every array allows it
        if all(st[d - 1] == st[d] * shape[d] for st in strides):
            shape[d - 1] *= shape[d]
            del shape[d]
            for st in strides:
                st[d - 1] = st[d]
                del st[d]
        d -= 1
    return views, tuple(shape), strides, nstrides, writebacks


def _finish(writebacks):
    for dst, tmp in writebacks:
        np.copyto(dst, tmp)


def rms_norm(x, weight=None, bias=None, *, axis=-1, eps=1e-6, groups=1, eps_mode="sqrt", weight_offset=0.0,
             cast_mode="fused", dtype=None, out=None, return_rstd=False, n_threads=None):
    """Root-mean-square normalization over ``axis``.

    Parameters
    ----------
    x : array_like
        float16, bfloat16 (``ml_dtypes.bfloat16``), float32 or float64 data of any
        shape and strides; integer and bool input is upcast to float64.
    weight, bias : array_like or scalar, optional
        Broadcast to the normalized shape without changing it; any float dtype.
        ``None`` means a weight of ones (``weight_offset`` still applies) and no bias.
    axis : int or tuple of ints, default -1
        The axes normalized together (a set, as in NumPy).
    eps : float, default 1e-6
        Finite and >= 0.
    groups : int, default 1
        Split the normalized elements (C order) into this many equal groups,
        each normalized on its own.
    eps_mode : {"sqrt", "add", "clamp"}
        Where eps enters; see Notes.
    weight_offset : float, default 0.0
        Added to the weight (Gemma-style ``1 + weight``).
    cast_mode : {"fused", "llama"}
        "fused" rounds float16/bfloat16 results once; "llama" rounds ``x * rstd``
        to the input dtype first, like Hugging Face ``LlamaRMSNorm``.
    dtype : dtype, optional
        Output dtype (float16, "bfloat16", float32, float64); default: x's.
        With a uint16 ``x``, ``dtype="bfloat16"`` reads ``x`` as bfloat16 bit
        patterns and returns bfloat16 bit patterns in uint16 (no ml_dtypes needed).
    out : ndarray, optional
        Output of x's shape and the output dtype, any strides; may be ``x`` itself.
        Not supported for Dask arrays, whose result is a lazy Dask array (the
        normalized axes must each be one chunk).
    return_rstd : bool, default False
        Also return ``rstd`` of shape ``batch_shape + (groups,)``.
    n_threads : int, optional
        Cap on OpenMP threads for this call (default: the OpenMP setting).

    Returns
    -------
    y : ndarray
        Or ``(y, rstd)`` with ``return_rstd=True``.  ``rstd`` is float32, or
        float64 when the computation is in float64 (float64 input or output).

    Raises
    ------
    TypeError
        Complex/object input, a non-float ``dtype``, ``out`` of the wrong dtype.
    ValueError
        A bad ``eps``, mode, ``groups``, weight/bias shape, or ``out`` that is
        mis-shaped, read-only or partially overlapping ``x``.
    numpy.exceptions.AxisError
        An axis out of range.

    Notes
    -----
    For each normalized slice ``v`` of ``n`` elements, with squares summed in
    float32 (float64 for float64 data)::

        rstd = 1 / sqrt(mean(v**2) + eps)        # eps_mode="sqrt"
        rstd = 1 / (sqrt(mean(v**2)) + eps)      # eps_mode="add"
        rstd = 1 / max(sqrt(mean(v**2)), eps)    # eps_mode="clamp"
        y    = v * rstd * (weight + weight_offset) + bias

    Examples
    --------
    >>> import numpy as np, rmsnorm_cpu as rn
    >>> rn.rms_norm(np.array([[3.0, 4.0]]), eps=0.0)
    array([[0.84852814, 1.13137085]])
    """
    # Short path: the common call of decode loops (thousands of one-row calls)
    # and of servers with a preallocated out: a small C-contiguous x (or its
    # bfloat16 bits), weight None or acc-typed of the normalized shape, out
    # None or an array like x; _core.forward_rows checks the arrays and
    # returns None for anything else, which takes the general path below.
    if _short_path_args(bias, axis, eps, groups, eps_mode, weight_offset, cast_mode, n_threads):
        bits = dtype is not None and _raw_bfloat16(x, dtype)
        if dtype is None or bits:
            rstd = _short_rstd(x) if return_rstd else None
            y = None if return_rstd and rstd is None else _core.forward_rows(x, weight, eps, out, rstd, bits)
            if y is not None:
                return (y, rstd) if return_rstd else y
    if _is_dask(x):  # lazy, block by block
        from . import _dask
        return _dask.rms_norm(rms_norm, x, weight, bias, axis=axis, eps=eps, groups=groups, eps_mode=eps_mode,
                              weight_offset=weight_offset, cast_mode=cast_mode, dtype=dtype, out=out,
                              return_rstd=return_rstd, n_threads=n_threads)
    if _raw_bfloat16(x, dtype):
        tin = tout = _BF16
        out_dtype = x.dtype
    else:
        x, tin = _as_float_array(x, "x")
        out_dtype, tout = _out_dtype(dtype, x.dtype, tin)
    plan = _plan(x.shape, axis, groups)
    acc = _ACC[_F64 in (tin, tout)]
    w, b, eps, mode, round_mid, n_threads = _call_args(plan, acc, weight, bias, weight_offset, eps, eps_mode,
                                                       cast_mode, n_threads)
    if out is None:
        y = np.empty_like(x, dtype=out_dtype)
    else:
        y = _check_output(out, "out", x.shape, out_dtype, (x,))
        w, b = _unshared(w, (y,)), _unshared(b, (y,))
    rstd = np.empty(plan.rstd_shape(), acc) if return_rstd else None
    if x.size:
        (xv, yv), shape, bstrides, nstrides, writebacks = _layout(plan, [x, y], 1)
        _core.forward(xv, yv, w, b, rstd, shape, bstrides, nstrides, plan.n, plan.groups, tin, tout, eps, mode,
                      round_mid, n_threads, out is not None and not writebacks)
        _finish(writebacks)
    elif rstd is not None:
        rstd.fill(np.nan)
    return (y, rstd) if return_rstd else y


def add_rms_norm(x, residual, weight=None, bias=None, *, axis=-1, eps=1e-6, groups=1, eps_mode="sqrt",
                 weight_offset=0.0, cast_mode="fused", out=None, residual_out=None, inplace=False,
                 n_threads=None):
    """Fused residual add and RMS normalization in one pass over memory.

    ``new_residual = x + residual`` (added in float32, or float64 if either is
    float64, rounded once to the residual's dtype), then
    ``y = rms_norm(new_residual, ...)`` in x's dtype.  Bitwise equal to the
    two steps done apart.

    Parameters
    ----------
    x, residual : ndarray
        The same shape; any supported float dtypes.
    weight, bias, axis, eps, groups, eps_mode, weight_offset, cast_mode, n_threads
        As in :func:`rms_norm`.
    out, residual_out : ndarray, optional
        Where to write ``y`` and ``new_residual``; each may be the input it
        replaces, but they may not overlap each other.
    inplace : bool, default False
        Write ``new_residual`` into ``residual`` and ``y`` into ``x`` (the vLLM
        convention) and return them.

    Returns
    -------
    (y, new_residual) : tuple of ndarray

    Raises
    ------
    TypeError, ValueError
        As :func:`rms_norm`, and for mismatched shapes or ``inplace`` on
        arrays that cannot be written; all before anything is written.

    Examples
    --------
    >>> import numpy as np, rmsnorm_cpu as rn
    >>> y, r = rn.add_rms_norm(np.array([1.0, 2.0]), np.array([2.0, 2.0]), eps=0.0)
    >>> r
    array([3., 4.])
    >>> y
    array([0.84852814, 1.13137085])
    """
    # Short path (the call of every decoder layer, in place or not): as rms_norm's.
    if out is None and residual_out is None and type(inplace) is bool and \
            _short_path_args(bias, axis, eps, groups, eps_mode, weight_offset, cast_mode, n_threads):
        result = _core.add_rows(x, residual, weight, eps, inplace)
        if result is not None:
            return result
    if _is_dask(x) or _is_dask(residual):  # lazy, block by block
        from . import _dask
        return _dask.add_rms_norm(add_rms_norm, x, residual, weight, bias, axis=axis, eps=eps, groups=groups,
                                  eps_mode=eps_mode, weight_offset=weight_offset, cast_mode=cast_mode, out=out,
                                  residual_out=residual_out, inplace=inplace, n_threads=n_threads)
    if inplace:
        if out is not None or residual_out is not None:
            raise ValueError("inplace=True writes into x and residual; do not pass out or residual_out")
        for name, a in (("x", x), ("residual", residual)):
            if type(a) is not _BFloat16Bits and (not isinstance(a, np.ndarray) or _dtype_code(a.dtype) is None
                                                 or not a.dtype.isnative):
                raise TypeError(f"inplace=True needs {name} to be a float16/bfloat16/float32/float64 ndarray")
    x, tx = _as_float_array(x, "x")
    residual, tr = _as_float_array(residual, "residual")
    if inplace:
        out, residual_out = x, residual
    if x.shape != residual.shape:
        raise ValueError(f"x of shape {x.shape} and residual of shape {residual.shape} differ")
    plan = _plan(x.shape, axis, groups)
    acc = _ACC[_F64 in (tx, tr)]
    w, b, eps, mode, round_mid, n_threads = _call_args(plan, acc, weight, bias, weight_offset, eps, eps_mode,
                                                       cast_mode, n_threads)
    inputs = (x, residual)
    ro = np.empty_like(residual) if residual_out is None else \
        _check_output(residual_out, "residual_out", x.shape, residual.dtype, inputs)
    y = np.empty_like(x) if out is None else \
        _check_output(out, "out", x.shape, x.dtype, inputs, (("residual_out", ro),))
    w, b = _unshared(w, (y, ro)), _unshared(b, (y, ro))
    if x.size:
        (xv, rv, rov, yv), shape, bstrides, nstrides, writebacks = _layout(plan, [x, residual, ro, y], 2)
        _core.add_forward(xv, rv, rov, yv, w, b, None, shape, bstrides, nstrides, plan.n, plan.groups, tx, tr,
                          eps, mode, round_mid, n_threads, out is not None and residual_out is not None and not writebacks)
        _finish(writebacks)
    return y, ro


def _param_grad(partials, param, plan):
    """Sum the row-block partial sums in block order, reduce over the dims the
    parameter was broadcast along, and give it the parameter's dtype."""
    p = np.asarray(param)
    dtype = p.dtype if _dtype_code(p.dtype) is not None else np.dtype(np.float64)
    with np.errstate(over="ignore"):  # overflow gives inf silently, as dx does in the kernels
        full = partials.sum(axis=0, dtype=np.float64).reshape(plan.norm_shape)  # the blocks' sums in double
        lead = full.ndim - p.ndim
        if lead:
            full = full.sum(axis=tuple(range(lead)))
        axes = tuple(i for i, (ps, fs) in enumerate(zip(p.shape, full.shape)) if ps == 1 and fs != 1)
        if axes:
            full = full.sum(axis=axes, keepdims=True)
        return np.asarray(full, dtype).reshape(p.shape)  # a 0-d array for a scalar parameter, not a scalar


def rms_norm_backward(dy, x, weight=None, bias=None, *, rstd=None, axis=-1, eps=1e-6, groups=1, eps_mode="sqrt",
                      weight_offset=0.0, dx_out=None, n_threads=None):
    """Gradient of :func:`rms_norm` with respect to x, weight and bias.

    Parameters
    ----------
    dy : array_like
        Gradient of the output, x's shape (converted to x's dtype).
    x, weight, bias, axis, eps, groups, eps_mode, weight_offset, n_threads
        The forward's arguments.
    rstd : array_like, optional
        The forward's ``rstd`` for the same arguments; recomputed when absent.
    dx_out : ndarray, optional
        Where to write ``dx``: x's shape and dtype, any strides; may be ``dy``
        or ``x`` itself (in place), not a partial overlap of either.  Returned
        as ``dx``; training loops reuse one buffer per step.

    Returns
    -------
    (dx, dweight, dbias)
        ``dx`` has x's dtype; ``dweight``/``dbias`` the shape and dtype of
        ``weight``/``bias`` as passed (None where that argument is None).

    Notes
    -----
    With ``g = dy * (weight + weight_offset)`` and ``xhat = x * rstd``::

        dx      = rstd * (g - xhat * mean(g * xhat))      # eps_mode="sqrt"
        dweight = sum over slices of dy * xhat
        dbias   = sum over slices of dy

    Reduced in float32 (float64 for float64) within fixed row blocks of at
    most 1024 rows, and the blocks' sums in float64, in a fixed order: bitwise
    the same for any thread count.  Never divides by the weight.

    Examples
    --------
    >>> import numpy as np, rmsnorm_cpu as rn
    >>> dx, dw, db = rn.rms_norm_backward(np.ones((1, 2)), np.array([[3.0, 4.0]]), np.ones(2), eps=0.0)
    >>> dw
    array([0.84852814, 1.13137085])
    """
    if _is_dask(dy) or _is_dask(x):  # lazy, block by block
        from . import _dask
        return _dask.rms_norm_backward(rms_norm_backward, dy, x, weight, bias, rstd=rstd, axis=axis, eps=eps,
                                       groups=groups, eps_mode=eps_mode, weight_offset=weight_offset,
                                       dx_out=dx_out, n_threads=n_threads)
    x, t = _as_float_array(x, "x")
    dy, _ = _as_float_array(dy, "dy")
    if dy.shape != x.shape:
        raise ValueError(f"dy of shape {dy.shape} does not match x of shape {x.shape}")
    if dy.dtype != x.dtype:
        dy = dy.astype(x.dtype)
    plan = _plan(x.shape, axis, groups)
    acc = _ACC[t == _F64]
    # bias only shapes dbias; it is validated like the forward's.
    w, _, eps, mode, _, n_threads = _call_args(plan, acc, weight, bias, weight_offset, eps, eps_mode, "fused",
                                               n_threads)
    if rstd is not None:
        r, _ = _as_float_array(rstd, "rstd")
        if r.shape != plan.rstd_shape():
            raise ValueError(f"rstd has shape {r.shape}, expected {plan.rstd_shape()} (the forward's)")
        rstd = np.ascontiguousarray(r, dtype=acc)
    if dx_out is None:
        dx = np.empty_like(x)
    else:
        dx = _check_output(dx_out, "dx_out", x.shape, x.dtype, (dy, x))
        w, rstd = _unshared(w, (dx,)), _unshared(rstd, (dx,))
    blocks = _core.grad_blocks(math.prod(plan.rstd_shape()), plan.size)
    dw = np.zeros((blocks, plan.size), acc) if weight is not None else None
    db = np.zeros((blocks, plan.size), acc) if bias is not None else None
    if x.size:
        (dyv, xv, dxv), shape, bstrides, nstrides, writebacks = _layout(plan, [dy, x, dx], 2)
        _core.backward(dyv, xv, dxv, w, rstd, dw, db, shape, bstrides, nstrides, plan.n, plan.groups, t, eps, mode,
                       n_threads, dx_out is not None and not writebacks)
        _finish(writebacks)
    return (dx, None if dw is None else _param_grad(dw, weight, plan),
            None if db is None else _param_grad(db, bias, plan))


def output_spec(shape, dtype, *, axis=-1, groups=1, out_dtype=None):
    """Shapes and dtypes :func:`rms_norm` would return, without data.

    Returns ``{"y": (shape, dtype), "rstd": (shape, dtype)}`` and raises what
    ``rms_norm`` would for the same arguments.

    Examples
    --------
    >>> import rmsnorm_cpu as rn
    >>> rn.output_spec((8, 4096), "float16")
    {'y': ((8, 4096), dtype('float16')), 'rstd': ((8, 1), dtype('float32'))}
    """
    try:
        shape = (operator.index(shape),) if isinstance(shape, numbers.Integral) else \
            tuple(operator.index(s) for s in shape)
    except TypeError:
        raise TypeError(f"shape must be a tuple of ints, got {shape!r}") from None
    if any(s < 0 for s in shape):
        raise ValueError(f"shape must not have negative dimensions, got {shape}")
    if isinstance(dtype, str) and dtype == "bfloat16":
        x_dtype = _bfloat16()
    else:
        x_dtype = np.dtype(dtype)
    x_code = _dtype_code(x_dtype)
    if x_code is None:
        if x_dtype.kind not in "biu":
            raise TypeError(f"x must hold float16, bfloat16, float32 or float64 numbers, got dtype {x_dtype}")
        x_dtype, x_code = np.dtype(np.float64), _F64
    y_dtype, y_code = _out_dtype(out_dtype, x_dtype, x_code)
    plan = _plan(shape, axis, groups)
    return {"y": (shape, y_dtype), "rstd": (plan.rstd_shape(), _ACC[_F64 in (x_code, y_code)])}
