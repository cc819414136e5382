"""Benchmark tables: rmsnorm_cpu against its peers, like with like, as ratios measured in one run.

Every shape gives two rows, each against the peers that do the same work:

- ``fresh``: the call as users write it, ``rms_norm(x, w)``, which allocates
  its output, against peers that allocate theirs: the NumPy composite and
  PyTorch eager ``F.rms_norm``, and the fresh-output bound ``bound``: one
  elementwise NumPy pass (``np.bitwise_not`` of the same bytes) into a new
  array, which pays the same first touch of new pages.
- ``out=``: the call into a preallocated ``out``, against peers that write
  into theirs: ONNX Runtime's fused ``SimplifiedLayerNormalization`` with I/O
  binding (one intra-op thread per thread of ours), and the memory bound
  ``bound``: ``np.copyto`` of the same bytes.

The backward likewise: ``backward`` returns a new ``dx`` (bound: ``np.add(dy,
x)`` into a new array, on unsigned integers of the same width; peer: torch
autograd), ``backward dx_out=`` writes a preallocated one (bound: 1.5x
``np.copyto``, as it reads ``dy`` and ``x`` and writes ``dx``).  The calls of
a row are timed in rounds, each call in turn for a share of the time, and
each gets the median of its times (``median_times``); the table reports
"their time / our time", so numbers from a shared, noisy machine still
compare (> 1: we are faster).
"""

import contextlib
import os
import platform
import time

import numpy as np

from . import _api, _config, _spec

DEFAULT_SHAPES = [(1, 4096), (32, 4096), (2048, 4096), (16384, 4096)]
DEFAULT_DTYPES = ["float32", "float16"]
# bench/bench_forward.py: the full table, and a sweep of row lengths over 64 MiB of float32 rows.
FULL_SHAPES = [(1, 4096), (32, 4096), (2048, 4096), (16384, 4096), (4096, 1024), (64, 65536)]
FULL_DTYPES = ["float32", "float16", "bfloat16", "float64"]
ROW_LENGTHS = [64, 128, 256, 1024, 4096, 16384]
SWEEP_BYTES = 64 << 20
NCHW_SHAPES = [(8, 512, 64, 64)]
BACKWARD_SHAPES = [(2048, 4096)]
PEERS = ("bound", "numpy", "torch", "onnxruntime", "contiguous")
KINDS = ("fresh", "out=")


def median_times(fns, min_time=0.2, max_repeats=200, rounds=4):
    """Median seconds per call of each of fns, timed in turns: each of
    `rounds` rounds runs each fn for about min_time / rounds (at least two
    timed calls, after an untimed one that brings caches and the output pool
    back to that call's own state).  A shared machine whose speed drifts over
    seconds (another guest's load) then slows them alike, where timed one
    after the other their ratios moved 10-30% between runs."""
    times = [[] for _ in fns]
    for _ in range(rounds):
        for fn, fn_times in zip(fns, times):
            fn()
            start, calls = time.perf_counter(), 0
            while calls < max(2, max_repeats // rounds) and (
                    calls < 2 or time.perf_counter() - start < min_time / rounds):
                t0 = time.perf_counter()
                fn()
                fn_times.append(time.perf_counter() - t0)
                calls += 1
    return [float(np.median(t)) for t in times]


def median_time(fn, min_time=0.2, max_repeats=200):
    """Median seconds per call of fn() alone (median_times)."""
    return median_times([fn], min_time, max_repeats)[0]


def _bits(a):
    """The same bytes as unsigned integers: NumPy passes over them at memory
    speed for any dtype (its float16 and bfloat16 arithmetic is not)."""
    return a.view(f"u{a.itemsize}")


def numpy_composite(x, w, eps=1e-6, axis=-1):
    """What users write without us: five temporaries, float32 math for low precision."""
    xf = x.astype(np.float32) if x.dtype.itemsize < 4 else x
    return (xf / np.sqrt(np.mean(xf * xf, axis=axis, keepdims=True) + eps) * w).astype(x.dtype)


def _torch_forward(x, w):
    try:
        import torch

        from .torch import _tensor
    except ImportError:
        return None
    tx = _tensor(x)
    tw = torch.from_numpy(w.astype(np.float32)).to(tx.dtype)
    shape = (x.shape[-1],)
    return lambda: torch.nn.functional.rms_norm(tx, shape, tw, eps=1e-6)


def _torch_backward(dy, x, w):
    try:
        import torch

        from .torch import _tensor
    except ImportError:
        return None
    tx = _tensor(x).requires_grad_()
    tw = _tensor(w).requires_grad_()
    tdy = _tensor(dy)

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


def _weight(n, dt):
    return np.random.default_rng(1).uniform(0.5, 1.5, n).astype(np.float64 if dt == np.float64 else np.float32)


@contextlib.contextmanager
def _torch_threads(n_threads):
    """torch's intra-op threads at n_threads, when torch is installed."""
    try:
        import torch
    except ImportError:
        yield
        return
    previous = torch.get_num_threads()
    torch.set_num_threads(n_threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _row(case, shape, dt, n_threads, ours):
    """A table row: what was measured and our time; peers add their ratios."""
    return {"case": case, "shape": tuple(shape), "dtype": dt.name, "threads": n_threads, "ours_us": ours * 1e6}


def _measured_row(case, shape, dt, n_threads, min_time, ours, peers):
    """A row of our call and its peers ({column: call}, None for a missing
    one), timed in turn (median_times) with torch at n_threads."""
    peers = {name: fn for name, fn in peers.items() if fn is not None}
    with _torch_threads(n_threads):
        times = median_times([ours, *peers.values()], min_time)
    row = _row(case, shape, dt, n_threads, times[0])
    for name, t in zip(peers, times[1:]):
        row[name] = t / times[0]
    return row


def bench_case(shape, dtype, n_threads=1, min_time=0.2, kinds=KINDS):
    """Forward rows over the last axis, one per kind of call (see the module docstring)."""
    dt = _spec.dtype_by_name(dtype)
    x, y = _data(shape, dt)
    w = _weight(shape[-1], dt)
    rows = []
    if "fresh" in kinds:
        rows.append(_measured_row("fresh", shape, dt, n_threads, min_time,
                                  lambda: _api.rms_norm(x, w, n_threads=n_threads),
                                  {"bound": lambda: np.bitwise_not(_bits(x)), "numpy": lambda: numpy_composite(x, w),
                                   "torch": _torch_forward(x, w)}))
    if "out=" in kinds:
        rows.append(_measured_row("out=", shape, dt, n_threads, min_time,
                                  lambda: _api.rms_norm(x, w, out=y, n_threads=n_threads),
                                  {"bound": lambda: np.copyto(y, x),
                                   "onnxruntime": _onnx_forward(x, w, np.empty_like(x), n_threads)}))
    return rows


def bench_bfloat16_bits(shape, n_threads=1, min_time=0.2):
    """bfloat16 held as uint16 bits (what torch users hand us), fresh output."""
    x = _data(shape, np.float32)[0]
    bits = (x.view(np.uint32) >> 16).astype(np.uint16)
    w = _weight(shape[-1], np.dtype(np.float32))
    return _measured_row("fresh, bf16 bits", shape, np.dtype(np.uint16), n_threads, min_time,
                         lambda: _api.rms_norm(bits, w, dtype="bfloat16", n_threads=n_threads),
                         {"bound": lambda: np.bitwise_not(bits)})


def bench_nchw(shape, dtype, n_threads=1, min_time=0.2):
    """Channels of NCHW (axis=1) into out: against the copy, and our own time
    for the same bytes normalized over a contiguous last axis."""
    dt = _spec.dtype_by_name(dtype)
    x, y = _data(shape, dt)
    xc, yc = x.reshape(-1, shape[1]), y.reshape(-1, shape[1])
    return _measured_row("nchw axis=1 out=", shape, dt, n_threads, min_time,
                         lambda: _api.rms_norm(x, axis=1, out=y, n_threads=n_threads),
                         {"bound": lambda: np.copyto(y, x),
                          "contiguous": lambda: _api.rms_norm(xc, out=yc, n_threads=n_threads)})


def bench_backward(shape, dtype, n_threads=1, min_time=0.2):
    """dx and dweight over the last axis: a new dx, and into a preallocated one."""
    dt = _spec.dtype_by_name(dtype)
    x, dx = _data(shape, dt)
    dy = np.random.default_rng(2).standard_normal(shape, dtype=np.float32).astype(dt)
    w = _weight(shape[-1], dt).astype(dt)
    fresh = _measured_row("backward", shape, dt, n_threads, min_time,
                          lambda: _api.rms_norm_backward(dy, x, w, n_threads=n_threads),
                          {"bound": lambda: np.add(_bits(dy), _bits(x)), "torch": _torch_backward(dy, x, w)})
    into = _measured_row("backward dx_out=", shape, dt, n_threads, min_time,
                         lambda: _api.rms_norm_backward(dy, x, w, dx_out=dx, n_threads=n_threads),
                         {"bound": lambda: np.copyto(dx, x)})
    into["bound"] *= 1.5  # the kernel reads dy and x and writes dx: 1.5 copies
    return [fresh, into]


def _threads(n_threads):
    """A context capping OpenMP (ours) and torch's intra-op threads at n_threads."""
    stack = contextlib.ExitStack()
    try:
        from threadpoolctl import threadpool_limits
        stack.enter_context(threadpool_limits(n_threads, user_api="openmp"))
    except ImportError:  # then only calls small enough for one thread compare fairly
        pass
    stack.enter_context(_torch_threads(n_threads))
    return stack


def torch_row(case, shape, dtype_name, n_threads, ours, theirs, min_time):
    """A row of rmsnorm_cpu.torch: our call against torch's doing the same (column "torch")."""
    ours_time, their_time = median_times([ours, theirs], min_time)
    row = _row(case, shape, np.dtype(np.float32), n_threads, ours_time)
    row["dtype"] = dtype_name  # also "bfloat16", which needs no NumPy dtype here
    row["torch"] = their_time / ours_time
    return row


def torch_calls(shape, dtype):
    """{case: (ours, torch's)}: pairs of calls doing the same work on tensors,
    normalized over the last axis, without autograd unless the case says so."""
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
    """rmsnorm_cpu.torch against torch's own calls: the function and the module
    against F.rms_norm and nn.RMSNorm, the in-place fused add against
    residual.add_(x) then F.rms_norm, the function with a weight that requires
    grad (autograd recording) against F.rms_norm.  [] without torch."""
    try:
        import torch  # noqa: F401
    except ImportError:
        return []
    calls = torch_calls(shape, dtype)
    with _threads(n_threads):
        return [torch_row(case, shape, dtype, n_threads, *calls[case], min_time) for case in cases]


def machine_line():
    cfg = _config.config()
    return (f"{platform.machine()} {platform.processor() or ''} {os.cpu_count()} CPUs, "
            f"isa={cfg['isa']}, openmp={cfg['openmp']}, stores={cfg['stream_stores']}, "
            f"rmsnorm_cpu {cfg['version']}, numpy {np.__version__}")


LEGEND = ("ratios are their time / our time (> 1: we are faster). bound: for fresh rows one NumPy pass "
          "(np.bitwise_not) into a new array of the same bytes; for out= rows np.copyto of the same bytes; "
          "for the backward np.add(dy, x) into a new array, and 1.5x np.copyto with dx_out=. numpy, torch: "
          "eager calls allocating their output; onnxruntime: I/O binding into a preallocated output; "
          "contiguous: ours on the same bytes over the last axis; torch rows (rmsnorm_cpu.torch): torch's own "
          "call doing the same")


def format_table(rows):
    peers = [p for p in PEERS if any(p in r for r in rows)]
    head = (f"{'case':>18} {'shape':>17} {'dtype':>8} {'thr':>3} {'ours (us)':>10} "
            + " ".join(f"{p:>11}" for p in peers))
    lines = [head, "-" * len(head)]
    for r in rows:
        cells = " ".join(f"{r[p]:>10.2f}x" if p in r else f"{'-':>11}" for p in peers)
        lines.append(f"{r['case']:>18} {str(r['shape']):>17} {r['dtype']:>8} {r['threads']:>3} "
                     f"{r['ours_us']:>10.1f} {cells}")
    lines.append(LEGEND)
    return "\n".join(lines)


def run(shapes=None, dtypes=None, threads=(1,), min_time=0.2, out=print, *, kinds=KINDS, nchw_shapes=(),
        backward_shapes=()):
    """Measure and print the table; return its rows (dicts).

    ``shapes``/``dtypes`` give the last-axis forward cases (default
    DEFAULT_SHAPES x DEFAULT_DTYPES), each of ``kinds``; ``nchw_shapes`` adds
    axis=1 cases and ``backward_shapes`` backward cases, in every dtype and
    thread count.
    """
    out(machine_line())
    rows = []
    for dtype in dtypes or DEFAULT_DTYPES:
        for n in threads:
            for shape in shapes or DEFAULT_SHAPES:
                rows += bench_case(tuple(shape), dtype, n, min_time, kinds)
            for shape in nchw_shapes:
                rows.append(bench_nchw(tuple(shape), dtype, n, min_time))
            for shape in backward_shapes:
                rows += bench_backward(tuple(shape), dtype, n, min_time)
    out(format_table(rows))
    return rows
