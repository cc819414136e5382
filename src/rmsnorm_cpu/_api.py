"""The public functions: rms_norm, add_rms_norm, rms_norm_backward, rms_norm_gated,
rms_norm_gated_backward, rms_norm_quant, output_spec.

Each turns its arguments into a ``_spec.Call`` (every check, before anything
is written) and runs it on ``_core``; the common small calls first try the
short paths, which take only what they can run as is.
"""

import numbers
import operator

import numpy as np

from . import _core, _spec

_INF = float("inf")

__all__ = ["rms_norm", "rms_norm_backward", "add_rms_norm", "rms_norm_gated", "rms_norm_gated_backward",
           "rms_norm_quant", "output_spec"]


def _run(op, call):
    """Run op (_core.forward/add_forward/backward) on the call, unless it has no elements."""
    if call.arrays[0].size:
        op(call)


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
    # bfloat16 bits), weight None or a float vector of the last axis, out
    # None or an array like x; _core.forward_rows checks the arrays and
    # returns None for anything else, which takes the general path below.
    round_mid = _spec.short_path_options(bias, axis, eps, groups, eps_mode, weight_offset, cast_mode, n_threads)
    if round_mid is not None:
        # The common spelling compared inline (a call costs as much as a tenth of
        # the decode kernel); forward_rows then checks that x is uint16.
        bits = dtype is not None and (dtype == "bfloat16" if type(dtype) is str else _spec.raw_bfloat16(x, dtype))
        if dtype is None or bits:
            rstd = _spec.short_rstd(x) if return_rstd else None
            y = None if return_rstd and rstd is None else \
                _core.forward_rows(x, weight, eps, out, rstd, bits, round_mid)
            if y is not None:
                return (y, rstd) if return_rstd else y
    if _spec.is_dask(x):  # lazy, block by block
        from . import _dask
        return _dask.rms_norm(rms_norm, x, weight, bias, axis=axis, eps=eps, groups=groups, eps_mode=eps_mode,
                              weight_offset=weight_offset, cast_mode=cast_mode, dtype=dtype, out=out,
                              return_rstd=return_rstd, n_threads=n_threads)
    call = _spec.forward_call(x, weight, bias, axis, eps, groups, eps_mode, weight_offset, cast_mode, dtype, out,
                              return_rstd, n_threads)
    _run(_core.forward, call)
    y, rstd = call.arrays[1], call.rstd
    if rstd is not None and not y.size:
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
    if out is None and residual_out is None and type(inplace) is bool:
        round_mid = _spec.short_path_options(bias, axis, eps, groups, eps_mode, weight_offset, cast_mode, n_threads)
        if round_mid is not None:
            result = _core.add_rows(x, residual, weight, eps, inplace, False, round_mid)
            if result is not None:
                return result
    if _spec.is_dask(x) or _spec.is_dask(residual):  # lazy, block by block
        from . import _dask
        return _dask.add_rms_norm(add_rms_norm, x, residual, weight, bias, axis=axis, eps=eps, groups=groups,
                                  eps_mode=eps_mode, weight_offset=weight_offset, cast_mode=cast_mode, out=out,
                                  residual_out=residual_out, inplace=inplace, n_threads=n_threads)
    call = _spec.add_call(x, residual, weight, bias, axis, eps, groups, eps_mode, weight_offset, cast_mode, out,
                          residual_out, inplace, n_threads)
    _run(_core.add_forward, call)
    _, _, new_residual, y = call.arrays
    return y, new_residual


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
    if _spec.is_dask(dy) or _spec.is_dask(x):  # lazy, block by block
        from . import _dask
        return _dask.rms_norm_backward(rms_norm_backward, dy, x, weight, bias, rstd=rstd, axis=axis, eps=eps,
                                       groups=groups, eps_mode=eps_mode, weight_offset=weight_offset,
                                       dx_out=dx_out, n_threads=n_threads)
    call = _spec.backward_call(dy, x, weight, bias, rstd, axis, eps, groups, eps_mode, weight_offset, dx_out,
                               n_threads)
    _run(_core.backward, call)
    return (call.arrays[2], None if weight is None else _spec.param_grad(call.dweight, weight, call.plan),
            None if bias is None else _spec.param_grad(call.dbias, bias, call.plan))


def rms_norm_gated(x, gate, weight=None, bias=None, *, axis=-1, eps=1e-6, groups=1, eps_mode="sqrt",
                   weight_offset=0.0, norm_before_gate=True, activation="silu", cast_mode="fused", dtype=None,
                   out=None, return_rstd=False, n_threads=None):
    """Gated RMS normalization (Mamba2 ``RMSNormGated``, FLA ``FusedRMSNormGated``).

    With ``act = silu`` (``g * sigmoid(g)``) or ``sigmoid``::

        norm_before_gate=True:   y = rms_norm(x, weight, bias) * act(gate)
        norm_before_gate=False:  y = rms_norm(x * act(gate), weight, bias)

    Parameters
    ----------
    x, gate : array_like
        The same shape, any float dtypes.  With a gate of another dtype than
        x both are converted to their common dtype (``numpy.result_type``)
        and the math runs in it.
    weight, bias, axis, eps, groups, eps_mode, weight_offset, dtype, return_rstd, n_threads
        As in :func:`rms_norm`; ``dtype`` defaults to x's.  Mamba's
        ``group_size`` is ``n // groups``.
    norm_before_gate : bool, default True
        Normalize x and then gate, or gate and then normalize.
    activation : {"silu", "sigmoid"}
    cast_mode : {"fused", "llama"}
        "fused" rounds float16/bfloat16 results once.  "llama" reproduces the
        Hugging Face gated classes: ``t = round_x(v * rstd)``,
        ``p = round_x(t * weight + bias)``, then ``y = round_out(p * act(gate))``
        when ``norm_before_gate`` (else ``y = p``).
    out : ndarray, optional
        Output of x's shape and the output dtype; may be ``x`` or ``gate``.

    Returns
    -------
    y : ndarray
        Or ``(y, rstd)`` with ``return_rstd=True``; ``rstd`` is that of the
        normalized quantity (``x`` or ``x * act(gate)``).

    Raises
    ------
    TypeError, ValueError, numpy.exceptions.AxisError
        As :func:`rms_norm`, and for a gate of another shape or an unknown
        activation; all before anything is written.

    Examples
    --------
    >>> import numpy as np, rmsnorm_cpu as rn
    >>> rn.rms_norm_gated(np.array([[3.0, 4.0]]), np.array([[0.0, 50.0]]), eps=0.0, activation="sigmoid")
    array([[0.42426407, 1.13137085]])
    """
    # Short path: the decode call (a small C-contiguous x and gate of one
    # dtype, the default options); _core.gated_rows returns None for anything
    # else, which takes the general path below.
    if dtype is None and return_rstd is False and type(norm_before_gate) is bool and type(activation) is str:
        round_mid = _spec.short_path_options(bias, axis, eps, groups, eps_mode, weight_offset, cast_mode, n_threads)
        silu = _spec.ACTIVATIONS.get(activation)
        if round_mid is not None and silu is not None:
            y = _core.gated_rows(x, gate, weight, eps, out, norm_before_gate, silu, round_mid)
            if y is not None:
                return y
    if _spec.is_dask(x) or _spec.is_dask(gate):  # lazy, block by block
        from . import _dask
        return _dask.rms_norm_gated(rms_norm_gated, x, gate, weight, bias, axis=axis, eps=eps, groups=groups,
                                    eps_mode=eps_mode, weight_offset=weight_offset,
                                    norm_before_gate=norm_before_gate, activation=activation,
                                    cast_mode=cast_mode, dtype=dtype, out=out, return_rstd=return_rstd,
                                    n_threads=n_threads)
    call = _spec.gated_call(x, gate, weight, bias, axis, eps, groups, eps_mode, weight_offset, norm_before_gate,
                            activation, cast_mode, dtype, out, return_rstd, n_threads)
    _run(_core.gated_forward, call)
    y, rstd = call.arrays[2], call.rstd
    if rstd is not None and not y.size:
        rstd.fill(np.nan)
    return (y, rstd) if return_rstd else y


def rms_norm_gated_backward(dy, x, gate, weight=None, bias=None, *, rstd=None, axis=-1, eps=1e-6, groups=1,
                            eps_mode="sqrt", weight_offset=0.0, norm_before_gate=True, activation="silu",
                            n_threads=None):
    """Gradient of :func:`rms_norm_gated` with respect to x, gate, weight and bias.

    Parameters
    ----------
    dy : array_like
        Gradient of the output, x's shape.
    x, gate, weight, bias, axis, eps, groups, eps_mode, weight_offset, norm_before_gate, activation, n_threads
        The forward's arguments.
    rstd : array_like, optional
        The forward's ``rstd`` for the same arguments; recomputed when absent.

    Returns
    -------
    (dx, dgate, dweight, dbias)
        ``dx`` in x's dtype, ``dgate`` in gate's; ``dweight``/``dbias`` as in
        :func:`rms_norm_backward` (None where that argument is None).

    Notes
    -----
    The exact gradient of the forward computed in float32 (float64 for
    float64 data), ``cast_mode="fused"``; dweight and dbias are reduced in a
    fixed order as in :func:`rms_norm_backward`: bitwise the same for any
    thread count.

    Examples
    --------
    >>> import numpy as np, rmsnorm_cpu as rn
    >>> dx, dgate, dw, db = rn.rms_norm_gated_backward(np.ones((1, 2)), np.array([[3.0, 4.0]]),
    ...                                                np.zeros((1, 2)), activation="sigmoid", eps=0.0)
    >>> dgate
    array([[0.21213203, 0.28284271]])
    """
    if _spec.is_dask(dy) or _spec.is_dask(x) or _spec.is_dask(gate):  # lazy, block by block
        from . import _dask
        return _dask.rms_norm_gated_backward(rms_norm_gated_backward, dy, x, gate, weight, bias, rstd=rstd,
                                             axis=axis, eps=eps, groups=groups, eps_mode=eps_mode,
                                             weight_offset=weight_offset, norm_before_gate=norm_before_gate,
                                             activation=activation, n_threads=n_threads)
    call, x_dtype, gate_dtype = _spec.gated_backward_call(dy, x, gate, weight, bias, rstd, axis, eps, groups,
                                                          eps_mode, weight_offset, norm_before_gate, activation,
                                                          n_threads)
    _run(_core.gated_backward, call)
    dx, dgate = call.arrays[3], call.arrays[4]
    return (dx.astype(x_dtype, copy=False), dgate.astype(gate_dtype, copy=False),
            None if weight is None else _spec.param_grad(call.dweight, weight, call.plan),
            None if bias is None else _spec.param_grad(call.dbias, bias, call.plan))


def rms_norm_quant(x, weight=None, bias=None, *, residual=None, axis=-1, eps=1e-6, groups=1, eps_mode="sqrt",
                   weight_offset=0.0, quant_dtype="int8", scale_ub=None, out=None, scale_out=None, residual_out=None,
                   inplace=False, n_threads=None):
    """RMS normalization with a dynamically quantized output (int8 or float8_e4m3fn).

    ``y = rms_norm(x)`` (or of ``x + residual``, added as :func:`add_rms_norm`
    does) is computed in float32 (float64 for float64 data) and never rounded
    to a storage dtype; per slice (a row, or a group with ``groups``)::

        amax  = max|y|, then min(amax, scale_ub) if scale_ub is given
        scale = max(amax / QMAX, 1 / (QMAX * 512))             # float32
        q     = saturate(round_half_even(y * (1 / scale)))     # float32 reciprocal

    QMAX is 127 for int8 (q in [-128, 127]) and 448 for float8_e4m3fn
    (saturating to +-448, subnormals kept).

    Parameters
    ----------
    x : array_like
        As in :func:`rms_norm`.
    weight, bias, axis, eps, groups, eps_mode, weight_offset, n_threads
        As in :func:`rms_norm`.
    residual : ndarray, optional
        Added to x first; ``new_residual`` is bitwise :func:`add_rms_norm`'s.
    quant_dtype : {"int8", "float8_e4m3fn"}
        float8_e4m3fn arrays are ``ml_dtypes.float8_e4m3fn`` (the ``bf16`` extra).
    scale_ub : float, optional
        Upper bound on amax (finite, > 0); larger values saturate.
    out, scale_out : ndarray, optional
        Preallocated ``q`` (x's shape, the quant dtype) and ``scale`` (float32,
        ``batch_shape + (groups,)``); any strides.
    residual_out : ndarray, optional
        Where to write ``new_residual`` (residual's shape and dtype).
    inplace : bool, default False
        Write ``new_residual`` into ``residual`` (x is never overwritten: q has
        another dtype).

    Returns
    -------
    (q, scale) or, with ``residual``, (q, scale, new_residual)

    Raises
    ------
    TypeError
        Bad x, an output of the wrong dtype, float8_e4m3fn without ml_dtypes.
    ValueError
        A bad ``quant_dtype``, ``scale_ub``, ``eps``, mode, ``groups``, shape,
        or output; all before anything is written.

    Notes
    -----
    A NaN in a slice's y makes its scale NaN; NaN elements become 0 in int8
    and the NaN encoding in float8_e4m3fn.

    Examples
    --------
    >>> import numpy as np, rmsnorm_cpu as rn
    >>> q, scale = rn.rms_norm_quant(np.array([[1.0, -2.0, 4.0]], np.float32), eps=0.0)
    >>> q
    array([[ 32, -64, 127]], dtype=int8)
    """
    # Short path (decode: one call per token and layer): as rms_norm's, for a
    # quant_dtype name already seen, scale_ub None or a float, no outputs given.
    if out is None and scale_out is None and residual_out is None and type(inplace) is bool \
            and type(quant_dtype) is str and (scale_ub is None or type(scale_ub) is float and 0.0 < scale_ub < _INF):
        kind = _spec.QUANT_BY_NAME.get(quant_dtype)
        if kind is not None and _spec.short_path_options(bias, axis, eps, groups, eps_mode, weight_offset, "fused",
                                                         n_threads) is not None:
            result = _core.quant_rows(x, weight, eps, kind[0], kind[1], _INF if scale_ub is None else scale_ub,
                                      residual, inplace)
            if result is not None:
                return result
    if _spec.is_dask(x) or _spec.is_dask(residual):  # lazy, block by block
        from . import _dask
        return _dask.rms_norm_quant(rms_norm_quant, x, weight, bias, residual=residual, axis=axis, eps=eps,
                                    groups=groups, eps_mode=eps_mode, weight_offset=weight_offset,
                                    quant_dtype=quant_dtype, scale_ub=scale_ub, out=out, scale_out=scale_out,
                                    residual_out=residual_out, inplace=inplace, n_threads=n_threads)
    call = _spec.quant_call(x, weight, bias, residual, axis, eps, groups, eps_mode, weight_offset, quant_dtype,
                            scale_ub, out, scale_out, residual_out, inplace, n_threads)
    q = call.arrays[-1]
    if q.size:
        _core.quant(call)
    else:
        call.scale.fill(_spec.smallest_scale(call.quant_name))
    if call.scale_out is not call.scale:
        call.scale_out[...] = call.scale
    return (q, call.scale_out) if call.new_residual is None else (q, call.scale_out, call.new_residual)


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
    plan, y_dtype, acc = _spec.check_call(shape, dtype, axis=axis, groups=groups, out_dtype=out_dtype)
    return {"y": (shape, y_dtype), "rstd": (plan.rstd_shape(), acc)}
