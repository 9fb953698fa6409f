/* conv: the 3x3 stride-1 convolutions of ResNet-18 (layer1..layer4 at
 * 224x224, batch B) timed in C: im2col + sgemm against Winograd F(4x4,3x3),
 * forward, input gradient alone and weight gradient alone (what a frozen or
 * a first layer asks for), in milliseconds, the best of REPS runs after one
 * warm-up. bench/conv.sh runs it beside PyTorch (bench/conv_ref.py).
 *
 *   conv [B] [REPS]      (defaults 32, 3); threads: THREADS or OpenBLAS's
 *
 * Output: one line per layer, "name C HW fwd_i2c fwd_wino dx_i2c dx_wino
 * dw_i2c dw_wino ws_MB" (ws_MB: the Winograd workspace). */
#include "blas.h"
#include "nn/conv.h"
#include "nn/winograd.h"
#include "rng.h"
#include "util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static float *randv(size_t n, rng *r)
{
    float *x = xmalloc_aligned(n * sizeof(float));
    for (size_t i = 0; i < n; i++) x[i] = (float)(rng_uniform(r) * 2 - 1);
    return x;
}

enum { FWD, DX, DW };

static double run(int what, int wino, float *o, float *x, float *w, float *g, float *dx, float *dw, int B,
                  const conv_shape *s, int reps)
{
    conv_set_winograd(wino);
    double best = 1e30;
    for (int r = 0; r <= reps; r++) {
        double t = vl_now();
        if (what == FWD) conv2d_forward(o, x, w, NULL, B, s);
        if (what == DX) conv2d_backward(dx, NULL, NULL, g, NULL, w, B, s);
        if (what == DW) conv2d_backward(NULL, dw, NULL, g, x, NULL, B, s);
        t = vl_now() - t;
        if (r > 0 && t < best) best = t;
    }
    return best * 1e3;
}

int main(int argc, char **argv)
{
    int B = argc > 1 ? atoi(argv[1]) : 32, reps = argc > 2 ? atoi(argv[2]) : 3;
    const char *th = getenv("THREADS");
    if (th) blas_set_threads(atoi(th));
    rng r;
    rng_seed(&r, 1);
    static const struct {
        const char *name;
        int C, HW;
    } L[] = {{"layer1", 64, 56}, {"layer2", 128, 28}, {"layer3", 256, 14}, {"layer4", 512, 7}};
    for (int l = 0; l < 4; l++) {
        conv_shape s;
        conv_shape_init(&s, L[l].C, L[l].HW, L[l].HW, L[l].C, 3, 3, 1, 1, 1, 1);
        size_t nx = (size_t)B * L[l].C * L[l].HW * L[l].HW, nw = (size_t)L[l].C * L[l].C * 9;
        float *x = randv(nx, &r), *w = randv(nw, &r), *g = randv(nx, &r), *o = randv(nx, &r);
        float *dx = xcalloc(nx, sizeof(float)), *dw = xcalloc(nw, sizeof(float));
        double t[6];
        for (int k = 0; k < 3; k++)
            for (int v = 0; v < 2; v++) t[k * 2 + v] = run(k, v, o, x, w, g, dx, dw, B, &s, reps);
        printf("%s %d %d %.2f %.2f %.2f %.2f %.2f %.2f %.1f\n", L[l].name, L[l].C, L[l].HW, t[0], t[1], t[2], t[3],
               t[4], t[5], wino_workspace_bytes(&s, B) / 1048576.0);
        fflush(stdout);
        free(x), free(w), free(g), free(o), free(dx), free(dw);
        conv_release_workspace();
    }
    return 0;
}
