/* mpcat: joins record streams into one, and validates streams.
 *
 * Inputs are files, or stdin where several streams may follow one another
 * (as `parallel --pipe` leaves them). All headers must agree on every key but
 * the history; the output header is the first input's, its history extended by
 * this command. Items are checked against the schema: a bad item is reported
 * with its id and dropped; good items are copied byte for byte. The trailer
 * counts the records written and the items dropped here and upstream. An
 * (id, view) seen twice, in one input or across inputs, is fatal: the joined
 * stream could not be joined on its key. */
#include "common.h"

#include <getopt.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const char USAGE[] =
    "usage: mpcat [-c] [-v] [--max-errors N] [-o FILE] [FILE ...]\n"
    "  -c, --check       validate only: print a summary line instead of the joined stream\n"
    "  -v, --verbose     progress and the totals on standard error\n"
    "  --max-errors N    fail once more than N bad items have been dropped (default 0)\n"
    "  -o, --output FILE write FILE atomically instead of standard output\n"
    "  -h, --help        this text\n"
    "  --version         the version\n";


static int same_val(const mp_val *a, const mp_val *b)
{
    if (!a || !b) return a == b;
    if (a->type != b->type) {
        int64_t x, y;
        return mp_as_i64(a, &x) == 0 && mp_as_i64(b, &y) == 0 && x == y;
    }
    switch (a->type) {
    case MP_NIL: return 1;
    case MP_BOOL: return a->v.b == b->v.b;
    case MP_INT: return a->v.i == b->v.i;
    case MP_UINT: return a->v.u == b->v.u;
    case MP_FLOAT: return a->v.f == b->v.f;
    case MP_STR:
    case MP_BIN:
    case MP_EXT: return a->len == b->len && memcmp(a->v.p, b->v.p, a->len) == 0;
    case MP_ARRAY:
    case MP_MAP: {
        uint32_t n = a->type == MP_MAP ? 2 * a->len : a->len;
        if (a->len != b->len) return 0;
        for (uint32_t i = 0; i < n; i++)
            if (!same_val(&a->v.a[i], &b->v.a[i])) return 0;
        return 1;
    }
    }
    return 0;
}

/* The first header key (but history) whose value differs between the two
 * headers or that only one has; NULL when they agree. Every key counts, not
 * only the schema's: shards of one run were made with the same settings
 * (size, seed, normalize, ...), and a joined header could not describe
 * items made with different ones. The returned name is valid as long as a
 * or b (a static buffer). */
static const char *header_difference(const mp_val *a, const mp_val *b)
{
    static char name[128];
    for (int pass = 0; pass < 2; pass++) {
        const mp_val *x = pass ? b : a, *y = pass ? a : b;
        for (uint32_t k = 0; k < x->len; k++) {
            const mp_val *key = &x->v.a[2 * k];
            if (key->type != MP_STR || mp_str_eq(key, "history") || mp_str_eq(key, "history_versions")) continue;
            snprintf(name, sizeof name, "%.*s", (int)(key->len < 100 ? key->len : 100), key->v.s);
            if (key->len >= 100 || !same_val(&x->v.a[2 * k + 1], mp_get(y, name))) return name;
        }
    }
    return NULL;
}

int main(int argc, char **argv)
{
    tool_init("mpcat");
    int check_only = 0;
    tool_opts to = {0};
    static const struct option opts[] = {{"check", no_argument, 0, 'c'}, OPT_MAX_ERRORS, OPT_OUTPUT,
                                         OPT_VERBOSE, OPT_HELP, OPT_VERSION, OPT_END};
    int c;
    while ((c = getopt_long(argc, argv, "co:vh", opts, NULL)) != -1) {
        if (c == 'c') check_only = 1;
        else tool_option(c, USAGE, &to);
    }
    if (check_only && to.output) usage_error(USAGE, "--check writes no stream: -o has nothing to write");
    int nin;
    char **inputs = input_list(argc, argv, &nin);

    tool_out out;
    sw s;
    if (!check_only) output_open(&out, to.output);
    sw_init(&s, check_only ? -1 : out.fd);

    /* the first header fixes the schema keys; kept as owned bytes */
    mp_val first = {0};
    uint8_t *first_bytes = NULL;
    mp_arena first_arena = {0};
    uint64_t upstream_dropped = 0, dropped_here = 0, nstreams = 0;
    char err[VL_ERRLEN];
    stream_keys *keys = stream_keys_new();
    progress_start("records", 0);

    for (int i = 0; i < nin; i++) {
        sr *r = open_stream(inputs[i]);
        if (nin == 1) progress_input(r->fd);
        if (sr_header(r, NULL) != 0) die(1, "%s", r->err);
        int more;
        do {
            nstreams++;
            if (!first_bytes) {
                /* keep an owned copy of the first header: later headers must agree with it */
                size_t used;
                mpw tmp;
                mpw_init(&tmp, -1);
                mpw_value(&tmp, &r->header);
                first_bytes = tmp.buf;
                mp_decode(&first_arena, first_bytes, tmp.len, STREAM_MAX_RECORD, &first, &used, err);
                if (!check_only) {
                    header_pass_on(&s, r, argc, argv);
                }
            } else {
                const char *key = header_difference(&first, &r->header);
                if (key)
                    die(1, "%s: header of stream %llu: '%s' differs from the first stream's", r->name,
                        (unsigned long long)r->streams, key);
            }
            const mp_val *item;
            int rc;
            while ((rc = sr_next(r, &item)) == 1) {
                if (sr_check_item(r, item, err) != 0) {
                    if (drop_item(&dropped_here, to.max_errors, "%s: dropped", err))
                        die_dropped(dropped_here, to.max_errors);
                    continue;
                }
                if (stream_keys_add(keys, r, item, err) != 0) die(1, "%s", err);
                s.records++;
                if (!check_only) {
                    mpw_raw(&s.w, r->raw, r->raw_len); /* items pass through byte for byte */
                    if (mpw_flush(&s.w, 1 << 20) != 0) die(1, "write error: %s", strerror(s.w.err));
                }
                progress_count(s.records, dropped_here, NULL);
            }
            if (rc < 0) die(1, "%s", r->err);
            upstream_dropped += (uint64_t)sr_trailer_dropped(r);
            more = sr_next_stream(r, NULL);
            if (more < 0) die(1, "%s", r->err);
        } while (more == 1);
        close_stream(r);
    }
    progress_end(s.records, dropped_here, NULL);
    stream_keys_free(keys);
    mp_arena_free(&first_arena);
    free(first_bytes);
    s.dropped = upstream_dropped + dropped_here;
    if (check_only) {
        printf("ok: %llu streams, %llu records, %llu dropped upstream, %llu dropped here\n",
               (unsigned long long)nstreams, (unsigned long long)s.records, (unsigned long long)upstream_dropped,
               (unsigned long long)dropped_here);
        stdout_done();
    } else {
        sw_trailer_begin(&s);
        sw_trailer_end(&s);
        output_commit(&out, &s);
    }
    sw_free(&s);
    return 0;
}
