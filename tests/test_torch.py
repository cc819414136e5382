"""rmsnorm_cpu.torch in eager mode: functions and module against torch and NumPy.

Registered ops, torch.compile and torch.export: test_torch_compile.py;
replace_rms_norms and the Hugging Face classes: test_torch_models.py.
"""

import doctest
import sys

import numpy as np
import pytest

import rmsnorm_cpu as rn

torch = pytest.importorskip("torch", reason="torch is not installed")
rt = pytest.importorskip("rmsnorm_cpu.torch")
F = torch.nn.functional

TOL = {torch.float32: dict(rtol=2e-6, atol=2e-6), torch.float16: dict(rtol=1e-3, atol=1e-3),
       torch.bfloat16: dict(rtol=8e-3, atol=8e-3), torch.float64: dict(rtol=1e-13, atol=1e-13)}
HALF = (torch.float16, torch.bfloat16)


def _bits(t):
    """A tensor as NumPy data for rmsnorm_cpu's NumPy API (bfloat16 as uint16 bits)."""
    return t.view(torch.uint16).numpy() if t.dtype == torch.bfloat16 else t.numpy()


def _numpy_rms_norm(x, w=None, **kwargs):
    """rmsnorm_cpu.rms_norm on x's data: the reference our tensors must equal bitwise."""
    acc = np.float64 if x.dtype == torch.float64 else np.float32
    dtype = "bfloat16" if x.dtype == torch.bfloat16 else None
    y = rn.rms_norm(_bits(x), None if w is None else w.to(torch.float64).numpy().astype(acc), dtype=dtype, **kwargs)
    return torch.from_numpy(y).view(x.dtype)


def test_docstring_examples():
    result = doctest.testmod(rt, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16, torch.float64])
@pytest.mark.parametrize("shape, normalized_shape", [((4, 33), (33,)), ((2, 3, 4, 5), (4, 5))])
def test_forward_and_grads_match_torch(isa, dtype, shape, normalized_shape):
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(shape, generator=gen).to(dtype)
    w = (torch.rand(normalized_shape, generator=gen) + 0.5).to(dtype)
    dy = torch.randn(shape, generator=gen).to(dtype)
    ours_x, ours_w = x.clone().requires_grad_(), w.clone().requires_grad_()
    ref_x, ref_w = x.clone().requires_grad_(), w.clone().requires_grad_()
    y = rt.rms_norm(ours_x, normalized_shape, ours_w, eps=1e-6)
    ref = F.rms_norm(ref_x, normalized_shape, ref_w, eps=1e-6)
    assert y.dtype == dtype
    torch.testing.assert_close(y, ref, **TOL[dtype])
    y.backward(dy)
    ref.backward(dy)
    # torch's backward rounds its float16/bfloat16 steps; ours accumulates in float32.
    grad_tol = TOL[dtype] if dtype in (torch.float32, torch.float64) else dict(rtol=3e-2, atol=3e-2)
    torch.testing.assert_close(ours_x.grad, ref_x.grad, **grad_tol)
    torch.testing.assert_close(ours_w.grad, ref_w.grad, **grad_tol)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("shape", [(1, 1, 4096), (3, 40), (64, 4096), (33, 4096)])
@pytest.mark.parametrize("cast_mode", ["fused", "llama"])
def test_eager_paths_equal_the_numpy_api_bitwise(isa, dtype, shape, cast_mode):
    """The short path (small inputs), the general one (larger than the short
    path takes) and the autograd path give rms_norm's bits."""
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(shape, generator=gen).to(dtype)
    w = (torch.rand(shape[-1], generator=gen) + 0.5).to(dtype)
    expected = _numpy_rms_norm(x, w, eps=1e-5, cast_mode=cast_mode)
    assert torch.equal(rt.rms_norm(x, shape[-1], w, eps=1e-5, cast_mode=cast_mode), expected)
    assert torch.equal(rt.rms_norm(x, shape[-1], w.clone().requires_grad_(), eps=1e-5, cast_mode=cast_mode).detach(),
                       expected)
    norm = rt.RMSNorm(shape[-1], eps=1e-5, cast_mode=cast_mode, dtype=dtype)
    with torch.no_grad():
        norm.weight.copy_(w)
        assert torch.equal(norm(x), expected)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64])
@pytest.mark.parametrize("options", [dict(eps_mode="add"), dict(eps_mode="clamp", eps=0.5),
                                     dict(weight_offset=1.0), dict(cast_mode="llama"), dict(bias=True)],
                         ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()))
def test_options_equal_the_numpy_api(dtype, options):
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(5, 24, generator=gen).to(dtype)
    w = (torch.rand(24, generator=gen) + 0.5).to(dtype)
    options = dict(options)
    bias = (torch.randn(24, generator=gen).to(dtype)) if options.pop("bias", False) else None
    eps = options.pop("eps", 1e-6)
    ours = rt.rms_norm(x, 24, w, eps, bias=bias, **options)
    kwargs = dict(options, eps=eps)
    if bias is not None:
        kwargs["bias"] = bias.to(torch.float64).numpy()
    assert torch.equal(ours, _numpy_rms_norm(x, w, **kwargs))


def test_llama_cast_mode_is_hugging_face_llama_in_half_precision():
    """cast_mode="llama": weight * round(x * rstd), as LlamaRMSNorm computes it."""
    gen = torch.Generator().manual_seed(3)
    for dtype in HALF:
        x = torch.randn(64, 256, generator=gen).to(dtype)
        w = (torch.rand(256, generator=gen) + 0.5).to(dtype)
        h = x.float()
        hf = w * (h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + 1e-6)).to(dtype)
        ours = rt.rms_norm(x, 256, w, 1e-6, cast_mode="llama")
        assert (ours != hf).float().mean() < 1e-3  # the sums of squares differ in order only
        assert not torch.equal(ours, rt.rms_norm(x, 256, w, 1e-6))


def test_gradcheck_float64():
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(3, 7, dtype=torch.float64, generator=gen, requires_grad=True)
    w = torch.rand(7, dtype=torch.float64, generator=gen).add_(0.5).requires_grad_()
    b = torch.randn(7, dtype=torch.float64, generator=gen, requires_grad=True)
    r = torch.randn(3, 7, dtype=torch.float64, generator=gen, requires_grad=True)
    for eps_mode in ("sqrt", "add", "clamp"):
        assert torch.autograd.gradcheck(
            lambda a, c, d: rt.rms_norm(a, (7,), c, 1e-5, bias=d, eps_mode=eps_mode, weight_offset=0.5), (x, w, b))
    assert torch.autograd.gradcheck(lambda a: rt.rms_norm(a, (3, 7)), (x,))
    assert torch.autograd.gradcheck(
        lambda a, c, d, e: rt.add_rms_norm(a, c, 7, d, 1e-5, bias=e, weight_offset=1.0), (x, r, w, b))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("shape", [(1, 1, 4096), (40, 4096)])
def test_add_in_place_writes_the_callers_tensors(dtype, shape):
    gen = torch.Generator().manual_seed(4)
    x = torch.randn(shape, generator=gen).to(dtype)
    residual = torch.randn(shape, generator=gen).to(dtype)
    w = (torch.rand(shape[-1], generator=gen) + 0.5).to(dtype)
    ey, er = rn.add_rms_norm(_copy(x), _copy(residual), w.float().numpy(), eps=1e-5)
    fy, fr = rt.add_rms_norm(x, residual, shape[-1], w, 1e-5)
    y, r = rt.add_rms_norm(x, residual, shape[-1], w, 1e-5, inplace=True)
    assert y is x and r is residual
    assert torch.equal(x, fy) and torch.equal(residual, fr)
    assert torch.equal(x, _from_numpy(ey, dtype)) and torch.equal(residual, _from_numpy(er, dtype))


def _copy(t):
    """A copy of a tensor's data as NumPy data of its dtype (ml_dtypes for bfloat16)."""
    if t.dtype == torch.bfloat16:
        return t.view(torch.uint16).numpy().view(pytest.importorskip("ml_dtypes").bfloat16).copy()
    return t.numpy().copy()


def _from_numpy(a, dtype):
    return torch.from_numpy(a.view(np.uint16) if dtype == torch.bfloat16 else a).view(dtype)


def test_add_with_options_and_mixed_dtypes_equals_two_steps():
    gen = torch.Generator().manual_seed(5)
    x = torch.randn(6, 10, generator=gen).bfloat16()
    residual = torch.randn(6, 10, generator=gen)  # a float32 residual stream
    w, b = torch.rand(10, generator=gen), torch.randn(10, generator=gen)
    y, r = rt.add_rms_norm(x, residual, 10, w, bias=b, eps_mode="add", weight_offset=0.5, cast_mode="llama")
    assert y.dtype == torch.bfloat16 and r.dtype == torch.float32
    assert torch.equal(r, x.float() + residual)
    expected = rt.rms_norm(r, 10, w, bias=b, eps_mode="add", weight_offset=0.5, cast_mode="llama").bfloat16()
    torch.testing.assert_close(y, expected, rtol=8e-3, atol=8e-3)


def test_add_in_place_under_autograd_copies_into_the_inputs():
    x = torch.randn(2, 8, requires_grad=True)
    w = torch.rand(8, requires_grad=True)
    h, residual = x * 2, torch.randn(2, 8)
    expected = rt.add_rms_norm(h.detach(), residual.clone(), 8, w.detach())
    y, r = rt.add_rms_norm(h, residual, 8, w, inplace=True)
    assert y is h and r is residual
    assert torch.equal(y.detach(), expected[0]) and torch.equal(r.detach(), expected[1])
    (y.sum() + r.sum()).backward()
    assert x.grad is not None and w.grad is not None
    with pytest.raises(RuntimeError, match="leaf Variable"):
        rt.add_rms_norm(x, torch.randn(2, 8), 8, inplace=True)


def test_bfloat16_needs_no_ml_dtypes(monkeypatch):
    monkeypatch.setitem(sys.modules, "ml_dtypes", None)  # import ml_dtypes now raises ImportError
    gen = torch.Generator().manual_seed(6)
    x = torch.randn(300, 128, generator=gen).bfloat16().requires_grad_()  # larger than the short path
    w = torch.rand(128, generator=gen).bfloat16().requires_grad_()
    y = rt.rms_norm(x, 128, w, bias=torch.zeros(128))
    torch.testing.assert_close(y, F.rms_norm(x, (128,), w, 1e-6), **TOL[torch.bfloat16])
    y.sum().backward()
    assert x.grad.dtype == w.grad.dtype == torch.bfloat16
    y, r = rt.add_rms_norm(x.detach(), x.detach().clone(), 128, w, eps_mode="add", inplace=True)
    assert r.dtype == torch.bfloat16


@pytest.mark.filterwarnings("ignore:Mismatch dtype between input and weight:UserWarning")
def test_non_contiguous_and_mixed_dtypes():
    x = torch.randn(8, 16)[::2, ::2]
    w = torch.rand(8, dtype=torch.float64)
    y = rt.rms_norm(x, 8, w)
    assert y.dtype == torch.float32 and y.is_contiguous()  # x's dtype, as torch does
    torch.testing.assert_close(y, F.rms_norm(x, (8,), w, eps=1e-6))
    xt = torch.randn(16, 8).t()  # a strided normalized axis: another kernel, the last bits may differ
    yt = rt.rms_norm(xt, 16)
    assert yt.is_contiguous()
    torch.testing.assert_close(yt, rt.rms_norm(xt.contiguous(), 16), rtol=2e-7, atol=2e-7)


def test_eps_none_is_machine_epsilon():
    x = torch.randn(2, 5) * 1e-4
    torch.testing.assert_close(rt.rms_norm(x, 5, eps=None), F.rms_norm(x, (5,)), rtol=2e-6, atol=0)


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="normalized_shape"):
        rt.rms_norm(torch.ones(2, 4), (5,))
    with pytest.raises(ValueError, match="weight"):
        rt.rms_norm(torch.ones(2, 4), (4,), torch.ones(3))
    with pytest.raises(ValueError, match="bias"):
        rt.rms_norm(torch.ones(2, 4), (4,), bias=torch.ones(3))
    with pytest.raises(ValueError, match="eps_mode"):
        rt.rms_norm(torch.ones(2, 4), 4, eps_mode="max")
    with pytest.raises(ValueError, match="cast_mode"):
        rt.RMSNorm(4, cast_mode="gemma")
    with pytest.raises(ValueError, match="normalized_shape"):
        rt.RMSNorm(4)(torch.ones(2, 5))
    x, residual = torch.ones(2, 4), torch.ones(2, 4)
    with pytest.raises(ValueError, match="differ"):
        rt.add_rms_norm(x, torch.ones(4), 4, inplace=True)
    with pytest.raises(ValueError, match="overlap"):
        rt.add_rms_norm(x, x[:, :], 4, inplace=True)
    for eps in (-1.0, float("nan"), float("inf"), "tiny"):  # the short paths trust eps: checked before them
        with pytest.raises(ValueError, match="eps"):
            rt.rms_norm(x, 4, eps=eps)
        with pytest.raises(ValueError, match="eps"):
            rt.add_rms_norm(x, residual, 4, torch.ones(4, dtype=torch.bfloat16), eps=eps, inplace=True)
        with pytest.raises(ValueError, match="eps"):
            rt.RMSNorm(4, eps=eps)(x)
    assert torch.equal(x, torch.ones(2, 4)) and torch.equal(residual, torch.ones(2, 4))


def test_module_is_a_drop_in():
    ref = torch.nn.RMSNorm((4, 6), eps=1e-5)
    with torch.no_grad():
        ref.weight.uniform_(0.5, 1.5)
    ours = rt.RMSNorm((4, 6), eps=1e-5)
    ours.load_state_dict(ref.state_dict())
    x = torch.randn(3, 4, 6)
    torch.testing.assert_close(ours(x), ref(x), rtol=2e-6, atol=2e-6)
    ours(x).sum().backward()
    ref(x).sum().backward()
    torch.testing.assert_close(ours.weight.grad, ref.weight.grad, rtol=1e-5, atol=1e-5)
    assert rt.RMSNorm(3, elementwise_affine=False).weight is None
    assert list(dict(rt.RMSNorm(3).named_parameters())) == ["weight"]


def test_module_options_and_weight_updates():
    norm = rt.RMSNorm(8, 1e-6, weight_offset=1.0, dtype=torch.bfloat16)
    assert torch.equal(norm.weight, torch.zeros(8, dtype=torch.bfloat16))  # scale 1 + 0
    x = torch.randn(2, 8).bfloat16()
    with torch.no_grad():
        assert torch.equal(norm(x), rt.rms_norm(x, 8))
        norm.weight.fill_(1.0)  # the kernel weight kept for the short path follows
        assert torch.equal(norm(x), rt.rms_norm(x, 8, torch.full((8,), 2.0)))
    assert "weight_offset=1.0" in repr(norm)
    with torch.inference_mode():  # an inference tensor weight has no version counter
        made_here = rt.RMSNorm(8, 1e-6, weight_offset=1.0, dtype=torch.bfloat16)
        assert torch.equal(made_here(x), rt.rms_norm(x, 8))
    free = rt.RMSNorm(8, 1e-6, elementwise_affine=False, weight_offset=1.0)
    with torch.no_grad():
        assert torch.equal(free(x.float()), 2 * rt.rms_norm(x.float(), 8))


def test_inside_a_model_in_eval_and_train(rng):
    model = torch.nn.Sequential(torch.nn.Linear(8, 8), rt.RMSNorm(8), torch.nn.Linear(8, 2))
    x = torch.from_numpy(rng.standard_normal((5, 8)).astype(np.float32))
    loss = model(x).square().mean()
    loss.backward()
    assert all(p.grad is not None for p in model.parameters())
    with torch.inference_mode():
        assert model(x).shape == (5, 2)
