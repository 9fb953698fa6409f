/* resnet: torchvision ResNet-18/34/50; see resnet.h.
 *
 * The network is a list of "units" (convolution + BatchNorm + optional ReLU):
 * unit 0 is the stem, then each block's units in order, its downsample unit
 * last. Training-mode forward keeps, per unit, the output y (the next unit's
 * input and the ReLU mask) and the convolution output c when BatchNorm's
 * backward needs it (training mode, or trainable BN affine parameters);
 * otherwise BatchNorm runs in place on c. Inference cycles through five
 * buffers. Backward uses four gradient buffers of the largest activation's
 * size and stops below the earliest trainable unit. */
#include "resnet.h"

#include "nn/batchnorm.h"
#include "nn/conv.h"
#include "nn/pool.h"
#include "nn/relu.h"
#include "util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define BN_EPS 1e-5f
#define BN_MOMENTUM 0.1f
#define NSLOTS 5

typedef struct {
    int cin, cout, k, stride, pad, relu;
    int w, bw, bb, bm, bv; /* parameter indices */
    conv_shape s;
    const float *x; /* input of the last forward */
    float *c, *y;   /* convolution output (may be y), unit output */
    float *mean, *rstd;
} unit;

typedef struct {
    int u0, nu; /* its main-path units */
    int down;   /* downsample unit or -1 */
    const float *x;
    float *out; /* == the last main unit's y */
} block;

struct resnet {
    int depth, nclasses, bottleneck, featdim;
    params p;
    unit *u;
    int nu;
    block *b;
    int nb;
    int bn_train;
    /* the last forward */
    int B, saved, PH, PW;
    float *pool;  /* stem max-pool output */
    int *pool_idx;
    /* buffers */
    float *arena;
    size_t arena_cap; /* floats */
    float *gslot[4];
    size_t gslot_size, gcap;
    float *gmem;
};

static int add_unit(resnet *m, const char *conv, const char *bn, int cin, int cout, int k, int stride, int relu)
{
    if (m->nu % 16 == 0) m->u = xrealloc(m->u, (size_t)(m->nu + 16) * sizeof *m->u);
    unit *u = &m->u[m->nu];
    memset(u, 0, sizeof *u);
    u->cin = cin, u->cout = cout, u->k = k, u->stride = stride, u->pad = k / 2, u->relu = relu;
    char name[128];
    int64_t ws[4] = {cout, cin, k, k}, cs[1] = {cout};
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
    return m->nu++;
}

resnet *resnet_new(int depth, int nclasses)
{
    static const int L18[4] = {2, 2, 2, 2}, L34[4] = {3, 4, 6, 3};
    const int *layers = depth == 18 ? L18 : depth == 34 || depth == 50 ? L34 : NULL;
    if (!layers) return NULL;
    resnet *m = xcalloc(1, sizeof *m);
    m->depth = depth;
    m->nclasses = nclasses;
    m->bottleneck = depth == 50;
    int exp = m->bottleneck ? 4 : 1;
    param_init(&m->p);
    add_unit(m, "conv1", "bn1", 3, 64, 7, 2, 1);
    int inplanes = 64;
    char a[128], b[128];
    for (int l = 0; l < 4; l++) {
        int planes = 64 << l;
        for (int i = 0; i < layers[l]; i++) {
            int stride = i == 0 && l > 0 ? 2 : 1;
            m->b = xrealloc(m->b, (size_t)(m->nb + 1) * sizeof *m->b);
            block *bk = &m->b[m->nb++];
            bk->u0 = m->nu;
#define UNIT(n, cin, cout, k, s, relu)                                                                             \
    snprintf(a, sizeof a, "layer%d.%d.conv%d", l + 1, i, n);                                                       \
    snprintf(b, sizeof b, "layer%d.%d.bn%d", l + 1, i, n);                                                         \
    add_unit(m, a, b, cin, cout, k, s, relu)
            if (m->bottleneck) {
                UNIT(1, inplanes, planes, 1, 1, 1);
                UNIT(2, planes, planes, 3, stride, 1);
                UNIT(3, planes, planes * 4, 1, 1, 0);
                bk->nu = 3;
            } else {
                UNIT(1, inplanes, planes, 3, stride, 1);
                UNIT(2, planes, planes, 3, 1, 0);
                bk->nu = 2;
            }
#undef UNIT
            bk->down = -1;
            if (stride != 1 || inplanes != planes * exp) {
                snprintf(a, sizeof a, "layer%d.%d.downsample.0", l + 1, i);
                snprintf(b, sizeof b, "layer%d.%d.downsample.1", l + 1, i);
                bk->down = add_unit(m, a, b, inplanes, planes * exp, 1, stride, 0);
            }
            inplanes = planes * exp;
        }
    }
    m->featdim = inplanes;
    if (nclasses > 0) {
        int64_t fw[2] = {nclasses, inplanes}, fb[1] = {nclasses};
        param_add(&m->p, "fc.weight", 2, fw, 0);
        param_add(&m->p, "fc.bias", 1, fb, 0);
    }
    param_alloc(&m->p);
    for (int i = 0; i < m->nu; i++) {
        float *w = param_data(&m->p, m->u[i].bw), *v = param_data(&m->p, m->u[i].bv);
        for (int c = 0; c < m->u[i].cout; c++) w[c] = v[c] = 1.0f;
    }
    /* fc is not part of the feature: no gradient work for it */
    param_freeze(&m->p, "fc", 1);
    return m;
}

void resnet_free(resnet *m)
{
    if (!m) return;
    param_free(&m->p);
    free(m->u);
    free(m->b);
    free(m->arena);
    free(m->gmem);
    free(m);
}

int resnet_detect(const st_file *f, int *depth, int *nclasses, char *err)
{
    const st_tensor *c1 = st_find(f, "conv1.weight");
    if (!c1 || c1->ndim != 4 || c1->shape[0] != 64 || c1->shape[1] != 3 || c1->shape[2] != 7)
        return vl_error(err, "%s: no 'conv1.weight' of shape [64, 3, 7, 7]: not a torchvision ResNet", f->path);
    if (st_find(f, "layer1.0.conv3.weight"))
        *depth = 50;
    else if (st_find(f, "layer3.5.conv1.weight"))
        *depth = 34;
    else if (st_find(f, "layer4.1.conv1.weight"))
        *depth = 18;
    else
        return vl_error(err, "%s: the layers match none of ResNet-18, -34, -50", f->path);
    if (*depth == 50 && st_find(f, "layer3.6.conv1.weight"))
        return vl_error(err, "%s: tensor 'layer3.6.conv1.weight': deeper than ResNet-50 (not supported)", f->path);
    const st_tensor *fc = st_find(f, "fc.weight");
    *nclasses = fc && fc->ndim == 2 ? (int)fc->shape[0] : 0;
    return 0;
}

params *resnet_params(resnet *m) { return &m->p; }
int resnet_depth(const resnet *m) { return m->depth; }
int resnet_feature_dim(const resnet *m) { return m->featdim; }

int resnet_load(resnet *m, const st_file *f, char *err)
{
    static const char *const ignore[] = {"num_batches_tracked", NULL};
    return param_load(&m->p, f, ignore, err);
}

void resnet_set_bn_train(resnet *m, int bn_train) { m->bn_train = bn_train; }

/* BatchNorm's backward needs the convolution output */
static int keeps_c(const resnet *m, const unit *u)
{
    return m->bn_train || param_grad(&m->p, u->bw) || param_grad(&m->p, u->bb);
}

static int unit_trainable(const resnet *m, const unit *u)
{
    return param_grad(&m->p, u->w) || param_grad(&m->p, u->bw) || param_grad(&m->p, u->bb);
}

static size_t unit_numel(const unit *u, int B) { return (size_t)B * u->cout * u->s.OH * u->s.OW; }

static float *grow(float **buf, size_t *cap, size_t n)
{
    if (n > *cap) {
        free(*buf);
        *buf = xmalloc_aligned(n * sizeof(float));
        *cap = n;
    }
    return *buf;
}

/* Sets every unit's conv shape for an H x W input; -1 if it is too small. */
static int plan_shapes(resnet *m, int H, int W)
{
    unit *st = &m->u[0];
    if (conv_shape_init(&st->s, 3, H, W, 64, 7, 7, 2, 3, 1, 1) != 0) return -1;
    m->PH = pool_out_size(st->s.OH, 3, 2, 1);
    m->PW = pool_out_size(st->s.OW, 3, 2, 1);
    if (m->PH < 1 || m->PW < 1) return -1;
    int h = m->PH, w = m->PW;
    for (int i = 0; i < m->nb; i++) {
        block *bk = &m->b[i];
        int h0 = h, w0 = w;
        for (int j = 0; j < bk->nu; j++) {
            unit *u = &m->u[bk->u0 + j];
            if (conv_shape_init(&u->s, u->cin, h, w, u->cout, u->k, u->k, u->stride, u->pad, 1, 1) != 0) return -1;
            h = u->s.OH, w = u->s.OW;
        }
        if (bk->down >= 0) {
            unit *u = &m->u[bk->down];
            if (conv_shape_init(&u->s, u->cin, h0, w0, u->cout, 1, 1, u->stride, 0, 1, 1) != 0) return -1;
        }
    }
    return 0;
}

static void unit_forward(resnet *m, unit *u, const float *x, int B)
{
    const params *p = &m->p;
    int OHW = u->s.OH * u->s.OW;
    u->x = x;
    conv2d_forward(u->c, x, param_data(p, u->w), NULL, B, &u->s);
    if (m->bn_train)
        batchnorm_forward_train(u->y, u->mean, u->rstd, param_data(p, u->bm), param_data(p, u->bv), u->c,
                                param_data(p, u->bw), param_data(p, u->bb), B, u->cout, OHW, BN_MOMENTUM, BN_EPS);
    else
        batchnorm_forward_eval(u->y, u->c, param_data(p, u->bw), param_data(p, u->bb), param_data(p, u->bm),
                               param_data(p, u->bv), B, u->cout, OHW, BN_EPS);
    if (u->relu) relu_forward(u->y, u->y, unit_numel(u, B));
}

int resnet_forward(resnet *m, float *feat, const float *x, int B, int H, int W, int save, char *err)
{
    if (plan_shapes(m, H, W) != 0) return vl_error(err, "input %dx%d is too small for a ResNet", H, W);
    m->B = B;
    m->saved = save;
    size_t maxact = (size_t)B * 64 * m->PH * m->PW, need = 0;
    for (int i = 0; i < m->nu; i++) {
        size_t n = unit_numel(&m->u[i], B);
        if (n > maxact) maxact = n;
        if (save) need += (n + 15) / 16 * 16 * (keeps_c(m, &m->u[i]) ? 2 : 1) + 2 * ((m->u[i].cout + 15) / 16 * 16);
    }
    size_t pooln = (size_t)B * 64 * m->PH * m->PW;
    if (save)
        need += 2 * ((pooln + 15) / 16 * 16); /* pool output and its indices */
    else
        need = NSLOTS * ((maxact + 15) / 16 * 16) + pooln + 2 * 2048 + 32;
    float *a = grow(&m->arena, &m->arena_cap, need);
    m->gslot_size = maxact;

    /* carve the arena */
    float *slots[NSLOTS];
    if (save) {
        for (int i = 0; i < m->nu; i++) {
            unit *u = &m->u[i];
            size_t n = (unit_numel(u, B) + 15) / 16 * 16;
            u->y = a, a += n;
            if (keeps_c(m, u))
                u->c = a, a += n;
            else
                u->c = u->y;
            u->mean = a, a += (u->cout + 15) / 16 * 16;
            u->rstd = a, a += (u->cout + 15) / 16 * 16;
        }
        m->pool = a, a += (pooln + 15) / 16 * 16;
        m->pool_idx = (int *)a;
    } else {
        for (int k = 0; k < NSLOTS; k++) slots[k] = a, a += (maxact + 15) / 16 * 16;
        /* statistics scratch (batch-statistics mode without backward) */
        for (int i = 0; i < m->nu; i++) m->u[i].mean = a, m->u[i].rstd = a + 2048;
        m->pool_idx = NULL;
    }

    /* stem */
    unit *st = &m->u[0];
    if (!save) st->c = st->y = slots[0];
    unit_forward(m, st, x, B);
    const float *cur;
    int cs; /* slot of cur when not saving */
    if (!save) m->pool = slots[1];
    maxpool_forward(m->pool, m->pool_idx, st->y, B, 64, st->s.OH, st->s.OW, 3, 2, 1);
    cur = m->pool, cs = 1;

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
        const float *id = cur;
        if (bk->down >= 0) {
            unit *u = &m->u[bk->down];
            if (!save) u->c = u->y = slots[(cs + 1 + bk->nu) % NSLOTS];
            unit_forward(m, u, cur, B);
            id = u->y;
        }
        unit *last = &m->u[bk->u0 + bk->nu - 1];
        size_t n = unit_numel(last, B);
        float *o = last->y;
        for (size_t k = 0; k < n; k++) {
            float v = o[k] + id[k];
            o[k] = v > 0.0f ? v : 0.0f;
        }
        bk->out = o;
        cur = o;
        cs = (cs + bk->nu) % NSLOTS;
    }
    unit *last = &m->u[m->b[m->nb - 1].u0 + m->b[m->nb - 1].nu - 1];
    gap_forward(feat, cur, B, m->featdim, last->s.OH * last->s.OW);
    return 0;
}

/* dy: gradient at the unit's output (post-ReLU), overwritten. dst: where the
 * gradient at the unit's input is accumulated (NULL: not wanted), zeroed first
 * if zero_dst (dst may be dy). tmp: scratch of the output's size. */
static void unit_backward(resnet *m, unit *u, float *dy, float *dst, int zero_dst, float *tmp)
{
    const params *p = &m->p;
    int B = m->B, OHW = u->s.OH * u->s.OW;
    size_t n = unit_numel(u, B);
    if (u->relu) relu_backward_set(dy, dy, u->y, n);
    float *dw = param_grad(p, u->w), *dbw = param_grad(p, u->bw), *dbb = param_grad(p, u->bb);
    int want_dc = dw || dst;
    if (want_dc) memset(tmp, 0, n * sizeof(float));
    if (m->bn_train)
        batchnorm_backward_train(want_dc ? tmp : NULL, dbw, dbb, dy, u->c, param_data(p, u->bw), u->mean, u->rstd, B,
                                 u->cout, OHW);
    else
        batchnorm_backward_eval(want_dc ? tmp : NULL, dbw, dbb, dy, u->c, param_data(p, u->bw),
                                param_data(p, u->bm), param_data(p, u->bv), B, u->cout, OHW, BN_EPS);
    if (!want_dc) return;
    if (dst && zero_dst) memset(dst, 0, (size_t)B * u->cin * u->s.H * u->s.W * sizeof(float));
    conv2d_backward(dst, dw, NULL, tmp, u->x, param_data(p, u->w), B, &u->s);
}

void resnet_backward(resnet *m, const float *dfeat)
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
    size_t gs = (m->gslot_size + 15) / 16 * 16;
    if (4 * gs > m->gcap) {
        free(m->gmem);
        m->gmem = xmalloc_aligned(4 * gs * sizeof(float));
        m->gcap = 4 * gs;
    }
    for (int k = 0; k < 4; k++) m->gslot[k] = m->gmem + k * gs;
    float *g = m->gslot[0], *dx = m->gslot[1], *t1 = m->gslot[2], *t2 = m->gslot[3];

    block *lb = &m->b[m->nb - 1];
    unit *last = &m->u[lb->u0 + lb->nu - 1];
    int HW = last->s.OH * last->s.OW;
    memset(g, 0, (size_t)B * m->featdim * HW * sizeof(float));
    gap_backward(g, dfeat, B, m->featdim, HW);

    for (int i = m->nb - 1; i >= 0; i--) {
        block *bk = &m->b[i];
        unit *first = &m->u[bk->u0];
        unit *lu = &m->u[bk->u0 + bk->nu - 1];
        if (lo > bk->u0 + bk->nu - 1 && (bk->down < 0 || lo > bk->down)) break;
        relu_backward_set(g, g, bk->out, unit_numel(lu, B));
        int need_dx = lo < bk->u0;
        size_t nx = (size_t)B * first->cin * first->s.H * first->s.W;
        if (bk->down >= 0) {
            unit *d = &m->u[bk->down];
            if (need_dx) memset(dx, 0, nx * sizeof(float));
            if (need_dx || unit_trainable(m, d)) unit_backward(m, d, g, need_dx ? dx : NULL, 0, t1);
        } else if (need_dx) {
            memcpy(dx, g, nx * sizeof(float));
        }
        float *dy = g;
        for (int j = bk->nu - 1; j >= 0; j--) {
            int k = bk->u0 + j;
            unit *u = &m->u[k];
            if (j == 0) {
                unit_backward(m, u, dy, need_dx ? dx : NULL, 0, t1);
            } else {
                int want = lo < k;
                unit_backward(m, u, dy, want ? t2 : NULL, 1, t1);
                if (!want) break;
                dy = t2;
            }
        }
        if (!need_dx) return;
        /* dx becomes the next (earlier) block's output gradient */
        float *tmp = g;
        g = dx, dx = tmp;
    }
    if (lo == 0) {
        unit *st = &m->u[0];
        size_t n = unit_numel(st, B);
        memset(t2, 0, n * sizeof(float));
        maxpool_backward(t2, g, m->pool_idx, B, 64, st->s.OH, st->s.OW, m->PH, m->PW);
        unit_backward(m, st, t2, NULL, 0, t1);
    }
}

size_t resnet_buffer_bytes(const resnet *m) { return (m->arena_cap + m->gcap) * sizeof(float); }

void resnet_release(resnet *m)
{
    free(m->arena);
    free(m->gmem);
    m->arena = m->gmem = NULL;
    m->arena_cap = m->gcap = 0;
    m->saved = 0;
    conv_release_workspace();
}
