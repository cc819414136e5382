"""replace_rms_norms: every recognized class against the real class, and tiny
Hugging Face models built from configs (random weights, nothing downloaded)."""

import importlib
import warnings

import pytest

torch = pytest.importorskip("torch", reason="torch is not installed")
rt = pytest.importorskip("rmsnorm_cpu.torch")
transformers = pytest.importorskip("transformers", reason="transformers is not installed (the test extra)")


def _class(qualified):
    module, name = qualified.rsplit(".", 1)
    return getattr(importlib.import_module(module), name)


def _randomize_norms(model, seed=0):
    """Norm weights away from their init (ones, or Gemma's zeros), so that a
    wrong offset or a weight left out shows."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if "Norm" in type(m).__name__ and getattr(m, "weight", None) is not None:
                m.weight.copy_(torch.rand(m.weight.shape, generator=gen) + 0.5)


@pytest.mark.parametrize("qualified", sorted(rt.RECOGNIZED), ids=lambda q: q.rsplit(".", 1)[1])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_each_recognized_class_gives_the_originals_results(qualified, dtype):
    original = _class(qualified)(48, 1e-5).to(dtype)
    _randomize_norms(original)
    model = torch.nn.Sequential(original)
    x = torch.randn(5, 7, 48, generator=torch.Generator().manual_seed(1)).to(dtype)
    with torch.no_grad():
        expected = model(x)
        assert rt.replace_rms_norms(model) == ["0"]
        got = model(x)
    assert isinstance(model[0], rt.RMSNorm) and model[0].weight is original.weight
    assert got.dtype == expected.dtype
    if dtype == torch.float32:
        torch.testing.assert_close(got, expected, rtol=1e-6, atol=1e-6)
    else:  # the same roundings; a sum of squares in another order moves a rare last bit
        torch.testing.assert_close(got, expected, rtol=2 ** -7, atol=2 ** -7)
        assert (got != expected).float().mean() < 0.01


TINY = dict(vocab_size=128, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, head_dim=16, max_position_embeddings=64, bos_token_id=None, eos_token_id=None,
            pad_token_id=None)
MODELS = {
    "llama": (transformers.LlamaConfig, {}),
    "qwen3": (transformers.Qwen3Config, {}),
    "gemma2": (transformers.Gemma2Config, dict(query_pre_attn_scalar=16, sliding_window=32)),
    "olmo2": (transformers.Olmo2Config, {}),
}


def _tiny_model(name, dtype):
    config_class, extra = MODELS[name]
    config = config_class(**TINY, **extra)
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(config, attn_implementation="eager").to(dtype).eval()
    _randomize_norms(model)
    return model


@pytest.mark.parametrize("name", sorted(MODELS))
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_tiny_models_give_the_same_logits(name, dtype):
    model = _tiny_model(name, dtype)
    norms = {n: m.weight for n, m in model.named_modules() if "RMSNorm" in type(m).__name__}
    state = model.state_dict()
    ids = torch.randint(0, 128, (2, 12), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        before = model(ids).logits
        replaced = rt.replace_rms_norms(model)
        after = model(ids).logits
    assert sorted(replaced) == sorted(norms)
    if name == "qwen3":
        assert "model.layers.0.self_attn.q_norm" in replaced and "model.layers.1.self_attn.k_norm" in replaced
    modules = dict(model.named_modules())
    assert all(isinstance(modules[n], rt.RMSNorm) and modules[n].weight is w for n, w in norms.items())
    assert model.state_dict().keys() == state.keys()
    scale = before.abs().max()
    if dtype == torch.float32:
        torch.testing.assert_close(after, before, rtol=0, atol=1e-4 * scale)
    else:
        torch.testing.assert_close(after, before, rtol=0, atol=2e-2 * scale)


class MyRMSNorm(torch.nn.Module):
    def __init__(self, n):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.ones(n))

    def forward(self, x):
        return x * self.weight


def _lookalike():
    """A class named and placed like LlamaRMSNorm that computes Gemma's scale."""
    gemma = _class("transformers.models.gemma.modeling_gemma.GemmaRMSNorm")
    return type("LlamaRMSNorm", (gemma,), {"__module__": "transformers.models.llama.modeling_llama",
                                           "__qualname__": "LlamaRMSNorm", "variance_epsilon": 1e-6})


def test_unknown_or_misbehaving_classes_are_left_alone_with_one_warning():
    lookalike = _lookalike()(8)
    model = torch.nn.Sequential(torch.nn.RMSNorm(8), MyRMSNorm(8), lookalike, torch.nn.Linear(8, 8))
    with pytest.warns(UserWarning, match="left 2 RMSNorm-like") as record:
        assert rt.replace_rms_norms(model) == ["0"]
    assert len(record) == 1
    message = str(record[0].message)
    assert f"1 ({MyRMSNorm.__module__}.MyRMSNorm: not a recognized class)" in message
    assert "2 (transformers.models.llama.modeling_llama.LlamaRMSNorm: its results differ" in message
    assert model[1].__class__ is MyRMSNorm and model[2] is lookalike
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert rt.replace_rms_norms(model[3:]) == []  # nothing RMSNorm-like: no warning


def test_strict_raises_before_replacing_anything():
    model = torch.nn.Sequential(torch.nn.RMSNorm(8), MyRMSNorm(8))
    with pytest.raises(ValueError, match="MyRMSNorm"):
        rt.replace_rms_norms(model, strict=True)
    assert type(model[0]) is torch.nn.RMSNorm


def test_a_shared_module_is_replaced_everywhere_by_one_module():
    norm = torch.nn.RMSNorm(8, elementwise_affine=False)
    model = torch.nn.ModuleDict({"a": norm, "b": torch.nn.Sequential(norm)})
    assert rt.replace_rms_norms(model) == ["a", "b.0"]
    assert model["a"] is model["b"][0] and model["a"].weight is None
    x = torch.randn(3, 8)
    assert torch.equal(model["a"](x), rt.rms_norm(x, 8, eps=None))
