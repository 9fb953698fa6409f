/* par: see par.h. One job at a time: a caller that wins the pool's lock
 * publishes (fn, ctx, ranges) under a new generation number, wakes the
 * workers, runs range 0 itself and sleeps until the last worker is done.
 * Worker k runs range k. Workers are started lazily, the first time a call
 * wants them, and live as long as the process; between jobs they block on a
 * condition variable (no spinning, no yield loops: the cores stay free for
 * the caller's own work). */
#include "par.h"


#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <unistd.h>

#define PAR_MIN_WORK 65536
#define PAR_MAX_THREADS 64

typedef void (*par_fn)(void *ctx, int lo, int hi);

static struct {
    pthread_mutex_t run;      /* held by the caller that owns the pool */
    pthread_mutex_t mu;       /* guards everything below */
    pthread_cond_t wake, done;
    int started;              /* workers 1..started exist */
    unsigned long gen;        /* bumped for each job */
    par_fn fn;
    void *ctx;
    int n, nt;                /* the job: [0, n) in nt ranges */
    int pending;              /* worker ranges not yet finished */
} P = {.run = PTHREAD_MUTEX_INITIALIZER,
       .mu = PTHREAD_MUTEX_INITIALIZER,
       .wake = PTHREAD_COND_INITIALIZER,
       .done = PTHREAD_COND_INITIALIZER};

static unsigned long born[PAR_MAX_THREADS]; /* P.gen when worker k started */
static _Thread_local int depth; /* > 0 inside a par_for on this thread */

int par_busy(void) { return depth > 0; }

static int range_lo(int n, int nt, int t) { return (int)((long long)n * t / nt); }

static void *worker(void *arg)
{
    int k = (int)(size_t)arg;
    unsigned long seen = born[k]; /* jobs before this worker are not its own */
    depth = 1; /* everything a worker runs is nested */
    pthread_mutex_lock(&P.mu);
    for (;;) {
        while (P.gen == seen) pthread_cond_wait(&P.wake, &P.mu);
        seen = P.gen;
        if (k >= P.nt) continue; /* not in this job */
        par_fn fn = P.fn;
        void *ctx = P.ctx;
        int lo = range_lo(P.n, P.nt, k), hi = range_lo(P.n, P.nt, k + 1);
        pthread_mutex_unlock(&P.mu);
        fn(ctx, lo, hi);
        pthread_mutex_lock(&P.mu);
        if (--P.pending == 0) pthread_cond_signal(&P.done);
    }
    return NULL;
}

/* In a child of fork() only the forking thread exists: the pool starts
 * afresh there (its locks may have been held by threads that are gone). */
static void forked_child(void)
{
    pthread_mutex_init(&P.run, NULL);
    pthread_mutex_init(&P.mu, NULL);
    pthread_cond_init(&P.wake, NULL);
    pthread_cond_init(&P.done, NULL);
    P.started = 0;
    P.pending = 0;
}

/* Starts workers up to nt - 1 in all (called with P.run held); returns how
 * many exist, which is fewer when the system refuses a thread. */
static int grow(int nt)
{
    static int atfork;
    if (!atfork) atfork = pthread_atfork(NULL, NULL, forked_child) == 0;
    while (P.started < nt - 1) {
        pthread_t t;
        pthread_attr_t a;
        pthread_attr_init(&a);
        pthread_attr_setdetachstate(&a, PTHREAD_CREATE_DETACHED);
        born[P.started + 1] = P.gen; /* P.gen only changes under P.run, held here */
        int ok = pthread_create(&t, &a, worker, (void *)(size_t)(P.started + 1)) == 0;
        pthread_attr_destroy(&a);
        if (!ok) break;
        P.started++;
    }
    return P.started;
}

void par_for(int n, size_t work, par_fn fn, void *ctx)
{
    if (n <= 0) return;
    int nt = par_threads();
    if (nt > PAR_MAX_THREADS) nt = PAR_MAX_THREADS;
    if (nt > n) nt = n;
    /* no more ranges than halves of the threshold: a range is worth a wake-up */
    if ((size_t)nt > work / (PAR_MIN_WORK / 2)) nt = (int)(work / (PAR_MIN_WORK / 2));
    if (nt < 2 || work < PAR_MIN_WORK || depth > 0 || pthread_mutex_trylock(&P.run) != 0) {
        depth++;
        fn(ctx, 0, n);
        depth--;
        return;
    }
    int have = grow(nt);
    if (nt > have + 1) nt = have + 1;
    depth++;
    if (nt > 1) {
        pthread_mutex_lock(&P.mu);
        P.fn = fn;
        P.ctx = ctx;
        P.n = n;
        P.nt = nt;
        P.pending = nt - 1;
        P.gen++;
        pthread_cond_broadcast(&P.wake);
        pthread_mutex_unlock(&P.mu);
    }
    fn(ctx, 0, range_lo(n, nt, 1));
    if (nt > 1) {
        pthread_mutex_lock(&P.mu);
        while (P.pending > 0) pthread_cond_wait(&P.done, &P.mu);
        pthread_mutex_unlock(&P.mu);
    }
    depth--;
    pthread_mutex_unlock(&P.run);
}

static atomic_int threads;
static pthread_once_t threads_once = PTHREAD_ONCE_INIT;

static void threads_init(void)
{
    long cores = sysconf(_SC_NPROCESSORS_ONLN), n = 0;
    static const char *const env[] = {"OPENBLAS_NUM_THREADS", "GOTO_NUM_THREADS", "OMP_NUM_THREADS"};
    for (int i = 0; i < 3 && n <= 0; i++) {
        const char *v = getenv(env[i]);
        if (v) n = strtol(v, NULL, 10);
    }
    if (cores < 1) cores = 1;
    if (n <= 0 || n > cores) n = cores;
    atomic_store(&threads, (int)n);
}

void par_set_threads(int n)
{
    pthread_once(&threads_once, threads_init);
    if (n > 0) atomic_store(&threads, n);
}

int par_threads(void)
{
    pthread_once(&threads_once, threads_init);
    return atomic_load(&threads);
}
