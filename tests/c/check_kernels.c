/*
 * Every kernel tier compiled into this binary that this CPU runs, against the
 * scalar tier, straight through the dispatch table (no Python): every kernel
 * of ops.h that the tier has of its own (the scalar tier: all of them, against
 * themselves for determinism and the guards), and first that the names in
 * ops.h are rmsn_<op>_<input>_<output>_<tier> (bwd, gated_bwd: rmsn_<op>_<dtype>_<tier>).
 * Built and run by tools/check_kernels.sh natively (x86: avx2, avx512) and
 * for AArch64 under qemu-user (neon), where the Python suite does not run.
 *
 * Rows of 1..70 elements and 4096+5 (every SIMD tail, the blocked sum), all
 * zero, huge (robust path), tiny (subnormal inputs), one NaN or inf; without
 * weight/bias, with them, and with a weight that makes the outputs subnormal;
 * the options (eps_mode, round_mid, stream, misaligned outputs) cycle over
 * the cases; fwd also runs blocks of copies of the slice in one call (rows
 * apart, and rows that follow each other) and must give each row the one-row bits.  Promised, as tests/test_isa.py: a tier is within the bound of
 * tests/helpers.py (assert_matches_reference) of the scalar tier, with each
 * element's own scale (|x * rstd * w| + |b|; dx: |rstd * g| + |k * x|)
 * instead of a floor of 4, so the bound also means something for huge and
 * tiny values; y bitwise equal where the tier's rstd is (rmsnorm.h: the same
 * rstd gives the same bits, which checks the conversions exactly), except for
 * the gated kernels, whose activation is each SIMD tier's own; NaN at the
 * same places; inf equal; the residual sum ro and db bitwise equal; each tier
 * bitwise deterministic (run twice); nothing written outside the outputs.
 * Strided layouts are not run: every tier hands them to the scalar primitives.
 *
 * Exit status 1 on any mismatch (the first few are printed).
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "rmsnorm_cpu/dispatch.h"

/* Lengths 1-70 (every SIMD tail), a row of the forward's fused sum (slice.h:
 * odd, with a head when streamed), and a row longer than a sum block. */
enum { PAD = 16, MAX_REPORT = 10, FUSED_ROW = RMSN_FUSED_SUM_MIN + 45, LONG_ROW = RMSN_SUM_BLOCK + 5, NLENGTHS = 72 };
enum { KIND_NORMAL, KIND_ZERO, KIND_HUGE, KIND_TINY, KIND_NAN, KIND_INF, NKINDS };
enum { NO_WB, W_ONLY, W_AND_B, TINY_W, NWB };
static const char *const KIND_NAMES[NKINDS] = {"normal", "zero", "huge", "tiny", "nan", "inf"};
static const char *const WB_NAMES[NWB] = {"none", "w", "w+b", "tiny-w"};
static const double EPS = 1e-5; /* far from every rms below: "clamp" never sits at its kink */

/* ---- dtypes -------------------------------------------------------------- */

typedef struct {
    const char *name;
    size_t size;
    int mant, emin; /* explicit mantissa bits, minimum normal exponent: the ulp */
    double huge;    /* inputs whose squares overflow the acc type (f16: as large as it gets) */
    double tiny;    /* subnormal inputs */
    double tiny_w;  /* a weight making outputs of this type subnormal */
    void (*put)(void *p, ptrdiff_t i, double v);
    double (*get)(const void *p, ptrdiff_t i);
} dtype;

#define DTYPE_ACCESS(T)                                                                               \
    static void put_##T(void *p, ptrdiff_t i, double v) { rmsn_store_##T##_f64((rmsn_##T *)p + i, v); } \
    static double get_##T(const void *p, ptrdiff_t i) { return rmsn_load_##T##_f64((const rmsn_##T *)p + i); }
DTYPE_ACCESS(f16)
DTYPE_ACCESS(bf16)
DTYPE_ACCESS(f32)
DTYPE_ACCESS(f64)

static const dtype DT[RMSN_NDTYPES] = {
    [RMSN_F16] = {"f16", 2, 10, -14, 2e4, 3e-7, 1e-6, put_f16, get_f16},
    [RMSN_BF16] = {"bf16", 2, 7, -126, 1e30, 1e-39, 1e-39, put_bf16, get_bf16},
    [RMSN_F32] = {"f32", 4, 23, -126, 1e30, 1e-40, 1e-40, put_f32, get_f32},
    [RMSN_F64] = {"f64", 8, 52, -1022, 1e300, 1e-310, 1e-310, put_f64, get_f64},
};


static double ulp(double v, int t)
{
    int e;
    if (!isfinite(v)) return 0;
    frexp(v, &e); /* |v| in [2^(e-1), 2^e) */
    return ldexp(1.0, (v == 0 || e - 1 < DT[t].emin ? DT[t].emin : e - 1) - DT[t].mant);
}

/* ---- arrays with guard bytes --------------------------------------------- */

typedef struct {
    unsigned char *base;
    void *p; /* the elements: PAD + misalign elements after base */
    int t;
    ptrdiff_t count;
} arr;

static arr arr_new(int t, ptrdiff_t count, int misalign)
{
    arr a = {NULL, NULL, t, count};
    size_t bytes = (size_t)(count + 2 * PAD + misalign) * DT[t].size;
    a.base = malloc(bytes);
    if (!a.base) {
        fprintf(stderr, "check_kernels: out of memory\n");
        exit(2);
    }
    memset(a.base, 0xa5, bytes);
    a.p = a.base + (size_t)(PAD + misalign) * DT[t].size;
    return a;
}

static int arr_guards_intact(const arr *a)
{
    const unsigned char *end = (const unsigned char *)a->p + (size_t)a->count * DT[a->t].size;
    size_t tail = (size_t)PAD * DT[a->t].size, i;
    for (i = 0; a->base + i < (const unsigned char *)a->p; i++)
        if (a->base[i] != 0xa5) return 0;
    for (i = 0; i < tail; i++)
        if (end[i] != 0xa5) return 0;
    return 1;
}

static void arr_zero(arr *a) { memset(a->p, 0, (size_t)a->count * DT[a->t].size); }
static double at(const arr *a, ptrdiff_t i) { return DT[a->t].get(a->p, i); }
static int bits_equal(const arr *a, const arr *b, ptrdiff_t i)
{
    size_t s = DT[a->t].size;
    return memcmp((const char *)a->p + i * s, (const char *)b->p + i * s, s) == 0;
}

/* ---- inputs ---------------------------------------------------------------- */

static uint64_t rng_state = 0x9e3779b97f4a7c15u;

static uint64_t rng_next(void) /* splitmix64 */
{
    uint64_t z = (rng_state += 0x9e3779b97f4a7c15u);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9u;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebu;
    return z ^ (z >> 31);
}

static double uniform(void) { return ((double)(rng_next() >> 11) + 0.5) * 0x1p-53; }

/* Standard normal (Box-Muller), clipped to [-3, 3] so scaled values stay finite. */
static double normal(void)
{
    double v = sqrt(-2 * log(uniform())) * cos(6.283185307179586 * uniform());
    return v < -3 ? -3 : v > 3 ? 3 : v;
}

/* An input row (or block) of `kind`. */
static arr input(int t, ptrdiff_t count, int kind)
{
    arr a = arr_new(t, count, (int)(rng_next() % 3));
    double scale = kind == KIND_HUGE ? DT[t].huge : kind == KIND_TINY ? DT[t].tiny : kind == KIND_ZERO ? 0 : 1;
    ptrdiff_t i;
    for (i = 0; i < count; i++) DT[t].put(a.p, i, scale * normal());
    if (kind == KIND_NAN || kind == KIND_INF)
        DT[t].put(a.p, (ptrdiff_t)(rng_next() % (uint64_t)count), kind == KIND_NAN ? NAN : -INFINITY);
    return a;
}

/* Weight (uniform 0.5..1.5, or tiny_w of the output type) and bias of acc type
 * `acc`, or empty arrays (p == NULL) for the variants without them. */
static void weight_bias(int wb, int acc, int tout, ptrdiff_t n, arr *w, arr *b)
{
    ptrdiff_t i;
    *w = *b = (arr){NULL, NULL, acc, 0};
    if (wb == NO_WB) return;
    *w = arr_new(acc, n, 0);
    for (i = 0; i < n; i++) DT[acc].put(w->p, i, (wb == TINY_W ? DT[tout].tiny_w : 1) * (0.5 + uniform()));
    if (wb != W_AND_B) return;
    *b = arr_new(acc, n, 0);
    for (i = 0; i < n; i++) DT[acc].put(b->p, i, normal());
}

static double w_at(const arr *w, ptrdiff_t i) { return w->p ? at(w, i) : 1; }
static double b_at(const arr *b, ptrdiff_t i) { return b->p ? at(b, i) : 0; }
static void arr_free(arr *a) { free(a->base); }

/* ---- outcome --------------------------------------------------------------- */

static char case_name[256];
static long n_cases, n_bad, n_same_rstd; /* n_same_rstd: output elements checked bitwise */

/* Adds to the case's name (printed with its mismatches). */
static void describe(const char *fmt, ...)
{
    size_t used = strlen(case_name);
    va_list args;
    va_start(args, fmt);
    vsnprintf(case_name + used, sizeof case_name - used, fmt, args);
    va_end(args);
}
static double worst; /* largest |tier - scalar| / bound */

static void mismatch(const char *what, ptrdiff_t i, double got, double ref, double bound)
{
    if (n_bad++ < MAX_REPORT)
        printf("  MISMATCH %s: %s[%td] = %.17g, scalar %.17g (bound %.3g)\n", case_name, what, i, got, ref, bound);
}

/* The bound of tests/helpers.assert_matches_reference for an element of
 * output type t, acc type acc, in a slice of n, the scalar result ref and the
 * magnitude `scale` of the terms it was computed from. */
static double bound(int t, int acc, ptrdiff_t n, double ref, double scale)
{
    double u = acc == RMSN_F64 ? 0x1p-53 : 0x1p-24, tiny = acc == RMSN_F64 ? 0x1p-1074 : 0x1p-149;
    double bnd = (8 + 2 * sqrt((double)n)) * u * 2 * fmax(fabs(ref), scale) + 4 * tiny;
    if (DT[t].size == 2) return bnd + ulp(ref, t);
    return t == RMSN_F32 ? bnd + ulp(ref, t) / 2 : bnd;
}

/* One output of the three runs (run[0] scalar, run[1] and run[2] the tier):
 * guards intact, run[1] == run[2] bitwise, run[1] vs run[0] within bnd[i]
 * (bnd NULL or bnd[i] < 0: bitwise, a NaN matching any NaN).  Frees the three. */
static void check_output(const char *what, arr run[3], const double *bnd)
{
    ptrdiff_t i;
    int r;
    for (r = 0; r < 3; r++)
        if (!arr_guards_intact(&run[r]) && n_bad++ < MAX_REPORT)
            printf("  MISMATCH %s: %s written outside its %td elements (run %d)\n", case_name, what, run[r].count, r);
    for (i = 0; i < run[0].count; i++) {
        double got = at(&run[1], i), ref = at(&run[0], i);
        int exact = !bnd || bnd[i] < 0;
        if (!bits_equal(&run[1], &run[2], i) && n_bad++ < MAX_REPORT)
            printf("  MISMATCH %s: %s[%td] = %.17g, then %.17g: not deterministic\n", case_name, what, i, got,
                   at(&run[2], i));
        if (got != got || ref != ref) {
            if ((got != got) != (ref != ref)) mismatch(what, i, got, ref, 0);
        } else if (exact ? !bits_equal(&run[0], &run[1], i) : !(got == ref || fabs(got - ref) <= bnd[i])) {
            mismatch(what, i, got, ref, exact ? 0 : bnd[i]);
        } else if (!exact && got != ref) {
            worst = fmax(worst, fabs(got - ref) / bnd[i]);
        }
    }
    for (r = 0; r < 3; r++) arr_free(&run[r]);
}

static double *bounds_new(ptrdiff_t count)
{
    double *b = malloc((size_t)count * sizeof *b);
    if (!b) exit(2);
    return b;
}

/* Three outputs of one shape (misaligned alike: the streamed head depends on it). */
static void outputs(arr run[3], int t, ptrdiff_t count, int misalign)
{
    int r;
    for (r = 0; r < 3; r++) run[r] = arr_new(t, count, misalign);
}

/* The normalized output y within bnd (freed), then the rstd of its slices of
 * n: relative, from the order of the sum of squares only. */
static void check_y_rstd(arr y[3], double *bnd, arr rstd[3], int acc, ptrdiff_t n)
{
    ptrdiff_t i;
    check_output("y", y, bnd);
    bnd = realloc(bnd, (size_t)rstd[0].count * sizeof *bnd);
    if (!bnd) exit(2);
    for (i = 0; i < rstd[0].count; i++) bnd[i] = bound(acc, acc, n, at(&rstd[0], i), 0);
    check_output("rstd", rstd, bnd);
    free(bnd);
}

/* Options cycled over the cases, so every combination meets every shape. */
static rmsn_opts case_opts(long c, int misalign)
{
    rmsn_opts o = {.eps = EPS, .eps_mode = (int)(c % 3), .round_mid = (int)(c / 3 % 2), .stream = (int)(c / 6 % 2),
                   .prefetch_next = (int)(c / 12 % 2)};
    describe(" eps_mode=%d round_mid=%d stream=%d prefetch_next=%d misalign=%d", o.eps_mode, o.round_mid, o.stream,
             o.prefetch_next, misalign);
    return o;
}

/* Bound of y = ((x * r) * w) + b, element i of n: the terms' size, and with
 * round_mid one ulp of x * r in the input type (the rounding may flip when
 * tiers' r differ in the last bit).  -1 (bitwise) where the tier's rstd has
 * the scalar's bits: every tier turns the same rstd into the same y
 * (rmsnorm.h), so conversions and the order of operations are checked exactly. */
static double y_bound(const rmsn_opts *o, int tin, int tout, int acc, ptrdiff_t n, double y, double x,
                      const arr rstd[3], ptrdiff_t p, double w, double b)
{
    double r = at(&rstd[0], p), bnd;
    if (bits_equal(&rstd[0], &rstd[1], p)) return n_same_rstd++, -1;
    bnd = bound(tout, acc, n, y, fabs(x * r * w) + fabs(b));
    return o->round_mid && DT[tin].size == 2 ? bnd + ulp(x * r, tin) * fabs(w) : bnd;
}

/* ---- the kernels ----------------------------------------------------------- */

/* nrows copies of the slice in one call, rows n + gap elements apart: each
 * row gets the bits of the one-row call (y1, rstd1), whatever its place in
 * the block. */
static void check_fwd_rows(const rmsn_kernels *k, const rmsn_opts *o, int tin, int tout, int acc, const arr *x,
                           const arr *w, const arr *b, const arr *y1, const arr *rstd1, ptrdiff_t nrows,
                           ptrdiff_t gap, int misalign)
{
    ptrdiff_t n = x->count, stride = n + gap, row, i;
    arr x2 = arr_new(tin, nrows * stride, 0), y2 = arr_new(tout, nrows * stride, misalign), rstd2 = arr_new(acc, nrows, 0);
    for (row = 0; row < nrows; row++)
        memcpy((char *)x2.p + row * stride * DT[tin].size, x->p, (size_t)n * DT[tin].size);
    k->fwd[tin][tout](o, nrows, n, x2.p, 1, stride * (ptrdiff_t)DT[tin].size, y2.p, 1,
                      stride * (ptrdiff_t)DT[tout].size, w->p, b->p, rstd2.p);
    for (row = 0; row < nrows; row++) {
        for (i = 0; i < n; i++)
            if (memcmp((char *)y2.p + (row * stride + i) * DT[tout].size, (char *)y1->p + i * DT[tout].size,
                       DT[tout].size))
                mismatch("y of a block of rows", row * stride + i, at(&y2, row * stride + i), at(y1, i), -1);
        if (memcmp((char *)rstd2.p + row * DT[acc].size, rstd1->p, DT[acc].size))
            mismatch("rstd of a block of rows", row, at(&rstd2, row), at(rstd1, 0), -1);
    }
    arr_free(&x2), arr_free(&y2), arr_free(&rstd2);
}

static void check_fwd(const rmsn_kernels *k[3], int tin, int tout, ptrdiff_t n, int kind, int wb)
{
    int acc = RMSN_ACC_DTYPE(tin, tout), misalign = (int)(n_cases % 5), r;
    arr x = input(tin, n, kind), w, b, y[3], rstd[3];
    rmsn_opts o = case_opts(n_cases, misalign);
    double *bnd = bounds_new(n);
    ptrdiff_t i;
    weight_bias(wb, acc, tout, n, &w, &b);
    outputs(y, tout, n, misalign);
    outputs(rstd, acc, 1, 0);
    for (r = 0; r < 3; r++) k[r]->fwd[tin][tout](&o, 1, n, x.p, 1, 0, y[r].p, 1, 0, w.p, b.p, rstd[r].p);
    for (i = 0; i < n; i++) bnd[i] = y_bound(&o, tin, tout, acc, n, at(&y[0], i), at(&x, i), rstd, 0, w_at(&w, i),
                                b_at(&b, i));
    for (r = 0; r < 3; r++) {
        check_fwd_rows(k[r], &o, tin, tout, acc, &x, &w, &b, &y[r], &rstd[r], 2, 3, misalign);
        /* Rows that follow each other, more than a stage of them: streamed,
         * they go through the stack stage and its flushes (slice.h). */
        check_fwd_rows(k[r], &o, tin, tout, acc, &x, &w, &b, &y[r], &rstd[r],
                       RMSN_STAGE_BYTES / (n * (ptrdiff_t)DT[tout].size) + 2, 0, misalign);
    }
    check_y_rstd(y, bnd, rstd, acc, n);
    arr_free(&x), arr_free(&w), arr_free(&b);
}

/* npos slices of n channels, x[c * npos + p]. */
static void check_cols(const rmsn_kernels *k[3], int tin, int tout, ptrdiff_t n, ptrdiff_t npos, int kind, int wb)
{
    int acc = RMSN_ACC_DTYPE(tin, tout), misalign = (int)(n_cases % 5), r;
    arr x = input(tin, n * npos, kind), w, b, y[3], rstd[3];
    rmsn_opts o = case_opts(n_cases, misalign);
    double *bnd = bounds_new(n * npos);
    ptrdiff_t c, p;
    weight_bias(wb, acc, tout, n, &w, &b);
    outputs(y, tout, n * npos, misalign);
    outputs(rstd, acc, npos, 0);
    for (r = 0; r < 3; r++)
        k[r]->fwd_cols[tin][tout](&o, n, npos, x.p, npos, 1, y[r].p, npos, 1, w.p, b.p, rstd[r].p, 1);
    for (c = 0; c < n; c++)
        for (p = 0; p < npos; p++)
            bnd[c * npos + p] = y_bound(&o, tin, tout, acc, n, at(&y[0], c * npos + p), at(&x, c * npos + p), rstd,
                                        p, w_at(&w, c), b_at(&b, c));
    check_y_rstd(y, bnd, rstd, acc, n);
    arr_free(&x), arr_free(&w), arr_free(&b);
}

/* ro = round(x + res) of type tr, y of type tx normalized from ro. */
static void check_add(const rmsn_kernels *k[3], int tx, int tr, ptrdiff_t n, int kind, int wb)
{
    int acc = RMSN_ACC_DTYPE(tx, tr), misalign = (int)(n_cases % 5), r;
    arr x = input(tx, n, kind), res = input(tr, n, KIND_NORMAL), w, b, ro[3], y[3], rstd[3];
    rmsn_opts o = case_opts(n_cases, misalign);
    double *bnd = bounds_new(n);
    ptrdiff_t i;
    weight_bias(wb, acc, tx, n, &w, &b);
    outputs(ro, tr, n, 0);
    outputs(y, tx, n, misalign);
    outputs(rstd, acc, 1, 0);
    for (r = 0; r < 3; r++)
        k[r]->add[tx][tr](&o, n, x.p, 1, res.p, 1, ro[r].p, 1, y[r].p, 1, w.p, b.p, rstd[r].p);
    for (i = 0; i < n; i++) bnd[i] = y_bound(&o, tr, tx, acc, n, at(&y[0], i), at(&ro[0], i), rstd, 0, w_at(&w, i),
                                b_at(&b, i));
    check_output("ro", ro, NULL);
    check_y_rstd(y, bnd, rstd, acc, n);
    arr_free(&x), arr_free(&res), arr_free(&w), arr_free(&b);
}

/* Case `length` of the column kernel: positions 1..70 and 4101 (several
 * column tiles) of 1..7 channels, and 4101 channels (blocked over channels)
 * of 3 positions. */
static void check_fwd_cols(const rmsn_kernels *k[3], int tin, int tout, ptrdiff_t length, int kind, int wb)
{
    int many_channels = length == LONG_ROW;
    describe(" (%td channels)", many_channels ? LONG_ROW : 1 + length % 7);
    check_cols(k, tin, tout, many_channels ? LONG_ROW : 1 + length % 7, many_channels ? 3 : length, kind, wb);
}

static double robust_rms(int t, ptrdiff_t n, const void *x)
{
    switch (t) {
    case RMSN_F16: return rmsn_robust_rms_f16(n, x, 1);
    case RMSN_BF16: return rmsn_robust_rms_bf16(n, x, 1);
    case RMSN_F32: return rmsn_robust_rms_f32(n, x, 1);
    default: return rmsn_robust_rms_f64(n, x, 1);
    }
}

/* dx of type t from dy, x; dw, db partial sums (acc type, zeroed) or none;
 * rstd given (the scalar forward's) or recomputed. */
static void check_bwd(const rmsn_kernels *k[3], int t, int t_, ptrdiff_t n, int kind, int wb)
{
    int acc = RMSN_ACC_DTYPE(t, t), misalign = (int)(n_cases % 5), r;
    int sums = (int)(n_cases / 12 % 2), given = (int)(n_cases / 24 % 2);
    arr x = input(t, n, kind), dy = input(t, n, KIND_NORMAL), w, b, dx[3], dw[3], db[3];
    arr y = arr_new(t, n, 0), rstd = arr_new(acc, 1, 0);
    rmsn_opts o = case_opts(n_cases, misalign);
    double *bnd = bounds_new(n), rs, kabs = 0;
    ptrdiff_t i;
    (void)t_; /* as ops.h lists bwd: output dtype = input dtype */
    describe(" dw/db=%d rstd_given=%d", sums, given);
    weight_bias(wb, acc, t, n, &w, &b);
    k[0]->fwd[t][t](&o, 1, n, x.p, 1, 0, y.p, 1, 0, NULL, NULL, rstd.p);
    rs = at(&rstd, 0);
    outputs(dx, t, n, misalign);
    outputs(dw, acc, sums ? n : 0, 0);
    outputs(db, acc, sums ? n : 0, 0);
    for (r = 0; r < 3; r++) {
        arr_zero(&dw[r]), arr_zero(&db[r]);
        k[r]->bwd[t](&o, n, dy.p, 1, x.p, 1, dx[r].p, 1, w.p, given ? rstd.p : NULL, sums ? dw[r].p : NULL,
                     sums ? db[r].p : NULL);
    }
    /* dx = rstd * g - k * x with k = coef * sum(g * x): the terms' size. */
    for (i = 0; i < n; i++) kabs += fabs(at(&dy, i) * w_at(&w, i) * at(&x, i));
    kabs *= fabs(rmsn_grad_coef(&o, rs, robust_rms(t, n, x.p), n));
    for (i = 0; i < n; i++)
        bnd[i] = bound(t, acc, n, at(&dx[0], i), fabs(rs * at(&dy, i) * w_at(&w, i)) + kabs * fabs(at(&x, i)));
    check_output("dx", dx, bnd);
    for (i = 0; i < dw[0].count; i++) bnd[i] = bound(acc, acc, n, at(&dw[0], i), fabs(at(&dy, i) * at(&x, i) * rs));
    check_output("dw", dw, bnd);
    check_output("db", db, NULL);
    free(bnd);
    arr_free(&x), arr_free(&dy), arr_free(&w), arr_free(&b), arr_free(&y), arr_free(&rstd);
}

/* Gate options cycled over the cases (independent of case_opts' cycle). */
static void gate_opts(rmsn_opts *o)
{
    o->norm_before_gate = (int)(n_cases / 36 % 2);
    o->act_silu = (int)(n_cases / 72 % 2) == 0;
    describe(" norm_before_gate=%d silu=%d", o->norm_before_gate, o->act_silu);
}

/* act(g), s = sigmoid(g) and da = act'(g); *da_size: the size of the terms
 * of da, which a few ulp of s move da by (silu's da cancels near g = -1.28). */
static double act(const rmsn_opts *o, double g, double *s, double *da, double *da_size)
{
    double a = rmsn_gate_f64(g, o->act_silu, s);
    *da = o->act_silu ? *s + g * *s * (1 - *s) : *s * (1 - *s);
    *da_size = o->act_silu ? *s * (1 + fabs(g)) : *s;
    return a;
}

/* Two quanta of a subnormal float32 product: where x * act(g) (or another
 * product with act(g)) lands below the normal range, a few ulp of act(g) move
 * it by whole quanta, which the later factors (rstd, w, dy) scale up. */
static const double SUBNORMAL_FLIP = 2 * 0x1p-149;

/* y of type tout from x and the gate g of type tin.  A SIMD tier's act(g) has
 * bits of its own, within a few ulp of the scalar tier's (kernels/simd.h), so
 * y is within the bound everywhere, not bitwise where the rstd is. */
static void check_gated(const rmsn_kernels *k[3], int tin, int tout, ptrdiff_t n, int kind, int wb)
{
    int acc = RMSN_ACC_DTYPE(tin, tout), misalign = (int)(n_cases % 5), r;
    arr x = input(tin, n, kind), g = input(tin, n, KIND_NORMAL), w, b, y[3], rstd[3];
    rmsn_opts o = case_opts(n_cases, misalign);
    double *bnd = bounds_new(n), s, da, das, a, v, rs;
    ptrdiff_t i;
    gate_opts(&o);
    weight_bias(wb, acc, tout, n, &w, &b);
    outputs(y, tout, n, misalign);
    outputs(rstd, acc, 1, 0);
    for (r = 0; r < 3; r++) k[r]->gated[tin][tout](&o, n, x.p, 1, g.p, 1, y[r].p, 1, w.p, b.p, rstd[r].p);
    rs = at(&rstd[0], 0);
    for (i = 0; i < n; i++) {
        a = act(&o, at(&g, i), &s, &da, &das);
        v = o.norm_before_gate ? at(&x, i) : at(&x, i) * a;
        bnd[i] = bound(tout, acc, n, at(&y[0], i),
                       (fabs(v * rs * w_at(&w, i)) + fabs(b_at(&b, i))) * (o.norm_before_gate ? fabs(a) : 1)) +
                 SUBNORMAL_FLIP * fabs(rs * w_at(&w, i));
        if (o.round_mid && DT[tin].size == 2)
            bnd[i] += 2 * ulp(v * rs * w_at(&w, i), tin) * (o.norm_before_gate ? fabs(a) : 1);
    }
    check_y_rstd(y, bnd, rstd, acc, n);
    arr_free(&x), arr_free(&g), arr_free(&w), arr_free(&b);
}

/* dx, dg of type t; dw, db partial sums or none; rstd given or recomputed.
 * db is bitwise where it sums dy alone (gate first), within the bound where
 * it sums dy * act(g) (act: each SIMD tier's own, as in check_gated). */
static void check_gated_bwd(const rmsn_kernels *k[3], int t, int t_, ptrdiff_t n, int kind, int wb)
{
    int acc = RMSN_ACC_DTYPE(t, t), misalign = (int)(n_cases % 5), r;
    int sums = (int)(n_cases / 12 % 2), given = (int)(n_cases / 24 % 2);
    arr x = input(t, n, kind), g = input(t, n, KIND_NORMAL), dy = input(t, n, KIND_NORMAL), w, b;
    arr dx[3], dg[3], dw[3], db[3], y = arr_new(t, n, 0), rstd = arr_new(acc, 1, 0);
    rmsn_opts o = case_opts(n_cases, misalign);
    double *bdx = bounds_new(n), *bdg = bounds_new(n), *bdw = bounds_new(n), *bdb = bounds_new(n), rs, kabs = 0, s, da, das, a, v, e, du, flip;
    ptrdiff_t i;
    (void)t_;
    gate_opts(&o);
    describe(" dw/db=%d rstd_given=%d", sums, given);
    weight_bias(wb, acc, t, n, &w, &b);
    k[0]->gated[t][t](&o, n, x.p, 1, g.p, 1, y.p, 1, NULL, NULL, rstd.p);
    rs = at(&rstd, 0);
    outputs(dx, t, n, misalign);
    outputs(dg, t, n, 0);
    outputs(dw, acc, sums ? n : 0, 0);
    outputs(db, acc, sums ? n : 0, 0);
    for (r = 0; r < 3; r++) {
        arr_zero(&dw[r]), arr_zero(&db[r]);
        k[r]->gated_bwd[t](&o, n, dy.p, 1, x.p, 1, g.p, 1, dx[r].p, 1, dg[r].p, 1, w.p, b.p, given ? rstd.p : NULL,
                           sums ? dw[r].p : NULL, sums ? db[r].p : NULL);
    }
    for (i = 0; i < n; i++) {
        a = act(&o, at(&g, i), &s, &da, &das);
        kabs += fabs(at(&dy, i) * w_at(&w, i) * at(&x, i) * a);
    }
    kabs *= fabs(rs * rs * rs / (double)n) * (o.eps_mode == RMSN_EPS_ADD ? 4 : 1); /* coef: at most ~rstd^3 / n */
    for (i = 0; i < n; i++) {
        a = act(&o, at(&g, i), &s, &da, &das);
        v = at(&x, i);
        flip = SUBNORMAL_FLIP * fabs(rs) * fmax(1, fabs(at(&dy, i))) * fmax(1, fabs(w_at(&w, i)));
        e = o.norm_before_gate ? at(&dy, i) * a : at(&dy, i);
        du = fabs(rs * e * w_at(&w, i)) + kabs * fabs(o.norm_before_gate ? v : v * a);
        bdx[i] = bound(t, acc, n, at(&dx[0], i), o.norm_before_gate ? du : du * fabs(a)) + flip * (1 + fabs(a));
        bdg[i] = bound(t, acc, n, at(&dg[0], i),
                       o.norm_before_gate ? fabs(at(&dy, i)) * (fabs(v * rs * w_at(&w, i)) + fabs(b_at(&b, i))) * das
                                          : du * fabs(v) * das) +
                 flip * das;
        bdw[i] = bound(acc, acc, n, sums ? at(&dw[0], i) : 0, fabs(e * (o.norm_before_gate ? v : v * a) * rs)) + flip;
        bdb[i] = o.norm_before_gate ? bound(acc, acc, n, sums ? at(&db[0], i) : 0, fabs(e)) : -1; /* dy * act(g) */
    }
    check_output("dx", dx, bdx);
    check_output("dg", dg, bdg);
    check_output("dw", dw, bdw);
    check_output("db", db, bdb);
    free(bdx), free(bdg), free(bdw), free(bdb);
    arr_free(&x), arr_free(&g), arr_free(&dy), arr_free(&w), arr_free(&b), arr_free(&y), arr_free(&rstd);
}

/* ---- quantized output --------------------------------------------------------
 * q is one byte an element: its runs are plain buffers with guard bytes. */

static double e4m3_value(unsigned char b)
{
    int e = (b >> 3) & 15, m = b & 7;
    double v = e ? ldexp(8 + m, e - 10) : ldexp(m, -9);
    if (e == 15 && m == 7) return NAN;
    return b & 0x80 ? -v : v;
}
static double q_value(int qkind, const unsigned char *q, ptrdiff_t i)
{
    return qkind == RMSN_Q_I8 ? (double)(signed char)q[i] : e4m3_value(q[i]);
}

/* The three runs' q (n bytes after PAD guard bytes) and scales: the tier's
 * two runs bitwise equal, each within one quantization step (q) and the
 * rstd's bound (scale: relative, from the order of the sum of squares) of the
 * scalar run; rstds a few ulps apart move y / scale across a rounding
 * boundary at most once.
 * mid_t: the 16-bit input type x * rstd is rounded to (round_mid), else -1.
 * Tiers sum the squares in other orders, so their rstd may differ in the
 * last bit, and that rounding may then go the other way: y = round(x * r) * w
 * + b moves by up to an ulp of round(x * r) * w, which a bias cancelling
 * most of it leaves as several steps of q. */
static void check_q_scale(int qkind, ptrdiff_t n, unsigned char *q[3], float scale[3], int mid_t, const arr *b)
{
    double rel = (8 + 2 * sqrt((double)n)) * 0x1p-24;
    ptrdiff_t i;
    int r;
    for (r = 0; r < 3; r++)
        for (i = 0; i < PAD; i++)
            if (q[r][i] != 0xa5 || q[r][PAD + n + i] != 0xa5) mismatch("q guard", i, 0, 0, 0);
    if (memcmp(&scale[1], &scale[2], sizeof *scale)) mismatch("scale (two runs)", 0, scale[1], scale[2], 0);
    if (!(fabs((double)scale[1] - scale[0]) <= rel * fabs((double)scale[0])) && !(isnan(scale[1]) && isnan(scale[0])))
        mismatch("scale", 0, scale[1], scale[0], rel * fabs((double)scale[0]));
    for (i = 0; i < n; i++) {
        double got = q_value(qkind, q[1] + PAD, i), ref = q_value(qkind, q[0] + PAD, i);
        double step = qkind == RMSN_Q_I8 ? 1 : fmax(ulp(fmax(fabs(got), fabs(ref)), RMSN_F16) * 128, 0x1p-9);
        /* |round(x * r) * w| is |y - b|, within a factor of 2 */
        if (mid_t >= 0 && isfinite(ref) && scale[0] > 0 && isfinite(scale[0]))
            step += 2 * ulp(fabs(ref * scale[0] - b_at(b, i)), mid_t) / scale[0];
        if (q[1][PAD + i] != q[2][PAD + i]) mismatch("q (two runs)", i, got, q_value(qkind, q[2] + PAD, i), 0);
        if (!(fabs(got - ref) <= step) && !(isnan(got) && isnan(ref))) mismatch("q", i, got, ref, step);
    }
    for (r = 0; r < 3; r++) free(q[r]);
}

static void q_outputs(unsigned char *q[3], ptrdiff_t n)
{
    int r;
    for (r = 0; r < 3; r++) {
        q[r] = malloc((size_t)(n + 2 * PAD));
        if (!q[r]) exit(2);
        memset(q[r], 0xa5, (size_t)(n + 2 * PAD));
    }
}

/* x -> q, scale (no scale_ub, and a bound of 0.5 on odd cases). */
static void check_quant(const rmsn_kernels *k[3], int t, int qkind, ptrdiff_t n, int kind, int wb)
{
    int acc = RMSN_ACC_DTYPE(t, t), r;
    ptrdiff_t i;
    arr x = input(t, n, kind), w, b;
    rmsn_opts o = case_opts(n_cases, 0);
    unsigned char *q[3];
    float scale[3], ub = n_cases % 2 ? 0.5f : INFINITY;
    weight_bias(wb, acc, t, n, &w, &b);
    q_outputs(q, n);
    for (r = 0; r < 3; r++) k[r]->quant[t][qkind](&o, n, x.p, 1, q[r] + PAD, 1, w.p, b.p, ub, &scale[r]);
    check_q_scale(qkind, n, q, scale, o.round_mid && DT[t].size == 2 ? t : -1, &b);
    arr_free(&x);
    /* Integers in [-8, 8] (not from rng: the other cases keep their data):
     * every order of the sum of squares is exact, so the tiers share rstd, y
     * and scale, and q (the SIMD conversions) is bitwise the scalar one's. */
    x = arr_new(t, n, 0);
    for (i = 0; i < n; i++) DT[t].put(x.p, i, (double)((i * 7 + n) % 17) - 8);
    q_outputs(q, n);
    for (r = 0; r < 3; r++) k[r]->quant[t][qkind](&o, n, x.p, 1, q[r] + PAD, 1, w.p, b.p, ub, &scale[r]);
    if (memcmp(&scale[0], &scale[1], sizeof *scale)) mismatch("scale of integers", 0, scale[1], scale[0], 0);
    for (i = 0; i < n; i++)
        if (q[0][PAD + i] != q[1][PAD + i])
            mismatch("q of integers", i, q_value(qkind, q[1] + PAD, i), q_value(qkind, q[0] + PAD, i), 0);
    check_q_scale(qkind, n, q, scale, -1, &b);
    arr_free(&x), arr_free(&w), arr_free(&b);
}

/* The scalar conversions against their definition: every finite float8_e4m3fn
 * value converts to itself, a value between two neighbours to the nearer, a
 * tie to the even code; beyond 448 (infinities too) saturates; NaN keeps its
 * sign.  int8: ties to even, saturation, NaN -> 0.  -> mismatches. */
static int check_conversions(void)
{
    int bad = 0, c;
    for (c = 0; c <= 0x7e; c++) {
        float v = (float)e4m3_value((unsigned char)c), mid;
        bad += rmsn_f32_to_e4m3(v) != c || rmsn_f32_to_e4m3(-v) != (c | 0x80);
        if (c == 0x7e) break;
        mid = (float)((e4m3_value((unsigned char)c) + e4m3_value((unsigned char)(c + 1))) / 2); /* exact */
        bad += rmsn_f32_to_e4m3(mid) != (c & 1 ? c + 1 : c);
        bad += rmsn_f32_to_e4m3(nextafterf(mid, 0)) != c;
        bad += rmsn_f32_to_e4m3(nextafterf(mid, INFINITY)) != c + 1;
    }
    bad += rmsn_f32_to_e4m3(464.0f) != 0x7e || rmsn_f32_to_e4m3(1e30f) != 0x7e;
    bad += rmsn_f32_to_e4m3(INFINITY) != 0x7e || rmsn_f32_to_e4m3(-INFINITY) != 0xfe;
    bad += rmsn_f32_to_e4m3(NAN) != 0x7f || rmsn_f32_to_e4m3(-NAN) != 0xff || rmsn_f32_to_e4m3(1e-40f) != 0;
    bad += rmsn_f32_to_i8(2.5f) != 2 || rmsn_f32_to_i8(-3.5f) != -4 || rmsn_f32_to_i8(126.5f) != 126;
    bad += rmsn_f32_to_i8(200.0f) != 127 || rmsn_f32_to_i8(-1e30f) != -128 || rmsn_f32_to_i8(NAN) != 0;
    if (bad) printf("  MISMATCH: %d conversions to float8_e4m3fn/int8 off their definition\n", bad);
    return bad;
}

/* ro = round(x + res), then ro -> q, scale: ro bitwise the add kernel's. */
static void check_quant_add(const rmsn_kernels *k[3], int t, int qkind, ptrdiff_t n, int kind, int wb)
{
    int acc = RMSN_ACC_DTYPE(t, t), r;
    arr x = input(t, n, kind), res = input(t, n, KIND_NORMAL), w, b, ro[3], add_ro = arr_new(t, n, 0),
        add_y = arr_new(t, n, 0);
    rmsn_opts o = case_opts(n_cases, 0);
    unsigned char *q[3];
    float scale[3];
    weight_bias(wb, acc, t, n, &w, &b);
    outputs(ro, t, n, 0);
    q_outputs(q, n);
    for (r = 0; r < 3; r++)
        k[r]->quant_add[t][qkind](&o, n, x.p, 1, res.p, 1, ro[r].p, 1, q[r] + PAD, 1, w.p, b.p, INFINITY, &scale[r]);
    k[0]->add[t][t](&o, n, x.p, 1, res.p, 1, add_ro.p, 1, add_y.p, 1, w.p, b.p, NULL);
    if (memcmp(add_ro.p, ro[0].p, (size_t)n * DT[t].size)) mismatch("ro (not the add kernel's)", 0, 0, 0, 0);
    arr_free(&add_ro), arr_free(&add_y);
    check_output("ro", ro, NULL);
    check_q_scale(qkind, n, q, scale, o.round_mid && DT[t].size == 2 ? t : -1, &b);
    arr_free(&x), arr_free(&res), arr_free(&w), arr_free(&b);
}

/* ---- the kernels of ops.h ------------------------------------------------- */

enum {
#define OP_CODE(OP, DIMS) OP_##OP,
    RMSN_FOR_EACH_OP(OP_CODE)
#undef OP_CODE
    NOPS
};
static const char *const OP_NAMES[NOPS] = {
#define OP_NAME(OP, DIMS) [OP_##OP] = #OP,
    RMSN_FOR_EACH_OP(OP_NAME)
#undef OP_NAME
};

/* Each op's check of one case (a slice length, an input kind, weight/bias). */
typedef void (*check_fn)(const rmsn_kernels *k[3], int tin, int tout, ptrdiff_t length, int kind, int wb);
static const check_fn CHECKS[NOPS] = {
    [OP_fwd] = check_fwd, [OP_fwd_cols] = check_fwd_cols, [OP_add] = check_add, [OP_bwd] = check_bwd,
    [OP_gated] = check_gated, [OP_gated_bwd] = check_gated_bwd,
    [OP_quant] = check_quant, [OP_quant_add] = check_quant_add};

/* The name columns of an entry; a scalar-only entry has the first only. */
enum { NCOLUMNS = 5 };
static const char *const COLUMNS[NCOLUMNS] = {"scalar", "avx2", "avx512", "avx512bf16", "neon"};

/* An output that is not a float dtype has a quant kind (RMSN_QK_<out>), the others -1. */
#define RMSN_QK_f16 -1
#define RMSN_QK_bf16 -1
#define RMSN_QK_f32 -1
#define RMSN_QK_f64 -1

typedef struct {
    int op, tin, tout, qkind;
    const char *out_name;
    size_t slot; /* where the entry's kernel is in rmsn_kernels */
    const char *names[NCOLUMNS];
} entry;

#define ENTRY_SCALAR(ARG, OP, TIN, TOUT, ACC, NAME)                                                            \
    {OP_##OP, RMSN_DT_##TIN, RMSN_DT_##TOUT, RMSN_QK_##TOUT, #TOUT, offsetof(rmsn_kernels, RMSN_SLOT_##OP(TIN, TOUT)), \
     {#NAME}},
#define ENTRY_SIMD(ARG, OP, TIN, TOUT, ACC, SCALAR, AVX2, AVX512, AVX512BF16, NEON) \
    {OP_##OP, RMSN_DT_##TIN, RMSN_DT_##TOUT, RMSN_QK_##TOUT, #TOUT, offsetof(rmsn_kernels, RMSN_SLOT_##OP(TIN, TOUT)), \
     {#SCALAR, #AVX2, #AVX512, #AVX512BF16, #NEON}},
static const entry ENTRIES[] = {RMSN_FOR_EACH_KERNEL(ENTRY_SCALAR, ENTRY_SIMD, ~)};
enum { NENTRIES = sizeof ENTRIES / sizeof *ENTRIES };

/* The names of ops.h are rmsn_<op>_<input>_<output>_<column>, bwd's
 * rmsn_bwd_<dtype>_<column> (a grep for a kernel's name finds its entry);
 * every op has a check.  -> entries at fault. */
static int check_entries(void)
{
    int e, c, bad = 0;
    char want[96];
    for (e = 0; e < NENTRIES; e++) {
        const entry *en = &ENTRIES[e];
        if (!CHECKS[en->op]) {
            printf("  ops.h: op %s has no check in check_kernels.c\n", OP_NAMES[en->op]);
            bad++;
        }
        for (c = 0; c < NCOLUMNS && en->names[c]; c++) {
            if (en->op == OP_bwd || en->op == OP_gated_bwd)
                snprintf(want, sizeof want, "rmsn_%s_%s_%s", OP_NAMES[en->op], DT[en->tin].name, COLUMNS[c]);
            else
                snprintf(want, sizeof want, "rmsn_%s_%s_%s_%s", OP_NAMES[en->op], DT[en->tin].name, en->out_name,
                         COLUMNS[c]);
            if (strcmp(en->names[c], want)) {
                printf("  ops.h: %s where %s was expected\n", en->names[c], want);
                bad++;
            }
        }
    }
    return bad;
}

/* ---- driver ---------------------------------------------------------------- */

static ptrdiff_t length(int j) { return j < NLENGTHS - 2 ? j + 1 : j < NLENGTHS - 1 ? FUSED_ROW : LONG_ROW; }

/* Every case of the kernels `tier` has of its own (the scalar tier: all, run
 * against itself for determinism and the guards); -> kernels checked. */
static int check_tier(const rmsn_kernels *scalar, const rmsn_kernels *tier)
{
    const rmsn_kernels *k[3] = {scalar, tier, tier};
    int own = tier->tier == RMSN_TIER_SCALAR, kernels = 0, e, j, kind, wb;
    for (e = 0; e < NENTRIES; e++) {
        const entry *en = &ENTRIES[e];
        if (!own && !memcmp((const char *)tier + en->slot, (const char *)scalar + en->slot, sizeof(rmsn_fwd_fn)))
            continue; /* the tier keeps the scalar kernel */
        kernels++;
        for (j = 0; j < NLENGTHS; j++)
            for (kind = 0; kind < NKINDS; kind++)
                for (wb = 0; wb < NWB; wb++) {
                    if (en->op == OP_bwd && wb == W_AND_B) continue; /* no bias in rms_norm's backward */
                    case_name[0] = 0;
                    describe("%s %s %s->%s n=%td %s %s", rmsn_tier_names[tier->tier], OP_NAMES[en->op],
                             DT[en->tin].name, en->out_name, length(j), KIND_NAMES[kind], WB_NAMES[wb]);
                    n_cases++;
                    CHECKS[en->op](k, en->tin, en->qkind >= 0 ? en->qkind : en->tout, length(j), kind, wb);
                }
    }
    return kernels;
}

int main(void)
{
    rmsn_kernels scalar, tier;
    int supported = rmsn_supported_tiers(), cpu = rmsn_cpu_features(), t, with_ext, base_cpu = 0, failed = 0;
    if (check_entries() || check_conversions()) return 1;
    rmsn_select_tier(&scalar, RMSN_TIER_SCALAR, cpu);
    for (t = 0; t < RMSN_NTIERS; t++) {
        if (!(rmsn_compiled_tiers() & (1 << t))) continue;
        if (!(supported & (1 << t))) {
            printf("%-7s skipped: compiled, but this CPU/OS cannot run it\n", rmsn_tier_names[t]);
            continue;
        }
        /* The tier alone, then with the extensions this CPU has (if any). */
        for (with_ext = 0; with_ext < 2; with_ext++) {
            long cases0 = n_cases, bad0 = n_bad, same0 = n_same_rstd;
            clock_t start = clock();
            int kernels;
            rmsn_select_tier(&tier, t, with_ext ? cpu : cpu & ~RMSN_CPU_AVX512BF16);
            if (with_ext && tier.cpu == base_cpu) break;
            base_cpu = tier.cpu;
            worst = 0;
            kernels = check_tier(&scalar, &tier);
            printf("%-7s%s %s: %d kernels, %ld cases, %ld mismatches; %ld outputs bitwise (same rstd), the rest at "
                   "most %.3f of the bound; %.1f s CPU\n",
                   rmsn_tier_names[t], with_ext ? " + extensions" : "", n_bad > bad0 ? "FAIL" : "ok", kernels,
                   n_cases - cases0, n_bad - bad0, n_same_rstd - same0, worst,
                   (double)(clock() - start) / CLOCKS_PER_SEC);
            failed |= n_bad > bad0;
        }
    }
    return failed;
}
