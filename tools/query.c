/* query: the cache, the budget and the black-box teacher of teacher-embed
 * and text-embed (query.h). */
#include "query.h"

#include "common.h"
#include "sha256.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

/* ---- the cache ---- */

/* An entry file: magic, key, dim (u32 le), dim f32le values, then the
 * SHA-256 of everything before it, so a torn or damaged file is detected. */
static const char CACHE_MAGIC[8] = "VL2VTC1";

static void cache_path(const q_run *R, const uint8_t key[32], char *path, size_t n, int dir_only)
{
    char hex[65];
    for (int i = 0; i < 32; i++) snprintf(hex + 2 * i, 3, "%02x", key[i]);
    if (dir_only)
        snprintf(path, n, "%s/%.2s", R->cache_dir, hex);
    else
        snprintf(path, n, "%s/%.2s/%s", R->cache_dir, hex, hex + 2);
}

/* 1: found, vec (dim floats, malloc'ed) set; 0: absent; -1: damaged (warned). */
static int cache_get(const q_run *R, const uint8_t key[32], int *dim, uint8_t **vec)
{
    char path[4096], err[VL_ERRLEN];
    cache_path(R, key, path, sizeof path, 0);
    if (access(path, F_OK) != 0) return 0;
    size_t len;
    char *data = vl_read_file(path, (size_t)1 << 26, &len, err);
    if (!data) {
        warnx("cache: %s: unreadable, querying again", path);
        return -1;
    }
    uint32_t d = 0;
    int ok = len >= 8 + 32 + 4 + 32 && memcmp(data, CACHE_MAGIC, 8) == 0 && memcmp(data + 8, key, 32) == 0;
    if (ok) {
        memcpy(&d, data + 40, 4);
        ok = d > 0 && d <= (1u << 20) && len == 8 + 32 + 4 + (size_t)d * 4 + 32;
    }
    if (ok) {
        sha256 s;
        uint8_t sum[32];
        sha256_init(&s);
        sha256_update(&s, data, len - 32);
        sha256_final(&s, sum);
        ok = memcmp(sum, data + len - 32, 32) == 0;
    }
    if (!ok) {
        warnx("cache: %s: damaged entry, querying again", path);
        free(data);
        return -1;
    }
    *dim = (int)d;
    *vec = xmalloc((size_t)d * 4);
    memcpy(*vec, data + 44, (size_t)d * 4);
    free(data);
    return 1;
}

int q_lookup(q_run *R, q_item *p, const void *a, size_t na, const void *b, size_t nb, const char *where, int want)
{
    if (!R->cache_dir) return 0;
    sha256 s;
    sha256_init(&s);
    sha256_update(&s, R->cache_tag, strlen(R->cache_tag) + 1);
    sha256_update(&s, R->identity, strlen(R->identity) + 1);
    sha256_update(&s, R->variant, strlen(R->variant) + 1);
    sha256_update(&s, a, na);
    sha256_update(&s, b, nb);
    sha256_final(&s, p->key);
    p->hit = cache_get(R, p->key, &p->dim, &p->vec) == 1;
    if (p->hit && want && p->dim != want) {
        warnx("cache: entry for %s has %d dimensions, the model %d: computing again", where, p->dim, want);
        free(p->vec), p->vec = NULL, p->hit = 0;
    }
    if (p->hit) R->hits++;
    return p->hit;
}

/* A write to the cache failed: the first failure warns, with what it means
 * (a read-only cache, a file where a directory should be: every other
 * write would fail the same way), and the run goes on without the cache's
 * writes. */
static void cache_failed(q_run *R, const char *path, int e)
{
    pthread_mutex_lock(&R->mu);
    int first = !R->cache_failed;
    R->cache_failed = 1;
    pthread_mutex_unlock(&R->mu);
    if (first) warnx("cache: %s: %s: answers are not kept in the cache from here on", path, strerror(e));
}

/* Writes an entry atomically (temporary file + rename), so readers in other
 * processes see the whole entry or none. Failures only warn, once: the result
 * is still good, it is just not kept. */
void q_cache_put(q_run *R, const uint8_t key[32], int dim, const void *vec)
{
    if (!R->cache_dir || R->cache_failed) return;
    char dir[4096], path[4096], tmp[4200];
    cache_path(R, key, dir, sizeof dir, 1);
    cache_path(R, key, path, sizeof path, 0);
    if (mkdir(dir, 0777) != 0 && errno != EEXIST) {
        cache_failed(R, dir, errno);
        return;
    }
    pthread_mutex_lock(&R->mu);
    unsigned long k = R->counter++;
    pthread_mutex_unlock(&R->mu);
    snprintf(tmp, sizeof tmp, "%s/.tmp.%ld.%lu", dir, (long)getpid(), k);
    size_t len = 8 + 32 + 4 + (size_t)dim * 4 + 32;
    uint8_t *buf = xmalloc(len);
    uint32_t d = (uint32_t)dim;
    memcpy(buf, CACHE_MAGIC, 8);
    memcpy(buf + 8, key, 32);
    memcpy(buf + 40, &d, 4);
    memcpy(buf + 44, vec, (size_t)dim * 4);
    sha256 s;
    sha256_init(&s);
    sha256_update(&s, buf, len - 32);
    sha256_final(&s, buf + len - 32);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0666);
    if (fd < 0 || vl_write_all(fd, buf, len) != 0 || close(fd) != 0 || rename(tmp, path) != 0) {
        int e = errno;
        unlink(tmp);
        cache_failed(R, fd < 0 ? dir : path, e);
    }
    free(buf);
}

/* ---- counts ---- */

void q_item_free(q_item *p)
{
    free(p->data), free(p->vec), free(p->where), free(p);
}

int q_over_budget(q_run *R) { return R->max_queries >= 0 && (long long)R->queries >= R->max_queries; }

void q_counted(q_run *R)
{
    pthread_mutex_lock(&R->mu);
    R->queries++;
    pthread_mutex_unlock(&R->mu);
}

void q_drop(q_run *R, const char *what)
{
    pthread_mutex_lock(&R->mu);
    int over = drop_item(&R->dropped, R->max_errors, "%s: dropped", what);
    uint64_t n = R->dropped;
    pthread_mutex_unlock(&R->mu);
    if (over) die_dropped(n, R->max_errors);
}

void q_trailer(q_run *R, sw *out)
{
    pthread_mutex_lock(&R->mu);
    out->dropped = R->upstream_dropped + R->dropped;
    pthread_mutex_unlock(&R->mu);
    sw_trailer_begin(out);
    mpw_str(&out->w, "queries");
    mpw_uint(&out->w, R->queries);
    mpw_str(&out->w, "cache_hits");
    mpw_uint(&out->w, R->hits);
    sw_trailer_end(out);
}

void q_progress(q_run *R, int final, uint64_t done)
{
    pthread_mutex_lock(&R->mu);
    uint64_t queries = R->queries, hits = R->hits, dropped = R->dropped + R->upstream_dropped;
    pthread_mutex_unlock(&R->mu);
    if (final)
        progress_end(done, dropped, "%llu queries, %llu from the cache", (unsigned long long)queries,
                     (unsigned long long)hits);
    else
        progress_count(queries + hits, dropped, "%llu queries, %llu from the cache", (unsigned long long)queries,
                       (unsigned long long)hits);
}

void q_budget_failed(q_run *R, const char *where)
{
    die(1, "%s: query budget of %lld exceeded (%llu answered from the cache, %s)", where, R->max_queries,
        (unsigned long long)R->hits,
        R->cache_dir ? "every answer so far kept in the cache" : "the answers so far are not kept: there is no --cache");
}

/* ---- black-box: the vendor process ---- */

static void vendor_start(q_run *R)
{
    /* every descriptor of ours is close-on-exec (the pipes from birth, the
     * input, the output and cache files as opened): the vendor holds its
     * standard input and output and what our own caller gave us, nothing
     * else (our output stream would not end while it lived) */
    int in[2], out[2];
    if (pipe2(in, O_CLOEXEC) != 0 || pipe2(out, O_CLOEXEC) != 0) die(1, "pipe: %s", strerror(errno));
    pid_t pid = fork();
    if (pid < 0) die(1, "fork: %s", strerror(errno));
    if (pid == 0) {
        /* a group of its own: a timeout kills the whole command (sh and
         * what it runs, e.g. ssh), whose ends of the pipes then close */
        setpgid(0, 0);
        signal(SIGPIPE, SIG_DFL); /* ignored here; an ignored signal would stay ignored across exec */
        /* dup2 clears close-on-exec on the copy; a pipe end that already is
         * 0 or 1 (we were started with it closed) is no copy: clear it there */
        if (in[0] == 0) fcntl(0, F_SETFD, 0);
        else dup2(in[0], 0);
        if (out[1] == 1) fcntl(1, F_SETFD, 0);
        else dup2(out[1], 1);
        execl("/bin/sh", "sh", "-c", R->exec_cmd, (char *)NULL);
        _exit(127);
    }
    setpgid(pid, pid); /* also here: the watchdog may kill the group before the child runs */
    close(in[0]), close(out[1]);
    pthread_mutex_lock(&R->mu);
    R->vendor = pid;
    pthread_mutex_unlock(&R->mu);
    R->vin = in[1], R->vout = out[0];
    sw_init(&R->vw, R->vin);
    /* the vendor gets the queries and their numbers only: no ids, labels or history */
    R->query_header(&R->vw);
    sw_header_end(&R->vw);
    mpw_flush(&R->vw.w, 0);
    R->vr = sr_open(R->vout, "teacher");
}

/* How the vendor ended, for messages: "exit status 3", "killed by signal 9".
 * patience: seconds to wait for it, or -1 to wait as long as it runs. A
 * failure waits a while only: the vendor may be blocked writing answers the
 * other thread no longer reads, and it ends with us (its pipes close). */
static const char *vendor_status(q_run *R, double patience, char *buf, size_t n)
{
    int st;
    if (R->vendor <= 0) return "not started";
    pid_t got;
    double until = vl_now() + patience;
    while ((got = waitpid(R->vendor, &st, patience < 0 ? 0 : WNOHANG)) == 0) {
        if (vl_now() > until) return "still running";
        usleep(10000);
    }
    if (got < 0) return strerror(errno);
    pthread_mutex_lock(&R->mu);
    R->vendor = 0;
    pthread_mutex_unlock(&R->mu);
    if (WIFSIGNALED(st))
        snprintf(buf, n, "killed by signal %d", WTERMSIG(st));
    else
        snprintf(buf, n, "exit status %d", WEXITSTATUS(st));
    return buf;
}

static noreturn void vendor_failed(q_run *R, const char *what)
{
    /* both threads may see the failure: the first one reports it and exits,
     * the other waits here (and die() lets one thread only report and exit) */
    static pthread_mutex_t once = PTHREAD_MUTEX_INITIALIZER;
    pthread_mutex_lock(&once);
    char b[64];
    const char *st = vendor_status(R, 2.0, b, sizeof b);
    pthread_mutex_lock(&R->mu);
    unsigned long long answered = R->answered, queries = R->queries;
    char why[600];
    if (R->timed_out) {
        snprintf(why, sizeof why, "nothing came for %g s (--timeout) while %s waited; killed it (the answers so far are %s)",
                 R->timeout, R->wait_what, R->cache_dir ? "in the cache" : "not kept: there is no --cache");
        what = why;
    }
    pthread_mutex_unlock(&R->mu);
    die(1, "teacher '%s' failed after %llu of %llu answers (%s): %s", R->exec_cmd, answered, queries, st, what);
}

static noreturn void stopped(q_run *R)
{
    char msg[128];
    snprintf(msg, sizeof msg, "it stopped reading %s", R->what);
    vendor_failed(R, msg);
}

static void vendor_finish_input(q_run *R)
{
    sw_trailer_begin(&R->vw);
    if (sw_trailer_end(&R->vw) != 0) stopped(R);
    close(R->vin);
    R->vin = -1;
}

/* The output thread waits for what the vendor owes (what: "query 3 (its
 * item)", "its header"), or (what NULL) waits no more. */
static void waiting_for(q_run *R, const char *what)
{
    pthread_mutex_lock(&R->mu);
    R->waiting = what != NULL;
    if (what) snprintf(R->wait_what, sizeof R->wait_what, "%s", what);
    R->wait_since = vl_now();
    pthread_mutex_unlock(&R->mu);
}

/* The watchdog: kills the vendor's process group once the output thread
 * has waited --timeout seconds for one answer; its reads then end and
 * vendor_failed reports the timeout. */
static void *watchdog(void *arg)
{
    q_run *R = arg;
    pthread_mutex_lock(&R->mu);
    while (!R->done) {
        if (R->waiting && R->vendor > 0 && vl_now() - R->wait_since > R->timeout) {
            R->timed_out = 1;
            kill(-R->vendor, SIGKILL);
            break;
        }
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_nsec += 100000000;
        if (ts.tv_nsec >= 1000000000) ts.tv_sec++, ts.tv_nsec -= 1000000000;
        pthread_cond_timedwait(&R->cv, &R->mu, &ts);
    }
    pthread_mutex_unlock(&R->mu);
    return NULL;
}

/* Reads the vendor's header once: its dim. */
static int vendor_dim(q_run *R)
{
    if (R->vr->state == 0) {
        waiting_for(R, "its header");
        if (sr_header(R->vr, "embedding") != 0) vendor_failed(R, R->vr->err);
        if (R->vr->dim <= 0 || R->vr->dim > (1 << 20)) vendor_failed(R, "bad dim in its header");
        waiting_for(R, NULL);
    }
    return (int)R->vr->dim;
}

static void queue_push(q_run *R, q_item *p)
{
    pthread_mutex_lock(&R->mu);
    if (R->tail)
        R->tail->next = p;
    else
        R->head = p;
    R->tail = p;
    pthread_cond_broadcast(&R->cv); /* the watchdog waits on it too */
    pthread_mutex_unlock(&R->mu);
}

static q_item *queue_pop(q_run *R)
{
    pthread_mutex_lock(&R->mu);
    while (!R->head) pthread_cond_wait(&R->cv, &R->mu);
    q_item *p = R->head;
    R->head = p->next;
    if (!R->head) R->tail = NULL;
    pthread_mutex_unlock(&R->mu);
    return p;
}

/* The query number an answer's id names, or -1 when it names none. */
static int64_t answer_qno(const mp_val *id)
{
    char buf[24];
    if (!id || id->type != MP_STR || id->len == 0 || id->len > 19) return -1;
    int64_t q = 0;
    for (uint32_t i = 0; i < id->len; i++) {
        if (id->v.s[i] < '0' || id->v.s[i] > '9') return -1;
        int d = id->v.s[i] - '0';
        if (q > (INT64_MAX - d) / 10) return -1; /* past any query number */
        q = 10 * q + d;
    }
    snprintf(buf, sizeof buf, "%lld", (long long)q);
    return strlen(buf) == id->len ? q : -1; /* no leading zeros: one spelling per query */
}

/* Reads one answer of the vendor into the item it answers: cur (the
 * oldest unanswered query) or a later one still in the queue (a vendor may
 * answer out of order: ids join them). The answer goes to the cache at once,
 * so nothing paid for is lost if the vendor fails later. A missing, unknown
 * or repeated id, or a stream that ends first, is a failure of the vendor:
 * the join is broken. An answer that joins but is bad (a vector of another
 * size, NaN or infinity, a key of the wrong type) drops its item only. */
static void vendor_answer(q_run *R, q_item *cur, int dim)
{
    const mp_val *item;
    char err[VL_ERRLEN], msg[2 * VL_ERRLEN];
    int rc = sr_next(R->vr, &item);
    if (rc == 0) {
        snprintf(msg, sizeof msg, "its stream ended before query %llu was answered", (unsigned long long)cur->qno);
        vendor_failed(R, msg);
    }
    if (rc < 0) vendor_failed(R, R->vr->err);
    const mp_val *id = mp_get(item, "id");
    int64_t q = answer_qno(id);
    q_item *p = NULL;
    if (q >= 0 && (uint64_t)q == cur->qno) {
        p = cur;
    } else if (q >= 0) {
        pthread_mutex_lock(&R->mu);
        for (q_item *e = R->head; e && !p; e = e->next)
            if (!e->end && !e->hit && e->qno == (uint64_t)q) p = e;
        pthread_mutex_unlock(&R->mu);
    }
    if (!p || p->vec || p->bad) {
        if (!id || id->type != MP_STR) {
            sr_where(R->vr, item, err, sizeof err);
            snprintf(msg, sizeof msg, "%s: an answer without an 'id' string", err);
            vendor_failed(R, msg);
        }
        int again = p || (q >= 0 && (uint64_t)q < cur->qno); /* the queries before cur are all answered */
        snprintf(msg, sizeof msg, "it answered id '%.*s' %s", (int)(id->len < 64 ? id->len : 64), id->v.s,
                 again ? "a second time" : "(no query sent to it has that id)");
        vendor_failed(R, msg);
    }
    pthread_mutex_lock(&R->mu);
    R->answered++;
    R->wait_since = vl_now(); /* an answer came: the vendor is alive */
    pthread_mutex_unlock(&R->mu);
    if (sr_check_item(R->vr, item, err) != 0) {
        p->bad = 1;
        snprintf(msg, sizeof msg, "%s: the teacher's answer is bad: %s", p->where, err);
        q_drop(R, msg);
        return;
    }
    p->vec = xmalloc((size_t)dim * 4);
    memcpy(p->vec, mp_get(item, "vec")->v.p, (size_t)dim * 4);
    p->dim = dim;
    q_cache_put(R, p->key, dim, p->vec);
}

/* The output thread: items in input order, vectors from the cache or, in
 * turn, from the vendor's answers. */
static void *output_thread(void *arg)
{
    q_run *R = arg;
    int dim = 0; /* of the items emitted */
    for (;;) {
        q_item *p = queue_pop(R);
        if (p->end) {
            if (R->vr) {
                const mp_val *item;
                waiting_for(R, "the end of its stream (and its exit)");
                int rc = sr_next(R->vr, &item);
                if (rc == 1) vendor_failed(R, "it answered more items than it was sent");
                if (rc < 0) vendor_failed(R, R->vr->err);
                char b[64];
                const char *st = vendor_status(R, -1, b, sizeof b);
                if (R->timed_out) vendor_failed(R, "");
                waiting_for(R, NULL);
                if (strcmp(st, "exit status 0") != 0)
                    die(1, "teacher '%s' ended with %s after answering every query", R->exec_cmd, st);
            }
            int abort = p->abort;
            q_item_free(p);
            if (abort) return NULL;
            if (!dim) {
                /* no items at all: the vendor's header still gives dim, at no query */
                if (!R->vr) {
                    vendor_start(R);
                    vendor_finish_input(R);
                }
                dim = vendor_dim(R);
                if (R->vendor > 0) {
                    char b[64];
                    vendor_status(R, -1, b, sizeof b);
                }
            }
            R->finish(R, dim);
            return NULL;
        }
        if (p->hit) {
            R->emit(R, p, p->vec, dim = p->dim);
        } else {
            int d = vendor_dim(R);
            char what[600];
            snprintf(what, sizeof what, "query %llu (%s)", (unsigned long long)p->qno, p->where);
            waiting_for(R, what);
            while (!p->vec && !p->bad) vendor_answer(R, p, d);
            waiting_for(R, NULL);
            if (!p->bad) R->emit(R, p, p->vec, dim = d);
        }
        q_item_free(p);
    }
}

/* ---- the run ---- */

void q_init(q_run *R)
{
    R->vin = -1;
    pthread_mutex_init(&R->mu, NULL);
    if (R->cache_dir && mkdir(R->cache_dir, 0777) != 0 && errno != EEXIST)
        die(1, "%s: %s", R->cache_dir, strerror(errno));
    if (R->exec_cmd) {
        pthread_cond_init(&R->cv, NULL);
        if (pthread_create(&R->th, NULL, output_thread, R) != 0) die(1, "cannot start a thread");
        if (R->timeout > 0 && pthread_create(&R->dog, NULL, watchdog, R) != 0) die(1, "cannot start a thread");
    }
}

void q_send(q_run *R, q_item *p, const char *where, void (*write)(mpw *w, const void *arg), const void *arg)
{
    if (!R->vr) vendor_start(R);
    /* queued before it is sent, so its answer always finds it (and from
     * then on p belongs to the output thread) */
    uint64_t qno = R->queries;
    p->qno = qno;
    p->where = xstrdup(where);
    queue_push(R, p);
    char id[32];
    snprintf(id, sizeof id, "%llu", (unsigned long long)qno);
    sw_item_begin(&R->vw);
    mpw_str(&R->vw.w, "id");
    mpw_str(&R->vw.w, id);
    write(&R->vw.w, arg);
    if (sw_item_end(&R->vw) != 0) stopped(R);
    q_counted(R);
}

void q_push(q_run *R, q_item *p) { queue_push(R, p); }

void q_end(q_run *R, int abort)
{
    if (R->vr) vendor_finish_input(R);
    q_item *end = xcalloc(1, sizeof *end);
    end->end = 1;
    end->abort = abort;
    queue_push(R, end);
    pthread_join(R->th, NULL);
    if (R->timeout > 0) {
        pthread_mutex_lock(&R->mu);
        R->done = 1;
        pthread_cond_broadcast(&R->cv);
        pthread_mutex_unlock(&R->mu);
        pthread_join(R->dog, NULL);
    }
}
