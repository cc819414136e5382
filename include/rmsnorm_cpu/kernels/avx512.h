/*
 * AVX-512 tier (F/BW/VL/DQ): 16 f32 / 8 f64 lanes, masked partial vectors.
 * The vector helpers kernels/simd.h builds the primitives from.  Only these
 * subsets are used (no AVX512-BF16/FP16: bf16 rounds in integers to keep
 * subnormals), so every AVX-512 CPU runs the same code.
 */
#ifndef RMSN_KERNELS_AVX512_H
#define RMSN_KERNELS_AVX512_H

#include <immintrin.h>

#include "simd.h"

#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx2,fma,f16c"))), \
                             apply_to = function)
#else
#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512dq,avx2,fma,f16c")
#endif

typedef __m512 rmsn_vf32_avx512;
typedef __m512d rmsn_vf64_avx512;
enum { RMSN_LANES_f32_avx512 = 16, RMSN_LANES_f64_avx512 = 8 };

static inline __mmask16 rmsn_mask16_avx512(ptrdiff_t m) { return (__mmask16)((1u << m) - 1u); }
static inline __mmask8 rmsn_mask8_avx512(ptrdiff_t m) { return (__mmask8)((1u << m) - 1u); }

RMSN_SIMD_ACC_TYPE(avx512, f32, _mm512, ps)
RMSN_SIMD_ACC_TYPE(avx512, f64, _mm512, pd)

static inline float rmsn_vhsum_f32_avx512(__m512 v)
{
    __m256 s8 = _mm256_add_ps(_mm512_castps512_ps256(v), _mm512_extractf32x8_ps(v, 1));
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(s8), _mm256_extractf128_ps(s8, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    return _mm_cvtss_f32(_mm_add_ss(s, _mm_movehdup_ps(s)));
}

static inline double rmsn_vhsum_f64_avx512(__m512d v)
{
    __m256d s4 = _mm256_add_pd(_mm512_castpd512_pd256(v), _mm512_extractf64x4_pd(v, 1));
    __m128d s = _mm_add_pd(_mm256_castpd256_pd128(s4), _mm256_extractf128_pd(s4, 1));
    return _mm_cvtsd_f64(_mm_add_sd(s, _mm_unpackhi_pd(s, s)));
}

/* f32 -> bf16 bits in each 32-bit lane: rmsn_f32_to_bf16 of rmsnorm.h lane
 * by lane (nearest-even by integer add, subnormals kept, NaN kept quiet). */
static inline __m512i rmsn_bf16_bits_avx512(__m512 v)
{
    __m512i x = _mm512_castps_si512(v);
    __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(x, 16), _mm512_set1_epi32(1));
    __m512i rounded = _mm512_srli_epi32(_mm512_add_epi32(x, _mm512_add_epi32(lsb, _mm512_set1_epi32(0x7fff))), 16);
    __mmask16 nan = _mm512_cmpgt_epi32_mask(_mm512_and_si512(x, _mm512_set1_epi32(0x7fffffff)),
                                            _mm512_set1_epi32(0x7f800000));
    return _mm512_mask_or_epi32(rounded, nan, _mm512_srli_epi32(x, 16), _mm512_set1_epi32(0x40));
}

#define RMSN_F16_RNE (_MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC)

/* Masked partial loads and stores of the acc types themselves. */
#define RMSN_AVX512_MASKED_ACC(ACC, SFX, MASK)                                                          \
    static inline rmsn_v##ACC##_avx512 rmsn_vloadn_##ACC##_##ACC##_avx512(const rmsn_##ACC *p, ptrdiff_t m) \
    {                                                                                                   \
        return _mm512_maskz_loadu_##SFX(MASK(m), p);                                                    \
    }                                                                                                   \
    static inline void rmsn_vstoren_##ACC##_##ACC##_avx512(rmsn_##ACC *p, rmsn_v##ACC##_avx512 v, ptrdiff_t m) \
    {                                                                                                   \
        _mm512_mask_storeu_##SFX(p, MASK(m), v);                                                        \
    }
RMSN_AVX512_MASKED_ACC(f32, ps, rmsn_mask16_avx512)
RMSN_AVX512_MASKED_ACC(f64, pd, rmsn_mask8_avx512)
#undef RMSN_AVX512_MASKED_ACC

static inline __m512 rmsn_vload_f16_f32_avx512(const rmsn_f16 *p)
{
    return _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)p));
}
static inline __m512 rmsn_vloadn_f16_f32_avx512(const rmsn_f16 *p, ptrdiff_t m)
{
    return _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(rmsn_mask16_avx512(m), p));
}
static inline void rmsn_vstore_f16_f32_avx512(rmsn_f16 *p, __m512 v)
{
    _mm256_storeu_si256((__m256i *)p, _mm512_cvtps_ph(v, RMSN_F16_RNE));
}
static inline void rmsn_vstoren_f16_f32_avx512(rmsn_f16 *p, __m512 v, ptrdiff_t m)
{
    _mm256_mask_storeu_epi16(p, rmsn_mask16_avx512(m), _mm512_cvtps_ph(v, RMSN_F16_RNE));
}
static inline __m512 rmsn_vround_f16_f32_avx512(__m512 v) { return _mm512_cvtph_ps(_mm512_cvtps_ph(v, RMSN_F16_RNE)); }

static inline __m512 rmsn_vload_bf16_f32_avx512(const rmsn_bf16 *p)
{
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)p)), 16));
}
static inline __m512 rmsn_vloadn_bf16_f32_avx512(const rmsn_bf16 *p, ptrdiff_t m)
{
    return _mm512_castsi512_ps(
        _mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(rmsn_mask16_avx512(m), p)), 16));
}
static inline void rmsn_vstore_bf16_f32_avx512(rmsn_bf16 *p, __m512 v)
{
    _mm256_storeu_si256((__m256i *)p, _mm512_cvtepi32_epi16(rmsn_bf16_bits_avx512(v)));
}
static inline void rmsn_vstoren_bf16_f32_avx512(rmsn_bf16 *p, __m512 v, ptrdiff_t m)
{
    _mm512_mask_cvtepi32_storeu_epi16(p, rmsn_mask16_avx512(m), rmsn_bf16_bits_avx512(v));
}
static inline __m512 rmsn_vround_bf16_f32_avx512(__m512 v)
{
    return _mm512_castsi512_ps(_mm512_slli_epi32(rmsn_bf16_bits_avx512(v), 16));
}

static inline void rmsn_vstream_f16_f32_avx512(rmsn_f16 *p, __m512 v)
{
    _mm256_stream_si256((__m256i *)p, _mm512_cvtps_ph(v, RMSN_F16_RNE));
}
static inline void rmsn_vstream_bf16_f32_avx512(rmsn_bf16 *p, __m512 v)
{
    _mm256_stream_si256((__m256i *)p, _mm512_cvtepi32_epi16(rmsn_bf16_bits_avx512(v)));
}

RMSN_SIMD_DEFINE_KERNELS(avx512)

#undef RMSN_F16_RNE
#if defined(__clang__)
#pragma clang attribute pop
#else
#pragma GCC pop_options
#endif

RMSN_SIMD_DEFINE_INSTALL(avx512)

#endif /* RMSN_KERNELS_AVX512_H */
