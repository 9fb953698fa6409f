/* openclip_timm: the OpenCLIP timm image tower; see openclip_timm.h.
 *
 * The trunk is mobilenet.h's network under timm's names, its projection
 * registered as the network's head (so it is in the same store) and
 * unfrozen; the projection runs here, after the pool. */
#include "openclip_timm.h"

#include "models/mobilenet.h"
#include "nn/linear.h"
#include "util.h"

#include <stdlib.h>
#include <string.h>

#define OC_VISUAL "visual."
#define OC_TRUNK "visual.trunk."
#define OC_PROJ "visual.head.proj"
#define OC_TIMM "mobilenetv2_100"
#define POOL 1280 /* mobilenetv2_100's pooled width */

struct openclip_timm {
    mobilenet *mb;
    convnet *cn;
    int dim;
    int pw, pb;          /* the projection's tensors in cn's store */
    float *pool, *dpool; /* the pooled trunk features and their gradient */
    size_t pool_cap;
    int B; /* the last forward */
};

/* the tensors of f whose names start with prefix: a view sharing f's
 * mapping (f is sorted by name, so they are one run); never st_close it */
static st_file subset(const st_file *f, const char *prefix)
{
    st_file v = *f;
    size_t n = strlen(prefix);
    int i = 0, j;
    while (i < f->n && strncmp(f->t[i].name, prefix, n) < 0) i++;
    for (j = i; j < f->n && strncmp(f->t[j].name, prefix, n) == 0; j++) {
    }
    v.t = f->t + i;
    v.n = j - i;
    return v;
}

int openclip_timm_detect(const st_file *f)
{
    return subset(f, OC_TRUNK).n > 0 || st_find(f, OC_PROJ ".weight") != NULL;
}

int openclip_timm_check(const st_file *f, const json *vc, char *err)
{
    if (vc && vc->type == JSON_OBJ) {
        const char *name = json_get_str(vc, "timm_model_name", NULL), *pool = json_get_str(vc, "timm_pool", "avg"),
                   *proj = json_get_str(vc, "timm_proj", "linear");
        if (name && strcmp(name, OC_TIMM) != 0)
            return vl_error(err, "%s: open_clip_config.json: timm trunk '%s' is not supported (only %s)", f->path,
                            name, OC_TIMM);
        if (strcmp(pool, "avg") != 0 || strcmp(proj, "linear") != 0)
            return vl_error(err, "%s: open_clip_config.json: timm_pool '%s', timm_proj '%s': only 'avg' and 'linear' "
                                 "are supported",
                            f->path, pool, proj);
    }
    char e2[VL_ERRLEN];
    int ncls;
    if (mobilenet_detect_named(f, MOBILENET_TIMM, OC_TRUNK, &ncls, e2) != 0)
        return vl_error(err, "unsupported timm trunk (only %s): %s", OC_TIMM, e2);
    const st_tensor *pw = st_find(f, OC_PROJ ".weight");
    if (!pw || pw->ndim != 2 || pw->shape[1] != POOL || pw->shape[0] < 1)
        return vl_error(err, "%s: no tensor '%s.weight' [D, %d]: not an OpenCLIP timm image tower", f->path, OC_PROJ,
                        POOL);
    return 0;
}

openclip_timm *openclip_timm_new(int rows, int bias)
{
    openclip_timm *m = xcalloc(1, sizeof *m);
    mobilenet_head proj = {OC_PROJ, rows, bias};
    m->mb = mobilenet_new_named(MOBILENET_TIMM, OC_TRUNK, &proj);
    m->cn = mobilenet_convnet(m->mb);
    params *p = cn_params(m->cn);
    param_freeze(p, OC_PROJ, 0); /* computed here: it trains */
    m->pw = param_find(p, OC_PROJ ".weight");
    m->pb = param_find(p, OC_PROJ ".bias");
    m->dim = rows;
    return m;
}

int openclip_timm_open(openclip_timm **out, const st_file *f, const json *vc, char *err)
{
    *out = NULL;
    if (openclip_timm_check(f, vc, err) != 0) return -1;
    openclip_timm *m = openclip_timm_new((int)st_find(f, OC_PROJ ".weight")->shape[0],
                                         st_find(f, OC_PROJ ".bias") != NULL);
    /* an OpenCLIP file's text tower is not the image tower's */
    st_file v = subset(f, OC_VISUAL);
    if (cn_load(m->cn, &v, err) != 0) {
        openclip_timm_free(m);
        return -1;
    }
    *out = m;
    return 0;
}

void openclip_timm_free(openclip_timm *m)
{
    if (!m) return;
    mobilenet_free(m->mb);
    free(m->pool);
    free(m->dpool);
    free(m);
}

int openclip_timm_feature_dim(const openclip_timm *m) { return m->dim; }
params *openclip_timm_params(openclip_timm *m) { return cn_params(m->cn); }
convnet *openclip_timm_convnet(openclip_timm *m) { return m->cn; }

int openclip_timm_forward(openclip_timm *m, float *feat, const float *x, int B, int H, int W, int save, char *err)
{
    m->B = B;
    size_t need = (size_t)B * POOL;
    if (need > m->pool_cap) {
        free(m->pool), free(m->dpool);
        m->pool = xmalloc(need * sizeof(float));
        m->dpool = xmalloc(need * sizeof(float));
        m->pool_cap = need;
    }
    if (cn_forward(m->cn, m->pool, x, B, H, W, save, err) != 0) return -1;
    const params *p = cn_params(m->cn);
    linear_forward(feat, m->pool, param_data(p, m->pw), m->pb >= 0 ? param_data(p, m->pb) : NULL, B, POOL, m->dim);
    return 0;
}

void openclip_timm_backward(openclip_timm *m, const float *dfeat)
{
    const params *p = cn_params(m->cn);
    linear_backward_set(m->dpool, param_grad(p, m->pw), m->pb >= 0 ? param_grad(p, m->pb) : NULL, dfeat, m->pool,
                        param_data(p, m->pw), m->B, POOL, m->dim);
    cn_backward(m->cn, m->dpool);
}

size_t openclip_timm_buffer_bytes(const openclip_timm *m)
{
    return cn_buffer_bytes(m->cn) + 2 * m->pool_cap * sizeof(float);
}
