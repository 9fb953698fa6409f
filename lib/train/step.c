/* step: the training step, the evaluation and the batch sampler; see step.h. */
#include "train/step.h"

#include "nn/linear.h"
#include "nn/loss.h"
#include "rng.h"
#include "util.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

void train_ws_free(train_ws *ws)
{
    free(ws->out);
    free(ws->dout);
    free(ws->probs);
    free(ws->c1);
    free(ws->c2);
    free(ws->feat);
    free(ws->dfeat);
    free(ws->tlog);
    memset(ws, 0, sizeof *ws);
}

/* the head step's buffers for B rows of width w (outputs) and C (classes) */
static void ws_reserve_rows(train_ws *ws, int B, int w, int C)
{
    if (B <= ws->cap && w <= ws->wcap && C <= ws->ccap) return;
    if (B < ws->cap) B = ws->cap;
    if (w < ws->wcap) w = ws->wcap;
    if (C < ws->ccap) C = ws->ccap;
    free(ws->out);
    free(ws->dout);
    free(ws->probs);
    free(ws->c1);
    free(ws->c2);
    ws->out = xmalloc((size_t)B * w * sizeof(float));
    ws->dout = xmalloc((size_t)B * w * sizeof(float));
    ws->probs = xmalloc((size_t)B * C * sizeof(float));
    ws->c1 = xmalloc((size_t)B * sizeof(float));
    ws->c2 = xmalloc((size_t)B * sizeof(float));
    ws->cap = B;
    ws->wcap = w;
    ws->ccap = C;
}

static void ws_reserve(train_ws *ws, const head *h, int B)
{
    ws_reserve_rows(ws, B, h->D > h->C ? h->D : h->C, h->C);
}

/* float buffer *p of at least n, *cap its size */
static void grow(float **p, size_t *cap, size_t n)
{
    if (n <= *cap) return;
    free(*p);
    *p = xmalloc(n * sizeof(float));
    *cap = n;
}

/* the cosine loss on z (B,D) with its gradient set in dz; the terms' means */
static double cosine_terms(float *dz, const float *z, const float *it, const float *T, const int *y, int B, int D,
                           float lambda, train_terms *t, train_ws *ws)
{
    const float *u = lambda > 0 ? it : NULL, *v = lambda < 1 ? T : NULL;
    const int *yy = lambda < 1 ? y : NULL;
    t->loss = cosloss_forward(ws->c1, ws->c2, z, u, v, yy, B, D, lambda);
    for (int i = 0; i < B; i++) {
        if (u) t->cos_image += ws->c1[i];
        if (v) t->cos_text += ws->c2[i];
    }
    t->cos_image /= B;
    t->cos_text /= B;
    memset(dz, 0, (size_t)B * D * sizeof(float));
    cosloss_backward(dz, z, u, v, yy, B, D, lambda, 1.0f);
    return t->loss;
}

float train_head_step(head *h, optim *o, const float *F, const float *it, const int *y, int B, int objective,
                      float lambda, train_terms *terms, train_ws *ws)
{
    ws_reserve(ws, h, B);
    param_zero_grad(&h->p);
    head_forward(h, ws->out, F, B);
    int D = h->D;
    train_terms t = {0};
    if (objective == TRAIN_COSINE) {
        cosine_terms(ws->dout, ws->out, it, h->text, y, B, D, lambda, &t, ws);
    } else {
        memset(ws->dout, 0, (size_t)B * D * sizeof(float));
        t.loss = crossentropy_forward(ws->probs, ws->out, y, B, h->C);
        crossentropy_backward(ws->dout, ws->probs, y, B, h->C, 1.0f);
    }
    /* the features are frozen: no input gradient */
    linear_backward(NULL, param_grad(&h->p, 0), param_grad(&h->p, 1), ws->dout, F, param_data(&h->p, 0), B, h->Ds,
                    D);
    optim_step(o, &h->p);
    if (terms) *terms = t;
    return (float)t.loss;
}

/* lp (C) = log softmax(x / tau), in double */
static void log_softmax_t(double *lp, const float *x, int C, double tau)
{
    double m = -INFINITY, s = 0;
    for (int c = 0; c < C; c++) m = x[c] / tau > m ? x[c] / tau : m;
    for (int c = 0; c < C; c++) s += exp(x[c] / tau - m);
    double ls = m + log(s);
    for (int c = 0; c < C; c++) lp[c] = x[c] / tau - ls;
}

/* KD's tau^2 KL(p_t || p_s) term, batch mean, on the student's logits s
 * (B,C) against the teacher's tl (B,C); ds (B,C) += its gradient
 * tau (p_s - p_t) / B. */
static double kd_kl(float *ds, const float *s, const float *tl, int B, int C, double tau)
{
    double *ls = xmalloc(2 * (size_t)C * sizeof(double)), *lt = ls + C, kl = 0;
    for (int i = 0; i < B; i++) {
        log_softmax_t(ls, s + (size_t)i * C, C, tau);
        log_softmax_t(lt, tl + (size_t)i * C, C, tau);
        for (int c = 0; c < C; c++) {
            double pt = exp(lt[c]);
            kl += pt * (lt[c] - ls[c]);
            ds[(size_t)i * C + c] += (float)(tau * (exp(ls[c]) - pt) / B);
        }
    }
    free(ls);
    return tau * tau * kl / B;
}

double train_objective_loss(const train_objective *ob, float *dF, const float *F, const float *it, const int *y, int B,
                            train_terms *terms, train_ws *ws)
{
    train_terms t = {0};
    head *h = ob->h;
    if (ob->objective == TRAIN_SD) {
        ws_reserve_rows(ws, B, 1, 1);
        cosine_terms(dF, F, it, ob->text, y, B, ob->D, ob->lambda, &t, ws);
    } else if (ob->objective == TRAIN_ADIP) {
        ws_reserve(ws, h, B);
        head_forward(h, ws->out, F, B);
        cosine_terms(ws->dout, ws->out, it, h->text, y, B, h->D, ob->lambda, &t, ws);
        /* the head is frozen: only the features' gradient */
        linear_backward_set(dF, NULL, NULL, ws->dout, F, param_data(&h->p, 0), B, h->Ds, h->D);
    } else {
        int C = h->C;
        ws_reserve(ws, h, B);
        head_forward(h, ws->out, F, B);
        t.ce = crossentropy_forward(ws->probs, ws->out, y, B, C);
        memset(ws->dout, 0, (size_t)B * C * sizeof(float));
        crossentropy_backward(ws->dout, ws->probs, y, B, C, 1.0f);
        if (ob->objective == TRAIN_KD) {
            /* the teacher's zero-shot logits 100 cos(It, T_c) */
            grow(&ws->tlog, &ws->lcap, (size_t)B * C);
            for (int i = 0; i < B; i++) {
                const float *u = it + (size_t)i * ob->D;
                double nu = 0;
                for (int d = 0; d < ob->D; d++) nu += (double)u[d] * u[d];
                nu = sqrt(nu) > 1e-8 ? sqrt(nu) : 1e-8;
                for (int c = 0; c < C; c++) {
                    double dot = 0;
                    for (int d = 0; d < ob->D; d++) dot += (double)u[d] * ob->text[(size_t)c * ob->D + d];
                    ws->tlog[(size_t)i * C + c] = (float)(HEAD_LOGIT_SCALE * dot / nu);
                }
            }
            t.kl = kd_kl(ws->dout, ws->out, ws->tlog, B, C, ob->tau);
        }
        t.loss = t.ce + t.kl;
        linear_backward_set(dF, param_grad(&h->p, 0), param_grad(&h->p, 1), ws->dout, F, param_data(&h->p, 0), B,
                            h->Ds, C);
    }
    if (terms) *terms = t;
    return t.loss;
}

int train_backbone_step(student *s, optim *o, const train_objective *ob, optim *oh, const float *x, int B, int H, int W,
                        const float *it, const int *y, train_terms *terms, train_ws *ws, char *err)
{
    size_t n = (size_t)B * student_feature_dim(s);
    if (n > ws->fcap) {
        free(ws->feat);
        free(ws->dfeat);
        ws->feat = xmalloc(n * sizeof(float));
        ws->dfeat = xmalloc(n * sizeof(float));
        ws->fcap = n;
    }
    params *p = student_params(s);
    param_zero_grad(p);
    int trains_head = ob->objective == TRAIN_ERM || ob->objective == TRAIN_KD;
    if (trains_head) param_zero_grad(&ob->h->p);
    if (student_forward(s, ws->feat, x, B, H, W, 1, err)) return -1;
    train_objective_loss(ob, ws->dfeat, ws->feat, it, y, B, terms, ws);
    student_backward(s, ws->dfeat);
    optim_step(o, p);
    if (trains_head) optim_step(oh, &ob->h->p);
    return 0;
}

void train_evaluate(const head *h, const float *F, const int *y, const int *dom, int N, int ndom, double *dom_acc,
                    double *acc, double *loss)
{
    enum { CHUNK = 256 };
    int C = h->C;
    float *ws = xmalloc((size_t)CHUNK * h->D * sizeof(float)), *logits = xmalloc((size_t)CHUNK * C * sizeof(float));
    long *right = xcalloc((size_t)ndom, sizeof(long)), *count = xcalloc((size_t)ndom, sizeof(long));
    double total = 0;
    for (int s = 0; s < N; s += CHUNK) {
        int B = N - s < CHUNK ? N - s : CHUNK;
        head_predict(h, logits, F + (size_t)s * h->Ds, B, ws);
        total += (double)crossentropy_forward(NULL, logits, y + s, B, C) * B;
        for (int i = 0; i < B; i++) {
            count[dom[s + i]]++;
            right[dom[s + i]] += clf_argmax(logits + (size_t)i * C, C) == y[s + i];
        }
    }
    double sum = 0;
    int have = 0;
    for (int d = 0; d < ndom; d++) {
        dom_acc[d] = count[d] ? (double)right[d] / count[d] : NAN;
        if (count[d]) sum += dom_acc[d], have++;
    }
    *acc = have ? sum / have : NAN;
    *loss = N ? total / N : NAN;
    free(ws);
    free(logits);
    free(right);
    free(count);
}

void train_sampler_init(train_sampler *s, const int *dom, int N, int ndom)
{
    s->ndom = ndom;
    s->n = xcalloc((size_t)ndom, sizeof(int));
    s->rows = xcalloc((size_t)ndom, sizeof(int *));
    for (int i = 0; i < N; i++) s->n[dom[i]]++;
    for (int d = 0; d < ndom; d++) s->rows[d] = xmalloc(((size_t)s->n[d] + 1) * sizeof(int));
    int *k = xcalloc((size_t)ndom, sizeof(int));
    for (int i = 0; i < N; i++) s->rows[dom[i]][k[dom[i]]++] = i;
    free(k);
}

void train_sampler_free(train_sampler *s)
{
    for (int d = 0; d < s->ndom; d++) free(s->rows[d]);
    free(s->rows);
    free(s->n);
    memset(s, 0, sizeof *s);
}

int train_sampler_batch(const train_sampler *s, uint64_t seed, int64_t step, int per_domain, int *idx)
{
    rng r;
    rng_for_key(&r, seed, "batch", 5, (uint64_t)step);
    int k = 0;
    for (int d = 0; d < s->ndom; d++)
        for (int j = 0; j < per_domain && s->n[d]; j++) idx[k++] = s->rows[d][rng_below(&r, (uint64_t)s->n[d])];
    return k;
}
