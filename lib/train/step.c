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
    memset(ws, 0, sizeof *ws);
}

static void ws_reserve(train_ws *ws, const head *h, int B)
{
    if (B <= ws->cap) return;
    train_ws_free(ws);
    int w = h->D > h->C ? h->D : h->C;
    ws->out = xmalloc((size_t)B * w * sizeof(float));
    ws->dout = xmalloc((size_t)B * w * sizeof(float));
    ws->probs = xmalloc((size_t)B * h->C * sizeof(float));
    ws->c1 = xmalloc((size_t)B * sizeof(float));
    ws->c2 = xmalloc((size_t)B * sizeof(float));
    ws->cap = B;
}

float train_head_step(head *h, optim *o, const float *F, const float *it, const int *y, int B, int objective,
                      float lambda, train_terms *terms, train_ws *ws)
{
    ws_reserve(ws, h, B);
    param_zero_grad(&h->p);
    head_forward(h, ws->out, F, B);
    int D = h->D;
    train_terms t = {0};
    memset(ws->dout, 0, (size_t)B * D * sizeof(float));
    if (objective == TRAIN_COSINE) {
        t.loss = cosloss_forward(ws->c1, ws->c2, ws->out, lambda > 0 ? it : NULL, lambda < 1 ? h->text : NULL,
                                 lambda < 1 ? y : NULL, B, D, lambda);
        for (int i = 0; i < B; i++) {
            if (lambda > 0) t.cos_image += ws->c1[i];
            if (lambda < 1) t.cos_text += ws->c2[i];
        }
        t.cos_image /= B;
        t.cos_text /= B;
        cosloss_backward(ws->dout, ws->out, lambda > 0 ? it : NULL, lambda < 1 ? h->text : NULL, lambda < 1 ? y : NULL,
                         B, D, lambda, 1.0f);
    } else {
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
