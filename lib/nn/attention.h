/* attention: multi-head scaled dot-product self-attention on packed q|k|v
 * rows (timm's qkv layout; HF CLIP's separate q/k/v projections are packed the
 * same way by the model loader). Backward accumulates into dqkv. */
#ifndef VL_NN_ATTENTION_H
#define VL_NN_ATTENTION_H

/* out (B,T,C), att (B,NH,T,T) softmax probabilities kept for backward (or
 * NULL when no backward follows), qkv (B,T,3C) with q = [0,C), k = [C,2C),
 * v = [2C,3C) of each row; head h uses columns [h*C/NH, (h+1)*C/NH) of each;
 * causal: token t sees tokens <= t. The (batch, head) pairs are shared out
 * over blas_get_threads() threads, forward and backward. */
void attention_forward(float *out, float *att, const float *qkv, int B, int T, int C, int NH, int causal);
void attention_forward_ref(float *out, float *att, const float *qkv, int B, int T, int C, int NH, int causal);
/* dqkv (B,T,3C); dout (B,T,C), qkv and att as saved by the forward pass */
void attention_backward(float *dqkv, const float *dout, const float *qkv, const float *att, int B, int T, int C,
                        int NH);

#endif
