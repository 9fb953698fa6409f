/* student: the face over every student backbone; see student.h.
 *
 * The convolutional students (the ResNets, MobileNetV2 and the trunk of
 * openclip_timm) share their convnet engine's BatchNorm, folding and
 * decisions; openclip_timm's forward and backward (trunk, pool and
 * projection) are its module's. The ViTs and the CLIP tower have their own
 * calls. */
#include "student.h"

#include "json.h"
#include "models/clip.h"
#include "models/mobilenet.h"
#include "models/openclip_timm.h"
#include "models/resnet.h"
#include "models/vit.h"
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

struct student {
    const char *arch;
    int dim;
    resnet *rn;
    mobilenet *mb;
    openclip_timm *oc;
    convnet *cn; /* the engine of rn, mb or oc */
    vit *vt;
    clip_model *clip;
    params cp; /* clip_vision: the tower's block wrapped */
    clip_vision cg;
    float *cg_base; /* the gradient block cg is laid over */
    clip_vision_acts *acts;
    int acts_B;
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
        const char *bad = vl_norm_fault(mean, std, b, sizeof b);
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

/* open_clip_config.json's model_cfg.vision_cfg, or NULL */
static const json *vision_cfg(const json *oc) { return oc ? json_get(json_get(oc, "model_cfg"), "vision_cfg") : NULL; }

/* the architecture of f by its names and shapes */
static int detect(const st_file *f, const json *oc, const char **arch, char *err)
{
    if (openclip_timm_detect(f)) {
        if (openclip_timm_check(f, vision_cfg(oc), err) != 0) return -1;
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
        return vl_error(err, "%s; and %s; and %s; and no 'visual.trunk.*' (OpenCLIP timm) or 'visual.conv1.weight' / "
                             "'vision_model.*' (CLIP) tensors",
                        e1, e2, e3);
    return 0;
}

static student *build(const char *arch, int ncls, int img)
{
    student *s = xcalloc(1, sizeof *s);
    s->arch = arch;
    if (strncmp(arch, "resnet", 6) == 0) {
        s->rn = resnet_new(atoi(arch + 6), ncls);
        s->cn = resnet_convnet(s->rn);
    } else if (strcmp(arch, "mobilenet_v2") == 0) {
        s->mb = mobilenet_new(ncls);
        s->cn = mobilenet_convnet(s->mb);
    } else {
        s->vt = vit_new(strcmp(arch, "vit_b16") == 0 ? VIT_B16 : VIT_S16, img, ncls);
    }
    s->dim = s->vt ? vit_feature_dim(s->vt) : cn_feature_dim(s->cn);
    return s;
}

/* the student over an OpenCLIP timm tower */
static student *from_openclip_timm(const char *arch, openclip_timm *oc)
{
    student *s = xcalloc(1, sizeof *s);
    s->arch = arch;
    s->oc = oc;
    s->cn = openclip_timm_convnet(oc);
    s->dim = openclip_timm_feature_dim(oc);
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
    if (strcmp(a, "openclip_timm") == 0) return from_openclip_timm(a, openclip_timm_new(512, 0));
    return build(a, nclasses, 224);
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
        const char *bad = vl_norm_fault(mean, std, b, sizeof b);
        if (bad) {
            vl_error(err, "%s: open_clip_config.json: preprocess_cfg: %s", file, bad);
            goto done;
        }
        norm = 1;
    }
    int ncls = 0, img = 224, d1, k1;
    if (strncmp(a, "resnet", 6) == 0) {
        if (resnet_detect(&f, &d1, &ncls, err) != 0) ncls = 0;
    } else if (strcmp(a, "mobilenet_v2") == 0) {
        if (mobilenet_detect(&f, &ncls, err) != 0) ncls = 0;
    } else if (!clipv && !oclip) {
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
    openclip_timm *ot = NULL;
    if (oclip && openclip_timm_open(&ot, &f, vision_cfg(oc), err) != 0) goto done;
    if (clipv) {
        s = xcalloc(1, sizeof *s);
        s->arch = a;
    } else if (oclip) {
        s = from_openclip_timm(a, ot);
    } else {
        s = build(a, ncls, img);
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
    } else if (!oclip) {
        rc = cn_load(s->cn, &f, err);
    } else {
        rc = 0; /* openclip_timm_open loaded it */
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
    openclip_timm_free(s->oc);
    if (s->vt) vit_free(s->vt);
    if (s->clip) {
        free(s->cp.grad); /* param_zero_grad's, the store being external */
        param_free(&s->cp);
        free(s->cg.blocks);
        if (s->acts) clip_vision_acts_free(s->acts);
        clip_free(s->clip);
    }
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
    if (s->oc) return openclip_timm_forward(s->oc, feat, x, B, H, W, save, err);
    return cn_forward(s->cn, feat, x, B, H, W, save, err);
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
    } else if (s->oc) {
        openclip_timm_backward(s->oc, dfeat);
    } else {
        cn_backward(s->cn, dfeat);
    }
}

int student_decisions(const student *s, cn_decision *d, int max) { return s->cn ? cn_decisions(s->cn, d, max) : 0; }

size_t student_buffer_bytes(const student *s)
{
    if (s->vt) return vit_buffer_bytes(s->vt);
    if (s->clip) return s->acts ? clip_vision_acts_bytes(s->acts) : 0;
    if (s->oc) return openclip_timm_buffer_bytes(s->oc);
    return cn_buffer_bytes(s->cn);
}
