/* par: see par.h. A call splits [0, n) into one range per thread, starts a
 * thread for each range but the first and runs the first itself. Thread start
 * costs tens of microseconds; the threshold keeps it well below the work. */
#include "par.h"

#include "blas.h"

#include <pthread.h>

#define PAR_MIN_WORK 65536
#define PAR_MAX_THREADS 16

typedef struct {
    void (*fn)(void *ctx, int lo, int hi);
    void *ctx;
    int lo, hi;
} job;

static void *run(void *arg)
{
    job *j = arg;
    j->fn(j->ctx, j->lo, j->hi);
    return NULL;
}

void par_for(int n, size_t work, void (*fn)(void *ctx, int lo, int hi), void *ctx)
{
    if (n <= 0) return;
    int nt = blas_get_threads();
    if (nt > PAR_MAX_THREADS) nt = PAR_MAX_THREADS;
    if (nt > n) nt = n;
    if (nt < 2 || work < PAR_MIN_WORK) {
        fn(ctx, 0, n);
        return;
    }
    job jobs[PAR_MAX_THREADS];
    pthread_t tid[PAR_MAX_THREADS];
    int started[PAR_MAX_THREADS] = {0};
    for (int t = 0; t < nt; t++) {
        jobs[t] = (job){fn, ctx, (int)((long long)n * t / nt), (int)((long long)n * (t + 1) / nt)};
        if (t > 0) started[t] = pthread_create(&tid[t], NULL, run, &jobs[t]) == 0;
    }
    fn(ctx, jobs[0].lo, jobs[0].hi);
    for (int t = 1; t < nt; t++) {
        if (started[t])
            pthread_join(tid[t], NULL);
        else
            fn(ctx, jobs[t].lo, jobs[t].hi); /* no thread to be had: run it here */
    }
}
