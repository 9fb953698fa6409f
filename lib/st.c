/* st: safetensors reader (mmap, bounded header parse) and atomic writer. */
#include "st.h"
#include "json.h"
#include "util.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

static const char *const DTYPE_NAMES[ST_NDTYPES] = {"F32", "F16", "BF16", "F64", "I64", "I32", "I16", "I8",
                                                     "U8",  "BOOL", "U16", "U32", "U64", "F8_E4M3", "F8_E5M2"};
static const size_t DTYPE_SIZES[ST_NDTYPES] = {4, 2, 2, 8, 8, 4, 2, 1, 1, 1, 2, 4, 8, 1, 1};

/* header JSON bound: the format's own reference implementation refuses more than 100 MB */
#define ST_MAX_HEADER (100u << 20)

const char *st_dtype_name(int dtype) { return dtype >= 0 && dtype < ST_NDTYPES ? DTYPE_NAMES[dtype] : "?"; }
size_t st_dtype_size(int dtype) { return dtype >= 0 && dtype < ST_NDTYPES ? DTYPE_SIZES[dtype] : 0; }

static int cmp_tensor(const void *a, const void *b)
{
    return strcmp(((const st_tensor *)a)->name, ((const st_tensor *)b)->name);
}

typedef struct {
    size_t begin, end;
    int idx;
} span;

static int cmp_span(const void *a, const void *b)
{
    const span *x = a, *y = b;
    return x->begin < y->begin ? -1 : x->begin > y->begin ? 1 : 0;
}

const char *st_shape_str(int ndim, const int64_t *shape, char *buf, size_t n)
{
    size_t o = 0;
    o += (size_t)snprintf(buf + o, n - o, "[");
    for (int i = 0; i < ndim && o < n; i++)
        o += (size_t)snprintf(buf + o, n - o, "%s%lld", i ? ", " : "", (long long)shape[i]);
    if (o < n) snprintf(buf + o, n - o, "]");
    return buf;
}

int st_parse(st_file *f, const void *buf, size_t size, const char *name, char *err)
{
    const uint8_t *p = buf;
    memset(f, 0, sizeof(*f));
    f->path = xstrdup(name);
    if (size < 8) {
        vl_error(err, "%s: not a safetensors file: %zu bytes, shorter than the 8-byte header length", name, size);
        goto fail;
    }
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--) hlen = hlen << 8 | p[i];
    if (hlen > size - 8 || hlen > ST_MAX_HEADER) {
        vl_error(err, "%s: not a safetensors file: header length %llu exceeds the file (%zu bytes)", name,
                 (unsigned long long)hlen, size);
        goto fail;
    }
    if (hlen < 2 || p[8] != '{') {
        vl_error(err, "%s: not a safetensors file: header does not start with '{'", name);
        goto fail;
    }
    char jerr[VL_ERRLEN];
    json *j = json_parse((const char *)p + 8, (size_t)hlen, jerr);
    if (!j) {
        vl_error(err, "%s: bad safetensors header: %s", name, jerr);
        goto fail;
    }
    if (j->type != JSON_OBJ) {
        json_free(j);
        vl_error(err, "%s: bad safetensors header: not an object", name);
        goto fail;
    }
    const uint8_t *data = p + 8 + hlen;
    size_t dsize = size - 8 - (size_t)hlen;
    f->t = xcalloc(j->n ? j->n : 1, sizeof(st_tensor));
    for (size_t i = 0; i < j->n; i++) {
        const char *key = j->keys[i];
        const json *v = &j->items[i];
        if (strcmp(key, "__metadata__") == 0) {
            if (v->type != JSON_OBJ) {
                vl_error(err, "%s: __metadata__ is not an object", name);
                goto fail_j;
            }
            if (f->meta_key) {
                vl_error(err, "%s: __metadata__ appears twice", name);
                goto fail_j;
            }
            f->meta_key = xcalloc(v->n ? v->n : 1, sizeof(char *));
            f->meta_val = xcalloc(v->n ? v->n : 1, sizeof(char *));
            for (size_t k = 0; k < v->n; k++) {
                if (v->items[k].type != JSON_STR) {
                    vl_error(err, "%s: __metadata__ value '%s' is not a string", name, v->keys[k]);
                    goto fail_j;
                }
                f->meta_key[f->nmeta] = xstrdup(v->keys[k]);
                f->meta_val[f->nmeta] = xstrdup(v->items[k].s);
                f->nmeta++;
            }
            continue;
        }
        st_tensor *t = &f->t[f->n];
        t->name = xstrdup(key);
        f->n++;
        if (v->type != JSON_OBJ) {
            vl_error(err, "%s: tensor '%s': entry is not an object", name, key);
            goto fail_j;
        }
        const char *dt = json_get_str(v, "dtype", NULL);
        const json *shape = json_get(v, "shape"), *offs = json_get(v, "data_offsets");
        t->dtype = -1;
        for (int d = 0; dt && d < ST_NDTYPES; d++)
            if (strcmp(dt, DTYPE_NAMES[d]) == 0) t->dtype = d;
        if (t->dtype < 0) {
            vl_error(err, "%s: tensor '%s': unknown or missing dtype '%s'", name, key, dt ? dt : "");
            goto fail_j;
        }
        if (!shape || shape->type != JSON_ARR || shape->n > ST_MAX_DIMS) {
            vl_error(err, "%s: tensor '%s': missing shape or more than %d dimensions", name, key, ST_MAX_DIMS);
            goto fail_j;
        }
        t->ndim = (int)shape->n;
        /* the product of the non-zero dimensions is bounded, checked before
         * each multiplication: every partial product of the shape then fits
         * (a reader multiplies any two dimensions), and no count wraps to 0,
         * as [2^32, 2^32] would */
        const uint64_t max_numel = (uint64_t)1 << 40;
        uint64_t numel = 1, nonzero = 1;
        for (size_t d = 0; d < shape->n; d++) {
            const json *s = &shape->items[d];
            if (s->type != JSON_NUM || !s->is_int || s->i < 0 || s->i > (int64_t)max_numel) {
                vl_error(err, "%s: tensor '%s': bad dimension %zu", name, key, d);
                goto fail_j;
            }
            t->shape[d] = s->i;
        }
        for (int d = 0; d < t->ndim; d++) {
            uint64_t n = (uint64_t)t->shape[d];
            if (n == 0) {
                numel = 0;
                continue;
            }
            if (nonzero > max_numel / n) {
                char b[160];
                vl_error(err, "%s: tensor '%s': shape %s: too many elements (more than 2^40)", name, key,
                         st_shape_str(t->ndim, t->shape, b, sizeof b));
                goto fail_j;
            }
            nonzero *= n;
        }
        if (numel) numel = nonzero;
        t->numel = (int64_t)numel;
        if (!offs || offs->type != JSON_ARR || offs->n != 2 || offs->items[0].type != JSON_NUM ||
            !offs->items[0].is_int || offs->items[1].type != JSON_NUM || !offs->items[1].is_int ||
            offs->items[0].i < 0 || offs->items[1].i < offs->items[0].i) {
            vl_error(err, "%s: tensor '%s': bad data_offsets", name, key);
            goto fail_j;
        }
        uint64_t b = (uint64_t)offs->items[0].i, e = (uint64_t)offs->items[1].i;
        if (e > dsize) {
            vl_error(err, "%s: tensor '%s': data_offsets [%llu, %llu] beyond the %zu data bytes (truncated file?)",
                     name, key, (unsigned long long)b, (unsigned long long)e, dsize);
            goto fail_j;
        }
        if (e - b != numel * DTYPE_SIZES[t->dtype]) {
            vl_error(err, "%s: tensor '%s': %llu data bytes for %llu %s elements", name, key,
                     (unsigned long long)(e - b), (unsigned long long)numel, DTYPE_NAMES[t->dtype]);
            goto fail_j;
        }
        t->nbytes = (size_t)(e - b);
        t->data = data + b;
    }
    /* tensors must not overlap */
    span *sp = xmalloc((f->n ? f->n : 1) * sizeof(span));
    for (int i = 0; i < f->n; i++) {
        sp[i].begin = (size_t)(f->t[i].data - data);
        sp[i].end = sp[i].begin + f->t[i].nbytes;
        sp[i].idx = i;
    }
    qsort(sp, (size_t)f->n, sizeof(span), cmp_span);
    for (int i = 1; i < f->n; i++)
        if (sp[i].begin < sp[i - 1].end) {
            vl_error(err, "%s: tensors '%s' and '%s' overlap", name, f->t[sp[i - 1].idx].name, f->t[sp[i].idx].name);
            free(sp);
            goto fail_j;
        }
    free(sp);
    qsort(f->t, (size_t)f->n, sizeof(st_tensor), cmp_tensor);
    for (int i = 1; i < f->n; i++)
        if (strcmp(f->t[i].name, f->t[i - 1].name) == 0) {
            vl_error(err, "%s: tensor '%s' appears twice", name, f->t[i].name);
            goto fail_j;
        }
    json_free(j);
    return 0;
fail_j:
    json_free(j);
fail:
    st_close(f);
    return -1;
}

int st_open(st_file *f, const char *path, char *err)
{
    memset(f, 0, sizeof(*f));
    int fd = open(path, O_RDONLY);
    if (fd < 0) return vl_error(err, "%s: %s", path, strerror(errno));
    struct stat sb;
    if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode)) {
        close(fd);
        return vl_error(err, "%s: not a regular file", path);
    }
    size_t size = (size_t)sb.st_size;
    void *map = size ? mmap(NULL, size, PROT_READ, MAP_PRIVATE, fd, 0) : NULL;
    close(fd);
    if (size && map == MAP_FAILED) return vl_error(err, "%s: mmap: %s", path, strerror(errno));
    if (st_parse(f, map, size, path, err) != 0) {
        if (map) munmap(map, size);
        return -1;
    }
    f->map = map;
    f->size = size;
    return 0;
}

void st_close(st_file *f)
{
    for (int i = 0; i < f->n; i++) free(f->t[i].name);
    for (int i = 0; i < f->nmeta; i++) {
        free(f->meta_key[i]);
        free(f->meta_val[i]);
    }
    free(f->t);
    free(f->meta_key);
    free(f->meta_val);
    free(f->path);
    if (f->map) munmap(f->map, f->size);
    memset(f, 0, sizeof(*f));
}

const st_tensor *st_find(const st_file *f, const char *name)
{
    int lo = 0, hi = f->n - 1;
    while (lo <= hi) {
        int mid = (lo + hi) / 2, c = strcmp(name, f->t[mid].name);
        if (c == 0) return &f->t[mid];
        if (c < 0) hi = mid - 1;
        else lo = mid + 1;
    }
    return NULL;
}

const char *st_meta(const st_file *f, const char *key)
{
    for (int i = 0; i < f->nmeta; i++)
        if (strcmp(f->meta_key[i], key) == 0) return f->meta_val[i];
    return NULL;
}

int st_to_f32(const st_tensor *t, float *out)
{
    const uint8_t *p = t->data;
    int64_t n = t->numel;
    switch (t->dtype) {
    case ST_F32: memcpy(out, p, (size_t)n * 4); return 0;
    case ST_F16:
        for (int64_t i = 0; i < n; i++) {
            uint16_t h;
            memcpy(&h, p + 2 * i, 2);
            out[i] = vl_f16_to_f32(h);
        }
        return 0;
    case ST_BF16:
        for (int64_t i = 0; i < n; i++) {
            uint16_t h;
            memcpy(&h, p + 2 * i, 2);
            out[i] = vl_bf16_to_f32(h);
        }
        return 0;
    default: return -1;
    }
}

int st_check_finite(const st_file *f, const st_tensor *t, const float *v, char *err)
{
    for (int64_t i = 0; i < t->numel; i++)
        if (!isfinite(v[i])) {
            /* the element's index in the shape: [row, column] for a matrix */
            int64_t at[ST_MAX_DIMS], r = i;
            for (int d = t->ndim - 1; d >= 0; d--) {
                at[d] = r % t->shape[d];
                r /= t->shape[d];
            }
            char b[200];
            return vl_error(err, "%s: tensor '%s': %s at %s", f->path, t->name,
                            isnan(v[i]) ? "NaN" : v[i] > 0 ? "+infinity" : "-infinity",
                            st_shape_str(t->ndim, at, b, sizeof b));
        }
    return 0;
}

int st_read_f32(const st_file *f, const st_tensor *t, float *out, char *err)
{
    if (st_to_f32(t, out) != 0)
        return vl_error(err, "%s: tensor '%s' has dtype %s, expected F32, F16 or BF16", f->path, t->name,
                        st_dtype_name(t->dtype));
    return st_check_finite(f, t, out, err);
}

float *st_load_f32(const st_file *f, const char *name, int ndim, const int64_t *shape, char *err)
{
    const st_tensor *t = st_find(f, name);
    char a[128], b[128];
    if (!t) {
        vl_error(err, "%s: missing tensor '%s'", f->path, name);
        return NULL;
    }
    int ok = t->ndim == ndim;
    for (int i = 0; ok && i < ndim; i++)
        if (shape[i] >= 0 && shape[i] != t->shape[i]) ok = 0;
    if (!ok) {
        vl_error(err, "%s: tensor '%s' has shape %s, expected %s", f->path, name, st_shape_str(t->ndim, t->shape, a, sizeof a),
                 st_shape_str(ndim, shape, b, sizeof b));
        return NULL;
    }
    float *out = xmalloc_aligned((size_t)(t->numel ? t->numel : 1) * sizeof(float));
    if (st_read_f32(f, t, out, err) != 0) {
        free(out);
        return NULL;
    }
    return out;
}

/* ---- writer ---- */

typedef struct {
    char *name;
    int dtype, ndim;
    int64_t shape[ST_MAX_DIMS];
    const void *data;
    size_t nbytes;
} stw_entry;

struct stw {
    stw_entry *e;
    int n, cap;
    char **mk, **mv;
    int nm;
};

stw *stw_new(void) { return xcalloc(1, sizeof(stw)); }

void stw_add(stw *w, const char *name, int dtype, int ndim, const int64_t *shape, const void *data)
{
    if (w->n == w->cap) {
        w->cap = w->cap ? 2 * w->cap : 64;
        w->e = xrealloc(w->e, (size_t)w->cap * sizeof(stw_entry));
    }
    stw_entry *e = &w->e[w->n++];
    e->name = xstrdup(name);
    e->dtype = dtype;
    e->ndim = ndim;
    size_t n = DTYPE_SIZES[dtype];
    for (int i = 0; i < ndim; i++) {
        e->shape[i] = shape[i];
        n *= (size_t)shape[i];
    }
    e->data = data;
    e->nbytes = n;
}

void stw_meta(stw *w, const char *key, const char *val)
{
    w->mk = xrealloc(w->mk, (size_t)(w->nm + 1) * sizeof(char *));
    w->mv = xrealloc(w->mv, (size_t)(w->nm + 1) * sizeof(char *));
    w->mk[w->nm] = xstrdup(key);
    w->mv[w->nm] = xstrdup(val);
    w->nm++;
}

static int cmp_entry(const void *a, const void *b)
{
    return strcmp(((const stw_entry *)a)->name, ((const stw_entry *)b)->name);
}

int stw_write(stw *w, const char *path, char *err)
{
    /* tensors in name order, data in the same order: the file depends only on its content */
    qsort(w->e, (size_t)w->n, sizeof(stw_entry), cmp_entry);
    json_buf b = {0};
    json_buf_puts(&b, "{");
    int first = 1;
    if (w->nm) {
        json_buf_puts(&b, "\"__metadata__\":{");
        for (int i = 0; i < w->nm; i++) {
            if (i) json_buf_puts(&b, ",");
            json_buf_str(&b, w->mk[i], strlen(w->mk[i]));
            json_buf_puts(&b, ":");
            json_buf_str(&b, w->mv[i], strlen(w->mv[i]));
        }
        json_buf_puts(&b, "}");
        first = 0;
    }
    size_t off = 0;
    for (int i = 0; i < w->n; i++) {
        stw_entry *e = &w->e[i];
        if (!first) json_buf_puts(&b, ",");
        first = 0;
        json_buf_str(&b, e->name, strlen(e->name));
        json_buf_printf(&b, ":{\"dtype\":\"%s\",\"shape\":[", DTYPE_NAMES[e->dtype]);
        for (int d = 0; d < e->ndim; d++) json_buf_printf(&b, "%s%lld", d ? "," : "", (long long)e->shape[d]);
        json_buf_printf(&b, "],\"data_offsets\":[%zu,%zu]}", off, off + e->nbytes);
        off += e->nbytes;
    }
    json_buf_puts(&b, "}");
    while (b.len % 8) json_buf_puts(&b, " "); /* pad so the data starts 8-byte aligned */
    vl_afile a;
    if (vl_afile_open(&a, path, err) != 0) {
        free(b.p);
        return -1;
    }
    uint8_t hl[8];
    uint64_t n = b.len;
    for (int i = 0; i < 8; i++) hl[i] = (uint8_t)(n >> (8 * i));
    int ok = fwrite(hl, 1, 8, a.fp) == 8 && fwrite(b.p, 1, b.len, a.fp) == b.len;
    for (int i = 0; ok && i < w->n; i++)
        if (w->e[i].nbytes && fwrite(w->e[i].data, 1, w->e[i].nbytes, a.fp) != w->e[i].nbytes) ok = 0;
    free(b.p);
    if (!ok) {
        vl_error(err, "%s: write: %s", path, strerror(errno));
        vl_afile_abort(&a);
        return -1;
    }
    return vl_afile_commit(&a, err);
}

void stw_free(stw *w)
{
    if (!w) return;
    for (int i = 0; i < w->n; i++) free(w->e[i].name);
    for (int i = 0; i < w->nm; i++) {
        free(w->mk[i]);
        free(w->mv[i]);
    }
    free(w->e);
    free(w->mk);
    free(w->mv);
    free(w);
}
