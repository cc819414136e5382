"""The registered ops: opcheck, torch.compile (aot_eager, inductor), torch.export
and torch.jit.trace, each against eager mode bitwise, forward and gradients."""

import pytest

torch = pytest.importorskip("torch", reason="torch is not installed")
rt = pytest.importorskip("rmsnorm_cpu.torch")
ops = torch.ops.rmsnorm_cpu

DTYPES = [torch.float32, torch.bfloat16, torch.float16]
# (inductor runs under tools/sanitize.sh too: its compiled C++ is not instrumented, ours is)
BACKENDS = ["aot_eager", pytest.param("inductor", marks=pytest.mark.filterwarnings(
    "ignore:`torch.jit.script_method` is deprecated:DeprecationWarning"))]  # torch's own code inside inductor


def _randn(*shape, dtype=torch.float32, seed=0, requires_grad=False):
    t = torch.randn(shape, generator=torch.Generator().manual_seed(seed)).to(dtype)
    return t.requires_grad_(requires_grad)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_opcheck_every_op(dtype):
    x, r = _randn(3, 8, dtype=dtype, requires_grad=True), _randn(3, 8, dtype=dtype, seed=1, requires_grad=True)
    w, b = _randn(8, seed=2, requires_grad=True), _randn(8, seed=3, requires_grad=True)
    for args in [(x, w, b, 1, 1e-5, "sqrt", 0.5, "fused"), (x, None, None, 1, 1e-5, "add", 0.0, "llama"),
                 (_randn(2, 3, 4, dtype=dtype), None, None, 2, 1e-5, "clamp", 0.0, "fused")]:
        torch.library.opcheck(ops.rms_norm.default, args)
    xd, wd, bd = x.detach(), w.detach(), b.detach()
    _, rstd = ops.rms_norm(xd, wd, bd, 1, 1e-5, "sqrt", 0.0, "fused")
    torch.library.opcheck(ops.rms_norm_backward.default, (_randn(3, 8, dtype=dtype, seed=4), xd, wd, bd, rstd, 1,
                                                          1e-5, "sqrt", 0.0))
    torch.library.opcheck(ops.rms_norm_backward.default, (_randn(3, 8, dtype=dtype, seed=4), xd, None, None, None, 1,
                                                          1e-5, "add", 1.0))
    torch.library.opcheck(ops.add_rms_norm.default, (x, r, w, b, 1, 1e-5, "sqrt", 1.0, "fused"))
    torch.library.opcheck(ops.add_rms_norm_.default, (xd.clone(), r.detach().clone(), wd, None, 1, 1e-5, "sqrt",
                                                      0.0, "llama"))


class Block(torch.nn.Module):
    """Every public entry point once: module (Gemma-style), functional add, in-place add, rms_norm with bias."""

    def __init__(self, n, dtype):
        super().__init__()
        self.norm = rt.RMSNorm(n, eps=1e-5, weight_offset=1.0, dtype=dtype)
        self.post = rt.RMSNorm(n, eps=1e-6, cast_mode="llama", dtype=dtype)
        self.bias = torch.nn.Parameter(torch.zeros(n, dtype=dtype))
        with torch.no_grad():
            for p in self.parameters():
                p.uniform_(0.5, 1.5, generator=torch.Generator().manual_seed(7))

    def forward(self, x, residual):
        h = self.norm(x) * 2
        y, r = rt.add_rms_norm(h, residual, h.shape[-1], self.post.weight, 1e-6)
        z = rt.rms_norm(y, (y.shape[-1],), None, eps=1e-5, bias=self.bias, eps_mode="add")
        z, r = rt.add_rms_norm(z * 1, r * 1, z.shape[-1], self.post.weight, inplace=True, cast_mode="llama")
        return self.post(z), r


def _forward_and_grads(model, x, residual):
    x, residual = x.clone().requires_grad_(), residual.clone().requires_grad_()
    outputs = model(x, residual)
    grads = torch.autograd.grad(outputs, [x, residual, *model.parameters()],
                                [torch.ones_like(o) for o in outputs])
    return [o.detach() for o in outputs], grads


@pytest.mark.parametrize("backend", BACKENDS)
def test_compile_equals_eager_bitwise(backend):
    # Inductor keeps float16/bfloat16 intermediates of torch's own elementwise
    # ops (gradient sums, the model's `* 2`) in float32 unless told to round
    # them as eager does; our ops are opaque to it.
    import torch._inductor.config

    for dtype in DTYPES:
        torch._dynamo.reset()
        model = Block(16, dtype)
        x, residual = _randn(4, 16, dtype=dtype, seed=1), _randn(4, 16, dtype=dtype, seed=2)
        compiled = torch.compile(model, backend=backend, fullgraph=True)
        with torch._inductor.config.patch(emulate_precision_casts=True):
            results = _forward_and_grads(compiled, x, residual)
        for got, expected in zip(results, _forward_and_grads(model, x, residual)):
            assert all(torch.equal(g, e) for g, e in zip(got, expected)), dtype


@pytest.mark.parametrize("backend", BACKENDS)
def test_compiled_in_place_add_writes_the_inputs(backend):
    torch._dynamo.reset()
    w = _randn(16, seed=3)

    def step(x, residual):
        return rt.add_rms_norm(x, residual, 16, w, 1e-6, inplace=True)

    x, residual = _randn(2, 16, dtype=torch.bfloat16, seed=4), _randn(2, 16, dtype=torch.bfloat16, seed=5)
    ex, er = x.clone(), residual.clone()
    with torch.no_grad():
        torch.compile(step, backend=backend, fullgraph=True)(x, residual)
        step(ex, er)
    assert torch.equal(x, ex) and torch.equal(residual, er)


def test_export_names_the_ops_and_equals_eager():
    model = Block(16, torch.float32)
    x, residual = _randn(4, 16, seed=1), _randn(4, 16, seed=2)
    exported = torch.export.export(model, (x, residual))
    targets = {str(n.target) for n in exported.graph.nodes if n.op == "call_function"}
    assert {"rmsnorm_cpu.rms_norm.default", "rmsnorm_cpu.add_rms_norm.default"} <= targets
    with torch.no_grad():
        assert all(torch.equal(g, e) for g, e in zip(exported.module()(x, residual), model(x, residual)))


@pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::torch.jit.TracerWarning")
def test_jit_trace_records_the_op():
    model = torch.nn.Sequential(torch.nn.Linear(8, 8), rt.RMSNorm(8, eps=1e-5))
    x = _randn(2, 8)
    with torch.no_grad():
        traced = torch.jit.trace(model, x)
        assert "rmsnorm_cpu::rms_norm" in str(traced.inlined_graph)
        assert torch.equal(traced(x), model(x))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_opcheck_the_gated_and_quantized_ops(dtype):
    x, gate = _randn(3, 8, dtype=dtype, requires_grad=True), _randn(3, 8, dtype=dtype, seed=1, requires_grad=True)
    w = _randn(8, seed=2, requires_grad=True)
    for args in [(x, gate, w, 1, 1e-5, True, "silu", "fused"), (x, gate, w, 2, 1e-5, False, "sigmoid", "llama"),
                 (x, None, w, 4, 1e-5, True, "silu", "llama"), (x, _randn(3, 8, seed=3), None, 1, 1e-5, False,
                                                                  "silu", "fused")]:
        torch.library.opcheck(ops.rms_norm_gated.default, args)
    xd, gd, wd = x.detach(), gate.detach(), w.detach()
    _, rstd = ops.rms_norm_gated(xd, gd, wd, 2, 1e-5, False, "silu", "fused")
    dy = _randn(3, 8, dtype=dtype, seed=4)
    torch.library.opcheck(ops.rms_norm_gated_backward.default, (dy, xd, gd, wd, rstd, 2, 1e-5, False, "silu"))
    torch.library.opcheck(ops.rms_norm_gated_backward.default, (dy, xd, None, None, None, 1, 1e-5, True, "silu"))
    for quant_dtype in (torch.int8, torch.float8_e4m3fn):
        torch.library.opcheck(ops.rms_norm_quant.default, (xd, wd, 2, 1e-5, quant_dtype, None))
        torch.library.opcheck(ops.add_rms_norm_quant.default, (xd, gd, None, 1, 1e-5, quant_dtype, 2.0))
        torch.library.opcheck(ops.add_rms_norm_quant_.default, (xd, gd.clone(), wd, 4, 1e-5, quant_dtype, None))


class GatedBlock(torch.nn.Module):
    """The gated norm (gate before and after, in groups) and the quantized outputs."""

    def __init__(self, n, dtype):
        super().__init__()
        self.after = rt.RMSNormGated(n, 1e-5, cast_mode="llama", dtype=dtype)
        self.weight = torch.nn.Parameter(_randn(n, dtype=dtype, seed=7))

    def forward(self, x, gate):
        h = self.after(x, gate)
        h = rt.rms_norm_gated(h, gate * 1, self.weight, group_size=4, norm_before_gate=False, activation="sigmoid")
        q, scale = rt.rms_norm_quant(h.detach(), self.weight.detach())
        q8, scale8, r = rt.rms_norm_quant(x.detach(), self.weight.detach(), residual=h.detach(),
                                          quant_dtype=torch.float8_e4m3fn, scale_ub=4.0)
        r = r * 1
        qr, scale_r, r = rt.rms_norm_quant(x.detach(), None, residual=r, inplace=True)
        return h, q, scale, q8.view(torch.uint8), scale8, qr, scale_r, r


@pytest.mark.parametrize("backend", BACKENDS)
def test_compiled_gated_and_quant_equal_eager_bitwise(backend):
    import torch._inductor.config

    for dtype in (torch.float32, torch.bfloat16):
        torch._dynamo.reset()
        model = GatedBlock(16, dtype)
        x, gate = _randn(4, 16, dtype=dtype, seed=1), _randn(4, 16, dtype=dtype, seed=2)

        def run(m):
            xg, gg = x.clone().requires_grad_(), gate.clone().requires_grad_()
            outputs = m(xg, gg)
            grads = torch.autograd.grad(outputs[0], [xg, gg, *model.parameters()], torch.ones_like(outputs[0]))
            return [o.detach() for o in outputs] + list(grads)

        with torch._inductor.config.patch(emulate_precision_casts=True):
            got = run(torch.compile(model, backend=backend, fullgraph=True))
        assert all(torch.equal(g, e) for g, e in zip(got, run(model))), dtype


def test_export_names_the_gated_and_quant_ops():
    model = GatedBlock(16, torch.float32)
    x, gate = _randn(4, 16, seed=1), _randn(4, 16, seed=2)
    exported = torch.export.export(model, (x, gate))
    targets = [str(n.target) for n in exported.graph.nodes if n.op == "call_function"]
    assert targets.count("rmsnorm_cpu.rms_norm_gated.default") == 2
    assert {"rmsnorm_cpu.rms_norm_quant.default", "rmsnorm_cpu.add_rms_norm_quant.default",
            "rmsnorm_cpu.add_rms_norm_quant_.default"} <= set(targets)
    with torch.no_grad():
        assert all(torch.equal(g, e) for g, e in zip(exported.module()(x, gate), model(x, gate)))
