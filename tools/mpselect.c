/* mpselect: keeps the items of a stream that match a selection.
 *
 * The model is Kaldi's subset-feats and select-feats: items are kept by
 * their domain, split, label or view, or by an id list, or (--exclude) the
 * others are. Several criteria must all match; the values of one (repeated,
 * or separated by commas) are alternatives. An item without the key never
 * matches it. Any schema: items pass through byte for byte, the header is the
 * input's with its history extended, and the trailer counts the records
 * written and the items dropped (upstream, and bad ones here). */
#include "common.h"

#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char USAGE[] =
    "usage: mpselect [--domain D,...] [--split S,...] [--label N,...] [--view K,...] [--ids FILE]\n"
    "                [--exclude] [--max-errors N] [-o FILE] [-v] [FILE]\n"
    "  --domain D,...   keep items whose domain is one of these (repeatable)\n"
    "  --split S,...    keep items whose split is one of these, e.g. in or out (repeatable)\n"
    "  --label N,...    keep items whose label is one of these integers (repeatable)\n"
    "  --view K,...     keep items whose view is one of these integers (repeatable)\n"
    "  --ids FILE       keep items whose id is a line of FILE\n"
    "  --exclude        keep the items that do not match instead\n"
    "  --max-errors N   fail once more than N bad items have been dropped (default 0)\n"
    "  -o FILE          write FILE atomically instead of standard output\n"
    "  -v               progress and the totals on standard error\n"
    "  -h, --help       this text\n"
    "  --version        the version\n";

typedef struct {
    char **v;
    size_t n, cap;
} strs;

static void strs_push(strs *s, const char *v, size_t len)
{
    if (s->n == s->cap) s->v = xrealloc(s->v, (s->cap = s->cap ? 2 * s->cap : 16) * sizeof *s->v);
    char *c = xmalloc(len + 1);
    memcpy(c, v, len);
    c[len] = 0;
    s->v[s->n++] = c;
}

/* "a,b,c" added to s; an empty value is a usage error */
static void add_list(strs *s, const char *opt, const char *arg)
{
    for (const char *p = arg;;) {
        const char *comma = strchr(p, ',');
        size_t len = comma ? (size_t)(comma - p) : strlen(p);
        if (len == 0) usage_error(USAGE, "%s: '%s' holds an empty value", opt, arg);
        strs_push(s, p, len);
        if (!comma) break;
        p = comma + 1;
    }
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

/* The ids of FILE, one a line (a trailing CR is cut; empty lines are skipped), sorted. */
static void read_ids(const char *path, strs *ids)
{
    FILE *f = fopen(path, "r");
    if (!f) die(1, "%s: %s", path, strerror(errno));
    char *line = NULL;
    size_t cap = 0;
    ssize_t n;
    while ((n = getline(&line, &cap, f)) >= 0) {
        while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r')) n--;
        if (n > 0) strs_push(ids, line, (size_t)n);
    }
    if (ferror(f)) die(1, "%s: read error: %s", path, strerror(errno));
    fclose(f);
    free(line);
    qsort(ids->v, ids->n, sizeof *ids->v, cmp_str);
}

/* 1 when the item's string key is one of the values */
static int str_in(const mp_val *item, const char *key, const strs *vals)
{
    const mp_val *v = mp_get(item, key);
    if (!v || v->type != MP_STR) return 0;
    for (size_t i = 0; i < vals->n; i++)
        if (strlen(vals->v[i]) == v->len && memcmp(vals->v[i], v->v.s, v->len) == 0) return 1;
    return 0;
}

/* 1 when the item's integer key is one of the values */
static int int_in(const mp_val *item, const char *key, const int64_t *vals, size_t n)
{
    int64_t x;
    const mp_val *v = mp_get(item, key);
    if (!v || v->type == MP_NIL || mp_get_i64(item, key, &x) != 0) return 0;
    for (size_t i = 0; i < n; i++)
        if (vals[i] == x) return 1;
    return 0;
}

static int64_t *int_list(const strs *s, const char *opt)
{
    int64_t *v = xmalloc((s->n + 1) * sizeof *v);
    for (size_t i = 0; i < s->n; i++) v[i] = parse_int(USAGE, opt, s->v[i], INT64_MIN, INT64_MAX);
    return v;
}

int main(int argc, char **argv)
{
    tool_init("mpselect");
    strs dom = {0}, split = {0}, lab = {0}, view = {0}, ids = {0};
    const char *ids_path = NULL;
    int exclude = 0;
    tool_opts to = {0};
    enum { O_DOMAIN = 0x200, O_SPLIT, O_LABEL, O_VIEW, O_IDS, O_EXCLUDE };
    static const struct option opts[] = {{"domain", required_argument, 0, O_DOMAIN},
                                         {"split", required_argument, 0, O_SPLIT},
                                         {"label", required_argument, 0, O_LABEL},
                                         {"view", required_argument, 0, O_VIEW},
                                         {"ids", required_argument, 0, O_IDS},
                                         {"exclude", no_argument, 0, O_EXCLUDE},
                                         OPT_MAX_ERRORS,
                                         OPT_OUTPUT,
                                         OPT_VERBOSE,
                                         OPT_HELP,
                                         OPT_VERSION,
                                         OPT_END};
    int c;
    while ((c = getopt_long(argc, argv, "o:vh", opts, NULL)) != -1) {
        switch (c) {
        case O_DOMAIN: add_list(&dom, "--domain", optarg); break;
        case O_SPLIT: add_list(&split, "--split", optarg); break;
        case O_LABEL: add_list(&lab, "--label", optarg); break;
        case O_VIEW: add_list(&view, "--view", optarg); break;
        case O_IDS:
            if (ids_path) usage_error(USAGE, "one --ids file at most");
            ids_path = optarg;
            break;
        case O_EXCLUDE: exclude = 1; break;
        default: tool_option(c, USAGE, &to);
        }
    }
    if (argc - optind > 1) usage_error(USAGE, "one input at most (join several with mpcat first)");
    if (!dom.n && !split.n && !lab.n && !view.n && !ids_path)
        usage_error(USAGE, "give what to select: --domain, --split, --label, --view or --ids");
    int64_t *labv = int_list(&lab, "--label"), *viewv = int_list(&view, "--view");
    if (ids_path) read_ids(ids_path, &ids);

    sr *r = open_stream(optind < argc ? argv[optind] : "-");
    if (sr_header(r, NULL) != 0) die(1, "%s", r->err);
    tool_out out;
    sw s;
    output_open(&out, to.output);
    sw_init(&s, out.fd);
    header_pass_on(&s, r, argc, argv);

    progress_start("records", 0);
    progress_input(r->fd);
    uint64_t bad = 0, left_out = 0;
    char err[VL_ERRLEN];
    const mp_val *item;
    int rc;
    while ((rc = sr_next(r, &item)) == 1) {
        if (sr_check_item(r, item, err) != 0) {
            if (drop_item(&bad, to.max_errors, "%s: dropped", err)) die_dropped(bad, to.max_errors);
            continue;
        }
        int match = (!dom.n || str_in(item, "domain", &dom)) && (!split.n || str_in(item, "split", &split)) &&
                    (!lab.n || int_in(item, "label", labv, lab.n)) && (!view.n || int_in(item, "view", viewv, view.n));
        if (match && ids_path) {
            const mp_val *id = mp_get(item, "id"); /* sr_check_item: a string */
            char *key = xmalloc(id->len + 1);
            memcpy(key, id->v.s, id->len);
            key[id->len] = 0;
            match = memchr(key, 0, id->len) == NULL && bsearch(&key, ids.v, ids.n, sizeof *ids.v, cmp_str) != NULL;
            free(key);
        }
        if (match == exclude) {
            left_out++;
        } else {
            mpw_raw(&s.w, r->raw, r->raw_len); /* items pass through byte for byte */
            s.records++;
            if (mpw_flush(&s.w, 1 << 20) != 0) die(1, "write error: %s", strerror(s.w.err));
        }
        progress_count(s.records, bad, "%llu left out", (unsigned long long)left_out);
    }
    if (rc < 0) die(1, "%s", r->err);
    if (sr_finish(r) != 0) die(1, "%s", r->err);
    progress_end(s.records, bad, "%llu left out", (unsigned long long)left_out);
    s.dropped = (uint64_t)sr_trailer_dropped(r) + bad;
    sw_trailer_begin(&s);
    sw_trailer_end(&s);
    output_commit(&out, &s);
    close_stream(r);
    strs *all[] = {&dom, &split, &lab, &view, &ids};
    for (int k = 0; k < 5; k++) {
        for (size_t i = 0; i < all[k]->n; i++) free(all[k]->v[i]);
        free(all[k]->v);
    }
    free(labv), free(viewv);
    return 0;
}
