/* ckpt: one file for a training stage's state; see ckpt.h. */
#include "train/ckpt.h"

#include "util.h"

#include <stdio.h>
#include <string.h>

int ckpt_save(const char *path, const ckpt_part *parts, int n, const ckpt_extra *extra, int nextra,
              const char *const *keys, const char *const *vals, int nmeta, char *err)
{
    stw *w = stw_new();
    char prefix[32];
    for (int k = 0; k < n; k++) {
        param_add_to_writer(parts[k].p, w);
        if (parts[k].o) {
            snprintf(prefix, sizeof prefix, "optim.%d.", k);
            optim_add_to_writer(parts[k].o, parts[k].p, w, prefix);
        }
    }
    for (int k = 0; k < nextra; k++) {
        int64_t shape[1] = {(int64_t)extra[k].n};
        stw_add(w, extra[k].name, ST_F32, 1, shape, extra[k].data);
    }
    for (int k = 0; k < nmeta; k++) stw_meta(w, keys[k], vals[k]);
    stw_meta(w, "vl2v.kind", "checkpoint");
    int rc = stw_write(w, path, err);
    stw_free(w);
    return rc;
}

static int load_f32(const st_file *f, const char *name, int ndim, const int64_t *shape, float *dst, size_t n,
                    char *err)
{
    const st_tensor *t = st_find(f, name);
    if (!t) return vl_error(err, "%s: checkpoint lacks tensor '%s'", f->path, name);
    int same = t->dtype == ST_F32 && t->ndim == ndim && (size_t)t->numel == n;
    for (int k = 0; same && k < ndim; k++) same = t->shape[k] == shape[k];
    if (!same) return vl_error(err, "%s: checkpoint tensor '%s' does not match the model's", f->path, name);
    memcpy(dst, t->data, n * sizeof(float));
    return st_check_finite(f, t, dst, err);
}

int ckpt_load(const char *path, ckpt_part *parts, int n, ckpt_extra *extra, int nextra, st_file *f, char *err)
{
    if (st_open(f, path, err) != 0) return -1;
    const char *kind = st_meta(f, "vl2v.kind");
    int rc = kind && strcmp(kind, "checkpoint") == 0 ? 0 : vl_error(err, "%s: not a checkpoint", path);
    char prefix[32];
    for (int k = 0; k < n && rc == 0; k++) {
        params *p = parts[k].p;
        for (int i = 0; i < p->n && rc == 0; i++)
            rc = load_f32(f, p->t[i].name, p->t[i].ndim, p->t[i].shape, p->data + p->t[i].off, p->t[i].numel, err);
        if (rc == 0 && parts[k].o) {
            snprintf(prefix, sizeof prefix, "optim.%d.", k);
            rc = optim_load_file(parts[k].o, p, f, prefix, err);
        }
    }
    for (int k = 0; k < nextra && rc == 0; k++) {
        int64_t shape[1] = {(int64_t)extra[k].n};
        rc = load_f32(f, extra[k].name, 1, shape, extra[k].data, extra[k].n, err);
    }
    if (rc != 0) st_close(f);
    return rc;
}
