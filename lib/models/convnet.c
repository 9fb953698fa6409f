/* convnet: the convolutional students' engine; see convnet.h.
 *
 * Units are numbered in forward order (a block's main units, then its
 * shortcut unit). Training-mode forward keeps, per unit, the output y (the
 * next unit's input and the activation mask) and the convolution output c
 * when BatchNorm's backward needs it (training mode, or trainable BN affine
 * parameters); otherwise BatchNorm runs in place on c. Inference cycles
 * through NSLOTS buffers. Backward uses four gradient buffers of the largest
 * activation's size and stops below the earliest trainable unit. */
#include "convnet.h"

#include "nn/batchnorm.h"
#include "nn/conv.h"
#include "nn/par.h"
#include "nn/pool.h"
#include "nn/relu.h"
#include "util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define BN_EPS 1e-5f
#define BN_MOMENTUM 0.1f
#define NSLOTS 6

typedef struct {
    int cin, cout, k, stride, pad, groups, act;
    int w, bw, bb, bm, bv; /* parameter indices */
    conv_shape s;
    const float *x; /* input of the last forward */
    float *c, *y;   /* convolution output (may be y), unit output */
    float *mean, *rstd;
    int kept_c; /* the last saving forward kept c (BN weight gradient possible) */
} unit;

typedef struct {
    int u0, nu; /* its main-path units */
    int down;   /* shortcut unit or -1 */
    int join, pool;
    int PH, PW; /* max-pool output size */
    const float *x;
    float *out;      /* the joined output (== the last main unit's y) */
    float *pout;     /* max-pool output, when pool */
    int *pidx;
} block;

struct convnet {
    params p;
    unit *u;
    int nu;
    block *b;
    int nb;
    int featdim, bn_train;
    int B, saved, saved_bn_train; /* saved_bn_train: the BN mode of the saved forward */
    float *arena;
    size_t arena_cap;
    float *gmem;
    size_t gslot_size, gcap;
};

convnet *cn_new(void)
{
    convnet *m = xcalloc(1, sizeof *m);
    param_init(&m->p);
    return m;
}

void cn_block_begin(convnet *m, int join)
{
    m->b = xrealloc(m->b, (size_t)(m->nb + 1) * sizeof *m->b);
    block *bk = &m->b[m->nb++];
    memset(bk, 0, sizeof *bk);
    bk->u0 = m->nu;
    bk->down = -1;
    bk->join = join;
}

static int add_unit(convnet *m, const char *conv, const char *bn, int cin, int cout, int k, int stride, int groups,
                    int act)
{
    if (m->nu % 16 == 0) m->u = xrealloc(m->u, (size_t)(m->nu + 16) * sizeof *m->u);
    unit *u = &m->u[m->nu];
    memset(u, 0, sizeof *u);
    u->cin = cin, u->cout = cout, u->k = k, u->stride = stride, u->pad = k / 2, u->groups = groups, u->act = act;
    char name[160];
    int64_t ws[4] = {cout, cin / groups, k, k}, cs[1] = {cout};
    snprintf(name, sizeof name, "%s.weight", conv);
    u->w = param_add(&m->p, name, 4, ws, 0);
    snprintf(name, sizeof name, "%s.weight", bn);
    u->bw = param_add(&m->p, name, 1, cs, 0);
    snprintf(name, sizeof name, "%s.bias", bn);
    u->bb = param_add(&m->p, name, 1, cs, 0);
    snprintf(name, sizeof name, "%s.running_mean", bn);
    u->bm = param_add(&m->p, name, 1, cs, 1);
    snprintf(name, sizeof name, "%s.running_var", bn);
    u->bv = param_add(&m->p, name, 1, cs, 1);
    m->featdim = cout;
    return m->nu++;
}

int cn_unit(convnet *m, const char *conv, const char *bn, int cin, int cout, int k, int stride, int groups, int act)
{
    int i = add_unit(m, conv, bn, cin, cout, k, stride, groups, act);
    m->b[m->nb - 1].nu++;
    return i;
}

int cn_down(convnet *m, const char *conv, const char *bn, int cin, int cout, int stride)
{
    int keep = m->featdim;
    int i = add_unit(m, conv, bn, cin, cout, 1, stride, 1, CN_NONE);
    m->featdim = keep;
    m->b[m->nb - 1].down = i;
    return i;
}

void cn_block_end(convnet *m, int maxpool_after) { m->b[m->nb - 1].pool = maxpool_after; }

void cn_extra(convnet *m, const char *name, int ndim, const int64_t *shape)
{
    param_add(&m->p, name, ndim, shape, 0);
    m->p.t[m->p.n - 1].frozen = 1;
}

void cn_finish(convnet *m)
{
    param_alloc(&m->p);
    for (int i = 0; i < m->nu; i++) {
        float *w = param_data(&m->p, m->u[i].bw), *v = param_data(&m->p, m->u[i].bv);
        for (int c = 0; c < m->u[i].cout; c++) w[c] = v[c] = 1.0f;
    }
}

void cn_free(convnet *m)
{
    if (!m) return;
    param_free(&m->p);
    free(m->u);
    free(m->b);
    free(m->arena);
    free(m->gmem);
    free(m);
}

params *cn_params(convnet *m) { return &m->p; }
int cn_feature_dim(const convnet *m) { return m->featdim; }

int cn_load(convnet *m, const st_file *f, char *err)
{
    static const char *const ignore[] = {"num_batches_tracked", NULL};
    return param_load(&m->p, f, ignore, err);
}

void cn_set_bn_train(convnet *m, int bn_train) { m->bn_train = bn_train; }

/* BatchNorm's backward needs the convolution output */
static int keeps_c(const convnet *m, const unit *u)
{
    return m->bn_train || param_grad(&m->p, u->bw) || param_grad(&m->p, u->bb);
}

static int unit_trainable(const convnet *m, const unit *u)
{
    return param_grad(&m->p, u->w) || param_grad(&m->p, u->bw) || param_grad(&m->p, u->bb);
}

static size_t unit_numel(const unit *u, int B) { return (size_t)B * u->cout * u->s.OH * u->s.OW; }
static size_t al16(size_t n) { return (n + 15) / 16 * 16; }

/* Sets every unit's conv shape for an H x W input; -1 if it is too small. */
static int plan_shapes(convnet *m, int H, int W)
{
    int h = H, w = W;
    for (int i = 0; i < m->nb; i++) {
        block *bk = &m->b[i];
        int h0 = h, w0 = w;
        for (int j = 0; j < bk->nu; j++) {
            unit *u = &m->u[bk->u0 + j];
            if (conv_shape_init(&u->s, u->cin, h, w, u->cout, u->k, u->k, u->stride, u->pad, 1, u->groups) != 0)
                return -1;
            h = u->s.OH, w = u->s.OW;
        }
        if (bk->down >= 0) {
            unit *u = &m->u[bk->down];
            if (conv_shape_init(&u->s, u->cin, h0, w0, u->cout, 1, 1, u->stride, 0, 1, 1) != 0) return -1;
            if (u->s.OH != h || u->s.OW != w) return -1;
        }
        if (bk->pool) {
            bk->PH = pool_out_size(h, 3, 2, 1), bk->PW = pool_out_size(w, 3, 2, 1);
            if (bk->PH < 1 || bk->PW < 1) return -1;
            h = bk->PH, w = bk->PW;
        }
    }
    return 0;
}

static void unit_forward(convnet *m, unit *u, const float *x, int B)
{
    const params *p = &m->p;
    int OHW = u->s.OH * u->s.OW;
    u->x = x;
    conv2d_forward(u->c, x, param_data(p, u->w), NULL, B, &u->s);
    if (m->bn_train)
        batchnorm_forward_train(u->y, u->mean, u->rstd, param_data(p, u->bm), param_data(p, u->bv), u->c,
                                param_data(p, u->bw), param_data(p, u->bb), B, u->cout, OHW, BN_MOMENTUM, BN_EPS);
    else {
        /* frozen statistics: normalisation and activation in one pass */
        int act = u->act == CN_RELU ? BN_ACT_RELU : u->act == CN_RELU6 ? BN_ACT_RELU6 : BN_ACT_NONE;
        batchnorm_forward_eval_act(u->y, u->c, param_data(p, u->bw), param_data(p, u->bb), param_data(p, u->bm),
                                   param_data(p, u->bv), B, u->cout, OHW, BN_EPS, act);
        return;
    }
    if (u->act == CN_RELU) relu_forward(u->y, u->y, unit_numel(u, B));
    if (u->act == CN_RELU6) relu6_forward(u->y, u->y, unit_numel(u, B));
}

/* o += id, then ReLU when relu: the residual join, split over threads in
 * runs of JOIN_RUN elements */
#define JOIN_RUN 4096
typedef struct {
    float *o;
    const float *id;
    size_t n;
    int relu;
} join_args;

static void join_range(void *ctx, int r0, int r1)
{
    const join_args *a = ctx;
    size_t k0 = (size_t)r0 * JOIN_RUN, k1 = (size_t)r1 * JOIN_RUN < a->n ? (size_t)r1 * JOIN_RUN : a->n;
    float *o = a->o;
    const float *id = a->id;
    if (a->relu)
        for (size_t k = k0; k < k1; k++) {
            float v = o[k] + id[k];
            o[k] = v > 0.0f ? v : 0.0f;
        }
    else
        for (size_t k = k0; k < k1; k++) o[k] += id[k];
}

static void join(float *o, const float *id, size_t n, int relu)
{
    /* at most 2^31 runs of 4096: far beyond any activation this engine holds */
    join_args a = {o, id, n, relu};
    par_for((int)((n + JOIN_RUN - 1) / JOIN_RUN), n, join_range, &a);
}

static size_t pool_numel(const block *bk, const unit *last, int B)
{
    return (size_t)B * last->cout * bk->PH * bk->PW;
}

int cn_forward(convnet *m, float *feat, const float *x, int B, int H, int W, int save, char *err)
{
    if (plan_shapes(m, H, W) != 0) return vl_error(err, "input %dx%d is too small for this network", H, W);
    /* what is kept depends on what trains: with no gradient block yet,
     * nothing would look trainable, and a param_zero_grad between this
     * forward and the backward would find BatchNorm's input gone */
    if (save && !m->p.grad) param_zero_grad(&m->p);
    m->B = B;
    m->saved = save;
    m->saved_bn_train = m->bn_train;
    size_t maxact = 0, need = 0;
    for (int i = 0; i < m->nu; i++) {
        size_t n = unit_numel(&m->u[i], B);
        if (n > maxact) maxact = n;
        if (save) need += al16(n) * (keeps_c(m, &m->u[i]) ? 2 : 1) + 2 * al16(m->u[i].cout);
    }
    size_t maxc = 0;
    for (int i = 0; i < m->nu; i++)
        if ((size_t)m->u[i].cout > maxc) maxc = m->u[i].cout;
    for (int i = 0; i < m->nb; i++)
        if (m->b[i].pool) {
            size_t n = pool_numel(&m->b[i], &m->u[m->b[i].u0 + m->b[i].nu - 1], B);
            if (save) need += 2 * al16(n); /* output and argmax indices */
            else need += al16(n);
        }
    if (!save) need += NSLOTS * al16(maxact) + 2 * al16(maxc);
    if (need > m->arena_cap) {
        free(m->arena);
        m->arena = xmalloc_aligned(need * sizeof(float));
        m->arena_cap = need;
    }
    float *a = m->arena;
    m->gslot_size = maxact;

    float *slots[NSLOTS];
    if (save) {
        for (int i = 0; i < m->nu; i++) {
            unit *u = &m->u[i];
            size_t n = al16(unit_numel(u, B));
            u->y = a, a += n;
            u->kept_c = keeps_c(m, u);
            if (u->kept_c)
                u->c = a, a += n;
            else
                u->c = u->y;
            u->mean = a, a += al16(u->cout);
            u->rstd = a, a += al16(u->cout);
        }
    } else {
        for (int k = 0; k < NSLOTS; k++) slots[k] = a, a += al16(maxact);
        /* statistics scratch (batch-statistics mode without backward) */
        for (int i = 0; i < m->nu; i++) m->u[i].mean = a, m->u[i].rstd = a + al16(maxc);
        a += 2 * al16(maxc);
    }
    for (int i = 0; i < m->nb; i++)
        if (m->b[i].pool) {
            size_t n = al16(pool_numel(&m->b[i], &m->u[m->b[i].u0 + m->b[i].nu - 1], B));
            m->b[i].pout = a, a += n;
            m->b[i].pidx = save ? (int *)a : NULL;
            if (save) a += n;
        }

    const float *cur = x;
    int cs = NSLOTS - 1; /* slot of cur when not saving (the input is in none) */
    for (int i = 0; i < m->nb; i++) {
        block *bk = &m->b[i];
        bk->x = cur;
        const float *in = cur;
        for (int j = 0; j < bk->nu; j++) {
            unit *u = &m->u[bk->u0 + j];
            if (!save) u->c = u->y = slots[(cs + 1 + j) % NSLOTS];
            unit_forward(m, u, in, B);
            in = u->y;
        }
        unit *last = &m->u[bk->u0 + bk->nu - 1];
        size_t n = unit_numel(last, B);
        float *o = last->y;
        if (bk->join != CN_PLAIN) {
            const float *id = cur;
            if (bk->down >= 0) {
                unit *u = &m->u[bk->down];
                if (!save) u->c = u->y = slots[(cs + 1 + bk->nu) % NSLOTS];
                unit_forward(m, u, cur, B);
                id = u->y;
            }
            join(o, id, n, bk->join == CN_ADD_RELU);
        }
        bk->out = o;
        cur = o;
        cs = (cs + bk->nu) % NSLOTS;
        if (bk->pool) {
            maxpool_forward(bk->pout, bk->pidx, o, B, last->cout, last->s.OH, last->s.OW, 3, 2, 1);
            cur = bk->pout;
            /* the pool output lives outside the slots */
        }
    }
    block *lb = &m->b[m->nb - 1];
    unit *last = &m->u[lb->u0 + lb->nu - 1];
    int HW = lb->pool ? lb->PH * lb->PW : last->s.OH * last->s.OW;
    gap_forward(feat, cur, B, m->featdim, HW);
    return 0;
}

/* dy: gradient at the unit's output (post-activation), overwritten. dst:
 * where the gradient at the unit's input is accumulated (NULL: not wanted),
 * zeroed first if zero_dst (dst may be dy). tmp: scratch of the output's
 * size. */
static void unit_backward(convnet *m, unit *u, float *dy, float *dst, int zero_dst, float *tmp)
{
    const params *p = &m->p;
    int B = m->B, OHW = u->s.OH * u->s.OW;
    size_t n = unit_numel(u, B);
    float *dw = param_grad(p, u->w), *dbw = param_grad(p, u->bw), *dbb = param_grad(p, u->bb);
    /* BatchNorm's weight (and training-mode) backward reads c: a unit frozen
     * when the forward ran has none, so it stays frozen for this step */
    if (!u->kept_c) dbw = dbb = NULL;
    int want_dc = dw || dst;
    if (m->saved_bn_train) {
        if (u->act == CN_RELU) relu_backward_set(dy, dy, u->y, n);
        if (u->act == CN_RELU6) relu6_backward_set(dy, dy, u->y, n);
        if (want_dc) memset(tmp, 0, n * sizeof(float));
        batchnorm_backward_train(want_dc ? tmp : NULL, dbw, dbb, dy, u->c, param_data(p, u->bw), u->mean, u->rstd, B,
                                 u->cout, OHW);
    } else {
        /* activation mask, BatchNorm and the zeroing of tmp in one pass */
        int act = u->act == CN_RELU ? BN_ACT_RELU : u->act == CN_RELU6 ? BN_ACT_RELU6 : BN_ACT_NONE;
        batchnorm_backward_eval_act(want_dc ? tmp : NULL, dbw, dbb, dy, u->y, act, u->c, param_data(p, u->bw),
                                    param_data(p, u->bm), param_data(p, u->bv), B, u->cout, OHW, BN_EPS);
    }
    if (!want_dc) return;
    if (dst && zero_dst) memset(dst, 0, (size_t)B * u->cin * u->s.H * u->s.W * sizeof(float));
    conv2d_backward(dst, dw, NULL, tmp, u->x, param_data(p, u->w), B, &u->s);
}

void cn_backward(convnet *m, const float *dfeat)
{
    if (!m->saved) return;
    int B = m->B;
    /* lo: the earliest trainable unit; nothing below it needs a gradient */
    int lo = m->nu;
    for (int i = 0; i < m->nu; i++)
        if (unit_trainable(m, &m->u[i])) {
            lo = i;
            break;
        }
    if (lo == m->nu) return;
    size_t gs = al16(m->gslot_size);
    if (4 * gs > m->gcap) {
        free(m->gmem);
        m->gmem = xmalloc_aligned(4 * gs * sizeof(float));
        m->gcap = 4 * gs;
    }
    float *g = m->gmem, *dx = m->gmem + gs, *t1 = m->gmem + 2 * gs, *t2 = m->gmem + 3 * gs;

    block *lb = &m->b[m->nb - 1];
    unit *last = &m->u[lb->u0 + lb->nu - 1];
    int HW = lb->pool ? lb->PH * lb->PW : last->s.OH * last->s.OW;
    memset(g, 0, (size_t)B * m->featdim * HW * sizeof(float));
    gap_backward(g, dfeat, B, m->featdim, HW);

    for (int i = m->nb - 1; i >= 0; i--) {
        block *bk = &m->b[i];
        unit *first = &m->u[bk->u0];
        unit *lu = &m->u[bk->u0 + bk->nu - 1];
        if (lo > bk->u0 + bk->nu - 1 && (bk->down < 0 || lo > bk->down)) break;
        size_t nout = unit_numel(lu, B);
        if (bk->pool) {
            /* g is the gradient at the pool's output: route it to the block's */
            memset(dx, 0, nout * sizeof(float));
            maxpool_backward(dx, g, bk->pidx, B, lu->cout, lu->s.OH, lu->s.OW, bk->PH, bk->PW);
            float *tmp = g;
            g = dx, dx = tmp;
        }
        if (bk->join == CN_ADD_RELU) relu_backward_set(g, g, bk->out, nout);
        int need_dx = lo < bk->u0;
        size_t nx = (size_t)B * first->cin * first->s.H * first->s.W;
        if (bk->join != CN_PLAIN) {
            if (bk->down >= 0) {
                unit *d = &m->u[bk->down];
                if (need_dx) memset(dx, 0, nx * sizeof(float));
                if (need_dx || unit_trainable(m, d)) unit_backward(m, d, g, need_dx ? dx : NULL, 0, t1);
            } else if (need_dx) {
                memcpy(dx, g, nx * sizeof(float));
            }
        }
        float *dy = g;
        for (int j = bk->nu - 1; j >= 0; j--) {
            int k = bk->u0 + j;
            unit *u = &m->u[k];
            if (j == 0) {
                unit_backward(m, u, dy, need_dx ? dx : NULL, bk->join == CN_PLAIN, t1);
            } else {
                int want = lo < k;
                unit_backward(m, u, dy, want ? t2 : NULL, 1, t1);
                if (!want) break;
                dy = t2;
            }
        }
        if (!need_dx) return;
        /* dx becomes the previous block's output gradient */
        float *tmp = g;
        g = dx, dx = tmp;
    }
}

size_t cn_buffer_bytes(const convnet *m) { return (m->arena_cap + m->gcap) * sizeof(float); }

void cn_release(convnet *m)
{
    free(m->arena);
    free(m->gmem);
    m->arena = m->gmem = NULL;
    m->arena_cap = m->gcap = 0;
    m->saved = 0;
    conv_release_workspace();
}
