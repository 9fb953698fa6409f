/* loss: cross-entropy and cosine loss; see loss.h. */
#include "loss.h"

#include <math.h>
#include <stddef.h>

float crossentropy_forward(float *probs, const float *logits, const int *y, int B, int C)
{
    double total = 0;
    for (int i = 0; i < B; i++) {
        const float *l = logits + (size_t)i * C;
        float mx = l[0];
        for (int c = 1; c < C; c++)
            if (l[c] > mx) mx = l[c];
        double s = 0;
        for (int c = 0; c < C; c++) s += exp((double)l[c] - mx);
        double lse = mx + log(s);
        total += lse - l[y[i]];
        if (probs)
            for (int c = 0; c < C; c++) probs[(size_t)i * C + c] = (float)exp((double)l[c] - lse);
    }
    return (float)(total / B);
}

void crossentropy_backward(float *dlogits, const float *probs, const int *y, int B, int C, float dloss)
{
    float k = dloss / B;
    for (int i = 0; i < B; i++)
        for (int c = 0; c < C; c++)
            dlogits[(size_t)i * C + c] += k * (probs[(size_t)i * C + c] - (c == y[i]));
}

static double norm(const float *x, int D)
{
    double s = 0;
    for (int j = 0; j < D; j++) s += (double)x[j] * x[j];
    s = sqrt(s);
    return s > 1e-8 ? s : 1e-8;
}

static double dot(const float *a, const float *b, int D)
{
    double s = 0;
    for (int j = 0; j < D; j++) s += (double)a[j] * b[j];
    return s;
}

float cosloss_forward(float *cos1, float *cos2, const float *z, const float *it, const float *t, const int *y, int B,
                      int D, float lambda)
{
    double total = 0;
    for (int i = 0; i < B; i++) {
        const float *zi = z + (size_t)i * D;
        double nz = norm(zi, D), c1 = 0, c2 = 0;
        if (lambda != 0.0f) {
            const float *u = it + (size_t)i * D;
            c1 = dot(zi, u, D) / (nz * norm(u, D));
        }
        if (lambda != 1.0f) {
            const float *u = t + (size_t)y[i] * D;
            c2 = dot(zi, u, D) / (nz * norm(u, D));
        }
        if (cos1) cos1[i] = (float)c1;
        if (cos2) cos2[i] = (float)c2;
        total += lambda * c1 + (1.0 - lambda) * c2;
    }
    return (float)(-total / B);
}

void cosloss_backward(float *dz, const float *z, const float *it, const float *t, const int *y, int B, int D,
                      float lambda, float dloss)
{
    for (int i = 0; i < B; i++) {
        const float *zi = z + (size_t)i * D;
        float *g = dz + (size_t)i * D;
        double nz = norm(zi, D), k = -(double)dloss / B / nz;
        /* terms: (weight, u) pairs */
        const float *u[2] = {lambda != 0.0f ? it + (size_t)i * D : NULL, lambda != 1.0f ? t + (size_t)y[i] * D : NULL};
        double wt[2] = {lambda, 1.0 - lambda};
        for (int q = 0; q < 2; q++) {
            if (!u[q]) continue;
            double nu = norm(u[q], D), c = dot(zi, u[q], D) / (nz * nu);
            double a = k * wt[q] / nu, b = k * wt[q] * c / nz;
            for (int j = 0; j < D; j++) g[j] += (float)(a * u[q][j] - b * zi[j]);
        }
    }
}
