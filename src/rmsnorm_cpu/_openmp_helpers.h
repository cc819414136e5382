/* OpenMP entry points that also exist in a build without OpenMP (serial). */
#ifndef RMSN_OPENMP_HELPERS_H
#define RMSN_OPENMP_HELPERS_H
#ifdef _OPENMP
#include <omp.h>
#define RMSN_OPENMP 1
#else
#define RMSN_OPENMP 0
static inline int omp_get_max_threads(void) { return 1; }
static inline int omp_get_num_threads(void) { return 1; }
#endif
#endif
