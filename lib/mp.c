/* mp: MessagePack decoding into an arena tree and encoding with patched
 * container headers. */
#include "mp.h"
#include "util.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

struct mp_block {
    struct mp_block *next;
    size_t cap, used;
    mp_val vals[];
};

static mp_val *arena_alloc(mp_arena *a, size_t n)
{
    struct mp_block *b = a->head;
    if (!b || b->cap - b->used < n) {
        size_t cap = n > 4096 ? n : 4096;
        b = xmalloc(sizeof(*b) + cap * sizeof(mp_val));
        b->cap = cap;
        b->used = 0;
        b->next = a->head;
        a->head = b;
    }
    mp_val *v = b->vals + b->used;
    b->used += n;
    a->used_total += n;
    return v;
}

void mp_arena_reset(mp_arena *a)
{
    /* keep the largest block (so a stream of same-sized records stops
     * allocating after the first), free the others */
    struct mp_block *keep = a->head;
    if (!keep) return;
    for (struct mp_block *b = keep->next; b; b = b->next)
        if (b->cap > keep->cap) keep = b;
    struct mp_block *b = a->head;
    while (b) {
        struct mp_block *n = b->next;
        if (b != keep) free(b);
        b = n;
    }
    keep->next = NULL;
    keep->used = 0;
    a->head = keep;
    a->used_total = 0;
}

void mp_arena_free(mp_arena *a)
{
    struct mp_block *b = a->head;
    while (b) {
        struct mp_block *n = b->next;
        free(b);
        b = n;
    }
    a->head = NULL;
    a->used_total = 0;
}

typedef struct {
    mp_arena *a;
    const uint8_t *p, *end;
    size_t max_len;
    char *err;
    int depth;
} dec;

#define NEED(k)                                                                                    \
    do {                                                                                           \
        if ((size_t)(d->end - d->p) < (size_t)(k)) return 0;                                       \
    } while (0)

static uint64_t be(const uint8_t *p, int n)
{
    uint64_t v = 0;
    for (int i = 0; i < n; i++) v = v << 8 | p[i];
    return v;
}

static int dec_val(dec *d, mp_val *out);

static int dec_seq(dec *d, mp_val *out, uint64_t n, int is_map)
{
    if (n > d->max_len) return vl_error(d->err, "%s of %llu entries exceeds the limit", is_map ? "map" : "array", (unsigned long long)n);
    uint64_t nv = is_map ? 2 * n : n;
    /* every value needs at least one byte: never allocate beyond what is present */
    if (nv > (uint64_t)(d->end - d->p)) return 0;
    if (++d->depth > MP_MAX_DEPTH) return vl_error(d->err, "nesting deeper than %d levels", MP_MAX_DEPTH);
    if (d->a->max_vals && nv > d->a->max_vals - d->a->used_total)
        return vl_error(d->err, "more than %zu values in one object", d->a->max_vals);
    out->type = is_map ? MP_MAP : MP_ARRAY;
    out->len = (uint32_t)n;
    out->v.a = nv ? arena_alloc(d->a, nv) : NULL;
    for (uint64_t i = 0; i < nv; i++) {
        int r = dec_val(d, &out->v.a[i]);
        if (r <= 0) return r;
    }
    d->depth--;
    return 1;
}

static int dec_raw(dec *d, mp_val *out, int type, uint64_t n)
{
    if (n > d->max_len) return vl_error(d->err, "%s of %llu bytes exceeds the limit of %zu", type == MP_STR ? "string" : "bin", (unsigned long long)n, d->max_len);
    NEED(n);
    out->type = (uint8_t)type;
    out->len = (uint32_t)n;
    out->v.p = d->p;
    d->p += n;
    return 1;
}

static int dec_ext(dec *d, mp_val *out, uint64_t n)
{
    NEED(1);
    out->ext_type = (int8_t)*d->p++;
    return dec_raw(d, out, MP_EXT, n);
}

static int dec_val(dec *d, mp_val *out)
{
    NEED(1);
    uint8_t c = *d->p++;
    memset(out, 0, sizeof(*out));
    if (c <= 0x7f) {
        out->type = MP_UINT;
        out->v.u = c;
        return 1;
    }
    if (c >= 0xe0) {
        out->type = MP_INT;
        out->v.i = (int8_t)c;
        return 1;
    }
    if ((c & 0xf0) == 0x80) return dec_seq(d, out, c & 0x0f, 1);
    if ((c & 0xf0) == 0x90) return dec_seq(d, out, c & 0x0f, 0);
    if ((c & 0xe0) == 0xa0) return dec_raw(d, out, MP_STR, c & 0x1f);
    switch (c) {
    case 0xc0: out->type = MP_NIL; return 1;
    case 0xc2: out->type = MP_BOOL; out->v.b = 0; return 1;
    case 0xc3: out->type = MP_BOOL; out->v.b = 1; return 1;
    case 0xc4: NEED(1); d->p += 1; return dec_raw(d, out, MP_BIN, be(d->p - 1, 1));
    case 0xc5: NEED(2); d->p += 2; return dec_raw(d, out, MP_BIN, be(d->p - 2, 2));
    case 0xc6: NEED(4); d->p += 4; return dec_raw(d, out, MP_BIN, be(d->p - 4, 4));
    case 0xc7: NEED(1); d->p += 1; return dec_ext(d, out, be(d->p - 1, 1));
    case 0xc8: NEED(2); d->p += 2; return dec_ext(d, out, be(d->p - 2, 2));
    case 0xc9: NEED(4); d->p += 4; return dec_ext(d, out, be(d->p - 4, 4));
    case 0xca: {
        NEED(4);
        uint32_t b = (uint32_t)be(d->p, 4);
        float f;
        memcpy(&f, &b, 4);
        d->p += 4;
        out->type = MP_FLOAT;
        out->v.f = f;
        return 1;
    }
    case 0xcb: {
        NEED(8);
        uint64_t b = be(d->p, 8);
        double f;
        memcpy(&f, &b, 8);
        d->p += 8;
        out->type = MP_FLOAT;
        out->v.f = f;
        return 1;
    }
    case 0xcc: NEED(1); out->type = MP_UINT; out->v.u = be(d->p, 1); d->p += 1; return 1;
    case 0xcd: NEED(2); out->type = MP_UINT; out->v.u = be(d->p, 2); d->p += 2; return 1;
    case 0xce: NEED(4); out->type = MP_UINT; out->v.u = be(d->p, 4); d->p += 4; return 1;
    case 0xcf: NEED(8); out->type = MP_UINT; out->v.u = be(d->p, 8); d->p += 8; return 1;
    case 0xd0: NEED(1); out->type = MP_INT; out->v.i = (int8_t)be(d->p, 1); d->p += 1; return 1;
    case 0xd1: NEED(2); out->type = MP_INT; out->v.i = (int16_t)be(d->p, 2); d->p += 2; return 1;
    case 0xd2: NEED(4); out->type = MP_INT; out->v.i = (int32_t)be(d->p, 4); d->p += 4; return 1;
    case 0xd3: NEED(8); out->type = MP_INT; out->v.i = (int64_t)be(d->p, 8); d->p += 8; return 1;
    case 0xd4: return dec_ext(d, out, 1);
    case 0xd5: return dec_ext(d, out, 2);
    case 0xd6: return dec_ext(d, out, 4);
    case 0xd7: return dec_ext(d, out, 8);
    case 0xd8: return dec_ext(d, out, 16);
    case 0xd9: NEED(1); d->p += 1; return dec_raw(d, out, MP_STR, be(d->p - 1, 1));
    case 0xda: NEED(2); d->p += 2; return dec_raw(d, out, MP_STR, be(d->p - 2, 2));
    case 0xdb: NEED(4); d->p += 4; return dec_raw(d, out, MP_STR, be(d->p - 4, 4));
    case 0xdc: NEED(2); d->p += 2; return dec_seq(d, out, be(d->p - 2, 2), 0);
    case 0xdd: NEED(4); d->p += 4; return dec_seq(d, out, be(d->p - 4, 4), 0);
    case 0xde: NEED(2); d->p += 2; return dec_seq(d, out, be(d->p - 2, 2), 1);
    case 0xdf: NEED(4); d->p += 4; return dec_seq(d, out, be(d->p - 4, 4), 1);
    default: return vl_error(d->err, "invalid MessagePack type byte 0x%02x", c);
    }
}

int mp_decode(mp_arena *a, const uint8_t *buf, size_t n, size_t max_len, mp_val *out, size_t *used,
              char *err)
{
    dec d = {a, buf, buf + n, max_len, err, 0};
    int r = dec_val(&d, out);
    if (r == 1) *used = (size_t)(d.p - buf);
    return r;
}

int mp_str_eq(const mp_val *v, const char *s)
{
    size_t n = strlen(s);
    return v && v->type == MP_STR && v->len == n && memcmp(v->v.s, s, n) == 0;
}

const mp_val *mp_get(const mp_val *map, const char *key)
{
    if (!map || map->type != MP_MAP) return NULL;
    for (uint32_t i = 0; i < map->len; i++)
        if (mp_str_eq(&map->v.a[2 * i], key)) return &map->v.a[2 * i + 1];
    return NULL;
}

int mp_as_i64(const mp_val *v, int64_t *out)
{
    if (!v) return -1;
    if (v->type == MP_INT) {
        *out = v->v.i;
        return 0;
    }
    if (v->type == MP_UINT && v->v.u <= (uint64_t)INT64_MAX) {
        *out = (int64_t)v->v.u;
        return 0;
    }
    return -1;
}

int mp_as_f64(const mp_val *v, double *out)
{
    if (!v) return -1;
    switch (v->type) {
    case MP_FLOAT: *out = v->v.f; return 0;
    case MP_INT: *out = (double)v->v.i; return 0;
    case MP_UINT: *out = (double)v->v.u; return 0;
    default: return -1;
    }
}

int mp_get_i64(const mp_val *map, const char *key, int64_t *out)
{
    return mp_as_i64(mp_get(map, key), out);
}

char *mp_get_strdup(const mp_val *map, const char *key)
{
    const mp_val *v = mp_get(map, key);
    if (!v || v->type != MP_STR) return NULL;
    return xstrndup(v->v.s, v->len);
}

/* ---- encoder ---- */

void mpw_init(mpw *w, int fd)
{
    memset(w, 0, sizeof(*w));
    w->fd = fd;
    w->cap = 1 << 20;
    w->buf = xmalloc(w->cap);
}

void mpw_free(mpw *w)
{
    free(w->buf);
    w->buf = NULL;
}

static uint8_t *grow(mpw *w, size_t n)
{
    if (w->cap - w->len < n) {
        size_t cap = w->cap * 2;
        while (cap - w->len < n) cap *= 2;
        w->buf = xrealloc(w->buf, cap);
        w->cap = cap;
    }
    uint8_t *p = w->buf + w->len;
    w->len += n;
    return p;
}

static void counted(mpw *w)
{
    if (w->depth > 0) w->count[w->depth - 1]++;
}

static void put_be(uint8_t *p, uint64_t v, int n)
{
    for (int i = n - 1; i >= 0; i--) {
        p[i] = (uint8_t)v;
        v >>= 8;
    }
}

static void put_tag(mpw *w, uint8_t tag, uint64_t v, int n)
{
    uint8_t *p = grow(w, 1 + n);
    p[0] = tag;
    put_be(p + 1, v, n);
}

void mpw_nil(mpw *w)
{
    counted(w);
    *grow(w, 1) = 0xc0;
}

void mpw_bool(mpw *w, int b)
{
    counted(w);
    *grow(w, 1) = b ? 0xc3 : 0xc2;
}

void mpw_uint(mpw *w, uint64_t u)
{
    counted(w);
    if (u <= 0x7f) *grow(w, 1) = (uint8_t)u;
    else if (u <= 0xff) put_tag(w, 0xcc, u, 1);
    else if (u <= 0xffff) put_tag(w, 0xcd, u, 2);
    else if (u <= 0xffffffffu) put_tag(w, 0xce, u, 4);
    else put_tag(w, 0xcf, u, 8);
}

void mpw_int(mpw *w, int64_t i)
{
    if (i >= 0) {
        mpw_uint(w, (uint64_t)i);
        return;
    }
    counted(w);
    if (i >= -32) *grow(w, 1) = (uint8_t)(int8_t)i;
    else if (i >= INT8_MIN) put_tag(w, 0xd0, (uint8_t)(int8_t)i, 1);
    else if (i >= INT16_MIN) put_tag(w, 0xd1, (uint16_t)(int16_t)i, 2);
    else if (i >= INT32_MIN) put_tag(w, 0xd2, (uint32_t)(int32_t)i, 4);
    else put_tag(w, 0xd3, (uint64_t)i, 8);
}

void mpw_f64(mpw *w, double f)
{
    uint64_t b;
    memcpy(&b, &f, 8);
    counted(w);
    put_tag(w, 0xcb, b, 8);
}

void mpw_f32(mpw *w, float f)
{
    uint32_t b;
    memcpy(&b, &f, 4);
    counted(w);
    put_tag(w, 0xca, b, 4);
}

void mpw_strn(mpw *w, const char *s, size_t n)
{
    if (n > 0xffffffffu) abort(); /* programming error: see mpw_bin_reserve */
    counted(w);
    if (n <= 31) *grow(w, 1) = (uint8_t)(0xa0 | n);
    else if (n <= 0xff) put_tag(w, 0xd9, n, 1);
    else if (n <= 0xffff) put_tag(w, 0xda, n, 2);
    else put_tag(w, 0xdb, n, 4);
    if (n) memcpy(grow(w, n), s, n);
}

void mpw_str(mpw *w, const char *s) { mpw_strn(w, s, strlen(s)); }

uint8_t *mpw_bin_reserve(mpw *w, size_t n)
{
    if (n > 0xffffffffu) abort(); /* programming error: MessagePack bins hold at most 4 GiB - 1 */
    counted(w);
    if (n <= 0xff) put_tag(w, 0xc4, n, 1);
    else if (n <= 0xffff) put_tag(w, 0xc5, n, 2);
    else put_tag(w, 0xc6, n, 4);
    return grow(w, n);
}

void mpw_bin(mpw *w, const void *p, size_t n)
{
    uint8_t *dst = mpw_bin_reserve(w, n);
    if (n) memcpy(dst, p, n);
}

static void open_container(mpw *w, int is_map)
{
    counted(w);
    if (w->depth >= MPW_MAX_DEPTH) abort(); /* programming error: deeper than any decoded value */
    w->open_at[w->depth] = w->len;
    w->count[w->depth] = 0;
    w->is_map[w->depth] = (uint8_t)is_map;
    w->depth++;
    grow(w, 5); /* room for the 32-bit form; shrunk at mpw_end */
}

void mpw_map(mpw *w) { open_container(w, 1); }
void mpw_array(mpw *w) { open_container(w, 0); }

void mpw_end(mpw *w)
{
    if (w->depth <= 0) abort();
    w->depth--;
    size_t at = w->open_at[w->depth];
    int is_map = w->is_map[w->depth];
    uint32_t n = is_map ? w->count[w->depth] / 2 : w->count[w->depth];
    uint8_t hdr[5];
    int hl;
    if (n <= 15) {
        hdr[0] = (uint8_t)((is_map ? 0x80 : 0x90) | n);
        hl = 1;
    } else if (n <= 0xffff) {
        hdr[0] = is_map ? 0xde : 0xdc;
        put_be(hdr + 1, n, 2);
        hl = 3;
    } else {
        hdr[0] = is_map ? 0xdf : 0xdd;
        put_be(hdr + 1, n, 4);
        hl = 5;
    }
    if (hl < 5) { /* shift the body left over the unused header bytes */
        size_t body = at + 5, blen = w->len - body;
        memmove(w->buf + at + hl, w->buf + body, blen);
        w->len -= (size_t)(5 - hl);
    }
    memcpy(w->buf + at, hdr, (size_t)hl);
}

void mpw_value(mpw *w, const mp_val *v)
{
    switch (v->type) {
    case MP_NIL: mpw_nil(w); break;
    case MP_BOOL: mpw_bool(w, v->v.b); break;
    case MP_INT: mpw_int(w, v->v.i); break;
    case MP_UINT: mpw_uint(w, v->v.u); break;
    case MP_FLOAT: mpw_f64(w, v->v.f); break;
    case MP_STR: mpw_strn(w, v->v.s, v->len); break;
    case MP_BIN: mpw_bin(w, v->v.p, v->len); break;
    case MP_EXT: {
        counted(w);
        put_tag(w, 0xc9, v->len, 4);
        *grow(w, 1) = (uint8_t)v->ext_type;
        if (v->len) memcpy(grow(w, v->len), v->v.p, v->len);
        break;
    }
    case MP_ARRAY:
        mpw_array(w);
        for (uint32_t i = 0; i < v->len; i++) mpw_value(w, &v->v.a[i]);
        mpw_end(w);
        break;
    case MP_MAP:
        mpw_map(w);
        for (uint32_t i = 0; i < 2 * v->len; i++) mpw_value(w, &v->v.a[i]);
        mpw_end(w);
        break;
    }
}

void mpw_raw(mpw *w, const void *p, size_t n)
{
    counted(w);
    if (n) memcpy(grow(w, n), p, n);
}

int mpw_flush(mpw *w, size_t threshold)
{
    if (w->depth > 0 || w->len == 0 || w->len < threshold) return w->err ? -1 : 0;
    if (!w->err && vl_write_all(w->fd, w->buf, w->len) != 0) w->err = errno ? errno : EIO;
    if (!w->err) w->bytes_out += w->len;
    w->len = 0;
    return w->err ? -1 : 0;
}
