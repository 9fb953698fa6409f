/* nn_transformer: the transformer ops and the encoder stack. Each fast kernel
 * is compared with its naive reference, and each backward pass with central
 * finite differences of the loss sum(out * R) for a fixed random R. Backward
 * passes must accumulate: gradients start from a nonzero value. */
#include "check.h"
#include "floats.h"

#include "blas.h"
#include "models/clip.h"
#include "models/transformer.h"
#include "models/vit.h"
#include "nn/act.h"
#include "nn/attention.h"
#include "nn/layernorm.h"
#include "nn/linear.h"
#include "nn/patch.h"
#include "rng.h"
#include "util.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static uint64_t rs = 0x9e3779b97f4a7c15ull;
static float frand(void)
{
    rs ^= rs << 13, rs ^= rs >> 7, rs ^= rs << 17;
    return (float)((rs >> 11) * (1.0 / 9007199254740992.0)) * 2 - 1;
}
static float *rnd(size_t n, float s)
{
    float *p = xmalloc(n * sizeof(float));
    for (size_t i = 0; i < n; i++) p[i] = frand() * s;
    return p;
}
static float *fill(size_t n, float v)
{
    float *p = xmalloc(n * sizeof(float));
    for (size_t i = 0; i < n; i++) p[i] = v;
    return p;
}
static float maxdiff(const float *a, const float *b, size_t n)
{
    float m = 0;
    for (size_t i = 0; i < n; i++) m = fmaxf(m, fabsf(a[i] - b[i]));
    return m;
}
static double dot(const float *a, const float *b, size_t n)
{
    double s = 0;
    for (size_t i = 0; i < n; i++) s += (double)a[i] * b[i];
    return s;
}

/* The loss of the op under test, from its current inputs. */
typedef double (*loss_fn)(void *ctx);

/* Checks grad (which started at `base` everywhere) against central
 * differences of loss w.r.t. x at up to 40 positions; returns the worst
 * relative error. */
static double fd(loss_fn f, void *ctx, float *x, const float *grad, size_t n, float base, float h)
{
    double worst = 0;
    size_t step = n > 40 ? n / 40 : 1;
    for (size_t i = step / 2; i < n; i += step) {
        float x0 = x[i];
        x[i] = x0 + h;
        double lp = f(ctx);
        x[i] = x0 - h;
        double lm = f(ctx);
        x[i] = x0;
        double num = (lp - lm) / (2.0 * h), ana = grad[i] - base;
        double e = fabs(num - ana) / fmax(1.0, fabs(num) + fabs(ana));
        if (e > worst) worst = e;
    }
    return worst;
}

#define FD_TOL 2e-3

/* ---- linear ---- */
struct lin {
    float *out, *inp, *w, *b, *r;
    int N, C, OC;
};
static double lin_loss(void *p)
{
    struct lin *c = p;
    linear_forward_ref(c->out, c->inp, c->w, c->b, c->N, c->C, c->OC);
    return dot(c->out, c->r, (size_t)c->N * c->OC);
}
static void test_linear(void)
{
    struct lin c = {.N = 7, .C = 13, .OC = 5};
    size_t ni = c.N * c.C, nw = c.OC * c.C, no = c.N * c.OC;
    c.inp = rnd(ni, 1), c.w = rnd(nw, 1), c.b = rnd(c.OC, 1), c.r = rnd(no, 1);
    c.out = xmalloc(no * 4);
    float *o2 = xmalloc(no * 4);
    linear_forward(o2, c.inp, c.w, c.b, c.N, c.C, c.OC);
    linear_forward_ref(c.out, c.inp, c.w, c.b, c.N, c.C, c.OC);
    CHECK(maxdiff(o2, c.out, no) < 1e-5, "linear forward = reference");
    linear_forward(o2, c.inp, c.w, NULL, c.N, c.C, c.OC);
    linear_forward_ref(c.out, c.inp, c.w, NULL, c.N, c.C, c.OC);
    CHECK(maxdiff(o2, c.out, no) < 1e-5, "linear forward without bias = reference");
    float *di = fill(ni, .5f), *dw = fill(nw, .5f), *db = fill(c.OC, .5f);
    float *di2 = fill(ni, .5f), *dw2 = fill(nw, .5f), *db2 = fill(c.OC, .5f);
    linear_backward(di, dw, db, c.r, c.inp, c.w, c.N, c.C, c.OC);
    linear_backward_ref(di2, dw2, db2, c.r, c.inp, c.w, c.N, c.C, c.OC);
    CHECK(maxdiff(di, di2, ni) < 1e-5 && maxdiff(dw, dw2, nw) < 1e-5 && maxdiff(db, db2, c.OC) < 1e-5,
          "linear backward = reference");
    CHECK(fd(lin_loss, &c, c.inp, di, ni, .5f, 1e-2f) < FD_TOL, "linear dinp = finite differences");
    CHECK(fd(lin_loss, &c, c.w, dw, nw, .5f, 1e-2f) < FD_TOL, "linear dw = finite differences");
    CHECK(fd(lin_loss, &c, c.b, db, c.OC, .5f, 1e-2f) < FD_TOL, "linear db = finite differences");
    float *dw3 = fill(nw, .5f);
    linear_backward(NULL, dw3, NULL, c.r, c.inp, c.w, c.N, c.C, c.OC);
    CHECK(maxdiff(dw3, dw, nw) < 1e-5, "linear backward with NULL dinp/db skips them");
    free(c.inp), free(c.w), free(c.b), free(c.r), free(c.out), free(o2), free(di), free(dw), free(db), free(di2);
    free(dw2), free(db2), free(dw3);
}

/* ---- layernorm ---- */
struct ln {
    float *out, *inp, *w, *b, *r;
    int N, C;
};
static double ln_loss(void *p)
{
    struct ln *c = p;
    layernorm_forward_ref(c->out, NULL, NULL, c->inp, c->w, c->b, c->N, c->C, 1e-5f);
    return dot(c->out, c->r, (size_t)c->N * c->C);
}
static void test_layernorm(void)
{
    struct ln c = {.N = 6, .C = 24};
    size_t n = c.N * c.C;
    c.inp = rnd(n, 2), c.w = rnd(c.C, 1), c.b = rnd(c.C, 1), c.r = rnd(n, 1), c.out = xmalloc(n * 4);
    for (size_t i = 0; i < n; i++) c.inp[i] += 3; /* an offset mean */
    float *o2 = xmalloc(n * 4), *m = xmalloc(c.N * 4), *s = xmalloc(c.N * 4), *m2 = xmalloc(c.N * 4),
          *s2 = xmalloc(c.N * 4);
    layernorm_forward(o2, m, s, c.inp, c.w, c.b, c.N, c.C, 1e-5f);
    layernorm_forward_ref(c.out, m2, s2, c.inp, c.w, c.b, c.N, c.C, 1e-5f);
    CHECK(maxdiff(o2, c.out, n) < 1e-5 && maxdiff(m, m2, c.N) < 1e-5 && maxdiff(s, s2, c.N) < 1e-4,
          "layernorm forward = reference");
    float *di = fill(n, .5f), *dw = fill(c.C, .5f), *db = fill(c.C, .5f);
    layernorm_backward(di, dw, db, c.r, c.inp, c.w, m, s, c.N, c.C);
    CHECK(fd(ln_loss, &c, c.inp, di, n, .5f, 1e-2f) < FD_TOL, "layernorm dinp = finite differences");
    CHECK(fd(ln_loss, &c, c.w, dw, c.C, .5f, 1e-2f) < FD_TOL, "layernorm dw = finite differences");
    CHECK(fd(ln_loss, &c, c.b, db, c.C, .5f, 1e-2f) < FD_TOL, "layernorm db = finite differences");
    free(c.inp), free(c.w), free(c.b), free(c.r), free(c.out), free(o2), free(m), free(s), free(m2), free(s2);
    free(di), free(dw), free(db);
}

/* ---- activations ---- */
struct act {
    float *out, *inp, *r;
    size_t n;
    int quick;
};
static double act_loss(void *p)
{
    struct act *c = p;
    (c->quick ? quickgelu_forward : gelu_forward)(c->out, c->inp, c->n);
    return dot(c->out, c->r, c->n);
}
static void test_act(int quick)
{
    const char *name = quick ? "quickgelu" : "gelu";
    struct act c = {.n = 200, .quick = quick};
    c.inp = rnd(c.n, 4), c.r = rnd(c.n, 1), c.out = xmalloc(c.n * 4);
    act_loss(&c);
    double worst = 0;
    for (size_t i = 0; i < c.n; i++) {
        double x = c.inp[i];
        double y = quick ? x / (1 + exp(-1.702 * x)) : 0.5 * x * (1 + erf(x / sqrt(2.0)));
        worst = fmax(worst, fabs(y - c.out[i]));
    }
    CHECK(worst < 1e-5, "%s forward = double-precision formula", name);
    float nanv[4] = {NAN, INFINITY, -100, 100}, nano[4];
    (quick ? quickgelu_forward : gelu_forward)(nano, nanv, 4);
    CHECK(isnan(nano[0]) && nano[1] == INFINITY && fabsf(nano[2]) < 1e-30f && nano[3] == 100,
          "%s: NaN stays NaN, f(inf) = inf, f(-100) = 0, f(100) = 100 (got %g %g %g %g)", name, nano[0], nano[1],
          nano[2], nano[3]);
    float *di = fill(c.n, .5f);
    (quick ? quickgelu_backward : gelu_backward)(di, c.r, c.inp, c.n);
    CHECK(fd(act_loss, &c, c.inp, di, c.n, .5f, 1e-2f) < FD_TOL, "%s backward = finite differences", name);
    free(c.inp), free(c.r), free(c.out), free(di);
}

/* ---- the row-wise ops on the thread pool ---- */
/* LayerNorm forward and backward, GELU and QuickGELU forward and backward
 * and linear's bias gradient on sizes that the pool splits: 2 and 3
 * threads give one thread's bytes (one thread runs the plain loops) */
static void test_rows_threads(void)
{
    int N = 45, C = 1000, OC = 1030, threads = blas_get_threads(), ok = 1;
    size_t n = (size_t)N * C, na = 100003;
    float *x = rnd(n, 2), *w = rnd(C, 1), *b = rnd(C, 1), *r = rnd(n, 1), *ax = rnd(na, 4), *ar = rnd(na, 1);
    float *dl = rnd((size_t)N * OC, 1);
    float *out[3], *mean[3], *rstd[3], *di[3], *dw[3], *db[3], *ao[3], *qo[3], *ad[3], *qd[3], *lb[3];
    for (int t = 0; t < 3; t++) {
        blas_set_threads(t + 1);
        out[t] = xmalloc(n * 4), mean[t] = xmalloc(N * 4), rstd[t] = xmalloc(N * 4);
        di[t] = fill(n, .5f), dw[t] = fill(C, .5f), db[t] = fill(C, .5f);
        layernorm_forward(out[t], mean[t], rstd[t], x, w, b, N, C, 1e-5f);
        layernorm_backward(di[t], dw[t], db[t], r, x, w, mean[t], rstd[t], N, C);
        ao[t] = xmalloc(na * 4), qo[t] = xmalloc(na * 4), ad[t] = fill(na, .5f), qd[t] = fill(na, .5f);
        gelu_forward(ao[t], ax, na);
        quickgelu_forward(qo[t], ax, na);
        gelu_backward(ad[t], ar, ax, na);
        quickgelu_backward(qd[t], ar, ax, na);
        lb[t] = fill(OC, .25f);
        linear_backward(NULL, NULL, lb[t], dl, NULL, NULL, N, C, OC);
        if (t == 0) continue;
        ok &= memcmp(out[t], out[0], n * 4) == 0 && memcmp(mean[t], mean[0], N * 4) == 0 &&
              memcmp(rstd[t], rstd[0], N * 4) == 0 && memcmp(di[t], di[0], n * 4) == 0 &&
              memcmp(dw[t], dw[0], C * 4) == 0 && memcmp(db[t], db[0], C * 4) == 0;
        ok &= memcmp(ao[t], ao[0], na * 4) == 0 && memcmp(qo[t], qo[0], na * 4) == 0 &&
              memcmp(ad[t], ad[0], na * 4) == 0 && memcmp(qd[t], qd[0], na * 4) == 0;
        ok &= memcmp(lb[t], lb[0], OC * 4) == 0;
    }
    blas_set_threads(threads);
    /* and the bias gradient is the rows' sum in order */
    float *lr = fill(OC, .25f);
    for (int i = 0; i < N; i++)
        for (int o = 0; o < OC; o++) lr[o] += dl[(size_t)i * OC + o];
    ok &= memcmp(lr, lb[0], OC * 4) == 0;
    CHECK(ok, "layernorm, gelu, quickgelu, linear bias gradient: 1, 2 and 3 threads give the same bytes");
    for (int t = 0; t < 3; t++) {
        free(out[t]), free(mean[t]), free(rstd[t]), free(di[t]), free(dw[t]), free(db[t]);
        free(ao[t]), free(qo[t]), free(ad[t]), free(qd[t]), free(lb[t]);
    }
    free(x), free(w), free(b), free(r), free(ax), free(ar), free(dl), free(lr);

    /* linear_backward_set: dinp set (its NaNs never read) to what
     * accumulating into zeros gives, small and split GEMMs; dw, db add */
    int sets = 1;
    for (int k = 0; k < 2; k++) {
        int LN = k ? 70 : 7, LC = k ? 200 : 13, LO = k ? 300 : 5;
        size_t ni = (size_t)LN * LC, nw = (size_t)LO * LC, no = (size_t)LN * LO;
        float *li = rnd(ni, 1), *lw = rnd(nw, 1), *ld = rnd(no, 1);
        float *d0 = fill(ni, 0), *d1 = fill(ni, NAN), *w0 = fill(nw, .5f), *w1 = fill(nw, .5f);
        float *b0 = fill(LO, .5f), *b1 = fill(LO, .5f);
        linear_backward(d0, w0, b0, ld, li, lw, LN, LC, LO);
        linear_backward_set(d1, w1, b1, ld, li, lw, LN, LC, LO);
        sets &= memcmp(d0, d1, ni * 4) == 0 && memcmp(w0, w1, nw * 4) == 0 && memcmp(b0, b1, LO * 4) == 0;
        free(li), free(lw), free(ld), free(d0), free(d1), free(w0), free(w1), free(b0), free(b1);
    }
    CHECK(sets, "linear backward setting dinp gives accumulating into zeros' bytes");
}

/* ---- attention ---- */
struct att {
    float *out, *att, *qkv, *r;
    int B, T, C, NH, causal;
};
static double att_loss(void *p)
{
    struct att *c = p;
    attention_forward_ref(c->out, NULL, c->qkv, c->B, c->T, c->C, c->NH, c->causal);
    return dot(c->out, c->r, (size_t)c->B * c->T * c->C);
}
static void test_attention(int causal)
{
    const char *name = causal ? "causal attention" : "attention";
    struct att c = {.B = 2, .T = 7, .C = 12, .NH = 3, .causal = causal};
    size_t no = c.B * c.T * c.C, nq = 3 * no, na = (size_t)c.B * c.NH * c.T * c.T;
    c.qkv = rnd(nq, 1.5f), c.r = rnd(no, 1), c.out = xmalloc(no * 4), c.att = xmalloc(na * 4);
    float *o2 = xmalloc(no * 4), *a2 = xmalloc(na * 4), *o3 = xmalloc(no * 4);
    attention_forward(o2, a2, c.qkv, c.B, c.T, c.C, c.NH, causal);
    attention_forward_ref(c.out, c.att, c.qkv, c.B, c.T, c.C, c.NH, causal);
    CHECK(maxdiff(o2, c.out, no) < 1e-5 && maxdiff(a2, c.att, na) < 1e-5, "%s forward = reference", name);
    attention_forward(o3, NULL, c.qkv, c.B, c.T, c.C, c.NH, causal);
    CHECK(maxdiff(o2, o3, no) == 0, "%s forward without saved probabilities gives the same bytes", name);
    float *dq = fill(nq, .5f);
    attention_backward(dq, c.r, c.qkv, a2, c.B, c.T, c.C, c.NH);
    CHECK(fd(att_loss, &c, c.qkv, dq, nq, .5f, 1e-2f) < FD_TOL, "%s backward = finite differences", name);
    /* the (batch, head) pairs shared over 1, 2, 4 and 64 threads (more threads
     * than pairs): the same bytes, forward and backward */
    int threads = blas_get_threads(), same = 1;
    float *dq1 = fill(nq, .5f), *dq2 = xmalloc(nq * 4);
    blas_set_threads(1);
    attention_backward(dq1, c.r, c.qkv, a2, c.B, c.T, c.C, c.NH);
    for (int th = 2; th <= 64; th *= th == 4 ? 16 : 2) {
        blas_set_threads(th);
        attention_forward(o3, c.att, c.qkv, c.B, c.T, c.C, c.NH, causal);
        same = same && maxdiff(o2, o3, no) == 0 && maxdiff(a2, c.att, na) == 0;
        for (size_t i = 0; i < nq; i++) dq2[i] = .5f;
        attention_backward(dq2, c.r, c.qkv, a2, c.B, c.T, c.C, c.NH);
        same = same && maxdiff(dq1, dq2, nq) == 0;
    }
    blas_set_threads(threads);
    CHECK(same, "%s: 1, 2, 4 and 64 threads give the same bytes, forward and backward", name);
    free(dq1), free(dq2);
    free(c.qkv), free(c.r), free(c.out), free(c.att), free(o2), free(a2), free(o3), free(dq);
}

/* ---- patch embedding ---- */
struct pe {
    float *out, *inp, *w, *b, *r;
    int B, IC, H, W, OC, P;
};
static double pe_loss(void *p)
{
    struct pe *c = p;
    patch_forward_ref(c->out, c->inp, c->w, c->b, c->B, c->IC, c->H, c->W, c->OC, c->P);
    return dot(c->out, c->r, (size_t)c->B * (c->H / c->P) * (c->W / c->P) * c->OC);
}
static void test_patch(void)
{
    struct pe c = {.B = 2, .IC = 3, .H = 9, .W = 12, .OC = 5, .P = 4}; /* 9 rows: a partial patch row */
    size_t ni = c.B * c.IC * c.H * c.W, nw = c.OC * c.IC * c.P * c.P, no = c.B * 2 * 3 * c.OC;
    c.inp = rnd(ni, 1), c.w = rnd(nw, 1), c.b = rnd(c.OC, 1), c.r = rnd(no, 1), c.out = xmalloc(no * 4);
    float *o2 = xmalloc(no * 4);
    patch_forward(o2, c.inp, c.w, c.b, c.B, c.IC, c.H, c.W, c.OC, c.P);
    pe_loss(&c);
    CHECK(maxdiff(o2, c.out, no) < 1e-5, "patch embedding forward = direct convolution");
    patch_forward(o2, c.inp, c.w, NULL, c.B, c.IC, c.H, c.W, c.OC, c.P);
    patch_forward_ref(c.out, c.inp, c.w, NULL, c.B, c.IC, c.H, c.W, c.OC, c.P);
    CHECK(maxdiff(o2, c.out, no) < 1e-5, "patch embedding without bias = direct convolution");
    float *di = fill(ni, .5f), *dw = fill(nw, .5f), *db = fill(c.OC, .5f);
    patch_backward(di, dw, db, c.r, c.inp, c.w, c.B, c.IC, c.H, c.W, c.OC, c.P);
    CHECK(fd(pe_loss, &c, c.inp, di, ni, .5f, 1e-2f) < FD_TOL, "patch embedding dinp = finite differences");
    CHECK(fd(pe_loss, &c, c.w, dw, nw, .5f, 1e-2f) < FD_TOL, "patch embedding dw = finite differences");
    CHECK(fd(pe_loss, &c, c.b, db, c.OC, .5f, 1e-2f) < FD_TOL, "patch embedding db = finite differences");
    free(c.inp), free(c.w), free(c.b), free(c.r), free(c.out), free(o2), free(di), free(dw), free(db);
}


/* ---- the whole stack ---- */
/* The stack from the naive ops, as the reference. */
static void stack_ref(const tf_config *c, const tf_block *w, float *x, int B, int T)
{
    int N = B * T, C = c->C, H = c->hidden;
    float *ln = xmalloc((size_t)N * C * 4), *qkv = xmalloc((size_t)N * 3 * C * 4), *y = xmalloc((size_t)N * C * 4),
          *p = xmalloc((size_t)N * C * 4), *h = xmalloc((size_t)N * H * 4), *ha = xmalloc((size_t)N * H * 4);
    for (int l = 0; l < c->L; l++) {
        const tf_block *b = &w[l];
        layernorm_forward_ref(ln, NULL, NULL, x, b->ln1_w, b->ln1_b, N, C, c->eps);
        linear_forward_ref(qkv, ln, b->qkv_w, b->qkv_b, N, C, 3 * C);
        attention_forward_ref(y, NULL, qkv, B, T, C, c->NH, c->causal);
        linear_forward_ref(p, y, b->proj_w, b->proj_b, N, C, C);
        for (int i = 0; i < N * C; i++) x[i] += p[i];
        layernorm_forward_ref(ln, NULL, NULL, x, b->ln2_w, b->ln2_b, N, C, c->eps);
        linear_forward_ref(h, ln, b->fc1_w, b->fc1_b, N, C, H);
        for (int i = 0; i < N * H; i++) {
            double v = h[i];
            ha[i] = (float)(c->act == TF_QUICKGELU ? v / (1 + exp(-1.702 * v)) : 0.5 * v * (1 + erf(v / sqrt(2.0))));
        }
        linear_forward_ref(p, ha, b->fc2_w, b->fc2_b, N, H, C);
        for (int i = 0; i < N * C; i++) x[i] += p[i];
    }
    free(ln), free(qkv), free(y), free(p), free(h), free(ha);
}

struct stk {
    tf_config c;
    tf_block *w;
    float *x0, *x, *r;
    int B, T;
};
static double stk_loss(void *p)
{
    struct stk *s = p;
    size_t n = (size_t)s->B * s->T * s->c.C;
    memcpy(s->x, s->x0, n * 4);
    stack_ref(&s->c, s->w, s->x, s->B, s->T);
    return dot(s->x, s->r, n);
}
static void test_stack(int causal)
{
    const char *name = causal ? "causal QuickGELU stack" : "GELU stack";
    struct stk s = {.c = {.C = 8, .NH = 2, .L = 2, .hidden = 12, .act = causal ? TF_QUICKGELU : TF_GELU,
                          .causal = causal, .eps = 1e-5f},
                    .B = 2, .T = 5};
    size_t np = tf_nparams(&s.c), n = (size_t)s.B * s.T * s.c.C;
    float *params = rnd(np, 0.5f), *grads = fill(np, .5f);
    s.w = xmalloc(s.c.L * sizeof(tf_block));
    tf_block *g = xmalloc(s.c.L * sizeof(tf_block));
    tf_layout(&s.c, params, s.w);
    tf_layout(&s.c, grads, g);
    for (int l = 0; l < s.c.L; l++)
        for (int i = 0; i < s.c.C; i++) s.w[l].ln1_w[i] += 1, s.w[l].ln2_w[i] += 1;
    s.x0 = rnd(n, 1), s.x = xmalloc(n * 4), s.r = rnd(n, 1);
    float *xf = xmalloc(n * 4), *xs = xmalloc(n * 4);
    memcpy(xf, s.x0, n * 4);
    tf_forward(&s.c, s.w, xf, s.B, s.T, NULL);
    stk_loss(&s);
    CHECK(maxdiff(xf, s.x, n) < 1e-5, "%s forward = stack of reference ops", name);
    tf_acts *a = tf_acts_new(&s.c, s.B, s.T);
    memcpy(xs, s.x0, n * 4);
    tf_forward(&s.c, s.w, xs, s.B, s.T, a);
    CHECK(maxdiff(xf, xs, n) == 0, "%s forward saving activations gives the same bytes", name);
    float *dx = xmalloc(n * 4), *dx2 = xmalloc(n * 4);
    memcpy(dx, s.r, n * 4);
    CHECK(tf_backward(&s.c, s.w, g, dx, a, s.B, s.T, 0) == s.c.L, "%s backward visits every block", name);
    memcpy(dx2, s.r, n * 4);
    tf_backward(&s.c, s.w, NULL, dx2, a, s.B, s.T, 0);
    CHECK(maxdiff(dx, dx2, n) == 0, "%s backward without parameter gradients gives the same dx", name);
    float *dxb = fill(n, .5f);
    for (size_t i = 0; i < n; i++) dxb[i] += dx[i];
    CHECK(fd(stk_loss, &s, s.x0, dxb, n, .5f, 1e-2f) < FD_TOL, "%s dx = finite differences", name);
    CHECK(fd(stk_loss, &s, params, grads, np, .5f, 1e-2f) < FD_TOL,
          "%s parameter gradients (all tensors, sampled) = finite differences", name);
    /* every tensor of the first block, so each backward path is covered */
    float *pw[] = {s.w[0].ln1_w, s.w[0].ln1_b, s.w[0].qkv_w, s.w[0].qkv_b, s.w[0].proj_w, s.w[0].proj_b,
                   s.w[0].ln2_w, s.w[0].ln2_b, s.w[0].fc1_w, s.w[0].fc1_b, s.w[0].fc2_w, s.w[0].fc2_b};
    float *pg[] = {g[0].ln1_w, g[0].ln1_b, g[0].qkv_w, g[0].qkv_b, g[0].proj_w, g[0].proj_b,
                   g[0].ln2_w, g[0].ln2_b, g[0].fc1_w, g[0].fc1_b, g[0].fc2_w, g[0].fc2_b};
    size_t C = s.c.C, H = s.c.hidden;
    size_t pn[] = {C, C, 3 * C * C, 3 * C, C * C, C, C, C, H * C, H, C * H, C};
    double worst = 0;
    for (int i = 0; i < 12; i++) worst = fmax(worst, fd(stk_loss, &s, pw[i], pg[i], pn[i], .5f, 1e-2f));
    CHECK(worst < FD_TOL, "%s first-block gradients, every tensor = finite differences (worst %.2g)", name, worst);
    tf_acts_free(a);
    free(params), free(grads), free(s.w), free(g), free(s.x0), free(s.x), free(s.r), free(xf), free(xs);
    free(dx), free(dx2), free(dxb);
}

/* ---- frozen lower blocks: the backward pass stops at the lowest block that
 * trains, and the gradients it gives are the full pass's, byte for byte ---- */

static void test_stack_frozen(void)
{
    tf_config c = {.C = 8, .NH = 2, .L = 4, .hidden = 12, .act = TF_GELU, .eps = 1e-6f};
    int B = 2, T = 5;
    size_t np = tf_nparams(&c), n = (size_t)B * T * c.C, bs = tf_block_size(&c);
    float *params = rnd(np, 0.5f), *g1 = fill(np, .5f), *g2 = fill(np, .5f), *x = rnd(n, 1), *r = rnd(n, 1);
    tf_block *w = xmalloc(c.L * sizeof(tf_block)), *gf = xmalloc(c.L * sizeof(tf_block));
    tf_block *gp = xmalloc(c.L * sizeof(tf_block));
    tf_layout(&c, params, w);
    tf_layout(&c, g1, gf);
    tf_layout(&c, g2, gp);
    for (int l = 0; l < 2; l++) gp[l] = (tf_block){0}; /* blocks 0 and 1 frozen */
    gp[2].fc2_w = gp[2].ln1_w = NULL;                  /* and two tensors of block 2 */
    tf_acts *a = tf_acts_new(&c, B, T);
    tf_forward(&c, w, x, B, T, a);
    float *dx = xmalloc(n * 4);
    memcpy(dx, r, n * 4);
    int full = tf_backward(&c, w, gf, dx, a, B, T, 0);
    int lo = tf_lowest_trainable(&c, gp);
    memcpy(dx, r, n * 4);
    int part = tf_backward(&c, w, gp, dx, a, B, T, lo);
    CHECK(lo == 2 && full == 4 && part == 2, "stack with blocks 0-1 frozen: backward visits 2 of 4 blocks "
          "(lowest trainable %d, visited %d, full pass %d)", lo, part, full);
    /* block 2 without its two frozen tensors, block 3 whole */
    int ok = same(gf[3].ln1_w, gp[3].ln1_w, bs);
    float *t1[] = {gf[2].ln1_b, gf[2].qkv_w, gf[2].qkv_b, gf[2].proj_w, gf[2].proj_b, gf[2].ln2_w, gf[2].ln2_b,
                   gf[2].fc1_w, gf[2].fc1_b, gf[2].fc2_b};
    float *t2[] = {gp[2].ln1_b, gp[2].qkv_w, gp[2].qkv_b, gp[2].proj_w, gp[2].proj_b, gp[2].ln2_w, gp[2].ln2_b,
                   gp[2].fc1_w, gp[2].fc1_b, gp[2].fc2_b};
    size_t C = c.C, H = c.hidden, tn[] = {C, 3 * C * C, 3 * C, C * C, C, C, C, H * C, H, C};
    for (int k = 0; k < 10; k++) ok &= same(t1[k], t2[k], tn[k]);
    CHECK(ok, "stack with blocks 0-1 frozen: the trainable tensors' gradients are the full pass's, byte for byte");
    int untouched = 1;
    for (size_t i = 0; i < 2 * bs; i++) untouched &= g2[i] == .5f;
    size_t o_ln1 = gf[2].ln1_w - g1, o_fc2 = gf[2].fc2_w - g1;
    for (size_t i = 0; i < C; i++) untouched &= g2[o_ln1 + i] == .5f;
    for (size_t i = 0; i < C * H; i++) untouched &= g2[o_fc2 + i] == .5f;
    CHECK(untouched, "stack with blocks 0-1 frozen: no frozen tensor's gradient is written");
    tf_block *none = xmalloc(c.L * sizeof(tf_block));
    for (int l = 0; l < c.L; l++) none[l] = (tf_block){0};
    CHECK(tf_lowest_trainable(&c, none) == c.L && tf_lowest_trainable(&c, NULL) == c.L &&
              tf_backward(&c, w, none, dx, a, B, T, c.L) == 0,
          "stack with every block frozen: the backward pass visits none");
    tf_acts_free(a);
    free(params), free(g1), free(g2), free(x), free(r), free(w), free(gf), free(gp), free(dx), free(none);
}

static void test_vit_frozen(void)
{
    /* a 3-block ViT on 8x8 images of 4x4 patches */
    int B = 2, S = 8, L = 3;
    vit *m[2];
    float *feat = xmalloc((size_t)B * 8 * 4), *df = rnd((size_t)B * 8, 1), *img = rnd((size_t)B * 3 * S * S, 1);
    for (int k = 0; k < 2; k++) {
        m[k] = vit_new_custom(8, L, 2, 4, S, 0);
        params *p = vit_params(m[k]);
        rs = 0x9e3779b97f4a7c15ull;
        float *v = rnd(p->numel, 0.5f);
        memcpy(p->data, v, p->numel * 4);
        free(v);
        for (int i = 0; i < p->n; i++)
            if (strstr(p->t[i].name, "norm") && strstr(p->t[i].name, "weight"))
                for (size_t j = 0; j < p->t[i].numel; j++) param_data(p, i)[j] += 1;
        if (k == 1) {
            param_freeze(p, "cls_token", 1);
            param_freeze(p, "pos_embed", 1);
            param_freeze(p, "patch_embed", 1);
            param_freeze(p, "blocks.0", 1);
        }
        param_zero_grad(p);
        char err[VL_ERRLEN];
        CHECK(vit_forward(m[k], feat, img, B, S, S, 1, err) == 0, "ViT forward (%s)", k ? "frozen" : "full");
        vit_backward(m[k], df);
    }
    params *pf = vit_params(m[0]), *pp = vit_params(m[1]);
    int ok = 1, nt = 0;
    for (int i = 0; i < pp->n; i++) {
        float *g = param_grad(pp, i);
        if (!g) continue;
        nt++;
        ok &= same(g, param_grad(pf, i), pp->t[i].numel);
    }
    CHECK(vit_backward_blocks(m[0]) == L && vit_backward_blocks(m[1]) == L - 1,
          "ViT with the embeddings and blocks.0 frozen: backward visits %d of %d blocks (full pass %d)",
          vit_backward_blocks(m[1]), L, vit_backward_blocks(m[0]));
    CHECK(ok && nt == 2 * 12 + 2, "ViT with the embeddings and blocks.0 frozen: the %d trainable tensors' "
          "gradients are the full pass's, byte for byte", nt);
    param_freeze(pp, "blocks", 1);
    param_zero_grad(pp);
    char err[VL_ERRLEN];
    vit_forward(m[1], feat, img, B, S, S, 1, err);
    vit_backward(m[1], df);
    CHECK(vit_backward_blocks(m[1]) == 0, "ViT with only the final norm trainable: backward visits no block");
    vit_free(m[0]), vit_free(m[1]);
    free(feat), free(df), free(img);
}

/* ---- the CLIP image tower (training path) ---- */
struct vis {
    clip_vision v;
    float *pix, *out, *r;
    int B;
};
static double vis_loss(void *p)
{
    struct vis *c = p;
    clip_vision_forward(&c->v, c->pix, c->B, c->out, NULL);
    return dot(c->out, c->r, (size_t)c->B * c->v.D);
}
static void test_clip_vision(void)
{
    struct vis c = {.v = {.tf = {.C = 8, .NH = 2, .L = 2, .hidden = 12, .act = TF_QUICKGELU, .eps = 1e-5f},
                          .S = 8, .P = 4, .D = 5},
                    .B = 2};
    size_t np = clip_vision_nparams(&c.v), npix = (size_t)c.B * 3 * 8 * 8, no = (size_t)c.B * c.v.D;
    float *params = rnd(np, 0.5f), *grads = fill(np, .5f);
    clip_vision_layout(&c.v, params);
    clip_vision g;
    clip_vision_like(&g, &c.v, grads);
    for (int i = 0; i < c.v.tf.C; i++) c.v.ln_pre_w[i] += 1, c.v.ln_post_w[i] += 1;
    c.pix = rnd(npix, 1), c.r = rnd(no, 1), c.out = xmalloc(no * 4);
    float *o2 = xmalloc(no * 4);
    vis_loss(&c);
    clip_vision_acts *a = clip_vision_acts_new(&c.v, c.B);
    clip_vision_forward(&c.v, c.pix, c.B, o2, a);
    CHECK(maxdiff(o2, c.out, no) == 0, "CLIP image tower: forward saving activations gives the same bytes");
    clip_vision_backward(&c.v, &g, c.r, c.pix, a, c.B);
    CHECK(fd(vis_loss, &c, params, grads, np, .5f, 1e-2f) < FD_TOL,
          "CLIP image tower: parameter gradients (sampled over the block) = finite differences");
    float *pw[] = {c.v.patch_w, c.v.cls, c.v.pos, c.v.ln_pre_w, c.v.ln_pre_b, c.v.ln_post_w, c.v.ln_post_b, c.v.proj,
                   c.v.blocks[0].qkv_w, c.v.blocks[1].fc2_b};
    float *pg[] = {g.patch_w, g.cls, g.pos, g.ln_pre_w, g.ln_pre_b, g.ln_post_w, g.ln_post_b, g.proj,
                   g.blocks[0].qkv_w, g.blocks[1].fc2_b};
    size_t C = 8, pn[] = {C * 3 * 16, C, 5 * C, C, C, C, C, 5 * C, 3 * C * C, C};
    double worst = 0;
    for (int i = 0; i < 10; i++) worst = fmax(worst, fd(vis_loss, &c, pw[i], pg[i], pn[i], .5f, 1e-2f));
    CHECK(worst < FD_TOL, "CLIP image tower: every embedding, norm and projection gradient = finite differences "
                          "(worst %.2g)", worst);
    /* embeddings, ln_pre and block 0 frozen: block 1, ln_post and proj get the
     * full pass's gradients, byte for byte, and nothing else is written */
    float *full = fill(np, .5f), *part = fill(np, .5f);
    clip_vision gf, gp;
    clip_vision_like(&gf, &c.v, full);
    clip_vision_like(&gp, &c.v, part);
    clip_vision_backward(&c.v, &gf, c.r, c.pix, a, c.B);
    gp.patch_w = gp.cls = gp.pos = gp.ln_pre_w = gp.ln_pre_b = NULL;
    gp.blocks[0] = (tf_block){0};
    clip_vision_backward(&c.v, &gp, c.r, c.pix, a, c.B);
    size_t b1 = gf.blocks[1].ln1_w - full, nb = tf_block_size(&c.v.tf);
    int same = memcmp(full + b1, part + b1, nb * 4) == 0 && memcmp(gf.ln_post_w, gp.ln_post_w, C * 4) == 0 &&
               memcmp(gf.ln_post_b, gp.ln_post_b, C * 4) == 0 && memcmp(gf.proj, gp.proj, 5 * C * 4) == 0;
    int untouched = 1;
    for (size_t i = 0; i < np; i++)
        if ((i < b1 || i >= b1 + nb) && !(part + i >= gp.ln_post_w && part + i < gp.ln_post_w + C) &&
            !(part + i >= gp.ln_post_b && part + i < gp.ln_post_b + C) && !(part + i >= gp.proj && part + i < gp.proj + 5 * C))
            untouched &= part[i] == .5f;
    CHECK(same && untouched, "CLIP image tower with the embeddings, ln_pre and block 0 frozen: the trainable "
                             "tensors' gradients are the full pass's, byte for byte; nothing frozen is written");
    free(full), free(part), free(gf.blocks), free(gp.blocks);
    clip_vision_acts_free(a);
    free(params), free(grads), free(c.v.blocks), free(g.blocks), free(c.pix), free(c.r), free(c.out), free(o2);
}

int main(void)
{
    test_linear();
    test_layernorm();
    test_act(0);
    test_act(1);
    test_attention(0);
    test_attention(1);
    test_patch();
    test_stack(0);
    test_stack(1);
    test_stack_frozen();
    test_vit_frozen();
    test_clip_vision();
    test_rows_threads();
    CHECK_EXIT();
}
