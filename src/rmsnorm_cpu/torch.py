"""PyTorch adapter: an autograd-aware ``rms_norm`` and an ``nn.Module`` drop-in.

Importing this module imports torch (``import rmsnorm_cpu`` does not).  CPU
tensors of float16, bfloat16, float32 and float64 are shared with NumPy
through DLPack, without copies; the forward is :func:`rmsnorm_cpu.rms_norm`
and the backward :func:`rmsnorm_cpu.rms_norm_backward` (one fused pass that
reuses the forward's ``rstd``).
"""

import torch

from . import _api
from .layer import _numpy_as_tensor, _tensor_as_numpy

__all__ = ["RMSNorm", "rms_norm"]


class _RMSNormFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, axis, eps):
        # The output has x's dtype whatever the weight's, as in torch.nn.functional.rms_norm.
        w = None if weight is None else _tensor_as_numpy(weight, "weight")
        y, rstd = _api.rms_norm(_tensor_as_numpy(x, "x"), w, axis=axis, eps=eps, return_rstd=True)
        ctx.save_for_backward(x, weight, _numpy_as_tensor(rstd))
        ctx.axis, ctx.eps = axis, eps
        return _numpy_as_tensor(y)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, dy):
        x, weight, rstd = ctx.saved_tensors
        dx, dweight, _ = _api.rms_norm_backward(
            _tensor_as_numpy(dy, "dy"), _tensor_as_numpy(x, "x"),
            None if weight is None else _tensor_as_numpy(weight, "weight"),
            rstd=_tensor_as_numpy(rstd, "rstd"), axis=ctx.axis, eps=ctx.eps)
        dweight = _numpy_as_tensor(dweight) if weight is not None and ctx.needs_input_grad[1] else None
        return _numpy_as_tensor(dx), dweight, None, None


def rms_norm(x, normalized_shape, weight=None, eps=1e-6):
    """``torch.nn.functional.rms_norm`` on rmsnorm_cpu's kernels, with autograd.

    Parameters
    ----------
    x : torch.Tensor
        CPU tensor of float16, bfloat16, float32 or float64.
    normalized_shape : int or sequence of ints
        The trailing dimensions normalized together (must match ``x``'s).
    weight : torch.Tensor, optional
        Of ``normalized_shape``; may require grad.
    eps : float or None, default 1e-6
        ``None`` means ``torch.finfo(x.dtype).eps``, as in torch.

    Returns
    -------
    torch.Tensor
        Of x's dtype, whatever the weight's (as torch does).

    Examples
    --------
    >>> import torch
    >>> from rmsnorm_cpu.torch import rms_norm
    >>> rms_norm(torch.tensor([[3.0, 4.0]]), (2,), eps=0.0)
    tensor([[0.8485, 1.1314]])
    """
    if isinstance(normalized_shape, int):
        normalized_shape = (normalized_shape,)
    normalized_shape = tuple(normalized_shape)
    k = len(normalized_shape)
    if tuple(x.shape[x.dim() - k:]) != normalized_shape or x.dim() < k:
        raise ValueError(f"normalized_shape {normalized_shape} does not match the trailing dimensions of x "
                         f"of shape {tuple(x.shape)}")
    if weight is not None and tuple(weight.shape) != normalized_shape:
        raise ValueError(f"weight has shape {tuple(weight.shape)}, expected {normalized_shape}")
    if eps is None:
        eps = torch.finfo(x.dtype).eps
    return _RMSNormFunction.apply(x, weight, tuple(range(-k, 0)), eps)


class RMSNorm(torch.nn.Module):
    """Drop-in for ``torch.nn.RMSNorm`` (same arguments, parameter and state dict).

    Examples
    --------
    >>> import torch
    >>> from rmsnorm_cpu.torch import RMSNorm
    >>> RMSNorm(2, eps=0.0)(torch.tensor([[3.0, 4.0]]))
    tensor([[0.8485, 1.1314]], grad_fn=<_RMSNormFunctionBackward>)
    """

    def __init__(self, normalized_shape, eps=None, elementwise_affine=True, device=None, dtype=None):
        super().__init__()
        if isinstance(normalized_shape, int):
            normalized_shape = (normalized_shape,)
        self.normalized_shape = tuple(normalized_shape)
        self.eps = eps
        self.elementwise_affine = elementwise_affine
        if elementwise_affine:
            self.weight = torch.nn.Parameter(torch.ones(self.normalized_shape, device=device, dtype=dtype))
        else:
            self.register_parameter("weight", None)

    def forward(self, x):
        return rms_norm(x, self.normalized_shape, self.weight, self.eps)

    def extra_repr(self):
        return f"{self.normalized_shape}, eps={self.eps}, elementwise_affine={self.elementwise_affine}"
