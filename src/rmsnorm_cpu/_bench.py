"""Benchmark tables: rms_norm against its peers, as ratios measured in one run.

Peers: the NumPy composite, PyTorch eager ``F.rms_norm`` (when installed), and
``np.copyto`` of the same bytes, the memory-bandwidth bound.  Times are
medians of repeated calls; the table reports "their time / our time" so that
numbers from a shared, noisy machine still compare.
"""

import os
import platform
import time

import numpy as np

from . import _api, _config

DEFAULT_SHAPES = [(1, 4096), (32, 4096), (2048, 4096), (16384, 4096)]
DEFAULT_DTYPES = ["float32", "float16"]


def median_time(fn, min_time=0.2, max_repeats=200):
    """Median seconds per call of fn(), after one warm-up call."""
    fn()
    times = []
    start = time.perf_counter()
    while len(times) < max_repeats and (len(times) < 5 or time.perf_counter() - start < min_time):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def numpy_composite(x, w, eps=1e-6):
    """What users write without us: five temporaries, float32 math for low precision."""
    xf = x.astype(np.float32) if x.dtype.itemsize < 4 else x
    return (xf / np.sqrt(np.mean(xf * xf, axis=-1, keepdims=True) + eps) * w).astype(x.dtype)


def _torch_peer(x, w):
    try:
        import torch
    except ImportError:
        return None
    tx, tw = torch.from_numpy(x), torch.from_numpy(w.astype(x.dtype))
    shape = (x.shape[-1],)
    return lambda: torch.nn.functional.rms_norm(tx, shape, tw, eps=1e-6)


def bench_case(shape, dtype, n_threads=1, min_time=0.2):
    """One row: our time and each peer's time relative to ours."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal(shape, dtype=np.float32).astype(dtype)
    w = rng.uniform(0.5, 1.5, shape[-1]).astype(np.float32)
    y = np.empty_like(x)
    ours = median_time(lambda: _api.rms_norm(x, w, out=y, n_threads=n_threads), min_time)
    row = {"shape": shape, "dtype": str(np.dtype(dtype)), "threads": n_threads, "ours_us": ours * 1e6}
    row["copy_bound"] = median_time(lambda: np.copyto(y, x), min_time) / ours
    row["numpy"] = median_time(lambda: numpy_composite(x, w), min_time) / ours
    torch_fn = _torch_peer(x, w)
    if torch_fn is not None:
        import torch
        previous = torch.get_num_threads()
        torch.set_num_threads(n_threads)
        try:
            row["torch"] = median_time(torch_fn, min_time) / ours
        finally:
            torch.set_num_threads(previous)
    return row


def machine_line():
    cfg = _config.config()
    return (f"{platform.machine()} {platform.processor() or ''} {os.cpu_count()} CPUs, "
            f"isa={cfg['isa']}, openmp={cfg['openmp']}, rmsnorm_cpu {cfg['version']}, numpy {np.__version__}")


def format_table(rows):
    peers = [p for p in ("copy_bound", "numpy", "torch") if any(p in r for r in rows)]
    head = f"{'shape':>14} {'dtype':>8} {'thr':>3} {'ours (us)':>10} " + " ".join(f"{p:>11}" for p in peers)
    lines = [head, "-" * len(head)]
    for r in rows:
        cells = " ".join(f"{r[p]:>10.2f}x" if p in r else f"{'-':>11}" for p in peers)
        lines.append(f"{str(r['shape']):>14} {r['dtype']:>8} {r['threads']:>3} {r['ours_us']:>10.1f} {cells}")
    lines.append("ratios are their time / our time (copy_bound: np.copyto of the same bytes; "
                 "< 1 means we are slower than a copy)")
    return "\n".join(lines)


def run(shapes=None, dtypes=None, threads=(1,), min_time=0.2, out=print):
    out(machine_line())
    rows = []
    for dtype in dtypes or DEFAULT_DTYPES:
        for shape in shapes or DEFAULT_SHAPES:
            for n in threads:
                rows.append(bench_case(tuple(shape), dtype, n, min_time))
    out(format_table(rows))
    return rows
