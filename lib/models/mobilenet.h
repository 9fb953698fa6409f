/* mobilenet: torchvision MobileNetV2 (width 1.0) with torchvision's tensor
 * names (features.0.0.weight, features.0.1.*, features.N.conv.*,
 * features.18.*, classifier.1.*), on the convnet engine: inverted residual
 * blocks of 1x1 expansion, 3x3 depthwise and 1x1 linear projection, ReLU6.
 * The feature is the global average pool before the classifier (1280
 * values). */
#ifndef VL_MODELS_MOBILENET_H
#define VL_MODELS_MOBILENET_H

#include "convnet.h"
#include "param.h"
#include "st.h"

#include <stddef.h>

typedef struct mobilenet mobilenet;

/* nclasses: rows of classifier.1 (0: none). */
mobilenet *mobilenet_new(int nclasses);
void mobilenet_free(mobilenet *m);
/* 0 if f holds a torchvision MobileNetV2 (nclasses from classifier.1), or
 * -1 with err. */
int mobilenet_detect(const st_file *f, int *nclasses, char *err);
params *mobilenet_params(mobilenet *m);
int mobilenet_feature_dim(const mobilenet *m);
int mobilenet_load(mobilenet *m, const st_file *f, char *err);
void mobilenet_set_bn_train(mobilenet *m, int bn_train);
/* Inference only from now on: BatchNorm folded into the convolutions (see
 * cn_fold_bn in convnet.h); a training forward then returns -1. */
void mobilenet_fold_bn(mobilenet *m);
int mobilenet_forward(mobilenet *m, float *feat, const float *x, int B, int H, int W, int save, char *err);
void mobilenet_backward(mobilenet *m, const float *dfeat);
/* The decisions of the last saving forward: cn_decisions in convnet.h. */
int mobilenet_decisions(const mobilenet *m, cn_decision *d, int max);
void mobilenet_release(mobilenet *m);

#endif
