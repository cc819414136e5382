/*
 * The one list of kernels: every op for every (input, output) dtype pair it
 * has, with the acc type and the kernel's name in each tier.  Everything per
 * kernel expands from it: the dispatch table's slots and install functions
 * (dispatch.h), the kernel definitions (kernels/scalar.h, each SIMD tier's
 * header, from the op's slice math in kernels/slice.h), and the C check
 * (tests/c/check_kernels.c).
 *
 * Adding a dtype pair: one entry here (the op's slice math already covers it;
 * the acc column must follow the rule of rmsnorm.h, checked at compile time).
 * Adding an op: its signature, RMSN_FOR_EACH_OP line and RMSN_SLOT_<op> here,
 * its entries, and its slice math RMSN_SLICE_<op> in kernels/slice.h with the
 * per-tier primitives RMSN_SCALAR_PRIM_<op> / RMSN_SIMD_PRIM_<op>.
 * docs/kernels.md walks through both.
 */
#ifndef RMSN_OPS_H
#define RMSN_OPS_H

#include "rmsnorm.h"

/* The kernel signatures the dispatch table holds (type-erased pointers). */
typedef void (*rmsn_fwd_fn)(const rmsn_opts *o, ptrdiff_t nrows, ptrdiff_t n, const void *x, ptrdiff_t sx,
                            ptrdiff_t rsx, void *y, ptrdiff_t sy, ptrdiff_t rsy, const void *w, const void *b,
                            void *rstd);
typedef void (*rmsn_fwd_cols_fn)(const rmsn_opts *o, ptrdiff_t n, ptrdiff_t npos, const void *x, ptrdiff_t sxc,
                                 ptrdiff_t sxp, void *y, ptrdiff_t syc, ptrdiff_t syp, const void *w, const void *b,
                                 void *rstd, ptrdiff_t srstd);
typedef void (*rmsn_add_fn)(const rmsn_opts *o, ptrdiff_t n, const void *x, ptrdiff_t sx, const void *r, ptrdiff_t sr,
                            void *ro, ptrdiff_t sro, void *y, ptrdiff_t sy, const void *w, const void *b, void *rstd);
typedef void (*rmsn_bwd_fn)(const rmsn_opts *o, ptrdiff_t n, const void *dy, ptrdiff_t sdy, const void *x,
                            ptrdiff_t sx, void *dx, ptrdiff_t sdx, const void *w, const void *rstd, void *dw, void *db);
typedef void (*rmsn_gated_fn)(const rmsn_opts *o, ptrdiff_t n, const void *x, ptrdiff_t sx, const void *g,
                              ptrdiff_t sg, void *y, ptrdiff_t sy, const void *w, const void *b, void *rstd);
typedef void (*rmsn_gated_bwd_fn)(const rmsn_opts *o, ptrdiff_t n, const void *dy, ptrdiff_t sdy, const void *x,
                                  ptrdiff_t sx, const void *g, ptrdiff_t sg, void *dx, ptrdiff_t sdx, void *dg,
                                  ptrdiff_t sdg, const void *w, const void *b, const void *rstd, void *dw, void *db);

/* Quantized output (rms_norm_quant).  The output kinds are not dtypes of the
 * float table: the quant slots have their own index, RMSN_QK_<kind>.  The acc
 * rule sees a quantized output as float32 (q is made from float32 values, or
 * float64 ones for float64 data).  quant: x -> q and one float32 scale;
 * quant_add: ro = round(x + r) as add, then ro -> q (x, r, ro of one dtype). */
typedef int8_t rmsn_i8;
typedef uint8_t rmsn_e4m3;
enum { RMSN_Q_I8 = 0, RMSN_Q_E4M3 = 1, RMSN_NQKINDS = 2 };
#define RMSN_QK_i8 RMSN_Q_I8
#define RMSN_QK_e4m3 RMSN_Q_E4M3
#define RMSN_DT_i8 RMSN_F32
#define RMSN_DT_e4m3 RMSN_F32
typedef void (*rmsn_quant_fn)(const rmsn_opts *o, ptrdiff_t n, const void *x, ptrdiff_t sx, void *q, ptrdiff_t sq,
                              const void *w, const void *b, float scale_ub, float *scale);
typedef void (*rmsn_quant_add_fn)(const rmsn_opts *o, ptrdiff_t n, const void *x, ptrdiff_t sx, const void *r,
                                  ptrdiff_t sr, void *ro, ptrdiff_t sro, void *q, ptrdiff_t sq, const void *w,
                                  const void *b, float scale_ub, float *scale);

/* The ops: X(op, dimensions of its slots in the table).  A pair op's slots are
 * [input][output] ([x][residual] for add); bwd has one dtype for dy, x, dx. */
#define RMSN_FOR_EACH_OP(X)                                                     \
    X(fwd, [RMSN_NDTYPES][RMSN_NDTYPES])                                        \
    X(fwd_cols, [RMSN_NDTYPES][RMSN_NDTYPES])                                   \
    X(add, [RMSN_NDTYPES][RMSN_NDTYPES])                                        \
    X(bwd, [RMSN_NDTYPES])                                                      \
    X(gated, [RMSN_NDTYPES][RMSN_NDTYPES])                                      \
    X(gated_bwd, [RMSN_NDTYPES])                                                \
    X(quant, [RMSN_NDTYPES][RMSN_NQKINDS])                                      \
    X(quant_add, [RMSN_NDTYPES][RMSN_NQKINDS])

/* The table slot of an entry's kernel. */
#define RMSN_SLOT_fwd(TIN, TOUT) fwd[RMSN_DT_##TIN][RMSN_DT_##TOUT]
#define RMSN_SLOT_fwd_cols(TIN, TOUT) fwd_cols[RMSN_DT_##TIN][RMSN_DT_##TOUT]
#define RMSN_SLOT_add(TIN, TOUT) add[RMSN_DT_##TIN][RMSN_DT_##TOUT]
#define RMSN_SLOT_bwd(TIN, TOUT) bwd[RMSN_DT_##TIN]
#define RMSN_SLOT_gated(TIN, TOUT) gated[RMSN_DT_##TIN][RMSN_DT_##TOUT]
#define RMSN_SLOT_gated_bwd(TIN, TOUT) gated_bwd[RMSN_DT_##TIN]
#define RMSN_SLOT_quant(TIN, TQ) quant[RMSN_DT_##TIN][RMSN_QK_##TQ]
#define RMSN_SLOT_quant_add(TIN, TQ) quant_add[RMSN_DT_##TIN][RMSN_QK_##TQ]

/* The kernels.  Each entry is one of
 *   SCALAR(ARG, op, input, output, acc, scalar name)
 *   SIMD(ARG, op, input, output, acc, scalar name, avx2, avx512, avx512bf16, neon names)
 * SCALAR: only the scalar tier implements it (the SIMD tiers keep the scalar
 * kernel in that slot); SIMD: every SIMD tier does.  ARG is passed through
 * (a tier's name, for the definitions and the install functions).
 * Order: all fwd entries before the add entries (the fused add writes with
 * the forward's scale primitive of the reversed pair); quant after add and
 * before quant_add (quant_add uses add's rmsn_addsq and quant's passes).
 * gated_bwd uses no gated entry's primitives (its dot pass sums the squares
 * itself). */
#define RMSN_FOR_EACH_KERNEL(SCALAR, SIMD, ARG)                                                                                            \
    SIMD(ARG, fwd, f16, f16, f32, rmsn_fwd_f16_f16_scalar, rmsn_fwd_f16_f16_avx2, rmsn_fwd_f16_f16_avx512,                                 \
         rmsn_fwd_f16_f16_avx512bf16, rmsn_fwd_f16_f16_neon)                                                                               \
    SIMD(ARG, fwd, f16, bf16, f32, rmsn_fwd_f16_bf16_scalar, rmsn_fwd_f16_bf16_avx2, rmsn_fwd_f16_bf16_avx512,                             \
         rmsn_fwd_f16_bf16_avx512bf16, rmsn_fwd_f16_bf16_neon)                                                                             \
    SIMD(ARG, fwd, f16, f32, f32, rmsn_fwd_f16_f32_scalar, rmsn_fwd_f16_f32_avx2, rmsn_fwd_f16_f32_avx512,                                 \
         rmsn_fwd_f16_f32_avx512bf16, rmsn_fwd_f16_f32_neon)                                                                               \
    SCALAR(ARG, fwd, f16, f64, f64, rmsn_fwd_f16_f64_scalar)                                                                               \
    SIMD(ARG, fwd, bf16, f16, f32, rmsn_fwd_bf16_f16_scalar, rmsn_fwd_bf16_f16_avx2, rmsn_fwd_bf16_f16_avx512,                             \
         rmsn_fwd_bf16_f16_avx512bf16, rmsn_fwd_bf16_f16_neon)                                                                             \
    SIMD(ARG, fwd, bf16, bf16, f32, rmsn_fwd_bf16_bf16_scalar, rmsn_fwd_bf16_bf16_avx2, rmsn_fwd_bf16_bf16_avx512,                         \
         rmsn_fwd_bf16_bf16_avx512bf16, rmsn_fwd_bf16_bf16_neon)                                                                           \
    SIMD(ARG, fwd, bf16, f32, f32, rmsn_fwd_bf16_f32_scalar, rmsn_fwd_bf16_f32_avx2, rmsn_fwd_bf16_f32_avx512,                             \
         rmsn_fwd_bf16_f32_avx512bf16, rmsn_fwd_bf16_f32_neon)                                                                             \
    SCALAR(ARG, fwd, bf16, f64, f64, rmsn_fwd_bf16_f64_scalar)                                                                             \
    SIMD(ARG, fwd, f32, f16, f32, rmsn_fwd_f32_f16_scalar, rmsn_fwd_f32_f16_avx2, rmsn_fwd_f32_f16_avx512,                                 \
         rmsn_fwd_f32_f16_avx512bf16, rmsn_fwd_f32_f16_neon)                                                                               \
    SIMD(ARG, fwd, f32, bf16, f32, rmsn_fwd_f32_bf16_scalar, rmsn_fwd_f32_bf16_avx2, rmsn_fwd_f32_bf16_avx512,                             \
         rmsn_fwd_f32_bf16_avx512bf16, rmsn_fwd_f32_bf16_neon)                                                                             \
    SIMD(ARG, fwd, f32, f32, f32, rmsn_fwd_f32_f32_scalar, rmsn_fwd_f32_f32_avx2, rmsn_fwd_f32_f32_avx512,                                 \
         rmsn_fwd_f32_f32_avx512bf16, rmsn_fwd_f32_f32_neon)                                                                               \
    SCALAR(ARG, fwd, f32, f64, f64, rmsn_fwd_f32_f64_scalar)                                                                               \
    SCALAR(ARG, fwd, f64, f16, f64, rmsn_fwd_f64_f16_scalar)                                                                               \
    SCALAR(ARG, fwd, f64, bf16, f64, rmsn_fwd_f64_bf16_scalar)                                                                             \
    SCALAR(ARG, fwd, f64, f32, f64, rmsn_fwd_f64_f32_scalar)                                                                               \
    SIMD(ARG, fwd, f64, f64, f64, rmsn_fwd_f64_f64_scalar, rmsn_fwd_f64_f64_avx2, rmsn_fwd_f64_f64_avx512,                                 \
         rmsn_fwd_f64_f64_avx512bf16, rmsn_fwd_f64_f64_neon)                                                                               \
    SIMD(ARG, fwd_cols, f16, f16, f32, rmsn_fwd_cols_f16_f16_scalar, rmsn_fwd_cols_f16_f16_avx2, rmsn_fwd_cols_f16_f16_avx512,             \
         rmsn_fwd_cols_f16_f16_avx512bf16, rmsn_fwd_cols_f16_f16_neon)                                                                     \
    SIMD(ARG, fwd_cols, f16, bf16, f32, rmsn_fwd_cols_f16_bf16_scalar, rmsn_fwd_cols_f16_bf16_avx2, rmsn_fwd_cols_f16_bf16_avx512,         \
         rmsn_fwd_cols_f16_bf16_avx512bf16, rmsn_fwd_cols_f16_bf16_neon)                                                                   \
    SIMD(ARG, fwd_cols, f16, f32, f32, rmsn_fwd_cols_f16_f32_scalar, rmsn_fwd_cols_f16_f32_avx2, rmsn_fwd_cols_f16_f32_avx512,             \
         rmsn_fwd_cols_f16_f32_avx512bf16, rmsn_fwd_cols_f16_f32_neon)                                                                     \
    SCALAR(ARG, fwd_cols, f16, f64, f64, rmsn_fwd_cols_f16_f64_scalar)                                                                     \
    SIMD(ARG, fwd_cols, bf16, f16, f32, rmsn_fwd_cols_bf16_f16_scalar, rmsn_fwd_cols_bf16_f16_avx2, rmsn_fwd_cols_bf16_f16_avx512,         \
         rmsn_fwd_cols_bf16_f16_avx512bf16, rmsn_fwd_cols_bf16_f16_neon)                                                                   \
    SIMD(ARG, fwd_cols, bf16, bf16, f32, rmsn_fwd_cols_bf16_bf16_scalar, rmsn_fwd_cols_bf16_bf16_avx2, rmsn_fwd_cols_bf16_bf16_avx512,     \
         rmsn_fwd_cols_bf16_bf16_avx512bf16, rmsn_fwd_cols_bf16_bf16_neon)                                                                 \
    SIMD(ARG, fwd_cols, bf16, f32, f32, rmsn_fwd_cols_bf16_f32_scalar, rmsn_fwd_cols_bf16_f32_avx2, rmsn_fwd_cols_bf16_f32_avx512,         \
         rmsn_fwd_cols_bf16_f32_avx512bf16, rmsn_fwd_cols_bf16_f32_neon)                                                                   \
    SCALAR(ARG, fwd_cols, bf16, f64, f64, rmsn_fwd_cols_bf16_f64_scalar)                                                                   \
    SIMD(ARG, fwd_cols, f32, f16, f32, rmsn_fwd_cols_f32_f16_scalar, rmsn_fwd_cols_f32_f16_avx2, rmsn_fwd_cols_f32_f16_avx512,             \
         rmsn_fwd_cols_f32_f16_avx512bf16, rmsn_fwd_cols_f32_f16_neon)                                                                     \
    SIMD(ARG, fwd_cols, f32, bf16, f32, rmsn_fwd_cols_f32_bf16_scalar, rmsn_fwd_cols_f32_bf16_avx2, rmsn_fwd_cols_f32_bf16_avx512,         \
         rmsn_fwd_cols_f32_bf16_avx512bf16, rmsn_fwd_cols_f32_bf16_neon)                                                                   \
    SIMD(ARG, fwd_cols, f32, f32, f32, rmsn_fwd_cols_f32_f32_scalar, rmsn_fwd_cols_f32_f32_avx2, rmsn_fwd_cols_f32_f32_avx512,             \
         rmsn_fwd_cols_f32_f32_avx512bf16, rmsn_fwd_cols_f32_f32_neon)                                                                     \
    SCALAR(ARG, fwd_cols, f32, f64, f64, rmsn_fwd_cols_f32_f64_scalar)                                                                     \
    SCALAR(ARG, fwd_cols, f64, f16, f64, rmsn_fwd_cols_f64_f16_scalar)                                                                     \
    SCALAR(ARG, fwd_cols, f64, bf16, f64, rmsn_fwd_cols_f64_bf16_scalar)                                                                   \
    SCALAR(ARG, fwd_cols, f64, f32, f64, rmsn_fwd_cols_f64_f32_scalar)                                                                     \
    SIMD(ARG, fwd_cols, f64, f64, f64, rmsn_fwd_cols_f64_f64_scalar, rmsn_fwd_cols_f64_f64_avx2, rmsn_fwd_cols_f64_f64_avx512,             \
         rmsn_fwd_cols_f64_f64_avx512bf16, rmsn_fwd_cols_f64_f64_neon)                                                                     \
    SIMD(ARG, add, f16, f16, f32, rmsn_add_f16_f16_scalar, rmsn_add_f16_f16_avx2, rmsn_add_f16_f16_avx512,                                 \
         rmsn_add_f16_f16_avx512bf16, rmsn_add_f16_f16_neon)                                                                               \
    SIMD(ARG, add, f16, bf16, f32, rmsn_add_f16_bf16_scalar, rmsn_add_f16_bf16_avx2, rmsn_add_f16_bf16_avx512,                             \
         rmsn_add_f16_bf16_avx512bf16, rmsn_add_f16_bf16_neon)                                                                             \
    SIMD(ARG, add, f16, f32, f32, rmsn_add_f16_f32_scalar, rmsn_add_f16_f32_avx2, rmsn_add_f16_f32_avx512,                                 \
         rmsn_add_f16_f32_avx512bf16, rmsn_add_f16_f32_neon)                                                                               \
    SCALAR(ARG, add, f16, f64, f64, rmsn_add_f16_f64_scalar)                                                                               \
    SIMD(ARG, add, bf16, f16, f32, rmsn_add_bf16_f16_scalar, rmsn_add_bf16_f16_avx2, rmsn_add_bf16_f16_avx512,                             \
         rmsn_add_bf16_f16_avx512bf16, rmsn_add_bf16_f16_neon)                                                                             \
    SIMD(ARG, add, bf16, bf16, f32, rmsn_add_bf16_bf16_scalar, rmsn_add_bf16_bf16_avx2, rmsn_add_bf16_bf16_avx512,                         \
         rmsn_add_bf16_bf16_avx512bf16, rmsn_add_bf16_bf16_neon)                                                                           \
    SIMD(ARG, add, bf16, f32, f32, rmsn_add_bf16_f32_scalar, rmsn_add_bf16_f32_avx2, rmsn_add_bf16_f32_avx512,                             \
         rmsn_add_bf16_f32_avx512bf16, rmsn_add_bf16_f32_neon)                                                                             \
    SCALAR(ARG, add, bf16, f64, f64, rmsn_add_bf16_f64_scalar)                                                                             \
    SIMD(ARG, add, f32, f16, f32, rmsn_add_f32_f16_scalar, rmsn_add_f32_f16_avx2, rmsn_add_f32_f16_avx512,                                 \
         rmsn_add_f32_f16_avx512bf16, rmsn_add_f32_f16_neon)                                                                               \
    SIMD(ARG, add, f32, bf16, f32, rmsn_add_f32_bf16_scalar, rmsn_add_f32_bf16_avx2, rmsn_add_f32_bf16_avx512,                             \
         rmsn_add_f32_bf16_avx512bf16, rmsn_add_f32_bf16_neon)                                                                             \
    SIMD(ARG, add, f32, f32, f32, rmsn_add_f32_f32_scalar, rmsn_add_f32_f32_avx2, rmsn_add_f32_f32_avx512,                                 \
         rmsn_add_f32_f32_avx512bf16, rmsn_add_f32_f32_neon)                                                                               \
    SCALAR(ARG, add, f32, f64, f64, rmsn_add_f32_f64_scalar)                                                                               \
    SCALAR(ARG, add, f64, f16, f64, rmsn_add_f64_f16_scalar)                                                                               \
    SCALAR(ARG, add, f64, bf16, f64, rmsn_add_f64_bf16_scalar)                                                                             \
    SCALAR(ARG, add, f64, f32, f64, rmsn_add_f64_f32_scalar)                                                                               \
    SIMD(ARG, add, f64, f64, f64, rmsn_add_f64_f64_scalar, rmsn_add_f64_f64_avx2, rmsn_add_f64_f64_avx512,                                 \
         rmsn_add_f64_f64_avx512bf16, rmsn_add_f64_f64_neon)                                                                               \
    SIMD(ARG, bwd, f16, f16, f32, rmsn_bwd_f16_scalar, rmsn_bwd_f16_avx2, rmsn_bwd_f16_avx512,                                             \
         rmsn_bwd_f16_avx512bf16, rmsn_bwd_f16_neon)                                                                                       \
    SIMD(ARG, bwd, bf16, bf16, f32, rmsn_bwd_bf16_scalar, rmsn_bwd_bf16_avx2, rmsn_bwd_bf16_avx512,                                        \
         rmsn_bwd_bf16_avx512bf16, rmsn_bwd_bf16_neon)                                                                                     \
    SIMD(ARG, bwd, f32, f32, f32, rmsn_bwd_f32_scalar, rmsn_bwd_f32_avx2, rmsn_bwd_f32_avx512,                                             \
         rmsn_bwd_f32_avx512bf16, rmsn_bwd_f32_neon)                                                                                       \
    SIMD(ARG, bwd, f64, f64, f64, rmsn_bwd_f64_scalar, rmsn_bwd_f64_avx2, rmsn_bwd_f64_avx512,                                             \
         rmsn_bwd_f64_avx512bf16, rmsn_bwd_f64_neon)                                                                                       \
    SIMD(ARG, gated, f16, f16, f32, rmsn_gated_f16_f16_scalar, rmsn_gated_f16_f16_avx2, rmsn_gated_f16_f16_avx512,                         \
         rmsn_gated_f16_f16_avx512bf16, rmsn_gated_f16_f16_neon)                                                                           \
    SIMD(ARG, gated, f16, bf16, f32, rmsn_gated_f16_bf16_scalar, rmsn_gated_f16_bf16_avx2, rmsn_gated_f16_bf16_avx512,                     \
         rmsn_gated_f16_bf16_avx512bf16, rmsn_gated_f16_bf16_neon)                                                                         \
    SIMD(ARG, gated, f16, f32, f32, rmsn_gated_f16_f32_scalar, rmsn_gated_f16_f32_avx2, rmsn_gated_f16_f32_avx512,                         \
         rmsn_gated_f16_f32_avx512bf16, rmsn_gated_f16_f32_neon)                                                                           \
    SCALAR(ARG, gated, f16, f64, f64, rmsn_gated_f16_f64_scalar)                                                                           \
    SIMD(ARG, gated, bf16, f16, f32, rmsn_gated_bf16_f16_scalar, rmsn_gated_bf16_f16_avx2, rmsn_gated_bf16_f16_avx512,                     \
         rmsn_gated_bf16_f16_avx512bf16, rmsn_gated_bf16_f16_neon)                                                                         \
    SIMD(ARG, gated, bf16, bf16, f32, rmsn_gated_bf16_bf16_scalar, rmsn_gated_bf16_bf16_avx2, rmsn_gated_bf16_bf16_avx512,                 \
         rmsn_gated_bf16_bf16_avx512bf16, rmsn_gated_bf16_bf16_neon)                                                                       \
    SIMD(ARG, gated, bf16, f32, f32, rmsn_gated_bf16_f32_scalar, rmsn_gated_bf16_f32_avx2, rmsn_gated_bf16_f32_avx512,                     \
         rmsn_gated_bf16_f32_avx512bf16, rmsn_gated_bf16_f32_neon)                                                                         \
    SCALAR(ARG, gated, bf16, f64, f64, rmsn_gated_bf16_f64_scalar)                                                                         \
    SIMD(ARG, gated, f32, f16, f32, rmsn_gated_f32_f16_scalar, rmsn_gated_f32_f16_avx2, rmsn_gated_f32_f16_avx512,                         \
         rmsn_gated_f32_f16_avx512bf16, rmsn_gated_f32_f16_neon)                                                                           \
    SIMD(ARG, gated, f32, bf16, f32, rmsn_gated_f32_bf16_scalar, rmsn_gated_f32_bf16_avx2, rmsn_gated_f32_bf16_avx512,                     \
         rmsn_gated_f32_bf16_avx512bf16, rmsn_gated_f32_bf16_neon)                                                                         \
    SIMD(ARG, gated, f32, f32, f32, rmsn_gated_f32_f32_scalar, rmsn_gated_f32_f32_avx2, rmsn_gated_f32_f32_avx512,                         \
         rmsn_gated_f32_f32_avx512bf16, rmsn_gated_f32_f32_neon)                                                                           \
    SCALAR(ARG, gated, f32, f64, f64, rmsn_gated_f32_f64_scalar)                                                                           \
    SCALAR(ARG, gated, f64, f16, f64, rmsn_gated_f64_f16_scalar)                                                                           \
    SCALAR(ARG, gated, f64, bf16, f64, rmsn_gated_f64_bf16_scalar)                                                                         \
    SCALAR(ARG, gated, f64, f32, f64, rmsn_gated_f64_f32_scalar)                                                                           \
    SCALAR(ARG, gated, f64, f64, f64, rmsn_gated_f64_f64_scalar)                                                                           \
    SIMD(ARG, gated_bwd, f16, f16, f32, rmsn_gated_bwd_f16_scalar, rmsn_gated_bwd_f16_avx2, rmsn_gated_bwd_f16_avx512,                     \
         rmsn_gated_bwd_f16_avx512bf16, rmsn_gated_bwd_f16_neon)                                                                           \
    SIMD(ARG, gated_bwd, bf16, bf16, f32, rmsn_gated_bwd_bf16_scalar, rmsn_gated_bwd_bf16_avx2, rmsn_gated_bwd_bf16_avx512,                \
         rmsn_gated_bwd_bf16_avx512bf16, rmsn_gated_bwd_bf16_neon)                                                                         \
    SIMD(ARG, gated_bwd, f32, f32, f32, rmsn_gated_bwd_f32_scalar, rmsn_gated_bwd_f32_avx2, rmsn_gated_bwd_f32_avx512,                     \
         rmsn_gated_bwd_f32_avx512bf16, rmsn_gated_bwd_f32_neon)                                                                           \
    SCALAR(ARG, gated_bwd, f64, f64, f64, rmsn_gated_bwd_f64_scalar)                                                                       \
    SIMD(ARG, quant, f16, i8, f32, rmsn_quant_f16_i8_scalar, rmsn_quant_f16_i8_avx2, rmsn_quant_f16_i8_avx512,                             \
         rmsn_quant_f16_i8_avx512bf16, rmsn_quant_f16_i8_neon)                                                                             \
    SIMD(ARG, quant, f16, e4m3, f32, rmsn_quant_f16_e4m3_scalar, rmsn_quant_f16_e4m3_avx2, rmsn_quant_f16_e4m3_avx512,                     \
         rmsn_quant_f16_e4m3_avx512bf16, rmsn_quant_f16_e4m3_neon)                                                                         \
    SIMD(ARG, quant, bf16, i8, f32, rmsn_quant_bf16_i8_scalar, rmsn_quant_bf16_i8_avx2, rmsn_quant_bf16_i8_avx512,                         \
         rmsn_quant_bf16_i8_avx512bf16, rmsn_quant_bf16_i8_neon)                                                                           \
    SIMD(ARG, quant, bf16, e4m3, f32, rmsn_quant_bf16_e4m3_scalar, rmsn_quant_bf16_e4m3_avx2, rmsn_quant_bf16_e4m3_avx512,                 \
         rmsn_quant_bf16_e4m3_avx512bf16, rmsn_quant_bf16_e4m3_neon)                                                                       \
    SIMD(ARG, quant, f32, i8, f32, rmsn_quant_f32_i8_scalar, rmsn_quant_f32_i8_avx2, rmsn_quant_f32_i8_avx512,                             \
         rmsn_quant_f32_i8_avx512bf16, rmsn_quant_f32_i8_neon)                                                                             \
    SIMD(ARG, quant, f32, e4m3, f32, rmsn_quant_f32_e4m3_scalar, rmsn_quant_f32_e4m3_avx2, rmsn_quant_f32_e4m3_avx512,                     \
         rmsn_quant_f32_e4m3_avx512bf16, rmsn_quant_f32_e4m3_neon)                                                                         \
    SCALAR(ARG, quant, f64, i8, f64, rmsn_quant_f64_i8_scalar)                                                                             \
    SCALAR(ARG, quant, f64, e4m3, f64, rmsn_quant_f64_e4m3_scalar)                                                                         \
    SIMD(ARG, quant_add, f16, i8, f32, rmsn_quant_add_f16_i8_scalar, rmsn_quant_add_f16_i8_avx2, rmsn_quant_add_f16_i8_avx512,             \
         rmsn_quant_add_f16_i8_avx512bf16, rmsn_quant_add_f16_i8_neon)                                                                     \
    SIMD(ARG, quant_add, f16, e4m3, f32, rmsn_quant_add_f16_e4m3_scalar, rmsn_quant_add_f16_e4m3_avx2, rmsn_quant_add_f16_e4m3_avx512,     \
         rmsn_quant_add_f16_e4m3_avx512bf16, rmsn_quant_add_f16_e4m3_neon)                                                                 \
    SIMD(ARG, quant_add, bf16, i8, f32, rmsn_quant_add_bf16_i8_scalar, rmsn_quant_add_bf16_i8_avx2, rmsn_quant_add_bf16_i8_avx512,         \
         rmsn_quant_add_bf16_i8_avx512bf16, rmsn_quant_add_bf16_i8_neon)                                                                   \
    SIMD(ARG, quant_add, bf16, e4m3, f32, rmsn_quant_add_bf16_e4m3_scalar, rmsn_quant_add_bf16_e4m3_avx2, rmsn_quant_add_bf16_e4m3_avx512, \
         rmsn_quant_add_bf16_e4m3_avx512bf16, rmsn_quant_add_bf16_e4m3_neon)                                                               \
    SIMD(ARG, quant_add, f32, i8, f32, rmsn_quant_add_f32_i8_scalar, rmsn_quant_add_f32_i8_avx2, rmsn_quant_add_f32_i8_avx512,             \
         rmsn_quant_add_f32_i8_avx512bf16, rmsn_quant_add_f32_i8_neon)                                                                     \
    SIMD(ARG, quant_add, f32, e4m3, f32, rmsn_quant_add_f32_e4m3_scalar, rmsn_quant_add_f32_e4m3_avx2, rmsn_quant_add_f32_e4m3_avx512,     \
         rmsn_quant_add_f32_e4m3_avx512bf16, rmsn_quant_add_f32_e4m3_neon)                                                                 \
    SCALAR(ARG, quant_add, f64, i8, f64, rmsn_quant_add_f64_i8_scalar)                                                                     \
    SCALAR(ARG, quant_add, f64, e4m3, f64, rmsn_quant_add_f64_e4m3_scalar)

/* The acc column against the rule of rmsnorm.h. */
#define RMSN_CHECK_ACC(ARG, OP, TIN, TOUT, ACC, ...)                                                     \
    _Static_assert(RMSN_ACC_DTYPE(RMSN_DT_##TIN, RMSN_DT_##TOUT) == RMSN_DT_##ACC,                       \
                   "ops.h: the acc type of " #OP " " #TIN " -> " #TOUT " breaks the rule of rmsnorm.h");
RMSN_FOR_EACH_KERNEL(RMSN_CHECK_ACC, RMSN_CHECK_ACC, ~)
#undef RMSN_CHECK_ACC

/* What a SIMD tier makes of a SCALAR entry: nothing. */
#define RMSN_NO_KERNEL(ARG, OP, TIN, TOUT, ACC, NAME)

/* A tier's column of a SIMD entry's names (the SIMD tiers' adapters pick their own). */
#define RMSN_NAME_avx2(AVX2, AVX512, AVX512BF16, NEON) AVX2
#define RMSN_NAME_avx512(AVX2, AVX512, AVX512BF16, NEON) AVX512
#define RMSN_NAME_avx512bf16(AVX2, AVX512, AVX512BF16, NEON) AVX512BF16
#define RMSN_NAME_neon(AVX2, AVX512, AVX512BF16, NEON) NEON

#endif /* RMSN_OPS_H */
