/* loss: softmax cross-entropy and the method's cosine distillation loss
 *   L = -(1/B) sum_i [ lambda cos(Z_i, It_i) + (1 - lambda) cos(Z_i, T[y_i]) ].
 * Forward functions return the mean loss over the batch; backward functions
 * ACCUMULATE dloss * dL/dinput into the given gradient. */
#ifndef VL_NN_LOSS_H
#define VL_NN_LOSS_H

/* probs (B,C) saved for backward (may be NULL), logits (B,C), y (B) in [0,C) */
float crossentropy_forward(float *probs, const float *logits, const int *y, int B, int C);
/* dlogits (B,C) += dloss * (probs - onehot(y)) / B */
void crossentropy_backward(float *dlogits, const float *probs, const int *y, int B, int C, float dloss);

/* cos1 (B) cos(Z_i, It_i) and cos2 (B) cos(Z_i, T[y_i]) (either may be NULL);
 * z (B,D), it (B,D) (NULL when lambda == 0), t (NC,D) and y (B) (NULL when
 * lambda == 1). Rows need not be unit length; norms are clamped below at 1e-8
 * as in torch.nn.functional.cosine_similarity. */
float cosloss_forward(float *cos1, float *cos2, const float *z, const float *it, const float *t, const int *y, int B,
                      int D, float lambda);
/* dz (B,D) += dloss * dL/dz, with dcos(z,u)/dz = (u/|u| - cos * z/|z|) / |z| */
void cosloss_backward(float *dz, const float *z, const float *it, const float *t, const int *y, int B, int D,
                      float lambda, float dloss);

#endif
