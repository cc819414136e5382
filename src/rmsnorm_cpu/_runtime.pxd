"""The contract between _runtime and the other Cython modules: the C kernel
table (include/rmsnorm_cpu/dispatch.h) of the tier in use, the dtype codes,
and the runner that spreads a call's units over threads."""
from libc.stddef cimport ptrdiff_t

cdef extern from "rmsnorm_cpu/rmsnorm.h" nogil:
    enum:
        RMSN_F16
        RMSN_BF16
        RMSN_F32
        RMSN_F64
        RMSN_NDTYPES
    int RMSN_ACC_DTYPE(int a, int b)  # the acc dtype code of a kernel reading/writing dtypes a, b
    const size_t rmsn_itemsize[]
    void rmsn_to_acc(int code, const void *src, ptrdiff_t n, int acc_f64, void *dst)

cdef extern from "rmsnorm_cpu/dispatch.h" nogil:
    ctypedef struct rmsn_opts:
        double eps
        int eps_mode
        int round_mid
        int stream
        int prefetch_next
        int norm_before_gate
        int act_silu
    ctypedef void (*rmsn_fwd_fn)(const rmsn_opts*, ptrdiff_t, ptrdiff_t, const void*, ptrdiff_t, ptrdiff_t,
                                 void*, ptrdiff_t, ptrdiff_t, const void*, const void*, void*)
    ctypedef void (*rmsn_fwd_cols_fn)(const rmsn_opts*, ptrdiff_t, ptrdiff_t, const void*, ptrdiff_t, ptrdiff_t,
                                      void*, ptrdiff_t, ptrdiff_t, const void*, const void*, void*, ptrdiff_t)
    ctypedef void (*rmsn_add_fn)(const rmsn_opts*, ptrdiff_t, const void*, ptrdiff_t, const void*, ptrdiff_t,
                                 void*, ptrdiff_t, void*, ptrdiff_t, const void*, const void*, void*)
    ctypedef void (*rmsn_bwd_fn)(const rmsn_opts*, ptrdiff_t, const void*, ptrdiff_t, const void*, ptrdiff_t,
                                 void*, ptrdiff_t, const void*, const void*, void*, void*)
    ctypedef void (*rmsn_gated_fn)(const rmsn_opts*, ptrdiff_t, const void*, ptrdiff_t, const void*, ptrdiff_t,
                                   void*, ptrdiff_t, const void*, const void*, void*)
    ctypedef void (*rmsn_gated_bwd_fn)(const rmsn_opts*, ptrdiff_t, const void*, ptrdiff_t, const void*, ptrdiff_t,
                                       const void*, ptrdiff_t, void*, ptrdiff_t, void*, ptrdiff_t, const void*,
                                       const void*, const void*, void*, void*)
    ctypedef void (*rmsn_quant_fn)(const rmsn_opts*, ptrdiff_t, const void*, ptrdiff_t, void*, ptrdiff_t,
                                   const void*, const void*, float, float*)
    ctypedef void (*rmsn_quant_add_fn)(const rmsn_opts*, ptrdiff_t, const void*, ptrdiff_t, const void*, ptrdiff_t,
                                       void*, ptrdiff_t, void*, ptrdiff_t, const void*, const void*, float, float*)
    enum:
        RMSN_Q_I8
        RMSN_Q_E4M3
    ctypedef struct rmsn_kernels:
        rmsn_fwd_fn fwd[4][4]
        rmsn_fwd_cols_fn fwd_cols[4][4]
        rmsn_add_fn add[4][4]
        rmsn_bwd_fn bwd[4]
        rmsn_gated_fn gated[4][4]
        rmsn_gated_bwd_fn gated_bwd[4]
        rmsn_quant_fn quant[4][2]
        rmsn_quant_add_fn quant_add[4][2]
        int tier
        int cpu
    enum: RMSN_NTIERS
    enum: RMSN_COL_TILE
    const char *rmsn_tier_names[]
    int rmsn_cpu_features()
    int rmsn_compiled_tiers()
    int rmsn_supported_tiers()
    void rmsn_select_tier(rmsn_kernels *k, int tier, int cpu)
    enum: RMSN_CPU_AVX512BF16
    void rmsn_stream_fence()
    int rmsn_pages_resident(const char *lo, const char *end)

# One unit of a call's work (a slice, a block of rows, a chunk of columns).
ctypedef void (*unit_fn)(const void *ctx, Py_ssize_t u) noexcept nogil

cdef const rmsn_kernels *active_kernels() noexcept nogil
cdef Py_ssize_t serial_work() noexcept
cdef bint may_stream(Py_ssize_t operand_bytes, Py_ssize_t run_bytes) noexcept
cdef bint streaming_chosen() noexcept
cdef int run_units(unit_fn fn, const void *ctx, Py_ssize_t nunits, object n_threads, Py_ssize_t work,
                   rmsn_opts *opts, Py_ssize_t operand_bytes) except -1
