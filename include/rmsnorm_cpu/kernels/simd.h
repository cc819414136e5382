/*
 * The SIMD primitives of slice.h written once over a tier's vector helpers,
 * so AVX2, AVX-512 and NEON differ only in vector width and in how they load,
 * store and convert (kernels/avx2.h, avx512.h, neon.h).  Macros only: each
 * tier expands them inside its own target region, with
 *   RMSN_SIMD_FOR_EACH_DTYPE_ACC(RMSN_SIMD_DTYPE_ACC, <ISA>)   per-dtype primitives
 *   RMSN_FOR_EACH_KERNEL(RMSN_NO_KERNEL, RMSN_SIMD_KERNEL, <ISA>) every SIMD entry of
 *       ops.h: its primitives (RMSN_SIMD_PRIM_<op>) and its kernel, named by
 *       the tier's column of the entry (RMSN_SLICE_<op> of slice.h).
 *
 * A tier <ISA> provides, for ACC in {f32, f64}:
 *   rmsn_v<ACC>_<ISA>                    the vector type, RMSN_LANES_<ACC>_<ISA> lanes
 *   rmsn_vzero/vset1/vadd/vsub/vmul_<ACC>_<ISA>, rmsn_vfma_<ACC>_<ISA>(a, b, c) = a*b+c
 *                                        (RMSN_SIMD_ACC_TYPE makes them from the intrinsics),
 *   rmsn_vhsum_<ACC>_<ISA>(v)            horizontal sum in a fixed order
 * for f32 only (the gate activation, RMSN_SIMD_GATE):
 *   rmsn_vclamp_f32_<ISA>(v, lo, hi)     min(max(v, lo), hi) letting a NaN v through
 *   rmsn_vpow2neg_f32_<ISA>(t)           2^(-m-1) for t = 1.5 * 2^23 + m, integral m in [-128, 124]
 *   rmsn_vdiv_f32_<ISA>(a, b)            IEEE division
 * and for each (storage T, ACC) of RMSN_SIMD_FOR_EACH_DTYPE_ACC:
 *   rmsn_vload_<T>_<ACC>_<ISA>(p), rmsn_vloadn_..(p, m)    widen exactly; loadn reads m < LANES
 *                                                          elements, the other lanes are 0
 *   rmsn_vstore_<T>_<ACC>_<ISA>(p, v), rmsn_vstoren_..(p, v, m)   round once (rmsnorm.h)
 *   rmsn_vround_<T>_<ACC>_<ISA>(v)       round to T and back (cast_mode="llama")
 *   rmsn_vstream_<T>_<ACC>_<ISA>(p, v)   non-temporal store of a full vector to p aligned
 *                                        to LANES * sizeof(T) (the caller fences once per
 *                                        thread: rmsn_stream_fence() in dispatch.h)
 *   the pair helpers of two vectors at once (RMSN_SIMD_NATURAL_PAIR, or the tier's own
 *                                        where another lane order is cheaper)
 *
 * Every primitive handles contiguous data (unit strides) and hands any other
 * layout to the scalar primitive.  Loads are unaligned.  A tail of m < LANES
 * elements runs the same vector code on a partial vector, so an element's
 * result does not depend on where the row ends.  Sums of squares use four
 * independent accumulators and FMA; the scale pass multiplies and adds
 * separately, so every tier turns the same rstd into the same bits
 * (rmsnorm.h).
 */
#ifndef RMSN_KERNELS_SIMD_H
#define RMSN_KERNELS_SIMD_H

#include "scalar.h"

/* The per-vector helpers must inline into their loops: the compiler left
 * the bfloat16 store (integer rounding) out of line, a call per 8 elements
 * that made the AVX2 bfloat16 forward several times slower than float16's. */
#if defined(__GNUC__) || defined(__clang__)
#define RMSN_VINLINE static inline __attribute__((always_inline))
#else
#define RMSN_VINLINE static inline
#endif

/* The helpers of one acc vector type (arithmetic; loads and stores of the acc
 * type itself), from its intrinsics' prefix and suffix (e.g. _mm256, ps). */
#define RMSN_SIMD_ACC_TYPE(ISA, ACC, PFX, SFX)                                                              \
    RMSN_VINLINE rmsn_v##ACC##_##ISA rmsn_vload_##ACC##_##ACC##_##ISA(const rmsn_##ACC *p)                  \
    {                                                                                                       \
        return PFX##_loadu_##SFX(p);                                                                        \
    }                                                                                                       \
    RMSN_VINLINE void rmsn_vstore_##ACC##_##ACC##_##ISA(rmsn_##ACC *p, rmsn_v##ACC##_##ISA v)               \
    {                                                                                                       \
        PFX##_storeu_##SFX(p, v);                                                                           \
    }                                                                                                       \
    RMSN_VINLINE void rmsn_vstream_##ACC##_##ACC##_##ISA(rmsn_##ACC *p, rmsn_v##ACC##_##ISA v)              \
    {                                                                                                       \
        PFX##_stream_##SFX(p, v);                                                                           \
    }                                                                                                       \
    RMSN_VINLINE rmsn_v##ACC##_##ISA rmsn_vround_##ACC##_##ACC##_##ISA(rmsn_v##ACC##_##ISA v) { return v; } \
    RMSN_VINLINE rmsn_v##ACC##_##ISA rmsn_vzero_##ACC##_##ISA(void) { return PFX##_setzero_##SFX(); }       \
    RMSN_VINLINE rmsn_v##ACC##_##ISA rmsn_vset1_##ACC##_##ISA(rmsn_##ACC s) { return PFX##_set1_##SFX(s); } \
    RMSN_VINLINE rmsn_v##ACC##_##ISA rmsn_vadd_##ACC##_##ISA(rmsn_v##ACC##_##ISA a, rmsn_v##ACC##_##ISA b)  \
    {                                                                                                       \
        return PFX##_add_##SFX(a, b);                                                                       \
    }                                                                                                       \
    RMSN_VINLINE rmsn_v##ACC##_##ISA rmsn_vsub_##ACC##_##ISA(rmsn_v##ACC##_##ISA a, rmsn_v##ACC##_##ISA b)  \
    {                                                                                                       \
        return PFX##_sub_##SFX(a, b);                                                                       \
    }                                                                                                       \
    RMSN_VINLINE rmsn_v##ACC##_##ISA rmsn_vmul_##ACC##_##ISA(rmsn_v##ACC##_##ISA a, rmsn_v##ACC##_##ISA b)  \
    {                                                                                                       \
        return PFX##_mul_##SFX(a, b);                                                                       \
    }                                                                                                       \
    RMSN_VINLINE rmsn_v##ACC##_##ISA rmsn_vfma_##ACC##_##ISA(rmsn_v##ACC##_##ISA a, rmsn_v##ACC##_##ISA b,  \
                                                                rmsn_v##ACC##_##ISA c)                      \
    {                                                                                                       \
        return PFX##_fmadd_##SFX(a, b, c);                                                                  \
    }

/* The (storage, acc) types whose vector loads, stores and rounding every SIMD
 * tier provides: each dtype with the acc of its own pairs.  An entry of ops.h
 * marked SIMD may use only these (a pair with f64 on one side only runs in
 * f64 from 16-bit or f32 data, which no tier converts: scalar).  The acc types
 * first: the column sums of the others keep their partial sums in them. */
#define RMSN_SIMD_FOR_EACH_DTYPE_ACC(X, ISA) X(ISA, f32, f32) X(ISA, f64, f64) X(ISA, f16, f32) X(ISA, bf16, f32)

/* Elements ahead the forward's scale pass prefetches: the next row, or this
 * many for shorter rows (which follow each other): a row of 64 float32 ahead
 * is less than a memory latency away.  With the sum of squares and the scale
 * pass inlined into the row loop, 64 MiB of float32 rows of 64 / 256 / 1024
 * streamed went 1.0 -> 0.82 / 0.79 / 0.82 of the time (C harness, AVX2). */
#define RMSN_PREFETCH_AHEAD 4096

/* The prefetch distance in elements for slices of n: prefetch_next slices
 * ahead, at least RMSN_PREFETCH_AHEAD; 0 when the slices do not follow. */
RMSN_VINLINE ptrdiff_t rmsn_prefetch_ahead(const rmsn_opts *o, ptrdiff_t n)
{
    ptrdiff_t ahead = o->prefetch_next * n;
    return ahead && ahead < RMSN_PREFETCH_AHEAD ? RMSN_PREFETCH_AHEAD : ahead;
}

/* Prefetch the cache line at p into L2 (rmsn_opts.prefetch_next).  A hint:
 * it never faults, so p may lie past the end of the array.  Measured on the
 * bench machine (AVX-512, single thread): forward (16384, 4096) float32 from
 * 1.07x to 0.87x the memcpy time, backward (2048, 4096) kernel 5.6 -> 4.2 ms;
 * an L1 (or no-reuse) hint was slower than L2. */
RMSN_VINLINE void rmsn_prefetch_l2(const void *p)
{
#if defined(__GNUC__) || defined(__clang__)
    __builtin_prefetch(p, 0, 2);
#else
    (void)p;
#endif
}

/* Elements of y before the first address aligned for a non-temporal store of
 * vector_bytes (at most n): a partial vector, stored by rmsn_stream_bytes. */
static inline ptrdiff_t rmsn_stream_head(const void *y, size_t vector_bytes, size_t elem_bytes, ptrdiff_t n)
{
    ptrdiff_t head = (ptrdiff_t)(((0u - (uintptr_t)y) % vector_bytes) / elem_bytes);
    return head < n ? head : n;
}

/* Length of the vector step at i of n: the head (plain stores up to the
 * aligned output), then full vectors of lanes, then the tail. */
RMSN_VINLINE ptrdiff_t rmsn_step(ptrdiff_t i, ptrdiff_t head, ptrdiff_t n, ptrdiff_t lanes)
{
    return i < head ? head - i : (n - i < lanes ? n - i : lanes);
}

/* Partial loads and stores through a small stack buffer, for tiers without
 * masked 16-bit moves (AVX2, NEON).  The tier's rmsn_gather_bytes_<ISA>(buf,
 * p, nb, size) fills the size-byte buffer with the nb bytes at p and zeros.
 * AVX2 gathers them in a register and stores that once, so the full load
 * finds one store of its size to forward from: a buffer written piece by
 * piece (memset, memcpy; NEON's still is) stalled that load until the pieces
 * reached the cache, about 20 cycles a partial vector (64 MiB of
 * float32 rows of 256 with y 16 bytes off a line spent 40% of the kernel's
 * time in the partial vectors at the rows' ends). */
#define RMSN_SIMD_BUFFERED_TAIL(ISA, T, ACC)                                                            \
    RMSN_VINLINE rmsn_v##ACC##_##ISA rmsn_vloadn_##T##_##ACC##_##ISA(const rmsn_##T *p, ptrdiff_t m)    \
    {                                                                                                   \
        _Alignas(32) rmsn_##T buf[RMSN_LANES_##ACC##_##ISA];                                            \
        rmsn_gather_bytes_##ISA(buf, p, (size_t)m * sizeof *p, sizeof buf);                             \
        return rmsn_vload_##T##_##ACC##_##ISA(buf);                                                     \
    }                                                                                                   \
    RMSN_VINLINE void rmsn_vstoren_##T##_##ACC##_##ISA(rmsn_##T *p, rmsn_v##ACC##_##ISA v, ptrdiff_t m) \
    {                                                                                                   \
        _Alignas(32) rmsn_##T buf[RMSN_LANES_##ACC##_##ISA];                                            \
        rmsn_vstore_##T##_##ACC##_##ISA(buf, v);                                                        \
        rmsn_copy_small((char *)p, (const char *)buf, (size_t)m * sizeof *p, sizeof buf);              \
    }

/* Two vectors of 2 * LANES elements for the main loops, in the tier's pair
 * order for T: rmsn_vload2_<T>_<ACC>_<ISA>(p, v) widens them into v[0], v[1],
 * rmsn_vload2_acc_<T>_<ACC>_<ISA>(p, v) loads acc-typed ones (the weight) in
 * the same order, rmsn_vstore2/vstream2 round and store them back (vstream2:
 * p aligned to LANES * sizeof(T)), and rmsn_vreorder2 (an involution) turns
 * that order into the natural one (v[0]: the first LANES elements) and back.
 * Only the element-wise scale pass runs in it: the sums of squares keep the
 * natural order, where reordered lanes would meet in other additions and a
 * row holding different NaNs could end with another NaN payload.  This is
 * the natural order; AVX2's bfloat16 has its own (avx2.h). */
#define RMSN_SIMD_NATURAL_PAIR(ISA, T, ACC)                                                               \
    RMSN_VINLINE void rmsn_vload2_##T##_##ACC##_##ISA(const rmsn_##T *p, rmsn_v##ACC##_##ISA v[2])        \
    {                                                                                                     \
        v[0] = rmsn_vload_##T##_##ACC##_##ISA(p);                                                         \
        v[1] = rmsn_vload_##T##_##ACC##_##ISA(p + RMSN_LANES_##ACC##_##ISA);                              \
    }                                                                                                     \
    RMSN_VINLINE void rmsn_vload2_acc_##T##_##ACC##_##ISA(const rmsn_##ACC *p, rmsn_v##ACC##_##ISA v[2])  \
    {                                                                                                     \
        v[0] = rmsn_vload_##ACC##_##ACC##_##ISA(p);                                                       \
        v[1] = rmsn_vload_##ACC##_##ACC##_##ISA(p + RMSN_LANES_##ACC##_##ISA);                            \
    }                                                                                                     \
    RMSN_VINLINE void rmsn_vstore2_##T##_##ACC##_##ISA(rmsn_##T *p, const rmsn_v##ACC##_##ISA v[2])       \
    {                                                                                                     \
        rmsn_vstore_##T##_##ACC##_##ISA(p, v[0]);                                                         \
        rmsn_vstore_##T##_##ACC##_##ISA(p + RMSN_LANES_##ACC##_##ISA, v[1]);                              \
    }                                                                                                     \
    RMSN_VINLINE void rmsn_vstream2_##T##_##ACC##_##ISA(rmsn_##T *p, const rmsn_v##ACC##_##ISA v[2])      \
    {                                                                                                     \
        rmsn_vstream_##T##_##ACC##_##ISA(p, v[0]);                                                        \
        rmsn_vstream_##T##_##ACC##_##ISA(p + RMSN_LANES_##ACC##_##ISA, v[1]);                             \
    }                                                                                                     \
    RMSN_VINLINE void rmsn_vreorder2_##T##_##ACC##_##ISA(rmsn_v##ACC##_##ISA v[2]) { (void)v; }

/* The primitives of one (storage, acc) type.  m-element load/store (m ==
 * LANES: a full vector), called with a constant LANES in main loops, where
 * the test folds away; the output store; the sums of squares of a row and of
 * a tile of columns. */
#define RMSN_SIMD_DTYPE_ACC(ISA, T, ACC)                                                                                        \
    RMSN_VINLINE rmsn_v##ACC##_##ISA rmsn_vloadm_##T##_##ACC##_##ISA(const rmsn_##T *p, ptrdiff_t m)                            \
    {                                                                                                                           \
        return m == RMSN_LANES_##ACC##_##ISA ? rmsn_vload_##T##_##ACC##_##ISA(p)                                                \
                                             : rmsn_vloadn_##T##_##ACC##_##ISA(p, m);                                           \
    }                                                                                                                           \
    RMSN_VINLINE void rmsn_vstorem_##T##_##ACC##_##ISA(rmsn_##T *p, rmsn_v##ACC##_##ISA v, ptrdiff_t m)                         \
    {                                                                                                                           \
        if (m == RMSN_LANES_##ACC##_##ISA)                                                                                      \
            rmsn_vstore_##T##_##ACC##_##ISA(p, v);                                                                              \
        else                                                                                                                    \
            rmsn_vstoren_##T##_##ACC##_##ISA(p, v, m);                                                                          \
    }                                                                                                                           \
    /* An output store: non-temporal when streaming (a full vector: p is                                                        \
     * then aligned, see rmsn_stream_head; a partial one: rmsn_stream_bytes). */                                                \
    RMSN_VINLINE void rmsn_vput_##T##_##ACC##_##ISA(rmsn_##T *p, rmsn_v##ACC##_##ISA v, ptrdiff_t m, int stream)                \
    {                                                                                                                           \
        rmsn_##T part[RMSN_LANES_##ACC##_##ISA];                                                                                \
        if (!stream)                                                                                                            \
            rmsn_vstorem_##T##_##ACC##_##ISA(p, v, m);                                                                          \
        else if (m == RMSN_LANES_##ACC##_##ISA)                                                                                 \
            rmsn_vstream_##T##_##ACC##_##ISA(p, v);                                                                             \
        else {                                                                                                                  \
            rmsn_vstore_##T##_##ACC##_##ISA(part, v);                                                                           \
            rmsn_stream_bytes((char *)p, (const char *)part, (size_t)m * sizeof *p);                                            \
        }                                                                                                                       \
    }                                                                                                                           \
    RMSN_VINLINE rmsn_v##ACC##_##ISA rmsn_vsq_##T##_##ACC##_##ISA(const rmsn_##T *p, ptrdiff_t m,                               \
                                                                   rmsn_v##ACC##_##ISA acc)                                     \
    {                                                                                                                           \
        rmsn_v##ACC##_##ISA v = rmsn_vloadm_##T##_##ACC##_##ISA(p, m);                                                          \
        return rmsn_vfma_##ACC##_##ISA(v, v, acc);                                                                              \
    }                                                                                                                           \
    /* t = affine(t * r) on 2 * LANES elements in T's pair order (w, b loaded                                                   \
     * in it): the scale pass's steps, rounded to T after t * r with round_mid. */                                              \
    RMSN_VINLINE void rmsn_vaffine2_##T##_##ACC##_##ISA(int round_mid, rmsn_v##ACC##_##ISA t[2], const rmsn_##ACC *w,           \
                                                         const rmsn_##ACC *b, rmsn_v##ACC##_##ISA r)                            \
    {                                                                                                                           \
        rmsn_v##ACC##_##ISA c[2];                                                                                               \
        int k;                                                                                                                  \
        for (k = 0; k < 2; k++) t[k] = rmsn_vmul_##ACC##_##ISA(t[k], r);                                                        \
        if (round_mid)                                                                                                          \
            for (k = 0; k < 2; k++) t[k] = rmsn_vround_##T##_##ACC##_##ISA(t[k]);                                               \
        if (w) {                                                                                                                \
            rmsn_vload2_acc_##T##_##ACC##_##ISA(w, c);                                                                          \
            for (k = 0; k < 2; k++) t[k] = rmsn_vmul_##ACC##_##ISA(t[k], c[k]);                                                 \
        }                                                                                                                       \
        if (b) {                                                                                                                \
            rmsn_vload2_acc_##T##_##ACC##_##ISA(b, c);                                                                          \
            for (k = 0; k < 2; k++) t[k] = rmsn_vadd_##ACC##_##ISA(t[k], c[k]);                                                 \
        }                                                                                                                       \
    }                                                                                                                           \
    /* The sum of squares of a row, in four accumulators a[] over steps of 4 *                                                  \
     * LANES contiguous elements (rmsn_vsq4), then rmsn_sumsq_from: the                                                         \
     * accumulators of x[0, i), the rest of x[0, n) added.  The forward's scale                                                 \
     * pass runs the steps of the next row in its own loop (rmsn_scalesq). */                                                   \
    RMSN_VINLINE void rmsn_vsq4_##T##_##ACC##_##ISA(const rmsn_##T *x, rmsn_v##ACC##_##ISA a[4])                                \
    {                                                                                                                           \
        enum { L = RMSN_LANES_##ACC##_##ISA };                                                                                  \
        int k;                                                                                                                  \
        for (k = 0; k < 4; k++) a[k] = rmsn_vsq_##T##_##ACC##_##ISA(x + k * L, L, a[k]);                                        \
    }                                                                                                                           \
    RMSN_VINLINE rmsn_##ACC rmsn_sumsq_from_##T##_##ACC##_##ISA(ptrdiff_t n, const rmsn_##T *x, ptrdiff_t i,                    \
                                                               rmsn_v##ACC##_##ISA a[4])                                        \
    {                                                                                                                           \
        enum { L = RMSN_LANES_##ACC##_##ISA };                                                                                  \
        for (; i + 4 * L <= n; i += 4 * L) rmsn_vsq4_##T##_##ACC##_##ISA(x + i, a);                                             \
        for (; i + L <= n; i += L) a[0] = rmsn_vsq_##T##_##ACC##_##ISA(x + i, L, a[0]);                                         \
        if (i < n) a[1] = rmsn_vsq_##T##_##ACC##_##ISA(x + i, n - i, a[1]);                                                     \
        return rmsn_vhsum_##ACC##_##ISA(                                                                                        \
            rmsn_vadd_##ACC##_##ISA(rmsn_vadd_##ACC##_##ISA(a[0], a[1]), rmsn_vadd_##ACC##_##ISA(a[2], a[3])));                 \
    }                                                                                                                           \
    /* Inlined, as the scale pass: the forward's row loop then pays no call                                                     \
     * per row (what short rows were costing besides their bytes). */                                                           \
    RMSN_VINLINE rmsn_##ACC rmsn_sumsq_##T##_##ACC##_##ISA(ptrdiff_t n, const rmsn_##T *x, ptrdiff_t sx)                        \
    {                                                                                                                           \
        rmsn_v##ACC##_##ISA a[4];                                                                                               \
        if (sx != 1) return rmsn_sumsq_##T##_##ACC##_scalar(n, x, sx);                                                          \
        a[0] = a[1] = a[2] = a[3] = rmsn_vzero_##ACC##_##ISA();                                                                 \
        return rmsn_sumsq_from_##T##_##ACC##_##ISA(n, x, 0, a);                                                                 \
    }                                                                                                                           \
    /* Channel by channel, each channel's run of positions read contiguously                                                    \
     * into the partial sums ss[] (one FMA chain per position, in channel order). */                                            \
    static void rmsn_colsumsq_##T##_##ACC##_##ISA(ptrdiff_t n, ptrdiff_t npos, const rmsn_##T *x,                               \
                                                  ptrdiff_t sxc, ptrdiff_t sxp, rmsn_##ACC *ss)                                 \
    {                                                                                                                           \
        enum { L = RMSN_LANES_##ACC##_##ISA };                                                                                  \
        ptrdiff_t p, c, m;                                                                                                      \
        if (sxp != 1) {                                                                                                         \
            rmsn_colsumsq_##T##_##ACC##_scalar(n, npos, x, sxc, sxp, ss);                                                       \
            return;                                                                                                             \
        }                                                                                                                       \
        for (p = 0; p < npos; p++) ss[p] = 0;                                                                                   \
        for (c = 0; c < n; c++)                                                                                                 \
            for (p = 0; p < npos; p += L) {                                                                                     \
                m = npos - p < L ? npos - p : L;                                                                                \
                rmsn_vstorem_##ACC##_##ACC##_##ISA(                                                                             \
                    ss + p, rmsn_vsq_##T##_##ACC##_##ISA(x + c * sxc + p, m, rmsn_vloadm_##ACC##_##ACC##_##ISA(ss + p, m)), m); \
            }                                                                                                                   \
    }

/* The primitives that come with an entry of ops.h, by op (slice.h).
 * fwd: y = affine(x * r) for m elements at x, y (w, b: at the same offset, or
 * NULL; the order of operations is rmsn_affine_* of scalar.h), and the scale
 * pass of a slice. */
#define RMSN_SIMD_PRIM_fwd(ISA, TIN, TOUT, ACC)                                                                       \
    RMSN_VINLINE void rmsn_vscale_##TIN##_##TOUT##_##ISA(int round_mid, const rmsn_##TIN *x,                          \
                                                          rmsn_##TOUT *y, const rmsn_##ACC *w,                        \
                                                          const rmsn_##ACC *b, rmsn_v##ACC##_##ISA r,                 \
                                                          ptrdiff_t m, int stream)                                    \
    {                                                                                                                 \
        rmsn_v##ACC##_##ISA t = rmsn_vmul_##ACC##_##ISA(rmsn_vloadm_##TIN##_##ACC##_##ISA(x, m), r);                  \
        if (round_mid) t = rmsn_vround_##TIN##_##ACC##_##ISA(t);                                                      \
        if (w) t = rmsn_vmul_##ACC##_##ISA(t, rmsn_vloadm_##ACC##_##ACC##_##ISA(w, m));                               \
        if (b) t = rmsn_vadd_##ACC##_##ISA(t, rmsn_vloadm_##ACC##_##ACC##_##ISA(b, m));                               \
        rmsn_vput_##TOUT##_##ACC##_##ISA(y, t, m, stream);                                                            \
    }                                                                                                                 \
    /* The same for 2 * LANES elements, in x's pair order (the weight loaded in                                       \
     * it), turned into y's before the store when the types differ; the line                                          \
     * `ahead` elements on prefetched (2 * LANES elements: at most a line). */                                        \
    RMSN_VINLINE void rmsn_vscale2_##TIN##_##TOUT##_##ISA(int round_mid, const rmsn_##TIN *x, rmsn_##TOUT *y,         \
                                                           const rmsn_##ACC *w, const rmsn_##ACC *b,                  \
                                                           rmsn_v##ACC##_##ISA r, int stream, ptrdiff_t ahead)        \
    {                                                                                                                 \
        rmsn_v##ACC##_##ISA t[2];                                                                                     \
        if (ahead) rmsn_prefetch_l2(x + ahead);                                                                       \
        rmsn_vload2_##TIN##_##ACC##_##ISA(x, t);                                                                      \
        rmsn_vaffine2_##TIN##_##ACC##_##ISA(round_mid, t, w, b, r);                                                   \
        if (RMSN_DT_##TIN != RMSN_DT_##TOUT) { /* at most one of the two is not the natural order */                  \
            rmsn_vreorder2_##TIN##_##ACC##_##ISA(t);                                                                  \
            rmsn_vreorder2_##TOUT##_##ACC##_##ISA(t);                                                                 \
        }                                                                                                             \
        if (stream)                                                                                                   \
            rmsn_vstream2_##TOUT##_##ACC##_##ISA(y, t);                                                               \
        else                                                                                                          \
            rmsn_vstore2_##TOUT##_##ACC##_##ISA(y, t);                                                                \
    }                                                                                                                 \
    /* The scale pass's loops, and with xn (a contiguous row of n) the steps of                                       \
     * its sum of squares (rmsn_scalesq); inlined twice, once with the options                                        \
     * of the decode call as constants, so that loop runs without their tests. */                                     \
    RMSN_VINLINE rmsn_##ACC rmsn_scale_run_##TIN##_##TOUT##_##ISA(ptrdiff_t n, const rmsn_##TIN *x, rmsn_##TOUT *y,   \
                                                                   const rmsn_##ACC *w, const rmsn_##ACC *b,          \
                                                                   rmsn_v##ACC##_##ISA rv, int round_mid, int stream, \
                                                                   ptrdiff_t ahead, const rmsn_##TIN *xn)             \
    {                                                                                                                 \
        enum { L = RMSN_LANES_##ACC##_##ISA };                                                                        \
        rmsn_##ACC next = 0;                                                                                          \
        ptrdiff_t i = 0;                                                                                              \
        if (stream && (i = rmsn_stream_head(y, L * sizeof *y, sizeof *y, n)) > 0)                                     \
            rmsn_vscale_##TIN##_##TOUT##_##ISA(round_mid, x, y, w, b, rv, i, stream);                                 \
        if (xn) { /* the sum's accumulators live only in this loop */                                                 \
            rmsn_v##ACC##_##ISA a[4];                                                                                 \
            ptrdiff_t j = 0, k;                                                                                       \
            a[0] = a[1] = a[2] = a[3] = rmsn_vzero_##ACC##_##ISA();                                                   \
            for (; i + 4 * L <= n; i += 4 * L, j += 4 * L) {                                                          \
                rmsn_vsq4_##TIN##_##ACC##_##ISA(xn + j, a);                                                           \
                for (k = i; k < i + 4 * L; k += 2 * L)                                                                \
                    rmsn_vscale2_##TIN##_##TOUT##_##ISA(round_mid, x + k, y + k, w ? w + k : NULL, b ? b + k : NULL,  \
                                                        rv, stream, ahead);                                           \
            }                                                                                                         \
            next = rmsn_sumsq_from_##TIN##_##ACC##_##ISA(n, xn, j, a);                                                \
        }                                                                                                             \
        for (; i + 2 * L <= n; i += 2 * L)                                                                            \
            rmsn_vscale2_##TIN##_##TOUT##_##ISA(round_mid, x + i, y + i, w ? w + i : NULL, b ? b + i : NULL, rv,      \
                                                stream, ahead);                                                       \
        if (i + L <= n) {                                                                                             \
            if (ahead) rmsn_prefetch_l2(x + ahead + i);                                                               \
            rmsn_vscale_##TIN##_##TOUT##_##ISA(round_mid, x + i, y + i, w ? w + i : NULL, b ? b + i : NULL, rv, L,    \
                                               stream);                                                               \
            i += L;                                                                                                   \
        }                                                                                                             \
        if (i < n)                                                                                                    \
            rmsn_vscale_##TIN##_##TOUT##_##ISA(round_mid, x + i, y + i, w ? w + i : NULL, b ? b + i : NULL, rv,       \
                                               n - i, stream);                                                        \
        return next;                                                                                                  \
    }                                                                                                                 \
    RMSN_VINLINE rmsn_##ACC rmsn_scalesq_##TIN##_##TOUT##_##ISA(const rmsn_opts *o, ptrdiff_t n, const rmsn_##TIN *x, \
                                                                ptrdiff_t sx, rmsn_##TOUT *y, ptrdiff_t sy,           \
                                                                const rmsn_##ACC *w, const rmsn_##ACC *b,             \
                                                                rmsn_##ACC pre, rmsn_##ACC r, const rmsn_##TIN *xn)   \
    {                                                                                                                 \
        rmsn_v##ACC##_##ISA rv = rmsn_vset1_##ACC##_##ISA(r);                                                         \
        ptrdiff_t ahead = rmsn_prefetch_ahead(o, n);                                                                  \
        if (sx != 1 || sy != 1 || pre != 1) {                                                                         \
            rmsn_scale_##TIN##_##TOUT##_scalar(o, n, x, sx, y, sy, w, b, pre, r);                                     \
            return xn ? rmsn_sumsq_##TIN##_##ACC##_##ISA(n, xn, 1) : 0;                                               \
        }                                                                                                             \
        if (w && !b && !o->round_mid && !o->stream)                                                                   \
            return rmsn_scale_run_##TIN##_##TOUT##_##ISA(n, x, y, w, NULL, rv, 0, 0, ahead, xn);                      \
        return rmsn_scale_run_##TIN##_##TOUT##_##ISA(n, x, y, w, b, rv, o->round_mid, o->stream, ahead, xn);          \
    }                                                                                                                 \
    RMSN_VINLINE void rmsn_scale_##TIN##_##TOUT##_##ISA(const rmsn_opts *o, ptrdiff_t n, const rmsn_##TIN *x,         \
                                                        ptrdiff_t sx, rmsn_##TOUT *y, ptrdiff_t sy,                   \
                                                        const rmsn_##ACC *w, const rmsn_##ACC *b, rmsn_##ACC pre,     \
                                                        rmsn_##ACC r)                                                 \
    {                                                                                                                 \
        rmsn_scalesq_##TIN##_##TOUT##_##ISA(o, n, x, sx, y, sy, w, b, pre, r, NULL);                                  \
    }

/* fwd_cols: channel by channel (contiguous runs), each position with its own r[p]. */
#define RMSN_SIMD_PRIM_fwd_cols(ISA, TIN, TOUT, ACC)                                                    \
    static void rmsn_colscale_##TIN##_##TOUT##_##ISA(const rmsn_opts *o, ptrdiff_t n, ptrdiff_t npos,   \
                                                     const rmsn_##TIN *x, ptrdiff_t sxc, ptrdiff_t sxp, \
                                                     rmsn_##TOUT *y, ptrdiff_t syc, ptrdiff_t syp,      \
                                                     const rmsn_##ACC *w, const rmsn_##ACC *b,          \
                                                     const rmsn_##ACC *pre, const rmsn_##ACC *r)        \
    {                                                                                                   \
        enum { L = RMSN_LANES_##ACC##_##ISA };                                                          \
        ptrdiff_t c, p, m, head = 0;                                                                    \
        int round_mid = o->round_mid, stream = o->stream;                                               \
        if (sxp != 1 || syp != 1 || pre) {                                                              \
            rmsn_colscale_##TIN##_##TOUT##_scalar(o, n, npos, x, sxc, sxp, y, syc, syp, w, b, pre, r);  \
            return;                                                                                     \
        }                                                                                               \
        for (c = 0; c < n; c++) {                                                                       \
            rmsn_v##ACC##_##ISA wc = rmsn_vset1_##ACC##_##ISA(w ? w[c] : 1);                            \
            rmsn_v##ACC##_##ISA bc = rmsn_vset1_##ACC##_##ISA(b ? b[c] : 0);                            \
            if (stream) head = rmsn_stream_head(y + c * syc, L * sizeof *y, sizeof *y, npos);           \
            for (p = 0; p < npos; p += m) {                                                             \
                rmsn_v##ACC##_##ISA t;                                                                  \
                m = rmsn_step(p, head, npos, L);                                                        \
                t = rmsn_vmul_##ACC##_##ISA(rmsn_vloadm_##TIN##_##ACC##_##ISA(x + c * sxc + p, m),      \
                                            rmsn_vloadm_##ACC##_##ACC##_##ISA(r + p, m));               \
                if (round_mid) t = rmsn_vround_##TIN##_##ACC##_##ISA(t);                                \
                if (w) t = rmsn_vmul_##ACC##_##ISA(t, wc);                                              \
                if (b) t = rmsn_vadd_##ACC##_##ISA(t, bc);                                              \
                rmsn_vput_##TOUT##_##ACC##_##ISA(y + c * syc + p, t, m, stream);                        \
            }                                                                                           \
        }                                                                                               \
    }

/* add: ro = round(x + r), then the sum of squares of ro by the tier's own
 * sumsq (ro is in cache), so the fused add is bitwise the two steps. */
#define RMSN_SIMD_PRIM_add(ISA, TIN, TOUT, ACC)                                                                        \
    static rmsn_##ACC rmsn_addsq_##TIN##_##TOUT##_##ISA(ptrdiff_t n, const rmsn_##TIN *x, ptrdiff_t sx,                \
                                                        const rmsn_##TOUT *r, ptrdiff_t sr, rmsn_##TOUT *ro,           \
                                                        ptrdiff_t sro)                                                 \
    {                                                                                                                  \
        enum { L = RMSN_LANES_##ACC##_##ISA };                                                                         \
        ptrdiff_t i, m;                                                                                                \
        if (sx != 1 || sr != 1 || sro != 1) return rmsn_addsq_##TIN##_##TOUT##_scalar(n, x, sx, r, sr, ro, sro);       \
        for (i = 0; i < n; i += L) {                                                                                   \
            m = n - i < L ? n - i : L;                                                                                 \
            rmsn_vstorem_##TOUT##_##ACC##_##ISA(ro + i,                                                                \
                                                rmsn_vadd_##ACC##_##ISA(rmsn_vloadm_##TIN##_##ACC##_##ISA(x + i, m),   \
                                                                        rmsn_vloadm_##TOUT##_##ACC##_##ISA(r + i, m)), \
                                                m);                                                                    \
        }                                                                                                              \
        return rmsn_sumsq_##TOUT##_##ACC##_##ISA(n, ro, 1);                                                            \
    }

/* bwd: the primitives of one storage type (formulas: slice.h, scalar.h). */
#define RMSN_SIMD_PRIM_bwd(ISA, T, T_, ACC)                                                                                      \
    RMSN_VINLINE rmsn_v##ACC##_##ISA rmsn_vgx_##T##_##ISA(const rmsn_##T *dy, const rmsn_##T *x,                                 \
                                                           const rmsn_##ACC *w, ptrdiff_t m,                                     \
                                                           rmsn_v##ACC##_##ISA acc)                                              \
    {                                                                                                                            \
        rmsn_v##ACC##_##ISA g = rmsn_vloadm_##T##_##ACC##_##ISA(dy, m);                                                          \
        if (w) g = rmsn_vmul_##ACC##_##ISA(g, rmsn_vloadm_##ACC##_##ACC##_##ISA(w, m));                                          \
        return rmsn_vfma_##ACC##_##ISA(g, rmsn_vloadm_##T##_##ACC##_##ISA(x, m), acc);                                           \
    }                                                                                                                            \
    /* sum(dy * w * x), and x's sum of squares into *ss when ss is given: in                                                     \
     * the same loop, by the steps of rmsn_sumsq (its bits) while x is in                                                        \
     * registers, where a pass of its own read the row again. */                                                                 \
    static rmsn_##ACC rmsn_bwddot_##T##_##ISA(ptrdiff_t n, const rmsn_##T *dy, ptrdiff_t sdy,                                    \
                                              const rmsn_##T *x, ptrdiff_t sx, const rmsn_##ACC *w,                              \
                                              rmsn_##ACC *ss)                                                                    \
    {                                                                                                                            \
        enum { L = RMSN_LANES_##ACC##_##ISA };                                                                                   \
        rmsn_v##ACC##_##ISA a0, a1, a2, a3, q[4];                                                                                \
        ptrdiff_t i = 0;                                                                                                         \
        if (sdy != 1 || sx != 1) {                                                                                               \
            if (ss) *ss = rmsn_sumsq_##T##_##ACC##_##ISA(n, x, sx);                                                              \
            return rmsn_bwddot_##T##_scalar(n, dy, sdy, x, sx, w, NULL);                                                         \
        }                                                                                                                        \
        a0 = a1 = a2 = a3 = q[0] = q[1] = q[2] = q[3] = rmsn_vzero_##ACC##_##ISA();                                              \
        for (; i + 4 * L <= n; i += 4 * L) {                                                                                     \
            a0 = rmsn_vgx_##T##_##ISA(dy + i, x + i, w ? w + i : NULL, L, a0);                                                   \
            a1 = rmsn_vgx_##T##_##ISA(dy + i + L, x + i + L, w ? w + i + L : NULL, L, a1);                                       \
            a2 = rmsn_vgx_##T##_##ISA(dy + i + 2 * L, x + i + 2 * L, w ? w + i + 2 * L : NULL, L, a2);                           \
            a3 = rmsn_vgx_##T##_##ISA(dy + i + 3 * L, x + i + 3 * L, w ? w + i + 3 * L : NULL, L, a3);                           \
            if (ss) rmsn_vsq4_##T##_##ACC##_##ISA(x + i, q);                                                                     \
        }                                                                                                                        \
        if (ss) *ss = rmsn_sumsq_from_##T##_##ACC##_##ISA(n, x, i, q);                                                           \
        for (; i + L <= n; i += L) a0 = rmsn_vgx_##T##_##ISA(dy + i, x + i, w ? w + i : NULL, L, a0);                            \
        if (i < n) a1 = rmsn_vgx_##T##_##ISA(dy + i, x + i, w ? w + i : NULL, n - i, a1);                                        \
        return rmsn_vhsum_##ACC##_##ISA(                                                                                         \
            rmsn_vadd_##ACC##_##ISA(rmsn_vadd_##ACC##_##ISA(a0, a1), rmsn_vadd_##ACC##_##ISA(a2, a3)));                          \
    }                                                                                                                            \
    RMSN_VINLINE void rmsn_vbwd_##T##_##ISA(const rmsn_##T *dy, const rmsn_##T *x, rmsn_##T *dx,                                 \
                                             const rmsn_##ACC *w, rmsn_v##ACC##_##ISA r,                                         \
                                             rmsn_v##ACC##_##ISA k, rmsn_##ACC *dw, rmsn_##ACC *db,                              \
                                             ptrdiff_t m, int stream)                                                            \
    {                                                                                                                            \
        rmsn_v##ACC##_##ISA v = rmsn_vloadm_##T##_##ACC##_##ISA(x, m);                                                           \
        rmsn_v##ACC##_##ISA d = rmsn_vloadm_##T##_##ACC##_##ISA(dy, m), g = d;                                                   \
        if (w) g = rmsn_vmul_##ACC##_##ISA(d, rmsn_vloadm_##ACC##_##ACC##_##ISA(w, m));                                          \
        if (dw)                                                                                                                  \
            rmsn_vstorem_##ACC##_##ACC##_##ISA(                                                                                  \
                dw, rmsn_vadd_##ACC##_##ISA(rmsn_vloadm_##ACC##_##ACC##_##ISA(dw, m),                                            \
                                            rmsn_vmul_##ACC##_##ISA(d, rmsn_vmul_##ACC##_##ISA(v, r))),                          \
                m);                                                                                                              \
        if (db) rmsn_vstorem_##ACC##_##ACC##_##ISA(db, rmsn_vadd_##ACC##_##ISA(rmsn_vloadm_##ACC##_##ACC##_##ISA(db, m), d), m); \
        g = rmsn_vsub_##ACC##_##ISA(rmsn_vmul_##ACC##_##ISA(r, g), rmsn_vmul_##ACC##_##ISA(k, v));                               \
        rmsn_vput_##T##_##ACC##_##ISA(dx, g, m, stream);                                                                         \
    }                                                                                                                            \
    static void rmsn_bwdwrite_##T##_##ISA(ptrdiff_t n, const rmsn_##T *dy, ptrdiff_t sdy, const rmsn_##T *x,                     \
                                          ptrdiff_t sx, rmsn_##T *dx, ptrdiff_t sdx, const rmsn_##ACC *w,                        \
                                          rmsn_##ACC r, rmsn_##ACC k, rmsn_##ACC *dw, rmsn_##ACC *db,                            \
                                          const rmsn_opts *o)                                                                    \
    {                                                                                                                            \
        enum { L = RMSN_LANES_##ACC##_##ISA };                                                                                   \
        rmsn_v##ACC##_##ISA rv = rmsn_vset1_##ACC##_##ISA(r), kv = rmsn_vset1_##ACC##_##ISA(k);                                  \
        ptrdiff_t i = 0;                                                                                                         \
        int stream = o->stream, next = o->prefetch_next;                                                                         \
        if (sdy != 1 || sx != 1 || sdx != 1) {                                                                                   \
            rmsn_bwdwrite_##T##_scalar(n, dy, sdy, x, sx, dx, sdx, w, r, k, dw, db, o);                                          \
            return;                                                                                                              \
        }                                                                                                                        \
        /* As rmsn_scale: the streamed head, whole vectors (constant width: no                                                   \
         * partial-vector branches per load), the tail. */                                                                       \
        if (stream && (i = rmsn_stream_head(dx, L * sizeof *dx, sizeof *dx, n)) > 0)                                             \
            rmsn_vbwd_##T##_##ISA(dy, x, dx, w, rv, kv, dw, db, i, stream);                                                      \
        for (; i + L <= n; i += L) {                                                                                             \
            if (next && ((i * sizeof *dy) & 63) < L * sizeof *dy) { /* the next slice, a line at a time */                       \
                rmsn_prefetch_l2(dy + next * n + i);                                                                             \
                rmsn_prefetch_l2(x + next * n + i);                                                                              \
            }                                                                                                                    \
            rmsn_vbwd_##T##_##ISA(dy + i, x + i, dx + i, w ? w + i : NULL, rv, kv, dw ? dw + i : NULL,                           \
                                  db ? db + i : NULL, L, stream);                                                                \
        }                                                                                                                        \
        if (i < n)                                                                                                               \
            rmsn_vbwd_##T##_##ISA(dy + i, x + i, dx + i, w ? w + i : NULL, rv, kv, dw ? dw + i : NULL,                           \
                                  db ? db + i : NULL, n - i, stream);                                                            \
    }

/* The gate activation in f32 vectors, each tier's own bits (not the scalar
 * tier's: rmsnorm.h): s = 1 / (1 + exp(-g)), exp(-g) = 2^-m exp(-r) with
 * g = m ln 2 + r, |r| <= ln 2 / 2.  Adding 1.5 * 2^23 rounds g / ln 2 to m and
 * leaves m in the sum's low bits for the 2^-m; exp(-r) is a degree-6 minimax
 * polynomial (relative error 2e-8) in FMA Horner form, its coefficients
 * doubled so that 2^(-m-1), normal for every clamped m, scales it in the FMA
 * that adds the 1.  About 1 ulp of s; half the dependent operations of
 * rmsn_exp_f32's form.  The clamp of rmsnorm.h keeps its limits: exp(-g) = inf
 * below -88.72 (s = 0), 1 + exp(-g) = 1 above 86 (s = 1), NaN through; the
 * division (not a reciprocal estimate) keeps s's subnormals near -88. */
#define RMSN_VEXP_ROUND 12582912.0f /* 1.5 * 2^23 */
#define RMSN_VEXP_Q0 2.0f
#define RMSN_VEXP_Q1 -2.0f
#define RMSN_VEXP_Q2 9.999998212e-01f
#define RMSN_VEXP_Q3 -3.333283961e-01f
#define RMSN_VEXP_Q4 8.333645016e-02f
#define RMSN_VEXP_Q5 -1.674963161e-02f
#define RMSN_VEXP_Q6 2.767369151e-03f
/* RMSN_GATE_WAYS sigmoids at a time, each step on every vector before the
 * next: one vector's chain is ~60 cycles of dependent operations, and the FP
 * scheduler holds too few iterations of a loop that computes one at a time
 * to hide it (AVX2, Zen 3: 0.58 -> 0.48 ns per element).  Each vector gets
 * the same operations, so the same bits, however many go together. */
#define RMSN_GATE_WAYS 4
#define RMSN_SIMD_GATE(ISA)                                                                                     \
    RMSN_VINLINE void rmsn_vsigmoidk_f32_##ISA(rmsn_vf32_##ISA *v, int k)                                       \
    {                                                                                                           \
        rmsn_vf32_##ISA c[RMSN_GATE_WAYS], t[RMSN_GATE_WAYS], r[RMSN_GATE_WAYS], p[RMSN_GATE_WAYS], m;          \
        int j;                                                                                                  \
        for (j = 0; j < k; j++) {                                                                               \
            c[j] = rmsn_vclamp_f32_##ISA(v[j], rmsn_vset1_f32_##ISA(-RMSN_EXP_HI),                              \
                                         rmsn_vset1_f32_##ISA(-RMSN_EXP_LO));                                   \
            t[j] = rmsn_vfma_f32_##ISA(c[j], rmsn_vset1_f32_##ISA(RMSN_EXP_LOG2E),                              \
                                       rmsn_vset1_f32_##ISA(RMSN_VEXP_ROUND));                                  \
        }                                                                                                       \
        for (j = 0; j < k; j++) {                                                                               \
            m = rmsn_vsub_f32_##ISA(t[j], rmsn_vset1_f32_##ISA(RMSN_VEXP_ROUND));                               \
            r[j] = rmsn_vfma_f32_##ISA(m, rmsn_vset1_f32_##ISA(-RMSN_EXP_C1), c[j]);                            \
            r[j] = rmsn_vfma_f32_##ISA(m, rmsn_vset1_f32_##ISA(-RMSN_EXP_C2), r[j]);                            \
        }                                                                                                       \
        for (j = 0; j < k; j++)                                                                                 \
            p[j] = rmsn_vfma_f32_##ISA(rmsn_vset1_f32_##ISA(RMSN_VEXP_Q6), r[j],                                \
                                       rmsn_vset1_f32_##ISA(RMSN_VEXP_Q5));                                     \
        for (j = 0; j < k; j++) p[j] = rmsn_vfma_f32_##ISA(p[j], r[j], rmsn_vset1_f32_##ISA(RMSN_VEXP_Q4));     \
        for (j = 0; j < k; j++) p[j] = rmsn_vfma_f32_##ISA(p[j], r[j], rmsn_vset1_f32_##ISA(RMSN_VEXP_Q3));     \
        for (j = 0; j < k; j++) p[j] = rmsn_vfma_f32_##ISA(p[j], r[j], rmsn_vset1_f32_##ISA(RMSN_VEXP_Q2));     \
        for (j = 0; j < k; j++) p[j] = rmsn_vfma_f32_##ISA(p[j], r[j], rmsn_vset1_f32_##ISA(RMSN_VEXP_Q1));     \
        for (j = 0; j < k; j++) p[j] = rmsn_vfma_f32_##ISA(p[j], r[j], rmsn_vset1_f32_##ISA(RMSN_VEXP_Q0));     \
        for (j = 0; j < k; j++)                                                                                 \
            p[j] = rmsn_vfma_f32_##ISA(p[j], rmsn_vpow2neg_f32_##ISA(t[j]), rmsn_vset1_f32_##ISA(1.0f));        \
        for (j = 0; j < k; j++) v[j] = rmsn_vdiv_f32_##ISA(rmsn_vset1_f32_##ISA(1.0f), p[j]);                   \
    }                                                                                                           \
    RMSN_VINLINE rmsn_vf32_##ISA rmsn_vsigmoid_f32_##ISA(rmsn_vf32_##ISA g)                                     \
    {                                                                                                           \
        rmsn_vsigmoidk_f32_##ISA(&g, 1);                                                                        \
        return g;                                                                                               \
    }                                                                                                           \
    /* act(g) from g and s = sigmoid(g). */                                                                     \
    RMSN_VINLINE rmsn_vf32_##ISA rmsn_vact_f32_##ISA(rmsn_vf32_##ISA g, rmsn_vf32_##ISA s, int silu)            \
    {                                                                                                           \
        return silu ? rmsn_vmul_f32_##ISA(g, s) : s;                                                            \
    }

/* gated (f32 acc): one pass over x and the gate sums the squares of u (x
 * with norm_before_gate, else x * act(g)) in the four accumulators of
 * rmsn_sumsq (so gate after, the same bits) and keeps act(g) in act[] when
 * given: the sigmoids' compute overlaps the reads of both operands, and the
 * output pass reads act(g) from L1.  Then the output pass in the order of
 * rmsn_gatedscale_*_scalar. */
#define RMSN_SIMD_PRIM_gated(ISA, TIN, TOUT, ACC)                                                                   \
    /* k vectors of m elements each (k = 1 for a tail), vector j into acc[j]. */                                    \
    RMSN_VINLINE void rmsn_vgatedsq_##TIN##_##TOUT##_##ISA(const rmsn_##TIN *x, const rmsn_##TIN *g,                \
                                                            rmsn_##ACC *act, ptrdiff_t m, int k, int silu,          \
                                                            int before, rmsn_v##ACC##_##ISA *acc)                   \
    {                                                                                                               \
        enum { L = RMSN_LANES_##ACC##_##ISA };                                                                      \
        rmsn_v##ACC##_##ISA gv[RMSN_GATE_WAYS], s[RMSN_GATE_WAYS], a, u;                                            \
        int j;                                                                                                      \
        for (j = 0; j < k; j++) s[j] = gv[j] = rmsn_vloadm_##TIN##_##ACC##_##ISA(g + j * L, m);                     \
        rmsn_vsigmoidk_##ACC##_##ISA(s, k);                                                                         \
        for (j = 0; j < k; j++) {                                                                                   \
            a = rmsn_vact_##ACC##_##ISA(gv[j], s[j], silu);                                                         \
            if (act) rmsn_vstorem_##ACC##_##ACC##_##ISA(act + j * L, a, m);                                         \
            u = rmsn_vloadm_##TIN##_##ACC##_##ISA(x + j * L, m);                                                    \
            if (!before) u = rmsn_vmul_##ACC##_##ISA(u, a);                                                         \
            acc[j] = rmsn_vfma_##ACC##_##ISA(u, u, acc[j]);                                                         \
        }                                                                                                           \
    }                                                                                                               \
    static rmsn_##ACC rmsn_gatedsq_##TIN##_##TOUT##_##ISA(const rmsn_opts *o, ptrdiff_t n, const rmsn_##TIN *x,     \
                                                          ptrdiff_t sx, const rmsn_##TIN *g, ptrdiff_t sg,          \
                                                          rmsn_##ACC *act)                                          \
    {                                                                                                               \
        enum { L = RMSN_LANES_##ACC##_##ISA };                                                                      \
        rmsn_v##ACC##_##ISA a[4];                                                                                   \
        ptrdiff_t i = 0, ahead = rmsn_prefetch_ahead(o, n);                                                         \
        int silu = o->act_silu, before = o->norm_before_gate;                                                       \
        if (sx != 1 || sg != 1) return rmsn_gatedsq_##TIN##_##TOUT##_scalar(o, n, x, sx, g, sg, act);               \
        a[0] = a[1] = a[2] = a[3] = rmsn_vzero_##ACC##_##ISA();                                                     \
        for (; i + 4 * L <= n; i += 4 * L) {                                                                        \
            if (ahead) { /* 4 * L elements: at most two cache lines of each */                                      \
                rmsn_prefetch_l2(x + ahead + i), rmsn_prefetch_l2(x + ahead + i + 2 * L);                           \
                rmsn_prefetch_l2(g + ahead + i), rmsn_prefetch_l2(g + ahead + i + 2 * L);                           \
            }                                                                                                       \
            rmsn_vgatedsq_##TIN##_##TOUT##_##ISA(x + i, g + i, act ? act + i : NULL, L, 4, silu, before, a);        \
        }                                                                                                           \
        for (; i + L <= n; i += L)                                                                                  \
            rmsn_vgatedsq_##TIN##_##TOUT##_##ISA(x + i, g + i, act ? act + i : NULL, L, 1, silu, before, a);        \
        if (i < n)                                                                                                  \
            rmsn_vgatedsq_##TIN##_##TOUT##_##ISA(x + i, g + i, act ? act + i : NULL, n - i, 1, silu, before, a + 1); \
        return rmsn_vhsum_##ACC##_##ISA(                                                                            \
            rmsn_vadd_##ACC##_##ISA(rmsn_vadd_##ACC##_##ISA(a[0], a[1]), rmsn_vadd_##ACC##_##ISA(a[2], a[3])));     \
    }                                                                                                               \
    RMSN_VINLINE void rmsn_vgatedscale_##TIN##_##TOUT##_##ISA(int before, int silu, int round_mid,                 \
                                                               const rmsn_##TIN *x, const rmsn_##TIN *g,            \
                                                               rmsn_##TOUT *y, const rmsn_##ACC *w,                 \
                                                               const rmsn_##ACC *b, const rmsn_##ACC *act,          \
                                                               rmsn_v##ACC##_##ISA r, ptrdiff_t m)                  \
    {                                                                                                               \
        rmsn_v##ACC##_##ISA a, t = rmsn_vloadm_##TIN##_##ACC##_##ISA(x, m);                                         \
        if (act)                                                                                                    \
            a = rmsn_vloadm_##ACC##_##ACC##_##ISA(act, m);                                                          \
        else {                                                                                                      \
            rmsn_v##ACC##_##ISA gv = rmsn_vloadm_##TIN##_##ACC##_##ISA(g, m);                                       \
            a = rmsn_vact_##ACC##_##ISA(gv, rmsn_vsigmoid_##ACC##_##ISA(gv), silu);                                 \
        }                                                                                                           \
        if (!before) t = rmsn_vmul_##ACC##_##ISA(t, a);                                                             \
        t = rmsn_vmul_##ACC##_##ISA(t, r);                                                                          \
        if (round_mid) t = rmsn_vround_##TIN##_##ACC##_##ISA(t);                                                    \
        if (w) t = rmsn_vmul_##ACC##_##ISA(t, rmsn_vloadm_##ACC##_##ACC##_##ISA(w, m));                             \
        if (b) t = rmsn_vadd_##ACC##_##ISA(t, rmsn_vloadm_##ACC##_##ACC##_##ISA(b, m));                             \
        if (round_mid) t = rmsn_vround_##TIN##_##ACC##_##ISA(t);                                                    \
        if (before) t = rmsn_vmul_##ACC##_##ISA(t, a);                                                              \
        rmsn_vstorem_##TOUT##_##ACC##_##ISA(y, t, m);                                                               \
    }                                                                                                               \
    /* The same for 2 * LANES elements in x's pair order (act, w and b loaded                                       \
     * in it), turned into y's before the store when the types differ. */                                          \
    RMSN_VINLINE void rmsn_vgatedscale2_##TIN##_##TOUT##_##ISA(int before, int silu, int round_mid,                \
                                                                const rmsn_##TIN *x, const rmsn_##TIN *g,           \
                                                                rmsn_##TOUT *y, const rmsn_##ACC *w,                \
                                                                const rmsn_##ACC *b, const rmsn_##ACC *act,         \
                                                                rmsn_v##ACC##_##ISA r)                              \
    {                                                                                                               \
        rmsn_v##ACC##_##ISA t[2], a[2], c[2];                                                                       \
        int k;                                                                                                      \
        rmsn_vload2_##TIN##_##ACC##_##ISA(x, t);                                                                    \
        if (act)                                                                                                    \
            rmsn_vload2_acc_##TIN##_##ACC##_##ISA(act, a);                                                          \
        else {                                                                                                      \
            rmsn_vload2_##TIN##_##ACC##_##ISA(g, c);                                                                \
            a[0] = c[0], a[1] = c[1];                                                                               \
            rmsn_vsigmoidk_##ACC##_##ISA(a, 2);                                                                     \
            for (k = 0; k < 2; k++) a[k] = rmsn_vact_##ACC##_##ISA(c[k], a[k], silu);                               \
        }                                                                                                           \
        if (!before)                                                                                                \
            for (k = 0; k < 2; k++) t[k] = rmsn_vmul_##ACC##_##ISA(t[k], a[k]);                                     \
        rmsn_vaffine2_##TIN##_##ACC##_##ISA(round_mid, t, w, b, r);                                                 \
        if (round_mid)                                                                                              \
            for (k = 0; k < 2; k++) t[k] = rmsn_vround_##TIN##_##ACC##_##ISA(t[k]);                                 \
        if (before)                                                                                                 \
            for (k = 0; k < 2; k++) t[k] = rmsn_vmul_##ACC##_##ISA(t[k], a[k]);                                     \
        if (RMSN_DT_##TIN != RMSN_DT_##TOUT) { /* at most one of the two is not the natural order */                \
            rmsn_vreorder2_##TIN##_##ACC##_##ISA(t);                                                                \
            rmsn_vreorder2_##TOUT##_##ACC##_##ISA(t);                                                               \
        }                                                                                                           \
        rmsn_vstore2_##TOUT##_##ACC##_##ISA(y, t);                                                                  \
    }                                                                                                               \
    /* The output pass's loops; inlined three times, with the options of the                                       \
     * common calls (a weight, no bias, act(g) from the buffer) as constants. */                                   \
    RMSN_VINLINE void rmsn_gatedscale_run_##TIN##_##TOUT##_##ISA(ptrdiff_t n, const rmsn_##TIN *x,                  \
                                                                  const rmsn_##TIN *g, rmsn_##TOUT *y,              \
                                                                  const rmsn_##ACC *w, const rmsn_##ACC *b,         \
                                                                  const rmsn_##ACC *act, rmsn_v##ACC##_##ISA rv,    \
                                                                  int before, int silu, int round_mid)              \
    {                                                                                                               \
        enum { L = RMSN_LANES_##ACC##_##ISA };                                                                      \
        ptrdiff_t i;                                                                                                \
        for (i = 0; i + 2 * L <= n; i += 2 * L)                                                                     \
            rmsn_vgatedscale2_##TIN##_##TOUT##_##ISA(before, silu, round_mid, x + i, g + i, y + i, w ? w + i : NULL, \
                                                     b ? b + i : NULL, act ? act + i : NULL, rv);                   \
        for (; i < n; i += L)                                                                                       \
            rmsn_vgatedscale_##TIN##_##TOUT##_##ISA(before, silu, round_mid, x + i, g + i, y + i, w ? w + i : NULL, \
                                                    b ? b + i : NULL, act ? act + i : NULL, rv,                     \
                                                    n - i < L ? n - i : L);                                         \
    }                                                                                                               \
    static void rmsn_gatedscale_##TIN##_##TOUT##_##ISA(const rmsn_opts *o, ptrdiff_t n, const rmsn_##TIN *x,        \
                                                       ptrdiff_t sx, const rmsn_##TIN *g, ptrdiff_t sg,             \
                                                       rmsn_##TOUT *y, ptrdiff_t sy, const rmsn_##ACC *w,           \
                                                       const rmsn_##ACC *b, rmsn_##ACC pre, rmsn_##ACC r,           \
                                                       const rmsn_##ACC *act)                                       \
    {                                                                                                               \
        rmsn_v##ACC##_##ISA rv = rmsn_vset1_##ACC##_##ISA(r);                                                       \
        if (sx != 1 || sg != 1 || sy != 1 || pre != 1)                                                             \
            rmsn_gatedscale_##TIN##_##TOUT##_scalar(o, n, x, sx, g, sg, y, sy, w, b, pre, r, act);                  \
        else if (w && !b && act && !o->round_mid && o->norm_before_gate)                                            \
            rmsn_gatedscale_run_##TIN##_##TOUT##_##ISA(n, x, g, y, w, NULL, act, rv, 1, 0, 0);                      \
        else if (w && !b && act && !o->round_mid)                                                                   \
            rmsn_gatedscale_run_##TIN##_##TOUT##_##ISA(n, x, g, y, w, NULL, act, rv, 0, 0, 0);                      \
        else                                                                                                        \
            rmsn_gatedscale_run_##TIN##_##TOUT##_##ISA(n, x, g, y, w, b, act, rv, o->norm_before_gate, o->act_silu, \
                                                       o->round_mid);                                               \
    }

/* gated_bwd (f32 acc): the formulas of RMSN_SLICE_gated_bwd, in the order of
 * the scalar primitives.  s = sigmoid(g): the dot pass computes it and keeps
 * it in sig[] when given, the write pass reads it from there (or computes it
 * again for a slice too long for the buffer). */
#define RMSN_SIMD_PRIM_gated_bwd(ISA, T, T_, ACC)                                                                   \
    /* k vectors of m elements each from i (k = 1 for a tail), vector j into                                        \
     * acc[j & 1]; with sq, the squares of v into sq[j] (slot < 0) or sq[slot]. */                                  \
    RMSN_VINLINE void rmsn_vgateddot_##T##_##ISA(int before, int silu, const rmsn_##T *dy, const rmsn_##T *x,       \
                                                  const rmsn_##T *g, rmsn_##ACC *sig, const rmsn_##ACC *w,          \
                                                  ptrdiff_t i, ptrdiff_t m, int k, rmsn_v##ACC##_##ISA *acc,        \
                                                  rmsn_v##ACC##_##ISA *sq, int slot)                                \
    {                                                                                                               \
        enum { L = RMSN_LANES_##ACC##_##ISA };                                                                      \
        rmsn_v##ACC##_##ISA gv[RMSN_GATE_WAYS], s[RMSN_GATE_WAYS], a, d, v;                                         \
        int j;                                                                                                      \
        for (j = 0; j < k; j++) s[j] = gv[j] = rmsn_vloadm_##T##_##ACC##_##ISA(g + i + j * L, m);                   \
        rmsn_vsigmoidk_##ACC##_##ISA(s, k);                                                                         \
        for (j = 0; j < k; j++) {                                                                                   \
            a = rmsn_vact_##ACC##_##ISA(gv[j], s[j], silu);                                                         \
            d = rmsn_vloadm_##T##_##ACC##_##ISA(dy + i + j * L, m);                                                 \
            v = rmsn_vloadm_##T##_##ACC##_##ISA(x + i + j * L, m);                                                  \
            if (sig) rmsn_vstorem_##ACC##_##ACC##_##ISA(sig + i + j * L, s[j], m);                                  \
            if (before)                                                                                             \
                d = rmsn_vmul_##ACC##_##ISA(d, a);                                                                  \
            else                                                                                                    \
                v = rmsn_vmul_##ACC##_##ISA(v, a);                                                                  \
            if (w) d = rmsn_vmul_##ACC##_##ISA(d, rmsn_vloadm_##ACC##_##ACC##_##ISA(w + i + j * L, m));             \
            acc[j & 1] = rmsn_vfma_##ACC##_##ISA(d, v, acc[j & 1]);                                                 \
            if (sq) sq[slot < 0 ? j : slot] = rmsn_vfma_##ACC##_##ISA(v, v, sq[slot < 0 ? j : slot]);               \
        }                                                                                                           \
    }                                                                                                               \
    /* -> the dot; *ss (when given) the sum of squares of v in the four                                             \
     * accumulators of rmsn_sumsq / rmsn_gatedsq: the forward's bits. */                                           \
    static rmsn_##ACC rmsn_gateddot_##T##_##ISA(const rmsn_opts *o, ptrdiff_t n, const rmsn_##T *dy, ptrdiff_t sdy, \
                                                const rmsn_##T *x, ptrdiff_t sx, const rmsn_##T *g, ptrdiff_t sg,   \
                                                rmsn_##ACC *sig, const rmsn_##ACC *w, rmsn_##ACC *ss)               \
    {                                                                                                               \
        enum { L = RMSN_LANES_##ACC##_##ISA };                                                                      \
        rmsn_v##ACC##_##ISA a[2], q[4], *sq = ss ? q : NULL;                                                        \
        ptrdiff_t i = 0;                                                                                            \
        int before = o->norm_before_gate, silu = o->act_silu;                                                       \
        if (sdy != 1 || sx != 1 || sg != 1)                                                                         \
            return rmsn_gateddot_##T##_scalar(o, n, dy, sdy, x, sx, g, sg, sig, w, ss);                             \
        a[0] = a[1] = q[0] = q[1] = q[2] = q[3] = rmsn_vzero_##ACC##_##ISA();                                       \
        for (; i + 4 * L <= n; i += 4 * L)                                                                          \
            rmsn_vgateddot_##T##_##ISA(before, silu, dy, x, g, sig, w, i, L, 4, a, sq, -1);                         \
        for (; i + 2 * L <= n; i += 2 * L)                                                                          \
            rmsn_vgateddot_##T##_##ISA(before, silu, dy, x, g, sig, w, i, L, 2, a, sq, 0);                          \
        for (; i < n; i += L)                                                                                       \
            rmsn_vgateddot_##T##_##ISA(before, silu, dy, x, g, sig, w, i, n - i < L ? n - i : L, 1, a, sq,          \
                                       n - i < L);                                                                  \
        if (ss)                                                                                                     \
            *ss = rmsn_vhsum_##ACC##_##ISA(                                                                         \
                rmsn_vadd_##ACC##_##ISA(rmsn_vadd_##ACC##_##ISA(q[0], q[1]), rmsn_vadd_##ACC##_##ISA(q[2], q[3]))); \
        return rmsn_vhsum_##ACC##_##ISA(rmsn_vadd_##ACC##_##ISA(a[0], a[1]));                                       \
    }                                                                                                               \
    /* One vector's gradients from its operands (bi: the bias, or 0): dx, dg, and                                   \
     * up, v whose product dw adds (db adds up). */                                                                 \
    RMSN_VINLINE void rmsn_vgatedgrad_##T##_##ISA(int before, int silu, rmsn_v##ACC##_##ISA d,                      \
                                                   rmsn_v##ACC##_##ISA v, rmsn_v##ACC##_##ISA gv,                   \
                                                   rmsn_v##ACC##_##ISA s, rmsn_v##ACC##_##ISA wi,                   \
                                                   rmsn_v##ACC##_##ISA bi, rmsn_v##ACC##_##ISA r,                   \
                                                   rmsn_v##ACC##_##ISA k, rmsn_v##ACC##_##ISA *dx,                  \
                                                   rmsn_v##ACC##_##ISA *dg, rmsn_v##ACC##_##ISA *up,                \
                                                   rmsn_v##ACC##_##ISA *vr)                                         \
    {                                                                                                               \
        rmsn_v##ACC##_##ISA one = rmsn_vset1_##ACC##_##ISA(1), dv;                                                  \
        rmsn_v##ACC##_##ISA a = rmsn_vact_##ACC##_##ISA(gv, s, silu);                                               \
        rmsn_v##ACC##_##ISA da = rmsn_vmul_##ACC##_##ISA(s, rmsn_vsub_##ACC##_##ISA(one, s));                       \
        if (silu)                                                                                                   \
            da = rmsn_vadd_##ACC##_##ISA(                                                                           \
                s, rmsn_vmul_##ACC##_##ISA(rmsn_vmul_##ACC##_##ISA(gv, s), rmsn_vsub_##ACC##_##ISA(one, s)));       \
        if (before) {                                                                                               \
            *up = rmsn_vmul_##ACC##_##ISA(d, a);                                                                    \
            *dx = rmsn_vsub_##ACC##_##ISA(rmsn_vmul_##ACC##_##ISA(r, rmsn_vmul_##ACC##_##ISA(*up, wi)),             \
                                          rmsn_vmul_##ACC##_##ISA(k, v));                                           \
            *vr = rmsn_vmul_##ACC##_##ISA(v, r);                                                                    \
            *dg = rmsn_vmul_##ACC##_##ISA(                                                                          \
                rmsn_vmul_##ACC##_##ISA(d, rmsn_vadd_##ACC##_##ISA(rmsn_vmul_##ACC##_##ISA(*vr, wi), bi)), da);     \
        } else {                                                                                                    \
            *up = d;                                                                                                \
            dv = rmsn_vsub_##ACC##_##ISA(rmsn_vmul_##ACC##_##ISA(r, rmsn_vmul_##ACC##_##ISA(d, wi)),                \
                                         rmsn_vmul_##ACC##_##ISA(k, rmsn_vmul_##ACC##_##ISA(v, a)));                \
            *dg = rmsn_vmul_##ACC##_##ISA(rmsn_vmul_##ACC##_##ISA(dv, v), da);                                      \
            *dx = rmsn_vmul_##ACC##_##ISA(dv, a);                                                                   \
            *vr = rmsn_vmul_##ACC##_##ISA(rmsn_vmul_##ACC##_##ISA(v, a), r);                                        \
        }                                                                                                           \
    }                                                                                                               \
    RMSN_VINLINE void rmsn_vgatedbwd_##T##_##ISA(int before, int silu, const rmsn_##T *dy, const rmsn_##T *x,       \
                                                  const rmsn_##T *g, const rmsn_##ACC *sig, rmsn_##T *dx,           \
                                                  rmsn_##T *dg, const rmsn_##ACC *w, const rmsn_##ACC *b,           \
                                                  rmsn_v##ACC##_##ISA r, rmsn_v##ACC##_##ISA k, rmsn_##ACC *dw,     \
                                                  rmsn_##ACC *db, ptrdiff_t i, ptrdiff_t m)                         \
    {                                                                                                               \
        rmsn_v##ACC##_##ISA gv = rmsn_vloadm_##T##_##ACC##_##ISA(g + i, m), dxv, dgv, up, vr;                       \
        rmsn_v##ACC##_##ISA s = sig ? rmsn_vloadm_##ACC##_##ACC##_##ISA(sig + i, m) : rmsn_vsigmoid_##ACC##_##ISA(gv);\
        rmsn_vgatedgrad_##T##_##ISA(before, silu, rmsn_vloadm_##T##_##ACC##_##ISA(dy + i, m),                       \
                                    rmsn_vloadm_##T##_##ACC##_##ISA(x + i, m), gv, s,                               \
                                    w ? rmsn_vloadm_##ACC##_##ACC##_##ISA(w + i, m) : rmsn_vset1_##ACC##_##ISA(1),  \
                                    b ? rmsn_vloadm_##ACC##_##ACC##_##ISA(b + i, m) : rmsn_vzero_##ACC##_##ISA(),   \
                                    r, k, &dxv, &dgv, &up, &vr);                                                    \
        rmsn_vstorem_##T##_##ACC##_##ISA(dg + i, dgv, m);                                                           \
        rmsn_vstorem_##T##_##ACC##_##ISA(dx + i, dxv, m);                                                           \
        if (dw)                                                                                                     \
            rmsn_vstorem_##ACC##_##ACC##_##ISA(                                                                     \
                dw + i, rmsn_vadd_##ACC##_##ISA(rmsn_vloadm_##ACC##_##ACC##_##ISA(dw + i, m), rmsn_vmul_##ACC##_##ISA(up, vr)), \
                m);                                                                                                 \
        if (db)                                                                                                     \
            rmsn_vstorem_##ACC##_##ACC##_##ISA(                                                                     \
                db + i, rmsn_vadd_##ACC##_##ISA(rmsn_vloadm_##ACC##_##ACC##_##ISA(db + i, m), up), m);              \
    }                                                                                                               \
    /* The same for 2 * LANES elements in T's pair order (sig, w, b, dw, db                                        \
     * loaded in it; dw and db turned back into the natural order to store). */                                   \
    RMSN_VINLINE void rmsn_vgatedbwd2_##T##_##ISA(int before, int silu, const rmsn_##T *dy, const rmsn_##T *x,      \
                                                   const rmsn_##T *g, const rmsn_##ACC *sig, rmsn_##T *dx,          \
                                                   rmsn_##T *dg, const rmsn_##ACC *w, const rmsn_##ACC *b,          \
                                                   rmsn_v##ACC##_##ISA r, rmsn_v##ACC##_##ISA k, rmsn_##ACC *dw,    \
                                                   rmsn_##ACC *db, ptrdiff_t i)                                     \
    {                                                                                                               \
        enum { L = RMSN_LANES_##ACC##_##ISA };                                                                      \
        rmsn_v##ACC##_##ISA d[2], v[2], gv[2], s[2], wi[2], bi[2], dxv[2], dgv[2], up[2], vr[2], t[2];              \
        int j;                                                                                                      \
        rmsn_vload2_##T##_##ACC##_##ISA(dy + i, d);                                                                 \
        rmsn_vload2_##T##_##ACC##_##ISA(x + i, v);                                                                  \
        rmsn_vload2_##T##_##ACC##_##ISA(g + i, gv);                                                                 \
        if (sig)                                                                                                    \
            rmsn_vload2_acc_##T##_##ACC##_##ISA(sig + i, s);                                                        \
        else {                                                                                                      \
            s[0] = gv[0], s[1] = gv[1];                                                                             \
            rmsn_vsigmoidk_##ACC##_##ISA(s, 2);                                                                     \
        }                                                                                                           \
        if (w)                                                                                                      \
            rmsn_vload2_acc_##T##_##ACC##_##ISA(w + i, wi);                                                         \
        else                                                                                                        \
            wi[0] = wi[1] = rmsn_vset1_##ACC##_##ISA(1);                                                            \
        if (b)                                                                                                      \
            rmsn_vload2_acc_##T##_##ACC##_##ISA(b + i, bi);                                                         \
        else                                                                                                        \
            bi[0] = bi[1] = rmsn_vzero_##ACC##_##ISA();                                                             \
        for (j = 0; j < 2; j++)                                                                                     \
            rmsn_vgatedgrad_##T##_##ISA(before, silu, d[j], v[j], gv[j], s[j], wi[j], bi[j], r, k, &dxv[j],         \
                                        &dgv[j], &up[j], &vr[j]);                                                   \
        rmsn_vstore2_##T##_##ACC##_##ISA(dg + i, dgv);                                                              \
        rmsn_vstore2_##T##_##ACC##_##ISA(dx + i, dxv);                                                              \
        if (dw) {                                                                                                   \
            rmsn_vload2_acc_##T##_##ACC##_##ISA(dw + i, t);                                                         \
            for (j = 0; j < 2; j++) t[j] = rmsn_vadd_##ACC##_##ISA(t[j], rmsn_vmul_##ACC##_##ISA(up[j], vr[j]));    \
            rmsn_vreorder2_##T##_##ACC##_##ISA(t);                                                                  \
            for (j = 0; j < 2; j++) rmsn_vstore_##ACC##_##ACC##_##ISA(dw + i + j * L, t[j]);                        \
        }                                                                                                           \
        if (db) {                                                                                                   \
            rmsn_vload2_acc_##T##_##ACC##_##ISA(db + i, t);                                                         \
            for (j = 0; j < 2; j++) t[j] = rmsn_vadd_##ACC##_##ISA(t[j], up[j]);                                    \
            rmsn_vreorder2_##T##_##ACC##_##ISA(t);                                                                  \
            for (j = 0; j < 2; j++) rmsn_vstore_##ACC##_##ACC##_##ISA(db + i + j * L, t[j]);                        \
        }                                                                                                           \
    }                                                                                                               \
    static void rmsn_gatedbwdwrite_##T##_##ISA(const rmsn_opts *o, ptrdiff_t n, const rmsn_##T *dy, ptrdiff_t sdy,  \
                                               const rmsn_##T *x, ptrdiff_t sx, const rmsn_##T *g, ptrdiff_t sg,    \
                                               const rmsn_##ACC *sig, rmsn_##T *dx, ptrdiff_t sdx, rmsn_##T *dg,    \
                                               ptrdiff_t sdg, const rmsn_##ACC *w, const rmsn_##ACC *b,             \
                                               rmsn_##ACC r, rmsn_##ACC k, rmsn_##ACC *dw, rmsn_##ACC *db)          \
    {                                                                                                               \
        enum { L = RMSN_LANES_##ACC##_##ISA };                                                                      \
        rmsn_v##ACC##_##ISA rv = rmsn_vset1_##ACC##_##ISA(r), kv = rmsn_vset1_##ACC##_##ISA(k);                     \
        int before = o->norm_before_gate, silu = o->act_silu; /* locals: stores cannot change them */               \
        ptrdiff_t i, ahead = rmsn_prefetch_ahead(o, n);                                                             \
        if (sdy != 1 || sx != 1 || sg != 1 || sdx != 1 || sdg != 1) {                                               \
            rmsn_gatedbwdwrite_##T##_scalar(o, n, dy, sdy, x, sx, g, sg, sig, dx, sdx, dg, sdg, w, b, r, k, dw, db); \
            return;                                                                                                 \
        }                                                                                                           \
        for (i = 0; i + 2 * L <= n; i += 2 * L) {                                                                   \
            if (ahead && !((i * sizeof *x) & 63)) { /* the next slice's operands, a line at a time */               \
                rmsn_prefetch_l2(dy + ahead + i), rmsn_prefetch_l2(x + ahead + i);                                  \
                rmsn_prefetch_l2(g + ahead + i);                                                                    \
            }                                                                                                       \
            rmsn_vgatedbwd2_##T##_##ISA(before, silu, dy, x, g, sig, dx, dg, w, b, rv, kv, dw, db, i);              \
        }                                                                                                           \
        for (; i + L <= n; i += L)                                                                                  \
            rmsn_vgatedbwd_##T##_##ISA(before, silu, dy, x, g, sig, dx, dg, w, b, rv, kv, dw, db, i, L);            \
        if (i < n) rmsn_vgatedbwd_##T##_##ISA(before, silu, dy, x, g, sig, dx, dg, w, b, rv, kv, dw, db, i, n - i); \
    }
/* quant (slice.h), f32 data only (float64 data stays scalar).  A tier
 * provides, on f32 vectors:
 *   rmsn_vabsmax_f32_<ISA>(amax, y)   lane-wise max(amax, |y|); a NaN sticks in its lane
 *   rmsn_vqstore_i8_<ISA>(p, v), rmsn_vqstore_e4m3_<ISA>(p, v)
 *                                     LANES bytes, as rmsn_f32_to_i8 / rmsn_f32_to_e4m3
 *                                     (v is never NaN: see rmsn_qwrite; the int8 one
 *                                     need not handle it)
 *   rmsn_vqstore4_i8_<ISA>(p, v0, v1, v2, v3), rmsn_vqstore4_e4m3_<ISA>(..)
 *                                     4 * LANES bytes, the same as four vqstores
 *                                     (one wide store where the tier packs them;
 *                                     RMSN_SIMD_QSTORE4_EACH otherwise)
 * and then expands RMSN_SIMD_QUANT_HELPERS(<ISA>).  y is computed as the
 * forward's scale pass computes it (rmsn_vscale: multiply, then weight, then
 * bias), so the same rstd gives the same y, amax and q on every tier. */
#define RMSN_SIMD_QUANT_HELPERS(ISA)                                                                   \
    /* The max of the lanes; NaN if a lane is NaN (once per slice). */                                \
    RMSN_VINLINE float rmsn_vhmax_f32_##ISA(rmsn_vf32_##ISA v)                                         \
    {                                                                                                  \
        float lanes[RMSN_LANES_f32_##ISA], m = 0;                                                      \
        int i;                                                                                         \
        rmsn_vstore_f32_f32_##ISA(lanes, v);                                                           \
        for (i = 0; i < RMSN_LANES_f32_##ISA; i++)                                                     \
            if (lanes[i] > m || lanes[i] != lanes[i]) m = lanes[i];                                    \
        return m;                                                                                      \
    }                                                                                                  \
    RMSN_SIMD_QSTOREM(ISA, i8)                                                                         \
    RMSN_SIMD_QSTOREM(ISA, e4m3)
#define RMSN_SIMD_QSTOREM(ISA, Q)                                                                      \
    RMSN_VINLINE void rmsn_vqstorem_##Q##_##ISA(rmsn_##Q *p, rmsn_vf32_##ISA v, ptrdiff_t m)           \
    {                                                                                                  \
        rmsn_##Q part[RMSN_LANES_f32_##ISA];                                                           \
        if (m == RMSN_LANES_f32_##ISA) {                                                               \
            rmsn_vqstore_##Q##_##ISA(p, v);                                                            \
            return;                                                                                    \
        }                                                                                              \
        rmsn_vqstore_##Q##_##ISA(part, v);                                                             \
        memcpy(p, part, (size_t)m);                                                                    \
    }
/* rmsn_vqstore4 as four rmsn_vqstore, for a tier whose one-vector store is already full width. */
#define RMSN_SIMD_QSTORE4_EACH(ISA, Q)                                                                            \
    RMSN_VINLINE void rmsn_vqstore4_##Q##_##ISA(rmsn_##Q *p, rmsn_vf32_##ISA v0, rmsn_vf32_##ISA v1,              \
                                                 rmsn_vf32_##ISA v2, rmsn_vf32_##ISA v3)                          \
    {                                                                                                             \
        rmsn_vqstore_##Q##_##ISA(p, v0);                                                                          \
        rmsn_vqstore_##Q##_##ISA(p + RMSN_LANES_f32_##ISA, v1);                                                   \
        rmsn_vqstore_##Q##_##ISA(p + 2 * RMSN_LANES_f32_##ISA, v2);                                               \
        rmsn_vqstore_##Q##_##ISA(p + 3 * RMSN_LANES_f32_##ISA, v3);                                               \
    }

/* Pass 2 stores y into ybuf (when given) as it takes the max, so pass 3 only
 * loads, scales and converts; it is the last pass that reads x, so it
 * prefetches the next slice (prefetch_next) as rmsn_scale does.  Full vectors
 * in the main loops, one partial vector at the end. */
#define RMSN_SIMD_PRIM_quant(ISA, T, Q, ACC)                                                                     \
    RMSN_VINLINE rmsn_v##ACC##_##ISA rmsn_vqy_##T##_##Q##_##ISA(const rmsn_##T *x, const rmsn_##ACC *w,          \
                                                                 const rmsn_##ACC *b, rmsn_v##ACC##_##ISA r,      \
                                                                 ptrdiff_t m)                                     \
    {                                                                                                            \
        rmsn_v##ACC##_##ISA t = rmsn_vmul_##ACC##_##ISA(rmsn_vloadm_##T##_##ACC##_##ISA(x, m), r);               \
        if (w) t = rmsn_vmul_##ACC##_##ISA(t, rmsn_vloadm_##ACC##_##ACC##_##ISA(w, m));                          \
        if (b) t = rmsn_vadd_##ACC##_##ISA(t, rmsn_vloadm_##ACC##_##ACC##_##ISA(b, m));                          \
        return t;                                                                                                \
    }                                                                                                            \
    /* y at i (m elements): from ybuf, or computed. */                                                          \
    RMSN_VINLINE rmsn_v##ACC##_##ISA rmsn_vqyat_##T##_##Q##_##ISA(const rmsn_##ACC *ybuf, const rmsn_##T *x,     \
                                                                   const rmsn_##ACC *w, const rmsn_##ACC *b,      \
                                                                   rmsn_v##ACC##_##ISA r, ptrdiff_t i,            \
                                                                   ptrdiff_t m)                                   \
    {                                                                                                            \
        if (ybuf) return rmsn_vloadm_##ACC##_##ACC##_##ISA(ybuf + i, m);                                         \
        return rmsn_vqy_##T##_##Q##_##ISA(x + i, w ? w + i : NULL, b ? b + i : NULL, r, m);                      \
    }                                                                                                            \
    static rmsn_##ACC rmsn_qamax_##T##_##Q##_##ISA(const rmsn_opts *o, ptrdiff_t n, const rmsn_##T *x,          \
                                                   ptrdiff_t sx, const rmsn_##ACC *w, const rmsn_##ACC *b,      \
                                                   rmsn_##ACC pre, rmsn_##ACC r, rmsn_##ACC *ybuf)              \
    {                                                                                                            \
        enum { L = RMSN_LANES_##ACC##_##ISA };                                                                   \
        rmsn_v##ACC##_##ISA rv = rmsn_vset1_##ACC##_##ISA(r), a0, a1, y0, y1;                                    \
        ptrdiff_t i = 0, m;                                                                                      \
        int next = o->prefetch_next;                                                                             \
        if (sx != 1 || pre != 1 || o->round_mid)                                                                 \
            return rmsn_qamax_##T##_##Q##_scalar(o, n, x, sx, w, b, pre, r, ybuf);                               \
        a0 = a1 = rmsn_vzero_##ACC##_##ISA();                                                                    \
        for (; i + 2 * L <= n; i += 2 * L) {                                                                     \
            if (next) rmsn_prefetch_l2(x + next * n + i);                                                        \
            y0 = rmsn_vqy_##T##_##Q##_##ISA(x + i, w ? w + i : NULL, b ? b + i : NULL, rv, L);                   \
            y1 = rmsn_vqy_##T##_##Q##_##ISA(x + i + L, w ? w + i + L : NULL, b ? b + i + L : NULL, rv, L);       \
            if (ybuf) {                                                                                          \
                rmsn_vstore_##ACC##_##ACC##_##ISA(ybuf + i, y0);                                                 \
                rmsn_vstore_##ACC##_##ACC##_##ISA(ybuf + i + L, y1);                                             \
            }                                                                                                    \
            a0 = rmsn_vabsmax_##ACC##_##ISA(a0, y0);                                                             \
            a1 = rmsn_vabsmax_##ACC##_##ISA(a1, y1);                                                             \
        }                                                                                                        \
        for (; i < n; i += m) {                                                                                  \
            m = n - i < L ? n - i : L;                                                                           \
            y0 = rmsn_vqy_##T##_##Q##_##ISA(x + i, w ? w + i : NULL, b ? b + i : NULL, rv, m);                   \
            if (ybuf) rmsn_vstorem_##ACC##_##ACC##_##ISA(ybuf + i, y0, m);                                       \
            a0 = rmsn_vabsmax_##ACC##_##ISA(a0, y0);                                                             \
        }                                                                                                        \
        return rmsn_vhmax_##ACC##_##ISA(rmsn_vabsmax_##ACC##_##ISA(a0, a1));                                     \
    }                                                                                                            \
    static void rmsn_qwrite_##T##_##Q##_##ISA(const rmsn_opts *o, ptrdiff_t n, const rmsn_##T *x,               \
                                              ptrdiff_t sx, rmsn_##Q *q, ptrdiff_t sq, const rmsn_##ACC *w,     \
                                              const rmsn_##ACC *b, rmsn_##ACC pre, rmsn_##ACC r, float inv,     \
                                              const rmsn_##ACC *ybuf)                                           \
    {                                                                                                            \
        enum { L = RMSN_LANES_##ACC##_##ISA };                                                                   \
        rmsn_v##ACC##_##ISA rv = rmsn_vset1_##ACC##_##ISA(r), iv = rmsn_vset1_##ACC##_##ISA(inv);                \
        ptrdiff_t i = 0, m;                                                                                      \
        /* A NaN inv (a NaN in y) makes every y * inv NaN, a zero one (an infinity                               \
         * in y) the infinities' products: the scalar loop writes those slices.  So                              \
         * the vector conversions never see a NaN, and each NaN q keeps its sign                                 \
         * (y's NaN, as the product's first operand, which the vector multiply,                                  \
         * its operands in either order, does not keep). */                                                      \
        if (sx != 1 || sq != 1 || pre != 1 || o->round_mid || !(inv > 0)) {                                     \
            rmsn_qwrite_##T##_##Q##_scalar(o, n, x, sx, q, sq, w, b, pre, r, inv, ybuf);                         \
            return;                                                                                              \
        }                                                                                                        \
        for (; i + 4 * L <= n; i += 4 * L)                                                                       \
            rmsn_vqstore4_##Q##_##ISA(                                                                           \
                q + i, rmsn_vmul_##ACC##_##ISA(rmsn_vqyat_##T##_##Q##_##ISA(ybuf, x, w, b, rv, i, L), iv),       \
                rmsn_vmul_##ACC##_##ISA(rmsn_vqyat_##T##_##Q##_##ISA(ybuf, x, w, b, rv, i + L, L), iv),          \
                rmsn_vmul_##ACC##_##ISA(rmsn_vqyat_##T##_##Q##_##ISA(ybuf, x, w, b, rv, i + 2 * L, L), iv),      \
                rmsn_vmul_##ACC##_##ISA(rmsn_vqyat_##T##_##Q##_##ISA(ybuf, x, w, b, rv, i + 3 * L, L), iv));     \
        for (; i < n; i += m) {                                                                                  \
            m = n - i < L ? n - i : L;                                                                           \
            rmsn_vqstorem_##Q##_##ISA(                                                                           \
                q + i, rmsn_vmul_##ACC##_##ISA(rmsn_vqyat_##T##_##Q##_##ISA(ybuf, x, w, b, rv, i, m), iv), m);   \
        }                                                                                                        \
    }
/* quant_add: add's rmsn_addsq and quant's passes. */
#define RMSN_SIMD_PRIM_quant_add(ISA, T, Q, ACC)

/* A SIMD entry of ops.h in tier ISA: its primitives, then its kernel under
 * the tier's name from the entry. */
#define RMSN_SIMD_KERNEL(ISA, OP, TIN, TOUT, ACC, SCALAR, AVX2, AVX512, AVX512BF16, NEON) \
    RMSN_SIMD_PRIM_##OP(ISA, TIN, TOUT, ACC)                                              \
    RMSN_SLICE_##OP(RMSN_NAME_##ISA(AVX2, AVX512, AVX512BF16, NEON), ISA, TIN, TOUT, ACC)

#endif /* RMSN_KERNELS_SIMD_H */
