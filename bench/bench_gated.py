"""The gated norm against its memory bounds and against Mamba's reference composite.

    python bench/bench_gated.py [--shape 2048 4096] [--dtype bfloat16] [--min-time 0.2]

In one run, single-threaded: rms_norm_gated with out= against np.add(x, gate,
out=y) on uint16 views of the same bytes (two reads and a write at memory
speed, the bound); without out= against np.add into a new array (which pays
the same first touch of fresh pages); Mamba's rms_norm_ref in torch eager
(when torch is installed); rms_norm_gated_backward, which returns a new dx and
dgate, against two np.copyto of x's bytes (two reads and two writes into warm
pages, the target's bound) and against np.bitwise_not of x and of the gate
into new arrays, both alive at once as dx and dgate are (the same with fresh
outputs, like for like); and the whole NumPy call of one decode
row (1, n).  Prints each time and the ratios the targets are stated in.
"""

import argparse

import numpy as np

import rmsnorm_cpu as rn
from rmsnorm_cpu import _bench, _spec


def mamba_rms_norm_ref(torch, x, weight, bias, z=None, eps=1e-6, group_size=None, norm_before_gate=True):
    """mamba_ssm's rms_norm_ref (ops/triton/layernorm_gated.py) with upcast=True, rearrange
    written as reshape: the composite users of RMSNormGated run on CPU."""
    silu = torch.nn.functional.silu
    dtype = x.dtype
    weight = weight.float()
    bias = bias.float() if bias is not None else None
    x = x.float()
    z = z.float() if z is not None else z
    if z is not None and not norm_before_gate:
        x = x * silu(z)
    if group_size is None:
        rstd = 1 / torch.sqrt((x.square()).mean(dim=-1, keepdim=True) + eps)
        out = (x * rstd * weight) + bias if bias is not None else (x * rstd * weight)
    else:
        x_group = x.reshape(*x.shape[:-1], -1, group_size)
        rstd = 1 / torch.sqrt((x_group.square()).mean(dim=-1, keepdim=True) + eps)
        out = (x_group * rstd).reshape(x.shape) * weight
        if bias is not None:
            out = out + bias
    if z is not None and norm_before_gate:
        out *= silu(z)
    return out.to(dtype)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", type=int, nargs=2, default=[2048, 4096])
    parser.add_argument("--dtype", default="bfloat16", choices=["float16", "bfloat16", "float32"])
    parser.add_argument("--min-time", type=float, default=0.2, help="seconds per measurement")
    args = parser.parse_args()
    shape, dt = tuple(args.shape), _spec.dtype_by_name(args.dtype)
    rng = np.random.default_rng(0)
    x, gate, dy = (rng.standard_normal(shape, dtype=np.float32).astype(dt) for _ in range(3))
    w = rng.uniform(0.5, 1.5, shape[-1]).astype(np.float32)
    y = np.empty_like(x)
    bits = np.dtype(f"u{dt.itemsize}")
    xb, gb, yb = x.view(bits), gate.view(bits), y.view(bits)

    def time(fn):
        return _bench.median_time(fn, args.min_time) * 1e3

    out_call = time(lambda: rn.rms_norm_gated(x, gate, w, out=y, n_threads=1))
    new_call = time(lambda: rn.rms_norm_gated(x, gate, w, n_threads=1))
    add_out = time(lambda: np.add(xb, gb, out=yb))
    add_new = time(lambda: np.add(xb, gb))
    backward = time(lambda: rn.rms_norm_gated_backward(dy, x, gate, w, n_threads=1))
    copies = 2 * time(lambda: np.copyto(yb, xb))
    fresh_copies = time(lambda: (np.bitwise_not(xb), np.bitwise_not(gb)))
    decode_x, decode_gate = x[:1].copy(), gate[:1].copy()
    decode = _bench.median_time(lambda: rn.rms_norm_gated(decode_x, decode_gate, w), args.min_time) * 1e6
    results = [
        ("rms_norm_gated, out=", out_call, add_out, "np.add(x, gate, out=y) (uint16 views)", "<= 1.3"),
        ("rms_norm_gated, new y", new_call, add_new, "np.add(x, gate) into a new array", ""),
        ("rms_norm_gated_backward", backward, copies, "2 x np.copyto (2 reads + 2 writes)", "<= 1.5"),
        ("rms_norm_gated_backward", backward, fresh_copies, "np.bitwise_not of x, gate (new arrays)", ""),
    ]
    try:
        import torch
    except ImportError:
        torch = None
    if torch is not None:
        torch.set_num_threads(1)
        tdt = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}[args.dtype]
        tx, tg = (torch.from_numpy(a.astype(np.float32)).to(tdt) for a in (x, gate))
        tw = torch.from_numpy(w)
        with torch.no_grad():
            mamba = time(lambda: mamba_rms_norm_ref(torch, tx, tw, None, tg))
        results.append(("Mamba rms_norm_ref, torch eager", mamba, out_call, "our call with out=", ">= 8 (speedup)"))
    print(_bench.machine_line())
    print(f"gated RMSNorm {shape} {dt.name}, one thread")
    for name, ms, ref_ms, ref_name, target in results:
        print(f"{name:>32}: {ms:8.3f} ms  /  {ref_name}: {ref_ms:8.3f} ms  = {ms / ref_ms:5.2f}"
              + (f"  (target {target})" if target else ""))
    print(f"{'decode (1, %d), whole call' % shape[-1]:>32}: {decode:8.2f} us  (target <= 3 us)")


if __name__ == "__main__":
    main()
