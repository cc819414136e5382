"""PyTorch adapter: registered ops, autograd, an ``nn.Module`` drop-in, model patching.

Importing this module imports torch (``import rmsnorm_cpu`` does not) and
registers nine ops in the ``rmsnorm_cpu`` namespace, each with a fake (meta)
implementation, so that ``torch.compile(fullgraph=True)`` and ``torch.export``
see one op per call::

    torch.ops.rmsnorm_cpu.rms_norm(x, weight, bias, dims, eps, eps_mode, weight_offset, cast_mode)
        -> (y, rstd)
    torch.ops.rmsnorm_cpu.rms_norm_backward(dy, x, weight, bias, rstd, dims, eps, eps_mode, weight_offset)
        -> (dx, dweight, dbias)
    torch.ops.rmsnorm_cpu.add_rms_norm(x, residual, weight, bias, dims, eps, eps_mode, weight_offset,
                                       cast_mode) -> (y, new_residual)
    torch.ops.rmsnorm_cpu.add_rms_norm_(x, residual, ...)   # in place: y into x, new_residual into residual
    torch.ops.rmsnorm_cpu.rms_norm_gated(x, gate, weight, groups, eps, norm_before_gate, activation, cast_mode)
        -> (y, rstd)
    torch.ops.rmsnorm_cpu.rms_norm_gated_backward(dy, x, gate, weight, rstd, groups, eps, norm_before_gate,
                                                  activation) -> (dx, dgate, dweight)
    torch.ops.rmsnorm_cpu.rms_norm_quant(x, weight, groups, eps, quant_dtype, scale_ub) -> (q, scale)
    torch.ops.rmsnorm_cpu.add_rms_norm_quant(x, residual, weight, groups, eps, quant_dtype, scale_ub)
        -> (q, scale, new_residual)
    torch.ops.rmsnorm_cpu.add_rms_norm_quant_(x, residual, ...) -> (q, scale)   # new_residual into residual

``dims`` is the number of trailing dimensions normalized together.  The
forward and the functional add are differentiable (``register_autograd``; the
gradient is the ``rms_norm_backward`` op, which reuses the forward's ``rstd``).
``dweight``/``dbias`` are empty tensors where ``weight``/``bias`` is None.
The gated ops normalize the last dim in ``groups``; a gate of None is the
plain norm.  The gated forward is differentiable through the gated backward
op; the quantized ops are not differentiable.

The public functions (:func:`rms_norm`, :func:`add_rms_norm`, :class:`RMSNorm`)
call the ops while compiling, exporting or tracing.  In eager mode they skip
the dispatcher: without autograd to record they hand the tensors' memory to
the kernels' short path directly (NumPy views, no copies; bfloat16 as its
bits, so ml_dtypes is not needed), and with autograd to record they run the
same kernels inside a ``torch.autograd.Function`` with the ops' own formula.
"""

import math
import numbers
from collections import namedtuple
from typing import Optional

import numpy as np
import torch

from . import _api, _core, _runtime, _spec

__all__ = ["RMSNorm", "RMSNormGated", "add_rms_norm", "replace_rms_norms", "rms_norm", "rms_norm_gated",
           "rms_norm_quant"]

_BF16 = torch.bfloat16
_ROUND_MID = _spec.CAST_MODES  # the kernels' flag for each cast_mode
_CODES = {getattr(torch, name): code for name, code in _spec.CODE_BY_NAME.items()}
_AXES = {1: -1, **{k: tuple(range(-k, 0)) for k in range(2, 9)}}  # an int axis: _api caches its plan


# ---- tensors <-> kernels ------------------------------------------------------

def _array(t):
    """A CPU tensor's memory as an ndarray, no copy (bfloat16 as uint16 bits)."""
    return (t.view(torch.uint16) if t.dtype == _BF16 else t).numpy(force=True)


def _bits_or_array(t):
    """What _api's add and backward take: bfloat16 bits wrapped, else the array."""
    return _spec.BFloat16Bits(_array(t)) if t.dtype == _BF16 else _array(t)


def _tensor(a, dtype=None):
    """An ndarray as a tensor, no copy: of dtype, which may be bfloat16 for
    uint16 bits; an ml_dtypes bfloat16 array is a bfloat16 tensor."""
    if a.dtype.name == "bfloat16":
        a, dtype = a.view(np.uint16), _BF16
    t = torch.from_numpy(a)
    return t.view(_BF16) if dtype == _BF16 else t


# The dtype the kernels compute in, and take weight and bias in, by the data's dtype (_spec.acc_dtype).
_ACC = {t: getattr(torch, _spec.acc_dtype(code).name) for t, code in _CODES.items()}


def _acc(dtype):
    return _ACC.get(dtype, torch.float32)


def _kernel_param(p, acc, offset=0.0):
    """weight + offset (or bias) as an acc-typed ndarray, or None."""
    if p is None:
        return None
    a = (p if p.dtype == acc else p.to(acc)).numpy(force=True)
    return a + a.dtype.type(offset) if offset else a  # in acc, as _api adds it


def _short(x, weight, bias, dims, eps, eps_mode, weight_offset, cast_mode):
    """Whether a call takes the kernels' short path on the tensors' memory:
    the last dim of a small contiguous float tensor, a contiguous float weight
    or none, the defaults otherwise.  eps is checked here: that path trusts it."""
    return (dims == 1 and bias is None and type(weight_offset) in (float, int) and weight_offset == 0
            and eps_mode == "sqrt" and cast_mode in _ROUND_MID and type(eps) is float and 0.0 <= eps < math.inf
            and x.dtype in _CODES and x.is_contiguous() and 0 < x.numel() <= _runtime.short_path_max()
            and (weight is None or (weight.dtype in _CODES and weight.is_contiguous() and weight.is_cpu)))


def _address(t):
    return 0 if t is None else t.data_ptr()


def _overlap(a, b):
    """Whether the memory of two contiguous tensors overlaps."""
    pa, pb = a.data_ptr(), b.data_ptr()
    return pa < pb + b.numel() * b.element_size() and pb < pa + a.numel() * a.element_size()


def _forward(x, weight, bias, dims, eps, eps_mode, weight_offset, cast_mode, want_rstd):
    """(y, rstd or None) for a CPU tensor x and weight/bias tensors or None:
    y a tensor, rstd an ndarray (the op makes it a tensor; the eager autograd
    keeps it as it is)."""
    if _short(x, weight, bias, dims, eps, eps_mode, weight_offset, cast_mode):
        y = torch.empty_like(x)  # contiguous as x is; a third of torch.empty(x.shape)'s cost at decode
        n = x.shape[-1]
        rstd = _core.forward_at(x.data_ptr(), y.data_ptr(), _address(weight),
                                0 if weight is None else _CODES[weight.dtype], x.numel() // n, n, _CODES[x.dtype],
                                eps, _ROUND_MID[cast_mode], _rstd_shape(x, 1) if want_rstd else None)
        return y, rstd
    w, b, offset = _params(x, weight, bias, weight_offset)
    xa = _array(x)
    y = torch.empty(x.shape, dtype=x.dtype)  # contiguous whatever x's strides, as the fake says
    result = _api.rms_norm(xa, w, b, axis=_AXES[dims], eps=eps, eps_mode=eps_mode, weight_offset=offset,
                           cast_mode=cast_mode, dtype="bfloat16" if x.dtype == _BF16 else None, out=_array(y),
                           return_rstd=want_rstd)
    return y, result[1] if want_rstd else None


def _add(x, residual, weight, bias, dims, eps, eps_mode, weight_offset, cast_mode, inplace):
    """(y, new_residual) for CPU tensors, written into x and residual when
    inplace; weight and bias tensors or None."""
    if _short(x, weight, bias, dims, eps, eps_mode, weight_offset, cast_mode) and residual.dtype in _CODES \
            and residual.is_contiguous() and not (inplace and (_overlap(x, residual) or (
                weight is not None and (_overlap(weight, x) or _overlap(weight, residual))))):
        y = x if inplace else torch.empty(x.shape, dtype=x.dtype)
        new_residual = residual if inplace else torch.empty(residual.shape, dtype=residual.dtype)
        n = x.shape[-1]
        _core.add_at(x.data_ptr(), residual.data_ptr(), new_residual.data_ptr(), y.data_ptr(), _address(weight),
                     0 if weight is None else _CODES[weight.dtype], x.numel() // n, n, _CODES[x.dtype],
                     _CODES[residual.dtype], eps, _ROUND_MID[cast_mode])
        return y, new_residual
    w, b, offset = _params(x, weight, bias, weight_offset)
    y = x if inplace else torch.empty(x.shape, dtype=x.dtype)
    new_residual = residual if inplace else torch.empty(residual.shape, dtype=residual.dtype)
    _api.add_rms_norm(_bits_or_array(x), _bits_or_array(residual), w, b, axis=_AXES[dims], eps=eps,
                      eps_mode=eps_mode, weight_offset=offset, cast_mode=cast_mode, out=_array(y),
                      residual_out=_array(new_residual))
    return y, new_residual


def _params(x, weight, bias, weight_offset):
    """(w, b, offset left) for _forward/_add: the offset goes into the weight
    when there is one."""
    acc = _acc(x.dtype)
    return _kernel_param(weight, acc, weight_offset), _kernel_param(bias, acc), weight_offset if weight is None else 0.0


def _eager(x):
    """Whether the call runs now on a plain CPU tensor: not compiled, exported
    or traced (those see the ops), nor a tensor subclass."""
    return not torch.compiler.is_compiling() and type(x) is torch.Tensor and x.is_cpu and not torch.jit.is_tracing()


def _records(x, weight, bias, residual=None):
    """Whether autograd records a graph for a call on these tensors."""
    return torch.is_grad_enabled() and (x.requires_grad or (weight is not None and weight.requires_grad)
                                        or (bias is not None and bias.requires_grad)
                                        or (residual is not None and residual.requires_grad))


def _gated_inputs(x, gate):
    """(x, gate, y dtype): x and gate in one dtype, the wider of the two (the
    kernels read the gate in x's dtype), and x's dtype to ask for when that
    is not x's (else None)."""
    common = x.dtype if gate is None else torch.promote_types(x.dtype, gate.dtype)
    xs = x if x.dtype == common else x.to(common)
    gs = gate if gate is None or gate.dtype == common else gate.to(common)
    return xs, gs, None if common == x.dtype else x.dtype


def _gated(x, gate, weight, groups, eps, norm_before_gate, activation, cast_mode):
    """(y, rstd) of the gated norm for CPU tensors; gate None is the plain norm
    in groups.  y has x's dtype whatever the gate's."""
    xs, gs, y_dtype = _gated_inputs(x, gate)
    w = _kernel_param(weight, _acc(xs.dtype))
    if gs is None:
        y = torch.empty(x.shape, dtype=x.dtype)
        rstd = _api.rms_norm(_array(x), w, groups=groups, eps=eps, cast_mode=cast_mode,
                             dtype="bfloat16" if x.dtype == _BF16 else None, out=_array(y), return_rstd=True)[1]
        return y, torch.from_numpy(rstd)
    # A bfloat16 result of a wider computation is rounded by torch: NumPy has no bfloat16 without ml_dtypes.
    name = None if y_dtype in (None, _BF16) else str(y_dtype).removeprefix("torch.")
    y, rstd = _api.rms_norm_gated(_bits_or_array(xs), _bits_or_array(gs), w, groups=groups, eps=eps,
                                  norm_before_gate=norm_before_gate, activation=activation, cast_mode=cast_mode,
                                  dtype=name, return_rstd=True)
    y = _tensor(y, xs.dtype if name is None else y_dtype)
    return y.to(x.dtype).contiguous(), torch.from_numpy(rstd)


def _gated_backward(dy, x, gate, weight, rstd, groups, eps, norm_before_gate, activation):
    """(dx, dgate, dweight) for CPU tensors, each in its input's dtype; empty
    tensors for a gate or weight that is None."""
    xs, gs, _ = _gated_inputs(x, gate)
    w = _kernel_param(weight, _acc(xs.dtype))
    args = dict(rstd=None if rstd is None else _array(rstd), groups=groups, eps=eps)
    dy = _bits_or_array(dy.to(xs.dtype))
    if gs is None:
        dx, dw, _ = _api.rms_norm_backward(dy, _bits_or_array(xs), w, **args)
        dgate = x.new_empty(0)
    else:
        dx, dgate, dw, _ = _api.rms_norm_gated_backward(dy, _bits_or_array(xs), _bits_or_array(gs), w,
                                                        norm_before_gate=norm_before_gate, activation=activation,
                                                        **args)
        dgate = _tensor(dgate, gs.dtype).to(gate.dtype).contiguous()
    return (_tensor(dx, xs.dtype).to(x.dtype).contiguous(), dgate,
            x.new_empty(0) if dw is None else torch.from_numpy(dw).to(weight.dtype))


# What rms_norm_quant writes, by torch dtype: its name in _api and how its bytes are viewed in NumPy.
_QUANT_NAMES = {torch.int8: "int8", torch.float8_e4m3fn: "float8_e4m3fn"}


def _quant_array(q):
    """A quantized tensor's memory as the ndarray _api writes: int8, or
    float8_e4m3fn through its bytes (ml_dtypes' type, which _api needs for it)."""
    if q.dtype == torch.int8:
        return q.numpy()
    try:
        import ml_dtypes
    except ImportError:
        raise TypeError("quant_dtype=torch.float8_e4m3fn needs the ml_dtypes package "
                        "(pip install 'rmsnorm_cpu[bf16]')") from None
    return q.view(torch.uint8).numpy().view(ml_dtypes.float8_e4m3fn)


def _quant(x, residual, weight, groups, eps, quant_dtype, scale_ub, inplace=False):
    """(q, scale) or (q, scale, new_residual) for CPU tensors; new_residual is
    residual, written over, when inplace."""
    q = torch.empty(x.shape, dtype=quant_dtype)
    scale = torch.empty(x.shape[:-1] + (groups,), dtype=torch.float32)
    outputs = dict(out=_quant_array(q), scale_out=scale.numpy())
    if residual is not None:
        new_residual = residual if inplace else torch.empty(residual.shape, dtype=residual.dtype)
        outputs.update(residual=_bits_or_array(residual), residual_out=_array(new_residual))
    w = _kernel_param(weight, _acc(x.dtype if residual is None else residual.dtype))  # the norm is of new_residual
    _api.rms_norm_quant(_bits_or_array(x), w, groups=groups, eps=eps, quant_dtype=_QUANT_NAMES[quant_dtype],
                        scale_ub=scale_ub, **outputs)
    return (q, scale) if residual is None else (q, scale, new_residual)


def _quant_options(eps, quant_dtype, scale_ub):
    """Raise what rms_norm_quant raises for these options (the fakes check them too)."""
    _spec.options(eps)
    if quant_dtype not in _QUANT_NAMES:
        raise ValueError(f"quant_dtype must be torch.int8 or torch.float8_e4m3fn, got {quant_dtype}")
    if scale_ub is not None and not (type(scale_ub) is float and 0.0 < scale_ub < math.inf):
        raise ValueError(f"scale_ub must be a finite float > 0 or None, got {scale_ub!r}")


_ACTIVATIONS = ("silu", "sigmoid")


def _gated_options(eps, activation, cast_mode):
    """Raise what rms_norm_gated raises for these options (the fakes check them too)."""
    _spec.options(eps, "sqrt", cast_mode)
    if activation not in _ACTIVATIONS:
        raise ValueError(f"activation must be 'silu' or 'sigmoid', got {activation!r}")


# ---- the ops ------------------------------------------------------------------

@torch.library.custom_op("rmsnorm_cpu::rms_norm", mutates_args=(), device_types="cpu")
def _rms_norm_op(x: torch.Tensor, weight: Optional[torch.Tensor], bias: Optional[torch.Tensor], dims: int,
                 eps: float, eps_mode: str, weight_offset: float, cast_mode: str) -> tuple[torch.Tensor, torch.Tensor]:
    y, rstd = _forward(x, weight, bias, dims, eps, eps_mode, weight_offset, cast_mode, True)
    return y, torch.from_numpy(rstd)


def _rstd_shape(x, dims):
    """The shape of the forward's rstd: x's batch dims and a 1."""
    return x.shape[:x.dim() - dims] + (1,)


def _rstd_like(x, dims):
    return x.new_empty(_rstd_shape(x, dims), dtype=_acc(x.dtype))


def _grad_like(x, p):
    """A backward fake's gradient of p: an empty tensor where p is None."""
    return x.new_empty(0) if p is None else torch.empty_like(p, memory_format=torch.contiguous_format)


@_rms_norm_op.register_fake
def _(x, weight, bias, dims, eps, eps_mode, weight_offset, cast_mode):
    _spec.options(eps, eps_mode, cast_mode)
    return torch.empty_like(x, memory_format=torch.contiguous_format), _rstd_like(x, dims)


@torch.library.custom_op("rmsnorm_cpu::rms_norm_backward", mutates_args=(), device_types="cpu")
def _rms_norm_backward_op(dy: torch.Tensor, x: torch.Tensor, weight: Optional[torch.Tensor],
                          bias: Optional[torch.Tensor], rstd: Optional[torch.Tensor], dims: int, eps: float,
                          eps_mode: str, weight_offset: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return _backward(dy, x, weight, bias, None if rstd is None else _array(rstd), dims, eps, eps_mode, weight_offset)


def _backward(dy, x, weight, bias, rstd, dims, eps, eps_mode, weight_offset):
    """(dx, dweight, dbias) for CPU tensors and the forward's rstd as an
    ndarray or None; empty tensors for absent parameters."""
    w, b, offset = _params(x, weight, bias, weight_offset)
    dx, dw, db = _api.rms_norm_backward(
        _bits_or_array(dy.to(x.dtype)), _bits_or_array(x), w, b, rstd=rstd,
        axis=_AXES[dims], eps=eps, eps_mode=eps_mode, weight_offset=offset)
    return (_tensor(dx, x.dtype).contiguous(),
            x.new_empty(0) if dw is None else torch.from_numpy(dw).to(weight.dtype),
            x.new_empty(0) if db is None else torch.from_numpy(db).to(bias.dtype))


@_rms_norm_backward_op.register_fake
def _(dy, x, weight, bias, rstd, dims, eps, eps_mode, weight_offset):
    return torch.empty_like(x, memory_format=torch.contiguous_format), _grad_like(x, weight), _grad_like(x, bias)


@torch.library.custom_op("rmsnorm_cpu::add_rms_norm", mutates_args=(), device_types="cpu")
def _add_rms_norm_op(x: torch.Tensor, residual: torch.Tensor, weight: Optional[torch.Tensor],
                     bias: Optional[torch.Tensor], dims: int, eps: float, eps_mode: str, weight_offset: float,
                     cast_mode: str) -> tuple[torch.Tensor, torch.Tensor]:
    return _add(x, residual, weight, bias, dims, eps, eps_mode, weight_offset, cast_mode, False)


@_add_rms_norm_op.register_fake
def _(x, residual, weight, bias, dims, eps, eps_mode, weight_offset, cast_mode):
    _spec.options(eps, eps_mode, cast_mode)
    return (torch.empty_like(x, memory_format=torch.contiguous_format),
            torch.empty_like(residual, memory_format=torch.contiguous_format))


@torch.library.custom_op("rmsnorm_cpu::add_rms_norm_", mutates_args=("x", "residual"), device_types="cpu")
def _add_rms_norm_inplace_op(x: torch.Tensor, residual: torch.Tensor, weight: Optional[torch.Tensor],
                             bias: Optional[torch.Tensor], dims: int, eps: float, eps_mode: str,
                             weight_offset: float, cast_mode: str) -> None:
    _add(x, residual, weight, bias, dims, eps, eps_mode, weight_offset, cast_mode, True)


@_add_rms_norm_inplace_op.register_fake
def _(x, residual, weight, bias, dims, eps, eps_mode, weight_offset, cast_mode):
    _spec.options(eps, eps_mode, cast_mode)


@torch.library.custom_op("rmsnorm_cpu::rms_norm_gated", mutates_args=(), device_types="cpu")
def _rms_norm_gated_op(x: torch.Tensor, gate: Optional[torch.Tensor], weight: Optional[torch.Tensor], groups: int,
                       eps: float, norm_before_gate: bool, activation: str,
                       cast_mode: str) -> tuple[torch.Tensor, torch.Tensor]:
    return _gated(x, gate, weight, groups, eps, norm_before_gate, activation, cast_mode)


@_rms_norm_gated_op.register_fake
def _(x, gate, weight, groups, eps, norm_before_gate, activation, cast_mode):
    _gated_options(eps, activation, cast_mode)
    common = x.dtype if gate is None else torch.promote_types(x.dtype, gate.dtype)
    return (torch.empty_like(x, memory_format=torch.contiguous_format),
            x.new_empty(x.shape[:-1] + (groups,), dtype=_acc(common)))


@torch.library.custom_op("rmsnorm_cpu::rms_norm_gated_backward", mutates_args=(), device_types="cpu")
def _rms_norm_gated_backward_op(dy: torch.Tensor, x: torch.Tensor, gate: Optional[torch.Tensor],
                                weight: Optional[torch.Tensor], rstd: Optional[torch.Tensor], groups: int, eps: float,
                                norm_before_gate: bool,
                                activation: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return _gated_backward(dy, x, gate, weight, rstd, groups, eps, norm_before_gate, activation)


@_rms_norm_gated_backward_op.register_fake
def _(dy, x, gate, weight, rstd, groups, eps, norm_before_gate, activation):
    return torch.empty_like(x, memory_format=torch.contiguous_format), _grad_like(x, gate), _grad_like(x, weight)


@torch.library.custom_op("rmsnorm_cpu::rms_norm_quant", mutates_args=(), device_types="cpu")
def _rms_norm_quant_op(x: torch.Tensor, weight: Optional[torch.Tensor], groups: int, eps: float,
                       quant_dtype: torch.dtype, scale_ub: Optional[float]) -> tuple[torch.Tensor, torch.Tensor]:
    return _quant(x, None, weight, groups, eps, quant_dtype, scale_ub)


def _quant_fakes(x, groups, eps, quant_dtype, scale_ub):
    _quant_options(eps, quant_dtype, scale_ub)
    return x.new_empty(x.shape, dtype=quant_dtype), x.new_empty(x.shape[:-1] + (groups,), dtype=torch.float32)


@_rms_norm_quant_op.register_fake
def _(x, weight, groups, eps, quant_dtype, scale_ub):
    return _quant_fakes(x, groups, eps, quant_dtype, scale_ub)


@torch.library.custom_op("rmsnorm_cpu::add_rms_norm_quant", mutates_args=(), device_types="cpu")
def _add_rms_norm_quant_op(x: torch.Tensor, residual: torch.Tensor, weight: Optional[torch.Tensor], groups: int,
                           eps: float, quant_dtype: torch.dtype,
                           scale_ub: Optional[float]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return _quant(x, residual, weight, groups, eps, quant_dtype, scale_ub)


@_add_rms_norm_quant_op.register_fake
def _(x, residual, weight, groups, eps, quant_dtype, scale_ub):
    return _quant_fakes(x, groups, eps, quant_dtype, scale_ub) + (
        torch.empty_like(residual, memory_format=torch.contiguous_format),)


@torch.library.custom_op("rmsnorm_cpu::add_rms_norm_quant_", mutates_args=("residual",), device_types="cpu")
def _add_rms_norm_quant_inplace_op(x: torch.Tensor, residual: torch.Tensor, weight: Optional[torch.Tensor],
                                   groups: int, eps: float, quant_dtype: torch.dtype,
                                   scale_ub: Optional[float]) -> tuple[torch.Tensor, torch.Tensor]:
    return _quant(x, residual, weight, groups, eps, quant_dtype, scale_ub, True)[:2]


@_add_rms_norm_quant_inplace_op.register_fake
def _(x, residual, weight, groups, eps, quant_dtype, scale_ub):
    return _quant_fakes(x, groups, eps, quant_dtype, scale_ub)


# ---- autograd -------------------------------------------------------------------

def _setup_forward(ctx, inputs, output):
    x, weight, bias, dims, eps, eps_mode, weight_offset, _ = inputs
    ctx.save_for_backward(x, weight, bias, output[1])
    ctx.args = dims, eps, eps_mode, weight_offset
    ctx.mark_non_differentiable(output[1])


def _backward_forward(ctx, dy, _drstd):
    x, weight, bias, rstd = ctx.saved_tensors
    return _input_grads(torch.ops.rmsnorm_cpu.rms_norm_backward(dy, x, weight, bias, rstd, *ctx.args), weight, bias)


def _input_grads(grads, weight, bias):
    """The forward's input gradients from the backward op's (dx, dw, db)."""
    dx, dw, db = grads
    return (dx, dw if weight is not None else None, db if bias is not None else None) + (None,) * 5


def _setup_add(ctx, inputs, output):
    x, residual, weight, bias, dims, eps, eps_mode, weight_offset, _ = inputs
    ctx.save_for_backward(output[1], weight, bias)
    ctx.args = dims, eps, eps_mode, weight_offset
    ctx.dtypes = x.dtype, residual.dtype


def _backward_add(ctx, dy, dnew_residual, backward=torch.ops.rmsnorm_cpu.rms_norm_backward):
    """y = rms_norm(s) with s = x + residual, returned too: both x and residual
    get ds = d(rms_norm)/ds . dy + d(new_residual); rstd is recomputed.
    backward: the op, or in eager mode its body."""
    s, weight, bias = ctx.saved_tensors
    ds, dw, db = backward(dy, s, weight, bias, None, *ctx.args)
    if dnew_residual is not None:
        ds = ds + dnew_residual
    return ((ds.to(ctx.dtypes[0]), ds.to(ctx.dtypes[1]), dw if weight is not None else None,
             db if bias is not None else None) + (None,) * 5)


def _setup_gated(ctx, inputs, output):
    x, gate, weight, *args = inputs
    ctx.save_for_backward(x, gate, weight, output[1])
    ctx.args = args[:-1]  # groups, eps, norm_before_gate, activation
    ctx.mark_non_differentiable(output[1])


def _backward_gated(ctx, dy, _drstd):
    x, gate, weight, rstd = ctx.saved_tensors
    dx, dgate, dw = torch.ops.rmsnorm_cpu.rms_norm_gated_backward(dy, x, gate, weight, rstd, *ctx.args)
    return (dx, dgate if gate is not None else None, dw if weight is not None else None) + (None,) * 5


torch.library.register_autograd("rmsnorm_cpu::rms_norm", _backward_forward, setup_context=_setup_forward)
torch.library.register_autograd("rmsnorm_cpu::add_rms_norm", _backward_add, setup_context=_setup_add)
torch.library.register_autograd("rmsnorm_cpu::rms_norm_gated", _backward_gated, setup_context=_setup_gated)


# The ops' autograd in eager mode, without the dispatcher.  forward(ctx, ...)
# rather than a separate setup_context: apply() then binds no signature.

class _RMSNormFunction(torch.autograd.Function):
    """rms_norm's op and its autograd, less their cost at decode: y is the
    one output (rstd, which nobody else sees, stays on ctx) and the backward
    runs the backward op's body."""

    @staticmethod
    def forward(ctx, *inputs):
        x, weight, bias, dims, eps, eps_mode, weight_offset, cast_mode = inputs
        y, ctx.rstd = _forward(x, weight, bias, dims, eps, eps_mode, weight_offset, cast_mode, True)
        ctx.save_for_backward(x, weight, bias)
        ctx.args = dims, eps, eps_mode, weight_offset
        return y

    @staticmethod
    def backward(ctx, dy):
        x, weight, bias = ctx.saved_tensors
        return _input_grads(_backward(dy, x, weight, bias, ctx.rstd, *ctx.args), weight, bias)


class _AddRMSNormFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, *inputs):
        x, residual, weight, bias, dims, eps, eps_mode, weight_offset, cast_mode = inputs
        output = _add(x, residual, weight, bias, dims, eps, eps_mode, weight_offset, cast_mode, False)
        _setup_add(ctx, inputs, output)
        return output

    @staticmethod
    def backward(ctx, dy, dnew_residual):
        return _backward_add(ctx, dy, dnew_residual, _backward)


def _functorch_involved(x, weight, bias, residual=None):
    """Whether a functorch transform is active or a tensor is functorch's:
    those calls take the registered ops."""
    wrapped = torch._C._functorch.is_functorch_wrapped_tensor
    return torch._C._are_functorch_transforms_active() or wrapped(x) or any(
        t is not None and wrapped(t) for t in (weight, bias, residual))


# Function.apply's Python wrapper costs a fifth of a decode call: forward takes
# *inputs, so it binds no signature, and calls under functorch take the ops
# (see _functorch_involved).  Eager calls take the C apply directly.
_rms_norm_apply = super(torch.autograd.Function, _RMSNormFunction).apply
_add_rms_norm_apply = super(torch.autograd.Function, _AddRMSNormFunction).apply


# ---- public functions -------------------------------------------------------------

def _dims(x, normalized_shape, weight, bias):
    """How many trailing dims of x are normalized: normalized_shape checked
    against x (and the weight's and bias's shapes against it), as torch does."""
    shape = (normalized_shape,) if isinstance(normalized_shape, int) else tuple(normalized_shape)
    k, x_shape = len(shape), x.shape
    if not 1 <= k <= len(x_shape) or x_shape[len(x_shape) - k:] != shape:
        raise ValueError(f"normalized_shape {shape} does not match the trailing dimensions of x of shape "
                         f"{tuple(x_shape)}")
    if weight is not None and weight.shape != shape:
        raise ValueError(f"weight has shape {tuple(weight.shape)}, expected {shape}")
    if bias is not None and bias.shape != shape:
        raise ValueError(f"bias has shape {tuple(bias.shape)}, expected {shape}")
    return k


def rms_norm(x, normalized_shape, weight=None, eps=1e-6, *, bias=None, eps_mode="sqrt", weight_offset=0.0,
             cast_mode="fused"):
    """``torch.nn.functional.rms_norm`` on rmsnorm_cpu's kernels, differentiable.

    Parameters
    ----------
    x : torch.Tensor
        CPU tensor of float16, bfloat16, float32 or float64, any strides.
    normalized_shape : int or sequence of ints
        The trailing dimensions normalized together (must match ``x``'s).
    weight, bias : torch.Tensor, optional
        Of ``normalized_shape``, any float dtype; may require grad.
    eps : float or None, default 1e-6
        ``None`` means ``torch.finfo(x.dtype).eps``, as in torch.
    eps_mode : {"sqrt", "add", "clamp"}
        Where eps enters (see Notes).
    weight_offset : float, default 0.0
        Added to the weight: Gemma's ``1 + weight`` is ``weight_offset=1.0``.
    cast_mode : {"fused", "llama"}
        For float16/bfloat16 ``x``: "fused" rounds the result once (as
        ``F.rms_norm`` does); "llama" rounds ``x * rstd`` to x's dtype before
        the weight, as Hugging Face ``LlamaRMSNorm`` does.

    Returns
    -------
    torch.Tensor
        Of x's shape and dtype, whatever the weight's (as torch does); a new
        contiguous tensor.

    Raises
    ------
    ValueError
        ``normalized_shape`` not the trailing dimensions of ``x``, a weight or
        bias of another shape, a bad ``eps``/``eps_mode``/``cast_mode``.

    Notes
    -----
    For each normalized slice ``v``, squares summed in float32 (float64 for
    float64 data)::

        rstd = 1 / sqrt(mean(v**2) + eps)        # eps_mode="sqrt"
        rstd = 1 / (sqrt(mean(v**2)) + eps)      # eps_mode="add"
        rstd = 1 / max(sqrt(mean(v**2)), eps)    # eps_mode="clamp"
        y    = v * rstd * (weight + weight_offset) + bias

    The gradient is ``rms_norm_backward`` with the forward's ``rstd``.

    Examples
    --------
    >>> import torch
    >>> from rmsnorm_cpu.torch import rms_norm
    >>> rms_norm(torch.tensor([[3.0, 4.0]]), (2,), eps=0.0)
    tensor([[0.8485, 1.1314]])
    >>> rms_norm(torch.tensor([[3.0, 4.0]]), 2, torch.zeros(2), eps=0.0, weight_offset=1.0)
    tensor([[0.8485, 1.1314]])
    """
    dims = _dims(x, normalized_shape, weight, bias)
    if eps is None:
        eps = torch.finfo(x.dtype).eps
    if _eager(x):
        if not _records(x, weight, bias):
            return _forward(x, weight, bias, dims, eps, eps_mode, weight_offset, cast_mode, False)[0]
        if not _functorch_involved(x, weight, bias):
            return _rms_norm_apply(x, weight, bias, dims, eps, eps_mode, weight_offset, cast_mode)
    return torch.ops.rmsnorm_cpu.rms_norm(x, weight, bias, dims, eps, eps_mode, weight_offset, cast_mode)[0]


def add_rms_norm(x, residual, normalized_shape, weight=None, eps=1e-6, *, inplace=False, bias=None,
                 eps_mode="sqrt", weight_offset=0.0, cast_mode="fused"):
    """Fused residual add and :func:`rms_norm` (vLLM's ``fused_add_rms_norm``).

    ``new_residual = x + residual`` (added in float32, or float64 if either is
    float64, rounded once to residual's dtype), ``y = rms_norm(new_residual)``
    in x's dtype; bitwise the same as the two steps apart.

    Parameters
    ----------
    x, residual : torch.Tensor
        CPU tensors of one shape; any supported float dtypes.
    normalized_shape, weight, eps, bias, eps_mode, weight_offset, cast_mode
        As in :func:`rms_norm`.
    inplace : bool, default False
        Write ``y`` into ``x`` and ``new_residual`` into ``residual`` and
        return them.  Under autograd (an input that requires grad) this is
        the functional op followed by ``copy_`` into both, so torch's rules
        for in-place ops on leaves and saved tensors apply.

    Returns
    -------
    (y, new_residual) : tuple of torch.Tensor

    Raises
    ------
    ValueError
        As :func:`rms_norm`, and for ``x`` and ``residual`` of different
        shapes; nothing is written then.

    Examples
    --------
    >>> import torch
    >>> from rmsnorm_cpu.torch import add_rms_norm
    >>> x, residual = torch.tensor([1.0, 2.0]), torch.tensor([2.0, 2.0])
    >>> y, r = add_rms_norm(x, residual, 2, eps=0.0, inplace=True)
    >>> y is x and r is residual
    True
    >>> x, residual
    (tensor([0.8485, 1.1314]), tensor([3., 4.]))
    """
    dims = _dims(x, normalized_shape, weight, bias)
    if x.shape != residual.shape:
        raise ValueError(f"x of shape {tuple(x.shape)} and residual of shape {tuple(residual.shape)} differ")
    if eps is None:
        eps = torch.finfo(x.dtype).eps
    args = dims, eps, eps_mode, weight_offset, cast_mode
    eager = _eager(x) and type(residual) is torch.Tensor and residual.is_cpu
    if eager and not _records(x, weight, bias, residual):
        return _add(x, residual, weight, bias, dims, eps, eps_mode, weight_offset, cast_mode, inplace)
    if eager and not _functorch_involved(x, weight, bias, residual):
        y, new_residual = _add_rms_norm_apply(x, residual, weight, bias, *args)
    elif inplace and not _records(x, weight, bias, residual):
        torch.ops.rmsnorm_cpu.add_rms_norm_(x, residual, weight, bias, *args)
        return x, residual
    else:
        y, new_residual = torch.ops.rmsnorm_cpu.add_rms_norm(x, residual, weight, bias, *args)
    if not inplace:
        return y, new_residual
    x.copy_(y)
    residual.copy_(new_residual)
    return x, residual


def _groups(x, weight, group_size):
    """The number of groups the last dim of x splits into, the weight's shape
    checked against that dim."""
    if x.dim() == 0:
        raise ValueError("x must have at least one dimension")
    n = x.shape[-1]
    if weight is not None and tuple(weight.shape) != (n,):
        raise ValueError(f"weight has shape {tuple(weight.shape)}, expected ({n},)")
    if group_size is None:
        return 1
    if isinstance(group_size, bool) or not isinstance(group_size, int) or group_size < 1 or n % group_size:
        raise ValueError(f"group_size must be a positive int dividing the last dimension {n}, got {group_size!r}")
    return n // group_size


def _plain_cpu(t):
    return t is None or (type(t) is torch.Tensor and t.is_cpu)


def rms_norm_gated(x, gate, weight=None, eps=1e-6, *, group_size=None, norm_before_gate=True, activation="silu",
                   cast_mode="fused"):
    """RMSNorm of the last dim multiplied by an activation of ``gate``
    (Mamba2's ``RMSNormGated``, FLA's ``FusedRMSNormGated``).

    Parameters
    ----------
    x : torch.Tensor
        CPU tensor, float16/bfloat16/float32/float64, normalized over its last
        dimension (in groups with ``group_size``).
    gate : torch.Tensor or None
        Of x's shape, any float dtype; may require grad.  With a gate of
        another dtype both are converted to the wider of the two first (the
        result keeps x's dtype).  None is the plain norm (in groups).
    weight : torch.Tensor, optional
        Of shape ``(x.shape[-1],)``; may require grad.
    eps : float or None, default 1e-6
        ``None`` means ``torch.finfo(x.dtype).eps``.
    group_size : int, optional
        Normalize each run of ``group_size`` elements of the last dim apart
        (Mamba's ``group_size``; it must divide the last dim).
    norm_before_gate : bool, default True
        Gate after normalizing, or normalize ``x * act(gate)``.
    activation : {"silu", "sigmoid"}
    cast_mode : {"fused", "llama"}
        For float16/bfloat16 data: "fused" rounds once; "llama" rounds where
        the Hugging Face gated classes do (see Notes).

    Returns
    -------
    torch.Tensor
        Of x's shape and dtype, a new contiguous tensor.  Differentiable in
        x, gate and weight.

    Raises
    ------
    ValueError
        A gate of another shape, a weight not of the last dim's length, a
        ``group_size`` that does not divide it, a bad ``eps``,
        ``activation`` or ``cast_mode``.

    Notes
    -----
    With ``act(g) = g * sigmoid(g)`` ("silu") or ``sigmoid(g)``, per group
    ``v`` of x, in float32 (float64 for float64 data)::

        y = v * rstd(v) * weight * act(g)          # norm_before_gate=True
        y = u * rstd(u) * weight, u = v * act(g)   # norm_before_gate=False

    ``cast_mode="llama"`` rounds ``t = u * rstd(u)`` and then ``t * weight``
    to x's dtype before the gate, as ``Qwen3NextRMSNormGated`` and
    ``MambaRMSNormGated`` do.

    Examples
    --------
    >>> import torch
    >>> from rmsnorm_cpu.torch import rms_norm_gated
    >>> rms_norm_gated(torch.tensor([[3.0, 4.0]]), torch.tensor([[0.0, 20.0]]), eps=0.0, activation="sigmoid")
    tensor([[0.4243, 1.1314]])
    """
    groups = _groups(x, weight, group_size)
    if gate is not None and gate.shape != x.shape:
        raise ValueError(f"gate of shape {tuple(gate.shape)} and x of shape {tuple(x.shape)} differ")
    if eps is None:
        eps = torch.finfo(x.dtype).eps
    _gated_options(eps, activation, cast_mode)
    args = x, gate, weight, groups, float(eps), bool(norm_before_gate), activation, cast_mode
    if _eager(x) and _plain_cpu(gate) and not _records(x, weight, None, gate):
        return _gated(*args)[0]
    return torch.ops.rmsnorm_cpu.rms_norm_gated(*args)[0]


def rms_norm_quant(x, weight=None, eps=1e-6, *, residual=None, quant_dtype=torch.int8, scale_ub=None,
                   group_size=None, inplace=False):
    """RMSNorm of the last dim quantized to int8 or float8 e4m3 with one
    float32 scale per row or group (vLLM's ``rms_norm_dynamic_per_token_quant``).

    Parameters
    ----------
    x : torch.Tensor
        CPU tensor, float16/bfloat16/float32/float64.
    weight : torch.Tensor, optional
        Of shape ``(x.shape[-1],)``.
    eps : float or None, default 1e-6
        ``None`` means ``torch.finfo(x.dtype).eps``.
    residual : torch.Tensor, optional
        Of x's shape: normalize ``new_residual = x + residual`` (rounded to
        residual's dtype, as :func:`add_rms_norm`) and return it too.
    quant_dtype : torch.int8 or torch.float8_e4m3fn
        float8 needs the ``ml_dtypes`` package (the ``bf16`` extra).
    scale_ub : float, optional
        Upper bound of each slice's absolute maximum (finite, > 0).
    group_size : int, optional
        One scale per run of ``group_size`` elements of the last dim.
    inplace : bool, default False
        Write ``new_residual`` into ``residual`` and return ``residual`` as
        it (vLLM's residual update); ``x`` is not written (``q`` has another
        dtype).  Needs ``residual``.

    Returns
    -------
    (q, scale) or (q, scale, new_residual)
        ``q`` of x's shape and ``quant_dtype``; ``scale`` float32 of shape
        ``x.shape[:-1] + (groups,)``: ``(T, 1)`` for ``(T, D)``.  Not
        differentiable.

    Raises
    ------
    ValueError
        A weight or residual of another shape, a ``group_size`` that does not
        divide the last dim, a bad ``eps``, ``quant_dtype`` or ``scale_ub``,
        ``inplace`` without ``residual``.
    TypeError
        float8 without ml_dtypes.

    Notes
    -----
    With ``y = rms_norm(x)`` in float32 and ``QMAX`` 127 (int8) or 448
    (float8), per row or group::

        amax  = min(max(|y|), scale_ub)
        scale = max(amax / QMAX, 1 / (QMAX * 512))
        q     = saturate(round_half_even(y / scale))

    Examples
    --------
    >>> import torch
    >>> from rmsnorm_cpu.torch import rms_norm_quant
    >>> q, scale = rms_norm_quant(torch.tensor([[3.0, 4.0]]), eps=0.0)
    >>> q, scale
    (tensor([[ 95, 127]], dtype=torch.int8), tensor([[0.0089]]))
    """
    groups = _groups(x, weight, group_size)
    if residual is not None and residual.shape != x.shape:
        raise ValueError(f"x of shape {tuple(x.shape)} and residual of shape {tuple(residual.shape)} differ")
    if eps is None:
        eps = torch.finfo(x.dtype).eps
    if isinstance(scale_ub, numbers.Real) and not isinstance(scale_ub, bool):
        scale_ub = float(scale_ub)  # the op's schema takes a float (NumPy and int scalars too here)
    _quant_options(eps, quant_dtype, scale_ub)
    if inplace and residual is None:
        raise ValueError("inplace=True writes new_residual into residual; pass residual")
    args = weight, groups, float(eps), quant_dtype, scale_ub
    if _eager(x) and _plain_cpu(residual):
        return _quant(x, residual, *args, inplace)
    if residual is None:
        return torch.ops.rmsnorm_cpu.rms_norm_quant(x, *args)
    if inplace:
        return torch.ops.rmsnorm_cpu.add_rms_norm_quant_(x, residual, *args) + (residual,)
    return torch.ops.rmsnorm_cpu.add_rms_norm_quant(x, residual, *args)


class RMSNorm(torch.nn.Module):
    """Drop-in for ``torch.nn.RMSNorm`` (same arguments, parameter and state
    dict), with Gemma's weight offset and Llama's rounding as options.

    Parameters
    ----------
    normalized_shape : int or sequence of ints
        The trailing dimensions normalized together.
    eps : float, optional
        ``None`` (default) means ``torch.finfo(x.dtype).eps``, as in torch.
    elementwise_affine : bool, default True
        Hold a learnable ``weight`` of ``normalized_shape``.
    weight_offset : float, default 0.0
        The scale is ``weight + weight_offset``; the weight starts at
        ``1 - weight_offset`` so that the scale starts at 1 (Gemma: offset 1,
        weight zeros).
    cast_mode : {"fused", "llama"}
        As in :func:`rms_norm`.
    device, dtype
        Of the weight.

    Examples
    --------
    >>> import torch
    >>> from rmsnorm_cpu.torch import RMSNorm
    >>> norm = RMSNorm(2, eps=0.0)
    >>> norm(torch.tensor([[3.0, 4.0]]))
    tensor([[0.8485, 1.1314]], grad_fn=<_RMSNormFunctionBackward>)
    >>> with torch.no_grad():
    ...     norm(torch.tensor([[3.0, 4.0]]))
    tensor([[0.8485, 1.1314]])
    """

    def __init__(self, normalized_shape, eps=None, elementwise_affine=True, *, weight_offset=0.0, cast_mode="fused",
                 device=None, dtype=None):
        super().__init__()
        shape = (normalized_shape,) if isinstance(normalized_shape, int) else tuple(normalized_shape)
        self.normalized_shape = shape
        self.eps = eps
        self.elementwise_affine = elementwise_affine
        self.weight_offset = float(weight_offset)
        _spec.options(0.0, "sqrt", cast_mode)
        self.cast_mode = cast_mode
        if elementwise_affine:
            self.weight = torch.nn.Parameter(torch.full(shape, 1.0 - self.weight_offset, device=device, dtype=dtype))
        else:
            self.register_parameter("weight", None)
        self._converted = None, None, None

    def forward(self, x):
        weight = self.weight
        if weight is None or not _eager(x) or _records(x, weight, None) or weight.is_inference():
            return rms_norm(x, self.normalized_shape, weight, self.eps, weight_offset=self.weight_offset,
                            cast_mode=self.cast_mode)
        dims = _dims(x, self.normalized_shape, None, None)
        eps = torch.finfo(x.dtype).eps if self.eps is None else self.eps
        return _forward(x, self._kernel_weight(_acc(x.dtype)), None, dims, eps, "sqrt", 0.0, self.cast_mode,
                        False)[0]

    def _kernel_weight(self, acc):
        """weight + weight_offset as an acc-typed tensor, converted (bfloat16 to float32)
        once per version of the weight's data, as decode loops call thousands
        of times with one weight.  Writes through ``weight.data`` bypass the
        version counter; optimizers, load_state_dict and writes under
        torch.no_grad() do not."""
        weight = self.weight
        key = weight.data_ptr(), weight._version, acc
        held, held_key, w = self._converted
        if held is not weight or held_key != key:
            w = torch.from_numpy(_kernel_param(weight, acc, self.weight_offset))
            self._converted = weight, key, w
        return w

    def extra_repr(self):
        text = f"{self.normalized_shape}, eps={self.eps}, elementwise_affine={self.elementwise_affine}"
        if self.weight_offset:
            text += f", weight_offset={self.weight_offset}"
        if self.cast_mode != "fused":
            text += f", cast_mode={self.cast_mode!r}"
        return text


class RMSNormGated(torch.nn.Module):
    """The module :func:`replace_rms_norms` puts in place of a gated Hugging
    Face norm: :func:`rms_norm_gated` with a learnable ``weight``, called as
    ``norm(hidden_states, gate=None)``.

    Parameters
    ----------
    hidden_size : int
        The length of the last dim; the weight starts at ones.
    eps : float, default 1e-6
    group_size, norm_before_gate, activation, cast_mode
        As in :func:`rms_norm_gated`.
    device, dtype
        Of the weight.

    Examples
    --------
    >>> import torch
    >>> from rmsnorm_cpu.torch import RMSNormGated
    >>> norm = RMSNormGated(2, eps=0.0, activation="sigmoid")
    >>> with torch.no_grad():
    ...     norm(torch.tensor([[3.0, 4.0]]), torch.tensor([[0.0, 20.0]]))
    tensor([[0.4243, 1.1314]])
    """

    def __init__(self, hidden_size, eps=1e-6, *, group_size=None, norm_before_gate=True, activation="silu",
                 cast_mode="fused", device=None, dtype=None):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.ones(hidden_size, device=device, dtype=dtype))
        _groups(self.weight, None, group_size)
        _gated_options(eps, activation, cast_mode)
        self.eps = eps
        self.group_size = group_size
        self.norm_before_gate = norm_before_gate
        self.activation = activation
        self.cast_mode = cast_mode

    def forward(self, hidden_states, gate=None):
        return rms_norm_gated(hidden_states, gate, self.weight, self.eps, group_size=self.group_size,
                              norm_before_gate=self.norm_before_gate, activation=self.activation,
                              cast_mode=self.cast_mode)

    def extra_repr(self):
        return (f"{self.weight.shape[0]}, eps={self.eps}, group_size={self.group_size}, "
                f"norm_before_gate={self.norm_before_gate}, activation={self.activation!r}, "
                f"cast_mode={self.cast_mode!r}")


# ---- model patching ---------------------------------------------------------------

_Recipe = namedtuple("_Recipe", "eps_attribute weight_offset cast_mode")
_LLAMA = _Recipe("variance_epsilon", 0.0, "llama")   # weight * round(x * rstd)
_OLMO2 = _Recipe("variance_epsilon", 0.0, "fused")   # round(weight * x * rstd)
_GEMMA = _Recipe("eps", 1.0, "fused")                # round((1 + weight) * x * rstd)

# The classes replace_rms_norms recognizes, by module and name: how to read
# eps, the scale's offset, and where the result is rounded.  Each is checked
# against the real class in tests/test_torch_models.py, and each module again
# (a probe) when it is replaced.  The README's PyTorch section has this table
# with the reasons.
_TRANSFORMERS = {
    _LLAMA: ["llama.LlamaRMSNorm", "mistral.MistralRMSNorm", "mixtral.MixtralRMSNorm", "qwen2.Qwen2RMSNorm",
             "qwen2_moe.Qwen2MoeRMSNorm", "qwen3.Qwen3RMSNorm", "qwen3_moe.Qwen3MoeRMSNorm", "phi3.Phi3RMSNorm",
             "deepseek_v3.DeepseekV3RMSNorm", "granite.GraniteRMSNorm", "smollm3.SmolLM3RMSNorm",
             "t5.T5LayerNorm", "mamba2.Mamba2RMSNorm"],
    _Recipe("eps", 0.0, "llama"): ["llama4.Llama4TextRMSNorm"],
    _OLMO2: ["olmo2.Olmo2RMSNorm", "olmo3.Olmo3RMSNorm", "gpt_oss.GptOssRMSNorm"],
    _GEMMA: ["gemma.GemmaRMSNorm", "gemma2.Gemma2RMSNorm", "gemma3.Gemma3RMSNorm", "qwen3_next.Qwen3NextRMSNorm"],
}


def _transformers_classes(table):
    return {f"transformers.models.{model}.modeling_{model}.{name}": recipe
            for recipe, names in table.items() for model, name in (n.split(".") for n in names)}


RECOGNIZED = {
    "torch.nn.modules.normalization.RMSNorm": _Recipe("eps", 0.0, "fused"),  # F.rms_norm
    **_transformers_classes(_TRANSFORMERS),
}

# The gated classes (forward(hidden_states, gate=None)), all with a weight of
# ones and eps in variance_epsilon: where they round, and whether the gate
# comes after the norm.  The activation is the module's ``activation``
# attribute (silu where there is none); groups come from ``group_size`` or
# ``n_groups``, the gate's place from ``norm_before_gate`` where a module has
# one (Falcon-H1).  Checked in tests/test_torch_gated.py as the plain ones.
_GatedRecipe = namedtuple("_GatedRecipe", "cast_mode norm_before_gate")
RECOGNIZED_GATED = _transformers_classes({
    # round(weight * round(x * rstd)) * act(gate), rounded
    _GatedRecipe("llama", True): ["qwen3_next.Qwen3NextRMSNormGated", "qwen3_5.Qwen3_5RMSNormGated",
                                  "qwen3_5_moe.Qwen3_5MoeRMSNormGated", "qwen4_exp.Qwen4ExpTextRMSNormGated",
                                  "olmo_hybrid.OlmoHybridRMSNormGated"],
    # weight * round(u * rstd(u)) in x's dtype, u = x * silu(gate) in float32, in groups
    _GatedRecipe("llama", False): ["mamba2.MambaRMSNormGated", "bamba.BambaRMSNormGated",
                                   "granitemoehybrid.GraniteMoeHybridRMSNormGated",
                                   "nemotron_h.NemotronHRMSNormGated", "zamba2.Zamba2RMSNormGated"],
    # everything in float32, rounded once
    _GatedRecipe("fused", True): ["kimi_linear.KimiLinearRMSNormGated", "bailing_hybrid.BailingHybridRMSNormGated",
                                  "glm5_next.Glm5NextTextRMSNormGated", "lara_mini.LaraMiniRMSNormGated",
                                  "falcon_h1.FalconH1RMSNormGated"],
})


def _qualified_name(cls):
    return f"{cls.__module__}.{cls.__qualname__}"


def _replacement(module):
    """(our RMSNorm sharing module's parameter, None) for a recognized module
    that behaves as its recipe says, else (None, why not)."""
    recipe = RECOGNIZED.get(_qualified_name(type(module)))
    if recipe is None:
        gated = RECOGNIZED_GATED.get(_qualified_name(type(module)))
        return (None, "not a recognized class") if gated is None else _gated_replacement(module, gated)
    weight = getattr(module, "weight", None)
    if weight is not None and not isinstance(weight, torch.nn.Parameter):
        return None, "its weight is not a Parameter"
    shape = getattr(module, "normalized_shape", None) if weight is None else tuple(weight.shape)
    if not shape or not hasattr(module, recipe.eps_attribute):
        return None, f"no weight or normalized_shape, or no {recipe.eps_attribute}"
    if weight is not None and weight.device.type != "cpu":
        return None, f"its weight is on {weight.device}, not the CPU"
    ours = RMSNorm(shape, getattr(module, recipe.eps_attribute), weight is not None,
                   weight_offset=recipe.weight_offset, cast_mode=recipe.cast_mode, device="meta")
    ours.weight = weight
    return (ours, None) if _behaves_alike(module, ours) else (None, "its results differ from its recipe's")


def _gated_replacement(module, recipe):
    """(our RMSNormGated sharing module's weight, None) for a gated module
    that behaves as its recipe says, else (None, why not)."""
    weight = getattr(module, "weight", None)
    if not isinstance(weight, torch.nn.Parameter) or weight.dim() != 1:
        return None, "its weight is not a 1-d Parameter"
    if weight.device.type != "cpu":
        return None, f"its weight is on {weight.device}, not the CPU"
    eps = getattr(module, "variance_epsilon", None)
    activation = getattr(module, "activation", "silu")
    if not isinstance(eps, (int, float)) or activation not in _ACTIVATIONS:
        return None, f"no float variance_epsilon, or an activation {activation!r} other than silu and sigmoid"
    n = weight.shape[0]
    n_groups = getattr(module, "n_groups", 1)
    group_size = getattr(module, "group_size", n // n_groups if isinstance(n_groups, int) and n_groups > 0 else 0)
    if not isinstance(group_size, int) or group_size < 1 or n % group_size:
        return None, f"its groups do not divide its {n} elements"
    ours = RMSNormGated(n, float(eps), group_size=group_size, activation=activation, cast_mode=recipe.cast_mode,
                        norm_before_gate=bool(getattr(module, "norm_before_gate", recipe.norm_before_gate)),
                        device="meta")
    ours.weight = weight
    x, gate = (torch.randn(2, n, generator=torch.Generator().manual_seed(seed)).to(weight.dtype) for seed in (0, 1))
    with torch.no_grad():
        agree = _agree(module(x, gate), ours(x, gate), weight.dtype)
    return (ours, None) if agree else (None, "its results differ from its recipe's")


def _behaves_alike(theirs, ours):
    """Whether two norms agree on a probe in the weight's dtype: a row of
    normal values, and one with a mean square of eps, where eps's place shows."""
    weight = ours.weight
    dtype = torch.float32 if weight is None else weight.dtype
    eps = ours.eps if ours.eps is not None else torch.finfo(dtype).eps
    x = torch.randn((2,) + ours.normalized_shape, generator=torch.Generator().manual_seed(0))
    x[1] *= math.sqrt(eps) if eps > 0 else 1.0
    x = x.to(dtype)
    with torch.no_grad():
        return _agree(theirs(x), ours(x), dtype)


def _agree(expected, got, dtype):
    """Whether a probe's results agree within a few units of dtype's precision."""
    if expected.dtype != got.dtype or expected.shape != got.shape:
        return False
    tol = max(4 * torch.finfo(dtype).eps, 1e-5)
    expected, got = expected.double(), got.double()
    return torch.allclose(got, expected, rtol=tol, atol=tol * expected.abs().max().item())


def replace_rms_norms(model, *, strict=False):
    """Swap every recognized RMSNorm submodule of ``model`` for :class:`RMSNorm`.

    Liger-Kernel's ``apply_liger_kernel_to_*`` done generally: one call on a
    loaded model.  Each submodule of a class in :data:`RECOGNIZED`
    (``torch.nn.RMSNorm`` and Hugging Face ``transformers`` classes: Llama,
    Mistral, Qwen2/3 with Qwen3's ``q_norm``/``k_norm``, Gemma 1-3, OLMo2,
    Phi3, T5, ...) becomes an :class:`RMSNorm` with the same numerics that
    holds the same ``weight`` Parameter object (not a copy); each of a gated
    class in :data:`RECOGNIZED_GATED` (Qwen3-Next, Mamba2, Kimi Linear,
    Falcon-H1, ...) becomes an :class:`RMSNormGated` likewise.  Before a
    module is replaced, both are run on a small probe input and must agree.

    Parameters
    ----------
    model : torch.nn.Module
        Changed in place; the root module itself is never replaced.
    strict : bool, default False
        Raise instead of warning about what is left alone.

    Returns
    -------
    list of str
        The qualified names of the replaced submodules.

    Raises
    ------
    ValueError
        With ``strict=True``, when a submodule whose class name contains
        "RMSNorm" is left alone (then nothing is replaced).

    Warns
    -----
    UserWarning
        One warning naming the submodules whose class name contains "RMSNorm"
        that were left alone, and why.

    Examples
    --------
    >>> import torch
    >>> from rmsnorm_cpu.torch import replace_rms_norms
    >>> model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.RMSNorm(4))
    >>> replace_rms_norms(model)
    ['1']
    >>> model[1]
    RMSNorm((4,), eps=None, elementwise_affine=True)
    """
    swaps, left = [], []
    made = {}
    for parent_name, parent in model.named_modules():
        for name, child in parent.named_children():
            qualified = f"{parent_name}.{name}" if parent_name else name
            if isinstance(child, (RMSNorm, RMSNormGated)):
                continue
            if id(child) not in made:
                made[id(child)] = _replacement(child)
            ours, why = made[id(child)]
            if ours is not None:
                swaps.append((parent, name, qualified, ours))
            elif "RMSNorm" in type(child).__name__ or _qualified_name(type(child)) in RECOGNIZED \
                    or _qualified_name(type(child)) in RECOGNIZED_GATED:
                left.append(f"{qualified} ({_qualified_name(type(child))}: {why})")
    if left:
        message = f"replace_rms_norms left {len(left)} RMSNorm-like submodule(s) alone: " + "; ".join(left)
        if strict:
            raise ValueError(message)
        import warnings
        warnings.warn(message, UserWarning, stacklevel=2)
    for parent, name, _, ours in swaps:
        setattr(parent, name, ours)
    return [qualified for _, _, qualified, _ in swaps]
