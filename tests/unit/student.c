/* student: the face over every student backbone (lib/models/student.h).
 * Small weight files generated here in each architecture's names: --arch
 * auto finds each one (from a file and from a directory), wrong or unknown
 * names and other timm trunks are errors naming them, the face's forward
 * gives the model's own bytes, openclip_timm's backward matches finite
 * differences, and the normalisation the weights declare is reported. */
#include "check.h"
#include "floats.h"

#include "models/clip.h"
#include "models/mobilenet.h"
#include "models/resnet.h"
#include "models/student.h"
#include "models/vit.h"
#include "nn/linear.h"
#include "param.h"
#include "rng.h"
#include "st.h"
#include "util.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static rng R;
static char dir[64];

/* small values, BatchNorm near identity (weights and variances near 1) */
static void fill(params *p)
{
    for (int i = 0; i < p->n; i++) {
        const char *n = p->t[i].name;
        float *d = param_data(p, i);
        size_t k = p->t[i].numel;
        /* the 1-dim weights are BatchNorm's and LayerNorm's */
        int bnw = strstr(n, "running_var") || (p->t[i].ndim == 1 && strstr(n, ".weight"));
        for (size_t j = 0; j < k; j++)
            d[j] = bnw ? 0.8f + 0.4f * (float)rng_uniform(&R) : (float)rng_normal(&R) * 0.05f;
    }
}

static char *path_of(const char *name)
{
    static char b[4][160];
    static int k;
    char *p = b[k++ % 4];
    snprintf(p, 160, "%s/%s", dir, name);
    return p;
}

/* writes p (and an extra tensor of extra_n zeros, and the metadata meta:
 * key, value, ..., NULL) to name under dir */
static void write_store(const params *p, const char *name, const char *extra, int extra_n, const char *const *meta)
{
    stw *w = stw_new();
    param_add_to_writer(p, w);
    static float zero[64];
    int64_t s[1] = {extra_n};
    if (extra) stw_add(w, extra, ST_F32, 1, s, zero);
    for (int i = 0; meta && meta[i]; i += 2) stw_meta(w, meta[i], meta[i + 1]);
    char err[VL_ERRLEN];
    if (stw_write(w, path_of(name), err) != 0) {
        printf("FAIL: writing %s: %s\n", name, err);
        exit(1);
    }
    stw_free(w);
}

static int same_bytes(const float *a, const float *b, size_t n) { return memcmp(a, b, n * sizeof(float)) == 0; }

/* opens name with auto: the arch found, and the face's forward against f
 * (the model's own forward, feat of dim floats); B images of H x W */
typedef int (*own_fwd)(void *m, float *feat, const float *x, int B, int H, int W);
static void check_arch(const char *name, const char *want, void *m, own_fwd own, int dim, int H, int W)
{
    char err[VL_ERRLEN];
    student *s;
    int rc = student_open(&s, "auto", path_of(name), err);
    CHECK(rc == 0 && strcmp(student_arch(s), want) == 0 && student_feature_dim(s) == dim,
          "%s: --arch auto finds %s, feature size %d (%s)", name, want, dim, rc ? err : student_arch(s));
    if (rc) return;
    int B = 2;
    float *x = rand_floats(&R, (size_t)B * 3 * H * W, 1.0f);
    float *a = xcalloc((size_t)B * dim, sizeof(float)), *b = xcalloc((size_t)B * dim, sizeof(float));
    rc = student_forward(s, a, x, B, H, W, 0, err);
    int rc2 = own(m, b, x, B, H, W);
    double mx = 0;
    for (int i = 0; i < B * dim; i++) mx = fmax(mx, fabs(a[i]));
    CHECK(rc == 0 && rc2 == 0 && same_bytes(a, b, (size_t)B * dim) && mx > 0,
          "%s: the face's forward gives the model's own bytes (%dx%d, largest %.3g)", want, H, W, mx);
    student *s2;
    CHECK(student_open(&s2, want, path_of(name), err) == 0 && strcmp(student_arch(s2), want) == 0,
          "%s: --arch %s opens it too", name, want);
    student_free(s2);
    free(x), free(a), free(b);
    student_free(s);
}

static int fwd_resnet(void *m, float *f, const float *x, int B, int H, int W)
{
    char err[VL_ERRLEN];
    return resnet_forward(m, f, x, B, H, W, 0, err);
}
static int fwd_mobilenet(void *m, float *f, const float *x, int B, int H, int W)
{
    char err[VL_ERRLEN];
    return mobilenet_forward(m, f, x, B, H, W, 0, err);
}
static int fwd_vit(void *m, float *f, const float *x, int B, int H, int W)
{
    char err[VL_ERRLEN];
    return vit_forward(m, f, x, B, H, W, 0, err);
}
static int fwd_clip(void *m, float *f, const float *x, int B, int H, int W)
{
    clip_vision_forward(clip_vision_tower(m), x, B, f, NULL);
    return 0;
}

/* the trunk, then the projection: what openclip_timm computes */
typedef struct {
    mobilenet *mb;
    const float *w;
    int D;
} oc_tower;
static int fwd_openclip(void *m, float *f, const float *x, int B, int H, int W)
{
    oc_tower *t = m;
    float *pool = xmalloc((size_t)B * 1280 * sizeof(float));
    int rc = fwd_mobilenet(t->mb, pool, x, B, H, W);
    linear_forward(f, pool, t->w, NULL, B, 1280, t->D);
    free(pool);
    return rc;
}

static void expect_error(const char *arch, const char *path, const char *want, const char *what)
{
    char err[VL_ERRLEN] = "";
    student *s = NULL;
    int rc = student_open(&s, arch, path, err);
    CHECK(rc != 0 && !s && strstr(err, want), "%s: an error naming '%s' (%s)", what, want, err);
    student_free(s);
}

/* a tiny CLIP in the OpenAI names: C 64 (one head), patches 8 of 16x16
 * images, D 16, one block per tower, a text tower of 10 tokens */
static void write_clip(const char *name)
{
    enum { C = 64, P = 8, T = 5, D = 16, H = 128, V = 10, X = 4 };
    stw *w = stw_new();
    struct {
        const char *n;
        int nd;
        int64_t a, b, c, d;
    } ts[] = {{"visual.conv1.weight", 4, C, 3, P, P},
              {"visual.class_embedding", 1, C, 0, 0, 0},
              {"visual.positional_embedding", 2, T, C, 0, 0},
              {"visual.ln_pre.weight", 1, C, 0, 0, 0},
              {"visual.ln_pre.bias", 1, C, 0, 0, 0},
              {"visual.ln_post.weight", 1, C, 0, 0, 0},
              {"visual.ln_post.bias", 1, C, 0, 0, 0},
              {"visual.proj", 2, C, D, 0, 0},
              {"ln_final.weight", 1, C, 0, 0, 0},
              {"ln_final.bias", 1, C, 0, 0, 0},
              {"token_embedding.weight", 2, V, C, 0, 0},
              {"positional_embedding", 2, X, C, 0, 0},
              {"text_projection", 2, C, D, 0, 0},
              {"logit_scale", 0, 0, 0, 0, 0}};
    static const char *const BLK[][2] = {
        {"ln_1.weight", "C"},        {"ln_1.bias", "C"},      {"attn.in_proj_weight", "3CC"},
        {"attn.in_proj_bias", "3C"}, {"attn.out_proj.weight", "CC"}, {"attn.out_proj.bias", "C"},
        {"ln_2.weight", "C"},        {"ln_2.bias", "C"},      {"mlp.c_fc.weight", "HC"},
        {"mlp.c_fc.bias", "H"},      {"mlp.c_proj.weight", "CH"},    {"mlp.c_proj.bias", "C"}};
    void *own[sizeof ts / sizeof ts[0] + 2 * 2 * sizeof BLK / sizeof BLK[0]]; /* what stw_write reads, freed after */
    int nown = 0;
    for (size_t i = 0; i < sizeof ts / sizeof ts[0]; i++) {
        int64_t s[4] = {ts[i].a, ts[i].b, ts[i].c, ts[i].d}, n = 1;
        for (int k = 0; k < ts[i].nd; k++) n *= s[k];
        int ln = strstr(ts[i].n, "ln_") && strstr(ts[i].n, "weight");
        float *v = rand_floats(&R, (size_t)n, 0.1f);
        for (int64_t k = 0; ln && k < n; k++) v[k] += 1.0f;
        stw_add(w, ts[i].n, ST_F32, ts[i].nd, s, v);
        own[nown++] = v;
    }
    for (int tower = 0; tower < 2; tower++)
        for (size_t k = 0; k < sizeof BLK / sizeof BLK[0]; k++) {
            char *nm = xmalloc(96);
            snprintf(nm, 96, "%stransformer.resblocks.0.%s", tower ? "" : "visual.", BLK[k][0]);
            const char *sh = BLK[k][1];
            int64_t s[2], n;
            int nd;
            if (!strcmp(sh, "C")) s[0] = C, nd = 1;
            else if (!strcmp(sh, "3C")) s[0] = 3 * C, nd = 1;
            else if (!strcmp(sh, "H")) s[0] = H, nd = 1;
            else if (!strcmp(sh, "3CC")) s[0] = 3 * C, s[1] = C, nd = 2;
            else if (!strcmp(sh, "CC")) s[0] = C, s[1] = C, nd = 2;
            else if (!strcmp(sh, "HC")) s[0] = H, s[1] = C, nd = 2;
            else s[0] = C, s[1] = H, nd = 2;
            n = nd == 1 ? s[0] : s[0] * s[1];
            float *v = rand_floats(&R, (size_t)n, 0.1f);
            for (int64_t j = 0; strstr(nm, "ln_") && strstr(nm, "weight") && j < n; j++) v[j] += 1.0f;
            stw_add(w, nm, ST_F32, nd, s, v);
            own[nown++] = v;
            own[nown++] = nm;
        }
    char err[VL_ERRLEN];
    if (stw_write(w, path_of(name), err) != 0) {
        printf("FAIL: writing %s: %s\n", name, err);
        exit(1);
    }
    stw_free(w);
    while (nown > 0) free(own[--nown]);
}

/* L = sum(feat * r) of the face at the current parameters */
static double face_loss(student *s, const float *x, const float *r, int B, int H, int W)
{
    int D = student_feature_dim(s);
    float *f = xmalloc((size_t)B * D * sizeof(float));
    char err[VL_ERRLEN];
    student_forward(s, f, x, B, H, W, 0, err);
    double l = 0;
    for (int i = 0; i < B * D; i++) l += (double)f[i] * r[i];
    free(f);
    return l;
}

static void check_openclip_grad(const char *name)
{
    char err[VL_ERRLEN];
    student *s;
    if (student_open(&s, "openclip_timm", path_of(name), err) != 0) {
        CHECK(0, "openclip_timm: opening for the gradient check: %s", err);
        return;
    }
    int B = 2, H = 32, W = 32, D = student_feature_dim(s);
    float *x = rand_floats(&R, (size_t)B * 3 * H * W, 1.0f), *r = rand_floats(&R, (size_t)B * D, 1.0f);
    float *f = xmalloc((size_t)B * D * sizeof(float));
    params *p = student_params(s);
    param_zero_grad(p);
    int ok = student_forward(s, f, x, B, H, W, 1, err) == 0;
    student_backward(s, r);
    static const char *const NAMES[] = {"visual.head.proj.weight", "visual.trunk.conv_head.weight",
                                        "visual.trunk.blocks.6.0.conv_pwl.weight", "visual.trunk.bn2.bias", NULL};
    for (int k = 0; NAMES[k]; k++) {
        int i = param_find(p, NAMES[k]);
        if (i < 0 || !param_grad(p, i)) {
            CHECK(0, "openclip_timm: '%s' is in the store and trains", NAMES[k]);
            continue;
        }
        float *v = param_data(p, i), *g = param_grad(p, i);
        size_t n = p->t[i].numel;
        double scale = 1e-12, worst = 0;
        for (size_t j = 0; j < n; j++) scale = fmax(scale, fabs(g[j]));
        for (int t = 0; t < 6; t++) {
            size_t j = (size_t)(rng_uniform(&R) * n) % n;
            float keep = v[j], h = 3e-3f * fmaxf(fabsf(keep), 0.1f);
            v[j] = keep + h;
            double lp = face_loss(s, x, r, B, H, W);
            v[j] = keep - h;
            double lm = face_loss(s, x, r, B, H, W);
            v[j] = keep;
            worst = fmax(worst, fabs((lp - lm) / (2.0 * h) - g[j]) / scale);
        }
        CHECK(ok && worst < 2e-2, "openclip_timm: backward's gradient of '%s' matches central differences (worst %.2g "
              "of the largest)", NAMES[k], worst);
    }
    free(x), free(r), free(f);
    student_free(s);
}

static void test_norm(void)
{
    char b[96];
    const float m[3] = {0.5f, 0.5f, 0.5f}, sd[3] = {0.25f, 0.5f, 1};
    CHECK(!vl_norm_fault(m, sd, b, sizeof b), "normalisation: finite means, normal positive stds pass");
    const float nanm[3] = {0, NAN, 0}, infm[3] = {INFINITY, 0, 0};
    CHECK(vl_norm_fault(nanm, sd, b, sizeof b) && strstr(b, "mean 1: nan is not finite"), "normalisation: NaN mean: %s", b);
    CHECK(vl_norm_fault(infm, sd, b, sizeof b) && strstr(b, "mean 0: inf"), "normalisation: infinite mean: %s", b);
    const float bad[][3] = {{0, 1, 1}, {1, 1e-40f, 1}, {1, 1, -1}, {1, 1, INFINITY}, {NAN, 1, 1}, {-0.0f, 1, 1}};
    for (int k = 0; k < 6; k++)
        CHECK(vl_norm_fault(m, bad[k], b, sizeof b) && strstr(b, "is not a normal positive number"),
              "normalisation: std %g,%g,%g refused: %s", bad[k][0], bad[k][1], bad[k][2], b);
}

int main(void)
{
    rng_seed(&R, 42);
    snprintf(dir, sizeof dir, "/tmp/vl2v-student-XXXXXX");
    if (!mkdtemp(dir)) {
        printf("FAIL: mkdtemp\n");
        return 1;
    }
    /* the convolutional students, the ViT, CLIP and the OpenCLIP tower */
    resnet *r18 = resnet_new(18, 10), *r34 = resnet_new(34, 0), *r50 = resnet_new(50, 0);
    mobilenet *mb = mobilenet_new(7);
    vit *vs = vit_new(VIT_S16, 32, 0);
    fill(resnet_params(r18)), fill(resnet_params(r34)), fill(resnet_params(r50));
    fill(mobilenet_params(mb)), fill(vit_params(vs));
    write_store(resnet_params(r18), "r18.safetensors", NULL, 0, NULL);
    write_store(resnet_params(r34), "r34.safetensors", NULL, 0, NULL);
    write_store(resnet_params(r50), "r50.safetensors", NULL, 0, NULL);
    static const char *const MB_META[] = {"input_mean", "0.5,0.5,0.5", "input_std", "0.5,0.5,0.5", NULL};
    write_store(mobilenet_params(mb), "mb.safetensors", NULL, 0, MB_META);
    write_store(vit_params(vs), "vs.safetensors", NULL, 0, NULL);
    write_clip("clip.safetensors");
    mobilenet_head proj = {"visual.head.proj", 24, 0};
    oc_tower oc = {mobilenet_new_named(MOBILENET_TIMM, "visual.trunk.", &proj), NULL, 24};
    params *ocp = mobilenet_params(oc.mb);
    fill(ocp);
    oc.w = param_data(ocp, param_find(ocp, "visual.head.proj.weight"));
    mkdir(path_of("oc"), 0755);
    /* the OpenCLIP file's text tower is not the student's */
    write_store(ocp, "oc/open_clip_model.safetensors", "text_projection", 8, NULL);
    FILE *cf = fopen(path_of("oc/open_clip_config.json"), "w");
    fputs("{\"model_cfg\": {\"vision_cfg\": {\"timm_model_name\": \"mobilenetv2_100\"}},"
          " \"preprocess_cfg\": {\"mean\": [0.25, 0.5, 0.75], \"std\": [0.5, 0.5, 0.25]}}",
          cf);
    fclose(cf);

    char err[VL_ERRLEN];
    check_arch("r18.safetensors", "resnet18", r18, fwd_resnet, 512, 40, 48);
    check_arch("r34.safetensors", "resnet34", r34, fwd_resnet, 512, 40, 40);
    check_arch("r50.safetensors", "resnet50", r50, fwd_resnet, 2048, 40, 40);
    check_arch("mb.safetensors", "mobilenet_v2", mb, fwd_mobilenet, 1280, 40, 56);
    check_arch("vs.safetensors", "vit_s16", vs, fwd_vit, 384, 32, 48);
    clip_model *cm;
    if (clip_load_towers(&cm, path_of("clip.safetensors"), CLIP_VISION, err) == 0) {
        check_arch("clip.safetensors", "clip_vision", cm, fwd_clip, 16, 16, 16);
        clip_free(cm);
    } else {
        CHECK(0, "clip.safetensors: clip_load: %s", err);
    }
    check_arch("oc", "openclip_timm", &oc, fwd_openclip, 24, 40, 40);
    check_arch("oc/open_clip_model.safetensors", "openclip_timm", &oc, fwd_openclip, 24, 48, 40);

    /* the store: every tensor under the file's names, the projection's
     * trainable; a directory's model.safetensors */
    student *s;
    if (student_open(&s, "auto", path_of("oc"), err) == 0) {
        params *p = student_params(s);
        int i = param_find(p, "visual.head.proj.weight");
        CHECK(i >= 0 && !p->t[i].frozen && param_find(p, "visual.trunk.blocks.0.0.conv_dw.weight") >= 0 &&
                  param_find(p, "visual.trunk.blocks.1.1.bn3.running_var") >= 0 &&
                  param_find(p, "text_projection") < 0 && p->n == ocp->n,
              "openclip_timm: the store holds the trunk and the trainable projection under the file's names (%d "
              "tensors), no text tower",
              p->n);
        float m[3], sd[3];
        CHECK(student_input_norm(s, m, sd) == 1 && m[0] == 0.25f && m[2] == 0.75f && sd[2] == 0.25f,
              "openclip_timm: the normalisation of open_clip_config.json's preprocess_cfg");
        student_free(s);
    }
    if (student_open(&s, "auto", path_of("mb.safetensors"), err) == 0) {
        float m[3], sd[3];
        CHECK(student_input_norm(s, m, sd) == 1 && m[1] == 0.5f && sd[1] == 0.5f,
              "mobilenet_v2: the normalisation of the metadata input_mean/input_std");
        student_free(s);
    }
    if (student_open(&s, "auto", path_of("r18.safetensors"), err) == 0) {
        float m[3], sd[3];
        CHECK(student_input_norm(s, m, sd) == 0, "resnet18: no normalisation declared");
        cn_decision d[64];
        float *x = rand_floats(&R, 2 * 3 * 32 * 32, 1.0f), *f = xmalloc(2 * 512 * sizeof(float));
        int n0 = student_decisions(s, d, 64);
        student_forward(s, f, x, 2, 32, 32, 1, err);
        int n1 = student_decisions(s, d, 64);
        CHECK(n0 == -1 && n1 == 18, "resnet18: decisions after a saving forward (%d; before any, %d)", n1, n0);
        student_fold_bn(s);
        CHECK(student_forward(s, f, x, 2, 32, 32, 1, err) != 0, "resnet18: folded, a saving forward fails (%s)", err);
        free(x), free(f);
        student_free(s);
    }
    mkdir(path_of("hf"), 0755);
    write_store(resnet_params(r18), "hf/model.safetensors", NULL, 0, NULL);
    if (student_open(&s, "auto", path_of("hf"), err) == 0) {
        CHECK(strcmp(student_arch(s), "resnet18") == 0, "a directory's model.safetensors is opened (%s)",
              student_arch(s));
        student_free(s);
    } else {
        CHECK(0, "a directory's model.safetensors: %s", err);
    }
    if (student_open(&s, "auto", path_of("vs.safetensors"), err) == 0) {
        CHECK(student_check_input(s, 40, 32, err) != 0 && strstr(err, "multiples of 16") &&
                  student_check_input(s, 48, 32, err) == 0,
              "vit_s16: inputs of sides not multiples of 16 refused");
        student_free(s);
    }

    /* errors naming what is wrong */
    params *p18 = resnet_params(r18);
    char *keep = p18->t[5].name;
    p18->t[5].name = "layer9.0.conv1.weight";
    write_store(p18, "renamed.safetensors", NULL, 0, NULL);
    p18->t[5].name = keep;
    expect_error("auto", path_of("renamed.safetensors"), keep, "a ResNet-18 with a renamed tensor: the missing one");
    write_store(ocp, "unknown.safetensors", "visual.trunk.blocks.0.0.se.conv_reduce.weight", 4, NULL);
    expect_error("auto", path_of("unknown.safetensors"), "visual.trunk.blocks.0.0.se.conv_reduce.weight",
                 "openclip_timm: an unknown tensor in the image tower");
    write_store(p18, "oc_other.safetensors", "visual.trunk.stem.conv.weight", 4, NULL);
    expect_error("auto", path_of("oc_other.safetensors"), "unsupported timm trunk",
                 "an OpenCLIP timm tower of another trunk");
    expect_error("auto", path_of("oc_other.safetensors"), "visual.trunk.conv_stem.weight",
                 "an OpenCLIP timm tower of another trunk, naming the tensor looked for");
    mkdir(path_of("oc_cfg"), 0755);
    write_store(ocp, "oc_cfg/open_clip_model.safetensors", NULL, 0, NULL);
    cf = fopen(path_of("oc_cfg/open_clip_config.json"), "w");
    fputs("{\"model_cfg\": {\"vision_cfg\": {\"timm_model_name\": \"efficientnet_b0\"}}}", cf);
    fclose(cf);
    expect_error("auto", path_of("oc_cfg"), "efficientnet_b0", "a config naming another timm trunk");
    write_store(ocp, "mismatch.safetensors", NULL, 0, NULL);
    expect_error("mobilenet_v2", path_of("mismatch.safetensors"), "features.0.0.weight",
                 "--arch mobilenet_v2 on timm names");
    {
        /* ViT-B/16 by its width: the first tensor looked for is of its shape */
        stw *w = stw_new();
        static float z[768 * 3 * 16 * 16];
        int64_t sp[4] = {768, 3, 16, 16}, sc[3] = {1, 1, 768}, spe[3] = {1, 5, 768}, sn[1] = {768};
        stw_add(w, "patch_embed.proj.weight", ST_F32, 4, sp, z);
        stw_add(w, "cls_token", ST_F32, 3, sc, z);
        stw_add(w, "pos_embed", ST_F32, 3, spe, z);
        stw_add(w, "blocks.11.norm1.weight", ST_F32, 1, sn, z);
        stw_write(w, path_of("vb.safetensors"), err);
        stw_free(w);
    }
    expect_error("auto", path_of("vb.safetensors"), "'patch_embed.proj.bias' [768]", "ViT-B/16 names, found by width");
    expect_error("auto", path_of("none.safetensors"), "none.safetensors", "a missing file");
    expect_error("vgg16", path_of("r18.safetensors"), "vgg16", "an unknown architecture");
    {
        stw *w = stw_new();
        static float z[9];
        int64_t sh[2] = {3, 3};
        stw_add(w, "encoder.weight", ST_F32, 2, sh, z);
        stw_write(w, path_of("other.safetensors"), err);
        stw_free(w);
    }
    expect_error("auto", path_of("other.safetensors"), "conv1.weight", "a file that is no student");
    static const char *const BAD_META[] = {"vl2v.mean", "0.5,0.5", "vl2v.std", "1,1,1", NULL};
    write_store(mobilenet_params(mb), "badmeta.safetensors", NULL, 0, BAD_META);
    expect_error("auto", path_of("badmeta.safetensors"), "vl2v.mean", "malformed normalisation metadata");
    CHECK(student_new("clip_vision", 0, err) == NULL && strstr(err, "clip_vision"),
          "student_new: clip_vision needs its file (%s)", err);
    student *sn = student_new("openclip_timm", 0, err);
    CHECK(sn && student_feature_dim(sn) == 512 && param_find(student_params(sn), "visual.head.proj.weight") >= 0,
          "student_new: openclip_timm projects to 512");
    student_free(sn);

    check_openclip_grad("oc/open_clip_model.safetensors");

    resnet_free(r18), resnet_free(r34), resnet_free(r50);
    mobilenet_free(mb), mobilenet_free(oc.mb);
    vit_free(vs);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0) printf("FAIL: removing %s\n", dir);
    test_norm();
    CHECK_EXIT();
}
