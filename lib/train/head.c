/* head: the projection and linear heads and the Predict rule; see head.h. */
#include "train/head.h"

#include "nn/linear.h"
#include "rng.h"
#include "util.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const NAMES[2][2] = {{"proj.weight", "proj.bias"}, {"fc.weight", "fc.bias"}};

void head_init(head *h, int kind, int Ds, int D, int C)
{
    memset(h, 0, sizeof *h);
    h->kind = kind;
    h->Ds = Ds;
    h->C = C;
    h->D = kind == HEAD_COSINE ? D : C;
    param_init(&h->p);
    int64_t ws[2] = {h->D, Ds}, bs[1] = {h->D};
    param_add(&h->p, NAMES[kind][0], 2, ws, 0);
    param_add(&h->p, NAMES[kind][1], 1, bs, 0);
    param_alloc(&h->p);
    clf_head *v = &h->view;
    v->kind = kind == HEAD_COSINE ? CLF_COSINE : CLF_LINEAR;
    v->C = C, v->Ds = Ds, v->D = kind == HEAD_COSINE ? D : 0;
    if (kind == HEAD_COSINE) {
        h->text = xcalloc((size_t)C * D, sizeof(float));
        v->proj_w = param_data(&h->p, 0), v->proj_b = param_data(&h->p, 1);
        v->text = h->text;
        v->text_norm = xcalloc((size_t)C, sizeof(double));
    } else {
        v->fc_w = param_data(&h->p, 0), v->fc_b = param_data(&h->p, 1);
    }
}

void head_free(head *h)
{
    param_free(&h->p);
    free(h->text);
    free(h->view.text_norm);
    memset(h, 0, sizeof *h);
}

void head_reset(head *h, uint64_t seed)
{
    /* kaiming_uniform_(a=sqrt(5)) on the weight gives the same bound as the
     * bias's 1/sqrt(fan_in) */
    double bound = 1.0 / sqrt((double)h->Ds);
    rng r;
    for (int t = 0; t < 2; t++) {
        rng_for_key(&r, seed, NAMES[h->kind][t], strlen(NAMES[h->kind][t]), 0);
        float *d = param_data(&h->p, t);
        for (size_t i = 0; i < h->p.t[t].numel; i++) d[i] = (float)((2 * rng_uniform(&r) - 1) * bound);
    }
}

int head_set_text(head *h, const float *T, char *err)
{
    for (int c = 0; c < h->C; c++) {
        const float *t = T + (size_t)c * h->D;
        double s = 0;
        for (int k = 0; k < h->D; k++) s += (double)t[k] * t[k];
        if (!(s > 0) || !isfinite(s)) return vl_error(err, "text row %d is zero or not finite", c);
        double inv = 1.0 / sqrt(s), n = 0;
        float *row = h->text + (size_t)c * h->D;
        for (int k = 0; k < h->D; k++) {
            row[k] = (float)(t[k] * inv);
            n += (double)row[k] * row[k];
        }
        h->view.text_norm[c] = sqrt(n); /* of the rows as stored, as clf_open takes them */
    }
    return 0;
}

void head_forward(const head *h, float *out, const float *F, int B)
{
    linear_forward(out, F, param_data(&h->p, 0), param_data(&h->p, 1), B, h->Ds, h->D);
}

void head_predict(const head *h, float *logits, const float *F, int B, float *ws)
{
    if (h->kind == HEAD_LINEAR) {
        clf_logits(&h->view, logits, F, B, 0);
        return;
    }
    head_forward(h, ws, F, B);
    clf_logits(&h->view, logits, ws, B, 1);
}

static int copy_tensor(const st_file *f, const char *name, int ndim, const int64_t *shape, float *dst, char *err)
{
    float *v = st_load_f32(f, name, ndim, shape, err);
    if (!v) return -1;
    size_t n = 1;
    for (int k = 0; k < ndim; k++) n *= (size_t)shape[k];
    memcpy(dst, v, n * sizeof(float));
    free(v);
    return 0;
}

int head_load_weights(head *h, const st_file *f, char *err)
{
    for (int t = 0; t < 2; t++)
        if (copy_tensor(f, NAMES[h->kind][t], h->p.t[t].ndim, h->p.t[t].shape, param_data(&h->p, t), err) != 0)
            return -1;
    return 0;
}

void head_add_to_writer(const head *h, stw *w)
{
    param_add_to_writer(&h->p, w);
    if (h->kind == HEAD_COSINE) {
        int64_t ts[2] = {h->C, h->D};
        stw_add(w, "text", ST_F32, 2, ts, h->text);
    }
}
