"""Where the backward's time goes: the whole call against its kernel alone.

    python bench/bench_backward.py [--shape 2048 4096] [--dtype float32] [--min-time 0.3]

rms_norm_backward returns a new dx, so each call writes fresh pages that the
OS zeroes on first touch; np.add(dy, x) into a new array pays the same.  This
script times, in one run and single-threaded: the whole call; the kernel into
a preallocated dx (rmsnorm_cpu._core.backward, what the call runs after
checking and allocating); the bound of the kernel (1.5x np.copyto of the same bytes: it
reads dy and x and writes dx); np.add(dy, x) into a new array and into a
preallocated one; and first-touching a new array of dx's size.
"""

import argparse

import numpy as np

from rmsnorm_cpu import _api, _bench, _core, _spec


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", type=int, nargs="+", default=[2048, 4096])
    parser.add_argument("--dtype", default="float32", choices=["float16", "float32", "float64"])
    parser.add_argument("--min-time", type=float, default=0.3, help="seconds per measurement")
    args = parser.parse_args()
    shape, dt = tuple(args.shape), np.dtype(args.dtype)
    rng = np.random.default_rng(0)
    x = rng.standard_normal(shape, dtype=np.float32).astype(dt)
    dy = rng.standard_normal(shape, dtype=np.float32).astype(dt)
    acc = _spec.acc_dtype(_spec.dtype_code(dt))
    w = rng.uniform(0.5, 1.5, shape[-1]).astype(acc)
    dx = np.empty_like(x)
    backward = _spec.backward_call(dy, x, w, None, None, -1, 1e-6, 1, "sqrt", 0.0, dx, 1)

    def kernel():
        backward.dweight.fill(0)
        _core.backward(backward)

    def time(fn):
        return _bench.median_time(fn, args.min_time) * 1e3

    call = time(lambda: _api.rms_norm_backward(dy, x, w, n_threads=1))
    results = [
        ("rms_norm_backward (whole call)", call),
        ("kernel into a preallocated dx", time(kernel)),
        ("bound: 1.5 x np.copyto", 1.5 * time(lambda: np.copyto(dx, x))),
        ("np.add(dy, x) into a new array", time(lambda: np.add(dy, x))),
        ("np.add(dy, x, out=dx)", time(lambda: np.add(dy, x, out=dx))),
        ("first touch of a new dx", time(lambda: np.empty_like(x).fill(0))),
    ]
    print(_bench.machine_line())
    print(f"backward {shape} {dt.name}, one thread")
    for name, ms in results:
        print(f"{name:>32}: {ms:8.2f} ms  {ms / call:5.2f} of the call")
    kernel_ms, bound_ms = results[1][1], results[2][1]
    print(f"kernel / bound: {kernel_ms / bound_ms:.2f}; whole call / np.add into a new array: "
          f"{call / results[3][1]:.2f}")


if __name__ == "__main__":
    main()
