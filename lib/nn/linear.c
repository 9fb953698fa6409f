/* linear: fully connected layer on sgemm, with a naive reference. */
#include "nn/linear.h"

#include "blas.h"

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

// dinp (N,C), dw (OC,C), db (OC); dout (N,OC), inp (N,C), w (OC,C)
void linear_backward(float *dinp, float *dw, float *db, const float *dout, const float *inp, const float *w, int N,
                     int C, int OC)
{
    if (dinp) blas_sgemm(0, 0, N, C, OC, 1, dout, OC, w, C, 1, dinp, C);
    if (dw) blas_sgemm(1, 0, OC, C, N, 1, dout, OC, inp, C, 1, dw, C);
    if (db)
        for (int i = 0; i < N; i++) {
            const float *d = dout + (size_t)i * OC;
            for (int o = 0; o < OC; o++) db[o] += d[o];
        }
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
