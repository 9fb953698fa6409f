/* resnet: torchvision ResNet-18, -34 and -50 (V1.5: the stride of a
 * bottleneck sits on its 3x3 convolution) with torchvision's tensor names
 * (conv1.weight, bn1.*, layer1.0.conv1.weight, layer1.0.downsample.0.weight,
 * ..., fc.*). The feature is the global average pool before fc (512 or 2048
 * values). Forward can save what backward needs; backward accumulates into the
 * parameter store's gradients and spends no work below the earliest trainable
 * tensor. BatchNorm runs in training mode (batch statistics, running
 * statistics updated) or frozen in eval mode (running statistics). */
#ifndef VL_MODELS_RESNET_H
#define VL_MODELS_RESNET_H

#include "convnet.h"
#include "param.h"
#include "st.h"

#include <stddef.h>

typedef struct resnet resnet;

/* depth 18, 34 or 50; nclasses: rows of fc (1000 for ImageNet weights; 0 for
 * no fc). Parameters are allocated and zeroed; BN running variances are 1. */
resnet *resnet_new(int depth, int nclasses);
void resnet_free(resnet *m);
/* Guesses depth and fc rows from a weight file's names and shapes; 0, or -1
 * with err when it is not a torchvision ResNet-18/34/50. */
int resnet_detect(const st_file *f, int *depth, int *nclasses, char *err);

params *resnet_params(resnet *m);
int resnet_depth(const resnet *m);
int resnet_feature_dim(const resnet *m);

/* Loads weights (num_batches_tracked is accepted and ignored). -1 with err
 * naming the first missing or mismatched tensor. */
int resnet_load(resnet *m, const st_file *f, char *err);

/* bn_train: 1 = BatchNorm in training mode, 0 = frozen (eval mode). */
void resnet_set_bn_train(resnet *m, int bn_train);

/* Inference only from now on: BatchNorm folded into the convolutions (see
 * cn_fold_bn in convnet.h); a later resnet_forward with save or with
 * BatchNorm in training mode returns -1. What student-embed runs. */
void resnet_fold_bn(resnet *m);

/* feat (B,D) = features of x (B,3,H,W). save: keep the activations for
 * resnet_backward (otherwise a few rotating buffers suffice). Returns 0, or -1
 * with err if the input is too small or a folded model would train. */
int resnet_forward(resnet *m, float *feat, const float *x, int B, int H, int W, int save, char *err);
/* dfeat (B,D): gradient at the features; accumulates into the gradients of
 * the trainable tensors. Needs the immediately preceding forward with save. */
void resnet_backward(resnet *m, const float *dfeat);

/* The decisions of the last saving forward: cn_decisions in convnet.h. */
int resnet_decisions(const resnet *m, cn_decision *d, int max);

/* Bytes of activation and gradient buffers currently held. */
size_t resnet_buffer_bytes(const resnet *m);
/* Releases the activation buffers (the parameters stay). */
void resnet_release(resnet *m);
/* The engine under it, for code that runs every convolutional student alike. */
convnet *resnet_convnet(resnet *m);

#endif
