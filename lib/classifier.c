/* classifier: head files and the cosine and linear rules (see classifier.h). */
#include "classifier.h"

#include "json.h"
#include "par.h"
#include "st.h"
#include "util.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* F.normalize's floor on a norm: a zero vector scores 0 against every class */
#define NORM_EPS 1e-12

void clf_free(clf_head *h)
{
    for (int i = 0; h->classes && i < h->C; i++) free(h->classes[i]);
    for (int i = 0; i < h->nsources; i++) free(h->sources[i]);
    free(h->proj_w), free(h->proj_b), free(h->text), free(h->text_norm), free(h->fc_w), free(h->fc_b);
    free(h->classes), free(h->sources), free(h->student_space), free(h->teacher_space), free(h->method);
    free(h->settings);
    memset(h, 0, sizeof *h);
}

/* A JSON array of strings from metadata key: the strings (owned) and their count. */
static int meta_strings(const st_file *f, const char *key, char ***out, int *n, char *err)
{
    const char *s = st_meta(f, key);
    char jerr[VL_ERRLEN];
    *out = NULL, *n = 0;
    if (!s) return vl_error(err, "%s: no metadata '%s'", f->path, key);
    json *j = json_parse(s, strlen(s), jerr);
    if (!j) return vl_error(err, "%s: metadata '%s': not JSON: %s", f->path, key, jerr);
    int ok = j->type == JSON_ARR;
    for (size_t i = 0; ok && i < j->n; i++) ok = j->items[i].type == JSON_STR;
    if (!ok) {
        json_free(j);
        return vl_error(err, "%s: metadata '%s': not a JSON array of strings", f->path, key);
    }
    *out = xcalloc(j->n ? j->n : 1, sizeof **out);
    for (size_t i = 0; i < j->n; i++) (*out)[i] = xstrdup(j->items[i].s);
    *n = (int)j->n;
    json_free(j);
    return 0;
}

static char *meta_dup(const st_file *f, const char *key)
{
    const char *s = st_meta(f, key);
    return s ? xstrdup(s) : NULL;
}

static double *row_norms(const float *x, int n, int d)
{
    double *nrm = xmalloc((size_t)(n ? n : 1) * sizeof *nrm);
    for (int i = 0; i < n; i++) {
        double s = 0;
        for (int k = 0; k < d; k++) s += (double)x[(size_t)i * d + k] * x[(size_t)i * d + k];
        nrm[i] = sqrt(s);
    }
    return nrm;
}

static int read_head(clf_head *h, const st_file *f, char *err)
{
    const char *kind = st_meta(f, "vl2v.head");
    if (!kind) return vl_error(err, "%s: no metadata 'vl2v.head' (\"cosine\" or \"linear\"): not a head file", f->path);
    if (strcmp(kind, "cosine") == 0) h->kind = CLF_COSINE;
    else if (strcmp(kind, "linear") == 0) h->kind = CLF_LINEAR;
    else return vl_error(err, "%s: metadata 'vl2v.head' is '%s', expected \"cosine\" or \"linear\"", f->path, kind);
    char **classes;
    int C;
    if (meta_strings(f, "vl2v.classes", &classes, &C, err) != 0) return -1;
    h->classes = classes;
    h->C = C;
    if (C < 1) return vl_error(err, "%s: metadata 'vl2v.classes' is empty", f->path);
    if (!(h->student_space = meta_dup(f, "vl2v.student_space")))
        return vl_error(err, "%s: no metadata 'vl2v.student_space'", f->path);
    if (h->kind == CLF_COSINE) {
        if (!(h->teacher_space = meta_dup(f, "vl2v.teacher_space")))
            return vl_error(err, "%s: no metadata 'vl2v.teacher_space'", f->path);
        const st_tensor *pw = st_find(f, "proj.weight");
        if (!pw || pw->ndim != 2 || pw->shape[0] < 1 || pw->shape[1] < 1 || pw->shape[0] > INT32_MAX ||
            pw->shape[1] > INT32_MAX)
            return vl_error(err, "%s: %s", f->path, pw ? "tensor 'proj.weight' is not a [D, Ds] matrix" :
                                                         "missing tensor 'proj.weight' (a cosine head)");
        h->D = (int)pw->shape[0], h->Ds = (int)pw->shape[1];
        if (!(h->proj_w = st_load_f32(f, "proj.weight", 2, (int64_t[]){h->D, h->Ds}, err))) return -1;
        if (!(h->proj_b = st_load_f32(f, "proj.bias", 1, (int64_t[]){h->D}, err))) return -1;
        if (!(h->text = st_load_f32(f, "text", 2, (int64_t[]){-1, h->D}, err))) return -1;
        const st_tensor *t = st_find(f, "text");
        if (t->shape[0] != C)
            return vl_error(err, "%s: tensor 'text' has %" PRId64 " rows but metadata 'vl2v.classes' names %d classes",
                            f->path, t->shape[0], C);
        h->text_norm = row_norms(h->text, C, h->D);
        for (int c = 0; c < C; c++)
            if (!(h->text_norm[c] > 0)) return vl_error(err, "%s: tensor 'text': row %d is zero", f->path, c);
    } else {
        const st_tensor *fw = st_find(f, "fc.weight");
        if (!fw || fw->ndim != 2 || fw->shape[1] < 1 || fw->shape[1] > INT32_MAX)
            return vl_error(err, "%s: %s", f->path, fw ? "tensor 'fc.weight' is not a [C, Ds] matrix" :
                                                         "missing tensor 'fc.weight' (a linear head)");
        h->Ds = (int)fw->shape[1];
        if (fw->shape[0] != C)
            return vl_error(err, "%s: tensor 'fc.weight' has %" PRId64 " rows but metadata 'vl2v.classes' names %d classes",
                            f->path, fw->shape[0], C);
        if (!(h->fc_w = st_load_f32(f, "fc.weight", 2, (int64_t[]){C, h->Ds}, err))) return -1;
        if (!(h->fc_b = st_load_f32(f, "fc.bias", 1, (int64_t[]){C}, err))) return -1;
    }
    const char *m = st_meta(f, "vl2v.method"), *set = st_meta(f, "vl2v.settings"), *seed = st_meta(f, "vl2v.seed");
    h->method = xstrdup(m ? m : "");
    h->settings = xstrdup(set ? set : "");
    if (seed && *seed) {
        char *end;
        errno = 0;
        long long v = strtoll(seed, &end, 10);
        if (errno || *end) return vl_error(err, "%s: metadata 'vl2v.seed' is '%.40s', not an integer", f->path, seed);
        h->has_seed = 1, h->seed = v;
    }
    if (st_meta(f, "vl2v.sources") && meta_strings(f, "vl2v.sources", &h->sources, &h->nsources, err) != 0) return -1;
    return 0;
}

int clf_open(clf_head *h, const char *path, char *err)
{
    st_file f;
    memset(h, 0, sizeof *h);
    if (st_open(&f, path, err) != 0) return -1;
    int rc = read_head(h, &f, err);
    st_close(&f);
    if (rc != 0) clf_free(h);
    return rc;
}

int clf_from_text(clf_head *h, const float *text, int C, int D, char *const *classes, char *err)
{
    memset(h, 0, sizeof *h);
    h->kind = CLF_COSINE;
    h->C = C, h->D = D;
    h->text = xmalloc((size_t)C * D * sizeof(float));
    memcpy(h->text, text, (size_t)C * D * sizeof(float));
    h->text_norm = row_norms(text, C, D);
    h->classes = xcalloc((size_t)C, sizeof *h->classes);
    for (int c = 0; c < C; c++) h->classes[c] = xstrdup(classes[c]);
    h->method = xstrdup("");
    h->settings = xstrdup("");
    for (int c = 0; c < C; c++)
        if (!(h->text_norm[c] > 0)) {
            clf_free(h);
            return vl_error(err, "text row %d ('%s') is zero", c, classes[c]);
        }
    return 0;
}

/* z (D) = x (Ds) Wp^T + bp, in double */
static void project_row(const clf_head *h, double *z, const float *x)
{
    for (int j = 0; j < h->D; j++) {
        const float *w = h->proj_w + (size_t)j * h->Ds;
        double s = h->proj_b[j];
        for (int k = 0; k < h->Ds; k++) s += (double)x[k] * w[k];
        z[j] = s;
    }
}

typedef struct {
    const clf_head *h;
    float *out;
    const float *x;
    int projected, project_only;
} job;

static void rows(void *ctx, int lo, int hi)
{
    const job *J = ctx;
    const clf_head *h = J->h;
    int din = h->kind == CLF_COSINE && J->projected ? h->D : h->Ds;
    double *z = h->kind == CLF_COSINE ? xmalloc((size_t)h->D * sizeof *z) : NULL;
    for (int i = lo; i < hi; i++) {
        const float *x = J->x + (size_t)i * din;
        if (J->project_only) {
            project_row(h, z, x);
            for (int j = 0; j < h->D; j++) J->out[(size_t)i * h->D + j] = (float)z[j];
            continue;
        }
        float *lg = J->out + (size_t)i * h->C;
        if (h->kind == CLF_LINEAR) {
            for (int c = 0; c < h->C; c++) {
                const float *w = h->fc_w + (size_t)c * h->Ds;
                double s = h->fc_b[c];
                for (int k = 0; k < h->Ds; k++) s += (double)x[k] * w[k];
                lg[c] = (float)s;
            }
            continue;
        }
        if (J->projected)
            for (int j = 0; j < h->D; j++) z[j] = x[j];
        else
            project_row(h, z, x);
        double nz = 0;
        for (int j = 0; j < h->D; j++) nz += z[j] * z[j];
        nz = fmax(sqrt(nz), NORM_EPS);
        for (int c = 0; c < h->C; c++) {
            const float *t = h->text + (size_t)c * h->D;
            double s = 0;
            for (int j = 0; j < h->D; j++) s += z[j] * t[j];
            lg[c] = (float)(100.0 * s / (nz * fmax(h->text_norm[c], NORM_EPS)));
        }
    }
    free(z);
}

static void run_rows(const clf_head *h, float *out, const float *x, int n, int projected, int project_only)
{
    job J = {h, out, x, projected, project_only};
    size_t work = (size_t)h->C * (h->D ? h->D : 1) + (projected ? 0 : (size_t)h->D * h->Ds) + (size_t)h->C * h->Ds;
    par_for(n, work * (size_t)n, rows, &J);
}

void clf_project(const clf_head *h, float *z, const float *x, int n) { run_rows(h, z, x, n, 0, 1); }

void clf_logits(const clf_head *h, float *logits, const float *x, int n, int projected)
{
    run_rows(h, logits, x, n, projected, 0);
}

int clf_argmax(const float *logits, int C)
{
    int best = 0;
    for (int c = 1; c < C; c++)
        if (logits[c] > logits[best]) best = c;
    return best;
}
