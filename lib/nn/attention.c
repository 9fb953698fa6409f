/* attention: multi-head self-attention on packed qkv rows. The fast path runs
 * two sgemms per (batch, head) - Q K^T and att V - straight on the strided
 * columns of qkv (no repacking) with the softmax done in place between them. */
#include "nn/attention.h"

#include "blas.h"
#include "nn/simd.h"
#include "util.h"

#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

/* Row-wise softmax of a (T,T) score block; causal rows see columns <= t and
 * the rest is set to 0 so backward needs no mask. */
static void softmax_rows(float *a, int T, int causal)
{
    for (int t = 0; t < T; t++) {
        float *r = a + (size_t)t * T;
        int n = causal ? t + 1 : T, j;
        vf m = vf_set(r[0]);
        for (j = 0; j + VL_VW <= n; j += VL_VW) m = vf_maxv(m, vf_load(r + j));
        if (j < n) m = vf_maxv(m, vf_load_part(r + j, n - j, r[0]));
        vf mx = vf_set(vf_max(m)), s = vf_set(0);
        for (j = 0; j + VL_VW <= n; j += VL_VW) {
            vf e = vf_exp(vf_load(r + j) - mx);
            vf_store(r + j, e);
            s += e;
        }
        float tail = 0;
        if (j < n) {
            vf e = vf_exp(vf_load_part(r + j, n - j, 0) - mx);
            vf_store_part(r + j, e, n - j);
            for (int i = 0; i < n - j; i++) tail += e[i];
        }
        vf inv = vf_set(1.0f / (vf_sum(s) + tail));
        for (j = 0; j + VL_VW <= n; j += VL_VW) vf_store(r + j, vf_load(r + j) * inv);
        for (; j < n; j++) r[j] *= inv[0];
        for (j = n; j < T; j++) r[j] = 0;
    }
}

/* One (batch, head) pair: a = softmax(scale q k^T), out = a v. */
static void head_forward(float *out, float *a, const float *qkv, int b, int h, int T, int C, int NH, int causal)
{
    int hs = C / NH, C3 = 3 * C;
    const float *q = qkv + (size_t)b * T * C3 + h * hs;
    blas_sgemm(0, 1, T, T, hs, 1.0f / sqrtf((float)hs), q, C3, q + C, C3, 0, a, T);
    softmax_rows(a, T, causal);
    blas_sgemm(0, 0, T, hs, T, 1, a, T, q + 2 * C, C3, 0, out + (size_t)b * T * C + h * hs, C);
}

typedef struct {
    float *out, *att;
    const float *qkv;
    int B, T, C, NH, causal, k, nth;
} att_job;

static void *att_worker(void *arg)
{
    att_job *j = arg;
    float *scratch = j->att ? NULL : xmalloc_aligned((size_t)j->T * j->T * sizeof(float));
    for (int bh = j->k; bh < j->B * j->NH; bh += j->nth) {
        int b = bh / j->NH, h = bh % j->NH;
        float *a = j->att ? j->att + (size_t)bh * j->T * j->T : scratch;
        head_forward(j->out, a, j->qkv, b, h, j->T, j->C, j->NH, j->causal);
    }
    free(scratch);
    return NULL;
}

// out (B,T,C), att (B,NH,T,T) or NULL (inference: a per-head scratch is used), qkv (B,T,3C)
void attention_forward(float *out, float *att, const float *qkv, int B, int T, int C, int NH, int causal)
{
    /* The (batch, head) pairs are too small for a multithreaded sgemm each:
     * they are shared out over BLAS's thread count instead, each thread
     * running single-threaded sgemms. Every pair is computed the same way
     * whichever thread takes it, so the bytes do not depend on the count. */
    int threads = blas_get_threads(), nth = threads;
    if (nth > B * NH) nth = B * NH;
    if (nth < 1) nth = 1;
    att_job jobs[64];
    if (nth > 64) nth = 64;
    for (int k = 0; k < nth; k++) jobs[k] = (att_job){out, att, qkv, B, T, C, NH, causal, k, nth};
    if (nth == 1) {
        att_worker(&jobs[0]);
        return;
    }
    pthread_t th[64];
    blas_set_threads(1);
    int started = 1;
    for (int k = 1; k < nth; k++, started++)
        if (pthread_create(&th[k], NULL, att_worker, &jobs[k]) != 0) break;
    /* a thread that could not start leaves its pairs to this one */
    for (int k = started; k < nth; k++) att_worker(&jobs[k]);
    att_worker(&jobs[0]);
    for (int k = 1; k < started; k++) pthread_join(th[k], NULL);
    blas_set_threads(threads);
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
