/*
 * AVX2 tier (requires AVX2 + FMA + F16C): 8 f32 / 4 f64 lanes.  The vector
 * helpers kernels/simd.h builds the primitives from; partial vectors go
 * through a stack buffer (masked loads fill it).  Everything between the
 * target push and pop is compiled for this tier only and runs only after the
 * CPU check.
 */
#ifndef RMSN_KERNELS_AVX2_H
#define RMSN_KERNELS_AVX2_H

#include <immintrin.h>

#include "simd.h"

#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx2,fma,f16c"))), apply_to = function)
#else
#pragma GCC push_options
#pragma GCC target("avx2,fma,f16c")
#endif

typedef __m256 rmsn_vf32_avx2;
typedef __m256d rmsn_vf64_avx2;
enum { RMSN_LANES_f32_avx2 = 8, RMSN_LANES_f64_avx2 = 4, RMSN_NONTEMPORAL_avx2 = 1 };

RMSN_SIMD_ACC_TYPE(avx2, f32, _mm256, ps)
RMSN_SIMD_ACC_TYPE(avx2, f64, _mm256, pd)

RMSN_VINLINE float rmsn_vhsum_f32_avx2(__m256 v)
{
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    return _mm_cvtss_f32(_mm_add_ss(s, _mm_movehdup_ps(s)));
}

RMSN_VINLINE double rmsn_vhsum_f64_avx2(__m256d v)
{
    __m128d s = _mm_add_pd(_mm256_castpd256_pd128(v), _mm256_extractf128_pd(v, 1));
    return _mm_cvtsd_f64(_mm_add_sd(s, _mm_unpackhi_pd(s, s)));
}

/* f32 -> bf16 bits in the low half of each 32-bit lane: rmsn_f32_to_bf16 of
 * rmsnorm.h lane by lane (nearest-even by integer add, subnormals kept, NaN
 * kept quiet), not a hardware conversion that flushes subnormals.  The
 * rounding alone, then the NaN lanes' bits (hi | 0x40) put in. */
RMSN_VINLINE __m256i rmsn_bf16_rounded_avx2(__m256 v)
{
    __m256i x = _mm256_castps_si256(v);
    __m256i lsb = _mm256_and_si256(_mm256_srli_epi32(x, 16), _mm256_set1_epi32(1));
    return _mm256_srli_epi32(_mm256_add_epi32(x, _mm256_add_epi32(lsb, _mm256_set1_epi32(0x7fff))), 16);
}
RMSN_VINLINE __m256i rmsn_bf16_quiet_nan_avx2(__m256i rounded, __m256 v)
{
    __m256i quiet = _mm256_or_si256(_mm256_srli_epi32(_mm256_castps_si256(v), 16), _mm256_set1_epi32(0x40));
    return _mm256_blendv_epi8(rounded, quiet, _mm256_castps_si256(_mm256_cmp_ps(v, v, _CMP_UNORD_Q)));
}
/* NaN is rare: a branch, not a blend per vector. */
RMSN_VINLINE __m256i rmsn_bf16_bits_avx2(__m256 v)
{
    __m256i rounded = rmsn_bf16_rounded_avx2(v);
    if (__builtin_expect(!_mm256_movemask_ps(_mm256_cmp_ps(v, v, _CMP_UNORD_Q)), 1)) return rounded;
    return rmsn_bf16_quiet_nan_avx2(rounded, v);
}

RMSN_VINLINE __m256 rmsn_vload_f16_f32_avx2(const rmsn_f16 *p)
{
    return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)p));
}
RMSN_VINLINE void rmsn_vstore_f16_f32_avx2(rmsn_f16 *p, __m256 v)
{
    _mm_storeu_si128((__m128i *)p, _mm256_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
}
RMSN_VINLINE __m256 rmsn_vround_f16_f32_avx2(__m256 v)
{
    return _mm256_cvtph_ps(_mm256_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
}

RMSN_VINLINE __m256 rmsn_vload_bf16_f32_avx2(const rmsn_bf16 *p)
{
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)p)), 16));
}
/* The 8 bf16 of v, packed (each lane < 0x10000: the unsigned pack is exact). */
RMSN_VINLINE __m128i rmsn_bf16_packed_avx2(__m256 v)
{
    __m256i bits = rmsn_bf16_bits_avx2(v);
    return _mm_packus_epi32(_mm256_castsi256_si128(bits), _mm256_extracti128_si256(bits, 1));
}
RMSN_VINLINE void rmsn_vstore_bf16_f32_avx2(rmsn_bf16 *p, __m256 v) { _mm_storeu_si128((__m128i *)p, rmsn_bf16_packed_avx2(v)); }
RMSN_VINLINE __m256 rmsn_vround_bf16_f32_avx2(__m256 v)
{
    return _mm256_castsi256_ps(_mm256_slli_epi32(rmsn_bf16_bits_avx2(v), 16));
}

RMSN_VINLINE void rmsn_vstream_f16_f32_avx2(rmsn_f16 *p, __m256 v)
{
    _mm_stream_si128((__m128i *)p, _mm256_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
}
RMSN_VINLINE void rmsn_vstream_bf16_f32_avx2(rmsn_bf16 *p, __m256 v) { _mm_stream_si128((__m128i *)p, rmsn_bf16_packed_avx2(v)); }

/* bfloat16 pairs in the order of unpacklo/hi_epi16 (within 128-bit halves):
 * v[0] holds elements 0-3 and 8-11, v[1] 4-7 and 12-15.  One load and two
 * unpacks widen 16 elements, and packus_epi32 of v[0], v[1] puts them back in
 * order (the per-vector widening and pack each cross the halves). */
/* Elements 0-3 | 8-11, 4-7 | 12-15 <-> 0-7, 8-15: the 128-bit halves exchanged. */
RMSN_VINLINE void rmsn_vreorder2_bf16_f32_avx2(__m256 v[2])
{
    __m256 a = v[0], b = v[1];
    v[0] = _mm256_permute2f128_ps(a, b, 0x20);
    v[1] = _mm256_permute2f128_ps(a, b, 0x31);
}
RMSN_VINLINE void rmsn_vload2_bf16_f32_avx2(const rmsn_bf16 *p, __m256 v[2])
{
    __m256i h = _mm256_loadu_si256((const __m256i *)p), zero = _mm256_setzero_si256();
    v[0] = _mm256_castsi256_ps(_mm256_unpacklo_epi16(zero, h));
    v[1] = _mm256_castsi256_ps(_mm256_unpackhi_epi16(zero, h));
}
RMSN_VINLINE void rmsn_vload2_acc_bf16_f32_avx2(const float *p, __m256 v[2])
{
    v[0] = _mm256_loadu_ps(p);
    v[1] = _mm256_loadu_ps(p + 8);
    rmsn_vreorder2_bf16_f32_avx2(v);
}
/* The 16 bf16 of a pair, in order; one NaN test for both vectors. */
RMSN_VINLINE __m256i rmsn_bf16_packed2_avx2(const __m256 v[2])
{
    __m256i r0 = rmsn_bf16_rounded_avx2(v[0]), r1 = rmsn_bf16_rounded_avx2(v[1]);
    if (__builtin_expect(_mm256_movemask_ps(_mm256_cmp_ps(v[0], v[1], _CMP_UNORD_Q)), 0)) {
        r0 = rmsn_bf16_quiet_nan_avx2(r0, v[0]);
        r1 = rmsn_bf16_quiet_nan_avx2(r1, v[1]);
    }
    return _mm256_packus_epi32(r0, r1);
}
RMSN_VINLINE void rmsn_vstore2_bf16_f32_avx2(rmsn_bf16 *p, const __m256 v[2])
{
    _mm256_storeu_si256((__m256i *)p, rmsn_bf16_packed2_avx2(v));
}
/* p is 16-byte aligned (one vector of bf16). */
RMSN_VINLINE void rmsn_vstream2_bf16_f32_avx2(rmsn_bf16 *p, const __m256 v[2])
{
    __m256i h = rmsn_bf16_packed2_avx2(v);
    _mm_stream_si128((__m128i *)p, _mm256_castsi256_si128(h));
    _mm_stream_si128((__m128i *)p + 1, _mm256_extracti128_si256(h, 1));
}
RMSN_SIMD_NATURAL_PAIR(avx2, f32, f32)
RMSN_SIMD_NATURAL_PAIR(avx2, f64, f64)
RMSN_SIMD_NATURAL_PAIR(avx2, f16, f32)

/* MAXPS/MINPS return their second operand when either is NaN. */
RMSN_VINLINE __m256 rmsn_vclamp_f32_avx2(__m256 v, __m256 lo, __m256 hi) { return _mm256_min_ps(hi, _mm256_max_ps(lo, v)); }
/* t's low mantissa bits hold m: (126 - m) << 23, modulo 2^32. */
RMSN_VINLINE __m256 rmsn_vpow2neg_f32_avx2(__m256 t)
{
    return _mm256_castsi256_ps(_mm256_sub_epi32(_mm256_set1_epi32(126 << 23), _mm256_slli_epi32(_mm256_castps_si256(t), 23)));
}
RMSN_VINLINE __m256 rmsn_vdiv_f32_avx2(__m256 a, __m256 b) { return _mm256_div_ps(a, b); }
RMSN_SIMD_GATE(avx2)
/* quant (simd.h): |y| max with NaN sticking; int8 by cvtps (round half to
 * even) and saturating packs; float8_e4m3fn as rmsn_f32_to_e4m3 of slice.h
 * lane by lane.  Each makes the byte in the low end of its 32-bit lane; four
 * vectors of those pack into one 32-byte store. */
/* |y| as an integer orders as the float, a NaN above inf: an integer max keeps a NaN. */
RMSN_VINLINE __m256 rmsn_vabsmax_f32_avx2(__m256 amax, __m256 y)
{
    __m256i a = _mm256_and_si256(_mm256_castps_si256(y), _mm256_set1_epi32(0x7fffffff));
    return _mm256_castsi256_ps(_mm256_max_epi32(_mm256_castps_si256(amax), a));
}
/* v is not NaN (simd.h): at most 127; below -128 needs no clamp: cvtps gives
 * INT_MIN out of range, and the packs saturate every value below -128 to -128. */
RMSN_VINLINE __m256i rmsn_i8_lanes_avx2(__m256 v) { return _mm256_cvtps_epi32(_mm256_min_ps(v, _mm256_set1_ps(127.0f))); }
/* Saturate |v| to 448; normals drop 20 mantissa bits (round to nearest even
 * by integer add) and rebias 127 -> 7; below 2^-6 the subnormal m * 2^-9 is
 * |v| * 2^9 rounded to an integer by cvtps (exact scaling, nearest even). */
RMSN_VINLINE __m256i rmsn_e4m3_lanes_avx2(__m256 v)
{
    __m256i u = _mm256_castps_si256(v);
    __m256i sign = _mm256_and_si256(_mm256_srli_epi32(u, 24), _mm256_set1_epi32(0x80));
    __m256i a = _mm256_and_si256(u, _mm256_set1_epi32(0x7fffffff));
    __m256i nan = _mm256_cmpgt_epi32(a, _mm256_set1_epi32(0x7f800000));
    __m256i sat = _mm256_min_epi32(a, _mm256_set1_epi32(0x43e00000));
    __m256i lsb = _mm256_and_si256(_mm256_srli_epi32(sat, 20), _mm256_set1_epi32(1));
    __m256i normal = _mm256_sub_epi32(
        _mm256_srli_epi32(_mm256_add_epi32(sat, _mm256_add_epi32(lsb, _mm256_set1_epi32(0x7ffff))), 20),
        _mm256_set1_epi32(120 << 3));
    __m256i sub = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_castsi256_ps(sat), _mm256_set1_ps(512.0f)));
    __m256i r = _mm256_blendv_epi8(sub, normal, _mm256_cmpgt_epi32(sat, _mm256_set1_epi32(0x3c7fffff)));
    return _mm256_or_si256(_mm256_blendv_epi8(r, _mm256_set1_epi32(0x7f), nan), sign);
}
RMSN_VINLINE void rmsn_vqstore_i8_avx2(rmsn_i8 *p, __m256 v)
{
    __m256i i = rmsn_i8_lanes_avx2(v);
    __m128i h = _mm_packs_epi32(_mm256_castsi256_si128(i), _mm256_extracti128_si256(i, 1));
    _mm_storel_epi64((__m128i *)p, _mm_packs_epi16(h, h));
}
RMSN_VINLINE void rmsn_vqstore_e4m3_avx2(rmsn_e4m3 *p, __m256 v)
{
    __m256i r = rmsn_e4m3_lanes_avx2(v);
    __m128i h = _mm_packus_epi32(_mm256_castsi256_si128(r), _mm256_extracti128_si256(r, 1));
    _mm_storel_epi64((__m128i *)p, _mm_packus_epi16(h, h));
}
/* The packs work within 128-bit halves: the result holds the 4-byte groups
 * of v0..v3 low halves, then of their high halves; one permute restores order. */
RMSN_VINLINE void rmsn_vqstore4_i8_avx2(rmsn_i8 *p, __m256 v0, __m256 v1, __m256 v2, __m256 v3)
{
    __m256i lo = _mm256_packs_epi32(rmsn_i8_lanes_avx2(v0), rmsn_i8_lanes_avx2(v1));
    __m256i hi = _mm256_packs_epi32(rmsn_i8_lanes_avx2(v2), rmsn_i8_lanes_avx2(v3));
    _mm256_storeu_si256((__m256i *)p, _mm256_permutevar8x32_epi32(_mm256_packs_epi16(lo, hi),
                                                                   _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7)));
}
RMSN_VINLINE void rmsn_vqstore4_e4m3_avx2(rmsn_e4m3 *p, __m256 v0, __m256 v1, __m256 v2, __m256 v3)
{
    __m256i lo = _mm256_packus_epi32(rmsn_e4m3_lanes_avx2(v0), rmsn_e4m3_lanes_avx2(v1));
    __m256i hi = _mm256_packus_epi32(rmsn_e4m3_lanes_avx2(v2), rmsn_e4m3_lanes_avx2(v3));
    _mm256_storeu_si256((__m256i *)p, _mm256_permutevar8x32_epi32(_mm256_packus_epi16(lo, hi),
                                                                   _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7)));
}

/* The nb bytes at p (nb < size <= 32, even) into buf, the rest zero (simd.h):
 * masked 4-byte loads (masked-off lanes never fault) and the last 2 bytes
 * blended in when nb is not a multiple of 4, then one store of size bytes. */
RMSN_VINLINE void rmsn_gather_bytes_avx2(void *buf, const void *p, size_t nb, size_t size)
{
    __m256i v = _mm256_maskload_epi32(
        (const int *)p, _mm256_cmpgt_epi32(_mm256_set1_epi32((int)(nb / 4)), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7)));
    if (nb & 2) {
        short last;
        memcpy(&last, (const char *)p + nb - 2, 2);
        v = _mm256_blendv_epi8(v, _mm256_set1_epi16(last),
                               _mm256_cmpeq_epi16(_mm256_set1_epi16((short)(nb / 2 - 1)),
                                                  _mm256_setr_epi16(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15)));
    }
    if (size == 32)
        _mm256_store_si256((__m256i *)buf, v);
    else
        _mm_store_si128((__m128i *)buf, _mm256_castsi256_si128(v));
}
RMSN_SIMD_FOR_EACH_DTYPE_ACC(RMSN_SIMD_BUFFERED_TAIL, avx2)
RMSN_SIMD_FOR_EACH_DTYPE_ACC(RMSN_SIMD_DTYPE_ACC, avx2)
RMSN_SIMD_QUANT_HELPERS(avx2)
RMSN_FOR_EACH_KERNEL(RMSN_NO_KERNEL, RMSN_SIMD_KERNEL, avx2)

#if defined(__clang__)
#pragma clang attribute pop
#else
#pragma GCC pop_options
#endif

#endif /* RMSN_KERNELS_AVX2_H */
