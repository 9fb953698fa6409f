/* student: the face over every student backbone; see student.h.
 *
 * The convolutional students (the ResNets, MobileNetV2 and the trunk of
 * openclip_timm) run through their convnet engine alike; openclip_timm's
 * projection lives in the same store (registered as the network's head
 * and unfrozen) and runs here, after the pool. The ViTs and the CLIP tower
 * have their own calls. */
#include "student.h"

#include "json.h"
#include "models/clip.h"
#include "models/mobilenet.h"
#include "models/resnet.h"
#include "models/vit.h"
#include "nn/linear.h"
#include "st.h"
#include "util.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

const char *const STUDENT_ARCHS[] = {"resnet18", "resnet34",    "resnet50",      "mobilenet_v2", "vit_s16",
                                     "vit_b16",  "clip_vision", "openclip_timm", NULL};

/* openclip_timm: the names of its image tower and the trunk it supports */
#define OC_VISUAL "visual."
#define OC_TRUNK "visual.trunk."
#define OC_PROJ "visual.head.proj"
#define OC_TIMM "mobilenetv2_100"
#define POOL 1280 /* mobilenetv2_100's pooled width */

struct student {
    const char *arch;
    int dim;
    resnet *rn;
    mobilenet *mb; /* mobilenet_v2 and openclip_timm's trunk */
    convnet *cn;   /* the engine of rn or mb */
    vit *vt;
    clip_model *clip;
    params cp; /* clip_vision: the tower's block wrapped */
    clip_vision cg;
    float *cg_base; /* the gradient block cg is laid over */
    clip_vision_acts *acts;
    int acts_B;
    /* openclip_timm: the projection's tensors in cn's store, the pooled
     * trunk features and their gradient */
    int pw, pb;
    float *pool, *dpool;
    size_t pool_cap;
    /* the last forward */
    const float *x;
    int B;
    int has_norm;
    float mean[3], std[3];
};

static const char *arch_name(const char *a)
{
    for (int i = 0; STUDENT_ARCHS[i]; i++)
        if (strcmp(a, STUDENT_ARCHS[i]) == 0) return STUDENT_ARCHS[i];
    return NULL;
}

/* the tensors of f whose names start with prefix: a view sharing f's
 * mapping (f is sorted by name, so they are one run); never st_close it */
static st_file subset(const st_file *f, const char *prefix)
{
    st_file v = *f;
    size_t n = strlen(prefix);
    int i = 0, j;
    while (i < f->n && strncmp(f->t[i].name, prefix, n) < 0) i++;
    for (j = i; j < f->n && strncmp(f->t[j].name, prefix, n) == 0; j++) {
    }
    v.t = f->t + i;
    v.n = j - i;
    return v;
}

static int parse_triple(const char *s, float *v)
{
    char *end;
    const char *p = s;
    for (int i = 0; i < 3; i++) {
        errno = 0;
        v[i] = strtof(p, &end);
        if (end == p || errno || (i < 2 && *end != ',') || (i == 2 && *end)) return -1;
        p = end + 1;
    }
    return 0;
}

static int json_triple(const json *a, float *v)
{
    if (!a || a->type != JSON_ARR || a->n != 3) return -1;
    for (int i = 0; i < 3; i++) {
        if (a->items[i].type != JSON_NUM) return -1;
        v[i] = (float)a->items[i].num;
    }
    return 0;
}

/* the normalisation of f's metadata (vl2v.mean/std, else input_mean/std):
 * 1 found, 0 none, -1 with err when malformed */
static int meta_norm(const st_file *f, float *mean, float *std, char *err)
{
    static const char *const KEYS[2][2] = {{"vl2v.mean", "vl2v.std"}, {"input_mean", "input_std"}};
    for (int k = 0; k < 2; k++) {
        const char *m = st_meta(f, KEYS[k][0]), *s = st_meta(f, KEYS[k][1]);
        if (!m && !s) continue;
        if (!m || !s)
            return vl_error(err, "%s: metadata '%s' without '%s'", f->path, m ? KEYS[k][0] : KEYS[k][1],
                            m ? KEYS[k][1] : KEYS[k][0]);
        if (parse_triple(m, mean) != 0)
            return vl_error(err, "%s: metadata '%s' is not R,G,B: '%s'", f->path, KEYS[k][0], m);
        if (parse_triple(s, std) != 0)
            return vl_error(err, "%s: metadata '%s' is not R,G,B: '%s'", f->path, KEYS[k][1], s);
        char b[96];
        const char *bad = student_norm_fault(mean, std, b, sizeof b);
        if (bad) return vl_error(err, "%s: metadata '%s' and '%s': %s", f->path, KEYS[k][0], KEYS[k][1], bad);
        return 1;
    }
    return 0;
}

/* The weights file of path (a file, or a directory's
 * open_clip_model.safetensors or model.safetensors) and the
 * open_clip_config.json beside it, parsed (NULL when there is none). */
static int resolve(const char *path, char **file, json **oc, char *err)
{
    struct stat sb;
    *file = NULL, *oc = NULL;
    if (stat(path, &sb) < 0) return vl_error(err, "%s: cannot open: %s", path, strerror(errno));
    size_t n = strlen(path) + 40;
    char *dir = xmalloc(n), *cfg = xmalloc(n);
    if (S_ISDIR(sb.st_mode)) {
        snprintf(dir, n, "%s", path);
        *file = xmalloc(n);
        snprintf(*file, n, "%s/open_clip_model.safetensors", path);
        if (access(*file, F_OK) != 0) snprintf(*file, n, "%s/model.safetensors", path);
        if (access(*file, F_OK) != 0) {
            free(dir), free(cfg), free(*file), *file = NULL;
            return vl_error(err, "%s: no open_clip_model.safetensors or model.safetensors", path);
        }
    } else {
        *file = xstrdup(path);
        const char *sl = strrchr(path, '/');
        snprintf(dir, n, "%.*s", sl ? (int)(sl - path) : 1, sl ? path : ".");
    }
    snprintf(cfg, n, "%s/open_clip_config.json", dir);
    int rc = 0;
    if (access(cfg, F_OK) == 0) {
        size_t len;
        char *text = vl_read_file(cfg, 1 << 24, &len, err);
        char e2[VL_ERRLEN];
        if (!text)
            rc = -1;
        else if (!(*oc = json_parse(text, len, e2)))
            rc = vl_error(err, "%s: %s", cfg, e2);
        else if ((*oc)->type != JSON_OBJ)
            rc = vl_error(err, "%s: not a JSON object", cfg);
        free(text);
    }
    free(dir), free(cfg);
    if (rc < 0) {
        json_free(*oc), *oc = NULL;
        free(*file), *file = NULL;
    }
    return rc;
}

static int has_prefix(const st_file *f, const char *prefix) { return subset(f, prefix).n > 0; }

/* openclip_timm: the trunk is timm mobilenetv2_100, pooled by average and
 * projected linearly; 0, or -1 with err naming what is not */
static int check_openclip_timm(const st_file *f, const json *oc, char *err)
{
    const json *vc = oc ? json_get(json_get(oc, "model_cfg"), "vision_cfg") : NULL;
    if (vc && vc->type == JSON_OBJ) {
        const char *name = json_get_str(vc, "timm_model_name", NULL), *pool = json_get_str(vc, "timm_pool", "avg"),
                   *proj = json_get_str(vc, "timm_proj", "linear");
        if (name && strcmp(name, OC_TIMM) != 0)
            return vl_error(err, "%s: open_clip_config.json: timm trunk '%s' is not supported (only %s)", f->path,
                            name, OC_TIMM);
        if (strcmp(pool, "avg") != 0 || strcmp(proj, "linear") != 0)
            return vl_error(err, "%s: open_clip_config.json: timm_pool '%s', timm_proj '%s': only 'avg' and 'linear' "
                                 "are supported",
                            f->path, pool, proj);
    }
    char e2[VL_ERRLEN];
    int ncls;
    if (mobilenet_detect_named(f, MOBILENET_TIMM, OC_TRUNK, &ncls, e2) != 0)
        return vl_error(err, "unsupported timm trunk (only %s): %s", OC_TIMM, e2);
    const st_tensor *pw = st_find(f, OC_PROJ ".weight");
    if (!pw || pw->ndim != 2 || pw->shape[1] != POOL || pw->shape[0] < 1)
        return vl_error(err, "%s: no tensor '%s.weight' [D, %d]: not an OpenCLIP timm image tower", f->path, OC_PROJ,
                        POOL);
    return 0;
}

/* the architecture of f by its names and shapes */
static int detect(const st_file *f, const json *oc, const char **arch, char *err)
{
    if (has_prefix(f, OC_TRUNK) || st_find(f, OC_PROJ ".weight")) {
        if (check_openclip_timm(f, oc, err) != 0) return -1;
        *arch = "openclip_timm";
        return 0;
    }
    if (st_find(f, "visual.conv1.weight") || st_find(f, "vision_model.embeddings.patch_embedding.weight")) {
        *arch = "clip_vision";
        return 0;
    }
    char e1[VL_ERRLEN], e2[VL_ERRLEN], e3[VL_ERRLEN];
    int depth, ncls, kind;
    if (resnet_detect(f, &depth, &ncls, e1) == 0)
        *arch = depth == 18 ? "resnet18" : depth == 34 ? "resnet34" : "resnet50";
    else if (vit_detect(f, &kind, &ncls, e2) == 0)
        *arch = kind == VIT_B16 ? "vit_b16" : "vit_s16";
    else if (mobilenet_detect(f, &ncls, e3) == 0)
        *arch = "mobilenet_v2";
    else
        return vl_error(err, "%s; and %s; and %s; and no '%s*' (OpenCLIP timm) or 'visual.conv1.weight' / "
                             "'vision_model.*' (CLIP) tensors",
                        e1, e2, e3, OC_TRUNK);
    return 0;
}

static student *build(const char *arch, int ncls, int img, int proj_rows, int proj_bias)
{
    student *s = xcalloc(1, sizeof *s);
    s->arch = arch;
    s->pw = s->pb = -1;
    if (strncmp(arch, "resnet", 6) == 0) {
        s->rn = resnet_new(atoi(arch + 6), ncls);
        s->cn = resnet_convnet(s->rn);
    } else if (strcmp(arch, "mobilenet_v2") == 0) {
        s->mb = mobilenet_new(ncls);
        s->cn = mobilenet_convnet(s->mb);
    } else if (strcmp(arch, "openclip_timm") == 0) {
        mobilenet_head proj = {OC_PROJ, proj_rows, proj_bias};
        s->mb = mobilenet_new_named(MOBILENET_TIMM, OC_TRUNK, &proj);
        s->cn = mobilenet_convnet(s->mb);
        params *p = cn_params(s->cn);
        param_freeze(p, OC_PROJ, 0); /* computed here: it trains */
        s->pw = param_find(p, OC_PROJ ".weight");
        s->pb = param_find(p, OC_PROJ ".bias");
    } else {
        s->vt = vit_new(strcmp(arch, "vit_b16") == 0 ? VIT_B16 : VIT_S16, img, ncls);
    }
    s->dim = s->vt ? vit_feature_dim(s->vt) : s->pw >= 0 ? proj_rows : cn_feature_dim(s->cn);
    return s;
}

student *student_new(const char *arch, int nclasses, char *err)
{
    const char *a = arch_name(arch);
    if (!a) {
        vl_error(err, "unknown architecture '%s'", arch);
        return NULL;
    }
    if (strcmp(a, "clip_vision") == 0) {
        vl_error(err, "clip_vision: the CLIP image tower's sizes come from its weights file");
        return NULL;
    }
    return build(a, nclasses, 224, 512, 0);
}

static int open_clip_vision(student *s, const char *path, char *err)
{
    if (clip_load_towers(&s->clip, path, CLIP_VISION, err) != 0) return -1;
    size_t n;
    float *w = clip_vision_params(s->clip, &n);
    param_wrap(&s->cp, "visual", w, NULL, n);
    s->dim = clip_vision_tower(s->clip)->D;
    if (!s->has_norm) {
        memcpy(s->mean, CLIP_MEAN, sizeof s->mean);
        memcpy(s->std, CLIP_STD, sizeof s->std);
        s->has_norm = 1;
    }
    return 0;
}

int student_open(student **out, const char *arch, const char *path, char *err)
{
    *out = NULL;
    const char *a = strcmp(arch, "auto") == 0 ? NULL : arch_name(arch);
    if (!a && strcmp(arch, "auto") != 0) return vl_error(err, "unknown architecture '%s'", arch);
    char *file;
    json *oc;
    if (resolve(path, &file, &oc, err) != 0) return -1;
    st_file f;
    if (st_open(&f, file, err) != 0) {
        free(file);
        json_free(oc);
        return -1;
    }
    student *s = NULL;
    float mean[3], std[3];
    int rc = -1, norm = meta_norm(&f, mean, std, err);
    if (norm < 0) goto done;
    if (!a && detect(&f, oc, &a, err) != 0) goto done;
    int oclip = strcmp(a, "openclip_timm") == 0, clipv = strcmp(a, "clip_vision") == 0;
    /* an OpenCLIP model's preprocessing, unless the weights say otherwise */
    const json *pc = oc && (oclip || clipv) ? json_get(oc, "preprocess_cfg") : NULL;
    if (!norm && pc && (json_get(pc, "mean") || json_get(pc, "std"))) {
        if (json_triple(json_get(pc, "mean"), mean) != 0 || json_triple(json_get(pc, "std"), std) != 0) {
            vl_error(err, "%s: open_clip_config.json: preprocess_cfg mean and std are not arrays of 3 numbers", file);
            goto done;
        }
        char b[96];
        const char *bad = student_norm_fault(mean, std, b, sizeof b);
        if (bad) {
            vl_error(err, "%s: open_clip_config.json: preprocess_cfg: %s", file, bad);
            goto done;
        }
        norm = 1;
    }
    int ncls = 0, img = 224, rows = 0, bias = 0, d1, k1;
    if (strncmp(a, "resnet", 6) == 0) {
        if (resnet_detect(&f, &d1, &ncls, err) != 0) ncls = 0;
    } else if (strcmp(a, "mobilenet_v2") == 0) {
        if (mobilenet_detect(&f, &ncls, err) != 0) ncls = 0;
    } else if (oclip) {
        if (check_openclip_timm(&f, oc, err) != 0) goto done;
        rows = (int)st_find(&f, OC_PROJ ".weight")->shape[0];
        bias = st_find(&f, OC_PROJ ".bias") != NULL;
    } else if (!clipv) {
        if (vit_detect(&f, &k1, &ncls, err) != 0) ncls = 0;
        /* the grid pos_embed was made for; other input sizes resize it */
        const st_tensor *pe = st_find(&f, "pos_embed");
        int grid = 14;
        if (pe && pe->ndim == 3 && pe->shape[1] > 1) {
            int n = (int)pe->shape[1] - 1;
            for (grid = 1; grid * grid < n; grid++) {
            }
            if (grid * grid != n) {
                vl_error(err, "%s: tensor 'pos_embed' has %d positions: not 1 + a square grid", file, n + 1);
                goto done;
            }
        }
        img = grid * 16;
    }
    if (clipv) {
        s = xcalloc(1, sizeof *s);
        s->arch = a;
        s->pw = s->pb = -1;
    } else {
        s = build(a, ncls, img, rows, bias);
    }
    if (norm) {
        memcpy(s->mean, mean, sizeof mean);
        memcpy(s->std, std, sizeof std);
        s->has_norm = 1;
    }
    if (clipv) {
        rc = open_clip_vision(s, path, err);
    } else if (s->vt) {
        rc = vit_load(s->vt, &f, err);
    } else {
        /* an OpenCLIP file's text tower is not the student's */
        st_file v = oclip ? subset(&f, OC_VISUAL) : f;
        rc = cn_load(s->cn, &v, err);
    }
done:
    st_close(&f);
    free(file);
    json_free(oc);
    if (rc != 0) {
        student_free(s);
        return -1;
    }
    *out = s;
    return 0;
}

void student_free(student *s)
{
    if (!s) return;
    resnet_free(s->rn);
    mobilenet_free(s->mb);
    if (s->vt) vit_free(s->vt);
    if (s->clip) {
        free(s->cp.grad); /* param_zero_grad's, the store being external */
        param_free(&s->cp);
        free(s->cg.blocks);
        if (s->acts) clip_vision_acts_free(s->acts);
        clip_free(s->clip);
    }
    free(s->pool);
    free(s->dpool);
    free(s);
}

const char *student_arch(const student *s) { return s->arch; }
int student_feature_dim(const student *s) { return s->dim; }

params *student_params(student *s)
{
    return s->clip ? &s->cp : s->vt ? vit_params(s->vt) : cn_params(s->cn);
}

int student_input_norm(const student *s, float mean[3], float std[3])
{
    if (!s->has_norm) return 0;
    memcpy(mean, s->mean, sizeof s->mean);
    memcpy(std, s->std, sizeof s->std);
    return 1;
}

int student_check_input(const student *s, int H, int W, char *err)
{
    if (s->vt && (H % 16 || W % 16)) return vl_error(err, "a ViT needs sides that are multiples of 16");
    if (s->clip) {
        int S = clip_image_size(s->clip);
        if (H != S || W != S) return vl_error(err, "the CLIP image tower takes %dx%d images", S, S);
    }
    if (H < 1 || W < 1) return vl_error(err, "an empty image");
    return 0;
}

void student_set_bn_train(student *s, int bn_train)
{
    if (s->cn) cn_set_bn_train(s->cn, bn_train);
}

void student_fold_bn(student *s)
{
    if (s->cn) cn_fold_bn(s->cn);
}

int student_forward(student *s, float *feat, const float *x, int B, int H, int W, int save, char *err)
{
    s->x = x, s->B = B;
    if (s->vt) return vit_forward(s->vt, feat, x, B, H, W, save, err);
    if (s->clip) {
        if (student_check_input(s, H, W, err) != 0) return -1;
        const clip_vision *v = clip_vision_tower(s->clip);
        if (save && (!s->acts || s->acts_B < B)) {
            if (s->acts) clip_vision_acts_free(s->acts);
            s->acts = clip_vision_acts_new(v, B);
            s->acts_B = B;
        }
        clip_vision_forward(v, x, B, feat, save ? s->acts : NULL);
        return 0;
    }
    if (s->pw < 0) return cn_forward(s->cn, feat, x, B, H, W, save, err);
    /* openclip_timm: the pooled trunk, then the projection */
    size_t need = (size_t)B * POOL;
    if (need > s->pool_cap) {
        free(s->pool), free(s->dpool);
        s->pool = xmalloc(need * sizeof(float));
        s->dpool = xmalloc(need * sizeof(float));
        s->pool_cap = need;
    }
    if (cn_forward(s->cn, s->pool, x, B, H, W, save, err) != 0) return -1;
    const params *p = cn_params(s->cn);
    linear_forward(feat, s->pool, param_data(p, s->pw), s->pb >= 0 ? param_data(p, s->pb) : NULL, B, POOL, s->dim);
    return 0;
}

void student_backward(student *s, const float *dfeat)
{
    if (s->vt) {
        vit_backward(s->vt, dfeat);
    } else if (s->clip) {
        float *g = param_grad(&s->cp, 0);
        if (!g) return; /* frozen */
        const clip_vision *v = clip_vision_tower(s->clip);
        if (s->cg_base != g) {
            free(s->cg.blocks);
            clip_vision_like(&s->cg, v, g);
            s->cg_base = g;
        }
        clip_vision_backward(v, &s->cg, dfeat, s->x, s->acts, s->B);
    } else if (s->pw < 0) {
        cn_backward(s->cn, dfeat);
    } else {
        const params *p = cn_params(s->cn);
        linear_backward_set(s->dpool, param_grad(p, s->pw), s->pb >= 0 ? param_grad(p, s->pb) : NULL, dfeat,
                            s->pool, param_data(p, s->pw), s->B, POOL, s->dim);
        cn_backward(s->cn, s->dpool);
    }
}

int student_decisions(const student *s, cn_decision *d, int max) { return s->cn ? cn_decisions(s->cn, d, max) : 0; }

size_t student_buffer_bytes(const student *s)
{
    if (s->vt) return vit_buffer_bytes(s->vt);
    if (s->clip) return s->acts ? clip_vision_acts_bytes(s->acts) : 0;
    return cn_buffer_bytes(s->cn) + 2 * s->pool_cap * sizeof(float);
}

const char *student_norm_fault(const float mean[3], const float std[3], char *buf, size_t n)
{
    for (int c = 0; c < 3; c++) {
        if (!isfinite(mean[c])) {
            snprintf(buf, n, "mean %d: %g is not finite", c, mean[c]);
            return buf;
        }
        if (!isnormal(std[c]) || std[c] < 0) {
            snprintf(buf, n, "std %d: %g is not a normal positive number", c, std[c]);
            return buf;
        }
    }
    return NULL;
}
