/*
 * AVX-512 tier (F/BW/VL/DQ): 16 f32 / 8 f64 lanes, masked partial vectors.
 * The vector helpers kernels/simd.h builds the primitives from, instantiated
 * twice, each in its own target region:
 *   avx512      every AVX-512 CPU; bfloat16 rounds in integers
 *   avx512bf16  CPUs with AVX512-BF16 too (dispatch.h installs its kernels over
 *               avx512's): bfloat16 rounds with VCVTNEPS2BF16, about 4x faster
 *               per stored element here, giving the same bits (below).
 */
#ifndef RMSN_KERNELS_AVX512_H
#define RMSN_KERNELS_AVX512_H

#include <immintrin.h>

#include "simd.h"

/* f32 -> bf16 bits in each 32-bit lane: rmsn_f32_to_bf16 of rmsnorm.h lane
 * by lane (nearest-even by integer add, subnormals kept, NaN kept quiet). */
#define RMSN_AVX512_BF16_BITS(ISA)                                                                                 \
    RMSN_VINLINE __m512i rmsn_bf16_bits_##ISA(__m512 v)                                                           \
    {                                                                                                              \
        __m512i x = _mm512_castps_si512(v);                                                                        \
        __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(x, 16), _mm512_set1_epi32(1));                            \
        __m512i rounded =                                                                                          \
            _mm512_srli_epi32(_mm512_add_epi32(x, _mm512_add_epi32(lsb, _mm512_set1_epi32(0x7fff))), 16);          \
        __mmask16 nan = _mm512_cmpgt_epi32_mask(_mm512_and_si512(x, _mm512_set1_epi32(0x7fffffff)),                \
                                                _mm512_set1_epi32(0x7f800000));                                    \
        return _mm512_mask_or_epi32(rounded, nan, _mm512_srli_epi32(x, 16), _mm512_set1_epi32(0x40));             \
    }

/* Masked partial loads and stores of the acc types themselves. */
#define RMSN_AVX512_MASKED_ACC(ISA, ACC, SFX, MASK)                                                                \
    RMSN_VINLINE rmsn_v##ACC##_##ISA rmsn_vloadn_##ACC##_##ACC##_##ISA(const rmsn_##ACC *p, ptrdiff_t m)          \
    {                                                                                                              \
        return _mm512_maskz_loadu_##SFX(MASK(m), p);                                                               \
    }                                                                                                              \
    RMSN_VINLINE void rmsn_vstoren_##ACC##_##ACC##_##ISA(rmsn_##ACC *p, rmsn_v##ACC##_##ISA v, ptrdiff_t m)       \
    {                                                                                                              \
        _mm512_mask_storeu_##SFX(p, MASK(m), v);                                                                   \
    }

/* Everything but the bfloat16 rounding, for tier name ISA.  The tier then
 * defines rmsn_bf16_narrow_<ISA>(v): the 16 bf16 of v, rounded. */
#define RMSN_AVX512_HELPERS(ISA)                                                                                   \
    typedef __m512 rmsn_vf32_##ISA;                                                                                \
    typedef __m512d rmsn_vf64_##ISA;                                                                               \
    enum { RMSN_LANES_f32_##ISA = 16, RMSN_LANES_f64_##ISA = 8, RMSN_NONTEMPORAL_##ISA = 1 };                      \
    RMSN_VINLINE __mmask16 rmsn_mask16_##ISA(ptrdiff_t m) { return (__mmask16)((1u << m) - 1u); }                \
    RMSN_VINLINE __mmask8 rmsn_mask8_##ISA(ptrdiff_t m) { return (__mmask8)((1u << m) - 1u); }                   \
    RMSN_SIMD_ACC_TYPE(ISA, f32, _mm512, ps)                                                                       \
    RMSN_SIMD_ACC_TYPE(ISA, f64, _mm512, pd)                                                                       \
    RMSN_VINLINE float rmsn_vhsum_f32_##ISA(__m512 v)                                                             \
    {                                                                                                              \
        __m256 s8 = _mm256_add_ps(_mm512_castps512_ps256(v), _mm512_extractf32x8_ps(v, 1));                        \
        __m128 s = _mm_add_ps(_mm256_castps256_ps128(s8), _mm256_extractf128_ps(s8, 1));                           \
        s = _mm_add_ps(s, _mm_movehl_ps(s, s));                                                                    \
        return _mm_cvtss_f32(_mm_add_ss(s, _mm_movehdup_ps(s)));                                                   \
    }                                                                                                              \
    RMSN_VINLINE double rmsn_vhsum_f64_##ISA(__m512d v)                                                           \
    {                                                                                                              \
        __m256d s4 = _mm256_add_pd(_mm512_castpd512_pd256(v), _mm512_extractf64x4_pd(v, 1));                      \
        __m128d s = _mm_add_pd(_mm256_castpd256_pd128(s4), _mm256_extractf128_pd(s4, 1));                          \
        return _mm_cvtsd_f64(_mm_add_sd(s, _mm_unpackhi_pd(s, s)));                                                \
    }                                                                                                              \
    /* VMAXPS/VMINPS return their second operand when either is NaN. */                                           \
    RMSN_VINLINE __m512 rmsn_vclamp_f32_##ISA(__m512 v, __m512 lo, __m512 hi)                                     \
    {                                                                                                              \
        return _mm512_min_ps(hi, _mm512_max_ps(lo, v));                                                            \
    }                                                                                                              \
    /* t's low mantissa bits hold m: (126 - m) << 23, modulo 2^32. */                                          \
    RMSN_VINLINE __m512 rmsn_vpow2neg_f32_##ISA(__m512 t)                                                         \
    {                                                                                                              \
        return _mm512_castsi512_ps(                                                                                \
            _mm512_sub_epi32(_mm512_set1_epi32(126 << 23), _mm512_slli_epi32(_mm512_castps_si512(t), 23)));       \
    }                                                                                                              \
    RMSN_VINLINE __m512 rmsn_vdiv_f32_##ISA(__m512 a, __m512 b) { return _mm512_div_ps(a, b); }                  \
    RMSN_SIMD_GATE(ISA)                                                                                            \
    RMSN_AVX512_MASKED_ACC(ISA, f32, ps, rmsn_mask16_##ISA)                                                        \
    RMSN_AVX512_MASKED_ACC(ISA, f64, pd, rmsn_mask8_##ISA)                                                         \
    /* float16: F16C conversions, round to nearest even, subnormals kept. */                                      \
    RMSN_VINLINE __m256i rmsn_f16_narrow_##ISA(__m512 v)                                                          \
    {                                                                                                              \
        return _mm512_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);                                  \
    }                                                                                                              \
    RMSN_VINLINE __m512 rmsn_f16_widen_##ISA(__m256i h) { return _mm512_cvtph_ps(h); }                            \
    /* bfloat16: the bits in the upper half of each f32 lane (exact). */                                          \
    RMSN_VINLINE __m512 rmsn_bf16_widen_##ISA(__m256i h)                                                          \
    {                                                                                                              \
        return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));                              \
    }

/* Loads and stores (full, masked partial, non-temporal) and the round trip
 * of the 16-bit storage type T, from the tier's rmsn_<T>_narrow/_widen. */
#define RMSN_AVX512_HALF_TYPE(ISA, T)                                                                              \
    RMSN_VINLINE __m512 rmsn_vload_##T##_f32_##ISA(const rmsn_##T *p)                                             \
    {                                                                                                              \
        return rmsn_##T##_widen_##ISA(_mm256_loadu_si256((const __m256i *)p));                                     \
    }                                                                                                              \
    RMSN_VINLINE __m512 rmsn_vloadn_##T##_f32_##ISA(const rmsn_##T *p, ptrdiff_t m)                               \
    {                                                                                                              \
        return rmsn_##T##_widen_##ISA(_mm256_maskz_loadu_epi16(rmsn_mask16_##ISA(m), p));                          \
    }                                                                                                              \
    RMSN_VINLINE void rmsn_vstore_##T##_f32_##ISA(rmsn_##T *p, __m512 v)                                          \
    {                                                                                                              \
        _mm256_storeu_si256((__m256i *)p, rmsn_##T##_narrow_##ISA(v));                                             \
    }                                                                                                              \
    RMSN_VINLINE void rmsn_vstoren_##T##_f32_##ISA(rmsn_##T *p, __m512 v, ptrdiff_t m)                            \
    {                                                                                                              \
        _mm256_mask_storeu_epi16(p, rmsn_mask16_##ISA(m), rmsn_##T##_narrow_##ISA(v));                             \
    }                                                                                                              \
    RMSN_VINLINE void rmsn_vstream_##T##_f32_##ISA(rmsn_##T *p, __m512 v)                                         \
    {                                                                                                              \
        _mm256_stream_si256((__m256i *)p, rmsn_##T##_narrow_##ISA(v));                                             \
    }                                                                                                              \
    RMSN_VINLINE __m512 rmsn_vround_##T##_f32_##ISA(__m512 v) { return rmsn_##T##_widen_##ISA(rmsn_##T##_narrow_##ISA(v)); }

/* quant (simd.h), as the AVX2 tier's with masks; int8 by a saturating
 * narrow of the clamped, rounded values. */
#define RMSN_AVX512_QUANT(ISA)                                                                                     \
    RMSN_VINLINE __m512 rmsn_vabsmax_f32_##ISA(__m512 amax, __m512 y)                                              \
    {                                                                                                              \
        __m512 a = _mm512_abs_ps(y);                                                                               \
        return _mm512_mask_blend_ps(_mm512_cmp_ps_mask(a, a, _CMP_UNORD_Q), _mm512_max_ps(a, amax), a);            \
    }                                                                                                              \
    RMSN_VINLINE void rmsn_vqstore_i8_##ISA(rmsn_i8 *p, __m512 v)                                                  \
    {                                                                                                              \
        __m512 c = _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(v, v, _CMP_ORD_Q), v);                                   \
        c = _mm512_min_ps(_mm512_max_ps(c, _mm512_set1_ps(-128.0f)), _mm512_set1_ps(127.0f));                      \
        _mm_storeu_si128((__m128i *)p, _mm512_cvtsepi32_epi8(_mm512_cvtps_epi32(c)));                              \
    }                                                                                                              \
    RMSN_VINLINE void rmsn_vqstore_e4m3_##ISA(rmsn_e4m3 *p, __m512 v)                                              \
    {                                                                                                              \
        __m512i u = _mm512_castps_si512(v), one = _mm512_set1_epi32(1);                                            \
        __m512i sign = _mm512_and_si512(_mm512_srli_epi32(u, 24), _mm512_set1_epi32(0x80));                        \
        __m512i a = _mm512_and_si512(u, _mm512_set1_epi32(0x7fffffff));                                            \
        __mmask16 nan = _mm512_cmpgt_epi32_mask(a, _mm512_set1_epi32(0x7f800000));                                 \
        __m512i sat = _mm512_min_epi32(a, _mm512_set1_epi32(0x43e00000));                                          \
        __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(sat, 20), one);                                           \
        __m512i normal = _mm512_sub_epi32(                                                                         \
            _mm512_srli_epi32(_mm512_add_epi32(sat, _mm512_add_epi32(lsb, _mm512_set1_epi32(0x7ffff))), 20),       \
            _mm512_set1_epi32(120 << 3));                                                                          \
        __m512i shift = _mm512_min_epi32(_mm512_sub_epi32(_mm512_set1_epi32(141), _mm512_srli_epi32(sat, 23)),     \
                                         _mm512_set1_epi32(31));                                                   \
        __m512i m = _mm512_or_si512(_mm512_and_si512(sat, _mm512_set1_epi32(0x7fffff)),                            \
                                    _mm512_set1_epi32(0x800000));                                                  \
        __m512i half = _mm512_sub_epi32(_mm512_sllv_epi32(one, _mm512_sub_epi32(shift, one)), one);                \
        __m512i odd = _mm512_and_si512(_mm512_srlv_epi32(m, shift), one);                                          \
        __m512i sub = _mm512_srlv_epi32(_mm512_add_epi32(_mm512_add_epi32(m, half), odd), shift);                  \
        __m512i r = _mm512_mask_blend_epi32(_mm512_cmpgt_epi32_mask(sat, _mm512_set1_epi32(0x3c7fffff)), sub,      \
                                            normal);                                                               \
        r = _mm512_or_si512(_mm512_mask_blend_epi32(nan, r, _mm512_set1_epi32(0x7f)), sign);                       \
        _mm_storeu_si128((__m128i *)p, _mm512_cvtepi32_epi8(r));                                                   \
    }                                                                                                              \
    RMSN_SIMD_QSTORE4_EACH(ISA, i8)                                                                                \
    RMSN_SIMD_QSTORE4_EACH(ISA, e4m3)                                                                              \
    RMSN_SIMD_QUANT_HELPERS(ISA)

/* ---- avx512: every AVX-512 CPU ---- */
#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx2,fma,f16c"))), \
                             apply_to = function)
#else
#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512dq,avx2,fma,f16c")
#endif

RMSN_AVX512_HELPERS(avx512)
RMSN_AVX512_BF16_BITS(avx512)
RMSN_VINLINE __m256i rmsn_bf16_narrow_avx512(__m512 v) { return _mm512_cvtepi32_epi16(rmsn_bf16_bits_avx512(v)); }
RMSN_AVX512_HALF_TYPE(avx512, f16)
RMSN_AVX512_HALF_TYPE(avx512, bf16)
RMSN_SIMD_FOR_EACH_DTYPE_ACC(RMSN_SIMD_NATURAL_PAIR, avx512)
RMSN_SIMD_FOR_EACH_DTYPE_ACC(RMSN_SIMD_DTYPE_ACC, avx512)
RMSN_AVX512_QUANT(avx512)
RMSN_FOR_EACH_KERNEL(RMSN_NO_KERNEL, RMSN_SIMD_KERNEL, avx512)

#if defined(__clang__)
#pragma clang attribute pop
#else
#pragma GCC pop_options
#endif

/* ---- avx512bf16: AVX-512 with AVX512-BF16 ---- */
#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx2,fma,f16c,avx512bf16"))), \
                             apply_to = function)
#else
#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512dq,avx2,fma,f16c,avx512bf16")
#endif

RMSN_AVX512_HELPERS(avx512bf16)
RMSN_AVX512_BF16_BITS(avx512bf16)
/* VCVTNEPS2BF16 rounds to nearest even exactly as rmsn_bf16_bits (same
 * integer-add formula; NaN made quiet the same way) except that it flushes
 * subnormal inputs to zero: lanes holding an f32 subnormal (rare: a whole
 * vector of them costs the integer path too) take the integer result. */
RMSN_VINLINE __m256i rmsn_bf16_narrow_avx512bf16(__m512 v)
{
    __m256i h = (__m256i)_mm512_cvtneps_pbh(v);
    __mmask16 subnormal = _mm512_fpclass_ps_mask(v, 0x20);
    if (subnormal) h = _mm256_mask_mov_epi16(h, subnormal, _mm512_cvtepi32_epi16(rmsn_bf16_bits_avx512bf16(v)));
    return h;
}
RMSN_AVX512_HALF_TYPE(avx512bf16, f16)
RMSN_AVX512_HALF_TYPE(avx512bf16, bf16)
RMSN_SIMD_FOR_EACH_DTYPE_ACC(RMSN_SIMD_NATURAL_PAIR, avx512bf16)
RMSN_SIMD_FOR_EACH_DTYPE_ACC(RMSN_SIMD_DTYPE_ACC, avx512bf16)
RMSN_AVX512_QUANT(avx512bf16)
RMSN_FOR_EACH_KERNEL(RMSN_NO_KERNEL, RMSN_SIMD_KERNEL, avx512bf16)

#if defined(__clang__)
#pragma clang attribute pop
#else
#pragma GCC pop_options
#endif

#endif /* RMSN_KERNELS_AVX512_H */
