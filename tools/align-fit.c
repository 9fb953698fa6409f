/* align-fit: stage 1 of VL2V-ADiP (Align). Fits the projection head that
 * maps a frozen student's features into the teacher's embedding space, with
 * the method's loss against the teacher's embedding of the same augmented
 * view and the text embedding of the image's class; or, with --loss ce, a
 * linear classifier on the same features (the linear-probe ERM baseline).
 *
 * In: the student's features of the training views, the teacher's embeddings
 * of the same (id, view), the text stream (one item per class label), and the
 * student's features of the source domains' validation images. Batches of
 * --batch-per-domain items from each source domain, drawn with replacement as
 * a pure function of (seed, step); evaluation with the Predict rule after the
 * first update and every --eval-every steps; the model with the best mean
 * source-validation accuracy (ties: the later) is written, with its
 * provenance, and a `log` stream of every evaluation. */
#include "common.h"

#include "blas.h"
#include "st.h"
#include "train/domains.h"
#include "train/head.h"
#include "train/meta.h"
#include "train/step.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char USAGE[] =
    "usage: align-fit --features FILE --teacher FILE --text FILE --val FILE -o MODEL\n"
    "                 [--test-domain D]... [--train-split S] [--val-split S] [--loss cos|ce]\n"
    "                 [--lambda X] [--lr X] [--steps N] [--batch-per-domain N] [--eval-every N]\n"
    "                 [--seed N] [--init FILE] [--full-batch] [--method NAME] [--log FILE]\n"
    "                 [--threads N] [--max-errors N] [-v]\n"
    "  --features FILE       student features of the training views (embedding stream)\n"
    "  --teacher FILE        teacher embeddings of the same (id, view) (not needed with --loss ce)\n"
    "  --text FILE           text embeddings, one item per class label 0..C-1\n"
    "  --val FILE            student features of the validation images\n"
    "  --test-domain D       a held-out domain: left out of training and validation (repeatable)\n"
    "  --train-split S       train on items whose split is S (default in; 'all': every item)\n"
    "  --val-split S         validate on items whose split is S (default out; 'all': every item)\n"
    "  --loss cos|ce         the method's cosine loss (default), or cross-entropy of a linear head\n"
    "  --lambda X            weight of the image term (default 0.5)\n"
    "  --lr X                Adam learning rate (default 5e-5)\n"
    "  --steps N             updates (default 5001)\n"
    "  --batch-per-domain N  items drawn from each source domain per step (default 32)\n"
    "  --eval-every N        evaluate after step 0 and every N steps, and after the last (default 200)\n"
    "  --seed N              seed of the head's initialisation and of the batches (default 0)\n"
    "  --init FILE           start from the head in FILE instead of a seeded initialisation\n"
    "  --full-batch          every training item at every step (deterministic)\n"
    "  --method NAME         the run's method name (default adip-stage1, or erm-probe with --loss ce)\n"
    "  --log FILE            write a log stream, one item per evaluation\n"
    "  --threads N           threads (default OPENBLAS_NUM_THREADS or the cores)\n"
    "  --max-errors N        exit 1 when more than N bad items are dropped (default 0)\n"
    "  -o MODEL              the model file (safetensors), written atomically\n"
    "  -h, --help            this text\n"
    "  --version             the version\n";

enum {
    O_FEATURES = 0x200, O_TEACHER, O_TEXT, O_VAL, O_TEST, O_TRAIN_SPLIT, O_VAL_SPLIT, O_LOSS, O_LAMBDA, O_LR,
    O_STEPS, O_BPD, O_EVAL, O_SEED, O_INIT, O_FULL, O_METHOD, O_LOG, O_THREADS
};

typedef struct {
    const char *path;
    stream_matrix m;
} input;

static uint64_t dropped;
static long long max_errors;

static int on_bad(void *ctx, const char *msg)
{
    (void)ctx;
    if (drop_item(&dropped, max_errors, "%s: dropped", msg)) die_dropped(dropped, max_errors);
    return 0;
}

static void load(input *in, const char *path, const char *what)
{
    if (!path) usage_error(USAGE, "--%s is required", what);
    in->path = path;
    stream_matrix_init(&in->m);
    sr *r = open_stream(path);
    char err[VL_ERRLEN];
    if (sr_header(r, "embedding") != 0) die(1, "%s", r->err);
    if (stream_matrix_read(&in->m, r, on_bad, NULL, err) != 0) die(1, "%s", err);
    close_stream(r);
}

/* the model named in a space ("teacher:M", "text:M"): what follows the colon */
static const char *space_model(const char *space)
{
    const char *c = strchr(space, ':');
    return c ? c + 1 : space;
}

static char *xjoin_sources(char **dom, int n)
{
    json_buf b = {0};
    meta_json_strs(&b, (const char *const *)dom, n);
    json_buf_put(&b, "", 1);
    return b.p;
}

int main(int argc, char **argv)
{
    tool_init("align-fit");
    const char *fpath = NULL, *tpath = NULL, *xpath = NULL, *vpath = NULL, *init = NULL, *logpath = NULL,
               *method = NULL, *train_split = "in", *val_split = "out";
    char *test[64];
    int ntest = 0, full = 0, objective = TRAIN_COSINE;
    double lambda = 0.5, lr = 5e-5;
    long long steps = 5001, bpd = 32, every = 200, seed = 0, threads = 0;
    tool_opts to = {0};
    static const struct option opts[] = {{"features", required_argument, 0, O_FEATURES},
                                         {"teacher", required_argument, 0, O_TEACHER},
                                         {"text", required_argument, 0, O_TEXT},
                                         {"val", required_argument, 0, O_VAL},
                                         {"test-domain", required_argument, 0, O_TEST},
                                         {"train-split", required_argument, 0, O_TRAIN_SPLIT},
                                         {"val-split", required_argument, 0, O_VAL_SPLIT},
                                         {"loss", required_argument, 0, O_LOSS},
                                         {"lambda", required_argument, 0, O_LAMBDA},
                                         {"lr", required_argument, 0, O_LR},
                                         {"steps", required_argument, 0, O_STEPS},
                                         {"batch-per-domain", required_argument, 0, O_BPD},
                                         {"eval-every", required_argument, 0, O_EVAL},
                                         {"seed", required_argument, 0, O_SEED},
                                         {"init", required_argument, 0, O_INIT},
                                         {"full-batch", no_argument, 0, O_FULL},
                                         {"method", required_argument, 0, O_METHOD},
                                         {"log", required_argument, 0, O_LOG},
                                         {"threads", required_argument, 0, O_THREADS},
                                         OPT_OUTPUT,
                                         OPT_MAX_ERRORS,
                                         OPT_VERBOSE,
                                         OPT_HELP,
                                         OPT_VERSION,
                                         OPT_END};
    int c;
    while ((c = getopt_long(argc, argv, "o:vh", opts, NULL)) != -1) {
        switch (c) {
        case O_FEATURES: fpath = optarg; break;
        case O_TEACHER: tpath = optarg; break;
        case O_TEXT: xpath = optarg; break;
        case O_VAL: vpath = optarg; break;
        case O_TEST:
            if (ntest == 64) usage_error(USAGE, "--test-domain: at most 64");
            test[ntest++] = optarg;
            break;
        case O_TRAIN_SPLIT: train_split = optarg; break;
        case O_VAL_SPLIT: val_split = optarg; break;
        case O_LOSS:
            if (strcmp(optarg, "cos") == 0)
                objective = TRAIN_COSINE;
            else if (strcmp(optarg, "ce") == 0)
                objective = TRAIN_CE;
            else
                usage_error(USAGE, "--loss: 'cos' or 'ce', not '%s'", optarg);
            break;
        case O_LAMBDA: lambda = parse_double(USAGE, "--lambda", optarg, 0, 1); break;
        case O_LR: lr = parse_double(USAGE, "--lr", optarg, 0, 1e3); break;
        case O_STEPS: steps = parse_int(USAGE, "--steps", optarg, 1, 1LL << 40); break;
        case O_BPD: bpd = parse_int(USAGE, "--batch-per-domain", optarg, 1, 1 << 16); break;
        case O_EVAL: every = parse_int(USAGE, "--eval-every", optarg, 1, 1LL << 40); break;
        case O_SEED: seed = parse_int(USAGE, "--seed", optarg, 0, INT64_MAX); break;
        case O_INIT: init = optarg; break;
        case O_FULL: full = 1; break;
        case O_METHOD: method = optarg; break;
        case O_LOG: logpath = optarg; break;
        case O_THREADS: threads = parse_int(USAGE, "--threads", optarg, 0, 1024); break;
        default: tool_option(c, USAGE, &to);
        }
    }
    if (optind < argc) usage_error(USAGE, "unexpected argument '%s'", argv[optind]);
    if (!to.output) usage_error(USAGE, "-o MODEL is required");
    if (objective == TRAIN_COSINE && !tpath) usage_error(USAGE, "--teacher is required (or --loss ce)");
    if (!method) method = objective == TRAIN_COSINE ? "adip-stage1" : "erm-probe";
    max_errors = to.max_errors;
    if (threads > 0) blas_set_threads((int)threads);
    double t0 = vl_now();

    input F, T = {0}, X, V;
    load(&F, fpath, "features");
    if (objective == TRAIN_COSINE) load(&T, tpath, "teacher");
    load(&X, xpath, "text");
    load(&V, vpath, "val");

    /* the classes: one text row per label 0..C-1, in label order */
    int C = (int)X.m.n, D = (int)X.m.dim, Ds = (int)F.m.dim;
    if (C < 2) die(1, "%s: %d text items: a classifier needs at least 2 classes", xpath, C);
    int64_t *text_row = xmalloc((size_t)C * sizeof *text_row);
    for (int k = 0; k < C; k++) text_row[k] = -1;
    for (int64_t i = 0; i < X.m.n; i++) {
        int64_t l = X.m.label[i];
        if (l < 0 || l >= C)
            die(1, "%s: item '%s': label %lld: the %d text items need the labels 0..%d", xpath, X.m.id[i],
                (long long)l, C, C - 1);
        if (text_row[l] >= 0)
            die(1, "%s: items '%s' and '%s' both have label %lld", xpath, X.m.id[text_row[l]], X.m.id[i],
                (long long)l);
        text_row[l] = i;
    }
    const char **classes = xmalloc((size_t)C * sizeof *classes);
    for (int k = 0; k < C; k++) {
        int64_t i = text_row[k];
        classes[k] = X.m.cls[i] ? X.m.cls[i] : X.m.id[i];
    }
    if (V.m.dim != Ds || strcmp(V.m.space, F.m.space) != 0)
        die(1, "%s: space '%s' (dim %lld) is not the features' '%s' (dim %d) of %s", vpath, V.m.space,
            (long long)V.m.dim, F.m.space, Ds, fpath);
    if (objective == TRAIN_COSINE) {
        if (T.m.dim != D)
            die(1, "%s: dim %lld, but the text embeddings of %s have dim %d", tpath, (long long)T.m.dim, xpath, D);
        if (strcmp(space_model(T.m.space), space_model(X.m.space)) != 0)
            die(1, "%s: the teacher is '%s' but the text embeddings of %s are '%s'", tpath, T.m.space, xpath,
                X.m.space);
    }

    /* the source domains: those of the training items, sorted by name */
    train_domains sd = {test, ntest, NULL, 0};
    int64_t N = 0;
    int64_t *rows = xmalloc(((size_t)F.m.n + 1) * sizeof *rows);
    for (int64_t i = 0; i < F.m.n; i++) {
        if (!train_split_ok(train_split, F.m.split[i])) continue;
        const char *d = F.m.domain[i];
        if (!d) die(1, "%s: item '%s' has no domain: batches are drawn per source domain", fpath, F.m.id[i]);
        if (train_domains_held_out(&sd, d)) continue;
        int64_t l = F.m.label[i];
        if (l < 0 || l >= C)
            die(1, "%s: item '%s': label %lld is not one of the %d classes of %s", fpath, F.m.id[i], (long long)l, C,
                xpath);
        train_domains_add(&sd, d);
        rows[N++] = i;
    }
    if (N == 0) die(1, "%s: no training item (split '%s', test domains left out)", fpath, train_split);
    train_domains_sort(&sd);
    char **dom = sd.name;
    int ndom = sd.n;
    if (ndom < 2)
        die(1, "%s: one source domain only ('%s'): leave-one-domain-out needs at least two (is --test-domain right?)",
            fpath, dom[0]);

    /* gather the training set: features, teacher rows joined by (id, view), labels, domains */
    float *ftr = xmalloc_aligned((size_t)N * Ds * sizeof(float));
    float *itr = objective == TRAIN_COSINE ? xmalloc_aligned((size_t)N * D * sizeof(float)) : NULL;
    int *ytr = xmalloc((size_t)N * sizeof(int)), *dtr = xmalloc((size_t)N * sizeof(int));
    for (int64_t j = 0; j < N; j++) {
        int64_t i = rows[j];
        memcpy(ftr + (size_t)j * Ds, F.m.rows + (size_t)i * Ds, (size_t)Ds * sizeof(float));
        ytr[j] = (int)F.m.label[i];
        dtr[j] = train_domains_find(&sd, F.m.domain[i]);
        if (itr) {
            int64_t t = stream_matrix_find(&T.m, F.m.id[i], F.m.view[i]);
            if (t < 0) {
                char v[32] = "none";
                if (F.m.view[i] != STREAM_NONE) snprintf(v, sizeof v, "%lld", (long long)F.m.view[i]);
                die(1, "%s: item '%s' (view %s) has no teacher embedding in %s", fpath, F.m.id[i], v, tpath);
            }
            memcpy(itr + (size_t)j * D, T.m.rows + (size_t)t * D, (size_t)D * sizeof(float));
        }
    }

    /* the validation set: the source domains' items of the validation split */
    int64_t NV = 0;
    float *fv = xmalloc_aligned(((size_t)V.m.n + 1) * Ds * sizeof(float));
    int *yv = xmalloc(((size_t)V.m.n + 1) * sizeof(int)), *dv = xmalloc(((size_t)V.m.n + 1) * sizeof(int));
    int *seen = xcalloc((size_t)ndom, sizeof(int));
    for (int64_t i = 0; i < V.m.n; i++) {
        const char *d = V.m.domain[i];
        if (!train_split_ok(val_split, V.m.split[i])) continue;
        if (!d) die(1, "%s: item '%s' has no domain: validation accuracy is averaged over domains", vpath, V.m.id[i]);
        if (train_domains_held_out(&sd, d)) continue;
        int k = train_domains_find(&sd, d);
        if (k < 0)
            die(1, "%s: item '%s' is of domain '%s', which is neither a source domain nor a --test-domain", vpath,
                V.m.id[i], d);
        int64_t l = V.m.label[i];
        if (l < 0 || l >= C)
            die(1, "%s: item '%s': label %lld is not one of the %d classes of %s", vpath, V.m.id[i], (long long)l, C,
                xpath);
        memcpy(fv + (size_t)NV * Ds, V.m.rows + (size_t)i * Ds, (size_t)Ds * sizeof(float));
        yv[NV] = (int)l;
        dv[NV++] = k;
        seen[k]++;
    }
    for (int k = 0; k < ndom; k++)
        if (!seen[k])
            die(1, "%s: no validation item of source domain '%s' (split '%s')", vpath, dom[k], val_split);

    /* the head */
    head h;
    head_init(&h, objective == TRAIN_COSINE ? HEAD_COSINE : HEAD_LINEAR, Ds, D, C);
    char err[VL_ERRLEN];
    if (objective == TRAIN_COSINE) {
        float *tm = xmalloc((size_t)C * D * sizeof(float));
        for (int k = 0; k < C; k++) memcpy(tm + (size_t)k * D, X.m.rows + (size_t)text_row[k] * D, (size_t)D * 4);
        if (head_set_text(&h, tm, err) != 0) die(1, "%s: %s", xpath, err);
        free(tm);
    }
    if (init) {
        st_file f;
        if (st_open(&f, init, err) != 0 || head_load_weights(&h, &f, err) != 0) die(1, "--init: %s", err);
        st_close(&f);
    } else {
        head_reset(&h, (uint64_t)seed);
    }
    optim o;
    optim_init(&o, OPTIM_ADAM, (float)lr, &h.p);

    /* the log */
    tool_out lo;
    sw ls;
    if (logpath) {
        output_open(&lo, logpath);
        sw_init(&ls, lo.fd);
        sw_header_log(&ls, &F.m.header, argc, argv);
        mpw_str(&ls.w, "method");
        mpw_str(&ls.w, method);
        if (sw_header_end(&ls) != 0) die(1, "%s: write error: %s", logpath, strerror(ls.w.err));
    }

    /* train */
    train_sampler smp;
    train_sampler_init(&smp, dtr, (int)N, ndom);
    int B = full ? (int)N : (int)(bpd * ndom);
    int *idx = xmalloc((size_t)B * sizeof(int)), *yb = xmalloc((size_t)B * sizeof(int));
    float *fb = full ? ftr : xmalloc_aligned((size_t)B * Ds * sizeof(float));
    float *ib = full || !itr ? itr : xmalloc_aligned((size_t)B * D * sizeof(float));
    if (full) memcpy(yb, ytr, (size_t)N * sizeof(int));
    train_ws ws = {0};
    params best;
    param_init(&best);
    float *bestw = xmalloc_aligned(h.p.numel * sizeof(float));
    double best_acc = -1, *dacc = xmalloc((size_t)ndom * sizeof(double));
    long long best_step = -1;
    double sum_loss = 0, sum_c1 = 0, sum_c2 = 0;
    long long nsum = 0;
    progress_start("steps", (uint64_t)steps);
    for (long long step = 0; step < steps; step++) {
        if (!full) {
            int n = train_sampler_batch(&smp, (uint64_t)seed, step, (int)bpd, idx);
            for (int j = 0; j < n; j++) {
                memcpy(fb + (size_t)j * Ds, ftr + (size_t)idx[j] * Ds, (size_t)Ds * sizeof(float));
                if (ib) memcpy(ib + (size_t)j * D, itr + (size_t)idx[j] * D, (size_t)D * sizeof(float));
                yb[j] = ytr[idx[j]];
            }
        }
        train_terms tt;
        float loss = train_head_step(&h, &o, fb, ib, yb, B, objective, (float)lambda, &tt, &ws);
        if (!isfinite(loss)) die(1, "step %lld: the loss is %g", step, (double)loss);
        sum_loss += tt.loss, sum_c1 += tt.cos_image, sum_c2 += tt.cos_text, nsum++;
        if (step % every != 0 && step != steps - 1) continue;
        double acc, vloss;
        train_evaluate(&h, fv, yv, dv, (int)NV, ndom, dacc, &acc, &vloss);
        if (acc >= best_acc) {
            best_acc = acc;
            best_step = step;
            memcpy(bestw, h.p.data, h.p.numel * sizeof(float));
        }
        if (logpath) {
            sw_item_begin(&ls);
            mpw_str(&ls.w, "step");
            mpw_int(&ls.w, step);
            mpw_str(&ls.w, "loss");
            mpw_f64(&ls.w, sum_loss / nsum);
            if (objective == TRAIN_COSINE) {
                mpw_str(&ls.w, "cos_image");
                mpw_f64(&ls.w, sum_c1 / nsum);
                mpw_str(&ls.w, "cos_text");
                mpw_f64(&ls.w, sum_c2 / nsum);
            }
            mpw_str(&ls.w, "val_acc");
            mpw_f64(&ls.w, acc);
            mpw_str(&ls.w, "val_loss");
            mpw_f64(&ls.w, vloss);
            for (int k = 0; k < ndom; k++) {
                char key[300];
                snprintf(key, sizeof key, "val_acc.%s", dom[k]);
                mpw_str(&ls.w, key);
                mpw_f64(&ls.w, dacc[k]);
            }
            if (sw_item_end(&ls) != 0) die(1, "%s: write error: %s", logpath, strerror(ls.w.err));
        }
        progress_count((uint64_t)step + 1, PROGRESS_NO_DROPS,
                       "loss %.5f, source validation accuracy %.4f (best %.4f at step %lld)", sum_loss / nsum, acc,
                       best_acc, best_step);
        sum_loss = sum_c1 = sum_c2 = 0, nsum = 0;
    }
    progress_end((uint64_t)steps, PROGRESS_NO_DROPS, "best source validation accuracy %.4f at step %lld", best_acc,
                 best_step);
    memcpy(h.p.data, bestw, h.p.numel * sizeof(float));

    /* the model file and its provenance */
    stw *w = stw_new();
    head_add_to_writer(&h, w);
    meta_settings ms = {0};
    meta_set_str(&ms, "loss", objective == TRAIN_COSINE ? "cos" : "ce");
    if (objective == TRAIN_COSINE) meta_set_num(&ms, "lambda", (float)lambda);
    meta_set_num(&ms, "lr", (float)lr);
    meta_set_num(&ms, "steps", (double)steps);
    meta_set_num(&ms, "batch_per_domain", full ? 0 : (double)bpd);
    meta_set_num(&ms, "full_batch", full);
    meta_set_num(&ms, "eval_every", (double)every);
    meta_set_str(&ms, "optimizer", "adam");
    meta_set_str(&ms, "train_split", train_split);
    meta_set_str(&ms, "val_split", val_split);
    meta_set_str(&ms, "init", init ? "file" : "linear-default");
    char *settings = meta_settings_json(&ms), *sources = xjoin_sources(dom, ndom), num[64];
    json_buf cj = {0}, inputs = {0};
    meta_json_strs(&cj, classes, C);
    json_buf_put(&cj, "", 1);
    json_buf_puts(&inputs, "[");
    input *all[4] = {&F, objective == TRAIN_COSINE ? &T : NULL, &X, &V};
    int first = 1;
    for (int k = 0; k < 4; k++) {
        if (!all[k]) continue;
        if (!first) json_buf_puts(&inputs, ",");
        first = 0;
        if (meta_input(&inputs, all[k]->path, mp_get(&all[k]->m.header, "history"), err) != 0)
            die(1, "%s", err);
    }
    if (init) {
        json_buf_puts(&inputs, ",");
        if (meta_input(&inputs, init, NULL, err) != 0) die(1, "%s", err);
    }
    json_buf_puts(&inputs, "]");
    json_buf_put(&inputs, "", 1);
    stw_meta(w, "vl2v.head", objective == TRAIN_COSINE ? "cosine" : "linear");
    stw_meta(w, "vl2v.classes", cj.p);
    stw_meta(w, "vl2v.student_space", F.m.space);
    if (objective == TRAIN_COSINE) stw_meta(w, "vl2v.teacher_space", T.m.space);
    stw_meta(w, "vl2v.method", method);
    snprintf(num, sizeof num, "%lld", seed);
    stw_meta(w, "vl2v.seed", num);
    stw_meta(w, "vl2v.sources", sources);
    stw_meta(w, "vl2v.settings", settings);
    snprintf(num, sizeof num, "%lld", best_step);
    stw_meta(w, "vl2v.best_step", num);
    snprintf(num, sizeof num, "%.17g", best_acc);
    stw_meta(w, "vl2v.val_acc", num);
    stw_meta(w, "vl2v.inputs", inputs.p);
    if (stw_write(w, to.output, err) != 0) die(1, "%s", err);
    stw_free(w);
    if (logpath) {
        sw_trailer_begin(&ls);
        mpw_str(&ls.w, "best_step");
        mpw_int(&ls.w, best_step);
        sw_trailer_end(&ls);
        output_commit(&lo, &ls);
    }
    if (tool_verbose)
        fprintf(stderr,
                "%s: %lld steps on %lld items of %d source domains in %.1f s; best source validation accuracy %.4f at "
                "step %lld; %llu dropped\n",
                prog, steps, (long long)N, ndom, vl_now() - t0, best_acc, best_step, (unsigned long long)dropped);
    return 0;
}
