/*
 * Each op's slice math, written once: RMSN_SLICE_<op>(name, ISA, TIN, TOUT,
 * ACC) defines the kernel `name` (an entry of ops.h; the tier's adapter
 * passes its column of names, so the full name is at the instantiation) from
 * tier ISA's primitives:
 *
 *   rmsn_sumsq_<TIN>_<ACC>_<ISA>(n, x, sx)                       -> sum x^2
 *   rmsn_scale_<TIN>_<TOUT>_<ISA>(o, n, x, sx, y, sy, w, b, pre, r) y = affine((x*pre)*r)
 *   rmsn_colsumsq_<TIN>_<ACC>_<ISA>(n, npos, x, sxc, sxp, ss)    ss[p] = sum_c x[c,p]^2
 *   rmsn_colscale_<TIN>_<TOUT>_<ISA>(o, n, npos, x, sxc, sxp, y, syc, syp, w, b, pre[], r[])
 *   rmsn_addsq_<TX>_<TR>_<ISA>(n, x, sx, r, sr, ro, sro)         ro = round(x + r); -> sum ro^2
 *   rmsn_bwddot_<T>_<ISA>(n, dy, sdy, x, sx, w, ss)              -> sum (dy * w) * x; *ss = sum x^2
 *   rmsn_bwdwrite_<T>_<ISA>(n, dy, sdy, x, sx, dx, sdx, w, rstd, k, dw, db, o)
 *   rmsn_gatedsq_<TIN>_<TOUT>_<ISA>(o, n, x, sx, g, sg, act)     -> sum u^2, u = x (norm_before_gate) or
 *                                       x * act(g); act[i] = act(g[i]) if act
 *   rmsn_gatedscale_<TIN>_<TOUT>_<ISA>(o, n, x, sx, g, sg, y, sy, w, b, pre, r, act)  act(g) from act[] if act
 *   rmsn_gateddot_<T>_<ISA>(o, n, dy, sdy, x, sx, g, sg, sig, w, ss) -> the gated backward's sum(g * x);
 *                                       sig[i] = sigmoid(g[i]) if sig; *ss = the forward's sum of
 *                                       squares if ss
 *   rmsn_gatedbwdwrite_<T>_<ISA>(o, n, dy, sdy, x, sx, g, sg, sig, dx, sdx, dg, sdg, w, b, rstd, k, dw, db)
 *                                       sigmoid(g) read from sig if given
 *
 * The per-dtype ones (sumsq, colsumsq) come from the tier's list of (storage,
 * acc) types, the others with the entry that uses them (RMSN_SCALAR_PRIM_<op>
 * in scalar.h, RMSN_SIMD_PRIM_<op> in simd.h).  A split rstd (pre != 1, or
 * pre[] != NULL) is rare: a SIMD scale/colscale hands it to the scalar one, as
 * it does a layout it does not vectorize.  Strides are in elements and may be
 * anything.  The policy (acc type, rstd, robust path) is in ../rmsnorm.h.
 */
#ifndef RMSN_KERNELS_SLICE_H
#define RMSN_KERNELS_SLICE_H

#include "../ops.h"

#if defined(__x86_64__)
#include <emmintrin.h> /* SSE2: baseline on x86-64, so no target region needed */
#endif

/* Positions one column kernel call normalizes at once (stack partial sums);
 * 1 KiB runs of f32 per channel read better than 256 B ones (bench: NCHW). */
#define RMSN_COL_TILE 256

/* Long slices are reduced in blocks of RMSN_SUM_BLOCK elements: each block by
 * the tier's primitive in the acc type, the block sums added in double.  One
 * float32 running sum stops growing at 2^24 times the typical term (the rms of
 * np.ones(2**27) came out sqrt(2)); blocked, a slice of any length has the
 * error of one block plus the double additions.  Slices of at most one block
 * get exactly the primitive's result. */
#define RMSN_SUM_BLOCK 4096

/* total = sum over blocks [i0, i0 + len) of slice [0, n) of BLOCK_SUM (an
 * expression in i0 and len), in double, rounded once to the acc type. */
#define RMSN_BLOCKED_SUM(ACC, total, BLOCK_SUM)                                 \
    do {                                                                        \
        double blocked_ = 0.0;                                                  \
        ptrdiff_t i0, len;                                                      \
        for (i0 = 0; i0 < n; i0 += RMSN_SUM_BLOCK) {                            \
            len = n - i0 < RMSN_SUM_BLOCK ? n - i0 : RMSN_SUM_BLOCK;            \
            blocked_ += (double)(BLOCK_SUM);                                    \
        }                                                                       \
        (total) = (rmsn_##ACC)blocked_;                                         \
    } while (0)

/* gx = DOT (an expression in i0, len and ss_part) and, when want_ss, ss =
 * the sums of squares it stores through ss_part, both blocked as
 * RMSN_BLOCKED_SUM: a backward's dot pass sums both in one loop. */
#define RMSN_BLOCKED_DOT_SQ(ACC, gx, ss, want_ss, DOT)                          \
    do {                                                                        \
        double blocked_gx_ = 0.0, blocked_ss_ = 0.0;                            \
        rmsn_##ACC part_ = 0, *ss_part = (want_ss) ? &part_ : NULL;             \
        ptrdiff_t i0, len;                                                      \
        for (i0 = 0; i0 < n; i0 += RMSN_SUM_BLOCK) {                            \
            len = n - i0 < RMSN_SUM_BLOCK ? n - i0 : RMSN_SUM_BLOCK;            \
            blocked_gx_ += (double)(DOT);                                       \
            blocked_ss_ += (double)part_;                                       \
        }                                                                       \
        (gx) = (rmsn_##ACC)blocked_gx_;                                         \
        (ss) = (rmsn_##ACC)blocked_ss_;                                         \
    } while (0)

/* Plain copy of nb < size <= 32 bytes in fixed-size pieces, no call to
 * memcpy (a partial vector's store, the rest of a streamed run); size, a
 * constant, leaves out the pieces that cannot occur. */
static inline void rmsn_copy_small(char *d, const char *s, size_t nb, size_t size)
{
    if (size > 16 && (nb & 16)) { memcpy(d, s, 16); d += 16; s += 16; }
    if (size > 8 && (nb & 8)) { memcpy(d, s, 8); d += 8; s += 8; }
    if (size > 4 && (nb & 4)) { memcpy(d, s, 4); d += 4; s += 4; }
    if (size > 2 && (nb & 2)) { memcpy(d, s, 2); d += 2; s += 2; }
    if (nb & 1) *d = *s;
}

/* Non-temporal copy of nb bytes from s to d, for the partial vectors at the
 * ends of a streamed run: 16-byte pieces where d is 16-byte aligned (NumPy's
 * large arrays are 16 bytes past a page), 4-byte ones where it is 4-byte
 * aligned, plain stores for the rest.  A plain store into a line next to
 * streamed ones cost a row of 2 KiB float32 a memory latency: (32768, 512)
 * with y 16 bytes off a line, 6.4 ms -> 4.8 ms (2.9 ms aligned). */
static inline void rmsn_stream_bytes(char *d, const char *s, size_t nb)
{
#if defined(__x86_64__)
    int v;
    for (; nb && ((uintptr_t)d & 15); d++, s++, nb--)
        if (!((uintptr_t)d & 3) && nb >= 4)
            break;
        else
            *d = *s;
    for (; nb >= 4 && ((uintptr_t)d & 15); d += 4, s += 4, nb -= 4) {
        memcpy(&v, s, 4);
        _mm_stream_si32((int *)d, v);
    }
    for (; nb >= 16; d += 16, s += 16, nb -= 16) _mm_stream_si128((__m128i *)d, _mm_loadu_si128((const __m128i *)s));
    for (; nb >= 4; d += 4, s += 4, nb -= 4) {
        memcpy(&v, s, 4);
        _mm_stream_si32((int *)d, v);
    }
    rmsn_copy_small(d, s, nb, 4);
#else
    memcpy(d, s, nb);
#endif
}

/* Output bytes a forward call stages before streaming them (below). */
#define RMSN_STAGE_BYTES (4 << 10)

/* Rows of at least this many elements (and at most one RMSN_SUM_BLOCK: the
 * primitive's sum, the same bits) sum the next row's squares in the scale
 * pass's loop (rmsn_scalesq): its reads then overlap this row's compute and
 * stores, where two loops left x's reads to the prefetcher (forward (2048,
 * 4096) float16 into a new array, 0.199 -> 0.177 ns per element; n = 1024 /
 * 2048: 0.17 / 0.20 -> 0.155 / 0.175).  Shorter rows then wait each row for
 * the sum's reduction and rstd (n = 128: 0.21 -> 0.25). */
#define RMSN_FUSED_SUM_MIN 1024

/* Forward of nrows slices of n elements, slice r at x + r * rsx and y + r *
 * rsy (row strides in bytes; rstd[r]): per slice, rstd from the sum of
 * squares, then scale and write.  One call takes a block of short rows, so a
 * row pays no dispatch or index arithmetic; each row's result is the same
 * bits as on its own.  The next row's sum of squares is computed before this
 * row's scale pass (in it for long rows, above): it runs while rstd's
 * divisions and square root are in flight, which on short rows would
 * otherwise stall every row.  So in a block of rows the scale pass
 * prefetches (prefetch_next) two rows ahead: the next row is in cache
 * already, and the next block's first two rows are summed before its first
 * scale pass.
 * Streaming, rows of at most 512 bytes of output that follow each other in y
 * are written with plain stores into a 4 KiB stack stage and streamed from
 * there as one run: streamed row by row, each row's partial lines at both ends
 * cost about a memory latency (64 MiB of float32 rows of 64 took 5x the
 * np.copyto time).  Longer rows stream from the scale pass itself, whose
 * compute then overlaps the stores' drain, where the stage's copy came after
 * it (64 MiB into out=, float32 rows of 256 / 512 / 1024 / 2048 elements:
 * 1.0 / 0.95 / 1.0 / 0.93x np.copyto's time staged in 16 KiB, 0.76-0.86 /
 * 0.58-0.70 / 0.70-0.76 / 0.73x direct). */
#define RMSN_SLICE_fwd(NAME, ISA, TIN, TOUT, ACC)                                                                     \
    static void NAME(const rmsn_opts *o, ptrdiff_t nrows, ptrdiff_t n, const void *x,                                 \
                     ptrdiff_t sx, ptrdiff_t rsx, void *y, ptrdiff_t sy,                                              \
                     ptrdiff_t rsy, const void *w, const void *b, void *rstd)                                         \
    {                                                                                                                 \
        _Alignas(64) char stage[RMSN_STAGE_BYTES];                                                                    \
        rmsn_opts ahead = *o, plain;                                                                                  \
        ptrdiff_t row, staged_from = 0;                                                                               \
        int staged = RMSN_NONTEMPORAL_##ISA && o->stream && sy == 1 && rsy == n * (ptrdiff_t)sizeof(rmsn_##TOUT) &&   \
                     8 * rsy <= RMSN_STAGE_BYTES;                                                                     \
        rmsn_##ACC next = 0;                                                                                          \
        ahead.prefetch_next *= nrows > 1 ? 2 : 1;                                                                     \
        plain = ahead;                                                                                                \
        plain.stream = 0;                                                                                             \
        if (nrows > 0) {                                                                                              \
            const rmsn_##TIN *x0 = (const rmsn_##TIN *)x;                                                             \
            RMSN_BLOCKED_SUM(ACC, next, rmsn_sumsq_##TIN##_##ACC##_##ISA(len, x0 + i0 * sx, sx));                     \
        }                                                                                                             \
        for (row = 0; row < nrows; row++) {                                                                           \
            const rmsn_##TIN *xt = (const rmsn_##TIN *)((const char *)x + row * rsx);                                 \
            const rmsn_##TIN *xn = row + 1 < nrows ? (const rmsn_##TIN *)((const char *)xt + rsx) : NULL;             \
            char *yt = staged ? stage + (row - staged_from) * rsy : (char *)y + row * rsy;                            \
            int fused = xn && sx == 1 && n >= RMSN_FUSED_SUM_MIN && n <= RMSN_SUM_BLOCK;                              \
            const rmsn_opts *ot = staged ? &plain : &ahead;                                                           \
            rmsn_##ACC pre, r, ss = next;                                                                             \
            r = rmsn_rstd_##TIN##_##ACC(o, ss, n, xt, sx, &pre);                                                      \
            if (xn && !fused)                                                                                         \
                RMSN_BLOCKED_SUM(ACC, next, rmsn_sumsq_##TIN##_##ACC##_##ISA(len, xn + i0 * sx, sx));                 \
            if (fused) /* a call of its own: short rows keep the loops without the sum's */                           \
                next = rmsn_scalesq_##TIN##_##TOUT##_##ISA(ot, n, xt, sx, (rmsn_##TOUT *)yt, sy,                      \
                                                           (const rmsn_##ACC *)w, (const rmsn_##ACC *)b, pre, r, xn); \
            else                                                                                                      \
                rmsn_scale_##TIN##_##TOUT##_##ISA(ot, n, xt, sx, (rmsn_##TOUT *)yt, sy, (const rmsn_##ACC *)w,        \
                                                  (const rmsn_##ACC *)b, pre, r);                                     \
            if (rstd) ((rmsn_##ACC *)rstd)[row] = pre * r;                                                            \
            if (staged && (row + 1 == nrows || (row + 2 - staged_from) * rsy > RMSN_STAGE_BYTES)) {                   \
                rmsn_stream_bytes((char *)y + staged_from * rsy, stage, (size_t)((row + 1 - staged_from) * rsy));     \
                staged_from = row + 1;                                                                                \
            }                                                                                                         \
        }                                                                                                             \
    }

/* Forward of npos slices laid out as columns: slice p is x[c * sxc + p * sxp]
 * for c < n (normalizing the channels of NCHW, or a Fortran-ordered array).
 * Vectorizes across positions; no transposed copy. */
#define RMSN_SLICE_fwd_cols(NAME, ISA, TIN, TOUT, ACC)                                                          \
    static void NAME(const rmsn_opts *o, ptrdiff_t n, ptrdiff_t npos,                                           \
                     const void *x, ptrdiff_t sxc, ptrdiff_t sxp, void *y,                                      \
                     ptrdiff_t syc, ptrdiff_t syp, const void *w,                                               \
                     const void *b, void *rstd, ptrdiff_t srstd)                                                \
    {                                                                                                           \
        rmsn_##ACC ss[RMSN_COL_TILE], r[RMSN_COL_TILE], pre[RMSN_COL_TILE];                                     \
        double total[RMSN_COL_TILE]; /* blocked over channels, as RMSN_BLOCKED_SUM */                           \
        ptrdiff_t p0, p, np, c0;                                                                                \
        int split;                                                                                              \
        for (p0 = 0; p0 < npos; p0 += RMSN_COL_TILE) {                                                          \
            const rmsn_##TIN *xt = (const rmsn_##TIN *)x + p0 * sxp;                                            \
            np = npos - p0 < RMSN_COL_TILE ? npos - p0 : RMSN_COL_TILE;                                         \
            for (p = 0; p < np; p++) total[p] = 0.0;                                                            \
            for (c0 = 0; c0 < n; c0 += RMSN_SUM_BLOCK) {                                                        \
                rmsn_colsumsq_##TIN##_##ACC##_##ISA(n - c0 < RMSN_SUM_BLOCK ? n - c0 : RMSN_SUM_BLOCK, np,      \
                                                    xt + c0 * sxc, sxc, sxp, ss);                               \
                for (p = 0; p < np; p++) total[p] += (double)ss[p];                                             \
            }                                                                                                   \
            for (p = 0; p < np; p++) ss[p] = (rmsn_##ACC)total[p];                                              \
            for (split = 0, p = 0; p < np; p++) {                                                               \
                r[p] = rmsn_rstd_##TIN##_##ACC(o, ss[p], n, xt + p * sxp, sxc, pre + p);                        \
                split |= pre[p] != 1;                                                                           \
            }                                                                                                   \
            rmsn_colscale_##TIN##_##TOUT##_##ISA(o, n, np, xt, sxc, sxp, (rmsn_##TOUT *)y + p0 * syp, syc, syp, \
                                                 (const rmsn_##ACC *)w, (const rmsn_##ACC *)b,                  \
                                                 split ? pre : NULL, r);                                        \
            if (rstd)                                                                                           \
                for (p = 0; p < np; p++) ((rmsn_##ACC *)rstd)[(p0 + p) * srstd] = pre[p] * r[p];                \
        }                                                                                                       \
    }

/* Fused residual add: ro = round_TR(x + r) written first, then normalized
 * from the rounded values, so it is bitwise the two steps done apart. */
#define RMSN_SLICE_add(NAME, ISA, TX, TR, ACC)                                                            \
    static void NAME(const rmsn_opts *o, ptrdiff_t n, const void *x, ptrdiff_t sx,                        \
                     const void *r, ptrdiff_t sr, void *ro, ptrdiff_t sro, void *y,                       \
                     ptrdiff_t sy, const void *w, const void *b, void *rstd)                              \
    {                                                                                                     \
        const rmsn_##TR *rot = (const rmsn_##TR *)ro;                                                     \
        rmsn_##ACC ss, pre, rs;                                                                           \
        RMSN_BLOCKED_SUM(ACC, ss, rmsn_addsq_##TX##_##TR##_##ISA(len, (const rmsn_##TX *)x + i0 * sx, sx, \
                                                                 (const rmsn_##TR *)r + i0 * sr, sr,      \
                                                                 (rmsn_##TR *)ro + i0 * sro, sro));       \
        rs = rmsn_rstd_##TR##_##ACC(o, ss, n, rot, sro, &pre);                                            \
        rmsn_scale_##TR##_##TX##_##ISA(o, n, rot, sro, (rmsn_##TX *)y, sy, (const rmsn_##ACC *)w,         \
                                       (const rmsn_##ACC *)b, pre, rs);                                   \
        if (rstd) *(rmsn_##ACC *)rstd = pre * rs;                                                         \
    }

/* Backward of one slice (dy, x, dx of one dtype T; T_ is T, as ops.h lists it;
 * acc ACC):
 *   g = dy * w,  dx = rstd * g - k * x  with  k = coef * sum(g * x),
 *   dw += dy * x * rstd,  db += dy   (dw, db: acc-typed partial sums or NULL).
 * rstd is the forward's when given, else recomputed the forward's way (the
 * same sumsq primitive, so both give the same bits).  The sum of squares is
 * skipped when only the rstd needed it. */
#define RMSN_SLICE_bwd(NAME, ISA, T, T_, ACC)                                                                       \
    static void NAME(const rmsn_opts *o, ptrdiff_t n, const void *dy, ptrdiff_t sdy,                                \
                     const void *x, ptrdiff_t sx, void *dx, ptrdiff_t sdx, const void *w,                           \
                     const void *rstd, void *dw, void *db)                                                          \
    {                                                                                                               \
        const rmsn_##T *xt = (const rmsn_##T *)x;                                                                   \
        const rmsn_##ACC *wt = (const rmsn_##ACC *)w;                                                               \
        rmsn_##ACC ss, r, pre, gx;                                                                                  \
        double rms = 1.0;                                                                                           \
        int want_ss = !rstd || o->eps_mode != RMSN_EPS_SQRT;                                                        \
        RMSN_BLOCKED_DOT_SQ(ACC, gx, ss, want_ss,                                                                   \
                            rmsn_bwddot_##T##_##ISA(len, (const rmsn_##T *)dy + i0 * sdy, sdy, xt + i0 * sx, sx,    \
                                                    wt ? wt + i0 : NULL, ss_part));                                 \
        if (want_ss) {                                                                                              \
            rms = (ss >= RMSN_ACC_MIN_##ACC && ss <= RMSN_ACC_MAX_##ACC) ? sqrt((double)ss / (double)n)             \
                                                   : rmsn_robust_rms_##T(n, xt, sx);                                \
        }                                                                                                           \
        r = rstd ? *(const rmsn_##ACC *)rstd : rmsn_rstd_##T##_##ACC(o, ss, n, xt, sx, &pre) * pre;                 \
        rmsn_bwdwrite_##T##_##ISA(n, (const rmsn_##T *)dy, sdy, xt, sx, (rmsn_##T *)dx, sdx,                        \
                                  wt, r, (rmsn_##ACC)(rmsn_grad_coef(o, r, rms, n) * (double)gx), (rmsn_##ACC *)dw, \
                                  (rmsn_##ACC *)db, o);                                                             \
    }

/* Gated forward of one slice, the gate g read in x's type TIN, act(g) as
 * rmsnorm.h defines it:
 *   norm_before_gate:  y = affine((x * pre) * r) * act(g), r from sum x^2
 *   else:              y = affine((u * pre) * r), u = x * act(g), r from sum u^2
 * (affine: * w + b; with round_mid the result of x*rstd and of the affine
 * are each rounded to TIN).  A slice of at most RMSN_SUM_BLOCK elements
 * computes act(g) once (the exp is the costly part), in rmsn_gatedsq's pass
 * with the sum of squares, into a stack buffer for the output pass; a longer
 * one computes it in each pass that needs it (the same bits), its sum of
 * squares gate after by rmsn_sumsq.  The robust path recomputes u in f64. */
#define RMSN_SLICE_gated(NAME, ISA, TIN, TOUT, ACC)                                                                 \
    static void NAME(const rmsn_opts *o, ptrdiff_t n, const void *x, ptrdiff_t sx, const void *g, ptrdiff_t sg,     \
                     void *y, ptrdiff_t sy, const void *w, const void *b, void *rstd)                               \
    {                                                                                                               \
        const rmsn_##TIN *xt = (const rmsn_##TIN *)x, *gt = (const rmsn_##TIN *)g;                                  \
        rmsn_##ACC ss, pre, r, act_buf[RMSN_SUM_BLOCK];                                                             \
        rmsn_##ACC *act = n <= RMSN_SUM_BLOCK ? act_buf : NULL;                                                     \
        if (o->norm_before_gate && !act)                                                                            \
            RMSN_BLOCKED_SUM(ACC, ss, rmsn_sumsq_##TIN##_##ACC##_##ISA(len, xt + i0 * sx, sx));                     \
        else                                                                                                        \
            RMSN_BLOCKED_SUM(ACC, ss, rmsn_gatedsq_##TIN##_##TOUT##_##ISA(o, len, xt + i0 * sx, sx, gt + i0 * sg, sg, \
                                                                          act));                                    \
        r = rmsn_gated_rstd_##TIN##_##ACC(o, ss, n, xt, sx, gt, sg, &pre, NULL);                                    \
        rmsn_gatedscale_##TIN##_##TOUT##_##ISA(o, n, xt, sx, gt, sg, (rmsn_##TOUT *)y, sy, (const rmsn_##ACC *)w,   \
                                               (const rmsn_##ACC *)b, pre, r, act);                                 \
        if (rstd) *(rmsn_##ACC *)rstd = pre * r;                                                                    \
    }

/* Gated backward of one slice (dy, x, g, dx, dg of type T), the exact
 * gradient of the fused forward.  With a = act(g), a' = d act / d g:
 *   norm_before_gate:  dp = dy * a, dx = rstd * dp * w - k * x,
 *                      dg = dy * (xhat * w + b) * a', dw += dp * xhat, db += dp
 *   else:              u = x * a, du = rstd * dy * w - k * u,
 *                      dx = du * a, dg = du * x * a', dw += dy * u * rstd, db += dy
 * with k = coef * sum(g_eff * v) as in RMSN_SLICE_bwd (v = x or u, g_eff =
 * dp * w or dy * w).  rstd given or recomputed the forward's way, from the
 * sum of squares the dot pass adds up alongside (the forward's bits, without
 * a pass of its own or, gate first, a second exp).  a and a' come from
 * s = sigmoid(g): for a slice of at most RMSN_SUM_BLOCK elements the dot pass
 * keeps s in a stack buffer that the write pass reads (the exp is the costly
 * part); a longer one computes it in both (the same bits). */
#define RMSN_SLICE_gated_bwd(NAME, ISA, T, T_, ACC)                                                                 \
    static void NAME(const rmsn_opts *o, ptrdiff_t n, const void *dy, ptrdiff_t sdy, const void *x, ptrdiff_t sx,   \
                     const void *g, ptrdiff_t sg, void *dx, ptrdiff_t sdx, void *dg, ptrdiff_t sdg, const void *w,  \
                     const void *b, const void *rstd, void *dw, void *db)                                           \
    {                                                                                                               \
        const rmsn_##T *xt = (const rmsn_##T *)x, *gt = (const rmsn_##T *)g;                                        \
        const rmsn_##ACC *wt = (const rmsn_##ACC *)w;                                                               \
        rmsn_##ACC ss, r = 0, pre, gx, sig_buf[RMSN_SUM_BLOCK];                                                     \
        rmsn_##ACC *sig = n <= RMSN_SUM_BLOCK ? sig_buf : NULL;                                                     \
        double rms = 1.0;                                                                                           \
        int want_ss = !rstd || o->eps_mode != RMSN_EPS_SQRT;                                                        \
        RMSN_BLOCKED_DOT_SQ(ACC, gx, ss, want_ss,                                                                   \
                            rmsn_gateddot_##T##_##ISA(o, len, (const rmsn_##T *)dy + i0 * sdy, sdy, xt + i0 * sx,   \
                                                      sx, gt + i0 * sg, sg, sig, wt ? wt + i0 : NULL, ss_part));    \
        if (want_ss) r = rmsn_gated_rstd_##T##_##ACC(o, ss, n, xt, sx, gt, sg, &pre, &rms) * pre;                   \
        if (rstd) r = *(const rmsn_##ACC *)rstd;                                                                    \
        rmsn_gatedbwdwrite_##T##_##ISA(o, n, (const rmsn_##T *)dy, sdy, xt, sx, gt, sg, sig, (rmsn_##T *)dx, sdx,   \
                                       (rmsn_##T *)dg, sdg, wt, (const rmsn_##ACC *)b, r,                           \
                                       (rmsn_##ACC)(rmsn_grad_coef(o, r, rms, n) * (double)gx), (rmsn_##ACC *)dw,   \
                                       (rmsn_##ACC *)db);                                                           \
    }

/* ---- quantized output ------------------------------------------------------
 * Per slice: rstd from the sum of squares; pass 2 computes y (float32, or
 * float64 for float64 data, never rounded to a storage dtype) and
 * amax = max|y| (NaN if any y is NaN); scale = max(min(amax, scale_ub) / QMAX,
 * 1 / (QMAX * 512)) in float32; pass 3 writes
 * q = saturate(round_half_even(y * (1 / scale))), the float32 reciprocal.
 * A slice of at most RMSN_SUM_BLOCK elements keeps y in a stack buffer
 * between the passes (ybuf); a longer one recomputes y in pass 3 by the same
 * function (the same bits).
 * Tier primitives (RMSN_SCALAR_PRIM_quant, RMSN_SIMD_PRIM_quant):
 *   rmsn_qamax_<T>_<Q>_<ISA>(o, n, x, sx, w, b, pre, r, ybuf)        -> amax; ybuf[i] = y[i] if ybuf
 *   rmsn_qwrite_<T>_<Q>_<ISA>(o, n, x, sx, q, sq, w, b, pre, r, inv, ybuf)  y from ybuf if ybuf */
#define RMSN_QMAX_i8 127.0f
#define RMSN_QMAX_e4m3 448.0f

static inline float rmsn_quant_scale(double amax, float scale_ub, float qmax)
{
    float a = (float)amax, s, smallest = 1.0f / (qmax * 512.0f);
    if (a > scale_ub) a = scale_ub; /* NaN stays NaN */
    s = a / qmax;
    return s < smallest ? smallest : s;
}

/* int8: round half to even, saturate; NaN -> 0. */
static inline rmsn_i8 rmsn_f32_to_i8(float v)
{
    if (v != v) return 0;
    v = v > 127.0f ? 127.0f : v < -128.0f ? -128.0f : v;
    return (rmsn_i8)rintf(v);
}
static inline rmsn_i8 rmsn_f64_to_i8(double v)
{
    if (v != v) return 0;
    v = v > 127.0 ? 127.0 : v < -128.0 ? -128.0 : v;
    return (rmsn_i8)rint(v);
}

/* float8_e4m3fn from float32 bits, in integer ops: round to nearest even,
 * saturate to +-448 (infinities too), subnormals (m * 2^-9) kept, NaN -> the
 * NaN encoding with x's sign.  Clamping before rounding is the same as
 * saturating after (rounding is monotone and 448 is representable). */
static inline rmsn_e4m3 rmsn_f32_to_e4m3(float f)
{
    uint32_t u = rmsn_f32_bits(f), sign = (u >> 24) & 0x80u, a = u & 0x7fffffffu, shift, m;
    if (a > 0x7f800000u) return (rmsn_e4m3)(sign | 0x7fu);
    if (a > 0x43e00000u) a = 0x43e00000u;   /* 448 */
    if (a >= 0x3c800000u)                   /* 2^-6, the smallest normal: drop 20 mantissa bits, rebias 127 -> 7 */
        return (rmsn_e4m3)(sign | (((a + 0x7ffffu + ((a >> 20) & 1u)) >> 20) - (120u << 3)));
    shift = 141u - (a >> 23); /* |f| * 2^9 = m * 2^-shift */
    if (shift > 31u) shift = 31u;
    m = (a & 0x7fffffu) | 0x800000u;
    return (rmsn_e4m3)(sign | ((m + (1u << (shift - 1)) - 1u + ((m >> shift) & 1u)) >> shift));
}
/* float64 values go through float32 rounded to odd, so the result is rounded once. */
static inline rmsn_e4m3 rmsn_f64_to_e4m3(double v) { return rmsn_f32_to_e4m3(rmsn_f64_to_f32_odd(v)); }

static inline void rmsn_qstore_i8_f32(rmsn_i8 *p, float v) { *p = rmsn_f32_to_i8(v); }
static inline void rmsn_qstore_i8_f64(rmsn_i8 *p, double v) { *p = rmsn_f64_to_i8(v); }
static inline void rmsn_qstore_e4m3_f32(rmsn_e4m3 *p, float v) { *p = rmsn_f32_to_e4m3(v); }
static inline void rmsn_qstore_e4m3_f64(rmsn_e4m3 *p, double v) { *p = rmsn_f64_to_e4m3(v); }

/* Passes 2 and 3 of the slice at xt (stride sxt), rstd pre * r already known. */
#define RMSN_QUANT_PASSES(ISA, T, Q, ACC, xt, sxt)                                                             \
    do {                                                                                                       \
        rmsn_##ACC y_buf_[RMSN_SUM_BLOCK];                                                                     \
        rmsn_##ACC *ybuf_ = n <= RMSN_SUM_BLOCK ? y_buf_ : NULL;                                               \
        float s_ = rmsn_quant_scale(                                                                           \
            (double)rmsn_qamax_##T##_##Q##_##ISA(o, n, xt, sxt, wt, bt, pre, rs, ybuf_), scale_ub, RMSN_QMAX_##Q); \
        *scale = s_;                                                                                           \
        rmsn_qwrite_##T##_##Q##_##ISA(o, n, xt, sxt, (rmsn_##Q *)q, sq, wt, bt, pre, rs, 1.0f / s_, ybuf_);   \
    } while (0)

#define RMSN_SLICE_quant(NAME, ISA, T, Q, ACC)                                                                  \
    static void NAME(const rmsn_opts *o, ptrdiff_t n, const void *x, ptrdiff_t sx, void *q, ptrdiff_t sq,     \
                     const void *w, const void *b, float scale_ub, float *scale)                              \
    {                                                                                                           \
        const rmsn_##T *xt = (const rmsn_##T *)x;                                                               \
        const rmsn_##ACC *wt = (const rmsn_##ACC *)w, *bt = (const rmsn_##ACC *)b;                              \
        rmsn_##ACC ss, pre, rs;                                                                                 \
        RMSN_BLOCKED_SUM(ACC, ss, rmsn_sumsq_##T##_##ACC##_##ISA(len, xt + i0 * sx, sx));                       \
        rs = rmsn_rstd_##T##_##ACC(o, ss, n, xt, sx, &pre);                                                     \
        RMSN_QUANT_PASSES(ISA, T, Q, ACC, xt, sx);                                                              \
    }

/* ro = round(x + r) as the add op (its rmsn_addsq), then the quant passes on ro. */
#define RMSN_SLICE_quant_add(NAME, ISA, T, Q, ACC)                                                              \
    static void NAME(const rmsn_opts *o, ptrdiff_t n, const void *x, ptrdiff_t sx, const void *r,             \
                     ptrdiff_t sr, void *ro, ptrdiff_t sro, void *q, ptrdiff_t sq, const void *w,              \
                     const void *b, float scale_ub, float *scale)                                              \
    {                                                                                                           \
        const rmsn_##T *rot = (const rmsn_##T *)ro;                                                             \
        const rmsn_##ACC *wt = (const rmsn_##ACC *)w, *bt = (const rmsn_##ACC *)b;                              \
        rmsn_##ACC ss, pre, rs;                                                                                 \
        RMSN_BLOCKED_SUM(ACC, ss, rmsn_addsq_##T##_##T##_##ISA(len, (const rmsn_##T *)x + i0 * sx, sx,          \
                                                               (const rmsn_##T *)r + i0 * sr, sr,               \
                                                               (rmsn_##T *)ro + i0 * sro, sro));                \
        rs = rmsn_rstd_##T##_##ACC(o, ss, n, rot, sro, &pre);                                                   \
        RMSN_QUANT_PASSES(ISA, T, Q, ACC, rot, sro);                                                            \
    }

#endif /* RMSN_KERNELS_SLICE_H */
