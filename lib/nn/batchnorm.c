/* batchnorm: BatchNorm2d forward and backward; see batchnorm.h. Per-channel
 * sums are accumulated in double: a channel of a 224x224 batch of 32 sums
 * 1.6 million values. The eval-mode (frozen) passes are written in 16-lane
 * vectors (simd.h): at -O2 the compiler vectorises none of these loops. */
#include "batchnorm.h"

#include "par.h"
#include "simd.h"

#include <math.h>
#include <stddef.h>

/* Every function below works channel by channel: channels are split over
 * threads (par.h), each computed exactly as on one thread. */
typedef struct {
    float *out, *mean, *rstd, *run_mean, *run_var, *dinp, *dw, *db;
    const float *inp, *w, *b, *rm, *rv, *dout, *cmean, *crstd;
    const float *y; /* eval backward with act: the activation's output (the mask) */
    int B, C, HW, act, set;
    float momentum, eps;
} bn_args;

static size_t bn_work(int B, int C, int HW) { return (size_t)B * C * HW; }

/* Training mode: the batch statistics and the backward's two sums feed
 * every element of the output and of the input gradient, so each term is
 * formed and summed in double (PyTorch's CPU kernels sum in double too). */
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
            for (int j = 0; j < HW; j++) s += x[j];
        }
        double m = s / n, v = 0;
        for (int i = 0; i < B; i++) {
            const float *x = inp + ((size_t)i * C + c) * HW;
            for (int j = 0; j < HW; j++) {
                double d = x[j] - m;
                v += d * d;
            }
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

/* y = act(x * scale + shift) over n elements, in 16-lane vectors (the same
 * bytes as the scalar expression: no reassociation, no contraction under
 * -std=c11). act is a constant where this is inlined. */
static inline __attribute__((always_inline)) void eval_plane(float *y, const float *x, int n, float scale,
                                                             float shift, int act)
{
    vf s = vf_set(scale), t = vf_set(shift), z = vf_set(0.0f), six = vf_set(6.0f);
    for (int j = 0; j < n; j += VL_VW) {
        int k = n - j < VL_VW ? n - j : VL_VW;
        vf v = (k == VL_VW ? vf_load(x + j) : vf_load_part(x + j, k, 0.0f)) * s + t;
        if (act == BN_ACT_RELU) v = vf_select(v > z, v, z);
        if (act == BN_ACT_RELU6) v = vf_select(v > z, vf_select(v < six, v, six), z);
        if (k == VL_VW)
            vf_store(y + j, v);
        else
            vf_store_part(y + j, v, k);
    }
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
            case BN_ACT_RELU: eval_plane(y, x, HW, scale, shift, BN_ACT_RELU); break;
            case BN_ACT_RELU6: eval_plane(y, x, HW, scale, shift, BN_ACT_RELU6); break;
            default: eval_plane(y, x, HW, scale, shift, BN_ACT_NONE);
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
            for (int j = 0; j < HW; j++) {
                sg += g[j];
                sgx += g[j] * ((double)x[j] - m);
            }
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

/* One plane of the eval backward in one pass: gv = dout masked by the
 * activation, which is read from its output y, or (y NULL) recomputed from
 * the input x as the forward computed it, v = x * k + shift (the same
 * bytes, so the same mask); sums of gv * (x - m) and of gv (16 lanes, then
 * the lanes in order) when wanted; dx = k * gv set or accumulated. */
static inline __attribute__((always_inline)) void bwd_eval_plane(float *dx, float *sgx, float *sg, const float *g,
                                                                 const float *y, const float *x, int n, float m,
                                                                 float k, float shift, int act,
                                                                 int from_x, int set)
{
    vf z = vf_set(0.0f), six = vf_set(6.0f), vm = vf_set(m), vk = vf_set(k), agx = z, ag = z;
    vf vt = vf_set(shift);
    for (int j = 0; j < n; j += VL_VW) {
        int r = n - j < VL_VW ? n - j : VL_VW, full = r == VL_VW;
        vf gv = full ? vf_load(g + j) : vf_load_part(g + j, r, 0.0f), xv = z;
        if (sgx || from_x) xv = full ? vf_load(x + j) : vf_load_part(x + j, r, m);
        if (act != BN_ACT_NONE) {
            vf yv = from_x ? xv * vk + vt : full ? vf_load(y + j) : vf_load_part(y + j, r, 0.0f);
            gv = act == BN_ACT_RELU ? vf_select(yv > z, gv, z) : vf_select((yv > z) & (yv < six), gv, z);
        }
        if (sgx) agx += gv * (xv - vm);
        if (sg) ag += gv;
        if (dx) {
            /* set: 0 + k * gv, the bytes of += into zeros (no -0) */
            vf d = (set ? z : full ? vf_load(dx + j) : vf_load_part(dx + j, r, 0.0f)) + vk * gv;
            if (full)
                vf_store(dx + j, d);
            else
                vf_store_part(dx + j, d, r);
        }
    }
    if (sgx) *sgx = vf_sum(agx);
    if (sg) *sg = vf_sum(ag);
}

static void bwd_eval_range(void *ctx, int c0, int c1)
{
    const bn_args *a = ctx;
    float *dinp = a->dinp, *dw = a->dw, *db = a->db;
    const float *dout = a->dout, *inp = a->inp, *w = a->w, *run_mean = a->rm, *run_var = a->rv;
    int B = a->B, C = a->C, HW = a->HW, act = a->act, from_x = act != BN_ACT_NONE && !a->y;
    float eps = a->eps;
    for (int c = c0; c < c1; c++) {
        float rs = 1.0f / sqrtf(run_var[c] + eps), m = run_mean[c];
        /* k and shift: the forward's scale and shift (fwd_eval_range) */
        float k = (w ? w[c] : 1.0f) * rs, shift = (a->b ? a->b[c] : 0.0f) - m * k;
        double sg = 0, sgx = 0;
        for (int i = 0; i < B; i++) {
            size_t o = ((size_t)i * C + c) * HW;
            const float *g = dout + o, *y = act != BN_ACT_NONE && a->y ? a->y + o : NULL;
            const float *x = dw || from_x ? inp + o : NULL;
            float *dx = dinp ? dinp + o : NULL, pgx = 0, pg = 0;
            float *pgxp = dw ? &pgx : NULL, *pgp = db ? &pg : NULL;
            if (act == BN_ACT_RELU && from_x)
                bwd_eval_plane(dx, pgxp, pgp, g, y, x, HW, m, k, shift, BN_ACT_RELU, 1, a->set);
            else if (act == BN_ACT_RELU)
                bwd_eval_plane(dx, pgxp, pgp, g, y, x, HW, m, k, shift, BN_ACT_RELU, 0, a->set);
            else if (act == BN_ACT_RELU6 && from_x)
                bwd_eval_plane(dx, pgxp, pgp, g, y, x, HW, m, k, shift, BN_ACT_RELU6, 1, a->set);
            else if (act == BN_ACT_RELU6)
                bwd_eval_plane(dx, pgxp, pgp, g, y, x, HW, m, k, shift, BN_ACT_RELU6, 0, a->set);
            else
                bwd_eval_plane(dx, pgxp, pgp, g, y, x, HW, m, k, shift, BN_ACT_NONE, 0, a->set);
            sgx += pgx;
            sg += pg;
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

void batchnorm_backward_eval_act(float *dinp, float *dw, float *db, const float *dout, const float *y, int act,
                                 const float *inp, const float *w, const float *b, const float *run_mean,
                                 const float *run_var, int B, int C, int HW, float eps)
{
    bn_args a = {.dinp = dinp, .dw = dw, .db = db, .dout = dout, .y = y, .act = act, .set = 1,
                 .inp = inp, .w = w, .b = b, .rm = run_mean, .rv = run_var, .B = B, .C = C, .HW = HW, .eps = eps};
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
