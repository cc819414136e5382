# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Slice loops over the C kernels: the one module that links them.

The Python layer (``_api.py``) resolves axes, dtypes and ``out`` into a flat
description: batch dimensions (shape + byte strides per operand) and one
normalized dimension of ``n`` elements (element stride per operand), split
into ``groups`` contiguous groups.  This module releases the GIL, picks the
row or column kernel, and runs the slices (one OpenMP ``prange`` over them,
static schedule, so a slice's result never depends on the thread count).

Thread policy (README "Threads"): up to SERIAL_MAX_WORK elements a call runs
on the calling thread without a parallel region.  Otherwise it uses the OpenMP
default read at call time (so OMP_NUM_THREADS and threadpoolctl limits
apply), capped by the CPUs the process may use (affinity, cgroup quota) and by
``n_threads``.  One team at a time: a call that finds another Python thread's
team running runs serially instead of oversubscribing.  A process forked after
this one opened a team runs serially (libgomp's pool does not survive fork and
would deadlock).
"""
import os
import time

from . import _cpus

cimport numpy as cnp
from cython.parallel cimport parallel, prange
from libc.stddef cimport ptrdiff_t
from libc.stdlib cimport free, malloc

cnp.import_array()

cdef extern from "_openmp_helpers.h" nogil:
    int omp_get_max_threads()
    int omp_get_num_threads()
    enum: RMSN_OPENMP

cdef extern from *:
    """
    #if defined(__clang__)
    #define RMSN_COMPILER "clang " __clang_version__
    #elif defined(__GNUC__)
    #define RMSN_COMPILER "gcc " __VERSION__
    #else
    #define RMSN_COMPILER "unknown"
    #endif
    """
    const char *RMSN_COMPILER

cdef enum:
    MAX_BATCH_DIMS = 64   # NPY_MAXDIMS
    MAX_OPERANDS = 4
    # Calls of at most this many elements run on the calling thread without
    # opening a parallel region: decode shapes up to (32, 4096) must not pay
    # for a team (calibrated with bench/bench_threads.py).
    SERIAL_MAX_WORK = 32 * 4096
    # Positions one column-kernel unit normalizes (a multiple of RMSN_COL_TILE).
    COL_CHUNK = 256
    # Input bytes of short rows one row-kernel unit runs in one call: the
    # per-row cost (dispatch, index arithmetic) is paid once per block.
    ROW_BLOCK_BYTES = 16 << 10
    # Backward's dweight/dbias partial sums: fixed row blocks, independent of
    # the thread count, so the reduction order never changes.  At least
    # MIN_GRAD_BLOCKS (for the threads), and at most GRAD_BLOCK_ROWS slices per
    # block: one float32 running sum over 2**18 rows was 0.25% off.
    MIN_GRAD_BLOCKS = 64
    GRAD_BLOCK_ROWS = 1024
    # The store policy (docs/kernels.md): non-temporal stores may be used
    # only for outputs the caller preallocated (into pages the call itself
    # allocates they cost twice plain stores: the first touch faults them in
    # either way), when the call's operands take at least STREAM_FROM bytes
    # (a last-level cache: a cached output would only evict the call's own
    # input), and when each slice's output is a run of at least
    # STREAM_MIN_RUN bytes (shorter runs pay the partial cache lines at both
    # ends: rows of 1 KiB ran 1.5x slower streamed, rows of 4 KiB and more
    # 0.8x).  Whether they win at all depends on the machine, so the first
    # STREAM_TRIALS eligible calls of a process alternate both kinds of
    # stores and the faster per byte is kept (the bits are the same).
    STREAM_FROM = 32 << 20
    STREAM_MIN_RUN = 4096
    STREAM_TRIALS = 6

cdef rmsn_kernels KERNELS


cdef const rmsn_kernels *active_kernels() noexcept nogil:
    """The kernel table of the tier in use (for other Cython modules)."""
    return &KERNELS

TIER_NAMES = tuple(rmsn_tier_names[i].decode() for i in range(RMSN_NTIERS))


def _tier_set(int bits):
    return [TIER_NAMES[i] for i in range(RMSN_NTIERS) if bits & (1 << i)]


# Extensions of a tier the CPU may have, by the name config() reports.
EXTENSIONS = {"avx512_bf16": RMSN_CPU_AVX512BF16}


def set_isa(name=None, extensions=True):
    """Select the kernel tier (None: the best this CPU runs); return the previous one.

    The tier's extensions the CPU has are used too (AVX512-BF16: bfloat16
    rounded by VCVTNEPS2BF16, same bits) unless ``extensions`` is False (tests).
    Raises RuntimeError naming the valid choices for an unknown tier, one this
    build did not compile, or one this CPU/OS cannot run.
    """
    cdef int cpu = rmsn_cpu_features()
    previous = TIER_NAMES[KERNELS.tier]
    supported = rmsn_supported_tiers()
    if name is None or name == "":
        tier = max(i for i in range(RMSN_NTIERS) if supported & (1 << i))
    else:
        name = str(name).strip().lower()
        if name not in TIER_NAMES:
            raise RuntimeError(
                f"RMSNORM_CPU_ISA={name!r} is not a tier; valid choices: {', '.join(TIER_NAMES)}")
        tier = TIER_NAMES.index(name)
        if not rmsn_compiled_tiers() & (1 << tier):
            raise RuntimeError(
                f"ISA tier {name!r} is not compiled into this build; compiled: "
                f"{', '.join(_tier_set(rmsn_compiled_tiers()))}")
        if not supported & (1 << tier):
            raise RuntimeError(
                f"this CPU/OS cannot run ISA tier {name!r}; it supports: "
                f"{', '.join(_tier_set(supported))}")
    if not extensions:
        for bit in EXTENSIONS.values():
            cpu &= ~bit
    rmsn_select_tier(&KERNELS, tier, cpu)
    return previous


def build_info():
    """What was compiled and what this CPU runs (for rmsnorm_cpu.config())."""
    return {
        "isa": TIER_NAMES[KERNELS.tier],
        "isa_compiled": _tier_set(rmsn_compiled_tiers()),
        "isa_supported": _tier_set(rmsn_supported_tiers()),
        "isa_extensions": [name for name, bit in EXTENSIONS.items() if KERNELS.cpu & bit],
        "openmp": bool(RMSN_OPENMP),
        "n_threads_default": max(1, min(omp_get_max_threads(), _cpus.available_cpus())) if RMSN_OPENMP else 1,
        "compiler": RMSN_COMPILER.decode(),
        "stream_stores": stream_state(),
    }


cdef Py_ssize_t serial_max_work = SERIAL_MAX_WORK
cdef bint team_busy = False       # a call holds an OpenMP team (guarded by the GIL)
cdef bint team_opened = False     # this process has opened a team
cdef bint serial_after_fork = False


def _after_fork_in_child():
    global serial_after_fork, team_busy
    serial_after_fork = serial_after_fork or team_opened
    team_busy = False
    _cpus.refresh()


os.register_at_fork(after_in_child=_after_fork_in_child)


cdef Py_ssize_t stream_from = STREAM_FROM
cdef Py_ssize_t stream_min_run = STREAM_MIN_RUN


cdef int stream_trials = 0          # eligible calls timed so far
cdef double stream_trial_best[2]   # fastest seconds per operand byte: [plain, streamed]
cdef int stream_choice = -1        # -1: still trying; 0: plain stores; 1: non-temporal


cdef bint _stream(Py_ssize_t operand_bytes, bint out_given, Py_ssize_t run_bytes) noexcept:
    """Whether a call may stream its outputs (see STREAM_FROM); _run_units
    then decides whether it does."""
    return out_given and operand_bytes >= stream_from and run_bytes >= stream_min_run


def _set_store_policy(Py_ssize_t from_bytes, Py_ssize_t min_run_bytes, int choice=-1):
    """Set the streaming thresholds and choice (-1: try both again); return
    the previous thresholds and choice (bench, tests)."""
    global stream_from, stream_min_run, stream_choice, stream_trials
    previous = stream_from, stream_min_run, stream_choice
    stream_from, stream_min_run, stream_choice, stream_trials = from_bytes, min_run_bytes, choice, 0
    return previous


def stream_state():
    """The store policy's state for config(): "trying", "non-temporal" or "plain"."""
    return ("trying", "plain", "non-temporal")[stream_choice + 1]


def short_path_max():
    """Elements a short-path call may have (it runs on the calling thread)."""
    return serial_max_work


def _set_serial_max_work(Py_ssize_t n):
    """Set the serial threshold in elements; return the previous (bench/bench_threads.py)."""
    global serial_max_work
    previous, serial_max_work = serial_max_work, n
    return previous


cdef int _n_threads(object n_threads, Py_ssize_t work) except -1:
    """Threads for one call of `work` elements (see the module docstring)."""
    cdef int nt
    if not RMSN_OPENMP or work <= serial_max_work or serial_after_fork or team_busy:
        return 1
    nt = max(1, min(omp_get_max_threads(), _cpus.available_cpus()))
    if n_threads is not None and n_threads < nt:  # compared as Python ints: no overflow
        nt = n_threads
    return nt


ctypedef void (*unit_fn)(const void *ctx, Py_ssize_t u) noexcept nogil


cdef int _run_units(unit_fn fn, const void *ctx, Py_ssize_t nunits, object n_threads, Py_ssize_t work,
                    rmsn_opts *opts=NULL, Py_ssize_t operand_bytes=0) except -1:
    """fn(ctx, u) for every u < nunits, GIL released, on the policy's thread
    count.  A call that may stream (opts.stream) streams by the process's
    choice, or, while that is being made, is one of its timed trials."""
    global stream_trials, stream_choice
    cdef double t0
    cdef int trial = opts != NULL and opts.stream and stream_choice < 0
    if opts != NULL and opts.stream and not trial:
        opts.stream = stream_choice
    if not trial:
        return _run_units_now(fn, ctx, nunits, n_threads, work)
    opts.stream = stream_trials % 2
    t0 = time.perf_counter()
    _run_units_now(fn, ctx, nunits, n_threads, work)
    t0 = (time.perf_counter() - t0) / operand_bytes
    if stream_trials < 2 or t0 < stream_trial_best[opts.stream]:
        stream_trial_best[opts.stream] = t0
    stream_trials += 1
    if stream_trials >= STREAM_TRIALS:
        stream_choice = stream_trial_best[1] < stream_trial_best[0]
    return 0


cdef int _run_units_now(unit_fn fn, const void *ctx, Py_ssize_t nunits, object n_threads, Py_ssize_t work) except -1:
    global team_busy, team_opened
    cdef Py_ssize_t u
    cdef int nt = _n_threads(n_threads, work)
    if nt == 1 or nunits == 1:
        with nogil:
            for u in range(nunits):
                fn(ctx, u)
            rmsn_stream_fence()
        return 0
    team_busy = team_opened = True
    try:
        with nogil, parallel(num_threads=nt):
            for u in prange(nunits, schedule="static"):
                fn(ctx, u)
            rmsn_stream_fence()  # each thread orders its own streamed stores
    finally:
        team_busy = False
    return 0


cdef void _team_size_unit(const void *ctx, Py_ssize_t u) noexcept nogil:
    (<int*>ctx)[0] = omp_get_num_threads()


def team_size(n_threads=None, Py_ssize_t work=1 << 30):
    """Threads an OpenMP team really has for a call of `work` elements (tests, bench)."""
    cdef int size = 1
    _run_units(_team_size_unit, &size, 64, n_threads, work)
    return size


# ---- operand layout shared by every op -----------------------------------

cdef struct Layout:
    Py_ssize_t nb                                   # batch dims
    Py_ssize_t nops                                 # operands with batch strides
    Py_ssize_t shape[MAX_BATCH_DIMS]
    Py_ssize_t bstride[MAX_OPERANDS][MAX_BATCH_DIMS]  # bytes
    Py_ssize_t nstride[MAX_OPERANDS]                # elements, along the normalized dim
    Py_ssize_t itemsize[MAX_OPERANDS]
    char *data[MAX_OPERANDS]
    Py_ssize_t n                                    # normalized elements per group
    Py_ssize_t groups
    Py_ssize_t nslices                              # batch size * groups


cdef int _layout(Layout *L, list arrays, tuple shape, list bstrides, list nstrides, Py_ssize_t n,
                 Py_ssize_t groups) except -1:
    cdef Py_ssize_t d, k, batch = 1
    cdef cnp.ndarray a
    L.nb = len(shape)
    L.nops = len(arrays)
    if L.nb > MAX_BATCH_DIMS or L.nops > MAX_OPERANDS:
        raise ValueError("too many dimensions")
    for d in range(L.nb):
        L.shape[d] = shape[d]
        batch *= L.shape[d]
    for k in range(L.nops):
        a = arrays[k]
        L.data[k] = <char*>cnp.PyArray_DATA(a)
        L.itemsize[k] = cnp.PyArray_ITEMSIZE(a)
        L.nstride[k] = nstrides[k]
        for d in range(L.nb):
            L.bstride[k][d] = bstrides[k][d]
    L.n = n
    L.groups = groups
    L.nslices = batch * groups
    return 0


cdef inline void _slice_ptrs(const Layout *L, Py_ssize_t s, char **p) noexcept nogil:
    """Pointers to the start of slice s (batch index s // groups, group s % groups)."""
    cdef Py_ssize_t k, d, i, flat = s // L.groups, g = s % L.groups
    for k in range(L.nops):
        p[k] = L.data[k] + g * L.n * L.nstride[k] * L.itemsize[k]
    for d in range(L.nb - 1, -1, -1):
        i = flat % L.shape[d]
        flat = flat // L.shape[d]
        for k in range(L.nops):
            p[k] += i * L.bstride[k][d]


cdef bint _slices_follow(const Layout *L, Py_ssize_t nops) noexcept nogil:
    """Whether, in each of the first nops operands, slice s + 1 starts where
    slice s ends (C-contiguous rows): rmsn_opts.prefetch_next."""
    cdef Py_ssize_t k
    for k in range(nops):
        if L.nstride[k] != 1 or (L.nb > 0 and L.bstride[k][L.nb - 1] != L.groups * L.n * L.itemsize[k]):
            return False
    return True


cdef Py_ssize_t _run_bytes(const Layout *L, Py_ssize_t k) noexcept:
    """Bytes of operand k's contiguous runs along a slice (the store policy's
    run length: a streamed run pays for the partial cache lines at its ends)."""
    return L.n * L.itemsize[k] if L.nstride[k] == 1 else L.itemsize[k]


cdef inline const char *_group_param(const char *base, const Layout *L, Py_ssize_t s,
                                     Py_ssize_t accsize) noexcept nogil:
    """The weight/bias part that group s % groups uses (NULL stays NULL)."""
    if base == NULL:
        return NULL
    return base + (s % L.groups) * L.n * accsize


cdef inline char *_ptr_or_null(object a):
    return NULL if a is None else <char*>cnp.PyArray_DATA(a)


cdef inline void _set_opts(rmsn_opts *o, double eps, int eps_mode, bint round_mid, bint stream,
                           bint prefetch_next) noexcept:
    o.eps = eps
    o.eps_mode = eps_mode
    o.round_mid = round_mid
    o.stream = stream
    o.prefetch_next = prefetch_next


# ---- forward ---------------------------------------------------------------

cdef struct Fwd:
    Layout L                  # operands: x, y
    rmsn_opts opts
    rmsn_fwd_fn row
    rmsn_fwd_cols_fn cols
    const char *w
    const char *b
    char *rstd
    Py_ssize_t accsize
    bint by_columns           # last batch dim is unit-stride in x and y
    Py_ssize_t row_block      # rows a unit runs along the last batch dim (0: one slice a unit)
    Py_ssize_t nchunks        # column chunks, or row blocks, per (outer index, group)
    Py_ssize_t shift          # positions the first chunk lacks, so the others start on a cache line of y


cdef void _fwd_unit(const void *ctx, Py_ssize_t u) noexcept nogil:
    cdef const Fwd *f = <const Fwd*>ctx
    cdef char *p[MAX_OPERANDS]
    cdef Py_ssize_t s, c, npos, first, start, stop
    cdef const Layout *L = &f.L
    if f.by_columns:
        # Unit u = (outer batch index, chunk of positions, group); the last
        # batch dim holds the positions, so slice (outer, pos, g) is number
        # (outer * npos + pos) * groups + g.
        npos = L.shape[L.nb - 1]
        s = u % L.groups
        c = (u // L.groups) % f.nchunks
        start = max(0, c * COL_CHUNK - f.shift)
        stop = min(npos, (c + 1) * COL_CHUNK - f.shift)
        first = (u // L.groups // f.nchunks) * npos + start
        _slice_ptrs(L, first * L.groups + s, p)
        f.cols(&f.opts, L.n, stop - start, p[0], L.nstride[0], 1,
               p[1], L.nstride[1], 1, _group_param(f.w, L, s, f.accsize), _group_param(f.b, L, s, f.accsize),
               NULL if f.rstd == NULL else f.rstd + (first * L.groups + s) * f.accsize, L.groups)
    elif f.row_block == 0:  # one slice (of one group) a unit
        _slice_ptrs(L, u, p)
        f.row(&f.opts, 1, L.n, p[0], L.nstride[0], 0, p[1], L.nstride[1], 0, _group_param(f.w, L, u, f.accsize),
              _group_param(f.b, L, u, f.accsize), NULL if f.rstd == NULL else f.rstd + u * f.accsize)
    else:
        # Unit u = (outer batch index, block of row_block rows along the last
        # batch dim), one kernel call for the block.
        npos = L.shape[L.nb - 1]
        c = u % f.nchunks
        first = (u // f.nchunks) * npos + c * f.row_block
        _slice_ptrs(L, first, p)
        f.row(&f.opts, min(f.row_block, npos - c * f.row_block), L.n, p[0], L.nstride[0], L.bstride[0][L.nb - 1],
              p[1], L.nstride[1], L.bstride[1][L.nb - 1], f.w, f.b,
              NULL if f.rstd == NULL else f.rstd + first * f.accsize)


def forward(x, y, w, b, rstd, tuple shape, list bstrides, list nstrides, Py_ssize_t n, Py_ssize_t groups,
            int tin, int tout, double eps, int eps_mode, bint round_mid, n_threads, bint out_given):
    """y = rms_norm(x) over the described layout; see the module docstring."""
    cdef Fwd f
    cdef Py_ssize_t nunits, lead
    _layout(&f.L, [x, y], shape, bstrides, nstrides, n, groups)
    _set_opts(&f.opts, eps, eps_mode, round_mid, _stream(x.nbytes + y.nbytes, out_given, _run_bytes(&f.L, 1)),
              _slices_follow(&f.L, 1))
    f.row = KERNELS.fwd[tin][tout]
    f.cols = KERNELS.fwd_cols[tin][tout]
    f.w = _ptr_or_null(w)
    f.b = _ptr_or_null(b)
    f.rstd = _ptr_or_null(rstd)
    f.accsize = 8 if tin == 3 or tout == 3 else 4
    f.by_columns = (f.L.nstride[0] != 1 or f.L.nstride[1] != 1) and f.L.nb > 0 and \
        f.L.bstride[0][f.L.nb - 1] == f.L.itemsize[0] and f.L.bstride[1][f.L.nb - 1] == f.L.itemsize[1]
    if f.by_columns:
        # Chunks ending on cache lines of y: a streamed run of positions that
        # ends mid-line leaves a partial line for a later chunk, which memory
        # then merges (NCHW float32 with y 16 bytes off a line: 10.5 -> 8.7 ms).
        lead = <Py_ssize_t>((64 - <size_t>cnp.PyArray_DATA(y) % 64) % 64) // f.L.itemsize[1]
        f.shift = (COL_CHUNK - lead % COL_CHUNK) % COL_CHUNK
        f.nchunks = (f.L.shape[f.L.nb - 1] + f.shift + COL_CHUNK - 1) // COL_CHUNK
        nunits = f.L.nslices // f.L.shape[f.L.nb - 1] * f.nchunks
    elif groups == 1 and f.L.nb > 0:
        f.row_block = max(1, ROW_BLOCK_BYTES // (n * f.L.itemsize[0]))
        f.nchunks = (f.L.shape[f.L.nb - 1] + f.row_block - 1) // f.row_block
        nunits = f.L.nslices // f.L.shape[f.L.nb - 1] * f.nchunks
    else:
        f.row_block = 0
        nunits = f.L.nslices
    _run_units(_fwd_unit, &f, nunits, n_threads, f.L.nslices * n, &f.opts, x.nbytes + y.nbytes)

# ml_dtypes' bfloat16 dtype once _api has met it (ml_dtypes stays optional).
cdef object BFLOAT16 = None


def register_bfloat16(dtype):
    """Let forward_rows recognize this dtype as bfloat16."""
    global BFLOAT16
    BFLOAT16 = dtype


cdef inline int _type_code(cnp.ndarray a):
    """Kernel code of an array's dtype (float16, bfloat16, float32, float64), or -1."""
    cdef int typenum = cnp.PyArray_TYPE(a)
    if BFLOAT16 is not None and <object>cnp.PyArray_DESCR(a) is BFLOAT16:
        return 1
    if typenum == cnp.NPY_FLOAT16:
        return 0
    if typenum == cnp.NPY_FLOAT32:
        return 2
    if typenum == cnp.NPY_FLOAT64:
        return 3
    return -1


cdef inline bint _overlap(cnp.ndarray a, cnp.ndarray b):
    """Whether the memory of two contiguous arrays overlaps."""
    cdef const char *pa = <const char*>cnp.PyArray_DATA(a)
    cdef const char *pb = <const char*>cnp.PyArray_DATA(b)
    return pa < pb + cnp.PyArray_NBYTES(b) and pb < pa + cnp.PyArray_NBYTES(a)


cdef int _small_rows_code(object a, bint writable, bint bfloat16_bits):
    """Kernel code of a short path operand: a non-empty ndarray of at most
    serial_max_work elements, C-contiguous, aligned, native, (writable,)
    float16/bfloat16/float32/float64, or uint16 holding bfloat16 bits when
    bfloat16_bits; else -1."""
    cdef cnp.ndarray arr
    if type(a) is not cnp.ndarray:
        return -1
    arr = <cnp.ndarray>a
    if cnp.PyArray_NDIM(arr) == 0 or cnp.PyArray_SIZE(arr) == 0 or cnp.PyArray_SIZE(arr) > serial_max_work:
        return -1
    if not (cnp.PyArray_ISCARRAY(arr) if writable else cnp.PyArray_ISCARRAY_RO(arr)):
        return -1
    if bfloat16_bits:
        return 1 if cnp.PyArray_TYPE(arr) == cnp.NPY_UINT16 else -1
    return _type_code(arr)


cdef bint _same_shape(cnp.ndarray a, cnp.ndarray b):
    cdef int d
    if cnp.PyArray_NDIM(a) != cnp.PyArray_NDIM(b):
        return False
    for d in range(cnp.PyArray_NDIM(a)):
        if cnp.PyArray_DIM(a, d) != cnp.PyArray_DIM(b, d):
            return False
    return True


cdef bint _acc_vector(object a, Py_ssize_t n, bint f64, bint writable):
    """Whether a is a C-contiguous (writable) ndarray of n acc-typed (float64
    if f64, else float32) numbers, of any shape."""
    cdef cnp.ndarray arr
    if type(a) is not cnp.ndarray:
        return False
    arr = <cnp.ndarray>a
    return cnp.PyArray_SIZE(arr) == n and \
        (cnp.PyArray_ISCARRAY(arr) if writable else cnp.PyArray_ISCARRAY_RO(arr)) and \
        cnp.PyArray_TYPE(arr) == (cnp.NPY_DOUBLE if f64 else cnp.NPY_FLOAT)


cdef bint _short_weight(object w, Py_ssize_t n, bint f64):
    """Whether w is None or what the short paths take: a C-contiguous vector of
    n acc-typed (float64 if f64, else float32) numbers."""
    return w is None or (_acc_vector(w, n, f64, False) and cnp.PyArray_NDIM(<cnp.ndarray>w) == 1)


def forward_rows(x, w, double eps, out=None, rstd=None, bint bfloat16_bits=False, bint round_mid=False):
    """The short path of rms_norm's common call (see _api.rms_norm): y over the
    last axis of a small C-contiguous, aligned, native float16/bfloat16/float32/
    float64 ndarray (uint16 holding bfloat16 bits when bfloat16_bits), w None
    or a contiguous acc-typed vector of x.shape[-1], out None, x itself, or a
    C-contiguous writable array of x's shape and dtype disjoint from x and w;
    rstd None or a C-contiguous writable acc-typed array of one element per
    row, disjoint from the others; round_mid for cast_mode="llama"; other
    arguments at their defaults.  Returns None for anything else (the caller then takes the general path, which also
    raises for bad arguments), all checks done with the C API."""
    cdef cnp.ndarray xa, y
    cdef int code = _small_rows_code(x, False, bfloat16_bits)
    cdef Py_ssize_t n, rows
    cdef char *rp = NULL
    if code < 0:
        return None
    xa = <cnp.ndarray>x
    n = cnp.PyArray_DIM(xa, cnp.PyArray_NDIM(xa) - 1)
    if not _short_weight(w, n, code == 3):
        return None
    if out is None:
        y = cnp.PyArray_EMPTY(cnp.PyArray_NDIM(xa), cnp.PyArray_DIMS(xa), cnp.PyArray_TYPE(xa), 0)
    else:
        if _small_rows_code(out, True, bfloat16_bits) != code or not _same_shape(<cnp.ndarray>out, xa):
            return None
        y = <cnp.ndarray>out
        if (y is not xa and _overlap(y, xa)) or (w is not None and _overlap(y, <cnp.ndarray>w)):
            return None
    rows = cnp.PyArray_SIZE(xa) // n
    if rstd is not None:
        if not _acc_vector(rstd, rows, code == 3, True) or _overlap(<cnp.ndarray>rstd, xa) or \
                _overlap(<cnp.ndarray>rstd, y) or (w is not None and _overlap(<cnp.ndarray>rstd, <cnp.ndarray>w)):
            return None
        rp = <char*>cnp.PyArray_DATA(<cnp.ndarray>rstd)
    _rows_fwd(code, round_mid, eps, rows, n, cnp.PyArray_DATA(xa), cnp.PyArray_DATA(y), _ptr_or_null(w), rp)
    return y


def add_rows(x, residual, w, double eps, bint inplace, bint bfloat16_bits=False, bint round_mid=False):
    """The short path of add_rms_norm's common call (see _api.add_rms_norm):
    as forward_rows, for x and residual of one shape (dtypes may differ, both
    uint16 bfloat16 bits when bfloat16_bits) that do not share memory, w
    disjoint from them when inplace; out and residual_out not given.  Returns
    (y, new_residual) or None."""
    cdef cnp.ndarray xa, ra, y, ro
    cdef int tx = _small_rows_code(x, inplace, bfloat16_bits), tr = _small_rows_code(residual, inplace, bfloat16_bits)
    cdef Py_ssize_t n
    if tx < 0 or tr < 0:
        return None
    xa, ra = <cnp.ndarray>x, <cnp.ndarray>residual
    n = cnp.PyArray_DIM(xa, cnp.PyArray_NDIM(xa) - 1)
    if not _same_shape(xa, ra) or _overlap(xa, ra) or not _short_weight(w, n, tx == 3 or tr == 3):
        return None
    if inplace:
        if w is not None and (_overlap(xa, <cnp.ndarray>w) or _overlap(ra, <cnp.ndarray>w)):
            return None
        y, ro = xa, ra
    else:
        y = cnp.PyArray_EMPTY(cnp.PyArray_NDIM(xa), cnp.PyArray_DIMS(xa), cnp.PyArray_TYPE(xa), 0)
        ro = cnp.PyArray_EMPTY(cnp.PyArray_NDIM(ra), cnp.PyArray_DIMS(ra), cnp.PyArray_TYPE(ra), 0)
    _rows_add(tx, tr, round_mid, eps, cnp.PyArray_SIZE(xa) // n, n, cnp.PyArray_DATA(xa), cnp.PyArray_DATA(ra),
              cnp.PyArray_DATA(ro), cnp.PyArray_DATA(y), _ptr_or_null(w))
    return y, ro


cdef Py_ssize_t ITEMSIZE[4]
ITEMSIZE[:] = [2, 2, 4, 8]  # by kernel code: float16, bfloat16, float32, float64


cdef void _rows_fwd(int code, bint round_mid, double eps, Py_ssize_t rows, Py_ssize_t n, const void *x, void *y,
                    const void *w, void *rstd) noexcept:
    """y = rms_norm(x) of `rows` adjacent rows of n elements (the short paths'
    kernel call: default options, no streaming, GIL released)."""
    cdef rmsn_opts o
    cdef rmsn_fwd_fn fn = KERNELS.fwd[code][code]
    _set_opts(&o, eps, 0, round_mid, False, True)  # the rows of x are adjacent
    with nogil:
        fn(&o, rows, n, x, 1, n * ITEMSIZE[code], y, 1, n * ITEMSIZE[code], w, NULL, rstd)


cdef void _rows_add(int tx, int tr, bint round_mid, double eps, Py_ssize_t rows, Py_ssize_t n, const void *x,
                    const void *r, void *ro, void *y, const void *w) noexcept:
    """ro = x + r, y = rms_norm(ro), row by row (as _rows_fwd)."""
    cdef rmsn_opts o
    cdef rmsn_add_fn fn = KERNELS.add[tx][tr]
    cdef Py_ssize_t i, xbytes = n * ITEMSIZE[tx], rbytes = n * ITEMSIZE[tr]
    _set_opts(&o, eps, 0, round_mid, False, False)  # no prefetch, as add_forward
    with nogil:
        for i in range(rows):
            fn(&o, n, <const char*>x + i * xbytes, 1, <const char*>r + i * rbytes, 1, <char*>ro + i * rbytes, 1,
               <char*>y + i * xbytes, 1, w, NULL, NULL)


cdef extern from "rmsnorm_cpu/rmsnorm.h" nogil:
    void rmsn_to_acc(int code, const void *src, ptrdiff_t n, int acc_f64, void *dst)


cdef void *_acc_weight(size_t w, int wcode, Py_ssize_t n, bint f64) except? NULL:
    """A malloc'd copy of the n weights at address w (kernel code wcode) in the
    acc type (float64 if f64, else float32)."""
    cdef void *out = malloc(n * (8 if f64 else 4))
    if out == NULL:
        raise MemoryError()
    rmsn_to_acc(wcode, <const void*>w, n, f64, out)
    return out


def forward_at(size_t x, size_t y, size_t w, int wcode, size_t rstd, Py_ssize_t rows, Py_ssize_t n, int code,
               double eps, bint round_mid):
    """The short path for adapters that hold raw memory (torch tensors): as
    forward_rows, for `rows` C-contiguous rows of n elements of kernel code
    `code` at address x, into y (the same layout, disjoint), with the n
    weights at w (0: none) of kernel code wcode (converted when not the acc
    type), rstd (0: none) one acc-typed number per row.  The caller vouches
    for the addresses; rows * n is small (at most 32 x 4096 is the policy)."""
    cdef bint f64 = code == 3
    cdef void *wacc = NULL
    if w and wcode != (3 if f64 else 2):
        wacc = _acc_weight(w, wcode, n, f64)
    try:
        _rows_fwd(code, round_mid, eps, rows, n, <const void*>x, <void*>y, wacc if wacc else <const void*>w,
                  <void*>rstd)
    finally:
        free(wacc)


def add_at(size_t x, size_t residual, size_t residual_out, size_t y, size_t w, int wcode, Py_ssize_t rows,
           Py_ssize_t n, int tx, int tr, double eps, bint round_mid):
    """add_rows for raw memory, as forward_at: residual_out and y may be
    residual and x themselves (in place)."""
    cdef bint f64 = tx == 3 or tr == 3
    cdef void *wacc = NULL
    if w and wcode != (3 if f64 else 2):
        wacc = _acc_weight(w, wcode, n, f64)
    try:
        _rows_add(tx, tr, round_mid, eps, rows, n, <const void*>x, <const void*>residual, <void*>residual_out,
                  <void*>y, wacc if wacc else <const void*>w)
    finally:
        free(wacc)


# ---- fused residual add + forward ------------------------------------------

cdef struct Add:
    Layout L                  # operands: x, residual, residual_out, y
    rmsn_opts opts
    rmsn_add_fn fn
    const char *w
    const char *b
    char *rstd
    Py_ssize_t accsize


cdef void _add_unit(const void *ctx, Py_ssize_t s) noexcept nogil:
    cdef const Add *a = <const Add*>ctx
    cdef char *p[MAX_OPERANDS]
    cdef const Layout *L = &a.L
    _slice_ptrs(L, s, p)
    a.fn(&a.opts, L.n, p[0], L.nstride[0], p[1], L.nstride[1], p[2], L.nstride[2], p[3], L.nstride[3],
         _group_param(a.w, L, s, a.accsize), _group_param(a.b, L, s, a.accsize),
         NULL if a.rstd == NULL else a.rstd + s * a.accsize)


def add_forward(x, residual, residual_out, y, w, b, rstd, tuple shape, list bstrides, list nstrides,
                Py_ssize_t n, Py_ssize_t groups, int tx, int tr, double eps, int eps_mode, bint round_mid,
                n_threads, bint out_given):
    """residual_out = x + residual; y = rms_norm(residual_out), slice by slice."""
    cdef Add a
    _layout(&a.L, [x, residual, residual_out, y], shape, bstrides, nstrides, n, groups)
    # No prefetch: the second pass reads residual_out, not the next x and residual.
    _set_opts(&a.opts, eps, eps_mode, round_mid,
              _stream(x.nbytes + residual.nbytes + residual_out.nbytes + y.nbytes, out_given, _run_bytes(&a.L, 3)),
              False)
    a.fn = KERNELS.add[tx][tr]
    a.w = _ptr_or_null(w)
    a.b = _ptr_or_null(b)
    a.rstd = _ptr_or_null(rstd)
    a.accsize = 8 if tx == 3 or tr == 3 else 4
    _run_units(_add_unit, &a, a.L.nslices, n_threads, a.L.nslices * n, &a.opts,
               x.nbytes + residual.nbytes + residual_out.nbytes + y.nbytes)


# ---- backward --------------------------------------------------------------

cdef struct Bwd:
    Layout L                  # operands: dy, x, dx
    rmsn_opts opts
    rmsn_bwd_fn fn
    const char *w
    const char *rstd
    char *dw                  # [nblocks, groups * n] acc partial sums, or NULL
    char *db
    Py_ssize_t accsize
    Py_ssize_t nblocks


cdef void _bwd_block(const void *ctx, Py_ssize_t k) noexcept nogil:
    """Slices of fixed block k, in order, into block k's partial sums."""
    cdef const Bwd *g = <const Bwd*>ctx
    cdef char *p[MAX_OPERANDS]
    cdef const Layout *L = &g.L
    cdef Py_ssize_t s, grp, width = L.groups * L.n * g.accsize
    for s in range(k * L.nslices // g.nblocks, (k + 1) * L.nslices // g.nblocks):
        _slice_ptrs(L, s, p)
        grp = (s % L.groups) * L.n * g.accsize
        g.fn(&g.opts, L.n, p[0], L.nstride[0], p[1], L.nstride[1], p[2], L.nstride[2],
             _group_param(g.w, L, s, g.accsize), NULL if g.rstd == NULL else g.rstd + s * g.accsize,
             NULL if g.dw == NULL else g.dw + k * width + grp, NULL if g.db == NULL else g.db + k * width + grp)


def grad_blocks(Py_ssize_t nslices, Py_ssize_t width):
    """How many fixed row blocks backward's partial sums use (>= 1): partials
    take max(64 rows, 1/1024 of the slices) of memory, capped at 2**24 numbers."""
    wanted = max(<Py_ssize_t>MIN_GRAD_BLOCKS, (nslices + GRAD_BLOCK_ROWS - 1) // GRAD_BLOCK_ROWS)
    return max(1, min(nslices, wanted, max(1, (1 << 24) // max(width, 1))))


def backward(dy, x, dx, w, rstd, dw, db, tuple shape, list bstrides, list nstrides, Py_ssize_t n,
             Py_ssize_t groups, int t, double eps, int eps_mode, n_threads, bint out_given):
    """dx, and dw/db partial sums per row block (shape [grad_blocks, groups * n], zeroed)."""
    cdef Bwd g
    _layout(&g.L, [dy, x, dx], shape, bstrides, nstrides, n, groups)
    _set_opts(&g.opts, eps, eps_mode, False, _stream(dy.nbytes + x.nbytes + dx.nbytes, out_given, _run_bytes(&g.L, 2)),
              _slices_follow(&g.L, 2))
    g.fn = KERNELS.bwd[t]
    g.w = _ptr_or_null(w)
    g.rstd = _ptr_or_null(rstd)
    g.dw = _ptr_or_null(dw)
    g.db = _ptr_or_null(db)
    g.accsize = 8 if t == 3 else 4
    g.nblocks = grad_blocks(g.L.nslices, groups * n)
    _run_units(_bwd_block, &g, g.nblocks, n_threads, g.L.nslices * n, &g.opts, dy.nbytes + x.nbytes + dx.nbytes)


set_isa(os.environ.get("RMSNORM_CPU_ISA"))
