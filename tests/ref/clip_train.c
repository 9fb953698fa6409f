/* clip_train: the C side of tests/ref/clip_train.sh, the white-box student of
 * VL2V-SD: the CLIP image tower itself, trained with the cosine loss on its
 * projected features (no extra head).
 *
 *   clip_train MODEL BATCH OPT STEPS OUT
 *
 * MODEL a CLIP model directory or file (lib/models/clip.h); BATCH a
 * safetensors file with pix (B,3,S,S), it (B,D), t (NC,D), y (B) (float),
 * lambda, lr and adam_eps (1); OPT adam|sgd (momentum 0.9). Writes the tower's
 * tensors under transformers' names (q/k/v split out of the packed qkv) and
 * "loss" (STEPS) to OUT. */
#include "models/clip.h"
#include "nn/loss.h"
#include "train/optim.h"
#include "param.h"
#include "st.h"
#include "util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static float *get(const st_file *f, const char *name, int ndim, const int64_t *shape)
{
    char err[VL_ERRLEN];
    float *p = st_load_f32(f, name, ndim, shape, err);
    if (!p) {
        fprintf(stderr, "clip_train: %s\n", err);
        exit(1);
    }
    return p;
}

static void add(stw *w, const char *name, const float *p, int ndim, int64_t a, int64_t b, int64_t c, int64_t d)
{
    int64_t s[4] = {a, b, c, d};
    stw_add(w, name, ST_F32, ndim, s, p);
}

int main(int argc, char **argv)
{
    if (argc != 6) {
        fprintf(stderr, "usage: clip_train MODEL BATCH OPT STEPS OUT\n");
        return 2;
    }
    char err[VL_ERRLEN];
    clip_model *m;
    st_file bf;
    if (clip_load(&m, argv[1], err) != 0 || st_open(&bf, argv[2], err) != 0) {
        fprintf(stderr, "clip_train: %s\n", err);
        return 1;
    }
    int steps = atoi(argv[4]);
    const clip_vision *v = clip_vision_tower(m);
    size_t n;
    float *wblock = clip_vision_params(m, &n);
    float *gblock = xcalloc(n, sizeof(float));
    clip_vision g;
    clip_vision_like(&g, v, gblock);
    params p;
    param_wrap(&p, "visual", wblock, gblock, n);

    const st_tensor *pt = st_find(&bf, "pix"), *tt = st_find(&bf, "t");
    int B = (int)pt->shape[0], S = v->S, D = v->D, NC = (int)tt->shape[0];
    int64_t sp[4] = {B, 3, S, S}, sit[2] = {B, D}, st_[2] = {NC, D}, sy[1] = {B}, s1[1] = {1};
    float *pix = get(&bf, "pix", 4, sp), *it = get(&bf, "it", 2, sit), *t = get(&bf, "t", 2, st_);
    float *yf = get(&bf, "y", 1, sy), lambda = get(&bf, "lambda", 1, s1)[0];
    int *y = xmalloc(B * sizeof(int));
    for (int i = 0; i < B; i++) y[i] = (int)yf[i];
    int kind = strcmp(argv[3], "sgd") == 0 ? OPTIM_SGD : OPTIM_ADAM;
    optim o;
    optim_init(&o, kind, get(&bf, "lr", 1, s1)[0], &p);
    if (kind == OPTIM_SGD) o.momentum = 0.9f;
    o.eps = get(&bf, "adam_eps", 1, s1)[0];

    clip_vision_acts *acts = clip_vision_acts_new(v, B);
    float *out = xmalloc((size_t)B * D * sizeof(float)), *dout = xmalloc((size_t)B * D * sizeof(float));
    float *losses = xmalloc(steps * sizeof(float));
    for (int s = 0; s < steps; s++) {
        memset(gblock, 0, n * sizeof(float));
        clip_vision_forward(v, pix, B, out, acts);
        losses[s] = cosloss_forward(NULL, NULL, out, it, t, y, B, D, lambda);
        memset(dout, 0, (size_t)B * D * sizeof(float));
        cosloss_backward(dout, out, it, t, y, B, D, lambda, 1.0f);
        clip_vision_backward(v, &g, dout, pix, acts, B);
        optim_step(&o, &p);
    }

    stw *w = stw_new();
    int C = v->tf.C, H = v->tf.hidden, P = v->P, T = (S / P) * (S / P) + 1;
    char name[160];
    add(w, "vision_model.embeddings.patch_embedding.weight", v->patch_w, 4, C, 3, P, P);
    add(w, "vision_model.embeddings.class_embedding", v->cls, 1, C, 0, 0, 0);
    add(w, "vision_model.embeddings.position_embedding.weight", v->pos, 2, T, C, 0, 0);
    add(w, "vision_model.pre_layrnorm.weight", v->ln_pre_w, 1, C, 0, 0, 0);
    add(w, "vision_model.pre_layrnorm.bias", v->ln_pre_b, 1, C, 0, 0, 0);
    add(w, "vision_model.post_layernorm.weight", v->ln_post_w, 1, C, 0, 0, 0);
    add(w, "vision_model.post_layernorm.bias", v->ln_post_b, 1, C, 0, 0, 0);
    add(w, "visual_projection.weight", v->proj, 2, D, C, 0, 0);
    static const char *const QKV[3] = {"q_proj", "k_proj", "v_proj"};
    for (int l = 0; l < v->tf.L; l++) {
        const tf_block *b = &v->blocks[l];
#define NAME(fmt, ...) (snprintf(name, sizeof name, "vision_model.encoder.layers.%d." fmt, l, __VA_ARGS__), name)
        add(w, NAME("%s", "layer_norm1.weight"), b->ln1_w, 1, C, 0, 0, 0);
        add(w, NAME("%s", "layer_norm1.bias"), b->ln1_b, 1, C, 0, 0, 0);
        for (int k = 0; k < 3; k++) {
            add(w, NAME("self_attn.%s.weight", QKV[k]), b->qkv_w + (size_t)k * C * C, 2, C, C, 0, 0);
            add(w, NAME("self_attn.%s.bias", QKV[k]), b->qkv_b + (size_t)k * C, 1, C, 0, 0, 0);
        }
        add(w, NAME("%s", "self_attn.out_proj.weight"), b->proj_w, 2, C, C, 0, 0);
        add(w, NAME("%s", "self_attn.out_proj.bias"), b->proj_b, 1, C, 0, 0, 0);
        add(w, NAME("%s", "layer_norm2.weight"), b->ln2_w, 1, C, 0, 0, 0);
        add(w, NAME("%s", "layer_norm2.bias"), b->ln2_b, 1, C, 0, 0, 0);
        add(w, NAME("%s", "mlp.fc1.weight"), b->fc1_w, 2, H, C, 0, 0);
        add(w, NAME("%s", "mlp.fc1.bias"), b->fc1_b, 1, H, 0, 0, 0);
        add(w, NAME("%s", "mlp.fc2.weight"), b->fc2_w, 2, C, H, 0, 0);
        add(w, NAME("%s", "mlp.fc2.bias"), b->fc2_b, 1, C, 0, 0, 0);
#undef NAME
    }
    add(w, "loss", losses, 1, steps, 0, 0, 0);
    if (stw_write(w, argv[5], err) != 0) {
        fprintf(stderr, "clip_train: %s\n", err);
        return 1;
    }
    stw_free(w);
    return 0;
}
