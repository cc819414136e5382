/*
 * NEON tier (AArch64 Advanced SIMD): 4 f32 / 2 f64 lanes.  The vector
 * helpers kernels/simd.h builds the primitives from; partial vectors go
 * through a stack buffer.  Advanced SIMD is part of the AArch64 baseline, so
 * there is no target region and no CPU check beyond the architecture.
 *
 * The helpers are written out here: NEON intrinsic names (vaddq_f32,
 * vaddq_f64) do not follow the _mm<PFX>_<op>_<SFX> pattern of
 * RMSN_SIMD_ACC_TYPE.  vmulq/vaddq are plain C operators in GCC's arm_neon.h,
 * so they stay unfused only under the build's -ffp-contract=off, like the
 * scalar code; vfmaq is the explicit fused multiply-add.
 *
 * Rounding follows FPCR, which this library leaves at the Linux default:
 * round to nearest even, FZ = 0 (f32/f64 subnormals kept), DN = 0.  The
 * f16 conversions (FCVTL/FCVTN) ignore FPCR.FZ16 (the Arm ARM's
 * FPUnpackCV/FPRoundCV), so f16 subnormals are kept too; with FPCR.FZ set by
 * someone else, f32 subnormal inputs of FCVTN would flush, as all f32
 * arithmetic then does.
 */
#ifndef RMSN_KERNELS_NEON_H
#define RMSN_KERNELS_NEON_H

#include <arm_neon.h>

#include "simd.h"

typedef float32x4_t rmsn_vf32_neon;
typedef float64x2_t rmsn_vf64_neon;
enum { RMSN_LANES_f32_neon = 4, RMSN_LANES_f64_neon = 2, RMSN_NONTEMPORAL_neon = 0 }; /* rmsn_vstream: plain stores */

/* The helpers of one acc vector type (arithmetic; loads and stores of the acc
 * type itself), from its intrinsics' suffix (f32, f64). */
#define RMSN_NEON_ACC_TYPE(ACC, SFX)                                                                         \
    RMSN_VINLINE rmsn_v##ACC##_neon rmsn_vload_##ACC##_##ACC##_neon(const rmsn_##ACC *p) { return vld1q_##SFX(p); } \
    RMSN_VINLINE void rmsn_vstore_##ACC##_##ACC##_neon(rmsn_##ACC *p, rmsn_v##ACC##_neon v) { vst1q_##SFX(p, v); } \
    /* No non-temporal store: ACLE has no intrinsic for STNP, which is only a \
     * hint on most cores, and no AArch64 machine here could measure it. */   \
    RMSN_VINLINE void rmsn_vstream_##ACC##_##ACC##_neon(rmsn_##ACC *p, rmsn_v##ACC##_neon v) { vst1q_##SFX(p, v); } \
    RMSN_VINLINE rmsn_v##ACC##_neon rmsn_vround_##ACC##_##ACC##_neon(rmsn_v##ACC##_neon v) { return v; }   \
    RMSN_VINLINE rmsn_v##ACC##_neon rmsn_vzero_##ACC##_neon(void) { return vdupq_n_##SFX(0); }              \
    RMSN_VINLINE rmsn_v##ACC##_neon rmsn_vset1_##ACC##_neon(rmsn_##ACC s) { return vdupq_n_##SFX(s); }      \
    RMSN_VINLINE rmsn_v##ACC##_neon rmsn_vadd_##ACC##_neon(rmsn_v##ACC##_neon a, rmsn_v##ACC##_neon b)     \
    {                                                                                                        \
        return vaddq_##SFX(a, b);                                                                            \
    }                                                                                                        \
    RMSN_VINLINE rmsn_v##ACC##_neon rmsn_vsub_##ACC##_neon(rmsn_v##ACC##_neon a, rmsn_v##ACC##_neon b)     \
    {                                                                                                        \
        return vsubq_##SFX(a, b);                                                                            \
    }                                                                                                        \
    RMSN_VINLINE rmsn_v##ACC##_neon rmsn_vmul_##ACC##_neon(rmsn_v##ACC##_neon a, rmsn_v##ACC##_neon b)     \
    {                                                                                                        \
        return vmulq_##SFX(a, b);                                                                            \
    }                                                                                                        \
    /* a * b + c, one rounding (vfmaq takes the addend first). */                                            \
    RMSN_VINLINE rmsn_v##ACC##_neon rmsn_vfma_##ACC##_neon(rmsn_v##ACC##_neon a, rmsn_v##ACC##_neon b,     \
                                                            rmsn_v##ACC##_neon c)                            \
    {                                                                                                        \
        return vfmaq_##SFX(c, a, b);                                                                         \
    }
RMSN_NEON_ACC_TYPE(f32, f32)
RMSN_NEON_ACC_TYPE(f64, f64)
#undef RMSN_NEON_ACC_TYPE

/* FMAX/FMIN return NaN when either operand is NaN. */
RMSN_VINLINE float32x4_t rmsn_vclamp_f32_neon(float32x4_t v, float32x4_t lo, float32x4_t hi)
{
    return vminq_f32(hi, vmaxq_f32(lo, v));
}
/* t's low mantissa bits hold m: (126 - m) << 23, modulo 2^32. */
RMSN_VINLINE float32x4_t rmsn_vpow2neg_f32_neon(float32x4_t t)
{
    return vreinterpretq_f32_s32(vsubq_s32(vdupq_n_s32(126 << 23), vshlq_n_s32(vreinterpretq_s32_f32(t), 23)));
}
RMSN_VINLINE float32x4_t rmsn_vdiv_f32_neon(float32x4_t a, float32x4_t b) { return vdivq_f32(a, b); }
RMSN_SIMD_GATE(neon)

/* (v0 + v2) + (v1 + v3): the halves added first, as the x86 tiers do. */
RMSN_VINLINE float rmsn_vhsum_f32_neon(float32x4_t v)
{
    return vpadds_f32(vadd_f32(vget_low_f32(v), vget_high_f32(v)));
}
RMSN_VINLINE double rmsn_vhsum_f64_neon(float64x2_t v) { return vpaddd_f64(v); }

/* f32 -> bf16 bits in the low half of each 32-bit lane: rmsn_f32_to_bf16 of
 * rmsnorm.h lane by lane (nearest-even by integer add, subnormals kept, NaN
 * kept quiet), as kernels/avx2.h; BFCVTN (FEAT_BF16) is not baseline. */
RMSN_VINLINE uint32x4_t rmsn_bf16_bits_neon(float32x4_t v)
{
    uint32x4_t x = vreinterpretq_u32_f32(v);
    uint32x4_t lsb = vandq_u32(vshrq_n_u32(x, 16), vdupq_n_u32(1));
    uint32x4_t rounded = vshrq_n_u32(vaddq_u32(x, vaddq_u32(lsb, vdupq_n_u32(0x7fff))), 16);
    uint32x4_t nan = vcgtq_u32(vandq_u32(x, vdupq_n_u32(0x7fffffff)), vdupq_n_u32(0x7f800000));
    uint32x4_t quiet = vorrq_u32(vshrq_n_u32(x, 16), vdupq_n_u32(0x40));
    return vbslq_u32(nan, quiet, rounded);
}

RMSN_VINLINE float32x4_t rmsn_vload_f16_f32_neon(const rmsn_f16 *p)
{
    return vcvt_f32_f16(vreinterpret_f16_u16(vld1_u16(p)));
}
RMSN_VINLINE void rmsn_vstore_f16_f32_neon(rmsn_f16 *p, float32x4_t v)
{
    vst1_u16(p, vreinterpret_u16_f16(vcvt_f16_f32(v)));
}
RMSN_VINLINE float32x4_t rmsn_vround_f16_f32_neon(float32x4_t v) { return vcvt_f32_f16(vcvt_f16_f32(v)); }

RMSN_VINLINE float32x4_t rmsn_vload_bf16_f32_neon(const rmsn_bf16 *p)
{
    return vreinterpretq_f32_u32(vshll_n_u16(vld1_u16(p), 16));
}
RMSN_VINLINE void rmsn_vstore_bf16_f32_neon(rmsn_bf16 *p, float32x4_t v)
{
    vst1_u16(p, vmovn_u32(rmsn_bf16_bits_neon(v)));
}
RMSN_VINLINE float32x4_t rmsn_vround_bf16_f32_neon(float32x4_t v)
{
    return vreinterpretq_f32_u32(vshlq_n_u32(rmsn_bf16_bits_neon(v), 16));
}

/* Plain stores (see RMSN_NEON_ACC_TYPE). */
RMSN_VINLINE void rmsn_vstream_f16_f32_neon(rmsn_f16 *p, float32x4_t v) { rmsn_vstore_f16_f32_neon(p, v); }
RMSN_VINLINE void rmsn_vstream_bf16_f32_neon(rmsn_bf16 *p, float32x4_t v) { rmsn_vstore_bf16_f32_neon(p, v); }

/* quant (simd.h): FMAX keeps a NaN by itself; int8 by vcvtn (round half to
 * even) and saturating narrows; float8_e4m3fn in integer ops, as the AVX2
 * tier's (vshl by a negative count shifts right). */
RMSN_VINLINE float32x4_t rmsn_vabsmax_f32_neon(float32x4_t amax, float32x4_t y)
{
    return vmaxq_f32(amax, vabsq_f32(y));
}
RMSN_VINLINE void rmsn_vqstore_i8_neon(rmsn_i8 *p, float32x4_t v)
{
    float32x4_t c = vbslq_f32(vceqq_f32(v, v), v, vdupq_n_f32(0.0f)); /* NaN -> 0 */
    int16x4_t h;
    int8_t b[8];
    c = vminq_f32(vmaxq_f32(c, vdupq_n_f32(-128.0f)), vdupq_n_f32(127.0f));
    h = vqmovn_s32(vcvtnq_s32_f32(c));
    vst1_s8(b, vqmovn_s16(vcombine_s16(h, h)));
    memcpy(p, b, 4);
}
RMSN_VINLINE void rmsn_vqstore_e4m3_neon(rmsn_e4m3 *p, float32x4_t v)
{
    uint32x4_t u = vreinterpretq_u32_f32(v), one = vdupq_n_u32(1);
    uint32x4_t sign = vandq_u32(vshrq_n_u32(u, 24), vdupq_n_u32(0x80));
    uint32x4_t a = vandq_u32(u, vdupq_n_u32(0x7fffffff));
    uint32x4_t nan = vcgtq_u32(a, vdupq_n_u32(0x7f800000));
    uint32x4_t sat = vminq_u32(a, vdupq_n_u32(0x43e00000));
    uint32x4_t lsb = vandq_u32(vshrq_n_u32(sat, 20), one);
    uint32x4_t normal = vsubq_u32(vshrq_n_u32(vaddq_u32(sat, vaddq_u32(lsb, vdupq_n_u32(0x7ffff))), 20),
                                  vdupq_n_u32(120 << 3));
    uint32x4_t shift = vminq_u32(vsubq_u32(vdupq_n_u32(141), vshrq_n_u32(sat, 23)), vdupq_n_u32(31));
    int32x4_t right = vnegq_s32(vreinterpretq_s32_u32(shift));
    uint32x4_t m = vorrq_u32(vandq_u32(sat, vdupq_n_u32(0x7fffff)), vdupq_n_u32(0x800000));
    uint32x4_t half = vsubq_u32(vshlq_u32(one, vreinterpretq_s32_u32(vsubq_u32(shift, one))), one);
    uint32x4_t odd = vandq_u32(vshlq_u32(m, right), one);
    uint32x4_t sub = vshlq_u32(vaddq_u32(vaddq_u32(m, half), odd), right);
    uint32x4_t r = vbslq_u32(vcgtq_u32(sat, vdupq_n_u32(0x3c7fffff)), normal, sub);
    uint16x4_t h;
    uint8_t b[8];
    r = vorrq_u32(vbslq_u32(nan, vdupq_n_u32(0x7f), r), sign);
    h = vmovn_u32(r);
    vst1_u8(b, vmovn_u16(vcombine_u16(h, h)));
    memcpy(p, b, 4);
}

RMSN_SIMD_QSTORE4_EACH(neon, i8)
RMSN_SIMD_QSTORE4_EACH(neon, e4m3)

/* The nb bytes at p into buf, the rest zero (simd.h). */
RMSN_VINLINE void rmsn_gather_bytes_neon(void *buf, const void *p, size_t nb, size_t size)
{
    memset(buf, 0, size);
    rmsn_copy_small((char *)buf, (const char *)p, nb, size);
}
RMSN_SIMD_FOR_EACH_DTYPE_ACC(RMSN_SIMD_BUFFERED_TAIL, neon)
RMSN_SIMD_FOR_EACH_DTYPE_ACC(RMSN_SIMD_NATURAL_PAIR, neon)
RMSN_SIMD_FOR_EACH_DTYPE_ACC(RMSN_SIMD_DTYPE_ACC, neon)
RMSN_SIMD_QUANT_HELPERS(neon)
RMSN_FOR_EACH_KERNEL(RMSN_NO_KERNEL, RMSN_SIMD_KERNEL, neon)

#endif /* RMSN_KERNELS_NEON_H */
