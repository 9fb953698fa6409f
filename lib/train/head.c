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
    if (kind == HEAD_COSINE) h->text = xcalloc((size_t)C * D, sizeof(float));
}

void head_free(head *h)
{
    param_free(&h->p);
    free(h->text);
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
        double inv = 1.0 / sqrt(s);
        for (int k = 0; k < h->D; k++) h->text[(size_t)c * h->D + k] = (float)(t[k] * inv);
    }
    return 0;
}

void head_forward(const head *h, float *out, const float *F, int B)
{
    linear_forward(out, F, param_data(&h->p, 0), param_data(&h->p, 1), B, h->Ds, h->D);
}

void head_logits(const head *h, float *logits, const float *out, int B)
{
    if (h->kind == HEAD_LINEAR) {
        memcpy(logits, out, (size_t)B * h->C * sizeof(float));
        return;
    }
    int D = h->D;
    float *zn = xmalloc((size_t)B * D * sizeof(float));
    for (int i = 0; i < B; i++) {
        const float *z = out + (size_t)i * D;
        double s = 0;
        for (int k = 0; k < D; k++) s += (double)z[k] * z[k];
        double n = sqrt(s);
        float inv = (float)(1.0 / (n > 1e-12 ? n : 1e-12));
        for (int k = 0; k < D; k++) zn[(size_t)i * D + k] = z[k] * inv;
    }
    /* logits = 100 zn T^T: a linear layer with T as its weight */
    linear_forward(logits, zn, h->text, NULL, B, D, h->C);
    for (size_t i = 0; i < (size_t)B * h->C; i++) logits[i] *= HEAD_LOGIT_SCALE;
    free(zn);
}

void head_argmax(int *pred, const float *logits, int B, int C)
{
    for (int i = 0; i < B; i++) {
        const float *l = logits + (size_t)i * C;
        int best = 0;
        for (int c = 1; c < C; c++)
            if (l[c] > l[best]) best = c;
        pred[i] = best;
    }
}

static int copy_tensor(const st_file *f, const char *name, int ndim, const int64_t *shape, float *dst, char *err)
{
    float *v = st_load_f32(f, name, ndim, shape, err);
    if (!v) return -1;
    size_t n = 1;
    for (int k = 0; k < ndim; k++) n *= (size_t)shape[k];
    for (size_t i = 0; i < n; i++)
        if (!isfinite(v[i])) {
            free(v);
            return vl_error(err, "%s: tensor '%s' holds NaN or infinity", f->path, name);
        }
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

int head_load(head *h, const st_file *f, char *err)
{
    int kind = st_find(f, "proj.weight") ? HEAD_COSINE : st_find(f, "fc.weight") ? HEAD_LINEAR : -1;
    if (kind < 0) return vl_error(err, "%s: no head: neither proj.weight nor fc.weight", f->path);
    const st_tensor *w = st_find(f, NAMES[kind][0]), *t = kind == HEAD_COSINE ? st_find(f, "text") : NULL;
    if (w->ndim != 2 || w->shape[0] < 1 || w->shape[1] < 1 || w->shape[0] > (1 << 24) || w->shape[1] > (1 << 24))
        return vl_error(err, "%s: tensor '%s' has shape %s, not [out, features]", f->path, NAMES[kind][0],
                        st_shape_str(w->ndim, w->shape, (char[96]){0}, 96));
    int D = (int)w->shape[0], Ds = (int)w->shape[1], C = D;
    if (kind == HEAD_COSINE) {
        if (!t) return vl_error(err, "%s: a projection head needs the text matrix 'text'", f->path);
        if (t->ndim != 2 || t->shape[1] != D || t->shape[0] < 1 || t->shape[0] > (1 << 24))
            return vl_error(err, "%s: tensor 'text' has shape %s, not [classes, %d]", f->path,
                            st_shape_str(t->ndim, t->shape, (char[96]){0}, 96), D);
        C = (int)t->shape[0];
    }
    head_init(h, kind, Ds, D, C);
    if (head_load_weights(h, f, err) != 0) goto fail;
    if (kind == HEAD_COSINE) {
        int64_t ts[2] = {C, D};
        float *T = st_load_f32(f, "text", 2, ts, err);
        if (!T) goto fail;
        int rc = head_set_text(h, T, err);
        free(T);
        if (rc != 0) {
            char e[VL_ERRLEN];
            snprintf(e, sizeof e, "%s: tensor 'text': %s", f->path, err);
            strcpy(err, e);
            goto fail;
        }
    }
    return 0;
fail:
    head_free(h);
    return -1;
}

void head_add_to_writer(const head *h, stw *w)
{
    param_add_to_writer(&h->p, w);
    if (h->kind == HEAD_COSINE) {
        int64_t ts[2] = {h->C, h->D};
        stw_add(w, "text", ST_F32, 2, ts, h->text);
    }
}
