/* augment: DomainBed's training augmentation with torchvision's PIL-image
 * semantics (see augment.h). The colour operations copy PIL's arithmetic,
 * float and double exactly where PIL uses them (Image.blend with a float
 * factor and truncation, rgb2hsv / hsv2rgb in libImaging/Convert.c), so that
 * the same parameters give the same bytes; each expression is split where
 * PIL's C would round, so that no compiler contracts it into a fused
 * multiply-add. */
#include "augment.h"
#include "util.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#ifdef __clang__
#pragma STDC FP_CONTRACT OFF
#endif

const aug_config AUG_DOMAINBED = {
    .scale_lo = 0.7,
    .scale_hi = 1.0,
    .ratio_lo = 3.0 / 4.0,
    .ratio_hi = 4.0 / 3.0,
    .flip_p = 0.5,
    .brightness = 0.3,
    .contrast = 0.3,
    .saturation = 0.3,
    .hue = 0.3,
    .gray_p = 0.1,
};

static double uniform(rng *r, double lo, double hi) { return lo + (hi - lo) * rng_uniform(r); }

void aug_sample(aug_params *p, const aug_config *cfg, rng *r, int w, int h)
{
    memset(p, 0, sizeof(*p));
    double area = (double)w * h;
    double lr0 = log(cfg->ratio_lo), lr1 = log(cfg->ratio_hi);
    int found = 0;
    for (int t = 0; t < 10 && !found; t++) {
        double target = area * uniform(r, cfg->scale_lo, cfg->scale_hi);
        double ar = exp(uniform(r, lr0, lr1));
        /* Python's round(): half to even, the default rounding mode */
        int cw = (int)nearbyint(sqrt(target * ar));
        int ch = (int)nearbyint(sqrt(target / ar));
        if (cw > 0 && cw <= w && ch > 0 && ch <= h) {
            p->crop_y = (int)rng_below(r, (uint64_t)(h - ch + 1));
            p->crop_x = (int)rng_below(r, (uint64_t)(w - cw + 1));
            p->crop_w = cw;
            p->crop_h = ch;
            found = 1;
        }
    }
    if (!found) {
        double in_ratio = (double)w / h;
        int cw = w, ch = h;
        if (in_ratio < cfg->ratio_lo) ch = (int)nearbyint(w / cfg->ratio_lo);
        else if (in_ratio > cfg->ratio_hi) cw = (int)nearbyint(h * cfg->ratio_hi);
        p->crop_w = cw;
        p->crop_h = ch;
        p->crop_y = (h - ch) / 2;
        p->crop_x = (w - cw) / 2;
    }
    p->flip = rng_uniform(r) < cfg->flip_p;
    for (int i = 0; i < 4; i++) p->order[i] = i;
    for (int i = 3; i > 0; i--) {
        int j = (int)rng_below(r, (uint64_t)i + 1);
        int t = p->order[i];
        p->order[i] = p->order[j];
        p->order[j] = t;
    }
    p->brightness = uniform(r, 1 - cfg->brightness, 1 + cfg->brightness);
    p->contrast = uniform(r, 1 - cfg->contrast, 1 + cfg->contrast);
    p->saturation = uniform(r, 1 - cfg->saturation, 1 + cfg->saturation);
    p->hue = uniform(r, -cfg->hue, cfg->hue);
    p->gray = rng_uniform(r) < cfg->gray_p;
}

/* PIL's ImagingBlend(im1, im2, alpha) for one sample: im1 + alpha (im2 - im1)
 * in float, truncated, clamped when alpha is outside [0, 1]. */
static inline uint8_t blend(int a, int b, float alpha)
{
    float d = alpha * (float)(b - a);
    float t = (float)a + d;
    if (t <= 0.0f) return 0;
    if (t >= 255.0f) return 255;
    return (uint8_t)t;
}

void aug_brightness(uint8_t *pix, size_t n, double factor)
{
    float a = (float)factor;
    uint8_t lut[256];
    for (int v = 0; v < 256; v++) lut[v] = blend(0, v, a);
    for (size_t i = 0; i < 3 * n; i++) pix[i] = lut[pix[i]];
}

void aug_contrast(uint8_t *pix, size_t n, double factor)
{
    if (!n) return;
    uint64_t sum = 0;
    for (size_t i = 0; i < n; i++) sum += aug_luma(pix + 3 * i);
    /* ImageStat's mean of the L image, then int(mean + 0.5) */
    int mean = (int)((double)sum / (double)n + 0.5);
    float a = (float)factor;
    uint8_t lut[256];
    for (int v = 0; v < 256; v++) lut[v] = blend(mean, v, a);
    for (size_t i = 0; i < 3 * n; i++) pix[i] = lut[pix[i]];
}

/* Saturation and hue map each colour independently of the others: a
 * direct-mapped cache of colours already mapped spares the arithmetic for
 * repeated colours (most of a sketch or a cartoon). */
#define CACHE_BITS 14
typedef struct {
    uint32_t key[1 << CACHE_BITS]; /* 1 << 24 | rgb when filled */
    uint8_t val[1 << CACHE_BITS][3];
} color_cache;

static inline uint32_t cache_slot(uint32_t rgb) { return (rgb * 0x9E3779B1u) >> (32 - CACHE_BITS); }

void aug_saturation(uint8_t *pix, size_t n, double factor)
{
    float a = (float)factor;
    color_cache *c = xcalloc(1, sizeof(*c));
    for (size_t i = 0; i < n; i++) {
        uint8_t *p = pix + 3 * i;
        uint32_t rgb = (uint32_t)p[0] << 16 | p[1] << 8 | p[2], slot = cache_slot(rgb);
        if (c->key[slot] == (rgb | 1u << 24)) {
            memcpy(p, c->val[slot], 3);
            continue;
        }
        int l = aug_luma(p);
        p[0] = blend(l, p[0], a);
        p[1] = blend(l, p[1], a);
        p[2] = blend(l, p[2], a);
        c->key[slot] = rgb | 1u << 24;
        memcpy(c->val[slot], p, 3);
    }
    free(c);
}

static inline uint8_t clip8i(int v) { return (uint8_t)(v <= 0 ? 0 : v >= 255 ? 255 : v); }

/* libImaging's rgb2hsv_row */
static inline void rgb2hsv(uint8_t *out, const uint8_t *in)
{
    uint8_t r = in[0], g = in[1], b = in[2];
    uint8_t maxc = r > g ? (r > b ? r : b) : (g > b ? g : b);
    uint8_t minc = r < g ? (r < b ? r : b) : (g < b ? g : b);
    uint8_t uh, us, uv = maxc;
    if (minc == maxc) {
        uh = 0;
        us = 0;
    } else {
        float h, s, rc, gc, bc, cr;
        cr = (float)(maxc - minc);
        s = cr / (float)maxc;
        rc = ((float)(maxc - r)) / cr;
        gc = ((float)(maxc - g)) / cr;
        bc = ((float)(maxc - b)) / cr;
        if (r == maxc) {
            h = bc - gc;
        } else if (g == maxc) {
            double t = 2.0 + (double)rc;
            h = (float)(t - (double)bc);
        } else {
            double t = 4.0 + (double)gc;
            h = (float)(t - (double)rc);
        }
        double q = (double)h / 6.0;
        q = q + 1.0;
        /* fmod(q, 1.0) for q in [0, 2), exactly (q - 1 is exact there) */
        h = (float)(q >= 1.0 ? q - 1.0 : q);
        double hh = (double)h * 255.0, ss = (double)s * 255.0;
        uh = clip8i((int)hh);
        us = clip8i((int)ss);
    }
    out[0] = uh;
    out[1] = us;
    out[2] = uv;
}

/* round() (halves away from zero) of a non-negative double below 2^31,
 * exactly, without the libm call */
static inline int round_nonneg(double x)
{
    int t = (int)x;
    return t + (x - (double)t >= 0.5);
}

/* libImaging's hsv2rgb for one pixel */
static inline void hsv2rgb(uint8_t *out, const uint8_t *in)
{
    uint8_t h = in[0], s = in[1], v = in[2];
    if (s == 0) {
        out[0] = out[1] = out[2] = v;
        return;
    }
    double h6 = (double)(float)h * 6.0;
    h6 = h6 / 255.0;
    int i = (int)h6; /* floor: h6 >= 0 */
    float f = (float)(h6 - (double)(float)i);
    float fs = (float)((double)(float)s / 255.0);
    double fv = (double)(float)v;
    float fsf = fs * f;
    double a1 = 1.0 - (double)fs, a2 = 1.0 - (double)fsf;
    double omf = 1.0 - (double)f;
    double fsomf = (double)fs * omf;
    double a3 = 1.0 - fsomf;
    double pp = fv * a1, qq = fv * a2, tt = fv * a3;
    /* pp, qq, tt are >= 0: 1 - fs, 1 - fs f and 1 - fs (1 - f) are */
    uint8_t up = clip8i(round_nonneg(pp)), uq = clip8i(round_nonneg(qq)), ut = clip8i(round_nonneg(tt));
    switch (i % 6) {
    case 0: out[0] = v, out[1] = ut, out[2] = up; break;
    case 1: out[0] = uq, out[1] = v, out[2] = up; break;
    case 2: out[0] = up, out[1] = v, out[2] = ut; break;
    case 3: out[0] = up, out[1] = uq, out[2] = v; break;
    case 4: out[0] = ut, out[1] = up, out[2] = v; break;
    case 5: out[0] = v, out[1] = up, out[2] = uq; break;
    }
}

void aug_hue(uint8_t *pix, size_t n, double hue)
{
    /* numpy's np.uint8(hue * 255): truncation toward zero, then modulo 256 */
    uint8_t shift = (uint8_t)(int)(hue * 255);
    color_cache *c = xcalloc(1, sizeof(*c));
    for (size_t i = 0; i < n; i++) {
        uint8_t *p = pix + 3 * i;
        uint32_t rgb = (uint32_t)p[0] << 16 | p[1] << 8 | p[2], slot = cache_slot(rgb);
        if (c->key[slot] == (rgb | 1u << 24)) {
            memcpy(p, c->val[slot], 3);
            continue;
        }
        uint8_t hsv[3];
        rgb2hsv(hsv, p);
        hsv[0] = (uint8_t)(hsv[0] + shift);
        hsv2rgb(p, hsv);
        c->key[slot] = rgb | 1u << 24;
        memcpy(c->val[slot], p, 3);
    }
    free(c);
}

void aug_grayscale(uint8_t *pix, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        uint8_t *p = pix + 3 * i;
        p[0] = p[1] = p[2] = aug_luma(p);
    }
}

void aug_hflip(uint8_t *pix, int w, int h)
{
    for (int y = 0; y < h; y++) {
        uint8_t *row = pix + (size_t)y * w * 3;
        for (int a = 0, b = w - 1; a < b; a++, b--) {
            uint8_t t[3];
            memcpy(t, row + 3 * a, 3);
            memcpy(row + 3 * a, row + 3 * b, 3);
            memcpy(row + 3 * b, t, 3);
        }
    }
}

void aug_apply_color(img *im, const aug_params *p)
{
    size_t n = (size_t)im->w * im->h;
    if (p->flip) aug_hflip(im->pix, im->w, im->h);
    for (int k = 0; k < 4; k++) {
        switch (p->order[k]) {
        case AUG_BRIGHTNESS: aug_brightness(im->pix, n, p->brightness); break;
        case AUG_CONTRAST: aug_contrast(im->pix, n, p->contrast); break;
        case AUG_SATURATION: aug_saturation(im->pix, n, p->saturation); break;
        case AUG_HUE: aug_hue(im->pix, n, p->hue); break;
        }
    }
    if (p->gray) aug_grayscale(im->pix, n);
}

int aug_view(img *out, img_src *src, const aug_params *p, int size, int exact, char *err)
{
    memset(out, 0, sizeof(*out));
    /* the crop must keep at least size x size pixels after the DCT scaling */
    int64_t nw = ((int64_t)size * src->w + p->crop_w - 1) / p->crop_w;
    int64_t nh = ((int64_t)size * src->h + p->crop_h - 1) / p->crop_h;
    int d = exact ? 1 : img_dct_denom(src, (int)nw, (int)nh);
    img full;
    if (img_decode(src, d, &full, err) != 0) return -1;
    img_alloc(out, size, size);
    int rc;
    if (d == 1) {
        /* torchvision: crop, then resize the crop as a whole */
        const uint8_t *at = full.pix + ((size_t)p->crop_y * full.w + p->crop_x) * 3;
        rc = img_resize(out->pix, size, size, at, p->crop_w, p->crop_h, (size_t)full.w * 3, NULL);
    } else {
        /* the crop in scaled coordinates: cut on whole pixels around it and
         * resample the exact (fractional) region */
        double x0 = (double)p->crop_x / d, y0 = (double)p->crop_y / d;
        double x1 = (double)(p->crop_x + p->crop_w) / d, y1 = (double)(p->crop_y + p->crop_h) / d;
        int ix0 = (int)floor(x0), iy0 = (int)floor(y0);
        int ix1 = (int)ceil(x1), iy1 = (int)ceil(y1);
        if (ix1 > full.w) ix1 = full.w;
        if (iy1 > full.h) iy1 = full.h;
        float box[4] = {(float)(x0 - ix0), (float)(y0 - iy0), (float)(x1 - ix0), (float)(y1 - iy0)};
        if (box[2] > ix1 - ix0) box[2] = (float)(ix1 - ix0);
        if (box[3] > iy1 - iy0) box[3] = (float)(iy1 - iy0);
        const uint8_t *at = full.pix + ((size_t)iy0 * full.w + ix0) * 3;
        rc = img_resize(out->pix, size, size, at, ix1 - ix0, iy1 - iy0, (size_t)full.w * 3, box);
    }
    img_free(&full);
    if (rc != 0) {
        img_free(out);
        return vl_error(err, "%s: crop %dx%d+%d+%d does not fit the image", src->name, p->crop_w, p->crop_h,
                        p->crop_x, p->crop_y);
    }
    aug_apply_color(out, p);
    return 0;
}

int aug_view_keyed(img *out, img_src *src, uint64_t seed, const char *id, size_t idlen, int64_t view, int size,
                   int exact, char *err)
{
    rng r;
    aug_params p;
    rng_for_key(&r, seed, id, idlen, (uint64_t)view);
    aug_sample(&p, &AUG_DOMAINBED, &r, src->w, src->h);
    return aug_view(out, src, &p, size, exact, err);
}
