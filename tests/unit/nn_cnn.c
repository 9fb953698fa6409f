/* nn_cnn: the convolutional-network ops (conv, batchnorm, pooling, ReLU), the
 * losses, the parameter store and the optimisers. Fast kernels are compared
 * with their naive references; every backward pass is checked against central
 * finite differences of L = sum(out * R) for a fixed random R. */
#include "check.h"
#include "floats.h"

#include "blas.h"
#include "models/mobilenet.h"
#include "models/resnet.h"
#include "nn/batchnorm.h"
#include "nn/conv.h"
#include "nn/loss.h"
#include "nn/pool.h"
#include "nn/relu.h"
#include "train/optim.h"
#include "param.h"
#include "rng.h"
#include "st.h"
#include "util.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static rng R;

static float *randv(size_t n, float scale) { return rand_floats(&R, n, scale); }

static float *zeros(size_t n) { return xcalloc(n ? n : 1, sizeof(float)); }

static double dotd(const float *a, const float *b, size_t n)
{
    double s = 0;
    for (size_t i = 0; i < n; i++) s += (double)a[i] * b[i];
    return s;
}

/* Compares the analytic gradient ana (n) of f with respect to x with central
 * differences at up to `samples` coordinates; returns the worst error
 * relative to the gradient's largest entry. */
typedef double (*lossfn)(void *ctx);
static double fd_check(lossfn f, void *ctx, float *x, const float *ana, size_t n, int samples, float h)
{
    double scale = 1e-6, worst = 0;
    for (size_t i = 0; i < n; i++)
        if (fabs(ana[i]) > scale) scale = fabs(ana[i]);
    for (int s = 0; s < samples && s < (int)n; s++) {
        size_t i = (size_t)samples >= n ? (size_t)s : (size_t)(rng_uniform(&R) * n) % n;
        float keep = x[i];
        x[i] = keep + h;
        double lp = f(ctx);
        x[i] = keep - h;
        double lm = f(ctx);
        x[i] = keep;
        double num = (lp - lm) / (2.0 * h);
        double e = fabs(num - ana[i]) / scale;
        if (e > worst || isnan(e)) worst = isnan(e) ? INFINITY : e;
    }
    return worst;
}

/* ---------- convolution ---------- */

typedef struct {
    conv_shape s;
    int B;
    float *x, *w, *b, *out, *r;
} conv_ctx;

static double conv_loss(void *p)
{
    conv_ctx *c = p;
    conv2d_forward_ref(c->out, c->x, c->w, c->b, c->B, &c->s);
    return dotd(c->out, c->r, (size_t)c->B * c->s.OC * c->s.OH * c->s.OW);
}

static void test_conv(const char *what, int B, int C, int H, int W, int OC, int K, int stride, int pad, int dil,
                      int groups, int bias)
{
    conv_ctx c = {.B = B};
    if (conv_shape_init(&c.s, C, H, W, OC, K, K, stride, pad, dil, groups) != 0) {
        CHECK(0, "conv %s: shape", what);
        return;
    }
    size_t nx = (size_t)B * C * H * W, nw = (size_t)OC * (C / groups) * K * K;
    size_t no = (size_t)B * OC * c.s.OH * c.s.OW;
    c.x = randv(nx, 1), c.w = randv(nw, 0.5f), c.b = bias ? randv(OC, 0.5f) : NULL;
    c.out = zeros(no), c.r = randv(no, 1);
    float *fast = zeros(no);
    conv2d_forward(fast, c.x, c.w, c.b, B, &c.s);
    conv2d_forward_ref(c.out, c.x, c.w, c.b, B, &c.s);
    double e = maxrel(fast, c.out, no);
    CHECK(e < 1e-5, "conv %s: forward fast vs naive (rel err %.2g)", what, e);

    float *dx = zeros(nx), *dw = zeros(nw), *db = zeros(OC), *dxr = zeros(nx), *dwr = zeros(nw), *dbr = zeros(OC);
    /* accumulation: start from a nonzero gradient in both */
    for (size_t i = 0; i < nx; i++) dx[i] = dxr[i] = 0.25f;
    conv2d_backward(dx, dw, bias ? db : NULL, c.r, c.x, c.w, B, &c.s);
    conv2d_backward_ref(dxr, dwr, bias ? dbr : NULL, c.r, c.x, c.w, B, &c.s);
    e = fmax(maxrel(dx, dxr, nx), maxrel(dw, dwr, nw));
    if (bias) e = fmax(e, maxrel(db, dbr, OC));
    CHECK(e < 1e-5, "conv %s: backward fast vs naive, accumulating (rel err %.2g)", what, e);
    for (size_t i = 0; i < nx; i++) dxr[i] -= 0.25f;
    e = fd_check(conv_loss, &c, c.x, dxr, nx, 40, 1e-2f);
    CHECK(e < 2e-3, "conv %s: dinp vs finite differences (rel err %.2g)", what, e);
    e = fd_check(conv_loss, &c, c.w, dwr, nw, 40, 1e-2f);
    CHECK(e < 2e-3, "conv %s: dw vs finite differences (rel err %.2g)", what, e);
    if (bias) {
        e = fd_check(conv_loss, &c, c.b, dbr, OC, 40, 1e-2f);
        CHECK(e < 2e-3, "conv %s: db vs finite differences (rel err %.2g)", what, e);
    }
    /* NULL gradients: only the wanted one is written */
    float *dw2 = zeros(nw);
    conv2d_backward(NULL, dw2, NULL, c.r, c.x, c.w, B, &c.s);
    CHECK(maxrel(dw2, dwr, nw) < 1e-5, "conv %s: dw alone (dinp NULL) matches", what);
    /* set mode: dinp overwritten (its NaNs never read), the values of
     * accumulating into zeros; dw still accumulates */
    float *dx0 = zeros(nx), *dw0 = zeros(nw), *dx3 = zeros(nx), *dw3 = zeros(nw);
    for (size_t i = 0; i < nx; i++) dx3[i] = NAN;
    for (size_t i = 0; i < nw; i++) dw0[i] = dw3[i] = 0.5f;
    conv2d_backward(dx0, dw0, NULL, c.r, c.x, c.w, B, &c.s);
    conv2d_backward_set(dx3, dw3, NULL, c.r, c.x, c.w, B, &c.s);
    int eq = same(dw0, dw3, nw);
    for (size_t i = 0; i < nx; i++) eq &= dx0[i] == dx3[i];
    CHECK(eq, "conv %s: backward setting dinp gives accumulating into zeros' values", what);
    free(dx0), free(dw0), free(dx3), free(dw3);
    free(c.x), free(c.w), free(c.b), free(c.out), free(c.r), free(fast);
    free(dx), free(dw), free(db), free(dxr), free(dwr), free(dbr), free(dw2);
}

/* col2im's vector paths (stride 1, stride 2 spread over even lanes) add one
 * value per element and nothing else: the elements a 1x1 stride-2
 * convolution never reaches keep their bytes, -0 included */
static void test_col2im_untouched(void)
{
    conv_shape s;
    int B = 2, C = 3, H = 6, W = 80, ok = 1;
    conv_shape_init(&s, C, H, W, 4, 1, 1, 2, 0, 1, 1);
    size_t nx = (size_t)B * C * H * W, no = (size_t)B * 4 * s.OH * s.OW;
    float *w = randv(4 * C, 1), *g = randv(no, 1), *dx = zeros(nx), *dxs = zeros(nx);
    for (size_t i = 0; i < nx; i++) dx[i] = dxs[i] = -0.0f;
    conv2d_backward(dx, NULL, NULL, g, NULL, w, B, &s);
    conv2d_backward_set(dxs, NULL, NULL, g, NULL, w, B, &s);
    for (size_t i = 0; i < nx; i++) {
        int h = (int)(i / W % H), x = (int)(i % W), reached = h % 2 == 0 && x % 2 == 0;
        if (!reached) ok &= signbit(dx[i]) && dx[i] == 0 && dxs[i] == 0 && !signbit(dxs[i]);
        else ok &= dx[i] == dxs[i];
    }
    CHECK(ok, "conv 1x1 s2 backward: unreached input-gradient elements keep -0 (accumulating) or are +0 (setting)");
    free(w), free(g), free(dx), free(dxs);
}

/* ---------- batchnorm ---------- */

typedef struct {
    int B, C, HW, train;
    float *x, *w, *b, *rm, *rv, *out, *r, *mean, *rstd;
} bn_ctx;

static double bn_loss(void *p)
{
    bn_ctx *c = p;
    if (c->train)
        batchnorm_forward_train(c->out, c->mean, c->rstd, NULL, NULL, c->x, c->w, c->b, c->B, c->C, c->HW, 0.1f,
                                1e-5f);
    else
        batchnorm_forward_eval(c->out, c->x, c->w, c->b, c->rm, c->rv, c->B, c->C, c->HW, 1e-5f);
    return dotd(c->out, c->r, (size_t)c->B * c->C * c->HW);
}

static void test_batchnorm(void)
{
    bn_ctx c = {.B = 3, .C = 4, .HW = 10};
    size_t n = (size_t)c.B * c.C * c.HW;
    c.x = randv(n, 2);
    for (size_t i = 0; i < n; i++) c.x[i] += 0.5f;
    c.w = randv(c.C, 1), c.b = randv(c.C, 1), c.rm = randv(c.C, 0.3f), c.rv = randv(c.C, 0.3f);
    for (int i = 0; i < c.C; i++) c.rv[i] += 1.0f;
    c.out = zeros(n), c.r = randv(n, 1), c.mean = zeros(c.C), c.rstd = zeros(c.C);

    /* training forward vs the double reference, running statistics included */
    float *o2 = zeros(n), *m2 = zeros(c.C), *s2 = zeros(c.C), *rm1 = zeros(c.C), *rv1 = zeros(c.C),
          *rm2 = zeros(c.C), *rv2 = zeros(c.C);
    memcpy(rm1, c.rm, c.C * 4), memcpy(rm2, c.rm, c.C * 4), memcpy(rv1, c.rv, c.C * 4), memcpy(rv2, c.rv, c.C * 4);
    batchnorm_forward_train(c.out, c.mean, c.rstd, rm1, rv1, c.x, c.w, c.b, c.B, c.C, c.HW, 0.1f, 1e-5f);
    batchnorm_forward_train_ref(o2, m2, s2, rm2, rv2, c.x, c.w, c.b, c.B, c.C, c.HW, 0.1f, 1e-5f);
    double e = fmax(maxrel(c.out, o2, n), fmax(maxrel(rm1, rm2, c.C), maxrel(rv1, rv2, c.C)));
    CHECK(e < 1e-5, "batchnorm train: forward and running stats vs naive (rel err %.2g)", e);
    /* the running update itself: momentum 0.1, unbiased variance */
    {
        double s = 0, v = 0, N = (double)c.B * c.HW;
        for (int i = 0; i < c.B; i++)
            for (int j = 0; j < c.HW; j++) s += c.x[(i * c.C + 1) * c.HW + j];
        for (int i = 0; i < c.B; i++)
            for (int j = 0; j < c.HW; j++) v += pow(c.x[(i * c.C + 1) * c.HW + j] - s / N, 2);
        double want_m = 0.9 * c.rm[1] + 0.1 * s / N, want_v = 0.9 * c.rv[1] + 0.1 * v / (N - 1);
        CHECK(fabs(rm1[1] - want_m) < 1e-6 && fabs(rv1[1] - want_v) < 1e-5,
              "batchnorm train: running mean/var use momentum 0.1 and the unbiased variance");
    }
    float *dx = zeros(n), *dw = zeros(c.C), *db = zeros(c.C), *dxr = zeros(n), *dwr = zeros(c.C), *dbr = zeros(c.C);
    batchnorm_backward_train(dx, dw, db, c.r, c.x, c.w, c.mean, c.rstd, c.B, c.C, c.HW);
    batchnorm_backward_train_ref(dxr, dwr, dbr, c.r, c.x, c.w, c.mean, c.rstd, c.B, c.C, c.HW);
    e = fmax(maxrel(dx, dxr, n), fmax(maxrel(dw, dwr, c.C), maxrel(db, dbr, c.C)));
    CHECK(e < 1e-4, "batchnorm train: backward vs naive (rel err %.2g)", e);
    c.train = 1;
    e = fd_check(bn_loss, &c, c.x, dx, n, 60, 1e-2f);
    CHECK(e < 5e-3, "batchnorm train: dinp vs finite differences (rel err %.2g)", e);
    e = fmax(fd_check(bn_loss, &c, c.w, dw, c.C, 8, 1e-2f), fd_check(bn_loss, &c, c.b, db, c.C, 8, 1e-2f));
    CHECK(e < 5e-3, "batchnorm train: dw, db vs finite differences (rel err %.2g)", e);

    c.train = 0;
    memset(dx, 0, n * 4), memset(dw, 0, c.C * 4), memset(db, 0, c.C * 4);
    batchnorm_backward_eval(dx, dw, db, c.r, c.x, c.w, c.rm, c.rv, c.B, c.C, c.HW, 1e-5f);
    e = fd_check(bn_loss, &c, c.x, dx, n, 60, 1e-2f);
    CHECK(e < 5e-3, "batchnorm eval: dinp vs finite differences (rel err %.2g)", e);
    e = fmax(fd_check(bn_loss, &c, c.w, dw, c.C, 8, 1e-2f), fd_check(bn_loss, &c, c.b, db, c.C, 8, 1e-2f));
    CHECK(e < 5e-3, "batchnorm eval: dw, db vs finite differences (rel err %.2g)", e);
    /* in place */
    memcpy(o2, c.x, n * 4);
    batchnorm_forward_eval(o2, o2, c.w, c.b, c.rm, c.rv, c.B, c.C, c.HW, 1e-5f);
    batchnorm_forward_eval(c.out, c.x, c.w, c.b, c.rm, c.rv, c.B, c.C, c.HW, 1e-5f);
    CHECK(memcmp(o2, c.out, n * 4) == 0, "batchnorm eval: in place gives the same bytes");
    free(c.x), free(c.w), free(c.b), free(c.rm), free(c.rv), free(c.out), free(c.r), free(c.mean), free(c.rstd);
    free(o2), free(m2), free(s2), free(rm1), free(rv1), free(rm2), free(rv2);
    free(dx), free(dw), free(db), free(dxr), free(dwr), free(dbr);
}

/* ---------- pooling and activations ---------- */

typedef struct {
    int kind; /* 0 max, 1 avg, 2 avg excluding padding, 3 gap, 4 relu, 5 relu6 */
    int B, C, H, W, K, stride, pad;
    size_t nin, nout;
    float *x, *out, *r;
} pw_ctx;

static double pw_loss(void *p)
{
    pw_ctx *c = p;
    switch (c->kind) {
    case 0: maxpool_forward(c->out, NULL, c->x, c->B, c->C, c->H, c->W, c->K, c->stride, c->pad); break;
    case 1:
    case 2: avgpool_forward(c->out, c->x, c->B, c->C, c->H, c->W, c->K, c->stride, c->pad, c->kind == 1); break;
    case 3: gap_forward(c->out, c->x, c->B, c->C, c->H * c->W); break;
    case 4: relu_forward(c->out, c->x, c->nin); break;
    case 5: relu6_forward(c->out, c->x, c->nin); break;
    }
    return dotd(c->out, c->r, c->nout);
}

static void test_pointwise(const char *what, int kind)
{
    pw_ctx c = {.kind = kind, .B = 2, .C = 3, .H = 9, .W = 8, .K = 3, .stride = 2, .pad = 1};
    int OH = pool_out_size(c.H, c.K, c.stride, c.pad), OW = pool_out_size(c.W, c.K, c.stride, c.pad);
    c.nin = (size_t)c.B * c.C * c.H * c.W;
    c.nout = kind <= 2 ? (size_t)c.B * c.C * OH * OW : kind == 3 ? (size_t)c.B * c.C : c.nin;
    /* distinct values spaced well beyond the step, away from the kinks */
    c.x = zeros(c.nin);
    for (size_t i = 0; i < c.nin; i++) {
        size_t j = (i * 37) % c.nin;
        c.x[i] = (float)(((double)j / c.nin) * (kind == 5 ? 16 : 4) - (kind == 5 ? 4 : 2)) + 0.003f;
    }
    c.out = zeros(c.nout), c.r = randv(c.nout, 1);
    float *dx = zeros(c.nin);
    int *idx = xmalloc(c.nout * sizeof(int));
    switch (kind) {
    case 0:
        maxpool_forward(c.out, idx, c.x, c.B, c.C, c.H, c.W, c.K, c.stride, c.pad);
        maxpool_backward(dx, c.r, idx, c.B, c.C, c.H, c.W, OH, OW);
        break;
    case 1:
    case 2: avgpool_backward(dx, c.r, c.B, c.C, c.H, c.W, c.K, c.stride, c.pad, kind == 1); break;
    case 3: gap_backward(dx, c.r, c.B, c.C, c.H * c.W); break;
    case 4:
        relu_forward(c.out, c.x, c.nin);
        relu_backward(dx, c.r, c.out, c.nin);
        break;
    case 5:
        relu6_forward(c.out, c.x, c.nin);
        relu6_backward(dx, c.r, c.out, c.nin);
        break;
    }
    double e = fd_check(pw_loss, &c, c.x, dx, c.nin, (int)c.nin, 1e-3f);
    CHECK(e < 5e-3, "%s: backward vs finite differences at every input (rel err %.2g)", what, e);
    free(c.x), free(c.out), free(c.r), free(dx), free(idx);
}

static void test_pool_values(void)
{
    /* a 4x4 ramp, 3x3 windows, stride 2, pad 1: PyTorch gives these */
    float x[16], o[4];
    for (int i = 0; i < 16; i++) x[i] = (float)i;
    maxpool_forward(o, NULL, x, 1, 1, 4, 4, 3, 2, 1);
    CHECK(o[0] == 5 && o[1] == 7 && o[2] == 13 && o[3] == 15, "maxpool: values of a 4x4 ramp");
    avgpool_forward(o, x, 1, 1, 4, 4, 3, 2, 1, 1);
    CHECK(fabsf(o[0] - 10.0f / 9) < 1e-6f && fabsf(o[3] - 90.0f / 9) < 1e-6f,
          "avgpool: count_include_pad divides by 9 (%g %g)", o[0], o[3]);
    avgpool_forward(o, x, 1, 1, 4, 4, 3, 2, 1, 0);
    CHECK(fabsf(o[0] - 2.5f) < 1e-6f, "avgpool: count_include_pad off divides by the in-image part (%g)", o[0]);
}

/* The 3x3 stride-2 max pool's vector path against the naive reference:
 * widths around the 16-output vectors, values from a few levels (ties
 * everywhere, as after a ReLU), NaNs and -infinity; other windows through
 * the generic path; the set backward against zeroing then accumulating. */
static void test_maxpool_paths(void)
{
    static const int sizes[][2] = {{1, 1}, {2, 3}, {5, 34}, {7, 35}, {6, 36}, {9, 64}, {8, 65}, {3, 97}, {4, 112},
                                   {11, 113}};
    static const int win[][3] = {{3, 2, 1}, {3, 2, 0}, {2, 2, 0}, {3, 1, 1}};
    int ok = 1, okb = 1, nt = 0;
    for (size_t si = 0; si < sizeof sizes / sizeof *sizes; si++)
        for (size_t wi = 0; wi < sizeof win / sizeof *win; wi++) {
            int B = 2, C = 3, H = sizes[si][0], W = sizes[si][1], K = win[wi][0], st = win[wi][1], pd = win[wi][2];
            int OH = pool_out_size(H, K, st, pd), OW = pool_out_size(W, K, st, pd);
            if (OH < 1 || OW < 1) continue;
            size_t n = (size_t)B * C * H * W, no = (size_t)B * C * OH * OW;
            float *x = zeros(n), *o = zeros(no), *orf = zeros(no), *g = randv(no, 1), *d1 = zeros(n), *d2 = zeros(n);
            int *ix = xmalloc(no * sizeof(int)), *ixr = xmalloc(no * sizeof(int));
            for (size_t i = 0; i < n; i++) {
                double u = rng_uniform(&R);
                x[i] = u < 0.02 ? NAN : u < 0.04 ? -INFINITY : (float)(int)(u * 4);
            }
            for (int t = 1; t <= 2; t++) {
                blas_set_threads(t);
                maxpool_forward(o, ix, x, B, C, H, W, K, st, pd);
                maxpool_forward_ref(orf, ixr, x, B, C, H, W, K, st, pd);
                ok &= memcmp(o, orf, no * 4) == 0 && memcmp(ix, ixr, no * sizeof(int)) == 0;
                memset(o, 0, no * 4);
                maxpool_forward(o, NULL, x, B, C, H, W, K, st, pd); /* values only */
                ok &= memcmp(o, orf, no * 4) == 0;
                memset(d1, 0, n * 4);
                maxpool_backward(d1, g, ix, B, C, H, W, OH, OW);
                for (size_t i = 0; i < n; i++) d2[i] = 99.0f;
                maxpool_backward_set(d2, g, ix, B, C, H, W, OH, OW);
                okb &= same(d1, d2, n);
            }
            nt++;
            free(x), free(o), free(orf), free(g), free(d1), free(d2), free(ix), free(ixr);
        }
    blas_set_threads(1);
    CHECK(ok, "maxpool: values and indices (and values alone) equal the reference (ties, NaN, -inf; %d shapes, 1 and 2 "
              "threads)", nt);
    CHECK(okb, "maxpool: the set backward equals zeroing then the accumulating one");
}

/* ReLU and ReLU6 (vector code) against their scalar definitions, bytes
 * compared: lengths around the vector width, values at the kinks, NaN */
static void test_relu_exact(void)
{
    int ok = 1;
    for (size_t n = 1; n < 70; n += 3) {
        float *x = zeros(n), *m = zeros(n), *g = randv(n, 1), *o = zeros(n), *want = zeros(n), *acc = randv(n, 1),
              *acc2 = zeros(n);
        static const float special[] = {0.0f, -0.0f, 6.0f, 5.9999995f, 6.0000005f, NAN, -1.0f, 1e-30f};
        for (size_t i = 0; i < n; i++) {
            x[i] = i % 3 ? special[i % 8] : (float)(rng_uniform(&R) * 16 - 4);
            m[i] = i % 2 ? special[(i + 3) % 8] : (float)(rng_uniform(&R) * 16 - 4);
        }
        relu_forward(o, x, n);
        for (size_t i = 0; i < n; i++) want[i] = x[i] > 0.0f ? x[i] : 0.0f;
        ok &= memcmp(o, want, n * 4) == 0;
        relu6_forward(o, x, n);
        for (size_t i = 0; i < n; i++) want[i] = x[i] > 0.0f ? (x[i] < 6.0f ? x[i] : 6.0f) : 0.0f;
        ok &= memcmp(o, want, n * 4) == 0;
        relu_backward_set(o, g, m, n);
        for (size_t i = 0; i < n; i++) want[i] = m[i] > 0.0f ? g[i] : 0.0f;
        ok &= memcmp(o, want, n * 4) == 0;
        relu6_backward_set(o, g, m, n);
        for (size_t i = 0; i < n; i++) want[i] = m[i] > 0.0f && m[i] < 6.0f ? g[i] : 0.0f;
        ok &= memcmp(o, want, n * 4) == 0;
        memcpy(acc2, acc, n * 4);
        relu_backward(acc2, g, m, n);
        for (size_t i = 0; i < n; i++) want[i] = acc[i] + (m[i] > 0.0f ? g[i] : 0.0f);
        ok &= memcmp(acc2, want, n * 4) == 0;
        memcpy(acc2, acc, n * 4);
        relu6_backward(acc2, g, m, n);
        for (size_t i = 0; i < n; i++) want[i] = acc[i] + (m[i] > 0.0f && m[i] < 6.0f ? g[i] : 0.0f);
        ok &= memcmp(acc2, want, n * 4) == 0;
        free(x), free(m), free(g), free(o), free(want), free(acc), free(acc2);
    }
    CHECK(ok, "relu, relu6: forward, backward and backward_set equal their scalar definitions byte for byte");
}

/* ---------- losses ---------- */

typedef struct {
    int B, C, D;
    float lambda;
    float *z, *it, *t, *logits;
    int *y;
} loss_ctx;

static double ce_loss(void *p)
{
    loss_ctx *c = p;
    return crossentropy_forward(NULL, c->logits, c->y, c->B, c->C);
}

static double cos_loss(void *p)
{
    loss_ctx *c = p;
    return cosloss_forward(NULL, NULL, c->z, c->it, c->t, c->y, c->B, c->D, c->lambda);
}

static void normalize_rows(float *x, int n, int d)
{
    for (int i = 0; i < n; i++) {
        double s = sqrt(dotd(x + (size_t)i * d, x + (size_t)i * d, d));
        for (int j = 0; j < d; j++) x[(size_t)i * d + j] /= (float)s;
    }
}

static void test_losses(void)
{
    loss_ctx c = {.B = 5, .C = 7, .D = 16, .lambda = 0.5f};
    int y[5] = {0, 3, 6, 2, 3};
    c.y = y;
    c.logits = randv((size_t)c.B * c.C, 3);
    float *probs = zeros((size_t)c.B * c.C), *dl = zeros((size_t)c.B * c.C);
    float loss = crossentropy_forward(probs, c.logits, c.y, c.B, c.C);
    double want = 0;
    for (int i = 0; i < c.B; i++) {
        double s = 0;
        for (int k = 0; k < c.C; k++) s += exp(c.logits[i * c.C + k]);
        want += log(s) - c.logits[i * c.C + y[i]];
    }
    CHECK(fabs(loss - want / c.B) < 1e-5, "cross-entropy: value (%g vs %g)", loss, want / c.B);
    crossentropy_backward(dl, probs, c.y, c.B, c.C, 1.0f);
    double e = fd_check(ce_loss, &c, c.logits, dl, (size_t)c.B * c.C, c.B * c.C, 1e-2f);
    CHECK(e < 2e-3, "cross-entropy: gradient vs finite differences (rel err %.2g)", e);

    c.z = randv((size_t)c.B * c.D, 1), c.it = randv((size_t)c.B * c.D, 1), c.t = randv((size_t)c.C * c.D, 1);
    normalize_rows(c.it, c.B, c.D);
    normalize_rows(c.t, c.C, c.D);
    float lambdas[3] = {0.5f, 1.0f, 0.0f};
    for (int q = 0; q < 3; q++) {
        c.lambda = lambdas[q];
        float *dz = zeros((size_t)c.B * c.D);
        cosloss_backward(dz, c.z, c.it, c.t, c.y, c.B, c.D, c.lambda, 1.0f);
        e = fd_check(cos_loss, &c, c.z, dz, (size_t)c.B * c.D, c.B * c.D, 1e-2f);
        CHECK(e < 2e-3, "cosine loss lambda %g: gradient vs finite differences (rel err %.2g)", c.lambda, e);
        if (q == 0) {
            /* the closed form of the method, with unit It and T rows */
            double worst = 0;
            for (int i = 0; i < c.B; i++) {
                const float *zi = c.z + i * c.D, *a = c.it + i * c.D, *b = c.t + y[i] * c.D;
                double nz = sqrt(dotd(zi, zi, c.D)), c1 = dotd(zi, a, c.D) / nz, c2 = dotd(zi, b, c.D) / nz;
                for (int j = 0; j < c.D; j++) {
                    double zh = zi[j] / nz;
                    double g = -(0.5 * (a[j] - c1 * zh) + 0.5 * (b[j] - c2 * zh)) / nz / c.B;
                    worst = fmax(worst, fabs(g - dz[i * c.D + j]));
                }
            }
            CHECK(worst < 1e-6, "cosine loss: gradient equals the method's closed form (%.2g)", worst);
            double l = 0;
            for (int i = 0; i < c.B; i++) {
                const float *zi = c.z + i * c.D;
                double nz = sqrt(dotd(zi, zi, c.D));
                l += 0.5 * dotd(zi, c.it + i * c.D, c.D) / nz + 0.5 * dotd(zi, c.t + y[i] * c.D, c.D) / nz;
            }
            float got = cosloss_forward(NULL, NULL, c.z, c.it, c.t, c.y, c.B, c.D, 0.5f);
            CHECK(fabs(got + l / c.B) < 1e-6, "cosine loss: value (%g vs %g)", got, -l / c.B);
        }
        free(dz);
    }
    free(c.logits), free(probs), free(dl), free(c.z), free(c.it), free(c.t);
}

/* ---------- parameters and optimisers ---------- */

static void test_params(void)
{
    params p;
    param_init(&p);
    int64_t s1[2] = {3, 5}, s2[1] = {7};
    int a = param_add(&p, "layer1.0.conv1.weight", 2, s1, 0);
    int b = param_add(&p, "layer1.0.bn1.running_mean", 1, s2, 1);
    int c = param_add(&p, "layer10.conv.weight", 1, s2, 0);
    param_alloc(&p);
    CHECK(p.grad == NULL && param_grad(&p, a) == NULL, "param: no gradient block before the first zero_grad");
    param_zero_grad(&p);
    CHECK(((uintptr_t)param_data(&p, c) & 63) == 0, "param: tensors are 64-byte aligned in one block");
    CHECK(param_grad(&p, b) == NULL && param_grad(&p, a) != NULL, "param: buffers have no gradient");
    int hits = param_freeze(&p, "layer1", 1);
    CHECK(hits == 2 && param_grad(&p, a) == NULL && param_grad(&p, c) != NULL,
          "param: freezing module 'layer1' spares 'layer10' (%d matched)", hits);
    CHECK(param_trainable(&p) == 7, "param: trainable count after freezing");
    param_freeze(&p, "", 0);
    CHECK(param_trainable(&p) == 22, "param: unfreeze all");

    /* load: a missing tensor and a shape mismatch are errors naming the tensor */
    char tmp[] = "/tmp/nn_cnn_XXXXXX", path[64], err[VL_ERRLEN];
    if (!mkdtemp(tmp)) return;
    snprintf(path, sizeof path, "%s/w.safetensors", tmp);
    float buf[64] = {0};
    stw *w = stw_new();
    stw_add(w, "layer1.0.conv1.weight", ST_F32, 2, s1, buf);
    stw_add(w, "layer1.0.bn1.running_mean", ST_F32, 1, s2, buf);
    int64_t bad[1] = {6};
    stw_add(w, "layer10.conv.weight", ST_F32, 1, bad, buf);
    stw_write(w, path, err);
    stw_free(w);
    st_file f;
    int rc = st_open(&f, path, err) == 0 ? param_load(&p, &f, NULL, err) : -1;
    CHECK(rc != 0 && strstr(err, "layer10.conv.weight") && strstr(err, "[6]"),
          "param: shape mismatch names the tensor (%s)", err);
    st_close(&f);
    unlink(path);
    rmdir(tmp);
    param_free(&p);
}

/* PyTorch's update rules in double, for three steps */
static void test_optim_kind(const char *what, int kind, float lr, float wd, float mom, int nesterov)
{
    params p;
    param_init(&p);
    int64_t s[1] = {6};
    param_add(&p, "a", 1, s, 0);
    param_add(&p, "frozen", 1, s, 0);
    param_alloc(&p);
    param_zero_grad(&p);
    param_freeze(&p, "frozen", 1);
    float *w = param_data(&p, 0), *g = p.grad + p.t[0].off;
    double W[6], M[6] = {0}, V[6] = {0};
    for (int i = 0; i < 6; i++) W[i] = w[i] = (float)(0.1 * (i - 2.5));
    for (int i = 0; i < 6; i++) param_data(&p, 1)[i] = 1.0f;
    optim o;
    optim_init(&o, kind, lr, &p);
    o.wd = wd, o.momentum = mom, o.nesterov = nesterov;
    for (int t = 1; t <= 3; t++) {
        for (int i = 0; i < 6; i++) g[i] = (float)(0.3 * sin(i + 2.0 * t) + 0.01 * i);
        for (int i = 0; i < 6; i++) {
            double d = g[i];
            if (kind == OPTIM_SGD) {
                d += wd * W[i];
                if (mom != 0) {
                    M[i] = t == 1 ? d : mom * M[i] + d;
                    d = nesterov ? d + mom * M[i] : M[i];
                }
                W[i] -= lr * d;
            } else {
                if (kind == OPTIM_ADAMW) W[i] *= 1 - lr * wd;
                else d += wd * W[i];
                M[i] = 0.9 * M[i] + 0.1 * d;
                V[i] = 0.999 * V[i] + 0.001 * d * d;
                double mh = M[i] / (1 - pow(0.9, t)), vh = V[i] / (1 - pow(0.999, t));
                W[i] -= lr * mh / (sqrt(vh) + 1e-8);
            }
        }
        optim_step(&o, &p);
    }
    double worst = 0;
    for (int i = 0; i < 6; i++) worst = fmax(worst, fabs(W[i] - w[i]));
    CHECK(worst < 1e-6, "optim %s: three steps match the update rule (max diff %.2g)", what, worst);
    CHECK(param_data(&p, 1)[0] == 1.0f && o.steps[1] == 0, "optim %s: a frozen tensor is not touched", what);

    /* resume: save after 2 steps, restore into a fresh optimiser, step again:
     * the same bytes as stepping straight through */
    char tmp[] = "/tmp/nn_cnn_XXXXXX", path[64], err[VL_ERRLEN];
    if (!mkdtemp(tmp)) return;
    snprintf(path, sizeof path, "%s/opt.safetensors", tmp);
    params q;
    param_init(&q);
    param_add(&q, "a", 1, s, 0);
    param_add(&q, "frozen", 1, s, 0);
    param_alloc(&q);
    param_zero_grad(&q);
    param_freeze(&q, "frozen", 1);
    float *wq = param_data(&q, 0), *gq = q.grad + q.t[0].off;
    for (int i = 0; i < 6; i++) wq[i] = (float)(0.1 * (i - 2.5));
    optim o1, o2;
    optim_init(&o1, kind, lr, &q);
    o1.wd = wd, o1.momentum = mom, o1.nesterov = nesterov;
    float ref[6], keep[6];
    for (int t = 1; t <= 3; t++) {
        for (int i = 0; i < 6; i++) gq[i] = (float)(0.3 * sin(i + 2.0 * t) + 0.01 * i);
        if (t == 3) {
            memcpy(keep, wq, sizeof keep);
            optim_step(&o1, &q);
            memcpy(ref, wq, sizeof ref);
            memcpy(wq, keep, sizeof keep);
            optim_init(&o2, kind, lr, &q);
            o2.wd = wd, o2.momentum = mom, o2.nesterov = nesterov;
            int rc = optim_load(&o2, &q, path, err);
            CHECK(rc == 0, "optim %s: state loads (%s)", what, rc ? err : "ok");
            optim_step(&o2, &q);
            CHECK(memcmp(ref, wq, sizeof ref) == 0, "optim %s: saved and restored state resumes exactly", what);
            optim_free(&o2);
        } else {
            optim_step(&o1, &q);
            if (t == 2) {
                int rc = optim_save(&o1, &q, path, err);
                CHECK(rc == 0, "optim %s: state saves (%s)", what, rc ? err : "ok");
            }
        }
    }
    /* a state for other parameters is refused and leaves the optimiser as it was */
    params r;
    param_init(&r);
    param_add(&r, "b", 1, s, 0);
    param_add(&r, "frozen", 1, s, 0);
    param_alloc(&r);
    optim o3;
    optim_init(&o3, kind, lr, &r);
    o3.momentum = mom;
    int rc = optim_load(&o3, &r, path, err);
    CHECK(rc != 0 && o3.steps[0] == 0 && strstr(err, "'a."), "optim %s: a state for another model is refused (%s)",
          what, err);
    param_add(&r, "c", 1, s, 0); /* r grows after the optimiser was made for it */
    rc = optim_load(&o3, &r, path, err);
    CHECK(rc != 0 && strstr(err, "differ"), "optim %s: parameters other than the optimizer's are refused (%s)", what,
          err);
    optim_free(&o3);
    param_free(&r);
    optim_free(&o1);
    optim_free(&o);
    unlink(path);
    rmdir(tmp);
    param_free(&q);
    param_free(&p);
}

/* optim_step (vectors, pieces side by side on the pool) against
 * optim_step_ref (one element at a time): the same bytes over three steps on
 * 1 and 2 threads, for tensors with vector tails, several pieces and none
 * at all trainable (frozen, buffer) */
static void test_optim_fast(const char *what, int kind, float wd, float mom, int nesterov)
{
    static const int64_t sizes[] = {37, 40000, 5, 16, 1, 33, 17000};
    enum { NT = sizeof sizes / sizeof *sizes };
    int ok = 1;
    for (int threads = 1; threads <= 2; threads++) {
        params p[2];
        optim o[2];
        for (int k = 0; k < 2; k++) {
            param_init(&p[k]);
            char name[16];
            for (int i = 0; i < NT; i++) {
                snprintf(name, sizeof name, "t%d", i);
                param_add(&p[k], name, 1, &sizes[i], i == 4);
            }
            param_alloc(&p[k]);
            param_zero_grad(&p[k]);
            param_freeze(&p[k], "t2", 1);
        }
        rng_seed(&R, 11);
        float *w0 = randv(p[0].numel, 1.0f);
        memcpy(p[0].data, w0, p[0].numel * sizeof(float));
        memcpy(p[1].data, w0, p[0].numel * sizeof(float));
        for (int k = 0; k < 2; k++) {
            optim_init(&o[k], kind, 1e-2f, &p[k]);
            o[k].wd = wd, o[k].momentum = mom, o[k].nesterov = nesterov;
        }
        blas_set_threads(threads);
        for (int t = 0; t < 3; t++) {
            float *g = randv(p[0].numel, 0.5f);
            memcpy(p[0].grad, g, p[0].numel * sizeof(float));
            memcpy(p[1].grad, g, p[0].numel * sizeof(float));
            free(g);
            optim_step(&o[0], &p[0]);
            optim_step_ref(&o[1], &p[1]);
        }
        blas_set_threads(1);
        ok &= same(p[0].data, p[1].data, p[0].numel) && same(o[0].m, o[1].m, p[0].numel);
        if (kind != OPTIM_SGD) ok &= same(o[0].v, o[1].v, p[0].numel);
        ok &= same(p[0].data + p[0].t[2].off, w0 + p[0].t[2].off, 5);
        ok &= memcmp(o[0].steps, o[1].steps, sizeof(int64_t) * NT) == 0;
        ok &= o[0].steps[2] == 0 && o[0].steps[4] == 0 && o[0].steps[0] == 3;
        free(w0);
        for (int k = 0; k < 2; k++) {
            optim_free(&o[k]);
            param_free(&p[k]);
        }
    }
    CHECK(ok, "optim %s: the vector step on 1 and 2 threads gives optim_step_ref's bytes", what);
}

/* Freezing skips work without changing what is computed: with only layer4
 * trainable, its gradients equal those of a fully trainable run and the
 * frozen tensors' gradients are never written. */
static void test_freezing(void)
{
    char err[VL_ERRLEN];
    int B = 2, S = 40, ok = 1;
    float *x = randv((size_t)B * 3 * S * S, 1), *feat = zeros((size_t)B * 512), *dfeat = randv((size_t)B * 512, 1);
    float *full = NULL;
    size_t nfull = 0;
    for (int pass = 0; pass < 3; pass++) {
        resnet *m = resnet_new(18, 0);
        params *p = resnet_params(m);
        rng_seed(&R, 99);
        for (int i = 0; i < p->n; i++)
            if (!p->t[i].is_buffer && strstr(p->t[i].name, "conv"))
                for (size_t k = 0; k < p->t[i].numel; k++) param_data(p, i)[k] = (float)(rng_normal(&R) * 0.1);
        if (pass == 1) {
            param_freeze(p, "", 1);
            param_freeze(p, "layer4", 0);
        }
        if (pass == 2) {
            /* the forward before the first param_zero_grad, which then runs
             * between forward and backward */
            if (resnet_forward(m, feat, x, B, S, S, 1, err) != 0) ok = 0;
            param_zero_grad(p);
        } else {
            param_zero_grad(p);
            /* a marker in every gradient slot: frozen tensors must keep it */
            for (size_t k = 0; k < p->numel; k++) p->grad[k] = pass == 1 ? 7.0f : 0.0f;
            param_zero_grad(p);
            if (resnet_forward(m, feat, x, B, S, S, 1, err) != 0) ok = 0;
        }
        resnet_backward(m, dfeat);
        int l4 = param_find(p, "layer4.0.conv1.weight"), l1 = param_find(p, "layer1.0.conv1.weight");
        if (pass == 0) {
            nfull = p->numel;
            full = xmalloc(nfull * sizeof(float));
            memcpy(full, p->grad, nfull * sizeof(float));
        } else if (pass == 2) {
            CHECK(nfull == p->numel && memcmp(full, p->grad, nfull * sizeof(float)) == 0,
                  "resnet: forward before the first param_zero_grad gives the same gradients");
        } else {
            size_t off = p->t[l4].off, n = p->t[l4].numel;
            double e = maxrel(p->grad + off, full + off, n);
            CHECK(e == 0.0 && nfull == p->numel, "resnet: layer4 gradients with the rest frozen equal the full run's");
            CHECK(p->grad[p->t[l1].off] == 7.0f, "resnet: frozen layer1's gradient is never written");
        }
        resnet_free(m);
    }
    CHECK(ok, "resnet: forward on a 40x40 input");
    free(x), free(feat), free(dfeat), free(full);
}

/* Random weights with BatchNorm statistics far from the identity, so that
 * folding has something to fold. */
static void fill_convnet(params *p)
{
    for (int i = 0; i < p->n; i++) {
        const char *n = p->t[i].name;
        float *d = param_data(p, i);
        size_t k = p->t[i].numel;
        int conv = p->t[i].ndim == 4;
        double fan = conv ? (double)p->t[i].shape[1] * p->t[i].shape[2] * p->t[i].shape[3] : 1;
        for (size_t j = 0; j < k; j++) {
            double u = rng_uniform(&R);
            d[j] = conv                            ? (float)(rng_normal(&R) * sqrt(2.0 / fan))
                   : strstr(n, "running_var")      ? (float)(0.3 + 1.5 * u)
                   : strstr(n, "running_mean")     ? (float)(0.6 * u - 0.3)
                   : strstr(n, "weight")           ? (float)(0.4 + u)
                                                   : (float)(0.4 * u - 0.2);
        }
    }
}

/* cn_decisions (what the training parity tests hand the float64
 * reference): none before a saving forward or after an inference one; after
 * a saving forward the sites in forward order (ResNet-18: stem ReLU, max
 * pool, two ReLUs per block; ResNet-50: three per block; MobileNetV2: 35
 * ReLU6), each activation's output within its range, and the max pool's
 * argmax that of the naive pool over the stem's output; none after a
 * forward that failed. */
static void test_decisions(void)
{
    char err[VL_ERRLEN];
    int B = 2, S = 40;
    float *x = randv((size_t)B * 3 * S * S, 1), *feat = zeros((size_t)B * 2048);
    cn_decision d[64];
    for (int arch = 0; arch < 3; arch++) {
        const char *name = arch == 0 ? "resnet18" : arch == 1 ? "resnet50" : "mobilenet_v2";
        resnet *rn = arch < 2 ? resnet_new(arch == 0 ? 18 : 50, 0) : NULL;
        mobilenet *mb = arch == 2 ? mobilenet_new(0) : NULL;
        params *p = rn ? resnet_params(rn) : mobilenet_params(mb);
        fill_convnet(p);
#define DEC() (rn ? resnet_decisions(rn, d, 64) : mobilenet_decisions(mb, d, 64))
#define FWD(save) (rn ? resnet_forward(rn, feat, x, B, S, S, save, err) : mobilenet_forward(mb, feat, x, B, S, S, save, err))
        CHECK(DEC() == -1, "%s: no decisions before a forward", name);
        int rc = FWD(1), n = DEC(), want = arch == 0 ? 18 : arch == 1 ? 50 : 35;
        CHECK(rc == 0 && n == want, "%s: %d decision sites after a saving forward (want %d)", name, n, want);
        int kinds = 1, ranges = 1;
        for (int k = 0; k < n && k < 64; k++) {
            int pool = rn && k == 1;
            kinds &= d[k].act == (pool ? CN_NONE : rn ? CN_RELU : CN_RELU6) && (pool ? d[k].idx && !d[k].y : d[k].y && !d[k].idx);
            size_t numel = (size_t)d[k].B * d[k].C * d[k].H * d[k].W;
            for (size_t i = 0; d[k].y && i < numel; i++) ranges &= d[k].y[i] >= 0 && (rn || d[k].y[i] <= 6);
        }
        CHECK(kinds && ranges, "%s: sites in forward order, activations within their range", name);
        if (rn && n >= 2) {
            const cn_decision *a = &d[0], *pl = &d[1];
            size_t np = (size_t)pl->B * pl->C * pl->H * pl->W;
            float *o = zeros(np);
            int *idx = xmalloc(np * sizeof(int));
            maxpool_forward_ref(o, idx, a->y, a->B, a->C, a->H, a->W, 3, 2, 1);
            CHECK(pl->B == a->B && pl->C == a->C && memcmp(idx, pl->idx, np * sizeof(int)) == 0,
                   "%s: the max pool's argmax is the naive pool's over the stem's output", name);
            free(o), free(idx);
        }
        CHECK(FWD(0) == 0 && DEC() == -1, "%s: no decisions after an inference forward", name);
        rc = FWD(1);
        int small = rn ? resnet_forward(rn, feat, x, B, 0, 0, 1, err) : mobilenet_forward(mb, feat, x, B, 0, 0, 1, err);
        CHECK(rc == 0 && small == -1 && DEC() == -1, "%s: no decisions after a failed forward (0x0: %s)", name, err);
#undef DEC
#undef FWD
        if (rn) resnet_free(rn);
        if (mb) mobilenet_free(mb);
    }
    free(x), free(feat);
}

/* BatchNorm folded into the convolutions (the inference path of
 * student-embed): the features of ResNet-18, -50 and MobileNetV2 against the
 * unfolded eval-mode ones; the same bytes on 1 and 2 threads; training
 * refused afterwards; the parameters untouched; a reload folds again. */
static void test_fold(void)
{
    char err[VL_ERRLEN];
    int B = 2, S = 48;
    float *x = randv((size_t)B * 3 * S * S, 1.5f);
    for (int arch = 0; arch < 3; arch++) {
        const char *name = arch == 0 ? "resnet18" : arch == 1 ? "resnet50" : "mobilenet_v2";
        resnet *rn = arch < 2 ? resnet_new(arch == 0 ? 18 : 50, 0) : NULL;
        mobilenet *mb = arch == 2 ? mobilenet_new(0) : NULL;
        params *p = rn ? resnet_params(rn) : mobilenet_params(mb);
        int D = rn ? resnet_feature_dim(rn) : mobilenet_feature_dim(mb);
        rng_seed(&R, 7 + arch);
        fill_convnet(p);
        float *f0 = zeros((size_t)B * D), *f1 = zeros((size_t)B * D), *f2 = zeros((size_t)B * D);
        float *snap = xmalloc(p->numel * sizeof(float));
        memcpy(snap, p->data, p->numel * sizeof(float));
#define FWD(f, save) (rn ? resnet_forward(rn, f, x, B, S, S, save, err) : mobilenet_forward(mb, f, x, B, S, S, save, err))
        blas_set_threads(1);
        int ok = FWD(f0, 0) == 0;
        if (rn)
            resnet_fold_bn(rn);
        else
            mobilenet_fold_bn(mb);
        ok &= FWD(f1, 0) == 0;
        blas_set_threads(2);
        ok &= FWD(f2, 0) == 0;
        blas_set_threads(1);
        double e = maxrel(f1, f0, (size_t)B * D);
        CHECK(ok && e < 1e-5, "fold %s: folded features vs unfolded eval-mode ones (rel err %.2g)", name, e);
        CHECK(same(f1, f2, (size_t)B * D), "fold %s: folded forward gives the same bytes on 1 and 2 threads", name);
        CHECK(memcmp(snap, p->data, p->numel * sizeof(float)) == 0, "fold %s: the parameters stay as loaded", name);
        int rc = FWD(f2, 1);
        CHECK(rc != 0 && strstr(err, "inference"), "fold %s: a training forward is refused (%s)", name,
              rc ? err : "accepted");
        if (rn) resnet_set_bn_train(rn, 1);
        else mobilenet_set_bn_train(mb, 1);
        rc = FWD(f2, 0);
        CHECK(rc != 0, "fold %s: a forward with BatchNorm in training mode is refused", name);
        if (rn) resnet_set_bn_train(rn, 0);
        else mobilenet_set_bn_train(mb, 0);
        if (arch == 0) {
            /* other weights loaded into the folded model: folded again */
            char dir[] = "/tmp/nn_cnn_foldXXXXXX", path[64];
            if (!mkdtemp(dir)) {
                CHECK(0, "fold: mkdtemp");
                continue;
            }
            snprintf(path, sizeof path, "%s/w.safetensors", dir);
            resnet *r2 = resnet_new(18, 0);
            fill_convnet(resnet_params(r2));
            float *g0 = zeros((size_t)B * D), *g1 = zeros((size_t)B * D);
            resnet_forward(r2, g0, x, B, S, S, 0, err);
            stw *w = stw_new();
            param_add_to_writer(resnet_params(r2), w);
            int wr = stw_write(w, path, err);
            stw_free(w);
            st_file f;
            int opened = wr == 0 && st_open(&f, path, err) == 0;
            int lr = opened ? resnet_load(rn, &f, err) : -1;
            if (opened) st_close(&f);
            lr = lr == 0 ? resnet_forward(rn, g1, x, B, S, S, 0, err) : -1;
            e = maxrel(g1, g0, (size_t)B * D);
            CHECK(lr == 0 && e < 1e-5, "fold resnet18: weights loaded after folding are folded (rel err %.2g)", e);
            unlink(path);
            rmdir(dir);
            resnet_free(r2);
            free(g0), free(g1);
        }
#undef FWD
        free(f0), free(f1), free(f2), free(snap);
        if (rn) resnet_free(rn);
        if (mb) mobilenet_free(mb);
    }
    free(x);
}

/* The threaded kernels (inputs large enough to be split): same bytes on one
 * thread and on two; the fast max pool and the fused BatchNorm+activation
 * against their references. */

static void test_threads(void)
{
    int B = 3, C = 24, H = 30, W = 29, OC = 20;
    size_t nx = (size_t)B * C * H * W;
    float *x = randv(nx, 1), *w = randv((size_t)OC * C * 9, 0.2f), *bias = randv(OC, 0.5f);
    float *bw = randv(C, 1), *bb = randv(C, 0.5f), *rm = randv(C, 0.3f), *rv = randv(C, 0.5f);
    for (int c = 0; c < C; c++) rv[c] += 1.0f;
    /* a 3x3 s1 map (image by image) and a 3x3 s2 one on a small map (chunked) */
    conv_shape shapes[2];
    conv_shape_init(&shapes[0], C, H, W, OC, 3, 3, 1, 1, 1, 1);
    conv_shape_init(&shapes[1], C, H, W, OC, 3, 3, 2, 1, 1, 1);
    for (int k = 0; k < 2; k++) {
        conv_shape *s = &shapes[k];
        size_t no = (size_t)B * OC * s->OH * s->OW;
        /* OpenBLAS's sgemm itself may round differently on another thread
         * count: two threads are compared with the references, and with a
         * second two-thread run for the same bytes */
        float *o[2], *dx[2], *dw[2], *g = randv(no, 1), *orf = zeros(no), *dxr = zeros(nx),
                                                *dwr = zeros((size_t)OC * C * 9);
        blas_set_threads(2);
        for (int t = 0; t < 2; t++) {
            o[t] = zeros(no), dx[t] = zeros(nx), dw[t] = zeros((size_t)OC * C * 9);
            conv2d_forward(o[t], x, w, bias, B, s);
            conv2d_backward(dx[t], dw[t], NULL, g, x, w, B, s);
        }
        conv2d_forward_ref(orf, x, w, bias, B, s);
        conv2d_backward_ref(dxr, dwr, NULL, g, x, w, B, s);
        double e = maxrel(o[0], orf, no), e2 = maxrel(dx[0], dxr, nx), e3 = maxrel(dw[0], dwr, (size_t)OC * C * 9);
        CHECK(e < 1e-5 && e2 < 1e-5 && e3 < 1e-5, "threads: conv %s on 2 threads vs reference (rel err %.2g %.2g %.2g)",
              k ? "3x3 s2 (chunked)" : "3x3 s1", e, e2, e3);
        CHECK(same(o[0], o[1], no) && same(dx[0], dx[1], nx) && same(dw[0], dw[1], (size_t)OC * C * 9),
              "threads: conv %s forward and backward give the same bytes twice on 2 threads",
              k ? "3x3 s2 (chunked)" : "3x3 s1");
        free(orf), free(dxr), free(dwr);
        for (int t = 0; t < 2; t++) free(o[t]), free(dx[t]), free(dw[t]);
        free(g);
    }
    {
        /* depthwise (no GEMM): the same bytes on 1 and 2 threads, and the reference */
        conv_shape s;
        conv_shape_init(&s, C, H, W, C, 3, 3, 1, 1, 1, C);
        size_t no = (size_t)B * C * s.OH * s.OW;
        float *g = randv(no, 1), *o[2], *dx[2], *dk[2], *orf = zeros(no);
        for (int t = 0; t < 2; t++) {
            blas_set_threads(t + 1);
            o[t] = zeros(no), dx[t] = zeros(nx), dk[t] = zeros((size_t)C * 9);
            conv2d_forward(o[t], x, w, bias, B, &s);
            conv2d_backward(dx[t], dk[t], NULL, g, x, w, B, &s);
        }
        conv2d_forward_ref(orf, x, w, bias, B, &s);
        CHECK(same(o[0], o[1], no) && same(dx[0], dx[1], nx) && same(dk[0], dk[1], (size_t)C * 9) &&
                  maxrel(o[1], orf, no) < 1e-5,
              "threads: depthwise conv forward and backward give the same bytes on 1 and 2 threads (ref err %.2g)",
              maxrel(o[1], orf, no));
        for (int t = 0; t < 2; t++) free(o[t]), free(dx[t]), free(dk[t]);
        free(g), free(orf);
    }
    int HW = H * W;
    float *y[2], *mean[2], *rstd[2], *dx[2], *dw[2], *db[2], *g = randv(nx, 1), *y2 = zeros(nx);
    for (int t = 0; t < 2; t++) {
        blas_set_threads(t + 1);
        y[t] = zeros(nx), mean[t] = zeros(C), rstd[t] = zeros(C), dx[t] = zeros(nx), dw[t] = zeros(C),
        db[t] = zeros(C);
        batchnorm_forward_train(y[t], mean[t], rstd[t], NULL, NULL, x, bw, bb, B, C, HW, 0.1f, 1e-5f);
        batchnorm_backward_train(dx[t], dw[t], db[t], g, x, bw, mean[t], rstd[t], B, C, HW);
    }
    CHECK(same(y[0], y[1], nx) && same(mean[0], mean[1], C) && same(rstd[0], rstd[1], C) &&
              same(dx[0], dx[1], nx) && same(dw[0], dw[1], C) && same(db[0], db[1], C),
          "threads: batchnorm training forward and backward give the same bytes on 1 and 2 threads");
    for (int t = 0; t < 2; t++) {
        blas_set_threads(t + 1);
        memset(dx[t], 0, nx * 4), memset(dw[t], 0, C * 4), memset(db[t], 0, C * 4);
        batchnorm_forward_eval(y[t], x, bw, bb, rm, rv, B, C, HW, 1e-5f);
        batchnorm_backward_eval(dx[t], dw[t], db[t], g, x, bw, rm, rv, B, C, HW, 1e-5f);
    }
    CHECK(same(y[0], y[1], nx) && same(dx[0], dx[1], nx) && same(dw[0], dw[1], C) && same(db[0], db[1], C),
          "threads: batchnorm eval forward and backward give the same bytes on 1 and 2 threads");
    for (int act = 1; act <= 2; act++) {
        for (int t = 0; t < 2; t++) {
            blas_set_threads(t + 1);
            batchnorm_forward_eval_act(y[t], x, bw, bb, rm, rv, B, C, HW, 1e-5f, act);
        }
        blas_set_threads(1);
        batchnorm_forward_eval(y2, x, bw, bb, rm, rv, B, C, HW, 1e-5f);
        if (act == BN_ACT_RELU)
            relu_forward(y2, y2, nx);
        else
            relu6_forward(y2, y2, nx);
        CHECK(same(y[0], y[1], nx) && same(y[0], y2, nx),
              "threads: batchnorm eval + %s in one pass equals the two passes, on 1 and 2 threads",
              act == BN_ACT_RELU ? "relu" : "relu6");
    }
    /* the fused eval backward: mask, BatchNorm, set */
    for (int act = 1; act <= 2; act++) {
        float *ya = zeros(nx), *g1 = zeros(nx), *g2 = zeros(nx), *dxa = zeros(nx), *dxb = zeros(nx);
        float dwa[24] = {0}, dba[24] = {0}, dwb[24] = {0}, dbb2[24] = {0};
        blas_set_threads(1);
        batchnorm_forward_eval_act(ya, x, bw, bb, rm, rv, B, C, HW, 1e-5f, act);
        memcpy(g1, g, nx * 4), memcpy(g2, g, nx * 4);
        if (act == BN_ACT_RELU)
            relu_backward_set(g1, g1, ya, nx);
        else
            relu6_backward_set(g1, g1, ya, nx);
        batchnorm_backward_eval(dxa, dwa, dba, g1, x, bw, rm, rv, B, C, HW, 1e-5f);
        int ok = 1;
        for (int t = 0; t < 2; t++) {
            blas_set_threads(t + 1);
            memcpy(g2, g, nx * 4), memset(dwb, 0, sizeof dwb), memset(dbb2, 0, sizeof dbb2);
            for (size_t k = 0; k < nx; k++) dxb[k] = 99.0f; /* set, not accumulated */
            batchnorm_backward_eval_act(dxb, dwb, dbb2, g2, ya, act, x, bw, bb, rm, rv, B, C, HW, 1e-5f);
            ok &= same(dxa, dxb, nx) && same(g, g2, nx) && same(dwa, dwb, C) && same(dba, dbb2, C);
            /* the mask recomputed from the input */
            memset(dwb, 0, sizeof dwb), memset(dbb2, 0, sizeof dbb2);
            for (size_t k = 0; k < nx; k++) dxb[k] = 99.0f;
            batchnorm_backward_eval_act(dxb, dwb, dbb2, g2, NULL, act, x, bw, bb, rm, rv, B, C, HW, 1e-5f);
            ok &= same(dxa, dxb, nx) && same(g, g2, nx) && same(dwa, dwb, C) && same(dba, dbb2, C);
        }
        CHECK(ok,
              "threads: batchnorm eval backward with %s in one pass (mask read, or recomputed from the input) equals "
              "the separate passes and leaves its input gradient as it was, on 1 and 2 threads",
              act == BN_ACT_RELU ? "relu" : "relu6");
        free(ya), free(g1), free(g2), free(dxa), free(dxb);
    }
    for (int t = 0; t < 2; t++) {
        blas_set_threads(t + 1);
        relu_forward(y[t], x, nx);
        memset(dx[t], 0, nx * 4);
        relu_backward(dx[t], g, y[t], nx);
        relu_backward_set(y2, g, y[t], nx);
    }
    CHECK(same(y[0], y[1], nx) && same(dx[0], dx[1], nx), "threads: relu forward and backward on 1 and 2 threads");
    int OH = pool_out_size(H, 3, 2, 1), OW = pool_out_size(W, 3, 2, 1);
    size_t np = (size_t)B * C * OH * OW;
    float *po = zeros(np), *pr = zeros(np);
    int *pi = xmalloc(np * sizeof(int)), *pir = xmalloc(np * sizeof(int));
    x[5] = NAN; /* a NaN wins its windows, as in PyTorch */
    maxpool_forward_ref(pr, pir, x, B, C, H, W, 3, 2, 1);
    int ok = 1;
    for (int t = 0; t < 2; t++) {
        blas_set_threads(t + 1);
        maxpool_forward(po, pi, x, B, C, H, W, 3, 2, 1);
        ok &= memcmp(po, pr, np * 4) == 0 && memcmp(pi, pir, np * sizeof(int)) == 0;
        memset(dx[t], 0, nx * 4);
        maxpool_backward(dx[t], g, pi, B, C, H, W, OH, OW);
    }
    CHECK(ok && same(dx[0], dx[1], nx), "threads: max pool equals its reference (values, indices, NaN) on 1 and 2 threads");
    blas_set_threads(1);
    for (int t = 0; t < 2; t++) free(y[t]), free(mean[t]), free(rstd[t]), free(dx[t]), free(dw[t]), free(db[t]);
    free(x), free(w), free(bias), free(bw), free(bb), free(rm), free(rv), free(g), free(y2), free(po), free(pr);
    free(pi), free(pir);
}

static void test_conv_shapes(void)
{
    conv_shape s;
    int ok = conv_shape_init(&s, 3, 224, 224, 64, 7, 7, 2, 3, 1, 1) == 0 && s.OH == 112 && s.OW == 112;
    CHECK(ok, "conv shape: 7x7 s2 p3 on 224x224 gives 112x112");
    CHECK(conv_shape_init(&s, 3, 0, 224, 64, 3, 3, 1, 1, 1, 1) != 0 &&
              conv_shape_init(&s, 3, 224, -5, 64, 3, 3, 1, 1, 1, 1) != 0,
          "conv shape: an empty or negative map is refused");
    CHECK(conv_shape_init(&s, 3, 8, 8, 4, 3, 3, 1, 2000000000, 1, 1) != 0 &&
              conv_shape_init(&s, 3, 8, 8, 4, 3, 3, 1, 1, 2000000000, 1) != 0 &&
              conv_shape_init(&s, 3, 60000, 60000, 4, 1, 1, 1, 0, 1, 1) != 0,
          "conv shape: sizes past int range are refused, not overflowed");
}

int main(void)
{
    rng_seed(&R, 1234);
    blas_set_threads(1);
    /* maps of >= 1024 outputs go image by image, smaller ones in chunks of images */
    test_conv("3x3 s1 p1 large map", 3, 2, 34, 33, 3, 3, 1, 1, 1, 1, 1);
    test_conv("1x1 s1 large map", 2, 3, 32, 40, 4, 1, 1, 0, 1, 1, 0);
    test_conv("3x3 groups 2 large map", 2, 4, 33, 32, 4, 3, 1, 1, 1, 2, 0);
    test_conv("3x3 s1 p1", 2, 3, 7, 6, 4, 3, 1, 1, 1, 1, 1);
    test_conv("3x3 s2 p1 no bias", 2, 4, 9, 8, 5, 3, 2, 1, 1, 1, 0);
    test_conv("7x7 s2 p3", 1, 3, 12, 11, 4, 7, 2, 3, 1, 1, 0);
    /* stride 2 on wide rows: im2col's 16-lane gather and its scalar ends */
    test_conv("3x3 s2 p1 wide rows", 2, 3, 5, 75, 4, 3, 2, 1, 1, 1, 0);
    test_conv("7x7 s2 p3 wide rows", 1, 2, 8, 70, 3, 7, 2, 3, 1, 1, 1);
    test_conv("1x1 s1", 2, 6, 5, 5, 3, 1, 1, 0, 1, 1, 1);
    test_conv("1x1 s2", 2, 6, 6, 5, 3, 1, 2, 0, 1, 1, 0);
    test_conv("3x3 dilation 2", 2, 3, 9, 9, 4, 3, 1, 2, 2, 1, 1);
    test_conv("3x3 groups 2", 2, 4, 7, 7, 6, 3, 1, 1, 1, 2, 1);
    test_conv("3x3 depthwise s2", 2, 5, 8, 7, 5, 3, 2, 1, 1, 5, 1);
    test_conv("3x3 depthwise x2 channels", 1, 3, 6, 6, 6, 3, 1, 1, 1, 3, 0);
    test_conv_shapes();
    test_batchnorm();
    test_pointwise("maxpool 3x3 s2 p1", 0);
    test_pointwise("avgpool 3x3 s2 p1", 1);
    test_pointwise("avgpool 3x3 s2 p1 count_include_pad off", 2);
    test_pointwise("global average pool", 3);
    test_pointwise("relu", 4);
    test_pointwise("relu6", 5);
    test_pool_values();
    test_maxpool_paths();
    test_relu_exact();
    test_threads();
    test_losses();
    test_params();
    test_optim_kind("sgd", OPTIM_SGD, 0.1f, 0.0f, 0.0f, 0);
    test_optim_kind("sgd momentum wd", OPTIM_SGD, 0.1f, 0.01f, 0.9f, 0);
    test_optim_kind("sgd nesterov", OPTIM_SGD, 0.05f, 0.001f, 0.9f, 1);
    test_optim_kind("adam", OPTIM_ADAM, 1e-3f, 0.0f, 0, 0);
    test_optim_kind("adam L2", OPTIM_ADAM, 1e-3f, 0.1f, 0, 0);
    test_optim_kind("adamw", OPTIM_ADAMW, 1e-3f, 0.05f, 0, 0);
    test_optim_fast("sgd", OPTIM_SGD, 0.0f, 0.0f, 0);
    test_optim_fast("sgd momentum wd", OPTIM_SGD, 0.01f, 0.9f, 0);
    test_optim_fast("sgd nesterov first step", OPTIM_SGD, 0.001f, 0.9f, 1);
    test_optim_fast("adam", OPTIM_ADAM, 0.0f, 0, 0);
    test_optim_fast("adam L2", OPTIM_ADAM, 0.1f, 0, 0);
    test_optim_fast("adamw", OPTIM_ADAMW, 0.05f, 0, 0);
    test_freezing();
    test_fold();
    test_decisions();
    test_col2im_untouched();
    conv_release_workspace();
    CHECK_EXIT();
}
