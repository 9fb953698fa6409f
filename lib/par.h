/* par: the library's one thread pool. It runs the non-GEMM parts of the
 * engine (im2col, BatchNorm, ReLU, pooling, copies) and the pieces of large
 * GEMMs (blas_sgemm splits them here; OpenBLAS itself runs single-threaded),
 * so no second pool busy-waits beside it. The workers are started on first
 * use and sleep on a condition variable between calls: a call costs a
 * wake-up, not a thread start. The thread count is par_threads(); the pool
 * depends on nothing else in the library (blas.c splits GEMMs over it).
 * Work is split on fixed boundaries (channels, images, 4096-element runs,
 * GEMM column blocks) and each element is computed the same way whatever the
 * split, so results do not depend on the thread count. */
#ifndef VL_PAR_H
#define VL_PAR_H

#include <stddef.h>

/* Calls fn(ctx, lo, hi) over disjoint ranges covering [0, n), ranges on the
 * pool's threads and the first on the calling thread, and returns when all
 * are done. `work` is the total work in elements touched: below a threshold,
 * or with one thread, the call is fn(ctx, 0, n) on the calling thread. So is
 * a nested call (fn itself calling par_for or blas_sgemm) and a call made
 * while another thread has the pool: these never wait for the pool, so they
 * cannot deadlock. fn must not depend on which range it is given beyond
 * computing the elements in it. */
void par_for(int n, size_t work, void (*fn)(void *ctx, int lo, int hi), void *ctx);

/* Nonzero while the calling thread runs inside a par_for call (as the caller
 * or as a worker): work started now would run on this thread only. */
int par_busy(void);

/* The library's thread count (blas_set_threads and blas_get_threads are the
 * same setting). By default what OpenBLAS itself would take:
 * OPENBLAS_NUM_THREADS, else GOTO_NUM_THREADS, else OMP_NUM_THREADS, else
 * the online cores, and never more than those cores. n <= 0 keeps it. */
void par_set_threads(int n);
int par_threads(void);

#endif
