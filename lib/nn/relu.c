/* relu: ReLU and ReLU6; see relu.h. Long arrays are split over threads in
 * runs of RUN elements (par.h); each run goes 16 lanes at a time (simd.h). */
#include "relu.h"

#include "par.h"
#include "simd.h"

#define RUN 4096

typedef struct {
    float *o;
    const float *a, *m;
    size_t n;
    int kind;
} ew;

enum { RELU_F, RELU_B, RELU_BS, RELU6_F, RELU6_B, RELU6_BS };

/* one vector of kind over r <= VL_VW elements at i (r < VL_VW: the tail) */
static inline __attribute__((always_inline)) void ew_vec(const ew *e, size_t i, int r, int kind)
{
    vf z = vf_set(0.0f), six = vf_set(6.0f);
    int full = r == VL_VW;
    vf a = full ? vf_load(e->a + i) : vf_load_part(e->a + i, r, 0.0f), v;
    vf m = kind == RELU_F || kind == RELU6_F ? z : full ? vf_load(e->m + i) : vf_load_part(e->m + i, r, 0.0f);
    switch (kind) {
    case RELU_F: v = vf_select(a > z, a, z); break;
    case RELU6_F: v = vf_select(a > z, vf_select(a < six, a, six), z); break;
    case RELU_B:
    case RELU_BS: v = vf_select(m > z, a, z); break;
    default: v = vf_select((m > z) & (m < six), a, z);
    }
    if (kind == RELU_B || kind == RELU6_B) v = (full ? vf_load(e->o + i) : vf_load_part(e->o + i, r, 0.0f)) + v;
    if (full)
        vf_store(e->o + i, v);
    else
        vf_store_part(e->o + i, v, r);
}

static inline __attribute__((always_inline)) void ew_loop(const ew *e, size_t i0, size_t i1, int kind)
{
    size_t i = i0;
    for (; i + VL_VW <= i1; i += VL_VW) ew_vec(e, i, VL_VW, kind);
    if (i < i1) ew_vec(e, i, (int)(i1 - i), kind);
}

/* elementwise, in 16-lane vectors: the same bytes as the scalar expressions */
static void ew_range(void *ctx, int lo, int hi)
{
    const ew *e = ctx;
    size_t i0 = (size_t)lo * RUN, i1 = (size_t)hi * RUN < e->n ? (size_t)hi * RUN : e->n;
    switch (e->kind) {
    case RELU_F: ew_loop(e, i0, i1, RELU_F); break;
    case RELU_B: ew_loop(e, i0, i1, RELU_B); break;
    case RELU_BS: ew_loop(e, i0, i1, RELU_BS); break;
    case RELU6_F: ew_loop(e, i0, i1, RELU6_F); break;
    case RELU6_B: ew_loop(e, i0, i1, RELU6_B); break;
    case RELU6_BS: ew_loop(e, i0, i1, RELU6_BS); break;
    }
}

static void ew_run(float *o, const float *a, const float *m, size_t n, int kind)
{
    ew e = {o, a, m, n, kind};
    /* at most 2^31 runs of 4096: far beyond any activation this engine holds */
    par_for((int)((n + RUN - 1) / RUN), n, ew_range, &e);
}

void relu_forward(float *out, const float *inp, size_t n) { ew_run(out, inp, NULL, n, RELU_F); }
void relu_backward(float *dinp, const float *dout, const float *out, size_t n) { ew_run(dinp, dout, out, n, RELU_B); }
void relu_backward_set(float *dinp, const float *dout, const float *out, size_t n)
{
    ew_run(dinp, dout, out, n, RELU_BS);
}
void relu6_forward(float *out, const float *inp, size_t n) { ew_run(out, inp, NULL, n, RELU6_F); }
void relu6_backward(float *dinp, const float *dout, const float *out, size_t n)
{
    ew_run(dinp, dout, out, n, RELU6_B);
}
void relu6_backward_set(float *dinp, const float *dout, const float *out, size_t n)
{
    ew_run(dinp, dout, out, n, RELU6_BS);
}
