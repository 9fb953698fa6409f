/* linear: fully connected layer on sgemm, with a naive reference. */
#include "nn/linear.h"

#include "blas.h"
#include "par.h"
#include "simd.h"

#include <string.h>

// out (N,OC), inp (N,C), w (OC,C), b (OC) or NULL
void linear_forward(float *out, const float *inp, const float *w, const float *b, int N, int C, int OC)
{
    float beta = 0;
    if (b) {
        /* the bias rows go in first so sgemm adds onto them: no extra pass */
        for (int i = 0; i < N; i++) memcpy(out + (size_t)i * OC, b, (size_t)OC * sizeof(float));
        beta = 1;
    }
    blas_sgemm(0, 1, N, OC, C, 1, inp, C, w, C, beta, out, OC);
}

void linear_forward_ref(float *out, const float *inp, const float *w, const float *b, int N, int C, int OC)
{
    for (int i = 0; i < N; i++)
        for (int o = 0; o < OC; o++) {
            double s = b ? b[o] : 0;
            for (int c = 0; c < C; c++) s += (double)inp[(size_t)i * C + c] * w[(size_t)o * C + c];
            out[(size_t)i * OC + o] = (float)s;
        }
}

/* db[o] += dout[i][o] over the rows in order, for columns [16 k0, 16 k1)
 * side by side on the thread pool (16 lanes at a time): every element sums
 * the same way on any split */
typedef struct {
    float *db;
    const float *dout;
    int N, OC;
} db_args;

static void db_cols(void *ctx, int k0, int k1)
{
    const db_args *a = ctx;
    int o0 = VL_VW * k0, o1 = VL_VW * k1 < a->OC ? VL_VW * k1 : a->OC;
    for (int o = o0; o < o1; o += VL_VW) {
        int n = o1 - o < VL_VW ? o1 - o : VL_VW;
        vf acc = n == VL_VW ? vf_load(a->db + o) : vf_load_part(a->db + o, n, 0.0f);
        for (int i = 0; i < a->N; i++) {
            const float *d = a->dout + (size_t)i * a->OC + o;
            acc += n == VL_VW ? vf_load(d) : vf_load_part(d, n, 0.0f);
        }
        if (n == VL_VW)
            vf_store(a->db + o, acc);
        else
            vf_store_part(a->db + o, acc, n);
    }
}

static void backward(float *dinp, float *dw, float *db, const float *dout, const float *inp, const float *w, int N,
                     int C, int OC, float beta)
{
    if (dinp) blas_sgemm(0, 0, N, C, OC, 1, dout, OC, w, C, beta, dinp, C);
    if (dw) blas_sgemm(1, 0, OC, C, N, 1, dout, OC, inp, C, 1, dw, C);
    if (db) {
        db_args a = {db, dout, N, OC};
        par_for((OC + VL_VW - 1) / VL_VW, (size_t)N * OC, db_cols, &a);
    }
}

// dinp (N,C), dw (OC,C), db (OC); dout (N,OC), inp (N,C), w (OC,C)
void linear_backward(float *dinp, float *dw, float *db, const float *dout, const float *inp, const float *w, int N,
                     int C, int OC)
{
    backward(dinp, dw, db, dout, inp, w, N, C, OC, 1);
}

void linear_backward_set(float *dinp, float *dw, float *db, const float *dout, const float *inp, const float *w,
                         int N, int C, int OC)
{
    backward(dinp, dw, db, dout, inp, w, N, C, OC, 0);
}

void linear_backward_ref(float *dinp, float *dw, float *db, const float *dout, const float *inp, const float *w,
                         int N, int C, int OC)
{
    if (dinp)
        for (int i = 0; i < N; i++)
            for (int c = 0; c < C; c++) {
                double s = 0;
                for (int o = 0; o < OC; o++) s += (double)dout[(size_t)i * OC + o] * w[(size_t)o * C + c];
                dinp[(size_t)i * C + c] += (float)s;
            }
    if (dw)
        for (int o = 0; o < OC; o++)
            for (int c = 0; c < C; c++) {
                double s = 0;
                for (int i = 0; i < N; i++) s += (double)dout[(size_t)i * OC + o] * inp[(size_t)i * C + c];
                dw[(size_t)o * C + c] += (float)s;
            }
    if (db)
        for (int o = 0; o < OC; o++) {
            double s = 0;
            for (int i = 0; i < N; i++) s += dout[(size_t)i * OC + o];
            db[o] += (float)s;
        }
}
