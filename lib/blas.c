/* blas: OpenBLAS wrapper and naive reference GEMM.
 *
 * OpenBLAS is told to run single-threaded, once, before its first use: its
 * own worker threads would otherwise busy-yield after every sgemm while the
 * pool in lib/par.c runs the work between GEMMs, each pool stealing the
 * other's cores. A large GEMM is split here instead, into blocks of C's
 * columns or rows, each block one single-threaded sgemm on a thread of that
 * pool.
 *
 * Why the split keeps the bytes. OpenBLAS sums each element of C over the
 * full K in an order fixed by the K blocking (GEMM_Q: it depends on K only,
 * so a block has the same) and, on some kernels, by where the element falls
 * in the blocking of the other two sides, which a block computed alone
 * redoes from its own start. Measured on 0.3.21's Haswell/Zen kernel (the
 * same whatever the K, the transposes or the addresses; tests/unit/blas.c
 * pins it):
 *   - C's columns are the m side of OpenBLAS's column-major product (row-major
 *     C is its transpose). The driver takes m in panels of GEMM_P = 320,
 *     P while 2P or more are left, then the rest halved (rounded up to
 *     GEMM_UNROLL_M = 8), afresh in each call; the first and the last 8
 *     columns of every panel are summed in another order than the others.
 *     So a block keeps its bytes only when it is whole panels of the
 *     unsplit product: cuts at multiples of P, and in the last 1..2P
 *     columns only where OpenBLAS halves them.
 *   - C's rows are the kernel's n side, in tiles of 12 rows (8/4/2/1 for a
 *     rest at the end) from the start of each GEMM_R block (104512 rows), an
 *     element's order depending on its place in its tile: row cuts at
 *     multiples of 12 (of GEMM_R past it).
 *   - In the first panel of a call (computed while B is packed, 12 rows at a
 *     time and then 4) a last tile of 8..11 rows is summed in another order
 *     than in the other panels; a block of columns other than the first has
 *     another first panel, so when cutting columns such rows are done apart,
 *     over all the columns, in one sgemm of their own.
 * Every block also has at least SPLIT_MIN = 2^21 multiply-adds: below that
 * OpenBLAS 0.3.21 on SkylakeX takes its direct or small-matrix kernels
 * (sgemm_direct_performant, small_matrix_permit), which sum in another
 * order, and a block must never take them when the unsplit product would
 * not. The rule for the kernel in use comes from a table of those measured
 * (by openblas_get_corename()); any other kernel gets the rule the unit
 * tests passed with on the SkylakeX kernel (rows and columns cut at
 * multiples of 64; the Sandybridge and Nehalem kernels, whose order does
 * not depend on the place, pass with it too). At start-up a self-check computes a product of each
 * kind cut by the rule and compares its bytes with the unsplit one; if
 * either differs, no product is split (the thread count then changes the
 * speed of GEMMs, never their bytes). A product too small for two blocks
 * runs unsplit on the calling thread, whatever the thread count. The
 * blocks are chosen to even out each one's multiply-adds and packing;
 * tests/unit/blas.c checks the bytes. */
#include "blas.h"

#include "par.h"
#include "util.h"

#include <cblas.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#define SPLIT_MIN (1LL << 21)
#define MAX_PIECES 64
#define PACK 4 /* packing an element of A or B, in multiply-adds of time (chosen by timing splits on Zen) */

/* how products may be cut for the kernel in use */
static struct {
    const char *core;
    int panel;  /* column cuts at multiples of this (GEMM_P), in the last 1..2P only at their half */
    int rows;   /* row cuts at multiples of this */
    int rblock; /* GEMM_R: with more rows than this, cuts only at its multiples (0: no limit) */
    int tile, tail; /* column cuts: a last row tile of tail..tile-1 rows is done apart (tile 0: none) */
    int unroll;     /* GEMM_UNROLL_M: the last columns are halved rounding to it (0: no cut there) */
    int split;  /* the self-check passed */
    int measured; /* from known[] */
} rule = {"", 64, 64, 0, 0, 0, 0, 0, 0};

static const struct {
    const char *core;
    int panel, rows, rblock, tile, tail, unroll;
} known[] = {
    /* OpenBLAS 0.3.21 sgemm: GEMM_P = GEMM_Q = 320, GEMM_R = 104512,
     * GEMM_UNROLL_M 8, 12-row tiles */
    {"Haswell", 320, 12, 104512, 12, 8, 8},
    {"Zen", 320, 12, 104512, 12, 8, 8},
};

/* The valid cuts of a side of length dim: step, 2 step, ..., n step, and
 * for columns maybe one more, half, in the last panels: OpenBLAS halves the
 * last 1..2P columns (those past n P) at half, so a block may end there
 * when it starts at n P, and start there when it runs to the end. */
typedef struct {
    int step, n, half;
} cuts;

static cuts side_cuts(int cols, int dim)
{
    cuts c = {0, 0, 0};
    if (cols) {
        c.step = rule.panel;
        c.n = dim / rule.panel - 1; /* P-panels are taken while 2P are left */
        if (c.n < 0) c.n = 0;
        int last = dim - c.n * rule.panel, u = rule.unroll;
        if (u > 0 && last > rule.panel) c.half = c.n * rule.panel + (last / 2 + u - 1) / u * u;
    } else if (rule.rblock > 0 && dim > rule.rblock) {
        c.step = rule.rblock;
        c.n = (dim - 1) / rule.rblock;
    } else {
        c.step = rule.rows;
        c.n = (dim - 1) / rule.rows;
    }
    if (c.n < 0) c.n = 0;
    return c;
}

typedef struct {
    int ta, tb, M, N, K, lda, ldb, ldc;
    float alpha, beta;
    const float *A, *B;
    float *C;
    int cols;                  /* split C's columns (else its rows) */
    int tail;                  /* cols: C's last `tail` rows are done apart, whole, with the last block */
    int pieces;                /* blocks [at[i], at[i+1]) */
    int at[MAX_PIECES + 1];
} gemm_split;

static void sgemm1(int ta, int tb, int M, int N, int K, float alpha, const float *A, int lda, const float *B, int ldb,
                   float beta, float *C, int ldc)
{
    cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, M, N, K, alpha, A,
                lda, B, ldb, beta, C, ldc);
}

static void block(const gemm_split *g, int s, int e)
{
    if (g->cols)
        sgemm1(g->ta, g->tb, g->M - g->tail, e - s, g->K, g->alpha, g->A, g->lda,
               g->B + (g->tb ? (size_t)s * g->ldb : (size_t)s), g->ldb, g->beta, g->C + s, g->ldc);
    else
        sgemm1(g->ta, g->tb, e - s, g->N, g->K, g->alpha, g->A + (g->ta ? (size_t)s : (size_t)s * g->lda), g->lda,
               g->B, g->ldb, g->beta, g->C + (size_t)s * g->ldc, g->ldc);
}

static void gemm_pieces(void *p, int lo, int hi)
{
    gemm_split *g = p;
    for (int i = lo; i < hi; i++) {
        block(g, g->at[i], g->at[i + 1]);
        if (i == g->pieces - 1 && g->tail) {
            int s = g->M - g->tail;
            sgemm1(g->ta, g->tb, g->tail, g->N, g->K, g->alpha, g->A + (g->ta ? (size_t)s : (size_t)s * g->lda),
                   g->lda, g->B, g->ldb, g->beta, g->C + (size_t)s * g->ldc, g->ldc);
        }
    }
}

/* cut by columns: the rows of C's last tile, when the rule does them apart */
static int tail_rows(int M)
{
    if (!rule.tile) return 0;
    int last = rule.rblock > 0 ? (M - 1) % rule.rblock + 1 : M; /* rows of the last GEMM_R block */
    int r = last % rule.tile;
    return r >= rule.tail ? r : 0;
}

/* The best cut of one side into at most `most` blocks of at least `least`
 * (rows or columns), the last one also doing work worth `extra` of them:
 * the widest block (with that work) as narrow as can be, then the fewest
 * blocks. Fills at[] and returns the count of blocks and the widest one. */
static int plan(int cols, int dim, long long extra, long long least, int most, int *at, int *widest)
{
    cuts c = side_cuts(cols, dim);
    int best = 1, bw = dim;
    at[0] = 0, at[1] = dim;
    if (most > c.n + 1 + (c.half > 0)) most = c.n + 1 + (c.half > 0);
    if (most > MAX_PIECES) most = MAX_PIECES;
    for (int p = 2; p <= most; p++) {
        int try[MAX_PIECES + 1], w = 0, ok = 1;
        try[0] = 0, try[p] = dim;
        for (int i = 1; i < p && ok; i++) {
            /* the valid cut nearest to an even share */
            long long x = (dim + extra) * i / p, j = (x + c.step / 2) / c.step;
            if (j < 1) j = 1;
            if (j > c.n) j = c.n;
            long long at_j = c.n > 0 ? j * c.step : -(long long)dim;
            try[i] = (int)(c.half && llabs(x - c.half) < llabs(x - at_j) ? c.half : at_j);
            ok = try[i] > try[i - 1];
        }
        for (int i = 0; i < p && ok; i++) {
            long long wi = try[i + 1] - try[i];
            ok = wi >= least && (try[i + 1] != c.half || try[i] == c.n * c.step);
            if (i == p - 1) wi += extra;
            if (wi > w) w = (int)wi;
        }
        if (ok && w < bw) {
            best = p, bw = w;
            memcpy(at, try, (size_t)(p + 1) * sizeof(int));
        }
    }
    *widest = bw;
    return best;
}

/* C0 by one sgemm against C1 by the rule's blocks; nonzero when the bytes agree */
static int same_split(int ta, int tb, int cols, int M, int N, int K)
{
    int lda = ta ? M : K, ldb = tb ? K : N;
    size_t na = (size_t)M * K, nb = (size_t)K * N, nc = (size_t)M * N;
    float *A = xmalloc(na * sizeof(float)), *B = xmalloc(nb * sizeof(float));
    float *C0 = xmalloc(nc * sizeof(float)), *C1 = xmalloc(nc * sizeof(float));
    unsigned s = 12345;
    for (size_t i = 0; i < na + nb; i++) {
        s = s * 1103515245u + 12345u;
        float v = (float)((s >> 8) & 0xffff) / 32768.0f - 1.0f;
        if (i < na) A[i] = v;
        else B[i - na] = v;
    }
    sgemm1(ta, tb, M, N, K, 1.0f, A, lda, B, ldb, 0.0f, C0, N);
    gemm_split g = {ta, tb, M, N, K, lda, ldb, N, 1.0f, 0.0f, A, B, C1, cols, cols ? tail_rows(M) : 0, 0, {0}};
    int w;
    g.pieces = plan(cols, cols ? N : M, 0, 1, MAX_PIECES, g.at, &w);
    gemm_pieces(&g, 0, g.pieces);
    int same = g.pieces >= 3 && memcmp(C0, C1, nc * sizeof(float)) == 0;
    free(A), free(B), free(C0), free(C1);
    return same;
}

static pthread_once_t once = PTHREAD_ONCE_INIT;

/* the thread count is the pool's (par_threads): OpenBLAS runs on one */
static void init(void)
{
    openblas_set_num_threads(1);
    const char *core = openblas_get_corename();
    rule.core = core ? core : "";
    for (size_t i = 0; i < sizeof known / sizeof known[0]; i++)
        if (strcmp(rule.core, known[i].core) == 0) {
            rule.panel = known[i].panel;
            rule.rows = known[i].rows;
            rule.rblock = known[i].rblock;
            rule.tile = known[i].tile;
            rule.tail = known[i].tail;
            rule.unroll = known[i].unroll;
            rule.measured = 1;
        }
    /* each kind of cut, blocks of SPLIT_MIN or more: 32 rows (2 tiles of
     * 12 and 8) cut by columns at panels and at the half of a last 1.5
     * panels, K between GEMM_Q and twice that on Haswell/Zen; a count of
     * rows no multiple of any tile, cut by rows, K over twice GEMM_Q */
    int P = rule.panel, R = rule.rows;
    int kc = (int)(SPLIT_MIN / (20LL * P)) + 13, kr = (int)(SPLIT_MIN / (20LL * R)) + 7;
    rule.split = same_split(0, 0, 1, 32, 3 * P + P / 2 + 4, kc) && same_split(1, 1, 0, 2 * R + R / 2 + 5, 20, kr);
}

void blas_sgemm_serial(int ta, int tb, int M, int N, int K, float alpha, const float *A, int lda, const float *B,
                       int ldb, float beta, float *C, int ldc)
{
    if (M <= 0 || N <= 0) return;
    pthread_once(&once, init);
    sgemm1(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}

void blas_sgemm(int ta, int tb, int M, int N, int K, float alpha, const float *A, int lda, const float *B, int ldb,
                float beta, float *C, int ldc)
{
    if (M <= 0 || N <= 0) return;
    pthread_once(&once, init);
    int threads = par_threads();
    if (!rule.split || threads < 2 || par_busy() || K <= 0 || (long long)M * N * K < 2 * SPLIT_MIN) {
        sgemm1(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
        return;
    }
    /* either side may be cut: the one whose largest block costs less, a
     * block of m rows and n columns costing m n + PACK (m + n) (its
     * multiply-adds, and the packing of its rows of A and its columns of B:
     * each block packs the whole of the other side's operand again) */
    int tail = tail_rows(M), Mc = M - tail;
    gemm_split g = {ta, tb, M, N, K, lda, ldb, ldc, alpha, beta, A, B, C, 1, tail, 1, {0}};
    int at[MAX_PIECES + 1], wc = N, wr = M, pc = 1;
    if (Mc > 0)
        pc = plan(1, N, (long long)tail * N / Mc, (SPLIT_MIN + (long long)Mc * K - 1) / ((long long)Mc * K), threads,
                  g.at, &wc);
    int pr = plan(0, M, 0, (SPLIT_MIN + (long long)N * K - 1) / ((long long)N * K), threads, at, &wr);
    /* by columns, the last block also does the tail rows (in wc) */
    long long c_cost = (long long)wc * Mc + PACK * ((long long)wc + Mc) + (tail ? PACK * ((long long)tail + N) : 0);
    long long r_cost = (long long)wr * N + PACK * ((long long)wr + N);
    if (pr > 1 && (pc < 2 || r_cost < c_cost)) {
        g.cols = 0, g.tail = 0, g.pieces = pr;
        memcpy(g.at, at, sizeof at);
    } else
        g.pieces = pc;
    if (g.pieces < 2) {
        sgemm1(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
        return;
    }
    par_for(g.pieces, (size_t)M * N * K, gemm_pieces, &g);
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

blas_split_rule blas_split(void)
{
    pthread_once(&once, init);
    blas_split_rule r = {rule.core,      rule.panel, rule.rows,  rule.rblock, rule.tile,
                         rule.tail,      rule.unroll, rule.split, rule.measured};
    return r;
}
