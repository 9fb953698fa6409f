/* transformer: a pre-LN transformer encoder stack, the body shared by the
 * CLIP towers and the ViT student. Per block:
 *     x = x + out_proj(attention(qkv(ln_1(x))))
 *     x = x + fc2(act(fc1(ln_2(x))))
 * with packed q|k|v projections (rows [0,C) q, [C,2C) k, [2C,3C) v, as
 * timm and OpenAI CLIP store them). Parameters live in one block laid out by
 * tf_layout; a gradient block of the same size gets the same layout, so an
 * optimizer can treat either as one flat vector. Forward can save what the
 * backward pass needs in a tf_acts; backward accumulates into the gradients. */
#ifndef VL_MODELS_TRANSFORMER_H
#define VL_MODELS_TRANSFORMER_H

#include <stddef.h>

enum tf_act { TF_GELU, TF_QUICKGELU };

typedef struct {
    int C;      /* width */
    int NH;     /* heads, dividing C */
    int L;      /* blocks */
    int hidden; /* MLP width */
    int act;    /* TF_GELU or TF_QUICKGELU */
    int causal; /* token t attends to tokens <= t (CLIP's text tower) */
    float eps;  /* LayerNorm epsilon */
} tf_config;

/* One block's tensors, pointers into a parameter (or gradient) block. */
typedef struct {
    float *ln1_w, *ln1_b;   /* (C) */
    float *qkv_w, *qkv_b;   /* (3C,C), (3C) */
    float *proj_w, *proj_b; /* (C,C), (C) */
    float *ln2_w, *ln2_b;   /* (C) */
    float *fc1_w, *fc1_b;   /* (hidden,C), (hidden) */
    float *fc2_w, *fc2_b;   /* (C,hidden), (C) */
} tf_block;

/* Floats in one block's parameters, and in all L blocks. */
size_t tf_block_size(const tf_config *c);
size_t tf_nparams(const tf_config *c);
/* Points blocks[0..L) into base (tf_nparams floats), in the order above,
 * block after block. */
void tf_layout(const tf_config *c, float *base, tf_block *blocks);

/* Activations saved by a training forward pass, for batches of at most B
 * sequences of at most T tokens (the attention probabilities take
 * B*NH*T*T floats per block). */
typedef struct tf_acts tf_acts;
tf_acts *tf_acts_new(const tf_config *c, int B, int T);
void tf_acts_free(tf_acts *a);
/* Bytes held by a (for memory reports). */
size_t tf_acts_bytes(const tf_acts *a);

/* x (B,T,C): the input tokens, replaced by the output of the last block.
 * save: NULL for inference (scratch is allocated per call and freed), or a
 * tf_acts made for at least this B and T, to be passed to tf_backward. */
void tf_forward(const tf_config *c, const tf_block *w, float *x, int B, int T, tf_acts *save);

/* The lowest block with a gradient wanted (a non-NULL tensor in g[l]), or
 * c->L when there is none (or g is NULL): a backward pass that needs no
 * gradient at the stack's input stops there. */
int tf_lowest_trainable(const tf_config *c, const tf_block *g);

/* dx (B,T,C): the gradient at the stack's output, replaced by the gradient
 * at the input of block lo (lo 0: the stack's input); blocks below lo are
 * not visited. g: gradient blocks to accumulate into (same layout as w; a
 * NULL tensor is not wanted), or NULL when the stack is frozen and only dx is
 * wanted. a: as saved by the matching tf_forward with the same w, B and T.
 * Returns the number of blocks visited, c->L - lo. */
int tf_backward(const tf_config *c, const tf_block *w, tf_block *g, float *dx, const tf_acts *a, int B, int T,
                int lo);

#endif
