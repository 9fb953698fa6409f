/* teacher-embed: image stream in, embedding stream out, from a CLIP teacher.
 *
 * White-box (--model): the CLIP image tower runs here, a batch of images at a
 * time. Black-box (--exec): the teacher is a command that reads an image
 * stream and writes an embedding stream (a vendor's endpoint, e.g. over ssh);
 * the images that miss the cache are streamed to it while a second thread
 * reads its answers, so a vendor that batches never deadlocks against us.
 * Either way a content-addressed cache (--cache) answers images seen before,
 * keyed by (model identity, normalisation, image size and pixel bytes), and
 * a query budget (--max-queries) bounds what is paid for. Items keep their
 * input order, ids and labels; header and items are the same bytes whether a
 * vector came from the cache or from a query. An answer that is not a vector
 * of the teacher's size with finite values drops its item (counted, up to
 * --max-errors); an answer that joins no query fails the run. The cache,
 * the budget and the vendor process are query.c's, shared with text-embed.
 *
 * White-box, the input may also be a text stream (id, text), as
 * text-embed --exec sends it: each text is tokenised and encoded by the
 * model's text tower, which makes this program the vendor side of both. */
#include "common.h"
#include "query.h"

#include "blas.h"
#include "embed.h"
#include "image.h"
#include "models/clip.h"
#include "tok.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

static const char USAGE[] =
    "usage: teacher-embed --model DIR|FILE [--normalize model|clip|imagenet] [--resize] [--bpe FILE]\n"
    "                     [--batch N] [--threads N] [--cache DIR] [--max-queries N] [--max-errors N]\n"
    "                     [-o FILE] [-v] [FILE]\n"
    "       teacher-embed --exec CMD [--model-id ID] [--normalize model|clip|imagenet] [--cache DIR]\n"
    "                     [--max-queries N] [--timeout S] [--max-errors N] [-o FILE] [-v] [FILE]\n"
    "  --model DIR|FILE   white-box: a Hugging Face CLIP directory, an OpenCLIP directory or an\n"
    "                     OpenAI/OpenCLIP .safetensors\n"
    "  --exec CMD         black-box: CMD reads an image stream and writes an embedding stream\n"
    "  --model-id ID      the black-box teacher's identity for the cache and the space (default: CMD)\n"
    "  --normalize N      model (the model's own, else CLIP's; default), clip or imagenet\n"
    "  --resize           resize other sizes to the model's (PIL bilinear) instead of dropping them\n"
    "  --bpe FILE         a text stream's tokenizer merges instead of the model's or the shipped one\n"
    "  --batch N          images or prompts per forward pass (default 16)\n"
    "  --threads N        threads (default: OPENBLAS_NUM_THREADS, else the cores)\n"
    "  --cache DIR        content-addressed cache of answers, shared by runs and processes\n"
    "  --max-queries N    fail once N images have been sent to the teacher (default: no limit)\n"
    "  --timeout S        black-box: kill the teacher and fail when no answer came for S seconds\n"
    "                     (default 300; 0: wait for ever)\n"
    "  --max-errors N     fail once more than N items have been dropped (default 0)\n"
    "  -o FILE            write FILE atomically instead of standard output\n"
    "  -h, --help         this text\n"
    "  --version          the version\n";

static const float IMAGENET_MEAN[3] = {0.485f, 0.456f, 0.406f};
static const float IMAGENET_STD[3] = {0.229f, 0.224f, 0.225f};

/* ---- output items ---- */

static uint8_t *encode_meta(const mp_val *item, size_t *len)
{
    static const char *const id_key[] = {"id", NULL};
    mpw w;
    mpw_init(&w, -1);
    mpw_map(&w);
    stream_copy_keys(&w, item, id_key);
    stream_copy_keys(&w, item, STREAM_META_KEYS);
    mpw_end(&w);
    *len = w.len;
    return w.buf;
}

/* Writes one output item: the saved keys in their order, then vec. */
static void write_item(sw *s, const uint8_t *meta, size_t meta_len, const uint8_t *vec, int dim)
{
    mp_arena a = {0};
    mp_val m;
    size_t used;
    char err[VL_ERRLEN];
    if (mp_decode(&a, meta, meta_len, meta_len, &m, &used, err) != 1) die(1, "internal: %s", err);
    sw_item_begin(s);
    for (uint32_t i = 0; i < m.len; i++) {
        mpw_value(&s->w, &m.v.a[2 * i]);
        mpw_value(&s->w, &m.v.a[2 * i + 1]);
        if (i == 0) {
            /* vec right after id, as the other embedding producers write it */
            mpw_str(&s->w, "vec");
            mpw_bin(&s->w, vec, (size_t)dim * 4);
        }
    }
    if (sw_item_end(s) != 0) die(1, "write error: %s", strerror(s->w.err));
    mp_arena_free(&a);
}

static void write_item_of(sw *s, const q_item *p, const uint8_t *vec, int dim)
{
    write_item(s, p->data, p->data_len, vec, dim);
}

/* ---- the run ---- */

typedef struct {
    q_run q;
    int resize, batch, threads;
    const char *normalize; /* its name in the header and the cache keys; NULL for text */
    const char *space;
    sw out;
    int header_done, dim;
    const mp_val *in_header;
    int argc;
    char **argv;
} run;

static void write_header(run *R, int dim)
{
    if (R->header_done) {
        if (dim != R->dim) die(1, "the teacher answered %d-dimensional vectors after %d-dimensional ones", dim, R->dim);
        return;
    }
    R->dim = dim;
    sw_header_embedding(&R->out, dim, R->space, R->in_header, R->argc, R->argv);
    if (R->normalize) {
        mpw_str(&R->out.w, "normalize");
        mpw_str(&R->out.w, R->normalize);
    }
    if (sw_header_end(&R->out) != 0) die(1, "write error: %s", strerror(R->out.w.err));
    R->header_done = 1;
}

/* black-box: the output thread's callbacks */
static void emit(q_run *q, const q_item *p, const uint8_t *vec, int dim)
{
    run *R = q->ctx;
    write_header(R, dim);
    write_item_of(&R->out, p, vec, dim);
}

static void finish(q_run *q, int dim)
{
    run *R = q->ctx;
    write_header(R, dim);
    q_trailer(q, &R->out);
}

static void image_query_header(sw *s) { sw_header_image(s, NULL, 0, NULL); }

typedef struct {
    const uint8_t *pix;
    int h, w;
} image_query;

/* the vendor gets pixels and query numbers only: no ids, labels or history */
static void write_image_query(mpw *w, const void *arg)
{
    const image_query *q = arg;
    mpw_str(w, "h");
    mpw_int(w, q->h);
    mpw_str(w, "w");
    mpw_int(w, q->w);
    mpw_str(w, "pix");
    mpw_bin(w, q->pix, (size_t)q->h * q->w * 3);
}

/* The name of a normalisation for the header and the cache keys. */
static char *norm_name(const float mean[3], const float std[3])
{
    if (!memcmp(mean, CLIP_MEAN, sizeof CLIP_MEAN) && !memcmp(std, CLIP_STD, sizeof CLIP_STD)) return xstrdup("clip");
    if (!memcmp(mean, IMAGENET_MEAN, sizeof IMAGENET_MEAN) && !memcmp(std, IMAGENET_STD, sizeof IMAGENET_STD))
        return xstrdup("imagenet");
    char b[160];
    snprintf(b, sizeof b, "mean %.9g %.9g %.9g std %.9g %.9g %.9g", mean[0], mean[1], mean[2], std[0], std[1], std[2]);
    return xstrdup(b);
}

/* ---- the white-box and black-box loops ---- */

/* The next item of r: 1 with *item and where set, 0 at the end, -1 for a
 * malformed item (dropped). A repeated (id, view) would be paid for twice
 * and could not be joined downstream: the input was put together wrongly. */
static int next_item(run *R, sr *r, stream_keys *keys, const mp_val **item, char *where, size_t n)
{
    char err[VL_ERRLEN];
    int rc = sr_next(r, item);
    if (rc < 0) die(1, "%s", r->err);
    if (rc == 0) return 0;
    sr_where(r, *item, where, n);
    if (sr_check_item(r, *item, err) != 0) {
        q_drop(&R->q, err);
        return -1;
    }
    if (stream_keys_add(keys, r, *item, err) != 0) die(1, "%s", err);
    return 1;
}

/* White-box: writes the nb items of a batch, the misses' vectors the rows
 * of emb in turn (and cached), and frees them. */
static void write_batch(run *R, q_item **batch, int nb, const float *emb, int D)
{
    write_header(R, D);
    for (int i = 0, k = 0; i < nb; i++) {
        const uint8_t *v = batch[i]->hit ? batch[i]->vec : (const uint8_t *)(emb + (size_t)k++ * D);
        if (!batch[i]->hit) q_cache_put(&R->q, batch[i]->key, D, v);
        write_item_of(&R->out, batch[i], v, D);
        q_item_free(batch[i]);
    }
}

/* ---- images ---- */

static void embed_images(run *R, sr *r, clip_model *model, const float mean[3], const float std[3])
{
    q_run *q = &R->q;
    char err[VL_ERRLEN], where[256];
    int S = model ? clip_image_size(model) : 0, D = model ? clip_embed_dim(model) : 0;
    float *in = model ? xmalloc_aligned((size_t)R->batch * 3 * S * S * sizeof(float)) : NULL;
    float *emb = model ? xmalloc_aligned((size_t)R->batch * D * sizeof(float)) : NULL;
    q_item **batch = xcalloc(R->batch, sizeof *batch);
    int nb = 0, nmiss = 0;
    uint8_t *rs = model ? xmalloc((size_t)S * S * 3) : NULL;
    char *budget_where = NULL;
    stream_keys *keys = stream_keys_new();
    for (;;) {
        const mp_val *item;
        int rc = next_item(R, r, keys, &item, where, sizeof where);
        if (rc < 0) continue;
        int at_end = rc == 0;
        if (!at_end) {
            int64_t h, w;
            mp_get_i64(item, "h", &h);
            mp_get_i64(item, "w", &w);
            const uint8_t *pix = mp_get(item, "pix")->v.p;
            if (model && (h != S || w != S) && !R->resize) {
                char msg[400];
                snprintf(msg, sizeof msg, "%s: %lldx%lld image, the model takes %dx%d (see --resize)", where,
                         (long long)w, (long long)h, S, S);
                q_drop(q, msg);
                continue;
            }
            q_item *p = xcalloc(1, sizeof *p);
            p->data = encode_meta(item, &p->data_len);
            uint8_t hw[8];
            for (int i = 0; i < 4; i++)
                hw[i] = (uint8_t)((uint32_t)h >> 8 * i), hw[4 + i] = (uint8_t)((uint32_t)w >> 8 * i);
            int hit = q_lookup(q, p, hw, 8, pix, (size_t)h * w * 3, where, D); /* p is the output thread's once queued */
            if (!hit && q_over_budget(q)) {
                budget_where = xstrdup(where);
                q_item_free(p);
                at_end = 1;
            } else if (!hit && q->exec_cmd) {
                q_send(q, p, where, write_image_query, &(image_query){pix, (int)h, (int)w});
            } else if (hit && q->exec_cmd) {
                q_push(q, p);
            } else {
                if (!hit) {
                    const uint8_t *src = pix;
                    if (h != S || w != S) {
                        if (img_resize(rs, S, S, pix, (int)w, (int)h, (size_t)w * 3, NULL) != 0) {
                            q_drop(q, where);
                            q_item_free(p);
                            continue;
                        }
                        src = rs;
                    }
                    embed_pixels(in + (size_t)nmiss * 3 * S * S, src, (size_t)S * S, mean, std);
                    nmiss++;
                    q_counted(q);
                }
                batch[nb++] = p;
            }
            if (!at_end) q_progress(q, 0, 0);
        }
        if (model && nb > 0 && (nb == R->batch || at_end)) {
            if (nmiss > 0 && clip_encode_image(model, in, nmiss, emb, err) != 0) die(1, "%s", err);
            write_batch(R, batch, nb, emb, D);
            nb = nmiss = 0;
        }
        if (at_end) break;
    }
    stream_keys_free(keys);
    free(in), free(emb), free(batch), free(rs);
    if (budget_where) {
        if (q->exec_cmd) q_end(q, 1);
        q_budget_failed(q, budget_where);
    }
}

/* ---- prompts (the text tower, answering text-embed --exec) ---- */

static void embed_texts(run *R, sr *r, clip_model *model, tok *tk)
{
    q_run *q = &R->q;
    char err[VL_ERRLEN], where[256];
    int D = clip_embed_dim(model), ctx = clip_context_length(model), V = clip_vocab_size(model);
    int32_t *toks = xmalloc((size_t)R->batch * ctx * sizeof *toks);
    float *emb = xmalloc_aligned((size_t)R->batch * D * sizeof(float));
    q_item **batch = xcalloc(R->batch, sizeof *batch);
    int nb = 0, nmiss = 0, T = 1;
    char *budget_where = NULL;
    stream_keys *keys = stream_keys_new();
    for (;;) {
        const mp_val *item;
        int rc = next_item(R, r, keys, &item, where, sizeof where);
        if (rc < 0) continue;
        int at_end = rc == 0;
        if (!at_end) {
            const mp_val *text = mp_get(item, "text");
            if (!text || text->type != MP_STR) {
                char msg[300];
                snprintf(msg, sizeof msg, "%s: no 'text' string", where);
                q_drop(q, msg);
                continue;
            }
            q_item *p = xcalloc(1, sizeof *p);
            int32_t *row = toks + (size_t)nmiss * ctx;
            int n = tok_tokenize(tk, text->v.s, text->len, ctx, 0, row, err);
            for (int i = 0; n > 0 && i < n; i++)
                if (row[i] >= V) {
                    snprintf(err, VL_ERRLEN, "token id %d is outside the model's vocabulary of %d", row[i], V);
                    n = -1;
                }
            if (n < 0) {
                char msg[2 * VL_ERRLEN];
                snprintf(msg, sizeof msg, "%s: %s", where, err);
                q_drop(q, msg);
                free(p);
                continue;
            }
            p->data = encode_meta(item, &p->data_len);
            if (!q_lookup(q, p, text->v.s, text->len, NULL, 0, where, D)) {
                if (q_over_budget(q)) {
                    budget_where = xstrdup(where);
                    q_item_free(p);
                    at_end = 1;
                } else {
                    if (n > T) T = n;
                    nmiss++;
                    q_counted(q);
                }
            }
            if (!at_end) batch[nb++] = p;
            q_progress(q, 0, 0);
        }
        if (nb > 0 && (nb == R->batch || at_end)) {
            for (int b = 1; b < nmiss; b++) memmove(toks + (size_t)b * T, toks + (size_t)b * ctx, (size_t)T * sizeof *toks);
            if (nmiss > 0 && clip_encode_text(model, toks, nmiss, T, emb, err) != 0) die(1, "%s", err);
            write_batch(R, batch, nb, emb, D);
            nb = nmiss = 0, T = 1;
        }
        if (at_end) break;
    }
    stream_keys_free(keys);
    free(toks), free(emb), free(batch);
    if (budget_where) q_budget_failed(q, budget_where);
}

/* ---- main ---- */

int main(int argc, char **argv)
{
    tool_init("teacher-embed");
    run R = {.q = {.max_queries = -1, .what = "images", .query_header = image_query_header,
                   .emit = emit, .finish = finish},
             .normalize = "model", .batch = 16, .argc = argc, .argv = argv};
    R.q.ctx = &R;
    const char *outpath = NULL, *model_path = NULL, *bpe = NULL;
    int batch_set = 0, timeout_set = 0;
    static const struct option opts[] = {{"model", required_argument, 0, 'm'},
                                         {"exec", required_argument, 0, 'x'},
                                         {"model-id", required_argument, 0, 'I'},
                                         {"normalize", required_argument, 0, 'n'},
                                         {"resize", no_argument, 0, 'r'},
                                         {"bpe", required_argument, 0, 'B'},
                                         {"batch", required_argument, 0, 'b'},
                                         {"threads", required_argument, 0, 't'},
                                         {"cache", required_argument, 0, 'C'},
                                         {"max-queries", required_argument, 0, 'Q'},
                                         {"timeout", required_argument, 0, 'T'},
                                         {"max-errors", required_argument, 0, 'E'},
                                         {"output", required_argument, 0, 'o'},
                                         {"verbose", no_argument, 0, 'v'},
                                         {"help", no_argument, 0, 'h'},
                                         OPT_VERSION,
                                         {0, 0, 0, 0}};
    int c;
    while ((c = getopt_long(argc, argv, "m:x:I:n:rB:b:t:C:Q:E:o:vh", opts, NULL)) != -1) {
        switch (c) {
        case 'm': model_path = optarg; break;
        case 'x': R.q.exec_cmd = optarg; break;
        case 'I': R.q.identity = optarg; break;
        case 'n': R.normalize = optarg; break;
        case 'r': R.resize = 1; break;
        case 'B': bpe = optarg; break;
        case 'b':
            R.batch = (int)parse_int(USAGE, "--batch", optarg, 1, 4096);
            batch_set = 1;
            break;
        case 't': R.threads = (int)parse_int(USAGE, "--threads", optarg, 1, 1024); break;
        case 'C': R.q.cache_dir = optarg; break;
        case 'T':
            R.q.timeout = parse_double(USAGE, "--timeout", optarg, 0, 1e9);
            timeout_set = 1;
            break;
        case 'Q': R.q.max_queries = parse_int(USAGE, "--max-queries", optarg, 0, INT64_MAX); break;
        case 'E': R.q.max_errors = parse_int(USAGE, "--max-errors", optarg, 0, INT64_MAX); break;
        case 'o': outpath = optarg; break;
        case 'v': tool_verbose = 1; break;
        case OPT_VERSION_VAL: version_exit();
        case 'h': usage_help(USAGE);
        default: usage_bad(USAGE);
        }
    }
    if (!model_path == !R.q.exec_cmd) usage_error(USAGE, "give one of --model and --exec");
    if (R.q.identity && !R.q.exec_cmd) usage_error(USAGE, "--model-id goes with --exec");
    if (timeout_set && !R.q.exec_cmd) usage_error(USAGE, "--timeout goes with --exec");
    if (!timeout_set) R.q.timeout = Q_TIMEOUT_DEFAULT;
    if (R.q.exec_cmd && (R.resize || batch_set || R.threads || bpe))
        usage_error(USAGE, "--resize, --bpe, --batch and --threads go with --model (the vendor decides them)");
    if (strcmp(R.normalize, "model") != 0 && strcmp(R.normalize, "clip") != 0 && strcmp(R.normalize, "imagenet") != 0)
        usage_error(USAGE, "--normalize must be model, clip or imagenet, not '%s'", R.normalize);
    if (argc - optind > 1) usage_error(USAGE, "at most one input file");
    blas_set_threads(R.threads);
    signal(SIGPIPE, SIG_IGN);

    sr *r = open_stream(argc > optind ? argv[optind] : NULL);
    if (sr_header(r, NULL) != 0) die(1, "%s", r->err);
    int text = strcmp(r->schema_name, "text") == 0;
    if (!text && strcmp(r->schema_name, "image") != 0)
        die(1, "%s: header: schema is '%s', expected 'image' or 'text'", r->name, r->schema_name);
    if (text && R.q.exec_cmd) die(1, "%s: a text stream goes to --model (text-embed --exec queries a vendor's text tower)", r->name);
    R.in_header = &r->header;

    char err[VL_ERRLEN];
    clip_model *model = NULL;
    tok *tk = NULL;
    float mean[3], std[3];
    char *norm = NULL;
    if (model_path) {
        if (clip_load_towers(&model, model_path, text ? CLIP_TEXT : CLIP_VISION, err) != 0) die(1, "%s", err);
        R.q.identity = clip_model_id(model);
        clip_normalisation(model, mean, std);
        if (strcmp(R.normalize, "clip") == 0) memcpy(mean, CLIP_MEAN, sizeof mean), memcpy(std, CLIP_STD, sizeof std);
        if (strcmp(R.normalize, "imagenet") == 0)
            memcpy(mean, IMAGENET_MEAN, sizeof mean), memcpy(std, IMAGENET_STD, sizeof std);
        R.normalize = norm = norm_name(mean, std);
        if (text) {
            char *shipped = tool_share_file(TOK_BPE_FILE);
            char *path = tok_locate(model_path, bpe, shipped, err);
            if (!path || tok_load(&tk, path, err) != 0) die(1, "%s", err);
            free(shipped), free(path);
        }
    } else if (!R.q.identity) {
        R.q.identity = R.q.exec_cmd;
    }
    char *space = xmalloc(strlen(R.q.identity) + 16);
    sprintf(space, "%s:%s", text ? "text" : "teacher", R.q.identity);
    R.space = space;
    R.q.cache_tag = text ? "vl2v text cache 1" : "vl2v teacher cache 1";
    R.q.variant = text ? "text" : R.normalize;
    if (text) R.normalize = NULL;
    tool_out out;
    output_open(&out, outpath);
    sw_init(&R.out, out.fd);
    q_init(&R.q);
    progress_start(text ? "texts" : "images", 0);
    progress_input(r->fd);
    if (text)
        embed_texts(&R, r, model, tk);
    else
        embed_images(&R, r, model, mean, std);
    if (sr_finish(r) != 0) die(1, "%s", r->err);
    /* the trailer's count; black-box, the output thread adds its drops at the end */
    pthread_mutex_lock(&R.q.mu);
    R.q.upstream_dropped = (uint64_t)sr_trailer_dropped(r);
    pthread_mutex_unlock(&R.q.mu);
    if (R.q.exec_cmd) {
        q_end(&R.q, 0);
    } else {
        write_header(&R, clip_embed_dim(model));
        q_trailer(&R.q, &R.out);
    }
    q_progress(&R.q, 1, R.out.records);
    output_commit(&out, &R.out);
    clip_free(model);
    tok_free(tk);
    free(space), free(norm);
    return 0;
}
