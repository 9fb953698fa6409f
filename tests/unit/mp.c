/* Unit tests of lib/mp: every encoder width round-trips through the decoder,
 * decoded bytes equal hand-written MessagePack, and malformed, truncated and
 * oversized input is refused without reading past the buffer. */
#include "check.h"
#include "mp.h"
#include "util.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static int decode(mp_arena *a, const void *buf, size_t n, size_t max, mp_val *v, size_t *used,
                  char *err) {
    return mp_decode(a, buf, n, max, v, used, err);
}

/* every prefix of a valid object is "incomplete" (0), never an error or a read past the end */
static int prefixes_incomplete(const uint8_t *buf, size_t n) {
    mp_arena a = {0};
    int ok = 1;
    for (size_t k = 0; k < n; k++) {
        uint8_t *copy = xmalloc(k ? k : 1); /* exact-size copy: ASan-style overreads would show */
        memcpy(copy, buf, k);
        mp_val v;
        size_t used;
        char err[VL_ERRLEN];
        if (decode(&a, copy, k, 1 << 20, &v, &used, err) != 0) ok = 0;
        free(copy);
        mp_arena_reset(&a);
    }
    mp_arena_free(&a);
    return ok;
}

static void test_ints(void) {
    static const int64_t vals[] = {
        0,         1,  127, 128, 255,  256,  65535,  65536,  4294967295LL, 4294967296LL,
        INT64_MAX, -1, -32, -33, -128, -129, -32768, -32769, INT32_MIN,    (int64_t)INT32_MIN - 1,
        INT64_MIN};
    static const size_t sizes[] = {1, 1, 1, 2, 2, 3, 3, 5, 5, 9, 9, 1, 1, 2, 2, 3, 3, 5, 5, 9, 9};
    int all = 1, size_ok = 1;
    for (size_t i = 0; i < sizeof vals / sizeof vals[0]; i++) {
        mpw w;
        mpw_init(&w, -1);
        mpw_int(&w, vals[i]);
        if (w.len != sizes[i]) size_ok = 0;
        mp_arena a = {0};
        mp_val v;
        size_t used;
        char err[VL_ERRLEN];
        int64_t x;
        if (decode(&a, w.buf, w.len, 100, &v, &used, err) != 1 || used != w.len ||
            mp_as_i64(&v, &x) != 0 || x != vals[i])
            all = 0;
        mp_arena_free(&a);
        mpw_free(&w);
    }
    CHECK(all, "mp: integers from INT64_MIN to INT64_MAX round-trip");
    CHECK(size_ok, "mp: integers use the smallest encoding");

    mpw w;
    mpw_init(&w, -1);
    mpw_uint(&w, UINT64_MAX);
    mp_arena a = {0};
    mp_val v;
    size_t used;
    char err[VL_ERRLEN];
    int64_t x;
    int r = decode(&a, w.buf, w.len, 100, &v, &used, err);
    CHECK(r == 1 && v.type == MP_UINT && v.v.u == UINT64_MAX && mp_as_i64(&v, &x) == -1,
          "mp: UINT64_MAX decodes as unsigned and is refused as int64");
    mp_arena_free(&a);
    mpw_free(&w);
}

static void test_known_bytes(void) {
    /* {"a": [1, -1, true, nil], "b": bin(2), "c": 1.5 (f32), "d": 0.25 (f64)} as written by
     * msgpack-python */
    static const uint8_t buf[] = {0x84, 0xa1, 'a',  0x94, 0x01, 0xff, 0xc3, 0xc0, 0xa1, 'b',  0xc4,
                                  0x02, 0xde, 0xad, 0xa1, 'c',  0xca, 0x3f, 0xc0, 0x00, 0x00, 0xa1,
                                  'd',  0xcb, 0x3f, 0xd0, 0,    0,    0,    0,    0,    0};
    mp_arena a = {0};
    mp_val v;
    size_t used;
    char err[VL_ERRLEN];
    int r = decode(&a, buf, sizeof buf, 100, &v, &used, err);
    CHECK(r == 1 && used == sizeof buf && v.type == MP_MAP && v.len == 4,
          "mp: decodes a hand-written map");
    const mp_val *arr = mp_get(&v, "a"), *bin = mp_get(&v, "b");
    double c = 0, d = 0;
    CHECK(arr && arr->type == MP_ARRAY && arr->len == 4 && arr->v.a[0].v.u == 1 &&
              arr->v.a[1].v.i == -1 && arr->v.a[2].type == MP_BOOL && arr->v.a[2].v.b == 1 &&
              arr->v.a[3].type == MP_NIL,
          "mp: array of fixint, negative fixint, true, nil");
    CHECK(bin && bin->type == MP_BIN && bin->len == 2 && bin->v.p == buf + 12,
          "mp: bin points into the input");
    CHECK(mp_as_f64(mp_get(&v, "c"), &c) == 0 && c == 1.5 && mp_as_f64(mp_get(&v, "d"), &d) == 0 &&
              d == 0.25,
          "mp: float32 and float64");
    CHECK(mp_get(&v, "zz") == NULL && mp_get(arr, "a") == NULL,
          "mp: mp_get on absent keys and non-maps is NULL");
    CHECK(prefixes_incomplete(buf, sizeof buf),
          "mp: every strict prefix of a map is incomplete (0), not an error");
    mp_arena_free(&a);
}

static void test_strings_bins(void) {
    static const size_t lens[] = {0, 31, 32, 255, 256, 65535, 65536, 300000};
    int ok = 1, bok = 1;
    for (size_t i = 0; i < sizeof lens / sizeof lens[0]; i++) {
        size_t n = lens[i];
        char *s = xmalloc(n + 1);
        for (size_t k = 0; k < n; k++)
            s[k] = (char)('a' + k % 26);
        mpw w;
        mpw_init(&w, -1);
        mpw_array(&w);
        mpw_strn(&w, s, n);
        mpw_bin(&w, s, n);
        mpw_end(&w);
        mp_arena a = {0};
        mp_val v;
        size_t used;
        char err[VL_ERRLEN];
        if (decode(&a, w.buf, w.len, 1 << 20, &v, &used, err) != 1 || v.len != 2) {
            ok = bok = 0;
        } else {
            const mp_val *sv = &v.v.a[0], *bv = &v.v.a[1];
            if (sv->type != MP_STR || sv->len != n || memcmp(sv->v.s, s, n)) ok = 0;
            if (bv->type != MP_BIN || bv->len != n || memcmp(bv->v.p, s, n)) bok = 0;
        }
        mp_arena_free(&a);
        mpw_free(&w);
        free(s);
    }
    CHECK(ok, "mp: strings of 0..300000 bytes round-trip (fixstr, str8, str16, str32)");
    CHECK(bok, "mp: bins of 0..300000 bytes round-trip (bin8, bin16, bin32)");
}

static void test_containers(void) {
    /* nested containers of sizes around the fix/16/32 boundaries, counts patched at mpw_end */
    static const uint32_t counts[] = {0, 15, 16, 65535, 65536};
    int ok = 1;
    for (size_t i = 0; i < sizeof counts / sizeof counts[0]; i++) {
        uint32_t n = counts[i];
        mpw w;
        mpw_init(&w, -1);
        mpw_map(&w);
        mpw_str(&w, "list");
        mpw_array(&w);
        for (uint32_t k = 0; k < n; k++)
            mpw_uint(&w, k);
        mpw_end(&w);
        mpw_str(&w, "inner");
        mpw_map(&w);
        for (uint32_t k = 0; k < n; k++) {
            char key[16];
            snprintf(key, sizeof key, "k%u", k);
            mpw_str(&w, key);
            mpw_int(&w, -(int64_t)k);
        }
        mpw_end(&w);
        mpw_str(&w, "after");
        mpw_bool(&w, 1);
        mpw_end(&w);
        mp_arena a = {0};
        mp_val v;
        size_t used;
        char err[VL_ERRLEN];
        if (decode(&a, w.buf, w.len, 1 << 20, &v, &used, err) != 1 || used != w.len) {
            ok = 0;
        } else {
            const mp_val *l = mp_get(&v, "list"), *in = mp_get(&v, "inner"),
                         *af = mp_get(&v, "after");
            if (!l || l->type != MP_ARRAY || l->len != n || !in || in->type != MP_MAP ||
                in->len != n || !af || af->type != MP_BOOL)
                ok = 0;
            for (uint32_t k = 0; ok && k < n; k++)
                if (l->v.a[k].v.u != k || in->v.a[2 * k + 1].v.i != -(int64_t)k) ok = 0;
            if (ok && n) {
                char key[16];
                snprintf(key, sizeof key, "k%u", n - 1);
                int64_t x;
                if (mp_get_i64(in, key, &x) != 0 || x != -(int64_t)(n - 1)) ok = 0;
            }
        }
        mp_arena_free(&a);
        mpw_free(&w);
    }
    CHECK(ok, "mp: arrays and maps of 0, 15, 16, 65535, 65536 entries round-trip");

    /* mpw_value: a decoded tree copies to identical bytes */
    static const uint8_t buf[] = {0x83, 0xa1, 'x',  0x92, 0xcd, 0x01, 0x00, 0xd0, 0x80, 0xa1,
                                  'y',  0xc7, 0x02, 0x05, 0xaa, 0xbb, 0xa1, 'z',  0x80};
    mp_arena a = {0};
    mp_val v;
    size_t used;
    char err[VL_ERRLEN];
    decode(&a, buf, sizeof buf, 100, &v, &used, err);
    mpw w;
    mpw_init(&w, -1);
    mpw_value(&w, &v);
    mp_val v2;
    mp_arena a2 = {0};
    int r = decode(&a2, w.buf, w.len, 100, &v2, &used, err);
    const mp_val *y = mp_get(&v2, "y");
    CHECK(r == 1 && v2.len == 3 && y && y->type == MP_EXT && y->ext_type == 5 && y->len == 2 &&
              y->v.p[1] == 0xbb,
          "mp: mpw_value copies maps, arrays, ints and ext values");
    mp_arena_free(&a);
    mp_arena_free(&a2);
    mpw_free(&w);

    /* mp_get_strdup */
    static const uint8_t m[] = {0x82, 0xa2, 'i', 'd', 0xa3, 'a', '/', 'b', 0xa1, 'n', 0x07};
    decode(&a, m, sizeof m, 100, &v, &used, err);
    char *id = mp_get_strdup(&v, "id");
    CHECK(id && strcmp(id, "a/b") == 0 && mp_get_strdup(&v, "n") == NULL, "mp: mp_get_strdup");
    free(id);
    mp_arena_free(&a);
}

static void test_floats(void) {
    mpw w;
    mpw_init(&w, -1);
    mpw_array(&w);
    mpw_f32(&w, 3.25f);
    mpw_f64(&w, -1e300);
    mpw_f64(&w, INFINITY);
    mpw_end(&w);
    mp_arena a = {0};
    mp_val v;
    size_t used;
    char err[VL_ERRLEN];
    int r = decode(&a, w.buf, w.len, 100, &v, &used, err);
    CHECK(r == 1 && w.len == 1 + 5 + 9 + 9 && v.v.a[0].v.f == 3.25 && v.v.a[1].v.f == -1e300 &&
              isinf(v.v.a[2].v.f),
          "mp: float32 and float64 round-trip");
    mp_arena_free(&a);
    mpw_free(&w);
}

static void test_errors(void) {
    mp_arena a = {0};
    mp_val v;
    size_t used;
    char err[VL_ERRLEN];
    static const uint8_t bad[] = {0xc1};
    err[0] = 0;
    CHECK(decode(&a, bad, 1, 100, &v, &used, err) == -1 && strstr(err, "0xc1"),
          "mp: byte 0xc1 is refused: %s", err);

    /* bin32 of 4 GiB - 1 bytes with a limit of 1 MiB: refused before reading */
    static const uint8_t big[] = {0xc6, 0xff, 0xff, 0xff, 0xff, 0x00};
    CHECK(decode(&a, big, sizeof big, 1 << 20, &v, &used, err) == -1 && strstr(err, "limit"),
          "mp: oversized bin length refused: %s", err);
    static const uint8_t bigs[] = {0xdb, 0x7f, 0xff, 0xff, 0xff};
    CHECK(decode(&a, bigs, sizeof bigs, 1 << 20, &v, &used, err) == -1,
          "mp: oversized str length refused");
    static const uint8_t bigmap[] = {0xdf, 0xff, 0xff, 0xff, 0xff};
    CHECK(decode(&a, bigmap, sizeof bigmap, 1 << 20, &v, &used, err) == -1 && strstr(err, "map"),
          "mp: map32 of 2^32-1 pairs refused: %s", err);
    static const uint8_t bigarr[] = {0xdd, 0x00, 0x10, 0x00, 0x00, 0x01};
    size_t before = a.used_total;
    CHECK(decode(&a, bigarr, sizeof bigarr, 1 << 30, &v, &used, err) == 0 && a.used_total == before,
          "mp: array claiming 1M entries in 6 bytes is incomplete and allocates nothing");
    /* 100 nested arrays */
    uint8_t deep[100];
    memset(deep, 0x91, sizeof deep);
    deep[99] = 0x00;
    CHECK(decode(&a, deep, sizeof deep, 100, &v, &used, err) == -1 && strstr(err, "nesting"),
          "mp: nesting deeper than 64 refused: %s", err);
    /* 64 levels decode, and copy into a map two levels deep (a stream item's value) */
    deep[63] = 0x00;
    int r64 = decode(&a, deep, 64, 100, &v, &used, err);
    mpw w;
    mpw_init(&w, -1);
    mpw_map(&w);
    mpw_str(&w, "k");
    mpw_array(&w);
    mpw_value(&w, &v);
    mpw_end(&w);
    mpw_end(&w);
    CHECK(r64 == 1 && w.depth == 0 && w.len == 2 + 2 + 64,
          "mp: a 64-level value copies into an item (encoder holds it)");
    mpw_free(&w);
    CHECK(decode(&a, bad, 0, 100, &v, &used, err) == 0, "mp: empty input is incomplete");
    static const uint8_t trunc_f64[] = {0xcb, 0, 0, 0};
    CHECK(decode(&a, trunc_f64, sizeof trunc_f64, 100, &v, &used, err) == 0,
          "mp: truncated float64 is incomplete");
    mp_arena_free(&a);
}

static void test_raw(void)
{
    /* mpw_raw appends an encoded value and counts it in the open container */
    static const uint8_t item[] = {0x81, 0xa1, 'x', 0xca, 0x3f, 0xc0, 0x00, 0x00}; /* {"x": 1.5f} */
    mpw w;
    mpw_init(&w, -1);
    mpw_array(&w);
    mpw_raw(&w, item, sizeof item);
    mpw_raw(&w, item, sizeof item);
    mpw_end(&w);
    CHECK(w.len == 1 + 2 * sizeof item && w.buf[0] == 0x92 && memcmp(w.buf + 1, item, sizeof item) == 0,
          "mp: mpw_raw copies encoded values verbatim (float32 stays float32) and counts them");
    mpw_free(&w);
}

static void test_arena(void) {
    /* the arena keeps one block across resets: same-sized decodes stop allocating */
    mpw w;
    mpw_init(&w, -1);
    mpw_array(&w);
    for (int k = 0; k < 10000; k++)
        mpw_nil(&w);
    mpw_end(&w);
    mp_arena a = {0};
    mp_val v;
    size_t used;
    char err[VL_ERRLEN];
    static const uint8_t small[] = {0x93, 1, 2, 3};
    decode(&a, w.buf, w.len, 1 << 20, &v, &used, err);
    decode(&a, small, sizeof small, 100, &v, &used, err); /* may take a new small block */
    decode(&a, small, sizeof small, 100, &v, &used, err);
    mp_arena_reset(&a);
    struct mp_block *head = a.head;
    decode(&a, w.buf, w.len, 1 << 20, &v, &used, err);
    CHECK(a.head == head && v.len == 10000, "mp: arena reset keeps the largest block for reuse");
    mp_arena_free(&a);
    mpw_free(&w);
}

int main(void) {
    test_ints();
    test_known_bytes();
    test_strings_bins();
    test_containers();
    test_floats();
    test_errors();
    test_raw();
    test_arena();
    CHECK_EXIT();
}
