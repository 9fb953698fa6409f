/* Unit tests of lib/blas: OpenBLAS sgemm against the naive reference for all
 * four transpose combinations, odd sizes, row strides wider than the matrix,
 * alpha/beta (beta 0 must ignore NaN in C); products large enough to be
 * split over threads (by columns, by rows, in uneven blocks) against the
 * reference and byte for byte against the unsplit product on 1-4 threads;
 * the cut rule for the kernel in use: a block cut by it has the bytes of the
 * whole product, and on the kernels measured a block cut elsewhere does not,
 * its differing elements where the rule says (the ends of OpenBLAS's column
 * panels, the last row tile). */
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

/* Elements of block [s, e) of C's columns (cols) or rows computed alone by
 * blas_sgemm_serial that differ from the whole product's. Of those, *other
 * counts the ones neither within 8 columns of an end of a panel (of the
 * block's or of the whole product's, panels as OpenBLAS takes them) nor in
 * the last tile of rows when it has fewer than 12 (of C, or of the block of
 * rows). */
static int cut_differs(int cols, int M, int N, int K, int s, int e, int panel, int *other, rng *r) {
    float *A = xmalloc((size_t)M * K * 4), *B = xmalloc((size_t)K * N * 4);
    float *C0 = xcalloc((size_t)M * N, 4), *C1 = xcalloc((size_t)M * N, 4);
    fill(A, (size_t)M * K, r);
    fill(B, (size_t)K * N, r);
    blas_sgemm_serial(0, 0, M, N, K, 1, A, K, B, N, 0, C0, N);
    if (cols)
        blas_sgemm_serial(0, 0, M, e - s, K, 1, A, K, B + s, N, 0, C1 + s, N);
    else
        blas_sgemm_serial(0, 0, e - s, N, K, 1, A + (size_t)s * K, K, B, N, 0, C1 + (size_t)s * N, N);
    /* panel ends: OpenBLAS takes `panel` while 2 * panel are left, then
     * halves the rest (rounded up to 8) */
    char *edge = xcalloc((size_t)N, 1);
    for (int pass = 0; pass < 2; pass++) {
        int lo = pass && cols ? s : 0, hi = pass && cols ? e : N;
        for (int at = lo; at < hi;) {
            int left = hi - at, w = left >= 2 * panel ? panel : left > panel ? (left / 2 + 7) / 8 * 8 : left;
            for (int j = 0; j < 8 && j < w; j++) edge[at + j] = edge[at + w - 1 - j] = 1;
            at += w;
        }
    }
    int bad = 0, lo = cols ? 0 : s, hi = cols ? M : e;
    *other = 0;
    for (int i = lo; i < hi; i++)
        for (int j = cols ? s : 0; j < (cols ? e : N); j++)
            if (memcmp(&C0[(size_t)i * N + j], &C1[(size_t)i * N + j], 4) != 0) {
                bad++;
                if (!edge[j] && i < hi - (hi - lo) % 12) ++*other;
            }
    free(A), free(B), free(C0), free(C1), free(edge);
    return bad;
}

int main(void) {
    rng r;
    rng_seed(&r, 1);

    /* the cut rule (lib/blas.c): a product cut by it keeps its bytes (the
     * start-up self-check); on the kernels measured, a block of columns cut
     * at a multiple of 64 that is no panel boundary, or of rows cut at 64
     * (no multiple of the 12-row tile), differs from the whole product, and
     * only at the ends of the panels or in the last row tile: the order of
     * each element's sum depends on where it falls in OpenBLAS's blocking,
     * which a block computed alone redoes from its own start. */
    blas_split_rule rule = blas_split();
    CHECK(rule.split, "blas: core '%s': products cut by the rule (columns at %d, rows at %d, GEMM_R %d) keep their bytes",
          rule.core, rule.panel, rule.rows, rule.rblock);
    if (rule.measured) {
        int P = rule.panel, R = rule.rows, o[8], d[8], h = (210 + rule.unroll - 1) / rule.unroll * rule.unroll;
        d[0] = cut_differs(1, 36, 4 * P + 100, 300, P, 2 * P, P, &o[0], &r);           /* a panel */
        d[1] = cut_differs(1, 36, 4 * P + 100, 300, 2 * P, 4 * P + 100, P, &o[1], &r); /* the last ones */
        d[2] = cut_differs(0, 4 * R + 7, 40, 300, R, 4 * R + 7, P, &o[2], &r);         /* row tiles */
        d[3] = cut_differs(1, 36, 4 * P + 100, 300, 64, 64 + P, P, &o[3], &r);         /* across a panel */
        d[4] = cut_differs(1, 36, 3 * P + 100, 300, P, 3 * P, P, &o[4], &r);           /* into the last 2 */
        d[5] = cut_differs(0, 300, 40, 300, 64, 128, P, &o[5], &r);                    /* across a tile */
        d[6] = cut_differs(1, 20, 4 * P + 100, 300, P, 2 * P, P, &o[6], &r); /* a last tile of 8 rows */
        d[7] = cut_differs(1, 36, 4 * P + 100, 300, 3 * P, 3 * P + h, P, &o[7], &r); /* half the last 420 */
        CHECK(d[0] == 0 && d[1] == 0 && d[2] == 0 && d[7] == 0,
              "blas: '%s': blocks of whole panels (%d columns, the last ones halved) or row tiles (%d rows) have "
              "the whole product's bytes", rule.core, P, R);
        CHECK(d[3] > 0 && d[4] > 0 && d[5] > 0 && o[3] == 0 && o[4] == 0 && o[5] == 0,
              "blas: '%s': blocks cut across panels or row tiles differ (%d, %d, %d elements), only within 8 columns "
              "of a panel end or in the last row tile", rule.core, d[3], d[4], d[5]);
        CHECK(d[6] > 0 && o[6] == 0,
              "blas: '%s': a block of whole panels of a product whose last row tile has 8..11 rows differs in those "
              "rows only (%d elements): they are done apart", rule.core, d[6]);
    }
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

    /* products split over threads: wide (by columns), tall (by rows), sides
     * that are no multiple of the block alignment, just over and under the
     * size where a split starts; all four transposes, strides wider than the
     * matrix, beta 0 (NaN in C ignored) and beta 1. Each equals the
     * reference, and on 2, 3 and 4 threads has the bytes of 1 thread (the
     * unsplit product). */
    static const int big[][3] = {{64, 1000, 300}, {1000, 64, 300}, {96, 4000, 70},  {4000, 96, 70},
                                 {130, 130, 1100}, {256, 129, 512}, {129, 256, 512}, {8, 21000, 105}, {16, 256, 1100},
                                 {24, 3000, 60},  {3000, 24, 60}, {64, 2000, 300}, {40, 1300, 700},
                                 {700, 40, 2100}, {3000, 130, 64}};
    int bad_ref = 0, bad_bytes = 0, cases = 0;
    double worst_big = 0;
    for (size_t s = 0; s < sizeof big / sizeof big[0]; s++)
        for (int v = 0; v < 4; v++) {
            int ta = v & 1, tb = v >> 1, M = big[s][0], N = big[s][1], K = big[s][2];
            int pad = (int)(s + v) % 3 * 5;
            float alpha = v == 3 ? -0.5f : 1.0f, beta = (float)((s + v) % 2);
            int lda = (ta ? M : K) + pad, ldb = (tb ? K : N) + pad, ldc = N + pad;
            size_t na = (size_t)(ta ? K : M) * lda, nb = (size_t)(tb ? N : K) * ldb, nc = (size_t)M * ldc;
            float *A = xmalloc(na * 4), *B = xmalloc(nb * 4), *C0 = xmalloc(nc * 4), *C[5];
            fill(A, na, &r);
            fill(B, nb, &r);
            fill(C0, nc, &r);
            if (beta == 0)
                for (int i = 0; i < M; i++)
                    for (int j = 0; j < N; j++) C0[(size_t)i * ldc + j] = NAN;
            for (int t = 0; t < 5; t++) {
                C[t] = xmalloc(nc * 4);
                memcpy(C[t], C0, nc * 4);
                if (t == 0)
                    blas_sgemm_ref(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C[t], ldc);
                else {
                    blas_set_threads(t);
                    blas_sgemm(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C[t], ldc);
                }
            }
            for (int i = 0; i < M; i++)
                for (int j = 0; j < ldc; j++) {
                    size_t at = (size_t)i * ldc + j;
                    if (j >= N) { /* padding untouched */
                        if (memcmp(&C[1][at], &C0[at], 4) != 0) bad_ref++;
                        continue;
                    }
                    double d = fabs((double)C[1][at] - C[0][at]) / (sqrt((double)K) + 1);
                    if (!(d <= 5e-6)) bad_ref++;
                    if (d > worst_big) worst_big = d;
                }
            for (int t = 2; t < 5; t++) bad_bytes += memcmp(C[t], C[1], nc * 4) != 0;
            cases++;
            for (int t = 0; t < 5; t++) free(C[t]);
            free(A);
            free(B);
            free(C0);
        }
    CHECK(bad_ref == 0, "blas: %d split-sized products equal the reference (worst %.2e, %d bad elements)", cases,
          worst_big, bad_ref);
    CHECK(bad_bytes == 0, "blas: the same %d products on 2, 3, 4 threads have the bytes of 1 thread (%d differ)",
          cases, bad_bytes);

    /* blas_sgemm_serial is the same product on the calling thread */
    int M = 256, N = 384, K = 512;
    float *A = xmalloc((size_t)M * K * 4), *B = xmalloc((size_t)K * N * 4);
    float *C[3];
    fill(A, (size_t)M * K, &r);
    fill(B, (size_t)K * N, &r);
    for (int t = 0; t < 3; t++) {
        C[t] = xcalloc((size_t)M * N, 4);
        blas_set_threads(1 + t % 2);
        if (t < 2)
            blas_sgemm(0, 0, M, N, K, 1, A, K, B, N, 0, C[t], N);
        else
            blas_sgemm_serial(0, 0, M, N, K, 1, A, K, B, N, 0, C[t], N);
    }
    CHECK(memcmp(C[0], C[1], (size_t)M * N * 4) == 0 && memcmp(C[0], C[2], (size_t)M * N * 4) == 0,
          "blas: blas_sgemm on 1 and 2 threads and blas_sgemm_serial give the same bytes");
    blas_set_threads(2);
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
