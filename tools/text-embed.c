/* text-embed: class names x prompt templates -> one text embedding per class,
 * from the CLIP teacher's text tower.
 *
 * Each class name (from a list, one per line, or from a manifest's label and
 * class columns, in label order) is put into every template ("{}" replaced
 * by the name, "_" in the name read as a space), the prompts are tokenised
 * with CLIP's BPE and encoded, and the class's vector is the mean of its
 * L2-normalised prompt embeddings, normalised again: CLIP's prompt
 * ensembling. Output: an embedding stream in the space "text:<model id>", one
 * item per class with id and class = the name as given, label = its index,
 * text = its first prompt.
 *
 * Black-box (--exec), the text tower is a vendor's: the prompts go to the
 * command as a text stream (id = query number, text), its embedding stream
 * comes back and the ensembling is done here; the cache, the budget and the
 * query counts are teacher-embed's (query.c). */
#include "common.h"
#include "query.h"

#include "blas.h"
#include "manifest.h"
#include "models/clip.h"
#include "tok.h"

#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static const char USAGE[] =
    "usage: text-embed --model DIR|FILE (--classes FILE | --manifest FILE) [--template T ...]\n"
    "                  [--templates FILE] [--bpe FILE] [--truncate] [--batch N] [--threads N]\n"
    "                  [-o FILE] [-v]\n"
    "       text-embed --exec CMD [--model-id ID] (--classes FILE | --manifest FILE)\n"
    "                  [--template T ...] [--templates FILE] [--cache DIR] [--max-queries N]\n"
    "                  [--timeout S] [-o FILE] [-v]\n"
    "  --model DIR|FILE   white-box: a Hugging Face or OpenCLIP directory, or an OpenAI-named\n"
    "                     .safetensors\n"
    "  --exec CMD         black-box: CMD reads a text stream and writes an embedding stream\n"
    "  --model-id ID      the black-box teacher's identity for the cache and the space (default: CMD)\n"
    "  --classes FILE     class names, one per line (label = position among the non-empty lines,\n"
    "                     from 0)\n"
    "  --manifest FILE    class names by label from a manifest's label and class columns\n"
    "  --template T       prompt template, {} standing for the class name (repeatable;\n"
    "                     default 'a photo of a {}')\n"
    "  --templates FILE   prompt templates, one per line\n"
    "  --bpe FILE         tokenizer merges (bpe_simple_vocab_16e6.txt.gz) instead of the model's\n"
    "                     tokenizer files or the merges file installed with the programs\n"
    "  --truncate         cut prompts longer than the context (77 tokens) instead of failing\n"
    "  --batch N          prompts per forward pass (default 64)\n"
    "  --threads N        threads (default: OPENBLAS_NUM_THREADS, else the cores)\n"
    "  --cache DIR        content-addressed cache of the vendor's answers\n"
    "  --max-queries N    fail once N prompts have been sent to the vendor (default: no limit)\n"
    "  --timeout S        kill the vendor and fail when no answer came for S seconds (default 300;\n"
    "                     0: wait for ever)\n"
    "  -o FILE            write FILE atomically instead of standard output\n"
    "  -h, --help         this text\n"
    "  --version          the version\n";

static const char DEFAULT_TEMPLATE[] = "a photo of a {}";

typedef struct {
    char **v;
    size_t n, cap;
} strs;

static void strs_push(strs *a, char *s)
{
    if (a->n == a->cap) {
        a->cap = a->cap ? 2 * a->cap : 16;
        a->v = xrealloc(a->v, a->cap * sizeof *a->v);
    }
    a->v[a->n++] = s;
}

static FILE *open_input(const char *path)
{
    if (strcmp(path, "-") == 0) return stdin;
    FILE *f = fopen(path, "r");
    if (!f) die(1, "%s: %s", path, strerror(errno));
    return f;
}

/* Non-empty lines of a text file (a trailing \r removed), in order. */
static void read_lines(const char *path, strs *out)
{
    FILE *f = open_input(path);
    char *line = NULL;
    size_t cap = 0;
    ssize_t n;
    while ((n = getline(&line, &cap, f)) >= 0) {
        while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r')) line[--n] = 0;
        if (memchr(line, 0, (size_t)n)) die(1, "%s: a NUL byte in line %zu", path, out->n + 1);
        if (n > 0) strs_push(out, xstrdup(line));
    }
    if (ferror(f)) die(1, "%s: %s", path, strerror(errno));
    free(line);
    if (f != stdin) fclose(f);
}

/* Class names by label from a manifest: every label 0..K-1 must have one
 * class name, the same on every row. */
static void read_manifest_classes(const char *path, strs *out)
{
    FILE *f = open_input(path);
    mf_reader m;
    mf_open(&m, f, strcmp(path, "-") == 0 ? "<stdin>" : path);
    mf_row row;
    char err[VL_ERRLEN];
    int rc;
    uint64_t *first_line = NULL;
    while ((rc = mf_next(&m, &row, err)) != 0) {
        if (rc < 0) die(1, "%s", err);
        if (row.label < 0 && !row.cls) continue; /* unlabelled images carry no class */
        if (row.label < 0 || !row.cls)
            die(1, "%s:%llu: a row with %s but no %s", m.name, (unsigned long long)row.line,
                row.label < 0 ? "a class" : "a label", row.label < 0 ? "label" : "class");
        if (row.label >= (1 << 20)) die(1, "%s:%llu: label %lld is too large", m.name,
                                        (unsigned long long)row.line, (long long)row.label);
        size_t k = (size_t)row.label;
        if (k >= out->n) {
            while (out->cap <= k) {
                out->cap = out->cap ? 2 * out->cap : 16;
                out->v = xrealloc(out->v, out->cap * sizeof *out->v);
            }
            first_line = xrealloc(first_line, out->cap * sizeof *first_line);
            for (size_t i = out->n; i <= k; i++) out->v[i] = NULL, first_line[i] = 0;
            out->n = k + 1;
        }
        if (!out->v[k]) {
            out->v[k] = xstrdup(row.cls);
            first_line[k] = row.line;
        } else if (strcmp(out->v[k], row.cls) != 0) {
            die(1, "%s:%llu: label %zu is class '%s' here but '%s' on line %llu", m.name,
                (unsigned long long)row.line, k, row.cls, out->v[k], (unsigned long long)first_line[k]);
        }
    }
    for (size_t k = 0; k < out->n; k++)
        if (!out->v[k]) die(1, "%s: no row has label %zu (labels must run from 0 without gaps)", m.name, k);
    if (out->n == 0) die(1, "%s: no labelled rows", m.name);
    mf_close(&m);
    free(first_line);
    if (f != stdin) fclose(f);
}

/* template with every "{}" replaced by the class name, '_' read as ' ' */
static char *make_prompt(const char *tmpl, const char *cls)
{
    size_t nc = strlen(cls), k = 0;
    char *name = xstrdup(cls);
    for (size_t i = 0; i < nc; i++)
        if (name[i] == '_') name[i] = ' ';
    for (const char *p = strstr(tmpl, "{}"); p; p = strstr(p + 2, "{}")) k++;
    char *out = xmalloc(strlen(tmpl) + k * nc + 1), *o = out;
    for (const char *p = tmpl; *p;) {
        if (p[0] == '{' && p[1] == '}') {
            memcpy(o, name, nc);
            o += nc;
            p += 2;
        } else {
            *o++ = *p++;
        }
    }
    *o = 0;
    free(name);
    return out;
}

/* Tokenises template tmpl filled with class cls into row[0..ctx) and returns
 * its length; dies with a message naming the prompt when it is too long
 * (without truncate) or holds an id the model does not have. */
static const char *tok_path; /* for messages */

static int tokenize_prompt(tok *tk, const char *tmpl, const char *cls, int ctx, int truncate, int vocab, int32_t *row)
{
    char err[VL_ERRLEN];
    char *prompt = make_prompt(tmpl, cls);
    int n = tok_tokenize(tk, prompt, strlen(prompt), ctx, truncate, row, err);
    if (n < 0)
        die(1, "class '%s', prompt '%s': %s%s", cls, prompt, err,
            strstr(err, "longer than") ? "; --truncate keeps its start" : "");
    for (int i = 0; i < n; i++)
        if (row[i] >= vocab)
            die(1, "prompt '%s': token id %d is outside the model's vocabulary of %d: the tokenizer (%s) does not "
                   "belong to the model", prompt, row[i], vocab, tok_path);
    free(prompt);
    return n;
}

/* ---- the output: prompt embeddings ensembled per class ---- */

typedef struct {
    sw s;
    const strs *classes, *templates;
    const char *space;
    int argc;
    char **argv;
    int D, header_done;
    double *acc;
    float *vec;
} ensemble;

static void write_header(ensemble *E, int D)
{
    if (E->header_done) {
        if (D != E->D) die(1, "the teacher answered %d-dimensional vectors after %d-dimensional ones", D, E->D);
        return;
    }
    E->D = D;
    E->acc = xcalloc((size_t)D, sizeof *E->acc);
    E->vec = xmalloc((size_t)D * sizeof *E->vec);
    sw *s = &E->s;
    sw_header_embedding(s, D, E->space, NULL, E->argc, E->argv);
    mpw_str(&s->w, "templates");
    mpw_array(&s->w);
    for (size_t j = 0; j < E->templates->n; j++) mpw_str(&s->w, E->templates->v[j]);
    mpw_end(&s->w);
    if (sw_header_end(s) != 0) die(1, "write error: %s", strerror(s->w.err));
    E->header_done = 1;
}

/* Adds prompt q's embedding (class q / P, template q % P; the prompts come
 * in order); a class's item is written once its last prompt is in. */
static void ensemble_add(ensemble *E, size_t q, const float *e, int D)
{
    write_header(E, D);
    size_t P = E->templates->n, k = q / P;
    for (int d = 0; d < D; d++) E->acc[d] += e[d];
    if (q % P != P - 1) return;
    double norm = 0;
    for (int d = 0; d < D; d++) norm += E->acc[d] * E->acc[d];
    norm = sqrt(norm);
    const char *cls = E->classes->v[k];
    if (!(norm > 0) || !isfinite(norm)) die(1, "class '%s': the prompt embeddings cancel out or are not finite", cls);
    for (int d = 0; d < D; d++) E->vec[d] = (float)(E->acc[d] / norm), E->acc[d] = 0;
    char *first = make_prompt(E->templates->v[0], cls);
    sw *s = &E->s;
    sw_item_begin(s);
    mpw_str(&s->w, "id");
    mpw_str(&s->w, cls);
    mpw_str(&s->w, "vec");
    mpw_bin(&s->w, E->vec, (size_t)D * sizeof *E->vec);
    mpw_str(&s->w, "label");
    mpw_int(&s->w, (int64_t)k);
    mpw_str(&s->w, "class");
    mpw_str(&s->w, cls);
    mpw_str(&s->w, "text");
    mpw_str(&s->w, first);
    free(first);
    if (sw_item_end(s) != 0) die(1, "write error: %s", strerror(s->w.err));
}

/* ---- white-box: the text tower here ---- */

static void embed_here(ensemble *E, const char *model_path, const char *bpe, int truncate, int batch, tool_out *out,
                       const char *outpath)
{
    char err[VL_ERRLEN];
    char *shipped = tool_share_file(TOK_BPE_FILE);
    char *tok_file = tok_locate(model_path, bpe, shipped, err);
    if (!tok_file) die(1, "%s", err);
    tok_path = tok_file;
    tok *tk;
    if (tok_load(&tk, tok_path, err) != 0) die(1, "%s", err);
    clip_model *m;
    if (clip_load_towers(&m, model_path, CLIP_TEXT, err) != 0) die(1, "%s", err);
    int ctx = clip_context_length(m), D = clip_embed_dim(m), V = clip_vocab_size(m);
    const strs *C = E->classes, *Tm = E->templates;

    /* every prompt is tokenised (and checked) before anything is written */
    size_t P = Tm->n, N = C->n * P;
    int32_t *bt = xmalloc((size_t)batch * ctx * sizeof *bt);
    for (size_t q = 0; q < N; q++) tokenize_prompt(tk, Tm->v[q % P], C->v[q / P], ctx, truncate, V, bt);
    char *space = xmalloc(strlen(clip_model_id(m)) + 8);
    sprintf(space, "text:%s", clip_model_id(m));
    E->space = space;
    output_open(out, outpath);
    sw_init(&E->s, out->fd);
    write_header(E, D);

    /* prompts in batches, class after class; each batch is only as long as
     * its longest prompt, as the causal mask makes the positions after the
     * end token irrelevant */
    float *emb = xmalloc((size_t)batch * D * sizeof *emb);
    progress_start("prompts", N);
    for (size_t q0 = 0; q0 < N; q0 += (size_t)batch) {
        int B = (int)(N - q0 < (size_t)batch ? N - q0 : (size_t)batch), T = 1;
        for (int b = 0; b < B; b++) {
            size_t q = q0 + (size_t)b;
            int n = tokenize_prompt(tk, Tm->v[q % P], C->v[q / P], ctx, truncate, V, bt + (size_t)b * ctx);
            if (n > T) T = n;
        }
        for (int b = 1; b < B; b++) memmove(bt + (size_t)b * T, bt + (size_t)b * ctx, (size_t)T * sizeof *bt);
        if (clip_encode_text(m, bt, B, T, emb, err) != 0) die(1, "%s", err);
        for (int b = 0; b < B; b++) ensemble_add(E, q0 + (size_t)b, emb + (size_t)b * D, D);
        progress_count(q0 + (size_t)B, 0, NULL);
    }
    progress_end(N, 0, "%zu classes", C->n);
    sw_trailer_begin(&E->s);
    sw_trailer_end(&E->s);
    clip_free(m);
    tok_free(tk);
    free(emb), free(bt), free(tok_file), free(shipped);
}

/* ---- black-box: the prompts sent to a vendor ---- */

static void emit(q_run *R, const q_item *p, const uint8_t *vec, int dim)
{
    ensemble *E = R->ctx;
    float *e = xmalloc((size_t)dim * sizeof *e);
    memcpy(e, vec, (size_t)dim * sizeof *e);
    ensemble_add(E, p->index, e, dim);
    free(e);
}

static void finish(q_run *R, int dim)
{
    ensemble *E = R->ctx;
    write_header(E, dim);
    q_trailer(R, &E->s);
}

static void text_query_header(sw *s) { sw_header_text(s, NULL, 0, NULL); }

/* the vendor gets the prompt and its query number only */
static void write_text_query(mpw *w, const void *arg)
{
    mpw_str(w, "text");
    mpw_str(w, arg);
}

static void embed_remote(ensemble *E, q_run *R)
{
    const strs *C = E->classes, *Tm = E->templates;
    size_t P = Tm->n, N = C->n * P;
    char *space = xmalloc(strlen(R->identity) + 8);
    sprintf(space, "text:%s", R->identity);
    E->space = space;
    q_init(R);
    progress_start("prompts", N);
    for (size_t q = 0; q < N; q++) {
        char *prompt = make_prompt(Tm->v[q % P], C->v[q / P]), where[512];
        snprintf(where, sizeof where, "class '%s', prompt '%s'", C->v[q / P], prompt);
        q_item *p = xcalloc(1, sizeof *p);
        p->index = q;
        if (q_lookup(R, p, prompt, strlen(prompt), NULL, 0, where, 0)) {
            q_push(R, p);
        } else if (q_over_budget(R)) {
            q_item_free(p);
            q_end(R, 1);
            q_budget_failed(R, where);
        } else {
            q_send(R, p, where, write_text_query, prompt);
        }
        free(prompt);
        q_progress(R, 0, 0);
    }
    q_end(R, 0);
    q_progress(R, 1, N);
}

int main(int argc, char **argv)
{
    tool_init("text-embed");
    const char *model_path = NULL, *classes_path = NULL, *manifest_path = NULL, *bpe = NULL, *outpath = NULL;
    int truncate = 0, batch = 64, threads = 0, batch_set = 0, timeout_set = 0;
    q_run R = {.what = "prompts", .max_queries = -1, .cache_tag = "vl2v text cache 1", .variant = "text",
               .query_header = text_query_header, .emit = emit, .finish = finish};
    strs templates = {0};
    static const struct option opts[] = {{"model", required_argument, 0, 'm'},
                                         {"exec", required_argument, 0, 'X'},
                                         {"model-id", required_argument, 0, 'I'},
                                         {"classes", required_argument, 0, 'c'},
                                         {"manifest", required_argument, 0, 'M'},
                                         {"template", required_argument, 0, 'T'},
                                         {"templates", required_argument, 0, 'F'},
                                         {"bpe", required_argument, 0, 'B'},
                                         {"truncate", no_argument, 0, 'x'},
                                         {"batch", required_argument, 0, 'b'},
                                         {"threads", required_argument, 0, 't'},
                                         {"cache", required_argument, 0, 'C'},
                                         {"max-queries", required_argument, 0, 'Q'},
                                         {"timeout", required_argument, 0, 'W'},
                                         {"output", required_argument, 0, 'o'},
                                         {"verbose", no_argument, 0, 'v'},
                                         {"help", no_argument, 0, 'h'},
                                         OPT_VERSION,
                                         {0, 0, 0, 0}};
    int c;
    while ((c = getopt_long(argc, argv, "m:o:vh", opts, NULL)) != -1) {
        switch (c) {
        case 'm': model_path = optarg; break;
        case 'X': R.exec_cmd = optarg; break;
        case 'I': R.identity = optarg; break;
        case 'c': classes_path = optarg; break;
        case 'M': manifest_path = optarg; break;
        case 'T': strs_push(&templates, xstrdup(optarg)); break;
        case 'F': read_lines(optarg, &templates); break;
        case 'B': bpe = optarg; break;
        case 'x': truncate = 1; break;
        case 'b':
            batch = (int)parse_int(USAGE, "--batch", optarg, 1, 4096);
            batch_set = 1;
            break;
        case 't': threads = (int)parse_int(USAGE, "--threads", optarg, 1, 1024); break;
        case 'C': R.cache_dir = optarg; break;
        case 'W':
            R.timeout = parse_double(USAGE, "--timeout", optarg, 0, 1e9);
            timeout_set = 1;
            break;
        case 'Q': R.max_queries = parse_int(USAGE, "--max-queries", optarg, 0, INT64_MAX); break;
        case 'o': outpath = optarg; break;
        case 'v': tool_verbose = 1; break;
        case OPT_VERSION_VAL: version_exit();
        case 'h': usage_help(USAGE);
        default: usage_bad(USAGE);
        }
    }
    if (optind < argc) usage_error(USAGE, "unexpected argument '%s'", argv[optind]);
    if (!model_path == !R.exec_cmd) usage_error(USAGE, "give one of --model and --exec");
    if (R.identity && !R.exec_cmd) usage_error(USAGE, "--model-id goes with --exec");
    if (timeout_set && !R.exec_cmd) usage_error(USAGE, "--timeout goes with --exec");
    if (!timeout_set) R.timeout = Q_TIMEOUT_DEFAULT;
    if (R.exec_cmd && (bpe || truncate || batch_set || threads))
        usage_error(USAGE, "--bpe, --truncate, --batch and --threads go with --model (the vendor decides them)");
    if (model_path && (R.cache_dir || R.max_queries >= 0)) usage_error(USAGE, "--cache and --max-queries go with --exec");
    if (!classes_path == !manifest_path) usage_error(USAGE, "give one of --classes and --manifest");
    if (templates.n == 0) strs_push(&templates, xstrdup(DEFAULT_TEMPLATE));
    for (size_t i = 0; i < templates.n; i++)
        if (!strstr(templates.v[i], "{}")) usage_error(USAGE, "template '%s' has no {} for the class name", templates.v[i]);

    strs classes = {0};
    if (classes_path) read_lines(classes_path, &classes);
    else read_manifest_classes(manifest_path, &classes);
    if (classes.n == 0) die(1, "%s: no class names", classes_path ? classes_path : manifest_path);
    for (size_t i = 0; i < classes.n; i++)
        for (size_t j = 0; j < i; j++)
            if (strcmp(classes.v[i], classes.v[j]) == 0)
                die(1, "%s: class '%s' appears twice (labels %zu and %zu)", classes_path ? classes_path : manifest_path,
                    classes.v[i], j, i);
    blas_set_threads(threads);

    ensemble E = {.classes = &classes, .templates = &templates, .argc = argc, .argv = argv};
    tool_out out;
    if (R.exec_cmd) {
        if (!R.identity) R.identity = R.exec_cmd;
        output_open(&out, outpath);
        sw_init(&E.s, out.fd);
        R.ctx = &E;
        embed_remote(&E, &R);
    } else {
        embed_here(&E, model_path, bpe, truncate, batch, &out, outpath);
    }
    output_commit(&out, &E.s);
    for (size_t i = 0; i < classes.n; i++) free(classes.v[i]);
    for (size_t i = 0; i < templates.n; i++) free(templates.v[i]);
    free(classes.v), free(templates.v), free(E.acc), free(E.vec), free((char *)E.space);
    return 0;
}
