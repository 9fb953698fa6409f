/* conv: 2-D convolution, NCHW; see conv.h.
 *
 * Fast path, per image and group: col (K, OH*OW) = im2col(inp), K = Cg*KH*KW;
 * out (OCg, OH*OW) = w (OCg, K) col. Backward: dw += dout col^T and
 * dcol = w^T dout, scattered back by col2im. A 1x1 stride-1 unpadded
 * convolution uses the input itself as col. Depthwise convolutions (one input
 * and one output channel per group) are a direct loop: as a GEMM they would be
 * a matrix-vector product per channel. 3x3 stride-1 convolutions go to
 * winograd.c when wino_pays() (and conv_set_winograd has not turned it off). */
#include "conv.h"

#include "blas.h"
#include "par.h"
#include "simd.h"
#include "util.h"
#include "winograd.h"
#include "workspace.h"

#include <limits.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int conv_shape_init(conv_shape *s, int C, int H, int W, int OC, int KH, int KW, int stride, int pad, int dil,
                    int groups)
{
    memset(s, 0, sizeof *s);
    if (C <= 0 || OC <= 0 || groups <= 0 || C % groups || OC % groups || KH <= 0 || KW <= 0 || stride <= 0 ||
        pad < 0 || dil <= 0)
        return -1;
    s->C = C, s->H = H, s->W = W, s->OC = OC, s->KH = KH, s->KW = KW;
    s->stride = stride, s->pad = pad, s->dil = dil, s->groups = groups;
    if (H <= 0 || W <= 0) return -1;
    /* in 64 bits: no int overflow on absurd sizes; the map's size fits an int */
    int64_t eh = (int64_t)dil * (KH - 1) + 1, ew = (int64_t)dil * (KW - 1) + 1;
    int64_t ph = (int64_t)H + 2 * (int64_t)pad, pw = (int64_t)W + 2 * (int64_t)pad;
    if (ph < eh || pw < ew) return -1;
    int64_t oh = (ph - eh) / stride + 1, ow = (pw - ew) / stride + 1;
    if (oh > INT_MAX || ow > INT_MAX || oh * ow > INT_MAX || (int64_t)H * W > INT_MAX) return -1;
    s->OH = (int)oh, s->OW = (int)ow;
    return 0;
}

void conv_release_workspace(void) { nn_workspace_release(); }

static atomic_int use_winograd = 1;

void conv_set_winograd(int on) { atomic_store(&use_winograd, on != 0); }

int conv_get_winograd(void) { return atomic_load(&use_winograd); }

static int is_pointwise(const conv_shape *s)
{
    return s->KH == 1 && s->KW == 1 && s->stride == 1 && s->pad == 0;
}

static int is_depthwise(const conv_shape *s) { return s->groups == s->C && s->groups == s->OC && s->groups > 1; }

/* d[ow] = row[2 ow + dw] from ow = lo, 16 at a time (even lanes of two
 * vectors) while the 32 floats read stay inside [lo, hi)'s inputs: returns
 * where it stopped, for the scalar loop to finish. GCC vectorises no strided
 * copy. */
static int gather2(float *d, const float *row, int dw, int lo, int hi)
{
    int ow = lo;
    for (; ow + VL_VW < hi; ow += VL_VW) {
        const float *src = row + 2 * ow + dw;
        vf a = vf_load(src), b = vf_load(src + VL_VW);
        vf_store(d + ow, __builtin_shufflevector(a, b, EVEN16));
    }
    return ow;
}

/* the KW rows of col (row stride ldc) of one channel src (H,W) and kernel
 * row kh */
static void im2col_kh(float *col, size_t ldc, const float *src, int kh, const conv_shape *s)
{
    for (int kw = 0; kw < s->KW; kw++) {
        float *dst = col + (size_t)kw * ldc;
        int dh = kh * s->dil - s->pad, dw = kw * s->dil - s->pad;
        for (int oh = 0; oh < s->OH; oh++) {
            int ih = oh * s->stride + dh;
            float *d = dst + oh * s->OW;
            if (ih < 0 || ih >= s->H) {
                memset(d, 0, s->OW * sizeof(float));
                continue;
            }
            const float *row = src + (size_t)ih * s->W;
            if (s->stride == 1) {
                /* contiguous run with zero margins */
                int lo = dw < 0 ? -dw : 0, hi = s->W - dw;
                if (hi > s->OW) hi = s->OW;
                if (lo > s->OW) lo = s->OW;
                for (int ow = 0; ow < lo; ow++) d[ow] = 0;
                if (hi > lo) memcpy(d + lo, row + lo + dw, (size_t)(hi - lo) * sizeof(float));
                for (int ow = hi > lo ? hi : lo; ow < s->OW; ow++) d[ow] = 0;
            } else {
                /* in-image outputs are [lo, hi): no bounds checks inside */
                int st = s->stride, lo = 0, hi = s->OW;
                while (lo < hi && lo * st + dw < 0) lo++;
                while (hi > lo && (hi - 1) * st + dw >= s->W) hi--;
                for (int ow = 0; ow < lo; ow++) d[ow] = 0.0f;
                int ow = lo;
                if (st == 2) ow = gather2(d, row, dw, lo, hi);
                for (; ow < hi; ow++) d[ow] = row[ow * st + dw];
                for (int ow = hi; ow < s->OW; ow++) d[ow] = 0.0f;
            }
        }
    }
}

/* row[ow + dw] += src[ow] from ow = lo, 16 at a time while whole vectors
 * fit in [lo, hi); returns where it stopped */
static int add1(float *row, int dw, const float *src, int lo, int hi)
{
    int ow = lo;
    for (; ow + VL_VW <= hi; ow += VL_VW) {
        float *d = row + ow + dw;
        vf_store(d, vf_load(d) + vf_load(src + ow));
    }
    return ow;
}

/* row[2 ow + dw] += src[ow] from ow = lo, 16 at a time: the values spread
 * to the even lanes of two vectors, -0 in the odd ones (x + -0 is x for
 * every x, -0 included), while the 32 floats touched stay inside [lo, hi)'s
 * inputs (as gather2). Each element still takes its one addition per call. */
static int scatter_add2(float *row, int dw, const float *src, int lo, int hi)
{
    int ow = lo;
    vf nz = -vf_set(0.0f); /* -0 in every lane (vf_set(-0.0f) would add it to +0) */
    for (; ow + VL_VW < hi; ow += VL_VW) {
        vf v = vf_load(src + ow);
        vf e0 = __builtin_shufflevector(v, nz, 0, 16, 1, 16, 2, 16, 3, 16, 4, 16, 5, 16, 6, 16, 7, 16);
        vf e1 = __builtin_shufflevector(v, nz, 8, 16, 9, 16, 10, 16, 11, 16, 12, 16, 13, 16, 14, 16, 15, 16);
        float *d = row + 2 * ow + dw;
        vf_store(d, vf_load(d) + e0);
        vf_store(d + VL_VW, vf_load(d + VL_VW) + e1);
    }
    return ow;
}

/* inp (Cg,H,W) += col2im(col), col rows ldc apart */
static void col2im_add(float *inp, const float *col, size_t ldc, int Cg, const conv_shape *s)
{
    for (int c = 0; c < Cg; c++)
        for (int kh = 0; kh < s->KH; kh++)
            for (int kw = 0; kw < s->KW; kw++) {
                const float *src = col + ((size_t)(c * s->KH + kh) * s->KW + kw) * ldc;
                float *dst = inp + (size_t)c * s->H * s->W;
                int dh = kh * s->dil - s->pad, dw = kw * s->dil - s->pad;
                for (int oh = 0; oh < s->OH; oh++) {
                    int ih = oh * s->stride + dh;
                    if (ih < 0 || ih >= s->H) continue;
                    float *row = dst + (size_t)ih * s->W;
                    const float *sr = src + oh * s->OW;
                    int st = s->stride, lo = 0, hi = s->OW;
                    while (lo < hi && lo * st + dw < 0) lo++;
                    while (hi > lo && (hi - 1) * st + dw >= s->W) hi--;
                    int ow = lo;
                    if (st == 1) ow = add1(row, dw, sr, lo, hi);
                    if (st == 2) ow = scatter_add2(row, dw, sr, lo, hi);
                    for (; ow < hi; ow++) row[ow * st + dw] += sr[ow];
                }
            }
}

/* im2col / col2im over m images side by side (image i at column i*OHW of
 * rows ld apart; image i's channels at inp + i * img_stride), split over
 * threads by (image, channel, kernel row) and (image, channel): each writes
 * its own rows or its own plane (a convolution of few channels, the stem's,
 * still has rows enough to share). */
typedef struct {
    float *col, *dinp;
    const float *inp, *ccol;
    size_t ld, img_stride;
    int Cg, OHW;
    int set; /* col2im: overwrite the planes instead of adding */
    const conv_shape *s;
} cols_args;

static void im2col_range(void *ctx, int j0, int j1)
{
    const cols_args *a = ctx;
    const conv_shape *s = a->s;
    size_t HW = (size_t)s->H * s->W;
    for (int j = j0; j < j1; j++) {
        int i = j / (a->Cg * s->KH), c = j / s->KH % a->Cg, kh = j % s->KH;
        im2col_kh(a->col + (size_t)i * a->OHW + (size_t)(c * s->KH + kh) * s->KW * a->ld, a->ld,
                  a->inp + i * a->img_stride + c * HW, kh, s);
    }
}

static void im2col_par(float *col, size_t ld, const float *inp, size_t img_stride, int m, int Cg, const conv_shape *s)
{
    int OHW = s->OH * s->OW;
    cols_args a = {.col = col, .inp = inp, .ld = ld, .img_stride = img_stride, .Cg = Cg, .OHW = OHW, .s = s};
    par_for(m * Cg * s->KH, (size_t)m * Cg * s->KH * s->KW * OHW, im2col_range, &a);
}

static void col2im_range(void *ctx, int j0, int j1)
{
    const cols_args *a = ctx;
    const conv_shape *s = a->s;
    size_t HW = (size_t)s->H * s->W, rows = (size_t)s->KH * s->KW;
    for (int j = j0; j < j1; j++) {
        int i = j / a->Cg, c = j % a->Cg;
        float *plane = a->dinp + i * a->img_stride + c * HW;
        if (a->set) memset(plane, 0, HW * sizeof(float));
        col2im_add(plane, a->ccol + (size_t)i * a->OHW + (size_t)c * rows * a->ld, a->ld, 1, s);
    }
}

static void col2im_par(float *dinp, const float *col, size_t ld, size_t img_stride, int m, int Cg, const conv_shape *s,
                       int set)
{
    int OHW = s->OH * s->OW;
    cols_args a = {.dinp = dinp, .ccol = col, .ld = ld, .img_stride = img_stride, .Cg = Cg, .OHW = OHW, .set = set,
                   .s = s};
    par_for(m * Cg, (size_t)m * Cg * s->KH * s->KW * OHW, col2im_range, &a);
}

/* o[j] = src[j] + b over whole vectors of n; returns where it stopped */
static int add1_to(float *o, const float *src, vf b, int n)
{
    int j = 0;
    for (; j + VL_VW <= n; j += VL_VW) vf_store(o + j, vf_load(src + j) + b);
    return j;
}

/* Rows of a chunk's (OCg, m*OHW) GEMM result to and from the tensor, split
 * over threads by row (the bias added 16 lanes at a time). */
typedef struct {
    float *dst;
    const float *src, *bias;
    size_t ld, img_stride;
    int m, OHW, to_tensor;
} rows_args;

static void rows_range(void *ctx, int r0, int r1)
{
    const rows_args *a = ctx;
    for (int oc = r0; oc < r1; oc++)
        for (int i = 0; i < a->m; i++) {
            size_t t = (size_t)oc * a->ld + (size_t)i * a->OHW, x = i * a->img_stride + (size_t)oc * a->OHW;
            if (a->to_tensor) {
                float *o = a->dst + x;
                const float *src = a->src + t;
                float bias = a->bias ? a->bias[oc] : 0.0f;
                vf vb = vf_set(bias);
                int j = add1_to(o, src, vb, a->OHW);
                for (; j < a->OHW; j++) o[j] = src[j] + bias;
            } else {
                memcpy(a->dst + t, a->src + x, (size_t)a->OHW * sizeof(float));
            }
        }
}

static void rows_par(float *dst, const float *src, const float *bias, size_t ld, size_t img_stride, int m, int OCg,
                     int OHW, int to_tensor)
{
    rows_args a = {.dst = dst, .src = src, .bias = bias, .ld = ld, .img_stride = img_stride, .m = m, .OHW = OHW,
                   .to_tensor = to_tensor};
    par_for(OCg, (size_t)OCg * m * OHW, rows_range, &a);
}

typedef struct {
    float *out, *dinp, *dw;
    const float *inp, *w, *b, *dout;
    int B, set;
    const conv_shape *s;
} dw_args;

/* planes j = n * C + c */
static void depthwise_forward_range(void *ctx, int j0, int j1)
{
    const dw_args *a = ctx;
    const conv_shape *s = a->s;
    for (int j = j0; j < j1; j++) {
        int n = j / s->C, c = j % s->C;
        const float *x = a->inp + ((size_t)n * s->C + c) * s->H * s->W;
        const float *k = a->w + (size_t)c * s->KH * s->KW;
        float *o = a->out + ((size_t)n * s->OC + c) * s->OH * s->OW;
        float bias = a->b ? a->b[c] : 0.0f;
        for (int oh = 0; oh < s->OH; oh++)
            for (int ow = 0; ow < s->OW; ow++) {
                float acc = 0;
                for (int kh = 0; kh < s->KH; kh++) {
                    int ih = oh * s->stride - s->pad + kh * s->dil;
                    if (ih < 0 || ih >= s->H) continue;
                    for (int kw = 0; kw < s->KW; kw++) {
                        int iw = ow * s->stride - s->pad + kw * s->dil;
                        if (iw >= 0 && iw < s->W) acc += k[kh * s->KW + kw] * x[ih * s->W + iw];
                    }
                }
                o[oh * s->OW + ow] = acc + bias;
            }
    }
}

static void depthwise_forward(float *out, const float *inp, const float *w, const float *b, int B, const conv_shape *s)
{
    dw_args a = {.out = out, .inp = inp, .w = w, .b = b, .B = B, .s = s};
    par_for(B * s->C, (size_t)B * s->C * s->OH * s->OW * s->KH * s->KW, depthwise_forward_range, &a);
}

/* split by channel, images in order inside: a channel's kernel gradient sums
 * in the same order on any split */
static void depthwise_backward_range(void *ctx, int c0, int c1)
{
    const dw_args *a = ctx;
    const conv_shape *s = a->s;
    for (int c = c0; c < c1; c++)
        for (int n = 0; n < a->B; n++) {
            size_t xo = ((size_t)n * s->C + c) * s->H * s->W;
            const float *g = a->dout + ((size_t)n * s->OC + c) * s->OH * s->OW;
            const float *k = a->w + (size_t)c * s->KH * s->KW;
            float *dk = a->dw ? a->dw + (size_t)c * s->KH * s->KW : NULL;
            if (a->dinp && a->set) memset(a->dinp + xo, 0, (size_t)s->H * s->W * sizeof(float));
            for (int oh = 0; oh < s->OH; oh++)
                for (int ow = 0; ow < s->OW; ow++) {
                    float go = g[oh * s->OW + ow];
                    for (int kh = 0; kh < s->KH; kh++) {
                        int ih = oh * s->stride - s->pad + kh * s->dil;
                        if (ih < 0 || ih >= s->H) continue;
                        for (int kw = 0; kw < s->KW; kw++) {
                            int iw = ow * s->stride - s->pad + kw * s->dil;
                            if (iw < 0 || iw >= s->W) continue;
                            if (dk) dk[kh * s->KW + kw] += go * a->inp[xo + ih * s->W + iw];
                            if (a->dinp) a->dinp[xo + ih * s->W + iw] += go * k[kh * s->KW + kw];
                        }
                    }
                }
        }
}

static void depthwise_backward(float *dinp, float *dw, const float *dout, const float *inp, const float *w, int B,
                               const conv_shape *s, int set)
{
    dw_args a = {.dinp = dinp, .dw = dw, .dout = dout, .inp = inp, .w = w, .B = B, .set = set, .s = s};
    par_for(s->C, (size_t)B * s->C * s->OH * s->OW * s->KH * s->KW, depthwise_backward_range, &a);
}

/* Images per sgemm: small feature maps are gathered side by side so that
 * the GEMM has at least CHUNK_COLS columns; a map that large on its own goes
 * straight from and to the tensors. */
#ifndef CHUNK_COLS
#define CHUNK_COLS 1024
#endif
static int chunk_images(const conv_shape *s, int B)
{
    int OHW = s->OH * s->OW;
    if (OHW >= CHUNK_COLS) return 1;
    int nb = (CHUNK_COLS + OHW - 1) / OHW;
    return nb < B ? nb : B;
}

void conv2d_forward(float *out, const float *inp, const float *w, const float *b, int B, const conv_shape *s)
{
    if (is_depthwise(s)) {
        depthwise_forward(out, inp, w, b, B, s);
        return;
    }
    if (atomic_load(&use_winograd) && wino_pays(s, B)) {
        wino_forward(out, inp, w, b, B, s);
        return;
    }
    int G = s->groups, Cg = s->C / G, OCg = s->OC / G, K = Cg * s->KH * s->KW, OHW = s->OH * s->OW;
    size_t HW = (size_t)s->H * s->W;
    int nb = chunk_images(s, B);
    if (nb == 1) {
        int pw = is_pointwise(s);
        float *col = pw ? NULL : nn_workspace((size_t)K * OHW);
        for (int n = 0; n < B; n++)
            for (int g = 0; g < G; g++) {
                const float *x = inp + ((size_t)n * s->C + (size_t)g * Cg) * HW;
                float *o = out + ((size_t)n * s->OC + (size_t)g * OCg) * OHW;
                if (!pw) im2col_par(col, OHW, x, 0, 1, Cg, s);
                blas_sgemm(0, 0, OCg, OHW, K, 1.0f, w + (size_t)g * OCg * K, K, pw ? x : col, OHW, 0.0f, o, OHW);
                if (b)
                    for (int oc = 0; oc < OCg; oc++) {
                        float bias = b[g * OCg + oc];
                        for (int i = 0; i < OHW; i++) o[(size_t)oc * OHW + i] += bias;
                    }
            }
        return;
    }
    size_t ncol = (size_t)nb * OHW;
    float *col = nn_workspace((size_t)(K + OCg) * ncol), *tmp = col + (size_t)K * ncol;
    for (int n0 = 0; n0 < B; n0 += nb) {
        int m = B - n0 < nb ? B - n0 : nb;
        size_t ld = (size_t)m * OHW;
        for (int g = 0; g < G; g++) {
            im2col_par(col, ld, inp + ((size_t)n0 * s->C + (size_t)g * Cg) * HW, (size_t)s->C * HW, m, Cg, s);
            blas_sgemm(0, 0, OCg, (int)ld, K, 1.0f, w + (size_t)g * OCg * K, K, col, (int)ld, 0.0f, tmp, (int)ld);
            rows_par(out + ((size_t)n0 * s->OC + (size_t)g * OCg) * OHW, tmp, b ? b + (size_t)g * OCg : NULL, ld,
                     (size_t)s->OC * OHW, m, OCg, OHW, 1);
        }
    }
}

static void bias_backward(float *db, const float *dout, int B, int OC, int OHW)
{
    for (int n = 0; n < B; n++)
        for (int oc = 0; oc < OC; oc++) {
            const float *g = dout + ((size_t)n * OC + oc) * OHW;
            float acc = 0;
            for (int i = 0; i < OHW; i++) acc += g[i];
            db[oc] += acc;
        }
}

/* set: dinp is overwritten, not added to */
static void backward(float *dinp, float *dw, float *db, const float *dout, const float *inp, const float *w, int B,
                     const conv_shape *s, int set)
{
    int OHW = s->OH * s->OW;
    if (db) bias_backward(db, dout, B, s->OC, OHW);
    if (!dinp && !dw) return;
    if (is_depthwise(s)) {
        depthwise_backward(dinp, dw, dout, inp, w, B, s, set);
        return;
    }
    if (atomic_load(&use_winograd) && wino_pays(s, B)) {
        (set ? wino_backward_set : wino_backward)(dinp, dw, dout, inp, w, B, s);
        return;
    }
    int G = s->groups, Cg = s->C / G, OCg = s->OC / G, K = Cg * s->KH * s->KW;
    size_t HW = (size_t)s->H * s->W;
    int nb = chunk_images(s, B);
    if (nb == 1) {
        int pw = is_pointwise(s);
        float *col = pw ? NULL : nn_workspace((size_t)K * OHW);
        for (int n = 0; n < B; n++)
            for (int g = 0; g < G; g++) {
                const float *x = inp ? inp + ((size_t)n * s->C + (size_t)g * Cg) * HW : NULL;
                const float *go = dout + ((size_t)n * s->OC + (size_t)g * OCg) * OHW;
                const float *wg = w ? w + (size_t)g * OCg * K : NULL;
                if (dw) {
                    if (!pw) im2col_par(col, OHW, x, 0, 1, Cg, s);
                    blas_sgemm(0, 1, OCg, K, OHW, 1.0f, go, OHW, pw ? x : col, OHW, 1.0f, dw + (size_t)g * OCg * K,
                               K);
                }
                if (dinp) {
                    float *dx = dinp + ((size_t)n * s->C + (size_t)g * Cg) * HW;
                    if (pw) {
                        blas_sgemm(1, 0, K, OHW, OCg, 1.0f, wg, K, go, OHW, set ? 0.0f : 1.0f, dx, OHW);
                    } else {
                        blas_sgemm(1, 0, K, OHW, OCg, 1.0f, wg, K, go, OHW, 0.0f, col, OHW);
                        col2im_par(dx, col, OHW, 0, 1, Cg, s, set);
                    }
                }
            }
        return;
    }
    size_t ncol = (size_t)nb * OHW;
    float *col = nn_workspace((size_t)(K + OCg) * ncol), *tmp = col + (size_t)K * ncol;
    for (int n0 = 0; n0 < B; n0 += nb) {
        int m = B - n0 < nb ? B - n0 : nb;
        size_t ld = (size_t)m * OHW;
        for (int g = 0; g < G; g++) {
            /* the chunk's output gradient, images side by side: (OCg, m*OHW) */
            rows_par(tmp, dout + ((size_t)n0 * s->OC + (size_t)g * OCg) * OHW, NULL, ld, (size_t)s->OC * OHW, m, OCg,
                     OHW, 0);
            if (dw) {
                im2col_par(col, ld, inp + ((size_t)n0 * s->C + (size_t)g * Cg) * HW, (size_t)s->C * HW, m, Cg, s);
                blas_sgemm(0, 1, OCg, K, (int)ld, 1.0f, tmp, (int)ld, col, (int)ld, 1.0f, dw + (size_t)g * OCg * K, K);
            }
            if (dinp) {
                blas_sgemm(1, 0, K, (int)ld, OCg, 1.0f, w + (size_t)g * OCg * K, K, tmp, (int)ld, 0.0f, col, (int)ld);
                col2im_par(dinp + ((size_t)n0 * s->C + (size_t)g * Cg) * HW, col, ld, (size_t)s->C * HW, m, Cg, s,
                           set);
            }
        }
    }
}

void conv2d_backward(float *dinp, float *dw, float *db, const float *dout, const float *inp, const float *w, int B,
                     const conv_shape *s)
{
    backward(dinp, dw, db, dout, inp, w, B, s, 0);
}

void conv2d_backward_set(float *dinp, float *dw, float *db, const float *dout, const float *inp, const float *w,
                         int B, const conv_shape *s)
{
    backward(dinp, dw, db, dout, inp, w, B, s, 1);
}

void conv2d_forward_ref(float *out, const float *inp, const float *w, const float *b, int B, const conv_shape *s)
{
    int Cg = s->C / s->groups, OCg = s->OC / s->groups;
    for (int n = 0; n < B; n++)
        for (int oc = 0; oc < s->OC; oc++)
            for (int oh = 0; oh < s->OH; oh++)
                for (int ow = 0; ow < s->OW; ow++) {
                    double acc = b ? b[oc] : 0.0;
                    int g = oc / OCg;
                    for (int c = 0; c < Cg; c++)
                        for (int kh = 0; kh < s->KH; kh++)
                            for (int kw = 0; kw < s->KW; kw++) {
                                int ih = oh * s->stride - s->pad + kh * s->dil;
                                int iw = ow * s->stride - s->pad + kw * s->dil;
                                if (ih < 0 || ih >= s->H || iw < 0 || iw >= s->W) continue;
                                acc += (double)w[((size_t)(oc * Cg + c) * s->KH + kh) * s->KW + kw] *
                                       inp[(((size_t)n * s->C + g * Cg + c) * s->H + ih) * s->W + iw];
                            }
                    out[(((size_t)n * s->OC + oc) * s->OH + oh) * s->OW + ow] = (float)acc;
                }
}

void conv2d_backward_ref(float *dinp, float *dw, float *db, const float *dout, const float *inp, const float *w,
                         int B, const conv_shape *s)
{
    int Cg = s->C / s->groups, OCg = s->OC / s->groups;
    for (int n = 0; n < B; n++)
        for (int oc = 0; oc < s->OC; oc++)
            for (int oh = 0; oh < s->OH; oh++)
                for (int ow = 0; ow < s->OW; ow++) {
                    float go = dout[(((size_t)n * s->OC + oc) * s->OH + oh) * s->OW + ow];
                    int g = oc / OCg;
                    if (db) db[oc] += go;
                    for (int c = 0; c < Cg; c++)
                        for (int kh = 0; kh < s->KH; kh++)
                            for (int kw = 0; kw < s->KW; kw++) {
                                int ih = oh * s->stride - s->pad + kh * s->dil;
                                int iw = ow * s->stride - s->pad + kw * s->dil;
                                if (ih < 0 || ih >= s->H || iw < 0 || iw >= s->W) continue;
                                size_t wi = ((size_t)(oc * Cg + c) * s->KH + kh) * s->KW + kw;
                                size_t xi = (((size_t)n * s->C + g * Cg + c) * s->H + ih) * s->W + iw;
                                if (dw) dw[wi] += go * inp[xi];
                                if (dinp) dinp[xi] += go * w[wi];
                            }
                }
}
