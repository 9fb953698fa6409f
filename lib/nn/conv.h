/* conv: 2-D convolution in NCHW layout (PyTorch nn.Conv2d): stride, zero
 * padding, dilation and groups (depthwise when groups == C). The fast path is
 * im2col + sgemm (1x1 stride-1 convolutions need no im2col; depthwise ones use
 * a direct loop); the _ref functions are the naive seven-loop definitions.
 * Backward functions ACCUMULATE (+=) into every gradient they are given; a
 * NULL gradient is skipped together with the work only it needs. */
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
void conv2d_backward_ref(float *dinp, float *dw, float *db, const float *dout, const float *inp, const float *w,
                         int B, const conv_shape *s);

/* The fast path keeps one im2col workspace per thread, grown on demand; this
 * releases it (e.g. after a model is done). */
void conv_release_workspace(void);

#endif
