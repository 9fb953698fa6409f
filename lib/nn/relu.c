/* relu: ReLU and ReLU6; see relu.h. Long arrays are split over threads in
 * runs of RUN elements (par.h). */
#include "relu.h"

#include "par.h"

#define RUN 4096

typedef struct {
    float *o;
    const float *a, *m;
    size_t n;
    int kind;
} ew;

enum { RELU_F, RELU_B, RELU_BS, RELU6_F, RELU6_B, RELU6_BS };

static void ew_range(void *ctx, int lo, int hi)
{
    const ew *e = ctx;
    size_t i0 = (size_t)lo * RUN, i1 = (size_t)hi * RUN < e->n ? (size_t)hi * RUN : e->n;
    float *o = e->o;
    const float *a = e->a, *m = e->m;
    switch (e->kind) {
    case RELU_F:
        for (size_t i = i0; i < i1; i++) o[i] = a[i] > 0.0f ? a[i] : 0.0f;
        break;
    case RELU_B:
        for (size_t i = i0; i < i1; i++) o[i] += m[i] > 0.0f ? a[i] : 0.0f;
        break;
    case RELU_BS:
        for (size_t i = i0; i < i1; i++) o[i] = m[i] > 0.0f ? a[i] : 0.0f;
        break;
    case RELU6_F:
        for (size_t i = i0; i < i1; i++) {
            float x = a[i];
            o[i] = x > 0.0f ? (x < 6.0f ? x : 6.0f) : 0.0f;
        }
        break;
    case RELU6_B:
        for (size_t i = i0; i < i1; i++) o[i] += m[i] > 0.0f && m[i] < 6.0f ? a[i] : 0.0f;
        break;
    case RELU6_BS:
        for (size_t i = i0; i < i1; i++) o[i] = m[i] > 0.0f && m[i] < 6.0f ? a[i] : 0.0f;
        break;
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
