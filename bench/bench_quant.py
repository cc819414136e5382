"""rms_norm_quant against its bound and the paths users have without it, one thread.

    python bench/bench_quant.py [--shape 2048 4096] [--dtype bfloat16] [--min-time 0.3]

Prints the times and the ratios the targets are stated in:
  - int8 with out=/scale_out= against np.copyto of x's bytes (the bound: it
    reads x once and writes a quarter or half of it);
  - the two-step path: our rms_norm to float32, then NumPy's rint(y / scale)
    into int8 (what users write without the fused op);
  - the torch composite (torch rms_norm in float32, amax, scale, round,
    clamp, cast), when torch is installed;
  - the fused residual against our add_rms_norm on the same data;
  - float8_e4m3fn against int8 (needs ml_dtypes);
  - the decode call: one (1, 4096) row, the whole NumPy call in microseconds.
"""

import argparse

import numpy as np

from rmsnorm_cpu import _bench, _spec, add_rms_norm, rms_norm, rms_norm_quant


def two_step(x, w):
    """rms_norm to float32, then per-row scale and int8 in NumPy."""
    y = rms_norm(x, w, dtype=np.float32, n_threads=1)
    scale = np.maximum(np.abs(y).max(axis=-1, keepdims=True) / np.float32(127), np.float32(1 / (127 * 512)))
    return np.clip(np.rint(y / scale), -128, 127).astype(np.int8), scale


def torch_composite(x, w):
    """The same in torch, or None without torch."""
    try:
        import torch

        from rmsnorm_cpu.torch import _tensor
    except ImportError:
        return None
    tx, tw = _tensor(x), torch.from_numpy(np.asarray(w, np.float32))

    def step():
        y = torch.nn.functional.rms_norm(tx.float(), (x.shape[-1],), tw, eps=1e-6)
        scale = (y.abs().amax(dim=-1, keepdim=True) / 127).clamp(min=1 / (127 * 512))
        return (y / scale).round().clamp(-128, 127).to(torch.int8), scale
    torch.set_num_threads(1)
    return step


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", type=int, nargs="+", default=[2048, 4096])
    parser.add_argument("--dtype", default="bfloat16", choices=["float16", "bfloat16", "float32", "float64"])
    parser.add_argument("--min-time", type=float, default=0.3, help="seconds per measurement")
    args = parser.parse_args()
    shape, dt = tuple(args.shape), _spec.dtype_by_name(args.dtype)
    rng = np.random.default_rng(0)
    x = rng.standard_normal(shape, dtype=np.float32).astype(dt)
    residual = rng.standard_normal(shape, dtype=np.float32).astype(dt)
    w = rng.uniform(0.5, 1.5, shape[-1]).astype(_spec.acc_dtype(_spec.dtype_code(dt)))
    q = np.empty(shape, np.int8)
    scale = np.empty(shape[:-1] + (1,), np.float32)
    copy = np.empty_like(x)
    residual_out, y = np.empty_like(residual), np.empty_like(x)

    def time(fn):
        return _bench.median_time(fn, args.min_time) * 1e3

    ours = time(lambda: rms_norm_quant(x, w, out=q, scale_out=scale, n_threads=1))
    fused = time(lambda: rms_norm_quant(x, w, residual=residual, out=q, scale_out=scale, residual_out=residual_out,
                                        n_threads=1))
    rows = [
        ("rms_norm_quant int8, out=/scale_out=", ours),
        ("bound: np.copyto of x", time(lambda: np.copyto(copy, x))),
        ("two steps: rms_norm + NumPy int8", time(lambda: two_step(x, w))),
        ("rms_norm_quant int8, residual fused", fused),
        ("add_rms_norm, out=/residual_out=", time(lambda: add_rms_norm(x, residual, w, out=y, residual_out=residual_out,
                                                                       n_threads=1))),
    ]
    torch_step = torch_composite(x, w)
    if torch_step is not None:
        rows.append(("torch composite", time(torch_step)))
    try:
        q8 = np.empty(shape, _spec.quant_dtype("float8_e4m3fn")[1])
        rows.append(("rms_norm_quant float8_e4m3fn, out=", time(
            lambda: rms_norm_quant(x, w, quant_dtype="float8_e4m3fn", out=q8, scale_out=scale, n_threads=1))))
    except TypeError:  # no ml_dtypes
        pass
    decode_x, decode_w = x[:1].copy(), w
    decode_us = _bench.median_time(lambda: rms_norm_quant(decode_x, decode_w), args.min_time) * 1e6
    by_name = dict(rows)

    print(_bench.machine_line())
    print(f"rms_norm_quant {shape} {dt.name}, one thread")
    for name, ms in rows:
        print(f"{name:>40}: {ms:8.3f} ms")
    print(f"{'decode (1, %d), whole call' % shape[-1]:>40}: {decode_us:8.2f} us   (target <= 3 us)")
    print(f"int8 / np.copyto:           {ours / by_name['bound: np.copyto of x']:5.2f}   (target <= 1.3)")
    print(f"two steps / int8:           {by_name['two steps: rms_norm + NumPy int8'] / ours:5.2f}   (target >= 3)")
    if "torch composite" in by_name:
        print(f"torch composite / int8:     {by_name['torch composite'] / ours:5.2f}   (target >= 10)")
    print(f"fused residual / add_rms_norm: {fused / by_name['add_rms_norm, out=/residual_out=']:5.2f}   "
          f"(target <= 1.3)")
    if "rms_norm_quant float8_e4m3fn, out=" in by_name:
        print(f"float8_e4m3fn / int8:       {by_name['rms_norm_quant float8_e4m3fn, out='] / ours:5.2f}")


if __name__ == "__main__":
    main()
