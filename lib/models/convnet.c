/* convnet: the convolutional students' engine; see convnet.h.
 *
 * Units are numbered in forward order (a block's main units, then its
 * shortcut unit). Training-mode forward keeps, per unit, the output y (the
 * next unit's input and the activation mask) and the convolution output c
 * when BatchNorm's backward needs it (training mode, or trainable BN affine
 * parameters); otherwise BatchNorm runs in place on c. Inference cycles
 * through NSLOTS buffers; a folded model (cn_fold_bn) runs each unit as its
 * folded convolution plus one bias-and-activation pass, which a residual
 * join or a max pool after the unit takes over. Backward uses four gradient
 * buffers of the largest activation's size and stops below the earliest
 * trainable unit. */
#include "convnet.h"

#include "nn/batchnorm.h"
#include "nn/conv.h"
#include "par.h"
#include "nn/pool.h"
#include "nn/relu.h"
#include "simd.h"
#include "util.h"

#include <math.h>
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
    int kept_c;     /* the last saving forward kept c (BN weight gradient possible) */
    float *fw, *fb; /* folded convolution weights and bias (cn_fold_bn) */
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
    float *fold; /* the folded copies of every unit, one block; NULL until cn_fold_bn */
    int folded;
};

static size_t al16(size_t n) { return (n + 15) / 16 * 16; }

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

void cn_block_end(convnet *m, int maxpool_after)
{
    block *bk = &m->b[m->nb - 1];
    /* a join runs in place on the last unit's output, which is then no
     * longer that unit's activation (its backward mask, cn_decisions) */
    if (bk->join != CN_PLAIN && bk->nu > 0 && m->u[bk->u0 + bk->nu - 1].act != CN_NONE) {
        fprintf(stderr, "convnet: a block that joins must end in a unit without activation\n");
        abort();
    }
    bk->pool = maxpool_after;
}

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
    free(m->fold);
    free(m);
}

params *cn_params(convnet *m) { return &m->p; }
int cn_feature_dim(const convnet *m) { return m->featdim; }

int cn_load(convnet *m, const st_file *f, char *err)
{
    static const char *const ignore[] = {"num_batches_tracked", NULL};
    /* a model file (distill-train's) holds its head beside the backbone */
    static const char *const ignore_head[] = {"num_batches_tracked", "proj.weight", "proj.bias", "text",
                                              "fc.weight", "fc.bias", NULL};
    if (param_load(&m->p, f, st_meta(f, "vl2v.head") ? ignore_head : ignore, err) != 0) return -1;
    if (m->folded) cn_fold_bn(m);
    return 0;
}

/* w' = w * s and b' = beta - mean * s with s = gamma / sqrt(var + eps),
 * computed in double and rounded once */
void cn_fold_bn(convnet *m)
{
    size_t need = 0;
    for (int i = 0; i < m->nu; i++) need += al16(m->p.t[m->u[i].w].numel) + al16(m->u[i].cout);
    if (!m->fold) m->fold = xmalloc_aligned(need * sizeof(float));
    float *a = m->fold;
    for (int i = 0; i < m->nu; i++) {
        unit *u = &m->u[i];
        size_t per = m->p.t[u->w].numel / u->cout;
        const float *w = param_data(&m->p, u->w), *g = param_data(&m->p, u->bw), *b = param_data(&m->p, u->bb),
                    *mean = param_data(&m->p, u->bm), *var = param_data(&m->p, u->bv);
        u->fw = a, a += al16(m->p.t[u->w].numel);
        u->fb = a, a += al16(u->cout);
        for (int oc = 0; oc < u->cout; oc++) {
            double sc = g[oc] / sqrt((double)var[oc] + BN_EPS);
            for (size_t k = 0; k < per; k++) u->fw[oc * per + k] = (float)(w[oc * per + k] * sc);
            u->fb[oc] = (float)(b[oc] - mean[oc] * sc);
        }
    }
    m->folded = 1;
}

int cn_is_folded(const convnet *m) { return m->folded; }

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

/* y = act(y + b[c]) over (B,C,HW) planes in place (the folded unit's bias
 * and activation), 16 lanes at a time */
typedef struct {
    float *y;
    const float *b;
    int C, HW, act;
} bias_args;

static inline __attribute__((always_inline)) void bias_act_plane(float *y, float b, int n, int act)
{
    vf vb = vf_set(b), z = vf_set(0.0f), six = vf_set(6.0f);
    for (int j = 0; j < n; j += VL_VW) {
        int r = n - j < VL_VW ? n - j : VL_VW;
        vf v = (r == VL_VW ? vf_load(y + j) : vf_load_part(y + j, r, 0.0f)) + vb;
        if (act == CN_RELU) v = vf_select(v > z, v, z);
        if (act == CN_RELU6) v = vf_select(v > z, vf_select(v < six, v, six), z);
        if (r == VL_VW)
            vf_store(y + j, v);
        else
            vf_store_part(y + j, v, r);
    }
}

static void bias_act_range(void *ctx, int p0, int p1)
{
    const bias_args *a = ctx;
    for (int p = p0; p < p1; p++) {
        float *y = a->y + (size_t)p * a->HW, b = a->b[p % a->C];
        switch (a->act) {
        case CN_RELU: bias_act_plane(y, b, a->HW, CN_RELU); break;
        case CN_RELU6: bias_act_plane(y, b, a->HW, CN_RELU6); break;
        default: bias_act_plane(y, b, a->HW, CN_NONE);
        }
    }
}

static void bias_act(float *y, const float *b, int B, int C, int HW, int act)
{
    bias_args a = {y, b, C, HW, act};
    par_for(B * C, (size_t)B * C * HW, bias_act_range, &a);
}

/* defer: a folded unit leaves its bias and activation to the caller (the
 * join or the pool that follows) */
static void unit_forward(convnet *m, unit *u, const float *x, int B, int defer)
{
    const params *p = &m->p;
    int OHW = u->s.OH * u->s.OW;
    u->x = x;
    if (m->folded) {
        conv2d_forward(u->y, x, u->fw, NULL, B, &u->s);
        if (!defer) bias_act(u->y, u->fb, B, u->cout, OHW, u->act);
        return;
    }
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

/* The residual join, o = o + id then ReLU when relu, over (B,C,HW) planes
 * split over threads; a folded block adds its units' deferred biases:
 * o = (o + bo[c]) + (id + bd[c]). 16 lanes at a time. */
typedef struct {
    float *o;
    const float *id, *bo, *bd;
    int C, HW, relu;
} join_args;

static inline __attribute__((always_inline)) void join_plane(float *o, const float *id, float bo, float bd, int n,
                                                             int relu, int bias, int dbias)
{
    vf z = vf_set(0.0f), vbo = vf_set(bo), vbd = vf_set(bd);
    for (int j = 0; j < n; j += VL_VW) {
        int r = n - j < VL_VW ? n - j : VL_VW, full = r == VL_VW;
        vf a = full ? vf_load(o + j) : vf_load_part(o + j, r, 0.0f);
        vf b = full ? vf_load(id + j) : vf_load_part(id + j, r, 0.0f);
        if (bias) a = a + vbo;
        if (dbias) b = b + vbd;
        vf v = a + b;
        if (relu) v = vf_select(v > z, v, z);
        if (full)
            vf_store(o + j, v);
        else
            vf_store_part(o + j, v, r);
    }
}

static void join_range(void *ctx, int p0, int p1)
{
    const join_args *a = ctx;
    for (int p = p0; p < p1; p++) {
        float *o = a->o + (size_t)p * a->HW;
        const float *id = a->id + (size_t)p * a->HW;
        int c = p % a->C;
        float bo = a->bo ? a->bo[c] : 0.0f, bd = a->bd ? a->bd[c] : 0.0f;
        if (!a->bo)
            a->relu ? join_plane(o, id, 0, 0, a->HW, 1, 0, 0) : join_plane(o, id, 0, 0, a->HW, 0, 0, 0);
        else if (!a->bd)
            a->relu ? join_plane(o, id, bo, 0, a->HW, 1, 1, 0) : join_plane(o, id, bo, 0, a->HW, 0, 1, 0);
        else
            a->relu ? join_plane(o, id, bo, bd, a->HW, 1, 1, 1) : join_plane(o, id, bo, bd, a->HW, 0, 1, 1);
    }
}

static void join(float *o, const float *id, const float *bo, const float *bd, int B, int C, int HW, int relu)
{
    join_args a = {o, id, bo, bd, C, HW, relu};
    par_for(B * C, (size_t)B * C * HW, join_range, &a);
}

static size_t pool_numel(const block *bk, const unit *last, int B)
{
    return (size_t)B * last->cout * bk->PH * bk->PW;
}

int cn_forward(convnet *m, float *feat, const float *x, int B, int H, int W, int save, char *err)
{
    /* nothing saved survives a failed forward (shapes may have changed) */
    m->saved = 0;
    if (m->folded && (save || m->bn_train))
        return vl_error(err, "BatchNorm is folded into the convolutions: the model is for inference only");
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
        unit *last = &m->u[bk->u0 + bk->nu - 1];
        /* folded: a join adds the last unit's bias (which has no activation
         * of its own in ResNet and MobileNetV2); a pool after a plain block
         * comes before the bias and activation, on a quarter of the values:
         * max(act(c + b)) = act(max(c) + b), act and + b being monotonic */
        int join_bias = m->folded && bk->join != CN_PLAIN && last->act == CN_NONE;
        int pool_first = m->folded && bk->join == CN_PLAIN && bk->pool;
        for (int j = 0; j < bk->nu; j++) {
            unit *u = &m->u[bk->u0 + j];
            if (!save) u->c = u->y = slots[(cs + 1 + j) % NSLOTS];
            unit_forward(m, u, in, B, j == bk->nu - 1 && (join_bias || pool_first));
            in = u->y;
        }
        int OHW = last->s.OH * last->s.OW;
        float *o = last->y;
        if (bk->join != CN_PLAIN) {
            const float *id = cur, *bd = NULL;
            if (bk->down >= 0) {
                unit *u = &m->u[bk->down];
                if (!save) u->c = u->y = slots[(cs + 1 + bk->nu) % NSLOTS];
                unit_forward(m, u, cur, B, join_bias);
                id = u->y;
                if (join_bias) bd = u->fb;
            }
            join(o, id, join_bias ? last->fb : NULL, bd, B, last->cout, OHW, bk->join == CN_ADD_RELU);
        }
        bk->out = o;
        cur = o;
        cs = (cs + bk->nu) % NSLOTS;
        if (bk->pool) {
            maxpool_forward(bk->pout, bk->pidx, o, B, last->cout, last->s.OH, last->s.OW, 3, 2, 1);
            if (pool_first) bias_act(bk->pout, last->fb, B, last->cout, bk->PH * bk->PW, last->act);
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
 * or set if set_dst (dst may be dy). tmp: scratch of the output's size. */
static void unit_backward(convnet *m, unit *u, float *dy, float *dst, int set_dst, float *tmp)
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
        /* with the convolution output kept, the mask is recomputed from it
         * (read anyway for BatchNorm's weight gradient) instead of read */
        batchnorm_backward_eval_act(want_dc ? tmp : NULL, dbw, dbb, dy, u->kept_c ? NULL : u->y, act, u->c,
                                    param_data(p, u->bw), param_data(p, u->bb), param_data(p, u->bm),
                                    param_data(p, u->bv), B, u->cout, OHW, BN_EPS);
    }
    if (!want_dc) return;
    (dst && set_dst ? conv2d_backward_set : conv2d_backward)(dst, dw, NULL, tmp, u->x, param_data(p, u->w), B,
                                                              &u->s);
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
            maxpool_backward_set(dx, g, bk->pidx, B, lu->cout, lu->s.OH, lu->s.OW, bk->PH, bk->PW);
            float *tmp = g;
            g = dx, dx = tmp;
        }
        if (bk->join == CN_ADD_RELU) relu_backward_set(g, g, bk->out, nout);
        int need_dx = lo < bk->u0;
        size_t nx = (size_t)B * first->cin * first->s.H * first->s.W;
        /* an identity shortcut passes g on as it is: the first unit's input
         * gradient is accumulated into g itself (read by the last unit before
         * that), unless the last unit masks g in place (training-mode
         * BatchNorm behind an activation) */
        int in_place = 0;
        float *into = dx;
        if (bk->join != CN_PLAIN) {
            if (bk->down >= 0) {
                unit *d = &m->u[bk->down];
                if (need_dx || unit_trainable(m, d)) unit_backward(m, d, g, need_dx ? dx : NULL, 1, t1);
            } else if (need_dx && !(m->saved_bn_train && lu->act != CN_NONE)) {
                in_place = 1;
                into = g;
            } else if (need_dx) {
                memcpy(dx, g, nx * sizeof(float));
            }
        }
        float *dy = g;
        for (int j = bk->nu - 1; j >= 0; j--) {
            int k = bk->u0 + j;
            unit *u = &m->u[k];
            if (j == 0) {
                unit_backward(m, u, dy, need_dx ? into : NULL, bk->join == CN_PLAIN, t1);
            } else {
                int want = lo < k;
                unit_backward(m, u, dy, want ? t2 : NULL, 1, t1);
                if (!want) break;
                dy = t2;
            }
        }
        if (!need_dx) return;
        if (in_place) continue;
        /* dx becomes the previous block's output gradient */
        float *tmp = g;
        g = dx, dx = tmp;
    }
}

int cn_decisions(const convnet *m, cn_decision *d, int max)
{
    if (!m->saved) return -1;
    int n = 0;
    for (int i = 0; i < m->nb; i++) {
        const block *bk = &m->b[i];
        const unit *last = &m->u[bk->u0 + bk->nu - 1];
        for (int j = 0; j < bk->nu; j++) {
            const unit *u = &m->u[bk->u0 + j];
            if (u->act == CN_NONE) continue;
            if (n < max) d[n] = (cn_decision){u->act, u->y, NULL, m->B, u->cout, u->s.OH, u->s.OW};
            n++;
        }
        if (bk->join == CN_ADD_RELU) {
            if (n < max) d[n] = (cn_decision){CN_RELU, bk->out, NULL, m->B, last->cout, last->s.OH, last->s.OW};
            n++;
        }
        if (bk->pool) {
            if (n < max) d[n] = (cn_decision){CN_NONE, NULL, bk->pidx, m->B, last->cout, bk->PH, bk->PW};
            n++;
        }
    }
    return n;
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
