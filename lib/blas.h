/* blas: the one thin wrapper over OpenBLAS (the only file that includes
 * <cblas.h>), with a naive reference beside the fast routine so tests can
 * compare the two. All matrices are row-major. */
#ifndef VL_BLAS_H
#define VL_BLAS_H

/* C (M,N) = alpha * op(A) (M,K) * op(B) (K,N) + beta * C.
 * op(X) is X, or X transposed when tX is nonzero; lda/ldb/ldc are row strides.
 * A large product is split over the thread pool (lib/par.h) in blocks of
 * C's columns or rows, with the bytes of the unsplit product; a small one,
 * or one called from inside a par_for body, runs on the calling thread. */
void blas_sgemm(int ta, int tb, int M, int N, int K, float alpha, const float *A, int lda, const float *B, int ldb,
                float beta, float *C, int ldc);
void blas_sgemm_ref(int ta, int tb, int M, int N, int K, float alpha, const float *A, int lda, const float *B,
                    int ldb, float beta, float *C, int ldc);
/* blas_sgemm on the calling thread only, with the same bytes: safe to call
 * concurrently, e.g. from par_for workers running independent GEMMs side by
 * side. */
void blas_sgemm_serial(int ta, int tb, int M, int N, int K, float alpha, const float *A, int lda, const float *B,
                       int ldb, float beta, float *C, int ldc);

/* Threads the library uses (the pool's and so the GEMMs'); n <= 0 leaves the
 * count as it is. The default is what OpenBLAS would use
 * (OPENBLAS_NUM_THREADS, else the cores); OpenBLAS itself always runs one
 * thread per call. Set it before starting work, not from inside a par_for
 * body or while another thread runs library code. */
void blas_set_threads(int n);
int blas_get_threads(void);
/* The OpenBLAS build in use, e.g. "OpenBLAS 0.3.21 ... Haswell". */
const char *blas_config(void);

#endif
