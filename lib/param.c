/* param: named tensors in one block; see param.h. */
#include "param.h"

#include "util.h"

#include <stdlib.h>
#include <string.h>

void param_init(params *p) { memset(p, 0, sizeof *p); }

void param_free(params *p)
{
    for (int i = 0; i < p->n; i++) free(p->t[i].name);
    free(p->t);
    if (!p->external) {
        free(p->data);
        free(p->grad);
    }
    memset(p, 0, sizeof *p);
}

void param_wrap(params *p, const char *name, float *data, float *grad, size_t n)
{
    param_init(p);
    int64_t shape[1] = {(int64_t)n};
    param_add(p, name, 1, shape, 0);
    p->data = data;
    p->grad = grad;
    p->external = 1;
}

int param_add(params *p, const char *name, int ndim, const int64_t *shape, int is_buffer)
{
    if (p->n == p->cap) {
        p->cap = p->cap ? 2 * p->cap : 64;
        p->t = xrealloc(p->t, (size_t)p->cap * sizeof *p->t);
    }
    param_tensor *t = &p->t[p->n];
    memset(t, 0, sizeof *t);
    t->name = xstrdup(name);
    t->ndim = ndim;
    t->numel = 1;
    for (int d = 0; d < ndim; d++) {
        t->shape[d] = shape[d];
        t->numel *= (size_t)shape[d];
    }
    /* keep every tensor 64-byte aligned */
    t->off = p->numel;
    p->numel += (t->numel + 15) & ~(size_t)15;
    t->is_buffer = is_buffer;
    return p->n++;
}

void param_alloc(params *p)
{
    size_t bytes = (p->numel ? p->numel : 1) * sizeof(float);
    p->data = xmalloc_aligned(bytes);
    memset(p->data, 0, bytes);
}

int param_find(const params *p, const char *name)
{
    for (int i = 0; i < p->n; i++)
        if (strcmp(p->t[i].name, name) == 0) return i;
    return -1;
}

float *param_data(const params *p, int i) { return p->data + p->t[i].off; }

float *param_grad(const params *p, int i)
{
    if (i < 0 || !p->grad || p->t[i].is_buffer || p->t[i].frozen) return NULL;
    return p->grad + p->t[i].off;
}

int param_freeze(params *p, const char *prefix, int frozen)
{
    size_t n = strlen(prefix);
    int hits = 0;
    for (int i = 0; i < p->n; i++) {
        const char *name = p->t[i].name;
        if (n && (strncmp(name, prefix, n) != 0 || (name[n] != 0 && name[n] != '.'))) continue;
        p->t[i].frozen = frozen;
        hits++;
    }
    return hits;
}

size_t param_trainable(const params *p)
{
    size_t n = 0;
    for (int i = 0; i < p->n; i++)
        if (!p->t[i].is_buffer && !p->t[i].frozen) n += p->t[i].numel;
    return n;
}

void param_zero_grad(params *p)
{
    if (!p->grad) {
        size_t bytes = (p->numel ? p->numel : 1) * sizeof(float);
        p->grad = xmalloc_aligned(bytes);
        memset(p->grad, 0, bytes);
        return;
    }
    for (int i = 0; i < p->n; i++) {
        float *g = param_grad(p, i);
        if (g) memset(g, 0, p->t[i].numel * sizeof(float));
    }
}

static int ends_with(const char *s, const char *suffix)
{
    size_t a = strlen(s), b = strlen(suffix);
    return a >= b && strcmp(s + a - b, suffix) == 0;
}

int param_load(params *p, const st_file *f, const char *const *ignore, char *err)
{
    char b1[96], b2[96];
    for (int i = 0; i < p->n; i++) {
        const param_tensor *t = &p->t[i];
        const st_tensor *s = st_find(f, t->name);
        if (!s) return vl_error(err, "%s: tensor '%s' %s is missing", f->path, t->name,
                                st_shape_str(t->ndim, t->shape, b1, sizeof b1));
        int same = s->ndim == t->ndim;
        for (int d = 0; same && d < t->ndim; d++) same = s->shape[d] == t->shape[d];
        if (!same)
            return vl_error(err, "%s: tensor '%s' has shape %s, the model needs %s", f->path, t->name,
                            st_shape_str(s->ndim, s->shape, b1, sizeof b1),
                            st_shape_str(t->ndim, t->shape, b2, sizeof b2));
        if (st_read_f32(f, s, param_data(p, i), err) != 0) return -1;
    }
    for (int i = 0; i < f->n; i++) {
        const char *name = f->t[i].name;
        if (param_find(p, name) >= 0) continue;
        int skip = 0;
        for (int k = 0; ignore && ignore[k] && !skip; k++) skip = ends_with(name, ignore[k]);
        if (!skip) return vl_error(err, "%s: tensor '%s' is not part of this model", f->path, name);
    }
    return 0;
}

void param_add_to_writer(const params *p, stw *w)
{
    for (int i = 0; i < p->n; i++)
        stw_add(w, p->t[i].name, ST_F32, p->t[i].ndim, p->t[i].shape, param_data(p, i));
}
