/* act: GELU (exact erf form, PyTorch's default) and QuickGELU, vectorised
 * (nn/simd.h); in-place use (out == inp) is allowed. */
#include "nn/act.h"

#include "nn/simd.h"

#define SQRT1_2 0.70710678118654752440f
#define INV_SQRT_2PI 0.39894228040143267794f

static inline vf gelu_v(vf x) { return 0.5f * x * (1.0f + vf_erf(x * SQRT1_2)); }
static inline vf gelu_d(vf x) { return 0.5f * (1.0f + vf_erf(x * SQRT1_2)) + x * INV_SQRT_2PI * vf_exp(-0.5f * x * x); }
static inline vf quick_v(vf x) { return x / (1.0f + vf_exp(-1.702f * x)); }
static inline vf quick_d(vf x)
{
    vf s = 1.0f / (1.0f + vf_exp(-1.702f * x));
    return s + 1.702f * x * s * (1.0f - s);
}

#define MAP(out, inp, n, f)                                                                                          \
    do {                                                                                                             \
        size_t i = 0;                                                                                                \
        for (; i + VL_VW <= n; i += VL_VW) vf_store(out + i, f(vf_load(inp + i)));                                  \
        if (i < n) vf_store_part(out + i, f(vf_load_part(inp + i, (int)(n - i), 0)), (int)(n - i));                  \
    } while (0)

/* dinp += f'(inp) * dout */
#define BACK(dinp, dout, inp, n, d)                                                                                  \
    do {                                                                                                             \
        size_t i = 0;                                                                                                \
        for (; i + VL_VW <= n; i += VL_VW)                                                                           \
            vf_store(dinp + i, vf_load(dinp + i) + vf_load(dout + i) * d(vf_load(inp + i)));                         \
        if (i < n) {                                                                                                 \
            int k = (int)(n - i);                                                                                    \
            vf_store_part(dinp + i,                                                                                  \
                          vf_load_part(dinp + i, k, 0) + vf_load_part(dout + i, k, 0) * d(vf_load_part(inp + i, k, 0)), \
                          k);                                                                                        \
        }                                                                                                            \
    } while (0)

void gelu_forward(float *out, const float *inp, size_t n) { MAP(out, inp, n, gelu_v); }
void gelu_backward(float *dinp, const float *dout, const float *inp, size_t n) { BACK(dinp, dout, inp, n, gelu_d); }
void quickgelu_forward(float *out, const float *inp, size_t n) { MAP(out, inp, n, quick_v); }
void quickgelu_backward(float *dinp, const float *dout, const float *inp, size_t n)
{
    BACK(dinp, dout, inp, n, quick_d);
}
