/* openclip_timm: the image tower of an OpenCLIP model whose vision_cfg
 * names a timm model: timm's mobilenetv2_100 trunk under visual.trunk.
 * (mobilenet.h's timm names), global average pool to 1280 values, then
 * the linear projection visual.head.proj (weight [D, 1280], bias when the
 * file has one). The feature is the D-dim projection, not normalised.
 * Used by the CLIP teacher (clip.h, inference) and by the student face
 * (student.h's openclip_timm, trainable).
 *
 * Every tensor, the projection included, is in one parameter store under
 * the names of the weight file; the projection is trainable, computed here
 * after the pool; the text tower of the file is not read. */
#ifndef VL_MODELS_OPENCLIP_TIMM_H
#define VL_MODELS_OPENCLIP_TIMM_H

#include "json.h"
#include "models/convnet.h"
#include "param.h"
#include "st.h"

#include <stddef.h>

typedef struct openclip_timm openclip_timm;

/* Whether f looks like such a tower: a visual.trunk.* tensor or
 * visual.head.proj.weight. */
int openclip_timm_detect(const st_file *f);
/* 0 if f holds a tower computed here: vc (open_clip_config.json's
 * model_cfg.vision_cfg, or NULL) names timm_model_name mobilenetv2_100 (or
 * none), timm_pool avg and timm_proj linear (the defaults), and f has the
 * trunk and visual.head.proj.weight [D, 1280]; else -1 with err naming the
 * file and what is not. */
int openclip_timm_check(const st_file *f, const json *vc, char *err);

/* The tower with zeroed weights (BatchNorm weights and running variances
 * 1): projection to rows, with a bias or not; BatchNorm in eval mode. */
openclip_timm *openclip_timm_new(int rows, int bias);
/* openclip_timm_check, then the tower sized by f and loaded from f's
 * visual.* tensors (a missing, misshapen or unknown one is an error naming
 * it). 0 with *out set, or -1 with err. */
int openclip_timm_open(openclip_timm **out, const st_file *f, const json *vc, char *err);
void openclip_timm_free(openclip_timm *m);

/* D, the size of the feature. */
int openclip_timm_feature_dim(const openclip_timm *m);
params *openclip_timm_params(openclip_timm *m);
/* The engine under the trunk (BatchNorm mode, folding, decisions). */
convnet *openclip_timm_convnet(openclip_timm *m);

/* feat (B,D) from x (B,3,H,W), normalised; save: keep what backward needs
 * (x too). 0, or -1 with err (cn_forward's). */
int openclip_timm_forward(openclip_timm *m, float *feat, const float *x, int B, int H, int W, int save, char *err);
/* Accumulates into the trainable gradients of the store from dfeat (B,D),
 * the gradient at the features of the preceding saving forward: through
 * the projection into the trunk. */
void openclip_timm_backward(openclip_timm *m, const float *dfeat);
/* Bytes of activation and gradient buffers currently held. */
size_t openclip_timm_buffer_bytes(const openclip_timm *m);

#endif
