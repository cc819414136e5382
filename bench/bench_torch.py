"""rmsnorm_cpu.torch against torch's own calls, and a tiny Hugging Face Llama
patched by replace_rms_norms against the same model unpatched.

    python bench/bench_torch.py [--min-time 0.3] [--threads 2] [--json rows.json]

Decode-shape calls (1, 1, 4096), one torch thread, float32 and bfloat16: our
function against F.rms_norm (no grad, and with a weight that requires grad),
our module against torch.nn.RMSNorm, our Llama-mode module against Hugging
Face LlamaRMSNorm, the in-place fused add against residual.add_(x) followed by
F.rms_norm.  Then a random-weight LlamaForCausalLM built from a config (hidden
1024, 8 layers, bfloat16, nothing downloaded): ms per decoded token (one new
token on a 32-token cache) and one prefill of (4, 512) tokens, unpatched and
patched, on --threads threads.  Ratios are "their time / our time", measured
in the same run; run it alone on a quiet machine.
"""

import argparse
import json
import time

import numpy as np
import torch

from rmsnorm_cpu import _bench
from rmsnorm_cpu import torch as rt

DECODE = (1, 1, 4096)


def llama_module_row(dtype, min_time):
    """Our replacement of a Hugging Face LlamaRMSNorm against the original."""
    from transformers.models.llama.modeling_llama import LlamaRMSNorm

    dt = getattr(torch, dtype)
    theirs = LlamaRMSNorm(DECODE[-1], 1e-6).to(dt)
    model = torch.nn.Sequential(theirs)
    x = torch.randn(DECODE).to(dt)
    with torch.no_grad():
        rt.replace_rms_norms(model)
        ours = model[0]
        return _bench.torch_row("hf llama", DECODE, dtype, 1, lambda: ours(x), lambda: theirs(x), min_time)


def tiny_llama():
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(vocab_size=32000, hidden_size=1024, intermediate_size=2816, num_hidden_layers=8,
                         num_attention_heads=16, num_key_value_heads=4, max_position_embeddings=1024,
                         bos_token_id=None, eos_token_id=None, pad_token_id=None)
    torch.manual_seed(0)
    return LlamaForCausalLM(config).to(torch.bfloat16).eval()


def model_steps(model):
    """(decode, prefill) closures on model, no grad: one new token on a 32-token
    cache (the same step every time), and a (4, 512) prefill."""
    from transformers import DynamicCache

    gen = torch.Generator().manual_seed(1)
    prompt = torch.randint(0, 32000, (1, 32), generator=gen)
    token = torch.randint(0, 32000, (1, 1), generator=gen)
    prefill = torch.randint(0, 32000, (4, 512), generator=gen)
    cache = DynamicCache(config=model.config)
    with torch.no_grad():
        model(prompt, cache=cache, use_cache=True)

    def decode():
        with torch.no_grad():
            model(token, cache=cache, use_cache=True)
        cache.crop(-1)

    def run_prefill():
        with torch.no_grad():
            model(prefill, use_cache=False)
    return decode, run_prefill


def alternating(before, after, min_time, rounds, max_repeats=200):
    """Median seconds of two calls timed in alternating rounds, so that a
    shared machine's drift hits both alike."""
    times = [], []
    for _ in range(rounds):
        for k, fn in enumerate((before, after)):
            times[k].append(_bench.median_time(fn, min_time, max_repeats))
    return float(np.median(times[0])), float(np.median(times[1]))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--min-time", type=float, default=0.3, help="seconds per measurement")
    parser.add_argument("--threads", type=int, default=2, help="threads for the tiny Llama")
    parser.add_argument("--json", help="also write the rows to this file")
    args = parser.parse_args()
    print(_bench.machine_line(), f"torch {torch.__version__}")
    rows = []
    for dtype in ("float32", "bfloat16"):
        rows += _bench.bench_torch(DECODE, dtype, 1, args.min_time,
                                   cases=("torch fn", "torch module", "torch add_", "torch grad"))
        with _bench._threads(1):
            rows.append(llama_module_row(dtype, args.min_time))
    print(_bench.format_table(rows))
    unpatched, patched = tiny_llama(), tiny_llama()  # the same weights
    names = rt.replace_rms_norms(patched)
    (decode_before, prefill_before), (decode_after, prefill_after) = model_steps(unpatched), model_steps(patched)
    with _bench._threads(args.threads):
        start = time.perf_counter()
        decode = alternating(decode_before, decode_after, args.min_time, rounds=5)
        prefill = alternating(prefill_before, prefill_after, 0.0, rounds=2, max_repeats=1)
    before, after = (decode[0] * 1e3, prefill[0] * 1e3), (decode[1] * 1e3, prefill[1] * 1e3)
    print(f"tiny Llama (bfloat16, hidden 1024, 8 layers, {len(names)} norms replaced, {args.threads} threads, "
          f"timed alternately): decode {before[0]:.2f} -> {after[0]:.2f} ms/token ({before[0] / after[0]:.2f}x), "
          f"prefill (4, 512) {before[1]:.0f} -> {after[1]:.0f} ms ({before[1] / after[1]:.2f}x) "
          f"[{time.perf_counter() - start:.0f} s]")
    rows.append({"case": "tiny llama", "threads": args.threads, "decode_ms": after[0], "decode_ms_unpatched": before[0],
                 "prefill_ms": after[1], "prefill_ms_unpatched": before[1]})
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
