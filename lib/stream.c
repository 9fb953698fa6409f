/* stream: record-stream framing, header/trailer handling and schema checks. */
#include "stream.h"
#include "version.h"

#include "rng.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#if __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "vl2v streams hold little-endian values; this build assumes a little-endian host"
#endif

const char *const STREAM_META_KEYS[] = {"label", "class", "domain", "split", "view", "path", "text", NULL};

static int rerr(sr *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int rerr(sr *r, const char *fmt, ...)
{
    char msg[VL_ERRLEN];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    snprintf(r->err, sizeof r->err, "%s: %s", r->name, msg);
    return -1;
}

/* A pipe of 1 MiB (the unprivileged maximum) instead of 64 KiB: 16 times
 * fewer reads, writes and wake-ups between the tools of a pipeline. Failure
 * is harmless. */
static void widen_pipe(int fd)
{
#ifdef F_SETPIPE_SZ
    struct stat sb;
    if (fd >= 0 && fstat(fd, &sb) == 0 && S_ISFIFO(sb.st_mode)) fcntl(fd, F_SETPIPE_SZ, 1 << 20);
#endif
}

sr *sr_open(int fd, const char *name)
{
    widen_pipe(fd);
    sr *r = xcalloc(1, sizeof(*r));
    r->fd = fd;
    r->name = xstrdup(name);
    r->cap = 4 << 20;
    r->buf = xmalloc(r->cap);
    r->max_record = STREAM_MAX_RECORD;
    return r;
}

sr *sr_open_mem(const void *buf, size_t n, const char *name)
{
    sr *r = xcalloc(1, sizeof(*r));
    r->fd = -1;
    r->name = xstrdup(name);
    r->cap = n ? n : 1; /* all input is present: the buffer never grows */
    r->buf = xmalloc(r->cap);
    r->max_record = STREAM_MAX_RECORD;
    if (n) memcpy(r->buf, buf, n);
    r->end = n;
    r->eof = 1;
    return r;
}

void sr_close(sr *r)
{
    if (!r) return;
    mp_arena_free(&r->arena);
    mp_arena_free(&r->hdr_arena);
    mp_arena_free(&r->trl_arena);
    free(r->hdr_bytes);
    free(r->trl_bytes);
    free(r->schema_name);
    free(r->buf);
    free(r->name);
    free(r);
}

/* Reads one object into r->cur. 1 ok, 0 clean end of input (nothing
 * buffered), -1 error. `what` names the object for messages; NULL means
 * "record N" for the next item (formatted only when there is a message). */
static const char *obj_name(const sr *r, const char *what, char *buf, size_t n)
{
    if (what) return what;
    snprintf(buf, n, "record %" PRIu64, r->items + 1);
    return buf;
}

static int read_obj(sr *r, const char *what, size_t *objlen)
{
    char derr[VL_ERRLEN], rec[48];
    for (;;) {
        if (r->end > r->start) {
            size_t used;
            mp_arena_reset(&r->arena);
            /* the tree costs at most max_record bytes too, whatever the input */
            r->arena.max_vals = r->max_record / sizeof(mp_val);
            int d = mp_decode(&r->arena, r->buf + r->start, r->end - r->start, r->max_record, &r->cur,
                              &used, derr);
            if (d < 0)
                return rerr(r, "%s: not a valid MessagePack stream: %s", obj_name(r, what, rec, sizeof rec), derr);
            if (d == 1) {
                *objlen = used;
                r->raw = r->buf + r->start;
                r->raw_len = used;
                r->start += used;
                return 1;
            }
            if (r->end - r->start >= r->max_record)
                return rerr(r, "%s: larger than the limit of %zu bytes", obj_name(r, what, rec, sizeof rec),
                            r->max_record);
        }
        if (r->eof) {
            if (r->end == r->start) return 0;
            return rerr(r, "%s: truncated: end of input inside it", obj_name(r, what, rec, sizeof rec));
        }
        /* need more bytes: compact, grow if full, read */
        if (r->start > 0) {
            memmove(r->buf, r->buf + r->start, r->end - r->start);
            r->end -= r->start;
            r->start = 0;
        }
        if (r->end == r->cap) {
            r->cap *= 2;
            r->buf = xrealloc(r->buf, r->cap);
        }
        ssize_t n = read(r->fd, r->buf + r->end, r->cap - r->end);
        if (n < 0) {
            if (errno == EINTR) continue;
            return rerr(r, "read error: %s", strerror(errno));
        }
        if (n == 0) r->eof = 1;
        r->end += (size_t)n;
    }
}

/* Copies the object just read (its bytes end at r->start) into owned storage. */
static void keep(sr *r, size_t len, uint8_t **bytes, mp_arena *a, mp_val *v)
{
    char derr[VL_ERRLEN];
    size_t used;
    free(*bytes);
    *bytes = xmalloc(len);
    memcpy(*bytes, r->buf + r->start - len, len);
    mp_arena_reset(a);
    mp_decode(a, *bytes, len, r->max_record, v, &used, derr);
}

static int str_is(const mp_val *v, const char *s) { return mp_str_eq(v, s); }

static int check_header(sr *r)
{
    const mp_val *h = &r->header;
    if (h->type != MP_MAP) return rerr(r, "header: not a vl2v stream: the first object is not a map");
    const mp_val *schema = mp_get(h, "schema");
    if (!schema || schema->type != MP_STR) return rerr(r, "header: no 'schema' string");
    int64_t ver;
    if (mp_get_i64(h, "version", &ver) != 0) return rerr(r, "header: no integer 'version'");
    if (ver > STREAM_VERSION || ver < 1)
        return rerr(r, "header: stream version %" PRId64 " is not supported: this tool reads version %d", ver,
                    STREAM_VERSION);
    const mp_val *hist = mp_get(h, "history");
    if (hist && hist->type != MP_ARRAY) return rerr(r, "header: 'history' is not an array");
    free(r->schema_name);
    r->schema_name = xstrndup(schema->v.s, schema->len);
    r->schema = SCHEMA_OTHER;
    if (str_is(schema, "image")) {
        r->schema = SCHEMA_IMAGE;
        int64_t c;
        if (!str_is(mp_get(h, "dtype"), "u8")) return rerr(r, "header: image dtype must be \"u8\"");
        if (!str_is(mp_get(h, "layout"), "hwc")) return rerr(r, "header: image layout must be \"hwc\"");
        if (mp_get_i64(h, "c", &c) != 0 || c != 3) return rerr(r, "header: image 'c' must be 3");
    } else if (str_is(schema, "embedding")) {
        r->schema = SCHEMA_EMBEDDING;
        if (mp_get_i64(h, "dim", &r->dim) != 0 || r->dim < 1 || r->dim > (1 << 24))
            return rerr(r, "header: embedding 'dim' missing or out of range");
        if (!str_is(mp_get(h, "dtype"), "f32le")) return rerr(r, "header: embedding dtype must be \"f32le\"");
        const mp_val *sp = mp_get(h, "space");
        if (!sp || sp->type != MP_STR) return rerr(r, "header: embedding has no 'space' string");
    } else if (str_is(schema, "prediction")) {
        r->schema = SCHEMA_PREDICTION;
        const mp_val *cl = mp_get(h, "classes");
        if (!cl || cl->type != MP_ARRAY || cl->len == 0)
            return rerr(r, "header: prediction 'classes' must be a non-empty array");
        for (uint32_t i = 0; i < cl->len; i++)
            if (cl->v.a[i].type != MP_STR) return rerr(r, "header: prediction class %u is not a string", i);
        r->nclasses = cl->len;
        /* the run's keys (predict writes them; score reads them) */
        const mp_val *m = mp_get(h, "method"), *seed = mp_get(h, "seed"), *src = mp_get(h, "sources"),
                     *set = mp_get(h, "settings");
        int64_t x;
        if (m && m->type != MP_STR) return rerr(r, "header: prediction 'method' is not a string");
        if (seed && seed->type != MP_NIL && mp_as_i64(seed, &x) != 0)
            return rerr(r, "header: prediction 'seed' is not an integer");
        if (set && set->type != MP_STR) return rerr(r, "header: prediction 'settings' is not a string");
        if (src && src->type != MP_ARRAY) return rerr(r, "header: prediction 'sources' is not an array");
        for (uint32_t i = 0; src && i < src->len; i++)
            if (src->v.a[i].type != MP_STR) return rerr(r, "header: prediction source %u is not a string", i);
    } else if (str_is(schema, "log")) {
        r->schema = SCHEMA_LOG;
    }
    return 0;
}

static int read_header(sr *r, const char *want, int at_start)
{
    size_t len;
    int rc = read_obj(r, "header", &len);
    if (rc < 0) return -1;
    if (rc == 0) return at_start ? rerr(r, "empty input: no stream header") : 0;
    keep(r, len, &r->hdr_bytes, &r->hdr_arena, &r->header);
    if (check_header(r) != 0) return -1;
    if (want && strcmp(want, r->schema_name) != 0)
        return rerr(r, "header: schema is '%s', expected '%s'", r->schema_name, want);
    r->items = 0;
    r->streams++;
    r->state = 1;
    return 1;
}

int sr_header(sr *r, const char *want) { return read_header(r, want, 1) == 1 ? 0 : -1; }

int sr_next(sr *r, const mp_val **item)
{
    if (r->state != 1) return rerr(r, "internal: sr_next outside the items");
    size_t len;
    int rc = read_obj(r, NULL, &len);
    if (rc < 0) return -1;
    if (rc == 0)
        return rerr(r, "end of input without a trailer after %" PRIu64 " records: the producer did not finish",
                    r->items);
    if (r->cur.type != MP_MAP) return rerr(r, "record %" PRIu64 ": not a map", r->items + 1);
    const mp_val *end = mp_get(&r->cur, "end");
    if (end) {
        if (end->type != MP_BOOL || !end->v.b) return rerr(r, "trailer: 'end' is not true");
        keep(r, len, &r->trl_bytes, &r->trl_arena, &r->trailer);
        int64_t n;
        if (mp_get_i64(&r->trailer, "records", &n) != 0) return rerr(r, "trailer: no integer 'records'");
        if ((uint64_t)n != r->items)
            return rerr(r, "trailer: says %" PRId64 " records but the stream has %" PRIu64, n, r->items);
        const mp_val *dr = mp_get(&r->trailer, "dropped");
        int64_t d;
        if (dr && (mp_as_i64(dr, &d) != 0 || d < 0)) return rerr(r, "trailer: 'dropped' is not a count");
        r->state = 2;
        return 0;
    }
    r->items++;
    *item = &r->cur;
    return 1;
}

int sr_next_stream(sr *r, const char *want)
{
    if (r->state != 2) return rerr(r, "internal: sr_next_stream before the trailer");
    return read_header(r, want, 0);
}

int sr_finish(sr *r)
{
    size_t len;
    int rc = read_obj(r, "after the trailer", &len);
    if (rc < 0) return -1;
    if (rc == 1) return rerr(r, "data after the trailer (several streams back to back? join them with mpcat)");
    return 0;
}

int64_t sr_trailer_records(const sr *r)
{
    int64_t n = -1;
    mp_get_i64(&r->trailer, "records", &n);
    return n;
}

int64_t sr_trailer_dropped(const sr *r)
{
    int64_t n = 0;
    mp_get_i64(&r->trailer, "dropped", &n);
    return n;
}

const char *sr_where(sr *r, const mp_val *item, char *buf, size_t n)
{
    const mp_val *id = mp_get(item, "id");
    if (id && id->type == MP_STR)
        snprintf(buf, n, "%s: record %" PRIu64 " (id '%.*s')", r->name, r->items, (int)(id->len > 200 ? 200 : id->len),
                 id->v.s);
    else
        snprintf(buf, n, "%s: record %" PRIu64, r->name, r->items);
    return buf;
}

static int item_err(sr *r, const mp_val *item, char *err, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static int item_err(sr *r, const mp_val *item, char *err, const char *fmt, ...)
{
    char where[300], msg[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    sr_where(r, item, where, sizeof where);
    if (err) snprintf(err, VL_ERRLEN, "%s: %s", where, msg);
    return -1;
}

/* 1 when none of the n little-endian float32 at p is NaN or infinite. Adding
 * one to an all-ones exponent carries into bit 31, so the test is an
 * OR-reduction, done 8 lanes at a time (this check dominates the cost of
 * reading embedding streams). */
typedef uint32_t u32x8 __attribute__((vector_size(32)));
static int all_finite(const uint8_t *p, size_t n)
{
    const u32x8 mask = {0x7f800000u, 0x7f800000u, 0x7f800000u, 0x7f800000u,
                        0x7f800000u, 0x7f800000u, 0x7f800000u, 0x7f800000u};
    const u32x8 one = {0x00800000u, 0x00800000u, 0x00800000u, 0x00800000u,
                       0x00800000u, 0x00800000u, 0x00800000u, 0x00800000u};
    u32x8 acc = {0};
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        u32x8 b;
        memcpy(&b, p + 4 * i, sizeof b);
        acc |= (b & mask) + one;
    }
    uint32_t a = 0;
    for (int k = 0; k < 8; k++) a |= acc[k];
    for (; i < n; i++) {
        uint32_t b;
        memcpy(&b, p + 4 * i, 4);
        a |= (b & 0x7f800000u) + 0x00800000u;
    }
    return !(a & 0x80000000u);
}

int sr_check_item(sr *r, const mp_val *item, char *err)
{
    if (r->schema == SCHEMA_LOG) {
        /* a log's items are steps, not images: no id */
        int64_t step;
        if (mp_get_i64(item, "step", &step) != 0 || step < 0)
            return item_err(r, item, err, "no 'step' (an integer >= 0)");
        return 0;
    }
    const mp_val *id = mp_get(item, "id");
    if (!id || id->type != MP_STR || id->len == 0) return item_err(r, item, err, "no 'id' string");
    /* indices, never negative: a reader may take -1 (STREAM_NONE) for none */
    static const char *const int_keys[] = {"label", "view", NULL};
    static const char *const str_keys[] = {"class", "domain", "split", "path", "text", NULL};
    for (int i = 0; int_keys[i]; i++) {
        const mp_val *v = mp_get(item, int_keys[i]);
        int64_t x;
        if (v && v->type != MP_NIL && (mp_as_i64(v, &x) != 0 || x < 0))
            return item_err(r, item, err, "'%s' is not an integer >= 0", int_keys[i]);
    }
    for (int i = 0; str_keys[i]; i++) {
        const mp_val *v = mp_get(item, str_keys[i]);
        if (v && v->type != MP_STR && v->type != MP_NIL)
            return item_err(r, item, err, "'%s' is not a string", str_keys[i]);
    }
    switch (r->schema) {
    case SCHEMA_IMAGE: {
        int64_t h, w;
        const mp_val *pix = mp_get(item, "pix");
        if (mp_get_i64(item, "h", &h) != 0 || mp_get_i64(item, "w", &w) != 0 || h < 1 || w < 1 || h > 65535 ||
            w > 65535)
            return item_err(r, item, err, "'h'/'w' missing or out of range");
        if (!pix || pix->type != MP_BIN) return item_err(r, item, err, "no 'pix' bin");
        if ((uint64_t)pix->len != (uint64_t)h * (uint64_t)w * 3)
            return item_err(r, item, err, "'pix' has %u bytes, expected %" PRId64 "x%" PRId64 "x3", pix->len, h, w);
        break;
    }
    case SCHEMA_EMBEDDING: {
        const mp_val *vec = mp_get(item, "vec");
        if (!vec || vec->type != MP_BIN) return item_err(r, item, err, "no 'vec' bin");
        if ((int64_t)vec->len != 4 * r->dim)
            return item_err(r, item, err, "'vec' has %u bytes, expected %" PRId64 " (dim %" PRId64 " x 4)", vec->len,
                            4 * r->dim, r->dim);
        if (!all_finite(vec->v.p, (size_t)r->dim)) return item_err(r, item, err, "'vec' holds NaN or infinity");
        break;
    }
    case SCHEMA_PREDICTION: {
        int64_t pred;
        const mp_val *lg = mp_get(item, "logits");
        if (mp_get_i64(item, "pred", &pred) != 0 || pred < 0 || pred >= r->nclasses)
            return item_err(r, item, err, "'pred' missing or not a class index");
        if (!lg || lg->type != MP_BIN || (int64_t)lg->len != 4 * r->nclasses)
            return item_err(r, item, err, "'logits' missing or not %" PRId64 " f32 values", r->nclasses);
        if (!all_finite(lg->v.p, (size_t)r->nclasses)) return item_err(r, item, err, "'logits' hold NaN or infinity");
        break;
    }
    default: break;
    }
    return 0;
}

/* ---- join keys ---- */

/* An open-addressing table of the keys' hashes; the key bytes (a view flag,
 * the view, the id) are compared on a hash match. Where each key was first
 * seen is a name (interned: one per reader), a stream and a record number;
 * idx is its insertion number, the row of a loaded item. */
typedef struct {
    uint64_t hash, rec, stream;
    int64_t idx;
    uint8_t *key; /* NULL: empty slot */
    uint32_t len, name;
} key_slot;

struct stream_keys {
    key_slot *slot;
    size_t cap, n;
    char **names;
    uint32_t nnames;
};

stream_keys *stream_keys_new(void) { return xcalloc(1, sizeof(stream_keys)); }

void stream_keys_free(stream_keys *k)
{
    if (!k) return;
    for (size_t i = 0; i < k->cap; i++) free(k->slot[i].key);
    for (uint32_t i = 0; i < k->nnames; i++) free(k->names[i]);
    free(k->slot), free(k->names), free(k);
}

/* The key's bytes (xmalloc'ed, *len of them) and hash. */
static uint8_t *key_make(const char *id, size_t idlen, int has_view, int64_t view, size_t *len, uint64_t *hash)
{
    *len = 9 + idlen;
    uint8_t *key = xmalloc(*len);
    key[0] = (uint8_t)has_view;
    memcpy(key + 1, has_view ? &view : &(int64_t){0}, 8);
    memcpy(key + 9, id, idlen);
    uint64_t h = rng_hash(key, *len, 0);
    *hash = h ^ (h >> 29); /* FNV-1a's high bits into the low ones the table indexes by */
    return key;
}

static key_slot *keys_find(const stream_keys *k, uint64_t hash, const uint8_t *key, size_t len)
{
    for (size_t i = hash & (k->cap - 1);; i = (i + 1) & (k->cap - 1)) {
        key_slot *s = &k->slot[i];
        if (!s->key || (s->hash == hash && s->len == len && memcmp(s->key, key, len) == 0)) return s;
    }
}

int64_t stream_keys_find(const stream_keys *k, const char *id, size_t idlen, int64_t view)
{
    if (k->n == 0) return -1;
    size_t len;
    uint64_t hash;
    uint8_t *key = key_make(id, idlen, view != STREAM_NONE, view, &len, &hash);
    const key_slot *s = keys_find(k, hash, key, len);
    free(key);
    return s->key ? s->idx : -1;
}

/* The slot of key: its own when it was added before, else the empty one it
 * goes into (the table grown first, so that one more key fits). */
static key_slot *keys_slot(stream_keys *k, uint64_t hash, const uint8_t *key, size_t len)
{
    if (2 * (k->n + 1) > k->cap) {
        key_slot *old = k->slot;
        size_t ocap = k->cap;
        k->cap = ocap ? 2 * ocap : 1024;
        k->slot = xcalloc(k->cap, sizeof *k->slot);
        for (size_t i = 0; i < ocap; i++)
            if (old[i].key) *keys_find(k, old[i].hash, old[i].key, old[i].len) = old[i];
        free(old);
    }
    return keys_find(k, hash, key, len);
}

uint64_t stream_keys_put(stream_keys *k, const char *id, size_t idlen, int64_t view, uint64_t at)
{
    size_t len;
    uint64_t hash;
    uint8_t *key = key_make(id, idlen, view != STREAM_NONE, view, &len, &hash);
    key_slot *s = keys_slot(k, hash, key, len);
    if (s->key) {
        free(key);
        return s->rec;
    }
    *s = (key_slot){.hash = hash, .rec = at, .idx = (int64_t)k->n, .key = key, .len = (uint32_t)len};
    k->n++;
    return 0;
}

int stream_keys_add(stream_keys *k, sr *r, const mp_val *item, char *err)
{
    const mp_val *id = mp_get(item, "id");
    if (!id || id->type != MP_STR) return 0; /* sr_check_item refuses it */
    int64_t view;
    int has_view = mp_get_i64(item, "view", &view) == 0;
    size_t len;
    uint64_t hash;
    uint8_t *key = key_make(id->v.s, id->len, has_view, view, &len, &hash);
    key_slot *s = keys_slot(k, hash, key, len);
    if (s->key) {
        free(key);
        char vbuf[32] = "";
        if (has_view) snprintf(vbuf, sizeof vbuf, ", view %" PRId64, view);
        /* the stream numbers too where one of them is past the first */
        char here[32] = "", first[32] = "";
        if (s->stream > 1 || r->streams > 1) {
            snprintf(here, sizeof here, " stream %" PRIu64 ",", r->streams);
            snprintf(first, sizeof first, " stream %" PRIu64 ",", s->stream);
        }
        snprintf(err, VL_ERRLEN, "%s:%s record %" PRIu64 " (id '%.*s'%s): duplicate (id, view), first at %s:%s record %" PRIu64,
                 r->name, here, r->items, (int)(id->len > 200 ? 200 : id->len), id->v.s, vbuf, k->names[s->name],
                 first, s->rec);
        return -1;
    }
    if (k->nnames == 0 || strcmp(k->names[k->nnames - 1], r->name) != 0) {
        k->names = xrealloc(k->names, (k->nnames + 1) * sizeof *k->names);
        k->names[k->nnames++] = xstrdup(r->name);
    }
    *s = (key_slot){.hash = hash, .rec = r->items, .stream = r->streams, .idx = (int64_t)k->n, .key = key,
                    .len = (uint32_t)len, .name = k->nnames - 1};
    k->n++;
    return 0;
}

/* ---- writer ---- */

void sw_init(sw *s, int fd)
{
    widen_pipe(fd);
    memset(s, 0, sizeof(*s));
    mpw_init(&s->w, fd);
}

void sw_free(sw *s) { mpw_free(&s->w); }

void sw_header_begin(sw *s, const char *schema, const mp_val *in_header, int argc, char **argv)
{
    mpw *w = &s->w;
    mpw_map(w);
    mpw_str(w, "schema");
    mpw_str(w, schema);
    mpw_str(w, "version");
    mpw_int(w, STREAM_VERSION);
    mpw_str(w, "history");
    mpw_array(w);
    const mp_val *hist = in_header ? mp_get(in_header, "history") : NULL;
    if (hist && hist->type != MP_ARRAY) hist = NULL;
    if (hist)
        for (uint32_t i = 0; i < hist->len; i++) mpw_value(w, &hist->v.a[i]);
    if (argv) {
        mpw_array(w);
        /* the program by its name, not its install path: same command, same bytes */
        const char *name = argc > 0 ? strrchr(argv[0], '/') : NULL;
        for (int i = 0; i < argc; i++) mpw_str(w, i == 0 && name ? name + 1 : argv[i]);
        mpw_end(w);
    }
    mpw_end(w);
    /* the version of the program of each history entry, in a key of its
     * own: history stays a list of argv lists for every reader; "" where a
     * writer recorded none (another program, an older stream) */
    mpw_str(w, "history_versions");
    mpw_array(w);
    const mp_val *vers = in_header ? mp_get(in_header, "history_versions") : NULL;
    for (uint32_t i = 0; hist && i < hist->len; i++) {
        const mp_val *v = vers && vers->type == MP_ARRAY && i < vers->len ? &vers->v.a[i] : NULL;
        if (v && v->type == MP_STR) mpw_value(w, v);
        else mpw_str(w, "");
    }
    if (argv) mpw_str(w, VL2V_VERSION);
    mpw_end(w);
}

int sw_header_end(sw *s)
{
    mpw_end(&s->w);
    return mpw_flush(&s->w, 1 << 20);
}

void sw_item_begin(sw *s) { mpw_map(&s->w); }

int sw_item_end(sw *s)
{
    mpw_end(&s->w);
    s->records++;
    return mpw_flush(&s->w, 1 << 20);
}

void sw_trailer_begin(sw *s)
{
    mpw *w = &s->w;
    mpw_map(w);
    mpw_str(w, "end");
    mpw_bool(w, 1);
    mpw_str(w, "records");
    mpw_uint(w, s->records);
    mpw_str(w, "dropped");
    mpw_uint(w, s->dropped);
}

int sw_trailer_end(sw *s)
{
    mpw_end(&s->w);
    return mpw_flush(&s->w, 0);
}

void stream_copy_keys(mpw *w, const mp_val *item, const char *const *keys)
{
    for (int i = 0; keys[i]; i++) {
        const mp_val *v = mp_get(item, keys[i]);
        if (v) {
            mpw_str(w, keys[i]);
            mpw_value(w, v);
        }
    }
}

/* ---- one header writer a schema ---- */

void sw_header_image(sw *s, const mp_val *in_header, int argc, char **argv)
{
    mpw *w = &s->w;
    sw_header_begin(s, "image", in_header, argc, argv);
    mpw_str(w, "dtype");
    mpw_str(w, "u8");
    mpw_str(w, "layout");
    mpw_str(w, "hwc");
    mpw_str(w, "c");
    mpw_int(w, 3);
}

void sw_header_embedding(sw *s, int64_t dim, const char *space, const mp_val *in_header, int argc, char **argv)
{
    mpw *w = &s->w;
    sw_header_begin(s, "embedding", in_header, argc, argv);
    mpw_str(w, "dim");
    mpw_int(w, dim);
    mpw_str(w, "dtype");
    mpw_str(w, "f32le");
    mpw_str(w, "space");
    mpw_str(w, space);
}

void sw_header_prediction(sw *s, const stream_prediction_info *p, const mp_val *in_header, int argc, char **argv)
{
    mpw *w = &s->w;
    sw_header_begin(s, "prediction", in_header, argc, argv);
    mpw_str(w, "classes");
    mpw_array(w);
    for (int i = 0; i < p->nclasses; i++) mpw_str(w, p->classes[i]);
    mpw_end(w);
    mpw_str(w, "method");
    mpw_str(w, p->method ? p->method : "");
    mpw_str(w, "seed");
    if (p->has_seed) mpw_int(w, p->seed);
    else mpw_nil(w);
    mpw_str(w, "sources");
    mpw_array(w);
    for (int i = 0; i < p->nsources; i++) mpw_str(w, p->sources[i]);
    mpw_end(w);
    mpw_str(w, "settings");
    mpw_str(w, p->settings ? p->settings : "");
}

void sw_header_log(sw *s, const mp_val *in_header, int argc, char **argv)
{
    sw_header_begin(s, "log", in_header, argc, argv);
}

void sw_header_text(sw *s, const mp_val *in_header, int argc, char **argv)
{
    sw_header_begin(s, "text", in_header, argc, argv);
}

/* ---- a whole embedding stream in memory ---- */

void stream_matrix_init(stream_matrix *m) { memset(m, 0, sizeof *m); }

void stream_matrix_free(stream_matrix *m)
{
    for (int64_t i = 0; i < m->n; i++) free(m->id[i]), free(m->cls[i]), free(m->domain[i]), free(m->split[i]);
    free(m->rows), free(m->id), free(m->cls), free(m->domain), free(m->split), free(m->label), free(m->view);
    free(m->space), free(m->source), free(m->hdr_bytes);
    mp_arena_free(&m->hdr_arena);
    stream_keys_free(m->keys);
    memset(m, 0, sizeof *m);
}

char *stream_get_str(const mp_val *item, const char *key)
{
    const mp_val *v = mp_get(item, key);
    return v && v->type == MP_STR ? xstrndup(v->v.s, v->len) : NULL;
}

int64_t stream_get_index(const mp_val *item, const char *key)
{
    int64_t x;
    return mp_get_i64(item, key, &x) == 0 ? x : STREAM_NONE;
}

/* The header just read: the first one sets dim and space, a later one must agree. */
static int matrix_header(stream_matrix *m, sr *r, char *err)
{
    const mp_val *sp = mp_get(&r->header, "space");
    if (!m->space) {
        char derr[VL_ERRLEN];
        size_t used;
        mpw w;
        mpw_init(&w, -1);
        mpw_value(&w, &r->header);
        m->hdr_bytes = xrealloc(w.buf, w.len); /* the encoder's buffer, taken over */
        mp_decode(&m->hdr_arena, m->hdr_bytes, w.len, w.len, &m->header, &used, derr);
        m->dim = r->dim;
        m->space = xstrndup(sp->v.s, sp->len);
        m->source = xstrdup(r->name);
        m->keys = stream_keys_new();
        return 0;
    }
    if (r->dim != m->dim)
        return vl_error(err, "%s: header: dim %" PRId64 ", but %s has dim %" PRId64 ": the streams do not join",
                        r->name, r->dim, m->source, m->dim);
    if (!mp_str_eq(sp, m->space))
        return vl_error(err, "%s: header: space '%.*s', but %s has space '%s': the streams do not join", r->name,
                        (int)sp->len, sp->v.s, m->source, m->space);
    return 0;
}

static void matrix_add(stream_matrix *m, const mp_val *item)
{
    if (m->n == m->cap) {
        m->cap = m->cap ? 2 * m->cap : 256;
        size_t c = (size_t)m->cap;
        m->rows = xrealloc(m->rows, c * (size_t)m->dim * sizeof(float));
        m->id = xrealloc(m->id, c * sizeof(char *));
        m->cls = xrealloc(m->cls, c * sizeof(char *));
        m->domain = xrealloc(m->domain, c * sizeof(char *));
        m->split = xrealloc(m->split, c * sizeof(char *));
        m->label = xrealloc(m->label, c * sizeof(int64_t));
        m->view = xrealloc(m->view, c * sizeof(int64_t));
    }
    int64_t i = m->n++;
    memcpy(m->rows + i * m->dim, mp_get(item, "vec")->v.p, (size_t)m->dim * sizeof(float));
    m->id[i] = stream_get_str(item, "id");
    m->cls[i] = stream_get_str(item, "class");
    m->domain[i] = stream_get_str(item, "domain");
    m->split[i] = stream_get_str(item, "split");
    m->label[i] = stream_get_index(item, "label");
    m->view[i] = stream_get_index(item, "view");
}

int stream_matrix_read(stream_matrix *m, sr *r, stream_bad_fn bad, void *ctx, char *err)
{
    if (r->state == 0 && sr_header(r, "embedding") != 0) return vl_error(err, "%s", r->err);
    if (r->schema != SCHEMA_EMBEDDING)
        return vl_error(err, "%s: header: schema is '%s', expected 'embedding'", r->name, r->schema_name);
    for (;;) {
        if (matrix_header(m, r, err) != 0) return -1;
        const mp_val *item;
        int rc;
        char msg[VL_ERRLEN];
        while ((rc = sr_next(r, &item)) == 1) {
            const mp_val *id = mp_get(item, "id");
            int bad_item = sr_check_item(r, item, msg) != 0;
            if (!bad_item && memchr(id->v.s, 0, id->len)) {
                /* the rows' ids are C strings */
                char where[300];
                snprintf(msg, sizeof msg, "%s: 'id' holds a NUL byte", sr_where(r, item, where, sizeof where));
                bad_item = 1;
            }
            if (bad_item) {
                m->bad++;
                if (!bad || bad(ctx, msg)) return vl_error(err, "%s", msg);
                continue;
            }
            if (stream_keys_add(m->keys, r, item, msg) != 0) return vl_error(err, "%s", msg);
            matrix_add(m, item);
        }
        if (rc < 0) return vl_error(err, "%s", r->err);
        m->dropped += sr_trailer_dropped(r);
        rc = sr_next_stream(r, "embedding");
        if (rc < 0) return vl_error(err, "%s", r->err);
        if (rc == 0) return 0;
    }
}

int64_t stream_matrix_find(const stream_matrix *m, const char *id, int64_t view)
{
    return m->keys ? stream_keys_find(m->keys, id, strlen(id), view) : -1;
}
