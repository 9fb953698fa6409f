/* Unit tests of lib/blas: OpenBLAS sgemm against the naive reference for all
 * four transpose combinations, odd sizes, row strides wider than the matrix,
 * alpha/beta (beta 0 must ignore NaN in C), and thread-count independence. */
#include "blas.h"
#include "check.h"
#include "rng.h"
#include "util.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static void fill(float *p, size_t n, rng *r) {
    for (size_t i = 0; i < n; i++)
        p[i] = (float)(rng_uniform(r) * 2 - 1);
}

/* max |fast - ref| relative to the scale of the products, for one configuration */
static double compare(int ta, int tb, int M, int N, int K, float alpha, float beta, int pad,
                      rng *r) {
    int lda = (ta ? M : K) + pad, ldb = (tb ? K : N) + pad, ldc = N + pad;
    size_t na = (size_t)(ta ? K : M) * lda, nb = (size_t)(tb ? N : K) * ldb, nc = (size_t)M * ldc;
    float *A = xmalloc(na * 4), *B = xmalloc(nb * 4), *C1 = xmalloc(nc * 4), *C2 = xmalloc(nc * 4);
    fill(A, na, r);
    fill(B, nb, r);
    fill(C1, nc, r);
    if (beta == 0)
        for (size_t i = 0; i < nc; i++)
            C1[i] = NAN;
    memcpy(C2, C1, nc * 4);
    blas_sgemm(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C1, ldc);
    blas_sgemm_ref(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C2, ldc);
    double worst = 0;
    for (int i = 0; i < M; i++)
        for (int j = 0; j < ldc; j++) {
            float x = C1[(size_t)i * ldc + j], y = C2[(size_t)i * ldc + j];
            if (j >= N) { /* padding columns must be untouched */
                if (memcmp(&x, &y, 4) != 0) worst = INFINITY;
                continue;
            }
            double d = fabs((double)x - y) / (sqrt((double)K) + 1);
            if (!(d <= worst)) worst = isnan(d) ? INFINITY : d;
        }
    free(A);
    free(B);
    free(C1);
    free(C2);
    return worst;
}

int main(void) {
    rng r;
    rng_seed(&r, 1);
    static const int sizes[][3] = {{1, 1, 1},    {7, 5, 3},      {33, 17, 65},
                                   {64, 64, 64}, {129, 31, 257}, {3, 200, 1}};
    for (int ta = 0; ta < 2; ta++)
        for (int tb = 0; tb < 2; tb++) {
            double worst = 0;
            for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++) {
                double d =
                    compare(ta, tb, sizes[s][0], sizes[s][1], sizes[s][2], 1.0f, 0.0f, 0, &r);
                double d2 =
                    compare(ta, tb, sizes[s][0], sizes[s][1], sizes[s][2], -0.5f, 1.5f, 3, &r);
                if (d > worst) worst = d;
                if (d2 > worst) worst = d2;
            }
            CHECK(worst < 5e-6,
                  "blas: sgemm ta=%d tb=%d equals the reference on 6 shapes, strided, alpha/beta "
                  "(worst %.2e)",
                  ta, tb, worst);
        }

    /* a large product at several thread counts: same bytes for the same thread count */
    int M = 256, N = 384, K = 512;
    float *A = xmalloc((size_t)M * K * 4), *B = xmalloc((size_t)K * N * 4);
    float *C[3];
    fill(A, (size_t)M * K, &r);
    fill(B, (size_t)K * N, &r);
    int threads[3] = {1, 2, 2};
    for (int t = 0; t < 3; t++) {
        blas_set_threads(threads[t]);
        C[t] = xcalloc((size_t)M * N, 4);
        blas_sgemm(0, 0, M, N, K, 1, A, K, B, N, 0, C[t], N);
    }
    double diff = 0;
    for (size_t i = 0; i < (size_t)M * N; i++)
        diff = fmax(diff, fabs(C[0][i] - C[1][i]));
    CHECK(memcmp(C[1], C[2], (size_t)M * N * 4) == 0,
          "blas: same thread count gives the same bytes");
    CHECK(diff < 1e-4, "blas: 1 and 2 threads agree within 1e-4 (%.2e)", diff);
    CHECK(blas_get_threads() == 2 && blas_config() && *blas_config(),
          "blas: thread count set; config '%s'", blas_config());
    for (int t = 0; t < 3; t++)
        free(C[t]);
    free(A);
    free(B);

    /* M or N zero: nothing happens; K zero: C = beta C */
    float c0[4] = {1, 2, 3, 4};
    blas_sgemm(0, 0, 2, 2, 0, 1, c0, 1, c0, 2, 2.0f, c0, 2);
    CHECK(c0[0] == 2 && c0[3] == 8, "blas: K = 0 scales C by beta");
    blas_sgemm(0, 0, 0, 2, 2, 1, NULL, 2, NULL, 2, 0, NULL, 2);
    CHECK(1, "blas: M = 0 touches nothing");
    CHECK_EXIT();
}
