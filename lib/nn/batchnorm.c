/* batchnorm: BatchNorm2d forward and backward; see batchnorm.h. Per-channel
 * sums are accumulated in double: a channel of a 224x224 batch of 32 sums
 * 1.6 million values. */
#include "batchnorm.h"

#include "par.h"

#include <math.h>
#include <stddef.h>

/* Every function below works channel by channel: channels are split over
 * threads (par.h), each computed exactly as on one thread. */
typedef struct {
    float *out, *mean, *rstd, *run_mean, *run_var, *dinp, *dw, *db;
    const float *inp, *w, *b, *rm, *rv, *dout, *cmean, *crstd;
    float *gmask;  /* eval backward with act: dout, masked in place */
    const float *y; /* ... by the activation's output */
    int B, C, HW, act, set;
    float momentum, eps;
} bn_args;

static size_t bn_work(int B, int C, int HW) { return (size_t)B * C * HW; }

static void fwd_train_range(void *ctx, int c0, int c1)
{
    const bn_args *a = ctx;
    float *out = a->out, *mean = a->mean, *rstd = a->rstd, *run_mean = a->run_mean, *run_var = a->run_var;
    const float *inp = a->inp, *w = a->w, *b = a->b;
    int B = a->B, C = a->C, HW = a->HW;
    float momentum = a->momentum, eps = a->eps;
    double n = (double)B * HW;
    for (int c = c0; c < c1; c++) {
        double s = 0;
        for (int i = 0; i < B; i++) {
            const float *x = inp + ((size_t)i * C + c) * HW;
            float acc = 0;
            for (int j = 0; j < HW; j++) acc += x[j];
            s += acc;
        }
        double m = s / n, v = 0;
        for (int i = 0; i < B; i++) {
            const float *x = inp + ((size_t)i * C + c) * HW;
            float acc = 0, mf = (float)m;
            for (int j = 0; j < HW; j++) acc += (x[j] - mf) * (x[j] - mf);
            v += acc;
        }
        double var = v / n;
        float rs = (float)(1.0 / sqrt(var + eps));
        mean[c] = (float)m;
        rstd[c] = rs;
        if (run_mean) run_mean[c] = (float)((1.0 - momentum) * run_mean[c] + momentum * m);
        if (run_var) run_var[c] = (float)((1.0 - momentum) * run_var[c] + momentum * (n > 1 ? v / (n - 1) : var));
        float scale = w ? w[c] * rs : rs, shift = (b ? b[c] : 0.0f) - (float)m * scale;
        for (int i = 0; i < B; i++) {
            const float *x = inp + ((size_t)i * C + c) * HW;
            float *y = out + ((size_t)i * C + c) * HW;
            for (int j = 0; j < HW; j++) y[j] = x[j] * scale + shift;
        }
    }
}

void batchnorm_forward_train(float *out, float *mean, float *rstd, float *run_mean, float *run_var, const float *inp,
                             const float *w, const float *b, int B, int C, int HW, float momentum, float eps)
{
    bn_args a = {.out = out, .mean = mean, .rstd = rstd, .run_mean = run_mean, .run_var = run_var, .inp = inp,
                 .w = w, .b = b, .B = B, .C = C, .HW = HW, .momentum = momentum, .eps = eps};
    par_for(C, 3 * bn_work(B, C, HW), fwd_train_range, &a);
}

static void fwd_eval_range(void *ctx, int c0, int c1)
{
    const bn_args *a = ctx;
    const float *w = a->w, *b = a->b;
    int B = a->B, C = a->C, HW = a->HW;
    for (int c = c0; c < c1; c++) {
        float rs = 1.0f / sqrtf(a->rv[c] + a->eps);
        float scale = w ? w[c] * rs : rs, shift = (b ? b[c] : 0.0f) - a->rm[c] * scale;
        for (int i = 0; i < B; i++) {
            const float *x = a->inp + ((size_t)i * C + c) * HW;
            float *y = a->out + ((size_t)i * C + c) * HW;
            switch (a->act) {
            case BN_ACT_RELU:
                for (int j = 0; j < HW; j++) {
                    float v = x[j] * scale + shift;
                    y[j] = v > 0.0f ? v : 0.0f;
                }
                break;
            case BN_ACT_RELU6:
                for (int j = 0; j < HW; j++) {
                    float v = x[j] * scale + shift;
                    y[j] = v > 0.0f ? (v < 6.0f ? v : 6.0f) : 0.0f;
                }
                break;
            default:
                for (int j = 0; j < HW; j++) y[j] = x[j] * scale + shift;
            }
        }
    }
}

void batchnorm_forward_eval_act(float *out, const float *inp, const float *w, const float *b, const float *run_mean,
                                const float *run_var, int B, int C, int HW, float eps, int act)
{
    bn_args a = {.out = out, .inp = inp, .w = w, .b = b, .rm = run_mean, .rv = run_var, .B = B, .C = C, .HW = HW,
                 .eps = eps, .act = act};
    par_for(C, bn_work(B, C, HW), fwd_eval_range, &a);
}

void batchnorm_forward_eval(float *out, const float *inp, const float *w, const float *b, const float *run_mean,
                            const float *run_var, int B, int C, int HW, float eps)
{
    batchnorm_forward_eval_act(out, inp, w, b, run_mean, run_var, B, C, HW, eps, BN_ACT_NONE);
}

/* With xh = (x - mean) * rstd and g = dout * w:
 * dx = rstd * (g - mean(g) - xh * mean(g * xh)), dw = sum(dout * xh), db = sum(dout). */
static void bwd_train_range(void *ctx, int c0, int c1)
{
    const bn_args *a = ctx;
    float *dinp = a->dinp, *dw = a->dw, *db = a->db;
    const float *dout = a->dout, *inp = a->inp, *w = a->w, *mean = a->cmean, *rstd = a->crstd;
    int B = a->B, C = a->C, HW = a->HW;
    double n = (double)B * HW;
    for (int c = c0; c < c1; c++) {
        float m = mean[c], rs = rstd[c];
        double sg = 0, sgx = 0;
        for (int i = 0; i < B; i++) {
            const float *x = inp + ((size_t)i * C + c) * HW;
            const float *g = dout + ((size_t)i * C + c) * HW;
            float a = 0, ax = 0;
            for (int j = 0; j < HW; j++) {
                a += g[j];
                ax += g[j] * (x[j] - m);
            }
            sg += a;
            sgx += ax;
        }
        sgx *= rs; /* sum(dout * xh) */
        if (dw) dw[c] += (float)sgx;
        if (db) db[c] += (float)sg;
        if (!dinp) continue;
        float wc = w ? w[c] : 1.0f;
        float k0 = wc * rs, k1 = (float)(sg / n), k2 = (float)(sgx / n) * rs;
        for (int i = 0; i < B; i++) {
            const float *x = inp + ((size_t)i * C + c) * HW;
            const float *g = dout + ((size_t)i * C + c) * HW;
            float *dx = dinp + ((size_t)i * C + c) * HW;
            for (int j = 0; j < HW; j++) dx[j] += k0 * (g[j] - k1 - (x[j] - m) * k2);
        }
    }
}

void batchnorm_backward_train(float *dinp, float *dw, float *db, const float *dout, const float *inp, const float *w,
                              const float *mean, const float *rstd, int B, int C, int HW)
{
    bn_args a = {.dinp = dinp, .dw = dw, .db = db, .dout = dout, .inp = inp, .w = w, .cmean = mean, .crstd = rstd,
                 .B = B, .C = C, .HW = HW};
    par_for(C, 3 * bn_work(B, C, HW), bwd_train_range, &a);
}

static void bwd_eval_range(void *ctx, int c0, int c1)
{
    const bn_args *a = ctx;
    float *dinp = a->dinp, *dw = a->dw, *db = a->db;
    const float *dout = a->dout, *inp = a->inp, *w = a->w, *run_mean = a->rm, *run_var = a->rv;
    int B = a->B, C = a->C, HW = a->HW;
    float eps = a->eps;
    for (int c = c0; c < c1; c++) {
        float rs = 1.0f / sqrtf(run_var[c] + eps), m = run_mean[c];
        float k = (w ? w[c] : 1.0f) * rs;
        double sg = 0, sgx = 0;
        for (int i = 0; i < B; i++) {
            const float *g = dout + ((size_t)i * C + c) * HW;
            float *dx = dinp ? dinp + ((size_t)i * C + c) * HW : NULL;
            if (a->act != BN_ACT_NONE) {
                float *gm = a->gmask + ((size_t)i * C + c) * HW;
                const float *y = a->y + ((size_t)i * C + c) * HW;
                if (a->act == BN_ACT_RELU)
                    for (int j = 0; j < HW; j++) gm[j] = y[j] > 0.0f ? gm[j] : 0.0f;
                else
                    for (int j = 0; j < HW; j++) gm[j] = y[j] > 0.0f && y[j] < 6.0f ? gm[j] : 0.0f;
            }
            if (dw) {
                const float *x = inp + ((size_t)i * C + c) * HW;
                float a = 0;
                for (int j = 0; j < HW; j++) a += g[j] * (x[j] - m);
                sgx += a;
            }
            if (db) {
                float a = 0;
                for (int j = 0; j < HW; j++) a += g[j];
                sg += a;
            }
            if (dx && a->set) /* 0 + : the bytes of += into zeros (no -0) */
                for (int j = 0; j < HW; j++) dx[j] = 0.0f + k * g[j];
            else if (dx)
                for (int j = 0; j < HW; j++) dx[j] += k * g[j];
        }
        if (dw) dw[c] += (float)(sgx * rs);
        if (db) db[c] += (float)sg;
    }
}

void batchnorm_backward_eval(float *dinp, float *dw, float *db, const float *dout, const float *inp, const float *w,
                             const float *run_mean, const float *run_var, int B, int C, int HW, float eps)
{
    bn_args a = {.dinp = dinp, .dw = dw, .db = db, .dout = dout, .inp = inp, .w = w, .rm = run_mean, .rv = run_var,
                 .B = B, .C = C, .HW = HW, .eps = eps};
    par_for(C, 2 * bn_work(B, C, HW), bwd_eval_range, &a);
}

void batchnorm_backward_eval_act(float *dinp, float *dw, float *db, float *dout, const float *y, int act,
                                 const float *inp, const float *w, const float *run_mean, const float *run_var, int B,
                                 int C, int HW, float eps)
{
    bn_args a = {.dinp = dinp, .dw = dw, .db = db, .dout = dout, .gmask = dout, .y = y, .act = act, .set = 1,
                 .inp = inp, .w = w, .rm = run_mean, .rv = run_var, .B = B, .C = C, .HW = HW, .eps = eps};
    par_for(C, 3 * bn_work(B, C, HW), bwd_eval_range, &a);
}

void batchnorm_forward_train_ref(float *out, float *mean, float *rstd, float *run_mean, float *run_var,
                                 const float *inp, const float *w, const float *b, int B, int C, int HW,
                                 float momentum, float eps)
{
    double n = (double)B * HW;
    for (int c = 0; c < C; c++) {
        double s = 0, v = 0;
        for (int i = 0; i < B; i++)
            for (int j = 0; j < HW; j++) s += inp[((size_t)i * C + c) * HW + j];
        double m = s / n;
        for (int i = 0; i < B; i++)
            for (int j = 0; j < HW; j++) {
                double d = inp[((size_t)i * C + c) * HW + j] - m;
                v += d * d;
            }
        double rs = 1.0 / sqrt(v / n + eps);
        mean[c] = (float)m;
        rstd[c] = (float)rs;
        if (run_mean) run_mean[c] = (float)((1.0 - momentum) * run_mean[c] + momentum * m);
        if (run_var) run_var[c] = (float)((1.0 - momentum) * run_var[c] + momentum * v / (n - 1));
        for (int i = 0; i < B; i++)
            for (int j = 0; j < HW; j++) {
                size_t k = ((size_t)i * C + c) * HW + j;
                out[k] = (float)((inp[k] - m) * rs * (w ? w[c] : 1.0) + (b ? b[c] : 0.0));
            }
    }
}

void batchnorm_backward_train_ref(float *dinp, float *dw, float *db, const float *dout, const float *inp,
                                  const float *w, const float *mean, const float *rstd, int B, int C, int HW)
{
    double n = (double)B * HW;
    for (int c = 0; c < C; c++) {
        double sg = 0, sgx = 0;
        for (int i = 0; i < B; i++)
            for (int j = 0; j < HW; j++) {
                size_t k = ((size_t)i * C + c) * HW + j;
                sg += dout[k];
                sgx += (double)dout[k] * (inp[k] - mean[c]) * rstd[c];
            }
        if (dw) dw[c] += (float)sgx;
        if (db) db[c] += (float)sg;
        if (!dinp) continue;
        for (int i = 0; i < B; i++)
            for (int j = 0; j < HW; j++) {
                size_t k = ((size_t)i * C + c) * HW + j;
                double xh = (inp[k] - mean[c]) * (double)rstd[c];
                dinp[k] += (float)((w ? w[c] : 1.0) * rstd[c] * (dout[k] - sg / n - xh * sgx / n));
            }
    }
}
