# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""The runtime: which kernel tier runs, on how many threads, with which stores.

Owns the kernel table (``set_isa``, ``build_info``) and the thread policy
that every op's units run under (``run_units``, declared in ``_runtime.pxd``
for ``_core`` and ``_gufunc``).

Thread policy (README "Threads"): up to SERIAL_MAX_WORK elements a call runs
on the calling thread without a parallel region.  Otherwise it uses the OpenMP
default read at call time (so OMP_NUM_THREADS and threadpoolctl limits
apply), capped by the CPUs the process may use (affinity, cgroup quota: see
``_cpus``) and by ``n_threads``.  One team at a time: a call that finds
another Python thread's team running runs serially instead of
oversubscribing.  A process forked after this one opened a team runs serially
(libgomp's pool does not survive fork and would deadlock).
"""
import os
import time

from . import _cpus

from cython.parallel cimport parallel, prange

cdef extern from "_openmp_helpers.h" nogil:
    int omp_get_max_threads()
    int omp_get_num_threads()
    enum: RMSN_OPENMP

cdef extern from *:
    """
    #if defined(__clang__)
    #define RMSN_COMPILER "clang " __clang_version__
    #elif defined(__GNUC__)
    #define RMSN_COMPILER "gcc " __VERSION__
    #else
    #define RMSN_COMPILER "unknown"
    #endif
    """
    const char *RMSN_COMPILER

cdef enum:
    # Calls of at most this many elements run on the calling thread without
    # opening a parallel region: decode shapes up to (32, 4096) must not pay
    # for a team (calibrated with bench/bench_threads.py).
    SERIAL_MAX_WORK = 32 * 4096
    # The store policy (docs/kernels.md): non-temporal stores may be used
    # only for outputs whose pages are in memory already (the caller's out=,
    # or memory the allocator handed out again; into pages the stores fault
    # in they cost twice plain ones), when the call's operands take at least STREAM_FROM bytes
    # (a last-level cache: a cached output would only evict the call's own
    # input), and when each slice's output is a run of at least
    # STREAM_MIN_RUN bytes (shorter runs pay the partial cache lines at both
    # ends: rows of 1 KiB ran 1.5x slower streamed, rows of 4 KiB and more
    # 0.8x; shorter rows that follow each other stream as one run per block,
    # without taking part in the trials: streaming_chosen).  Whether they win
    # at all depends on the machine, so the first STREAM_TRIALS eligible calls
    # of a process alternate both kinds of stores and the faster per byte is
    # kept (the bits are the same).
    STREAM_FROM = 32 << 20
    STREAM_MIN_RUN = 4096
    STREAM_TRIALS = 6


cdef rmsn_kernels KERNELS


cdef const rmsn_kernels *active_kernels() noexcept nogil:
    """The kernel table of the tier in use (for other Cython modules)."""
    return &KERNELS

TIER_NAMES = tuple(rmsn_tier_names[i].decode() for i in range(RMSN_NTIERS))


def _tier_set(int bits):
    return [TIER_NAMES[i] for i in range(RMSN_NTIERS) if bits & (1 << i)]


# Extensions of a tier the CPU may have, by the name config() reports.
EXTENSIONS = {"avx512_bf16": RMSN_CPU_AVX512BF16}


def set_isa(name=None, extensions=True):
    """Select the kernel tier (None: the best this CPU runs); return the previous one.

    The tier's extensions the CPU has are used too (AVX512-BF16: bfloat16
    rounded by VCVTNEPS2BF16, same bits) unless ``extensions`` is False (tests).
    Raises RuntimeError naming the valid choices for an unknown tier, one this
    build did not compile, or one this CPU/OS cannot run.
    """
    cdef int cpu = rmsn_cpu_features()
    previous = TIER_NAMES[KERNELS.tier]
    supported = rmsn_supported_tiers()
    if name is None or name == "":
        tier = max(i for i in range(RMSN_NTIERS) if supported & (1 << i))
    else:
        name = str(name).strip().lower()
        if name not in TIER_NAMES:
            raise RuntimeError(
                f"RMSNORM_CPU_ISA={name!r} is not a tier; valid choices: {', '.join(TIER_NAMES)}")
        tier = TIER_NAMES.index(name)
        if not rmsn_compiled_tiers() & (1 << tier):
            raise RuntimeError(
                f"ISA tier {name!r} is not compiled into this build; compiled: "
                f"{', '.join(_tier_set(rmsn_compiled_tiers()))}")
        if not supported & (1 << tier):
            raise RuntimeError(
                f"this CPU/OS cannot run ISA tier {name!r}; it supports: "
                f"{', '.join(_tier_set(supported))}")
    if not extensions:
        for bit in EXTENSIONS.values():
            cpu &= ~bit
    rmsn_select_tier(&KERNELS, tier, cpu)
    return previous


def build_info():
    """What was compiled and what this CPU runs (for rmsnorm_cpu.config())."""
    return {
        "isa": TIER_NAMES[KERNELS.tier],
        "isa_compiled": _tier_set(rmsn_compiled_tiers()),
        "isa_supported": _tier_set(rmsn_supported_tiers()),
        "isa_extensions": [name for name, bit in EXTENSIONS.items() if KERNELS.cpu & bit],
        "openmp": bool(RMSN_OPENMP),
        "n_threads_default": max(1, min(omp_get_max_threads(), _cpus.available_cpus())) if RMSN_OPENMP else 1,
        "compiler": RMSN_COMPILER.decode(),
        "stream_stores": stream_state(),
    }


cdef Py_ssize_t serial_max_work = SERIAL_MAX_WORK
cdef bint team_busy = False       # a call holds an OpenMP team (guarded by the GIL)
cdef bint team_opened = False     # this process has opened a team
cdef bint serial_after_fork = False


def _after_fork_in_child():
    global serial_after_fork, team_busy
    serial_after_fork = serial_after_fork or team_opened
    team_busy = False
    _cpus.refresh()


os.register_at_fork(after_in_child=_after_fork_in_child)


cdef Py_ssize_t stream_from = STREAM_FROM
cdef Py_ssize_t stream_min_run = STREAM_MIN_RUN


cdef int stream_trials = 0          # eligible calls timed so far
cdef double stream_trial_best[2]   # fastest seconds per operand byte: [plain, streamed]
cdef int stream_choice = -1        # -1: still trying; 0: plain stores; 1: non-temporal


cdef bint may_stream(Py_ssize_t operand_bytes, Py_ssize_t run_bytes) noexcept:
    """Whether a call of these sizes may stream its outputs (see STREAM_FROM);
    the caller adds what it knows of the outputs (_core._may_stream), and
    run_units then decides whether it does."""
    return operand_bytes >= stream_from and run_bytes >= stream_min_run


cdef bint streaming_chosen() noexcept:
    """Whether the trials chose non-temporal stores (for calls that stream
    only then and take no part in the trials)."""
    return stream_choice == 1


def _set_store_policy(Py_ssize_t from_bytes, Py_ssize_t min_run_bytes, int choice=-1):
    """Set the streaming thresholds and choice (-1: try both again); return
    the previous thresholds and choice (bench, tests)."""
    global stream_from, stream_min_run, stream_choice, stream_trials
    previous = stream_from, stream_min_run, stream_choice
    stream_from, stream_min_run, stream_choice, stream_trials = from_bytes, min_run_bytes, choice, 0
    return previous


def stream_state():
    """The store policy's state for config(): "trying", "non-temporal" or "plain"."""
    return ("trying", "plain", "non-temporal")[stream_choice + 1]


def short_path_max():
    """Elements a short-path call may have (it runs on the calling thread)."""
    return serial_max_work


cdef Py_ssize_t serial_work() noexcept:
    """short_path_max for Cython callers."""
    return serial_max_work


def _set_serial_max_work(Py_ssize_t n):
    """Set the serial threshold in elements; return the previous (bench/bench_threads.py)."""
    global serial_max_work
    previous, serial_max_work = serial_max_work, n
    return previous


cdef int _n_threads(object n_threads, Py_ssize_t work) except -1:
    """Threads for one call of `work` elements (see the module docstring)."""
    cdef int nt
    if not RMSN_OPENMP or work <= serial_max_work or serial_after_fork or team_busy:
        return 1
    nt = max(1, min(omp_get_max_threads(), _cpus.available_cpus()))
    if n_threads is not None and n_threads < nt:  # compared as Python ints: no overflow
        nt = n_threads
    return nt


cdef int run_units(unit_fn fn, const void *ctx, Py_ssize_t nunits, object n_threads, Py_ssize_t work,
                   rmsn_opts *opts, Py_ssize_t operand_bytes) except -1:
    """fn(ctx, u) for every u < nunits, GIL released, on the policy's thread
    count.  A call that may stream (opts.stream) streams by the process's
    choice, or, while that is being made, is one of its timed trials."""
    global stream_trials, stream_choice
    cdef double t0
    cdef int trial = opts != NULL and opts.stream and stream_choice < 0
    if opts != NULL and opts.stream and not trial:
        opts.stream = stream_choice
    if not trial:
        return _run_units_now(fn, ctx, nunits, n_threads, work)
    opts.stream = stream_trials % 2
    t0 = time.perf_counter()
    _run_units_now(fn, ctx, nunits, n_threads, work)
    t0 = (time.perf_counter() - t0) / operand_bytes
    if stream_trials < 2 or t0 < stream_trial_best[opts.stream]:
        stream_trial_best[opts.stream] = t0
    stream_trials += 1
    if stream_trials >= STREAM_TRIALS:
        stream_choice = stream_trial_best[1] < stream_trial_best[0]
    return 0


cdef int _run_units_now(unit_fn fn, const void *ctx, Py_ssize_t nunits, object n_threads, Py_ssize_t work) except -1:
    global team_busy, team_opened
    cdef Py_ssize_t u
    cdef int nt = _n_threads(n_threads, work)
    if nt == 1 or nunits == 1:
        with nogil:
            for u in range(nunits):
                fn(ctx, u)
            rmsn_stream_fence()
        return 0
    team_busy = team_opened = True
    try:
        with nogil, parallel(num_threads=nt):
            for u in prange(nunits, schedule="static"):
                fn(ctx, u)
            rmsn_stream_fence()  # each thread orders its own streamed stores
    finally:
        team_busy = False
    return 0


cdef void _team_size_unit(const void *ctx, Py_ssize_t u) noexcept nogil:
    (<int*>ctx)[0] = omp_get_num_threads()


def team_size(n_threads=None, Py_ssize_t work=1 << 30):
    """Threads an OpenMP team really has for a call of `work` elements (tests, bench)."""
    cdef int size = 1
    run_units(_team_size_unit, &size, 64, n_threads, work, NULL, 0)
    return size


set_isa(os.environ.get("RMSNORM_CPU_ISA"))
