/* winograd: F(4x4,3x3) convolution; see winograd.h.
 *
 * Layout. Tile (th, tw) of a plane covers outputs 4th..4th+3 x 4tw..4tw+3
 * and reads input rows and columns from 4th-pad and 4tw-pad, six of each
 * (zero outside the map). A chunk of m images has P = m*T tiles, tile p =
 * i*T + th*TW + tw. The transformed tiles are stored position-major:
 * V[e][c][p] (36 matrices (C,P)), M or Z[e][k][p] (36 matrices (K,P)), and
 * the transformed weights U[e][k][c] (36 matrices (K,C)), so each position's
 * product is one row-major GEMM on the buffers as they lie.
 *
 * Transforms. One plane (image, channel) at a time, the 1-D transforms
 * separably, as 8-lane vector arithmetic across tiles: the input transform
 * runs its column pass along whole padded rows and takes 8 tiles' columns
 * apart with shuffles for the row pass; the others gather the plane's tiles
 * into a scratch laid out [row][col][tile] (or scatter them from it) and run
 * across all of the plane's tiles at once (small maps have few tiles per
 * row). Planes are split over threads with par_for on fixed boundaries; each
 * element is computed the same way on any split. The weight transform and its
 * adjoint run across input channels, split by output channel.
 *
 * Chunks. Images are taken in equal chunks whose V and M (or Z) together
 * stay near WINO_CHUNK_FLOATS (cache-sized: the transforms are memory-bound),
 * with WINO_MIN_TILES tiles at least; dU sums over the chunks in order and
 * goes to dw once. */
#include "winograd.h"

#include "blas.h"
#include "par.h"
#include "util.h"
#include "workspace.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#if defined(__AVX512VL__)
#include <immintrin.h>
#endif

/* a chunk's transformed tiles (V and M, or V and Z): about what stays in
 * cache beside the GEMMs; but at least WINO_MIN_TILES tiles, so that the
 * GEMMs stay wide enough to run at speed */
#ifndef WINO_CHUNK_FLOATS
#define WINO_CHUNK_FLOATS (1u << 20)
#endif
#ifndef WINO_MIN_TILES
#define WINO_MIN_TILES 128
#endif

typedef float v8 __attribute__((vector_size(32)));

static inline v8 ld8(const float *p)
{
    v8 v;
    memcpy(&v, p, sizeof v);
    return v;
}

static inline void st8(float *p, v8 v) { memcpy(p, &v, sizeof v); }

/* n (1..8) floats; the other lanes zero. Masked moves where the target has
 * them (a copy loop at each tile row's end would cost as much as the
 * transform). */
#if defined(__AVX512VL__)
static inline v8 ldn(const float *p, int n) { return (v8)_mm256_maskz_loadu_ps((__mmask8)((1u << n) - 1), p); }

static inline void stn(float *p, v8 v, int n) { _mm256_mask_storeu_ps(p, (__mmask8)((1u << n) - 1), (__m256)v); }
#else
static inline v8 ldn(const float *p, int n)
{
    if (n == 8) return ld8(p);
    float t[8] = {0};
    for (int i = 0; i < n; i++) t[i] = p[i];
    return ld8(t);
}

static inline void stn(float *p, v8 v, int n)
{
    if (n == 8) {
        st8(p, v);
        return;
    }
    float t[8];
    st8(t, v);
    for (int i = 0; i < n; i++) p[i] = t[i];
}
#endif

/* up to 8 floats: none when n <= 0 */
static inline void st_upto(float *p, v8 v, int n)
{
    if (n >= 8)
        st8(p, v);
    else if (n > 0)
        stn(p, v, n);
}

typedef int vi8 __attribute__((vector_size(32)));
#if defined(__clang__)
#define SHUF(a, b, ...) __builtin_shufflevector(a, b, __VA_ARGS__)
#else
#define SHUF(a, b, ...) __builtin_shuffle(a, b, (vi8){__VA_ARGS__})
#endif

/* a[j][i] = x[4i + j] (j < 4, i < 8): the columns of 8 consecutive tiles
 * of a row */
static inline void deinterleave4(v8 a[4], const float *x)
{
    v8 v0 = ld8(x), v1 = ld8(x + 8), v2 = ld8(x + 16), v3 = ld8(x + 24);
    v8 l0 = SHUF(v0, v1, 0, 4, 8, 12, 1, 5, 9, 13), h0 = SHUF(v0, v1, 2, 6, 10, 14, 3, 7, 11, 15);
    v8 l1 = SHUF(v2, v3, 0, 4, 8, 12, 1, 5, 9, 13), h1 = SHUF(v2, v3, 2, 6, 10, 14, 3, 7, 11, 15);
    a[0] = SHUF(l0, l1, 0, 1, 2, 3, 8, 9, 10, 11);
    a[1] = SHUF(l0, l1, 4, 5, 6, 7, 12, 13, 14, 15);
    a[2] = SHUF(h0, h1, 0, 1, 2, 3, 8, 9, 10, 11);
    a[3] = SHUF(h0, h1, 4, 5, 6, 7, 12, 13, 14, 15);
}

/* the inverse: x[4i + j] = a[j][i], into 4 vectors */
static inline void interleave4(v8 x[4], const v8 a[4])
{
    v8 l0 = SHUF(a[0], a[1], 0, 8, 1, 9, 2, 10, 3, 11), l1 = SHUF(a[0], a[1], 4, 12, 5, 13, 6, 14, 7, 15);
    v8 h0 = SHUF(a[2], a[3], 0, 8, 1, 9, 2, 10, 3, 11), h1 = SHUF(a[2], a[3], 4, 12, 5, 13, 6, 14, 7, 15);
    x[0] = SHUF(l0, h0, 0, 1, 8, 9, 2, 3, 10, 11);
    x[1] = SHUF(l0, h0, 4, 5, 12, 13, 6, 7, 14, 15);
    x[2] = SHUF(l1, h1, 0, 1, 8, 9, 2, 3, 10, 11);
    x[3] = SHUF(l1, h1, 4, 5, 12, 13, 6, 7, 14, 15);
}

/* a one lane on: lanes 1..7 of a, then x */
static inline v8 next_lane(v8 a, float x)
{
    v8 b = {x};
    return SHUF(a, b, 1, 2, 3, 4, 5, 6, 7, 8);
}

/* The 1-D transforms and their adjoints (the matrices in winograd.h's
 * notation: BT, G, AT of F(4,3)). */

/* o = BT d */
static inline void bt(v8 o[6], const v8 d[6])
{
    o[0] = 4 * d[0] - 5 * d[2] + d[4];
    o[1] = d[4] + d[3] - 4 * (d[1] + d[2]);
    o[2] = d[4] - d[3] + 4 * (d[1] - d[2]);
    o[3] = d[4] - d[2] + 2 * (d[3] - d[1]);
    o[4] = d[4] - d[2] - 2 * (d[3] - d[1]);
    o[5] = 4 * d[1] - 5 * d[3] + d[5];
}

/* o = BT^T g */
static inline void bt_adj(v8 o[6], const v8 g[6])
{
    o[0] = 4 * g[0];
    o[1] = 4 * (g[2] - g[1] + g[5]) + 2 * (g[4] - g[3]);
    o[2] = -5 * g[0] - 4 * (g[1] + g[2]) - (g[3] + g[4]);
    o[3] = (g[1] - g[2]) + 2 * (g[3] - g[4]) - 5 * g[5];
    o[4] = g[0] + g[1] + g[2] + g[3] + g[4];
    o[5] = g[5];
}

/* y = AT m */
static inline void at(v8 y[4], const v8 m[6])
{
    v8 a = m[1] + m[2], b = m[1] - m[2], c = m[3] + m[4], d = m[3] - m[4];
    y[0] = m[0] + a + c;
    y[1] = b + 2 * d;
    y[2] = a + 4 * c;
    y[3] = b + 8 * d + m[5];
}

/* z = AT^T y */
static inline void at_adj(v8 z[6], const v8 y[4])
{
    v8 a = y[0] + y[2], b = y[1] + y[3], c = y[0] + 4 * y[2], d = 2 * y[1] + 8 * y[3];
    z[0] = y[0];
    z[1] = a + b;
    z[2] = a - b;
    z[3] = c + d;
    z[4] = c - d;
    z[5] = y[3];
}

/* u = G g */
static inline void gt(v8 u[6], const v8 g[3])
{
    v8 a = g[0] + g[2], b = g[0] * (1.0f / 24) + g[2] * (1.0f / 6);
    u[0] = g[0] * 0.25f;
    u[1] = -(a + g[1]) * (1.0f / 6);
    u[2] = -(a - g[1]) * (1.0f / 6);
    u[3] = b + g[1] * (1.0f / 12);
    u[4] = b - g[1] * (1.0f / 12);
    u[5] = g[2];
}

/* g = G^T u */
static inline void gt_adj(v8 g[3], const v8 u[6])
{
    v8 s = u[1] + u[2], d = u[2] - u[1], s34 = u[3] + u[4], d34 = u[3] - u[4];
    g[0] = u[0] * 0.25f - s * (1.0f / 6) + s34 * (1.0f / 24);
    g[1] = d * (1.0f / 6) + d34 * (1.0f / 12);
    g[2] = -s * (1.0f / 6) + s34 * (1.0f / 6) + u[5];
}

/* ---- geometry ---- */

typedef struct {
    int C, K, H, W, OH, OW, pad;
    int TH, TW, T; /* tiles per plane */
    int Tp;        /* T rounded up to whole vectors: scratch rows */
    int PH, PW;    /* the padded plane the tiles read: 4TH+2 x 4TW+2 */
    int PWv;       /* its rows as the vector code reads them: tiles in whole
                    * vectors of 8, and the 2 columns past them */
} geom;

static void geom_init(geom *g, const conv_shape *s)
{
    g->C = s->C, g->K = s->OC, g->H = s->H, g->W = s->W, g->OH = s->OH, g->OW = s->OW, g->pad = s->pad;
    g->TH = (s->OH + 3) / 4, g->TW = (s->OW + 3) / 4, g->T = g->TH * g->TW;
    g->Tp = (g->T + 7) & ~7;
    g->PH = 4 * g->TH + 2, g->PW = 4 * g->TW + 2;
    g->PWv = 4 * ((g->TW + 7) & ~7) + 8;
}

/* scratch floats a plane transform needs (zeroed: the gathers write lanes
 * below T only, and the lanes past it stay 0) */
static size_t scratch_floats(const geom *g) { return 72 * (size_t)g->Tp + ((size_t)g->PH + 7) * g->PWv; }

int wino_supported(const conv_shape *s)
{
    return s->KH == 3 && s->KW == 3 && s->stride == 1 && s->dil == 1 && s->groups == 1 && s->pad <= 2;
}

int wino_pays(const conv_shape *s, int B)
{
    if (!wino_supported(s) || s->C < 16 || s->OC < 16) return 0;
    /* a tile costs 36 products per channel pair, an output 9 directly:
     * taken while the tiles' products are at most half the direct ones
     * (8 tiles <= outputs), i.e. the tiles' overhang past the map's edge
     * leaves at least half of the 4x saving (7x7 maps qualify, 2x2 not);
     * and while the batch has tiles enough to pay for transforming the
     * weights (16 tiles per 256 channels: at 512 channels on 7x7 maps,
     * batch 8 and more) */
    int64_t tiles = (int64_t)((s->OH + 3) / 4) * ((s->OW + 3) / 4);
    int64_t ch = s->C > s->OC ? s->C : s->OC;
    return 8 * tiles <= (int64_t)s->OH * s->OW && 16 * tiles * B >= ch;
}

/* ---- plane transforms ---- */

/* V rows of one input plane: V[e * es + p], p < T; x (H,W). Scratch:
 * the padded plane (PH rows of PWv) and X (6 rows of PWv). Per tile row, the
 * column transform runs along whole rows; the row transform takes 8 tiles'
 * six columns apart with shuffles. */
static void input_plane(float *V, size_t es, const float *x, const geom *g, float *P, float *X)
{
    int TW = g->TW, PWv = g->PWv, pad = g->pad;
    /* the columns the tiles read, in whole vectors: the row pass reads X
     * past them (up to PWv) only into lanes it does not store */
    int QW = (4 * TW + 2 + 7) & ~7;
    for (int y = 0; y < g->PH; y++) {
        float *row = P + (size_t)y * PWv;
        int h = y - pad;
        if (h < 0 || h >= g->H) {
            memset(row, 0, QW * sizeof(float));
            continue;
        }
        memset(row, 0, pad * sizeof(float));
        memcpy(row + pad, x + (size_t)h * g->W, g->W * sizeof(float));
        memset(row + pad + g->W, 0, (QW - pad - g->W) * sizeof(float));
    }
    for (int th = 0; th < g->TH; th++) {
        const float *rows = P + (size_t)4 * th * PWv;
        /* columns: X[r] = sum_a BT[r][a] row[4th + a] */
        for (int q = 0; q < QW; q += 8) {
            v8 d[6], o[6];
            for (int a = 0; a < 6; a++) d[a] = ld8(rows + (size_t)a * PWv + q);
            bt(o, d);
            for (int r = 0; r < 6; r++) st8(X + (size_t)r * PWv + q, o[r]);
        }
        /* rows: V[r*6+s] = sum_j BT[s][j] X[r][4t + j] */
        for (int r = 0; r < 6; r++)
            for (int t = 0; t < TW; t += 8) {
                int n = TW - t < 8 ? TW - t : 8;
                const float *xr = X + (size_t)r * PWv + 4 * t;
                v8 d[6], o[6];
                deinterleave4(d, xr);
                d[4] = next_lane(d[0], xr[32]);
                d[5] = next_lane(d[1], xr[33]);
                bt(o, d);
                for (int s = 0; s < 6; s++) stn(V + (size_t)(r * 6 + s) * es + th * TW + t, o[s], n);
            }
    }
}

/* One output plane o (OH,OW) = A^T M A + bias, from M[e * es + p]. H, Y
 * scratch [4][6][Tp], [4][4][Tp]. */
static void output_plane(float *o, const float *M, size_t es, float bias, const geom *g, float *Hs, float *Y)
{
    int T = g->T, Tp = g->Tp, TW = g->TW;
    for (int r = 0; r < 6; r++)
        for (int p = 0; p < T; p += 8) {
            int n = T - p < 8 ? T - p : 8;
            v8 m[6], h[4];
            for (int s = 0; s < 6; s++) m[s] = ldn(M + (size_t)(r * 6 + s) * es + p, n);
            at(h, m);
            for (int j = 0; j < 4; j++) st8(Hs + (size_t)(j * 6 + r) * Tp + p, h[j]);
        }
    for (int j = 0; j < 4; j++)
        for (int p = 0; p < T; p += 8) {
            v8 m[6], y[4];
            for (int r = 0; r < 6; r++) m[r] = ld8(Hs + (size_t)(j * 6 + r) * Tp + p);
            at(y, m);
            for (int i = 0; i < 4; i++) st8(Y + (size_t)(i * 4 + j) * Tp + p, y[i]);
        }
    /* each map row: its tiles' 4 columns interleaved back, 8 tiles at a time
     * (one by one on narrow maps) */
    for (int th = 0; th < g->TH; th++)
        for (int i = 0; i < 4 && 4 * th + i < g->OH; i++) {
            float *orow = o + (size_t)(4 * th + i) * g->OW;
            const float *y = Y + (size_t)i * 4 * Tp + th * TW;
            if (TW < 8) {
                for (int t = 0; t < TW; t++)
                    for (int j = 0; j < 4 && 4 * t + j < g->OW; j++) orow[4 * t + j] = y[(size_t)j * Tp + t] + bias;
                continue;
            }
            for (int t = 0; t < TW; t += 8) {
                int n = TW - t < 8 ? TW - t : 8, left = g->OW - 4 * t;
                v8 a[4], x[4];
                for (int j = 0; j < 4; j++) a[j] = ldn(y + (size_t)j * Tp + t, n) + bias;
                interleave4(x, a);
                for (int q = 0; q < 4; q++) st_upto(orow + 4 * t + 8 * q, x[q], left - 8 * q);
            }
        }
}

/* Z[e * es + p] = (A dy A^T)[e] for the tiles of one output-gradient plane
 * dy (OH,OW). Gs, Hs scratch [4][4][Tp], [6][4][Tp]; row PWv floats. */
static void zgrad_plane(float *Z, size_t es, const float *dy, const geom *g, float *Gs, float *Hs, float *row)
{
    int T = g->T, Tp = g->Tp, TW = g->TW;
    /* each map row (zero past the map) taken 8 tiles apart at a time (one
     * by one on narrow maps) */
    for (int th = 0; th < g->TH; th++)
        for (int i = 0; i < 4; i++) {
            int oh = 4 * th + i;
            float *d = Gs + (size_t)i * 4 * Tp + th * TW;
            if (TW < 8) {
                const float *src = dy + (size_t)oh * g->OW;
                for (int t = 0; t < TW; t++)
                    for (int j = 0; j < 4; j++)
                        d[(size_t)j * Tp + t] = oh < g->OH && 4 * t + j < g->OW ? src[4 * t + j] : 0.0f;
                continue;
            }
            if (oh < g->OH) {
                memcpy(row, dy + (size_t)oh * g->OW, g->OW * sizeof(float));
                memset(row + g->OW, 0, (g->PWv - g->OW) * sizeof(float));
            } else {
                memset(row, 0, g->PWv * sizeof(float));
            }
            for (int t = 0; t < TW; t += 8) {
                int n = TW - t < 8 ? TW - t : 8;
                v8 a[4];
                deinterleave4(a, row + 4 * t);
                for (int j = 0; j < 4; j++) stn(d + (size_t)j * Tp + t, a[j], n);
            }
        }
    /* columns: Hs[r][j] = sum_i AT[i][r] Gs[i][j] */
    for (int j = 0; j < 4; j++)
        for (int p = 0; p < T; p += 8) {
            v8 y[4], z[6];
            for (int i = 0; i < 4; i++) y[i] = ld8(Gs + (size_t)(i * 4 + j) * Tp + p);
            at_adj(z, y);
            for (int r = 0; r < 6; r++) st8(Hs + (size_t)(r * 4 + j) * Tp + p, z[r]);
        }
    /* rows: Z[r*6+s] = sum_j AT[j][s] Hs[r][j] */
    for (int r = 0; r < 6; r++)
        for (int p = 0; p < T; p += 8) {
            int n = T - p < 8 ? T - p : 8;
            v8 y[4], z[6];
            for (int j = 0; j < 4; j++) y[j] = ld8(Hs + (size_t)(r * 4 + j) * Tp + p);
            at_adj(z, y);
            for (int s = 0; s < 6; s++) stn(Z + (size_t)(r * 6 + s) * es + p, z[s], n);
        }
}

/* dx (H,W) += the tiles B dV B^T from dV[e * es + p] (set: dx =),
 * overlapping tiles adding in a fixed order. Q, D scratch [6][6][Tp], acc
 * PH*PWv. */
static void dinput_plane(float *dx, const float *dV, size_t es, const geom *g, float *Q, float *D, float *acc, int set)
{
    int T = g->T, Tp = g->Tp, TW = g->TW, PWv = g->PWv;
    /* rows: Q[b][r] = sum_s BT[s][b] dV[r*6+s] */
    for (int r = 0; r < 6; r++)
        for (int p = 0; p < T; p += 8) {
            int n = T - p < 8 ? T - p : 8;
            v8 v[6], o[6];
            for (int s = 0; s < 6; s++) v[s] = ldn(dV + (size_t)(r * 6 + s) * es + p, n);
            bt_adj(o, v);
            for (int b = 0; b < 6; b++) st8(Q + (size_t)(b * 6 + r) * Tp + p, o[b]);
        }
    /* columns: D[a][b] = sum_r BT[r][a] Q[b][r] */
    for (int b = 0; b < 6; b++)
        for (int p = 0; p < T; p += 8) {
            v8 v[6], o[6];
            for (int r = 0; r < 6; r++) v[r] = ld8(Q + (size_t)(b * 6 + r) * Tp + p);
            bt_adj(o, v);
            for (int a = 0; a < 6; a++) st8(D + (size_t)(a * 6 + b) * Tp + p, o[a]);
        }
    /* acc[4th+a][4t+b] += D[a][b], 8 tiles at a time: columns 0..3 of each
     * tile, then 4 and 5 (over the next tile's 0 and 1); lanes past the
     * tile row add zeros (one tile at a time on narrow maps) */
    memset(acc, 0, (size_t)g->PH * PWv * sizeof(float));
    for (int th = 0; th < g->TH; th++)
        for (int a = 0; a < 6; a++) {
            float *arow = acc + (size_t)(4 * th + a) * PWv;
            const float *d = D + (size_t)a * 6 * Tp + th * TW;
            if (TW < 8) {
                for (int t = 0; t < TW; t++)
                    for (int b = 0; b < 6; b++) arow[4 * t + b] += d[(size_t)b * Tp + t];
                continue;
            }
            for (int t = 0; t < TW; t += 8) {
                int n = TW - t < 8 ? TW - t : 8;
                v8 b[4], x[4], z = {0};
                for (int j = 0; j < 4; j++) b[j] = ldn(d + (size_t)j * Tp + t, n);
                interleave4(x, b);
                for (int q = 0; q < 4; q++) st8(arow + 4 * t + 8 * q, ld8(arow + 4 * t + 8 * q) + x[q]);
                b[0] = ldn(d + (size_t)4 * Tp + t, n), b[1] = ldn(d + (size_t)5 * Tp + t, n), b[2] = b[3] = z;
                interleave4(x, b);
                for (int q = 0; q < 4; q++) st8(arow + 4 * t + 4 + 8 * q, ld8(arow + 4 * t + 4 + 8 * q) + x[q]);
            }
        }
    for (int h = 0; h < g->H; h++) {
        float *xr = dx + (size_t)h * g->W;
        const float *ar = acc + (size_t)(h + g->pad) * PWv + g->pad;
        for (int w = 0; w < g->W; w += 8) {
            int n = g->W - w < 8 ? g->W - w : 8;
            v8 v = ldn(ar + w, n);
            stn(xr + w, set ? v : ldn(xr + w, n) + v, n);
        }
    }
}

/* ---- plane loops over threads ---- */

enum { OP_INPUT, OP_OUTPUT, OP_ZGRAD, OP_DINPUT };

typedef struct {
    int op;
    const geom *g;
    float *buf;       /* V, M, Z or dV of the chunk: (36, rows, P) */
    size_t P;         /* tiles in the chunk */
    int rows;         /* channels of buf: C or K */
    float *map;       /* out or dinp of the chunk's first image */
    const float *cmap; /* inp or dout of the chunk's first image */
    const float *bias;
    int set;          /* OP_DINPUT: overwrite map instead of adding */
} plane_args;

static void planes_range(void *ctx, int j0, int j1)
{
    const plane_args *a = ctx;
    const geom *g = a->g;
    float *scr = xcalloc(scratch_floats(g), sizeof(float));
    float *s1 = scr, *s2 = scr + 36 * (size_t)g->Tp, *s3 = scr + 72 * (size_t)g->Tp;
    size_t es = (size_t)a->rows * a->P, HW = (size_t)g->H * g->W, OHW = (size_t)g->OH * g->OW;
    for (int j = j0; j < j1; j++) {
        int i = j / a->rows, c = j % a->rows;
        float *b = a->buf + (size_t)c * a->P + (size_t)i * g->T;
        size_t plane = (size_t)i * a->rows + c;
        switch (a->op) {
        case OP_INPUT:
            input_plane(b, es, a->cmap + plane * HW, g, scr, scr + (size_t)g->PH * g->PWv);
            break;
        case OP_OUTPUT: output_plane(a->map + plane * OHW, b, es, a->bias ? a->bias[c] : 0.0f, g, s1, s2); break;
        case OP_ZGRAD: zgrad_plane(b, es, a->cmap + plane * OHW, g, s1, s2, s3); break;
        case OP_DINPUT: dinput_plane(a->map + plane * HW, b, es, g, s1, s2, s3, a->set); break;
        }
    }
    free(scr);
}

static void planes(int op, const geom *g, float *buf, int m, int rows, float *map, const float *cmap,
                   const float *bias, int set)
{
    plane_args a = {.op = op, .g = g, .buf = buf, .P = (size_t)m * g->T, .rows = rows, .map = map, .cmap = cmap,
                    .bias = bias, .set = set};
    par_for(m * rows, (size_t)m * rows * 36 * g->T, planes_range, &a);
}

/* ---- weights ---- */

typedef struct {
    float *U, *dw;
    const float *w, *dU;
    int K, C;
} wt_args;

/* U[e][k][c] = (G w[k][c] G^T)[e], eight input channels at a time */
static void weights_range(void *ctx, int k0, int k1)
{
    const wt_args *a = ctx;
    int C = a->C;
    size_t es = (size_t)a->K * C;
    for (int k = k0; k < k1; k++)
        for (int c = 0; c < C; c += 8) {
            int n = C - c < 8 ? C - c : 8;
            float t[9][8] = {{0}};
            for (int l = 0; l < n; l++)
                for (int q = 0; q < 9; q++) t[q][l] = a->w[((size_t)k * C + c + l) * 9 + q];
            v8 col[3], u[6], tmp[6][3], row[3], o[6];
            for (int b = 0; b < 3; b++) {
                for (int q = 0; q < 3; q++) col[q] = ld8(t[q * 3 + b]);
                gt(u, col);
                for (int r = 0; r < 6; r++) tmp[r][b] = u[r];
            }
            for (int r = 0; r < 6; r++) {
                for (int b = 0; b < 3; b++) row[b] = tmp[r][b];
                gt(o, row);
                for (int s = 0; s < 6; s++) stn(a->U + (r * 6 + s) * es + (size_t)k * C + c, o[s], n);
            }
        }
}

/* dw[k][c] += G^T dU[.][k][c] G */
static void dweights_range(void *ctx, int k0, int k1)
{
    const wt_args *a = ctx;
    int C = a->C;
    size_t es = (size_t)a->K * C;
    for (int k = k0; k < k1; k++)
        for (int c = 0; c < C; c += 8) {
            int n = C - c < 8 ? C - c : 8;
            v8 u[6], g3[3], tmp[6][3], col[6];
            for (int r = 0; r < 6; r++) {
                for (int s = 0; s < 6; s++) u[s] = ldn(a->dU + (r * 6 + s) * es + (size_t)k * C + c, n);
                gt_adj(g3, u);
                for (int b = 0; b < 3; b++) tmp[r][b] = g3[b];
            }
            float t[9][8];
            for (int b = 0; b < 3; b++) {
                for (int r = 0; r < 6; r++) col[r] = tmp[r][b];
                gt_adj(g3, col);
                for (int q = 0; q < 3; q++) st8(t[q * 3 + b], g3[q]);
            }
            for (int l = 0; l < n; l++)
                for (int q = 0; q < 9; q++) a->dw[((size_t)k * C + c + l) * 9 + q] += t[q][l];
        }
}

static void weights(float *U, const float *w, int K, int C)
{
    wt_args a = {.U = U, .w = w, .K = K, .C = C};
    par_for(K, (size_t)K * C * 36, weights_range, &a);
}

static void dweights(float *dw, const float *dU, int K, int C)
{
    wt_args a = {.dw = dw, .dU = dU, .K = K, .C = C};
    par_for(K, (size_t)K * C * 36, dweights_range, &a);
}

/* ---- GEMMs ---- */

typedef struct {
    int kind; /* 0: M = U V, 1: dU = Z V^T + beta dU, 2: dV = U^T Z */
    float beta;
    float *out;
    const float *U, *V, *Z;
    int K, C, P;
} gemm_args;

static void gemms_range(void *ctx, int e0, int e1)
{
    const gemm_args *a = ctx;
    size_t su = (size_t)a->K * a->C, sv = (size_t)a->C * a->P, sz = (size_t)a->K * a->P;
    for (int e = e0; e < e1; e++) {
        if (a->kind == 0)
            blas_sgemm_serial(0, 0, a->K, a->P, a->C, 1.0f, a->U + e * su, a->C, a->V + e * sv, a->P, 0.0f, a->out + e * sz,
                       a->P);
        else if (a->kind == 1)
            blas_sgemm_serial(0, 1, a->K, a->C, a->P, 1.0f, a->Z + e * sz, a->P, a->V + e * sv, a->P, a->beta, a->out + e * su,
                       a->C);
        else
            blas_sgemm_serial(1, 0, a->C, a->P, a->K, 1.0f, a->U + e * su, a->C, a->Z + e * sz, a->P, 0.0f, a->out + e * sv,
                       a->P);
    }
}

/* the 36 position GEMMs side by side, each on one thread: the same bytes on
 * any thread count */
static void gemms(int kind, float beta, float *out, const float *U, const float *V, const float *Z, int K, int C,
                  int P)
{
    gemm_args a = {.kind = kind, .beta = beta, .out = out, .U = U, .V = V, .Z = Z, .K = K, .C = C, .P = P};
    par_for(36, (size_t)36 * K * C * P, gemms_range, &a);
}

/* ---- workspace and chunks ---- */


/* images per chunk: equal chunks near the bounds above */
static int chunk_images(const geom *g, int B)
{
    size_t per = 36 * (size_t)(g->C + g->K) * g->T;
    int most = (int)(WINO_CHUNK_FLOATS / per), least = (WINO_MIN_TILES + g->T - 1) / g->T;
    if (most < least) most = least;
    if (most >= B) return B;
    int chunks = (B + most - 1) / most;
    return (B + chunks - 1) / chunks;
}

/* nu transformed weight sets (U, or U and dU) and a chunk of nb images */
static size_t ws_floats(const geom *g, int nb, int nu)
{
    return 36 * ((size_t)nu * g->K * g->C + (size_t)(g->C + g->K) * nb * g->T);
}

/* the backward pass keeps U and dU apart only when both gradients are
 * wanted over several chunks (dU sums over the chunks); with one chunk, dU
 * goes to dw before U is made in the same place */
static int separate_du(const geom *g, int B, int both) { return both && chunk_images(g, B) < B; }

size_t wino_workspace_bytes(const conv_shape *s, int B)
{
    geom g;
    geom_init(&g, s);
    return ws_floats(&g, chunk_images(&g, B), 1 + separate_du(&g, B, 1)) * sizeof(float);
}

void wino_forward(float *out, const float *inp, const float *w, const float *b, int B, const conv_shape *s)
{
    geom g;
    geom_init(&g, s);
    int nb = chunk_images(&g, B), C = g.C, K = g.K;
    float *U = nn_workspace(ws_floats(&g, nb, 1));
    float *V = U + 36 * (size_t)K * C, *M = V + 36 * (size_t)C * nb * g.T;
    weights(U, w, K, C);
    size_t HW = (size_t)g.H * g.W, OHW = (size_t)g.OH * g.OW;
    for (int n0 = 0; n0 < B; n0 += nb) {
        int m = B - n0 < nb ? B - n0 : nb, P = m * g.T;
        planes(OP_INPUT, &g, V, m, C, NULL, inp + (size_t)n0 * C * HW, NULL, 0);
        gemms(0, 0.0f, M, U, V, NULL, K, C, P);
        planes(OP_OUTPUT, &g, M, m, K, out + (size_t)n0 * K * OHW, NULL, b, 0);
    }
}

static void backward(float *dinp, float *dw, const float *dout, const float *inp, const float *w, int B,
                     const conv_shape *s, int set)
{
    if (!dinp && !dw) return;
    geom g;
    geom_init(&g, s);
    int nb = chunk_images(&g, B), C = g.C, K = g.K, sep = separate_du(&g, B, dinp && dw);
    float *U = nn_workspace(ws_floats(&g, nb, 1 + sep)), *dU = sep ? U + 36 * (size_t)K * C : U;
    float *V = U + 36 * (size_t)(1 + sep) * K * C, *Z = V + 36 * (size_t)C * nb * g.T;
    if (dinp && (sep || !dw)) weights(U, w, K, C);
    size_t HW = (size_t)g.H * g.W, OHW = (size_t)g.OH * g.OW;
    for (int n0 = 0; n0 < B; n0 += nb) {
        int m = B - n0 < nb ? B - n0 : nb, P = m * g.T;
        planes(OP_ZGRAD, &g, Z, m, K, NULL, dout + (size_t)n0 * K * OHW, NULL, 0);
        if (dw) {
            /* dU sums the chunks in order */
            planes(OP_INPUT, &g, V, m, C, NULL, inp + (size_t)n0 * C * HW, NULL, 0);
            gemms(1, n0 ? 1.0f : 0.0f, dU, NULL, V, Z, K, C, P);
        }
        if (dinp) {
            if (dw && !sep) {
                /* one chunk: dU is done; U takes its place */
                dweights(dw, dU, K, C);
                weights(U, w, K, C);
            }
            gemms(2, 0.0f, V, U, NULL, Z, K, C, P);
            planes(OP_DINPUT, &g, V, m, C, dinp + (size_t)n0 * C * HW, NULL, NULL, set);
        }
    }
    if (dw && (sep || !dinp)) dweights(dw, dU, K, C);
}

void wino_backward(float *dinp, float *dw, const float *dout, const float *inp, const float *w, int B,
                   const conv_shape *s)
{
    backward(dinp, dw, dout, inp, w, B, s, 0);
}

void wino_backward_set(float *dinp, float *dw, const float *dout, const float *inp, const float *w, int B,
                       const conv_shape *s)
{
    backward(dinp, dw, dout, inp, w, B, s, 1);
}
