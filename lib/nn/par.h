/* par: the single-threaded parts of the convolutional engine (im2col,
 * BatchNorm, ReLU, pooling, copies) spread over the threads OpenBLAS uses,
 * with plain pthreads (one threading model: no second busy-waiting pool).
 * Work is split on fixed boundaries (channels, images, 4096-element runs) and
 * each element is computed the same way whatever the split, so results do not
 * depend on the thread count. */
#ifndef VL_NN_PAR_H
#define VL_NN_PAR_H

#include <stddef.h>

/* Calls fn(ctx, lo, hi) over disjoint ranges covering [0, n). `work` is the
 * total work in elements touched: below a threshold, or with one thread, the
 * call is fn(ctx, 0, n) on the calling thread. */
void par_for(int n, size_t work, void (*fn)(void *ctx, int lo, int hi), void *ctx);

#endif
