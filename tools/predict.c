/* predict: class scores and predictions for a stream of embeddings or
 * images.
 *
 * The classifier is a head file (--model: align-fit's cosine head, whose
 * projection maps student features into the teacher's space where they are
 * compared with the class texts, or its linear head) or a text stream
 * (--text: the teacher's zero-shot classifier, one text embedding per
 * class). The input is an embedding stream in the space the classifier
 * expects: the student's features, the teacher's space for projected
 * features (student-embed --head) and for the teacher's own image
 * embeddings; or, with --weights, an image stream, which the student turns
 * into features here (the deployed classifier in one process). The output
 * is a prediction stream in input order: per item its logits, the argmax
 * and the input's label, domain, split and view; its header says which run
 * made the classifier (method, seed, source domains, settings) for score. */
#include "common.h"

#include "blas.h"
#include "classifier.h"
#include "embed.h"

#include <getopt.h>
#include <stdlib.h>
#include <string.h>

static const char USAGE[] =
    "usage: predict (--model MODEL | --text TEXT.mp) [--weights STUDENT] [--arch ARCH]\n"
    "               [--batch N] [--method NAME] [--threads N] [--max-errors N] [-v] [-o FILE]\n"
    "               [FILE]\n"
    "  --model MODEL      a head file (safetensors) as align-fit writes it\n"
    "  --text TEXT.mp     the teacher's zero-shot classifier: a stream of class text embeddings\n"
    "  --weights STUDENT  the input is an image stream: run this student here, then the head\n"
    "  --arch ARCH        the student's architecture (default auto: from the tensor names)\n"
    "  --batch N          images a forward pass with --weights (default 32)\n"
    "  --method NAME      the header's method instead of the head's (or zeroshot)\n"
    "  --threads N        threads (default: what OpenBLAS would use)\n"
    "  --max-errors N     fail once more than N items have been dropped (default 0)\n"
    "  -v, --verbose      progress and the totals on standard error\n"
    "  -o, --output FILE  write FILE atomically instead of standard output\n"
    "  -h, --help         this text\n"
    "  --version          the version\n";

typedef struct {
    uint64_t dropped;
    long long max_errors;
} drops;

static int drop_bad(void *ctx, const char *msg)
{
    drops *d = ctx;
    if (drop_item(&d->dropped, d->max_errors, "%s: dropped", msg)) die_dropped(d->dropped, d->max_errors);
    return 0;
}

/* The zero-shot classifier: the text stream's rows ordered by label, one
 * for each of 0..C-1, named by their class. Text space text:M scores image
 * embeddings of space teacher:M. */
static void load_text(clf_head *h, const char *path)
{
    char err[VL_ERRLEN];
    stream_matrix t;
    stream_matrix_init(&t);
    sr *r = open_stream(path);
    if (stream_matrix_read(&t, r, NULL, NULL, err) != 0) die(1, "%s", err);
    close_stream(r);
    if (strncmp(t.space, "text:", 5) != 0)
        die(1, "%s: header: space '%s' is no text space ('text:MODEL', as text-embed writes)", t.source, t.space);
    if (t.n == 0) die(1, "%s: no text rows", t.source);
    int C = (int)t.n;
    float *rows = xmalloc((size_t)C * t.dim * sizeof(float));
    char **classes = xcalloc((size_t)C, sizeof *classes);
    for (int i = 0; i < C; i++) {
        int64_t l = t.label[i];
        if (l == STREAM_NONE || !t.cls[i])
            die(1, "%s: id '%.200s': no %s: a text row needs a label and a class", t.source, t.id[i],
                l == STREAM_NONE ? "label" : "class");
        if (l >= C) die(1, "%s: id '%.200s': label %lld outside 0..%d (%d text rows)", t.source, t.id[i], (long long)l, C - 1, C);
        if (classes[l])
            die(1, "%s: id '%.200s': label %lld again (first for class '%s'): one row a label", t.source, t.id[i],
                (long long)l, classes[l]);
        classes[l] = t.cls[i];
        memcpy(rows + (size_t)l * t.dim, t.rows + (size_t)i * t.dim, (size_t)t.dim * sizeof(float));
    }
    if (clf_from_text(h, rows, C, (int)t.dim, classes, err) != 0) die(1, "%s: %s", t.source, err);
    h->teacher_space = xmalloc(strlen(t.space) + 4);
    sprintf(h->teacher_space, "teacher:%s", t.space + 5);
    free(h->method);
    h->method = xstrdup("zeroshot");
    free(rows), free(classes);
    stream_matrix_free(&t);
}

/* A string of the input, not NUL-terminated (an id may hold a NUL); p is
 * NULL where the key is absent. */
typedef struct {
    const char *p;
    size_t n;
} span;

static span span_of(const char *s) { return (span){s, s ? strlen(s) : 0}; }

static span span_key(const mp_val *m, const char *key)
{
    const mp_val *v = mp_get(m, key);
    return v && v->type == MP_STR ? (span){v->v.s, v->len} : (span){NULL, 0};
}

/* What an output item carries over from its input item. */
typedef struct {
    span id, domain, split;
    int64_t label, view; /* STREAM_NONE when absent */
} item_keys;

typedef struct {
    const clf_head *h;
    const char *cname; /* the classifier's file, for messages */
    sw *s;
    drops *d;
    const char *source; /* the input's name */
    const char *output; /* -o FILE, or NULL */
    int projected;      /* the input is in the teacher's space (cosine head) */
} out_ctx;

static void write_str(mpw *w, const char *key, span s)
{
    if (!s.p) return;
    mpw_str(w, key);
    mpw_strn(w, s.p, s.n);
}

static void write_index(mpw *w, const char *key, int64_t x)
{
    if (x == STREAM_NONE) return;
    mpw_str(w, key);
    mpw_int(w, x);
}

/* Writes the prediction of one item from its logits lg (C), unless its
 * label is no class of the classifier: that item could not be scored, and
 * is dropped. */
static void write_prediction(const out_ctx *O, const item_keys *k, const float *lg)
{
    const clf_head *h = O->h;
    if (k->label != STREAM_NONE && k->label >= h->C) {
        if (drop_item(&O->d->dropped, O->d->max_errors, "%s: id '%.*s': label %lld outside the %d classes of %s: dropped",
                      O->source, (int)(k->id.n > 200 ? 200 : k->id.n), k->id.p, (long long)k->label, h->C, O->cname))
            die_dropped(O->d->dropped, O->d->max_errors);
        return;
    }
    sw *s = O->s;
    sw_item_begin(s);
    write_str(&s->w, "id", k->id);
    mpw_str(&s->w, "pred");
    mpw_int(&s->w, clf_argmax(lg, h->C));
    mpw_str(&s->w, "logits");
    mpw_bin(&s->w, lg, (size_t)h->C * sizeof(float));
    write_index(&s->w, "label", k->label);
    write_str(&s->w, "domain", k->domain);
    write_str(&s->w, "split", k->split);
    write_index(&s->w, "view", k->view);
    if (sw_item_end(s) != 0) die(1, "write error: %s", strerror(s->w.err));
}

/* embed_stream's batches: features to logits to predictions */
static int emit_batch(void *ctx, const mp_val *keys, int B, const float *feat, char *err)
{
    const out_ctx *O = ctx;
    float *lg = xmalloc((size_t)B * O->h->C * sizeof(float));
    clf_logits(O->h, lg, feat, B, 0);
    for (int i = 0; i < B; i++) {
        const mp_val *m = &keys[i];
        item_keys k = {span_key(m, "id"), span_key(m, "domain"), span_key(m, "split"), stream_get_index(m, "label"),
                       stream_get_index(m, "view")};
        write_prediction(O, &k, lg + (size_t)i * O->h->C);
    }
    free(lg);
    progress_count(O->s->records, O->d->dropped, NULL);
    return 0;
}

static void write_header(sw *s, const clf_head *h, const char *method, const mp_val *in_header, int argc, char **argv)
{
    stream_prediction_info pi = {.classes = (const char *const *)h->classes, .nclasses = h->C,
                                 .method = method ? method : h->method, .has_seed = h->has_seed, .seed = h->seed,
                                 .sources = (const char *const *)h->sources, .nsources = h->nsources,
                                 .settings = h->settings};
    sw_header_prediction(s, &pi, in_header, argc, argv);
    if (sw_header_end(s) != 0) die(1, "write error: %s", strerror(s->w.err));
}

/* --weights: the student runs here on the image stream r; its features
 * must be those the head was trained on. Returns the drops upstream. */
static uint64_t predict_images(out_ctx *O, const char *weights, const char *arch, int batch, sr *r, tool_out *out,
                               const char *method, int argc, char **argv)
{
    const clf_head *h = O->h;
    char err[VL_ERRLEN], space[64];
    student *st;
    if (student_open(&st, arch, weights, err) != 0) die(1, "--arch %s: %s", arch, err);
    student_fold_bn(st); /* inference only: BatchNorm folded into the convolutions */
    snprintf(space, sizeof space, "student:%s", student_arch(st));
    if (strcmp(space, h->student_space) != 0)
        die(1, "%s: a '%s' student, but %s takes '%s'", weights, space, O->cname, h->student_space);
    if (student_feature_dim(st) != h->Ds)
        die(1, "%s: %d-dimensional features, but %s takes %d (tensor '%s')", weights, student_feature_dim(st),
            O->cname, h->Ds, h->kind == CLF_COSINE ? "proj.weight" : "fc.weight");
    /* ImageNet's normalisation unless the weights declare theirs */
    embed_opts eo = {.st = st, .mean = {0.485f, 0.456f, 0.406f}, .std = {0.229f, 0.224f, 0.225f}, .batch = batch,
                     .bad = drop_bad, .bad_ctx = O->d, .emit = emit_batch, .ctx = O};
    student_input_norm(st, eo.mean, eo.std);
    if (sr_header(r, "image") != 0) die(1, "%s", r->err);
    output_open(out, O->output);
    sw_init(O->s, out->fd);
    write_header(O->s, h, method, &r->header, argc, argv);
    uint64_t upstream;
    progress_start("images", 0);
    progress_input(r->fd);
    if (embed_stream(r, &eo, &upstream, err) != 0) die(1, "%s", err);
    progress_end(O->s->records, O->d->dropped, NULL);
    student_free(st);
    return upstream;
}

/* An embedding stream r: its space says what its vectors are, student
 * features or vectors in the teacher's space (projected features, the
 * teacher's image embeddings). Returns the drops upstream. */
static uint64_t predict_embeddings(out_ctx *O, const char *model, const char *text, sr *r, tool_out *out,
                                   const char *method, int argc, char **argv)
{
    const clf_head *h = O->h;
    char err[VL_ERRLEN];
    if (sr_header(r, "embedding") != 0) die(1, "%s", r->err);
    const mp_val *sp = mp_get(&r->header, "space");
    if (h->student_space && mp_str_eq(sp, h->student_space)) O->projected = 0;
    else if (h->kind == CLF_COSINE && mp_str_eq(sp, h->teacher_space)) O->projected = 1;
    else if (!model)
        die(1, "%s: header: space '%.*s', but the text rows of %s are for '%s' (the teacher's image embeddings)",
            r->name, (int)sp->len, sp->v.s, text, h->teacher_space);
    else if (h->kind == CLF_COSINE)
        die(1, "%s: header: space '%.*s', but %s takes '%s' (features) or '%s' (projected features)", r->name,
            (int)sp->len, sp->v.s, model, h->student_space, h->teacher_space);
    else
        die(1, "%s: header: space '%.*s', but %s takes '%s'", r->name, (int)sp->len, sp->v.s, model, h->student_space);
    int din = O->projected ? h->D : h->Ds;
    if (r->dim != din)
        die(1, "%s: header: dim %lld, but %s takes %d-dimensional %s", r->name, (long long)r->dim, O->cname, din,
            !model ? "embeddings (its text rows)" : O->projected ? "projected features (tensor 'text')" :
            h->kind == CLF_COSINE ? "features (tensor 'proj.weight')" : "features (tensor 'fc.weight')");
    stream_matrix m;
    stream_matrix_init(&m);
    if (stream_matrix_read(&m, r, drop_bad, O->d, err) != 0) die(1, "%s", err);
    float *logits = xmalloc((size_t)(m.n ? m.n : 1) * h->C * sizeof(float));
    clf_logits(h, logits, m.rows, (int)m.n, O->projected);
    output_open(out, O->output);
    sw_init(O->s, out->fd);
    write_header(O->s, h, method, &m.header, argc, argv);
    for (int64_t i = 0; i < m.n; i++) {
        item_keys k = {span_of(m.id[i]), span_of(m.domain[i]), span_of(m.split[i]), m.label[i], m.view[i]};
        write_prediction(O, &k, logits + (size_t)i * h->C);
    }
    uint64_t upstream = (uint64_t)m.dropped;
    free(logits);
    stream_matrix_free(&m);
    return upstream;
}

int main(int argc, char **argv)
{
    tool_init("predict");
    const char *model = NULL, *text = NULL, *method = NULL, *weights = NULL, *arch = "auto";
    long long threads = 0, batch = 32;
    tool_opts to = {0};
    static const struct option opts[] = {{"model", required_argument, 0, 'm'},
                                         {"text", required_argument, 0, 'T'},
                                         {"weights", required_argument, 0, 'W'},
                                         {"arch", required_argument, 0, 'a'},
                                         {"batch", required_argument, 0, 'b'},
                                         {"method", required_argument, 0, 'M'},
                                         {"threads", required_argument, 0, 't'},
                                         OPT_MAX_ERRORS,
                                         OPT_OUTPUT,
                                         OPT_VERBOSE,
                                         OPT_HELP,
                                         OPT_VERSION,
                                         OPT_END};
    int c;
    while ((c = getopt_long(argc, argv, "o:vh", opts, NULL)) != -1) {
        switch (c) {
        case 'm': model = optarg; break;
        case 'T': text = optarg; break;
        case 'W': weights = optarg; break;
        case 'a': arch = optarg; break;
        case 'b': batch = parse_int(USAGE, "--batch", optarg, 1, 4096); break;
        case 'M': method = optarg; break;
        case 't': threads = parse_int(USAGE, "--threads", optarg, 0, 1024); break;
        default: tool_option(c, USAGE, &to);
        }
    }
    if (!model == !text) usage_error(USAGE, "give one of --model and --text");
    if (weights && !model) usage_error(USAGE, "--weights needs --model: the student's head");
    int known = strcmp(arch, "auto") == 0;
    for (int i = 0; STUDENT_ARCHS[i]; i++) known |= strcmp(arch, STUDENT_ARCHS[i]) == 0;
    if (!known) usage_error(USAGE, "--arch: unknown architecture '%s'", arch);
    if (argc - optind > 1) usage_error(USAGE, "one input at most");
    if (threads > 0) blas_set_threads((int)threads);

    char err[VL_ERRLEN];
    clf_head h;
    if (!model) load_text(&h, text);
    else if (clf_open(&h, model, err) != 0) die(1, "%s", err);
    sr *r = open_stream(optind < argc ? argv[optind] : NULL);
    tool_out out;
    sw s;
    drops d = {0, to.max_errors};
    out_ctx O = {.h = &h, .cname = model ? model : text, .s = &s, .d = &d, .source = r->name, .output = to.output};
    uint64_t upstream;
    if (weights) upstream = predict_images(&O, weights, arch, (int)batch, r, &out, method, argc, argv);
    else upstream = predict_embeddings(&O, model, text, r, &out, method, argc, argv);
    close_stream(r);
    /* the drops upstream and here */
    s.dropped = upstream + d.dropped;
    sw_trailer_begin(&s);
    sw_trailer_end(&s);
    output_commit(&out, &s);
    sw_free(&s);
    clf_free(&h);
    return 0;
}
