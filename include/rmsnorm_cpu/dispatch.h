/*
 * The one dispatcher: the table the Cython layer calls through, filled per
 * tier from the list of kernels (ops.h).  Tiers are exactly scalar, avx2,
 * avx512, neon.  rmsn_install_<tier>() puts the tier's kernels in the table
 * (the scalar one every entry, a SIMD one its column of the SIMD entries);
 * slots a tier lacks keep the lower tier's kernel.  Adding a tier: a
 * kernels/<tier>.h with the vector helpers, one line in
 * RMSN_FOR_EACH_SIMD_TIER, one name in rmsn_tier_names, a column of names in
 * ops.h.
 *
 * This header and everything outside the tiers' target regions is compiled at
 * the baseline ISA, so no SIMD instruction runs before rmsn_select_tier()
 * has checked the CPU.
 */
#ifndef RMSN_DISPATCH_H
#define RMSN_DISPATCH_H

#include "cpu_features.h"
#include "kernels/scalar.h"

#if defined(__linux__) || defined(__APPLE__)
#include <sys/mman.h>
#include <unistd.h>
#endif

enum { RMSN_TIER_SCALAR = 0, RMSN_TIER_AVX2 = 1, RMSN_TIER_AVX512 = 2, RMSN_TIER_NEON = 3, RMSN_NTIERS = 4 };
static const char *const rmsn_tier_names[RMSN_NTIERS] = {"scalar", "avx2", "avx512", "neon"};

/* The kernels of one tier: a slot per op and dtype pair (ops.h). */
#define RMSN_TABLE_SLOTS(OP, DIMS) rmsn_##OP##_fn OP DIMS;
typedef struct {
    RMSN_FOR_EACH_OP(RMSN_TABLE_SLOTS)
    int tier;
    int cpu; /* rmsn_cpu_features() bits of the installed kernels */
} rmsn_kernels;
#undef RMSN_TABLE_SLOTS

/* A tier's install function: its name of every entry it implements into the
 * entry's slot. */
#define RMSN_INSTALL_SCALAR(ARG, OP, TIN, TOUT, ACC, NAME) k->RMSN_SLOT_##OP(TIN, TOUT) = NAME;
#define RMSN_INSTALL_SCALAR_OF_SIMD(ARG, OP, TIN, TOUT, ACC, NAME, AVX2, AVX512, AVX512BF16, NEON) \
    RMSN_INSTALL_SCALAR(ARG, OP, TIN, TOUT, ACC, NAME)
#define RMSN_INSTALL_SIMD(ISA, OP, TIN, TOUT, ACC, SCALAR, AVX2, AVX512, AVX512BF16, NEON) \
    k->RMSN_SLOT_##OP(TIN, TOUT) = RMSN_NAME_##ISA(AVX2, AVX512, AVX512BF16, NEON);
#define RMSN_DEFINE_INSTALL(ISA, TIER, CPU)                                                                          \
    static void rmsn_install_##ISA(rmsn_kernels *k) { RMSN_FOR_EACH_KERNEL(RMSN_NO_KERNEL, RMSN_INSTALL_SIMD, ISA) }

static void rmsn_install_scalar(rmsn_kernels *k) { RMSN_FOR_EACH_KERNEL(RMSN_INSTALL_SCALAR, RMSN_INSTALL_SCALAR_OF_SIMD, ~) }

/* SIMD tiers are compiled only by GCC/Clang on their architecture, and not
 * at all with -DRMSN_SCALAR_ONLY (the build's RMSNORM_CPU_SCALAR_ONLY=1).
 * Each entry: X(isa, tier, required rmsn_cpu_features() bits), lowest first;
 * an entry of the same tier with more required bits (avx512bf16) is an
 * extension of that tier, installed over it where the CPU has them. */
#if !defined(RMSN_SCALAR_ONLY) && defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include "kernels/avx2.h"
#include "kernels/avx512.h"
#define RMSN_FOR_EACH_SIMD_TIER(X)                                                      \
    X(avx2, RMSN_TIER_AVX2, RMSN_CPU_AVX2) X(avx512, RMSN_TIER_AVX512, RMSN_CPU_AVX512) \
    X(avx512bf16, RMSN_TIER_AVX512, RMSN_CPU_AVX512 | RMSN_CPU_AVX512BF16)
#elif !defined(RMSN_SCALAR_ONLY) && defined(__aarch64__) && (defined(__GNUC__) || defined(__clang__))
#include "kernels/neon.h"
#define RMSN_FOR_EACH_SIMD_TIER(X) X(neon, RMSN_TIER_NEON, RMSN_CPU_NEON)
#else
#define RMSN_FOR_EACH_SIMD_TIER(X)
#endif
RMSN_FOR_EACH_SIMD_TIER(RMSN_DEFINE_INSTALL)

/* Orders the non-temporal stores of the calling thread (rmsn_opts.stream)
 * before what follows; each thread calls it once after its last slice, so
 * short rows do not pay a fence each. */
static inline void rmsn_stream_fence(void)
{
#if defined(__x86_64__) && defined(__GNUC__)
    __builtin_ia32_sfence();
#else
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
#endif
}

/* Whether the pages holding the first and the last byte of [lo, end) are in
 * memory: the store policy streams only into those (non-temporal stores into
 * pages that the stores themselves fault in cost about twice plain ones).
 * 0 where the OS cannot tell. */
static inline int rmsn_pages_resident(const char *lo, const char *end)
{
#if defined(__linux__) || defined(__APPLE__)
    uintptr_t mask = ~((uintptr_t)sysconf(_SC_PAGESIZE) - 1);
    unsigned char first = 0, last = 0; /* void *: unsigned char * on Linux, char * on macOS */
    if (mincore((void *)((uintptr_t)lo & mask), 1, (void *)&first) != 0 ||
        mincore((void *)((uintptr_t)(end - 1) & mask), 1, (void *)&last) != 0)
        return 0;
    return (first & 1) && (last & 1);
#else
    (void)lo;
    (void)end;
    return 0;
#endif
}

/* Bit set of tiers compiled into this build. */
static inline int rmsn_compiled_tiers(void)
{
    int t = 1 << RMSN_TIER_SCALAR;
#define RMSN_COMPILED_BIT(ISA, TIER, CPU) t |= 1 << TIER;
    RMSN_FOR_EACH_SIMD_TIER(RMSN_COMPILED_BIT)
#undef RMSN_COMPILED_BIT
    return t;
}

/* Bit set of compiled tiers this CPU and OS can run. */
static inline int rmsn_supported_tiers(void)
{
    int t = 1 << RMSN_TIER_SCALAR, cpu = rmsn_cpu_features();
    (void)cpu; /* unused in a scalar-only build */
#define RMSN_SUPPORTED_BIT(ISA, TIER, CPU) if ((cpu & (CPU)) == (CPU)) t |= 1 << TIER;
    RMSN_FOR_EACH_SIMD_TIER(RMSN_SUPPORTED_BIT)
#undef RMSN_SUPPORTED_BIT
    return t;
}

/* Fill k for `tier` (which must be supported): scalar first, then every
 * compiled entry up to it whose features are all in `cpu` (normally
 * rmsn_cpu_features(); fewer bits leave extensions out), each overwriting
 * what it implements.  k->cpu: the feature bits the installed entries use. */
static inline void rmsn_select_tier(rmsn_kernels *k, int tier, int cpu)
{
    rmsn_install_scalar(k);
    k->cpu = 0;
    (void)cpu; /* unused in a scalar-only build */
#define RMSN_INSTALL_UP_TO(ISA, TIER, CPU)                                      \
    if (TIER <= tier && (cpu & (CPU)) == (CPU)) {                               \
        rmsn_install_##ISA(k);                                                  \
        k->cpu |= (CPU);                                                        \
    }
    RMSN_FOR_EACH_SIMD_TIER(RMSN_INSTALL_UP_TO)
#undef RMSN_INSTALL_UP_TO
    k->tier = tier;
}

#endif /* RMSN_DISPATCH_H */
