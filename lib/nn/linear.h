/* linear: fully connected layer, out = inp W^T + b (PyTorch nn.Linear layout).
 * Backward functions ACCUMULATE (+=) into every gradient they are given; a
 * NULL gradient pointer means "not wanted" (frozen) and its work is skipped. */
#ifndef VL_NN_LINEAR_H
#define VL_NN_LINEAR_H

/* out (N,OC), inp (N,C), w (OC,C), b (OC) or NULL */
void linear_forward(float *out, const float *inp, const float *w, const float *b, int N, int C, int OC);
void linear_forward_ref(float *out, const float *inp, const float *w, const float *b, int N, int C, int OC);
/* dinp (N,C), dw (OC,C), db (OC); dout (N,OC), inp (N,C), w (OC,C) */
void linear_backward(float *dinp, float *dw, float *db, const float *dout, const float *inp, const float *w, int N,
                     int C, int OC);
/* The same, but dinp is set (the GEMM's beta 0), not added to: no pass to
 * zero it first; dw and db still accumulate. */
void linear_backward_set(float *dinp, float *dw, float *db, const float *dout, const float *inp, const float *w,
                         int N, int C, int OC);
void linear_backward_ref(float *dinp, float *dw, float *db, const float *dout, const float *inp, const float *w,
                         int N, int C, int OC);

#endif
