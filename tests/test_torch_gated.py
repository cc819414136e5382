"""rmsnorm_cpu.torch.rms_norm_gated and rms_norm_quant: numerics against float64
torch twins, gradients, errors, and replace_rms_norms on the gated Hugging Face
classes themselves (random weights, nothing downloaded)."""

import importlib
import inspect

import pytest

torch = pytest.importorskip("torch", reason="torch is not installed")
rt = pytest.importorskip("rmsnorm_cpu.torch")

DTYPES = [torch.float32, torch.bfloat16, torch.float16, torch.float64]


def _randn(*shape, dtype=torch.float32, seed=0, scale=1.0):
    return (torch.randn(shape, generator=torch.Generator().manual_seed(seed)) * scale).to(dtype)


def _ulp(dtype):
    return torch.finfo(dtype).eps if dtype != torch.float32 else 4 * torch.finfo(dtype).eps


def _act(g, activation):
    return g * torch.sigmoid(g) if activation == "silu" else torch.sigmoid(g)


def _gated_twin(x, gate, weight, eps, groups, norm_before_gate, activation):
    """The gated norm in float64."""
    v, g = x.double(), gate.double()
    u = v if norm_before_gate else v * _act(g, activation)
    ug = u.reshape(u.shape[:-1] + (groups, -1))
    y = (ug * torch.rsqrt(ug.square().mean(-1, keepdim=True) + eps)).reshape(u.shape)
    y = y if weight is None else y * weight.double()
    return y * _act(g, activation) if norm_before_gate else y


def _assert_rounded_from(got, exact, dtype):
    """got is exact rounded to dtype, within its unit of precision (and the float32 math's)."""
    assert got.dtype == dtype
    torch.testing.assert_close(got.double(), exact, rtol=_ulp(dtype), atol=_ulp(dtype) * exact.abs().max().item())


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("norm_before_gate", [True, False])
@pytest.mark.parametrize("activation", ["silu", "sigmoid"])
@pytest.mark.parametrize("group_size", [None, 8])
def test_gated_matches_its_float64_twin(dtype, norm_before_gate, activation, group_size):
    x, gate = _randn(3, 5, 24, dtype=dtype), _randn(3, 5, 24, dtype=dtype, seed=1, scale=2.0)
    weight = _randn(24, dtype=dtype, seed=2)
    got = rt.rms_norm_gated(x, gate, weight, 1e-5, group_size=group_size, norm_before_gate=norm_before_gate,
                            activation=activation)
    exact = _gated_twin(x, gate, weight, 1e-5, 24 // (group_size or 24), norm_before_gate, activation)
    _assert_rounded_from(got, exact, dtype)
    assert got.is_contiguous() and got.shape == x.shape


def test_strided_inputs_and_no_weight():
    x = _randn(24, 6).t()  # the normalized axis strided
    gate = _randn(6, 24, seed=1)
    got = rt.rms_norm_gated(x, gate, None, 1e-6, norm_before_gate=False)
    _assert_rounded_from(got, _gated_twin(x, gate, None, 1e-6, 1, False, "silu"), torch.float32)


@pytest.mark.parametrize("x_dtype, gate_dtype", [(torch.bfloat16, torch.float32), (torch.float32, torch.float64),
                                                 (torch.float16, torch.bfloat16)])
def test_a_gate_of_another_dtype_runs_in_the_wider_and_keeps_xs_dtype(x_dtype, gate_dtype):
    x, gate, weight = _randn(4, 16, dtype=x_dtype), _randn(4, 16, dtype=gate_dtype, seed=1), _randn(16, seed=2)
    got = rt.rms_norm_gated(x, gate, weight)
    common = torch.promote_types(x_dtype, gate_dtype)
    wide = rt.rms_norm_gated(x.to(common), gate.to(common), weight)
    assert got.dtype == x_dtype
    assert torch.equal(got, wide.to(x_dtype))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("cast_mode", ["fused", "llama"])
def test_no_gate_is_the_plain_norm(dtype, cast_mode):
    x, weight = _randn(3, 16, dtype=dtype), _randn(16, dtype=dtype, seed=2)
    got = rt.rms_norm_gated(x, None, weight, 1e-5, cast_mode=cast_mode)
    assert torch.equal(got, rt.rms_norm(x, 16, weight, 1e-5, cast_mode=cast_mode))
    grouped = rt.rms_norm_gated(x, None, weight, 1e-5, group_size=4, cast_mode=cast_mode)
    split = rt.rms_norm(x.reshape(3, 4, 4), 4, None, 1e-5, cast_mode=cast_mode)
    _assert_rounded_from(grouped, split.double().reshape(3, 16) * weight.double(), dtype)


@pytest.mark.parametrize("norm_before_gate", [True, False])
@pytest.mark.parametrize("activation", ["silu", "sigmoid"])
@pytest.mark.parametrize("group_size", [None, 3])
def test_gradients_are_exact(norm_before_gate, activation, group_size):
    x, gate = (_randn(4, 6, dtype=torch.float64, seed=s).requires_grad_() for s in range(2))
    weight = _randn(6, dtype=torch.float64, seed=2).requires_grad_()
    torch.autograd.gradcheck(lambda a, g, w: rt.rms_norm_gated(a, g, w, 1e-5, group_size=group_size,
                                                               norm_before_gate=norm_before_gate,
                                                               activation=activation), (x, gate, weight))
    torch.autograd.gradcheck(lambda a, w: rt.rms_norm_gated(a, None, w, 1e-5, group_size=group_size), (x, weight))


def test_gradients_keep_each_inputs_dtype():
    x = _randn(4, 16, dtype=torch.bfloat16).requires_grad_()
    gate = _randn(4, 16, seed=1).requires_grad_()
    weight = _randn(16, dtype=torch.bfloat16, seed=2).requires_grad_()
    rt.rms_norm_gated(x, gate, weight).sum().backward()
    assert (x.grad.dtype, gate.grad.dtype, weight.grad.dtype) == (torch.bfloat16, torch.float32, torch.bfloat16)
    x64, gate64, weight64 = (t.detach().double().requires_grad_() for t in (x, gate, weight))
    rt.rms_norm_gated(x64, gate64, weight64).sum().backward()
    for got, exact in [(x.grad, x64.grad), (gate.grad, gate64.grad), (weight.grad, weight64.grad)]:
        torch.testing.assert_close(got.double(), exact, rtol=2 ** -6, atol=2 ** -6 * exact.abs().max().item())


def test_the_module_is_the_function_with_a_learnable_weight():
    norm = rt.RMSNormGated(16, 1e-5, group_size=4, norm_before_gate=False, activation="sigmoid", dtype=torch.float64)
    assert torch.equal(norm.weight, torch.ones(16, dtype=torch.float64))
    with torch.no_grad():
        norm.weight.uniform_(0.5, 1.5, generator=torch.Generator().manual_seed(3))
    x, gate = _randn(3, 16, dtype=torch.float64), _randn(3, 16, dtype=torch.float64, seed=1)
    y = norm(x, gate)
    assert torch.equal(y, rt.rms_norm_gated(x, gate, norm.weight.detach(), 1e-5, group_size=4, norm_before_gate=False,
                                            activation="sigmoid"))
    y.sum().backward()
    assert norm.weight.grad.shape == (16,)
    assert "group_size=4" in repr(norm) and "activation='sigmoid'" in repr(norm)


@pytest.mark.parametrize("call, match", [
    (lambda x: rt.rms_norm_gated(x, x[:, :4]), "gate"),
    (lambda x: rt.rms_norm_gated(x, x, torch.ones(4)), "weight"),
    (lambda x: rt.rms_norm_gated(x, x, group_size=5), "group_size"),
    (lambda x: rt.rms_norm_gated(x, x, group_size=0), "group_size"),
    (lambda x: rt.rms_norm_gated(x, x, activation="gelu"), "activation"),
    (lambda x: rt.rms_norm_gated(x, x, cast_mode="half"), "cast_mode"),
    (lambda x: rt.rms_norm_gated(x, x, eps=-1.0), "eps"),
    (lambda x: rt.RMSNormGated(8, activation="relu"), "activation"),
    (lambda x: rt.rms_norm_quant(x, torch.ones(4)), "weight"),
    (lambda x: rt.rms_norm_quant(x, residual=x[:1]), "residual"),
    (lambda x: rt.rms_norm_quant(x, quant_dtype=torch.float16), "quant_dtype"),
    (lambda x: rt.rms_norm_quant(x, scale_ub=0.0), "scale_ub"),
    (lambda x: rt.rms_norm_quant(x, scale_ub=float("inf")), "scale_ub"),
    (lambda x: rt.rms_norm_quant(x, scale_ub=True), "scale_ub"),
    (lambda x: rt.rms_norm_quant(x, group_size=3), "group_size"),
    (lambda x: rt.rms_norm_quant(x, eps=float("nan")), "eps"),
    (lambda x: rt.rms_norm_quant(x, inplace=True), "residual"),
])
def test_bad_arguments_raise_value_errors_naming_them(call, match):
    with pytest.raises(ValueError, match=match):
        call(_randn(2, 8))


# ---- quantized output ----------------------------------------------------------------

QMAX = {torch.int8: 127.0, torch.float8_e4m3fn: 448.0}


def _quant_twin(y, groups, quant_dtype, scale_ub=None):
    """(q as float64, scale) of float32 y, per group, as the SPEC writes it."""
    qmax = QMAX[quant_dtype]
    yg = y.reshape(y.shape[:-1] + (groups, -1))
    amax = yg.abs().amax(-1)
    if scale_ub is not None:
        amax = amax.clamp(max=scale_ub)
    scale = torch.maximum(amax / qmax, torch.tensor(1 / (qmax * 512), dtype=torch.float32))
    q = (yg / scale[..., None]).clamp(-qmax, qmax)
    q = q.round() if quant_dtype == torch.int8 else q.to(quant_dtype).float()
    return q.reshape(y.shape).double(), scale


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("quant_dtype", [torch.int8, torch.float8_e4m3fn])
@pytest.mark.parametrize("group_size", [None, 6])
def test_quant_matches_its_twin(dtype, quant_dtype, group_size):
    pytest.importorskip("ml_dtypes") if quant_dtype != torch.int8 else None
    x, weight = _randn(5, 18, dtype=dtype), _randn(18, seed=2)
    x[1, 3] = 40  # an outlier that sets its row's scale
    x[2] = 0  # an all-zero row: the smallest scale, q = 0
    q, scale = rt.rms_norm_quant(x, weight, 1e-5, quant_dtype=quant_dtype, group_size=group_size)
    groups = 18 // (group_size or 18)
    xg = x.double().reshape(5, groups, -1)
    y = ((xg * torch.rsqrt(xg.square().mean(-1, keepdim=True) + 1e-5)).reshape(5, 18) * weight).float()
    expected_q, expected_scale = _quant_twin(y, groups, quant_dtype)
    assert q.dtype == quant_dtype and scale.dtype == torch.float32 and scale.shape == (5, groups)
    torch.testing.assert_close(scale, expected_scale, rtol=2 ** -18, atol=0)
    # one step of the format: 1 for int8, 3 mantissa bits (subnormals 2**-9 apart) for float8
    step = 1.0 if quant_dtype == torch.int8 else (2 ** -3 * expected_q.abs()).clamp(min=2 ** -9)
    assert ((q.double() - expected_q).abs() <= step).all()
    assert (q[2].double() == 0).all() and (scale[2] == 1 / (QMAX[quant_dtype] * 512)).all()


def test_scale_ub_bounds_the_scale_and_saturates():
    x = _randn(4, 32)
    q, scale = rt.rms_norm_quant(x, None, 1e-6, scale_ub=0.5)
    assert torch.equal(scale, torch.full((4, 1), 0.5 / 127, dtype=torch.float32))
    expected_q, _ = _quant_twin(rt.rms_norm(x, 32, eps=1e-6), 1, torch.int8, 0.5)
    assert (q.double() - expected_q).abs().max() <= 1 and q.abs().max() == 127


@pytest.mark.parametrize("x_dtype, residual_dtype", [(torch.bfloat16, torch.bfloat16),
                                                     (torch.float16, torch.float32)])
def test_the_residual_is_added_as_add_rms_norm_adds_it(x_dtype, residual_dtype):
    x, residual, weight = _randn(3, 16, dtype=x_dtype), _randn(3, 16, dtype=residual_dtype, seed=1), _randn(16)
    before = residual.clone()
    q, scale, new_residual = rt.rms_norm_quant(x, weight, residual=residual)
    _, expected_residual = rt.add_rms_norm(x, residual, 16, weight)
    assert torch.equal(new_residual, expected_residual) and torch.equal(residual, before)
    plain_q, plain_scale = rt.rms_norm_quant(expected_residual, weight)
    assert torch.equal(scale, plain_scale) and (q.int() - plain_q.int()).abs().max() <= 1
    x_before = x.clone()
    in_place = rt.rms_norm_quant(x, weight, residual=residual, inplace=True)
    assert in_place[2] is residual and torch.equal(residual, expected_residual) and torch.equal(x, x_before)
    assert torch.equal(in_place[0], q) and torch.equal(in_place[1], scale)


# ---- the gated Hugging Face classes ----------------------------------------------------

transformers = pytest.importorskip("transformers", reason="transformers is not installed (the test extra)")


def _class(qualified):
    module, name = qualified.rsplit(".", 1)
    return getattr(importlib.import_module(module), name)


def _gated_module(qualified, dtype, **options):
    """The class built for a 48-wide norm in 3 groups where it has groups,
    its weight away from ones."""
    cls = _class(qualified)
    parameters = inspect.signature(cls).parameters
    if "group_size" in parameters:
        module = cls(48, 16, eps=1e-5)
    elif "n_groups" in parameters:
        module = cls(48, eps=1e-5, n_groups=3, **options)
    else:
        module = cls(48, eps=1e-5)
    with torch.no_grad():
        module.weight.copy_(torch.rand(48, generator=torch.Generator().manual_seed(0)) + 0.5)
    return module.to(dtype)


class Holder(torch.nn.Module):
    def __init__(self, norm):
        super().__init__()
        self.norm = norm

    def forward(self, x, gate):
        return self.norm(x, gate)


GATED_CASES = [(q, {}) for q in sorted(rt.RECOGNIZED_GATED) if "FalconH1" not in q] + [
    (q, {"norm_before_gate": b}) for q in rt.RECOGNIZED_GATED if "FalconH1" in q for b in (True, False)]


@pytest.mark.parametrize("qualified, options", GATED_CASES, ids=lambda c: c.rsplit(".", 1)[1] if type(c) is str
                         else "-".join(f"{k}={v}" for k, v in c.items()))
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_each_gated_class_gives_the_originals_results(qualified, options, dtype):
    original = _gated_module(qualified, dtype, **options)
    holder = Holder(original)
    x, gate = _randn(5, 7, 48, dtype=dtype, seed=1), _randn(5, 7, 48, dtype=dtype, seed=2, scale=2.0)
    with torch.no_grad():
        expected = holder(x, gate)
        assert rt.replace_rms_norms(holder, strict=True) == ["norm"]
        got = holder(x, gate)
    assert isinstance(holder.norm, rt.RMSNormGated) and holder.norm.weight is original.weight
    assert got.dtype == expected.dtype
    if dtype == torch.float32:  # another exp and another order of float32 products
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5 * expected.abs().max().item())
    else:  # the same roundings: a rare last bit moves where float32 results straddle a rounding boundary
        torch.testing.assert_close(got, expected, rtol=2 ** -7, atol=2 ** -7 * expected.abs().max().item())
        assert (got != expected).float().mean() < 0.02
    if "gate" in inspect.signature(original.forward).parameters and \
            inspect.signature(original.forward).parameters["gate"].default is None and "Mamba" in qualified:
        with torch.no_grad():
            torch.testing.assert_close(holder.norm(x), original(x), rtol=2 ** -7, atol=1e-5)


def test_gated_classes_without_a_gate_behave_as_their_plain_norm():
    for qualified in ("transformers.models.mamba2.modeling_mamba2.MambaRMSNormGated",
                      "transformers.models.falcon_h1.modeling_falcon_h1.FalconH1RMSNormGated"):
        original = _gated_module(qualified, torch.float32)
        holder = Holder(original)
        x = _randn(5, 7, 48, seed=1)
        with torch.no_grad():
            expected = original(x)
            rt.replace_rms_norms(holder, strict=True)
            torch.testing.assert_close(holder.norm(x), expected, rtol=1e-5, atol=1e-5)


def test_tiny_mamba2_gives_the_same_logits():
    config = transformers.Mamba2Config(vocab_size=64, hidden_size=32, state_size=8, num_hidden_layers=2, expand=2,
                                       head_dim=8, num_heads=8, n_groups=2, chunk_size=8, conv_kernel=4,
                                       bos_token_id=None, eos_token_id=None, pad_token_id=None)
    torch.manual_seed(0)
    model = transformers.Mamba2ForCausalLM(config).eval()
    with torch.no_grad():
        for m in model.modules():
            if "Norm" in type(m).__name__:
                m.weight.copy_(torch.rand(m.weight.shape) + 0.5)
    ids = torch.randint(0, 64, (2, 12), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        before = model(ids).logits
        replaced = rt.replace_rms_norms(model, strict=True)
        after = model(ids).logits
    assert "backbone.layers.0.mixer.norm" in replaced
    assert isinstance(dict(model.named_modules())["backbone.layers.1.mixer.norm"], rt.RMSNormGated)
    torch.testing.assert_close(after, before, rtol=0, atol=1e-4 * before.abs().max().item())


def test_tiny_qwen3_next_gives_the_same_logits():
    config = transformers.Qwen3NextConfig(
        vocab_size=128, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, head_dim=16, linear_num_value_heads=4, linear_num_key_heads=2, linear_key_head_dim=16,
        linear_value_head_dim=16, linear_conv_kernel_dim=4, num_experts=4, num_experts_per_tok=2,
        moe_intermediate_size=32, shared_expert_intermediate_size=32,
        layer_types=["linear_attention", "full_attention"],
        max_position_embeddings=64, bos_token_id=None, eos_token_id=None, pad_token_id=None)
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(config, attn_implementation="eager").to(torch.bfloat16)
    with torch.no_grad():
        for m in model.eval().modules():
            if "Norm" in type(m).__name__ and getattr(m, "weight", None) is not None:
                m.weight.copy_(torch.rand(m.weight.shape) + 0.5)
    ids = torch.randint(0, 128, (2, 12), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        before = model(ids).logits
        replaced = rt.replace_rms_norms(model, strict=True)
        after = model(ids).logits
    assert isinstance(dict(model.named_modules())["model.layers.0.linear_attn.norm"], rt.RMSNormGated)
    assert "model.layers.1.self_attn.q_norm" in replaced
    torch.testing.assert_close(after, before, rtol=0, atol=2e-2 * before.abs().max().item())
