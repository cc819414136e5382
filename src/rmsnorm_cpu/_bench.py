"""Benchmark tables: rms_norm against its peers, as ratios measured in one run.

Peers: the NumPy composite, PyTorch eager ``F.rms_norm`` and ONNX Runtime's
fused ``SimplifiedLayerNormalization`` (I/O binding, one intra-op thread per
thread of ours) when installed, and ``np.copyto`` of the same bytes, the
memory-bandwidth bound.  Times are medians of repeated calls; the table
reports "their time / our time" so that numbers from a shared, noisy machine
still compare (copy_bound > 1 would mean faster than a copy).  Besides the
last-axis forward: the NCHW channel case (axis=1, also against our own
contiguous time for the same bytes) and the backward (its bound reads dy and
x and writes dx: 1.5 times the forward's copy; and, since the backward returns
a new dx whose fresh pages the OS must zero, np.add(dy, x) into a new array,
on unsigned integers of the same width).
"""

import os
import platform
import time

import numpy as np

from . import _api, _config

DEFAULT_SHAPES = [(1, 4096), (32, 4096), (2048, 4096), (16384, 4096)]
DEFAULT_DTYPES = ["float32", "float16"]
# The full table of issue 7 (bench/bench_forward.py).
ISSUE_SHAPES = [(1, 4096), (32, 4096), (2048, 4096), (16384, 4096), (4096, 1024), (64, 65536)]
ISSUE_DTYPES = ["float32", "float16", "bfloat16", "float64"]
NCHW_SHAPES = [(8, 512, 64, 64)]
BACKWARD_SHAPES = [(2048, 4096)]
PEERS = ("copy_bound", "fresh_bound", "numpy", "torch", "onnxruntime", "contiguous")


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


def _dtype(name):
    return _api._bfloat16() if name == "bfloat16" else np.dtype(name)


def numpy_composite(x, w, eps=1e-6, axis=-1):
    """What users write without us: five temporaries, float32 math for low precision."""
    xf = x.astype(np.float32) if x.dtype.itemsize < 4 else x
    return (xf / np.sqrt(np.mean(xf * xf, axis=axis, keepdims=True) + eps) * w).astype(x.dtype)


def _torch_forward(x, w):
    try:
        import torch
    except ImportError:
        return None
    tx = torch.from_numpy(x.view(np.uint16)).view(torch.bfloat16) if x.dtype.name == "bfloat16" else \
        torch.from_numpy(x)
    tw = torch.from_numpy(w.astype(np.float32)).to(tx.dtype)
    shape = (x.shape[-1],)
    return lambda: torch.nn.functional.rms_norm(tx, shape, tw, eps=1e-6)


def _torch_backward(dy, x, w):
    try:
        import torch
    except ImportError:
        return None
    tx = torch.from_numpy(x).requires_grad_()
    tw = torch.from_numpy(w).requires_grad_()
    tdy = torch.from_numpy(dy)

    def step():
        tx.grad = tw.grad = None
        torch.nn.functional.rms_norm(tx, (x.shape[-1],), tw, eps=1e-6).backward(tdy)
    return step


def _onnx_forward(x, w, y, n_threads):
    """ONNX Runtime's fused SimplifiedLayerNormalization with I/O binding into y."""
    try:
        import onnxruntime as ort
        from onnx import TensorProto, helper
    except ImportError:
        return None
    elem = {"float32": TensorProto.FLOAT, "float16": TensorProto.FLOAT16, "float64": TensorProto.DOUBLE}
    if x.dtype.name not in elem:
        return None  # no bfloat16 kernel on ORT's CPU provider
    tp, n = elem[x.dtype.name], x.shape[-1]
    graph = helper.make_graph(
        [helper.make_node("SimplifiedLayerNormalization", ["X", "S"], ["Y"], axis=-1, epsilon=1e-6)], "rmsnorm",
        [helper.make_tensor_value_info("X", tp, [None, n]), helper.make_tensor_value_info("S", tp, [n])],
        [helper.make_tensor_value_info("Y", tp, [None, n])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = n_threads
    opts.inter_op_num_threads = 1
    sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    binding = sess.io_binding()
    bound = x.reshape(-1, n), w.astype(x.dtype), y.reshape(-1, n)
    binding.bind_cpu_input("X", bound[0])
    binding.bind_cpu_input("S", bound[1])
    binding.bind_output("Y", "cpu", 0, x.dtype, bound[2].shape, bound[2].ctypes.data)

    def step():
        sess.run_with_iobinding(binding)
        return bound  # the bound buffers live as long as this function
    return step


def _data(shape, dtype):
    rng = np.random.default_rng(0)
    x = rng.standard_normal(shape, dtype=np.float32).astype(dtype)
    return x, np.empty_like(x)


def _with_torch_threads(n_threads, fn, min_time):
    import torch
    previous = torch.get_num_threads()
    torch.set_num_threads(n_threads)
    try:
        return median_time(fn, min_time)
    finally:
        torch.set_num_threads(previous)


def _row(case, shape, dtype_name, n_threads, ours):
    """A table row: what was measured and our time; peers add their ratios."""
    return {"case": case, "shape": tuple(shape), "dtype": dtype_name, "threads": n_threads, "ours_us": ours * 1e6}


def bench_case(shape, dtype, n_threads=1, min_time=0.2):
    """One forward row over the last axis: our time and each peer's time relative to ours."""
    dt = _dtype(dtype)
    x, y = _data(shape, dt)
    acc = np.float64 if dt == np.float64 else np.float32
    w = np.random.default_rng(1).uniform(0.5, 1.5, shape[-1]).astype(acc)
    if shape[0] == 1 and n_threads == 1:  # the decode call as users write it
        ours = median_time(lambda: _api.rms_norm(x, w), min_time)
    else:
        ours = median_time(lambda: _api.rms_norm(x, w, out=y, n_threads=n_threads), min_time)
    row = _row("forward", shape, dt.name, n_threads, ours)
    row["copy_bound"] = median_time(lambda: np.copyto(y, x), min_time) / ours
    row["numpy"] = median_time(lambda: numpy_composite(x, w), min_time) / ours
    torch_fn = _torch_forward(x, w)
    if torch_fn is not None:
        row["torch"] = _with_torch_threads(n_threads, torch_fn, min_time) / ours
    onnx_fn = _onnx_forward(x, w, np.empty_like(x), n_threads)
    if onnx_fn is not None:
        row["onnxruntime"] = median_time(onnx_fn, min_time) / ours
    return row


def bench_nchw(shape, dtype, n_threads=1, min_time=0.2):
    """Channels of NCHW (axis=1): against the copy, NumPy, and our own time for
    the same bytes normalized over a contiguous last axis."""
    dt = _dtype(dtype)
    x, y = _data(shape, dt)
    ours = median_time(lambda: _api.rms_norm(x, axis=1, out=y, n_threads=n_threads), min_time)
    row = _row("nchw axis=1", shape, dt.name, n_threads, ours)
    row["copy_bound"] = median_time(lambda: np.copyto(y, x), min_time) / ours
    row["numpy"] = median_time(lambda: numpy_composite(x, 1.0, axis=1), min_time) / ours
    xc, yc = x.reshape(-1, shape[1]), y.reshape(-1, shape[1])
    row["contiguous"] = median_time(lambda: _api.rms_norm(xc, out=yc, n_threads=n_threads), min_time) / ours
    return row


def bench_backward(shape, dtype, n_threads=1, min_time=0.2):
    """dx and dweight over the last axis; the bound reads dy and x and writes dx."""
    dt = _dtype(dtype)
    x, dx = _data(shape, dt)
    dy = np.random.default_rng(2).standard_normal(shape, dtype=np.float32).astype(dt)
    w = np.random.default_rng(1).uniform(0.5, 1.5, shape[-1]).astype(dt)
    ours = median_time(lambda: _api.rms_norm_backward(dy, x, w, n_threads=n_threads), min_time)
    row = _row("backward", shape, dt.name, n_threads, ours)
    row["copy_bound"] = 1.5 * median_time(lambda: np.copyto(dx, x), min_time) / ours
    # Unsigned integers of the same width: an add at memory speed for any dtype
    # (NumPy's float16 and bfloat16 arithmetic is not).
    bits = f"u{dt.itemsize}"
    row["fresh_bound"] = median_time(lambda: np.add(dy.view(bits), x.view(bits)), min_time) / ours
    torch_fn = _torch_backward(dy, x, w) if dt.name != "bfloat16" else None
    if torch_fn is not None:
        row["torch"] = _with_torch_threads(n_threads, torch_fn, min_time) / ours
    return row


def _threads(n_threads):
    """A context capping OpenMP (ours) and torch's intra-op threads at n_threads."""
    import contextlib

    import torch

    stack = contextlib.ExitStack()
    try:
        from threadpoolctl import threadpool_limits
        stack.enter_context(threadpool_limits(n_threads, user_api="openmp"))
    except ImportError:  # then only calls small enough for one thread compare fairly
        pass
    previous = torch.get_num_threads()
    torch.set_num_threads(n_threads)
    stack.callback(torch.set_num_threads, previous)
    return stack


def torch_calls(shape, dtype):
    """{name: (ours, torch's)}: pairs of calls doing the same work on tensors,
    normalized over the last axis, without autograd unless the name says so."""
    import torch

    from . import torch as rt

    F = torch.nn.functional
    gen = torch.Generator().manual_seed(0)
    dt = getattr(torch, dtype)
    n = shape[-1]
    x = torch.randn(shape, generator=gen).to(dt)
    residual = torch.randn(shape, generator=gen).to(dt)
    w = (torch.rand(n, generator=gen) + 0.5).to(dt)
    w_grad = w.clone().requires_grad_()
    ours_module, torch_module = rt.RMSNorm(n, 1e-6, dtype=dt), torch.nn.RMSNorm(n, 1e-6, dtype=dt)

    def no_grad(fn):
        def call():
            with torch.no_grad():
                return fn()
        return call

    return {
        "torch fn": (no_grad(lambda: rt.rms_norm(x, n, w)), no_grad(lambda: F.rms_norm(x, (n,), w, 1e-6))),
        "torch module": (no_grad(lambda: ours_module(x)), no_grad(lambda: torch_module(x))),
        "torch add_": (no_grad(lambda: rt.add_rms_norm(x, residual, n, w, inplace=True)),
                       no_grad(lambda: F.rms_norm(residual.add_(x), (n,), w, 1e-6))),
        "torch grad": (lambda: rt.rms_norm(x, n, w_grad), lambda: F.rms_norm(x, (n,), w_grad, 1e-6)),
    }


def bench_torch(shape, dtype, n_threads=1, min_time=0.2, cases=("torch fn", "torch module", "torch add_")):
    """rmsnorm_cpu.torch against torch's own calls (column "torch"): the function
    and the module against F.rms_norm and nn.RMSNorm, the in-place fused add
    against residual.add_(x) then F.rms_norm, the function with a weight that
    requires grad (autograd recording) against F.rms_norm.  [] without torch."""
    try:
        import torch  # noqa: F401
    except ImportError:
        return []
    calls = torch_calls(shape, dtype)
    rows = []
    with _threads(n_threads):
        for case in cases:
            ours, theirs = calls[case]
            row = _row(case, shape, dtype, n_threads, median_time(ours, min_time))
            row["torch"] = median_time(theirs, min_time) * 1e6 / row["ours_us"]
            rows.append(row)
    return rows


def machine_line():
    cfg = _config.config()
    return (f"{platform.machine()} {platform.processor() or ''} {os.cpu_count()} CPUs, "
            f"isa={cfg['isa']}, openmp={cfg['openmp']}, rmsnorm_cpu {cfg['version']}, numpy {np.__version__}")


def format_table(rows):
    peers = [p for p in PEERS if any(p in r for r in rows)]
    head = (f"{'case':>12} {'shape':>17} {'dtype':>8} {'thr':>3} {'ours (us)':>10} "
            + " ".join(f"{p:>11}" for p in peers))
    lines = [head, "-" * len(head)]
    for r in rows:
        cells = " ".join(f"{r[p]:>10.2f}x" if p in r else f"{'-':>11}" for p in peers)
        lines.append(f"{r['case']:>12} {str(r['shape']):>17} {r['dtype']:>8} {r['threads']:>3} "
                     f"{r['ours_us']:>10.1f} {cells}")
    lines.append("ratios are their time / our time (copy_bound: np.copyto of the same bytes, x1.5 for the "
                 "backward; < 1 means slower than a copy; fresh_bound: np.add(dy, x) into a new array, the "
                 "backward's bound with its fresh output; contiguous: ours on the same bytes over the last axis; torch: "
                 "torch's own call for the torch rows)")
    return "\n".join(lines)


def run(shapes=None, dtypes=None, threads=(1,), min_time=0.2, out=print, *, nchw_shapes=(), backward_shapes=()):
    """Measure and print the table; return its rows (dicts).

    ``shapes``/``dtypes`` give the last-axis forward cases (default
    DEFAULT_SHAPES x DEFAULT_DTYPES); ``nchw_shapes`` adds axis=1 cases and
    ``backward_shapes`` backward cases, in every dtype and thread count.
    """
    out(machine_line())
    rows = []
    for dtype in dtypes or DEFAULT_DTYPES:
        for n in threads:
            for shape in shapes or DEFAULT_SHAPES:
                rows.append(bench_case(tuple(shape), dtype, n, min_time))
            for shape in nchw_shapes:
                rows.append(bench_nchw(tuple(shape), dtype, n, min_time))
            for shape in backward_shapes:
                rows.append(bench_backward(tuple(shape), dtype, n, min_time))
    out(format_table(rows))
    return rows
