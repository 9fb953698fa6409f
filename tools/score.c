/* score: accuracy of prediction streams, per domain and split, and the
 * DomainBed table over runs.
 *
 * Each file is one run: the predictions of one classifier (its header names
 * the method, seed, source domains and settings). Its held-out domains are
 * the item domains not among its sources (all of them for a zero-shot run).
 * One file: its accuracy and counts per domain x split and per domain. Several:
 * a row per method, a column per domain, each cell the mean +- standard error
 * (population std / sqrt(n), as DomainBed's collect_results) over the runs
 * that hold that domain out, and the average of the row's cells; twice, for
 * the held-out domain's `in` split (DomainBed's figure) and for the whole
 * held-out domain (the authors' release's). */
#include "common.h"

#include "json.h"

#include <getopt.h>
#include <inttypes.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

static const char USAGE[] =
    "usage: score [--tsv | --json] [--split S] [--mixed] [--max-errors N] [-o FILE] PRED.mp ...\n"
    "  --tsv              tab-separated values with a header line, full precision\n"
    "  --json             one JSON document, full precision\n"
    "  --split S          the held-out split of the first table (default in)\n"
    "  --mixed            put runs of one method with different settings in one row\n"
    "  --max-errors N     fail once more than N items have been dropped (default 0)\n"
    "  -o, --output FILE  write FILE atomically instead of standard output\n"
    "  -h, --help         this text\n"
    "  --version          the version\n";

#define WHOLE "all" /* the split name of a whole domain */

typedef struct {
    char *domain, *split; /* domain "" where items have none; split WHOLE for the whole domain */
    uint64_t correct, total;
} cell;

typedef struct {
    const char *path;
    char *method, *settings;
    int has_seed;
    int64_t seed;
    char **sources;
    int nsources;
    cell *cells;
    int ncells;
    uint64_t unlabelled, upstream_dropped;
} run;

static int by_name(const char *a, const char *b) { return strcmp(a, b); }

static cell *cell_of(run *R, const char *domain, const char *split)
{
    for (int i = 0; i < R->ncells; i++)
        if (!strcmp(R->cells[i].domain, domain) && !strcmp(R->cells[i].split, split)) return &R->cells[i];
    R->cells = xrealloc(R->cells, (size_t)(R->ncells + 1) * sizeof *R->cells);
    R->cells[R->ncells] = (cell){xstrdup(domain), xstrdup(split), 0, 0};
    return &R->cells[R->ncells++];
}

static const cell *find_cell(const run *R, const char *domain, const char *split)
{
    for (int i = 0; i < R->ncells; i++)
        if (!strcmp(R->cells[i].domain, domain) && !strcmp(R->cells[i].split, split)) return &R->cells[i];
    return NULL;
}

static int held_out(const run *R, const char *domain)
{
    for (int i = 0; i < R->nsources; i++)
        if (!strcmp(R->sources[i], domain)) return 0;
    return 1;
}

/* the run keys of a header, as strings for comparing streams and runs */
static void header_keys(run *R, const mp_val *h)
{
    const mp_val *src = mp_get(h, "sources");
    R->method = mp_get_strdup(h, "method");
    R->settings = mp_get_strdup(h, "settings");
    if (!R->method) R->method = xstrdup("");
    if (!R->settings) R->settings = xstrdup("");
    R->has_seed = mp_get_i64(h, "seed", &R->seed) == 0;
    R->nsources = src ? (int)src->len : 0;
    R->sources = xcalloc((size_t)R->nsources + 1, sizeof *R->sources);
    for (int i = 0; i < R->nsources; i++) R->sources[i] = xstrndup(src->v.a[i].v.s, src->v.a[i].len);
}

/* The first of the keys that make a run whose value differs between two
 * headers, or NULL: a file's streams must be shards of one run. */
static const char *run_difference(const mp_val *a, const mp_val *b)
{
    static const char *const keys[] = {"classes", "method", "seed", "sources", "settings", NULL};
    for (int i = 0; keys[i]; i++) {
        mpw x, y;
        mpw_init(&x, -1), mpw_init(&y, -1);
        const mp_val *va = mp_get(a, keys[i]), *vb = mp_get(b, keys[i]);
        if (va) mpw_value(&x, va);
        if (vb) mpw_value(&y, vb);
        int same = x.len == y.len && memcmp(x.buf, y.buf, x.len) == 0;
        mpw_free(&x), mpw_free(&y);
        if (!same) return keys[i];
    }
    return NULL;
}

static void read_run(run *R, const char *path, long long max_errors, uint64_t *dropped)
{
    sr *r = open_stream(path);
    if (sr_header(r, "prediction") != 0) die(1, "%s", r->err);
    header_keys(R, &r->header);
    mpw first;
    mpw_init(&first, -1);
    mpw_value(&first, &r->header);
    mp_arena fa = {0};
    mp_val fh;
    size_t used;
    char err[VL_ERRLEN];
    mp_decode(&fa, first.buf, first.len, first.len, &fh, &used, err);
    stream_keys *keys = stream_keys_new();
    int rc;
    do {
        if (r->streams > 1) {
            const char *k = run_difference(&fh, &r->header);
            if (k)
                die(1, "%s: stream %" PRIu64 ": header: '%s' is not that of stream 1: the streams do not join (one run a file)",
                    r->name, r->streams, k);
        }
        const mp_val *item;
        while ((rc = sr_next(r, &item)) == 1) {
            int64_t label, pred;
            int labelled = mp_get_i64(item, "label", &label) == 0, bad = sr_check_item(r, item, err) != 0;
            if (!bad && labelled && label >= r->nclasses) {
                char where[300];
                snprintf(err, sizeof err, "%s: label %" PRId64 " is no class (%" PRId64 " classes)",
                         sr_where(r, item, where, sizeof where), label, r->nclasses);
                bad = 1;
            }
            if (bad) {
                if (drop_item(dropped, max_errors, "%s: dropped", err)) die_dropped(*dropped, max_errors);
                continue;
            }
            if (stream_keys_add(keys, r, item, err) != 0) die(1, "%s", err);
            if (!labelled) {
                R->unlabelled++;
                continue;
            }
            mp_get_i64(item, "pred", &pred);
            char *dom = stream_get_str(item, "domain"), *spl = stream_get_str(item, "split");
            cell *c = cell_of(R, dom ? dom : "", WHOLE);
            c->total++, c->correct += pred == label;
            if (spl && strcmp(spl, WHOLE) != 0) {
                c = cell_of(R, dom ? dom : "", spl);
                c->total++, c->correct += pred == label;
            }
            free(dom), free(spl);
        }
        if (rc < 0) die(1, "%s", r->err);
        R->upstream_dropped += (uint64_t)sr_trailer_dropped(r);
    } while ((rc = sr_next_stream(r, "prediction")) == 1);
    if (rc < 0) die(1, "%s", r->err);
    if (R->upstream_dropped)
        warnx("%s: %" PRIu64 " items were dropped before the predictions: the accuracies leave them out", r->name,
              R->upstream_dropped);
    R->path = xstrdup(r->name);
    stream_keys_free(keys);
    mp_arena_free(&fa);
    mpw_free(&first);
    close_stream(r);
}

static const char *seed_str(const run *R)
{
    static char buf[32];
    if (!R->has_seed) return "nil";
    snprintf(buf, sizeof buf, "%" PRId64, R->seed);
    return buf;
}

static double pct(const cell *c) { return 100.0 * (double)c->correct / (double)c->total; }

/* ---- output ---- */

enum { MARKDOWN, TSV, JSON };

static void put_json(FILE *f, const char *s)
{
    json_buf b = {0};
    json_buf_str(&b, s, strlen(s));
    fwrite(b.p, 1, b.len, f);
    free(b.p);
}

static const char *shown(const char *domain) { return *domain ? domain : "-"; }

static int cmp_cell(const void *a, const void *b)
{
    const cell *x = a, *y = b;
    int d = by_name(x->domain, y->domain);
    if (d) return d;
    int wx = !strcmp(x->split, WHOLE), wy = !strcmp(y->split, WHOLE);
    return wx != wy ? wx - wy : by_name(x->split, y->split);
}

static void put_sources_text(FILE *f, const run *R)
{
    for (int i = 0; i < R->nsources; i++) fprintf(f, "%s%s", i ? "," : "", R->sources[i]);
}

/* One run: its cells, per domain (sorted) its splits and then the whole domain. */
static void single(FILE *f, run *R, int format)
{
    qsort(R->cells, (size_t)R->ncells, sizeof *R->cells, cmp_cell);
    if (format == JSON) {
        fprintf(f, "{\"path\": ");
        put_json(f, R->path);
        fprintf(f, ", \"method\": ");
        put_json(f, R->method);
        fprintf(f, ", \"seed\": %s", R->has_seed ? seed_str(R) : "null");
        fprintf(f, ", \"sources\": [");
        for (int i = 0; i < R->nsources; i++) {
            if (i) fprintf(f, ", ");
            put_json(f, R->sources[i]);
        }
        fprintf(f, "], \"settings\": ");
        put_json(f, R->settings);
        fprintf(f, ", \"unlabelled\": %" PRIu64 ", \"dropped_upstream\": %" PRIu64 ", \"cells\": [", R->unlabelled,
                R->upstream_dropped);
        for (int i = 0; i < R->ncells; i++) {
            const cell *c = &R->cells[i];
            fprintf(f, "%s\n  {\"domain\": ", i ? "," : "");
            if (*c->domain) put_json(f, c->domain);
            else fprintf(f, "null");
            fprintf(f, ", \"held_out\": %s, \"split\": ", held_out(R, c->domain) ? "true" : "false");
            put_json(f, c->split);
            fprintf(f, ", \"correct\": %" PRIu64 ", \"total\": %" PRIu64 ", \"accuracy\": %.17g}", c->correct,
                    c->total, pct(c));
        }
        fprintf(f, "\n]}\n");
        return;
    }
    if (format == TSV) {
        fprintf(f, "domain\theld_out\tsplit\tcorrect\ttotal\taccuracy\n");
        for (int i = 0; i < R->ncells; i++) {
            const cell *c = &R->cells[i];
            fprintf(f, "%s\t%s\t%s\t%" PRIu64 "\t%" PRIu64 "\t%.6f\n", shown(c->domain),
                    held_out(R, c->domain) ? "yes" : "no", c->split, c->correct, c->total, pct(c));
        }
        return;
    }
    fprintf(f, "%s: method %s, seed %s, sources ", R->path, *R->method ? R->method : "-", seed_str(R));
    if (R->nsources) put_sources_text(f, R);
    else fprintf(f, "-");
    fprintf(f, "\n\n| domain | held out | split | correct | total | accuracy |\n| --- | --- | --- | --- | --- | --- |\n");
    for (int i = 0; i < R->ncells; i++) {
        const cell *c = &R->cells[i];
        fprintf(f, "| %s | %s | %s | %" PRIu64 " | %" PRIu64 " | %.2f |\n", shown(c->domain),
                held_out(R, c->domain) ? "yes" : "no", c->split, c->correct, c->total, pct(c));
    }
    if (R->unlabelled) fprintf(f, "\n%" PRIu64 " items without a label are not counted.\n", R->unlabelled);
}

/* ---- the table over runs ---- */

typedef struct {
    char *method;
    const run *first; /* the run that set the row's settings */
} row;

typedef struct {
    double mean, se;
    int n;
} stat;

/* mean and standard error (population std / sqrt(n)) of n values */
static stat mean_se(const double *x, int n)
{
    stat s = {0, 0, n};
    if (!n) return s;
    for (int i = 0; i < n; i++) s.mean += x[i];
    s.mean /= n;
    double v = 0;
    for (int i = 0; i < n; i++) v += (x[i] - s.mean) * (x[i] - s.mean);
    s.se = sqrt(v / n) / sqrt((double)n);
    return s;
}

static int same_seed(const run *a, const run *b) { return a->has_seed == b->has_seed && (!a->has_seed || a->seed == b->seed); }

static void table(FILE *f, run *runs, int nruns, const char *split, int mixed, int format)
{
    /* rows: methods in order of appearance; columns: every item domain, sorted */
    row *rows = xcalloc((size_t)nruns, sizeof *rows);
    int nrows = 0;
    char **doms = NULL;
    int ndoms = 0;
    for (int i = 0; i < nruns; i++) {
        run *R = &runs[i];
        int k = 0;
        while (k < nrows && strcmp(rows[k].method, R->method) != 0) k++;
        if (k == nrows) rows[nrows++] = (row){R->method, R};
        else if (!mixed && strcmp(rows[k].first->settings, R->settings) != 0)
            die(1, "%s: method '%s' with settings '%.300s', but %s has settings '%.300s': one row holds one setting "
                   "(--mixed puts them together)",
                R->path, R->method, R->settings, rows[k].first->path, rows[k].first->settings);
        for (int c = 0; c < R->ncells; c++) {
            const char *d = R->cells[c].domain;
            int j = 0;
            while (j < ndoms && strcmp(doms[j], d) != 0) j++;
            if (j == ndoms) {
                doms = xrealloc(doms, (size_t)(ndoms + 1) * sizeof *doms);
                doms[ndoms++] = R->cells[c].domain;
            }
        }
    }
    for (int i = 1; i < ndoms; i++) /* insertion sort: a handful of domains */
        for (int j = i; j > 0 && strcmp(doms[j - 1], doms[j]) > 0; j--) {
            char *t = doms[j];
            doms[j] = doms[j - 1], doms[j - 1] = t;
        }
    /* a run held out a domain at most once for its method and seed */
    for (int i = 0; i < nruns; i++) {
        int any = 0;
        for (int c = 0; c < runs[i].ncells; c++) any |= held_out(&runs[i], runs[i].cells[c].domain);
        if (!any) warnx("%s: every domain of its items is among its sources: no column to fill", runs[i].path);
        for (int j = 0; j < i; j++) {
            if (strcmp(runs[i].method, runs[j].method) || !same_seed(&runs[i], &runs[j])) continue;
            for (int d = 0; d < ndoms; d++)
                if (held_out(&runs[i], doms[d]) && held_out(&runs[j], doms[d]) && find_cell(&runs[i], doms[d], WHOLE) &&
                    find_cell(&runs[j], doms[d], WHOLE))
                    die(1, "%s: method '%s', seed %s, held-out domain '%s' again (first in %s): which run counts?",
                        runs[i].path, runs[i].method, seed_str(&runs[i]), shown(doms[d]), runs[j].path);
        }
    }

    const char *figs[2] = {split, WHOLE};
    stat *cells = xcalloc((size_t)2 * nrows * ndoms, sizeof *cells);
    double *acc = xmalloc((size_t)nruns * sizeof *acc);
    for (int fi = 0; fi < 2; fi++)
        for (int k = 0; k < nrows; k++)
            for (int d = 0; d < ndoms; d++) {
                int n = 0;
                for (int i = 0; i < nruns; i++) {
                    const run *R = &runs[i];
                    if (strcmp(R->method, rows[k].method) || !held_out(R, doms[d])) continue;
                    const cell *c = find_cell(R, doms[d], figs[fi]);
                    if (c) acc[n++] = pct(c);
                    else if (fi == 0 && find_cell(R, doms[d], WHOLE))
                        warnx("%s: held-out domain '%s' has no items in split '%s'", R->path, shown(doms[d]), split);
                }
                cells[((size_t)fi * nrows + k) * ndoms + d] = mean_se(acc, n);
            }

    if (format == TSV) fprintf(f, "figure\tmethod\tdomain\tmean\tse\truns\n");
    if (format == JSON) fprintf(f, "{\"figures\": [");
    for (int fi = 0; fi < 2; fi++) {
        const char *title = fi == 0 ? "held-out domain, split" : "whole held-out domain";
        if (format == MARKDOWN) {
            if (fi == 0) fprintf(f, "%s '%s' (DomainBed):\n\n| method |", title, split);
            else fprintf(f, "\n%s (the release):\n\n| method |", title);
            for (int d = 0; d < ndoms; d++) fprintf(f, " %s |", shown(doms[d]));
            fprintf(f, " avg |\n| --- |");
            for (int d = 0; d <= ndoms; d++) fprintf(f, " --- |");
            fprintf(f, "\n");
        } else if (format == JSON) {
            fprintf(f, "%s\n {\"figure\": ", fi ? "," : "");
            put_json(f, figs[fi]);
            fprintf(f, ", \"rows\": [");
        }
        for (int k = 0; k < nrows; k++) {
            const stat *st = cells + ((size_t)fi * nrows + k) * ndoms;
            double avg = 0;
            int all = ndoms > 0;
            for (int d = 0; d < ndoms; d++) {
                all &= st[d].n > 0;
                avg += st[d].mean;
            }
            avg = all ? avg / ndoms : NAN;
            if (format == MARKDOWN) {
                fprintf(f, "| %s |", *rows[k].method ? rows[k].method : "-");
                for (int d = 0; d < ndoms; d++)
                    if (st[d].n) fprintf(f, " %.1f +/- %.1f |", st[d].mean, st[d].se);
                    else fprintf(f, " X |");
                if (all) fprintf(f, " %.1f |\n", avg);
                else fprintf(f, " X |\n");
            } else if (format == TSV) {
                for (int d = 0; d < ndoms; d++) {
                    fprintf(f, "%s\t%s\t%s\t", figs[fi], rows[k].method, shown(doms[d]));
                    if (st[d].n) fprintf(f, "%.6f\t%.6f\t%d\n", st[d].mean, st[d].se, st[d].n);
                    else fprintf(f, "\t\t0\n");
                }
                fprintf(f, "%s\t%s\tavg\t", figs[fi], rows[k].method);
                if (all) fprintf(f, "%.6f\t\t\n", avg);
                else fprintf(f, "\t\t\n");
            } else {
                fprintf(f, "%s\n  {\"method\": ", k ? "," : "");
                put_json(f, rows[k].method);
                fprintf(f, ", \"settings\": ");
                put_json(f, rows[k].first->settings);
                fprintf(f, ", \"domains\": {");
                for (int d = 0; d < ndoms; d++) {
                    fprintf(f, "%s", d ? ", " : "");
                    put_json(f, doms[d]);
                    if (st[d].n) fprintf(f, ": {\"mean\": %.17g, \"se\": %.17g, \"runs\": %d}", st[d].mean, st[d].se, st[d].n);
                    else fprintf(f, ": null");
                }
                fprintf(f, "}, \"avg\": ");
                if (all) fprintf(f, "%.17g}", avg);
                else fprintf(f, "null}");
            }
        }
        if (format == JSON) fprintf(f, "\n ]}");
    }
    if (format == JSON) fprintf(f, "\n]}\n");
    free(rows), free(doms), free(cells), free(acc);
}

int main(int argc, char **argv)
{
    tool_init("score");
    int format = MARKDOWN, mixed = 0;
    const char *split = "in";
    tool_opts to = {0};
    static const struct option opts[] = {{"tsv", no_argument, 0, 'T'},
                                         {"json", no_argument, 0, 'J'},
                                         {"split", required_argument, 0, 's'},
                                         {"mixed", no_argument, 0, 'x'},
                                         OPT_MAX_ERRORS,
                                         OPT_OUTPUT,
                                         OPT_HELP,
                                         OPT_VERSION,
                                         OPT_END};
    int c, formats = 0;
    while ((c = getopt_long(argc, argv, "o:h", opts, NULL)) != -1) {
        switch (c) {
        case 'T': format = TSV, formats++; break;
        case 'J': format = JSON, formats++; break;
        case 's':
            if (!*optarg || !strcmp(optarg, WHOLE)) usage_error(USAGE, "--split: '%s' is no split name", optarg);
            split = optarg;
            break;
        case 'x': mixed = 1; break;
        default: tool_option(c, USAGE, &to);
        }
    }
    if (formats > 1) usage_error(USAGE, "--tsv and --json: one format");
    if (optind == argc) usage_error(USAGE, "no prediction streams");
    int nruns = argc - optind;
    run *runs = xcalloc((size_t)nruns, sizeof *runs);
    uint64_t dropped = 0;
    for (int i = 0; i < nruns; i++) read_run(&runs[i], argv[optind + i], to.max_errors, &dropped);

    tool_out out;
    output_open_text(&out, to.output);
    FILE *f = out.is_file ? out.af.fp : stdout;
    if (nruns == 1) single(f, &runs[0], format);
    else table(f, runs, nruns, split, mixed, format);
    if (out.is_file) output_close(&out);
    else stdout_done();
    for (int i = 0; i < nruns; i++) {
        run *R = &runs[i];
        for (int k = 0; k < R->ncells; k++) free(R->cells[k].domain), free(R->cells[k].split);
        for (int k = 0; k < R->nsources; k++) free(R->sources[k]);
        free(R->cells), free(R->sources), free(R->method), free(R->settings), free((char *)R->path);
    }
    free(runs);
    return 0;
}
