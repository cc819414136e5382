# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""The ops: the loop over slices of forward, fused add, backward, the gated norm and the quantized output, over
the C kernels.

``_spec`` turns a public call into a ``Call``.  ``forward``, ``add_forward``
and ``backward`` take it, lay its operands out (``_layout``: batch dimensions,
shape + byte strides per operand, and one normalized dimension of ``n``
elements, element stride per operand, split into ``groups`` contiguous
groups), pick the row or column kernel, cut the slices into units and hand
them to ``_runtime.run_units`` (GIL released, one static ``prange``, so a
slice's result never depends on the thread count).

``quant`` takes a ``_spec.QuantCall`` the same way.  The short paths
(``forward_rows``, ``add_rows``, ``quant_rows``, and ``forward_at``/``add_at``
for adapters holding raw memory) run small C-contiguous calls with the
default options on the same row kernel, with their checks done in the C API.
"""
import math

import numpy as np

cimport numpy as cnp
from libc.stdlib cimport free, malloc

from ._runtime cimport (RMSN_ACC_DTYPE, RMSN_BF16, RMSN_F16, RMSN_F32, RMSN_F64, RMSN_Q_E4M3, RMSN_Q_I8,
                        active_kernels, may_stream, rmsn_add_fn, rmsn_bwd_fn, rmsn_fwd_cols_fn, rmsn_fwd_fn,
                        rmsn_gated_bwd_fn, rmsn_gated_fn, rmsn_itemsize, rmsn_opts, rmsn_pages_resident,
                        rmsn_quant_add_fn, rmsn_quant_fn, rmsn_to_acc, run_units, serial_work, streaming_chosen)

cnp.import_array()

cdef extern from "numpy/arrayobject.h":
    object PyDataMem_SetHandler(object handler)

cdef extern from "_output_pool.h":
    object rmsn_output_pool_handler()
    int rmsn_output_pool_held()
    size_t RMSN_POOL_MIN

cdef enum:
    MAX_BATCH_DIMS = 64   # NPY_MAXDIMS
    MAX_OPERANDS = 5
    # Positions one column-kernel unit normalizes (a multiple of RMSN_COL_TILE).
    COL_CHUNK = 256
    # Input bytes of short rows one row-kernel unit runs in one call: the
    # per-row cost (dispatch, index arithmetic) is paid once per block.
    ROW_BLOCK_BYTES = 16 << 10
    # Backward's dweight/dbias partial sums: fixed row blocks, independent of
    # the thread count, so the reduction order never changes.  At least
    # MIN_GRAD_BLOCKS (for the threads), and at most GRAD_BLOCK_ROWS slices per
    # block: one float32 running sum over 2**18 rows was 0.25% off.  But at
    # least MIN_GRAD_BLOCK_ROWS slices per block: one block per row made the
    # partials of a small batch twice dx's bytes, freshly faulted in each call
    # ((64, 4096) bfloat16 gated backward: 11.6 -> 2.7 ns per element with
    # the allocator told to keep its memory).
    MIN_GRAD_BLOCKS = 64
    GRAD_BLOCK_ROWS = 1024
    MIN_GRAD_BLOCK_ROWS = 16

# The storage dtypes by name, with rmsnorm.h's codes: the one table (_spec reads it).
DTYPE_CODES = {"float16": RMSN_F16, "bfloat16": RMSN_BF16, "float32": RMSN_F32, "float64": RMSN_F64}


cdef inline bint _acc_f64(int a, int b) noexcept nogil:
    """Whether the kernels for dtypes a, b accumulate in float64 (rmsnorm.h's rule)."""
    return RMSN_ACC_DTYPE(a, b) == RMSN_F64


cdef inline Py_ssize_t _acc_size(int a, int b) noexcept nogil:
    """Bytes of one number in the acc type of data of codes a and b."""
    return 8 if _acc_f64(a, b) else 4


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


cdef int _norm_stride(cnp.ndarray a, tuple norm_axes, Py_ssize_t *stride) except -1:
    """1 and the element stride (any sign) of a's normalized axes flattened to
    one in *stride, or 0 when they do not flatten (or a is unaligned)."""
    cdef Py_ssize_t j, ax, dim, st, first = 0, expected = 0
    cdef bint found = False
    if not cnp.PyArray_ISALIGNED(a):
        return 0
    for j in range(len(norm_axes) - 1, -1, -1):
        ax = norm_axes[j]
        dim = cnp.PyArray_DIM(a, ax)
        if dim == 1:
            continue
        st = cnp.PyArray_STRIDE(a, ax)
        if not found:
            first, found = st, True
        elif st != expected:
            return 0
        expected = st * dim
    if not found:
        stride[0] = 1
        return 1
    if first % cnp.PyArray_ITEMSIZE(a) != 0:
        return 0
    stride[0] = first // cnp.PyArray_ITEMSIZE(a)
    return 1


cdef list _layout(Layout *L, tuple arrays, Py_ssize_t n_inputs, plan, bint unit_stride=False):
    """Describe same-shape arrays as batch dims x one normalized dim.

    An array whose normalized axes do not flatten to one stride (or that is
    unaligned; with unit_stride, whose stride is not 1) is replaced: an input
    by a contiguous copy, an output by a temporary that _finish copies into it
    afterwards.  Batch dims of one element are dropped and neighbours merged
    where every operand allows it.
    Returns the list of (output, temporary) pairs; L refers to the arrays and
    the copies, which the caller keeps alive through ``arrays`` and that list
    (inputs' copies are kept in it too, with None as output).
    """
    cdef tuple batch_axes = plan.batch_axes, norm_axes = plan.norm_axes, perm
    cdef Py_ssize_t nb = len(batch_axes), k, d, j, ns, batch = 1, size = plan.size
    cdef cnp.ndarray a, first = <cnp.ndarray>arrays[0]
    cdef list made = []
    cdef bint copied
    L.nops = len(arrays)
    L.n = plan.n
    L.groups = plan.groups
    if nb > MAX_BATCH_DIMS or L.nops > MAX_OPERANDS:
        raise ValueError("too many dimensions")
    for d in range(nb):
        batch *= cnp.PyArray_DIM(first, batch_axes[d])
    L.nslices = batch * L.groups
    if plan.trailing:  # rows of C-contiguous operands: one batch dim
        for k in range(L.nops):
            a = <cnp.ndarray>arrays[k]
            if not cnp.PyArray_ISCARRAY_RO(a):
                break
        else:
            L.nb = 1
            L.shape[0] = batch
            for k in range(L.nops):
                a = <cnp.ndarray>arrays[k]
                L.data[k] = <char*>cnp.PyArray_DATA(a)
                L.itemsize[k] = cnp.PyArray_ITEMSIZE(a)
                L.nstride[k] = 1
                L.bstride[k][0] = size * L.itemsize[k]
            return made
    perm = batch_axes + norm_axes
    L.nb = 0
    for d in range(nb):  # dims of one element add nothing
        if cnp.PyArray_DIM(first, batch_axes[d]) != 1:
            L.shape[L.nb] = cnp.PyArray_DIM(first, batch_axes[d])
            L.nb += 1
    for k in range(L.nops):
        a = <cnp.ndarray>arrays[k]
        copied = not _norm_stride(a, norm_axes, &ns) or (unit_stride and ns != 1)
        if copied:
            view = a.transpose(perm)
            if k < n_inputs:
                a = np.ascontiguousarray(view)
                made.append((None, a))
            else:
                a = np.empty(view.shape, view.dtype)
                made.append((view, a))
            ns = 1
        L.data[k] = <char*>cnp.PyArray_DATA(a)
        L.itemsize[k] = cnp.PyArray_ITEMSIZE(a)
        L.nstride[k] = ns
        j = 0
        for d in range(nb):  # a copy has the batch axes first, in order
            if cnp.PyArray_DIM(first, batch_axes[d]) != 1:
                L.bstride[k][j] = cnp.PyArray_STRIDE(a, d if copied else batch_axes[d])
                j += 1
    _merge_batch_dims(L)
    return made


cdef void _merge_batch_dims(Layout *L) noexcept:
    """Fold batch dim d into d - 1 wherever every operand steps over it evenly."""
    cdef Py_ssize_t d, e, k
    cdef bint mergeable
    for d in range(L.nb - 1, 0, -1):
        mergeable = True
        for k in range(L.nops):
            mergeable = mergeable and L.bstride[k][d - 1] == L.bstride[k][d] * L.shape[d]
        if not mergeable:
            continue
        L.shape[d - 1] *= L.shape[d]
        for k in range(L.nops):
            L.bstride[k][d - 1] = L.bstride[k][d]
        for e in range(d, L.nb - 1):
            L.shape[e] = L.shape[e + 1]
            for k in range(L.nops):
                L.bstride[k][e] = L.bstride[k][e + 1]
        L.nb -= 1


cdef void _finish(list made) except *:
    """Copy the temporaries of _layout's outputs into the caller's arrays."""
    for dst, tmp in made:
        if dst is not None:
            np.copyto(dst, tmp)


cdef bint _writes_in_place(list made):
    """Whether _layout gave every output its own memory (no temporaries)."""
    for dst, _ in made:
        if dst is not None:
            return False
    return True


cdef bint _resident(cnp.ndarray a):
    """Whether the pages of a's first and last bytes are in memory."""
    cdef const char *lo = <const char *>cnp.PyArray_DATA(a)
    cdef const char *hi = lo
    cdef int d
    for d in range(cnp.PyArray_NDIM(a)):
        if cnp.PyArray_STRIDES(a)[d] < 0:
            lo += (cnp.PyArray_DIMS(a)[d] - 1) * cnp.PyArray_STRIDES(a)[d]
        else:
            hi += (cnp.PyArray_DIMS(a)[d] - 1) * cnp.PyArray_STRIDES(a)[d]
    return rmsn_pages_resident(lo, hi + cnp.PyArray_ITEMSIZE(a))


cdef bint _may_stream(call, list made, Py_ssize_t operand_bytes, Py_ssize_t run_bytes):
    """_runtime.may_stream, and the call's outputs allow it: the kernels write
    them in place (a temporary is copied out at once) and their pages are in
    memory already (the caller's out=, or memory the allocator handed out
    again; never pages the stores themselves would fault in)."""
    cdef cnp.ndarray a
    if not (may_stream(operand_bytes, run_bytes) and _writes_in_place(made)):
        return False
    for a in call.arrays[call.n_inputs:]:
        if not _resident(a):
            return False
    return True


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
    """The kernels' options: the one place they are set."""
    o.eps = eps
    o.eps_mode = eps_mode
    o.round_mid = round_mid
    o.stream = stream
    o.prefetch_next = prefetch_next
    o.norm_before_gate = False
    o.act_silu = False


cdef Py_ssize_t _operand_bytes(const Layout *L, Py_ssize_t k) noexcept:
    return L.nslices * L.n * L.itemsize[k]



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


cdef int _run_forward(Fwd *f, int tin, int tout, call, list made) except -1:
    """y = rms_norm(x) over f.L (operands x, y), f.w, f.b and f.rstd set, for
    call (its options, and its outputs for the store policy)."""
    cdef Py_ssize_t nunits, lead, run
    cdef bint stream
    cdef Layout *L = &f.L
    cdef Py_ssize_t operand_bytes = _operand_bytes(L, 0) + _operand_bytes(L, 1)
    options = call.options
    f.row = active_kernels().fwd[tin][tout]
    f.cols = active_kernels().fwd_cols[tin][tout]
    f.accsize = _acc_size(tin, tout)
    f.by_columns = (L.nstride[0] != 1 or L.nstride[1] != 1) and L.nb > 0 and \
        L.bstride[0][L.nb - 1] == L.itemsize[0] and L.bstride[1][L.nb - 1] == L.itemsize[1]
    if f.by_columns:
        # Chunks ending on cache lines of y: a streamed run of positions that
        # ends mid-line leaves a partial line for a later chunk, which memory
        # then merges (NCHW float32 with y 16 bytes off a line: 10.5 -> 8.7 ms).
        lead = <Py_ssize_t>((64 - <size_t>L.data[1] % 64) % 64) // L.itemsize[1]
        f.shift = (COL_CHUNK - lead % COL_CHUNK) % COL_CHUNK
        f.nchunks = (L.shape[L.nb - 1] + f.shift + COL_CHUNK - 1) // COL_CHUNK
        nunits = L.nslices // L.shape[L.nb - 1] * f.nchunks
    elif L.groups == 1 and L.nb > 0:
        f.row_block = max(1, ROW_BLOCK_BYTES // (L.n * L.itemsize[0]))
        f.nchunks = (L.shape[L.nb - 1] + f.row_block - 1) // f.row_block
        nunits = L.nslices // L.shape[L.nb - 1] * f.nchunks
    else:
        f.row_block = 0
        nunits = L.nslices
    run = _run_bytes(L, 1)
    stream = _may_stream(call, made, operand_bytes, run)
    if not stream and f.row_block > 1 and L.nstride[1] == 1 and L.bstride[1][L.nb - 1] == run:
        # Short rows that follow each other in y: the kernel streams a block
        # of them as one run (RMSN_SLICE_fwd).  They gain less from it than
        # long rows (rows of 64 float32: 5% back to back), too little for the
        # trials to tell, so they stream once calls of long rows chose it.
        # (A block of one row is the run just checked.)
        stream = streaming_chosen() and _may_stream(call, made, operand_bytes,
                                                    min(f.row_block, L.shape[L.nb - 1]) * run)
    _set_opts(&f.opts, options.eps, options.eps_mode, options.round_mid, stream, _slices_follow(L, 1))
    return run_units(_fwd_unit, f, nunits, options.n_threads, L.nslices * L.n, &f.opts, operand_bytes)


def forward(call):
    """y = rms_norm(x) for a _spec.Call of rms_norm (operands x, y)."""
    cdef Fwd f
    cdef list made = _layout(&f.L, call.arrays, call.n_inputs, call.plan)
    f.w = _ptr_or_null(call.weight)
    f.b = _ptr_or_null(call.bias)
    f.rstd = _ptr_or_null(call.rstd)
    _run_forward(&f, call.codes[0], call.codes[1], call, made)
    _finish(made)


# ---- new outputs ---------------------------------------------------------------

# NumPy's memory handler for large outputs (_output_pool.h), or None.
cdef object OUTPUT_POOL = rmsn_output_pool_handler()


cdef object _pooled(size_t nbytes, make, args):
    """make(*args), under the output pool's handler when nbytes >= RMSN_POOL_MIN."""
    cdef object previous
    if OUTPUT_POOL is None or nbytes < RMSN_POOL_MIN:
        return make(*args)
    previous = PyDataMem_SetHandler(OUTPUT_POOL)
    try:
        return make(*args)
    finally:
        PyDataMem_SetHandler(previous)


def empty(shape, dtype):
    """np.empty(shape, dtype) for a new output: from the output pool when it
    is large, so that a loop of calls without out= writes into pages in
    memory rather than new ones."""
    dtype = np.dtype(dtype)
    return _pooled(math.prod(shape) * dtype.itemsize, np.empty, (shape, dtype))


def empty_like(cnp.ndarray a, dtype=None):
    """np.empty_like(a, dtype) for a new output, as empty."""
    dtype = a.dtype if dtype is None else np.dtype(dtype)
    return _pooled(a.size * dtype.itemsize, np.empty_like, (a, dtype))


def output_pool_held():
    """How many freed output buffers the pool holds now."""
    return rmsn_output_pool_held()


# ---- short paths -------------------------------------------------------------

# ml_dtypes' bfloat16 dtype once _spec has met it (ml_dtypes stays optional).
cdef object BFLOAT16 = None


def register_bfloat16(dtype):
    """Let forward_rows recognize this dtype as bfloat16."""
    global BFLOAT16
    BFLOAT16 = dtype


cdef inline int _type_code(cnp.ndarray a):
    """Kernel code of an array's dtype (float16, bfloat16, float32, float64), or -1."""
    cdef int typenum = cnp.PyArray_TYPE(a)
    if BFLOAT16 is not None and <object>cnp.PyArray_DESCR(a) is BFLOAT16:
        return RMSN_BF16
    if typenum == cnp.NPY_FLOAT16:
        return RMSN_F16
    if typenum == cnp.NPY_FLOAT32:
        return RMSN_F32
    if typenum == cnp.NPY_FLOAT64:
        return RMSN_F64
    return -1


cdef inline bint _overlap(cnp.ndarray a, cnp.ndarray b):
    """Whether the memory of two contiguous arrays overlaps."""
    cdef const char *pa = <const char*>cnp.PyArray_DATA(a)
    cdef const char *pb = <const char*>cnp.PyArray_DATA(b)
    return pa < pb + cnp.PyArray_NBYTES(b) and pb < pa + cnp.PyArray_NBYTES(a)


cdef int _small_rows_code(object a, bint writable, bint bfloat16_bits):
    """Kernel code of a short path operand: a non-empty ndarray of at most
    short_path_max() elements, C-contiguous, aligned, native, (writable,)
    float16/bfloat16/float32/float64, or uint16 holding bfloat16 bits when
    bfloat16_bits; else -1."""
    cdef cnp.ndarray arr
    if type(a) is not cnp.ndarray:
        return -1
    arr = <cnp.ndarray>a
    if cnp.PyArray_NDIM(arr) == 0 or cnp.PyArray_SIZE(arr) == 0 or cnp.PyArray_SIZE(arr) > serial_work():
        return -1
    if not (cnp.PyArray_ISCARRAY(arr) if writable else cnp.PyArray_ISCARRAY_RO(arr)):
        return -1
    if bfloat16_bits:
        return RMSN_BF16 if cnp.PyArray_TYPE(arr) == cnp.NPY_UINT16 else -1
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


cdef int _weight_code(object w, Py_ssize_t n):
    """Kernel code of the weights the short paths take: -1 for None, else
    that of a 1-d C-contiguous, aligned, native ndarray of n float16/bfloat16/
    float32/float64 numbers (converted to the acc type by _weights_in_acc);
    -2 for anything else."""
    cdef cnp.ndarray arr
    cdef int code
    if w is None:
        return -1
    if type(w) is not cnp.ndarray:
        return -2
    arr = <cnp.ndarray>w
    if cnp.PyArray_NDIM(arr) != 1 or cnp.PyArray_DIM(arr, 0) != n or not cnp.PyArray_ISCARRAY_RO(arr):
        return -2
    code = _type_code(arr)
    return -2 if code < 0 else code


cdef const void *_weights_in_acc(const void *w, int wcode, Py_ssize_t n, bint f64, void **made) except? NULL:
    """The n weights at w (kernel code wcode; NULL: none) in the acc type
    (float64 if f64, else float32): w itself, or a malloc'd copy that is also
    left in *made for the caller to free (else *made is NULL)."""
    made[0] = NULL
    if w == NULL or wcode == (RMSN_F64 if f64 else RMSN_F32):
        return w
    made[0] = malloc(n * (8 if f64 else 4))
    if made[0] == NULL:
        raise MemoryError()
    rmsn_to_acc(wcode, w, n, f64, made[0])
    return made[0]


def weights_in_acc(cnp.ndarray a, bint f64):
    """A new flat acc-typed (float64 if f64, else float32) copy of a
    C-contiguous, aligned, native float16/bfloat16/float32/float64 ndarray, or
    None for any other array (NumPy's casts of float16 take ten times as long)."""
    cdef int code = _type_code(a)
    cdef cnp.npy_intp size = cnp.PyArray_SIZE(a)
    cdef cnp.ndarray out
    if code < 0 or not cnp.PyArray_ISCARRAY_RO(a):
        return None
    out = cnp.PyArray_EMPTY(1, &size, cnp.NPY_DOUBLE if f64 else cnp.NPY_FLOAT, 0)
    rmsn_to_acc(code, cnp.PyArray_DATA(a), size, f64, cnp.PyArray_DATA(out))
    return out


def forward_rows(x, w, double eps, out=None, rstd=None, bint bfloat16_bits=False, bint round_mid=False):
    """The short path of rms_norm's common call (see _api.rms_norm): y over the
    last axis of a small C-contiguous, aligned, native float16/bfloat16/float32/
    float64 ndarray (uint16 holding bfloat16 bits when bfloat16_bits), w None
    or a vector of x.shape[-1] (_weight_code), out None, x itself, or a
    C-contiguous writable array of x's shape and dtype disjoint from x and w;
    rstd None or a C-contiguous writable acc-typed array of one element per
    row, disjoint from the others; round_mid for cast_mode="llama"; other
    arguments at their defaults.  Returns None for anything else (the caller then takes the general path, which also
    raises for bad arguments), all checks done with the C API."""
    cdef cnp.ndarray xa, y
    cdef int code = _small_rows_code(x, False, bfloat16_bits), wcode
    cdef Py_ssize_t n, rows
    cdef char *rp = NULL
    cdef void *made
    cdef const void *wp
    if code < 0:
        return None
    xa = <cnp.ndarray>x
    n = cnp.PyArray_DIM(xa, cnp.PyArray_NDIM(xa) - 1)
    wcode = _weight_code(w, n)
    if wcode == -2:
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
        if not _acc_vector(rstd, rows, _acc_f64(code, code), True) or _overlap(<cnp.ndarray>rstd, xa) or \
                _overlap(<cnp.ndarray>rstd, y) or (w is not None and _overlap(<cnp.ndarray>rstd, <cnp.ndarray>w)):
            return None
        rp = <char*>cnp.PyArray_DATA(<cnp.ndarray>rstd)
    wp = _weights_in_acc(_ptr_or_null(w), wcode, n, _acc_f64(code, code), &made)
    _rows_fwd(code, round_mid, eps, rows, n, cnp.PyArray_DATA(xa), cnp.PyArray_DATA(y), wp, rp)
    free(made)
    return y


def add_rows(x, residual, w, double eps, bint inplace, bint bfloat16_bits=False, bint round_mid=False):
    """The short path of add_rms_norm's common call (see _api.add_rms_norm):
    as forward_rows, for x and residual of one shape (dtypes may differ, both
    uint16 bfloat16 bits when bfloat16_bits) that do not share memory, w
    disjoint from them when inplace; out and residual_out not given.  Returns
    (y, new_residual) or None."""
    cdef cnp.ndarray xa, ra, y, ro
    cdef int tx = _small_rows_code(x, inplace, bfloat16_bits), tr = _small_rows_code(residual, inplace, bfloat16_bits)
    cdef int wcode
    cdef Py_ssize_t n
    cdef void *made
    cdef const void *wp
    if tx < 0 or tr < 0:
        return None
    xa, ra = <cnp.ndarray>x, <cnp.ndarray>residual
    n = cnp.PyArray_DIM(xa, cnp.PyArray_NDIM(xa) - 1)
    wcode = _weight_code(w, n)
    if not _same_shape(xa, ra) or _overlap(xa, ra) or wcode == -2:
        return None
    if inplace:
        if w is not None and (_overlap(xa, <cnp.ndarray>w) or _overlap(ra, <cnp.ndarray>w)):
            return None
        y, ro = xa, ra
    else:
        y = cnp.PyArray_EMPTY(cnp.PyArray_NDIM(xa), cnp.PyArray_DIMS(xa), cnp.PyArray_TYPE(xa), 0)
        ro = cnp.PyArray_EMPTY(cnp.PyArray_NDIM(ra), cnp.PyArray_DIMS(ra), cnp.PyArray_TYPE(ra), 0)
    wp = _weights_in_acc(_ptr_or_null(w), wcode, n, _acc_f64(tx, tr), &made)
    _rows_add(tx, tr, round_mid, eps, cnp.PyArray_SIZE(xa) // n, n, cnp.PyArray_DATA(xa), cnp.PyArray_DATA(ra),
              cnp.PyArray_DATA(ro), cnp.PyArray_DATA(y), wp)
    free(made)
    return y, ro


cdef void _rows_fwd(int code, bint round_mid, double eps, Py_ssize_t rows, Py_ssize_t n, const void *x, void *y,
                    const void *w, void *rstd) noexcept:
    """y = rms_norm(x) of `rows` adjacent rows of n elements (the short paths'
    kernel call: default options, no streaming, GIL released)."""
    cdef rmsn_opts o
    cdef rmsn_fwd_fn fn = active_kernels().fwd[code][code]
    _set_opts(&o, eps, 0, round_mid, False, True)  # the rows of x are adjacent
    with nogil:
        fn(&o, rows, n, x, 1, n * <Py_ssize_t>rmsn_itemsize[code], y, 1, n * <Py_ssize_t>rmsn_itemsize[code], w, NULL, rstd)


cdef void _rows_add(int tx, int tr, bint round_mid, double eps, Py_ssize_t rows, Py_ssize_t n, const void *x,
                    const void *r, void *ro, void *y, const void *w) noexcept:
    """ro = x + r, y = rms_norm(ro), row by row (as _rows_fwd)."""
    cdef rmsn_opts o
    cdef rmsn_add_fn fn = active_kernels().add[tx][tr]
    cdef Py_ssize_t i, xbytes = n * <Py_ssize_t>rmsn_itemsize[tx], rbytes = n * <Py_ssize_t>rmsn_itemsize[tr]
    _set_opts(&o, eps, 0, round_mid, False, False)  # no prefetch, as add_forward
    with nogil:
        for i in range(rows):
            fn(&o, n, <const char*>x + i * xbytes, 1, <const char*>r + i * rbytes, 1, <char*>ro + i * rbytes, 1,
               <char*>y + i * xbytes, 1, w, NULL, NULL)


def forward_at(size_t x, size_t y, size_t w, int wcode, Py_ssize_t rows, Py_ssize_t n, int code,
               double eps, bint round_mid, rstd_shape=None):
    """The short path for adapters that hold raw memory (torch tensors): as
    forward_rows, for `rows` C-contiguous rows of n elements of kernel code
    `code` at address x, into y (the same layout, disjoint), with the n
    weights at w (0: none) of kernel code wcode (converted when not the acc
    type).  Returns None, or with rstd_shape (of `rows` elements) a new
    acc-typed ndarray of that shape holding rstd: an ndarray costs a tenth of
    a tensor to make.  The caller vouches for the addresses; rows * n is
    small (at most 32 x 4096 is the policy)."""
    cdef bint f64 = _acc_f64(code, code)
    cdef void *made
    cdef cnp.ndarray rstd = None if rstd_shape is None else np.empty(rstd_shape, np.float64 if f64 else np.float32)
    cdef const void *wp = _weights_in_acc(<const void*>w, wcode, n, f64, &made)
    _rows_fwd(code, round_mid, eps, rows, n, <const void*>x, <void*>y, wp, NULL if rstd is None else cnp.PyArray_DATA(rstd))
    free(made)
    return rstd


def add_at(size_t x, size_t residual, size_t residual_out, size_t y, size_t w, int wcode, Py_ssize_t rows,
           Py_ssize_t n, int tx, int tr, double eps, bint round_mid):
    """add_rows for raw memory, as forward_at: residual_out and y may be
    residual and x themselves (in place)."""
    cdef void *made
    cdef const void *wp = _weights_in_acc(<const void*>w, wcode, n, _acc_f64(tx, tr), &made)
    _rows_add(tx, tr, round_mid, eps, rows, n, <const void*>x, <const void*>residual, <void*>residual_out, <void*>y, wp)
    free(made)



# ---- fused residual add + forward ------------------------------------------

cdef struct Add:
    Layout L                  # operands: x, residual, residual_out, y
    rmsn_opts opts
    rmsn_add_fn fn
    const char *w
    const char *b
    Py_ssize_t accsize


cdef void _add_unit(const void *ctx, Py_ssize_t s) noexcept nogil:
    cdef const Add *a = <const Add*>ctx
    cdef char *p[MAX_OPERANDS]
    cdef const Layout *L = &a.L
    _slice_ptrs(L, s, p)
    a.fn(&a.opts, L.n, p[0], L.nstride[0], p[1], L.nstride[1], p[2], L.nstride[2], p[3], L.nstride[3],
         _group_param(a.w, L, s, a.accsize), _group_param(a.b, L, s, a.accsize), NULL)


def add_forward(call):
    """residual_out = x + residual; y = rms_norm(residual_out), slice by slice,
    for a _spec.Call of add_rms_norm (operands x, residual, residual_out, y).

    Notes: the fused kernel's y is the row kernel's on contiguous slices.
    Where the normalized dim is strided in an operand, rms_norm(residual_out)
    would take another kernel (the column kernel, or the row kernel on a
    compact copy), which sums squares in another order; y is then recomputed
    from residual_out by rms_norm's own path, so that add_rms_norm stays
    bitwise rms_norm(x + residual) on every layout.
    """
    cdef Add a
    cdef Fwd f
    cdef Py_ssize_t k, operand_bytes = 0
    cdef int tx = call.codes[0], tr = call.codes[1]
    cdef bint strided = False
    cdef list made = _layout(&a.L, call.arrays, call.n_inputs, call.plan)
    options = call.options
    for k in range(4):
        operand_bytes += _operand_bytes(&a.L, k)
        strided = strided or a.L.nstride[k] != 1
    # No prefetch: the second pass reads residual_out, not the next x and residual.
    _set_opts(&a.opts, options.eps, options.eps_mode, options.round_mid,
              _may_stream(call, made, operand_bytes, _run_bytes(&a.L, 3)), False)
    a.fn = active_kernels().add[tx][tr]
    a.w = _ptr_or_null(call.weight)
    a.b = _ptr_or_null(call.bias)
    a.accsize = _acc_size(tx, tr)
    run_units(_add_unit, &a, a.L.nslices, options.n_threads, a.L.nslices * a.L.n, &a.opts, operand_bytes)
    if strided:
        _operands(&f.L, &a.L, 2)
        f.w, f.b, f.rstd = a.w, a.b, NULL
        _run_forward(&f, tr, tx, call, made)
    _finish(made)


cdef void _operands(Layout *dst, const Layout *src, Py_ssize_t first) noexcept:
    """dst = src restricted to its operands from `first` on (same batch dims and slices)."""
    cdef Py_ssize_t k
    dst[0] = src[0]
    dst.nops = src.nops - first
    for k in range(dst.nops):
        dst.data[k] = src.data[first + k]
        dst.itemsize[k] = src.itemsize[first + k]
        dst.nstride[k] = src.nstride[first + k]
        dst.bstride[k] = src.bstride[first + k]


# ---- backward --------------------------------------------------------------

cdef struct Bwd:
    Layout L                  # operands: dy, x, dx; gated: dy, x, gate, dx, dgate
    rmsn_opts opts
    rmsn_bwd_fn fn            # one of the two kernels, the other NULL
    rmsn_gated_bwd_fn gated_fn
    const char *w
    const char *b
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
    cdef char *dw
    cdef char *db
    for s in range(k * L.nslices // g.nblocks, (k + 1) * L.nslices // g.nblocks):
        _slice_ptrs(L, s, p)
        grp = (s % L.groups) * L.n * g.accsize
        dw = NULL if g.dw == NULL else g.dw + k * width + grp
        db = NULL if g.db == NULL else g.db + k * width + grp
        if g.fn != NULL:
            g.fn(&g.opts, L.n, p[0], L.nstride[0], p[1], L.nstride[1], p[2], L.nstride[2],
                 _group_param(g.w, L, s, g.accsize), NULL if g.rstd == NULL else g.rstd + s * g.accsize, dw, db)
        else:
            g.gated_fn(&g.opts, L.n, p[0], L.nstride[0], p[1], L.nstride[1], p[2], L.nstride[2], p[3], L.nstride[3],
                       p[4], L.nstride[4], _group_param(g.w, L, s, g.accsize), _group_param(g.b, L, s, g.accsize),
                       NULL if g.rstd == NULL else g.rstd + s * g.accsize, dw, db)


cdef int _run_backward(Bwd *g, call, Py_ssize_t operand_bytes) except -1:
    """Run g (L, opts, the kernel set) for call: its parameters, rstd and
    partial sums, in its fixed row blocks."""
    cdef int t = call.codes[0]
    g.w = _ptr_or_null(call.weight)
    g.b = _ptr_or_null(call.bias)
    g.rstd = _ptr_or_null(call.rstd)
    g.dw = _ptr_or_null(call.dweight)
    g.db = _ptr_or_null(call.dbias)
    g.accsize = _acc_size(t, t)
    g.nblocks = grad_blocks(g.L.nslices, g.L.groups * g.L.n)
    return run_units(_bwd_block, g, g.nblocks, call.options.n_threads, g.L.nslices * g.L.n, &g.opts, operand_bytes)


def grad_blocks(Py_ssize_t nslices, Py_ssize_t width):
    """How many fixed row blocks backward's partial sums use (>= 1): partials
    take max(64 rows, 1/1024 of the slices) of memory, at most 1/16 of the
    slices, capped at 2**24 numbers."""
    wanted = max(<Py_ssize_t>MIN_GRAD_BLOCKS, (nslices + GRAD_BLOCK_ROWS - 1) // GRAD_BLOCK_ROWS)
    return max(1, min((nslices + MIN_GRAD_BLOCK_ROWS - 1) // MIN_GRAD_BLOCK_ROWS, wanted,
                      max(1, (1 << 24) // max(width, 1))))


def backward(call):
    """dx, and the dweight/dbias partial sums per row block (call.dweight,
    call.dbias: [grad_blocks, groups * n], zeroed), for a _spec.Call of
    rms_norm_backward (operands dy, x, dx)."""
    cdef Bwd g
    cdef Py_ssize_t operand_bytes
    cdef list made = _layout(&g.L, call.arrays, call.n_inputs, call.plan)
    options = call.options
    operand_bytes = _operand_bytes(&g.L, 0) + _operand_bytes(&g.L, 1) + _operand_bytes(&g.L, 2)
    _set_opts(&g.opts, options.eps, options.eps_mode, False,
              _may_stream(call, made, operand_bytes, _run_bytes(&g.L, 2)), _slices_follow(&g.L, 2))
    g.fn, g.gated_fn = active_kernels().bwd[call.codes[0]], NULL
    _run_backward(&g, call, operand_bytes)
    _finish(made)


# ---- gated forward and backward ----------------------------------------------
# The row kernel with element strides serves every layout (no column kernel):
# a strided normalized axis runs it at that stride, slower than contiguous rows.

cdef struct Gated:
    Layout L                  # operands: x, gate, y
    rmsn_opts opts
    rmsn_gated_fn fn
    const char *w
    const char *b
    char *rstd
    Py_ssize_t accsize


cdef void _gated_unit(const void *ctx, Py_ssize_t s) noexcept nogil:
    cdef const Gated *a = <const Gated*>ctx
    cdef char *p[MAX_OPERANDS]
    cdef const Layout *L = &a.L
    _slice_ptrs(L, s, p)
    a.fn(&a.opts, L.n, p[0], L.nstride[0], p[1], L.nstride[1], p[2], L.nstride[2],
         _group_param(a.w, L, s, a.accsize), _group_param(a.b, L, s, a.accsize),
         NULL if a.rstd == NULL else a.rstd + s * a.accsize)


cdef int _set_gate(rmsn_opts *o, object gate) except -1:
    """The gated kernels' options from a _spec.GateOptions."""
    o.norm_before_gate = gate.norm_before_gate
    o.act_silu = gate.silu
    return 0


def gated_forward(call):
    """y = rms_norm_gated(x, gate) for a _spec.Call of rms_norm_gated (operands x, gate, y)."""
    cdef Gated a
    cdef int tin = call.codes[0], tout = call.codes[1]
    cdef list made = _layout(&a.L, call.arrays, call.n_inputs, call.plan)
    cdef Py_ssize_t operand_bytes = _operand_bytes(&a.L, 0) + _operand_bytes(&a.L, 1) + _operand_bytes(&a.L, 2)
    options = call.options
    # No streaming: the gated kernels store plainly (and so do not take part
    # in the process's streamed-or-not trials).
    _set_opts(&a.opts, options.eps, options.eps_mode, options.round_mid, False, _slices_follow(&a.L, 2))
    _set_gate(&a.opts, call.gate)
    a.fn = active_kernels().gated[tin][tout]
    a.w = _ptr_or_null(call.weight)
    a.b = _ptr_or_null(call.bias)
    a.rstd = _ptr_or_null(call.rstd)
    a.accsize = _acc_size(tin, tout)
    run_units(_gated_unit, &a, a.L.nslices, options.n_threads, a.L.nslices * a.L.n, &a.opts, operand_bytes)
    _finish(made)


def gated_rows(x, gate, w, double eps, out, bint norm_before_gate, bint silu, bint round_mid):
    """The short path of rms_norm_gated's common call (see _api.rms_norm_gated):
    as forward_rows, for a gate like x (same shape and dtype; may be x), out
    None, x, gate, or a C-contiguous writable array like x disjoint from both
    and from w.  Returns y, or None for anything else."""
    cdef cnp.ndarray xa, ga, y
    cdef int code = _small_rows_code(x, False, False), wcode
    cdef Py_ssize_t n, i, rows, row_bytes
    cdef rmsn_opts o
    cdef rmsn_gated_fn fn
    cdef const char *xp
    cdef const char *gp
    cdef char *yp
    cdef const void *wp
    cdef void *made
    if code < 0 or _small_rows_code(gate, False, False) != code or not _same_shape(<cnp.ndarray>gate, <cnp.ndarray>x):
        return None
    xa, ga = <cnp.ndarray>x, <cnp.ndarray>gate
    n = cnp.PyArray_DIM(xa, cnp.PyArray_NDIM(xa) - 1)
    wcode = _weight_code(w, n)
    if wcode == -2:
        return None
    if out is None:
        y = cnp.PyArray_EMPTY(cnp.PyArray_NDIM(xa), cnp.PyArray_DIMS(xa), cnp.PyArray_TYPE(xa), 0)
    else:
        if _small_rows_code(out, True, False) != code or not _same_shape(<cnp.ndarray>out, xa):
            return None
        y = <cnp.ndarray>out
        if (y is not xa and _overlap(y, xa)) or (y is not ga and _overlap(y, ga)) or \
                (w is not None and _overlap(y, <cnp.ndarray>w)):
            return None
    rows = cnp.PyArray_SIZE(xa) // n
    row_bytes = n * <Py_ssize_t>rmsn_itemsize[code]
    fn = active_kernels().gated[code][code]
    _set_opts(&o, eps, 0, round_mid, False, False)
    o.norm_before_gate = norm_before_gate
    o.act_silu = silu
    xp, gp, yp = <const char*>cnp.PyArray_DATA(xa), <const char*>cnp.PyArray_DATA(ga), <char*>cnp.PyArray_DATA(y)
    wp = _weights_in_acc(_ptr_or_null(w), wcode, n, _acc_f64(code, code), &made)
    with nogil:
        for i in range(rows):
            fn(&o, n, xp + i * row_bytes, 1, gp + i * row_bytes, 1, yp + i * row_bytes, 1, wp, NULL, NULL)
    free(made)
    return y


def gated_backward(call):
    """dx, dgate, and the dweight/dbias partial sums per row block (as
    backward), for a _spec.Call of rms_norm_gated_backward (operands dy, x,
    gate, dx, dgate)."""
    cdef Bwd g
    cdef int k
    cdef Py_ssize_t operand_bytes = 0
    cdef list made = _layout(&g.L, call.arrays, call.n_inputs, call.plan)
    options = call.options
    for k in range(5):
        operand_bytes += _operand_bytes(&g.L, k)
    _set_opts(&g.opts, options.eps, options.eps_mode, False, False, _slices_follow(&g.L, 3))
    _set_gate(&g.opts, call.gate)
    g.fn, g.gated_fn = NULL, active_kernels().gated_bwd[call.codes[0]]
    _run_backward(&g, call, operand_bytes)
    _finish(made)


# ---- quantized output --------------------------------------------------------

# The quantized output kinds by name, with ops.h's codes (_spec reads it).
QUANT_CODES = {"int8": RMSN_Q_I8, "float8_e4m3fn": RMSN_Q_E4M3}


cdef struct Quant:
    Layout L                  # operands: x, q; or x, residual, residual_out, q (fused add)
    rmsn_opts opts
    rmsn_quant_fn fn          # NULL when fused
    rmsn_quant_add_fn add_fn
    const char *w
    const char *b
    float *scale              # one per slice, C order
    float scale_ub
    Py_ssize_t accsize


cdef void _quant_unit(const void *ctx, Py_ssize_t s) noexcept nogil:
    cdef const Quant *u = <const Quant*>ctx
    cdef char *p[MAX_OPERANDS]
    cdef const Layout *L = &u.L
    _slice_ptrs(L, s, p)
    if u.fn != NULL:
        u.fn(&u.opts, L.n, p[0], L.nstride[0], p[1], L.nstride[1], _group_param(u.w, L, s, u.accsize),
             _group_param(u.b, L, s, u.accsize), u.scale_ub, u.scale + s)
    else:
        u.add_fn(&u.opts, L.n, p[0], L.nstride[0], p[1], L.nstride[1], p[2], L.nstride[2], p[3], L.nstride[3],
                 _group_param(u.w, L, s, u.accsize), _group_param(u.b, L, s, u.accsize), u.scale_ub, u.scale + s)


def quant(call):
    """q and the per-slice scales (and new_residual) for a _spec.QuantCall of
    rms_norm_quant: operands (x, q), or (x, residual, residual_out, q) of one
    dtype; call.pre, when set, is the add_rms_norm Call that makes
    new_residual first (residual of another dtype than x), and the operands
    are then (new_residual, q)."""
    cdef Quant u
    cdef Py_ssize_t k, operand_bytes = 0
    cdef int t = call.codes[0], kind = call.codes[1]
    cdef cnp.ndarray scale = call.scale
    cdef list made
    if call.pre is not None:
        add_forward(call.pre)
    # Unit strides: the SIMD primitives' sum of squares on every layout, so
    # q and scale are those of the contiguous call.
    made = _layout(&u.L, call.arrays, call.n_inputs, call.plan, True)
    options = call.options
    for k in range(u.L.nops):
        operand_bytes += _operand_bytes(&u.L, k)
    # Plain stores: q is a quarter or half of x's bytes, written from cache.
    # Prefetch as forward, without a residual (the fused add's passes read
    # residual_out, not the next x).
    _set_opts(&u.opts, options.eps, options.eps_mode, False, False, u.L.nops == 2 and _slices_follow(&u.L, 1))
    u.fn = active_kernels().quant[t][kind] if u.L.nops == 2 else NULL
    u.add_fn = active_kernels().quant_add[t][kind]
    u.w = _ptr_or_null(call.weight)
    u.b = _ptr_or_null(call.bias)
    u.scale = <float*>cnp.PyArray_DATA(scale)
    u.scale_ub = call.scale_ub
    u.accsize = _acc_size(t, t)
    run_units(_quant_unit, &u, u.L.nslices, options.n_threads, u.L.nslices * u.L.n, &u.opts, operand_bytes)
    _finish(made)


def quant_rows(x, w, double eps, int kind, q_dtype, float scale_ub, residual, bint inplace):
    """The short path of rms_norm_quant's common call (see _api.rms_norm_quant):
    as forward_rows, for q of kind `kind` (NumPy dtype q_dtype) and one scale a
    row; residual None, or an array of x's shape and dtype disjoint from x
    (from w too when inplace), written in place when inplace; no outputs
    given.  Returns (q, scale), (q, scale, new_residual) or None."""
    cdef cnp.ndarray xa, ra, q, scale, ro = None
    cdef int code = _small_rows_code(x, False, False)
    cdef Py_ssize_t n, rows, i, xbytes
    cdef cnp.npy_intp dims[64]
    cdef int d, ndim
    cdef rmsn_opts o
    cdef rmsn_quant_fn fn
    cdef rmsn_quant_add_fn add_fn
    cdef const char *xp
    cdef const char *rp = NULL
    cdef char *rop = NULL
    cdef char *qp
    cdef float *sp
    cdef const void *wp
    cdef void *made
    cdef int wcode
    if code < 0:
        return None
    xa = <cnp.ndarray>x
    ndim = cnp.PyArray_NDIM(xa)
    n = cnp.PyArray_DIM(xa, ndim - 1)
    wcode = _weight_code(w, n)
    if wcode == -2:
        return None
    if residual is not None:
        if _small_rows_code(residual, inplace, False) != code:
            return None
        ra = <cnp.ndarray>residual
        if not _same_shape(xa, ra) or _overlap(xa, ra) or (inplace and w is not None and
                                                          _overlap(ra, <cnp.ndarray>w)):
            return None
        ro = ra if inplace else cnp.PyArray_EMPTY(ndim, cnp.PyArray_DIMS(ra), cnp.PyArray_TYPE(ra), 0)
        rp = <const char*>cnp.PyArray_DATA(ra)
        rop = <char*>cnp.PyArray_DATA(ro)
    if kind == RMSN_Q_I8:
        q = cnp.PyArray_EMPTY(ndim, cnp.PyArray_DIMS(xa), cnp.NPY_INT8, 0)
    else:
        q = np.empty(x.shape, q_dtype)
    for d in range(ndim - 1):
        dims[d] = cnp.PyArray_DIM(xa, d)
    dims[ndim - 1] = 1
    scale = cnp.PyArray_EMPTY(ndim, dims, cnp.NPY_FLOAT32, 0)
    rows = cnp.PyArray_SIZE(xa) // n
    xbytes = n * <Py_ssize_t>rmsn_itemsize[code]
    xp = <const char*>cnp.PyArray_DATA(xa)
    qp = <char*>cnp.PyArray_DATA(q)
    sp = <float*>cnp.PyArray_DATA(scale)
    wp = _weights_in_acc(_ptr_or_null(w), wcode, n, _acc_f64(code, code), &made)
    fn = active_kernels().quant[code][kind]
    add_fn = active_kernels().quant_add[code][kind]
    _set_opts(&o, eps, 0, False, False, rp == NULL)  # as quant: the rows of x are adjacent
    with nogil:
        if rp == NULL:
            for i in range(rows):
                fn(&o, n, xp + i * xbytes, 1, qp + i * n, 1, wp, NULL, scale_ub, sp + i)
        else:
            for i in range(rows):
                add_fn(&o, n, xp + i * xbytes, 1, rp + i * xbytes, 1, rop + i * xbytes, 1, qp + i * n, 1, wp, NULL,
                       scale_ub, sp + i)
    free(made)
    return (q, scale) if ro is None else (q, scale, ro)
