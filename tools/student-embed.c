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
#include "embed.h"
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
    "                     [-v] [-o FILE] [FILE]\n"
    "  --arch ARCH        the student architecture (default auto: from the tensor names)\n"
    "  --weights FILE|DIR the student's weights (required)\n"
    "  --head MODEL       write the cosine head's projection of each feature instead\n"
    "  --mean R,G,B       the input mean (default: the weights' declared one, else ImageNet's)\n"
    "  --std R,G,B        the input standard deviation (default: as --mean)\n"
    "  --batch N          images per forward pass (default 32)\n"
    "  --threads N        threads (default: OPENBLAS_NUM_THREADS, else the cores)\n"
    "  --max-errors N     fail once more than N items have been dropped (default 0)\n"
    "  -v, --verbose      progress and the totals on standard error\n"
    "  -o, --output FILE  write FILE atomically instead of standard output\n"
    "  -h, --help         this text\n"
    "  --version          the version\n";

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

/* the output, and the head whose projection is written (NULL: the
 * features) */
typedef struct {
    sw *s;
    const clf_head *head;
    float *z; /* the projections of a batch */
    int dim;  /* of what is written */
    const tool_drops *drops;
} out_ctx;

/* embed_stream's batches: each item's keys and its vector */
static int emit(void *ctx, const mp_val *keys, int B, const float *feat, char *err)
{
    out_ctx *o = ctx;
    const float *v = feat;
    if (o->head) {
        clf_project(o->head, o->z, feat, B);
        v = o->z;
    }
    for (int i = 0; i < B; i++) {
        sw_item_begin(o->s);
        for (uint32_t k = 0; k < keys[i].len; k++) {
            mpw_value(&o->s->w, &keys[i].v.a[2 * k]);
            mpw_value(&o->s->w, &keys[i].v.a[2 * k + 1]);
        }
        mpw_str(&o->s->w, "vec");
        mpw_bin(&o->s->w, v + (size_t)i * o->dim, (size_t)o->dim * sizeof(float));
        if (sw_item_end(o->s) != 0) die(1, "write error: %s", strerror(o->s->w.err));
    }
    progress_count(o->s->records, o->drops->dropped, NULL);
    return 0;
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
                                         OPT_VERSION,
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
            break;
        case 'b': batch = parse_int(USAGE, "--batch", optarg, 1, 4096); break;
        case 't': threads = parse_int(USAGE, "--threads", optarg, 0, 1024); break;
        case 'E': max_errors = parse_int(USAGE, "--max-errors", optarg, 0, INT64_MAX); break;
        case 'o': outpath = optarg; break;
        case 'v': tool_verbose = 1; break;
        case OPT_VERSION_VAL: version_exit();
        case 'h': usage_help(USAGE);
        default: usage_error(USAGE, "unknown option");
        }
    }
    if (!weights) usage_error(USAGE, "--weights is required");
    char nb[96];
    /* each with the other's default: a fault is the given one's */
    if (vl_norm_fault(mean, stdv, nb, sizeof nb)) usage_error(USAGE, "--mean/--std: %s", nb);
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

    /* dropped here counts against --max-errors; the trailer's total adds the
     * upstream streams' drops, which were never seen here */
    tool_drops drops = {0, max_errors};
    out_ctx o = {&s, headpath ? &head : NULL, NULL, odim, &drops};
    if (headpath) o.z = xmalloc((size_t)batch * odim * sizeof(float));
    embed_opts eo = {.st = st, .batch = (int)batch, .bad = tool_drop_bad, .bad_ctx = &drops, .emit = emit, .ctx = &o};
    memcpy(eo.mean, mean, sizeof mean);
    memcpy(eo.std, stdv, sizeof stdv);
    uint64_t upstream_dropped;
    progress_start("images", 0);
    progress_input(r->fd);
    if (embed_stream(r, &eo, &upstream_dropped, err) != 0) die(1, "%s", err);
    progress_end(s.records, drops.dropped, NULL);
    s.dropped = upstream_dropped + drops.dropped;
    sw_trailer_begin(&s);
    sw_trailer_end(&s);
    output_commit(&out, &s);
    sw_free(&s);
    if (r->fd > 0) close(r->fd);
    sr_close(r);
    if (headpath) {
        free(o.z);
        clf_free(&head);
    }
    student_free(st);
    return 0;
}
