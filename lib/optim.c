/* optim: SGD, Adam and AdamW with PyTorch semantics; see optim.h. */
#include "optim.h"

#include "util.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const KIND_NAMES[] = {"sgd", "adam", "adamw"};

void optim_init(optim *o, int kind, float lr, const params *p)
{
    memset(o, 0, sizeof *o);
    o->kind = kind;
    o->lr = lr;
    o->beta1 = 0.9f;
    o->beta2 = 0.999f;
    o->eps = 1e-8f;
    o->wd = kind == OPTIM_ADAMW ? 0.01f : 0.0f;
    o->n = p->n;
    o->numel = p->numel;
    size_t bytes = (p->numel ? p->numel : 1) * sizeof(float);
    o->m = xmalloc_aligned(bytes);
    memset(o->m, 0, bytes);
    if (kind != OPTIM_SGD) {
        o->v = xmalloc_aligned(bytes);
        memset(o->v, 0, bytes);
    }
    o->steps = xcalloc(p->n ? p->n : 1, sizeof *o->steps);
}

void optim_free(optim *o)
{
    free(o->m);
    free(o->v);
    free(o->steps);
    memset(o, 0, sizeof *o);
}

static void sgd_update(const optim *o, float *w, const float *g, float *buf, size_t n, int first)
{
    float lr = o->lr, wd = o->wd, mu = o->momentum;
    for (size_t i = 0; i < n; i++) {
        float d = g[i];
        if (wd != 0.0f) d += wd * w[i];
        if (mu != 0.0f) {
            buf[i] = first ? d : mu * buf[i] + d;
            d = o->nesterov ? d + mu * buf[i] : buf[i];
        }
        w[i] -= lr * d;
    }
}

static void adam_update(const optim *o, float *w, const float *g, float *m, float *v, size_t n, int64_t step)
{
    float b1 = o->beta1, b2 = o->beta2, wd = o->wd;
    /* as torch.optim.Adam (single-tensor path): the corrections are Python
     * floats (double), the moments float32 */
    double bc1 = 1.0 - pow(b1, (double)step), bc2 = 1.0 - pow(b2, (double)step);
    float step_size = (float)(o->lr / bc1), bc2_sqrt = (float)sqrt(bc2);
    if (o->kind == OPTIM_ADAMW && wd != 0.0f) {
        float k = 1.0f - o->lr * wd;
        for (size_t i = 0; i < n; i++) w[i] *= k;
    }
    for (size_t i = 0; i < n; i++) {
        float d = g[i];
        if (o->kind == OPTIM_ADAM && wd != 0.0f) d += wd * w[i];
        m[i] += (d - m[i]) * (1.0f - b1);
        v[i] = v[i] * b2 + (1.0f - b2) * d * d;
        float denom = sqrtf(v[i]) / bc2_sqrt + o->eps;
        w[i] -= step_size * (m[i] / denom);
    }
}

void optim_step(optim *o, params *p)
{
    for (int i = 0; i < p->n && i < o->n; i++) {
        float *g = param_grad(p, i);
        if (!g) continue;
        const param_tensor *t = &p->t[i];
        float *w = param_data(p, i);
        int64_t step = ++o->steps[i];
        if (o->kind == OPTIM_SGD)
            sgd_update(o, w, g, o->m + t->off, t->numel, step == 1);
        else
            adam_update(o, w, g, o->m + t->off, o->v + t->off, t->numel, step);
    }
}

int optim_save(const optim *o, const params *p, const char *path, char *err)
{
    if (p->n != o->n || p->numel != o->numel)
        return vl_error(err, "%s: the parameters differ from those the optimizer was made for", path);
    stw *w = stw_new();
    char name[512], val[64];
    for (int i = 0; i < p->n; i++) {
        if (!o->steps[i]) continue;
        const param_tensor *t = &p->t[i];
        int64_t one = 1;
        snprintf(name, sizeof name, "%s.step", t->name);
        stw_add(w, name, ST_I64, 1, &one, &o->steps[i]);
        if (o->kind == OPTIM_SGD) {
            if (o->momentum == 0.0f) continue;
            snprintf(name, sizeof name, "%s.momentum_buffer", t->name);
            stw_add(w, name, ST_F32, t->ndim, t->shape, o->m + t->off);
        } else {
            snprintf(name, sizeof name, "%s.exp_avg", t->name);
            stw_add(w, name, ST_F32, t->ndim, t->shape, o->m + t->off);
            snprintf(name, sizeof name, "%s.exp_avg_sq", t->name);
            stw_add(w, name, ST_F32, t->ndim, t->shape, o->v + t->off);
        }
    }
    stw_meta(w, "optimizer", KIND_NAMES[o->kind]);
#define META(key, x)                                                                                               \
    snprintf(val, sizeof val, "%.9g", (double)(x));                                                                \
    stw_meta(w, key, val)
    META("lr", o->lr);
    META("weight_decay", o->wd);
    if (o->kind == OPTIM_SGD) {
        META("momentum", o->momentum);
        META("nesterov", o->nesterov);
    } else {
        META("beta1", o->beta1);
        META("beta2", o->beta2);
        META("eps", o->eps);
    }
#undef META
    int rc = stw_write(w, path, err);
    stw_free(w);
    return rc;
}

static int load_state(const st_file *f, const char *tname, const char *suffix, const param_tensor *t, float *dst,
                      char *err)
{
    char name[512];
    snprintf(name, sizeof name, "%s.%s", tname, suffix);
    const st_tensor *s = st_find(f, name);
    if (!s) return vl_error(err, "%s: tensor '%s' is missing", f->path, name);
    if (s->dtype != ST_F32 || (size_t)s->numel != t->numel)
        return vl_error(err, "%s: tensor '%s' does not match parameter '%s'", f->path, name, t->name);
    memcpy(dst, s->data, t->numel * sizeof(float));
    return 0;
}

static int has_suffix(const char *s, size_t n, const char *suffix)
{
    size_t k = strlen(suffix);
    return n >= k && memcmp(s + n - k, suffix, k) == 0;
}

int optim_load(optim *o, const params *p, const char *path, char *err)
{
    if (p->n != o->n || p->numel != o->numel)
        return vl_error(err, "%s: the parameters differ from those the optimizer was made for", path);
    st_file f;
    if (st_open(&f, path, err) != 0) return -1;
    const char *kind = st_meta(&f, "optimizer");
    if (!kind || strcmp(kind, KIND_NAMES[o->kind]) != 0) {
        vl_error(err, "%s: optimizer state is for '%s', not '%s'", path, kind ? kind : "?", KIND_NAMES[o->kind]);
        st_close(&f);
        return -1;
    }
    /* every tensor of the file is state of one of p's tensors: a state saved
     * for another model is refused, not silently ignored */
    static const char *const SUFFIXES[] = {".step", ".exp_avg", ".exp_avg_sq", ".momentum_buffer"};
    for (int i = 0; i < f.n; i++) {
        const char *name = f.t[i].name;
        size_t len = strlen(name);
        int found = 0;
        for (int k = 0; k < 4 && !found; k++) {
            size_t sl = strlen(SUFFIXES[k]);
            if (!has_suffix(name, len, SUFFIXES[k])) continue;
            char *base = xmalloc(len - sl + 1);
            memcpy(base, name, len - sl);
            base[len - sl] = 0;
            found = param_find(p, base) >= 0;
            free(base);
        }
        if (!found) {
            vl_error(err, "%s: tensor '%s' is not the state of a parameter of this model", path, name);
            st_close(&f);
            return -1;
        }
    }
    /* loaded into copies: on any error the optimizer is left as it was */
    size_t bytes = (p->numel ? p->numel : 1) * sizeof(float);
    float *m = xmalloc_aligned(bytes), *v = o->v ? xmalloc_aligned(bytes) : NULL;
    int64_t *steps = xcalloc(p->n ? p->n : 1, sizeof *steps);
    memcpy(m, o->m, bytes);
    if (v) memcpy(v, o->v, bytes);
    int rc = 0;
    char name[512];
    for (int i = 0; i < p->n && rc == 0; i++) {
        const param_tensor *t = &p->t[i];
        snprintf(name, sizeof name, "%s.step", t->name);
        const st_tensor *s = st_find(&f, name);
        if (!s) continue;
        if (s->dtype != ST_I64 || s->numel != 1) {
            rc = vl_error(err, "%s: tensor '%s' is not one I64", path, name);
            break;
        }
        memcpy(&steps[i], s->data, sizeof(int64_t));
        if (steps[i] < 1) {
            rc = vl_error(err, "%s: tensor '%s' is %lld, not a step count", path, name, (long long)steps[i]);
            break;
        }
        if (o->kind == OPTIM_SGD) {
            if (o->momentum != 0.0f) rc = load_state(&f, t->name, "momentum_buffer", t, m + t->off, err);
        } else {
            rc = load_state(&f, t->name, "exp_avg", t, m + t->off, err);
            if (rc == 0) rc = load_state(&f, t->name, "exp_avg_sq", t, v + t->off, err);
        }
    }
    st_close(&f);
    if (rc == 0) {
        float *t = o->m;
        o->m = m, m = t;
        t = o->v, o->v = v, v = t;
        int64_t *ts = o->steps;
        o->steps = steps, steps = ts;
    }
    free(m);
    free(v);
    free(steps);
    return rc;
}
