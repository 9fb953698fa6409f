/* transformer: pre-LN encoder stack, forward (inference or saving
 * activations) and backward. The residual linears write straight into the
 * residual stream (bias first, then sgemm with beta = 1), so a block costs
 * no extra passes over x. Backward recomputes the LayerNorm outputs and the
 * activation from the saved statistics and pre-activations instead of
 * storing them. */
#include "models/transformer.h"

#include "blas.h"
#include "nn/act.h"
#include "nn/attention.h"
#include "nn/layernorm.h"
#include "nn/linear.h"
#include "par.h"
#include "util.h"

#include <stdlib.h>
#include <string.h>

struct tf_acts {
    int L, NH, ntok, T; /* capacity: ntok = B*T tokens */
    size_t bytes;
    float *block;
    /* per block l, each an array of L pointers */
    float **x_in, **x_mid;     /* (N,C) block input; after the attention residual */
    float **mean1, **rstd1;    /* (N) */
    float **qkv;               /* (N,3C) */
    float **att;               /* (B,NH,T,T) */
    float **atty;              /* (N,C) attention output before out_proj */
    float **mean2, **rstd2;    /* (N) */
    float **h;                 /* (N,hidden) fc1 output before the activation */
};

size_t tf_block_size(const tf_config *c)
{
    size_t C = c->C, H = c->hidden;
    return 4 * C + 3 * C * C + 3 * C + C * C + C + H * C + H + C * H + C;
}

size_t tf_nparams(const tf_config *c) { return tf_block_size(c) * c->L; }

void tf_layout(const tf_config *c, float *base, tf_block *blocks)
{
    size_t C = c->C, H = c->hidden;
    for (int l = 0; l < c->L; l++) {
        tf_block *b = &blocks[l];
        float *p = base + tf_block_size(c) * l;
        b->ln1_w = p, p += C;
        b->ln1_b = p, p += C;
        b->qkv_w = p, p += 3 * C * C;
        b->qkv_b = p, p += 3 * C;
        b->proj_w = p, p += C * C;
        b->proj_b = p, p += C;
        b->ln2_w = p, p += C;
        b->ln2_b = p, p += C;
        b->fc1_w = p, p += H * C;
        b->fc1_b = p, p += H;
        b->fc2_w = p, p += C * H;
        b->fc2_b = p, p += C;
    }
}

/* 64-byte multiples so every array starts aligned */
static size_t al(size_t nfloats) { return (nfloats + 15) & ~(size_t)15; }

tf_acts *tf_acts_new(const tf_config *c, int B, int T)
{
    tf_acts *a = xcalloc(1, sizeof *a);
    size_t N = (size_t)B * T, C = c->C, L = c->L;
    a->L = c->L, a->NH = c->NH, a->ntok = B * T, a->T = T;
    size_t per = al(N * C) * 3 + al(N) * 4 + al(N * 3 * C) + al((size_t)B * c->NH * T * T) + al(N * c->hidden);
    a->bytes = per * L * sizeof(float);
    a->block = xmalloc_aligned(a->bytes);
    float ***arrs[] = {&a->x_in, &a->x_mid, &a->mean1, &a->rstd1, &a->qkv, &a->att, &a->atty, &a->mean2,
                       &a->rstd2, &a->h};
    for (size_t i = 0; i < sizeof arrs / sizeof *arrs; i++) *arrs[i] = xmalloc(L * sizeof(float *));
    float *p = a->block;
    for (size_t l = 0; l < L; l++) {
        a->x_in[l] = p, p += al(N * C);
        a->x_mid[l] = p, p += al(N * C);
        a->atty[l] = p, p += al(N * C);
        a->mean1[l] = p, p += al(N);
        a->rstd1[l] = p, p += al(N);
        a->mean2[l] = p, p += al(N);
        a->rstd2[l] = p, p += al(N);
        a->qkv[l] = p, p += al(N * 3 * C);
        a->att[l] = p, p += al((size_t)B * c->NH * T * T);
        a->h[l] = p, p += al(N * c->hidden);
    }
    return a;
}

void tf_acts_free(tf_acts *a)
{
    if (!a) return;
    free(a->block);
    free(a->x_in), free(a->x_mid), free(a->mean1), free(a->rstd1), free(a->qkv), free(a->att), free(a->atty);
    free(a->mean2), free(a->rstd2), free(a->h);
    free(a);
}

size_t tf_acts_bytes(const tf_acts *a) { return a->bytes; }

static void act_forward(int act, float *out, const float *inp, size_t n);
static void act_backward(int act, float *dinp, const float *dout, const float *inp, size_t n);

/* The row-wise passes between the GEMMs, rows side by side on the thread
 * pool (each row computed the same way on any split). */
typedef struct {
    int op, act, C;
    float *x, *y;
    const float *a, *w, *b, *mean, *rstd;
} rows_args;

enum { ROW_BIAS, ROW_BIAS_ACT, ROW_LN, ROW_DACT };

static void rows_range(void *ctx, int i0, int i1)
{
    const rows_args *a = ctx;
    int C = a->C;
    for (int i = i0; i < i1; i++) {
        float *r = a->x + (size_t)i * C;
        switch (a->op) {
        case ROW_BIAS: /* x += b */
        case ROW_BIAS_ACT: /* x += b, y = act(x) */
            for (int j = 0; j < C; j++) r[j] += a->b[j];
            if (a->op == ROW_BIAS_ACT) act_forward(a->act, a->y + (size_t)i * C, r, C);
            break;
        case ROW_LN: { /* x = LayerNorm(a) from the saved statistics */
            const float *in = a->a + (size_t)i * C, *w = a->w, *b = a->b;
            float m = a->mean[i], s = a->rstd[i];
            for (int j = 0; j < C; j++) r[j] = (in[j] - m) * s * w[j] + b[j];
            break;
        }
        case ROW_DACT: /* x = act'(w) * a, into zeros as act_backward adds */
            memset(r, 0, (size_t)C * sizeof(float));
            act_backward(a->act, r, a->a + (size_t)i * C, a->w + (size_t)i * C, C);
            break;
        }
    }
}

static void rows(rows_args a, int N) { par_for(N, (size_t)N * a.C * (a.op == ROW_BIAS ? 1 : 8), rows_range, &a); }

/* x (N,C) += inp (N,K) w^T (w (C,K)) + b (C): a residual linear in place */
static void residual_linear(float *x, const float *inp, const float *w, const float *b, int N, int K, int C)
{
    rows((rows_args){.op = ROW_BIAS, .C = C, .x = x, .b = b}, N);
    blas_sgemm(0, 1, N, C, K, 1, inp, K, w, K, 1, x, C);
}

static void act_forward(int act, float *out, const float *inp, size_t n)
{
    if (act == TF_QUICKGELU)
        quickgelu_forward(out, inp, n);
    else
        gelu_forward(out, inp, n);
}

static void act_backward(int act, float *dinp, const float *dout, const float *inp, size_t n)
{
    if (act == TF_QUICKGELU)
        quickgelu_backward(dinp, dout, inp, n);
    else
        gelu_backward(dinp, dout, inp, n);
}

void tf_forward(const tf_config *c, const tf_block *w, float *x, int B, int T, tf_acts *save)
{
    int N = B * T, C = c->C, H = c->hidden;
    float *ln = xmalloc_aligned((size_t)N * C * sizeof(float));
    float *qkv = NULL, *atty = NULL, *h = NULL;
    if (!save) {
        qkv = xmalloc_aligned((size_t)N * 3 * C * sizeof(float));
        atty = xmalloc_aligned((size_t)N * C * sizeof(float));
    }
    h = xmalloc_aligned((size_t)N * H * sizeof(float));
    for (int l = 0; l < c->L; l++) {
        const tf_block *b = &w[l];
        float *m1 = NULL, *s1 = NULL, *m2 = NULL, *s2 = NULL, *att = NULL, *hpre = h;
        if (save) {
            memcpy(save->x_in[l], x, (size_t)N * C * sizeof(float));
            m1 = save->mean1[l], s1 = save->rstd1[l], m2 = save->mean2[l], s2 = save->rstd2[l];
            qkv = save->qkv[l], att = save->att[l], atty = save->atty[l], hpre = save->h[l];
        }
        layernorm_forward(ln, m1, s1, x, b->ln1_w, b->ln1_b, N, C, c->eps);
        linear_forward(qkv, ln, b->qkv_w, b->qkv_b, N, C, 3 * C);
        attention_forward(atty, att, qkv, B, T, C, c->NH, c->causal);
        residual_linear(x, atty, b->proj_w, b->proj_b, N, C, C);
        if (save) memcpy(save->x_mid[l], x, (size_t)N * C * sizeof(float));
        layernorm_forward(ln, m2, s2, x, b->ln2_w, b->ln2_b, N, C, c->eps);
        /* fc1 without its bias, then bias and activation row by row while
         * the row is in cache */
        blas_sgemm(0, 1, N, H, C, 1, ln, C, b->fc1_w, C, 0, hpre, H);
        rows((rows_args){.op = ROW_BIAS_ACT, .act = c->act, .C = H, .x = hpre, .y = h, .b = b->fc1_b}, N);
        residual_linear(x, h, b->fc2_w, b->fc2_b, N, H, C);
    }
    free(ln), free(h);
    if (!save) free(qkv), free(atty);
}

/* LayerNorm output from the saved statistics */
static void ln_apply(float *out, const float *x, const float *mean, const float *rstd, const float *w, const float *b,
                     int N, int C)
{
    rows((rows_args){.op = ROW_LN, .C = C, .x = out, .a = x, .w = w, .b = b, .mean = mean, .rstd = rstd}, N);
}

int tf_lowest_trainable(const tf_config *c, const tf_block *g)
{
    if (!g) return c->L;
    for (int l = 0; l < c->L; l++) {
        const tf_block *b = &g[l];
        const float *t[12] = {b->ln1_w, b->ln1_b, b->qkv_w, b->qkv_b, b->proj_w, b->proj_b,
                              b->ln2_w, b->ln2_b, b->fc1_w, b->fc1_b, b->fc2_w, b->fc2_b};
        for (int k = 0; k < 12; k++)
            if (t[k]) return l;
    }
    return c->L;
}

int tf_backward(const tf_config *c, const tf_block *w, tf_block *g, float *dx, const tf_acts *a, int B, int T, int lo)
{
    if (lo < 0) lo = 0;
    if (lo >= c->L) return 0;
    int N = B * T, C = c->C, H = c->hidden;
    size_t nc = (size_t)N * C, nh = (size_t)N * H;
    float *ln = xmalloc_aligned(nc * sizeof(float));
    float *dln = xmalloc_aligned(nc * sizeof(float));
    float *hb = xmalloc_aligned(nh * sizeof(float));
    float *dh = xmalloc_aligned(nh * sizeof(float));
    float *dqkv = xmalloc_aligned(3 * nc * sizeof(float));
    for (int l = c->L - 1; l >= lo; l--) {
        const tf_block *b = &w[l];
        tf_block *gb = g ? &g[l] : NULL;
        /* MLP branch: x_out = x_mid + fc2(act(fc1(ln_2(x_mid)))) */
        act_forward(c->act, hb, a->h[l], nh);
        linear_backward(NULL, gb ? gb->fc2_w : NULL, gb ? gb->fc2_b : NULL, dx, hb, b->fc2_w, N, H, C);
        linear_backward_set(dh, NULL, NULL, dx, NULL, b->fc2_w, N, H, C); /* dh = d act output */
        /* hb = d fc1 output */
        rows((rows_args){.op = ROW_DACT, .act = c->act, .C = H, .x = hb, .a = dh, .w = a->h[l]}, N);
        ln_apply(ln, a->x_mid[l], a->mean2[l], a->rstd2[l], b->ln2_w, b->ln2_b, N, C);
        linear_backward_set(dln, gb ? gb->fc1_w : NULL, gb ? gb->fc1_b : NULL, hb, ln, b->fc1_w, N, C, H);
        layernorm_backward(dx, gb ? gb->ln2_w : NULL, gb ? gb->ln2_b : NULL, dln, a->x_mid[l], b->ln2_w, a->mean2[l],
                           a->rstd2[l], N, C);
        /* attention branch: x_mid = x_in + out_proj(attention(qkv(ln_1(x_in)))) */
        linear_backward_set(dln, gb ? gb->proj_w : NULL, gb ? gb->proj_b : NULL, dx, a->atty[l], b->proj_w, N, C, C);
        memset(dqkv, 0, 3 * nc * sizeof(float));
        attention_backward(dqkv, dln, a->qkv[l], a->att[l], B, T, C, c->NH);
        ln_apply(ln, a->x_in[l], a->mean1[l], a->rstd1[l], b->ln1_w, b->ln1_b, N, C);
        linear_backward_set(dln, gb ? gb->qkv_w : NULL, gb ? gb->qkv_b : NULL, dqkv, ln, b->qkv_w, N, C, 3 * C);
        layernorm_backward(dx, gb ? gb->ln1_w : NULL, gb ? gb->ln1_b : NULL, dln, a->x_in[l], b->ln1_w, a->mean1[l],
                           a->rstd1[l], N, C);
    }
    free(ln), free(dln), free(hb), free(dh), free(dqkv);
    return c->L - lo;
}
