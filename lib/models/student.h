/* student: one face over every student backbone, for the programs that
 * embed with one or train one (student-embed, bench/train, the training
 * parity driver). Architectures (STUDENT_ARCHS):
 *
 *   resnet18 resnet34 resnet50 mobilenet_v2   torchvision names (resnet.h,
 *                                             mobilenet.h); the feature is
 *                                             the global average pool
 *   vit_s16 vit_b16                           timm names (vit.h); the class
 *                                             token after the final norm
 *   clip_vision                               the image tower of a CLIP
 *                                             directory or file (clip.h);
 *                                             the projected embedding, not
 *                                             normalised
 *   openclip_timm                             an OpenCLIP model whose image
 *                                             tower is timm mobilenetv2_100:
 *                                             visual.trunk.* (mobilenet.h's
 *                                             timm names), global average
 *                                             pool to 1280, then
 *                                             visual.head.proj (weight
 *                                             [D, 1280], bias when the file
 *                                             has one); the feature is the
 *                                             D-dim projection, not normalised
 *
 * Every tensor of the model, the projection of openclip_timm included, is
 * in one parameter store under the names of the weight file (so it can be
 * written back with param_add_to_writer and loaded in PyTorch with
 * load_state_dict; the text tower of an OpenCLIP file is not read). The
 * exception is clip_vision, whose store is one tensor "visual" over the
 * tower's parameter block (param_wrap). */
#ifndef VL_MODELS_STUDENT_H
#define VL_MODELS_STUDENT_H

#include "models/convnet.h"
#include "param.h"

#include <stddef.h>

typedef struct student student;

/* The architecture names, NULL-terminated ("auto" is not one). */
extern const char *const STUDENT_ARCHS[];

/* arch: one of STUDENT_ARCHS, or "auto" to detect it from the tensor names
 * and shapes. path: a safetensors file, or a directory holding
 * open_clip_model.safetensors or model.safetensors (a Hugging Face CLIP
 * directory: model.safetensors with config.json). The weights are loaded:
 * a missing tensor, a wrong shape, a tensor the model does not have (an
 * unknown name), an unsupported timm trunk or a file that is no student
 * is an error naming the file and the tensor or trunk. Returns 0 with *out
 * set (BatchNorm in eval mode), or -1 with err. */
int student_open(student **out, const char *arch, const char *path, char *err);
/* The architecture with zeroed weights (BatchNorm weights and running
 * variances 1), for benchmarks: nclasses rows of the network's classifier
 * (fc, classifier.1, head; 0: none), registered frozen; the ViTs are made
 * for 224x224, openclip_timm projects to 512. clip_vision needs a file:
 * NULL with err. */
student *student_new(const char *arch, int nclasses, char *err);
void student_free(student *s);

/* One of STUDENT_ARCHS (what "auto" found). */
const char *student_arch(const student *s);
/* Ds, the size of a feature. */
int student_feature_dim(const student *s);
params *student_params(student *s);

/* The input normalisation the weights declare, applied per channel to
 * [0,1] pixels: the safetensors metadata vl2v.mean and vl2v.std (or
 * input_mean and input_std), each "R,G,B"; else open_clip_config.json's
 * preprocess_cfg mean and std beside the weights; else CLIP's own for
 * clip_vision. 1 with mean and std set, 0 when nothing declares one. */
int student_input_norm(const student *s, float mean[3], float std[3]);

/* 0 if the model takes H x W inputs, else -1 with err saying what it takes
 * (e.g. "a ViT needs sides that are multiples of 16"). */
int student_check_input(const student *s, int H, int W, char *err);

/* BatchNorm in training mode (1) or frozen in eval mode, using its running
 * statistics (0, the default); nothing for the transformers. */
void student_set_bn_train(student *s, int bn_train);
/* Inference only from now on: BatchNorm folded into the convolutions (see
 * cn_fold_bn); a training forward then fails. Nothing for the
 * transformers. */
void student_fold_bn(student *s);

/* feat (B,Ds) from x (B,3,H,W), normalised. save: keep what
 * student_backward needs (x too must stay unchanged until then). 0, or -1
 * with err (an input the model does not take, a folded model asked to
 * train). */
int student_forward(student *s, float *feat, const float *x, int B, int H, int W, int save, char *err);
/* Accumulates into the gradients of the store's trainable tensors (call
 * param_zero_grad on student_params before the forward) from dfeat (B,Ds),
 * the gradient at the features of the immediately preceding saving
 * forward. */
void student_backward(student *s, const float *dfeat);

/* The discrete decisions of the last saving forward of a convolutional
 * student (cn_decisions in convnet.h): their number, at most max written to
 * d, or -1 when the last forward did not save or failed; 0 for the
 * transformers, which have none. */
int student_decisions(const student *s, cn_decision *d, int max);
/* Bytes of activation and gradient buffers currently held. */
size_t student_buffer_bytes(const student *s);


#endif
