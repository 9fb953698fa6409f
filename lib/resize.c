/* resize: PIL's antialiased bilinear resampling (libImaging/Resample.c,
 * ImagingResample with the triangle filter), reproduced operation by
 * operation so that the output equals Image.resize(size, BILINEAR, box):
 * coefficients in double, normalised per output pixel, converted to 22-bit
 * fixed point with PIL's rounding; the horizontal pass runs first over the
 * rows the vertical pass needs and stores 8-bit values; each pass adds half
 * an output unit before shifting and clamps to 0..255. */
#include "image.h"
#include "util.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define PRECISION_BITS (32 - 8 - 2)

static double triangle(double x)
{
    if (x < 0.0) x = -x;
    if (x < 1.0) return 1.0 - x;
    return 0.0;
}

/* PIL's precompute_coeffs: for each output position, the first input index
 * (bounds[2i]), the tap count (bounds[2i+1]) and ksize normalised weights.
 * in0/in1 are floats, as PIL's box is. Returns ksize. */
static int coeffs(int insize, float in0, float in1, int outsize, int **boundsp, double **kkp)
{
    double scale, filterscale;
    filterscale = scale = (double)(in1 - in0) / outsize;
    if (filterscale < 1.0) filterscale = 1.0;
    double support = 1.0 * filterscale;
    int ksize = (int)ceil(support) * 2 + 1;
    double *kk = xmalloc((size_t)outsize * ksize * sizeof(double));
    int *bounds = xmalloc((size_t)outsize * 2 * sizeof(int));
    for (int xx = 0; xx < outsize; xx++) {
        double center = in0 + (xx + 0.5) * scale;
        double ww = 0.0, ss = 1.0 / filterscale;
        int xmin = (int)(center - support + 0.5);
        if (xmin < 0) xmin = 0;
        int xmax = (int)(center + support + 0.5);
        if (xmax > insize) xmax = insize;
        xmax -= xmin;
        double *k = &kk[(size_t)xx * ksize];
        int x;
        for (x = 0; x < xmax; x++) {
            double w = triangle((x + xmin - center + 0.5) * ss);
            k[x] = w;
            ww += w;
        }
        for (x = 0; x < xmax; x++)
            if (ww != 0.0) k[x] /= ww;
        for (; x < ksize; x++) k[x] = 0;
        bounds[xx * 2] = xmin;
        bounds[xx * 2 + 1] = xmax;
    }
    *boundsp = bounds;
    *kkp = kk;
    return ksize;
}

/* PIL's normalize_coeffs_8bpc, into a separate int array. */
static int32_t *fixed_coeffs(const double *kk, size_t n)
{
    int32_t *k = xmalloc(n * sizeof(int32_t));
    for (size_t i = 0; i < n; i++)
        k[i] = kk[i] < 0 ? (int32_t)(-0.5 + kk[i] * (1 << PRECISION_BITS))
                         : (int32_t)(0.5 + kk[i] * (1 << PRECISION_BITS));
    return k;
}

static inline uint8_t clip8(int32_t v)
{
    if (v >= (1 << PRECISION_BITS << 8)) return 255;
    if (v <= 0) return 0;
    return (uint8_t)(v >> PRECISION_BITS);
}

/* The passes use SSE4.1 / AVX2 where the target has them (x86-64 with
 * -march=native), plain C otherwise; both compute PIL's integer sums lane by
 * lane, so the bytes are the same. A saturating pack after the shift is
 * clip8: v >> 22 clamped to 0..255. */
#if defined(__SSE4_1__)
#include <immintrin.h>

static inline __m128i load4(const uint8_t *p)
{
    uint32_t v;
    memcpy(&v, p, 4);
    return _mm_cvtepu8_epi32(_mm_cvtsi32_si128((int)v));
}
#endif
#if defined(__AVX2__)
/* four bytes at a into lanes 0-3, four at b into lanes 4-7 */
static inline __m256i load4x2(const uint8_t *a, const uint8_t *b)
{
    uint32_t x, y;
    memcpy(&x, a, 4);
    memcpy(&y, b, 4);
    return _mm256_cvtepu8_epi32(_mm_cvtsi64_si128((long long)((uint64_t)y << 32 | x)));
}
#endif

/* out (rows, ow, 3); in rows [y0, y0+rows) of an input iw pixels wide,
 * `stride` bytes apart */
static void pass_h(uint8_t *out, int ow, int rows, const uint8_t *in, int iw, size_t stride, int y0, int ksize,
                   const int *bounds, const int32_t *kk)
{
    for (int yy = 0; yy < rows; yy++) {
        const uint8_t *src = in + (size_t)(yy + y0) * stride;
        uint8_t *dst = out + (size_t)yy * ow * 3;
        for (int xx = 0; xx < ow; xx++) {
            int xmin = bounds[2 * xx], xmax = bounds[2 * xx + 1];
            const int32_t *k = kk + (size_t)xx * ksize;
            const uint8_t *s = src + (size_t)xmin * 3;
#if defined(__AVX2__)
            /* two output pixels at once, over the larger tap count: the
             * coefficients past a pixel's own count are zero */
            if (xx + 1 < ow) {
                int xmin1 = bounds[2 * xx + 2], xmax1 = bounds[2 * xx + 3];
                int taps = xmax > xmax1 ? xmax : xmax1;
                if (xmin + taps < iw && xmin1 + taps < iw) {
                    const int32_t *k1 = k + ksize;
                    const uint8_t *s1 = src + (size_t)xmin1 * 3;
                    __m256i acc = _mm256_set1_epi32(1 << (PRECISION_BITS - 1));
                    for (int x = 0; x < taps; x++) {
                        __m256i kx = _mm256_setr_m128i(_mm_set1_epi32(k[x]), _mm_set1_epi32(k1[x]));
                        acc = _mm256_add_epi32(acc, _mm256_mullo_epi32(load4x2(s + 3 * x, s1 + 3 * x), kx));
                    }
                    acc = _mm256_srai_epi32(acc, PRECISION_BITS);
                    acc = _mm256_packs_epi32(acc, acc);
                    acc = _mm256_packus_epi16(acc, acc);
                    uint32_t va = (uint32_t)_mm256_cvtsi256_si32(acc), vb = (uint32_t)_mm256_extract_epi32(acc, 4);
                    memcpy(dst + 3 * xx, &va, 4); /* its 4th byte is overwritten by vb */
                    if (xx + 2 < ow) {
                        memcpy(dst + 3 * xx + 3, &vb, 4);
                    } else {
                        dst[3 * xx + 3] = (uint8_t)vb;
                        dst[3 * xx + 4] = (uint8_t)(vb >> 8);
                        dst[3 * xx + 5] = (uint8_t)(vb >> 16);
                    }
                    xx++;
                    continue;
                }
            }
#endif
#if defined(__SSE4_1__)
            if (xmin + xmax < iw) {
                /* four bytes per tap: the pixel and the next one's red, in a
                 * lane that is thrown away */
                __m128i acc = _mm_set1_epi32(1 << (PRECISION_BITS - 1));
                for (int x = 0; x < xmax; x++)
                    acc = _mm_add_epi32(acc, _mm_mullo_epi32(load4(s + 3 * x), _mm_set1_epi32(k[x])));
                acc = _mm_srai_epi32(acc, PRECISION_BITS);
                acc = _mm_packus_epi16(_mm_packs_epi32(acc, acc), acc);
                uint32_t v = (uint32_t)_mm_cvtsi128_si32(acc);
                if (xx + 1 < ow) {
                    memcpy(dst + 3 * xx, &v, 4); /* the 4th byte is overwritten next */
                } else {
                    dst[3 * xx] = (uint8_t)v;
                    dst[3 * xx + 1] = (uint8_t)(v >> 8);
                    dst[3 * xx + 2] = (uint8_t)(v >> 16);
                }
                continue;
            }
#endif
            int32_t s0 = 1 << (PRECISION_BITS - 1), s1 = s0, s2 = s0;
            for (int x = 0; x < xmax; x++) {
                s0 += s[3 * x] * k[x];
                s1 += s[3 * x + 1] * k[x];
                s2 += s[3 * x + 2] * k[x];
            }
            dst[3 * xx] = clip8(s0);
            dst[3 * xx + 1] = clip8(s1);
            dst[3 * xx + 2] = clip8(s2);
        }
    }
}

/* out (oh, w, 3); in (?, w, 3) rows `stride` apart; rows already shifted.
 * Integer sums commute, so many samples at a time give PIL's values. */
static void pass_v(uint8_t *out, int w, int oh, const uint8_t *in, size_t stride, int ksize, const int *bounds,
                   const int32_t *kk)
{
    size_t n = (size_t)w * 3;
    for (int yy = 0; yy < oh; yy++) {
        int ymin = bounds[2 * yy], ymax = bounds[2 * yy + 1];
        const int32_t *k = kk + (size_t)yy * ksize;
        const uint8_t *base = in + (size_t)ymin * stride;
        uint8_t *dst = out + (size_t)yy * n;
        size_t i = 0;
#if defined(__AVX2__)
        for (; i + 16 <= n; i += 16) {
            __m256i a0 = _mm256_set1_epi32(1 << (PRECISION_BITS - 1)), a1 = a0;
            for (int y = 0; y < ymax; y++) {
                const uint8_t *s = base + (size_t)y * stride + i;
                __m128i p = _mm_loadu_si128((const __m128i *)s);
                __m256i ky = _mm256_set1_epi32(k[y]);
                a0 = _mm256_add_epi32(a0, _mm256_mullo_epi32(_mm256_cvtepu8_epi32(p), ky));
                a1 = _mm256_add_epi32(a1, _mm256_mullo_epi32(_mm256_cvtepu8_epi32(_mm_srli_si128(p, 8)), ky));
            }
            a0 = _mm256_srai_epi32(a0, PRECISION_BITS);
            a1 = _mm256_srai_epi32(a1, PRECISION_BITS);
            __m256i w16 = _mm256_permute4x64_epi64(_mm256_packs_epi32(a0, a1), 0xd8);
            __m128i b = _mm_packus_epi16(_mm256_castsi256_si128(w16), _mm256_extracti128_si256(w16, 1));
            _mm_storeu_si128((__m128i *)(dst + i), b);
        }
#elif defined(__SSE4_1__)
        for (; i + 8 <= n; i += 8) {
            __m128i a0 = _mm_set1_epi32(1 << (PRECISION_BITS - 1)), a1 = a0;
            for (int y = 0; y < ymax; y++) {
                const uint8_t *s = base + (size_t)y * stride + i;
                __m128i ky = _mm_set1_epi32(k[y]);
                a0 = _mm_add_epi32(a0, _mm_mullo_epi32(load4(s), ky));
                a1 = _mm_add_epi32(a1, _mm_mullo_epi32(load4(s + 4), ky));
            }
            a0 = _mm_srai_epi32(a0, PRECISION_BITS);
            a1 = _mm_srai_epi32(a1, PRECISION_BITS);
            __m128i b = _mm_packus_epi16(_mm_packs_epi32(a0, a1), a0);
            _mm_storel_epi64((__m128i *)(dst + i), b);
        }
#endif
        for (; i < n; i++) {
            int32_t s = 1 << (PRECISION_BITS - 1);
            for (int y = 0; y < ymax; y++) s += base[(size_t)y * stride + i] * k[y];
            dst[i] = clip8(s);
        }
    }
}

static int sizes_ok(int ow, int oh, int iw, int ih)
{
    return ow >= 1 && oh >= 1 && iw >= 1 && ih >= 1 && ow <= IMG_MAX_SIDE && oh <= IMG_MAX_SIDE &&
           iw <= IMG_MAX_SIDE && ih <= IMG_MAX_SIDE;
}

int img_resize(uint8_t *out, int ow, int oh, const uint8_t *in, int iw, int ih, size_t stride, const float *box)
{
    if (!sizes_ok(ow, oh, iw, ih)) return -1;
    float b[4] = {0, 0, (float)iw, (float)ih};
    if (box) memcpy(b, box, sizeof(b));
    if (b[0] < 0 || b[1] < 0 || b[2] > iw || b[3] > ih || b[2] - b[0] <= 0 || b[3] - b[1] <= 0) return -1;
    int need_h = ow != iw || b[0] != 0 || b[2] != ow;
    int need_v = oh != ih || b[1] != 0 || b[3] != oh;
    int *bh, *bv;
    double *kh, *kv;
    int ksh = coeffs(iw, b[0], b[2], ow, &bh, &kh);
    int ksv = coeffs(ih, b[1], b[3], oh, &bv, &kv);
    int32_t *ih_k = fixed_coeffs(kh, (size_t)ow * ksh), *iv_k = fixed_coeffs(kv, (size_t)oh * ksv);
    int first = bv[0], last = bv[oh * 2 - 2] + bv[oh * 2 - 1];
    if (need_h && need_v) {
        for (int i = 0; i < oh; i++) bv[i * 2] -= first;
        uint8_t *tmp = xmalloc((size_t)(last - first) * ow * 3 + 1);
        pass_h(tmp, ow, last - first, in, iw, stride, first, ksh, bh, ih_k);
        pass_v(out, ow, oh, tmp, (size_t)ow * 3, ksv, bv, iv_k);
        free(tmp);
    } else if (need_h) {
        pass_h(out, ow, oh, in, iw, stride, 0, ksh, bh, ih_k);
    } else if (need_v) {
        pass_v(out, ow, oh, in, stride, ksv, bv, iv_k);
    } else {
        for (int y = 0; y < oh; y++) memcpy(out + (size_t)y * ow * 3, in + (size_t)y * stride, (size_t)ow * 3);
    }
    free(bh);
    free(bv);
    free(kh);
    free(kv);
    free(ih_k);
    free(iv_k);
    return 0;
}

void img_resize_to(img *out, const img *in, int w, int h)
{
    img_alloc(out, w, h);
    img_resize(out->pix, w, h, in->pix, in->w, in->h, (size_t)in->w * 3, NULL);
}

void img_resize_ref(uint8_t *out, int ow, int oh, const uint8_t *in, int iw, int ih, size_t stride, const float *box)
{
    float b[4] = {0, 0, (float)iw, (float)ih};
    if (box) memcpy(b, box, sizeof(b));
    int *bh, *bv;
    double *kh, *kv;
    int ksh = coeffs(iw, b[0], b[2], ow, &bh, &kh);
    int ksv = coeffs(ih, b[1], b[3], oh, &bv, &kv);
    for (int yy = 0; yy < oh; yy++)
        for (int xx = 0; xx < ow; xx++)
            for (int c = 0; c < 3; c++) {
                double s = 0;
                for (int y = 0; y < bv[2 * yy + 1]; y++)
                    for (int x = 0; x < bh[2 * xx + 1]; x++)
                        s += kv[(size_t)yy * ksv + y] * kh[(size_t)xx * ksh + x] *
                             in[(size_t)(y + bv[2 * yy]) * stride + (size_t)(x + bh[2 * xx]) * 3 + c];
                long v = lround(s);
                out[((size_t)yy * ow + xx) * 3 + c] = (uint8_t)(v < 0 ? 0 : v > 255 ? 255 : v);
            }
    free(bh);
    free(bv);
    free(kh);
    free(kv);
}
