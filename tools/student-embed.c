/* student-embed: features of a student network for every image of a stream.
 *
 * Reads an `image` stream (u8, hwc, 3 channels), normalises each image with
 * the per-channel mean and standard deviation (the weights' own when they
 * declare one, else ImageNet's), runs the student (any architecture of
 * lib/models/student.h, weights from a safetensors file or a model
 * directory) and writes an `embedding` stream of its features, or with
 * --head of their projection into the teacher's space by a cosine head.
 * Consecutive images of the same size are run as one batch; the output
 * keeps the input order. */
#include "common.h"

#include "blas.h"
#include "classifier.h"
#include "models/student.h"

#include <getopt.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const char USAGE[] =
    "usage: student-embed [--arch resnet18|resnet34|resnet50|mobilenet_v2|vit_s16|vit_b16|clip_vision|\n"
    "                             openclip_timm|auto]\n"
    "                     --weights FILE|DIR [--head MODEL]\n"
    "                     [--mean R,G,B] [--std R,G,B] [--batch N] [--threads N] [--max-errors N]\n"
    "                     [-v] [-o FILE] [FILE]\n";

static void parse_triple(const char *opt, const char *s, float *v)
{
    char *end;
    const char *p = s;
    for (int i = 0; i < 3; i++) {
        v[i] = strtof(p, &end);
        if (end == p || (i < 2 && *end != ',') || (i == 2 && *end)) usage_error(USAGE, "%s: expected R,G,B: '%s'", opt, s);
        p = end + 1;
    }
}

int main(int argc, char **argv)
{
    tool_init("student-embed");
    const char *arch = "auto", *weights = NULL, *headpath = NULL, *outpath = NULL;
    /* ImageNet's, unless the weights declare theirs or --mean/--std say */
    float mean[3] = {0.485f, 0.456f, 0.406f}, stdv[3] = {0.229f, 0.224f, 0.225f};
    int given_mean = 0, given_std = 0;
    long long batch = 32, threads = 0, max_errors = 0;
    static const struct option opts[] = {{"arch", required_argument, 0, 'a'},
                                         {"weights", required_argument, 0, 'W'},
                                         {"head", required_argument, 0, 'H'},
                                         {"mean", required_argument, 0, 'M'},
                                         {"std", required_argument, 0, 'S'},
                                         {"batch", required_argument, 0, 'b'},
                                         {"threads", required_argument, 0, 't'},
                                         {"max-errors", required_argument, 0, 'E'},
                                         {"output", required_argument, 0, 'o'},
                                         {"verbose", no_argument, 0, 'v'},
                                         {"help", no_argument, 0, 'h'},
                                         {0, 0, 0, 0}};
    int c;
    while ((c = getopt_long(argc, argv, "a:W:b:t:o:vh", opts, NULL)) != -1) {
        switch (c) {
        case 'a': arch = optarg; break;
        case 'W': weights = optarg; break;
        case 'H': headpath = optarg; break;
        case 'M':
            parse_triple("--mean", optarg, mean);
            given_mean = 1;
            break;
        case 'S':
            parse_triple("--std", optarg, stdv);
            given_std = 1;
            for (int i = 0; i < 3; i++)
                if (!(stdv[i] > 0)) usage_error(USAGE, "--std: values must be positive");
            break;
        case 'b': batch = parse_int(USAGE, "--batch", optarg, 1, 4096); break;
        case 't': threads = parse_int(USAGE, "--threads", optarg, 0, 1024); break;
        case 'E': max_errors = parse_int(USAGE, "--max-errors", optarg, 0, INT64_MAX); break;
        case 'o': outpath = optarg; break;
        case 'v': tool_verbose = 1; break;
        case 'h': usage_help(USAGE);
        default: usage_error(USAGE, "unknown option");
        }
    }
    if (!weights) usage_error(USAGE, "--weights is required");
    int known = strcmp(arch, "auto") == 0;
    for (int i = 0; STUDENT_ARCHS[i]; i++) known |= strcmp(arch, STUDENT_ARCHS[i]) == 0;
    if (!known) usage_error(USAGE, "--arch: unknown architecture '%s'", arch);
    if (argc - optind > 1) usage_error(USAGE, "one input at most");
    if (threads > 0) blas_set_threads((int)threads);

    student *st;
    char err[VL_ERRLEN];
    if (student_open(&st, arch, weights, err) != 0) die(1, "--arch %s: %s", arch, err);
    student_fold_bn(st); /* inference only: BatchNorm folded into the convolutions */
    int dim = student_feature_dim(st), odim = dim;
    float wmean[3], wstd[3];
    if (student_input_norm(st, wmean, wstd)) {
        if (!given_mean) memcpy(mean, wmean, sizeof mean);
        if (!given_std) memcpy(stdv, wstd, sizeof stdv);
    }

    char space[64];
    snprintf(space, sizeof space, "student:%s", student_arch(st));
    const char *ospace = space;
    /* --head: the cosine head's projection into the teacher's space */
    clf_head head = {0};
    if (headpath) {
        if (clf_open(&head, headpath, err) != 0) die(1, "--head: %s", err);
        if (head.kind != CLF_COSINE)
            die(1, "--head: %s: a linear head (fc.weight) gives class scores; a cosine head (proj.weight) projects",
                headpath);
        if (strcmp(head.student_space, space) != 0)
            die(1, "--head: %s: made for vl2v.student_space '%s', the student is '%s'", headpath, head.student_space,
                space);
        if (head.Ds != dim)
            die(1, "--head: %s: proj.weight takes %d-dim features, the student %s gives %d", headpath, head.Ds,
                student_arch(st), dim);
        odim = head.D;
        ospace = head.teacher_space;
    }

    sr *r = open_stream(optind < argc ? argv[optind] : NULL);
    if (sr_header(r, "image") != 0) die(1, "%s", r->err);
    tool_out out;
    sw s;
    output_open(&out, outpath);
    sw_init(&s, out.fd);
    sw_header_embedding(&s, odim, ospace, &r->header, argc, argv);
    if (sw_header_end(&s) != 0) die(1, "write error: %s", strerror(s.w.err));

    /* the batch: pixels, and each item's id and metadata as an owned map */
    int B = 0, bh = 0, bw = 0;
    float *x = NULL, *feat = xmalloc((size_t)batch * dim * sizeof(float));
    float *z = headpath ? xmalloc((size_t)batch * odim * sizeof(float)) : feat; /* what is written */
    size_t xcap = 0;
    mpw *meta = xcalloc((size_t)batch, sizeof *meta);
    mp_arena arena = {0};
    /* dropped here counts against --max-errors; the trailer's total adds the
     * upstream streams' drops, which were never seen here */
    uint64_t dropped = 0, upstream_dropped = 0;
    static const char *const ID[] = {"id", NULL};

#define FLUSH()                                                                                                    \
    do {                                                                                                           \
        if (!B) break;                                                                                             \
        if (student_forward(st, feat, x, B, bh, bw, 0, err) != 0) die(1, "%s", err);                               \
        if (headpath) clf_project(&head, z, feat, B);                                                              \
        for (int i = 0; i < B; i++) {                                                                              \
            mp_val m;                                                                                              \
            size_t used;                                                                                           \
            mp_arena_reset(&arena);                                                                                \
            if (mp_decode(&arena, meta[i].buf, meta[i].len, STREAM_MAX_RECORD, &m, &used, err) != 1)                \
                die(1, "internal: %s", err);                                                                       \
            sw_item_begin(&s);                                                                                     \
            for (uint32_t k = 0; k < m.len; k++) {                                                                 \
                mpw_value(&s.w, &m.v.a[2 * k]);                                                                    \
                mpw_value(&s.w, &m.v.a[2 * k + 1]);                                                                \
            }                                                                                                      \
            mpw_str(&s.w, "vec");                                                                                  \
            mpw_bin(&s.w, z + (size_t)i * odim, (size_t)odim * sizeof(float));                              \
            if (sw_item_end(&s) != 0) die(1, "write error: %s", strerror(s.w.err));                                \
            mpw_free(&meta[i]);                                                                                    \
        }                                                                                                          \
        progress("%llu images", (unsigned long long)s.records);                                                    \
        B = 0;                                                                                                     \
    } while (0)

    const mp_val *item;
    int rc;
    stream_keys *keys = stream_keys_new();
    for (;;) {
        while ((rc = sr_next(r, &item)) == 1) {
            if (sr_check_item(r, item, err) != 0) {
                if (drop_item(&dropped, max_errors, "%s: dropped", err)) die_dropped(dropped, max_errors);
                continue;
            }
            /* a repeated (id, view) could not be joined downstream: the
             * input was put together wrongly (vl2v-stream(5)) */
            if (stream_keys_add(keys, r, item, err) != 0) die(1, "%s", err);
            int64_t h, w;
            mp_get_i64(item, "h", &h);
            mp_get_i64(item, "w", &w);
            char why[VL_ERRLEN];
            if (student_check_input(st, (int)h, (int)w, why) != 0) {
                char where[256];
                if (drop_item(&dropped, max_errors, "%s: %lldx%lld image: %s: dropped", sr_where(r, item, where, sizeof where),
                              (long long)h, (long long)w, why))
                    die_dropped(dropped, max_errors);
                continue;
            }
            if (B && (h != bh || w != bw || B == batch)) FLUSH();
            bh = (int)h, bw = (int)w;
            size_t hw = (size_t)h * w, need = (size_t)batch * 3 * hw;
            if (need > xcap) {
                free(x);
                x = xmalloc_aligned(need * sizeof(float));
                xcap = need;
            }
            /* hwc bytes -> normalised chw floats, as ToTensor + Normalize */
            const uint8_t *pix = mp_get(item, "pix")->v.p;
            float *dst = x + (size_t)B * 3 * hw;
            for (int ch = 0; ch < 3; ch++) {
                float m = mean[ch], sd = stdv[ch];
                float *d = dst + ch * hw;
                for (size_t i = 0; i < hw; i++) d[i] = ((float)pix[3 * i + ch] / 255.0f - m) / sd;
            }
            mpw_init(&meta[B], -1);
            mpw_map(&meta[B]);
            stream_copy_keys(&meta[B], item, ID);
            stream_copy_keys(&meta[B], item, STREAM_META_KEYS);
            mpw_end(&meta[B]);
            B++;
        }
        if (rc < 0) die(1, "%s", r->err);
        upstream_dropped += (uint64_t)sr_trailer_dropped(r);
        int more = sr_next_stream(r, "image");
        if (more < 0) die(1, "%s", r->err);
        if (!more) break;
    }
    FLUSH();
#undef FLUSH
    stream_keys_free(keys);
    progress_done();
    s.dropped = upstream_dropped + dropped;
    sw_trailer_begin(&s);
    sw_trailer_end(&s);
    output_commit(&out, &s);
    if (r->fd > 0) close(r->fd);
    sr_close(r);
    mp_arena_free(&arena);
    free(meta);
    free(x);
    if (headpath) {
        free(z);
        clf_free(&head);
    }
    free(feat);
    student_free(st);
    return 0;
}
