"""rmsnorm_cpu.torch: autograd Function and nn.Module drop-in, against torch itself."""

import doctest

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="torch is not installed")
rt = pytest.importorskip("rmsnorm_cpu.torch")
F = torch.nn.functional

TOL = {torch.float32: dict(rtol=2e-6, atol=2e-6), torch.float16: dict(rtol=1e-3, atol=1e-3),
       torch.bfloat16: dict(rtol=8e-3, atol=8e-3), torch.float64: dict(rtol=1e-13, atol=1e-13)}


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


def test_gradcheck_float64():
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(3, 7, dtype=torch.float64, generator=gen, requires_grad=True)
    w = torch.rand(7, dtype=torch.float64, generator=gen).add_(0.5).requires_grad_()
    assert torch.autograd.gradcheck(lambda a, b: rt.rms_norm(a, (7,), b, eps=1e-5), (x, w))
    assert torch.autograd.gradcheck(lambda a: rt.rms_norm(a, (3, 7)), (x,))


@pytest.mark.filterwarnings("ignore:Mismatch dtype between input and weight:UserWarning")
def test_non_contiguous_and_mixed_dtypes():
    x = torch.randn(8, 16)[::2, ::2]
    w = torch.rand(8, dtype=torch.float64)
    y = rt.rms_norm(x, 8, w)
    assert y.dtype == torch.float32  # x's dtype, as torch does
    torch.testing.assert_close(y, F.rms_norm(x, (8,), w, eps=1e-6))


def test_eps_none_is_machine_epsilon():
    x = torch.randn(2, 5) * 1e-4
    torch.testing.assert_close(rt.rms_norm(x, 5, eps=None), F.rms_norm(x, (5,)), rtol=2e-6, atol=0)


def test_bad_shapes_raise():
    with pytest.raises(ValueError, match="normalized_shape"):
        rt.rms_norm(torch.ones(2, 4), (5,))
    with pytest.raises(ValueError, match="weight"):
        rt.rms_norm(torch.ones(2, 4), (4,), torch.ones(3))


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


def test_inside_a_model_in_eval_and_train(rng):
    model = torch.nn.Sequential(torch.nn.Linear(8, 8), rt.RMSNorm(8), torch.nn.Linear(8, 2))
    x = torch.from_numpy(rng.standard_normal((5, 8)).astype(np.float32))
    loss = model(x).square().mean()
    loss.backward()
    assert all(p.grad is not None for p in model.parameters())
    with torch.inference_mode():
        assert model(x).shape == (5, 2)
