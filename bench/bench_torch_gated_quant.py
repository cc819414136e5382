"""rmsnorm_cpu.torch's gated and quantized RMSNorm against the torch composites
users run today on the CPU.

    python bench/bench_torch_gated_quant.py [--min-time 0.2] [--json rows.json]

One torch thread and one kernel thread, float32 and bfloat16, a prefill shape
(2048, 4096) and a decode shape (1, 4096), no autograd:

- gated: ``rms_norm_gated(x, z, w, group_size=...)`` against Mamba's
  ``rms_norm_ref`` (mamba_ssm/ops/triton/layernorm_gated.py, copied in bench_gated.py: the
  eager path vLLM and Mamba users run on the CPU), for the gate before the
  norm (Mamba2, 8 groups) and after it (Qwen3-Next's order);
- the replaced Hugging Face ``Qwen3NextRMSNormGated`` module against the
  original module (``forward(x, gate)``);
- quantized: ``rms_norm_quant(x, w)`` to int8 against ``F.rms_norm`` followed
  by per-token absmax int8 quantization in torch, and with the residual fused
  against ``residual + x`` then the same.

Ratios are "their time / our time" (above 1: ours is faster), measured in the
same run, each call the median of repeated calls; under two minutes.
"""

import argparse
import json

import torch

from bench_gated import mamba_rms_norm_ref  # bench/ is the script's directory
from rmsnorm_cpu import _bench
from rmsnorm_cpu import torch as rt

F = torch.nn.functional
SHAPES = [(2048, 4096), (1, 4096)]
DTYPES = ["float32", "bfloat16"]


def torch_quant(y):
    """Per-token dynamic int8 quantization as W8A8 CPU paths write it in torch."""
    y = y.float()
    scale = (y.abs().amax(dim=-1, keepdim=True) / 127.0).clamp(min=1 / (127.0 * 512))
    return torch.round(y / scale).clamp(-128, 127).to(torch.int8), scale


def cases(shape, dtype):
    """{case: (ours, theirs)}: calls doing the same work."""
    from transformers.models.qwen3_next.modeling_qwen3_next import Qwen3NextRMSNormGated

    gen = torch.Generator().manual_seed(0)
    dt = getattr(torch, dtype)
    n = shape[-1]
    x, z, residual = (torch.randn(shape, generator=gen).to(dt) for _ in range(3))
    w = (torch.rand(n, generator=gen) + 0.5).to(dt)
    theirs_module = Qwen3NextRMSNormGated(n, 1e-6).to(dt)
    holder = torch.nn.ModuleDict({"norm": Qwen3NextRMSNormGated(n, 1e-6).to(dt)})
    rt.replace_rms_norms(holder, strict=True)
    ours_module = holder["norm"]
    groups = n // 8
    return {
        "gated, gate before, 8 groups (Mamba2)": (
            lambda: rt.rms_norm_gated(x, z, w, group_size=groups, norm_before_gate=False),
            lambda: mamba_rms_norm_ref(torch, x, w, None, z, group_size=groups, norm_before_gate=False)),
        "gated, gate after": (lambda: rt.rms_norm_gated(x, z, w),
                              lambda: mamba_rms_norm_ref(torch, x, w, None, z, norm_before_gate=True)),
        "HF Qwen3NextRMSNormGated module": (lambda: ours_module(x, z), lambda: theirs_module(x, z)),
        "quant int8": (lambda: rt.rms_norm_quant(x, w), lambda: torch_quant(F.rms_norm(x, (n,), w, 1e-6))),
        "quant int8, residual fused": (
            lambda: rt.rms_norm_quant(x, w, residual=residual),
            lambda: (torch_quant(F.rms_norm(r := residual + x, (n,), w, 1e-6)), r)),
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--min-time", type=float, default=0.2, help="seconds per timed call (default 0.2)")
    parser.add_argument("--json", help="also write the rows to this file")
    args = parser.parse_args()
    rows = []
    print(f"{'case':40s} {'shape':>12s} {'dtype':>9s} {'ours us':>10s} {'theirs us':>10s} {'ratio':>7s}")
    with torch.no_grad(), _bench._threads(1):
        for shape in SHAPES:
            for dtype in DTYPES:
                for case, (ours, theirs) in cases(shape, dtype).items():
                    ours_us = _bench.median_time(ours, args.min_time) * 1e6
                    theirs_us = _bench.median_time(theirs, args.min_time) * 1e6
                    rows.append(dict(case=case, shape=list(shape), dtype=dtype, ours_us=ours_us,
                                     theirs_us=theirs_us, ratio=theirs_us / ours_us))
                    print(f"{case:40s} {str(shape):>12s} {dtype:>9s} {ours_us:10.1f} {theirs_us:10.1f} "
                          f"{theirs_us / ours_us:6.2f}x", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
