/* stinfo: describes safetensors files: each tensor's name, dtype, shape and
 * element count in name order, the metadata, and the totals (tensors,
 * parameters, data bytes). The file is checked as every reader checks it, so
 * stinfo is also a quick validator: a malformed file is an error (exit 1). */
#include "common.h"
#include "st.h"

#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

static const char USAGE[] = "usage: stinfo [-m] [-q] FILE ...\n";

int main(int argc, char **argv) {
    tool_init("stinfo");
    int meta_only = 0, quiet = 0;
    static const struct option opts[] = {{"metadata", no_argument, 0, 'm'},
                                         {"quiet", no_argument, 0, 'q'},
                                         OPT_HELP,
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
        if (st_open(&f, argv[i], err) != 0) {
            warnx("%s", err);
            status = 1;
            continue;
        }
        uint64_t params = 0, bytes = 0;
        size_t wname = 4, wshape = 5;
        char shape[256];
        for (int k = 0; k < f.n; k++) {
            params += (uint64_t)f.t[k].numel;
            bytes += f.t[k].nbytes;
            if (strlen(f.t[k].name) > wname) wname = strlen(f.t[k].name);
            st_shape_str(f.t[k].ndim, f.t[k].shape, shape, sizeof shape);
            if (strlen(shape) > wshape) wshape = strlen(shape);
        }
        if (argc - optind > 1) printf("%s%s:\n", i > optind ? "\n" : "", argv[i]);
        if (!quiet && !meta_only) {
            printf("%-*s  %-7s  %-*s  %s\n", (int)wname, "name", "dtype", (int)wshape, "shape",
                   "elements");
            for (int k = 0; k < f.n; k++) {
                const st_tensor *t = &f.t[k];
                printf("%-*s  %-7s  %-*s  %" PRId64 "\n", (int)wname, t->name,
                       st_dtype_name(t->dtype), (int)wshape,
                       st_shape_str(t->ndim, t->shape, shape, sizeof shape), t->numel);
            }
        }
        if (!quiet || meta_only) {
            if (f.nmeta && !meta_only) printf("metadata:\n");
            for (int k = 0; k < f.nmeta; k++) {
                /* one line per key: show newlines and tabs escaped */
                printf("%s%s: ", meta_only ? "" : "  ", f.meta_key[k]);
                for (const char *p = f.meta_val[k]; *p; p++) {
                    if (*p == '\n')
                        fputs("\\n", stdout);
                    else if (*p == '\t')
                        fputs("\\t", stdout);
                    else if ((unsigned char)*p < 0x20)
                        printf("\\x%02x", (unsigned char)*p);
                    else
                        putchar(*p);
                }
                putchar('\n');
            }
        }
        if (!meta_only)
            printf("%d tensors, %" PRIu64 " parameters, %" PRIu64
                   " bytes of data, %zu bytes in all\n",
                   f.n, params, bytes, f.size);
        st_close(&f);
    }
    stdout_done();
    return status;
}
