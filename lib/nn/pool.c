/* pool: max, average and global average pooling; see pool.h. */
#include "pool.h"

#include "par.h"
#include "simd.h"
#include "util.h"

#include <math.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

int pool_out_size(int n, int K, int stride, int pad) { return (n + 2 * pad - K) / stride + 1; }

typedef struct {
    float *out, *dinp;
    int *idx;
    const float *inp, *dout;
    const int *cidx;
    int H, W, OH, OW, K, stride, pad, set;
} pool_args;

/* One plane. Inside the image (every window tap in range) the scan has no
 * bounds checks; the order of taps, and so the result, is the same. */
static void maxpool_plane(float *o, int *ix, const float *x, const pool_args *a)
{
    int H = a->H, W = a->W, OH = a->OH, OW = a->OW, K = a->K, stride = a->stride, pad = a->pad;
    /* outputs whose window lies inside the image: [lo, hi) in each direction */
    int hlo = (pad + stride - 1) / stride, whlo = hlo;
    int hhi = H - K + pad >= 0 ? (H - K + pad) / stride + 1 : 0, whi = W - K + pad >= 0 ? (W - K + pad) / stride + 1 : 0;
    if (hhi > OH) hhi = OH;
    if (whi > OW) whi = OW;
    for (int oh = 0; oh < OH; oh++)
        for (int ow = 0; ow < OW; ow++) {
            float best = -INFINITY;
            int at = -1;
            if (oh >= hlo && oh < hhi && ow >= whlo && ow < whi) {
                int h0 = oh * stride - pad, w0 = ow * stride - pad;
                for (int kh = 0; kh < K; kh++) {
                    const float *r = x + (size_t)(h0 + kh) * W + w0;
                    for (int kw = 0; kw < K; kw++) {
                        float v = r[kw];
                        if (v > best || isnan(v) || at < 0) {
                            best = v;
                            at = (h0 + kh) * W + w0 + kw;
                        }
                    }
                }
            } else {
                for (int kh = 0; kh < K; kh++) {
                    int ih = oh * stride - pad + kh;
                    if (ih < 0 || ih >= H) continue;
                    for (int kw = 0; kw < K; kw++) {
                        int iw = ow * stride - pad + kw;
                        if (iw < 0 || iw >= W) continue;
                        float v = x[ih * W + iw];
                        if (v > best || isnan(v) || at < 0) {
                            best = v;
                            at = ih * W + iw;
                        }
                    }
                }
            }
            o[oh * OW + ow] = best;
            if (ix) ix[oh * OW + ow] = at;
        }
}

/* The 3x3 stride-2 pad-1 pool (the ResNet stem's) in two passes that keep
 * the scan order of the definition. Row pass: per input row and output
 * column, the best of the row's 3 taps (hv) and its column (hp); column
 * pass: per output, the best of its rows' results, first row first. Taking
 * the first tap, then any later one that is greater or NaN, row by row and
 * then over the rows' winners picks what the row-major scan picks: the first
 * maximum, or the last NaN. Interior columns go 16 outputs at a time. */

/* one output column of an input row, with bounds */
static void row_tap3(const float *r, int W, int ow, float *hv, int *hp)
{
    float best = -INFINITY;
    int at = -1;
    for (int iw = 2 * ow - 1; iw <= 2 * ow + 1; iw++) {
        if (iw < 0 || iw >= W) continue;
        float v = r[iw];
        if (v > best || isnan(v) || at < 0) best = v, at = iw;
    }
    *hv = best, *hp = at;
}

/* 16 outputs of an input row's pass from ow on: reads r[2ow-1 .. 2ow+32].
 * idx: positions wanted (a constant where this is inlined; without them the
 * values alone are carried) */
static inline __attribute__((always_inline)) void row_vec(const float *r, int ow, float *v, int *p, int idx)
{
    const vi lane = {EVEN16};
    const float *b = r + 2 * ow - 1;
    vf a0 = vf_load(b), a1 = vf_load(b + VL_VW), c0 = vf_load(b + 2), c1 = vf_load(b + 2 + VL_VW);
    vf t0 = __builtin_shufflevector(a0, a1, EVEN16), t1 = __builtin_shufflevector(a0, a1, ODD16);
    vf t2 = __builtin_shufflevector(c0, c1, EVEN16);
    vi base = lane + (2 * ow - 1), at = base;
    vf best = t0;
    vi m = (t1 > best) | (t1 != t1);
    best = vf_select(m, t1, best), at = (at & ~m) | ((base + 1) & m);
    m = (t2 > best) | (t2 != t2);
    best = vf_select(m, t2, best), at = (at & ~m) | ((base + 2) & m);
    vf_store(v + ow, best);
    if (idx) memcpy(p + ow, &at, sizeof at);
}

/* idx: positions wanted (a constant where this is inlined; without them the
 * values alone are carried) */
static inline __attribute__((always_inline)) void plane_3s2(float *o, int *ix, const float *x, int H, int W, int OH,
                                                            int OW, float *hv, int *hp, int idx)
{
    /* the last start of a vector whose taps and loads all lie in the row */
    int vmax = (W - 3) / 2 - (VL_VW - 1);
    if (vmax > OW - VL_VW) vmax = OW - VL_VW;
    for (int ih = 0; ih < H; ih++) {
        const float *r = x + (size_t)ih * W;
        float *v = hv + (size_t)ih * OW;
        int *p = hp + (size_t)ih * OW, ow, scratch;
        row_tap3(r, W, 0, v, idx ? p : &scratch);
        for (ow = 1; ow <= vmax; ow += VL_VW) row_vec(r, ow, v, p, idx);
        /* the rest in one more vector, moved back to overlap the last (its
         * outputs are computed again, to the same bytes) */
        if (vmax >= 1 && ow <= vmax + VL_VW - 1) {
            row_vec(r, vmax, v, p, idx);
            ow = vmax + VL_VW;
        }
        for (; ow < OW; ow++) row_tap3(r, W, ow, v + ow, idx ? p + ow : &scratch);
    }
    for (int oh = 0; oh < OH; oh++) {
        int r0 = 2 * oh - 1 < 0 ? 0 : 2 * oh - 1, r1 = 2 * oh + 1 < H - 1 ? 2 * oh + 1 : H - 1;
        for (int ow = 0; ow < OW; ow += VL_VW) {
            /* full vectors with fixed-size copies (inlined), the tail padded */
            int n = OW - ow < VL_VW ? OW - ow : VL_VW;
            vf best, v;
            vi at = {0}, pv = {0};
            if (n == VL_VW) {
                best = vf_load(hv + (size_t)r0 * OW + ow);
                if (idx) memcpy(&at, hp + (size_t)r0 * OW + ow, sizeof at);
            } else {
                best = vf_load_part(hv + (size_t)r0 * OW + ow, n, 0.0f);
                if (idx) memcpy(&at, hp + (size_t)r0 * OW + ow, (size_t)n * sizeof(int));
            }
            at += r0 * W;
            for (int r = r0 + 1; r <= r1; r++) {
                if (n == VL_VW) {
                    v = vf_load(hv + (size_t)r * OW + ow);
                    if (idx) memcpy(&pv, hp + (size_t)r * OW + ow, sizeof pv);
                } else {
                    v = vf_load_part(hv + (size_t)r * OW + ow, n, 0.0f);
                    if (idx) memcpy(&pv, hp + (size_t)r * OW + ow, (size_t)n * sizeof(int));
                }
                vi m = (v > best) | (v != v);
                best = vf_select(m, v, best), at = (at & ~m) | ((pv + r * W) & m);
            }
            if (n == VL_VW) {
                vf_store(o + (size_t)oh * OW + ow, best);
                if (idx) memcpy(ix + (size_t)oh * OW + ow, &at, sizeof at);
            } else {
                vf_store_part(o + (size_t)oh * OW + ow, best, n);
                if (idx) memcpy(ix + (size_t)oh * OW + ow, &at, (size_t)n * sizeof(int));
            }
        }
    }
}

static void maxpool_plane_3s2(float *o, int *ix, const float *x, int H, int W, int OH, int OW, float *hv, int *hp)
{
    if (ix)
        plane_3s2(o, ix, x, H, W, OH, OW, hv, hp, 1);
    else
        plane_3s2(o, NULL, x, H, W, OH, OW, hv, hp, 0);
}

static void maxpool_range(void *ctx, int p0, int p1)
{
    const pool_args *a = ctx;
    size_t HW = (size_t)a->H * a->W, OHW = (size_t)a->OH * a->OW;
    if (a->K == 3 && a->stride == 2 && a->pad == 1) {
        float *hv = xmalloc((size_t)a->H * a->OW * sizeof(float));
        int *hp = xmalloc((size_t)a->H * a->OW * sizeof(int));
        for (size_t p = p0; p < (size_t)p1; p++)
            maxpool_plane_3s2(a->out + p * OHW, a->idx ? a->idx + p * OHW : NULL, a->inp + p * HW, a->H, a->W, a->OH,
                              a->OW, hv, hp);
        free(hv), free(hp);
        return;
    }
    for (size_t p = p0; p < (size_t)p1; p++)
        maxpool_plane(a->out + p * OHW, a->idx ? a->idx + p * OHW : NULL, a->inp + p * HW, a);
}

void maxpool_forward(float *out, int *idx, const float *inp, int B, int C, int H, int W, int K, int stride, int pad)
{
    pool_args a = {.out = out, .idx = idx, .inp = inp, .H = H, .W = W, .OH = pool_out_size(H, K, stride, pad),
                   .OW = pool_out_size(W, K, stride, pad), .K = K, .stride = stride, .pad = pad};
    if (a.OH < 1 || a.OW < 1) return;
    par_for(B * C, (size_t)B * C * H * W, maxpool_range, &a);
}

static void maxpool_back_range(void *ctx, int p0, int p1)
{
    const pool_args *a = ctx;
    size_t HW = (size_t)a->H * a->W, OHW = (size_t)a->OH * a->OW;
    for (size_t p = p0; p < (size_t)p1; p++) {
        float *dx = a->dinp + p * HW;
        const float *g = a->dout + p * OHW;
        const int *ix = a->cidx + p * OHW;
        /* set: the plane is zeroed while it is in cache, not in a pass of its own */
        if (a->set) memset(dx, 0, HW * sizeof(float));
        for (size_t i = 0; i < OHW; i++)
            if (ix[i] >= 0) dx[ix[i]] += g[i];
    }
}

void maxpool_backward(float *dinp, const float *dout, const int *idx, int B, int C, int H, int W, int OH, int OW)
{
    pool_args a = {.dinp = dinp, .dout = dout, .cidx = idx, .H = H, .W = W, .OH = OH, .OW = OW};
    par_for(B * C, (size_t)B * C * H * W, maxpool_back_range, &a);
}

void maxpool_backward_set(float *dinp, const float *dout, const int *idx, int B, int C, int H, int W, int OH, int OW)
{
    pool_args a = {.dinp = dinp, .dout = dout, .cidx = idx, .H = H, .W = W, .OH = OH, .OW = OW, .set = 1};
    par_for(B * C, (size_t)B * C * H * W, maxpool_back_range, &a);
}

void maxpool_forward_ref(float *out, int *idx, const float *inp, int B, int C, int H, int W, int K, int stride,
                         int pad)
{
    int OH = pool_out_size(H, K, stride, pad), OW = pool_out_size(W, K, stride, pad);
    for (size_t p = 0; p < (size_t)B * C; p++)
        for (int oh = 0; oh < OH; oh++)
            for (int ow = 0; ow < OW; ow++) {
                float best = -INFINITY;
                int at = -1;
                for (int kh = 0; kh < K; kh++)
                    for (int kw = 0; kw < K; kw++) {
                        int ih = oh * stride - pad + kh, iw = ow * stride - pad + kw;
                        if (ih < 0 || ih >= H || iw < 0 || iw >= W) continue;
                        float v = inp[p * H * W + (size_t)ih * W + iw];
                        if (v > best || isnan(v) || at < 0) best = v, at = ih * W + iw;
                    }
                out[p * OH * OW + (size_t)oh * OW + ow] = best;
                if (idx) idx[p * OH * OW + (size_t)oh * OW + ow] = at;
            }
}

static int window_count(int oh, int ow, int H, int W, int K, int stride, int pad, int count_pad)
{
    if (count_pad) return K * K;
    int h0 = oh * stride - pad, w0 = ow * stride - pad;
    int h1 = h0 + K < H ? h0 + K : H, w1 = w0 + K < W ? w0 + K : W;
    if (h0 < 0) h0 = 0;
    if (w0 < 0) w0 = 0;
    return (h1 - h0) * (w1 - w0);
}

void avgpool_forward(float *out, const float *inp, int B, int C, int H, int W, int K, int stride, int pad,
                     int count_pad)
{
    int OH = pool_out_size(H, K, stride, pad), OW = pool_out_size(W, K, stride, pad);
    for (size_t p = 0; p < (size_t)B * C; p++) {
        const float *x = inp + p * H * W;
        float *o = out + p * OH * OW;
        for (int oh = 0; oh < OH; oh++)
            for (int ow = 0; ow < OW; ow++) {
                float acc = 0;
                for (int kh = 0; kh < K; kh++) {
                    int ih = oh * stride - pad + kh;
                    if (ih < 0 || ih >= H) continue;
                    for (int kw = 0; kw < K; kw++) {
                        int iw = ow * stride - pad + kw;
                        if (iw >= 0 && iw < W) acc += x[ih * W + iw];
                    }
                }
                o[oh * OW + ow] = acc / window_count(oh, ow, H, W, K, stride, pad, count_pad);
            }
    }
}

void avgpool_backward(float *dinp, const float *dout, int B, int C, int H, int W, int K, int stride, int pad,
                      int count_pad)
{
    int OH = pool_out_size(H, K, stride, pad), OW = pool_out_size(W, K, stride, pad);
    for (size_t p = 0; p < (size_t)B * C; p++) {
        float *dx = dinp + p * H * W;
        const float *g = dout + p * OH * OW;
        for (int oh = 0; oh < OH; oh++)
            for (int ow = 0; ow < OW; ow++) {
                float v = g[oh * OW + ow] / window_count(oh, ow, H, W, K, stride, pad, count_pad);
                for (int kh = 0; kh < K; kh++) {
                    int ih = oh * stride - pad + kh;
                    if (ih < 0 || ih >= H) continue;
                    for (int kw = 0; kw < K; kw++) {
                        int iw = ow * stride - pad + kw;
                        if (iw >= 0 && iw < W) dx[ih * W + iw] += v;
                    }
                }
            }
    }
}

void gap_forward(float *out, const float *inp, int B, int C, int HW)
{
    for (size_t p = 0; p < (size_t)B * C; p++) {
        const float *x = inp + p * HW;
        float acc = 0;
        for (int i = 0; i < HW; i++) acc += x[i];
        out[p] = acc / HW;
    }
}

void gap_backward(float *dinp, const float *dout, int B, int C, int HW)
{
    for (size_t p = 0; p < (size_t)B * C; p++) {
        float v = dout[p] / HW;
        float *dx = dinp + p * HW;
        for (int i = 0; i < HW; i++) dx[i] += v;
    }
}
