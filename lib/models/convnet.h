/* convnet: the engine under the convolutional students (resnet.c,
 * mobilenet.c). A network is a sequence of blocks; a block is a chain of
 * units (convolution without bias + BatchNorm + optional ReLU/ReLU6), an
 * optional downsample unit on the shortcut, a way of joining (none, add,
 * add then ReLU) and an optional 3x3/2 max pool after it. The feature is the
 * global average pool of the last block's output.
 *
 * Forward can save what backward needs; backward accumulates into the
 * parameter store's gradients and spends no work below the earliest trainable
 * unit. BatchNorm runs in training mode (batch statistics, running statistics
 * updated) or frozen in eval mode (running statistics). */
#ifndef VL_MODELS_CONVNET_H
#define VL_MODELS_CONVNET_H

#include "param.h"
#include "st.h"

#include <stddef.h>

enum cn_act { CN_NONE, CN_RELU, CN_RELU6 };
enum cn_join { CN_PLAIN, CN_ADD, CN_ADD_RELU };

typedef struct convnet convnet;

/* Building: units are registered under their weight-file names
 * (conv.weight and bn.{weight,bias,running_mean,running_var}). */
convnet *cn_new(void);
void cn_block_begin(convnet *m, int join);
/* pad = k/2; returns the unit's index */
int cn_unit(convnet *m, const char *conv, const char *bn, int cin, int cout, int k, int stride, int groups, int act);
/* the next unit is the block's shortcut (1x1 conv + BN) */
int cn_down(convnet *m, const char *conv, const char *bn, int cin, int cout, int stride);
/* A block that joins (CN_ADD, CN_ADD_RELU) must end in a unit without
 * activation (the join takes its output over); otherwise this aborts. */
void cn_block_end(convnet *m, int maxpool_after);
/* Extra tensors not on the feature path (a classifier), registered frozen. */
void cn_extra(convnet *m, const char *name, int ndim, const int64_t *shape);
/* Allocates; BN weights and running variances start at 1. */
void cn_finish(convnet *m);

void cn_free(convnet *m);
params *cn_params(convnet *m);
int cn_feature_dim(const convnet *m);
/* Loads weights; a folded model is folded again from them. */
int cn_load(convnet *m, const st_file *f, char *err);
void cn_set_bn_train(convnet *m, int bn_train);
/* Makes the model inference-only: every unit's frozen BatchNorm is folded
 * into its convolution, w' = w * gamma / sqrt(var + eps) and a bias
 * b' = beta - mean * gamma / sqrt(var + eps), so a unit runs as one
 * convolution and one bias-and-activation pass (none before a residual join
 * or a max pool, which take them over). The folded copies are kept beside
 * the parameters, which stay as loaded (the parameter store still holds the
 * file's tensors); they are a snapshot: cn_load folds again, other changes
 * to the parameters need another cn_fold_bn. Features equal the unfolded
 * eval-mode ones to rounding (about 1e-6 relative). From then on a saving
 * forward, or one with BatchNorm in training mode, fails. */
void cn_fold_bn(convnet *m);
int cn_is_folded(const convnet *m);
/* feat (B,D) from x (B,3,H,W); save: keep activations for cn_backward.
 * 0, or -1 with err if the input is too small or the model is folded and
 * this forward would train. */
int cn_forward(convnet *m, float *feat, const float *x, int B, int H, int W, int save, char *err);
void cn_backward(convnet *m, const float *dfeat);
/* The discrete decisions of the last saving forward, for inspection, in
 * forward order: every activation (a unit's ReLU or ReLU6, a residual join's
 * ReLU) with its output, from which the decision per element follows (ReLU:
 * y > 0; ReLU6: y <= 0, 0 < y < 6 or y >= 6), and every max pool with its
 * argmax (the flat position within the input plane). The training parity
 * tests hand them to the float64 reference, which takes them where its own
 * values lie within rounding of a threshold or of each other
 * (tests/ref/student_train.c). The pointers stay valid until the next
 * forward, cn_release or cn_free. */
typedef struct {
    int act;        /* CN_RELU or CN_RELU6; CN_NONE: a 3x3/2 max pool */
    const float *y; /* the activation's output (B,C,H,W); NULL for a pool */
    const int *idx; /* the pool's argmax (B,C,H,W); NULL for an activation */
    int B, C, H, W;
} cn_decision;
/* The number of decision sites (at most max are written to d), or -1 when
 * the last forward did not save or failed. */
int cn_decisions(const convnet *m, cn_decision *d, int max);

size_t cn_buffer_bytes(const convnet *m);
void cn_release(convnet *m);

#endif
