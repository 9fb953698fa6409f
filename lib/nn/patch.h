/* patch: the patch embedding of a vision transformer, a convolution whose
 * stride equals its kernel, computed as an unfold of each image into patch
 * rows followed by one sgemm over the whole batch. Backward accumulates (+=);
 * NULL gradients are skipped. */
#ifndef VL_NN_PATCH_H
#define VL_NN_PATCH_H

/* out (B,NP,OC) with NP = (H/P)*(W/P) patches in row-major grid order (the
 * conv output flattened and transposed, as ViTs use it); inp (B,IC,H,W);
 * w (OC,IC,P,P); b (OC) or NULL. Pixels beyond the last whole patch are
 * ignored, as by a stride-P convolution. */
void patch_forward(float *out, const float *inp, const float *w, const float *b, int B, int IC, int H, int W, int OC,
                   int P);
void patch_forward_ref(float *out, const float *inp, const float *w, const float *b, int B, int IC, int H, int W,
                       int OC, int P);
/* dinp (B,IC,H,W), dw (OC,IC,P,P), db (OC); dout (B,NP,OC), inp, w as in forward */
void patch_backward(float *dinp, float *dw, float *db, const float *dout, const float *inp, const float *w, int B,
                    int IC, int H, int W, int OC, int P);

#endif
