/* Unit tests of lib/st: writer/reader round trips (F32, F16, BF16, I64,
 * metadata, scalars, empty tensors), shape checks in st_load_f32, and every
 * malformed header the reader must refuse without reading outside the file. */
#include "check.h"
#include "st.h"
#include "util.h"

#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static char dir[] = "/tmp/vl2v-st-XXXXXX";

/* parses a header JSON followed by ndata zero bytes; returns st_parse's result */
static int parse_hdr(const char *hdr, size_t ndata, char *err) {
    size_t hl = strlen(hdr), n = 8 + hl + ndata;
    uint8_t *buf = xcalloc(n, 1);
    for (int i = 0; i < 8; i++)
        buf[i] = (uint8_t)((uint64_t)hl >> (8 * i));
    memcpy(buf + 8, hdr, hl);
    /* an exact-size copy so a read past the end is caught by sanitizers */
    st_file f;
    int rc = st_parse(&f, buf, n, "<t>", err);
    if (rc == 0) st_close(&f);
    free(buf);
    return rc;
}

static void expect_bad(const char *hdr, size_t ndata, const char *needle, const char *what) {
    char err[VL_ERRLEN] = "";
    int rc = parse_hdr(hdr, ndata, err);
    CHECK(rc == -1 && strstr(err, needle) && strncmp(err, "<t>: ", 5) == 0, "st: %s: %s", what,
          err);
}

static void test_round_trip(void) {
    char path[256], err[VL_ERRLEN];
    snprintf(path, sizeof path, "%s/m.safetensors", dir);
    float w[6] = {1, -2, 3.5f, 0.1f, 1e-3f, 65504};
    uint16_t h[6], b[6];
    for (int i = 0; i < 6; i++) {
        h[i] = vl_f32_to_f16(w[i]);
        b[i] = vl_f32_to_bf16(w[i]);
    }
    int64_t ids[3] = {-1, 0, 1LL << 40};
    float scalar = 7;
    stw *s = stw_new();
    stw_add(s, "layer.weight", ST_F32, 2, (int64_t[]){2, 3}, w);
    stw_add(s, "half", ST_F16, 1, (int64_t[]){6}, h);
    stw_add(s, "bhalf", ST_BF16, 3, (int64_t[]){1, 2, 3}, b);
    stw_add(s, "ids", ST_I64, 1, (int64_t[]){3}, ids);
    stw_add(s, "scalar", ST_F32, 0, NULL, &scalar);
    stw_add(s, "empty", ST_F32, 2, (int64_t[]){0, 4}, NULL);
    stw_meta(s, "format", "pt");
    stw_meta(s, "note", "quote \" backslash \\ newline \n");
    CHECK(stw_write(s, path, err) == 0, "st: writer writes 6 tensors and metadata (%s)", err);
    stw_free(s);

    st_file f;
    CHECK(st_open(&f, path, err) == 0 && f.n == 6 && f.nmeta == 2,
          "st: reader opens it: 6 tensors, 2 metadata");
    CHECK(strcmp(f.t[0].name, "bhalf") == 0 && strcmp(f.t[5].name, "scalar") == 0,
          "st: tensors sorted by name");
    const st_tensor *t = st_find(&f, "layer.weight");
    CHECK(t && t->dtype == ST_F32 && t->ndim == 2 && t->shape[1] == 3 && t->numel == 6 &&
              t->nbytes == 24 && memcmp(t->data, w, 24) == 0,
          "st: F32 tensor read back bit-exact");
    CHECK(st_find(&f, "nope") == NULL && st_find(&f, "") == NULL, "st: st_find of absent names");
    CHECK(strcmp(st_meta(&f, "format"), "pt") == 0 &&
              strcmp(st_meta(&f, "note"), "quote \" backslash \\ newline \n") == 0 &&
              st_meta(&f, "x") == NULL,
          "st: metadata with escapes read back");
    int64_t any[2] = {-1, 3};
    float *x = st_load_f32(&f, "layer.weight", 2, any, err);
    CHECK(x && x[2] == 3.5f, "st: st_load_f32 with a wildcard dimension");
    free(x);
    x = st_load_f32(&f, "layer.weight", 2, (int64_t[]){3, 2}, err);
    CHECK(!x && strstr(err, "has shape [2, 3], expected [3, 2]"), "st: shape mismatch named: %s",
          err);
    x = st_load_f32(&f, "layer.weight", 1, (int64_t[]){6}, err);
    CHECK(!x, "st: rank mismatch refused");
    x = st_load_f32(&f, "missing", 1, (int64_t[]){6}, err);
    CHECK(!x && strstr(err, "missing tensor 'missing'"), "st: missing tensor named: %s", err);
    x = st_load_f32(&f, "ids", 1, (int64_t[]){3}, err);
    CHECK(!x && strstr(err, "dtype I64"), "st: integer tensor refused as float: %s", err);
    float *xh = st_load_f32(&f, "half", 1, (int64_t[]){6}, err);
    float *xb = st_load_f32(&f, "bhalf", 3, (int64_t[]){1, 2, 3}, err);
    int ok = xh && xb;
    for (int i = 0; ok && i < 6; i++)
        if (xh[i] != vl_f16_to_f32(h[i]) || xb[i] != vl_bf16_to_f32(b[i])) ok = 0;
    CHECK(ok && xh[5] == 65504 && xb[0] == 1, "st: F16 and BF16 converted to float");
    free(xh);
    free(xb);
    x = st_load_f32(&f, "scalar", 0, NULL, err);
    CHECK(x && *x == 7, "st: 0-d tensor");
    free(x);
    t = st_find(&f, "empty");
    CHECK(t && t->numel == 0 && t->nbytes == 0, "st: empty tensor");
    t = st_find(&f, "ids");
    int64_t id2;
    memcpy(&id2, t->data + 16, 8);
    CHECK(id2 == (1LL << 40), "st: I64 data intact");
    /* data is 8-byte aligned in the file */
    CHECK(((f.t[0].data - (const uint8_t *)f.map) % 8) == 0,
          "st: data section starts 8-byte aligned");
    st_close(&f);

    /* writing twice the same content gives the same bytes (independent of add order) */
    char p2[256];
    snprintf(p2, sizeof p2, "%s/m2.safetensors", dir);
    s = stw_new();
    stw_add(s, "b", ST_F32, 1, (int64_t[]){2}, w);
    stw_add(s, "a", ST_F32, 1, (int64_t[]){2}, w + 2);
    stw_write(s, path, err);
    stw_free(s);
    s = stw_new();
    stw_add(s, "a", ST_F32, 1, (int64_t[]){2}, w + 2);
    stw_add(s, "b", ST_F32, 1, (int64_t[]){2}, w);
    stw_write(s, p2, err);
    stw_free(s);
    size_t n1, n2;
    char *c1 = vl_read_file(path, 1 << 20, &n1, err), *c2 = vl_read_file(p2, 1 << 20, &n2, err);
    CHECK(c1 && c2 && n1 == n2 && memcmp(c1, c2, n1) == 0, "st: output depends only on content");
    free(c1);
    free(c2);

    /* a failed write leaves nothing */
    snprintf(p2, sizeof p2, "%s/none/m.safetensors", dir);
    s = stw_new();
    stw_add(s, "a", ST_F32, 1, (int64_t[]){2}, w);
    CHECK(stw_write(s, p2, err) == -1 && strstr(err, "none"),
          "st: write into a missing directory fails: %s", err);
    stw_free(s);

    /* truncated file: the data section cut short */
    struct stat sb;
    stat(path, &sb);
    if (truncate(path, sb.st_size - 1) != 0) abort();
    CHECK(st_open(&f, path, err) == -1 && strstr(err, "beyond") && strstr(err, "truncated"),
          "st: truncated file refused: %s", err);
    snprintf(p2, sizeof p2, "%s/absent.safetensors", dir);
    CHECK(st_open(&f, p2, err) == -1 && strstr(err, "absent.safetensors"),
          "st: missing file named: %s", err);
    CHECK(st_open(&f, dir, err) == -1 && strstr(err, "not a regular file"),
          "st: directory refused: %s", err);
    snprintf(p2, sizeof p2, "%s/zero", dir);
    fclose(fopen(p2, "w"));
    CHECK(st_open(&f, p2, err) == -1 && strstr(err, "shorter than"), "st: empty file refused: %s",
          err);
}

static void test_bad_headers(void) {
    char err[VL_ERRLEN];
    uint8_t buf[16] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f, '{', '}'};
    st_file f;
    CHECK(st_parse(&f, buf, 10, "<t>", err) == -1 && strstr(err, "exceeds the file"),
          "st: huge header length: %s", err);
    CHECK(st_parse(&f, buf, 5, "<t>", err) == -1 && strstr(err, "shorter than"),
          "st: 5-byte file: %s", err);
    CHECK(parse_hdr("{}", 0, err) == 0, "st: empty header {} is a valid file with no tensors");
    expect_bad("[1]", 0, "does not start with '{'", "header that is an array");
    expect_bad("{\"a\":", 0, "bad safetensors header: JSON", "unterminated JSON");
    expect_bad("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}", 8, "JSON",
               "missing closing brace");
    expect_bad("{\"a\":1}", 0, "entry is not an object", "tensor entry that is a number");
    expect_bad("{\"a\":{\"dtype\":\"Q4\",\"shape\":[1],\"data_offsets\":[0,1]}}", 1, "dtype 'Q4'",
               "unknown dtype");
    expect_bad("{\"a\":{\"shape\":[1],\"data_offsets\":[0,4]}}", 4, "missing dtype",
               "missing dtype");
    expect_bad("{\"a\":{\"dtype\":\"F32\",\"data_offsets\":[0,4]}}", 4, "missing shape",
               "missing shape");
    expect_bad("{\"a\":{\"dtype\":\"F32\",\"shape\":[-1],\"data_offsets\":[0,4]}}", 4,
               "bad dimension", "negative dimension");
    expect_bad("{\"a\":{\"dtype\":\"F32\",\"shape\":[1.5],\"data_offsets\":[0,4]}}", 4,
               "bad dimension", "fractional dimension");
    expect_bad("{\"a\":{\"dtype\":\"F32\",\"shape\":[1,1,1,1,1,1,1,1,1],\"data_offsets\":[0,4]}}",
               4, "more than 8 dimensions", "nine dimensions");
    expect_bad(
        "{\"a\":{\"dtype\":\"F32\",\"shape\":[1048576,1048576,1048576],\"data_offsets\":[0,4]}}", 4,
        "too many elements", "2^60 elements (overflow guard)");
    /* 2^64 elements: the count wraps to 0 without the check, 0 bytes pass */
    expect_bad("{\"a\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296],\"data_offsets\":[0,0]}}", 0,
               "too many elements", "[2^32, 2^32] with 0 bytes (a count that wraps to 0)");
    expect_bad("{\"a\":{\"dtype\":\"U8\",\"shape\":[1099511627776,1099511627776,0],\"data_offsets\":[0,0]}}",
               0, "too many elements", "[2^40, 2^40, 0]: a product of two dimensions over the bound");
    CHECK(parse_hdr("{\"a\":{\"dtype\":\"F32\",\"shape\":[0,1099511627776],\"data_offsets\":[0,0]}}", 0, err) == 0,
          "st: [0, 2^40]: an empty tensor");
    expect_bad("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,4]}}", 8,
               "4 data bytes for 2", "byte count not matching the shape");
    expect_bad("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 4, "beyond",
               "offsets past the end");
    expect_bad("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8,0]}}", 8,
               "bad data_offsets", "offsets reversed");
    expect_bad("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[-8,0]}}", 8,
               "bad data_offsets", "negative offset");
    expect_bad("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0]}}", 8,
               "bad data_offsets", "one offset");
    expect_bad(
        "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,18446744073709551615]}}", 8,
        "bad data_offsets", "offset beyond int64");
    expect_bad("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
               "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}",
               12, "overlap", "overlapping tensors");
    expect_bad("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
               "\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}",
               8, "appears twice", "duplicate tensor name");
    expect_bad("{\"__metadata__\":{\"a\":1}}", 0, "not a string",
               "metadata value that is a number");
    expect_bad("{\"__metadata__\":[]}", 0, "not an object", "metadata that is an array");
    expect_bad("{\"__metadata__\":{\"a\":\"x\",\"b\":\"y\"},\"__metadata__\":{\"c\":\"z\",\"d\":"
               "\"w\",\"e\":\"v\"}}",
               0, "appears twice", "duplicate __metadata__");
}

/* st_read_f32 and st_load_f32 refuse a weight that is not finite, in
 * every float dtype, naming the element by its index in the shape; finite
 * values (the largest half included) pass */
static void test_finite(void) {
    char err[VL_ERRLEN];
    static const struct {
        int dtype;
        uint16_t bits; /* the bad value at element 3 of a [2, 2] tensor (F32: its high half) */
        const char *want;
    } cases[] = {{ST_F32, 0x7fc0, "'w': NaN at [1, 1]"},
                 {ST_F32, 0xff80, "'w': -infinity at [1, 1]"},
                 {ST_F16, 0x7c00, "'w': +infinity at [1, 1]"},
                 {ST_F16, 0x7e00, "'w': NaN at [1, 1]"},
                 {ST_BF16, 0x7f80, "'w': +infinity at [1, 1]"},
                 {ST_F16, 0x7bff, NULL}};
    for (size_t k = 0; k < sizeof cases / sizeof *cases; k++) {
        uint8_t data[16] = {0};
        size_t size = st_dtype_size(cases[k].dtype);
        memcpy(data + 3 * size + (size == 4 ? 2 : 0), &cases[k].bits, 2);
        char path[300];
        snprintf(path, sizeof path, "%s/finite%zu.safetensors", dir, k);
        stw *w = stw_new();
        stw_add(w, "w", cases[k].dtype, 2, (int64_t[]){2, 2}, data);
        int rc = stw_write(w, path, err);
        stw_free(w);
        st_file f;
        if (rc != 0 || st_open(&f, path, err) != 0) {
            CHECK(0, "st: writing %s: %s", path, err);
            continue;
        }
        float out[4];
        rc = st_read_f32(&f, st_find(&f, "w"), out, err);
        float *v = st_load_f32(&f, "w", 2, (int64_t[]){2, 2}, err);
        if (cases[k].want)
            CHECK(rc == -1 && !v && strstr(err, cases[k].want) && strstr(err, path), "st: %s %s: %s",
                  st_dtype_name(cases[k].dtype), cases[k].want, err);
        else
            CHECK(rc == 0 && v && v[3] == 65504.0f, "st: the largest half (65504) is finite");
        free(v);
        st_close(&f);
    }
}

/* stw_write goes through vl_afile: a device is written in place (and stays
 * one), a symbolic link keeps pointing to the file it replaces */
static void test_write_in_place(void) {
    char err[VL_ERRLEN], path[300], link[300];
    float v[2] = {1, 2};
    stw *w = stw_new();
    stw_add(w, "v", ST_F32, 1, (int64_t[]){2}, v);
    struct stat sb;
    CHECK(stw_write(w, "/dev/null", err) == 0 && stat("/dev/null", &sb) == 0 && S_ISCHR(sb.st_mode),
          "st: stw_write to /dev/null: written in place, still a character device");
    snprintf(path, sizeof path, "%s/target.safetensors", dir);
    snprintf(link, sizeof link, "%s/link.safetensors", dir);
    st_file f;
    int ok = symlink("target.safetensors", link) == 0 && stw_write(w, link, err) == 0 && lstat(link, &sb) == 0 &&
             S_ISLNK(sb.st_mode) && st_open(&f, path, err) == 0;
    CHECK(ok && st_find(&f, "v") && st_find(&f, "v")->numel == 2, "st: stw_write through a link writes its target: %s",
          ok ? "ok" : err);
    if (ok) st_close(&f);
    stw_free(w);
}

int main(void) {
    if (!mkdtemp(dir)) return 1;
    test_write_in_place();
    test_round_trip();
    test_bad_headers();
    test_finite();
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    CHECK(system(cmd) == 0, "st: temporary directory removed");
    CHECK_EXIT();
}
