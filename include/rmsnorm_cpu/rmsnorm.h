/*
 * rmsnorm_cpu: the C contract of one normalized slice, and the numerical policy.
 *
 * Nothing here knows about Python, threads or allocation.  The Cython layer
 * (src/rmsnorm_cpu/_core.pyx) loops over slices and calls the kernels that
 * dispatch.h selects for the CPU.
 *
 * Numerical policy (every tier follows it; kernels refer here instead of
 * repeating it):
 *   - Storage dtypes: f16 (IEEE binary16), bf16 (bfloat16), f32, f64.
 *   - Compute ("acc") type: f64 when the input or the output is f64, else f32
 *     (RMSN_ACC_DTYPE below; ops.h lists every kernel's).
 *     Squares are summed in the acc type, never in the storage type, in
 *     blocks of RMSN_SUM_BLOCK elements whose sums are added in double
 *     (kernels/slice.h), so long slices keep their precision.
 *   - rstd per slice, from ms = sumsq / n:
 *       RMSN_EPS_SQRT   rstd = 1 / sqrt(ms + eps)
 *       RMSN_EPS_ADD    rstd = 1 / (sqrt(ms) + eps)
 *       RMSN_EPS_CLAMP  rstd = 1 / max(sqrt(ms), eps)
 *     computed once per slice by rmsn_rstd_*() in scalar code, so every tier
 *     turns the same sumsq into the same rstd.
 *   - No spurious overflow/underflow: a sumsq outside [ACC_MIN, ACC_MAX]
 *     (inf, zero or subnormal) that is not NaN is recomputed by the robust
 *     path: in f64 for f16/bf16/f32 data (their squares neither overflow nor
 *     underflow there), with max-abs scaling for f64 data.  A slice holding
 *     inf gets rms = inf, rstd = 0, hence NaN at the inf and 0 elsewhere.
 *   - y = ((x * rstd) * w) + b, evaluated left to right in the acc type
 *     without FMA contraction (the build uses -ffp-contract=off), then rounded
 *     once to the output dtype, round-to-nearest-even, subnormals kept.
 *     With round_mid (cast_mode="llama") x * rstd is first rounded to the input
 *     dtype (f16/bf16 only), as Hugging Face LlamaRMSNorm does.
 *   - w already holds weight + weight_offset in the acc type (the Python layer
 *     prepares it once per call); w == NULL means 1, b == NULL means 0.
 *   - SIMD tiers may sum squares in another order (several lanes), so tiers
 *     agree to rounding, and each tier is deterministic on its own.
 */
#ifndef RMSN_RMSNORM_H
#define RMSN_RMSNORM_H

#include <float.h>
#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

/* Storage type codes: the order is the index into the kernel tables. */
enum { RMSN_F16 = 0, RMSN_BF16 = 1, RMSN_F32 = 2, RMSN_F64 = 3, RMSN_NDTYPES = 4 };
enum { RMSN_EPS_SQRT = 0, RMSN_EPS_ADD = 1, RMSN_EPS_CLAMP = 2 };

typedef uint16_t rmsn_f16;
typedef uint16_t rmsn_bf16;
typedef float rmsn_f32;
typedef double rmsn_f64;

/* The code of a dtype token (f16 ...), for the macros that paste names. */
#define RMSN_DT_f16 RMSN_F16
#define RMSN_DT_bf16 RMSN_BF16
#define RMSN_DT_f32 RMSN_F32
#define RMSN_DT_f64 RMSN_F64

/* The accumulator rule: the acc dtype of a kernel reading or writing dtypes a
 * and b (a constant expression, so ops.h checks its list against it). */
#define RMSN_ACC_DTYPE(a, b) ((a) == RMSN_F64 || (b) == RMSN_F64 ? RMSN_F64 : RMSN_F32)

/* Bytes per element, by dtype code. */
static const size_t rmsn_itemsize[RMSN_NDTYPES] = {
    [RMSN_F16] = sizeof(rmsn_f16), [RMSN_BF16] = sizeof(rmsn_bf16),
    [RMSN_F32] = sizeof(rmsn_f32), [RMSN_F64] = sizeof(rmsn_f64)};

/* The normal range of an acc type: a sum of squares outside it takes the
 * robust path (below). */
#define RMSN_ACC_MIN_f32 FLT_MIN
#define RMSN_ACC_MAX_f32 FLT_MAX
#define RMSN_ACC_MIN_f64 DBL_MIN
#define RMSN_ACC_MAX_f64 DBL_MAX

/* Per-call options shared by every slice of the call. */
typedef struct {
    double eps;
    int eps_mode;  /* RMSN_EPS_* */
    int round_mid; /* cast_mode="llama": round x*rstd to the input dtype first */
    int stream;    /* the call's operands exceed the last-level cache: SIMD tiers write
                      outputs with non-temporal stores (same values, less traffic);
                      the caller then runs rmsn_stream_fence() (dispatch.h) */
    int prefetch_next; /* 0, or the slices follow each other (rows of a C-contiguous batch)
                          and SIMD tiers prefetch the slice prefetch_next ahead into L2
                          during the pass that works from cache, so its first pass does
                          not wait for memory (kernels/simd.h; the forward's row kernel
                          looks 2 ahead for a row whose successor is summed already) */
    int norm_before_gate; /* gated: normalize x, then multiply by act(gate); else normalize x * act(gate) */
    int act_silu;         /* gated: act is silu (else sigmoid) */
} rmsn_opts;

/* ---- bit casts and conversions (exact, portable; SIMD tiers mirror them) ---- */

static inline uint32_t rmsn_f32_bits(float f) { uint32_t u; memcpy(&u, &f, 4); return u; }
static inline float rmsn_bits_f32(uint32_t u) { float f; memcpy(&f, &u, 4); return f; }

static inline float rmsn_f16_to_f32(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t exp = (h >> 10) & 0x1fu, mant = h & 0x3ffu;
    if (exp == 0) { /* zero or subnormal: mant * 2^-24, exact in f32 */
        float f = (float)mant * 5.9604644775390625e-08f;
        return sign ? -f : f;
    }
    if (exp == 31) return rmsn_bits_f32(sign | 0x7f800000u | (mant << 13));
    return rmsn_bits_f32(sign | ((exp + 112u) << 23) | (mant << 13));
}

/* Round-to-nearest-even f32 -> f16, subnormals kept, NaN stays NaN. */
static inline uint16_t rmsn_f32_to_f16(float f)
{
    uint32_t x = rmsn_f32_bits(f);
    uint32_t sign = (x >> 16) & 0x8000u, ax = x & 0x7fffffffu, out, rem, half;
    if (ax >= 0x7f800000u) return (uint16_t)(sign | 0x7c00u | (ax > 0x7f800000u ? 0x200u | ((ax >> 13) & 0x3ffu) : 0u));
    if (ax >= 0x477ff000u) return (uint16_t)(sign | 0x7c00u); /* >= 65520 rounds to inf */
    if (ax < 0x38800000u) { /* below 2^-14: f16 subnormal or zero */
        uint32_t e = ax >> 23, m = (ax & 0x7fffffu) | 0x800000u, shift;
        if (ax <= 0x33000000u) return (uint16_t)sign; /* <= 2^-25: ties to even zero */
        shift = 126u - e;                             /* 14..24 */
        out = m >> shift;
        rem = m & ((1u << shift) - 1u);
        half = 1u << (shift - 1u);
        if (rem > half || (rem == half && (out & 1u))) out++;
        return (uint16_t)(sign | out);
    }
    ax -= 0x38000000u; /* rebias the exponent from 127 to 15 */
    out = ax >> 13;
    rem = ax & 0x1fffu;
    if (rem > 0x1000u || (rem == 0x1000u && (out & 1u))) out++;
    return (uint16_t)(sign | out);
}

static inline float rmsn_bf16_to_f32(uint16_t h) { return rmsn_bits_f32((uint32_t)h << 16); }

/* Round-to-nearest-even f32 -> bf16 with subnormals kept (as ml_dtypes). */
static inline uint16_t rmsn_f32_to_bf16(float f)
{
    uint32_t x = rmsn_f32_bits(f);
    if ((x & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((x >> 16) | 0x40u);
    return (uint16_t)((x + 0x7fffu + ((x >> 16) & 1u)) >> 16);
}

/* f64 -> f32 rounding to odd: a following rounding to f16/bf16 is then
 * correctly rounded (no double-rounding error). */
static inline float rmsn_f64_to_f32_odd(double d)
{
    float f = (float)d;
    if ((double)f != d && d == d) {
        uint32_t b = rmsn_f32_bits(f);
        if (fabs((double)f) > fabs(d)) b -= 1u; /* truncate toward zero */
        f = rmsn_bits_f32(b | 1u);
    }
    return f;
}

/* Every (storage dtype, acc type) the accumulator rule produces: the loads,
 * stores and rounding below exist for exactly these. */
#define RMSN_FOR_EACH_DTYPE_ACC(X)                                                        \
    X(f16, f32) X(bf16, f32) X(f32, f32) X(f16, f64) X(bf16, f64) X(f32, f64) X(f64, f64)

/* Loads widen exactly; stores round once.  Named by storage type and acc type
 * so kernels can be generated per (input, output, acc) by token pasting. */
static inline float rmsn_load_f16_f32(const rmsn_f16 *p) { return rmsn_f16_to_f32(*p); }
static inline float rmsn_load_bf16_f32(const rmsn_bf16 *p) { return rmsn_bf16_to_f32(*p); }
static inline float rmsn_load_f32_f32(const rmsn_f32 *p) { return *p; }
static inline double rmsn_load_f16_f64(const rmsn_f16 *p) { return rmsn_f16_to_f32(*p); }
static inline double rmsn_load_bf16_f64(const rmsn_bf16 *p) { return rmsn_bf16_to_f32(*p); }
static inline double rmsn_load_f32_f64(const rmsn_f32 *p) { return *p; }
static inline double rmsn_load_f64_f64(const rmsn_f64 *p) { return *p; }

/* f16 -> f32 as rmsn_f16_to_f32, without branches, for loops the compiler
 * vectorizes (rmsn_to_acc); the branches are faster in scalar code.  An
 * exponent of 0 gives (1 + mant/1024) 2^-14 - 2^-14 = mant 2^-24, exactly. */
static inline float rmsn_f16_to_f32_lanes(uint16_t h)
{
    uint32_t em = h & 0x7fffu, o = (em << 13) + (112u << 23);
    uint32_t sub = rmsn_f32_bits(rmsn_bits_f32(o + (1u << 23)) - 6.103515625e-05f);
    uint32_t zero_exp = 0u - (uint32_t)(em < 0x400u), top_exp = 0u - (uint32_t)(em >= 0x7c00u);
    o = (zero_exp & sub) | (~zero_exp & o) | (top_exp & 0x7f800000u);
    return rmsn_bits_f32(o | (uint32_t)(h & 0x8000u) << 16);
}

/* A loop the compiler vectorizes although the build turns auto-vectorization
 * off (setup.py: -fopenmp-simd honours the pragma, also without OpenMP). */
#if defined(__GNUC__)
#define RMSN_VECTORIZE _Pragma("omp simd")
#else
#define RMSN_VECTORIZE
#endif

/* n values of storage type `code` at src into dst in the acc type (f64 if
 * acc_f64, else f32), as NumPy's astype does: widening is exact, float64 to
 * float32 rounds to nearest even.  For weights the caller hands over in their
 * own dtype: a decode call converts 4096 of them, so the loops are vector
 * code (a fifth of the scalar time). */
static inline void rmsn_to_acc(int code, const void *src, ptrdiff_t n, int acc_f64, void *dst)
{
    const uint16_t *h = (const uint16_t *)src;
    float *f = (float *)dst;
    double *d = (double *)dst;
    ptrdiff_t i;
    switch (code * 2 + (acc_f64 != 0)) {
    case RMSN_F16 * 2: RMSN_VECTORIZE for (i = 0; i < n; i++) f[i] = rmsn_f16_to_f32_lanes(h[i]); break;
    case RMSN_F16 * 2 + 1: RMSN_VECTORIZE for (i = 0; i < n; i++) d[i] = rmsn_f16_to_f32_lanes(h[i]); break;
    case RMSN_BF16 * 2: RMSN_VECTORIZE for (i = 0; i < n; i++) f[i] = rmsn_bf16_to_f32(h[i]); break;
    case RMSN_BF16 * 2 + 1: RMSN_VECTORIZE for (i = 0; i < n; i++) d[i] = rmsn_bf16_to_f32(h[i]); break;
    case RMSN_F32 * 2: memcpy(dst, src, (size_t)n * sizeof(float)); break;
    case RMSN_F32 * 2 + 1: RMSN_VECTORIZE for (i = 0; i < n; i++) d[i] = ((const float *)src)[i]; break;
    case RMSN_F64 * 2: RMSN_VECTORIZE for (i = 0; i < n; i++) f[i] = (float)((const double *)src)[i]; break;
    default: memcpy(dst, src, (size_t)n * sizeof(double)); break;
    }
}

static inline void rmsn_store_f16_f32(rmsn_f16 *p, float v) { *p = rmsn_f32_to_f16(v); }
static inline void rmsn_store_bf16_f32(rmsn_bf16 *p, float v) { *p = rmsn_f32_to_bf16(v); }
static inline void rmsn_store_f32_f32(rmsn_f32 *p, float v) { *p = v; }
static inline void rmsn_store_f16_f64(rmsn_f16 *p, double v) { *p = rmsn_f32_to_f16(rmsn_f64_to_f32_odd(v)); }
static inline void rmsn_store_bf16_f64(rmsn_bf16 *p, double v) { *p = rmsn_f32_to_bf16(rmsn_f64_to_f32_odd(v)); }
static inline void rmsn_store_f32_f64(rmsn_f32 *p, double v) { *p = (float)v; }
static inline void rmsn_store_f64_f64(rmsn_f64 *p, double v) { *p = v; }

/* cast_mode="llama": x*rstd rounded to the input dtype (identity for f32/f64). */
static inline float rmsn_round_f16_f32(float v) { return rmsn_f16_to_f32(rmsn_f32_to_f16(v)); }
static inline float rmsn_round_bf16_f32(float v) { return rmsn_bf16_to_f32(rmsn_f32_to_bf16(v)); }
static inline float rmsn_round_f32_f32(float v) { return v; }
static inline double rmsn_round_f16_f64(double v) { return rmsn_f16_to_f32(rmsn_f32_to_f16(rmsn_f64_to_f32_odd(v))); }
static inline double rmsn_round_bf16_f64(double v) { return rmsn_bf16_to_f32(rmsn_f32_to_bf16(rmsn_f64_to_f32_odd(v))); }
static inline double rmsn_round_f32_f64(double v) { return v; }
static inline double rmsn_round_f64_f64(double v) { return v; }

/* ---- rstd from the sum of squares (scalar, shared by every tier) ---- */

/* rstd from an rms that is already free of overflow/underflow. */
static inline double rmsn_rstd_from_rms(const rmsn_opts *o, double rms)
{
    switch (o->eps_mode) {
    case RMSN_EPS_ADD: return 1.0 / (rms + o->eps);
    case RMSN_EPS_CLAMP: return 1.0 / (rms > o->eps ? rms : o->eps);
    default: return 1.0 / hypot(rms, sqrt(o->eps)); /* 1/sqrt(rms^2 + eps) without overflow */
    }
}

/* rms of a strided slice with f64 max-abs scaling: the robust path.  Only
 * f64 data needs the scaling; narrower data squared in f64 is already safe,
 * and the scaling keeps that path the same code. */
#define RMSN_DEFINE_ROBUST_RMS(T)                                                   \
    static double rmsn_robust_rms_##T(ptrdiff_t n, const rmsn_##T *x, ptrdiff_t sx) \
    {                                                                               \
        double amax = 0.0, s = 0.0;                                                 \
        ptrdiff_t i;                                                                \
        for (i = 0; i < n; i++) {                                                   \
            double a = fabs(rmsn_load_##T##_f64(x + i * sx));                       \
            if (!(a <= amax)) amax = a; /* NaN sticks */                            \
        }                                                                           \
        if (amax == 0.0 || isinf(amax) || amax != amax) return amax;                \
        for (i = 0; i < n; i++) {                                                   \
            double t = rmsn_load_##T##_f64(x + i * sx) / amax;                      \
            s += t * t;                                                             \
        }                                                                           \
        return amax * sqrt(s / (double)n);                                          \
    }
RMSN_DEFINE_ROBUST_RMS(f16)
RMSN_DEFINE_ROBUST_RMS(bf16)
RMSN_DEFINE_ROBUST_RMS(f32)
RMSN_DEFINE_ROBUST_RMS(f64)

/* An rstd that the acc type cannot hold as a normal number (a slice of
 * subnormals with eps = 0, or of values near the type's maximum) is split as
 * rstd = pre * r, with pre a power of two: y = ((x * pre) * r) keeps full
 * precision where x * rstd is representable.  pre = 1 otherwise. */
static inline double rmsn_split_rstd(double r, double acc_min, double acc_max, double *pre)
{
    *pre = 1.0;
    if (r == 0.0 || isinf(r) || r != r || (r >= acc_min && r <= acc_max)) return r;
    *pre = ldexp(1.0, ilogb(r) / 2);
    return r / *pre;
}

/* rstd of a slice from its sum of squares in the acc type: acc arithmetic
 * when sumsq is a normal number, NaN passed through, the robust path for the
 * rest (inf, zero, subnormal), which may also set *pre != 1 (see above).
 * (ACC)sqrt(double) is the correctly rounded sqrt in either acc type. */
#define RMSN_DEFINE_RSTD(T, ACC)                                                                                               \
    static inline rmsn_##ACC rmsn_rstd_##T##_##ACC(const rmsn_opts *o, rmsn_##ACC sumsq, ptrdiff_t n,                          \
                                                   const rmsn_##T *x, ptrdiff_t sx, rmsn_##ACC *pre)                           \
    {                                                                                                                          \
        double r, p;                                                                                                           \
        *pre = 1;                                                                                                              \
        if (sumsq >= RMSN_ACC_MIN_##ACC && sumsq <= RMSN_ACC_MAX_##ACC) {                                                      \
            rmsn_##ACC ms = sumsq / (rmsn_##ACC)n, eps = (rmsn_##ACC)o->eps, rms;                                              \
            if (o->eps_mode == RMSN_EPS_SQRT) return (rmsn_##ACC)1 / (rmsn_##ACC)sqrt(ms + eps);                               \
            rms = (rmsn_##ACC)sqrt(ms);                                                                                        \
            if (o->eps_mode == RMSN_EPS_ADD) return (rmsn_##ACC)1 / (rms + eps);                                               \
            return (rmsn_##ACC)1 / (rms > eps ? rms : eps);                                                                    \
        }                                                                                                                      \
        if (sumsq != sumsq) return sumsq;                                                                                      \
        r = rmsn_split_rstd(rmsn_rstd_from_rms(o, rmsn_robust_rms_##T(n, x, sx)), RMSN_ACC_MIN_##ACC, RMSN_ACC_MAX_##ACC, &p); \
        *pre = (rmsn_##ACC)p;                                                                                                  \
        return (rmsn_##ACC)r;                                                                                                  \
    }
RMSN_FOR_EACH_DTYPE_ACC(RMSN_DEFINE_RSTD)

/* The gradient's second coefficient: dx = rstd * g - c * x * sum(g * x) with
 * g = dy * w.  rms is the slice's rms (robustly computed).  Where the formula
 * has no derivative (SPEC): "add" with rms == 0 and "clamp" at rms <= eps give
 * c = 0. */
static inline double rmsn_grad_coef(const rmsn_opts *o, double rstd, double rms, ptrdiff_t n)
{
    switch (o->eps_mode) {
    case RMSN_EPS_ADD: return rms > 0.0 ? rstd * rstd / (rms * (double)n) : 0.0;
    case RMSN_EPS_CLAMP: return rms > o->eps ? rstd * rstd * rstd / (double)n : 0.0;
    default: return rstd * rstd * rstd / (double)n;
    }
}

/* ---- gate activations (rms_norm_gated) ----
 *
 * act(g) = g * s (silu) or s (sigmoid), with s = 1 / (1 + exp(-g)), in the
 * acc type.  In f32, exp is Cephes' expf (range reduction by ln 2 in two
 * parts, a degree-5 polynomial, then 2^n in two exact multiplies) evaluated
 * with plain multiplies and adds, no FMA: the scalar tier's bits.  The SIMD
 * tiers have their own, shorter FMA form with the same clamps
 * (RMSN_SIMD_GATE, kernels/simd.h).  Either is within a few ulp of s.  In
 * f64 it is libm's exp.
 * Limits, as torch's silu/sigmoid give them: exp overflows to inf where the
 * true value does (clamping at RMSN_EXP_HI keeps n at 128, so the last
 * multiply overflows), hence s = 0 and silu(-inf) = -inf * 0 = NaN as in
 * torch; below RMSN_EXP_LO exp is clamped to about 4e-38, where 1 + exp
 * already rounds to 1 (s = 1: only 1 + exp(x) is ever used); NaN stays NaN
 * (the clamps let it through, and the SIMD tiers order their min/max
 * operands so that it does). */
#define RMSN_EXP_HI 88.8f  /* n = 128: 2^n overflows where exp does */
#define RMSN_EXP_LO -86.0f /* n >= -124: 2^(n-1) stays normal */
#define RMSN_EXP_LOG2E 1.44269504088896341f
#define RMSN_EXP_C1 0.693359375f /* ln 2 = C1 + C2; n * C1 is exact */
#define RMSN_EXP_C2 -2.12194440e-4f
#define RMSN_EXP_P0 1.9875691500e-4f
#define RMSN_EXP_P1 1.3981999507e-3f
#define RMSN_EXP_P2 8.3334519073e-3f
#define RMSN_EXP_P3 4.1665795894e-2f
#define RMSN_EXP_P4 1.6666665459e-1f
#define RMSN_EXP_P5 5.0000001201e-1f

static inline float rmsn_exp_f32(float x)
{
    float c = x < RMSN_EXP_LO ? RMSN_EXP_LO : x, n, r, z, p; /* NaN passes the clamps */
    c = c > RMSN_EXP_HI ? RMSN_EXP_HI : c;
    n = floorf(c * RMSN_EXP_LOG2E + 0.5f);
    r = c - n * RMSN_EXP_C1;
    r = r - n * RMSN_EXP_C2;
    z = r * r;
    p = RMSN_EXP_P0 * r + RMSN_EXP_P1;
    p = p * r + RMSN_EXP_P2;
    p = p * r + RMSN_EXP_P3;
    p = p * r + RMSN_EXP_P4;
    p = p * r + RMSN_EXP_P5;
    p = p * z + r;
    p = p + 1.0f;
    return (p * rmsn_bits_f32((uint32_t)((int32_t)n + 126) << 23)) * 2.0f;
}

/* s = sigmoid(g) and the activation: *act = silu ? g * s : s. */
static inline float rmsn_gate_f32(float g, int silu, float *s)
{
    *s = 1.0f / (1.0f + rmsn_exp_f32(-g));
    return silu ? g * *s : *s;
}
static inline double rmsn_gate_f64(double g, int silu, double *s)
{
    *s = 1.0 / (1.0 + exp(-g));
    return silu ? g * *s : *s;
}

/* rms of u = x * act(g) over a strided slice, the robust path of the gated
 * norm with the gate applied first (u in f64, max-abs scaled). */
#define RMSN_DEFINE_GATED_ROBUST_RMS(T)                                                                     \
    static double rmsn_gated_robust_rms_##T(ptrdiff_t n, const rmsn_##T *x, ptrdiff_t sx, const rmsn_##T *g, \
                                            ptrdiff_t sg, int silu)                                         \
    {                                                                                                       \
        double amax = 0.0, s = 0.0, sig, t;                                                                 \
        ptrdiff_t i;                                                                                        \
        for (i = 0; i < n; i++) {                                                                           \
            double a = fabs(rmsn_load_##T##_f64(x + i * sx) * rmsn_gate_f64(rmsn_load_##T##_f64(g + i * sg), \
                                                                            silu, &sig));                   \
            if (!(a <= amax)) amax = a;                                                                     \
        }                                                                                                   \
        if (amax == 0.0 || isinf(amax) || amax != amax) return amax;                                        \
        for (i = 0; i < n; i++) {                                                                           \
            t = rmsn_load_##T##_f64(x + i * sx) * rmsn_gate_f64(rmsn_load_##T##_f64(g + i * sg), silu, &sig) \
                / amax;                                                                                     \
            s += t * t;                                                                                     \
        }                                                                                                   \
        return amax * sqrt(s / (double)n);                                                                  \
    }
RMSN_DEFINE_GATED_ROBUST_RMS(f16)
RMSN_DEFINE_GATED_ROBUST_RMS(bf16)
RMSN_DEFINE_GATED_ROBUST_RMS(f32)
RMSN_DEFINE_GATED_ROBUST_RMS(f64)

/* rstd of a gated slice from its sum of squares ss of v = x (gate after) or
 * u = x * act(g) (gate first), with rmsn_rstd_*'s policy; *rms (for the
 * backward's coefficient) as rmsn_grad_coef wants it. */
#define RMSN_DEFINE_GATED_RSTD(T, ACC)                                                                         \
    static inline rmsn_##ACC rmsn_gated_rstd_##T##_##ACC(const rmsn_opts *o, rmsn_##ACC ss, ptrdiff_t n,       \
                                                         const rmsn_##T *x, ptrdiff_t sx, const rmsn_##T *g,   \
                                                         ptrdiff_t sg, rmsn_##ACC *pre, double *rms)           \
    {                                                                                                          \
        double r, p;                                                                                           \
        if (o->norm_before_gate || (ss >= RMSN_ACC_MIN_##ACC && ss <= RMSN_ACC_MAX_##ACC) || ss != ss) {       \
            r = rmsn_rstd_##T##_##ACC(o, ss, n, x, sx, pre);                                                   \
            if (rms)                                                                                           \
                *rms = (ss >= RMSN_ACC_MIN_##ACC && ss <= RMSN_ACC_MAX_##ACC) ? sqrt((double)ss / (double)n)   \
                                                                            : rmsn_robust_rms_##T(n, x, sx);   \
            return (rmsn_##ACC)r;                                                                              \
        }                                                                                                      \
        p = rmsn_gated_robust_rms_##T(n, x, sx, g, sg, o->act_silu);                                           \
        if (rms) *rms = p;                                                                                     \
        r = rmsn_split_rstd(rmsn_rstd_from_rms(o, p), RMSN_ACC_MIN_##ACC, RMSN_ACC_MAX_##ACC, &p);             \
        *pre = (rmsn_##ACC)p;                                                                                  \
        return (rmsn_##ACC)r;                                                                                  \
    }
RMSN_FOR_EACH_DTYPE_ACC(RMSN_DEFINE_GATED_RSTD)

#endif /* RMSN_RMSNORM_H */
