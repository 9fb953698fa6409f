/* distill-train: stage 2 of VL2V-ADiP, and the baselines trained the same
 * way. Trains a student's backbone on the training views of the source
 * domains: ADiP's cosine loss through the frozen stage-1 head against the
 * teacher's embedding of the same (id, view) and the class's text
 * embedding; ERM (cross-entropy through a linear head trained with it);
 * naive KD (CE plus tau^2 KL from the teacher's zero-shot logits); SD (the
 * teacher's own image tower, the cosine terms on its output). The views'
 * pixels are regenerated in-process from (seed, id, view) with imgdecode's
 * augmentation, so they are the bytes the teacher embedded and only a
 * batch is ever held. Batches of --batch-per-domain views from each source
 * domain, a pure function of (seed, step); evaluation on the source
 * validation images after step 0, every --eval-every steps and after the
 * last; SWAD's LossValley rule (lib/train/swad.h) on the validation loss
 * chooses the averaged weights (--no-swad: the best validation accuracy).
 * Checkpoints make a killed run resume to the same bytes. Out: one model
 * file, the backbone under its own names with the head, the text matrix and
 * the provenance, and a `log` stream of every evaluation. */
#include "common.h"

#include "augment.h"
#include "blas.h"
#include "embed.h"
#include "image.h"
#include "json.h"
#include "manifest.h"
#include "st.h"
#include "train/ckpt.h"
#include "train/domains.h"
#include "train/head.h"
#include "train/meta.h"
#include "train/step.h"
#include "train/swad.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const char USAGE[] =
    "usage: distill-train --weights STUDENT --manifest FILE --teacher FILE (--val FILE | --val-manifest FILE)\n"
    "                     -o MODEL\n"
    "                     [--model STAGE1] [--text FILE] [--objective adip|erm|kd|sd] [--arch A]\n"
    "                     [--views K] [--seed N] [--size S] [--exact] [--root DIR]\n"
    "                     [--test-domain D]...\n"
    "                     [--train-split S] [--val-split S] [--lambda X] [--tau X] [--lr X] [--steps N]\n"
    "                     [--batch-per-domain N] [--eval-every N] [--full-batch] [--bn frozen|train]\n"
    "                     [--no-swad] [--checkpoint FILE] [--checkpoint-every N] [--restart]\n"
    "                     [--init FILE] [--method NAME] [--log FILE] [--threads N] [-v]\n"
    "  --weights STUDENT     the student's weights (safetensors or a model directory)\n"
    "  --arch A              its architecture (default auto)\n"
    "  --manifest FILE       the training images (imgdecode's manifest)\n"
    "  --views K             augmented views of each image (default 1), as imgdecode --augment --views K\n"
    "  --seed N              seed of the views, the batches and a linear head's init (default 0)\n"
    "  --size S              view side in pixels (default 224), as imgdecode --size\n"
    "  --exact               views decoded as imgdecode --exact\n"
    "  --root DIR            directory that relative manifest paths are taken from\n"
    "  --teacher FILE        the teacher's embedding of each (id, view) (not needed for erm)\n"
    "  --model STAGE1        align-fit's cosine head and text matrix, frozen (adip)\n"
    "  --text FILE           text embeddings, one item per class label 0..C-1 (erm, kd, sd)\n"
    "  --val FILE            the source validation images (image stream, eval transform)\n"
    "  --val-manifest FILE   or their manifest, put through imgdecode's eval transform here\n"
    "  --objective O         adip (default), erm, kd or sd\n"
    "  --test-domain D       a held-out domain: left out of training and validation (repeatable)\n"
    "  --train-split S       train on rows whose split is S (default in; 'all': every row)\n"
    "  --val-split S         validate on items whose split is S (default out; 'all': every item)\n"
    "  --lambda X            weight of the image term (adip, sd; default 0.5)\n"
    "  --tau X               KD's temperature (default 4)\n"
    "  --lr X                Adam learning rate (default 5e-5)\n"
    "  --steps N             updates (default 5001)\n"
    "  --batch-per-domain N  views drawn from each source domain per step (default 32)\n"
    "  --eval-every N        evaluate after step 0 and every N steps, and after the last (default 200)\n"
    "  --full-batch          every training view at every step (deterministic)\n"
    "  --bn frozen|train     BatchNorm frozen in eval mode (default) or trained on batch statistics\n"
    "  --no-swad             keep the weights of the best validation accuracy instead of SWAD's average\n"
    "  --checkpoint FILE     resume from FILE when it exists; write it every --checkpoint-every steps\n"
    "  --checkpoint-every N  steps between checkpoints (default 200)\n"
    "  --restart             ignore a checkpoint made with other settings (overwrite it)\n"
    "  --init FILE           start the linear head (erm, kd) from FILE's fc.weight and fc.bias\n"
    "  --method NAME         the run's method name (default adip-stage2, erm, kd or sd)\n"
    "  --log FILE            write a log stream, one item per evaluation\n"
    "  --threads N           threads (default OPENBLAS_NUM_THREADS or the cores)\n"
    "  -o MODEL              the model file (safetensors), written atomically\n"
    "  -v, --verbose         progress on standard error\n"
    "  -h, --help            this text\n"
    "  --version             the version\n";

enum {
    O_WEIGHTS = 0x200, O_ARCH, O_MANIFEST, O_VIEWS, O_SEED, O_SIZE, O_EXACT, O_ROOT, O_TEACHER, O_MODEL, O_TEXT,
    O_VAL, O_VAL_MANIFEST, O_OBJECTIVE, O_TEST, O_TRAIN_SPLIT, O_VAL_SPLIT, O_LAMBDA, O_TAU, O_LR, O_STEPS, O_BPD, O_EVAL, O_FULL,
    O_BN, O_NO_SWAD, O_CKPT, O_CKPT_EVERY, O_RESTART, O_INIT, O_METHOD, O_LOG, O_THREADS
};

static const char *const OBJECTIVES[] = {"adip", "erm", "kd", "sd"};
static const char *const METHODS[] = {"adip-stage2", "erm", "kd", "sd"};

/* a training image: the manifest row's path and keys */
typedef struct {
    char *id, *path, *domain;
    int label, dom;
} image_row;

/* The pixels of view v of image r, normalised into x (3,S,S): imgdecode
 * --augment's bytes (aug_view_keyed). */
static void view_pixels(float *x, const image_row *r, int64_t v, uint64_t seed, int size, int exact,
                        const float mean[3], const float std[3])
{
    char err[VL_ERRLEN];
    img_src src;
    img pic;
    if (img_src_open(&src, r->path, NULL, err) != 0) die(1, "id '%s': %s", r->id, err);
    if (aug_view_keyed(&pic, &src, seed, r->id, strlen(r->id), v, size, exact, err) != 0) die(1, "id '%s' view %lld: %s", r->id, (long long)v, err);
    embed_pixels(x, pic.pix, (size_t)size * size, mean, std);
    img_free(&pic);
    img_src_free(&src);
}

/* the first key whose value differs between two settings objects */
static const char *settings_diff(const char *a, const char *b, char *buf, size_t n)
{
    char err[VL_ERRLEN];
    json *ja = json_parse(a, strlen(a), err), *jb = json_parse(b, strlen(b), err);
    snprintf(buf, n, "the settings");
    if (ja && jb && ja->type == JSON_OBJ && jb->type == JSON_OBJ) {
        for (int pass = 0; pass < 2; pass++) {
            const json *x = pass ? jb : ja, *y = pass ? ja : jb;
            for (size_t i = 0; i < x->n; i++) {
                const json *o = json_get(y, x->keys[i]);
                int same = o && o->type == x->items[i].type;
                if (same && o->type == JSON_NUM) same = o->num == x->items[i].num;
                if (same && o->type == JSON_STR) same = strcmp(o->s, x->items[i].s) == 0;
                if (same && (o->type == JSON_ARR || o->type == JSON_OBJ)) same = o->n == x->items[i].n;
                if (!same) {
                    snprintf(buf, n, "'%s'", x->keys[i]);
                    goto done;
                }
            }
        }
    }
done:
    json_free(ja);
    json_free(jb);
    return buf;
}

/* the validation images as they are read */
typedef struct {
    int size, C;
    const train_domains *sd;
    const char *split;
    int64_t n, cap;
    uint8_t *pix; /* (n, size, size, 3) */
    int *y, *d;
} val_list;

/* The place for the pixels of a validation image (where: for messages), or
 * NULL when it is not one (another split, a held-out domain). An image of
 * another domain, size or label is an error. */
static uint8_t *val_slot(val_list *v, const char *where, const char *dom, const char *split, int64_t label, int64_t h,
                         int64_t w)
{
    if (!train_split_ok(v->split, split)) return NULL;
    if (!dom) die(1, "%s: has no domain", where);
    if (train_domains_held_out(v->sd, dom)) return NULL;
    int k = train_domains_find(v->sd, dom);
    if (k < 0) die(1, "%s: domain '%s' is neither a source domain nor a --test-domain", where, dom);
    if (h != v->size || w != v->size)
        die(1, "%s: %lldx%lld pixels, the views are %dx%d", where, (long long)w, (long long)h, v->size, v->size);
    if (label < 0 || label >= v->C) die(1, "%s: label %lld is not one of the %d classes", where, (long long)label, v->C);
    if (v->n == v->cap) {
        v->cap = v->cap ? 2 * v->cap : 64;
        v->pix = xrealloc(v->pix, (size_t)v->cap * v->size * v->size * 3);
        v->y = xrealloc(v->y, (size_t)v->cap * sizeof *v->y);
        v->d = xrealloc(v->d, (size_t)v->cap * sizeof *v->d);
    }
    v->y[v->n] = (int)label;
    v->d[v->n] = k;
    return v->pix + (size_t)v->n++ * v->size * v->size * 3;
}

/* the validation images and what evaluates on them */
typedef struct {
    student *st;
    head *h;
    const uint8_t *pix; /* (N, S, S, 3) */
    const int *y, *dom;
    int64_t N;
    int ndom, size, bn_train;
    float mean[3], std[3];
} val_set;

/* The Predict rule on the validation images, BatchNorm in eval mode: each
 * domain's accuracy, their mean and the mean cross-entropy (train_evaluate). */
static void evaluate(const val_set *v, double *dacc, double *acc, double *loss, int64_t step)
{
    enum { CHUNK = 32 };
    size_t hw = (size_t)v->size * v->size;
    int Ds = student_feature_dim(v->st);
    float *x = xmalloc_aligned((size_t)CHUNK * 3 * hw * sizeof(float));
    float *f = xmalloc_aligned(((size_t)v->N + 1) * Ds * sizeof(float));
    char err[VL_ERRLEN];
    if (v->bn_train) student_set_bn_train(v->st, 0);
    for (int64_t s = 0; s < v->N; s += CHUNK) {
        int nb = v->N - s < CHUNK ? (int)(v->N - s) : CHUNK;
        for (int i = 0; i < nb; i++) embed_pixels(x + (size_t)i * 3 * hw, v->pix + (size_t)(s + i) * hw * 3, hw, v->mean, v->std);
        if (student_forward(v->st, f + (size_t)s * Ds, x, nb, v->size, v->size, 0, err) != 0)
            die(1, "step %lld: validation: %s", (long long)step, err);
    }
    if (v->bn_train) student_set_bn_train(v->st, 1);
    train_evaluate(v->h, f, v->y, v->dom, (int)v->N, v->ndom, dacc, acc, loss);
    if (!isfinite(*loss)) die(1, "step %lld: the validation loss is %g", (long long)step, *loss);
    free(x);
    free(f);
}

/* one evaluation, as the log writes it */
typedef struct {
    int64_t step;
    double loss, cos_image, cos_text, ce, kl, acc, vloss;
    double *dacc;
    char *swad; /* SWAD's state after it, JSON; NULL with --no-swad */
} eval_rec;

int main(int argc, char **argv)
{
    tool_init("distill-train");
    const char *weights = NULL, *arch = "auto", *mpath = NULL, *root = NULL, *tpath = NULL, *model = NULL,
               *xpath = NULL, *vpath = NULL, *ckpt = NULL, *method = NULL, *logpath = NULL, *init = NULL, *vmpath = NULL, *train_split = "in",
               *val_split = "out";
    char *test[64];
    int ntest = 0, full = 0, exact = 0, objective = TRAIN_ADIP, bn_train = 0, use_swad = 1, restart = 0;
    double lambda = 0.5, lr = 5e-5, tau = 4;
    long long steps = 5001, bpd = 32, every = 200, seed = 0, threads = 0, views = 1, size = 224, ckpt_every = 200;
    tool_opts to = {0};
    static const struct option opts[] = {{"weights", required_argument, 0, O_WEIGHTS},
                                         {"arch", required_argument, 0, O_ARCH},
                                         {"manifest", required_argument, 0, O_MANIFEST},
                                         {"views", required_argument, 0, O_VIEWS},
                                         {"seed", required_argument, 0, O_SEED},
                                         {"size", required_argument, 0, O_SIZE},
                                         {"exact", no_argument, 0, O_EXACT},
                                         {"root", required_argument, 0, O_ROOT},
                                         {"teacher", required_argument, 0, O_TEACHER},
                                         {"model", required_argument, 0, O_MODEL},
                                         {"text", required_argument, 0, O_TEXT},
                                         {"val", required_argument, 0, O_VAL},
                                         {"val-manifest", required_argument, 0, O_VAL_MANIFEST},
                                         {"objective", required_argument, 0, O_OBJECTIVE},
                                         {"test-domain", required_argument, 0, O_TEST},
                                         {"train-split", required_argument, 0, O_TRAIN_SPLIT},
                                         {"val-split", required_argument, 0, O_VAL_SPLIT},
                                         {"lambda", required_argument, 0, O_LAMBDA},
                                         {"tau", required_argument, 0, O_TAU},
                                         {"lr", required_argument, 0, O_LR},
                                         {"steps", required_argument, 0, O_STEPS},
                                         {"batch-per-domain", required_argument, 0, O_BPD},
                                         {"eval-every", required_argument, 0, O_EVAL},
                                         {"full-batch", no_argument, 0, O_FULL},
                                         {"bn", required_argument, 0, O_BN},
                                         {"no-swad", no_argument, 0, O_NO_SWAD},
                                         {"checkpoint", required_argument, 0, O_CKPT},
                                         {"checkpoint-every", required_argument, 0, O_CKPT_EVERY},
                                         {"restart", no_argument, 0, O_RESTART},
                                         {"init", required_argument, 0, O_INIT},
                                         {"method", required_argument, 0, O_METHOD},
                                         {"log", required_argument, 0, O_LOG},
                                         {"threads", required_argument, 0, O_THREADS},
                                         OPT_OUTPUT,
                                         OPT_VERBOSE,
                                         OPT_HELP,
                                         OPT_VERSION,
                                         OPT_END};
    int c;
    while ((c = getopt_long(argc, argv, "o:vh", opts, NULL)) != -1) {
        switch (c) {
        case O_WEIGHTS: weights = optarg; break;
        case O_ARCH: arch = optarg; break;
        case O_MANIFEST: mpath = optarg; break;
        case O_VIEWS: views = parse_int(USAGE, "--views", optarg, 1, 1 << 20); break;
        case O_SEED: seed = parse_int(USAGE, "--seed", optarg, 0, INT64_MAX); break;
        case O_SIZE: size = parse_int(USAGE, "--size", optarg, 1, 8192); break;
        case O_EXACT: exact = 1; break;
        case O_ROOT: root = optarg; break;
        case O_TEACHER: tpath = optarg; break;
        case O_MODEL: model = optarg; break;
        case O_TEXT: xpath = optarg; break;
        case O_VAL: vpath = optarg; break;
        case O_VAL_MANIFEST: vmpath = optarg; break;
        case O_OBJECTIVE:
            for (objective = 0; objective < 4 && strcmp(optarg, OBJECTIVES[objective]) != 0; objective++) {
            }
            if (objective == 4) usage_error(USAGE, "--objective: adip, erm, kd or sd, not '%s'", optarg);
            break;
        case O_TEST:
            if (ntest == 64) usage_error(USAGE, "--test-domain: at most 64");
            test[ntest++] = optarg;
            break;
        case O_TRAIN_SPLIT: train_split = optarg; break;
        case O_VAL_SPLIT: val_split = optarg; break;
        case O_LAMBDA: lambda = parse_double(USAGE, "--lambda", optarg, 0, 1); break;
        case O_TAU: tau = parse_double(USAGE, "--tau", optarg, 1e-3, 1e3); break;
        case O_LR: lr = parse_double(USAGE, "--lr", optarg, 0, 1e3); break;
        case O_STEPS: steps = parse_int(USAGE, "--steps", optarg, 1, 1LL << 40); break;
        case O_BPD: bpd = parse_int(USAGE, "--batch-per-domain", optarg, 1, 1 << 16); break;
        case O_EVAL: every = parse_int(USAGE, "--eval-every", optarg, 1, 1LL << 40); break;
        case O_FULL: full = 1; break;
        case O_BN:
            if (strcmp(optarg, "frozen") == 0)
                bn_train = 0;
            else if (strcmp(optarg, "train") == 0)
                bn_train = 1;
            else
                usage_error(USAGE, "--bn: 'frozen' or 'train', not '%s'", optarg);
            break;
        case O_NO_SWAD: use_swad = 0; break;
        case O_CKPT: ckpt = optarg; break;
        case O_CKPT_EVERY: ckpt_every = parse_int(USAGE, "--checkpoint-every", optarg, 1, 1LL << 40); break;
        case O_RESTART: restart = 1; break;
        case O_INIT: init = optarg; break;
        case O_METHOD: method = optarg; break;
        case O_LOG: logpath = optarg; break;
        case O_THREADS: threads = parse_int(USAGE, "--threads", optarg, 0, 1024); break;
        default: tool_option(c, USAGE, &to);
        }
    }
    if (optind < argc) usage_error(USAGE, "unexpected argument '%s'", argv[optind]);
    if (!to.output) usage_error(USAGE, "-o MODEL is required");
    if (!weights) usage_error(USAGE, "--weights is required");
    if (!mpath) usage_error(USAGE, "--manifest is required");
    if (!vpath == !vmpath) usage_error(USAGE, "one of --val and --val-manifest is required");
    if (objective != TRAIN_ERM && !tpath) usage_error(USAGE, "--teacher is required (but for --objective erm)");
    if (objective == TRAIN_ADIP && !model) usage_error(USAGE, "--model is required for --objective adip");
    if (objective != TRAIN_ADIP && !xpath) usage_error(USAGE, "--text is required for --objective %s",
                                                       OBJECTIVES[objective]);
    if (init && objective != TRAIN_ERM && objective != TRAIN_KD)
        usage_error(USAGE, "--init: only a linear head (erm, kd) trains from an initialisation");
    if (!method) method = METHODS[objective];
    if (threads > 0) blas_set_threads((int)threads);
    char err[VL_ERRLEN];

    /* the student */
    student *st;
    if (student_open(&st, arch, weights, err) != 0) die(1, "--weights %s: %s", weights, err);
    student_set_bn_train(st, bn_train);
    if (student_check_input(st, (int)size, (int)size, err) != 0) die(1, "--size %lld: %s", size, err);
    params *sp = student_params(st);
    if (param_trainable(sp) == 0) die(1, "%s: the student has no trainable tensor", weights);
    int Ds = student_feature_dim(st);
    float mean[3] = {0.485f, 0.456f, 0.406f}, stdv[3] = {0.229f, 0.224f, 0.225f};
    student_input_norm(st, mean, stdv);

    /* the head and the classes */
    head h;
    int C, D = 0;
    char **classes = NULL;
    float *T = NULL; /* (C, D) the text matrix (kd, sd) */
    if (objective == TRAIN_ADIP) {
        st_file f;
        if (st_open(&f, model, err) != 0) die(1, "--model: %s", err);
        const st_tensor *pw = st_find(&f, "proj.weight"), *tx = st_find(&f, "text");
        const char *kind = st_meta(&f, "vl2v.head"), *cls = st_meta(&f, "vl2v.classes");
        if (!pw || !tx || pw->ndim != 2 || tx->ndim != 2 || (kind && strcmp(kind, "cosine") != 0))
            die(1, "%s: not a cosine head (proj.weight, proj.bias, text): align-fit's stage-1 model", model);
        D = (int)pw->shape[0];
        C = (int)tx->shape[0];
        if (pw->shape[1] != Ds)
            die(1, "%s: proj.weight takes %lld features, but the student %s gives %d", model,
                (long long)pw->shape[1], weights, Ds);
        head_init(&h, HEAD_COSINE, Ds, D, C);
        int64_t tshape[2] = {C, D};
        float *tm = st_load_f32(&f, "text", 2, tshape, err);
        if (!tm || head_load_weights(&h, &f, err) != 0 || head_set_text(&h, tm, err) != 0) die(1, "%s: %s", model, err);
        free(tm);
        json *cj = cls ? json_parse(cls, strlen(cls), err) : NULL;
        if (!cj || cj->type != JSON_ARR || (int)cj->n != C)
            die(1, "%s: vl2v.classes is not an array of the %d classes", model, C);
        classes = xmalloc((size_t)C * sizeof *classes);
        for (int k = 0; k < C; k++)
            classes[k] = xstrdup(cj->items[k].type == JSON_STR ? cj->items[k].s : "");
        json_free(cj);
        st_close(&f);
    } else {
        stream_matrix X;
        stream_matrix_init(&X);
        sr *r = open_stream(xpath);
        if (sr_header(r, "embedding") != 0 || stream_matrix_read(&X, r, NULL, NULL, err) != 0)
            die(1, "%s", r->err[0] ? r->err : err);
        close_stream(r);
        C = (int)X.n;
        D = (int)X.dim;
        if (C < 2) die(1, "%s: %d text items: a classifier needs at least 2 classes", xpath, C);
        T = xmalloc((size_t)C * D * sizeof(float));
        classes = xcalloc((size_t)C, sizeof *classes);
        for (int64_t i = 0; i < X.n; i++) {
            int64_t l = X.label[i];
            if (l < 0 || l >= C || classes[l])
                die(1, "%s: item '%s': label %lld: the %d text items need the labels 0..%d once each", xpath, X.id[i],
                    (long long)l, C, C - 1);
            classes[l] = xstrdup(X.cls[i] ? X.cls[i] : X.id[i]);
            memcpy(T + (size_t)l * D, X.rows + (size_t)i * D, (size_t)D * sizeof(float));
        }
        stream_matrix_free(&X);
        if (objective == TRAIN_SD) {
            /* the tower's output is the embedding: an identity projection, so
             * predict applies the Predict rule to it as it is */
            if (Ds != D) die(1, "%s: the student gives %d features, the text embeddings have %d: SD trains the "
                             "teacher's own image tower", weights, Ds, D);
            head_init(&h, HEAD_COSINE, Ds, D, C);
            for (int k = 0; k < D; k++) param_data(&h.p, 0)[(size_t)k * D + k] = 1;
            if (head_set_text(&h, T, err) != 0) die(1, "%s: %s", xpath, err);
            memcpy(T, h.text, (size_t)C * D * sizeof(float));
        } else {
            head_init(&h, HEAD_LINEAR, Ds, 0, C);
            if (init) {
                st_file f;
                if (st_open(&f, init, err) != 0 || head_load_weights(&h, &f, err) != 0) die(1, "--init: %s", err);
                st_close(&f);
            } else {
                head_reset(&h, (uint64_t)seed);
            }
            head hn; /* KD's T with unit rows */
            head_init(&hn, HEAD_COSINE, 1, D, C);
            if (head_set_text(&hn, T, err) != 0) die(1, "%s: %s", xpath, err);
            memcpy(T, hn.text, (size_t)C * D * sizeof(float));
            head_free(&hn);
        }
    }
    int trains_head = objective == TRAIN_ERM || objective == TRAIN_KD;

    /* the teacher's embeddings */
    stream_matrix TM;
    stream_matrix_init(&TM);
    if (tpath) {
        sr *r = open_stream(tpath);
        if (sr_header(r, "embedding") != 0 || stream_matrix_read(&TM, r, NULL, NULL, err) != 0)
            die(1, "%s", r->err[0] ? r->err : err);
        close_stream(r);
        if (TM.dim != D) die(1, "%s: dim %lld, but the head's teacher space has %d", tpath, (long long)TM.dim, D);
    }

    /* the training images and their views */
    FILE *mf = fopen(mpath, "r");
    if (!mf) die(1, "%s: %s", mpath, strerror(errno));
    mf_reader m;
    mf_open(&m, mf, mpath);
    mf_row row;
    int rc;
    image_row *img_rows = NULL;
    int nimg = 0;
    train_domains sd = {test, ntest, NULL, 0};
    while ((rc = mf_next(&m, &row, err)) != 0) {
        if (rc < 0) die(1, "%s", err);
        if (!train_split_ok(train_split, row.split)) continue;
        if (!row.domain) die(1, "%s:%llu: id '%s' has no domain", mpath, (unsigned long long)row.line, row.id);
        if (train_domains_held_out(&sd, row.domain)) continue;
        if (row.label < 0 || row.label >= C)
            die(1, "%s:%llu: id '%s': label %lld is not one of the %d classes", mpath, (unsigned long long)row.line,
                row.id, (long long)row.label, C);
        for (int i = 0; i < nimg; i++) /* (id, view) is the join key: an id once */
            if (strcmp(img_rows[i].id, row.id) == 0)
                die(1, "%s:%llu: id '%s' repeats an earlier row", mpath, (unsigned long long)row.line, row.id);
        img_rows = xrealloc(img_rows, (size_t)(nimg + 1) * sizeof *img_rows);
        image_row *r = &img_rows[nimg++];
        r->id = xstrdup(row.id);
        if (root && row.path[0] != '/') {
            r->path = xmalloc(strlen(root) + strlen(row.path) + 2);
            sprintf(r->path, "%s/%s", root, row.path);
        } else {
            r->path = xstrdup(row.path);
        }
        r->label = (int)row.label;
        r->domain = xstrdup(row.domain);
        r->dom = -1;
    }
    mf_close(&m);
    fclose(mf);
    if (nimg == 0) die(1, "%s: no training image (split '%s', test domains left out)", mpath, train_split);
    /* the source domains sorted by name, as align-fit's */
    for (int i = 0; i < nimg; i++) train_domains_add(&sd, img_rows[i].domain);
    train_domains_sort(&sd);
    for (int i = 0; i < nimg; i++) img_rows[i].dom = train_domains_find(&sd, img_rows[i].domain);
    char **dom = sd.name;
    int ndom = sd.n;
    if (ndom < 2)
        die(1, "%s: one source domain only ('%s'): leave-one-domain-out needs at least two (is --test-domain right?)",
            mpath, dom[0]);
    int64_t N = (int64_t)nimg * views;
    int *dtr = xmalloc((size_t)N * sizeof(int));
    int64_t *trow = xmalloc((size_t)N * sizeof(int64_t));
    for (int64_t j = 0; j < N; j++) {
        const image_row *r = &img_rows[j / views];
        dtr[j] = r->dom;
        trow[j] = -1;
        if (tpath && (trow[j] = stream_matrix_find(&TM, r->id, j % views)) < 0)
            die(1, "%s: id '%s' view %lld has no teacher embedding", tpath, r->id, (long long)(j % views));
    }

    /* the validation images: an image stream, or a manifest put through
     * the evaluation transform here */
    val_list vl = {.size = (int)size, .C = C, .sd = &sd, .split = val_split};
    if (vpath) {
        sr *r = open_stream(vpath);
        if (sr_header(r, "image") != 0) die(1, "%s", r->err);
        const mp_val *it;
        for (;;) {
            int k = sr_next(r, &it);
            if (k < 0) die(1, "%s", r->err);
            if (k == 0) {
                k = sr_next_stream(r, "image");
                if (k < 0) die(1, "%s", r->err);
                if (k == 0) break;
                continue;
            }
            if (sr_check_item(r, it, err) != 0) die(1, "%s", err);
            char *d = stream_get_str(it, "domain"), *sp_ = stream_get_str(it, "split"), where[256];
            int64_t hh = 0, ww = 0, l = -1;
            mp_get_i64(it, "h", &hh);
            mp_get_i64(it, "w", &ww);
            mp_get_i64(it, "label", &l);
            uint8_t *slot = val_slot(&vl, sr_where(r, it, where, sizeof where), d, sp_, l, hh, ww);
            if (slot) memcpy(slot, mp_get(it, "pix")->v.p, (size_t)size * size * 3);
            free(d);
            free(sp_);
        }
        close_stream(r);
    } else {
        FILE *vf = fopen(vmpath, "r");
        if (!vf) die(1, "%s: %s", vmpath, strerror(errno));
        mf_open(&m, vf, vmpath);
        while ((rc = mf_next(&m, &row, err)) != 0) {
            if (rc < 0) die(1, "%s", err);
            char where[300], *path = NULL;
            snprintf(where, sizeof where, "%s:%llu: id '%s'", vmpath, (unsigned long long)row.line, row.id);
            uint8_t *slot = val_slot(&vl, where, row.domain, row.split, row.label, size, size);
            if (!slot) continue;
            if (root && row.path[0] != '/') {
                path = xmalloc(strlen(root) + strlen(row.path) + 2);
                sprintf(path, "%s/%s", root, row.path);
            }
            img_src src;
            if (img_src_open(&src, path ? path : row.path, NULL, err) != 0 ||
                img_eval_view(slot, &src, (int)size, exact, err) != 0)
                die(1, "%s: %s", where, err);
            img_src_free(&src);
            free(path);
        }
        mf_close(&m);
        fclose(vf);
    }
    int64_t NV = vl.n;
    const uint8_t *vpix = vl.pix;
    const int *yv = vl.y, *dv = vl.d;
    for (int k = 0; k < ndom; k++) {
        int seen = 0;
        for (int64_t i = 0; i < NV; i++) seen |= dv[i] == k;
        if (!seen)
            die(1, "%s: no validation image of source domain '%s' (split '%s')", vpath ? vpath : vmpath, dom[k],
                val_split);
    }

    /* settings and inputs: the run's identity */
    meta_settings ms = {0};
    meta_set_str(&ms, "objective", OBJECTIVES[objective]);
    if (objective == TRAIN_ADIP || objective == TRAIN_SD) meta_set_num(&ms, "lambda", (float)lambda);
    if (objective == TRAIN_KD) meta_set_num(&ms, "tau", (float)tau);
    meta_set_num(&ms, "lr", (float)lr);
    meta_set_num(&ms, "steps", (double)steps);
    meta_set_num(&ms, "batch_per_domain", full ? 0 : (double)bpd);
    meta_set_num(&ms, "full_batch", full);
    meta_set_num(&ms, "eval_every", (double)every);
    meta_set_str(&ms, "optimizer", "adam");
    meta_set_str(&ms, "bn", bn_train ? "train" : "frozen");
    meta_set_num(&ms, "swad", use_swad);
    if (use_swad) {
        meta_set_num(&ms, "swad_n_converge", SWAD_N_CONVERGE);
        meta_set_num(&ms, "swad_n_tolerance", SWAD_N_TOLERANCE);
        meta_set_num(&ms, "swad_tolerance_ratio", SWAD_TOLERANCE_RATIO);
    }
    meta_set_num(&ms, "views", (double)views);
    meta_set_num(&ms, "size", (double)size);
    meta_set_num(&ms, "exact", exact);
    meta_set_str(&ms, "train_split", train_split);
    meta_set_str(&ms, "val_split", val_split);
    meta_set_str(&ms, "arch", student_arch(st));
    if (objective == TRAIN_ERM || objective == TRAIN_KD) meta_set_str(&ms, "init", init ? "file" : "linear-default");
    char *settings = meta_settings_json(&ms);
    json_buf inputs = {0};
    json_buf_puts(&inputs, "[");
    const char *inp[6] = {weights, mpath, tpath, objective == TRAIN_ADIP ? model : xpath, vpath ? vpath : vmpath, init};
    for (int k = 0, first = 1; k < 6; k++) {
        if (!inp[k]) continue;
        if (!first) json_buf_puts(&inputs, ",");
        first = 0;
        if (meta_input(&inputs, inp[k], NULL, err) != 0) die(1, "%s", err);
    }
    json_buf_puts(&inputs, "]");
    json_buf_put(&inputs, "", 1);
    char identity[64];
    snprintf(identity, sizeof identity, "%lld", seed);

    /* training state */
    optim o, oh;
    optim_init(&o, OPTIM_ADAM, (float)lr, sp);
    if (trains_head) optim_init(&oh, OPTIM_ADAM, (float)lr, &h.p);
    size_t numel = sp->numel + (trains_head ? h.p.numel : 0);
    swad sw_;
    swad_init(&sw_, use_swad ? numel : 0, SWAD_N_CONVERGE, SWAD_N_TOLERANCE, SWAD_TOLERANCE_RATIO);
    float *cur = xmalloc_aligned(numel * sizeof(float)), *best = use_swad ? NULL : xmalloc_aligned(numel * 4);
    double best_acc = -1, sums[5] = {0}; /* loss, cos_image, cos_text, ce, kl since the last evaluation */
    int64_t best_step = -1, nsum = 0, start = 0;
    eval_rec *ev = NULL;
    int nev = 0;
    float *w0 = xmalloc_aligned(sp->numel * sizeof(float));
    memcpy(w0, sp->data, sp->numel * sizeof(float));

    ckpt_part parts[2] = {{sp, &o}, {&h.p, trains_head ? &oh : NULL}};
    int nparts = trains_head ? 2 : 1;
    ckpt_extra extra[4];
    int nextra = use_swad ? swad_extras(&sw_, extra) : 0;
    if (!use_swad) extra[nextra++] = (ckpt_extra){"best", best, numel};
    extra[nextra++] = (ckpt_extra){"initial", w0, sp->numel};
    if (ckpt && !restart && access(ckpt, F_OK) == 0) {
        st_file f;
        if (ckpt_load(ckpt, parts, nparts, extra, nextra, &f, err) != 0)
            die(1, "--checkpoint %s: %s (--restart to start afresh)", ckpt, err);
        const char *s = st_meta(&f, "vl2v.settings"), *in = st_meta(&f, "vl2v.inputs"),
                   *sd = st_meta(&f, "vl2v.seed"), *stp = st_meta(&f, "vl2v.step");
        char diff[300];
        if (!s || strcmp(s, settings) != 0)
            die(1, "--checkpoint %s: made with another value of %s (--restart to start afresh)", ckpt,
                settings_diff(s ? s : "{}", settings, diff, sizeof diff));
        if (!sd || strcmp(sd, identity) != 0)
            die(1, "--checkpoint %s: made with another --seed (%s) (--restart to start afresh)", ckpt, sd ? sd : "?");
        if (!in || strcmp(in, inputs.p) != 0)
            die(1, "--checkpoint %s: made from other inputs (paths or contents) (--restart to start afresh)", ckpt);
        start = atoll(stp ? stp : "0");
        if (use_swad && swad_state_load(&sw_, st_meta(&f, "vl2v.swad") ? st_meta(&f, "vl2v.swad") : "", err) != 0)
            die(1, "--checkpoint %s: %s", ckpt, err);
        const char *run = st_meta(&f, "vl2v.run");
        json *j = run ? json_parse(run, strlen(run), err) : NULL;
        if (!j) die(1, "--checkpoint %s: no run state", ckpt);
        best_acc = json_get_num(j, "best_acc", -1);
        best_step = json_get_int(j, "best_step", -1);
        nsum = json_get_int(j, "nsum", 0);
        const json *sj = json_get(j, "sums"), *ej = json_get(j, "evals");
        for (int k = 0; k < 5 && sj && k < (int)sj->n; k++) sums[k] = sj->items[k].num;
        for (size_t e = 0; ej && e < ej->n; e++) {
            const json *x = &ej->items[e];
            ev = xrealloc(ev, (size_t)(nev + 1) * sizeof *ev);
            eval_rec *r = &ev[nev++];
            r->step = json_get_int(x, "step", 0);
            const char *keys[] = {"loss", "cos_image", "cos_text", "ce", "kl", "acc", "vloss"};
            double *vals[] = {&r->loss, &r->cos_image, &r->cos_text, &r->ce, &r->kl, &r->acc, &r->vloss};
            for (int k = 0; k < 7; k++) *vals[k] = json_get_num(x, keys[k], 0);
            r->dacc = xmalloc((size_t)ndom * sizeof(double));
            const json *da = json_get(x, "dacc");
            for (int k = 0; k < ndom; k++) r->dacc[k] = da && k < (int)da->n ? da->items[k].num : NAN;
            const char *s2 = json_get_str(x, "swad", NULL);
            r->swad = s2 ? xstrdup(s2) : NULL;
        }
        json_free(j);
        st_close(&f);
        if (tool_verbose) warnx("--checkpoint %s: resuming at step %lld", ckpt, (long long)start);
    }

    /* train */
    train_sampler smp;
    train_sampler_init(&smp, dtr, (int)N, ndom);
    int B = full ? (int)N : (int)(bpd * ndom);
    int *idx = xmalloc((size_t)B * sizeof(int)), *yb = xmalloc((size_t)B * sizeof(int));
    size_t hw = (size_t)size * size;
    float *xb = xmalloc_aligned((size_t)B * 3 * hw * sizeof(float));
    float *ib = tpath ? xmalloc_aligned((size_t)B * D * sizeof(float)) : NULL;
    train_objective ob = {.objective = objective, .lambda = (float)lambda, .tau = (float)tau, .h = &h, .text = T,
                          .C = C, .D = D};
    train_ws ws = {0};
    val_set vs = {st, &h, vpix, yv, dv, NV, ndom, (int)size, bn_train, {mean[0], mean[1], mean[2]},
                  {stdv[0], stdv[1], stdv[2]}};
    int dead = use_swad && sw_.dead;
    progress_start("steps", (uint64_t)steps);
    for (int64_t step = start; step < steps && !dead; step++) {
        for (int j = 0; j < B; j++) idx[j] = j;
        if (!full) train_sampler_batch(&smp, (uint64_t)seed, step, (int)bpd, idx);
        for (int j = 0; j < B; j++) {
            const image_row *r = &img_rows[idx[j] / views];
            view_pixels(xb + (size_t)j * 3 * hw, r, idx[j] % views, (uint64_t)seed, (int)size, exact, mean, stdv);
            yb[j] = r->label;
            if (ib) memcpy(ib + (size_t)j * D, TM.rows + (size_t)trow[idx[j]] * D, (size_t)D * sizeof(float));
        }
        train_terms tt;
        if (train_backbone_step(st, &o, &ob, trains_head ? &oh : NULL, xb, B, (int)size, (int)size, ib, yb, &tt, &ws,
                                err) != 0)
            die(1, "step %lld: %s", (long long)step, err);
        if (!isfinite(tt.loss)) die(1, "step %lld: the loss is %g", (long long)step, tt.loss);
        double t5[5] = {tt.loss, tt.cos_image, tt.cos_text, tt.ce, tt.kl};
        for (int k = 0; k < 5; k++) sums[k] += t5[k];
        nsum++;
        memcpy(cur, sp->data, sp->numel * sizeof(float));
        if (trains_head) memcpy(cur + sp->numel, h.p.data, h.p.numel * sizeof(float));
        if (use_swad) swad_update(&sw_, cur);
        if (step % every == 0 || step == steps - 1) {
            ev = xrealloc(ev, (size_t)(nev + 1) * sizeof *ev);
            eval_rec *r = &ev[nev++];
            r->dacc = xmalloc((size_t)ndom * sizeof(double));
            evaluate(&vs, r->dacc, &r->acc, &r->vloss, step);
            r->step = step;
            r->loss = sums[0] / nsum, r->cos_image = sums[1] / nsum, r->cos_text = sums[2] / nsum;
            r->ce = sums[3] / nsum, r->kl = sums[4] / nsum;
            memset(sums, 0, sizeof sums);
            nsum = 0;
            if (use_swad) {
                dead = swad_evaluate(&sw_, r->vloss, step);
                r->swad = swad_state_json(&sw_);
            } else {
                r->swad = NULL;
                if (r->acc >= best_acc) {
                    best_acc = r->acc;
                    best_step = step;
                    memcpy(best, cur, numel * sizeof(float));
                }
            }
            progress_count((uint64_t)step + 1, PROGRESS_NO_DROPS, "loss %.5f, source validation accuracy %.4f, loss %.4f%s",
                           r->loss, r->acc, r->vloss, dead ? ": the valley is dead" : "");
        }
        if (ckpt && ((step + 1) % ckpt_every == 0 || dead) && step + 1 < steps) {
            json_buf rj = {0};
            json_buf_printf(&rj, "{\"best_acc\":%.17g,\"best_step\":%lld,\"nsum\":%lld,\"sums\":[", best_acc,
                            (long long)best_step, (long long)nsum);
            for (int k = 0; k < 5; k++) json_buf_printf(&rj, "%s%.17g", k ? "," : "", sums[k]);
            json_buf_puts(&rj, "],\"evals\":[");
            for (int e = 0; e < nev; e++) {
                eval_rec *x = &ev[e];
                json_buf_printf(&rj,
                                "%s{\"step\":%lld,\"loss\":%.17g,\"cos_image\":%.17g,\"cos_text\":%.17g,\"ce\":%.17g,"
                                "\"kl\":%.17g,\"acc\":%.17g,\"vloss\":%.17g,\"dacc\":[",
                                e ? "," : "", (long long)x->step, x->loss, x->cos_image, x->cos_text, x->ce, x->kl,
                                x->acc, x->vloss);
                for (int k = 0; k < ndom; k++) json_buf_printf(&rj, "%s%.17g", k ? "," : "", x->dacc[k]);
                json_buf_puts(&rj, "]");
                if (x->swad) {
                    json_buf_puts(&rj, ",\"swad\":");
                    json_buf_str(&rj, x->swad, strlen(x->swad));
                }
                json_buf_puts(&rj, "}");
            }
            json_buf_puts(&rj, "]}");
            json_buf_put(&rj, "", 1);
            char sbuf[32];
            snprintf(sbuf, sizeof sbuf, "%lld", (long long)step + 1);
            char *sj = use_swad ? swad_state_json(&sw_) : xstrdup("");
            const char *keys[] = {"vl2v.settings", "vl2v.inputs", "vl2v.seed", "vl2v.step", "vl2v.swad", "vl2v.run"};
            const char *vals[] = {settings, inputs.p, identity, sbuf, sj, rj.p};
            if (ckpt_save(ckpt, parts, nparts, extra, nextra, keys, vals, 6, err) != 0) die(1, "%s", err);
            free(sj);
            free(rj.p);
        }
    }

    /* the weights chosen */
    int64_t from = 0, to_step = 0, averaged = 0;
    if (use_swad) {
        const float *avg = swad_finish(&sw_);
        averaged = swad_window(&sw_, &from, &to_step);
        if (!swad_converged(&sw_))
            warnx("SWAD's loss valley never converged: the model is the last segment's average (steps %lld..%lld)",
                  (long long)from, (long long)to_step);
        memcpy(cur, avg, numel * sizeof(float));
    } else {
        memcpy(cur, best, numel * sizeof(float));
        from = to_step = best_step, averaged = 1;
    }
    /* parameters only: the buffers (BatchNorm's statistics) stay the last iterate's */
    for (int i = 0; i < sp->n; i++)
        if (!sp->t[i].is_buffer)
            memcpy(param_data(sp, i), cur + sp->t[i].off, sp->t[i].numel * sizeof(float));
    if (trains_head) memcpy(h.p.data, cur + sp->numel, h.p.numel * sizeof(float));
    if (memcmp(w0, sp->data, sp->numel * sizeof(float)) == 0)
        die(1, "the backbone's weights did not move in %lld steps (is --lr 0?)", steps);
    double final_acc, final_loss, *final_dacc = xmalloc((size_t)ndom * sizeof(double));
    evaluate(&vs, final_dacc, &final_acc, &final_loss, steps);

    /* the model file */
    stw *w = stw_new();
    for (int i = 0; i < sp->n; i++) /* the student's own classifier, if any, is not the head */
        if (param_find(&h.p, sp->t[i].name) < 0)
            stw_add(w, sp->t[i].name, ST_F32, sp->t[i].ndim, sp->t[i].shape, param_data(sp, i));
    head_add_to_writer(&h, w);
    json_buf cj = {0};
    meta_json_strs(&cj, (const char *const *)classes, C);
    json_buf_put(&cj, "", 1);
    json_buf srcs = {0};
    meta_json_strs(&srcs, (const char *const *)dom, ndom);
    json_buf_put(&srcs, "", 1);
    char num[128], space[64];
    snprintf(space, sizeof space, "student:%s", student_arch(st));
    stw_meta(w, "vl2v.head", h.kind == HEAD_COSINE ? "cosine" : "linear");
    stw_meta(w, "vl2v.classes", cj.p);
    stw_meta(w, "vl2v.student_space", space);
    if (tpath) stw_meta(w, "vl2v.teacher_space", TM.space);
    stw_meta(w, "vl2v.method", method);
    stw_meta(w, "vl2v.seed", identity);
    stw_meta(w, "vl2v.sources", srcs.p);
    stw_meta(w, "vl2v.settings", settings);
    snprintf(num, sizeof num, "%.9g,%.9g,%.9g", mean[0], mean[1], mean[2]);
    stw_meta(w, "vl2v.mean", num);
    snprintf(num, sizeof num, "%.9g,%.9g,%.9g", stdv[0], stdv[1], stdv[2]);
    stw_meta(w, "vl2v.std", num);
    snprintf(num, sizeof num, "%lld", (long long)(use_swad ? to_step : best_step));
    stw_meta(w, "vl2v.best_step", num);
    snprintf(num, sizeof num, "%.17g", final_acc);
    stw_meta(w, "vl2v.val_acc", num);
    snprintf(num, sizeof num, "{\"from\":%lld,\"to\":%lld,\"iterates\":%lld,\"swad\":%s}", (long long)from,
             (long long)to_step, (long long)averaged, use_swad ? (swad_converged(&sw_) ? "true" : "\"not converged\"")
                                                               : "false");
    stw_meta(w, "vl2v.steps_averaged", num);
    stw_meta(w, "vl2v.inputs", inputs.p);
    if (stw_write(w, to.output, err) != 0) die(1, "%s", err);
    stw_free(w);

    /* the log, from the evaluations (a resumed run writes the same) */
    if (logpath) {
        tool_out lo;
        sw ls;
        output_open(&lo, logpath);
        sw_init(&ls, lo.fd);
        sw_header_log(&ls, NULL, argc, argv);
        mpw_str(&ls.w, "method");
        mpw_str(&ls.w, method);
        if (sw_header_end(&ls) != 0) die(1, "%s: write error: %s", logpath, strerror(ls.w.err));
        for (int e = 0; e < nev; e++) {
            eval_rec *x = &ev[e];
            sw_item_begin(&ls);
            mpw_str(&ls.w, "step");
            mpw_int(&ls.w, x->step);
            const char *keys[] = {"loss", "cos_image", "cos_text", "ce", "kl"};
            double vals[] = {x->loss, x->cos_image, x->cos_text, x->ce, x->kl};
            int use[] = {1, objective == TRAIN_ADIP || objective == TRAIN_SD,
                         objective == TRAIN_ADIP || objective == TRAIN_SD, trains_head, objective == TRAIN_KD};
            for (int k = 0; k < 5; k++)
                if (use[k]) {
                    mpw_str(&ls.w, keys[k]);
                    mpw_f64(&ls.w, vals[k]);
                }
            mpw_str(&ls.w, "val_acc");
            mpw_f64(&ls.w, x->acc);
            mpw_str(&ls.w, "val_loss");
            mpw_f64(&ls.w, x->vloss);
            for (int k = 0; k < ndom; k++) {
                char key[300];
                snprintf(key, sizeof key, "val_acc.%s", dom[k]);
                mpw_str(&ls.w, key);
                mpw_f64(&ls.w, x->dacc[k]);
            }
            if (x->swad) {
                mpw_str(&ls.w, "swad");
                mpw_str(&ls.w, x->swad);
            }
            if (sw_item_end(&ls) != 0) die(1, "%s: write error: %s", logpath, strerror(ls.w.err));
        }
        sw_trailer_begin(&ls);
        mpw_str(&ls.w, "steps_from");
        mpw_int(&ls.w, from);
        mpw_str(&ls.w, "steps_to");
        mpw_int(&ls.w, to_step);
        mpw_str(&ls.w, "val_acc");
        mpw_f64(&ls.w, final_acc);
        mpw_str(&ls.w, "val_loss");
        mpw_f64(&ls.w, final_loss);
        sw_trailer_end(&ls);
        output_commit(&lo, &ls);
    }
    if (ckpt) unlink(ckpt);
    progress_end((uint64_t)(nev ? ev[nev - 1].step + 1 : 0), PROGRESS_NO_DROPS,
                 "%lld views of %d images in %d source domains, %d evaluations; weights of steps %lld..%lld",
                 (long long)N, nimg, ndom, nev, (long long)from, (long long)to_step);
    return 0;
}
