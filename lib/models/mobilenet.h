/* mobilenet: MobileNetV2 (width 1.0) on the convnet engine: inverted
 * residual blocks of 1x1 expansion, 3x3 depthwise and 1x1 linear
 * projection, ReLU6. The feature is the global average pool before the
 * classifier (1280 values). One network under either of two namings:
 * torchvision's mobilenet_v2 (features.0.0.weight, features.0.1.*,
 * features.N.conv.*, features.18.*, classifier.1.*) or timm's
 * mobilenetv2_100 (conv_stem.weight, bn1.*, blocks.I.J.{conv_pw, conv_dw,
 * conv_pwl}.weight with .{bn1, bn2, bn3}.*, the first block
 * blocks.0.0.{conv_dw, conv_pw} with .{bn1, bn2}, conv_head.weight, bn2.*,
 * classifier.*), which compute the same function. */
#ifndef VL_MODELS_MOBILENET_H
#define VL_MODELS_MOBILENET_H

#include "convnet.h"
#include "param.h"
#include "st.h"

#include <stddef.h>

typedef struct mobilenet mobilenet;

enum mobilenet_names { MOBILENET_TORCHVISION, MOBILENET_TIMM };

/* A linear layer after the pool, not part of the feature: weight
 * [rows, 1280] and, with bias, bias [rows], under name + ".weight" and
 * ".bias" (the whole name: no prefix is put before it), registered frozen
 * (param_freeze unfreezes it for a caller that computes it). torchvision's
 * classifier is {"classifier.1", C, 1}. */
typedef struct {
    const char *name;
    int rows, bias;
} mobilenet_head;

/* names: MOBILENET_TORCHVISION or MOBILENET_TIMM; prefix: put before every
 * trunk name (e.g. "visual.trunk." for an OpenCLIP timm tower; NULL or ""
 * for none); head: NULL or rows 0 for none. */
mobilenet *mobilenet_new_named(int names, const char *prefix, const mobilenet_head *head);
/* torchvision's names, no prefix; nclasses: rows of classifier.1 (0: none) */
mobilenet *mobilenet_new(int nclasses);
void mobilenet_free(mobilenet *m);
/* 0 if f holds a torchvision MobileNetV2 (nclasses from classifier.1), or
 * -1 with err. */
int mobilenet_detect(const st_file *f, int *nclasses, char *err);
/* The same for either naming under a prefix (nclasses from classifier.1 or
 * classifier). */
int mobilenet_detect_named(const st_file *f, int names, const char *prefix, int *nclasses, char *err);
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
/* The engine under it, for code that runs every convolutional student alike. */
convnet *mobilenet_convnet(mobilenet *m);

#endif
