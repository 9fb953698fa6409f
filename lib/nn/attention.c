/* attention: multi-head self-attention on packed qkv rows. The fast path runs
 * two sgemms per (batch, head) - Q K^T and att V - straight on the strided
 * columns of qkv (no repacking) with the softmax done in place between them. */
#include "nn/attention.h"

#include "blas.h"
#include "par.h"
#include "simd.h"
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

/* Runs fn(ctx, b, h, scratch) for every (batch, head) pair. The pairs are
 * too small for a split sgemm each, so they are shared out over the thread
 * pool instead (par.h), each range running single-threaded sgemms (nested in
 * par_for, blas_sgemm stays on its thread) with its own (T,T) scratch. Every
 * pair is computed the same way whichever thread takes it, so the bytes do
 * not depend on the count. */
typedef void (*pair_fn)(void *ctx, int b, int h, float *scratch);
typedef struct {
    pair_fn fn;
    void *ctx;
    int NH, T;
} pair_job;

static void pair_range(void *arg, int lo, int hi)
{
    pair_job *j = arg;
    float *scratch = xmalloc_aligned((size_t)j->T * j->T * sizeof(float));
    for (int bh = lo; bh < hi; bh++) j->fn(j->ctx, bh / j->NH, bh % j->NH, scratch);
    free(scratch);
}

static void for_pairs(pair_fn fn, void *ctx, int B, int NH, int T)
{
    pair_job j = {fn, ctx, NH, T};
    /* work: each pair's score block, written and read */
    par_for(B * NH, (size_t)B * NH * T * T * 2, pair_range, &j);
}

typedef struct {
    float *out, *att;
    const float *qkv;
    int T, C, NH, causal;
} fwd_ctx;

static void fwd_pair(void *p, int b, int h, float *scratch)
{
    fwd_ctx *c = p;
    float *a = c->att ? c->att + ((size_t)b * c->NH + h) * c->T * c->T : scratch;
    head_forward(c->out, a, c->qkv, b, h, c->T, c->C, c->NH, c->causal);
}

// out (B,T,C), att (B,NH,T,T) or NULL (inference: a per-head scratch is used), qkv (B,T,3C)
void attention_forward(float *out, float *att, const float *qkv, int B, int T, int C, int NH, int causal)
{
    fwd_ctx c = {out, att, qkv, T, C, NH, causal};
    for_pairs(fwd_pair, &c, B, NH, T);
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

typedef struct {
    float *dqkv;
    const float *dout, *qkv, *att;
    int T, C, NH;
} bwd_ctx;

static void bwd_pair(void *p, int b, int h, float *da)
{
    bwd_ctx *c = p;
    int T = c->T, C = c->C, hs = C / c->NH, C3 = 3 * C;
    float scale = 1.0f / sqrtf((float)hs);
    size_t off = (size_t)b * T * C3 + h * hs;
    const float *q = c->qkv + off, *k = q + C, *v = q + 2 * C;
    float *dq = c->dqkv + off, *dk = dq + C, *dv = dq + 2 * C;
    const float *a = c->att + ((size_t)b * c->NH + h) * T * T;
    const float *dy = c->dout + (size_t)b * T * C + h * hs;
    /* dv += a^T dy; da = dy v^T */
    blas_sgemm(1, 0, T, hs, T, 1, a, T, dy, C, 1, dv, C3);
    blas_sgemm(0, 1, T, T, hs, 1, dy, C, v, C3, 0, da, T);
    /* softmax backward in place: ds = a * (da - sum(a * da)); masked a = 0 */
    for (int t = 0; t < T; t++) {
        const float *ar = a + (size_t)t * T;
        float *dr = da + (size_t)t * T;
        vf acc = vf_set(0);
        int j = 0;
        for (; j + VL_VW <= T; j += VL_VW) acc += vf_load(ar + j) * vf_load(dr + j);
        float s = vf_sum(acc);
        for (; j < T; j++) s += ar[j] * dr[j];
        vf vs = vf_set(s);
        for (j = 0; j + VL_VW <= T; j += VL_VW) vf_store(dr + j, vf_load(ar + j) * (vf_load(dr + j) - vs));
        for (; j < T; j++) dr[j] = ar[j] * (dr[j] - s);
    }
    /* dq += scale ds k; dk += scale ds^T q */
    blas_sgemm(0, 0, T, hs, T, scale, da, T, k, C3, 1, dq, C3);
    blas_sgemm(1, 0, T, hs, T, scale, da, T, q, C3, 1, dk, C3);
}

// dqkv (B,T,3C); dout (B,T,C), qkv (B,T,3C), att (B,NH,T,T)
void attention_backward(float *dqkv, const float *dout, const float *qkv, const float *att, int B, int T, int C,
                        int NH)
{
    /* each pair writes only its own head's columns of its own batch rows */
    bwd_ctx c = {dqkv, dout, qkv, att, T, C, NH};
    for_pairs(bwd_pair, &c, B, NH, T);
}
