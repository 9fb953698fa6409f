/* blas: the one thin wrapper over OpenBLAS (the only file that includes
 * <cblas.h>), with a naive reference beside the fast routine so tests can
 * compare the two. All matrices are row-major. */
#ifndef VL_BLAS_H
#define VL_BLAS_H

/* C (M,N) = alpha * op(A) (M,K) * op(B) (K,N) + beta * C.
 * op(X) is X, or X transposed when tX is nonzero; lda/ldb/ldc are row strides.
 * A large product is split over the thread pool (lib/par.h) in blocks of
 * C's columns or rows, cut where the OpenBLAS kernel in use gives them the
 * bytes of the unsplit product (blas_split); a small one, or one called from
 * inside a par_for body, runs on the calling thread. */
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

/* Where blas_sgemm cuts a product for the kernel in use (the header of
 * lib/blas.c says why): C's columns at multiples of `panel`, never inside
 * the last 1..2 panels of them but where OpenBLAS halves those (at half
 * their width rounded up to `unroll`; 0: not there); its rows at multiples
 * of `rows`, or of `rblock` when there are more rows than that (0: no such
 * limit). Cut by columns, a last row tile (of `tile` rows) of `tail` rows
 * or more is done apart, over all the columns, with the last block (tile 0:
 * never). `split` is 0 when the start-up self-check found a cut by this
 * rule changing the bytes: no product is then split. `core` is openblas_get_corename();
 * `measured` is 1 when the rule is the one measured for that kernel, 0 for
 * the rule taken for any other. */
typedef struct {
    const char *core;
    int panel, rows, rblock, tile, tail, unroll, split, measured;
} blas_split_rule;
blas_split_rule blas_split(void);

#endif
