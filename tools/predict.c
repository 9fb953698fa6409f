/* predict: class scores and predictions for a stream of embeddings.
 *
 * The classifier is a head file (--model: align-fit's cosine head, whose
 * projection maps student features into the teacher's space where they are
 * compared with the class texts, or its linear head) or a text stream
 * (--text: the teacher's zero-shot classifier, one text embedding per
 * class). The input is an embedding stream in the space the classifier
 * expects: the student's features, the teacher's space for projected
 * features (student-embed --head) and for the teacher's own image
 * embeddings. The output is a prediction stream in input order: per item its
 * logits, the argmax and the input's label, domain, split and view; its
 * header says which run made the classifier (method, seed, source domains,
 * settings) for score. */
#include "common.h"

#include "blas.h"
#include "classifier.h"

#include <getopt.h>
#include <stdlib.h>
#include <string.h>

static const char USAGE[] =
    "usage: predict (--model MODEL | --text TEXT.mp) [--method NAME] [--threads N]\n"
    "               [--max-errors N] [-v] [-o FILE] [FILE]\n";

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
 * for each of 0..C-1, named by their class. */
static void load_text(clf_head *h, const char *path, char *space, size_t spacelen)
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
    snprintf(space, spacelen, "teacher:%s", t.space + 5);
    free(rows), free(classes);
    stream_matrix_free(&t);
}

static void write_str(mpw *w, const char *key, const char *s)
{
    if (!s) return;
    mpw_str(w, key);
    mpw_str(w, s);
}

static void write_index(mpw *w, const char *key, int64_t x)
{
    if (x == STREAM_NONE) return;
    mpw_str(w, key);
    mpw_int(w, x);
}

int main(int argc, char **argv)
{
    tool_init("predict");
    const char *model = NULL, *text = NULL, *method = NULL;
    long long threads = 0;
    tool_opts to = {0};
    static const struct option opts[] = {{"model", required_argument, 0, 'm'},
                                         {"text", required_argument, 0, 'T'},
                                         {"method", required_argument, 0, 'M'},
                                         {"threads", required_argument, 0, 't'},
                                         OPT_MAX_ERRORS,
                                         OPT_OUTPUT,
                                         OPT_VERBOSE,
                                         OPT_HELP,
                                         OPT_END};
    int c;
    while ((c = getopt_long(argc, argv, "o:vh", opts, NULL)) != -1) {
        switch (c) {
        case 'm': model = optarg; break;
        case 'T': text = optarg; break;
        case 'M': method = optarg; break;
        case 't': threads = parse_int(USAGE, "--threads", optarg, 0, 1024); break;
        default: tool_option(c, USAGE, &to);
        }
    }
    if (!model == !text) usage_error(USAGE, "give one of --model and --text");
    if (argc - optind > 1) usage_error(USAGE, "one input at most");
    if (threads > 0) blas_set_threads((int)threads);

    char err[VL_ERRLEN], teacher[512];
    clf_head h;
    const char *cname = model ? model : text;
    if (model) {
        if (clf_open(&h, model, err) != 0) die(1, "%s", err);
    } else {
        load_text(&h, text, teacher, sizeof teacher);
        h.teacher_space = xstrdup(teacher);
        free(h.method);
        h.method = xstrdup("zeroshot");
    }

    /* the input's space says what its vectors are: student features, or
     * vectors in the teacher's space (projected features, the teacher's
     * image embeddings) */
    sr *r = open_stream(optind < argc ? argv[optind] : NULL);
    if (sr_header(r, "embedding") != 0) die(1, "%s", r->err);
    const mp_val *sp = mp_get(&r->header, "space");
    int projected;
    if (h.student_space && mp_str_eq(sp, h.student_space)) projected = 0;
    else if (h.kind == CLF_COSINE && mp_str_eq(sp, h.teacher_space)) projected = 1;
    else if (!model)
        die(1, "%s: header: space '%.*s', but the text rows of %s are for '%s' (the teacher's image embeddings)",
            r->name, (int)sp->len, sp->v.s, text, h.teacher_space);
    else if (h.kind == CLF_COSINE)
        die(1, "%s: header: space '%.*s', but %s takes '%s' (features) or '%s' (projected features)", r->name,
            (int)sp->len, sp->v.s, model, h.student_space, h.teacher_space);
    else
        die(1, "%s: header: space '%.*s', but %s takes '%s'", r->name, (int)sp->len, sp->v.s, model,
            h.student_space);
    int din = projected ? h.D : h.Ds;
    if (r->dim != din)
        die(1, "%s: header: dim %lld, but %s takes %d-dimensional %s", r->name, (long long)r->dim, cname, din,
            !model ? "embeddings (its text rows)" : projected ? "projected features (tensor 'text')" :
            h.kind == CLF_COSINE ? "features (tensor 'proj.weight')" : "features (tensor 'fc.weight')");

    stream_matrix m;
    stream_matrix_init(&m);
    drops d = {0, to.max_errors};
    if (stream_matrix_read(&m, r, drop_bad, &d, err) != 0) die(1, "%s", err);
    close_stream(r);
    /* an item whose label is no class of this classifier could not be scored */
    char *keep = xcalloc((size_t)(m.n ? m.n : 1), 1);
    for (int64_t i = 0; i < m.n; i++) {
        keep[i] = m.label[i] == STREAM_NONE || m.label[i] < h.C;
        if (!keep[i] && drop_item(&d.dropped, d.max_errors, "%s: id '%.200s': label %lld outside the %d classes of %s: dropped",
                                  m.source, m.id[i], (long long)m.label[i], h.C, cname))
            die_dropped(d.dropped, d.max_errors);
    }

    float *logits = xmalloc((size_t)(m.n ? m.n : 1) * h.C * sizeof(float));
    clf_logits(&h, logits, m.rows, (int)m.n, projected);

    tool_out out;
    sw s;
    output_open(&out, to.output);
    sw_init(&s, out.fd);
    stream_prediction_info pi = {.classes = (const char *const *)h.classes, .nclasses = h.C,
                                 .method = method ? method : h.method, .has_seed = h.has_seed, .seed = h.seed,
                                 .sources = (const char *const *)h.sources, .nsources = h.nsources,
                                 .settings = h.settings};
    sw_header_prediction(&s, &pi, &m.header, argc, argv);
    if (sw_header_end(&s) != 0) die(1, "write error: %s", strerror(s.w.err));
    for (int64_t i = 0; i < m.n; i++) {
        if (!keep[i]) continue;
        const float *lg = logits + (size_t)i * h.C;
        sw_item_begin(&s);
        write_str(&s.w, "id", m.id[i]);
        mpw_str(&s.w, "pred");
        mpw_int(&s.w, clf_argmax(lg, h.C));
        mpw_str(&s.w, "logits");
        mpw_bin(&s.w, lg, (size_t)h.C * sizeof(float));
        write_index(&s.w, "label", m.label[i]);
        write_str(&s.w, "domain", m.domain[i]);
        write_str(&s.w, "split", m.split[i]);
        write_index(&s.w, "view", m.view[i]);
        if (sw_item_end(&s) != 0) die(1, "write error: %s", strerror(s.w.err));
    }
    /* the drops upstream and here */
    s.dropped = (uint64_t)m.dropped + d.dropped;
    sw_trailer_begin(&s);
    sw_trailer_end(&s);
    output_commit(&out, &s);
    sw_free(&s);
    free(keep), free(logits);
    stream_matrix_free(&m);
    clf_free(&h);
    return 0;
}
