/* mpnpy: moves embeddings between record streams and NumPy .npy files.
 *
 * `mpnpy export` reads an embedding stream and writes its vectors as one
 * float32 array of shape (N, dim) in C order ('<f4'), with the ids one per
 * line beside it and, on request, the labels (one integer per line, -1 where
 * an item has none). `mpnpy import` reads a 2-D '<f4', '<f8' or '<f2' array
 * (C order) and writes an embedding stream: ids from --ids (else the row
 * numbers), labels from --labels, the space from --space. Rows holding NaN
 * or infinity are dropped and counted. All outputs are written atomically. */
#include "common.h"

#include <errno.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <getopt.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const char USAGE[] =
    "usage: mpnpy export -o FILE.npy [--ids FILE] [--labels FILE] [--max-errors N] [-v] [STREAM]\n"
    "       mpnpy import [--ids FILE] [--labels FILE] [--space S] [--max-errors N] [-o STREAM] "
    "[-v] [FILE.npy]\n"
    "  -o FILE           export: the .npy file (required); import: the stream (default stdout)\n"
    "  --ids FILE        the ids, one a line in row order (import default: the row numbers)\n"
    "  --labels FILE     the labels, one integer a line in row order (-1: none)\n"
    "  --space S         import: the header's space (default import:npy)\n"
    "  --max-errors N    fail once more than N items have been dropped (default 0)\n"
    "  -v, --verbose     progress and the totals on standard error\n"
    "  -h, --help        this text\n"
    "  --version         the version\n"
    "STREAM or FILE.npy '-', or none, is standard input.\n";

/* the .npy header is padded to this size so its shape can be patched in place */
#define NPY_HDR 128

static void npy_header(uint8_t *h, uint64_t rows, int64_t dim) {
    char dict[NPY_HDR];
    int n =
        snprintf(dict, sizeof dict,
                 "{'descr': '<f4', 'fortran_order': False, 'shape': (%" PRIu64 ", %" PRId64 "), }",
                 rows, dim);
    memcpy(h, "\x93NUMPY\x01\x00", 8);
    uint16_t hl = NPY_HDR - 10;
    h[8] = (uint8_t)(hl & 0xff);
    h[9] = (uint8_t)(hl >> 8);
    memset(h + 10, ' ', NPY_HDR - 10);
    memcpy(h + 10, dict, (size_t)n);
    h[NPY_HDR - 1] = '\n';
}

static void put_or_die(vl_afile *a, const void *p, size_t n, const char *what) {
    if (n && fwrite(p, 1, n, a->fp) != n) die(1, "%s: write: %s", what, strerror(errno));
}

static void commit_or_die(vl_afile *a) {
    char err[VL_ERRLEN];
    tool_pending_done(a->tmp);
    if (vl_afile_commit(a, err) != 0) die(1, "%s", err);
}

/* Opens an output that must vanish if the export dies (die() and signals
 * remove it). */
static void open_or_die(vl_afile *a, const char *path) {
    char err[VL_ERRLEN];
    if (vl_afile_open(a, path, err) != 0) die(1, "%s", err);
    tool_pending(a->tmp);
}

static int do_export(const char *in, const char *out, const char *idpath, const char *labpath,
                     long long max_errors) {
    if (!out)
        usage_error(USAGE,
                    "export: -o FILE.npy is needed (the array's shape is written at the end)");
    char err[VL_ERRLEN];
    sr *r = open_stream(in);
    progress_start("vectors", 0);
    progress_input(r->fd);
    if (sr_header(r, "embedding") != 0) die(1, "%s", r->err);
    int64_t dim = r->dim;
    vl_afile npy, ids, labs;
    memset(&ids, 0, sizeof ids);
    memset(&labs, 0, sizeof labs);
    open_or_die(&npy, out);
    if (idpath) open_or_die(&ids, idpath);
    if (labpath) open_or_die(&labs, labpath);
    /* the array's shape is known at the end: the header is patched in the
     * temporary file, and an output written in place (a pipe, /dev/stdout)
     * gets the header and then the rows kept meanwhile in an unnamed file */
    vl_afile body = npy;
    if (!npy.tmp && !(body.fp = tmpfile())) die(1, "temporary file: %s", strerror(errno));
    uint8_t hdr[NPY_HDR];
    npy_header(hdr, 0, dim);
    put_or_die(&body, hdr, NPY_HDR, out);
    uint64_t rows = 0, dropped = 0;
    const mp_val *item;
    int rc;
    while ((rc = sr_next(r, &item)) == 1) {
        const char *bad = NULL;
        if (sr_check_item(r, item, err) != 0) bad = err;
        const mp_val *id = mp_get(item, "id");
        if (!bad && memchr(id->v.s, '\n', id->len)) {
            sr_where(r, item, err, sizeof err);
            strncat(err, ": id holds a newline: it cannot be one line of the ids file",
                    sizeof err - strlen(err) - 1);
            bad = err;
        }
        if (bad) {
            if (drop_item(&dropped, max_errors, "%s: dropped", bad)) die_dropped(dropped, max_errors);
            continue;
        }
        put_or_die(&body, mp_get(item, "vec")->v.p, (size_t)dim * 4, out);
        if (idpath) {
            put_or_die(&ids, id->v.s, id->len, idpath);
            put_or_die(&ids, "\n", 1, idpath);
        }
        if (labpath) {
            int64_t label = -1;
            mp_get_i64(item, "label", &label);
            if (fprintf(labs.fp, "%" PRId64 "\n", label) < 0)
                die(1, "%s: write: %s", labpath, strerror(errno));
        }
        rows++;
        progress_count(rows, 0, NULL);
    }
    if (rc < 0) die(1, "%s", r->err);
    if (sr_finish(r) != 0) die(1, "%s", r->err);
    int64_t up = sr_trailer_dropped(r);
    if (up > 0) warnx("%s: %" PRId64 " items were dropped upstream", r->name, up);
    progress_end(rows, 0, NULL);
    npy_header(hdr, rows, dim);
    if (fseek(body.fp, 0, SEEK_SET) != 0) die(1, "%s: seek: %s", out, strerror(errno));
    put_or_die(&body, hdr, NPY_HDR, out);
    if (body.fp != npy.fp) {
        char chunk[1 << 16];
        size_t n;
        if (fseek(body.fp, 0, SEEK_SET) != 0) die(1, "temporary file: seek: %s", strerror(errno));
        while ((n = fread(chunk, 1, sizeof chunk, body.fp)) > 0) put_or_die(&npy, chunk, n, out);
        if (ferror(body.fp)) die(1, "temporary file: %s", strerror(errno));
        fclose(body.fp);
    }
    commit_or_die(&npy);
    if (idpath) commit_or_die(&ids);
    if (labpath) commit_or_die(&labs);
    close_stream(r);
    return 0;
}

/* ---- import ---- */

typedef struct {
    int kind; /* 4: <f4, 8: <f8, 2: <f2 */
    uint64_t rows, cols;
    size_t data_off;
} npy_info;

/* finds 'key': in the header dict and returns the text after the colon */
static const char *dict_get(const char *d, const char *key) {
    char pat[32];
    snprintf(pat, sizeof pat, "'%s'", key);
    const char *p = strstr(d, pat);
    if (!p) return NULL;
    p += strlen(pat);
    while (*p == ' ')
        p++;
    if (*p != ':') return NULL;
    p++;
    while (*p == ' ')
        p++;
    return p;
}

static void parse_npy(const uint8_t *buf, size_t size, const char *path, npy_info *inf) {
    if (size < 10 || memcmp(buf, "\x93NUMPY", 6) != 0) die(1, "%s: not a .npy file", path);
    int major = buf[6];
    size_t hl, off;
    if (major == 1) {
        hl = buf[8] | (size_t)buf[9] << 8;
        off = 10;
    } else if (major == 2 || major == 3) {
        if (size < 12) die(1, "%s: truncated .npy header", path);
        hl = buf[8] | (size_t)buf[9] << 8 | (size_t)buf[10] << 16 | (size_t)buf[11] << 24;
        off = 12;
    } else {
        die(1, "%s: .npy format version %d is not supported (1, 2 and 3 are)", path, major);
    }
    if (hl > size - off || hl > 1 << 20) die(1, "%s: truncated .npy header", path);
    char *d = xstrndup((const char *)buf + off, hl);
    const char *descr = dict_get(d, "descr"), *fo = dict_get(d, "fortran_order"),
               *shape = dict_get(d, "shape");
    if (!descr || !fo || !shape)
        die(1, "%s: .npy header lacks descr, fortran_order or shape", path);
    if (!strncmp(descr, "'<f4'", 5))
        inf->kind = 4;
    else if (!strncmp(descr, "'<f8'", 5))
        inf->kind = 8;
    else if (!strncmp(descr, "'<f2'", 5))
        inf->kind = 2;
    else {
        int n = *descr == '\'' && strchr(descr + 1, '\'')
                    ? (int)(strchr(descr + 1, '\'') - descr + 1)
                    : 10;
        die(1, "%s: dtype %.*s is not supported: store float32 ('<f4'), float64 or float16", path,
            n, descr);
    }
    if (strncmp(fo, "False", 5) != 0)
        die(1, "%s: Fortran-ordered arrays are not supported: save a C-ordered copy", path);
    char *end;
    if (*shape != '(') die(1, "%s: bad shape in the .npy header", path);
    errno = 0;
    unsigned long long rows = strtoull(shape + 1, &end, 10);
    while (*end == ' ')
        end++;
    if (errno || end == shape + 1 || *end != ',')
        die(1, "%s: the array must be 2-D (rows, dim)", path);
    const char *p = end + 1;
    while (*p == ' ')
        p++;
    unsigned long long cols = strtoull(p, &end, 10);
    while (*end == ' ' || *end == ',')
        end++;
    if (errno || end == p || *end != ')') die(1, "%s: the array must be 2-D (rows, dim)", path);
    if (cols < 1 || cols > (1 << 24)) die(1, "%s: dimension %llu out of range", path, cols);
    inf->rows = rows;
    inf->cols = cols;
    inf->data_off = off + hl;
    if ((size - inf->data_off) / inf->kind / cols < rows ||
        (size - inf->data_off) != rows * cols * inf->kind)
        die(1, "%s: %zu data bytes for a (%llu, %llu) array of %d-byte values", path,
            size - inf->data_off, rows, cols, inf->kind);
    free(d);
}

/* splits a text file into lines (the trailing newline optional); n lines */
static char **read_lines(const char *path, size_t *n, char **store) {
    char err[VL_ERRLEN];
    size_t len;
    char *s = vl_read_file(path, (size_t)1 << 34, &len, err);
    if (!s) die(1, "%s", err);
    size_t cap = 1024, k = 0;
    char **lines = xmalloc(cap * sizeof(char *));
    char *p = s, *end = s + len;
    while (p < end) {
        char *nl = memchr(p, '\n', (size_t)(end - p));
        if (!nl) nl = end;
        *nl = 0;
        if (k == cap) lines = xrealloc(lines, (cap *= 2) * sizeof(char *));
        lines[k++] = p;
        p = nl + 1;
    }
    *n = k;
    *store = s;
    return lines;
}

static int do_import(int argc, char **argv, const char *in, const char *out, const char *idpath,
                     const char *labpath, const char *space, long long max_errors) {
    int from_stdin = !in || strcmp(in, "-") == 0;
    size_t size;
    uint8_t *buf;
    if (from_stdin) {
        in = "<stdin>";
        buf = read_stdin(&size);
    } else {
        int fd = open(in, O_RDONLY);
        struct stat sb;
        if (fd < 0 || fstat(fd, &sb) != 0) die(1, "%s: %s", in, strerror(errno));
        if (!S_ISREG(sb.st_mode)) die(1, "%s: not a regular file", in);
        size = (size_t)sb.st_size;
        buf = size ? mmap(NULL, size, PROT_READ, MAP_PRIVATE, fd, 0) : NULL;
        if (size && buf == MAP_FAILED) die(1, "%s: mmap: %s", in, strerror(errno));
        close(fd);
    }
    npy_info inf;
    parse_npy(buf, size, in, &inf);
    char *idstore = NULL, *labstore = NULL, **idl = NULL, **labl = NULL;
    size_t nid = 0, nlab = 0;
    if (idpath) {
        idl = read_lines(idpath, &nid, &idstore);
        if (nid != inf.rows)
            die(1, "%s: %zu ids for %llu rows in %s", idpath, nid, (unsigned long long)inf.rows,
                in);
    }
    if (labpath) {
        labl = read_lines(labpath, &nlab, &labstore);
        if (nlab != inf.rows)
            die(1, "%s: %zu labels for %llu rows in %s", labpath, nlab,
                (unsigned long long)inf.rows, in);
    }
    tool_out o;
    output_open(&o, out);
    sw s;
    sw_init(&s, o.fd);
    sw_header_embedding(&s, (int64_t)inf.cols, space, NULL, argc, argv);
    if (sw_header_end(&s) != 0) die(1, "write error: %s", strerror(s.w.err));
    const uint8_t *data = buf + inf.data_off;
    float *vec = xmalloc(inf.cols * sizeof(float));
    for (uint64_t i = 0; i < inf.rows; i++) {
        char idbuf[32];
        const char *id = idbuf;
        if (idl)
            id = idl[i];
        else
            snprintf(idbuf, sizeof idbuf, "%" PRIu64, i);
        if (!*id) die(1, "%s: line %" PRIu64 ": empty id", idpath, i + 1);
        int64_t label = -1;
        if (labl) {
            char *end;
            errno = 0;
            long long v = strtoll(labl[i], &end, 10);
            if (errno || end == labl[i] || *end || v < -1 || v > INT32_MAX)
                die(1,
                    "%s: line %" PRIu64
                    ": '%.40s' is not a label (an integer >= 0, or -1 for none)",
                    labpath, i + 1, labl[i]);
            label = v;
        }
        const uint8_t *row = data + i * inf.cols * inf.kind;
        int finite = 1;
        for (uint64_t k = 0; k < inf.cols; k++) {
            float f;
            if (inf.kind == 4) {
                memcpy(&f, row + 4 * k, 4);
            } else if (inf.kind == 8) {
                double d;
                memcpy(&d, row + 8 * k, 8);
                f = (float)d;
            } else {
                uint16_t h;
                memcpy(&h, row + 2 * k, 2);
                f = vl_f16_to_f32(h);
            }
            if (!isfinite(f)) finite = 0;
            vec[k] = f;
        }
        if (!finite) {
            if (drop_item(&s.dropped, max_errors,
                          "%s: row %" PRIu64 " (id '%.200s'): NaN or infinity (or beyond float32): dropped",
                          in, i, id))
                die_dropped(s.dropped, max_errors);
            continue;
        }
        sw_item_begin(&s);
        mpw_str(&s.w, "id");
        mpw_str(&s.w, id);
        mpw_str(&s.w, "vec");
        mpw_bin(&s.w, vec, inf.cols * 4);
        if (label >= 0) {
            mpw_str(&s.w, "label");
            mpw_int(&s.w, label);
        }
        if (sw_item_end(&s) != 0) die(1, "write error: %s", strerror(s.w.err));
        progress_count(s.records, s.dropped, NULL);
    }
    progress_end(s.records, s.dropped, NULL);
    sw_trailer_begin(&s);
    sw_trailer_end(&s);
    output_commit(&o, &s);
    sw_free(&s);
    if (from_stdin) free(buf);
    else if (size) munmap(buf, size);
    free(vec);
    free(idl);
    free(labl);
    free(idstore);
    free(labstore);
    return 0;
}

int main(int argc, char **argv) {
    tool_init("mpnpy");
    const char *idpath = NULL, *labpath = NULL, *space = "import:npy";
    tool_opts to = {0};
    static const struct option opts[] = {{"ids", required_argument, 0, 'i'},
                                         {"labels", required_argument, 0, 'l'},
                                         {"space", required_argument, 0, 's'},
                                         OPT_MAX_ERRORS,
                                         OPT_OUTPUT,
                                         OPT_VERBOSE,
                                         OPT_HELP,
                                         OPT_VERSION,
                                         OPT_END};
    if (argc >= 2 && (!strcmp(argv[1], "-h") || !strcmp(argv[1], "--help"))) usage_help(USAGE);
    if (argc >= 2 && !strcmp(argv[1], "--version")) version_exit();
    if (argc < 2) usage_error(USAGE, "export or import?");
    const char *cmd = argv[1];
    int is_export = !strcmp(cmd, "export"), is_import = !strcmp(cmd, "import");
    if (!is_export && !is_import) usage_error(USAGE, "'%s': the command is export or import", cmd);
    int c;
    optind = 2;
    while ((c = getopt_long(argc, argv, "o:vh", opts, NULL)) != -1) {
        switch (c) {
        case 'i':
            idpath = optarg;
            break;
        case 'l':
            labpath = optarg;
            break;
        case 's':
            space = optarg;
            break;
        default:
            tool_option(c, USAGE, &to);
        }
    }
    if (argc - optind > 1) usage_error(USAGE, "one input at most");
    const char *in = optind < argc ? argv[optind] : NULL;
    if (is_export) {
        if (strcmp(space, "import:npy") != 0) usage_error(USAGE, "--space is for import");
        return do_export(in, to.output, idpath, labpath, to.max_errors);
    }
    return do_import(argc, argv, in, to.output, idpath, labpath, space, to.max_errors);
}
