/* simd: 16-lane float vectors (GCC/Clang vector extensions: AVX-512 with
 * -march=native where the machine has it, narrower registers elsewhere) and
 * the vectorised exp and erf the activations and the softmax need. exp is
 * Cephes' expf (range reduction by ln 2, degree-6 polynomial, about 1 ulp);
 * erf is Abramowitz & Stegun 7.1.26 (absolute error below 1.5e-7). Tails
 * shorter than a vector go through the same code in a padded vector, so
 * every element gets the same function. */
#ifndef VL_SIMD_H
#define VL_SIMD_H

#include <stdint.h>
#include <string.h>
#if defined(__AVX512F__)
#include <immintrin.h>
#endif

#define VL_VW 16
typedef float vf __attribute__((vector_size(4 * VL_VW)));
typedef int32_t vi __attribute__((vector_size(4 * VL_VW)));
/* the even and the odd lanes of two vectors, as __builtin_shufflevector
 * indices (or a vi of lane numbers) */
#define EVEN16 0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30
#define ODD16 1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31

static inline vf vf_set(float x) { return (vf){0} + x; }
static inline vf vf_load(const float *p)
{
    vf v;
    memcpy(&v, p, sizeof v);
    return v;
}
static inline void vf_store(float *p, vf v) { memcpy(p, &v, sizeof v); }
/* n < VL_VW elements, the rest of the lanes set to pad */
static inline vf vf_load_part(const float *p, int n, float pad)
{
    vf v = vf_set(pad);
    memcpy(&v, p, (size_t)n * sizeof(float));
    return v;
}
static inline void vf_store_part(float *p, vf v, int n) { memcpy(p, &v, (size_t)n * sizeof(float)); }
static inline float vf_sum(vf v)
{
    float s = 0;
    for (int i = 0; i < VL_VW; i++) s += v[i];
    return s;
}
static inline float vf_max(vf v)
{
    float m = v[0];
    for (int i = 1; i < VL_VW; i++) m = v[i] > m ? v[i] : m;
    return m;
}
static inline vf vf_select(vi mask, vf a, vf b) { return (vf)(((vi)a & mask) | ((vi)b & ~mask)); }
/* correctly rounded, as sqrtf: vsqrtps where the target has it */
static inline vf vf_sqrt(vf x)
{
#if defined(__AVX512F__) && VL_VW == 16
    return (vf)_mm512_sqrt_ps((__m512)x);
#else
    vf r;
    for (int i = 0; i < VL_VW; i++) r[i] = __builtin_sqrtf(x[i]);
    return r;
#endif
}
static inline vf vf_maxv(vf a, vf b) { return vf_select(a > b, a, b); }
static inline vf vf_minv(vf a, vf b) { return vf_select(a < b, a, b); }

static inline vf vf_exp(vf x)
{
    /* clamped so that NaN stays NaN (a comparison with NaN is false) */
    x = vf_select(x < -87.3365f, vf_set(-87.3365f), x);
    x = vf_select(x > 88.3762f, vf_set(88.3762f), x);
    vf fx = x * 1.44269504088896341f + 0.5f;
    vi n = __builtin_convertvector(fx, vi);
    vf fn = __builtin_convertvector(n, vf);
    n += fn > fx; /* truncation -> floor: -1 where fn > fx */
    fn = __builtin_convertvector(n, vf);
    vf r = x - fn * 0.693359375f + fn * 2.12194440e-4f;
    vf p = vf_set(1.9875691500e-4f);
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.0f;
    vi e = (n + 127) << 23;
    return p * (vf)e;
}

static inline vf vf_erf(vf x)
{
    vi neg = x < 0;
    vf ax = vf_select(neg, -x, x);
    vf t = 1.0f / (1.0f + 0.3275911f * ax);
    vf y = vf_set(1.061405429f);
    y = y * t - 1.453152027f;
    y = y * t + 1.421413741f;
    y = y * t - 0.284496736f;
    y = y * t + 0.254829592f;
    y = 1.0f - y * t * vf_exp(-ax * ax);
    return vf_select(neg, -y, y);
}

#endif
