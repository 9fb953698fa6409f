/* blas: OpenBLAS wrapper and naive reference GEMM.
 *
 * OpenBLAS is told to run single-threaded, once, before its first use: its
 * own worker threads would otherwise busy-yield after every sgemm while the
 * pool in lib/par.c runs the work between GEMMs, each pool stealing the
 * other's cores. A large GEMM is split here instead, into blocks of C's
 * columns (or rows, when C is taller than wide), each block one
 * single-threaded sgemm on a thread of that pool.
 *
 * Why the split keeps the bytes: each element of C is then computed by one
 * sgemm over the full K, with the same K blocking (which depends on K
 * only); a block starts at a multiple of SPLIT_ALIGN, so the element also
 * falls at the same place of the same kind of register tile as without the
 * split (and no two threads write one cache line of C). Every block has at
 * least SPLIT_MIN multiply-adds: up to 100^3 of them OpenBLAS (0.3.21) takes
 * small-matrix kernels that sum in another order, and a block must never
 * take them when the unsplit product would not. A product too small for two
 * such blocks runs unsplit on the calling thread, whatever the thread
 * count. tests/unit/blas.c checks the bytes. */
#include "blas.h"

#include "par.h"

#include <cblas.h>
#include <pthread.h>

#define SPLIT_MIN (1LL << 21)
#define SPLIT_ALIGN 64

static pthread_once_t once = PTHREAD_ONCE_INIT;

/* the thread count is the pool's (par_threads): OpenBLAS runs on one */
static void init(void) { openblas_set_num_threads(1); }

void blas_sgemm_serial(int ta, int tb, int M, int N, int K, float alpha, const float *A, int lda, const float *B,
                       int ldb, float beta, float *C, int ldc)
{
    if (M <= 0 || N <= 0) return;
    pthread_once(&once, init);
    cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, M, N, K, alpha, A,
                lda, B, ldb, beta, C, ldc);
}

typedef struct {
    int ta, tb, M, N, K, lda, ldb, ldc;
    float alpha, beta;
    const float *A, *B;
    float *C;
    int cols;          /* split C's columns (else its rows) */
    int units, pieces; /* SPLIT_ALIGN-wide units, shared out over pieces */
} gemm_split;

static void gemm_pieces(void *p, int lo, int hi)
{
    gemm_split *g = p;
    int dim = g->cols ? g->N : g->M;
    for (int i = lo; i < hi; i++) {
        int s = (int)((long long)g->units * i / g->pieces) * SPLIT_ALIGN;
        int e = (int)((long long)g->units * (i + 1) / g->pieces) * SPLIT_ALIGN;
        if (e > dim) e = dim;
        if (g->cols)
            blas_sgemm_serial(g->ta, g->tb, g->M, e - s, g->K, g->alpha, g->A, g->lda,
                              g->B + (g->tb ? (size_t)s * g->ldb : (size_t)s), g->ldb, g->beta, g->C + s, g->ldc);
        else
            blas_sgemm_serial(g->ta, g->tb, e - s, g->N, g->K, g->alpha,
                              g->A + (g->ta ? (size_t)s : (size_t)s * g->lda), g->lda, g->B, g->ldb, g->beta,
                              g->C + (size_t)s * g->ldc, g->ldc);
    }
}

void blas_sgemm(int ta, int tb, int M, int N, int K, float alpha, const float *A, int lda, const float *B, int ldb,
                float beta, float *C, int ldc)
{
    if (M <= 0 || N <= 0) return;
    pthread_once(&once, init);
    /* the longer side of C is split: each block packs the whole of the
     * other operand again, and that one is then the smaller */
    int cols = N >= M, dim = cols ? N : M;
    long long units = (dim + SPLIT_ALIGN - 1) / SPLIT_ALIGN, mnk = (long long)M * N * K;
    long long pieces = par_threads();
    if (pieces > units) pieces = units;
    for (; pieces > 1; pieces--) {
        /* the smallest block: a share of whole units, or the last one, which
         * may end in a part unit */
        long long least = units / pieces * SPLIT_ALIGN, last = dim - units * (pieces - 1) / pieces * SPLIT_ALIGN;
        if (last < least) least = last;
        if (least * (cols ? M : N) * K >= SPLIT_MIN) break;
    }
    if (pieces < 2 || par_busy()) {
        blas_sgemm_serial(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
        return;
    }
    gemm_split g = {ta, tb, M, N, K, lda, ldb, ldc, alpha, beta, A, B, C, cols, (int)units, (int)pieces};
    par_for((int)pieces, (size_t)mnk, gemm_pieces, &g);
}

void blas_sgemm_ref(int ta, int tb, int M, int N, int K, float alpha, const float *A, int lda, const float *B,
                    int ldb, float beta, float *C, int ldc)
{
    for (int i = 0; i < M; i++)
        for (int j = 0; j < N; j++) {
            double s = 0;
            for (int k = 0; k < K; k++) {
                float a = ta ? A[k * lda + i] : A[i * lda + k];
                float b = tb ? B[j * ldb + k] : B[k * ldb + j];
                s += (double)a * b;
            }
            C[i * ldc + j] = (float)(alpha * s + (beta != 0 ? beta * C[i * ldc + j] : 0));
        }
}

void blas_set_threads(int n) { par_set_threads(n); }

int blas_get_threads(void) { return par_threads(); }

const char *blas_config(void) { return openblas_get_config(); }
