/* swad_run: drives lib/train/swad over a scripted run for swad.sh.
 * Usage: swad_run NS NE RATIO NUMEL < script, the script holding one line
 * "STEP LOSS" per evaluation (steps increasing). The iterate after step t
 * is x_t[i] = ((7t + 13i) mod 101) / 101 - 0.5 in float. Training stops at
 * a dead valley. Prints "converged C", "dead D" (evaluations closed),
 * "window FROM TO N" (the steps averaged) and the average, one value a line. */
#include "train/swad.h"

#include <stdio.h>
#include <stdlib.h>

int main(int argc, char **argv)
{
    if (argc != 5) return 2;
    int ns = atoi(argv[1]), ne = atoi(argv[2]);
    double ratio = atof(argv[3]);
    size_t numel = (size_t)atol(argv[4]);
    swad s;
    swad_init(&s, numel, ns, ne, ratio);
    float *x = malloc((numel ? numel : 1) * sizeof(float));
    long long t = 0, step;
    double loss;
    int evals = 0;
    while (scanf("%lld %lf", &step, &loss) == 2) {
        for (; t <= step; t++) {
            for (size_t i = 0; i < numel; i++) x[i] = (float)((7 * t + 13 * (long long)i) % 101) / 101.0f - 0.5f;
            swad_update(&s, x);
        }
        evals++;
        if (swad_evaluate(&s, loss, step)) break;
    }
    const float *avg = swad_finish(&s);
    int64_t from = 0, to = -1, n = swad_window(&s, &from, &to);
    printf("converged %d\ndead %d\nwindow %lld %lld %lld\n", swad_converged(&s) ? s.conv : -1, s.dead ? s.dead : -1,
           (long long)from, (long long)to, (long long)n);
    for (size_t i = 0; avg && i < numel; i++) printf("%.9g\n", avg[i]);
    swad_free(&s);
    free(x);
    return 0;
}
