"""Kernels touch only the elements they are given: every operand of a call
starts right after, or ends right before, a page that cannot be read, so a
read or write one element out of bounds (a partial vector loaded or stored
whole) would crash the process.  AVX2 loads its partial vectors with masked
loads, which never touch masked-off lanes; these tests hold it to that on
every tier this machine has."""

import ctypes
import mmap
import sys

import numpy as np
import pytest

import rmsnorm_cpu as rn

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="guard pages via mprotect")

PAGE = mmap.PAGESIZE
LENGTHS = [1, 3, 5, 7, 9, 15, 17, 31, 33, 100]


class Fenced:
    """Arrays placed between inaccessible pages (PROT_NONE)."""

    def __init__(self):
        self._maps = []
        self._libc = ctypes.CDLL(None, use_errno=True)
        self._libc.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]

    def array(self, values, at_end):
        """A copy of values whose bytes end at a guard page (at_end) or start right after one."""
        values = np.ascontiguousarray(values)
        pages = -(-values.nbytes // PAGE)
        m = mmap.mmap(-1, (pages + 2) * PAGE)
        buf = np.frombuffer(m, np.uint8)
        base = buf.ctypes.data
        for guard in (base, base + (pages + 1) * PAGE):
            assert self._libc.mprotect(guard, PAGE, 0) == 0, ctypes.get_errno()
        start = PAGE + (pages * PAGE - values.nbytes if at_end else 0)
        out = buf[start:start + values.nbytes].view(values.dtype).reshape(values.shape)
        out[...] = values
        self._maps.append((m, buf))
        return out


@pytest.fixture
def fenced():
    return Fenced()


def _dtypes():
    names = [np.float32, np.float64, np.float16]
    try:
        import ml_dtypes
        names.append(ml_dtypes.bfloat16)
    except ImportError:
        pass
    return names


def _same(got, want):
    """Bitwise equal results: arrays, or tuples of arrays and Nones."""
    if isinstance(want, tuple):
        return len(got) == len(want) and all(_same(a, b) for a, b in zip(got, want))
    if want is None:
        return got is None
    got, want = np.asarray(got), np.asarray(want)
    return got.dtype == want.dtype and np.array_equal(got.view(f"u{got.itemsize}"), want.view(f"u{want.itemsize}"))


@pytest.mark.parametrize("at_end", [True, False], ids=["end", "start"])
@pytest.mark.parametrize("dtype", _dtypes(), ids=lambda d: np.dtype(d).name)
def test_every_op_stays_inside_its_operands(isa, rng, fenced, dtype, at_end):
    for n in LENGTHS:
        for rows in (1, 3):
            x0 = rng.standard_normal((rows, n)).astype(dtype)
            g0 = rng.standard_normal((rows, n)).astype(dtype)
            w0 = rng.uniform(0.5, 1.5, n).astype(np.float32)
            x, g, dy, r = (fenced.array(a, at_end) for a in (x0, g0, g0, x0[::-1].copy()))
            w = fenced.array(w0, at_end)

            y = fenced.array(np.zeros_like(x0), at_end)
            rn.rms_norm(x, w, out=y)
            assert _same(y, rn.rms_norm(x0, w0))
            dx = fenced.array(np.zeros_like(x0), at_end)
            got = rn.rms_norm_backward(dy, x, w, dx_out=dx)
            assert got[0] is dx and _same(got, rn.rms_norm_backward(g0, x0, w0))
            assert _same(rn.add_rms_norm(x, r, w), rn.add_rms_norm(x0, x0[::-1].copy(), w0))
            assert _same(rn.rms_norm_gated(x, g, w), rn.rms_norm_gated(x0, g0, w0))
            assert _same(rn.rms_norm_gated_backward(dy, x, g, w), rn.rms_norm_gated_backward(g0, x0, g0, w0))
            assert _same(rn.rms_norm_quant(x, w), rn.rms_norm_quant(x0, w0))
