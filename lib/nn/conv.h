/* conv: 2-D convolution in NCHW layout (PyTorch nn.Conv2d): stride, zero
 * padding, dilation and groups (depthwise when groups == C). The fast paths:
 * 3x3 stride-1 convolutions with 16 or more input and output channels (all
 * of a ResNet's but the stride-2 ones) run as Winograd F(4x4,3x3) where it
 * pays (wino_pays: the map and the batch give tiles enough; winograd.h: a
 * quarter of the multiplications; float32 results within a few 1e-6 of the
 * exact ones, relative to the output's scale, against about 1e-7 for a GEMM;
 * conv_set_winograd(0) turns it off); the others as
 * im2col + sgemm (1x1 stride-1 convolutions need no im2col; depthwise ones
 * use a direct loop). The _ref functions are the naive seven-loop
 * definitions. Backward functions ACCUMULATE (+=) into every gradient they
 * are given; a NULL gradient is skipped together with the work only it
 * needs. */
#ifndef VL_NN_CONV_H
#define VL_NN_CONV_H

#include <stddef.h>

typedef struct {
    int C, H, W;          /* input channels and size */
    int OC, KH, KW;       /* output channels, kernel size */
    int stride, pad, dil; /* the same along both axes */
    int groups;
    int OH, OW; /* output size, set by conv_shape_init */
} conv_shape;

/* Fills s and computes OH, OW. Returns 0, or -1 if the arguments do not make a
 * convolution (C or OC not divisible by groups, empty output). */
int conv_shape_init(conv_shape *s, int C, int H, int W, int OC, int KH, int KW, int stride, int pad, int dil,
                    int groups);

/* out (B,OC,OH,OW), inp (B,C,H,W), w (OC,C/groups,KH,KW), b (OC) or NULL */
void conv2d_forward(float *out, const float *inp, const float *w, const float *b, int B, const conv_shape *s);
void conv2d_forward_ref(float *out, const float *inp, const float *w, const float *b, int B, const conv_shape *s);
/* dinp (B,C,H,W), dw (OC,C/groups,KH,KW), db (OC); dout (B,OC,OH,OW),
 * inp (B,C,H,W) (only read when dw is wanted), w (only read when dinp is wanted) */
void conv2d_backward(float *dinp, float *dw, float *db, const float *dout, const float *inp, const float *w, int B,
                     const conv_shape *s);
/* The same, but dinp is overwritten: no pass to zero it first (each path
 * clears a plane just before it writes it, or has the GEMM set it); dw and
 * db are still accumulated. */
void conv2d_backward_set(float *dinp, float *dw, float *db, const float *dout, const float *inp, const float *w,
                         int B, const conv_shape *s);
void conv2d_backward_ref(float *dinp, float *dw, float *db, const float *dout, const float *inp, const float *w,
                         int B, const conv_shape *s);

/* Whether conv2d_forward / conv2d_backward may take the Winograd path
 * (winograd.h) where it pays; on by default. Off, every convolution runs
 * im2col + sgemm, whose float32 results lie closer to the exact ones (about
 * 1e-7 of the output's scale against a few 1e-6; the training parity tests
 * run both paths). Process-wide: set it before work starts, not while
 * another thread runs a convolution. */
void conv_set_winograd(int on);
int conv_get_winograd(void);

/* The fast paths share one scratch buffer per thread (nn/workspace.h: im2col
 * columns or Winograd transforms), grown on demand; this releases the
 * calling thread's (e.g. after a model is done). */
void conv_release_workspace(void);

#endif
