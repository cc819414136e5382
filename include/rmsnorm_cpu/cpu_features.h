/*
 * What the CPU and the OS can run, detected once.  x86: CPUID for the
 * instructions and XGETBV for the OS saving YMM/ZMM state (a CPU flag alone
 * would SIGILL under an OS or hypervisor that disables AVX).  Compiled at the
 * baseline ISA: nothing here may execute an AVX instruction.
 */
#ifndef RMSN_CPU_FEATURES_H
#define RMSN_CPU_FEATURES_H

enum {
    RMSN_CPU_AVX2 = 1 << 0,     /* AVX2 + FMA + F16C, YMM state enabled */
    RMSN_CPU_AVX512 = 1 << 1,   /* AVX-512 F/BW/VL/DQ, ZMM state enabled */
    RMSN_CPU_AVX512BF16 = 1 << 2, /* extends avx512: hardware bfloat16 rounding */
    RMSN_CPU_NEON = 1 << 3      /* AArch64 Advanced SIMD (architectural) */
};

#if defined(__x86_64__) && defined(__GNUC__)
#include <cpuid.h>

static inline unsigned long long rmsn_xgetbv0(void)
{
    unsigned int lo, hi;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    return ((unsigned long long)hi << 32) | lo;
}

static inline int rmsn_cpu_features(void)
{
    unsigned int a, b, c1, d, b7, c7, d7, a71 = 0, c;
    unsigned long long xcr0;
    int f = 0;
    if (!__get_cpuid(1, &a, &b, &c1, &d)) return 0;
    if (!((c1 >> 27) & 1)) return 0; /* OSXSAVE: XGETBV usable */
    xcr0 = rmsn_xgetbv0();
    if (!__get_cpuid_count(7, 0, &a, &b7, &c7, &d7)) return 0;
    if (a >= 1) __get_cpuid_count(7, 1, &a71, &b, &c, &d);
    if (((c1 >> 28) & 1) && ((c1 >> 12) & 1) && ((c1 >> 29) & 1) && ((b7 >> 5) & 1) && (xcr0 & 0x6) == 0x6)
        f |= RMSN_CPU_AVX2; /* AVX, FMA, F16C, AVX2; XMM+YMM state */
    if ((f & RMSN_CPU_AVX2) && ((b7 >> 16) & 1) && ((b7 >> 17) & 1) && ((b7 >> 30) & 1) && ((b7 >> 31) & 1) &&
        (xcr0 & 0xe6) == 0xe6) {
        f |= RMSN_CPU_AVX512; /* F, DQ, BW, VL; opmask + ZMM state */
        if ((a71 >> 5) & 1) f |= RMSN_CPU_AVX512BF16;
    }
    return f;
}
#elif defined(__aarch64__)
static inline int rmsn_cpu_features(void) { return RMSN_CPU_NEON; }
#else
static inline int rmsn_cpu_features(void) { return 0; }
#endif

#endif /* RMSN_CPU_FEATURES_H */
