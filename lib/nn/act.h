/* act: elementwise activations of the transformers: GELU (exact, erf) and
 * QuickGELU x*sigmoid(1.702x) (OpenAI CLIP). Backward accumulates:
 * dinp += f'(inp) * dout. Runs of 4096 elements go side by side on the
 * thread pool (lib/par.h): the same bytes on any thread count. */
#ifndef VL_NN_ACT_H
#define VL_NN_ACT_H

#include <stddef.h>

void gelu_forward(float *out, const float *inp, size_t n);
void gelu_backward(float *dinp, const float *dout, const float *inp, size_t n);
void quickgelu_forward(float *out, const float *inp, size_t n);
void quickgelu_backward(float *dinp, const float *dout, const float *inp, size_t n);

#endif
