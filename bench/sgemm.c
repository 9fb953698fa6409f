/* sgemm: the machine's sgemm figure through lib/blas, for the benchmarks'
 * "achieved / sgemm" ratios: GFLOP/s of C (M,N) = A (M,K) B^T at the shapes
 * of ViT-B/16's linear layers at batch 16 (M = 16*197 tokens).
 *
 *   sgemm THREADS [SECONDS]   prints "sgemm GFLOPS": the FLOPs of one product of
 *   each shape over the sum of their fastest times, the same "best of"
 *   measure the benchmarks take of the models (on a busy machine the
 *   fastest run is the one least disturbed). */
#include "blas.h"
#include "util.h"

#include <stdio.h>
#include <stdlib.h>

int main(int argc, char **argv)
{
    int threads = argc > 1 ? atoi(argv[1]) : 2;
    double secs = argc > 2 ? atof(argv[2]) : 3;
    blas_set_threads(threads);
    static const int shapes[][3] = {{3152, 2304, 768}, {3152, 3072, 768}, {3152, 768, 3072}};
    double total_flop = 0, total_t = 0;
    for (int s = 0; s < 3; s++) {
        int M = shapes[s][0], N = shapes[s][1], K = shapes[s][2];
        float *A = xmalloc_aligned((size_t)M * K * 4), *B = xmalloc_aligned((size_t)N * K * 4),
              *C = xmalloc_aligned((size_t)M * N * 4);
        for (size_t i = 0; i < (size_t)M * K; i++) A[i] = (float)(i % 7) * 0.1f;
        for (size_t i = 0; i < (size_t)N * K; i++) B[i] = (float)(i % 5) * 0.1f;
        blas_sgemm(0, 1, M, N, K, 1, A, K, B, K, 0, C, N); /* warm-up */
        double start = vl_now(), best = 1e30;
        do {
            double t0 = vl_now();
            blas_sgemm(0, 1, M, N, K, 1, A, K, B, K, 0, C, N);
            double t = vl_now() - t0;
            if (t < best) best = t;
        } while (vl_now() - start < secs / 3);
        total_flop += 2.0 * M * N * K;
        total_t += best;
        free(A), free(B), free(C);
    }
    printf("sgemm %.1f\n", total_flop / total_t / 1e9);
    return 0;
}
