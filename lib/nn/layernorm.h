/* layernorm: normalisation over the last dimension (PyTorch nn.LayerNorm).
 * Backward accumulates (+=); NULL gradients are skipped. Rows (and for the
 * weight and bias gradients, column blocks summing the rows in order) go
 * side by side on the thread pool: the same bytes on any thread count. */
#ifndef VL_NN_LAYERNORM_H
#define VL_NN_LAYERNORM_H

/* out (N,C), mean (N) and rstd (N) saved for backward (may be NULL when no
 * backward follows), inp (N,C), w (C), b (C) */
void layernorm_forward(float *out, float *mean, float *rstd, const float *inp, const float *w, const float *b, int N,
                       int C, float eps);
void layernorm_forward_ref(float *out, float *mean, float *rstd, const float *inp, const float *w, const float *b,
                           int N, int C, float eps);
/* dinp (N,C), dw (C), db (C); dout (N,C), inp (N,C), w (C), mean, rstd (N) */
void layernorm_backward(float *dinp, float *dw, float *db, const float *dout, const float *inp, const float *w,
                        const float *mean, const float *rstd, int N, int C);

#endif
