/* batchnorm: BatchNorm2d over NCHW activations (PyTorch semantics).
 * Training mode normalises with the batch's statistics (biased variance) and
 * updates the running statistics with `momentum` and the unbiased variance;
 * eval ("frozen") mode normalises with the running statistics. Backward
 * functions ACCUMULATE into dinp, dw and db; NULL gradients are skipped.
 * Both forward functions may work in place (out == inp). */
#ifndef VL_NN_BATCHNORM_H
#define VL_NN_BATCHNORM_H

/* out (B,C,HW), mean (C) and rstd (C) saved for backward, run_mean and
 * run_var (C) updated (either may be NULL: no update), inp (B,C,HW), w, b (C) */
void batchnorm_forward_train(float *out, float *mean, float *rstd, float *run_mean, float *run_var, const float *inp,
                             const float *w, const float *b, int B, int C, int HW, float momentum, float eps);
/* out (B,C,HW), inp (B,C,HW), w, b, run_mean, run_var (C) */
void batchnorm_forward_eval(float *out, const float *inp, const float *w, const float *b, const float *run_mean,
                            const float *run_var, int B, int C, int HW, float eps);
/* The same followed by an activation (one pass): act is BN_ACT_NONE,
 * BN_ACT_RELU or BN_ACT_RELU6. Same bytes as batchnorm_forward_eval then
 * relu_forward / relu6_forward. */
enum { BN_ACT_NONE, BN_ACT_RELU, BN_ACT_RELU6 };
void batchnorm_forward_eval_act(float *out, const float *inp, const float *w, const float *b, const float *run_mean,
                                const float *run_var, int B, int C, int HW, float eps, int act);
/* Training-mode backward. dinp (B,C,HW), dw, db (C); dout (B,C,HW), inp: the
 * forward's input, w (C), mean, rstd (C) as saved. */
void batchnorm_backward_train(float *dinp, float *dw, float *db, const float *dout, const float *inp, const float *w,
                              const float *mean, const float *rstd, int B, int C, int HW);
/* Eval-mode backward: the statistics are constants. inp is only read when dw
 * is wanted. */
void batchnorm_backward_eval(float *dinp, float *dw, float *db, const float *dout, const float *inp, const float *w,
                             const float *run_mean, const float *run_var, int B, int C, int HW, float eps);
/* The eval backward of batchnorm_forward_eval_act, in one pass: dout masked
 * by the activation (as relu_backward_set would; dout itself is not
 * written), and dinp is SET (dinp = ..., no zeroing needed), not
 * accumulated. The mask is read from the activation's output y, or, with y
 * NULL, recomputed from inp (the forward's input), w and b exactly as the
 * forward computed it: one array fewer to read when inp is read anyway (dw
 * wanted). inp is read when dw is wanted or y is NULL. */
void batchnorm_backward_eval_act(float *dinp, float *dw, float *db, const float *dout, const float *y, int act,
                                 const float *inp, const float *w, const float *b, const float *run_mean,
                                 const float *run_var, int B, int C, int HW, float eps);

/* Naive double-precision references of the two forward passes. */
void batchnorm_forward_train_ref(float *out, float *mean, float *rstd, float *run_mean, float *run_var,
                                 const float *inp, const float *w, const float *b, int B, int C, int HW,
                                 float momentum, float eps);
void batchnorm_backward_train_ref(float *dinp, float *dw, float *db, const float *dout, const float *inp,
                                  const float *w, const float *mean, const float *rstd, int B, int C, int HW);

#endif
