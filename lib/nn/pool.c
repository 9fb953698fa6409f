/* pool: max, average and global average pooling; see pool.h. */
#include "pool.h"

#include <math.h>
#include <stddef.h>

int pool_out_size(int n, int K, int stride, int pad) { return (n + 2 * pad - K) / stride + 1; }

void maxpool_forward(float *out, int *idx, const float *inp, int B, int C, int H, int W, int K, int stride, int pad)
{
    int OH = pool_out_size(H, K, stride, pad), OW = pool_out_size(W, K, stride, pad);
    for (size_t p = 0; p < (size_t)B * C; p++) {
        const float *x = inp + p * H * W;
        float *o = out + p * OH * OW;
        int *ix = idx ? idx + p * OH * OW : NULL;
        for (int oh = 0; oh < OH; oh++)
            for (int ow = 0; ow < OW; ow++) {
                float best = -INFINITY;
                int at = -1;
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
                o[oh * OW + ow] = best;
                if (ix) ix[oh * OW + ow] = at;
            }
    }
}

void maxpool_backward(float *dinp, const float *dout, const int *idx, int B, int C, int H, int W, int OH, int OW)
{
    for (size_t p = 0; p < (size_t)B * C; p++) {
        float *dx = dinp + p * H * W;
        const float *g = dout + p * OH * OW;
        const int *ix = idx + p * OH * OW;
        for (int i = 0; i < OH * OW; i++)
            if (ix[i] >= 0) dx[ix[i]] += g[i];
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
