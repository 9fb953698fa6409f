/* pool: max pooling, average pooling and global average pooling over NCHW
 * (PyTorch MaxPool2d/AvgPool2d with ceil_mode off, AdaptiveAvgPool2d(1)).
 * Backward functions ACCUMULATE into dinp unless named _set. Max pool's
 * forward has a vector path for 3x3 windows at stride 2, pad 1 and a naive
 * reference (maxpool_forward_ref); the other loops are the definitions, so
 * those kernels are their own naive references. */
#ifndef VL_NN_POOL_H
#define VL_NN_POOL_H

/* Output size of a K-window with stride and padding on n inputs. */
int pool_out_size(int n, int K, int stride, int pad);

/* out (B,C,OH,OW), idx (B,C,OH,OW) the flat input position (within H*W) of
 * each maximum, kept for backward (may be NULL); inp (B,C,H,W). Padding
 * counts as -infinity; ties go to the first position, as in PyTorch. */
void maxpool_forward(float *out, int *idx, const float *inp, int B, int C, int H, int W, int K, int stride, int pad);
/* Naive reference of maxpool_forward (same values and indices). */
void maxpool_forward_ref(float *out, int *idx, const float *inp, int B, int C, int H, int W, int K, int stride,
                         int pad);
/* dinp (B,C,H,W); dout, idx (B,C,OH,OW) */
void maxpool_backward(float *dinp, const float *dout, const int *idx, int B, int C, int H, int W, int OH, int OW);
/* The same, but SETS dinp (the bytes of maxpool_backward into zeros, with no
 * zeroing pass of its own). */
void maxpool_backward_set(float *dinp, const float *dout, const int *idx, int B, int C, int H, int W, int OH,
                          int OW);

/* out (B,C,OH,OW), inp (B,C,H,W); count_pad: divide by K*K (PyTorch's default
 * count_include_pad=True) rather than by the in-image part of the window */
void avgpool_forward(float *out, const float *inp, int B, int C, int H, int W, int K, int stride, int pad,
                     int count_pad);
void avgpool_backward(float *dinp, const float *dout, int B, int C, int H, int W, int K, int stride, int pad,
                      int count_pad);

/* out (B,C), inp (B,C,HW) */
void gap_forward(float *out, const float *inp, int B, int C, int HW);
/* dinp (B,C,HW) += dout (B,C) / HW */
void gap_backward(float *dinp, const float *dout, int B, int C, int HW);

#endif
