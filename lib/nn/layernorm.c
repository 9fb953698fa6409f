/* layernorm: LayerNorm over the last dimension, forward and backward. */
#include "nn/layernorm.h"

#include "par.h"
#include "simd.h"

#include <math.h>
#include <stddef.h>

/* Rows are independent: forward and the input gradient run rows side by
 * side on the thread pool; the weight and bias gradients, which sum over
 * rows, run column blocks side by side, each summing its rows in order. The
 * same bytes as one thread. */
typedef struct {
    float *out, *mean, *rstd, *dinp, *dw, *db;
    const float *inp, *w, *b, *dout, *cmean, *crstd;
    int N, C;
    float eps;
} ln_args;

static void fwd_rows(void *ctx, int i0, int i1)
{
    const ln_args *a = ctx;
    const float *inp = a->inp, *w = a->w, *b = a->b;
    float *out = a->out, *mean = a->mean, *rstd = a->rstd, eps = a->eps;
    int C = a->C;
    for (int i = i0; i < i1; i++) {
        const float *x = inp + (size_t)i * C;
        float *y = out + (size_t)i * C;
        /* two passes: the one-pass E[x^2]-E[x]^2 loses digits on large means */
        vf s = vf_set(0);
        int c = 0;
        for (; c + VL_VW <= C; c += VL_VW) s += vf_load(x + c);
        float m = vf_sum(s);
        for (; c < C; c++) m += x[c];
        m /= C;
        vf vm = vf_set(m), q = vf_set(0);
        for (c = 0; c + VL_VW <= C; c += VL_VW) {
            vf d = vf_load(x + c) - vm;
            q += d * d;
        }
        float v = vf_sum(q);
        for (; c < C; c++) v += (x[c] - m) * (x[c] - m);
        v /= C;
        float r = 1.0f / sqrtf(v + eps);
        vf vr = vf_set(r);
        for (c = 0; c + VL_VW <= C; c += VL_VW)
            vf_store(y + c, (vf_load(x + c) - vm) * vr * vf_load(w + c) + vf_load(b + c));
        for (; c < C; c++) y[c] = (x[c] - m) * r * w[c] + b[c];
        if (mean) mean[i] = m;
        if (rstd) rstd[i] = r;
    }
}

// out (N,C), mean (N), rstd (N), inp (N,C), w (C), b (C); out == inp allowed
void layernorm_forward(float *out, float *mean, float *rstd, const float *inp, const float *w, const float *b, int N,
                       int C, float eps)
{
    ln_args a = {.out = out, .mean = mean, .rstd = rstd, .inp = inp, .w = w, .b = b, .N = N, .C = C, .eps = eps};
    par_for(N, (size_t)N * C * 3, fwd_rows, &a);
}

void layernorm_forward_ref(float *out, float *mean, float *rstd, const float *inp, const float *w, const float *b,
                           int N, int C, float eps)
{
    for (int i = 0; i < N; i++) {
        const float *x = inp + (size_t)i * C;
        double m = 0, v = 0;
        for (int c = 0; c < C; c++) m += x[c];
        m /= C;
        for (int c = 0; c < C; c++) v += (x[c] - m) * (x[c] - m);
        v /= C;
        double s = 1.0 / sqrt(v + eps);
        for (int c = 0; c < C; c++) out[(size_t)i * C + c] = (float)((x[c] - m) * s * w[c] + b[c]);
        if (mean) mean[i] = (float)m;
        if (rstd) rstd[i] = (float)s;
    }
}

static void dinp_rows(void *ctx, int i0, int i1)
{
    const ln_args *a = ctx;
    const float *w = a->w;
    int C = a->C;
    for (int i = i0; i < i1; i++) {
        const float *x = a->inp + (size_t)i * C, *d = a->dout + (size_t)i * C;
        float m = a->cmean[i], s = a->crstd[i];
        /* dx = rstd * (g - mean(g) - xhat * mean(g * xhat)), g = dout * w */
        float gm = 0, gxm = 0;
        for (int c = 0; c < C; c++) {
            float g = d[c] * w[c];
            gm += g;
            gxm += g * (x[c] - m) * s;
        }
        gm /= C;
        gxm /= C;
        float *dx = a->dinp + (size_t)i * C;
        for (int c = 0; c < C; c++) {
            float xh = (x[c] - m) * s;
            dx[c] += s * (d[c] * w[c] - gm - xh * gxm);
        }
    }
}

/* columns [16 k0, 16 k1) of dw and db, rows in order */
static void dwb_cols(void *ctx, int k0, int k1)
{
    const ln_args *a = ctx;
    int C = a->C, c0 = 16 * k0, c1 = 16 * k1 < C ? 16 * k1 : C;
    for (int i = 0; i < a->N; i++) {
        const float *x = a->inp + (size_t)i * C, *d = a->dout + (size_t)i * C;
        float m = a->cmean[i], s = a->crstd[i];
        if (a->dw)
            for (int c = c0; c < c1; c++) a->dw[c] += d[c] * (x[c] - m) * s;
        if (a->db)
            for (int c = c0; c < c1; c++) a->db[c] += d[c];
    }
}

// dinp (N,C), dw (C), db (C); dout (N,C), inp (N,C), w (C), mean, rstd (N)
void layernorm_backward(float *dinp, float *dw, float *db, const float *dout, const float *inp, const float *w,
                        const float *mean, const float *rstd, int N, int C)
{
    ln_args a = {.dinp = dinp, .dw = dw, .db = db, .inp = inp, .w = w, .dout = dout, .cmean = mean, .crstd = rstd,
                 .N = N, .C = C};
    if (dinp) par_for(N, (size_t)N * C * 4, dinp_rows, &a);
    if (dw || db) par_for((C + 15) / 16, (size_t)N * C * 3, dwb_cols, &a);
}
