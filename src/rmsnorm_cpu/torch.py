"""PyTorch adapter: registered ops, autograd, an ``nn.Module`` drop-in, model patching.

Importing this module imports torch (``import rmsnorm_cpu`` does not) and
registers four ops in the ``rmsnorm_cpu`` namespace, each with a fake (meta)
implementation, so that ``torch.compile(fullgraph=True)`` and ``torch.export``
see one op per call::

    torch.ops.rmsnorm_cpu.rms_norm(x, weight, bias, dims, eps, eps_mode, weight_offset, cast_mode)
        -> (y, rstd)
    torch.ops.rmsnorm_cpu.rms_norm_backward(dy, x, weight, bias, rstd, dims, eps, eps_mode, weight_offset)
        -> (dx, dweight, dbias)
    torch.ops.rmsnorm_cpu.add_rms_norm(x, residual, weight, bias, dims, eps, eps_mode, weight_offset,
                                       cast_mode) -> (y, new_residual)
    torch.ops.rmsnorm_cpu.add_rms_norm_(x, residual, ...)   # in place: y into x, new_residual into residual

``dims`` is the number of trailing dimensions normalized together.  The
forward and the functional add are differentiable (``register_autograd``; the
gradient is the ``rms_norm_backward`` op, which reuses the forward's ``rstd``).
``dweight``/``dbias`` are empty tensors where ``weight``/``bias`` is None.

The public functions (:func:`rms_norm`, :func:`add_rms_norm`, :class:`RMSNorm`)
call the ops while compiling, exporting or tracing.  In eager mode they skip
the dispatcher: without autograd to record they hand the tensors' memory to
the kernels' short path directly (NumPy views, no copies; bfloat16 as its
bits, so ml_dtypes is not needed), and with autograd to record they run the
same kernels inside a ``torch.autograd.Function`` with the ops' own formula.
"""

import math
from collections import namedtuple
from typing import Optional

import numpy as np
import torch

from . import _api, _core, _runtime, _spec

__all__ = ["RMSNorm", "add_rms_norm", "replace_rms_norms", "rms_norm"]

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
    """(y, rstd or None) for a CPU tensor x and weight/bias tensors or None."""
    if _short(x, weight, bias, dims, eps, eps_mode, weight_offset, cast_mode):
        y = torch.empty(x.shape, dtype=x.dtype)
        rstd = torch.empty(x.shape[:-1] + (1,), dtype=_acc(x.dtype)) if want_rstd else None
        n = x.shape[-1]
        _core.forward_at(x.data_ptr(), y.data_ptr(), _address(weight), 0 if weight is None else _CODES[weight.dtype],
                         _address(rstd), x.numel() // n, n, _CODES[x.dtype], eps, _ROUND_MID[cast_mode])
        return y, rstd
    w, b, offset = _params(x, weight, bias, weight_offset)
    xa = _array(x)
    y = torch.empty(x.shape, dtype=x.dtype)  # contiguous whatever x's strides, as the fake says
    result = _api.rms_norm(xa, w, b, axis=_AXES[dims], eps=eps, eps_mode=eps_mode, weight_offset=offset,
                           cast_mode=cast_mode, dtype="bfloat16" if x.dtype == _BF16 else None, out=_array(y),
                           return_rstd=want_rstd)
    return y, torch.from_numpy(result[1]) if want_rstd else None


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


# ---- the ops ------------------------------------------------------------------

@torch.library.custom_op("rmsnorm_cpu::rms_norm", mutates_args=(), device_types="cpu")
def _rms_norm_op(x: torch.Tensor, weight: Optional[torch.Tensor], bias: Optional[torch.Tensor], dims: int,
                 eps: float, eps_mode: str, weight_offset: float, cast_mode: str) -> tuple[torch.Tensor, torch.Tensor]:
    return _forward(x, weight, bias, dims, eps, eps_mode, weight_offset, cast_mode, True)


def _rstd_like(x, dims):
    return x.new_empty(x.shape[:x.dim() - dims] + (1,), dtype=_acc(x.dtype))


@_rms_norm_op.register_fake
def _(x, weight, bias, dims, eps, eps_mode, weight_offset, cast_mode):
    _spec.options(eps, eps_mode, cast_mode)
    return torch.empty_like(x, memory_format=torch.contiguous_format), _rstd_like(x, dims)


@torch.library.custom_op("rmsnorm_cpu::rms_norm_backward", mutates_args=(), device_types="cpu")
def _rms_norm_backward_op(dy: torch.Tensor, x: torch.Tensor, weight: Optional[torch.Tensor],
                          bias: Optional[torch.Tensor], rstd: Optional[torch.Tensor], dims: int, eps: float,
                          eps_mode: str, weight_offset: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    w, b, offset = _params(x, weight, bias, weight_offset)
    dx, dw, db = _api.rms_norm_backward(
        _bits_or_array(dy.to(x.dtype)), _bits_or_array(x), w, b, rstd=None if rstd is None else _array(rstd),
        axis=_AXES[dims], eps=eps, eps_mode=eps_mode, weight_offset=offset)
    return (_tensor(dx, x.dtype).contiguous(),
            x.new_empty(0) if dw is None else torch.from_numpy(dw).to(weight.dtype),
            x.new_empty(0) if db is None else torch.from_numpy(db).to(bias.dtype))


@_rms_norm_backward_op.register_fake
def _(dy, x, weight, bias, rstd, dims, eps, eps_mode, weight_offset):
    def grad(p):
        return x.new_empty(0) if p is None else torch.empty_like(p, memory_format=torch.contiguous_format)
    return torch.empty_like(x, memory_format=torch.contiguous_format), grad(weight), grad(bias)


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


# ---- autograd -------------------------------------------------------------------

def _setup_forward(ctx, inputs, output):
    x, weight, bias, dims, eps, eps_mode, weight_offset, _ = inputs
    ctx.save_for_backward(x, weight, bias, output[1])
    ctx.args = dims, eps, eps_mode, weight_offset
    ctx.mark_non_differentiable(output[1])


def _backward_forward(ctx, dy, _drstd):
    x, weight, bias, rstd = ctx.saved_tensors
    dx, dw, db = torch.ops.rmsnorm_cpu.rms_norm_backward(dy, x, weight, bias, rstd, *ctx.args)
    return (dx, dw if weight is not None else None, db if bias is not None else None) + (None,) * 5


def _setup_add(ctx, inputs, output):
    x, residual, weight, bias, dims, eps, eps_mode, weight_offset, _ = inputs
    ctx.save_for_backward(output[1], weight, bias)
    ctx.args = dims, eps, eps_mode, weight_offset
    ctx.dtypes = x.dtype, residual.dtype


def _backward_add(ctx, dy, dnew_residual):
    """y = rms_norm(s) with s = x + residual, returned too: both x and residual
    get ds = d(rms_norm)/ds . dy + d(new_residual); rstd is recomputed."""
    s, weight, bias = ctx.saved_tensors
    ds, dw, db = torch.ops.rmsnorm_cpu.rms_norm_backward(dy, s, weight, bias, None, *ctx.args)
    if dnew_residual is not None:
        ds = ds + dnew_residual
    return ((ds.to(ctx.dtypes[0]), ds.to(ctx.dtypes[1]), dw if weight is not None else None,
             db if bias is not None else None) + (None,) * 5)


torch.library.register_autograd("rmsnorm_cpu::rms_norm", _backward_forward, setup_context=_setup_forward)
torch.library.register_autograd("rmsnorm_cpu::add_rms_norm", _backward_add, setup_context=_setup_add)


# The ops' autograd in eager mode, without the dispatcher.  forward(ctx, ...)
# rather than a separate setup_context: apply() then binds no signature.

class _RMSNormFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, *inputs):
        x, weight, bias, dims, eps, eps_mode, weight_offset, cast_mode = inputs
        output = _forward(x, weight, bias, dims, eps, eps_mode, weight_offset, cast_mode, True)
        _setup_forward(ctx, inputs, output)
        return output

    backward = staticmethod(_backward_forward)


class _AddRMSNormFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, *inputs):
        x, residual, weight, bias, dims, eps, eps_mode, weight_offset, cast_mode = inputs
        output = _add(x, residual, weight, bias, dims, eps, eps_mode, weight_offset, cast_mode, False)
        _setup_add(ctx, inputs, output)
        return output

    backward = staticmethod(_backward_add)


def _functorch_involved(x, weight, bias, residual=None):
    """Whether a functorch transform is active or a tensor is functorch's:
    only then is the Python wrapper of Function.apply needed."""
    wrapped = torch._C._functorch.is_functorch_wrapped_tensor
    return torch._C._are_functorch_transforms_active() or wrapped(x) or any(
        t is not None and wrapped(t) for t in (weight, bias, residual))


# Function.apply's Python wrapper costs a fifth of a decode call: forward takes
# *inputs, so it binds no signature, and its functorch cases are checked by
# _functorch_involved.  Otherwise eager calls take the C apply directly.
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
    if not _eager(x):
        return torch.ops.rmsnorm_cpu.rms_norm(x, weight, bias, dims, eps, eps_mode, weight_offset, cast_mode)[0]
    if _records(x, weight, bias):
        apply = _RMSNormFunction.apply if _functorch_involved(x, weight, bias) else _rms_norm_apply
        return apply(x, weight, bias, dims, eps, eps_mode, weight_offset, cast_mode)[0]
    return _forward(x, weight, bias, dims, eps, eps_mode, weight_offset, cast_mode, False)[0]


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
    if _eager(x) and type(residual) is torch.Tensor and residual.is_cpu:
        if not _records(x, weight, bias, residual):
            return _add(x, residual, weight, bias, dims, eps, eps_mode, weight_offset, cast_mode, inplace)
        apply = _AddRMSNormFunction.apply if _functorch_involved(x, weight, bias, residual) else _add_rms_norm_apply
        y, new_residual = apply(x, residual, weight, bias, *args)
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
             "t5.T5LayerNorm"],
    _Recipe("eps", 0.0, "llama"): ["llama4.Llama4TextRMSNorm"],
    _OLMO2: ["olmo2.Olmo2RMSNorm", "olmo3.Olmo3RMSNorm", "gpt_oss.GptOssRMSNorm"],
    _GEMMA: ["gemma.GemmaRMSNorm", "gemma2.Gemma2RMSNorm", "gemma3.Gemma3RMSNorm", "qwen3_next.Qwen3NextRMSNorm"],
}
RECOGNIZED = {
    "torch.nn.modules.normalization.RMSNorm": _Recipe("eps", 0.0, "fused"),  # F.rms_norm
    **{f"transformers.models.{model}.modeling_{model}.{name}": recipe
       for recipe, names in _TRANSFORMERS.items() for model, name in (n.split(".") for n in names)},
}


def _qualified_name(cls):
    return f"{cls.__module__}.{cls.__qualname__}"


def _replacement(module):
    """(our RMSNorm sharing module's parameter, None) for a recognized module
    that behaves as its recipe says, else (None, why not)."""
    recipe = RECOGNIZED.get(_qualified_name(type(module)))
    if recipe is None:
        return None, "not a recognized class"
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
        expected, got = theirs(x), ours(x)
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
    holds the same ``weight`` Parameter object (not a copy).  Before a
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
            if isinstance(child, RMSNorm):
                continue
            if id(child) not in made:
                made[id(child)] = _replacement(child)
            ours, why = made[id(child)]
            if ours is not None:
                swaps.append((parent, name, qualified, ours))
            elif "RMSNorm" in type(child).__name__ or _qualified_name(type(child)) in RECOGNIZED:
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
