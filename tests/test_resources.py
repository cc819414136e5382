"""No hidden full-size temporaries, no leaks.

Memory is measured with tracemalloc, which NumPy reports its array data to:
the peak of a call minus what it returns is its extra memory.  Leaks: many
calls of every public function, on success and error paths, keep the RSS,
the live object count and the inputs' reference counts flat.
"""

import gc
import sys
import tracemalloc

import numpy as np
import pytest

import rmsnorm_cpu as rn
from rmsnorm_cpu import _core, _runtime

MiB = 1 << 20


def _available_bytes():
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    return 0


def _extra_bytes(call, inputs=()):
    """(result, peak bytes allocated during call minus the new arrays it returns)."""
    gc.collect()
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        base = tracemalloc.get_traced_memory()[0]
        result = call()
        peak = tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()
    returned = sum(a.nbytes for a in (result if isinstance(result, tuple) else (result,))
                   if isinstance(a, np.ndarray) and a.base is None and not any(a is i for i in inputs))
    return result, peak - returned


@pytest.fixture(scope="module")
def gib_input():
    """A 1 GiB float32 (8192, 32768) input (skips when memory is short)."""
    if sys.platform != "linux" or _available_bytes() < 4 << 30:
        pytest.skip("needs 4 GiB of available memory (Linux)")
    x = np.empty((8192, 32768), np.float32)
    x[...] = np.random.default_rng(0).standard_normal(32768, np.float32)  # same row repeated: cheap to fill
    x[:, 0] = np.arange(8192)
    return x


def test_forward_extra_memory_is_o_rows(gib_input):
    x = gib_input
    rows, n = x.shape
    threads = max(1, _runtime.build_info()["n_threads_default"])
    bound = rows * 8 + threads * n * 8 + MiB  # O(rows) + one slice buffer per thread + bookkeeping
    w = np.ones(n, np.float32)
    result, extra = _extra_bytes(lambda: rn.rms_norm(x, w, return_rstd=True))
    assert extra <= bound, f"rms_norm used {extra / MiB:.1f} MiB besides its result"
    del result
    _, extra_t = _extra_bytes(lambda: rn.rms_norm(x.T, w, axis=0))  # column kernel: no transposed copy
    assert extra_t <= bound, f"rms_norm(axis=0) used {extra_t / MiB:.1f} MiB besides its result"


def test_in_place_needs_no_second_array(gib_input):
    x = gib_input
    x_copy = x.copy()
    try:
        out, extra = _extra_bytes(lambda: rn.rms_norm(x, out=x), (x,))
        assert out is x and extra <= MiB, f"in place used {extra / MiB:.1f} MiB"
        (y, r), extra = _extra_bytes(lambda: rn.add_rms_norm(x, x_copy, inplace=True), (x, x_copy))
        assert y is x and r is x_copy and extra <= MiB, f"add_rms_norm inplace used {extra / MiB:.1f} MiB"
    finally:
        x[...] = np.random.default_rng(0).standard_normal(x.shape[1], np.float32)
        x[:, 0] = np.arange(x.shape[0])


def test_backward_allocates_dx_and_block_partials(gib_input):
    x = gib_input
    rows, n = x.shape
    w = np.ones(n, np.float32)
    (dx, _, _), extra = _extra_bytes(lambda: rn.rms_norm_backward(x, x, w, 0.0))
    blocks = _core.grad_blocks(rows, n)
    # dweight and dbias partial sums (blocks x n each) and their reductions, O(rows) scratch
    bound = 2 * (blocks + 4) * n * 4 + rows * 8 + MiB
    assert extra <= bound, f"backward used {extra / MiB:.1f} MiB besides dx, dw, db"
    assert dx.shape == x.shape


def test_small_batch_backward_partials_are_small():
    """A block of partial sums holds at least 16 slices: a small batch's
    partials are a fraction of dx, not one row of them per slice."""
    rng = np.random.default_rng(0)
    x, dy, g = (rng.standard_normal((64, 4096)).astype(np.float32) for _ in range(3))
    w = np.ones(4096, np.float32)
    (dx, _, _), extra = _extra_bytes(lambda: rn.rms_norm_backward(dy, x, w))
    assert extra <= dx.nbytes // 4, f"backward used {extra / MiB:.2f} MiB besides dx and dw"
    (dx, dgate, _, _), extra = _extra_bytes(lambda: rn.rms_norm_gated_backward(dy, x, g, w))
    assert extra <= dx.nbytes // 4, f"gated backward used {extra / MiB:.2f} MiB besides dx, dgate, dw"


# ---- leaks -----------------------------------------------------------------

def _rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096


X = np.random.default_rng(1).standard_normal((4, 8)).astype(np.float32)
W = np.ones(8, np.float32)
B = np.zeros(8, np.float32)
OUT = np.empty((4, 8), np.float32)
RSTD = rn.rms_norm(X, W, return_rstd=True)[1]


def _expect(exc, call):
    def run():
        try:
            call()
        except exc:
            return
        raise AssertionError("no error")
    return run


CALLS = {
    "rms_norm": lambda: rn.rms_norm(X, W, B, out=OUT, return_rstd=True),
    "rms_norm strided": lambda: rn.rms_norm(X[:, ::2], axis=0, groups=2),
    "add_rms_norm": lambda: rn.add_rms_norm(X, X, W),
    "rms_norm_backward": lambda: rn.rms_norm_backward(X, X, W, B, rstd=RSTD),
    "output_spec": lambda: rn.output_spec((4, 8), np.float16, groups=2),
    "rms_norm error": _expect(ValueError, lambda: rn.rms_norm(X, W[:5])),
    "rms_norm out error": _expect(ValueError, lambda: rn.rms_norm(X, out=OUT[:2])),
    "add_rms_norm error": _expect(ValueError, lambda: rn.add_rms_norm(X, X[:2])),
    "rms_norm_backward error": _expect(ValueError, lambda: rn.rms_norm_backward(X, X, rstd=RSTD[:2])),
    "output_spec error": _expect(TypeError, lambda: rn.output_spec((4, 8), np.complex64)),
}
N_CALLS = 100_000
RSS_BOUND = 2 * MiB  # a leak of 21 bytes per call would exceed it


@pytest.mark.skipif(sys.platform != "linux", reason="reads /proc/self/statm")
@pytest.mark.parametrize("name", list(CALLS))
def test_no_leaks_over_many_calls(name):
    call = CALLS[name]
    for _ in range(2000):  # warm caches, plan cache, allocator pools
        call()
    gc.collect()
    refs = [sys.getrefcount(a) for a in (X, W, B, OUT, RSTD)]
    objects = len(gc.get_objects())
    rss = _rss()
    for _ in range(N_CALLS):
        call()
    gc.collect()
    drift = _rss() - rss
    assert drift <= RSS_BOUND, f"RSS grew {drift / 1024:.0f} KiB over {N_CALLS} calls"
    assert [sys.getrefcount(a) for a in (X, W, B, OUT, RSTD)] == refs
    assert len(gc.get_objects()) - objects < 100


def test_concurrent_calls_from_python_threads():
    """The GIL is released during the kernels: calls from several Python
    threads at once (each may open an OpenMP team) give the serial results."""
    from concurrent.futures import ThreadPoolExecutor

    rng = np.random.default_rng(2)
    inputs = [rng.standard_normal((300, 515)).astype(dtype) for dtype in (np.float16, np.float32, np.float64) * 2]
    expected = [(rn.rms_norm(x), rn.rms_norm_backward(x, x, np.ones(515))[1]) for x in inputs]

    def work(k):
        for _ in range(20):
            y = rn.rms_norm(inputs[k])
            dw = rn.rms_norm_backward(inputs[k], inputs[k], np.ones(515))[1]
            if not (np.array_equal(y, expected[k][0]) and np.array_equal(dw, expected[k][1])):
                return False
        return True

    with ThreadPoolExecutor(len(inputs)) as pool:
        assert all(pool.map(work, range(len(inputs))))


# ---- the output pool ---------------------------------------------------------

def test_large_outputs_reuse_a_freed_buffer():
    """A new output of 4-64 MiB reuses the buffer of one of its size freed
    before (pages in memory), and is an ordinary array: its own data, no base,
    resizable."""
    x = np.full((1031, 1033), 2.0)  # an 8.1 MiB size no other test uses
    y = rn.rms_norm(x, eps=0.0)
    assert y.base is None and y.flags.owndata and y.flags.writeable
    address = y.ctypes.data
    del y
    y = rn.rms_norm(x, eps=0.0)
    assert y.ctypes.data == address
    np.testing.assert_array_equal(y, 1.0)
    z = rn.rms_norm(x, eps=0.0)  # the buffer is taken: a new one
    assert z.ctypes.data != address and not np.shares_memory(y, z)
    y.resize(10, refcheck=False)
    del y, z
    assert rn.rms_norm(np.ones((3, 4))).flags.owndata  # small outputs: NumPy's own allocation


def test_output_pool_holds_a_few_buffers():
    """At most four freed buffers are kept, the last freed."""
    for rows in range(600, 1200, 100):  # six sizes of 4.7-9.4 MiB, all freed at once
        rn.rms_norm(np.ones((rows, 1024)))
    assert _core.output_pool_held() == 4
    x = np.ones((2048, 1024))
    address = rn.rms_norm(x).ctypes.data  # freed into the pool (evicting one)
    assert rn.rms_norm(x).ctypes.data == address
    assert _core.output_pool_held() == 4


def test_output_pool_from_python_threads():
    """Outputs made and freed on many threads at once never share memory."""
    from concurrent.futures import ThreadPoolExecutor

    x = np.random.default_rng(3).standard_normal((1024, 1024))
    expected = rn.rms_norm(x)

    def work(_):
        for _ in range(30):
            a, b = rn.rms_norm(x), rn.rms_norm(x)
            if np.shares_memory(a, b) or not (np.array_equal(a, expected) and np.array_equal(b, expected)):
                return False
        return True

    with ThreadPoolExecutor(4) as pool:
        assert all(pool.map(work, range(8)))
