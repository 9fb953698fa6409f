/* mpcmp: compares two record streams item by item.
 *
 * Items are paired by `id` and `view`, when they have one (the second stream
 * is held in memory, keyed by them)
 * or, with --order, by position (then their ids must also agree). Numeric
 * payloads (`vec`, `logits` as f32le, `pix` as u8) are compared value by value
 * with the tolerance |a - b| <= atol + rtol * |b| (numpy.allclose); every
 * other item key must be equal (--payload: is not compared). Headers must
 * agree on the schema and its keys (dim, dtype, space, classes ...; history
 * may differ; --payload: space and classes too). A summary goes to
 * stdout: pairs compared, items found in one stream only, the worst absolute
 * and relative differences and where they are. Exit status 0 when every item
 * pairs up and lies within the tolerance, 1 when not or on bad input, 2 on
 * bad usage. */
#include "common.h"

#include <getopt.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const char USAGE[] =
    "usage: mpcmp [--atol X] [--rtol X] [--order] [--payload] [-q] [--max-report N] A B\n"
    "  --atol X          absolute tolerance (default 1e-6)\n"
    "  --rtol X          relative tolerance (default 1e-5)\n"
    "  --order           pair items by position, not by id\n"
    "  --payload         compare the payloads only (vec, logits, pix): no other item key, no\n"
    "                    space or classes in the headers\n"
    "  -q, --quiet       print the summary only\n"
    "  --max-report N    describe at most N differences (default 10)\n"
    "  -h, --help        this text\n"
    "  --version         the version\n";

static double atol_ = 1e-6, rtol_ = 1e-5;
static int quiet;
static int payload_only; /* --payload */
static long long max_report = 10;

/* ---- the second stream, held as encoded items, looked up by key ----
 * The key is the id, and the view when an item has one: an augmented image
 * stream holds several views of each id. */
typedef struct {
    size_t key_off; /* the key's bytes: table.keys + key_off */
    size_t keylen;
    size_t off, len; /* the item's encoding in bytes */
    int seen;
} entry;

typedef struct {
    uint8_t *bytes;
    size_t nbytes, cap;
    char *keys;
    size_t nkeys, kcap;
    entry *e;
    size_t n, ecap;
    size_t *slot; /* open addressing: index + 1, 0 empty */
    size_t nslot;
} table;

static uint64_t hash(const char *s, size_t n) {
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < n; i++) {
        h ^= (uint8_t)s[i];
        h *= 0x100000001b3ull;
    }
    return h;
}

static void rehash(table *t) {
    free(t->slot);
    t->nslot = t->nslot ? t->nslot * 2 : 1024;
    t->slot = xcalloc(t->nslot, sizeof(size_t));
    for (size_t i = 0; i < t->n; i++) {
        size_t h = hash(t->keys + t->e[i].key_off, t->e[i].keylen) & (t->nslot - 1);
        while (t->slot[h])
            h = (h + 1) & (t->nslot - 1);
        t->slot[h] = i + 1;
    }
}

static entry *lookup(table *t, const char *id, size_t n) {
    if (!t->nslot) return NULL;
    size_t h = hash(id, n) & (t->nslot - 1);
    while (t->slot[h]) {
        entry *e = &t->e[t->slot[h] - 1];
        if (e->keylen == n && memcmp(t->keys + e->key_off, id, n) == 0) return e;
        h = (h + 1) & (t->nslot - 1);
    }
    return NULL;
}

/* ---- comparison ---- */
typedef struct {
    uint64_t pairs, only_a, only_b, out_of_tol, other_diff, values;
    double worst_abs, worst_rel, worst_excess;
    char where_abs[400], where_rel[400];
    long long reported;
} stats;

static void report(stats *st, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void report(stats *st, const char *fmt, ...) {
    if (quiet || st->reported++ >= max_report) return;
    va_list ap;
    va_start(ap, fmt);
    fflush(stdout);
    vprintf(fmt, ap);
    va_end(ap);
    putchar('\n');
}

static int same_val(const mp_val *a, const mp_val *b) {
    if (!a || !b) return a == b;
    int64_t x, y;
    if (mp_as_i64(a, &x) == 0 && mp_as_i64(b, &y) == 0) return x == y;
    if (a->type != b->type) return 0;
    switch (a->type) {
    case MP_NIL:
        return 1;
    case MP_BOOL:
        return a->v.b == b->v.b;
    case MP_UINT:
        return a->v.u == b->v.u;
    case MP_FLOAT:
        return a->v.f == b->v.f || (isnan(a->v.f) && isnan(b->v.f));
    case MP_STR:
    case MP_BIN:
    case MP_EXT:
        return a->len == b->len && (a->len == 0 || memcmp(a->v.p, b->v.p, a->len) == 0);
    case MP_ARRAY:
    case MP_MAP: {
        if (a->len != b->len) return 0;
        uint32_t n = a->type == MP_MAP ? 2 * a->len : a->len;
        for (uint32_t i = 0; i < n; i++)
            if (!same_val(&a->v.a[i], &b->v.a[i])) return 0;
        return 1;
    }
    }
    return 0;
}

static void id_str(const mp_val *item, char *buf, size_t n) {
    const mp_val *id = mp_get(item, "id");
    int64_t view;
    if (id && id->type == MP_STR && mp_get_i64(item, "view", &view) == 0)
        snprintf(buf, n, "'%.*s' view %lld", (int)(id->len > 200 ? 200 : id->len), id->v.s, (long long)view);
    else if (id && id->type == MP_STR)
        snprintf(buf, n, "'%.*s'", (int)(id->len > 200 ? 200 : id->len), id->v.s);
    else
        snprintf(buf, n, "(no id)");
}

/* The join key of an item with an id string: the id's bytes, then a NUL and
 * the view in decimal when the item has a view. Written to *kb (grown as
 * needed); returns its length. */
static size_t item_key(const mp_val *item, char **kb, size_t *kcap) {
    const mp_val *id = mp_get(item, "id");
    int64_t view;
    if (*kcap < (size_t)id->len + 32) *kb = xrealloc(*kb, *kcap = (size_t)id->len + 32);
    memcpy(*kb, id->v.s, id->len);
    size_t n = id->len;
    if (mp_get_i64(item, "view", &view) == 0) {
        (*kb)[n++] = 0;
        n += (size_t)snprintf(*kb + n, 31, "%lld", (long long)view);
    }
    return n;
}

/* compares n values of the payload key; is_f32 or u8 */
static void cmp_payload(stats *st, const char *id, const char *key, const mp_val *a,
                        const mp_val *b, int is_f32) {
    if (!a || !b || a->type != MP_BIN || b->type != MP_BIN || a->len != b->len) {
        st->other_diff++;
        report(st, "item %s: '%s' %s", id, key,
               !a || !b ? "present in one stream only" : "differs in type or length");
        return;
    }
    size_t n = is_f32 ? a->len / 4 : a->len;
    int bad = 0;
    for (size_t i = 0; i < n; i++) {
        double x, y;
        if (is_f32) {
            float fx, fy;
            memcpy(&fx, a->v.p + 4 * i, 4);
            memcpy(&fy, b->v.p + 4 * i, 4);
            x = fx;
            y = fy;
        } else {
            x = a->v.p[i];
            y = b->v.p[i];
        }
        double d = fabs(x - y), rel = d / fabs(y);
        if (x == y) d = rel = 0; /* equal infinities */
        if (isnan(x) || isnan(y)) d = rel = (isnan(x) && isnan(y)) ? 0 : INFINITY;
        if (isnan(rel)) rel = 0;
        st->values++;
        if (d > st->worst_abs) {
            st->worst_abs = d;
            snprintf(st->where_abs, sizeof st->where_abs, "item %s %s[%zu]: %.9g vs %.9g", id, key,
                     i, x, y);
        }
        if (rel > st->worst_rel) {
            st->worst_rel = rel;
            snprintf(st->where_rel, sizeof st->where_rel, "item %s %s[%zu]: %.9g vs %.9g", id, key,
                     i, x, y);
        }
        double tol = atol_ + rtol_ * fabs(y);
        if (!(d <= tol)) {
            if (!bad)
                report(st, "item %s: %s[%zu] %.9g vs %.9g: difference %.3g exceeds %.3g", id, key,
                       i, x, y, d, tol);
            bad = 1;
            double ex = d / tol;
            if (ex > st->worst_excess) st->worst_excess = ex;
        }
    }
    if (bad) st->out_of_tol++;
}

static int payload_kind(const mp_val *key) {
    if (mp_str_eq(key, "vec") || mp_str_eq(key, "logits")) return 1;
    if (mp_str_eq(key, "pix")) return 2;
    return 0;
}

static void cmp_items(stats *st, const mp_val *a, const mp_val *b) {
    char id[256];
    id_str(a, id, sizeof id);
    st->pairs++;
    /* every key of a, then keys of b missing from a */
    for (uint32_t i = 0; i < a->len; i++) {
        const mp_val *k = &a->v.a[2 * i], *va = &a->v.a[2 * i + 1];
        if (k->type != MP_STR || mp_str_eq(k, "id"))
            continue; /* ids: paired on, or checked by the caller */
        char key[64];
        snprintf(key, sizeof key, "%.*s", (int)(k->len > 60 ? 60 : k->len), k->v.s);
        const mp_val *vb = mp_get(b, key);
        int kind = payload_kind(k);
        if (!kind && payload_only) continue;
        if (kind) {
            cmp_payload(st, id, key, va, vb, kind == 1);
        } else if (!same_val(va, vb)) {
            st->other_diff++;
            report(st, "item %s: '%s' %s", id, key,
                   vb ? "differs" : "present in the first stream only");
        }
    }
    for (uint32_t i = 0; i < b->len; i++) {
        const mp_val *k = &b->v.a[2 * i];
        if (k->type != MP_STR || (payload_only && !payload_kind(k))) continue;
        char key[64];
        snprintf(key, sizeof key, "%.*s", (int)(k->len > 60 ? 60 : k->len), k->v.s);
        if (!mp_get(a, key)) {
            st->other_diff++;
            report(st, "item %s: '%s' present in the second stream only", id, key);
        }
    }
}

/* header keys that must agree */
static const char *const AGREE[] = {"schema", "dtype", "layout",  "c",
                                    "dim",    "space", "classes", NULL};

static void cmp_headers(sr *a, sr *b) {
    for (int k = 0; AGREE[k]; k++)
        if (!(payload_only && (!strcmp(AGREE[k], "space") || !strcmp(AGREE[k], "classes"))) && !same_val(mp_get(&a->header, AGREE[k]), mp_get(&b->header, AGREE[k])))
            die(1, "%s, %s: headers differ in '%s'", a->name, b->name, AGREE[k]);
}

static void finish_stream(sr *r) {
    if (sr_finish(r) != 0) die(1, "%s", r->err);
    close_stream(r);
}

/* --order: reads the rest of a stream whose partner has ended (item is the
 * current one when rc is 1), counting its items in *only and reporting the
 * first. */
static void drain_unpaired(stats *st, sr *r, const mp_val *item, int rc, uint64_t *only,
                           const char *which) {
    while (rc == 1) {
        char id[256];
        id_str(item, id, sizeof id);
        if ((*only)++ == 0)
            report(st, "item %s: in the %s stream only (and any after it)", id, which);
        rc = sr_next(r, &item);
        if (rc < 0) die(1, "%s", r->err);
    }
}

int main(int argc, char **argv) {
    tool_init("mpcmp");
    int by_order = 0;
    static const struct option opts[] = {{"atol", required_argument, 0, 'a'},
                                         {"rtol", required_argument, 0, 'r'},
                                         {"order", no_argument, 0, 'O'},
                                         {"quiet", no_argument, 0, 'q'},
                                         {"payload", no_argument, 0, 'P'},
                                         {"max-report", required_argument, 0, 'm'},
                                         OPT_HELP,
                                         OPT_VERSION,
                                         OPT_END};
    int c;
    while ((c = getopt_long(argc, argv, "qh", opts, NULL)) != -1) {
        switch (c) {
        case 'a':
            atol_ = parse_double(USAGE, "--atol", optarg, 0, INFINITY);
            break;
        case 'r':
            rtol_ = parse_double(USAGE, "--rtol", optarg, 0, INFINITY);
            break;
        case 'O':
            by_order = 1;
            break;
        case 'q':
            quiet = 1;
            break;
        case 'P':
            payload_only = 1;
            break;
        case 'm':
            max_report = parse_int(USAGE, "--max-report", optarg, 0, INT64_MAX);
            break;
        default:
            tool_option(c, USAGE, NULL);
        }
    }
    if (argc - optind != 2) usage_error(USAGE, "two streams to compare are needed");
    const char *pa = argv[optind], *pb = argv[optind + 1];
    if (strcmp(pa, "-") == 0 && strcmp(pb, "-") == 0)
        usage_error(USAGE, "only one of the streams can be stdin");
    sr *ra = open_stream(pa), *rb = open_stream(pb);
    if (sr_header(ra, NULL) != 0) die(1, "%s", ra->err);
    if (sr_header(rb, NULL) != 0) die(1, "%s", rb->err);
    cmp_headers(ra, rb);

    stats st = {0};
    const mp_val *ia, *ib;
    int rca, rcb;
    if (by_order) {
        for (;;) {
            rca = sr_next(ra, &ia);
            if (rca < 0) die(1, "%s", ra->err);
            /* ia points into ra's buffer: valid until ra is read again, so b may be read now */
            rcb = sr_next(rb, &ib);
            if (rcb < 0) die(1, "%s", rb->err);
            if (rca == 0 || rcb == 0) break;
            char ida[256], idb[256];
            id_str(ia, ida, sizeof ida);
            id_str(ib, idb, sizeof idb);
            if (strcmp(ida, idb) != 0) {
                st.other_diff++;
                report(&st, "record %" PRIu64 ": id %s in the first stream, %s in the second",
                       ra->items, ida, idb);
            }
            cmp_items(&st, ia, ib);
        }
        /* one stream ended: the rest of the other is unpaired */
        drain_unpaired(&st, ra, ia, rca, &st.only_a, "first");
        drain_unpaired(&st, rb, ib, rcb, &st.only_b, "second");
    } else {
        table t = {0};
        char err[VL_ERRLEN];
        mpw w;
        mpw_init(&w, -1);
        char *kb = NULL;
        size_t kcap = 0, kn;
        while ((rcb = sr_next(rb, &ib)) == 1) {
            const mp_val *id = mp_get(ib, "id");
            if (!id || id->type != MP_STR) {
                sr_where(rb, ib, err, sizeof err);
                die(1, "%s: no 'id' string to join on (use --order to compare by position)", err);
            }
            kn = item_key(ib, &kb, &kcap);
            if (lookup(&t, kb, kn)) {
                sr_where(rb, ib, err, sizeof err);
                die(1, "%s: id appears twice (use --order to compare by position)", err);
            }
            w.len = 0;
            mpw_value(&w, ib);
            if (t.cap - t.nbytes < w.len) {
                t.cap = t.cap ? t.cap : 1 << 20;
                while (t.cap - t.nbytes < w.len)
                    t.cap *= 2;
                t.bytes = xrealloc(t.bytes, t.cap);
            }
            memcpy(t.bytes + t.nbytes, w.buf, w.len);
            if (t.kcap - t.nkeys < kn) {
                t.kcap = t.kcap ? t.kcap : 1 << 16;
                while (t.kcap - t.nkeys < kn)
                    t.kcap *= 2;
                t.keys = xrealloc(t.keys, t.kcap);
            }
            memcpy(t.keys + t.nkeys, kb, kn);
            if (t.n == t.ecap) {
                t.ecap = t.ecap ? 2 * t.ecap : 1024;
                t.e = xrealloc(t.e, t.ecap * sizeof(entry));
            }
            t.e[t.n] = (entry){t.nkeys, kn, t.nbytes, w.len, 0};
            t.nkeys += kn;
            t.nbytes += w.len;
            t.n++;
            if (2 * t.n >= t.nslot) {
                rehash(&t);
            } else {
                size_t h = hash(kb, kn) & (t.nslot - 1);
                while (t.slot[h])
                    h = (h + 1) & (t.nslot - 1);
                t.slot[h] = t.n;
            }
        }
        if (rcb < 0) die(1, "%s", rb->err);
        mpw_free(&w);
        mp_arena ar = {0};
        while ((rca = sr_next(ra, &ia)) == 1) {
            const mp_val *id = mp_get(ia, "id");
            if (!id || id->type != MP_STR) {
                sr_where(ra, ia, err, sizeof err);
                die(1, "%s: no 'id' string to join on (use --order to compare by position)", err);
            }
            kn = item_key(ia, &kb, &kcap);
            entry *e = lookup(&t, kb, kn);
            if (!e) {
                char ids[256];
                id_str(ia, ids, sizeof ids);
                st.only_a++;
                report(&st, "item %s: in the first stream only", ids);
                continue;
            }
            if (e->seen) {
                sr_where(ra, ia, err, sizeof err);
                die(1, "%s: id appears twice (use --order to compare by position)", err);
            }
            e->seen = 1;
            mp_val v;
            size_t used;
            mp_arena_reset(&ar);
            mp_decode(&ar, t.bytes + e->off, e->len, STREAM_MAX_RECORD, &v, &used, err);
            cmp_items(&st, ia, &v);
        }
        if (rca < 0) die(1, "%s", ra->err);
        for (size_t i = 0; i < t.n; i++)
            if (!t.e[i].seen) {
                mp_val v;
                size_t used;
                char ids[256];
                mp_arena_reset(&ar);
                mp_decode(&ar, t.bytes + t.e[i].off, t.e[i].len, STREAM_MAX_RECORD, &v, &used, err);
                id_str(&v, ids, sizeof ids);
                st.only_b++;
                report(&st, "item %s: in the second stream only", ids);
            }
        mp_arena_free(&ar);
        free(kb);
        free(t.keys);
        free(t.bytes);
        free(t.e);
        free(t.slot);
    }
    finish_stream(ra);
    finish_stream(rb);

    int ok = st.only_a == 0 && st.only_b == 0 && st.out_of_tol == 0 && st.other_diff == 0;
    if (!quiet && st.reported > max_report)
        printf("(%lld more differences not shown)\n", st.reported - max_report);
    printf("%" PRIu64 " pairs compared (%s), %" PRIu64 " values; %" PRIu64 " only in %s, %" PRIu64
           " only in %s\n",
           st.pairs, by_order ? "by position" : "by id", st.values, st.only_a, pa, st.only_b, pb);
    printf("max abs difference %.3g%s%s\n", st.worst_abs, st.worst_abs > 0 ? " at " : "",
           st.worst_abs > 0 ? st.where_abs : "");
    printf("max rel difference %.3g%s%s\n", st.worst_rel, st.worst_rel > 0 ? " at " : "",
           st.worst_rel > 0 ? st.where_rel : "");
    if (ok)
        printf("within tolerance (atol %g, rtol %g)\n", atol_, rtol_);
    else
        printf("DIFFERENT: %" PRIu64
               " items out of tolerance (atol %g, rtol %g; worst %.3g times the tolerance), "
               "%" PRIu64 " other differences, %" PRIu64 " unpaired\n",
               st.out_of_tol, atol_, rtol_, st.worst_excess, st.other_diff, st.only_a + st.only_b);
    stdout_done();
    return ok ? 0 : 1;
}
