/* act: GELU (exact erf form, PyTorch's default) and QuickGELU, vectorised
 * (lib/simd.h); in-place use (out == inp) is allowed. */
#include "nn/act.h"

#include "par.h"
#include "simd.h"

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

/* Runs of RUN elements (a multiple of the vector width, so only the
 * tensor's last run has a tail) side by side on the thread pool: the same
 * element-wise function on any split. */
#define RUN 4096

typedef struct {
    int kind; /* 0 gelu, 1 quickgelu */
    float *out;
    const float *inp, *dout;
    size_t n;
    int back;
} act_args;

static void act_range(void *ctx, int r0, int r1)
{
    const act_args *a = ctx;
    size_t i0 = (size_t)r0 * RUN, i1 = (size_t)r1 * RUN < a->n ? (size_t)r1 * RUN : a->n, n = i1 - i0;
    float *o = a->out + i0;
    const float *x = a->inp + i0;
    if (a->back) {
        const float *d = a->dout + i0;
        if (a->kind == 0)
            BACK(o, d, x, n, gelu_d);
        else
            BACK(o, d, x, n, quick_d);
    } else {
        if (a->kind == 0)
            MAP(o, x, n, gelu_v);
        else
            MAP(o, x, n, quick_v);
    }
}

static void act_par(int kind, int back, float *out, const float *dout, const float *inp, size_t n)
{
    act_args a = {kind, out, inp, dout, n, back};
    par_for((int)((n + RUN - 1) / RUN), 8 * n, act_range, &a);
}

void gelu_forward(float *out, const float *inp, size_t n) { act_par(0, 0, out, NULL, inp, n); }
void gelu_backward(float *dinp, const float *dout, const float *inp, size_t n) { act_par(0, 1, dinp, dout, inp, n); }
void quickgelu_forward(float *out, const float *inp, size_t n) { act_par(1, 0, out, NULL, inp, n); }
void quickgelu_backward(float *dinp, const float *dout, const float *inp, size_t n)
{
    act_par(1, 1, dinp, dout, inp, n);
}
