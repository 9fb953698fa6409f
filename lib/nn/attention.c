/* attention: multi-head self-attention on packed qkv rows. The fast path runs
 * two sgemms per (batch, head) - Q K^T and att V - straight on the strided
 * columns of qkv (no repacking) with the softmax done in place between them. */
#include "nn/attention.h"

#include "blas.h"
#include "util.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Row-wise softmax of a (T,T) score block; causal rows see columns <= t and
 * the rest is set to 0 so backward needs no mask. */
static void softmax_rows(float *a, int T, int causal)
{
    for (int t = 0; t < T; t++) {
        float *r = a + (size_t)t * T;
        int n = causal ? t + 1 : T;
        float mx = r[0];
        for (int j = 1; j < n; j++)
            if (r[j] > mx) mx = r[j];
        float s = 0;
        for (int j = 0; j < n; j++) {
            r[j] = expf(r[j] - mx);
            s += r[j];
        }
        float inv = 1.0f / s;
        for (int j = 0; j < n; j++) r[j] *= inv;
        for (int j = n; j < T; j++) r[j] = 0;
    }
}

// out (B,T,C), att (B,NH,T,T) or NULL (inference: a per-head scratch is used), qkv (B,T,3C)
void attention_forward(float *out, float *att, const float *qkv, int B, int T, int C, int NH, int causal)
{
    int hs = C / NH, C3 = 3 * C;
    float scale = 1.0f / sqrtf((float)hs);
    float *scratch = att ? NULL : xmalloc_aligned((size_t)T * T * sizeof(float));
    for (int b = 0; b < B; b++)
        for (int h = 0; h < NH; h++) {
            const float *q = qkv + (size_t)b * T * C3 + h * hs;
            const float *k = q + C, *v = q + 2 * C;
            float *a = att ? att + ((size_t)b * NH + h) * T * T : scratch;
            blas_sgemm(0, 1, T, T, hs, scale, q, C3, k, C3, 0, a, T);
            softmax_rows(a, T, causal);
            blas_sgemm(0, 0, T, hs, T, 1, a, T, v, C3, 0, out + (size_t)b * T * C + h * hs, C);
        }
    free(scratch);
}

void attention_forward_ref(float *out, float *att, const float *qkv, int B, int T, int C, int NH, int causal)
{
    int hs = C / NH, C3 = 3 * C;
    double scale = 1.0 / sqrt((double)hs);
    double *p = xmalloc((size_t)T * sizeof(double));
    for (int b = 0; b < B; b++)
        for (int h = 0; h < NH; h++)
            for (int t = 0; t < T; t++) {
                const float *q = qkv + ((size_t)b * T + t) * C3 + h * hs;
                int n = causal ? t + 1 : T;
                double mx = -INFINITY, sum = 0;
                for (int j = 0; j < n; j++) {
                    const float *k = qkv + ((size_t)b * T + j) * C3 + C + h * hs;
                    double s = 0;
                    for (int i = 0; i < hs; i++) s += (double)q[i] * k[i];
                    p[j] = s * scale;
                    if (p[j] > mx) mx = p[j];
                }
                for (int j = 0; j < n; j++) {
                    p[j] = exp(p[j] - mx);
                    sum += p[j];
                }
                for (int j = 0; j < T; j++) p[j] = j < n ? p[j] / sum : 0;
                if (att)
                    for (int j = 0; j < T; j++) att[(((size_t)b * NH + h) * T + t) * T + j] = (float)p[j];
                float *o = out + ((size_t)b * T + t) * C + h * hs;
                for (int i = 0; i < hs; i++) {
                    double s = 0;
                    for (int j = 0; j < n; j++) s += p[j] * qkv[((size_t)b * T + j) * C3 + 2 * C + h * hs + i];
                    o[i] = (float)s;
                }
            }
    free(p);
}

// dqkv (B,T,3C); dout (B,T,C), qkv (B,T,3C), att (B,NH,T,T)
void attention_backward(float *dqkv, const float *dout, const float *qkv, const float *att, int B, int T, int C,
                        int NH)
{
    int hs = C / NH, C3 = 3 * C;
    float scale = 1.0f / sqrtf((float)hs);
    float *da = xmalloc_aligned((size_t)T * T * sizeof(float));
    for (int b = 0; b < B; b++)
        for (int h = 0; h < NH; h++) {
            size_t off = (size_t)b * T * C3 + h * hs;
            const float *q = qkv + off, *k = q + C, *v = q + 2 * C;
            float *dq = dqkv + off, *dk = dq + C, *dv = dq + 2 * C;
            const float *a = att + ((size_t)b * NH + h) * T * T;
            const float *dy = dout + (size_t)b * T * C + h * hs;
            /* dv += a^T dy; da = dy v^T */
            blas_sgemm(1, 0, T, hs, T, 1, a, T, dy, C, 1, dv, C3);
            blas_sgemm(0, 1, T, T, hs, 1, dy, C, v, C3, 0, da, T);
            /* softmax backward in place: ds = a * (da - sum(a * da)); masked a = 0 */
            for (int t = 0; t < T; t++) {
                const float *ar = a + (size_t)t * T;
                float *dr = da + (size_t)t * T;
                float s = 0;
                for (int j = 0; j < T; j++) s += ar[j] * dr[j];
                for (int j = 0; j < T; j++) dr[j] = ar[j] * (dr[j] - s);
            }
            /* dq += scale ds k; dk += scale ds^T q */
            blas_sgemm(0, 0, T, hs, T, scale, da, T, k, C3, 1, dq, C3);
            blas_sgemm(1, 0, T, hs, T, scale, da, T, q, C3, 1, dk, C3);
        }
    free(da);
}
