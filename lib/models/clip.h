/* clip: a CLIP model (ViT image tower + causal text transformer, each followed
 * by a linear projection into the joint space) loaded from either a Hugging
 * Face model directory (config.json + model.safetensors, transformers'
 * CLIPModel names), an OpenCLIP hub directory (whose image tower may also be
 * timm's mobilenetv2_100, computed by models/openclip_timm) or one safetensors
 * file with the OpenAI / OpenCLIP names (sizes inferred from the shapes). Weights may be F32, F16 or BF16; they are
 * held as float. Encoders return L2-normalised embeddings. */
#ifndef VL_MODELS_CLIP_H
#define VL_MODELS_CLIP_H

#include "models/transformer.h"

#include <stddef.h>
#include <stdint.h>

typedef struct clip_model clip_model;

/* path: a Hugging Face directory (config.json and model.safetensors), an
 * OpenCLIP hub directory (open_clip_model.safetensors, optionally
 * open_clip_config.json; its image tower CLIP's ViT or, when vision_cfg
 * names timm_model_name, timm's mobilenetv2_100 with average pooling and a
 * linear projection, any other timm model an error naming it), or a .safetensors file with OpenAI / OpenCLIP
 * names. Returns 0 with *out set, or -1 with err naming the file and the
 * missing tensor / wrong shape / bad config key. */
int clip_load(clip_model **out, const char *path, char *err);
/* The same, loading only some towers (the others cost no memory; their
 * encoders then fail): CLIP_VISION, CLIP_TEXT or CLIP_BOTH. Sizes, identity
 * and logit scale are those of the whole model. */
enum { CLIP_VISION = 1, CLIP_TEXT = 2, CLIP_BOTH = 3 };
int clip_load_towers(clip_model **out, const char *path, int towers, char *err);
void clip_free(clip_model *m);

int clip_image_size(const clip_model *m);     /* S of the (3,S,S) input */
/* The per-channel mean and std the model's input is normalised with (on
 * [0,1] pixels): those of its configuration (OpenCLIP's preprocess_cfg)
 * when it gives them (returns 1), else CLIP's (returns 0). */
int clip_normalisation(const clip_model *m, float mean[3], float std[3]);
/* 1 when the image tower is CLIP's ViT (clip_vision_tower and the training
 * calls below apply), 0 for an OpenCLIP model with a timm image tower, which
 * is models/openclip_timm.h's. */
int clip_image_tower_is_vit(const clip_model *m);
int clip_embed_dim(const clip_model *m);      /* D, the joint space */
int clip_context_length(const clip_model *m); /* text positions, 77 for CLIP */
int clip_vocab_size(const clip_model *m);
/* A stable identity of the weights: "<name>-<16 hex digits>", the digits a
 * hash of the weights file (and config.json when there is one). */
const char *clip_model_id(const clip_model *m);
/* exp(logit_scale), CLIP's softmax temperature inverse */
float clip_logit_scale(const clip_model *m);

/* tokens (B,T) int32, padded, T <= context length; each sequence is pooled at
 * its end-of-text token (the position of its highest token id, as CLIP and
 * transformers do). out (B,D), L2-normalised. Returns 0 or -1 with err. */
int clip_encode_text(clip_model *m, const int32_t *tokens, int B, int T, float *out, char *err);
/* pix (B,3,S,S) float, already normalised; out (B,D), L2-normalised. */
int clip_encode_image(clip_model *m, const float *pix, int B, float *out, char *err);

/* The towers, for code that trains or inspects them. Pointers go into one
 * parameter block laid out by clip_*_layout from the size fields (tf, S, P,
 * D; V, ctx, D); blocks is allocated by the layout call when NULL. */
typedef struct {
    tf_config tf;
    int S, P, D;                         /* image size, patch size, output dimension */
    float *patch_w;                      /* (C,3,P,P), no bias */
    float *cls, *pos;                    /* (C), (T,C) with T = (S/P)^2 + 1 */
    float *ln_pre_w, *ln_pre_b;          /* (C) */
    tf_block *blocks;                    /* tf.L */
    float *ln_post_w, *ln_post_b;        /* (C) */
    float *proj;                         /* (D,C): out = ln_post(x[:,0]) proj^T */
} clip_vision;

typedef struct {
    tf_config tf;
    int V, ctx, D;       /* vocabulary, context length, output dimension */
    float *tok, *pos;    /* (V,C), (ctx,C) */
    tf_block *blocks;    /* tf.L */
    float *ln_w, *ln_b;  /* (C) */
    float *proj;         /* (D,C) */
} clip_text;

size_t clip_vision_nparams(const clip_vision *v);
void clip_vision_layout(clip_vision *v, float *base);
size_t clip_text_nparams(const clip_text *t);
void clip_text_layout(clip_text *t, float *base);
/* The loaded model's towers (owned by m); a tower not loaded has its sizes
 * but NULL tensors. */
const clip_vision *clip_vision_tower(const clip_model *m);
const clip_text *clip_text_tower(const clip_model *m);

/* The loaded image tower's parameter block (clip_vision_nparams floats),
 * for training it in place; NULL (*n 0) when the tower is not a ViT. */
float *clip_vision_params(clip_model *m, size_t *n);
/* dst gets src's sizes and a layout over base (e.g. a gradient block of
 * clip_vision_nparams(src) floats); dst->blocks is allocated: free it. */
void clip_vision_like(clip_vision *dst, const clip_vision *src, float *base);

/* Training the image tower: activations for up to B images. */
typedef struct clip_vision_acts clip_vision_acts;
clip_vision_acts *clip_vision_acts_new(const clip_vision *v, int B);
void clip_vision_acts_free(clip_vision_acts *a);
size_t clip_vision_acts_bytes(const clip_vision_acts *a);
/* out (B,D): the projected features BEFORE L2 normalisation (the loss
 * decides); pix (B,3,S,S) normalised. save: NULL, or activations kept for
 * clip_vision_backward. */
void clip_vision_forward(const clip_vision *v, const float *pix, int B, float *out, clip_vision_acts *save);
/* Accumulates into g (laid out like v, see clip_vision_like) the gradients
 * of a loss whose gradient w.r.t. out is dout (B,D); pix and a as given to
 * and saved by the forward pass. A NULL tensor in g is frozen: no gradient
 * work is spent on it, and with the embeddings and ln_pre frozen the pass
 * stops at the lowest block with a tensor that trains. */
void clip_vision_backward(const clip_vision *v, clip_vision *g, const float *dout, const float *pix,
                          const clip_vision_acts *a, int B);

/* CLIP's own input normalisation (per channel, applied to [0,1] pixels). */
extern const float CLIP_MEAN[3], CLIP_STD[3];

#endif
