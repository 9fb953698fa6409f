/* pool: max, average and global average pooling; see pool.h. */
#include "pool.h"

#include "par.h"

#include <math.h>
#include <stddef.h>

int pool_out_size(int n, int K, int stride, int pad) { return (n + 2 * pad - K) / stride + 1; }

typedef struct {
    float *out, *dinp;
    int *idx;
    const float *inp, *dout;
    const int *cidx;
    int H, W, OH, OW, K, stride, pad;
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

static void maxpool_range(void *ctx, int p0, int p1)
{
    const pool_args *a = ctx;
    size_t HW = (size_t)a->H * a->W, OHW = (size_t)a->OH * a->OW;
    for (size_t p = p0; p < (size_t)p1; p++)
        maxpool_plane(a->out + p * OHW, a->idx ? a->idx + p * OHW : NULL, a->inp + p * HW, a);
}

void maxpool_forward(float *out, int *idx, const float *inp, int B, int C, int H, int W, int K, int stride, int pad)
{
    pool_args a = {.out = out, .idx = idx, .inp = inp, .H = H, .W = W, .OH = pool_out_size(H, K, stride, pad),
                   .OW = pool_out_size(W, K, stride, pad), .K = K, .stride = stride, .pad = pad};
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
        for (size_t i = 0; i < OHW; i++)
            if (ix[i] >= 0) dx[ix[i]] += g[i];
    }
}

void maxpool_backward(float *dinp, const float *dout, const int *idx, int B, int C, int H, int W, int OH, int OW)
{
    pool_args a = {.dinp = dinp, .dout = dout, .cidx = idx, .H = H, .W = W, .OH = OH, .OW = OW};
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
