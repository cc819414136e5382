"""The public functions on Dask arrays: lazy, block by block (imported only for Dask input).

``_api`` hands each function here the eager function it stands for.  The
eager function checks every argument at call time, on empty stand-ins of
the Dask arrays, so a Dask call raises what a NumPy call raises and no check
is written twice; then each block of the result is the eager function of the
matching input blocks.
"""

import functools
import math
import numbers

import dask.array as da
import numpy as np
from dask import is_dask_collection

from ._spec import plan


def rms_norm(eager, x, weight, bias, *, out, return_rstd, **options):
    """``y`` (and ``rstd``) of a Dask ``x`` as lazy Dask arrays."""
    _refuse_output("out", out is not None)
    arrays = _arrays(x=x)
    options, (y_spec, rstd_spec) = _check_now(eager, arrays, weight, bias, dict(options, return_rstd=True))
    x, = _aligned(arrays, options["axis"], eager.__name__)
    block = functools.partial(eager, **dict(options, return_rstd=return_rstd))
    if not return_rstd:
        return x.map_blocks(block, weight=weight, bias=bias, dtype=y_spec.dtype, meta=_meta(y_spec, x.ndim))
    results = x.map_blocks(block, weight=weight, bias=bias, meta=_meta(y_spec, x.ndim))
    return _whole_part(results, 0, y_spec), _rstd_part(results, 1, rstd_spec, options["axis"])


def add_rms_norm(eager, x, residual, weight, bias, *, out, residual_out, inplace, **options):
    """``(y, new_residual)`` of a Dask ``x`` or ``residual`` (the other may be NumPy) as lazy Dask arrays."""
    _refuse_output("out", out is not None)
    _refuse_output("residual_out", residual_out is not None)
    _refuse_output("inplace=True", inplace)
    arrays = _arrays(x=x, residual=residual)
    options, (y_spec, residual_spec) = _check_now(eager, arrays, weight, bias, options)
    x, residual = _aligned(arrays, options["axis"], eager.__name__)
    index = tuple(range(x.ndim))
    results = da.blockwise(functools.partial(eager, **options), index, x, index, residual, index, weight=weight,
                           bias=bias, meta=_meta(y_spec, x.ndim))
    return _whole_part(results, 0, y_spec), _whole_part(results, 1, residual_spec)


def rms_norm_backward(eager, dy, x, weight, bias, *, rstd, dx_out, **options):
    """``(dx, dweight, dbias)`` of a Dask ``dy`` or ``x`` (the other, and ``rstd``, may be NumPy) as lazy Dask
    arrays; dweight and dbias are tree reductions of per-block float64 partial sums."""
    _refuse_output("dx_out", dx_out is not None)
    return _backward(eager, _arrays(dy=dy, x=x), weight, bias, rstd, options)


def rms_norm_gated(eager, x, gate, weight, bias, *, out, return_rstd, **options):
    """``y`` (and ``rstd``) of a Dask ``x`` or ``gate`` (the other may be NumPy) as lazy Dask arrays."""
    _refuse_output("out", out is not None)
    arrays = _arrays(x=x, gate=gate)
    options, (y_spec, rstd_spec) = _check_now(eager, arrays, weight, bias, dict(options, return_rstd=True))
    x, gate = _aligned(arrays, options["axis"], eager.__name__)
    index = tuple(range(x.ndim))
    block = functools.partial(eager, **dict(options, return_rstd=return_rstd))
    if not return_rstd:
        return da.blockwise(block, index, x, index, gate, index, weight=weight, bias=bias, dtype=y_spec.dtype,
                            meta=_meta(y_spec, x.ndim))
    results = da.blockwise(block, index, x, index, gate, index, weight=weight, bias=bias,
                           meta=_meta(y_spec, x.ndim))
    return _whole_part(results, 0, y_spec), _rstd_part(results, 1, rstd_spec, options["axis"])


def rms_norm_gated_backward(eager, dy, x, gate, weight, bias, *, rstd, **options):
    """``(dx, dgate, dweight, dbias)`` of a Dask ``dy``, ``x`` or ``gate`` as lazy Dask arrays, as
    rms_norm_backward."""
    return _backward(eager, _arrays(dy=dy, x=x, gate=gate), weight, bias, rstd, options)


def _backward(eager, arrays, weight, bias, rstd, options):
    """A backward's results: the gradients of the same-shaped `arrays` but the
    first (dy) block by block, then dweight and dbias as tree reductions of
    per-block float64 partial sums."""
    rstd = None if rstd is None else _arrays(rstd=rstd)["rstd"]
    options, specs = _check_now(eager, arrays, weight, bias, options, rstd)
    *array_specs, dweight_spec, dbias_spec = specs
    arrays = _aligned(arrays, options["axis"], eager.__name__)
    ndim = arrays[0].ndim
    index = tuple(range(ndim))
    batch_axes = tuple(d for d in index if d not in options["axis"])
    if rstd is not None:  # its batch dims chunked as x's, its groups dim one chunk
        chunks = tuple(arrays[0].chunks[d] for d in batch_axes) + (rstd.shape[-1],)
        rstd = rstd.rechunk(chunks) if is_dask_collection(rstd) else _from_numpy(rstd, chunks)
    # Each block's eager dweight/dbias is its partial sum, kept in float64 by
    # passing float64 parameters (exact for the narrower floats; the kernels
    # read them in the accumulator dtype, so the other gradients are unchanged).
    blockwise_args = [arg for a in arrays for arg in (a, index)]
    results = da.blockwise(functools.partial(_backward_block, functools.partial(eager, **options)), index,
                           *blockwise_args, rstd, None if rstd is None else batch_axes + (ndim,),
                           weight=_in_float64(weight, dweight_spec), bias=_in_float64(bias, dbias_spec),
                           concatenate=False, meta=_meta(array_specs[0], ndim))
    k = len(array_specs)
    return (*(_whole_part(results, j, spec) for j, spec in enumerate(array_specs)),
            _param_sum(results, k, dweight_spec, batch_axes), _param_sum(results, k + 1, dbias_spec, batch_axes))


def _backward_block(eager, *blocks, weight, bias):
    *arrays, rstd = blocks
    return eager(*arrays, weight, bias, rstd=_unnested(rstd))


def rms_norm_quant(eager, x, weight, bias, *, residual, out, scale_out, residual_out, inplace, **options):
    """``(q, scale)``, or ``(q, scale, new_residual)`` with a residual, of a Dask ``x`` or ``residual`` (the
    other may be NumPy) as lazy Dask arrays."""
    _refuse_output("out", out is not None)
    _refuse_output("scale_out", scale_out is not None)
    _refuse_output("residual_out", residual_out is not None)
    _refuse_output("inplace=True", inplace)
    if residual is None:
        arrays = _arrays(x=x)
        options, (q_spec, scale_spec) = _check_now(eager, arrays, weight, bias, options)
        x, = _aligned(arrays, options["axis"], eager.__name__)
        results = x.map_blocks(functools.partial(eager, **options), weight=weight, bias=bias,
                               meta=_meta(q_spec, x.ndim))
        return _whole_part(results, 0, q_spec), _rstd_part(results, 1, scale_spec, options["axis"])
    with_residual = functools.partial(_quant_with_residual, eager)
    arrays = _arrays(x=x, residual=residual)
    options, (q_spec, scale_spec, residual_spec) = _check_now(with_residual, arrays, weight, bias, options)
    x, residual = _aligned(arrays, options["axis"], eager.__name__)
    index = tuple(range(x.ndim))
    results = da.blockwise(functools.partial(with_residual, **options), index, x, index, residual, index,
                           weight=weight, bias=bias, meta=_meta(q_spec, x.ndim))
    return (_whole_part(results, 0, q_spec), _rstd_part(results, 1, scale_spec, options["axis"]),
            _whole_part(results, 2, residual_spec))


def _quant_with_residual(eager, x, residual, weight, bias, **options):
    """rms_norm_quant with the residual as the second array, as the blocks and _check_now pass arrays."""
    return eager(x, weight, bias, residual=residual, **options)


def _refuse_output(name, requested):
    if requested:
        raise TypeError(f"{name} is not supported for Dask input: Dask arrays are immutable "
                        f"(use the lazy arrays returned)")


def _arrays(**arrays):
    """The array arguments by name: Dask and NumPy arrays as they are, anything
    else as NumPy converts it, or as it is when NumPy cannot (the eager
    function then raises its own error for it)."""
    for name, a in arrays.items():
        if is_dask_collection(a):
            if any(math.isnan(n) for n in a.shape):
                raise ValueError(f"{name} has unknown chunk sizes; call {name}.compute_chunk_sizes() first")
        elif not isinstance(a, np.ndarray):
            try:
                arrays[name] = np.asarray(a)
            except (TypeError, ValueError):
                pass
    return arrays


def _check_now(eager, arrays, weight, bias, options, rstd=None):
    """Run `eager` on stand-ins of the same-shaped `arrays` (and of `rstd`)
    so that it checks every argument now, as for NumPy input.

    The stand-ins have the dtypes of the arrays and their shape with the batch
    dims 0: eager runs every check and no kernel (a Dask weight or bias
    stands in as zeros).  Returns the options for
    the blocks (``axis`` as the normalized axes) and eager's result on the
    stand-ins, which has the result dtypes (and dweight/dbias their real shapes).
    """
    weight, bias = _param_stand_in(weight), _param_stand_in(bias)
    shapes = [getattr(a, "shape", None) for a in arrays.values()]
    if shapes.count(shapes[0]) < len(shapes):  # eager raises, naming the real shapes
        eager(*map(_zero_strided, arrays.values()), weight, bias, **options)
    shape = shapes[0]
    ndim = len(shape)
    axis = options["axis"]
    if not isinstance(axis, numbers.Integral):
        try:
            options = dict(options, axis=tuple(axis))  # read once: an iterator would be spent
        except TypeError:
            pass
    try:
        axes = plan(shape, options["axis"])  # the axes only: eager checks groups on the stand-ins
    except (TypeError, ValueError):  # eager raises its error for axis (AxisError is a ValueError)
        eager(*(_empty(a, (0,) * ndim) for a in arrays.values()), weight, bias, **options)
    norm_axes, batch_axes = axes.norm_axes, axes.batch_axes
    block_options = dict(options, axis=norm_axes)
    if batch_axes:
        stand_in_shape = tuple(0 if d in batch_axes else n for d, n in enumerate(shape))
        stand_in_batch = (0,) * len(batch_axes)
    else:  # one slice: a leading empty batch dim, the axes counted from the end; `axis` as given checked first
        eager(*(_empty(a, (0,) * ndim) for a in arrays.values()), axis=options["axis"])
        stand_in_shape, stand_in_batch = (0,) + shape, (0,)
        options = dict(options, axis=tuple(range(-ndim, 0)))
    stand_ins = [_empty(a, stand_in_shape) for a in arrays.values()]
    if rstd is None:
        return block_options, eager(*stand_ins, weight, bias, **options)
    rstd_shape = tuple(shape[d] for d in batch_axes) + (options["groups"],)
    if getattr(rstd, "shape", None) == rstd_shape:
        rstd_stand_in = _empty(rstd, stand_in_batch + rstd_shape[-1:])
        return block_options, eager(*stand_ins, weight, bias, rstd=rstd_stand_in, **options)
    # The rest checked first, eager's error for rstd names the real shapes;
    # stand-ins of the result dtype are read as they are, without a copy.
    result = eager(*stand_ins, weight, bias, **options)
    full = np.broadcast_to(np.zeros((), result[0].dtype), shape)
    return block_options, eager(*(full for _ in arrays), weight, bias, rstd=_zero_strided(rstd), **options)


def _empty(a, shape):
    """An empty array of `shape` standing in for `a`: its dtype, and for NumPy
    input its array type (a masked array is refused as such)."""
    return np.empty(shape, a.dtype) if is_dask_collection(a) else np.empty_like(a, shape=shape)


def _param_stand_in(param):
    """A Dask weight or bias as zeros of its shape and dtype (its values are not checked)."""
    return np.zeros(param.shape, param.dtype) if is_dask_collection(param) else param


def _zero_strided(a):
    """A Dask array's stand-in of its real shape that takes no memory.  Integers
    and bools come as float64: eager would upcast them with a copy of the full shape."""
    if not is_dask_collection(a):
        return a
    dtype = np.dtype(np.float64) if a.dtype.kind in "biu" else a.dtype
    return np.broadcast_to(np.zeros((), dtype), a.shape)


def _aligned(arrays, norm_axes, function):
    """The same-shaped arrays as Dask arrays chunked like the first Dask one;
    each normalized axis must be one chunk, so that each block holds whole slices."""
    for name, a in arrays.items():
        split = [d for d in norm_axes if len(a.chunks[d]) > 1] if is_dask_collection(a) else []
        if split:
            rechunk = ", ".join(f"{d}: -1" for d in norm_axes)
            raise ValueError(
                f"{function} of a Dask array needs each normalized axis in a single chunk, but axis {split[0]} "
                f"of {name} is split into {len(a.chunks[split[0]])} chunks; rechunk first: "
                f"{name}.rechunk({{{rechunk}}})")
    chunks = next(a.chunks for a in arrays.values() if is_dask_collection(a))
    return [a.rechunk(chunks) if is_dask_collection(a) else _from_numpy(a, chunks) for a in arrays.values()]


def _from_numpy(a, chunks):
    """A NumPy argument as Dask takes one (a copy, so later writes to `a` do
    not change the result), under a random name: Dask's default name, a hash
    of the data, would read all of it a second time."""
    return da.from_array(a, chunks=chunks, name=False)


def _meta(spec, ndim):
    return np.empty((0,) * ndim, spec.dtype)


def _unnested(block):
    """A block that blockwise hands over in nested lists, one level per dim of
    the input that the output does not have (a single chunk each)."""
    while isinstance(block, list):
        block = block[0]
    return block


def _part(result, k, lead=0):
    """Part k of one block's result tuple; with `lead`, as one element of
    `lead` block dims."""
    part = _unnested(result)[k]
    return part.reshape((1,) * lead + part.shape) if lead else part


def _whole_part(results, k, spec):
    """Part k of every block, shaped like the input (one task per block computes all parts)."""
    return results.map_blocks(_part, k, dtype=spec.dtype, meta=_meta(spec, results.ndim))


def _rstd_part(results, k, spec, norm_axes):
    """rstd of every block: the batch dims, then the groups dim."""
    ndim = results.ndim
    batch_axes = tuple(d for d in range(ndim) if d not in norm_axes)
    return da.blockwise(_part, batch_axes + (ndim,), results, tuple(range(ndim)), k, None,
                        new_axes={ndim: spec.shape[-1]}, concatenate=False, dtype=spec.dtype,
                        meta=_meta(spec, len(batch_axes) + 1))


def _param_sum(results, k, spec, batch_axes):
    """dweight or dbias: each block's float64 partial sum, one element of a
    (blocks along the batch dims) x (parameter shape) array, summed over the
    blocks by Dask's tree reduction (split_every from dask.config), then
    given the parameter's dtype.  None where the parameter is None."""
    if spec is None:
        return None
    ndim = results.ndim
    param_axes = tuple(range(ndim, ndim + spec.ndim))
    partials = da.blockwise(_part, batch_axes + param_axes, results, tuple(range(ndim)), k, None,
                            len(batch_axes), None, new_axes=dict(zip(param_axes, spec.shape)),
                            adjust_chunks=dict.fromkeys(batch_axes, 1), concatenate=False, dtype=np.float64,
                            meta=np.empty((0,) * (len(batch_axes) + spec.ndim), np.float64))
    return partials.sum(axis=tuple(range(len(batch_axes))), dtype=np.float64).astype(spec.dtype)


def _in_float64(param, grad_spec):
    """The parameter as float64 when its gradient would be narrower (the cast is exact)."""
    if grad_spec is None or grad_spec.dtype == np.float64:
        return param
    return param.astype(np.float64) if is_dask_collection(param) else np.asarray(param, np.float64)
