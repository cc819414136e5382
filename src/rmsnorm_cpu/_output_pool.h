/* A NumPy memory handler (NEP 49) for the large outputs the library
 * allocates: a freed output's buffer waits in one of a few slots and the next
 * output of the same byte size reuses it, with its pages still in memory.
 * Outputs of 32 MiB and more come from a fresh mapping at every call
 * otherwise (glibc maps them anew, and gives smaller ones back to the system
 * after frees of a few of them), and faulting pages in costs as much as the
 * whole normalization ((2048, 4096) float32 into a new array: 7.4 ms, into
 * pages in memory 3.2 ms).
 *
 * The arrays own their data as any other (base None, OWNDATA); only the
 * handler they carry differs.  Every buffer comes from NumPy's default
 * handler, and whatever the slots do not keep goes back to it, so calloc and
 * realloc are the default's.  At most RMSN_POOL_SLOTS buffers of
 * RMSN_POOL_MIN..RMSN_POOL_MAX bytes are kept, the most recently freed (so a
 * workload whose shapes change does not pin old ones).  The slots change by
 * atomic exchanges: arrays die on any thread.  Without GCC atomics (MSVC)
 * there is no pool. */
#ifndef RMSN_OUTPUT_POOL_H
#define RMSN_OUTPUT_POOL_H

#include <Python.h>
#include <numpy/arrayobject.h>

#define RMSN_POOL_SLOTS 4
#define RMSN_POOL_MIN ((size_t)4 << 20)
#define RMSN_POOL_MAX ((size_t)64 << 20)

#if defined(__GNUC__)
#define RMSN_POOL 1
#else
#define RMSN_POOL 0
#endif

/* Each slot: NULL, or a free buffer whose first size_t holds its size. */
static void *rmsn_pool_slots[RMSN_POOL_SLOTS];
static unsigned rmsn_pool_next; /* the slot the next eviction takes */
static PyDataMemAllocator rmsn_pool_default;

#if RMSN_POOL
static void *rmsn_pool_take(void **slot) { return __atomic_exchange_n(slot, NULL, __ATOMIC_ACQ_REL); }
static int rmsn_pool_put(void **slot, void *p)
{
    void *empty = NULL;
    return __atomic_compare_exchange_n(slot, &empty, p, 0, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE);
}

static void *rmsn_pool_malloc(void *ctx, size_t size)
{
    int i;
    (void)ctx;
    if (size >= RMSN_POOL_MIN && size <= RMSN_POOL_MAX)
        for (i = 0; i < RMSN_POOL_SLOTS; i++) {
            void *p = rmsn_pool_take(&rmsn_pool_slots[i]);
            if (p == NULL) continue;
            if (*(size_t *)p == size) return p;
            if (!rmsn_pool_put(&rmsn_pool_slots[i], p)) /* the slot was refilled meanwhile */
                rmsn_pool_default.free(rmsn_pool_default.ctx, p, *(size_t *)p);
        }
    return rmsn_pool_default.malloc(rmsn_pool_default.ctx, size);
}

static void rmsn_pool_free(void *ctx, void *p, size_t size)
{
    int i;
    (void)ctx;
    if (p != NULL && size >= RMSN_POOL_MIN && size <= RMSN_POOL_MAX) {
        *(size_t *)p = size;
        for (i = 0; i < RMSN_POOL_SLOTS; i++)
            if (rmsn_pool_put(&rmsn_pool_slots[i], p)) return;
        /* All full: p replaces the buffer of the slot whose turn it is. */
        i = (int)(__atomic_fetch_add(&rmsn_pool_next, 1u, __ATOMIC_RELAXED) % RMSN_POOL_SLOTS);
        p = __atomic_exchange_n(&rmsn_pool_slots[i], p, __ATOMIC_ACQ_REL);
        if (p == NULL) return;
        size = *(size_t *)p;
    }
    rmsn_pool_default.free(rmsn_pool_default.ctx, p, size);
}

static void *rmsn_pool_calloc(void *ctx, size_t nelem, size_t elsize)
{
    (void)ctx;
    return rmsn_pool_default.calloc(rmsn_pool_default.ctx, nelem, elsize);
}

static void *rmsn_pool_realloc(void *ctx, void *p, size_t size)
{
    (void)ctx;
    return rmsn_pool_default.realloc(rmsn_pool_default.ctx, p, size);
}

static PyDataMem_Handler rmsn_pool_handler = {
    "rmsnorm_cpu_output_pool", 1, {NULL, rmsn_pool_malloc, rmsn_pool_calloc, rmsn_pool_realloc, rmsn_pool_free}};
#endif

/* The handler as the capsule PyDataMem_SetHandler takes (a new reference),
 * or None where there is no pool; call after import_array. */
static PyObject *rmsn_output_pool_handler(void)
{
#if RMSN_POOL
    PyDataMem_Handler *def = (PyDataMem_Handler *)PyCapsule_GetPointer(PyDataMem_DefaultHandler, "mem_handler");
    if (def == NULL) return NULL;
    rmsn_pool_default = def->allocator;
    return PyCapsule_New(&rmsn_pool_handler, "mem_handler", NULL);
#else
    Py_RETURN_NONE;
#endif
}

/* Buffers the slots hold now (for tests and config). */
static int rmsn_output_pool_held(void)
{
    int i, n = 0;
    for (i = 0; i < RMSN_POOL_SLOTS; i++) n += rmsn_pool_slots[i] != NULL;
    return n;
}

#endif
