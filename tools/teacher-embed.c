/* teacher-embed: image stream in, embedding stream out, from a CLIP teacher.
 *
 * White-box (--model): the CLIP image tower runs here, a batch of images at a
 * time. Black-box (--exec): the teacher is a command that reads an image
 * stream and writes an embedding stream (a vendor's endpoint, e.g. over ssh);
 * the images that miss the cache are streamed to it while a second thread
 * reads its answers, so a vendor that batches never deadlocks against us.
 * Either way a content-addressed cache (--cache) answers images seen before,
 * keyed by (model identity, normalisation, image size and pixel bytes), and
 * a query budget (--max-queries) bounds what is paid for. Items keep their
 * input order, ids and labels; header and items are the same bytes whether a
 * vector came from the cache or from a query. An answer that is not a vector
 * of the teacher's size with finite values drops its item (counted, up to
 * --max-errors); an answer that joins no query fails the run. */
#include "common.h"

#include "blas.h"
#include "image.h"
#include "models/clip.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

static const char USAGE[] =
    "usage: teacher-embed --model DIR|FILE [--normalize clip|imagenet] [--resize] [--batch N]\n"
    "                     [--threads N] [--cache DIR] [--max-queries N] [--max-errors N] [-o FILE]\n"
    "                     [-v] [FILE]\n"
    "       teacher-embed --exec CMD [--model-id ID] [--normalize clip|imagenet] [--cache DIR]\n"
    "                     [--max-queries N] [--max-errors N] [-o FILE] [-v] [FILE]\n"
    "  --model DIR|FILE   white-box: a Hugging Face CLIP directory or an OpenAI/OpenCLIP .safetensors\n"
    "  --exec CMD         black-box: CMD reads an image stream and writes an embedding stream\n"
    "  --model-id ID      the black-box teacher's identity for the cache and the space (default: CMD)\n"
    "  --normalize N      clip (CLIP's mean/std, default) or imagenet (the published release)\n"
    "  --resize           resize other sizes to the model's (PIL bilinear) instead of dropping them\n"
    "  --batch N          images per forward pass (default 16)\n"
    "  --threads N        threads (default: OPENBLAS_NUM_THREADS, else the cores)\n"
    "  --cache DIR        content-addressed cache of answers, shared by runs and processes\n"
    "  --max-queries N    fail once N images have been sent to the teacher (default: no limit)\n"
    "  --max-errors N     fail once more than N items have been dropped (default 0)\n"
    "  -o FILE            write FILE atomically instead of standard output\n";

static const float IMAGENET_MEAN[3] = {0.485f, 0.456f, 0.406f};
static const float IMAGENET_STD[3] = {0.229f, 0.224f, 0.225f};

/* ---- SHA-256 (FIPS 180-4), for cache keys and entry checksums ---- */

typedef struct {
    uint32_t h[8];
    uint8_t buf[64];
    uint64_t len;
} sha256;

static const uint32_t K256[64] = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5, 0xd807aa98,
    0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174, 0xe49b69c1, 0xefbe4786,
    0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da, 0x983e5152, 0xa831c66d, 0xb00327c8,
    0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967, 0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13,
    0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85, 0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819,
    0xd6990624, 0xf40e3585, 0x106aa070, 0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a,
    0x5b9cca4f, 0x682e6ff3, 0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7,
    0xc67178f2};

#define ROR(x, n) (((x) >> (n)) | ((x) << (32 - (n))))

static void sha256_block(sha256 *s, const uint8_t *p)
{
    uint32_t w[64], a[8];
    for (int i = 0; i < 16; i++)
        w[i] = (uint32_t)p[4 * i] << 24 | (uint32_t)p[4 * i + 1] << 16 | (uint32_t)p[4 * i + 2] << 8 | p[4 * i + 3];
    for (int i = 16; i < 64; i++) {
        uint32_t s0 = ROR(w[i - 15], 7) ^ ROR(w[i - 15], 18) ^ (w[i - 15] >> 3);
        uint32_t s1 = ROR(w[i - 2], 17) ^ ROR(w[i - 2], 19) ^ (w[i - 2] >> 10);
        w[i] = w[i - 16] + s0 + w[i - 7] + s1;
    }
    memcpy(a, s->h, sizeof a);
    for (int i = 0; i < 64; i++) {
        uint32_t t1 = a[7] + (ROR(a[4], 6) ^ ROR(a[4], 11) ^ ROR(a[4], 25)) + ((a[4] & a[5]) ^ (~a[4] & a[6])) +
                      K256[i] + w[i];
        uint32_t t2 = (ROR(a[0], 2) ^ ROR(a[0], 13) ^ ROR(a[0], 22)) + ((a[0] & a[1]) ^ (a[0] & a[2]) ^ (a[1] & a[2]));
        memmove(a + 1, a, 7 * sizeof *a);
        a[4] += t1;
        a[0] = t1 + t2;
    }
    for (int i = 0; i < 8; i++) s->h[i] += a[i];
}

static void sha256_init(sha256 *s)
{
    static const uint32_t H0[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
                                   0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};
    memcpy(s->h, H0, sizeof H0);
    s->len = 0;
}

static void sha256_update(sha256 *s, const void *data, size_t n)
{
    const uint8_t *p = data;
    size_t fill = s->len % 64;
    s->len += n;
    if (fill) {
        size_t k = 64 - fill < n ? 64 - fill : n;
        memcpy(s->buf + fill, p, k);
        p += k, n -= k;
        if (fill + k < 64) return;
        sha256_block(s, s->buf);
    }
    for (; n >= 64; p += 64, n -= 64) sha256_block(s, p);
    memcpy(s->buf, p, n);
}

static void sha256_final(sha256 *s, uint8_t out[32])
{
    uint64_t bits = s->len * 8;
    uint8_t pad[72] = {0x80};
    size_t fill = s->len % 64, np = fill < 56 ? 56 - fill : 120 - fill;
    for (int i = 0; i < 8; i++) pad[np + i] = (uint8_t)(bits >> (56 - 8 * i));
    sha256_update(s, pad, np + 8);
    for (int i = 0; i < 8; i++)
        for (int j = 0; j < 4; j++) out[4 * i + j] = (uint8_t)(s->h[i] >> (24 - 8 * j));
}

/* ---- the cache ---- */

/* An entry file: magic, key, dim (u32 le), dim f32le values, then the
 * SHA-256 of everything before it, so a torn or damaged file is detected. */
static const char CACHE_MAGIC[8] = "VL2VTC1";

typedef struct {
    const char *dir; /* NULL: no cache */
    const char *identity, *normalize;
    unsigned long counter;
} cache;

static void cache_key(const cache *c, const uint8_t *pix, int h, int w, uint8_t key[32])
{
    sha256 s;
    uint8_t hw[8];
    for (int i = 0; i < 4; i++) hw[i] = (uint8_t)((uint32_t)h >> 8 * i), hw[4 + i] = (uint8_t)((uint32_t)w >> 8 * i);
    sha256_init(&s);
    sha256_update(&s, "vl2v teacher cache 1", 21);
    sha256_update(&s, c->identity, strlen(c->identity) + 1);
    sha256_update(&s, c->normalize, strlen(c->normalize) + 1);
    sha256_update(&s, hw, 8);
    sha256_update(&s, pix, (size_t)h * w * 3);
    sha256_final(&s, key);
}

static void cache_path(const cache *c, const uint8_t key[32], char *path, size_t n, int dir_only)
{
    char hex[65];
    for (int i = 0; i < 32; i++) snprintf(hex + 2 * i, 3, "%02x", key[i]);
    if (dir_only)
        snprintf(path, n, "%s/%.2s", c->dir, hex);
    else
        snprintf(path, n, "%s/%.2s/%s", c->dir, hex, hex + 2);
}

/* 1: found, vec (dim floats, malloc'ed) set; 0: absent; -1: damaged (warned). */
static int cache_get(const cache *c, const uint8_t key[32], int *dim, uint8_t **vec)
{
    char path[4096], err[VL_ERRLEN];
    cache_path(c, key, path, sizeof path, 0);
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

/* Writes an entry atomically (temporary file + rename), so readers in other
 * processes see the whole entry or none. Failures only warn: the result is
 * still good, it is just not kept. */
static void cache_put(cache *c, const uint8_t key[32], int dim, const uint8_t *vec)
{
    char dir[4096], path[4096], tmp[4200];
    cache_path(c, key, dir, sizeof dir, 1);
    cache_path(c, key, path, sizeof path, 0);
    if (mkdir(dir, 0777) != 0 && errno != EEXIST) {
        warnx("cache: %s: %s", dir, strerror(errno));
        return;
    }
    snprintf(tmp, sizeof tmp, "%s/.tmp.%ld.%lu", dir, (long)getpid(), c->counter++);
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
        warnx("cache: %s: %s", path, strerror(errno));
        unlink(tmp);
    }
    free(buf);
}

/* ---- items waiting for their vector ---- */

typedef struct pending {
    struct pending *next;
    uint8_t *meta; /* the output keys other than vec: an encoded map (id and carried keys) */
    size_t meta_len;
    uint8_t key[32];
    int hit, dim;
    uint64_t qno; /* a miss sent to the vendor: its query number */
    uint8_t *vec; /* hit: the cached vector; a miss: the answer, once read */
    int bad;      /* a miss whose answer was dropped */
    char *where;  /* a miss sent to the vendor: the input item, for messages */
    int end, abort; /* end marker; abort: stop without a trailer */
} pending;

static uint8_t *encode_meta(const mp_val *item, size_t *len)
{
    static const char *const id_key[] = {"id", NULL};
    mpw w;
    mpw_init(&w, -1);
    mpw_map(&w);
    stream_copy_keys(&w, item, id_key);
    stream_copy_keys(&w, item, STREAM_META_KEYS);
    mpw_end(&w);
    *len = w.len;
    return w.buf;
}

/* Writes one output item: the saved keys in their order, then vec. */
static void write_item(sw *s, const pending *p, const uint8_t *vec, int dim)
{
    mp_arena a = {0};
    mp_val m;
    size_t used;
    char err[VL_ERRLEN];
    if (mp_decode(&a, p->meta, p->meta_len, p->meta_len, &m, &used, err) != 1) die(1, "internal: %s", err);
    sw_item_begin(s);
    for (uint32_t i = 0; i < m.len; i++) {
        mpw_value(&s->w, &m.v.a[2 * i]);
        mpw_value(&s->w, &m.v.a[2 * i + 1]);
        if (i == 0) {
            /* vec right after id, as the other embedding producers write it */
            mpw_str(&s->w, "vec");
            mpw_bin(&s->w, vec, (size_t)dim * 4);
        }
    }
    if (sw_item_end(s) != 0) die(1, "write error: %s", strerror(s->w.err));
    mp_arena_free(&a);
}

static void pending_free(pending *p)
{
    free(p->meta), free(p->vec), free(p->where), free(p);
}

/* ---- shared state ---- */

typedef struct {
    /* options */
    const char *model_path, *exec_cmd, *model_id, *normalize;
    int resize, batch, threads;
    long long max_queries, max_errors;
    /* run */
    cache cache;
    sw out;
    int header_done, dim;
    const char *space;
    const mp_val *in_header;
    int argc;
    char **argv;
    /* queries, answered and dropped change in both threads (black-box): mu
     * guards them; hits and upstream_dropped are the input thread's, read by
     * the output thread only after the end marker (through mu) */
    uint64_t queries, hits, dropped, upstream_dropped;
    /* black-box: the vendor and the queue between the two threads */
    pid_t vendor;
    int vin, vout;
    sw vw;
    sr *vr;
    pending *head, *tail;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    uint64_t answered;
} run;

static void write_header(run *R, int dim)
{
    if (R->header_done) {
        if (dim != R->dim) die(1, "the teacher answered %d-dimensional vectors after %d-dimensional ones", dim, R->dim);
        return;
    }
    R->dim = dim;
    sw_header_begin(&R->out, "embedding", R->in_header, R->argc, R->argv);
    mpw_str(&R->out.w, "dim");
    mpw_int(&R->out.w, dim);
    mpw_str(&R->out.w, "dtype");
    mpw_str(&R->out.w, "f32le");
    mpw_str(&R->out.w, "space");
    mpw_str(&R->out.w, R->space);
    mpw_str(&R->out.w, "normalize");
    mpw_str(&R->out.w, R->normalize);
    if (sw_header_end(&R->out) != 0) die(1, "write error: %s", strerror(R->out.w.err));
    R->header_done = 1;
}

static void write_trailer(run *R)
{
    pthread_mutex_lock(&R->mu);
    R->out.dropped = R->upstream_dropped + R->dropped;
    pthread_mutex_unlock(&R->mu);
    sw_trailer_begin(&R->out);
    mpw_str(&R->out.w, "queries");
    mpw_uint(&R->out.w, R->queries);
    mpw_str(&R->out.w, "cache_hits");
    mpw_uint(&R->out.w, R->hits);
    sw_trailer_end(&R->out);
}

/* Either thread: warns, counts, and fails past --max-errors. */
static void drop(run *R, const char *what)
{
    pthread_mutex_lock(&R->mu);
    int over = drop_item(&R->dropped, R->max_errors, "%s: dropped", what);
    uint64_t n = R->dropped;
    pthread_mutex_unlock(&R->mu);
    if (over) die_dropped(n, R->max_errors);
}

/* ---- black-box: the vendor process ---- */

static void vendor_start(run *R)
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
    close(in[0]), close(out[1]);
    R->vendor = pid, R->vin = in[1], R->vout = out[0];
    sw_init(&R->vw, R->vin);
    /* the vendor gets pixels and query numbers only: no ids, labels or history */
    sw_header_begin(&R->vw, "image", NULL, 0, NULL);
    mpw_str(&R->vw.w, "dtype");
    mpw_str(&R->vw.w, "u8");
    mpw_str(&R->vw.w, "layout");
    mpw_str(&R->vw.w, "hwc");
    mpw_str(&R->vw.w, "c");
    mpw_int(&R->vw.w, 3);
    sw_header_end(&R->vw);
    mpw_flush(&R->vw.w, 0);
    R->vr = sr_open(R->vout, "teacher");
}

/* How the vendor ended, for messages: "exit status 3", "killed by signal 9".
 * patience: seconds to wait for it, or -1 to wait as long as it runs. A
 * failure waits a while only: the vendor may be blocked writing answers the
 * other thread no longer reads, and it ends with us (its pipes close). */
static const char *vendor_status(run *R, double patience, char *buf, size_t n)
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
    R->vendor = 0;
    if (WIFSIGNALED(st))
        snprintf(buf, n, "killed by signal %d", WTERMSIG(st));
    else
        snprintf(buf, n, "exit status %d", WEXITSTATUS(st));
    return buf;
}

static noreturn void vendor_failed(run *R, const char *what)
{
    /* both threads may see the failure: the first one reports it and exits,
     * the other waits here (and die() lets one thread only report and exit) */
    static pthread_mutex_t once = PTHREAD_MUTEX_INITIALIZER;
    pthread_mutex_lock(&once);
    char b[64];
    const char *st = vendor_status(R, 2.0, b, sizeof b);
    pthread_mutex_lock(&R->mu);
    unsigned long long answered = R->answered, queries = R->queries;
    pthread_mutex_unlock(&R->mu);
    die(1, "teacher '%s' failed after %llu of %llu answers (%s): %s", R->exec_cmd, answered, queries, st, what);
}

static void vendor_send(run *R, uint64_t qno, const mp_val *item, const uint8_t *pix, int h, int w)
{
    char id[32];
    snprintf(id, sizeof id, "%llu", (unsigned long long)qno);
    sw_item_begin(&R->vw);
    mpw_str(&R->vw.w, "id");
    mpw_str(&R->vw.w, id);
    mpw_str(&R->vw.w, "h");
    mpw_int(&R->vw.w, h);
    mpw_str(&R->vw.w, "w");
    mpw_int(&R->vw.w, w);
    mpw_str(&R->vw.w, "pix");
    mpw_bin(&R->vw.w, pix, (size_t)h * w * 3);
    if (sw_item_end(&R->vw) != 0) vendor_failed(R, "it stopped reading images");
    (void)item;
}

static void vendor_finish_input(run *R)
{
    sw_trailer_begin(&R->vw);
    if (sw_trailer_end(&R->vw) != 0) vendor_failed(R, "it stopped reading images");
    close(R->vin);
    R->vin = -1;
}

/* Reads the vendor's header once: its dim. */
static int vendor_dim(run *R)
{
    if (R->vr->state == 0) {
        if (sr_header(R->vr, "embedding") != 0) vendor_failed(R, R->vr->err);
        if (R->vr->dim <= 0 || R->vr->dim > (1 << 20)) vendor_failed(R, "bad dim in its header");
    }
    return (int)R->vr->dim;
}

static void queue_push(run *R, pending *p)
{
    pthread_mutex_lock(&R->mu);
    if (R->tail)
        R->tail->next = p;
    else
        R->head = p;
    R->tail = p;
    pthread_cond_signal(&R->cv);
    pthread_mutex_unlock(&R->mu);
}

static pending *queue_pop(run *R)
{
    pthread_mutex_lock(&R->mu);
    while (!R->head) pthread_cond_wait(&R->cv, &R->mu);
    pending *p = R->head;
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

/* Reads one answer of the vendor into the pending item it answers: cur (the
 * oldest unanswered query) or a later one still in the queue (a vendor may
 * answer out of order: ids join them). The answer goes to the cache at once,
 * so nothing paid for is lost if the vendor fails later. A missing, unknown
 * or repeated id, or a stream that ends first, is a failure of the vendor:
 * the join is broken. An answer that joins but is bad (a vector of another
 * size, NaN or infinity, a key of the wrong type) drops its item only. */
static void vendor_answer(run *R, pending *cur, int dim)
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
    pending *p = NULL;
    if (q >= 0 && (uint64_t)q == cur->qno) {
        p = cur;
    } else if (q >= 0) {
        pthread_mutex_lock(&R->mu);
        for (pending *e = R->head; e && !p; e = e->next)
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
    pthread_mutex_unlock(&R->mu);
    if (sr_check_item(R->vr, item, err) != 0) {
        p->bad = 1;
        snprintf(msg, sizeof msg, "%s: the teacher's answer is bad: %s", p->where, err);
        drop(R, msg);
        return;
    }
    p->vec = xmalloc((size_t)dim * 4);
    memcpy(p->vec, mp_get(item, "vec")->v.p, (size_t)dim * 4);
    p->dim = dim;
    if (R->cache.dir) cache_put(&R->cache, p->key, dim, p->vec);
}

/* The output thread: items in input order, vectors from the cache or, in
 * turn, from the vendor's answers. */
static void *output_thread(void *arg)
{
    run *R = arg;
    for (;;) {
        pending *p = queue_pop(R);
        if (p->end) {
            if (R->vr) {
                const mp_val *item;
                int rc = sr_next(R->vr, &item);
                if (rc == 1) vendor_failed(R, "it answered more items than it was sent");
                if (rc < 0) vendor_failed(R, R->vr->err);
                char b[64];
                const char *st = vendor_status(R, -1, b, sizeof b);
                if (strcmp(st, "exit status 0") != 0)
                    die(1, "teacher '%s' ended with %s after answering every query", R->exec_cmd, st);
            }
            int abort = p->abort;
            pending_free(p);
            if (abort) return NULL;
            if (!R->header_done) {
                /* no items at all: the vendor's header still gives dim, at no query */
                if (!R->vr) {
                    vendor_start(R);
                    vendor_finish_input(R);
                }
                write_header(R, vendor_dim(R));
                if (R->vendor > 0) {
                    char b[64];
                    vendor_status(R, -1, b, sizeof b);
                }
            }
            write_trailer(R);
            return NULL;
        }
        if (p->hit) {
            write_header(R, p->dim);
            write_item(&R->out, p, p->vec, p->dim);
        } else {
            int dim = vendor_dim(R);
            while (!p->vec && !p->bad) vendor_answer(R, p, dim);
            if (!p->bad) {
                write_header(R, dim);
                write_item(&R->out, p, p->vec, dim);
            }
        }
        pending_free(p);
    }
}

/* ---- pixels to the model's input ---- */

static void to_input(float *dst, const uint8_t *pix, int S, const float mean[3], const float std[3])
{
    for (int c = 0; c < 3; c++) {
        float *o = dst + (size_t)c * S * S;
        for (int i = 0; i < S * S; i++) o[i] = ((float)pix[3 * i + c] / 255.0f - mean[c]) / std[c];
    }
}

/* ---- main ---- */

int main(int argc, char **argv)
{
    tool_init("teacher-embed");
    run R = {.normalize = "clip", .batch = 16, .max_queries = -1, .argc = argc, .argv = argv, .vin = -1};
    const char *outpath = NULL, *cache_dir = NULL;
    int batch_set = 0;
    static const struct option opts[] = {{"model", required_argument, 0, 'm'},
                                         {"exec", required_argument, 0, 'x'},
                                         {"model-id", required_argument, 0, 'I'},
                                         {"normalize", required_argument, 0, 'n'},
                                         {"resize", no_argument, 0, 'r'},
                                         {"batch", required_argument, 0, 'b'},
                                         {"threads", required_argument, 0, 't'},
                                         {"cache", required_argument, 0, 'C'},
                                         {"max-queries", required_argument, 0, 'Q'},
                                         {"max-errors", required_argument, 0, 'E'},
                                         {"output", required_argument, 0, 'o'},
                                         {"verbose", no_argument, 0, 'v'},
                                         {"help", no_argument, 0, 'h'},
                                         {0, 0, 0, 0}};
    int c;
    while ((c = getopt_long(argc, argv, "m:x:I:n:rb:t:C:Q:E:o:vh", opts, NULL)) != -1) {
        switch (c) {
        case 'm': R.model_path = optarg; break;
        case 'x': R.exec_cmd = optarg; break;
        case 'I': R.model_id = optarg; break;
        case 'n': R.normalize = optarg; break;
        case 'r': R.resize = 1; break;
        case 'b':
            R.batch = (int)parse_int(USAGE, "--batch", optarg, 1, 4096);
            batch_set = 1;
            break;
        case 't': R.threads = (int)parse_int(USAGE, "--threads", optarg, 1, 1024); break;
        case 'C': cache_dir = optarg; break;
        case 'Q': R.max_queries = parse_int(USAGE, "--max-queries", optarg, 0, INT64_MAX); break;
        case 'E': R.max_errors = parse_int(USAGE, "--max-errors", optarg, 0, INT64_MAX); break;
        case 'o': outpath = optarg; break;
        case 'v': tool_verbose = 1; break;
        case 'h': usage_help(USAGE);
        default: usage_bad(USAGE);
        }
    }
    if (!R.model_path == !R.exec_cmd) usage_error(USAGE, "give one of --model and --exec");
    if (R.model_id && !R.exec_cmd) usage_error(USAGE, "--model-id goes with --exec");
    if (R.exec_cmd && (R.resize || batch_set || R.threads))
        usage_error(USAGE, "--resize, --batch and --threads go with --model (the vendor decides them)");
    if (strcmp(R.normalize, "clip") != 0 && strcmp(R.normalize, "imagenet") != 0)
        usage_error(USAGE, "--normalize must be clip or imagenet, not '%s'", R.normalize);
    if (argc - optind > 1) usage_error(USAGE, "at most one input file");
    const float *mean = strcmp(R.normalize, "clip") == 0 ? CLIP_MEAN : IMAGENET_MEAN;
    const float *std = strcmp(R.normalize, "clip") == 0 ? CLIP_STD : IMAGENET_STD;
    blas_set_threads(R.threads);
    signal(SIGPIPE, SIG_IGN);

    char err[VL_ERRLEN];
    clip_model *model = NULL;
    int S = 0;
    if (R.model_path) {
        if (clip_load_towers(&model, R.model_path, CLIP_VISION, err) != 0) die(1, "%s", err);
        S = clip_image_size(model);
        R.model_id = clip_model_id(model);
    } else if (!R.model_id) {
        R.model_id = R.exec_cmd;
    }
    char *space = xmalloc(strlen(R.model_id) + 16);
    sprintf(space, "teacher:%s", R.model_id);
    R.space = space;
    R.cache = (cache){.dir = cache_dir, .identity = R.model_id, .normalize = R.normalize};
    if (cache_dir && mkdir(cache_dir, 0777) != 0 && errno != EEXIST) die(1, "%s: %s", cache_dir, strerror(errno));

    sr *r = open_stream(argc > optind ? argv[optind] : NULL);
    if (sr_header(r, "image") != 0) die(1, "%s", r->err);
    R.in_header = &r->header;
    tool_out out;
    output_open(&out, outpath);
    sw_init(&R.out, out.fd);

    pthread_t th;
    pthread_mutex_init(&R.mu, NULL);
    if (R.exec_cmd) {
        pthread_cond_init(&R.cv, NULL);
        if (pthread_create(&th, NULL, output_thread, &R) != 0) die(1, "cannot start a thread");
    }

    /* white-box batch */
    int D = model ? clip_embed_dim(model) : 0;
    float *in = model ? xmalloc_aligned((size_t)R.batch * 3 * S * S * sizeof(float)) : NULL;
    float *emb = model ? xmalloc_aligned((size_t)R.batch * D * sizeof(float)) : NULL;
    pending **batch = xcalloc(R.batch, sizeof *batch);
    int nb = 0, nmiss = 0;
    uint8_t *rs = model ? xmalloc((size_t)S * S * 3) : NULL;
    char where[256];
    const char *budget_id = NULL;
    stream_keys *keys = stream_keys_new();

    for (;;) {
        const mp_val *item;
        int rc = sr_next(r, &item);
        if (rc < 0) die(1, "%s", r->err);
        int at_end = rc == 0;
        if (!at_end) {
            sr_where(r, item, where, sizeof where);
            if (sr_check_item(r, item, err) != 0) {
                drop(&R, err);
                continue;
            }
            /* a repeated (id, view) would be paid for twice and could not be
             * joined downstream: the input was put together wrongly */
            if (stream_keys_add(keys, r, item, err) != 0) die(1, "%s", err);
            int64_t h, w;
            mp_get_i64(item, "h", &h);
            mp_get_i64(item, "w", &w);
            const uint8_t *pix = mp_get(item, "pix")->v.p;
            if (model && (h != S || w != S) && !R.resize) {
                char msg[400];
                snprintf(msg, sizeof msg, "%s: %lldx%lld image, the model takes %dx%d (see --resize)", where,
                         (long long)w, (long long)h, S, S);
                drop(&R, msg);
                continue;
            }
            pending *p = xcalloc(1, sizeof *p);
            p->meta = encode_meta(item, &p->meta_len);
            if (cache_dir) {
                cache_key(&R.cache, pix, (int)h, (int)w, p->key);
                p->hit = cache_get(&R.cache, p->key, &p->dim, &p->vec) == 1;
                if (p->hit && model && p->dim != D) {
                    warnx("cache: entry for %s has %d dimensions, the model %d: computing again", where, p->dim, D);
                    free(p->vec), p->vec = NULL, p->hit = 0;
                }
            }
            int hit = p->hit; /* p is the output thread's once queued */
            if (hit) {
                R.hits++;
            } else {
                if (R.max_queries >= 0 && (long long)R.queries >= R.max_queries) {
                    budget_id = xstrdup(where);
                    pending_free(p);
                    at_end = 1;
                }
            }
            if (!at_end && !hit) {
                if (R.exec_cmd) {
                    if (!R.vr) vendor_start(&R);
                    /* queued before it is sent, so its answer always finds it
                     * (and from then on p belongs to the output thread) */
                    p->qno = R.queries;
                    p->where = xstrdup(where);
                    queue_push(&R, p);
                    vendor_send(&R, R.queries, item, pix, (int)h, (int)w);
                } else {
                    const uint8_t *src = pix;
                    if (h != S || w != S) {
                        if (img_resize(rs, S, S, pix, (int)w, (int)h, (size_t)w * 3, NULL) != 0) {
                            drop(&R, where);
                            pending_free(p);
                            continue;
                        }
                        src = rs;
                    }
                    to_input(in + (size_t)nmiss * 3 * S * S, src, S, mean, std);
                    nmiss++;
                }
                pthread_mutex_lock(&R.mu);
                R.queries++;
                pthread_mutex_unlock(&R.mu);
            }
            if (!at_end) {
                if (R.exec_cmd) {
                    if (hit) queue_push(&R, p);
                } else
                    batch[nb++] = p;
                progress("%llu images, %llu queries, %llu from the cache",
                         (unsigned long long)(R.queries + R.hits), (unsigned long long)R.queries,
                         (unsigned long long)R.hits);
            }
        }
        if (model && nb > 0 && (nb == R.batch || at_end)) {
            if (nmiss > 0 && clip_encode_image(model, in, nmiss, emb, err) != 0) die(1, "%s", err);
            write_header(&R, D);
            for (int i = 0, k = 0; i < nb; i++) {
                const uint8_t *v = batch[i]->hit ? batch[i]->vec : (const uint8_t *)(emb + (size_t)k++ * D);
                if (!batch[i]->hit && cache_dir) cache_put(&R.cache, batch[i]->key, D, v);
                write_item(&R.out, batch[i], v, D);
                pending_free(batch[i]);
            }
            nb = nmiss = 0;
        }
        if (at_end) break;
    }
    progress_done();
    if (!budget_id && sr_finish(r) != 0) die(1, "%s", r->err);
    stream_keys_free(keys);
    /* the trailer's count; black-box, the output thread adds its drops at the end */
    pthread_mutex_lock(&R.mu);
    R.upstream_dropped = budget_id ? 0 : (uint64_t)sr_trailer_dropped(r);
    pthread_mutex_unlock(&R.mu);

    if (R.exec_cmd) {
        if (R.vr) vendor_finish_input(&R);
        pending *end = xcalloc(1, sizeof *end);
        end->end = 1;
        end->abort = budget_id != NULL;
        queue_push(&R, end);
        pthread_join(th, NULL);
    } else if (!budget_id) {
        write_header(&R, D);
        write_trailer(&R);
    }
    if (budget_id)
        die(1, "%s: query budget of %lld exceeded (%llu answered from the cache, %s)", budget_id, R.max_queries,
            (unsigned long long)R.hits,
            cache_dir ? "every answer so far kept in the cache" : "the answers so far are not kept: there is no --cache");
    output_commit(&out, &R.out);
    clip_free(model);
    free(in), free(emb), free(batch), free(rs), free(space);
    return 0;
}
