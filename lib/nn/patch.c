/* patch: stride = kernel convolution as unfold + sgemm. */
#include "nn/patch.h"

#include "nn/linear.h"
#include "util.h"

#include <stdlib.h>
#include <string.h>

/* col (B*NP, IC*P*P): each row one patch, laid out like a row of w */
static void unfold(float *col, const float *inp, int B, int IC, int H, int W, int P)
{
    int gh = H / P, gw = W / P, K = IC * P * P;
    for (int b = 0; b < B; b++)
        for (int py = 0; py < gh; py++)
            for (int px = 0; px < gw; px++) {
                float *r = col + (((size_t)b * gh + py) * gw + px) * K;
                for (int c = 0; c < IC; c++)
                    for (int y = 0; y < P; y++) {
                        memcpy(r, inp + (((size_t)b * IC + c) * H + py * P + y) * W + px * P, P * sizeof(float));
                        r += P;
                    }
            }
}

static void fold_add(float *dinp, const float *col, int B, int IC, int H, int W, int P)
{
    int gh = H / P, gw = W / P, K = IC * P * P;
    for (int b = 0; b < B; b++)
        for (int py = 0; py < gh; py++)
            for (int px = 0; px < gw; px++) {
                const float *r = col + (((size_t)b * gh + py) * gw + px) * K;
                for (int c = 0; c < IC; c++)
                    for (int y = 0; y < P; y++) {
                        float *d = dinp + (((size_t)b * IC + c) * H + py * P + y) * W + px * P;
                        for (int x = 0; x < P; x++) d[x] += r[x];
                        r += P;
                    }
            }
}

// out (B,NP,OC), inp (B,IC,H,W), w (OC,IC,P,P), b (OC) or NULL
void patch_forward(float *out, const float *inp, const float *w, const float *b, int B, int IC, int H, int W, int OC,
                   int P)
{
    int NP = (H / P) * (W / P), K = IC * P * P;
    float *col = xmalloc_aligned((size_t)B * NP * K * sizeof(float));
    unfold(col, inp, B, IC, H, W, P);
    linear_forward(out, col, w, b, B * NP, K, OC);
    free(col);
}

void patch_forward_ref(float *out, const float *inp, const float *w, const float *b, int B, int IC, int H, int W,
                       int OC, int P)
{
    int gh = H / P, gw = W / P;
    for (int n = 0; n < B; n++)
        for (int py = 0; py < gh; py++)
            for (int px = 0; px < gw; px++)
                for (int o = 0; o < OC; o++) {
                    double s = b ? b[o] : 0;
                    for (int c = 0; c < IC; c++)
                        for (int y = 0; y < P; y++)
                            for (int x = 0; x < P; x++)
                                s += (double)inp[(((size_t)n * IC + c) * H + py * P + y) * W + px * P + x] *
                                     w[(((size_t)o * IC + c) * P + y) * P + x];
                    out[(((size_t)n * gh + py) * gw + px) * OC + o] = (float)s;
                }
}

// dinp (B,IC,H,W), dw (OC,IC,P,P), db (OC); dout (B,NP,OC)
void patch_backward(float *dinp, float *dw, float *db, const float *dout, const float *inp, const float *w, int B,
                    int IC, int H, int W, int OC, int P)
{
    int NP = (H / P) * (W / P), K = IC * P * P;
    size_t n = (size_t)B * NP * K;
    float *col = xmalloc_aligned(n * sizeof(float));
    if (dw) {
        unfold(col, inp, B, IC, H, W, P);
        linear_backward(NULL, dw, NULL, dout, col, w, B * NP, K, OC);
    }
    if (db) linear_backward(NULL, NULL, db, dout, NULL, w, B * NP, K, OC);
    if (dinp) {
        memset(col, 0, n * sizeof(float));
        linear_backward(col, NULL, NULL, dout, NULL, w, B * NP, K, OC);
        fold_add(dinp, col, B, IC, H, W, P);
    }
    free(col);
}
