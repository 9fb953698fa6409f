/* relu: ReLU and ReLU6 (MobileNetV2). Forward may work in place; backward
 * reads the forward's OUTPUT (so the input need not be kept) and
 * ACCUMULATES: dinp += dout where the unit was active. */
#ifndef VL_NN_RELU_H
#define VL_NN_RELU_H

#include <stddef.h>

void relu_forward(float *out, const float *inp, size_t n);
/* dinp (n) += dout (n) where out > 0 */
void relu_backward(float *dinp, const float *dout, const float *out, size_t n);
/* Same, but dinp = dout * mask in place (dinp may equal dout): no zeroing pass. */
void relu_backward_set(float *dinp, const float *dout, const float *out, size_t n);
void relu6_forward(float *out, const float *inp, size_t n);
/* dinp += dout where 0 < out < 6 */
void relu6_backward(float *dinp, const float *dout, const float *out, size_t n);
/* dinp = dout where 0 < out < 6, else 0 (dinp may equal dout) */
void relu6_backward_set(float *dinp, const float *dout, const float *out, size_t n);

#endif
