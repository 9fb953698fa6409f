/* winograd: the F(4x4,3x3) convolution against the naive definitions
 * (conv2d_forward_ref / conv2d_backward_ref, double accumulation): forward,
 * input gradient and weight gradient on maps not divisible by 4 (narrow and
 * wide ones, which the transforms take in different ways), padding 0, 1 and
 * 2, C != K, batches, bias, several chunks of images; backward accumulates
 * (or sets dinp: wino_backward_set, conv2d_backward_set) and skips NULL
 * gradients; a finite-difference check of the Winograd
 * forward's own gradients; the same bytes on 1 and 2 threads; and conv2d_*
 * dispatching here when it pays. Errors are the largest difference relative
 * to the reference's largest magnitude. */
#include "check.h"
#include "floats.h"

#include "blas.h"
#include "nn/conv.h"
#include "nn/winograd.h"
#include "rng.h"
#include "util.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static rng R;

static float *randv(size_t n, float scale) { return rand_floats(&R, n, scale); }

static float *filled(size_t n, float v)
{
    float *x = xmalloc((n ? n : 1) * sizeof(float));
    for (size_t i = 0; i < n; i++) x[i] = v;
    return x;
}

/* worst errors over all cases, reported at the end */
static double worst_fwd, worst_dx, worst_dw;

/* Winograd (direct call, or conv2d_* when via_conv) vs the references; the
 * gradients start from a nonzero value (accumulation). */
static void test_case(const char *what, int B, int C, int H, int W, int K, int pad, int bias, int via_conv)
{
    conv_shape s;
    if (conv_shape_init(&s, C, H, W, K, 3, 3, 1, pad, 1, 1) != 0 || !wino_supported(&s)) {
        CHECK(0, "%s: shape", what);
        return;
    }
    if (via_conv && !wino_pays(&s, B)) {
        CHECK(0, "%s: conv2d dispatches to Winograd", what);
        return;
    }
    size_t nx = (size_t)B * C * H * W, nw = (size_t)K * C * 9, no = (size_t)B * K * s.OH * s.OW;
    float *x = randv(nx, 1), *w = randv(nw, 0.3f), *b = bias ? randv(K, 0.5f) : NULL, *g = randv(no, 1);
    float *o = filled(no, NAN), *orf = filled(no, 0);
    float *dx = filled(nx, 0.25f), *dxr = filled(nx, 0.25f), *dw = filled(nw, -0.5f), *dwr = filled(nw, -0.5f);
    if (via_conv) {
        conv2d_forward(o, x, w, b, B, &s);
        conv2d_backward(dx, dw, NULL, g, x, w, B, &s);
    } else {
        wino_forward(o, x, w, b, B, &s);
        wino_backward(dx, dw, g, x, w, B, &s);
    }
    conv2d_forward_ref(orf, x, w, b, B, &s);
    conv2d_backward_ref(dxr, dwr, NULL, g, x, w, B, &s);
    double e1 = maxrel(o, orf, no);
    /* relative to the gradient itself, not to the 0.25 / -0.5 it started from */
    for (size_t i = 0; i < nx; i++) dx[i] -= 0.25f, dxr[i] -= 0.25f;
    for (size_t i = 0; i < nw; i++) dw[i] += 0.5f, dwr[i] += 0.5f;
    double e2 = maxrel(dx, dxr, nx), e3 = maxrel(dw, dwr, nw);
    worst_fwd = fmax(worst_fwd, e1), worst_dx = fmax(worst_dx, e2), worst_dw = fmax(worst_dw, e3);
    CHECK(e1 < 2e-5, "%s: forward vs naive (rel err %.2g)", what, e1);
    CHECK(e2 < 2e-5 && e3 < 2e-5, "%s: dinp and dw accumulated vs naive (rel err %.2g, %.2g)", what, e2, e3);

    /* NULL gradients: each alone gives the same bytes as both together */
    float *dx1 = filled(nx, 0.25f), *dw1 = filled(nw, -0.5f);
    if (via_conv) {
        conv2d_backward(dx1, NULL, NULL, g, NULL, w, B, &s);
        conv2d_backward(NULL, dw1, NULL, g, x, NULL, B, &s);
    } else {
        wino_backward(dx1, NULL, g, NULL, w, B, &s);
        wino_backward(NULL, dw1, g, x, NULL, B, &s);
    }
    for (size_t i = 0; i < nx; i++) dx1[i] -= 0.25f;
    for (size_t i = 0; i < nw; i++) dw1[i] += 0.5f;
    CHECK(same(dx1, dx, nx) && same(dw1, dw, nw), "%s: dinp alone and dw alone (the other NULL) match", what);

    /* set mode: dinp overwritten (its NaNs never read) with the values
     * accumulating into zeros gives, alone and with dw */
    float *dx0 = filled(nx, 0), *dx2 = filled(nx, NAN), *dx3 = filled(nx, NAN), *dw2 = filled(nw, -0.5f);
    if (via_conv) {
        conv2d_backward(dx0, NULL, NULL, g, NULL, w, B, &s);
        conv2d_backward_set(dx2, dw2, NULL, g, x, w, B, &s);
        conv2d_backward_set(dx3, NULL, NULL, g, NULL, w, B, &s);
    } else {
        wino_backward(dx0, NULL, g, NULL, w, B, &s);
        wino_backward_set(dx2, dw2, g, x, w, B, &s);
        wino_backward_set(dx3, NULL, g, NULL, w, B, &s);
    }
    for (size_t i = 0; i < nw; i++) dw2[i] += 0.5f;
    int eq = same(dw2, dw, nw);
    for (size_t i = 0; i < nx; i++) eq &= dx2[i] == dx0[i] && dx3[i] == dx0[i];
    CHECK(eq, "%s: backward setting dinp matches accumulating", what);
    free(x), free(w), free(b), free(g), free(o), free(orf), free(dx), free(dxr), free(dw), free(dwr), free(dx1),
        free(dw1), free(dx0), free(dx2), free(dx3), free(dw2);
}

/* L = sum(wino_forward(x, w, b) * R) in double; its gradients from
 * wino_backward against central differences */
typedef struct {
    conv_shape s;
    int B;
    float *x, *w, *b, *out, *r;
} fd_ctx;

static double fd_loss(fd_ctx *c)
{
    size_t no = (size_t)c->B * c->s.OC * c->s.OH * c->s.OW;
    wino_forward(c->out, c->x, c->w, c->b, c->B, &c->s);
    double l = 0;
    for (size_t i = 0; i < no; i++) l += (double)c->out[i] * c->r[i];
    return l;
}

static double fd_check(fd_ctx *c, float *v, const float *ana, size_t n, float h)
{
    double scale = 1e-6, worst = 0;
    for (size_t i = 0; i < n; i++)
        if (fabs(ana[i]) > scale) scale = fabs(ana[i]);
    for (size_t i = 0; i < n; i++) {
        float keep = v[i];
        v[i] = keep + h;
        double lp = fd_loss(c);
        v[i] = keep - h;
        double lm = fd_loss(c);
        v[i] = keep;
        double e = fabs((lp - lm) / (2.0 * h) - ana[i]) / scale;
        if (e > worst || isnan(e)) worst = isnan(e) ? INFINITY : e;
    }
    return worst;
}

static void test_fd(int pad)
{
    fd_ctx c = {.B = 2};
    conv_shape_init(&c.s, 2, 6, 5, 3, 3, 3, 1, pad, 1, 1);
    size_t nx = (size_t)c.B * 2 * 6 * 5, nw = 3 * 2 * 9, no = (size_t)c.B * 3 * c.s.OH * c.s.OW;
    c.x = randv(nx, 1), c.w = randv(nw, 0.5f), c.b = randv(3, 0.5f), c.r = randv(no, 1), c.out = filled(no, 0);
    float *dx = filled(nx, 0), *dw = filled(nw, 0);
    wino_backward(dx, dw, c.r, c.x, c.w, c.B, &c.s);
    double e1 = fd_check(&c, c.x, dx, nx, 1e-2f), e2 = fd_check(&c, c.w, dw, nw, 1e-2f);
    CHECK(e1 < 1e-3 && e2 < 1e-3, "finite differences, 2x6x5 -> 3 channels, pad %d: dinp, dw (rel err %.2g, %.2g)",
          pad, e1, e2);
    free(c.x), free(c.w), free(c.b), free(c.r), free(c.out), free(dx), free(dw);
}

/* the same bytes on 1 and 2 threads, forward and backward; two images per
 * chunk at most here would need a large map, so one case is a single chunk
 * and one several chunks (56x56, 64 channels, 5 images) */
static void test_threads(const char *what, int B, int C, int H, int W, int K)
{
    conv_shape s;
    conv_shape_init(&s, C, H, W, K, 3, 3, 1, 1, 1, 1);
    size_t nx = (size_t)B * C * H * W, nw = (size_t)K * C * 9, no = (size_t)B * K * s.OH * s.OW;
    float *x = randv(nx, 1), *w = randv(nw, 0.3f), *b = randv(K, 0.5f), *g = randv(no, 1);
    float *o[2], *dx[2], *dw[2];
    int keep = blas_get_threads();
    for (int t = 0; t < 2; t++) {
        blas_set_threads(t + 1);
        o[t] = filled(no, 0), dx[t] = filled(nx, 0), dw[t] = filled(nw, 0);
        wino_forward(o[t], x, w, b, B, &s);
        wino_backward(dx[t], dw[t], g, x, w, B, &s);
    }
    blas_set_threads(keep);
    CHECK(same(o[0], o[1], no) && same(dx[0], dx[1], nx) && same(dw[0], dw[1], nw),
          "%s: forward, dinp, dw the same bytes on 1 and 2 threads", what);
    for (int t = 0; t < 2; t++) free(o[t]), free(dx[t]), free(dw[t]);
    free(x), free(w), free(b), free(g);
}

int main(void)
{
    rng_seed(&R, 7);
    blas_set_threads(2);
    /* direct calls, few channels */
    test_case("7x7 pad 1, 3 -> 5 channels, 2 images, bias", 2, 3, 7, 7, 5, 1, 1, 0);
    test_case("13x9 pad 1, 4 -> 3 channels, 3 images", 3, 4, 13, 9, 3, 1, 0, 0);
    test_case("13x9 pad 0, 5 -> 6 channels, 2 images, bias", 2, 5, 13, 9, 6, 0, 1, 0);
    test_case("13x9 pad 2, 6 -> 4 channels, 2 images, bias", 2, 6, 13, 9, 4, 2, 1, 0);
    test_case("3x3 pad 0 (one output), 2 -> 2 channels", 1, 2, 3, 3, 2, 0, 1, 0);
    test_case("4x5 pad 2, 9 -> 11 channels, 2 images", 2, 9, 4, 5, 11, 2, 0, 0);
    test_case("14x14 pad 1, 20 -> 12 channels, 3 images, bias", 3, 20, 14, 14, 12, 1, 1, 0);
    test_case("1x1 pad 1, 3 -> 2 channels", 2, 3, 1, 1, 2, 1, 1, 0);
    /* wide maps: rows of 8 tiles and more, ending in part of a vector */
    test_case("9x37 pad 1, 5 -> 7 channels, 2 images, bias", 2, 5, 9, 37, 7, 1, 1, 0);
    test_case("6x70 pad 0, 3 -> 4 channels, 2 images", 2, 3, 6, 70, 4, 0, 0, 0);
    test_case("11x34 pad 2, 4 -> 3 channels, 2 images, bias", 2, 4, 11, 34, 3, 2, 1, 0);
    /* through conv2d_* (the shapes ResNet runs, small batches) */
    test_case("conv2d: 7x7 pad 1, 32 -> 48 channels, 3 images, bias", 3, 32, 7, 7, 48, 1, 1, 1);
    test_case("conv2d: 14x14 pad 1, 24 -> 16 channels, 2 images", 2, 24, 14, 14, 16, 1, 0, 1);
    test_case("conv2d: 56x56 pad 1, 16 -> 24 channels, 2 images, bias", 2, 16, 56, 56, 24, 1, 1, 1);
    /* several chunks of images */
    test_case("conv2d: 56x56 pad 1, 64 -> 64 channels, 5 images (chunks)", 5, 64, 56, 56, 64, 1, 1, 1);
    test_fd(0);
    test_fd(1);
    test_fd(2);
    test_threads("13x9, 20 -> 24 channels, 3 images", 3, 20, 13, 9, 24);
    test_threads("56x56, 64 -> 64 channels, 5 images (chunks)", 5, 64, 56, 56, 64);
    {
        conv_shape s;
        int ok = 1;
        conv_shape_init(&s, 64, 56, 56, 64, 3, 3, 1, 1, 1, 1), ok &= wino_pays(&s, 1);
        conv_shape_init(&s, 512, 7, 7, 512, 3, 3, 1, 1, 1, 1), ok &= wino_pays(&s, 32) && !wino_pays(&s, 4);
        conv_shape_init(&s, 64, 56, 56, 64, 3, 3, 2, 1, 1, 1), ok &= !wino_pays(&s, 32);
        conv_shape_init(&s, 8, 56, 56, 64, 3, 3, 1, 1, 1, 1), ok &= !wino_pays(&s, 32);
        conv_shape_init(&s, 64, 2, 2, 64, 3, 3, 1, 1, 1, 1), ok &= !wino_pays(&s, 32);
        conv_shape_init(&s, 64, 9, 9, 64, 3, 3, 1, 1, 2, 1), ok &= !wino_pays(&s, 32);
        conv_shape_init(&s, 64, 9, 9, 64, 3, 3, 1, 3, 1, 1), ok &= !wino_supported(&s);
        conv_shape_init(&s, 64, 9, 9, 64, 3, 3, 1, 1, 1, 2), ok &= !wino_supported(&s);
        CHECK(ok, "dispatch: ResNet's 3x3 stride-1 shapes use Winograd (512 channels on 7x7 maps from batch 8); "
                  "stride 2, few channels, a 2x2 map, dilation, padding 3, groups do not");
    }
    {
        /* conv2d_forward is wino_forward's bytes; with Winograd off, im2col's */
        conv_shape s;
        conv_shape_init(&s, 32, 12, 12, 32, 3, 3, 1, 1, 1, 1);
        size_t nx = 2 * 32 * 144, nw = 32 * 32 * 9;
        float *x = randv(nx, 1), *w = randv(nw, 0.3f), *a = filled(nx, 0), *b = filled(nx, 0), *c = filled(nx, 0),
              *r = filled(nx, 0);
        wino_forward(a, x, w, NULL, 2, &s);
        conv2d_forward(b, x, w, NULL, 2, &s);
        conv_set_winograd(0);
        conv2d_forward(c, x, w, NULL, 2, &s);
        int off = !conv_get_winograd();
        conv_set_winograd(1);
        conv2d_forward_ref(r, x, w, NULL, 2, &s);
        CHECK(same(a, b, nx) && off && !same(a, c, nx) && maxrel(c, r, nx) < maxrel(a, r, nx),
              "conv_set_winograd: on, conv2d_forward gives Winograd's bytes; off, im2col's (rel err %.2g vs %.2g)",
              maxrel(c, r, nx), maxrel(a, r, nx));
        free(x), free(w), free(a), free(b), free(c), free(r);
    }
    printf("worst relative errors: forward %.2g, dinp %.2g, dw %.2g\n", worst_fwd, worst_dx, worst_dw);
    conv_release_workspace();
    CHECK_EXIT();
}
