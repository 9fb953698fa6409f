/* winograd: 3x3 stride-1 convolutions (groups 1, dilation 1, padding 0..2)
 * by Winograd's minimal filtering F(4x4,3x3) (Lavin & Gray 2016): each 4x4
 * output tile costs 36 multiplications per (output, input) channel pair
 * instead of 144. Forward: U = G w G^T (6x6 per channel pair), V = B^T d B
 * (6x6 per input tile), M = U V as 36 GEMMs (one per tile position e:
 * (OC,C) x (C,tiles)), y = A^T M A. The gradients are the adjoints of the
 * same computation: Z = A dy A^T, dV = U^T Z and dx += B dV B^T (overlapping
 * tiles adding), dU = Z V^T and dw += G^T dU G. In float32 the results are
 * within a few 1e-6 of the exact convolution, relative to the output's
 * scale (tests/unit/winograd.c reports the figures).
 *
 * conv2d_forward and conv2d_backward (conv.h) dispatch here when
 * wino_pays(); these functions are public for tests and benchmarks. Backward
 * ACCUMULATES (+=) into dinp and dw; a NULL one is skipped. The bias
 * gradient is conv.c's. */
#ifndef VL_NN_WINOGRAD_H
#define VL_NN_WINOGRAD_H

#include "conv.h"

/* Nonzero if s is a convolution these functions compute: 3x3, stride 1,
 * dilation 1, groups 1, padding 0..2. */
int wino_supported(const conv_shape *s);
/* Nonzero if s at batch B is supported and Winograd is the faster path: at
 * least 16 input and output channels, a map whose 4x4 tiles do not overhang
 * it by much, and tiles enough over the batch to pay for transforming the
 * weights. */
int wino_pays(const conv_shape *s, int B);

/* out (B,OC,OH,OW), inp (B,C,H,W), w (OC,C,3,3), b (OC) or NULL */
void wino_forward(float *out, const float *inp, const float *w, const float *b, int B, const conv_shape *s);
/* dinp (B,C,H,W) or NULL, dw (OC,C,3,3) or NULL; dout (B,OC,OH,OW),
 * inp (read only when dw is wanted), w (read only when dinp is wanted) */
void wino_backward(float *dinp, float *dw, const float *dout, const float *inp, const float *w, int B,
                   const conv_shape *s);
/* The same, but dinp is overwritten (no pass to zero it first); dw is still
 * accumulated. */
void wino_backward_set(float *dinp, float *dw, const float *dout, const float *inp, const float *w, int B,
                       const conv_shape *s);

/* Bytes of workspace a call for s at batch B holds (the transformed weights
 * and one chunk of transformed tiles), for reports. */
size_t wino_workspace_bytes(const conv_shape *s, int B);

#endif
