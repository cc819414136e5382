# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""``rms_norm_gufunc``: a real NumPy generalized ufunc ``(n),(n)->(n)``.

Being an ``np.ufunc`` is what lets ``__array_ufunc__`` overrides (Dask,
xarray, pint, ...) see the call and lets NumPy do broadcasting, ``axes=``,
``out=``, overlap handling and casting.  The inner loop only walks NumPy's
outer loop and calls the same forward kernels as ``rms_norm`` through the
kernel table of ``_runtime`` (the contract in ``_runtime.pxd``), with the
weight converted to the accumulator type by the C library's ``rmsn_to_acc``.
"""
cimport numpy as cnp
import numpy as np
from libc.stdlib cimport free, malloc
from libc.string cimport memcpy
from cpython.exc cimport PyErr_NoMemory

from ._runtime cimport (RMSN_ACC_DTYPE, RMSN_F16, RMSN_F32, RMSN_F64, active_kernels, rmsn_fwd_fn, rmsn_itemsize,
                        rmsn_opts, rmsn_to_acc)

cnp.import_array()
cnp.import_ufunc()

cdef extern from "<fenv.h>" nogil:
    int feclearexcept(int)
    enum: FE_ALL_EXCEPT

cdef enum:
    EPS_SQRT = 0  # rmsnorm.h's RMSN_EPS_SQRT

cdef double EPS = 1e-6


cdef void _weight_to_acc(const char *w, Py_ssize_t step, Py_ssize_t n, int code, Py_ssize_t itemsize, bint f64,
                         void *acc, char *packed) noexcept nogil:
    """Core weight vector (any byte step) -> contiguous acc-typed, by rmsn_to_acc;
    a strided weight is packed into `packed` (n items) first."""
    cdef Py_ssize_t i
    if step != itemsize:
        for i in range(n):
            memcpy(packed + i * itemsize, w + i * step, itemsize)
        w = packed
    rmsn_to_acc(code, w, n, f64, acc)


cdef void _loop(char **args, cnp.npy_intp *dims, cnp.npy_intp *steps, void *data) noexcept nogil:
    """args x, w, y; dims [outer, n]; steps [x, w, y outer, x, w, y core] in bytes.

    Notes: the weight is converted to the kernels' math dtype once per call
    when it is broadcast over the outer loop (step 0, the usual case), and
    all rows run in one kernel call; else once per row.  Each row runs the
    same kernel as ``rms_norm``.
    """
    cdef Py_ssize_t outer = dims[0], n = dims[1], i
    cdef int tin = <int><Py_ssize_t>data // 4, tw = <int><Py_ssize_t>data % 4
    cdef Py_ssize_t isz = rmsn_itemsize[tin], wsz = rmsn_itemsize[tw]
    cdef int acc = RMSN_ACC_DTYPE(tin, tin)
    cdef bint f64 = acc == RMSN_F64
    cdef Py_ssize_t accsz = rmsn_itemsize[acc]
    cdef rmsn_opts opts
    cdef rmsn_fwd_fn fwd = active_kernels().fwd[tin][tin]
    cdef void *wacc
    cdef char *packed
    if outer == 0 or n == 0:
        return
    wacc = malloc(n * (accsz + wsz))  # the acc-typed weights, then room for a packed copy
    packed = <char*>wacc + n * accsz
    if wacc == NULL:
        with gil:
            PyErr_NoMemory()
        return
    opts.eps = EPS
    opts.eps_mode = EPS_SQRT
    opts.round_mid = 0
    opts.stream = 0
    opts.prefetch_next = 0
    if steps[1] == 0:  # one weight: every row in one kernel call
        _weight_to_acc(args[1], steps[4], n, tw, wsz, f64, wacc, packed)
        fwd(&opts, outer, n, args[0], steps[3] // isz, steps[0], args[2], steps[5] // isz, steps[2], wacc, NULL, NULL)
    for i in range(outer if steps[1] != 0 else 0):
        _weight_to_acc(args[1] + i * steps[1], steps[4], n, tw, wsz, f64, wacc, packed)
        fwd(&opts, 1, n, args[0] + i * steps[0], steps[3] // isz, 0, args[2] + i * steps[2], steps[5] // isz, 0,
            wacc, NULL, NULL)
    free(wacc)
    # The kernels' robust path may overflow in float32 before recomputing a
    # slice; like rms_norm, the gufunc raises no floating-point warnings.
    feclearexcept(FE_ALL_EXCEPT)


# (x, weight, y) type characters and the data code of each loop.  float16
# data with a float32 weight has its own loop so that it keeps float16
# output, as rms_norm does.
_SIGNATURES = (("eee", RMSN_F16 * 4 + RMSN_F16), ("efe", RMSN_F16 * 4 + RMSN_F32),
               ("fff", RMSN_F32 * 4 + RMSN_F32), ("ddd", RMSN_F64 * 4 + RMSN_F64))
cdef cnp.PyUFuncGenericFunction LOOPS[4]
cdef void *DATA[4]
cdef char TYPES[12]
for _k, (_chars, _code) in enumerate(_SIGNATURES):
    LOOPS[_k] = _loop
    DATA[_k] = <void*><Py_ssize_t>_code
    for _j, _c in enumerate(_chars):
        TYPES[3 * _k + _j] = np.dtype(_c).num
rms_norm_gufunc = cnp.PyUFunc_FromFuncAndDataAndSignature(
    LOOPS, DATA, TYPES, 4, 2, 1, cnp.PyUFunc_None, b"rms_norm_gufunc",
    b"RMS normalization of the last axis (or the core axis chosen by ``axes``), eps=1e-6:\n"
    b"a generalized ufunc with signature (n),(n)->(n) and the same numbers as\n"
    b"``rms_norm(x, weight)``.  float16, float32, float64 (float16 data with a float32\n"
    b"weight gives float16).  See ``rmsnorm_cpu.rms_norm`` for axis tuples, groups, eps\n"
    b"and the other options.\n\n"
    b"Examples\n--------\n"
    b">>> import numpy as np, rmsnorm_cpu as rn\n"
    b">>> rn.rms_norm_gufunc(np.array([[3.0, 4.0]]), np.ones(2))\n"
    b"array([[0.8485281, 1.1313708]])\n",
    0, b"(n),(n)->(n)")
