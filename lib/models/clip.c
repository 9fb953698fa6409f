/* clip: CLIP model loading (Hugging Face directory or OpenAI/OpenCLIP
 * safetensors file) and the two encoders. Each tower's parameters live in
 * one block; the transformer body is models/transformer. Images of a batch
 * go through every linear layer as one (B*T, C) matrix. */
#include "models/clip.h"

#include "json.h"
#include "models/openclip_timm.h"
#include "nn/layernorm.h"
#include "nn/linear.h"
#include "nn/patch.h"
#include "st.h"
#include "util.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

const float CLIP_MEAN[3] = {0.48145466f, 0.4578275f, 0.40821073f};
const float CLIP_STD[3] = {0.26862954f, 0.26130258f, 0.27577711f};

struct clip_model {
    char *id;
    int towers; /* CLIP_VISION | CLIP_TEXT: those loaded */
    float logit_scale;
    clip_vision v;
    clip_text t;
    float *vblock, *tblock;
    int timm;           /* the image tower is timm's (load_openclip_timm): img, not v's tensors */
    openclip_timm *img; /* that tower */
    int has_norm;       /* the configuration gives the input normalisation */
    float mean[3], std[3];
};

/* ---- the timm image tower: models/openclip_timm ---- */

/* The tower checks vc's trunk, pool and projection and reads only
 * visual.*; inference only, so BatchNorm is folded. */
static int timm_open(clip_model *m, const st_file *f, const json *vc, char *err)
{
    if (openclip_timm_open(&m->img, f, vc, err) != 0) return -1;
    if (openclip_timm_feature_dim(m->img) != m->v.D)
        return vl_error(err, "%s: the image tower gives %d dimensions, visual.head.proj.weight %d", f->path,
                        openclip_timm_feature_dim(m->img), m->v.D);
    cn_fold_bn(openclip_timm_convnet(m->img));
    return 0;
}

static void timm_free(clip_model *m) { openclip_timm_free(m->img); }

/* ---- parameter layouts ---- */

size_t clip_vision_nparams(const clip_vision *v)
{
    size_t C = v->tf.C, P = v->P, g = v->S / v->P, T = g * g + 1;
    return C * 3 * P * P + C + T * C + 4 * C + tf_nparams(&v->tf) + (size_t)v->D * C;
}

void clip_vision_layout(clip_vision *v, float *base)
{
    size_t C = v->tf.C, P = v->P, g = v->S / v->P, T = g * g + 1;
    float *p = base;
    v->patch_w = p, p += C * 3 * P * P;
    v->cls = p, p += C;
    v->pos = p, p += T * C;
    v->ln_pre_w = p, p += C;
    v->ln_pre_b = p, p += C;
    if (!v->blocks) v->blocks = xmalloc((size_t)v->tf.L * sizeof(tf_block));
    tf_layout(&v->tf, p, v->blocks);
    p += tf_nparams(&v->tf);
    v->ln_post_w = p, p += C;
    v->ln_post_b = p, p += C;
    v->proj = p;
}

size_t clip_text_nparams(const clip_text *t)
{
    size_t C = t->tf.C;
    return (size_t)t->V * C + (size_t)t->ctx * C + tf_nparams(&t->tf) + 2 * C + (size_t)t->D * C;
}

void clip_text_layout(clip_text *t, float *base)
{
    size_t C = t->tf.C;
    float *p = base;
    t->tok = p, p += (size_t)t->V * C;
    t->pos = p, p += (size_t)t->ctx * C;
    if (!t->blocks) t->blocks = xmalloc((size_t)t->tf.L * sizeof(tf_block));
    tf_layout(&t->tf, p, t->blocks);
    p += tf_nparams(&t->tf);
    t->ln_w = p, p += C;
    t->ln_b = p, p += C;
    t->proj = p;
}

/* ---- loading ---- */

/* Copies tensor `name` (ndim dims of the given shape) into dst as float. */
static int get(const st_file *f, const char *name, float *dst, int ndim, const int64_t *shape, char *err)
{
    const st_tensor *t = st_find(f, name);
    char a[128], b[128];
    if (!t) return vl_error(err, "%s: missing tensor '%s'", f->path, name);
    int ok = t->ndim == ndim;
    for (int i = 0; ok && i < ndim; i++) ok = t->shape[i] == shape[i];
    /* a scalar may be stored as shape [] or [1] */
    if (ndim == 0 && t->numel == 1 && t->ndim <= 1) ok = 1;
    if (!ok)
        return vl_error(err, "%s: tensor '%s' has shape %s, expected %s", f->path, name,
                        st_shape_str(t->ndim, t->shape, a, sizeof a), st_shape_str(ndim, shape, b, sizeof b));
    if (st_read_f32(f, t, dst, err) < 0) return -1;
    /* the mapped file pages are no longer needed: keep the peak memory at one
     * copy of the weights, not two */
    uintptr_t a0 = ((uintptr_t)t->data + 4095) & ~(uintptr_t)4095, a1 = ((uintptr_t)t->data + t->nbytes) & ~(uintptr_t)4095;
    if (a1 > a0) madvise((void *)a0, a1 - a0, MADV_DONTNEED);
    return 0;
}

#define SHAPE(...) ((const int64_t[]){__VA_ARGS__})
#define GET1(name, dst, d0) get(f, name, dst, 1, SHAPE(d0), err)
#define GET2(name, dst, d0, d1) get(f, name, dst, 2, SHAPE(d0, d1), err)

/* (rows,cols) stored, transposed into dst (cols,rows) */
static int get_t(const st_file *f, const char *name, float *dst, int64_t rows, int64_t cols, char *err)
{
    float *tmp = xmalloc((size_t)rows * cols * sizeof(float));
    int rc = get(f, name, tmp, 2, SHAPE(rows, cols), err);
    if (rc == 0)
        for (int64_t i = 0; i < rows; i++)
            for (int64_t j = 0; j < cols; j++) dst[j * rows + i] = tmp[i * cols + j];
    free(tmp);
    return rc;
}

/* One transformer block. hf: transformers' names under prefix
 * "...encoder.layers.N."; else OpenAI's under "...resblocks.N.". */
static int get_block(const st_file *f, int hf, const char *pre, const tf_config *c, tf_block *b, char *err)
{
    char n[256];
    int64_t C = c->C, H = c->hidden;
#define NAME(s) (snprintf(n, sizeof n, "%s%s", pre, s), n)
    if (hf) {
        if (GET1(NAME("layer_norm1.weight"), b->ln1_w, C) || GET1(NAME("layer_norm1.bias"), b->ln1_b, C) ||
            GET2(NAME("self_attn.q_proj.weight"), b->qkv_w, C, C) ||
            GET2(NAME("self_attn.k_proj.weight"), b->qkv_w + C * C, C, C) ||
            GET2(NAME("self_attn.v_proj.weight"), b->qkv_w + 2 * C * C, C, C) ||
            GET1(NAME("self_attn.q_proj.bias"), b->qkv_b, C) || GET1(NAME("self_attn.k_proj.bias"), b->qkv_b + C, C) ||
            GET1(NAME("self_attn.v_proj.bias"), b->qkv_b + 2 * C, C) ||
            GET2(NAME("self_attn.out_proj.weight"), b->proj_w, C, C) ||
            GET1(NAME("self_attn.out_proj.bias"), b->proj_b, C) || GET1(NAME("layer_norm2.weight"), b->ln2_w, C) ||
            GET1(NAME("layer_norm2.bias"), b->ln2_b, C) || GET2(NAME("mlp.fc1.weight"), b->fc1_w, H, C) ||
            GET1(NAME("mlp.fc1.bias"), b->fc1_b, H) || GET2(NAME("mlp.fc2.weight"), b->fc2_w, C, H) ||
            GET1(NAME("mlp.fc2.bias"), b->fc2_b, C))
            return -1;
    } else {
        if (GET1(NAME("ln_1.weight"), b->ln1_w, C) || GET1(NAME("ln_1.bias"), b->ln1_b, C) ||
            GET2(NAME("attn.in_proj_weight"), b->qkv_w, 3 * C, C) ||
            GET1(NAME("attn.in_proj_bias"), b->qkv_b, 3 * C) ||
            GET2(NAME("attn.out_proj.weight"), b->proj_w, C, C) || GET1(NAME("attn.out_proj.bias"), b->proj_b, C) ||
            GET1(NAME("ln_2.weight"), b->ln2_w, C) || GET1(NAME("ln_2.bias"), b->ln2_b, C) ||
            GET2(NAME("mlp.c_fc.weight"), b->fc1_w, H, C) || GET1(NAME("mlp.c_fc.bias"), b->fc1_b, H) ||
            GET2(NAME("mlp.c_proj.weight"), b->fc2_w, C, H) || GET1(NAME("mlp.c_proj.bias"), b->fc2_b, C))
            return -1;
    }
#undef NAME
    return 0;
}

/* ---- every tensor accounted for ---- */

static const char *const HF_BLOCK[] = {
    "layer_norm1.weight", "layer_norm1.bias", "self_attn.q_proj.weight", "self_attn.q_proj.bias",
    "self_attn.k_proj.weight", "self_attn.k_proj.bias", "self_attn.v_proj.weight", "self_attn.v_proj.bias",
    "self_attn.out_proj.weight", "self_attn.out_proj.bias", "layer_norm2.weight", "layer_norm2.bias",
    "mlp.fc1.weight", "mlp.fc1.bias", "mlp.fc2.weight", "mlp.fc2.bias", NULL};
static const char *const OA_BLOCK[] = {
    "ln_1.weight", "ln_1.bias", "attn.in_proj_weight", "attn.in_proj_bias", "attn.out_proj.weight",
    "attn.out_proj.bias", "ln_2.weight", "ln_2.bias", "mlp.c_fc.weight", "mlp.c_fc.bias",
    "mlp.c_proj.weight", "mlp.c_proj.bias", NULL};
static const char *const HF_VISION[] = {
    "vision_model.embeddings.patch_embedding.weight", "vision_model.embeddings.class_embedding",
    "vision_model.embeddings.position_embedding.weight", "vision_model.embeddings.position_ids",
    "vision_model.pre_layrnorm.weight", "vision_model.pre_layrnorm.bias", "vision_model.post_layernorm.weight",
    "vision_model.post_layernorm.bias", "visual_projection.weight", NULL};
static const char *const HF_TEXT[] = {
    "text_model.embeddings.token_embedding.weight", "text_model.embeddings.position_embedding.weight",
    "text_model.embeddings.position_ids", "text_model.final_layer_norm.weight", "text_model.final_layer_norm.bias",
    "text_projection.weight", NULL};
static const char *const OA_VISION[] = {
    "visual.conv1.weight", "visual.class_embedding", "visual.positional_embedding", "visual.ln_pre.weight",
    "visual.ln_pre.bias", "visual.ln_post.weight", "visual.ln_post.bias", "visual.proj", NULL};
static const char *const OA_TEXT[] = {
    "token_embedding.weight", "positional_embedding", "ln_final.weight", "ln_final.bias", "text_projection", NULL};
/* both schemes: the temperature; OpenAI's checkpoints also carry their sizes */
static const char *const COMMON[] = {"logit_scale", "input_resolution", "context_length", "vocab_size", NULL};

static int in_list(const char *name, const char *const *list)
{
    for (int i = 0; list[i]; i++)
        if (strcmp(name, list[i]) == 0) return 1;
    return 0;
}

/* name is pre + "<l>." + one of suffixes, with l < L */
static int block_name(const char *name, const char *pre, int L, const char *const *suffixes)
{
    size_t n = strlen(pre);
    if (strncmp(name, pre, n) != 0 || name[n] < '0' || name[n] > '9') return 0;
    char *end;
    long l = strtol(name + n, &end, 10);
    return *end == '.' && l < L && (l == 0 || name[n] != '0') && in_list(end + 1, suffixes);
}

/* Every tensor of the file must be one the model reads: a tensor that is not
 * (a layer beyond config.json's count, OpenCLIP's layer scale, a projection
 * bias, an attention pooler ...) belongs to a variant computed otherwise, and
 * ignoring it would give wrong embeddings without a word. Tensors of a tower
 * not loaded are not looked at. */
static int check_names(const clip_model *m, const st_file *f, int hf, const char *what, char *err)
{
    for (int i = 0; i < f->n; i++) {
        const char *n = f->t[i].name;
        int vis = hf ? strncmp(n, "vision_model.", 13) == 0 || strncmp(n, "visual_projection", 17) == 0
                     : strncmp(n, "visual.", 7) == 0;
        if (in_list(n, COMMON)) continue;
        if (vis ? !(m->towers & CLIP_VISION) || m->timm : !(m->towers & CLIP_TEXT)) continue;
        if (hf ? (vis ? in_list(n, HF_VISION) || block_name(n, "vision_model.encoder.layers.", m->v.tf.L, HF_BLOCK)
                      : in_list(n, HF_TEXT) || block_name(n, "text_model.encoder.layers.", m->t.tf.L, HF_BLOCK))
               : (vis ? in_list(n, OA_VISION) || block_name(n, "visual.transformer.resblocks.", m->v.tf.L, OA_BLOCK)
                      : in_list(n, OA_TEXT) || block_name(n, "transformer.resblocks.", m->t.tf.L, OA_BLOCK)))
            continue;
        return vl_error(err, "%s: tensor '%s' is not part of CLIP as %s gives it: a variant not computed here "
                        "(refused rather than run without it)", f->path, n, what);
    }
    return 0;
}

static int parse_act(const char *s, int *act)
{
    if (strcmp(s, "quick_gelu") == 0)
        *act = TF_QUICKGELU;
    else if (strcmp(s, "gelu") == 0)
        *act = TF_GELU;
    else
        return -1;
    return 0;
}

/* A tower's sizes from config.json, with transformers' defaults for absent keys. */
static int hf_tower(const json *cfg, const char *path, const char *which, tf_config *tf, int text, char *err)
{
    tf->C = (int)json_get_int(cfg, "hidden_size", text ? 512 : 768);
    tf->hidden = (int)json_get_int(cfg, "intermediate_size", text ? 2048 : 3072);
    tf->L = (int)json_get_int(cfg, "num_hidden_layers", 12);
    tf->NH = (int)json_get_int(cfg, "num_attention_heads", text ? 8 : 12);
    tf->eps = (float)json_get_num(cfg, "layer_norm_eps", 1e-5);
    tf->causal = text;
    const char *act = json_get_str(cfg, "hidden_act", "quick_gelu");
    if (parse_act(act, &tf->act) < 0) return vl_error(err, "%s: %s.hidden_act '%s' is not supported", path, which, act);
    if (tf->C <= 0 || tf->NH <= 0 || tf->C % tf->NH || tf->L <= 0 || tf->hidden <= 0 || tf->C > 65536 ||
        tf->hidden > 1 << 20 || tf->L > 1024)
        return vl_error(err, "%s: %s: bad sizes (hidden_size %d, num_attention_heads %d, layers %d, "
                        "intermediate_size %d)", path, which, tf->C, tf->NH, tf->L, tf->hidden);
    return 0;
}

static const json *sub(const json *cfg, const char *key, const char *alt)
{
    const json *j = json_get(cfg, key);
    if (!j || j->type != JSON_OBJ) j = json_get(cfg, alt);
    return j && j->type == JSON_OBJ ? j : NULL;
}

static int count_blocks(const st_file *f, const char *fmt)
{
    char n[256];
    int L = 0;
    for (;; L++) {
        snprintf(n, sizeof n, fmt, L);
        if (!st_find(f, n)) return L;
    }
}

static int64_t dim_of(const st_file *f, const char *name, int ndim, int d, char *err)
{
    const st_tensor *t = st_find(f, name);
    if (!t) return vl_error(err, "%s: missing tensor '%s'", f->path, name);
    if (t->ndim != ndim)
        return vl_error(err, "%s: tensor '%s' has %d dimensions, expected %d", f->path, name, t->ndim, ndim);
    return t->shape[d];
}

static uint64_t hash_bytes(uint64_t h, const void *data, size_t n)
{
    /* four independent multiply-xor lanes: a content identity, not a MAC */
    const uint8_t *p = data;
    uint64_t l[4] = {h ^ 0x9e3779b97f4a7c15ull, h + 0xbf58476d1ce4e5b9ull, h ^ 0x94d049bb133111ebull, ~h};
    size_t i = 0;
    for (; i + 32 <= n; i += 32)
        for (int k = 0; k < 4; k++) {
            uint64_t w;
            memcpy(&w, p + i + 8 * k, 8);
            l[k] = (l[k] ^ w) * 0x100000001b3ull;
            l[k] ^= l[k] >> 29;
        }
    for (; i < n; i++) l[0] = (l[0] ^ p[i]) * 0x100000001b3ull;
    uint64_t r = n;
    for (int k = 0; k < 4; k++) {
        r = (r ^ l[k]) * 0xff51afd7ed558ccdull;
        r ^= r >> 33;
    }
    return r;
}

/* The identity hash of the whole weights file, chained over 64 MiB pieces
 * whose pages are dropped from memory once hashed (they come back one tensor
 * at a time while loading), so hashing never holds the file in memory. */
static uint64_t hash_weights(uint64_t h, const st_file *f)
{
    const size_t piece = (size_t)64 << 20;
    for (size_t off = 0; off < f->size; off += piece) {
        size_t n = f->size - off < piece ? f->size - off : piece;
        h = hash_bytes(h, (const uint8_t *)f->map + off, n);
        madvise((uint8_t *)f->map + off, n, MADV_DONTNEED);
    }
    return h;
}

/* Parameter blocks of the towers asked for; sizes must be set (from cfg, a
 * file name for messages). The weights file holds every parameter in at
 * least two bytes (F16/BF16), so sizes that need more parameters than that
 * cannot fit it: they are refused before anything is allocated. */
static int alloc_towers(clip_model *m, const st_file *f, const char *cfg, char *err)
{
    size_t need = 0;
    int vit = m->towers & CLIP_VISION && !m->timm;
    if (vit) need += clip_vision_nparams(&m->v);
    if (m->towers & CLIP_TEXT) need += clip_text_nparams(&m->t);
    if (need > f->size / 2)
        return vl_error(err, "%s: its sizes need %zu parameters, more than %s holds (%zu bytes)", cfg, need, f->path,
                        f->size);
    if (vit) {
        m->vblock = xmalloc_aligned(clip_vision_nparams(&m->v) * sizeof(float));
        clip_vision_layout(&m->v, m->vblock);
    }
    if (m->towers & CLIP_TEXT) {
        m->tblock = xmalloc_aligned(clip_text_nparams(&m->t) * sizeof(float));
        clip_text_layout(&m->t, m->tblock);
    }
    return 0;
}

static int load_hf(clip_model *m, const st_file *f, const json *cfg, const char *cpath, char *err)
{
    clip_vision *v = &m->v;
    clip_text *t = &m->t;
    const json *tc = sub(cfg, "text_config", "text_config_dict"), *vc = sub(cfg, "vision_config", "vision_config_dict");
    json empty = {.type = JSON_OBJ};
    if (!tc) tc = &empty;
    if (!vc) vc = &empty;
    if (hf_tower(tc, cpath, "text_config", &t->tf, 1, err) || hf_tower(vc, cpath, "vision_config", &v->tf, 0, err))
        return -1;
    v->S = (int)json_get_int(vc, "image_size", 224);
    v->P = (int)json_get_int(vc, "patch_size", 32);
    t->V = (int)json_get_int(tc, "vocab_size", 49408);
    t->ctx = (int)json_get_int(tc, "max_position_embeddings", 77);
    v->D = t->D = (int)json_get_int(cfg, "projection_dim", 512);
    if (v->P <= 0 || v->S < v->P || v->S > 8192 || t->V <= 0 || t->ctx <= 0 || v->D <= 0 || t->V > 1 << 24 ||
        t->ctx > 1 << 16 || v->D > 65536)
        return vl_error(err, "%s: bad sizes (image_size %d, patch_size %d, vocab_size %d, max_position_embeddings %d, "
                        "projection_dim %d)", cpath, v->S, v->P, t->V, t->ctx, v->D);
    if (alloc_towers(m, f, cpath, err) < 0) return -1;
    int64_t C = v->tf.C, P = v->P, g = v->S / v->P, T = g * g + 1, D = v->D;
    char pre[128];
    if (get(f, "logit_scale", &m->logit_scale, 0, NULL, err)) return -1;
    if (m->towers & CLIP_VISION) {
        if (get(f, "vision_model.embeddings.patch_embedding.weight", v->patch_w, 4, SHAPE(C, 3, P, P), err) ||
            GET1("vision_model.embeddings.class_embedding", v->cls, C) ||
            GET2("vision_model.embeddings.position_embedding.weight", v->pos, T, C) ||
            GET1("vision_model.pre_layrnorm.weight", v->ln_pre_w, C) ||
            GET1("vision_model.pre_layrnorm.bias", v->ln_pre_b, C) ||
            GET1("vision_model.post_layernorm.weight", v->ln_post_w, C) ||
            GET1("vision_model.post_layernorm.bias", v->ln_post_b, C) || GET2("visual_projection.weight", v->proj, D, C))
            return -1;
        for (int l = 0; l < v->tf.L; l++) {
            snprintf(pre, sizeof pre, "vision_model.encoder.layers.%d.", l);
            if (get_block(f, 1, pre, &v->tf, &v->blocks[l], err)) return -1;
        }
    }
    if (!(m->towers & CLIP_TEXT)) return check_names(m, f, 1, cpath, err);
    C = t->tf.C;
    if (GET2("text_model.embeddings.token_embedding.weight", t->tok, t->V, C) ||
        GET2("text_model.embeddings.position_embedding.weight", t->pos, t->ctx, C) ||
        GET1("text_model.final_layer_norm.weight", t->ln_w, C) || GET1("text_model.final_layer_norm.bias", t->ln_b, C) ||
        GET2("text_projection.weight", t->proj, D, C))
        return -1;
    for (int l = 0; l < t->tf.L; l++) {
        snprintf(pre, sizeof pre, "text_model.encoder.layers.%d.", l);
        if (get_block(f, 1, pre, &t->tf, &t->blocks[l], err)) return -1;
    }
    return check_names(m, f, 1, cpath, err);
}

/* The text tower's sizes from the OpenAI / OpenCLIP shapes; heads from the
 * file's metadata text_heads, else OpenCLIP's text_cfg.heads (tc), else
 * width/64. The sizes tc states (width, layers, context_length,
 * vocab_size) must be those of the tensors. D: the image tower's output. */
static int openai_text_sizes(clip_model *m, const st_file *f, const json *tc, int act, int64_t D, char *err)
{
    clip_text *t = &m->t;
    int64_t TC, TV, TX, TD, TH;
    if ((TC = dim_of(f, "ln_final.weight", 1, 0, err)) < 0 || (TV = dim_of(f, "token_embedding.weight", 2, 0, err)) < 0 ||
        (TX = dim_of(f, "positional_embedding", 2, 0, err)) < 0 || (TD = dim_of(f, "text_projection", 2, 1, err)) < 0 ||
        (TH = dim_of(f, "transformer.resblocks.0.mlp.c_fc.weight", 2, 0, err)) < 0)
        return -1;
    const char *th = st_meta(f, "text_heads");
    int tnh = tc ? (int)json_get_int(tc, "heads", 8) : (int)(TC / 64);
    t->tf = (tf_config){.C = (int)TC, .NH = th ? atoi(th) : tnh, .L = count_blocks(f, "transformer.resblocks.%d.ln_1.weight"),
                        .hidden = (int)TH, .act = act, .causal = 1, .eps = 1e-5f};
    t->V = (int)TV, t->ctx = (int)TX, t->D = (int)TD;
    if (tc) {
        static const char *const key[] = {"width", "layers", "context_length", "vocab_size"};
        const int64_t have[] = {TC, t->tf.L, TX, TV};
        for (int i = 0; i < 4; i++) {
            const json *j = json_get(tc, key[i]);
            if (j && (j->type != JSON_NUM || !j->is_int || j->i != have[i]))
                return vl_error(err, "%s: open_clip_config.json's text_cfg.%s is not the tensors' %lld", f->path,
                                key[i], (long long)have[i]);
        }
    }
    if (TD != D) return vl_error(err, "%s: text_projection gives dimension %lld, the image tower %lld", f->path, (long long)TD, (long long)D);
    if (t->tf.NH <= 0 || TC % t->tf.NH)
        return vl_error(err, "%s: text width %lld does not split into %d heads", f->path, (long long)TC, t->tf.NH);
    return 0;
}

static int openai_text_get(clip_model *m, const st_file *f, char *err)
{
    clip_text *t = &m->t;
    int64_t C = t->tf.C;
    char pre[128];
    if (GET2("token_embedding.weight", t->tok, t->V, C) || GET2("positional_embedding", t->pos, t->ctx, C) ||
        GET1("ln_final.weight", t->ln_w, C) || GET1("ln_final.bias", t->ln_b, C) ||
        get_t(f, "text_projection", t->proj, C, t->D, err))
        return -1;
    for (int l = 0; l < t->tf.L; l++) {
        snprintf(pre, sizeof pre, "transformer.resblocks.%d.", l);
        if (get_block(f, 0, pre, &t->tf, &t->blocks[l], err)) return -1;
    }
    return 0;
}

/* An OpenCLIP model whose image tower is a timm model (vision_cfg names
 * timm_model_name): models/openclip_timm, timm's mobilenetv2_100 trunk,
 * average pooling and a linear projection (the module refuses any other
 * trunk, pool or projection, naming it). Only the text tower, when that
 * alone is asked for, is read whatever the trunk. */
static int load_openclip_timm(clip_model *m, const st_file *f, const json *vc, const json *tc, int act, char *err)
{
    const json *is = json_get(vc, "image_size");
    if (is && (is->type != JSON_NUM || !is->is_int || is->i < 32 || is->i > 8192))
        return vl_error(err, "%s: open_clip_config.json: vision_cfg.image_size must be one number from 32 to 8192",
                        f->path);
    int64_t D = dim_of(f, "visual.head.proj.weight", 2, 0, err);
    if (D < 0) return -1;
    m->timm = 1;
    m->v.S = is ? (int)is->i : 224;
    m->v.D = (int)D;
    if (openai_text_sizes(m, f, tc, act, D, err) < 0) return -1;
    if (m->towers & CLIP_VISION && timm_open(m, f, vc, err) < 0) return -1;
    if (alloc_towers(m, f, f->path, err) < 0) return -1;
    if (get(f, "logit_scale", &m->logit_scale, 0, NULL, err)) return -1;
    if (m->towers & CLIP_TEXT && openai_text_get(m, f, err) < 0) return -1;
    return check_names(m, f, 0, "the OpenCLIP names", err);
}

/* OpenAI / OpenCLIP names; sizes from the shapes. Heads are width/64 (both
 * projects' convention) and the activation QuickGELU (OpenAI's), unless an
 * OpenCLIP model_cfg (oc, from open_clip_config.json) says otherwise
 * (vision_cfg.head_width, text_cfg.heads, quick_gelu: OpenCLIP's own
 * default is GELU), or the file's metadata gives vision_heads, text_heads
 * or hidden_act ("gelu" / "quick_gelu"), which take precedence. An image
 * tower from timm (vision_cfg.timm_model_name) is load_openclip_timm's. */
static int load_openai(clip_model *m, const st_file *f, const json *oc, char *err)
{
    clip_vision *v = &m->v;
    const char *act = st_meta(f, "hidden_act");
    int a = TF_QUICKGELU;
    const json *vc = NULL, *tc = NULL;
    if (oc) {
        const json *qg = json_get(oc, "quick_gelu");
        vc = json_get(oc, "vision_cfg"), tc = json_get(oc, "text_cfg");
        if (vc && vc->type != JSON_OBJ) vc = NULL;
        if (tc && tc->type != JSON_OBJ) tc = NULL;
        a = qg && qg->type == JSON_BOOL && qg->b ? TF_QUICKGELU : TF_GELU;
        /* OpenCLIP options that change the computation without tensors of their own */
        const char *vp = vc ? json_get_str(vc, "pool_type", "tok") : "tok";
        const char *tp = tc ? json_get_str(tc, "pool_type", "argmax") : "argmax";
        const json *ncm = tc ? json_get(tc, "no_causal_mask") : NULL;
        if (strcmp(vp, "tok") != 0 || strcmp(tp, "argmax") != 0 || (ncm && ncm->type == JSON_BOOL && ncm->b) ||
            (vc && json_get(vc, "norm_kwargs")) || (tc && json_get(tc, "norm_kwargs")))
            return vl_error(err, "%s: open_clip_config.json asks for a variant not computed here (vision pool_type "
                            "'%s', text pool_type '%s', no_causal_mask or norm_kwargs)", f->path, vp, tp);
    }
    if (act && parse_act(act, &a) < 0) return vl_error(err, "%s: metadata hidden_act '%s' is not supported", f->path, act);
    if (vc && json_get(vc, "timm_model_name")) return load_openclip_timm(m, f, vc, tc, a, err);
    int64_t C, P, T, D, H;
    if ((C = dim_of(f, "visual.conv1.weight", 4, 0, err)) < 0 || (P = dim_of(f, "visual.conv1.weight", 4, 2, err)) < 0 ||
        (T = dim_of(f, "visual.positional_embedding", 2, 0, err)) < 0 ||
        (D = dim_of(f, "visual.proj", 2, 1, err)) < 0 ||
        (H = dim_of(f, "visual.transformer.resblocks.0.mlp.c_fc.weight", 2, 0, err)) < 0)
        return -1;
    int64_t g = (int64_t)llround(sqrt((double)(T - 1)));
    if (T < 2 || g * g + 1 != T || C <= 0 || P <= 0)
        return vl_error(err, "%s: tensor 'visual.positional_embedding' has %lld positions, not a square grid + 1",
                        f->path, (long long)T);
    int vnh = (int)(C / 64);
    int64_t hw = vc ? json_get_int(vc, "head_width", 64) : 64;
    if (hw > 0) vnh = (int)(C / hw);
    const char *vh = st_meta(f, "vision_heads");
    v->tf = (tf_config){.C = (int)C, .NH = vh ? atoi(vh) : vnh, .L = count_blocks(f, "visual.transformer.resblocks.%d.ln_1.weight"),
                        .hidden = (int)H, .act = a, .causal = 0, .eps = 1e-5f};
    v->S = (int)(g * P), v->P = (int)P, v->D = (int)D;
    if (v->tf.NH <= 0 || C % v->tf.NH)
        return vl_error(err, "%s: vision width %lld does not split into %d heads", f->path, (long long)C, v->tf.NH);
    if (openai_text_sizes(m, f, tc, a, D, err) < 0) return -1;
    if (alloc_towers(m, f, f->path, err) < 0) return -1;
    char pre[128];
    if (get(f, "logit_scale", &m->logit_scale, 0, NULL, err)) return -1;
    if (m->towers & CLIP_VISION) {
        if (get(f, "visual.conv1.weight", v->patch_w, 4, SHAPE(C, 3, P, P), err) ||
            GET1("visual.class_embedding", v->cls, C) || GET2("visual.positional_embedding", v->pos, T, C) ||
            GET1("visual.ln_pre.weight", v->ln_pre_w, C) || GET1("visual.ln_pre.bias", v->ln_pre_b, C) ||
            GET1("visual.ln_post.weight", v->ln_post_w, C) || GET1("visual.ln_post.bias", v->ln_post_b, C) ||
            get_t(f, "visual.proj", v->proj, C, D, err))
            return -1;
        for (int l = 0; l < v->tf.L; l++) {
            snprintf(pre, sizeof pre, "visual.transformer.resblocks.%d.", l);
            if (get_block(f, 0, pre, &v->tf, &v->blocks[l], err)) return -1;
        }
    }
    if (m->towers & CLIP_TEXT && openai_text_get(m, f, err) < 0) return -1;
    return check_names(m, f, 0, "the OpenAI names", err);
}

/* OpenCLIP's preprocess_cfg: mean and std, three numbers each, when given. */
static int read_preprocess(clip_model *m, const json *cfg, const char *cpath, char *err)
{
    const json *pc = json_get(cfg, "preprocess_cfg");
    if (!pc || pc->type != JSON_OBJ) return 0;
    const json *mj = json_get(pc, "mean"), *sj = json_get(pc, "std");
    if (!mj && !sj) return 0;
    for (int k = 0; k < 2; k++) {
        const json *j = k ? sj : mj;
        float *dst = k ? m->std : m->mean;
        int ok = j && j->type == JSON_ARR && j->n == 3;
        for (size_t i = 0; ok && i < 3; i++) {
            ok = j->items[i].type == JSON_NUM;
            if (ok) dst[i] = (float)j->items[i].num;
        }
        if (!ok) return vl_error(err, "%s: preprocess_cfg.%s must be three numbers", cpath, k ? "std" : "mean");
    }
    /* checked as float: a std of 1e-50 is a number above 0 but a float 0 */
    char b[96];
    const char *bad = vl_norm_fault(m->mean, m->std, b, sizeof b);
    if (bad) return vl_error(err, "%s: preprocess_cfg: %s", cpath, bad);
    m->has_norm = 1;
    return 0;
}

static char *base_name(const char *path)
{
    size_t n = strlen(path);
    while (n > 1 && path[n - 1] == '/') n--;
    size_t s = n;
    while (s > 0 && path[s - 1] != '/') s--;
    char *b = xstrndup(path + s, n - s);
    size_t bl = strlen(b);
    if (bl > 12 && strcmp(b + bl - 12, ".safetensors") == 0) b[bl - 12] = 0;
    return b;
}

int clip_load(clip_model **out, const char *path, char *err) { return clip_load_towers(out, path, CLIP_BOTH, err); }

int clip_load_towers(clip_model **out, const char *path, int towers, char *err)
{
    struct stat sb;
    if (!(towers & CLIP_BOTH)) return vl_error(err, "%s: no tower asked for", path);
    if (stat(path, &sb) < 0) return vl_error(err, "%s: cannot open model: %s", path, strerror(errno));
    clip_model *m = xcalloc(1, sizeof *m);
    m->towers = towers & CLIP_BOTH;
    st_file f;
    int opened = 0, rc = -1;
    json *cfg = NULL;
    char *ctext = NULL, *cpath = NULL, *wpath = NULL;
    size_t clen = 0;
    uint64_t h = 0;
    if (S_ISDIR(sb.st_mode)) {
        size_t n = strlen(path) + 40;
        cpath = xmalloc(n), wpath = xmalloc(n);
        snprintf(cpath, n, "%s/config.json", path);
        snprintf(wpath, n, "%s/model.safetensors", path);
        int hf = access(wpath, F_OK) == 0;
        if (!hf) {
            /* an OpenCLIP hub directory: OpenAI names, open_clip_config.json */
            snprintf(cpath, n, "%s/open_clip_config.json", path);
            snprintf(wpath, n, "%s/open_clip_model.safetensors", path);
            if (access(wpath, F_OK) != 0) {
                vl_error(err, "%s: no model.safetensors (with config.json) or open_clip_model.safetensors", path);
                goto done;
            }
        }
        if (hf || access(cpath, F_OK) == 0) {
            if (!(ctext = vl_read_file(cpath, 1 << 24, &clen, err))) goto done;
            if (!(cfg = json_parse(ctext, clen, err))) {
                char e2[VL_ERRLEN];
                snprintf(e2, sizeof e2, "%s", err);
                vl_error(err, "%s: %s", cpath, e2);
                goto done;
            }
            if (cfg->type != JSON_OBJ) {
                vl_error(err, "%s: not a JSON object", cpath);
                goto done;
            }
        }
        if (cfg && !hf && read_preprocess(m, cfg, cpath, err) < 0) goto done;
        if (st_open(&f, wpath, err) < 0) goto done;
        opened = 1;
        h = hash_weights(hash_bytes(0, ctext ? ctext : "", clen), &f);
        if (hf) {
            if (load_hf(m, &f, cfg, cpath, err) < 0) goto done;
        } else {
            const json *mc = cfg ? json_get(cfg, "model_cfg") : NULL;
            if (load_openai(m, &f, mc && mc->type == JSON_OBJ ? mc : NULL, err) < 0) goto done;
        }
    } else {
        if (st_open(&f, path, err) < 0) goto done;
        opened = 1;
        h = hash_weights(0, &f);
        if (st_find(&f, "visual.conv1.weight"))
            rc = load_openai(m, &f, NULL, err);
        else if (st_find(&f, "visual.head.proj.weight"))
            rc = vl_error(err, "%s: an OpenCLIP model with a timm image tower needs its directory (with "
                          "open_clip_config.json)", path);
        else if (st_find(&f, "vision_model.embeddings.patch_embedding.weight"))
            rc = vl_error(err, "%s: transformers' CLIPModel names need the model directory (with config.json)", path);
        else
            rc = vl_error(err, "%s: not a CLIP model (no 'visual.conv1.weight' or 'vision_model.*' tensors)", path);
        if (rc < 0) goto done;
        rc = -1;
    }
    {
        char *b = base_name(path);
        size_t n = strlen(b) + 20;
        m->id = xmalloc(n);
        snprintf(m->id, n, "%s-%016llx", b, (unsigned long long)h);
        free(b);
    }
    rc = 0;
done:
    if (opened) st_close(&f);
    json_free(cfg);
    free(ctext), free(cpath), free(wpath);
    if (rc < 0) {
        clip_free(m);
        return -1;
    }
    *out = m;
    return 0;
}

void clip_free(clip_model *m)
{
    if (!m) return;
    timm_free(m);
    free(m->id), free(m->vblock), free(m->tblock), free(m->v.blocks), free(m->t.blocks);
    free(m);
}

int clip_image_size(const clip_model *m) { return m->v.S; }
int clip_normalisation(const clip_model *m, float mean[3], float std[3])
{
    for (int c = 0; c < 3; c++) {
        mean[c] = m->has_norm ? m->mean[c] : CLIP_MEAN[c];
        std[c] = m->has_norm ? m->std[c] : CLIP_STD[c];
    }
    return m->has_norm;
}
int clip_image_tower_is_vit(const clip_model *m) { return !m->timm; }
int clip_embed_dim(const clip_model *m) { return m->v.D; }
int clip_context_length(const clip_model *m) { return m->t.ctx; }
int clip_vocab_size(const clip_model *m) { return m->t.V; }
const char *clip_model_id(const clip_model *m) { return m->id; }
float clip_logit_scale(const clip_model *m) { return expf(m->logit_scale); }
const clip_vision *clip_vision_tower(const clip_model *m) { return &m->v; }
const clip_text *clip_text_tower(const clip_model *m) { return &m->t; }

/* ---- encoders ---- */

static void l2_normalise(float *x, int B, int D)
{
    for (int b = 0; b < B; b++) {
        float *r = x + (size_t)b * D;
        double s = 0;
        for (int i = 0; i < D; i++) s += (double)r[i] * r[i];
        float inv = s > 0 ? (float)(1.0 / sqrt(s)) : 0;
        for (int i = 0; i < D; i++) r[i] *= inv;
    }
}

int clip_encode_text(clip_model *m, const int32_t *tokens, int B, int T, float *out, char *err)
{
    const clip_text *t = &m->t;
    int C = t->tf.C;
    if (!(m->towers & CLIP_TEXT)) return vl_error(err, "%s: the text tower was not loaded", m->id);
    if (T <= 0 || T > t->ctx) return vl_error(err, "%d tokens per sequence, the model takes 1 to %d", T, t->ctx);
    for (size_t i = 0; i < (size_t)B * T; i++)
        if (tokens[i] < 0 || tokens[i] >= t->V)
            return vl_error(err, "sequence %zu: token id %d outside the vocabulary (%d)", i / T, tokens[i], t->V);
    /* Attention is causal, so the positions after the last end-of-text
     * token of the batch cannot change any pooled output: they are not
     * computed. */
    int *eot = xmalloc((size_t)(B > 0 ? B : 1) * sizeof(int)), Te = 1;
    for (int b = 0; b < B; b++) {
        const int32_t *s = tokens + (size_t)b * T;
        int at = 0;
        for (int i = 1; i < T; i++)
            if (s[i] > s[at]) at = i;
        eot[b] = at;
        if (at + 1 > Te) Te = at + 1;
    }
    float *x = xmalloc_aligned((size_t)B * Te * C * sizeof(float));
    for (int b = 0; b < B; b++)
        for (int i = 0; i < Te; i++) {
            float *r = x + ((size_t)b * Te + i) * C;
            const float *e = t->tok + (size_t)tokens[(size_t)b * T + i] * C, *p = t->pos + (size_t)i * C;
            for (int c = 0; c < C; c++) r[c] = e[c] + p[c];
        }
    tf_forward(&t->tf, t->blocks, x, B, Te, NULL);
    float *pooled = xmalloc_aligned((size_t)B * C * sizeof(float));
    for (int b = 0; b < B; b++) memcpy(pooled + (size_t)b * C, x + ((size_t)b * Te + eot[b]) * C, C * sizeof(float));
    free(eot);
    layernorm_forward(pooled, NULL, NULL, pooled, t->ln_w, t->ln_b, B, C, t->tf.eps);
    linear_forward(out, pooled, t->proj, NULL, B, C, t->D);
    l2_normalise(out, B, t->D);
    free(x), free(pooled);
    return 0;
}

/* x (B,T,C) = ln_pre([cls; patches] + pos); emb, mean, rstd: where to keep
 * the embeddings and ln_pre's statistics for backward, or NULL */
static void vision_embed(const clip_vision *v, float *x, const float *pix, int B, float *emb, float *mean,
                         float *rstd)
{
    int C = v->tf.C, g = v->S / v->P, NP = g * g, T = NP + 1;
    float *pe = xmalloc_aligned((size_t)B * NP * C * sizeof(float));
    patch_forward(pe, pix, v->patch_w, NULL, B, 3, v->S, v->S, C, v->P);
    for (int b = 0; b < B; b++)
        for (int i = 0; i < T; i++) {
            float *r = x + ((size_t)b * T + i) * C;
            const float *e = i ? pe + ((size_t)b * NP + i - 1) * C : v->cls, *p = v->pos + (size_t)i * C;
            for (int c = 0; c < C; c++) r[c] = e[c] + p[c];
        }
    free(pe);
    if (emb) memcpy(emb, x, (size_t)B * T * C * sizeof(float));
    layernorm_forward(x, mean, rstd, x, v->ln_pre_w, v->ln_pre_b, B * T, C, v->tf.eps);
}

int clip_encode_image(clip_model *m, const float *pix, int B, float *out, char *err)
{
    if (!(m->towers & CLIP_VISION)) return vl_error(err, "%s: the image tower was not loaded", m->id);
    if (m->timm) {
        if (openclip_timm_forward(m->img, out, pix, B, m->v.S, m->v.S, 0, err) != 0) return -1;
    } else {
        clip_vision_forward(&m->v, pix, B, out, NULL);
    }
    l2_normalise(out, B, m->v.D);
    return 0;
}

/* ---- training the image tower ---- */

struct clip_vision_acts {
    int B;
    size_t bytes;
    tf_acts *tf;
    float *emb;                   /* (B,T,C) the embeddings before ln_pre */
    float *mean_pre, *rstd_pre;   /* (B*T) */
    float *cls_out;               /* (B,C) token 0 after the stack */
    float *mean_post, *rstd_post; /* (B) */
    float *pooled;                /* (B,C) ln_post output */
};

float *clip_vision_params(clip_model *m, size_t *n)
{
    if (m->timm) return *n = 0, NULL;
    *n = clip_vision_nparams(&m->v);
    return m->vblock;
}

void clip_vision_like(clip_vision *dst, const clip_vision *src, float *base)
{
    *dst = (clip_vision){.tf = src->tf, .S = src->S, .P = src->P, .D = src->D};
    clip_vision_layout(dst, base);
}

clip_vision_acts *clip_vision_acts_new(const clip_vision *v, int B)
{
    int C = v->tf.C, g = v->S / v->P, T = g * g + 1;
    clip_vision_acts *a = xcalloc(1, sizeof *a);
    a->B = B;
    a->tf = tf_acts_new(&v->tf, B, T);
    size_t bt = (size_t)B * T;
    a->emb = xmalloc_aligned(bt * C * sizeof(float));
    a->mean_pre = xmalloc_aligned(bt * sizeof(float));
    a->rstd_pre = xmalloc_aligned(bt * sizeof(float));
    a->cls_out = xmalloc_aligned((size_t)B * C * sizeof(float));
    a->mean_post = xmalloc_aligned((size_t)B * sizeof(float));
    a->rstd_post = xmalloc_aligned((size_t)B * sizeof(float));
    a->pooled = xmalloc_aligned((size_t)B * C * sizeof(float));
    a->bytes = tf_acts_bytes(a->tf) + (bt * C + 2 * bt + 2 * (size_t)B * C + 2 * (size_t)B) * sizeof(float);
    return a;
}

void clip_vision_acts_free(clip_vision_acts *a)
{
    if (!a) return;
    tf_acts_free(a->tf);
    free(a->emb), free(a->mean_pre), free(a->rstd_pre), free(a->cls_out), free(a->mean_post), free(a->rstd_post);
    free(a->pooled);
    free(a);
}

size_t clip_vision_acts_bytes(const clip_vision_acts *a) { return a->bytes; }

void clip_vision_forward(const clip_vision *v, const float *pix, int B, float *out, clip_vision_acts *save)
{
    int C = v->tf.C, g = v->S / v->P, T = g * g + 1;
    float *x = xmalloc_aligned((size_t)B * T * C * sizeof(float));
    vision_embed(v, x, pix, B, save ? save->emb : NULL, save ? save->mean_pre : NULL, save ? save->rstd_pre : NULL);
    tf_forward(&v->tf, v->blocks, x, B, T, save ? save->tf : NULL);
    float *pooled = save ? save->pooled : xmalloc_aligned((size_t)B * C * sizeof(float));
    for (int b = 0; b < B; b++) memcpy(pooled + (size_t)b * C, x + (size_t)b * T * C, C * sizeof(float));
    if (save) memcpy(save->cls_out, pooled, (size_t)B * C * sizeof(float));
    layernorm_forward(pooled, save ? save->mean_post : NULL, save ? save->rstd_post : NULL, pooled, v->ln_post_w,
                      v->ln_post_b, B, C, v->tf.eps);
    linear_forward(out, pooled, v->proj, NULL, B, C, v->D);
    free(x);
    if (!save) free(pooled);
}

void clip_vision_backward(const clip_vision *v, clip_vision *g, const float *dout, const float *pix,
                          const clip_vision_acts *a, int B)
{
    int C = v->tf.C, gr = v->S / v->P, NP = gr * gr, T = NP + 1;
    size_t bt = (size_t)B * T;
    float *dpool = xcalloc((size_t)B * C, sizeof(float));
    linear_backward(dpool, g->proj, NULL, dout, a->pooled, v->proj, B, C, v->D);
    float *dx = xcalloc(bt * C, sizeof(float));
    float *dcls = xcalloc((size_t)B * C, sizeof(float));
    layernorm_backward(dcls, g->ln_post_w, g->ln_post_b, dpool, a->cls_out, v->ln_post_w, a->mean_post, a->rstd_post,
                       B, C);
    for (int b = 0; b < B; b++) memcpy(dx + (size_t)b * T * C, dcls + (size_t)b * C, C * sizeof(float));
    /* the stack's input gradient is wanted only for the embeddings and
     * ln_pre; without them the pass stops at the lowest block that trains */
    int need_in = g->cls || g->pos || g->patch_w || g->ln_pre_w || g->ln_pre_b;
    tf_backward(&v->tf, v->blocks, g->blocks, dx, a->tf, B, T, need_in ? 0 : tf_lowest_trainable(&v->tf, g->blocks));
    if (!need_in) {
        free(dpool), free(dx), free(dcls);
        return;
    }
    float *demb = xcalloc(bt * C, sizeof(float));
    layernorm_backward(demb, g->ln_pre_w, g->ln_pre_b, dx, a->emb, v->ln_pre_w, a->mean_pre, a->rstd_pre, (int)bt, C);
    float *dpe = xmalloc_aligned((size_t)B * NP * C * sizeof(float));
    for (int b = 0; b < B; b++) {
        const float *r = demb + (size_t)b * T * C;
        if (g->cls)
            for (int c = 0; c < C; c++) g->cls[c] += r[c];
        if (g->pos)
            for (size_t i = 0; i < (size_t)T * C; i++) g->pos[i] += r[i];
        memcpy(dpe + (size_t)b * NP * C, r + C, (size_t)NP * C * sizeof(float));
    }
    if (g->patch_w) patch_backward(NULL, g->patch_w, NULL, dpe, pix, v->patch_w, B, 3, v->S, v->S, C, v->P);
    free(dpool), free(dx), free(dcls), free(demb), free(dpe);
}
