/* Unit tests of lib/par, the thread pool: every index covered once on any
 * thread count, the work really shared out, thousands of calls in a row (the
 * pool growing as the thread count changes), nested par_for and blas_sgemm
 * run inline on the calling thread, concurrent blas_sgemm_serial from the
 * workers, attention's (batch, head) pairs on the pool, two threads calling
 * at once, a child of fork() with a pool of its own, and no CPU burnt
 * between calls. */
#include "blas.h"
#include "check.h"
#include "nn/attention.h"
#include "par.h"
#include "rng.h"
#include "util.h"

#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define MAXN 5000
#define BIG ((size_t)1 << 30) /* work that is always worth splitting */

typedef struct {
    atomic_int hits[MAXN];
    atomic_int nwho;
    pthread_t who[64];
    pthread_mutex_t mu;
} cover;

static void cover_reset(cover *c)
{
    for (int i = 0; i < MAXN; i++) atomic_store(&c->hits[i], 0);
    atomic_store(&c->nwho, 0);
}

static void note_thread(cover *c)
{
    pthread_t me = pthread_self();
    pthread_mutex_lock(&c->mu);
    int n = atomic_load(&c->nwho), seen = 0;
    for (int i = 0; i < n; i++) seen |= pthread_equal(c->who[i], me);
    if (!seen && n < 64) {
        c->who[n] = me;
        atomic_store(&c->nwho, n + 1);
    }
    pthread_mutex_unlock(&c->mu);
}

static void mark(void *p, int lo, int hi)
{
    cover *c = p;
    note_thread(c);
    for (int i = lo; i < hi; i++) atomic_fetch_add(&c->hits[i], 1);
}

static int covered_once(cover *c, int n)
{
    for (int i = 0; i < MAXN; i++)
        if (atomic_load(&c->hits[i]) != (i < n)) return 0;
    return 1;
}

static void fill(float *p, size_t n, rng *r)
{
    for (size_t i = 0; i < n; i++) p[i] = (float)(rng_uniform(r) * 2 - 1);
}

/* nested: each outer range runs an inner par_for over its indices and a
 * product large enough to be split when not nested */
enum { NM = 256, NN = 512, NK = 256, NOUT = 4 };
typedef struct {
    cover *c;
    const float *A, *B;
    float *C[NOUT];
    atomic_int elsewhere; /* inner ranges that ran on another thread */
} nest;

typedef struct {
    nest *n;
    int base;
    pthread_t self;
} nest_inner;

static void inner_mark(void *p, int lo, int hi)
{
    nest_inner *in = p;
    if (!pthread_equal(in->self, pthread_self())) atomic_fetch_add(&in->n->elsewhere, 1);
    for (int i = lo; i < hi; i++) atomic_fetch_add(&in->n->c->hits[in->base + i], 1);
}

static void outer(void *p, int lo, int hi)
{
    nest *n = p;
    for (int i = lo; i < hi; i++) {
        nest_inner in = {n, i * 100, pthread_self()};
        par_for(100, BIG, inner_mark, &in);
        blas_sgemm(0, 0, NM, NN, NK, 1, n->A, NK, n->B, NN, 0, n->C[i], NN);
    }
}

/* independent GEMMs side by side, each on one worker */
enum { NG = 36 };
typedef struct {
    const float *A, *B;
    float *C;
} many;

static void gemm_shape(int g, int *m, int *nn, int *k)
{
    *m = 16 + 7 * g;
    *nn = 300 - 5 * g;
    *k = 40 + 3 * g;
}

static void many_range(void *p, int lo, int hi)
{
    many *a = p;
    for (int g = lo; g < hi; g++) {
        int m, n, k;
        gemm_shape(g, &m, &n, &k);
        blas_sgemm_serial(0, 1, m, n, k, 1, a->A, k, a->B, k, 0, a->C + (size_t)g * 300 * 300, n);
    }
}

/* a second thread using the pool while the main thread does */
typedef struct {
    cover c;
    int ok;
} rival;

static void *rival_run(void *p)
{
    rival *r = p;
    r->ok = 1;
    for (int i = 0; i < 2000; i++) {
        cover_reset(&r->c);
        par_for(1 + i % 97, BIG, mark, &r->c);
        r->ok &= covered_once(&r->c, 1 + i % 97);
    }
    return NULL;
}

static double cpu_seconds(void)
{
    struct timespec t;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

int main(void)
{
    static cover c = {.mu = PTHREAD_MUTEX_INITIALIZER};
    rng r;
    rng_seed(&r, 3);

    int ok = 1, shared = 0, big = 0;
    static const int ns[] = {1, 2, 3, 7, 64, 1000, 4999};
    for (int t = 1; t <= 4; t++) {
        blas_set_threads(t);
        for (size_t i = 0; i < sizeof ns / sizeof ns[0]; i++)
            for (size_t work = 1; work <= (size_t)1 << 24; work *= 16) {
                cover_reset(&c);
                par_for(ns[i], work, mark, &c);
                ok &= covered_once(&c, ns[i]);
                if (t == 2 && ns[i] >= 2 && work >= (1 << 20)) {
                    big++;
                    shared += atomic_load(&c.nwho) == 2;
                }
            }
    }
    CHECK(ok, "par: each index in exactly one range on 1-4 threads, 7 sizes, work 1 to 2^24");
    CHECK(shared == big, "par: large work is shared by 2 threads (%d of %d calls)", shared, big);

    ok = 1;
    for (int i = 0; i < 20000; i++) {
        if (i % 1000 == 0) blas_set_threads(1 + i / 1000 % 4);
        int n = 1 + i % 13;
        cover_reset(&c);
        par_for(n, BIG, mark, &c);
        ok &= covered_once(&c, n);
    }
    CHECK(ok, "par: 20000 calls in a row, thread count changing between 1 and 4, each covered once");

    /* nested calls: par_for and blas_sgemm inside a par_for body */
    blas_set_threads(2);
    nest n = {&c, NULL, NULL, {0}, 0};
    float *A = xmalloc((size_t)NM * NK * 4), *B = xmalloc((size_t)NK * NN * 4), *want = xmalloc((size_t)NM * NN * 4);
    fill(A, (size_t)NM * NK, &r);
    fill(B, (size_t)NK * NN, &r);
    n.A = A;
    n.B = B;
    for (int i = 0; i < NOUT; i++) n.C[i] = xmalloc((size_t)NM * NN * 4);
    blas_sgemm_serial(0, 0, NM, NN, NK, 1, A, NK, B, NN, 0, want, NN);
    cover_reset(&c);
    par_for(NOUT, BIG, outer, &n);
    int same = 1;
    for (int i = 0; i < NOUT; i++) same &= memcmp(n.C[i], want, (size_t)NM * NN * 4) == 0;
    CHECK(covered_once(&c, NOUT * 100) && atomic_load(&n.elsewhere) == 0,
          "par: a nested par_for runs whole on the calling thread (%d ranges elsewhere)", atomic_load(&n.elsewhere));
    CHECK(same, "par: blas_sgemm inside a par_for body gives the unsplit product's bytes");
    for (int i = 0; i < NOUT; i++) free(n.C[i]);
    free(A);
    free(B);
    free(want);

    /* 36 independent products at once from the workers */
    many m = {xmalloc(300 * 300 * 4), xmalloc(300 * 300 * 4), xcalloc((size_t)NG * 300 * 300, 4)};
    float *serial = xcalloc((size_t)NG * 300 * 300, 4);
    fill((float *)m.A, 300 * 300, &r);
    fill((float *)m.B, 300 * 300, &r);
    par_for(NG, BIG, many_range, &m);
    many s1 = {m.A, m.B, serial};
    many_range(&s1, 0, NG);
    CHECK(memcmp(m.C, serial, (size_t)NG * 300 * 300 * 4) == 0,
          "par: %d concurrent blas_sgemm_serial calls give the bytes of the same calls one by one", NG);
    float *sref = xcalloc(300 * 300, 4);
    int m0, n0, k0;
    gemm_shape(NG - 1, &m0, &n0, &k0);
    blas_sgemm_ref(0, 1, m0, n0, k0, 1, m.A, k0, m.B, k0, 0, sref, n0);
    double worst = 0;
    for (int i = 0; i < m0 * n0; i++) {
        double d = m.C[(size_t)(NG - 1) * 300 * 300 + i] - sref[i];
        if (d < 0) d = -d;
        if (d > worst) worst = d;
    }
    CHECK(worst < 1e-4, "par: blas_sgemm_serial equals the reference (%.2e)", worst);
    free((void *)m.A);
    free((void *)m.B);
    free(m.C);
    free(serial);
    free(sref);

    /* attention shares its (batch, head) pairs out over the pool, each pair
     * running its sgemms on its own thread: the same bytes on 1, 2, 4 threads */
    {
        int B = 2, T = 80, C = 64, NH = 4, same = 1;
        size_t no = (size_t)B * T * C, nq = 3 * no, na = (size_t)B * NH * T * T;
        float *qkv = xmalloc(nq * 4), *dout = xmalloc(no * 4), *o[3], *a[3], *dq[3];
        fill(qkv, nq, &r);
        fill(dout, no, &r);
        for (int t = 0; t < 3; t++) o[t] = xmalloc(no * 4), a[t] = xmalloc(na * 4), dq[t] = xmalloc(nq * 4);
        for (int causal = 0; causal < 2; causal++)
            for (int t = 0; t < 3; t++) {
                blas_set_threads(1 << t);
                memset(dq[t], 0, nq * 4);
                attention_forward(o[t], a[t], qkv, B, T, C, NH, causal);
                attention_backward(dq[t], dout, qkv, a[t], B, T, C, NH);
                if (t > 0)
                    same &= !memcmp(o[t], o[0], no * 4) && !memcmp(a[t], a[0], na * 4) &&
                            !memcmp(dq[t], dq[0], nq * 4);
            }
        CHECK(same, "par: attention on 1, 2, 4 threads (plain and causal) gives the same bytes, forward and backward");
        for (int t = 0; t < 3; t++) free(o[t]), free(a[t]), free(dq[t]);
        free(qkv), free(dout);
        blas_set_threads(2);
    }

    /* two threads using par_for at once: one gets the pool, the other runs inline */
    static rival rv = {.c = {.mu = PTHREAD_MUTEX_INITIALIZER}};
    pthread_t th;
    int started = pthread_create(&th, NULL, rival_run, &rv) == 0;
    ok = 1;
    for (int i = 0; i < 2000; i++) {
        cover_reset(&c);
        par_for(1 + i % 89, BIG, mark, &c);
        ok &= covered_once(&c, 1 + i % 89);
    }
    if (started) pthread_join(th, NULL);
    CHECK(started && ok && rv.ok, "par: two threads calling par_for 2000 times each at once");

    /* a child of fork() starts its own workers (the parent's are not there) */
    blas_set_threads(2);
    pid_t pid = fork();
    if (pid == 0) {
        cover_reset(&c);
        par_for(1000, BIG, mark, &c);
        _exit(covered_once(&c, 1000) && atomic_load(&c.nwho) == 2 ? 0 : 1);
    }
    int status = 1, waited = 0;
    /* a child stuck waiting for workers it does not have is a failure, not a hang */
    while (pid > 0 && waitpid(pid, &status, WNOHANG) == 0) {
        if (++waited == 1000) {
            kill(pid, SIGKILL);
            waitpid(pid, &status, 0);
            break;
        }
        struct timespec ms = {0, 10000000};
        nanosleep(&ms, NULL);
    }
    CHECK(pid > 0 && WIFEXITED(status) && WEXITSTATUS(status) == 0,
          "par: a forked child runs par_for on 2 threads of its own");

    /* idle workers sleep (ours and OpenBLAS's): between calls the process
     * uses no CPU */
    blas_set_threads(4);
    cover_reset(&c);
    par_for(4, BIG, mark, &c);
    float *G = xcalloc(3 * 512 * 512, 4);
    blas_sgemm(0, 0, 512, 512, 512, 1, G, 512, G + 512 * 512, 512, 0, G + 2 * 512 * 512, 512);
    free(G);
    double t0 = cpu_seconds();
    struct timespec nap = {0, 300000000};
    nanosleep(&nap, NULL);
    double spent = cpu_seconds() - t0;
    CHECK(spent < 0.03, "par: idle for 0.3 s with 4 threads, the process used %.3f s of CPU", spent);
    CHECK_EXIT();
}
