/* layernorm: LayerNorm over the last dimension, forward and backward. */
#include "nn/layernorm.h"

#include "nn/simd.h"

#include <math.h>
#include <stddef.h>

// out (N,C), mean (N), rstd (N), inp (N,C), w (C), b (C); out == inp allowed
void layernorm_forward(float *out, float *mean, float *rstd, const float *inp, const float *w, const float *b, int N,
                       int C, float eps)
{
    for (int i = 0; i < N; i++) {
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

// dinp (N,C), dw (C), db (C); dout (N,C), inp (N,C), w (C), mean, rstd (N)
void layernorm_backward(float *dinp, float *dw, float *db, const float *dout, const float *inp, const float *w,
                        const float *mean, const float *rstd, int N, int C)
{
    for (int i = 0; i < N; i++) {
        const float *x = inp + (size_t)i * C, *d = dout + (size_t)i * C;
        float m = mean[i], s = rstd[i];
        if (dinp) {
            /* dx = rstd * (g - mean(g) - xhat * mean(g * xhat)), g = dout * w */
            float gm = 0, gxm = 0;
            for (int c = 0; c < C; c++) {
                float g = d[c] * w[c];
                gm += g;
                gxm += g * (x[c] - m) * s;
            }
            gm /= C;
            gxm /= C;
            float *dx = dinp + (size_t)i * C;
            for (int c = 0; c < C; c++) {
                float xh = (x[c] - m) * s;
                dx[c] += s * (d[c] * w[c] - gm - xh * gxm);
            }
        }
        if (dw)
            for (int c = 0; c < C; c++) dw[c] += d[c] * (x[c] - m) * s;
        if (db)
            for (int c = 0; c < C; c++) db[c] += d[c];
    }
}
