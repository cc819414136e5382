"""RMSNorm layer object: NumPy, PyTorch CPU tensors and array_api_strict arrays."""

import subprocess
import sys

import numpy as np
import pytest

import rmsnorm_cpu as rn
from rmsnorm_cpu import RMSNorm

OPTIONAL = ("torch", "sklearn", "dask", "pandas", "array_api_compat", "array_api_strict", "matplotlib")


def _layer(rng, shape=(8,), bias=True, **kw):
    layer = RMSNorm(shape, bias=bias, **kw)
    layer.weight[...] = rng.uniform(0.5, 1.5, shape)
    if bias:
        layer.bias[...] = rng.uniform(-0.5, 0.5, shape)
    return layer


def test_import_pulls_in_no_optional_package():
    code = f"import sys, rmsnorm_cpu; print([m for m in {OPTIONAL!r} if m in sys.modules])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_numpy_forward_and_backward(isa, rng):
    layer = _layer(rng)
    x = rng.standard_normal((5, 8)).astype(np.float32)
    y = layer(x)
    np.testing.assert_array_equal(y, rn.rms_norm(x, layer.weight, layer.bias))
    dy = rng.standard_normal(x.shape).astype(np.float32)
    dx = layer.backward(dy)
    ref = rn.rms_norm_backward(dy, x, layer.weight, layer.bias)
    for got, want in zip((dx, layer.weight_grad, layer.bias_grad), ref):
        np.testing.assert_array_equal(got, want)
    assert layer.weight_grad.shape == layer.weight.shape


def test_defaults_and_options(rng):
    layer = RMSNorm((3, 4))
    assert layer.weight.dtype == np.float32 and layer.bias is None
    assert (layer.weight == 1).all()
    x = rng.standard_normal((2, 3, 4))
    np.testing.assert_array_equal(layer(x), rn.rms_norm(x, np.ones((3, 4), np.float32), axis=(-2, -1)))
    nchw = RMSNorm(6, axis=1, groups=2, eps_mode="add", weight_offset=1.0, elementwise_affine=False)
    assert nchw.weight is None
    x = rng.standard_normal((2, 6, 3, 3))
    np.testing.assert_array_equal(nchw(x), rn.rms_norm(x, axis=1, groups=2, eps_mode="add", weight_offset=1.0))


def test_wrong_normalized_shape_raises(rng):
    with pytest.raises(ValueError, match="normalized shape"):
        RMSNorm(8)(np.ones((2, 7)))
    with pytest.raises(ValueError, match="eps"):
        RMSNorm(8, eps=-1.0)


def test_backward_needs_forward():
    layer = RMSNorm(4)
    with pytest.raises(RuntimeError, match="forward"):
        layer.backward(np.ones((1, 4)))
    x = np.ones((1, 4))
    layer(x, out=x)  # in place: the input is gone
    with pytest.raises(RuntimeError, match="forward"):
        layer.backward(np.ones((1, 4)))


def test_state_dict_round_trip(rng):
    layer = _layer(rng)
    other = RMSNorm(8, bias=True)
    other.load_state_dict(layer.state_dict())
    np.testing.assert_array_equal(other.weight, layer.weight)
    np.testing.assert_array_equal(other.bias, layer.bias)
    assert set(RMSNorm(8).state_dict()) == {"weight"}


def test_load_state_dict_checks_before_writing(rng):
    layer = RMSNorm(4, bias=True)
    with pytest.raises(ValueError, match="keys"):
        layer.load_state_dict({"weight": np.zeros(4)})
    with pytest.raises(ValueError, match="shape"):
        layer.load_state_dict({"weight": np.zeros(4), "bias": np.zeros(5)})
    assert (layer.weight == 1).all() and (layer.bias == 0).all()


# ---- PyTorch CPU tensors ----------------------------------------------------------------------

@pytest.fixture
def torch():
    return pytest.importorskip("torch", reason="torch is not installed")


@pytest.fixture
def compat():
    return pytest.importorskip("array_api_compat", reason="array-api-compat is not installed")


@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
def test_torch_tensors_in_and_out(torch, compat, rng, dtype):
    layer = _layer(rng)
    tdtype = getattr(torch, dtype)
    t = torch.randn(4, 8).to(tdtype)
    y = layer(t)
    assert isinstance(y, torch.Tensor) and y.dtype == tdtype
    x_np = t.view(torch.int16).numpy().view(rn._spec.bfloat16()) if dtype == "bfloat16" else t.numpy()
    want = rn.rms_norm(x_np, layer.weight, layer.bias)
    got = y.view(torch.int16).numpy().view(want.dtype) if dtype == "bfloat16" else y.numpy()
    np.testing.assert_array_equal(got, want)
    dx = layer.backward(torch.ones_like(t))
    assert isinstance(dx, torch.Tensor) and dx.dtype == tdtype


def test_torch_zero_copy_both_ways(torch, compat, rng):
    layer = _layer(rng)
    t = torch.randn(3, 8)
    expected = layer(t.clone())
    out = torch.empty(3, 8)
    assert layer(t, out=out) is out            # written straight into the tensor's memory
    assert torch.equal(out, expected)
    assert layer(t, out=t) is t                # in place: read from the tensor's own memory
    assert torch.equal(t, expected)


def test_torch_requires_grad_is_refused_not_copied(torch, compat):
    layer = RMSNorm(4)
    t = torch.randn(2, 4, requires_grad=True)
    with pytest.raises(TypeError, match="requires grad"):
        layer(t)
    with torch.no_grad():  # no graph would be recorded: shared, not copied
        y = layer(t)
    assert torch.allclose(y, torch.nn.functional.rms_norm(t.detach(), (4,), eps=1e-6))


def test_mixed_namespaces_raise(torch, compat):
    layer = RMSNorm(4)
    with pytest.raises(TypeError):
        layer(np.ones((2, 4), np.float32), out=torch.empty(2, 4))
    layer(torch.ones(2, 4))
    with pytest.raises(TypeError):
        layer.backward(np.ones((2, 4), np.float32))


def test_from_torch_rmsnorm(torch, compat, rng):
    module = torch.nn.RMSNorm(16, eps=1e-5)
    with torch.no_grad():
        module.weight.uniform_(0.5, 1.5)
    layer = RMSNorm.from_torch(module)
    assert layer.eps == 1e-5
    x = torch.randn(3, 16)
    with torch.no_grad():
        torch.testing.assert_close(layer(x), module(x), rtol=2e-6, atol=1e-6)
    no_eps = RMSNorm.from_torch(torch.nn.RMSNorm((2, 4), elementwise_affine=False))
    assert no_eps.weight is None and no_eps.eps == torch.finfo(torch.float32).eps
    assert no_eps.normalized_shape == (2, 4)


def test_load_state_dict_from_torch_parameters(torch, compat):
    module = torch.nn.RMSNorm(4)
    with torch.no_grad():
        module.weight.fill_(3.0)
    layer = RMSNorm(4)
    layer.load_state_dict(dict(module.named_parameters()))  # requires grad: values are copied
    assert (layer.weight == 3).all()


def test_from_torch_hf_style_module(torch, compat):
    class LlamaRMSNorm(torch.nn.Module):  # Hugging Face transformers' code
        def __init__(self, hidden_size, eps=1e-6):
            super().__init__()
            self.weight = torch.nn.Parameter(torch.ones(hidden_size))
            self.variance_epsilon = eps

        def forward(self, hidden_states):
            input_dtype = hidden_states.dtype
            hidden_states = hidden_states.to(torch.float32)
            variance = hidden_states.pow(2).mean(-1, keepdim=True)
            hidden_states = hidden_states * torch.rsqrt(variance + self.variance_epsilon)
            return self.weight * hidden_states.to(input_dtype)

    module = LlamaRMSNorm(32, eps=1e-5).half()
    with torch.no_grad():
        module.weight.uniform_(0.5, 1.5)
    layer = RMSNorm.from_torch(module)
    assert layer.cast_mode == "llama" and layer.weight.dtype == np.float16
    x = torch.randn(4, 32).half()
    with torch.no_grad():
        torch.testing.assert_close(layer(x), module(x), rtol=1e-3, atol=1e-3)
    with pytest.raises(TypeError, match="module"):
        RMSNorm.from_torch(torch.nn.Linear(2, 2))


# ---- array_api_strict -------------------------------------------------------------------------

def test_array_api_strict_round_trip(compat, rng):
    xs = pytest.importorskip("array_api_strict", reason="array-api-strict is not installed")
    layer = _layer(rng, bias=False)
    x_np = rng.standard_normal((3, 8))
    y = layer(xs.asarray(x_np))
    assert compat.array_namespace(y) is xs and y.dtype == xs.float64
    np.testing.assert_array_equal(np.from_dlpack(y), rn.rms_norm(x_np, layer.weight))
    dx = layer.backward(xs.ones((3, 8), dtype=xs.float64))
    assert compat.array_namespace(dx) is xs


def test_read_only_dlpack_import_is_refused_before_writing(compat, rng):
    xs = pytest.importorskip("array_api_strict", reason="array-api-strict is not installed")
    frozen = np.zeros((2, 8))
    frozen.flags.writeable = False
    out = xs.asarray(frozen, copy=False)
    with pytest.raises(ValueError, match="read-only"):
        RMSNorm(8)(xs.asarray(rng.standard_normal((2, 8))), out=out)
    assert (frozen == 0).all()
