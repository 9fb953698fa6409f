/* floats.h: what the numeric unit tests share: random vectors, the error
 * measure they report and byte-for-byte equality. */
#ifndef VL_TEST_FLOATS_H
#define VL_TEST_FLOATS_H

#include "rng.h"
#include "util.h"

#include <math.h>
#include <stddef.h>
#include <string.h>

/* n floats uniform in [-scale, scale) */
static inline float *rand_floats(rng *r, size_t n, float scale)
{
    float *x = xmalloc((n ? n : 1) * sizeof(float));
    for (size_t i = 0; i < n; i++) x[i] = (float)((rng_uniform(r) * 2 - 1) * scale);
    return x;
}

/* the largest |a - b| relative to b's largest magnitude (infinite on NaN) */
static inline double maxrel(const float *a, const float *b, size_t n)
{
    double md = 0, ms = 1e-12;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - b[i]);
        if (d > md || isnan(d)) md = isnan(d) ? INFINITY : d;
        if (fabs(b[i]) > ms) ms = fabs(b[i]);
    }
    return md / ms;
}

static inline int same(const float *a, const float *b, size_t n) { return memcmp(a, b, n * sizeof(float)) == 0; }

#endif
