/*
 * Scalar tier: the reference primitives and every kernel of ops.h, always
 * compiled, any strides.  They define the semantics the SIMD tiers must match
 * to rounding, and serve every layout a SIMD primitive does not vectorize.
 * Four partial sums break the add-latency chain without changing the policy
 * of rmsnorm.h.  The build compiles them with -fno-tree-vectorize (setup.py),
 * so this tier stays scalar code and the per-tier tests compare two kinds of
 * code.
 */
#ifndef RMSN_KERNELS_SCALAR_H
#define RMSN_KERNELS_SCALAR_H

#include "slice.h"

enum { RMSN_NONTEMPORAL_scalar = 0 }; /* rmsn_opts.stream is a hint for SIMD tiers */

/* y element from x element: (((v * pre) * r) [rounded to TIN]) * w[i] + b[i];
 * pre is 1 (an exact no-op) except for split rstds (rmsnorm.h). */
#define RMSN_SCALAR_DTYPE_ACC(T, ACC)                                                                        \
    static inline rmsn_##ACC rmsn_affine_##T##_##ACC(const rmsn_opts *o, rmsn_##ACC v, rmsn_##ACC pre,       \
                                                     rmsn_##ACC r, const rmsn_##ACC *w, const rmsn_##ACC *b, \
                                                     ptrdiff_t i)                                            \
    {                                                                                                        \
        rmsn_##ACC t = (v * pre) * r;                                                                        \
        if (o->round_mid) t = rmsn_round_##T##_##ACC(t);                                                     \
        if (w) t *= w[i];                                                                                    \
        if (b) t += b[i];                                                                                    \
        return t;                                                                                            \
    }                                                                                                        \
    static rmsn_##ACC rmsn_sumsq_##T##_##ACC##_scalar(ptrdiff_t n, const rmsn_##T *x, ptrdiff_t sx)          \
    {                                                                                                        \
        rmsn_##ACC s0 = 0, s1 = 0, s2 = 0, s3 = 0, v0, v1, v2, v3;                                           \
        ptrdiff_t i = 0;                                                                                     \
        for (; i + 4 <= n; i += 4) {                                                                         \
            v0 = rmsn_load_##T##_##ACC(x + i * sx);                                                          \
            v1 = rmsn_load_##T##_##ACC(x + (i + 1) * sx);                                                    \
            v2 = rmsn_load_##T##_##ACC(x + (i + 2) * sx);                                                    \
            v3 = rmsn_load_##T##_##ACC(x + (i + 3) * sx);                                                    \
            s0 += v0 * v0;                                                                                   \
            s1 += v1 * v1;                                                                                   \
            s2 += v2 * v2;                                                                                   \
            s3 += v3 * v3;                                                                                   \
        }                                                                                                    \
        for (; i < n; i++) {                                                                                 \
            v0 = rmsn_load_##T##_##ACC(x + i * sx);                                                          \
            s0 += v0 * v0;                                                                                   \
        }                                                                                                    \
        return (s0 + s1) + (s2 + s3);                                                                        \
    }                                                                                                        \
    static void rmsn_colsumsq_##T##_##ACC##_scalar(ptrdiff_t n, ptrdiff_t npos, const rmsn_##T *x,           \
                                                   ptrdiff_t sxc, ptrdiff_t sxp, rmsn_##ACC *ss)             \
    {                                                                                                        \
        ptrdiff_t c, p;                                                                                      \
        for (p = 0; p < npos; p++) ss[p] = 0;                                                                \
        for (c = 0; c < n; c++)                                                                              \
            for (p = 0; p < npos; p++) {                                                                     \
                rmsn_##ACC v = rmsn_load_##T##_##ACC(x + c * sxc + p * sxp);                                 \
                ss[p] += v * v;                                                                              \
            }                                                                                                \
    }
RMSN_FOR_EACH_DTYPE_ACC(RMSN_SCALAR_DTYPE_ACC)

/* The primitives that come with an entry of ops.h, by op (slice.h). */
#define RMSN_SCALAR_PRIM_fwd(TIN, TOUT, ACC)                                                                        \
    static void rmsn_scale_##TIN##_##TOUT##_scalar(const rmsn_opts *o, ptrdiff_t n, const rmsn_##TIN *x,            \
                                                   ptrdiff_t sx, rmsn_##TOUT *y, ptrdiff_t sy,                      \
                                                   const rmsn_##ACC *w, const rmsn_##ACC *b, rmsn_##ACC pre,        \
                                                   rmsn_##ACC r)                                                    \
    {                                                                                                               \
        ptrdiff_t i;                                                                                                \
        for (i = 0; i < n; i++)                                                                                     \
            rmsn_store_##TOUT##_##ACC(y + i * sy, rmsn_affine_##TIN##_##ACC(o, rmsn_load_##TIN##_##ACC(x + i * sx), \
                                                                            pre, r, w, b, i));                      \
    }                                                                                                               \
    static rmsn_##ACC rmsn_scalesq_##TIN##_##TOUT##_scalar(const rmsn_opts *o, ptrdiff_t n, const rmsn_##TIN *x,    \
                                                           ptrdiff_t sx, rmsn_##TOUT *y, ptrdiff_t sy,              \
                                                           const rmsn_##ACC *w, const rmsn_##ACC *b,                \
                                                           rmsn_##ACC pre, rmsn_##ACC r, const rmsn_##TIN *xn)      \
    {                                                                                                               \
        rmsn_scale_##TIN##_##TOUT##_scalar(o, n, x, sx, y, sy, w, b, pre, r);                                       \
        return xn ? rmsn_sumsq_##TIN##_##ACC##_scalar(n, xn, 1) : 0;                                                \
    }
#define RMSN_SCALAR_PRIM_fwd_cols(TIN, TOUT, ACC)                                                        \
    static void rmsn_colscale_##TIN##_##TOUT##_scalar(const rmsn_opts *o, ptrdiff_t n, ptrdiff_t npos,   \
                                                      const rmsn_##TIN *x, ptrdiff_t sxc, ptrdiff_t sxp, \
                                                      rmsn_##TOUT *y, ptrdiff_t syc, ptrdiff_t syp,      \
                                                      const rmsn_##ACC *w, const rmsn_##ACC *b,          \
                                                      const rmsn_##ACC *pre, const rmsn_##ACC *r)        \
    {                                                                                                    \
        ptrdiff_t c, p;                                                                                  \
        for (c = 0; c < n; c++)                                                                          \
            for (p = 0; p < npos; p++)                                                                   \
                rmsn_store_##TOUT##_##ACC(                                                               \
                    y + c * syc + p * syp,                                                               \
                    rmsn_affine_##TIN##_##ACC(o, rmsn_load_##TIN##_##ACC(x + c * sxc + p * sxp),         \
                                              pre ? pre[p] : 1, r[p], w, b, c));                         \
    }
#define RMSN_SCALAR_PRIM_add(TIN, TOUT, ACC)                                                                       \
    /* x + residual in the acc type, rounded once to the residual's type. */                                       \
    static rmsn_##ACC rmsn_addsq_##TIN##_##TOUT##_scalar(ptrdiff_t n, const rmsn_##TIN *x, ptrdiff_t sx,           \
                                                         const rmsn_##TOUT *r, ptrdiff_t sr, rmsn_##TOUT *ro,      \
                                                         ptrdiff_t sro)                                            \
    {                                                                                                              \
        ptrdiff_t i;                                                                                               \
        for (i = 0; i < n; i++)                                                                                    \
            rmsn_store_##TOUT##_##ACC(ro + i * sro,                                                                \
                                      rmsn_load_##TIN##_##ACC(x + i * sx) + rmsn_load_##TOUT##_##ACC(r + i * sr)); \
        return rmsn_sumsq_##TOUT##_##ACC##_scalar(n, ro, sro);                                                     \
    }

#define RMSN_SCALAR_PRIM_bwd(T, T_, ACC)                                                                      \
    /* sum(dy * w * x); x's sum of squares into *ss when given. */                                            \
    static rmsn_##ACC rmsn_bwddot_##T##_scalar(ptrdiff_t n, const rmsn_##T *dy, ptrdiff_t sdy,                \
                                               const rmsn_##T *x, ptrdiff_t sx, const rmsn_##ACC *w,          \
                                               rmsn_##ACC *ss)                                                \
    {                                                                                                         \
        rmsn_##ACC gx = 0, g;                                                                                 \
        ptrdiff_t i;                                                                                          \
        if (ss) *ss = rmsn_sumsq_##T##_##ACC##_scalar(n, x, sx);                                              \
        for (i = 0; i < n; i++) {                                                                             \
            g = rmsn_load_##T##_##ACC(dy + i * sdy);                                                          \
            if (w) g *= w[i];                                                                                 \
            gx += g * rmsn_load_##T##_##ACC(x + i * sx);                                                      \
        }                                                                                                     \
        return gx;                                                                                            \
    }                                                                                                         \
    static void rmsn_bwdwrite_##T##_scalar(ptrdiff_t n, const rmsn_##T *dy, ptrdiff_t sdy, const rmsn_##T *x, \
                                           ptrdiff_t sx, rmsn_##T *dx, ptrdiff_t sdx, const rmsn_##ACC *w,    \
                                           rmsn_##ACC r, rmsn_##ACC k, rmsn_##ACC *dw, rmsn_##ACC *db,        \
                                           const rmsn_opts *o)                                                \
    {                                                                                                         \
        ptrdiff_t i;                                                                                          \
        (void)o; /* stream and prefetch_next are hints for SIMD tiers */                                      \
        for (i = 0; i < n; i++) {                                                                             \
            rmsn_##ACC v = rmsn_load_##T##_##ACC(x + i * sx), d = rmsn_load_##T##_##ACC(dy + i * sdy);        \
            rmsn_##ACC g = w ? d * w[i] : d;                                                                  \
            if (dw) dw[i] += d * (v * r);                                                                     \
            if (db) db[i] += d;                                                                               \
            rmsn_store_##T##_##ACC(dx + i * sdx, r * g - k * v);                                              \
        }                                                                                                     \
    }

/* act[i] = act(g[i]); gate first: the sum of (x * act(g))^2, in four
 * partial sums as sumsq, act(g) kept in act[] when given. */
#define RMSN_SCALAR_PRIM_gated(TIN, TOUT, ACC)                                                                      \
    /* -> sum u^2, u = x with norm_before_gate (rmsn_sumsq's bits), else x * act(g);   \
     * act[i] = act(g[i]) when act is given. */                                                                     \
    static rmsn_##ACC rmsn_gatedsq_##TIN##_##TOUT##_scalar(const rmsn_opts *o, ptrdiff_t n, const rmsn_##TIN *x,    \
                                                           ptrdiff_t sx, const rmsn_##TIN *g, ptrdiff_t sg,         \
                                                           rmsn_##ACC *act)                                         \
    {                                                                                                               \
        rmsn_##ACC s[4] = {0, 0, 0, 0}, u, a, sig;                                                                  \
        ptrdiff_t i;                                                                                                \
        if (o->norm_before_gate) {                                                                                  \
            for (i = 0; act && i < n; i++)                                                                          \
                act[i] = rmsn_gate_##ACC(rmsn_load_##TIN##_##ACC(g + i * sg), o->act_silu, &sig);                   \
            return rmsn_sumsq_##TIN##_##ACC##_scalar(n, x, sx);                                                     \
        }                                                                                                           \
        for (i = 0; i < n; i++) {                                                                                   \
            a = rmsn_gate_##ACC(rmsn_load_##TIN##_##ACC(g + i * sg), o->act_silu, &sig);                            \
            if (act) act[i] = a;                                                                                    \
            u = rmsn_load_##TIN##_##ACC(x + i * sx) * a;                                                            \
            s[i & 3] += u * u;                                                                                      \
        }                                                                                                           \
        return (s[0] + s[1]) + (s[2] + s[3]);                                                                       \
    }                                                                                                               \
    static void rmsn_gatedscale_##TIN##_##TOUT##_scalar(const rmsn_opts *o, ptrdiff_t n, const rmsn_##TIN *x,       \
                                                        ptrdiff_t sx, const rmsn_##TIN *g, ptrdiff_t sg,            \
                                                        rmsn_##TOUT *y, ptrdiff_t sy, const rmsn_##ACC *w,          \
                                                        const rmsn_##ACC *b, rmsn_##ACC pre, rmsn_##ACC r,          \
                                                        const rmsn_##ACC *act)                                      \
    {                                                                                                               \
        rmsn_##ACC a, sig, t;                                                                                       \
        ptrdiff_t i;                                                                                                \
        for (i = 0; i < n; i++) {                                                                                   \
            a = act ? act[i] : rmsn_gate_##ACC(rmsn_load_##TIN##_##ACC(g + i * sg), o->act_silu, &sig);             \
            t = rmsn_load_##TIN##_##ACC(x + i * sx);                                                                \
            t = rmsn_affine_##TIN##_##ACC(o, o->norm_before_gate ? t : t * a, pre, r, w, b, i);                     \
            if (o->round_mid) t = rmsn_round_##TIN##_##ACC(t);                                                      \
            rmsn_store_##TOUT##_##ACC(y + i * sy, o->norm_before_gate ? t * a : t);                                 \
        }                                                                                                           \
    }

/* s = sigmoid(g): the dot pass keeps it in sig[] when given, the write pass
 * reads it from there (or computes it again: the same bits).  With ss, the
 * dot pass also sums the squares of v (x, or x * act(g) gate first) in the
 * accumulators of rmsn_sumsq (gate after) or rmsn_gatedsq (gate first), so
 * *ss is the forward's sum bit for bit. */
#define RMSN_SCALAR_PRIM_gated_bwd(T, T_, ACC)                                                                       \
    static rmsn_##ACC rmsn_gateddot_##T##_scalar(const rmsn_opts *o, ptrdiff_t n, const rmsn_##T *dy,                \
                                                 ptrdiff_t sdy, const rmsn_##T *x, ptrdiff_t sx, const rmsn_##T *g,  \
                                                 ptrdiff_t sg, rmsn_##ACC *sig, const rmsn_##ACC *w,                 \
                                                 rmsn_##ACC *ss)                                                     \
    {                                                                                                                \
        rmsn_##ACC gx = 0, d, v, a, s, sq[4] = {0, 0, 0, 0};                                                         \
        ptrdiff_t i, whole = n & ~(ptrdiff_t)3;                                                                      \
        for (i = 0; i < n; i++) {                                                                                    \
            a = rmsn_gate_##ACC(rmsn_load_##T##_##ACC(g + i * sg), o->act_silu, &s);                                 \
            if (sig) sig[i] = s;                                                                                     \
            d = rmsn_load_##T##_##ACC(dy + i * sdy);                                                                 \
            v = rmsn_load_##T##_##ACC(x + i * sx);                                                                   \
            if (o->norm_before_gate)                                                                                 \
                d *= a;                                                                                              \
            else                                                                                                     \
                v *= a;                                                                                              \
            if (w) d *= w[i];                                                                                        \
            gx += d * v;                                                                                             \
            if (ss) sq[o->norm_before_gate && i >= whole ? 0 : i & 3] += v * v;                                      \
        }                                                                                                            \
        if (ss) *ss = (sq[0] + sq[1]) + (sq[2] + sq[3]);                                                             \
        return gx;                                                                                                   \
    }                                                                                                                \
    static void rmsn_gatedbwdwrite_##T##_scalar(const rmsn_opts *o, ptrdiff_t n, const rmsn_##T *dy, ptrdiff_t sdy,  \
                                                const rmsn_##T *x, ptrdiff_t sx, const rmsn_##T *g, ptrdiff_t sg,    \
                                                const rmsn_##ACC *sig, rmsn_##T *dx, ptrdiff_t sdx, rmsn_##T *dg,    \
                                                ptrdiff_t sdg, const rmsn_##ACC *w, const rmsn_##ACC *b,             \
                                                rmsn_##ACC r, rmsn_##ACC k, rmsn_##ACC *dw, rmsn_##ACC *db)          \
    {                                                                                                                \
        rmsn_##ACC d, v, gv, a, s, da, wi, up, dv;                                                                   \
        ptrdiff_t i;                                                                                                 \
        for (i = 0; i < n; i++) {                                                                                    \
            gv = rmsn_load_##T##_##ACC(g + i * sg);                                                                  \
            if (sig)                                                                                                 \
                s = sig[i];                                                                                          \
            else                                                                                                     \
                rmsn_gate_##ACC(gv, 0, &s);                                                                          \
            a = o->act_silu ? gv * s : s;                                                                            \
            da = o->act_silu ? s + gv * s * (1 - s) : s * (1 - s);                                                   \
            d = rmsn_load_##T##_##ACC(dy + i * sdy);                                                                 \
            v = rmsn_load_##T##_##ACC(x + i * sx);                                                                   \
            wi = w ? w[i] : 1;                                                                                       \
            if (o->norm_before_gate) {                                                                               \
                up = d * a; /* the gradient of the normalized output */                                              \
                dv = r * (up * wi) - k * v;                                                                          \
                rmsn_store_##T##_##ACC(dg + i * sdg, d * ((v * r) * wi + (b ? b[i] : 0)) * da);                      \
                rmsn_store_##T##_##ACC(dx + i * sdx, dv);                                                            \
                v = v * r;                                                                                           \
            } else {                                                                                                 \
                up = d;                                                                                              \
                dv = r * (d * wi) - k * (v * a); /* the gradient of u */                                             \
                rmsn_store_##T##_##ACC(dg + i * sdg, dv * v * da);                                                   \
                rmsn_store_##T##_##ACC(dx + i * sdx, dv * a);                                                        \
                v = (v * a) * r;                                                                                     \
            }                                                                                                        \
            if (dw) dw[i] += up * v;                                                                                 \
            if (db) db[i] += up;                                                                                     \
        }                                                                                                            \
    }
/* quant: pass 2 (y and its amax; y kept in ybuf if given) and pass 3 (q from
 * that y, or from y computed again the same way), slice.h. */
#define RMSN_SCALAR_PRIM_quant(T, Q, ACC)                                                                       \
    static rmsn_##ACC rmsn_qamax_##T##_##Q##_scalar(const rmsn_opts *o, ptrdiff_t n, const rmsn_##T *x,        \
                                                    ptrdiff_t sx, const rmsn_##ACC *w, const rmsn_##ACC *b,    \
                                                    rmsn_##ACC pre, rmsn_##ACC r, rmsn_##ACC *ybuf)            \
    {                                                                                                           \
        rmsn_##ACC m = 0, a;                                                                                    \
        ptrdiff_t i;                                                                                            \
        for (i = 0; i < n; i++) {                                                                               \
            a = rmsn_affine_##T##_##ACC(o, rmsn_load_##T##_##ACC(x + i * sx), pre, r, w, b, i);                 \
            if (ybuf) ybuf[i] = a;                                                                              \
            a = a < 0 ? -a : a;                                                                                 \
            if (a > m || a != a) m = a; /* a NaN sticks: no later a compares greater */                         \
        }                                                                                                       \
        return m;                                                                                               \
    }                                                                                                           \
    static void rmsn_qwrite_##T##_##Q##_scalar(const rmsn_opts *o, ptrdiff_t n, const rmsn_##T *x,             \
                                               ptrdiff_t sx, rmsn_##Q *q, ptrdiff_t sq, const rmsn_##ACC *w,   \
                                               const rmsn_##ACC *b, rmsn_##ACC pre, rmsn_##ACC r, float inv,   \
                                               const rmsn_##ACC *ybuf)                                         \
    {                                                                                                           \
        rmsn_##ACC y;                                                                                           \
        ptrdiff_t i;                                                                                            \
        for (i = 0; i < n; i++) {                                                                               \
            y = ybuf ? ybuf[i] : rmsn_affine_##T##_##ACC(o, rmsn_load_##T##_##ACC(x + i * sx), pre, r, w, b, i); \
            rmsn_qstore_##Q##_##ACC(q + i * sq, y * (rmsn_##ACC)inv);                                           \
        }                                                                                                       \
    }
/* quant_add: add's rmsn_addsq and quant's passes. */
#define RMSN_SCALAR_PRIM_quant_add(T, Q, ACC)

/* The scalar kernels: every entry of ops.h, named by its scalar column. */
#define RMSN_SCALAR_KERNEL(ARG, OP, TIN, TOUT, ACC, NAME)                               \
    RMSN_SCALAR_PRIM_##OP(TIN, TOUT, ACC) RMSN_SLICE_##OP(NAME, scalar, TIN, TOUT, ACC)
#define RMSN_SCALAR_KERNEL_OF_SIMD(ARG, OP, TIN, TOUT, ACC, NAME, AVX2, AVX512, AVX512BF16, NEON) \
    RMSN_SCALAR_KERNEL(ARG, OP, TIN, TOUT, ACC, NAME)
RMSN_FOR_EACH_KERNEL(RMSN_SCALAR_KERNEL, RMSN_SCALAR_KERNEL_OF_SIMD, ~)

#endif /* RMSN_KERNELS_SCALAR_H */
