"""The contract between _core and the other Cython modules: the C kernel
table (include/rmsnorm_cpu/dispatch.h) and the tier in use."""
from libc.stddef cimport ptrdiff_t

cdef extern from "rmsnorm_cpu/dispatch.h" nogil:
    ctypedef struct rmsn_opts:
        double eps
        int eps_mode
        int round_mid
        int stream
        int prefetch_next
    ctypedef void (*rmsn_fwd_fn)(const rmsn_opts*, ptrdiff_t, ptrdiff_t, const void*, ptrdiff_t, ptrdiff_t,
                                 void*, ptrdiff_t, ptrdiff_t, const void*, const void*, void*)
    ctypedef void (*rmsn_fwd_cols_fn)(const rmsn_opts*, ptrdiff_t, ptrdiff_t, const void*, ptrdiff_t, ptrdiff_t,
                                      void*, ptrdiff_t, ptrdiff_t, const void*, const void*, void*, ptrdiff_t)
    ctypedef void (*rmsn_add_fn)(const rmsn_opts*, ptrdiff_t, const void*, ptrdiff_t, const void*, ptrdiff_t,
                                 void*, ptrdiff_t, void*, ptrdiff_t, const void*, const void*, void*)
    ctypedef void (*rmsn_bwd_fn)(const rmsn_opts*, ptrdiff_t, const void*, ptrdiff_t, const void*, ptrdiff_t,
                                 void*, ptrdiff_t, const void*, const void*, void*, void*)
    ctypedef struct rmsn_kernels:
        rmsn_fwd_fn fwd[4][4]
        rmsn_fwd_cols_fn fwd_cols[4][4]
        rmsn_add_fn add[4][4]
        rmsn_bwd_fn bwd[4]
        int tier
        int cpu
    enum: RMSN_F16
    enum: RMSN_BF16
    enum: RMSN_F32
    enum: RMSN_F64
    enum: RMSN_NDTYPES
    int RMSN_ACC_DTYPE(int a, int b)  # the acc dtype code of a kernel reading/writing dtypes a, b
    const size_t rmsn_itemsize[]
    enum: RMSN_NTIERS
    enum: RMSN_COL_TILE
    const char *rmsn_tier_names[]
    int rmsn_cpu_features()
    int rmsn_compiled_tiers()
    int rmsn_supported_tiers()
    void rmsn_select_tier(rmsn_kernels *k, int tier, int cpu)
    enum: RMSN_CPU_AVX512BF16
    void rmsn_stream_fence()


cdef const rmsn_kernels *active_kernels() noexcept nogil
