"""``rms_norm`` on Dask arrays: lazy, block by block (imported only for Dask input)."""

import operator

import numpy as np

from . import _api, _spec


def _normalize_block(block, weight, bias, kwargs):
    return _api.rms_norm(block, weight, bias, **kwargs)


def rms_norm(x, weight=None, bias=None, *, axis=-1, eps=1e-6, groups=1, eps_mode="sqrt", weight_offset=0.0,
             cast_mode="fused", dtype=None, out=None, return_rstd=False, n_threads=None):
    """:func:`rmsnorm_cpu.rms_norm` of a Dask array, as a lazy Dask array.

    Every argument is checked now, with the errors ``rms_norm`` raises.  The
    normalized axes must each be one chunk, so that each block holds whole
    slices; ``out`` is not supported (Dask arrays are immutable).
    """
    if out is not None:
        raise TypeError("out= is not supported for a Dask array x (Dask arrays are immutable)")
    spec = _api.output_spec(x.shape, x.dtype, axis=axis, groups=groups, out_dtype=dtype)
    plan = _spec.plan(x.shape, axis, groups)
    split = [a for a in plan.norm_axes if len(x.chunks[a]) > 1]
    if split:
        rechunk = ", ".join(f"{a}: -1" for a in plan.norm_axes)
        raise ValueError(
            f"rms_norm of a Dask array needs each normalized axis in a single chunk, but axis "
            f"{split[0]} is split into {len(x.chunks[split[0]])} chunks; rechunk first: "
            f"x.rechunk({{{rechunk}}})")
    acc = spec["rstd"][1]
    _spec.params(plan, acc, weight, bias, weight_offset)
    _spec.options(eps, eps_mode, cast_mode, n_threads)
    kwargs = dict(axis=axis, eps=eps, groups=groups, eps_mode=eps_mode, weight_offset=weight_offset,
                  cast_mode=cast_mode, dtype=dtype, return_rstd=return_rstd, n_threads=n_threads)
    y_meta = np.empty((0,) * x.ndim, spec["y"][1])
    if not return_rstd:
        return x.map_blocks(_normalize_block, weight, bias, kwargs, dtype=spec["y"][1], meta=y_meta)
    # One task per block computes (y, rstd); two views pick the parts, so the
    # forward runs once per block.  The rstd view drops the normalized axes
    # (one chunk each, so each of its blocks sees one pair, nested in lists).
    import dask.array as da

    pairs = x.map_blocks(_normalize_block, weight, bias, kwargs, meta=y_meta)
    y = pairs.map_blocks(operator.itemgetter(0), dtype=spec["y"][1], meta=y_meta)
    index = tuple(range(x.ndim))
    rstd = da.blockwise(_rstd_of, plan.batch_axes + (x.ndim,), pairs, index, new_axes={x.ndim: plan.groups},
                        concatenate=False, dtype=acc, meta=np.empty((0,) * (len(plan.batch_axes) + 1), acc))
    return y, rstd


def _rstd_of(nested_pair):
    while isinstance(nested_pair, list):
        nested_pair = nested_pair[0]
    return nested_pair[1]
