/* imglist: writes an image manifest (see imgdecode(1)) for a data set.
 *
 * From a DomainBed tree ROOT/<domain>/<class>/<file>: classes are numbered in
 * sorted folder-name order, as torchvision's ImageFolder numbers them (the
 * union over the domains, so that a label means the same class everywhere);
 * ids are <domain>/<class>/<file>; rows come sorted by id. Each image goes to
 * the `out` split with probability --holdout by a hash of (seed, id), so the
 * split of a file depends on nothing else and never changes when files are
 * added or removed elsewhere. --splits takes the split of every id from a
 * file instead, to reproduce someone else's exact split.
 *
 * With --fashion-mnist DIR, the gzip IDX files of Fashion-MNIST are listed as
 * FILE#N paths with the data set's class names; its own train/test partition
 * gives the split. */
#include "common.h"
#include "manifest.h"
#include "rng.h"

#include <dirent.h>
#include <errno.h>
#include <getopt.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <zlib.h>

static const char USAGE[] =
    "usage: imglist [-v] [--seed N] [--holdout F] [--splits FILE] [-o FILE] ROOT\n"
    "       imglist [-v] --fashion-mnist DIR [-o FILE]\n"
    "  --seed N           seed of the in/out split (default 0)\n"
    "  --holdout F        fraction of each domain in the 'out' split (default 0.2)\n"
    "  --splits FILE      take each id's split from FILE (lines: ID<TAB>SPLIT)\n"
    "  --fashion-mnist DIR  list Fashion-MNIST's IDX files in DIR\n"
    "  -h, --help           this text\n"
    "  --version            the version\n";

/* the formats imgdecode decodes */
static const char *const EXTS[] = {".jpg", ".jpeg", ".png", NULL};
/* torchvision's other ImageFolder extensions: images, but not listed (a
 * manifest row imgdecode could only drop); counted and said once */
static const char *const UNDECODED[] = {".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp", NULL};
static unsigned long undecoded;
static char *first_undecoded;

static int has_ext(const char *name, const char *const *exts)
{
    const char *dot = strrchr(name, '.');
    for (int i = 0; dot && exts[i]; i++)
        if (strcasecmp(dot, exts[i]) == 0) return 1;
    return 0;
}

/* Fashion-MNIST's labels, from the data set's README */
static const char *const FMNIST_CLASSES[10] = {"T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                                               "Sandal",      "Shirt",   "Sneaker",  "Bag",   "Ankle boot"};

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

typedef struct {
    char **v;
    size_t n, cap;
} strvec;

static void sv_push(strvec *s, char *x)
{
    if (s->n == s->cap) s->v = xrealloc(s->v, (s->cap = s->cap ? 2 * s->cap : 64) * sizeof(char *));
    s->v[s->n++] = x;
}

static void sv_free(strvec *s)
{
    for (size_t i = 0; i < s->n; i++) free(s->v[i]);
    free(s->v);
    memset(s, 0, sizeof(*s));
}

static int is_dir(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

/* Sorted names in dir: subdirectories (want_dirs) or image files. */
static void list_dir(const char *dir, int want_dirs, strvec *out, unsigned long *skipped)
{
    DIR *d = opendir(dir);
    if (!d) die(1, "%s: %s", dir, strerror(errno));
    struct dirent *e;
    char path[4096];
    while ((e = readdir(d))) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) continue;
        snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
        int isd = is_dir(path);
        if (want_dirs) {
            if (isd) sv_push(out, xstrdup(e->d_name));
            continue;
        }
        if (isd) continue;
        if (has_ext(e->d_name, EXTS)) {
            sv_push(out, xstrdup(e->d_name));
        } else if (has_ext(e->d_name, UNDECODED)) {
            if (!undecoded++) first_undecoded = xstrdup(path);
        } else {
            (*skipped)++;
        }
    }
    closedir(d);
    qsort(out->v, out->n, sizeof(char *), cmp_str);
}

/* --splits FILE: id -> split, sorted by id for bsearch */
typedef struct {
    char *id, *split;
    int used;
} split_ent;

static int cmp_ent(const void *a, const void *b) { return strcmp(((const split_ent *)a)->id, ((const split_ent *)b)->id); }

static split_ent *read_splits(const char *path, size_t *n)
{
    FILE *fp = fopen(path, "r");
    if (!fp) die(1, "%s: %s", path, strerror(errno));
    split_ent *v = NULL;
    size_t cap = 0, cnt = 0, lcap = 0;
    char *line = NULL;
    unsigned long lineno = 0;
    ssize_t len;
    while ((len = getline(&line, &lcap, fp)) >= 0) {
        lineno++;
        while (len && (line[len - 1] == '\n' || line[len - 1] == '\r')) line[--len] = 0;
        /* a comment holds no tab: "#art/dog/1.jpg<TAB>in" is an entry */
        if (!len || (line[0] == '#' && !strchr(line, '\t'))) continue;
        char *tab = strchr(line, '\t');
        if (!tab || !tab[1] || strchr(tab + 1, '\t'))
            die(1, "%s:%lu: expected ID<TAB>SPLIT", path, lineno);
        *tab = 0;
        if (lineno == 1 && strcmp(line, "id") == 0) continue;
        if (cnt == cap) v = xrealloc(v, (cap = cap ? 2 * cap : 1024) * sizeof(*v));
        v[cnt++] = (split_ent){xstrdup(line), xstrdup(tab + 1), 0};
    }
    if (ferror(fp)) die(1, "%s: %s", path, strerror(errno));
    fclose(fp);
    free(line);
    qsort(v, cnt, sizeof(*v), cmp_ent);
    for (size_t i = 1; i < cnt; i++)
        if (strcmp(v[i].id, v[i - 1].id) == 0) die(1, "%s: id '%s' is listed twice", path, v[i].id);
    *n = cnt;
    return v;
}

static void put_row(FILE *fp, const mf_row *r)
{
    char err[VL_ERRLEN];
    if (mf_write_row(fp, r, err) != 0) die(1, "%s", err);
}

/* Writes the manifest built in memory (so that a failure midway leaves no
 * partial manifest behind) and commits the output. */
static void finish(FILE *mem, char **buf, size_t *len, tool_out *o)
{
    if (fclose(mem) != 0) die(1, "out of memory");
    FILE *fp = o->is_file ? o->af.fp : stdout;
    if (fwrite(*buf, 1, *len, fp) != *len || fflush(fp) != 0 || ferror(fp))
        die(1, "write error: %s", strerror(errno));
    free(*buf);
    output_close(o);
}

/* Reads a gzip IDX label file: count labels, all < 10. */
static uint8_t *read_labels(const char *path, uint32_t *count)
{
    gzFile f = gzopen(path, "rb");
    if (!f) die(1, "%s: %s", path, errno ? strerror(errno) : "cannot open");
    uint8_t h[8];
    if (gzread(f, h, 8) != 8 || h[0] || h[1] || h[2] != 8 || h[3] != 1) die(1, "%s: not an IDX label file", path);
    uint32_t n = (uint32_t)h[4] << 24 | h[5] << 16 | h[6] << 8 | h[7];
    if (n > 10000000) die(1, "%s: implausible count %u", path, n);
    uint8_t *l = xmalloc(n + 1);
    if (gzread(f, l, n) != (int)n) die(1, "%s: truncated", path);
    gzclose(f);
    for (uint32_t i = 0; i < n; i++)
        if (l[i] > 9) die(1, "%s: label %u of item %u is not a Fashion-MNIST class", path, l[i], i);
    *count = n;
    return l;
}

static int fashion_mnist(const char *dir, FILE *fp)
{
    static const char *const parts[2][3] = {{"train", "train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"},
                                             {"test", "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"}};
    mf_write_header(fp);
    for (int p = 0; p < 2; p++) {
        char ipath[4096], lpath[4096], id[64], path[4200];
        snprintf(ipath, sizeof(ipath), "%s/%s", dir, parts[p][1]);
        snprintf(lpath, sizeof(lpath), "%s/%s", dir, parts[p][2]);
        uint32_t n;
        uint8_t *labels = read_labels(lpath, &n);
        /* the image file's header must agree with the labels */
        gzFile f = gzopen(ipath, "rb");
        uint8_t h[16];
        if (!f || gzread(f, h, 16) != 16 || h[2] != 8 || h[3] != 3) die(1, "%s: not an IDX image file", ipath);
        gzclose(f);
        uint32_t ni = (uint32_t)h[4] << 24 | h[5] << 16 | h[6] << 8 | h[7];
        if (ni != n) die(1, "%s: %u images but %s has %u labels", ipath, ni, lpath, n);
        for (uint32_t i = 0; i < n; i++) {
            snprintf(id, sizeof(id), "fashion-mnist/%s/%u", parts[p][0], i);
            snprintf(path, sizeof(path), "%s#%u", ipath, i);
            mf_row r = {.id = id, .path = path, .label = labels[i], .cls = FMNIST_CLASSES[labels[i]],
                        .domain = "fashion-mnist", .split = parts[p][0]};
            put_row(fp, &r);
        }
        free(labels);
    }
    return 0;
}

int main(int argc, char **argv)
{
    tool_init("imglist");
    unsigned long long seed = 0;
    double holdout = 0.2;
    const char *splits = NULL, *fmnist = NULL;
    tool_opts to = {0};
    static const struct option opts[] = {{"seed", required_argument, 0, 'S'},
                                         {"holdout", required_argument, 0, 'H'},
                                         {"splits", required_argument, 0, 'p'},
                                         {"fashion-mnist", required_argument, 0, 'F'},
                                         OPT_OUTPUT,
                                         OPT_VERBOSE,
                                         OPT_HELP,
                                         OPT_VERSION,
                                         OPT_END};
    int c;
    while ((c = getopt_long(argc, argv, "o:vh", opts, NULL)) != -1) {
        switch (c) {
        case 'S': seed = (unsigned long long)parse_int(USAGE, "--seed", optarg, 0, INT64_MAX); break;
        case 'H': holdout = parse_double(USAGE, "--holdout", optarg, 0, 1); break;
        case 'p': splits = optarg; break;
        case 'F': fmnist = optarg; break;
        default: tool_option(c, USAGE, &to);
        }
    }
    if (fmnist ? argc - optind != 0 : argc - optind != 1)
        usage_error(USAGE, fmnist ? "--fashion-mnist takes no ROOT" : "one ROOT directory expected");
    if (fmnist && splits) usage_error(USAGE, "--splits does not apply to --fashion-mnist");

    tool_out o;
    output_open_text(&o, to.output);
    char *buf = NULL;
    size_t len = 0;
    FILE *fp = open_memstream(&buf, &len);
    if (!fp) die(1, "out of memory");
    if (fmnist) {
        fashion_mnist(fmnist, fp);
        finish(fp, &buf, &len, &o);
        return 0;
    }

    const char *root = argv[optind];
    size_t rl = strlen(root);
    while (rl > 1 && root[rl - 1] == '/') rl--;
    char *rootc = xstrndup(root, rl);
    size_t nsplit = 0;
    split_ent *sp = splits ? read_splits(splits, &nsplit) : NULL;

    unsigned long skipped = 0;
    strvec domains = {0}, classes = {0};
    list_dir(rootc, 1, &domains, &skipped);
    if (!domains.n) die(1, "%s: no domain directories", rootc);
    /* the union of class folder names over the domains, sorted */
    char dpath[4096], cpath[8192];
    for (size_t d = 0; d < domains.n; d++) {
        snprintf(dpath, sizeof(dpath), "%s/%s", rootc, domains.v[d]);
        strvec cl = {0};
        list_dir(dpath, 1, &cl, &skipped);
        for (size_t i = 0; i < cl.n; i++) sv_push(&classes, xstrdup(cl.v[i]));
        sv_free(&cl);
    }
    qsort(classes.v, classes.n, sizeof(char *), cmp_str);
    size_t nc = 0;
    for (size_t i = 0; i < classes.n; i++) {
        if (nc && strcmp(classes.v[nc - 1], classes.v[i]) == 0) {
            free(classes.v[i]);
            continue;
        }
        classes.v[nc++] = classes.v[i];
    }
    classes.n = nc;
    if (!nc) die(1, "%s: no class directories under the domains", rootc);

    mf_write_header(fp);
    unsigned long long rows = 0, nout = 0, missing = 0;
    char *first_missing = NULL;
    for (size_t d = 0; d < domains.n; d++) {
        unsigned long long drows = 0, dout = 0;
        for (size_t k = 0; k < classes.n; k++) {
            snprintf(cpath, sizeof(cpath), "%s/%s/%s", rootc, domains.v[d], classes.v[k]);
            if (!is_dir(cpath)) continue;
            strvec files = {0};
            list_dir(cpath, 0, &files, &skipped);
            for (size_t i = 0; i < files.n; i++) {
                char *id, *path;
                if (asprintf(&id, "%s/%s/%s", domains.v[d], classes.v[k], files.v[i]) < 0 ||
                    asprintf(&path, "%s/%s", rootc, id) < 0)
                    die(1, "out of memory");
                const char *split;
                if (sp) {
                    split_ent key = {.id = id}, *e = bsearch(&key, sp, nsplit, sizeof(*sp), cmp_ent);
                    split = e ? e->split : NULL;
                    if (e) e->used = 1;
                    else if (!missing++) first_missing = xstrdup(id);
                } else {
                    /* a pure function of (seed, id), where id = domain/class/file */
                    rng r;
                    rng_for_key(&r, seed, id, strlen(id), 0);
                    split = rng_uniform(&r) < holdout ? "out" : "in";
                }
                mf_row row = {.id = id, .path = path, .label = (int64_t)k, .cls = classes.v[k],
                              .domain = domains.v[d], .split = split};
                char err[VL_ERRLEN];
                if (mf_write_row(fp, &row, err) != 0) {
                    warnx("%s: skipped", err);
                    skipped++;
                    free(id);
                    free(path);
                    continue;
                }
                if (split && strcmp(split, "out") == 0) dout++;
                drows++;
                free(id);
                free(path);
            }
            sv_free(&files);
        }
        if (tool_verbose)
            warnx("%s: %llu images, %llu out (%.1f%%)", domains.v[d], drows, dout, drows ? 100.0 * dout / drows : 0);
        rows += drows;
        nout += dout;
    }
    if (missing) {
        die(1, "%s: %llu images have no split, the first '%s'", splits, missing, first_missing);
    }
    for (size_t i = 0; i < nsplit; i++)
        if (!sp[i].used) warnx("%s: id '%s' matches no image", splits, sp[i].id);
    if (undecoded)
        warnx("%s: %lu image files in formats imgdecode does not decode are not listed (the first: %s); "
              "convert them to PNG or JPEG",
              rootc, undecoded, first_undecoded);
    free(first_undecoded);
    if (tool_verbose)
        warnx("%llu images in %zu domains, %zu classes; %lu other files skipped", rows, domains.n, classes.n,
              skipped);
    if (!rows) die(1, "%s: no images found", rootc);
    finish(fp, &buf, &len, &o);
    sv_free(&domains);
    sv_free(&classes);
    free(rootc);
    for (size_t i = 0; i < nsplit; i++) {
        free(sp[i].id);
        free(sp[i].split);
    }
    free(sp);
    return 0;
}
