/* wavg: the running uniform average of parameter snapshots; see wavg.h. */
#include "train/wavg.h"

#include "util.h"

#include <stdlib.h>
#include <string.h>

void wavg_init(wavg *w, size_t numel)
{
    w->numel = numel;
    w->n = 0;
    w->avg = xmalloc_aligned((numel ? numel : 1) * sizeof(float));
}

void wavg_free(wavg *w)
{
    free(w->avg);
    memset(w, 0, sizeof *w);
}

void wavg_reset(wavg *w) { w->n = 0; }

void wavg_add(wavg *w, const float *x)
{
    if (w->n == 0) {
        memcpy(w->avg, x, w->numel * sizeof(float));
    } else {
        /* torch: averaged + (model - averaged) / (n + 1), in float */
        float k = (float)(w->n + 1);
        for (size_t i = 0; i < w->numel; i++) w->avg[i] += (x[i] - w->avg[i]) / k;
    }
    w->n++;
}
