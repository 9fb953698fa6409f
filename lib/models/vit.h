/* vit: timm Vision Transformers ViT-S/16 and ViT-B/16 with timm's tensor
 * names (cls_token, pos_embed, patch_embed.proj.*, blocks.N.norm1.*,
 * blocks.N.attn.qkv.*, blocks.N.attn.proj.*, blocks.N.norm2.*,
 * blocks.N.mlp.fc1.*, blocks.N.mlp.fc2.*, norm.*, head.*): LayerNorm eps 1e-6,
 * exact GELU, the feature is the class token after the final norm. An input
 * whose patch grid differs from the one pos_embed was trained for gets
 * position embeddings resized bicubically, as timm's resample_abs_pos_embed
 * does (the class token's embedding is kept). The blocks are the shared
 * transformer stack (lib/models/transformer.h). */
#ifndef VL_MODELS_VIT_H
#define VL_MODELS_VIT_H

#include "param.h"
#include "st.h"

enum vit_kind { VIT_S16, VIT_B16 };

typedef struct vit vit;

/* img: the training image size (pos_embed has (img/16)^2 + 1 rows);
 * nclasses: rows of head (0: no head). */
vit *vit_new(int kind, int img, int nclasses);
/* Any width/depth: C wide, L blocks, NH heads, patch P. */
vit *vit_new_custom(int C, int L, int NH, int P, int img, int nclasses);
void vit_free(vit *m);
/* Detects the kind and head rows from names and shapes; 0 or -1 with err. */
int vit_detect(const st_file *f, int *kind, int *nclasses, char *err);
params *vit_params(vit *m);
int vit_feature_dim(const vit *m);
int vit_load(vit *m, const st_file *f, char *err);

/* feat (B,C) from x (B,3,H,W), H and W multiples of the patch size. save:
 * keep activations for vit_backward. 0 or -1 with err. */
int vit_forward(vit *m, float *feat, const float *x, int B, int H, int W, int save, char *err);
/* Accumulates into the trainable tensors' gradients from dfeat (B,C). */
void vit_backward(vit *m, const float *dfeat);
/* Transformer blocks the last vit_backward went through: it stops at the
 * lowest block with a trainable tensor unless the embeddings train. */
int vit_backward_blocks(const vit *m);
size_t vit_buffer_bytes(const vit *m);

#endif
