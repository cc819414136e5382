"""Thread scaling and the serial threshold, measured.

1. Threshold calibration: for (rows, 4096) float32 with rows from 1 to 256, the
   time of one call on 1 thread and on a forced team of 2 (threshold lowered to
   0).  The threshold in _runtime.pyx (SERIAL_MAX_WORK) sits where a team stops
   losing.
2. Speed-up of 2 threads over 1 for forward and backward on in-cache and
   memory-bound shapes, and default threads vs n_threads=1 on decode shapes.

Run: python bench/bench_threads.py   (ratios from one run; the machine is shared)
"""

import numpy as np

import rmsnorm_cpu as rn
from rmsnorm_cpu import _bench, _runtime


def calibrate(rows_list=(1, 2, 4, 8, 16, 32, 64, 128, 256), n=4096):
    previous = _runtime._set_serial_max_work(0)
    try:
        print(f"{'shape':>12} {'1 thread us':>12} {'team of 2 us':>13} {'2 vs 1':>7}")
        for rows in rows_list:
            x = np.random.default_rng(0).standard_normal((rows, n), dtype=np.float32)
            y = np.empty_like(x)
            t1 = _bench.median_time(lambda: rn.rms_norm(x, out=y, n_threads=1))
            t2 = _bench.median_time(lambda: rn.rms_norm(x, out=y, n_threads=2))
            print(f"{str((rows, n)):>12} {t1 * 1e6:>12.1f} {t2 * 1e6:>13.1f} {t1 / t2:>6.2f}x")
    finally:
        _runtime._set_serial_max_work(previous)


def _calls(x, w, dy, op):
    if op == "forward":
        y = np.empty_like(x)
        return lambda nt: rn.rms_norm(x, w, out=y, n_threads=nt)
    return lambda nt: rn.rms_norm_backward(dy, x, w, n_threads=nt)


def scaling(shapes=((256, 4096), (2048, 4096), (16384, 4096))):
    print(f"\n{'shape':>14} {'op':>8} {'1 thread ms':>12} {'2 threads ms':>13} {'speed-up':>9}")
    for shape in shapes:
        rng = np.random.default_rng(0)
        x = rng.standard_normal(shape, dtype=np.float32)
        dy = rng.standard_normal(shape, dtype=np.float32)
        w = np.ones(shape[-1], np.float32)
        for op in ("forward", "backward"):
            call = _calls(x, w, dy, op)
            t1 = _bench.median_time(lambda: call(1))
            t2 = _bench.median_time(lambda: call(2))
            print(f"{str(shape):>14} {op:>8} {t1 * 1e3:>12.3f} {t2 * 1e3:>13.3f} {t1 / t2:>8.2f}x")


def decode_default_threads(shapes=((1, 4096), (32, 4096))):
    print(f"\n{'shape':>12} {'n_threads=1 us':>15} {'default us':>11} {'default/1':>10}")
    for shape in shapes:
        x = np.random.default_rng(0).standard_normal(shape, dtype=np.float32)
        y = np.empty_like(x)
        t1 = _bench.median_time(lambda: rn.rms_norm(x, out=y, n_threads=1))
        td = _bench.median_time(lambda: rn.rms_norm(x, out=y))
        print(f"{str(shape):>12} {t1 * 1e6:>15.2f} {td * 1e6:>11.2f} {td / t1:>9.2f}x")


if __name__ == "__main__":
    print(_bench.machine_line())
    calibrate()
    scaling()
    decode_default_threads()
