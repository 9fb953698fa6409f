/* imgdecode: turns a manifest of image files into an `image` stream.
 *
 * Each manifest row is decoded (JPEG, PNG, IDX) to 8-bit RGB and either
 * squash-resized to S x S with PIL's antialiased bilinear filter (the
 * evaluation transform) or, with --augment, put through DomainBed's training
 * augmentation K times (--views). A view's randomness is drawn from
 * rng_for_key(seed, id, view), so the output does not depend on the order of
 * the rows or on how the manifest was sharded. A file that cannot be decoded
 * is reported with its id and path, dropped and counted in the trailer; once
 * more than --max-errors were dropped the run stops there, as mpcat does: the
 * stream ends without its trailer (an -o file is not written) and the exit
 * status is 1. A relative path that is not found, where the manifest's own
 * directory holds it, is the manifest of another directory: said once, with
 * the --root that fixes it (and said once too when the first rows' files are
 * all missing). An id that repeats one of an earlier row fails at once
 * (no later tool could join the stream), and so does a manifest without a
 * row (empty, or a header only) unless --allow-empty. */
#include "augment.h"
#include "common.h"
#include "image.h"
#include "manifest.h"

#include <errno.h>
#include <getopt.h>
#include <malloc.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static const char USAGE[] =
    "usage: imgdecode [-v] [--size S] [--augment] [--views K] [--seed N] [--exact]\n"
    "                 [--root DIR] [--allow-empty] [--max-errors N] [-o FILE] [MANIFEST]\n"
    "  --size S        output S x S pixels (default 224)\n"
    "  --augment       DomainBed's training augmentation instead of the plain resize\n"
    "  --views K       augmented views per image (default 1; needs --augment)\n"
    "  --seed N        seed of the augmentation (default 0)\n"
    "  --exact         no DCT-domain downscaling of large JPEGs: pixels equal PIL's\n"
    "  --root DIR      directory that relative manifest paths are taken from\n"
    "  --allow-empty   a manifest without rows gives an empty stream instead of failing\n"
    "  --max-errors N  exit 1 when more than N images are dropped (default 0)\n"
    "  -h, --help      this text\n"
    "  --version       the version\n";

/* Starts an item: id, h, w, and the pix bin, whose h*w*3 bytes the caller
 * fills through the returned pointer before item_end. */
static uint8_t *item_begin(sw *s, const mf_row *row, int w, int h)
{
    sw_item_begin(s);
    mpw_str(&s->w, "id");
    mpw_str(&s->w, row->id);
    mpw_str(&s->w, "h");
    mpw_int(&s->w, h);
    mpw_str(&s->w, "w");
    mpw_int(&s->w, w);
    mpw_str(&s->w, "pix");
    return mpw_bin_reserve(&s->w, (size_t)w * h * 3);
}

/* The manifest's metadata, the view (unless < 0) and the path; ends the item. */
static void item_end(sw *s, const mf_row *row, long long view)
{
    mpw *w = &s->w;
    if (row->label >= 0) {
        mpw_str(w, "label");
        mpw_int(w, row->label);
    }
    const char *keys[] = {"class", "domain", "split"};
    const char *vals[] = {row->cls, row->domain, row->split};
    for (int k = 0; k < 3; k++)
        if (vals[k]) {
            mpw_str(w, keys[k]);
            mpw_str(w, vals[k]);
        }
    if (view >= 0) {
        mpw_str(w, "view");
        mpw_int(w, view);
    }
    mpw_str(w, "path");
    mpw_str(w, row->path);
    if (sw_item_end(s) != 0) die(1, "write error: %s", strerror(s->w.err));
}

/* The rows of a manifest file (its lines less the header and comments),
 * read ahead for the progress line; 0 (unknown) for a pipe. */
static uint64_t manifest_rows(FILE *f)
{
    struct stat st;
    if (fstat(fileno(f), &st) != 0 || !S_ISREG(st.st_mode)) return 0;
    long at = ftell(f);
    if (at < 0) return 0;
    uint64_t lines = 0;
    int c, bol = 1;
    while ((c = getc(f)) != EOF) {
        if (bol && c != '#' && c != '\n') lines++;
        bol = c == '\n';
    }
    clearerr(f);
    if (fseek(f, at, SEEK_SET) != 0) return 0;
    return lines > 0 ? lines - 1 : 0;
}

/* One row dropped; more than --max-errors stop the run: the good items go
 * out (to standard output), the trailer does not, so the stream is
 * incomplete. */
static void drop_row(sw *s, const tool_out *out, long long max_errors, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void drop_row(sw *s, const tool_out *out, long long max_errors, const char *fmt, ...)
{
    char msg[2 * VL_ERRLEN + 600];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (drop_item(&s->dropped, max_errors, "%s", msg)) {
        if (!out->is_file) mpw_flush(&s->w, 0);
        die_dropped(s->dropped, max_errors);
    }
}

/* A relative path that is not there (path: as opened, with --root): when
 * the manifest's directory holds it, the manifest was written for that
 * directory, and most rows will fail the same way: said once, with the fix. */
static void hint_root(const char *mpath, const char *rowpath, const char *path, const char *root, uint64_t images)
{
    static int said;
    struct stat st;
    if (said || rowpath[0] == '/' || stat(path, &st) == 0 || errno != ENOENT) return;
    const char *slash = strrchr(mpath, '/');
    char dir[4096];
    if (slash) snprintf(dir, sizeof dir, "%.*s", (int)(slash - mpath), mpath);
    else snprintf(dir, sizeof dir, ".");
    char there[8192];
    snprintf(there, sizeof there, "%s/%s", dir, rowpath);
    said = 1;
    if (strcmp(mpath, "-") != 0 && stat(there, &st) == 0)
        warnx("%s: its relative paths are found under '%s', not under '%s': give --root %s", mpath, dir,
              root ? root : ".", dir);
    else if (images == 0) /* no file found yet: likely none will be */
        warnx("%s: relative paths are taken from %s%s: if the manifest was written in another directory, "
              "give --root DIR",
              strcmp(mpath, "-") == 0 ? "<stdin>" : mpath, root ? "--root " : "the current directory",
              root ? root : "");
}

int main(int argc, char **argv)
{
    tool_init("imgdecode");
    /* images come and go in blocks of a few hundred kilobytes: keep them on
     * the heap instead of mapping and faulting in fresh pages for each */
    mallopt(M_MMAP_THRESHOLD, 64 << 20);
    mallopt(M_TRIM_THRESHOLD, 256 << 20);
    long long size = 224, views = 1;
    unsigned long long seed = 0;
    int augment = 0, views_given = 0, exact = 0, allow_empty = 0;
    const char *root = NULL;
    tool_opts to = {0};
    static const struct option opts[] = {{"size", required_argument, 0, 's'},
                                         {"augment", no_argument, 0, 'a'},
                                         {"views", required_argument, 0, 'k'},
                                         {"seed", required_argument, 0, 'S'},
                                         {"root", required_argument, 0, 'C'},
                                         {"exact", no_argument, 0, 'x'},
                                         {"allow-empty", no_argument, 0, 'e'},
                                         OPT_MAX_ERRORS,
                                         OPT_OUTPUT,
                                         OPT_VERBOSE,
                                         OPT_HELP,
                                         OPT_VERSION,
                                         OPT_END};
    int c;
    while ((c = getopt_long(argc, argv, "o:vh", opts, NULL)) != -1) {
        switch (c) {
        case 's': size = parse_int(USAGE, "--size", optarg, 1, 4096); break;
        case 'a': augment = 1; break;
        case 'k':
            views = parse_int(USAGE, "--views", optarg, 1, 1000000);
            views_given = 1;
            break;
        case 'S': seed = (unsigned long long)parse_int(USAGE, "--seed", optarg, 0, INT64_MAX); break;
        case 'C': root = optarg; break;
        case 'x': exact = 1; break;
        case 'e': allow_empty = 1; break;
        default: tool_option(c, USAGE, &to);
        }
    }
    if (argc - optind > 1) usage_error(USAGE, "one manifest at most");
    if (views_given && !augment) usage_error(USAGE, "--views needs --augment");
    /* the views of one image are all held until each has succeeded */
    if ((double)views * size * size * 3 > (double)(1ull << 32))
        usage_error(USAGE, "--views %lld at --size %lld: the views of one image would take %.0f GiB", views, size,
                    (double)views * size * size * 3 / (1 << 30));
    const char *mpath = optind < argc ? argv[optind] : "-";
    FILE *mf = stdin;
    if (strcmp(mpath, "-") != 0 && !(mf = fopen(mpath, "r"))) die(1, "%s: %s", mpath, strerror(errno));
    mf_reader m;
    mf_open(&m, mf, strcmp(mpath, "-") == 0 ? "<stdin>" : mpath);

    tool_out out;
    sw s;
    output_open(&out, to.output);
    sw_init(&s, out.fd);
    sw_header_image(&s, NULL, argc, argv);
    mpw *w = &s.w;
    mpw_str(w, "size");
    mpw_int(w, size);
    mpw_str(w, "transform");
    mpw_str(w, augment ? "augment" : "eval");
    if (augment) {
        mpw_str(w, "seed");
        mpw_uint(w, seed);
        mpw_str(w, "views");
        mpw_int(w, views);
    }
    mpw_str(w, "exact");
    mpw_bool(w, exact);
    if (sw_header_end(&s) != 0) die(1, "write error: %s", strerror(s.w.err));

    char err[VL_ERRLEN];
    char *pathbuf = NULL;
    size_t pathcap = 0;
    img_idx_cache cache = {0};
    img *pics = xcalloc((size_t)views, sizeof(img));
    uint8_t *evalpix = xmalloc((size_t)size * size * 3);
    uint64_t images = 0, rows = 0;
    /* the ids so far, each with its line */
    stream_keys *ids = stream_keys_new();
    progress_start("images", manifest_rows(mf));
    mf_row row;
    int rc;
    while ((rc = mf_next(&m, &row, err)) != 0) {
        if (rc == -2) die(1, "%s", err);
        rows++;
        if (rc == -1) {
            drop_row(&s, &out, to.max_errors, "%s; dropped", err);
            continue;
        }
        uint64_t first = stream_keys_put(ids, row.id, strlen(row.id), STREAM_NONE, row.line);
        if (first)
            die(1, "%s:%llu: id '%s' repeats the id of line %llu: every row needs its own id (a manifest listed twice?)",
                m.name, (unsigned long long)row.line, row.id, (unsigned long long)first);
        const char *path = row.path;
        if (root && path[0] != '/') {
            size_t need = strlen(root) + strlen(path) + 2;
            if (need > pathcap) pathbuf = xrealloc(pathbuf, pathcap = need);
            snprintf(pathbuf, need, "%s/%s", root, path);
            path = pathbuf;
        }
        img_src src;
        int ok = img_src_open(&src, path, &cache, err) == 0;
        if (ok && augment) {
            /* all views first, so that an image is either complete or dropped */
            for (long long v = 0; ok && v < views; v++) {
                ok = aug_view_keyed(&pics[v], &src, seed, row.id, strlen(row.id), v, (int)size, exact, err) == 0;
            }
            for (long long v = 0; ok && v < views; v++) {
                size_t n = (size_t)pics[v].w * pics[v].h * 3;
                memcpy(item_begin(&s, &row, pics[v].w, pics[v].h), pics[v].pix, n);
                item_end(&s, &row, v);
            }
            for (long long v = 0; v < views; v++) img_free(&pics[v]);
        } else if (ok) {
            /* decoded aside first, so that a failure leaves no partial item */
            ok = img_eval_view(evalpix, &src, (int)size, exact, err) == 0;
            if (ok) {
                memcpy(item_begin(&s, &row, (int)size, (int)size), evalpix, (size_t)size * size * 3);
                item_end(&s, &row, -1);
            }
        }
        if (ok) {
            images++;
            img_src_free(&src);
        } else {
            if (src.data) img_src_free(&src);
            hint_root(mpath, row.path, path, root, images);
            /* err names the file; the id says which row */
            drop_row(&s, &out, to.max_errors, "%s:%llu: id '%s': %s; dropped", m.name, (unsigned long long)row.line,
                     row.id, err);
        }
        progress_count(images, s.dropped, NULL);
    }
    if (rows == 0 && !allow_empty)
        die(1, "%s: no rows (an empty manifest, or a header only); --allow-empty writes an empty stream", m.name);
    progress_end(images, s.dropped, "%llu records", (unsigned long long)s.records);
    sw_trailer_begin(&s);
    sw_trailer_end(&s);
    output_commit(&out, &s);
    sw_free(&s);
    if (mf != stdin) fclose(mf);
    mf_close(&m);
    img_idx_cache_free(&cache);
    stream_keys_free(ids);
    free(pathbuf);
    free(pics);
    free(evalpix);
    return 0;
}
