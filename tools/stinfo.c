/* stinfo: describes safetensors files: each tensor's name, dtype, shape and
 * element count in name order, the metadata, and the totals (tensors,
 * parameters, data bytes). The file is checked as every reader checks it, so
 * stinfo is also a quick validator: a malformed file is an error (exit 1). */
#include "common.h"
#include "st.h"

#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char USAGE[] =
    "usage: stinfo [-m] [-q] FILE ...\n"
    "  -m, --metadata  the metadata lines only\n"
    "  -q, --quiet     the total line only\n"
    "  -h, --help      this text\n"
    "  --version       the version\n"
    "FILE '-' is standard input.\n";

/* s on one line, control characters escaped (\n, \t, \xHH): names and
 * values come from the file and must not move the cursor or start a line.
 * Returns a malloc'ed string. */
static char *escaped(const char *s) {
    char *out = xmalloc(4 * strlen(s) + 1), *o = out;
    for (const char *p = s; *p; p++) {
        unsigned char c = (unsigned char)*p;
        if (c == '\n') o += sprintf(o, "\\n");
        else if (c == '\t') o += sprintf(o, "\\t");
        else if (c < 0x20 || c == 0x7f) o += sprintf(o, "\\x%02x", c);
        else *o++ = (char)c;
    }
    *o = 0;
    return out;
}

int main(int argc, char **argv) {
    tool_init("stinfo");
    int meta_only = 0, quiet = 0;
    static const struct option opts[] = {{"metadata", no_argument, 0, 'm'},
                                         {"quiet", no_argument, 0, 'q'},
                                         OPT_HELP,
                                         OPT_VERSION,
                                         OPT_END};
    int c;
    while ((c = getopt_long(argc, argv, "mqh", opts, NULL)) != -1) {
        switch (c) {
        case 'm':
            meta_only = 1;
            break;
        case 'q':
            quiet = 1;
            break;
        default:
            tool_option(c, USAGE, NULL);
        }
    }
    if (optind >= argc) usage_error(USAGE, "no file given");
    int status = 0;
    for (int i = optind; i < argc; i++) {
        st_file f;
        char err[VL_ERRLEN];
        uint8_t *in = NULL; /* "-": standard input, read whole */
        size_t inlen = 0;
        if (strcmp(argv[i], "-") == 0) in = read_stdin(&inlen);
        if (in ? st_parse(&f, in, inlen, "<stdin>", err) != 0 : st_open(&f, argv[i], err) != 0) {
            free(in);
            warnx("%s", err);
            status = 1;
            continue;
        }
        uint64_t params = 0, bytes = 0;
        size_t wname = 4, wshape = 5;
        char shape[256];
        char **names = xcalloc((size_t)f.n + 1, sizeof(char *));
        for (int k = 0; k < f.n; k++) {
            params += (uint64_t)f.t[k].numel;
            bytes += f.t[k].nbytes;
            names[k] = escaped(f.t[k].name);
            if (strlen(names[k]) > wname) wname = strlen(names[k]);
            st_shape_str(f.t[k].ndim, f.t[k].shape, shape, sizeof shape);
            if (strlen(shape) > wshape) wshape = strlen(shape);
        }
        if (argc - optind > 1) printf("%s%s:\n", i > optind ? "\n" : "", argv[i]);
        if (!quiet && !meta_only) {
            printf("%-*s  %-7s  %-*s  %s\n", (int)wname, "name", "dtype", (int)wshape, "shape",
                   "elements");
            for (int k = 0; k < f.n; k++) {
                const st_tensor *t = &f.t[k];
                printf("%-*s  %-7s  %-*s  %" PRId64 "\n", (int)wname, names[k],
                       st_dtype_name(t->dtype), (int)wshape,
                       st_shape_str(t->ndim, t->shape, shape, sizeof shape), t->numel);
            }
        }
        if (!quiet || meta_only) {
            if (f.nmeta && !meta_only) printf("metadata:\n");
            for (int k = 0; k < f.nmeta; k++) {
                /* one line per key */
                char *key = escaped(f.meta_key[k]), *val = escaped(f.meta_val[k]);
                printf("%s%s: %s\n", meta_only ? "" : "  ", key, val);
                free(key);
                free(val);
            }
        }
        if (!meta_only)
            printf("%d tensors, %" PRIu64 " parameters, %" PRIu64
                   " bytes of data, %zu bytes in all\n",
                   f.n, params, bytes, in ? inlen : f.size);
        for (int k = 0; k < f.n; k++) free(names[k]);
        free(names);
        st_close(&f);
        free(in);
    }
    stdout_done();
    return status;
}
