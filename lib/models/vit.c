/* vit: timm ViT students; see vit.h.
 *
 * tokens (B,T,C), T = 1 + gh*gw: row 0 of each image is cls_token + pos[0],
 * row 1+i is patch i + pos[1+i]; the transformer stack runs in place on the
 * tokens; the feature is LayerNorm(eps 1e-6) of row 0. When the patch grid
 * differs from pos_embed's, the grid part of pos_embed is resized as timm's
 * resample_abs_pos_embed does: F.interpolate(mode="bicubic", antialias=True),
 * i.e. PIL-style separable bicubic filtering (a = -0.5, the support widened
 * by the scale when shrinking, weights normalised), width first, then height. */
#include "vit.h"

#include "models/transformer.h"
#include "nn/layernorm.h"
#include "nn/patch.h"
#include "util.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define VIT_EPS 1e-6f
#define NT 12 /* tensors per block */

struct vit {
    int C, L, NH, P, grid, nclasses;
    tf_config cfg;
    params p;
    int cls, pos, pw, pb, nw, nb, blk0;
    tf_block *w, *g;
    /* the last forward */
    int B, H, W, gh, gw, T, saved;
    const float *x;
    float *tok, *pe, *pos_cur, *cls_in, *mean, *rstd;
    float *rh, *rw; /* resize weights (gh,grid), (gw,grid), or NULL */
    size_t cap_tok, cap_pe;
    tf_acts *acts;
    int acts_B, acts_T;
    int bwd_blocks; /* blocks the last backward pass went through */
};

static const char *const BLOCK_NAMES[NT] = {"norm1.weight",    "norm1.bias",      "attn.qkv.weight", "attn.qkv.bias",
                                            "attn.proj.weight", "attn.proj.bias",  "norm2.weight",    "norm2.bias",
                                            "mlp.fc1.weight",  "mlp.fc1.bias",    "mlp.fc2.weight",  "mlp.fc2.bias"};

vit *vit_new_custom(int C, int L, int NH, int P, int img, int nclasses)
{
    if (C <= 0 || L <= 0 || NH <= 0 || C % NH || P <= 0 || img < P) return NULL;
    vit *m = xcalloc(1, sizeof *m);
    m->C = C, m->L = L, m->NH = NH, m->P = P, m->grid = img / P, m->nclasses = nclasses;
    m->cfg = (tf_config){.C = C, .NH = NH, .L = L, .hidden = 4 * C, .act = TF_GELU, .causal = 0, .eps = VIT_EPS};
    param_init(&m->p);
    int64_t s3[3] = {1, 1, C}, sp[3] = {1, 1 + m->grid * m->grid, C}, sw[4] = {C, 3, P, P}, sc[1] = {C};
    m->cls = param_add(&m->p, "cls_token", 3, s3, 0);
    m->pos = param_add(&m->p, "pos_embed", 3, sp, 0);
    m->pw = param_add(&m->p, "patch_embed.proj.weight", 4, sw, 0);
    m->pb = param_add(&m->p, "patch_embed.proj.bias", 1, sc, 0);
    m->blk0 = m->p.n;
    char name[128];
    int H = 4 * C;
    for (int l = 0; l < L; l++)
        for (int k = 0; k < NT; k++) {
            int64_t shape[2];
            int nd = 1;
            switch (k) {
            case 2: shape[0] = 3 * C, shape[1] = C, nd = 2; break;
            case 3: shape[0] = 3 * C; break;
            case 4: shape[0] = C, shape[1] = C, nd = 2; break;
            case 8: shape[0] = H, shape[1] = C, nd = 2; break;
            case 9: shape[0] = H; break;
            case 10: shape[0] = C, shape[1] = H, nd = 2; break;
            default: shape[0] = C;
            }
            snprintf(name, sizeof name, "blocks.%d.%s", l, BLOCK_NAMES[k]);
            param_add(&m->p, name, nd, shape, 0);
        }
    m->nw = param_add(&m->p, "norm.weight", 1, sc, 0);
    m->nb = param_add(&m->p, "norm.bias", 1, sc, 0);
    if (nclasses > 0) {
        int64_t hw[2] = {nclasses, C}, hb[1] = {nclasses};
        param_add(&m->p, "head.weight", 2, hw, 0);
        param_add(&m->p, "head.bias", 1, hb, 0);
        param_alloc(&m->p);
        param_freeze(&m->p, "head", 1); /* not part of the feature */
    } else {
        param_alloc(&m->p);
    }
    m->w = xcalloc(L, sizeof *m->w);
    m->g = xcalloc(L, sizeof *m->g);
    for (int l = 0; l < L; l++) {
        float *d[NT];
        for (int k = 0; k < NT; k++) d[k] = param_data(&m->p, m->blk0 + l * NT + k);
        m->w[l] = (tf_block){d[0], d[1], d[2], d[3], d[4], d[5], d[6], d[7], d[8], d[9], d[10], d[11]};
    }
    return m;
}

vit *vit_new(int kind, int img, int nclasses)
{
    switch (kind) {
    case VIT_S16: return vit_new_custom(384, 12, 6, 16, img, nclasses);
    case VIT_B16: return vit_new_custom(768, 12, 12, 16, img, nclasses);
    }
    return NULL;
}

void vit_free(vit *m)
{
    if (!m) return;
    param_free(&m->p);
    free(m->w);
    free(m->g);
    free(m->tok);
    free(m->pe);
    free(m->pos_cur);
    free(m->cls_in);
    free(m->mean);
    free(m->rstd);
    free(m->rh);
    free(m->rw);
    if (m->acts) tf_acts_free(m->acts);
    free(m);
}

int vit_detect(const st_file *f, int *kind, int *nclasses, char *err)
{
    const st_tensor *pw = st_find(f, "patch_embed.proj.weight");
    if (!pw || pw->ndim != 4 || !st_find(f, "cls_token") || !st_find(f, "pos_embed"))
        return vl_error(err, "%s: no 'patch_embed.proj.weight', 'cls_token', 'pos_embed': not a timm ViT", f->path);
    int C = (int)pw->shape[0];
    if (pw->shape[2] != 16 || pw->shape[3] != 16)
        return vl_error(err, "%s: tensor 'patch_embed.proj.weight' has %dx%d patches; ViT-S/16 and -B/16 use 16x16",
                        f->path, (int)pw->shape[2], (int)pw->shape[3]);
    if (C == 768)
        *kind = VIT_B16;
    else if (C == 384)
        *kind = VIT_S16;
    else
        return vl_error(err, "%s: tensor 'patch_embed.proj.weight': width %d is none of ViT-S (384), ViT-B (768)",
                        f->path, C);
    if (!st_find(f, "blocks.11.norm1.weight") || st_find(f, "blocks.12.norm1.weight"))
        return vl_error(err, "%s: tensor 'blocks.11.norm1.weight': the model does not have 12 blocks", f->path);
    const st_tensor *h = st_find(f, "head.weight");
    *nclasses = h && h->ndim == 2 ? (int)h->shape[0] : 0;
    return 0;
}

params *vit_params(vit *m) { return &m->p; }
int vit_feature_dim(const vit *m) { return m->C; }

int vit_load(vit *m, const st_file *f, char *err)
{
    static const char *const ignore[] = {NULL};
    return param_load(&m->p, f, ignore, err);
}

/* ---- antialiased bicubic resize weights, as PyTorch's _upsample_bicubic2d_aa ---- */

static double aa_cubic(double x)
{
    const double a = -0.5;
    x = fabs(x);
    if (x < 1.0) return ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0;
    if (x < 2.0) return (((x - 5.0) * x + 8.0) * x - 4.0) * a;
    return 0.0;
}

/* w (out,in): dense resize matrix */
static float *resize_weights(int out, int in)
{
    float *w = xcalloc((size_t)out * in, sizeof(float));
    double scale = (double)in / out;
    double support = scale >= 1.0 ? 2.0 * scale : 2.0, inv = scale >= 1.0 ? 1.0 / scale : 1.0;
    for (int i = 0; i < out; i++) {
        double center = scale * (i + 0.5);
        long xmin = (long)(center - support + 0.5);
        if (xmin < 0) xmin = 0;
        long xmax = (long)(center + support + 0.5);
        if (xmax > in) xmax = in;
        double tw[64], total = 0;
        int n = (int)(xmax - xmin);
        if (n > 64) n = 64;
        for (int j = 0; j < n; j++) total += tw[j] = aa_cubic((j + xmin - center + 0.5) * inv);
        for (int j = 0; j < n; j++) w[(size_t)i * in + xmin + j] = (float)(total != 0.0 ? tw[j] / total : 0.0);
    }
    return w;
}

/* out (gh*gw,C) from in (grid*grid,C): width pass, then height pass */
static void resize_grid(float *out, const float *in, const float *rh, const float *rw, int grid, int gh, int gw, int C)
{
    float *tmp = xcalloc((size_t)grid * gw * C, sizeof(float));
    for (int y = 0; y < grid; y++)
        for (int x = 0; x < gw; x++)
            for (int j = 0; j < grid; j++) {
                float wt = rw[(size_t)x * grid + j];
                if (wt == 0.0f) continue;
                const float *s = in + ((size_t)y * grid + j) * C;
                float *d = tmp + ((size_t)y * gw + x) * C;
                for (int c = 0; c < C; c++) d[c] += wt * s[c];
            }
    memset(out, 0, (size_t)gh * gw * C * sizeof(float));
    for (int y = 0; y < gh; y++)
        for (int j = 0; j < grid; j++) {
            float wt = rh[(size_t)y * grid + j];
            if (wt == 0.0f) continue;
            for (int x = 0; x < gw; x++) {
                const float *s = tmp + ((size_t)j * gw + x) * C;
                float *d = out + ((size_t)y * gw + x) * C;
                for (int c = 0; c < C; c++) d[c] += wt * s[c];
            }
        }
    free(tmp);
}

/* din (grid*grid,C) += resize^T dout (gh*gw,C) */
static void resize_grid_backward(float *din, const float *dout, const float *rh, const float *rw, int grid, int gh,
                                 int gw, int C)
{
    float *tmp = xcalloc((size_t)grid * gw * C, sizeof(float));
    for (int y = 0; y < gh; y++)
        for (int j = 0; j < grid; j++) {
            float wt = rh[(size_t)y * grid + j];
            if (wt == 0.0f) continue;
            for (int x = 0; x < gw; x++) {
                const float *s = dout + ((size_t)y * gw + x) * C;
                float *d = tmp + ((size_t)j * gw + x) * C;
                for (int c = 0; c < C; c++) d[c] += wt * s[c];
            }
        }
    for (int y = 0; y < grid; y++)
        for (int x = 0; x < gw; x++)
            for (int j = 0; j < grid; j++) {
                float wt = rw[(size_t)x * grid + j];
                if (wt == 0.0f) continue;
                const float *s = tmp + ((size_t)y * gw + x) * C;
                float *d = din + ((size_t)y * grid + j) * C;
                for (int c = 0; c < C; c++) d[c] += wt * s[c];
            }
    free(tmp);
}

static float *grow(float *p, size_t *cap, size_t n)
{
    if (n <= *cap) return p;
    free(p);
    *cap = n;
    return xmalloc_aligned(n * sizeof(float));
}

int vit_forward(vit *m, float *feat, const float *x, int B, int H, int W, int save, char *err)
{
    int P = m->P, C = m->C;
    if (H < P || W < P || H % P || W % P)
        return vl_error(err, "input %dx%d: the ViT needs sides that are multiples of %d", H, W, P);
    int gh = H / P, gw = W / P, T = 1 + gh * gw;
    if (gh != m->gh || gw != m->gw) {
        free(m->rh), free(m->rw);
        m->rh = m->rw = NULL;
        if (gh != m->grid || gw != m->grid) {
            m->rh = resize_weights(gh, m->grid);
            m->rw = resize_weights(gw, m->grid);
        }
        free(m->pos_cur);
        m->pos_cur = xmalloc_aligned((size_t)T * C * sizeof(float));
    }
    m->B = B, m->H = H, m->W = W, m->gh = gh, m->gw = gw, m->T = T, m->x = x, m->saved = save;
    m->tok = grow(m->tok, &m->cap_tok, (size_t)B * T * C);
    m->pe = grow(m->pe, &m->cap_pe, (size_t)B * (T - 1) * C);
    free(m->cls_in), free(m->mean), free(m->rstd);
    m->cls_in = xmalloc((size_t)B * C * sizeof(float));
    m->mean = xmalloc(B * sizeof(float));
    m->rstd = xmalloc(B * sizeof(float));

    const float *pos = param_data(&m->p, m->pos), *cls = param_data(&m->p, m->cls);
    memcpy(m->pos_cur, pos, C * sizeof(float));
    if (m->rh)
        resize_grid(m->pos_cur + C, pos + C, m->rh, m->rw, m->grid, gh, gw, C);
    else
        memcpy(m->pos_cur + C, pos + C, (size_t)(T - 1) * C * sizeof(float));

    patch_forward(m->pe, x, param_data(&m->p, m->pw), param_data(&m->p, m->pb), B, 3, H, W, C, P);
    for (int b = 0; b < B; b++) {
        float *t = m->tok + (size_t)b * T * C;
        for (int c = 0; c < C; c++) t[c] = cls[c] + m->pos_cur[c];
        const float *pe = m->pe + (size_t)b * (T - 1) * C;
        for (size_t i = 0; i < (size_t)(T - 1) * C; i++) t[C + i] = pe[i] + m->pos_cur[C + i];
    }
    if (save && (!m->acts || m->acts_B < B || m->acts_T != T)) {
        if (m->acts) tf_acts_free(m->acts);
        m->acts = tf_acts_new(&m->cfg, B, T);
        m->acts_B = B, m->acts_T = T;
    }
    tf_forward(&m->cfg, m->w, m->tok, B, T, save ? m->acts : NULL);
    for (int b = 0; b < B; b++) memcpy(m->cls_in + (size_t)b * C, m->tok + (size_t)b * T * C, C * sizeof(float));
    layernorm_forward(feat, m->mean, m->rstd, m->cls_in, param_data(&m->p, m->nw), param_data(&m->p, m->nb), B, C,
                      VIT_EPS);
    return 0;
}

void vit_backward(vit *m, const float *dfeat)
{
    if (!m->saved) return;
    int B = m->B, T = m->T, C = m->C;
    params *p = &m->p;
    float *dcls_in = xcalloc((size_t)B * C, sizeof(float));
    layernorm_backward(dcls_in, param_grad(p, m->nw), param_grad(p, m->nb), dfeat, m->cls_in,
                       param_data(p, m->nw), m->mean, m->rstd, B, C);
    for (int l = 0; l < m->L; l++) {
        float *g[NT];
        for (int k = 0; k < NT; k++) g[k] = param_grad(p, m->blk0 + l * NT + k);
        m->g[l] = (tf_block){g[0], g[1], g[2], g[3], g[4], g[5], g[6], g[7], g[8], g[9], g[10], g[11]};
    }
    float *dcls = param_grad(p, m->cls), *dpos = param_grad(p, m->pos);
    float *dpw = param_grad(p, m->pw), *dpb = param_grad(p, m->pb);
    /* the stack's input gradient is wanted only for the embeddings; without
     * them the pass stops at the lowest block that trains */
    int need_in = dcls || dpos || dpw || dpb;
    int lo = need_in ? 0 : tf_lowest_trainable(&m->cfg, m->g);
    m->bwd_blocks = 0;
    if (lo == m->L && !need_in) {
        free(dcls_in);
        return;
    }
    float *dtok = xcalloc((size_t)B * T * C, sizeof(float));
    for (int b = 0; b < B; b++) memcpy(dtok + (size_t)b * T * C, dcls_in + (size_t)b * C, C * sizeof(float));
    free(dcls_in);
    m->bwd_blocks = tf_backward(&m->cfg, m->w, m->g, dtok, m->acts, B, T, lo);

    if (dcls || dpos) {
        float *dpc = xcalloc((size_t)T * C, sizeof(float));
        for (int b = 0; b < B; b++) {
            const float *d = dtok + (size_t)b * T * C;
            for (size_t i = 0; i < (size_t)T * C; i++) dpc[i] += d[i];
        }
        if (dcls)
            for (int c = 0; c < C; c++) dcls[c] += dpc[c];
        if (dpos) {
            for (int c = 0; c < C; c++) dpos[c] += dpc[c];
            if (m->rh)
                resize_grid_backward(dpos + C, dpc + C, m->rh, m->rw, m->grid, m->gh, m->gw, C);
            else
                for (size_t i = C; i < (size_t)T * C; i++) dpos[i] += dpc[i];
        }
        free(dpc);
    }
    if (dpw || dpb) {
        /* the patch rows of dtok, packed (B,T-1,C) */
        for (int b = 0; b < B; b++)
            memcpy(m->pe + (size_t)b * (T - 1) * C, dtok + ((size_t)b * T + 1) * C, (size_t)(T - 1) * C * sizeof(float));
        patch_backward(NULL, dpw, dpb, m->pe, m->x, param_data(p, m->pw), B, 3, m->H, m->W, C, m->P);
    }
    free(dtok);
}

int vit_backward_blocks(const vit *m) { return m->bwd_blocks; }

size_t vit_buffer_bytes(const vit *m)
{
    return (m->cap_tok + m->cap_pe) * sizeof(float) + (m->acts ? tf_acts_bytes(m->acts) : 0);
}
