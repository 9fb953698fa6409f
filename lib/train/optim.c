/* optim: SGD, Adam and AdamW with PyTorch semantics; see optim.h. */
#include "train/optim.h"

#include "par.h"
#include "simd.h"
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

/* The update rules, one element at a time (the reference) and 16 lanes at a
 * time: each lane does the scalar rule's operations in the same order, so
 * both give the same bytes (sqrt and division are correctly rounded either
 * way; C11 mode does not contract a * b + c into a fused multiply-add). A
 * tail shorter than a vector goes through the vector code padded with zeros,
 * and only its lanes are stored. */

typedef struct {
    float lr, wd, mu, b1, b2, eps, step_size, bc2_sqrt, k;
    int kind, nesterov, first;
} rule;

static rule make_rule(const optim *o, int64_t step)
{
    rule r = {.lr = o->lr, .wd = o->wd, .mu = o->momentum, .b1 = o->beta1, .b2 = o->beta2, .eps = o->eps,
              .kind = o->kind, .nesterov = o->nesterov, .first = step == 1};
    if (o->kind != OPTIM_SGD) {
        /* as torch.optim.Adam (single-tensor path): the corrections are
         * Python floats (double), the moments float32 */
        double bc1 = 1.0 - pow(o->beta1, (double)step), bc2 = 1.0 - pow(o->beta2, (double)step);
        r.step_size = (float)(o->lr / bc1), r.bc2_sqrt = (float)sqrt(bc2);
        r.k = 1.0f - o->lr * o->wd;
    }
    return r;
}

static void sgd_ref(const rule *r, float *w, const float *g, float *buf, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        float d = g[i];
        if (r->wd != 0.0f) d += r->wd * w[i];
        if (r->mu != 0.0f) {
            buf[i] = r->first ? d : r->mu * buf[i] + d;
            d = r->nesterov ? d + r->mu * buf[i] : buf[i];
        }
        w[i] -= r->lr * d;
    }
}

static void adam_ref(const rule *r, float *w, const float *g, float *m, float *v, size_t n)
{
    if (r->kind == OPTIM_ADAMW && r->wd != 0.0f)
        for (size_t i = 0; i < n; i++) w[i] *= r->k;
    for (size_t i = 0; i < n; i++) {
        float d = g[i];
        if (r->kind == OPTIM_ADAM && r->wd != 0.0f) d += r->wd * w[i];
        m[i] += (d - m[i]) * (1.0f - r->b1);
        v[i] = v[i] * r->b2 + (1.0f - r->b2) * d * d;
        float denom = sqrtf(v[i]) / r->bc2_sqrt + r->eps;
        w[i] -= r->step_size * (m[i] / denom);
    }
}

static inline vf ld(const float *p, int n) { return n == VL_VW ? vf_load(p) : vf_load_part(p, n, 0.0f); }

static inline void st(float *p, vf v, int n)
{
    if (n == VL_VW)
        vf_store(p, v);
    else
        vf_store_part(p, v, n);
}

static void sgd_vec(const rule *r, float *w, const float *g, float *buf, size_t n)
{
    vf lr = vf_set(r->lr), wd = vf_set(r->wd), mu = vf_set(r->mu);
    for (size_t i = 0; i < n; i += VL_VW) {
        int k = n - i < VL_VW ? (int)(n - i) : VL_VW;
        vf d = ld(g + i, k), x = ld(w + i, k);
        if (r->wd != 0.0f) d += wd * x;
        if (r->mu != 0.0f) {
            vf b = r->first ? d : mu * ld(buf + i, k) + d;
            st(buf + i, b, k);
            d = r->nesterov ? d + mu * b : b;
        }
        st(w + i, x - lr * d, k);
    }
}

static void adam_vec(const rule *r, float *w, const float *g, float *m, float *v, size_t n)
{
    vf wd = vf_set(r->wd), c1 = vf_set(1.0f - r->b1), b2 = vf_set(r->b2), c2 = vf_set(1.0f - r->b2);
    vf eps = vf_set(r->eps), ss = vf_set(r->step_size), bs = vf_set(r->bc2_sqrt), kk = vf_set(r->k);
    int decay = r->wd != 0.0f, adamw = r->kind == OPTIM_ADAMW;
    for (size_t i = 0; i < n; i += VL_VW) {
        int k = n - i < VL_VW ? (int)(n - i) : VL_VW;
        vf d = ld(g + i, k), x = ld(w + i, k), mi = ld(m + i, k), vi_ = ld(v + i, k);
        if (decay && adamw) x = x * kk;
        if (decay && !adamw) d += wd * x;
        mi += (d - mi) * c1;
        vi_ = vi_ * b2 + c2 * d * d;
        vf denom = vf_sqrt(vi_) / bs + eps;
        x -= ss * (mi / denom);
        st(m + i, mi, k);
        st(v + i, vi_, k);
        st(w + i, x, k);
    }
}

/* One step is cut into pieces of at most SEG elements of one tensor, run
 * side by side on the thread pool. */
#define SEG 16384

typedef struct {
    int t;         /* tensor */
    size_t off, n; /* element range inside the block */
} seg;

typedef struct {
    const optim *o;
    params *p;
    const seg *s;
    const rule *r; /* per tensor */
    int ref;
} step_args;

static void step_range(void *ctx, int j0, int j1)
{
    const step_args *a = ctx;
    const optim *o = a->o;
    for (int j = j0; j < j1; j++) {
        const seg *s = &a->s[j];
        const rule *r = &a->r[s->t];
        float *w = a->p->data + s->off, *g = a->p->grad + s->off, *m = o->m + s->off;
        if (o->kind == OPTIM_SGD)
            (a->ref ? sgd_ref : sgd_vec)(r, w, g, m, s->n);
        else
            (a->ref ? adam_ref : adam_vec)(r, w, g, m, o->v + s->off, s->n);
    }
}

static void step(optim *o, params *p, int ref)
{
    int nt = p->n < o->n ? p->n : o->n, ns = 0, cap = 0;
    seg *s = NULL;
    rule *r = xcalloc(nt ? nt : 1, sizeof *r);
    size_t work = 0;
    for (int i = 0; i < nt; i++) {
        if (!param_grad(p, i)) continue;
        const param_tensor *t = &p->t[i];
        r[i] = make_rule(o, ++o->steps[i]);
        for (size_t k = 0; k < t->numel; k += SEG) {
            if (ns == cap) s = xrealloc(s, (size_t)(cap = cap ? 2 * cap : 64) * sizeof *s);
            s[ns++] = (seg){i, t->off + k, t->numel - k < SEG ? t->numel - k : SEG};
        }
        work += t->numel;
    }
    step_args a = {o, p, s, r, ref};
    if (ref)
        step_range(&a, 0, ns);
    else if (ns)
        par_for(ns, 4 * work, step_range, &a);
    free(s);
    free(r);
}

void optim_step(optim *o, params *p) { step(o, p, 0); }

void optim_step_ref(optim *o, params *p) { step(o, p, 1); }

void optim_add_to_writer(const optim *o, const params *p, stw *w, const char *prefix)
{
    char name[512], val[64];
    for (int i = 0; i < p->n; i++) {
        if (!o->steps[i]) continue;
        const param_tensor *t = &p->t[i];
        int64_t one = 1;
        snprintf(name, sizeof name, "%s%s.step", prefix, t->name);
        stw_add(w, name, ST_I64, 1, &one, &o->steps[i]);
        if (o->kind == OPTIM_SGD) {
            if (o->momentum == 0.0f) continue;
            snprintf(name, sizeof name, "%s%s.momentum_buffer", prefix, t->name);
            stw_add(w, name, ST_F32, t->ndim, t->shape, o->m + t->off);
        } else {
            snprintf(name, sizeof name, "%s%s.exp_avg", prefix, t->name);
            stw_add(w, name, ST_F32, t->ndim, t->shape, o->m + t->off);
            snprintf(name, sizeof name, "%s%s.exp_avg_sq", prefix, t->name);
            stw_add(w, name, ST_F32, t->ndim, t->shape, o->v + t->off);
        }
    }
    char key[512];
#define META(k, x)                                                                                                 \
    snprintf(val, sizeof val, "%.9g", (double)(x));                                                                \
    snprintf(key, sizeof key, "%s%s", prefix, k);                                                                  \
    stw_meta(w, key, val)
    snprintf(key, sizeof key, "%soptimizer", prefix);
    stw_meta(w, key, KIND_NAMES[o->kind]);
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
}

int optim_save(const optim *o, const params *p, const char *path, char *err)
{
    if (p->n != o->n || p->numel != o->numel)
        return vl_error(err, "%s: the parameters differ from those the optimizer was made for", path);
    stw *w = stw_new();
    optim_add_to_writer(o, p, w, "");
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
    return st_check_finite(f, s, dst, err);
}

static int has_suffix(const char *s, size_t n, const char *suffix)
{
    size_t k = strlen(suffix);
    return n >= k && memcmp(s + n - k, suffix, k) == 0;
}

int optim_load_file(optim *o, const params *p, const st_file *f, const char *prefix, char *err)
{
    const char *path = f->path;
    if (p->n != o->n || p->numel != o->numel)
        return vl_error(err, "%s: the parameters differ from those the optimizer was made for", path);
    size_t pl = strlen(prefix);
    char key[512];
    snprintf(key, sizeof key, "%soptimizer", prefix);
    const char *kind = st_meta(f, key);
    if (!kind || strcmp(kind, KIND_NAMES[o->kind]) != 0)
        return vl_error(err, "%s: optimizer state is for '%s', not '%s'", path, kind ? kind : "?",
                        KIND_NAMES[o->kind]);
    /* every tensor of the file under the prefix is state of one of p's
     * tensors: a state saved for another model is refused, not silently
     * ignored */
    static const char *const SUFFIXES[] = {".step", ".exp_avg", ".exp_avg_sq", ".momentum_buffer"};
    for (int i = 0; i < f->n; i++) {
        const char *name = f->t[i].name;
        if (strncmp(name, prefix, pl) != 0) continue;
        name += pl;
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
        if (!found) return vl_error(err, "%s: tensor '%s' is not the state of a parameter of this model", path, f->t[i].name);
    }
    /* loaded into copies: on any error the optimizer is left as it was */
    size_t bytes = (p->numel ? p->numel : 1) * sizeof(float);
    float *m = xmalloc_aligned(bytes), *v = o->v ? xmalloc_aligned(bytes) : NULL;
    int64_t *steps = xcalloc(p->n ? p->n : 1, sizeof *steps);
    memcpy(m, o->m, bytes);
    if (v) memcpy(v, o->v, bytes);
    int rc = 0;
    char name[512], tname[512];
    for (int i = 0; i < p->n && rc == 0; i++) {
        const param_tensor *t = &p->t[i];
        snprintf(tname, sizeof tname, "%s%s", prefix, t->name);
        snprintf(name, sizeof name, "%s.step", tname);
        const st_tensor *s = st_find(f, name);
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
            if (o->momentum != 0.0f) rc = load_state(f, tname, "momentum_buffer", t, m + t->off, err);
        } else {
            rc = load_state(f, tname, "exp_avg", t, m + t->off, err);
            if (rc == 0) rc = load_state(f, tname, "exp_avg_sq", t, v + t->off, err);
        }
    }
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

int optim_load(optim *o, const params *p, const char *path, char *err)
{
    st_file f;
    if (st_open(&f, path, err) != 0) return -1;
    int rc = optim_load_file(o, p, &f, "", err);
    st_close(&f);
    return rc;
}
