"""``RMSNorm``: a layer object holding weight and bias, for any array-API namespace.

NumPy arrays are used as they are.  Other arrays (PyTorch CPU tensors,
``array_api_strict``, ...) are recognized with ``array-api-compat`` and shared
with NumPy through DLPack, without a copy either way; results come back in
the caller's namespace.  Dask arrays stay lazy (``rms_norm``'s Dask path).
"""

import numbers

import numpy as np

from . import _api, _spec

__all__ = ["RMSNorm"]


def _tensor_as_numpy(t, name):
    """A CPU tensor as a NumPy view of its memory (bfloat16 via its bits); the
    caller decides about autograd (the view records none)."""
    import torch

    if t.device.type != "cpu":
        raise TypeError(f"{name} is on device {t.device}; rmsnorm_cpu runs on CPU tensors only")
    t = t.detach()  # shares memory
    if t.dtype == torch.bfloat16:  # DLPack has bfloat16 but NumPy does not import it
        return np.from_dlpack(t.view(torch.int16)).view(_spec.bfloat16())
    return np.from_dlpack(t)


def _torch_to_numpy(t, name):
    import torch

    if t.requires_grad and torch.is_grad_enabled():
        raise TypeError(
            f"{name} requires grad: RMSNorm (the array-API layer) does not record autograd. Use "
            f"rmsnorm_cpu.torch.RMSNorm for training, or pass {name}.detach() / run under torch.no_grad()")
    return _tensor_as_numpy(t, name)


def _numpy_as_tensor(a):
    import torch

    if a.dtype.name == "bfloat16":
        return torch.from_dlpack(a.view(np.int16)).view(torch.bfloat16)
    return torch.from_dlpack(a)


class _Bridge:
    """The caller's namespace: arrays in as NumPy, results back out as the caller's kind."""

    def __init__(self, *arrays):
        self.compat = None
        given = [a for a in arrays if a is not None]
        if all(isinstance(a, np.ndarray) for a in given):
            return
        try:
            import array_api_compat
        except ImportError:  # then only NumPy and array-likes can come in
            return
        if not any(array_api_compat.is_array_api_obj(a) for a in given):
            return  # lists, scalars: NumPy array-likes
        array_api_compat.array_namespace(*given)  # TypeError when namespaces are mixed
        self.compat = array_api_compat

    def to_numpy(self, a, name, copied=False):
        """a as a NumPy array sharing its memory; ``copied=True`` when the caller
        only copies values out (then a tensor's requires_grad does not matter)."""
        if a is None or self.compat is None or self.compat.is_numpy_array(a):
            return np.asarray(a) if a is not None else None
        if self.compat.is_torch_array(a):
            return (_tensor_as_numpy if copied else _torch_to_numpy)(a, name)
        return np.from_dlpack(a)

    def from_numpy(self, a, like):
        """a (a NumPy result) as an array of like's namespace, sharing memory."""
        if self.compat is None or self.compat.is_numpy_array(like):
            return a
        if self.compat.is_torch_array(like):
            return _numpy_as_tensor(a)
        return self.compat.array_namespace(like).from_dlpack(a)


class RMSNorm:
    """Root-mean-square normalization layer holding ``weight`` (and ``bias``) as NumPy arrays.

    Parameters
    ----------
    normalized_shape : int or tuple of ints
        Shape of the normalized axes of the input (and of weight/bias).
    axis : int or tuple of ints, default -1
        The normalized axes.  The default means the last ``len(normalized_shape)``
        axes, as in ``torch.nn.RMSNorm``.
    eps, groups, eps_mode, weight_offset, cast_mode
        As in :func:`rmsnorm_cpu.rms_norm`.
    elementwise_affine : bool, default True
        Hold a ``weight`` of ones; ``False`` means no weight.
    bias : bool, default False
        Hold a ``bias`` of zeros.
    dtype : dtype, default "float32"
        Dtype of weight and bias ("bfloat16" needs ``ml_dtypes``).

    Notes
    -----
    ``layer(x)`` accepts NumPy arrays, PyTorch CPU tensors, any array-API
    array that supports DLPack (e.g. ``array_api_strict``) and Dask arrays, and
    returns the caller's kind of array.  Tensors and arrays are shared with
    NumPy through DLPack without a copy.  A tensor that requires grad while
    autograd is enabled raises ``TypeError``: this layer records no graph
    (use :class:`rmsnorm_cpu.torch.RMSNorm`, or ``.detach()``/``torch.no_grad()``).
    The forward keeps references to its input and ``rstd`` for ``backward``.

    Examples
    --------
    >>> import numpy as np
    >>> from rmsnorm_cpu import RMSNorm
    >>> layer = RMSNorm(2, eps=0.0)
    >>> layer(np.array([[3.0, 4.0]], np.float32))
    array([[0.84852815, 1.1313709 ]], dtype=float32)
    >>> dx = layer.backward(np.ones((1, 2), np.float32))
    >>> layer.weight_grad
    array([0.84852815, 1.1313709 ], dtype=float32)
    """

    def __init__(self, normalized_shape, *, axis=-1, eps=1e-6, groups=1, eps_mode="sqrt", weight_offset=0.0,
                 cast_mode="fused", elementwise_affine=True, bias=False, dtype="float32"):
        if isinstance(normalized_shape, numbers.Integral):
            normalized_shape = (normalized_shape,)
        self.normalized_shape = tuple(_spec.check_int(s, "normalized_shape", 0) for s in normalized_shape)
        if isinstance(axis, numbers.Integral) and axis == -1:
            axis = tuple(range(-len(self.normalized_shape), 0)) if len(self.normalized_shape) != 1 else -1
        self.axis = axis
        self.groups = groups
        self.eps_mode = eps_mode
        self.weight_offset = float(weight_offset)
        self.cast_mode = cast_mode
        self.eps = _spec.options(eps, eps_mode, cast_mode).eps
        dt, _ = _spec.result_dtype(dtype)
        self.weight = np.ones(self.normalized_shape, dt) if elementwise_affine else None
        self.bias = np.zeros(self.normalized_shape, dt) if bias else None
        self.weight_grad = self.bias_grad = None
        self._saved = None

    def _kwargs(self, ndim):
        return dict(axis=_spec.last_axis(self.axis, ndim), eps=self.eps, groups=self.groups, eps_mode=self.eps_mode,
                    weight_offset=self.weight_offset)

    def _check_shape(self, shape):
        norm_shape = _spec.plan(tuple(shape), self.axis, self.groups).norm_shape
        if norm_shape != self.normalized_shape:
            raise ValueError(f"x has normalized shape {norm_shape} over axis={self.axis}, "
                             f"the layer expects {self.normalized_shape}")

    def __call__(self, x, *, out=None, n_threads=None):
        """``rms_norm(x, weight, bias)`` over the layer's axes, in x's namespace.

        ``out`` (same namespace as x) receives the result and is returned;
        it may be ``x`` itself, but then ``backward`` is unavailable.
        """
        if _spec.is_dask(x):
            self._check_shape(x.shape)
            self._saved = None
            return _api.rms_norm(x, self.weight, self.bias, cast_mode=self.cast_mode, **self._kwargs(x.ndim))
        bridge = _Bridge(x, out)
        xn = bridge.to_numpy(x, "x")
        self._check_shape(xn.shape)
        outn = bridge.to_numpy(out, "out")
        y, rstd = _api.rms_norm(xn, self.weight, self.bias, cast_mode=self.cast_mode, out=outn,
                                return_rstd=True, n_threads=n_threads, **self._kwargs(xn.ndim))
        self._saved = None if outn is not None and np.shares_memory(outn, xn) else (bridge, x, xn, rstd)
        return out if out is not None else bridge.from_numpy(y, x)

    def backward(self, dy, *, n_threads=None):
        """Gradient of the last forward: returns ``dx`` (x's namespace) and stores
        ``weight_grad`` and ``bias_grad`` (NumPy, shaped like the parameters)."""
        if self._saved is None:
            raise RuntimeError("backward needs a forward first (on data that was not overwritten by out=x)")
        bridge, x, xn, rstd = self._saved
        dy_bridge = _Bridge(x, dy)  # TypeError when dy is of another namespace than x
        dyn = dy_bridge.to_numpy(dy, "dy")
        dx, self.weight_grad, self.bias_grad = _api.rms_norm_backward(
            dyn, xn, self.weight, self.bias, rstd=rstd, n_threads=n_threads, **self._kwargs(xn.ndim))
        return bridge.from_numpy(dx, x)

    def state_dict(self):
        """``{"weight": ..., "bias": ...}`` (the parameters the layer holds; not copies)."""
        return {name: p for name, p in (("weight", self.weight), ("bias", self.bias)) if p is not None}

    def load_state_dict(self, state_dict):
        """Copy parameters in (NumPy or any array-API array, e.g. torch tensors);
        the keys must be exactly those of :meth:`state_dict`."""
        expected = set(self.state_dict())
        if set(state_dict) != expected:
            raise ValueError(f"state_dict has keys {sorted(state_dict)}, expected {sorted(expected)}")
        values = {}
        for name, value in state_dict.items():
            a = _Bridge(value).to_numpy(value, name, copied=True)
            if a.shape != self.normalized_shape:
                raise ValueError(f"state_dict[{name!r}] has shape {a.shape}, expected {self.normalized_shape}")
            values[name] = a
        for name, a in values.items():  # all checked before any is written
            getattr(self, name)[...] = a

    @classmethod
    def from_torch(cls, module, **kwargs):
        """An RMSNorm with the settings and parameters of a torch module.

        ``module`` is a ``torch.nn.RMSNorm`` or a Hugging Face-style module with
        ``.weight`` and ``.variance_epsilon`` (``LlamaRMSNorm``: ``cast_mode="llama"``
        by default) or ``.eps``.  ``kwargs`` override the settings found, e.g.
        ``weight_offset=1.0`` for Gemma.  ``torch.nn.RMSNorm(eps=None)`` takes the
        machine epsilon of the weight's dtype (float32 without weight), what torch
        uses for inputs of that dtype.
        """
        import torch

        weight = getattr(module, "weight", None)
        if isinstance(module, torch.nn.RMSNorm):
            settings = {"eps": module.eps, "elementwise_affine": weight is not None}
            normalized_shape = tuple(module.normalized_shape)
        elif weight is not None and (hasattr(module, "variance_epsilon") or hasattr(module, "eps")):
            is_llama = hasattr(module, "variance_epsilon")
            settings = {"eps": module.variance_epsilon if is_llama else module.eps}
            if is_llama:
                settings["cast_mode"] = "llama"
            normalized_shape = tuple(weight.shape)
        else:
            raise TypeError(f"module must be a torch.nn.RMSNorm or have .weight and .variance_epsilon/.eps, "
                            f"got {type(module).__name__}")
        dtype = torch.float32 if weight is None else weight.dtype
        if settings["eps"] is None:
            settings["eps"] = torch.finfo(dtype).eps
        settings["dtype"] = str(dtype).removeprefix("torch.")
        settings.update(kwargs)
        layer = cls(normalized_shape, **settings)
        if weight is not None:
            layer.load_state_dict({"weight": weight})
        return layer

    def __repr__(self):
        return (f"RMSNorm({self.normalized_shape}, axis={self.axis}, eps={self.eps}, groups={self.groups}, "
                f"eps_mode={self.eps_mode!r}, weight_offset={self.weight_offset}, cast_mode={self.cast_mode!r}, "
                f"elementwise_affine={self.weight is not None}, bias={self.bias is not None})")
