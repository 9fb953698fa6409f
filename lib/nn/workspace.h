/* workspace: the convolution paths' scratch memory, one grow-only buffer
 * per thread shared by im2col (conv.c) and Winograd (winograd.c): a call
 * takes one path or the other, so the two never need it at once. Its
 * contents do not survive the next nn_workspace call on the same thread. */
#ifndef VL_NN_WORKSPACE_H
#define VL_NN_WORKSPACE_H

#include <stddef.h>

/* At least n floats, 64-byte aligned, for the calling thread. */
float *nn_workspace(size_t n);
/* Frees the calling thread's buffer. */
void nn_workspace_release(void);

#endif
