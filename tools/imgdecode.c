/* imgdecode: turns a manifest of image files into an `image` stream.
 *
 * Each manifest row is decoded (JPEG, PNG, IDX) to 8-bit RGB and either
 * squash-resized to S x S with PIL's antialiased bilinear filter (the
 * evaluation transform) or, with --augment, put through DomainBed's training
 * augmentation K times (--views). A view's randomness is drawn from
 * rng_for_key(seed, id, view), so the output does not depend on the order of
 * the rows or on how the manifest was sharded. A file that cannot be decoded
 * is reported with its id and path, dropped and counted in the trailer. Every
 * row is decoded even after a failure, so that one run names every bad file;
 * when more than --max-errors were dropped the stream ends without its
 * trailer (an -o file is not written) and the exit status is 1. An id that
 * repeats one of an earlier row fails at once (no later tool could join
 * the stream), and so does a manifest without a row (empty, or a header
 * only) unless --allow-empty. */
#include "augment.h"
#include "common.h"
#include "image.h"
#include "manifest.h"

#include <errno.h>
#include <getopt.h>
#include <malloc.h>
#include <stdlib.h>
#include <string.h>

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
    "  --max-errors N  exit 1 when more than N images are dropped (default 0)\n";

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
    uint64_t images = 0, rows = 0;
    /* the ids so far, each with its line */
    stream_keys *ids = stream_keys_new();
    double t0 = vl_now();
    mf_row row;
    int rc;
    while ((rc = mf_next(&m, &row, err)) != 0) {
        if (rc == -2) die(1, "%s", err);
        rows++;
        if (rc == -1) {
            drop_item(&s.dropped, to.max_errors, "%s; dropped", err);
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
                rng r;
                aug_params p;
                rng_for_key(&r, seed, row.id, strlen(row.id), (uint64_t)v);
                aug_sample(&p, &AUG_DOMAINBED, &r, src.w, src.h);
                ok = aug_view(&pics[v], &src, &p, (int)size, exact, err) == 0;
            }
            for (long long v = 0; ok && v < views; v++) {
                size_t n = (size_t)pics[v].w * pics[v].h * 3;
                memcpy(item_begin(&s, &row, pics[v].w, pics[v].h), pics[v].pix, n);
                item_end(&s, &row, v);
            }
            for (long long v = 0; v < views; v++) img_free(&pics[v]);
        } else if (ok) {
            img full;
            int d = exact ? 1 : img_dct_denom(&src, (int)size, (int)size);
            ok = img_decode(&src, d, &full, err) == 0;
            /* the resample below cannot fail once the decode covers the source's extent */
            if (ok && ((int64_t)full.w * d < src.w || (int64_t)full.h * d < src.h)) {
                snprintf(err, VL_ERRLEN, "%s: decoded %dx%d at 1/%d of %dx%d", path, full.w, full.h, d, src.w,
                         src.h);
                img_free(&full);
                ok = 0;
            }
            if (ok) {
                /* a scaled decode's last row and column cover a part of a
                 * pixel: resample exactly the source's extent, straight into
                 * the output buffer */
                float box[4] = {0, 0, (float)src.w / d, (float)src.h / d};
                uint8_t *pix = item_begin(&s, &row, (int)size, (int)size);
                img_resize(pix, (int)size, (int)size, full.pix, full.w, full.h, (size_t)full.w * 3, box);
                item_end(&s, &row, -1);
                img_free(&full);
            }
        }
        if (ok) {
            images++;
            img_src_free(&src);
        } else {
            /* err names the file; the id says which row */
            drop_item(&s.dropped, to.max_errors, "%s:%llu: id '%s': %s; dropped", m.name,
                      (unsigned long long)row.line, row.id, err);
            if (src.data) img_src_free(&src);
        }
        progress("%llu images, %llu dropped, %.1f images/s", (unsigned long long)images,
                 (unsigned long long)s.dropped, images / (vl_now() - t0 + 1e-9));
    }
    progress_done();
    if (rows == 0 && !allow_empty)
        die(1, "%s: no rows (an empty manifest, or a header only); --allow-empty writes an empty stream", m.name);
    if (tool_verbose)
        warnx("%llu images, %llu records, %llu dropped in %.2f s", (unsigned long long)images,
              (unsigned long long)s.records, (unsigned long long)s.dropped, vl_now() - t0);
    if ((long long)s.dropped > to.max_errors) {
        /* the good items go out, the trailer does not: the stream is incomplete */
        if (!out.is_file) mpw_flush(&s.w, 0);
        die_dropped(s.dropped, to.max_errors);
    }
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
    return 0;
}
