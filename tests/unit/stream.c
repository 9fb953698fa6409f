/* Unit tests of lib/stream: writer/reader round trips (one stream, several
 * back to back, records larger than the read buffer, input trickling through
 * a pipe), schema checks on items, and every framing error the wire format
 * defines: garbage, empty input, truncation inside an item and between items,
 * a newer version, a wrong schema, oversized lengths, bad trailers. */
#include "check.h"
#include "stream.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

/* an anonymous file holding n bytes, positioned at 0 */
static int mem_fd(const void *p, size_t n) {
    int fd = memfd_create("stream-test", 0);
    if (fd < 0 || vl_write_all(fd, p, n) != 0) abort();
    lseek(fd, 0, SEEK_SET);
    return fd;
}

/* reads everything written to a memfd back */
static uint8_t *slurp(int fd, size_t *n) {
    off_t end = lseek(fd, 0, SEEK_END);
    uint8_t *p = xmalloc((size_t)end + 1);
    if (pread(fd, p, (size_t)end, 0) != end) abort();
    *n = (size_t)end;
    return p;
}

static char *ARGV1[] = {"teacher-embed", "--model", "m"};
static char *ARGV2[] = {"mpcat", "-o", "x"};

/* writes an embedding stream of n items of dimension dim into a fresh memfd */
static int write_embedding(int n, int dim, int with_trailer) {
    int fd = memfd_create("emb", 0);
    sw s;
    sw_init(&s, fd);
    sw_header_embedding(&s, dim, "teacher:test", NULL, 3, ARGV1);
    sw_header_end(&s);
    float *v = xmalloc(sizeof(float) * (size_t)dim);
    for (int i = 0; i < n; i++) {
        char id[32];
        snprintf(id, sizeof id, "img/%05d.jpg", i);
        for (int k = 0; k < dim; k++)
            v[k] = (float)i + (float)k / dim;
        sw_item_begin(&s);
        mpw_str(&s.w, "id");
        mpw_str(&s.w, id);
        mpw_str(&s.w, "vec");
        mpw_bin(&s.w, v, sizeof(float) * (size_t)dim);
        mpw_str(&s.w, "label");
        mpw_int(&s.w, i % 7);
        mpw_str(&s.w, "domain");
        mpw_str(&s.w, "photo");
        mpw_str(&s.w, "future_key");
        mpw_array(&s.w);
        mpw_nil(&s.w);
        mpw_end(&s.w);
        sw_item_end(&s);
    }
    free(v);
    if (with_trailer) {
        s.dropped = 2;
        sw_trailer_begin(&s);
        mpw_str(&s.w, "note");
        mpw_str(&s.w, "extra keys are allowed");
        sw_trailer_end(&s);
    } else {
        mpw_flush(&s.w, 0);
    }
    sw_free(&s);
    lseek(fd, 0, SEEK_SET);
    return fd;
}

/* reads a whole single stream; returns items read or -1 (err copied) */
static long read_all(int fd, const char *want, char *err, int check) {
    sr *r = sr_open(fd, "<test>");
    long n = 0;
    if (sr_header(r, want) != 0) {
        strcpy(err, r->err);
        sr_close(r);
        return -1;
    }
    const mp_val *item;
    int rc;
    char ierr[VL_ERRLEN];
    while ((rc = sr_next(r, &item)) == 1) {
        if (check && sr_check_item(r, item, ierr) != 0) {
            strcpy(err, ierr);
            sr_close(r);
            return -1;
        }
        n++;
    }
    if (rc < 0 || sr_finish(r) != 0) {
        strcpy(err, r->err);
        n = -1;
    }
    sr_close(r);
    return n;
}

static void test_round_trip(void) {
    int fd = write_embedding(3, 4, 1);
    sr *r = sr_open(fd, "<test>");
    int h = sr_header(r, "embedding");
    CHECK(h == 0 && r->schema == SCHEMA_EMBEDDING && r->dim == 4,
          "stream: header read back (schema, dim)");
    const mp_val *hist = mp_get(&r->header, "history");
    CHECK(hist && hist->type == MP_ARRAY && hist->len == 1 && hist->v.a[0].len == 3 &&
              mp_str_eq(&hist->v.a[0].v.a[0], "teacher-embed"),
          "stream: history holds the writer's argv");
    const mp_val *item;
    int ok = 1, n = 0, rc;
    char err[VL_ERRLEN];
    while ((rc = sr_next(r, &item)) == 1) {
        const mp_val *vec = mp_get(item, "vec");
        float x;
        memcpy(&x, vec->v.p + 4 * 3, 4);
        char id[32];
        snprintf(id, sizeof id, "img/%05d.jpg", n);
        if (!mp_str_eq(mp_get(item, "id"), id) || x != (float)n + 0.75f ||
            sr_check_item(r, item, err) != 0)
            ok = 0;
        n++;
    }
    CHECK(rc == 0 && n == 3 && ok, "stream: 3 items read back, checked and equal");
    CHECK(sr_trailer_records(r) == 3 && sr_trailer_dropped(r) == 2,
          "stream: trailer records 3, dropped 2");
    CHECK(sr_finish(r) == 0, "stream: clean end after the trailer");
    sr_close(r);

    /* the next tool's header extends the history */
    lseek(fd, 0, SEEK_SET);
    r = sr_open(fd, "<test>");
    sr_header(r, NULL);
    int fd2 = memfd_create("out", 0);
    sw s;
    sw_init(&s, fd2);
    sw_header_begin(&s, "embedding", &r->header, 3, ARGV2);
    sw_header_end(&s);
    sw_trailer_begin(&s);
    sw_trailer_end(&s);
    sw_free(&s);
    sr_close(r);
    lseek(fd2, 0, SEEK_SET);
    r = sr_open(fd2, "<test2>");
    /* no dim: the header check fails, but the header is kept */
    sr_header(r, NULL);
    hist = mp_get(&r->header, "history");
    CHECK(hist && hist->len == 2 && mp_str_eq(&hist->v.a[1].v.a[0], "mpcat"),
          "stream: sw_header_begin appends argv to the input's history");
    CHECK(strstr(r->err, "'dim'") != NULL, "stream: embedding header without dim refused: %s",
          r->err);
    sr_close(r);
    close(fd);
    close(fd2);
}

static void test_big(void) {
    /* 600 items of dim 4096 (16 KiB each, ~10 MB): records straddle the 4 MiB read buffer */
    int fd = write_embedding(600, 4096, 1);
    char err[VL_ERRLEN] = "";
    long n = read_all(fd, "embedding", err, 1);
    CHECK(n == 600, "stream: 600 items of 16 KiB across read-buffer boundaries (%s)", err);
    close(fd);

    /* one image record of 6 MB, larger than the initial buffer */
    int ifd = memfd_create("img", 0);
    sw s;
    sw_init(&s, ifd);
    sw_header_begin(&s, "image", NULL, 0, NULL);
    mpw_str(&s.w, "dtype");
    mpw_str(&s.w, "u8");
    mpw_str(&s.w, "layout");
    mpw_str(&s.w, "hwc");
    mpw_str(&s.w, "c");
    mpw_int(&s.w, 3);
    sw_header_end(&s);
    size_t np = 2000 * 1000 * 3;
    sw_item_begin(&s);
    mpw_str(&s.w, "id");
    mpw_str(&s.w, "big");
    mpw_str(&s.w, "h");
    mpw_int(&s.w, 2000);
    mpw_str(&s.w, "w");
    mpw_int(&s.w, 1000);
    mpw_str(&s.w, "pix");
    memset(mpw_bin_reserve(&s.w, np), 7, np);
    sw_item_end(&s);
    sw_trailer_begin(&s);
    CHECK(sw_trailer_end(&s) == 0, "stream: writer flushes a 6 MB record");
    sw_free(&s);
    lseek(ifd, 0, SEEK_SET);
    n = read_all(ifd, "image", err, 1);
    CHECK(n == 1, "stream: one 6 MB image record read and checked (%s)", err);
    close(ifd);
}

static void test_pipe_trickle(void) {
    /* the reader must cope with input arriving a few bytes at a time */
    int src = write_embedding(20, 8, 1);
    size_t n;
    uint8_t *bytes = slurp(src, &n);
    close(src);
    int p[2];
    if (pipe(p) != 0) abort();
    pid_t pid = fork();
    if (pid == 0) {
        close(p[0]);
        for (size_t o = 0; o < n; o += 7) {
            if (vl_write_all(p[1], bytes + o, n - o < 7 ? n - o : 7) != 0) _exit(1);
            if (o % 70 == 0) usleep(100);
        }
        _exit(0);
    }
    close(p[1]);
    char err[VL_ERRLEN] = "";
    long got = read_all(p[0], "embedding", err, 1);
    close(p[0]);
    waitpid(pid, NULL, 0);
    CHECK(got == 20, "stream: 20 items read from a pipe delivering 7 bytes at a time (%s)", err);
    free(bytes);
}

static void test_concat(void) {
    /* three streams back to back (as parallel --pipe leaves them) */
    size_t n1, n2;
    int a = write_embedding(2, 4, 1), b = write_embedding(3, 4, 1);
    uint8_t *pa = slurp(a, &n1), *pb = slurp(b, &n2);
    uint8_t *all = xmalloc(n1 * 2 + n2);
    memcpy(all, pa, n1);
    memcpy(all + n1, pb, n2);
    memcpy(all + n1 + n2, pa, n1);
    int fd = mem_fd(all, n1 * 2 + n2);
    sr *r = sr_open(fd, "<cat>");
    int total = 0, streams = 0, more;
    const mp_val *item;
    sr_header(r, "embedding");
    do {
        streams++;
        int rc;
        while ((rc = sr_next(r, &item)) == 1)
            total++;
        if (rc < 0) break;
        more = sr_next_stream(r, "embedding");
    } while (more == 1);
    CHECK(streams == 3 && total == 7 && more == 0 && r->streams == 3,
          "stream: three streams back to back: 7 items");
    sr_close(r);
    close(fd);

    /* the same bytes through the in-memory reader */
    r = sr_open_mem(all, n1 * 2 + n2, "<mem>");
    total = streams = 0;
    sr_header(r, "embedding");
    do {
        streams++;
        int rc;
        while ((rc = sr_next(r, &item)) == 1)
            total++;
        if (rc < 0) break;
        more = sr_next_stream(r, "embedding");
    } while (more == 1);
    CHECK(streams == 3 && total == 7 && more == 0,
          "stream: sr_open_mem reads the same three streams");
    sr_close(r);
    r = sr_open_mem(all, n1 - 1, "<mem>");
    sr_header(r, NULL);
    while (sr_next(r, &item) == 1) {
    }
    CHECK(strstr(r->err, "<mem>: record 3: truncated") != NULL,
          "stream: sr_open_mem reports truncation: %s", r->err);
    sr_close(r);

    /* sr_finish refuses a second stream */
    fd = mem_fd(all, n1 * 2);
    char err[VL_ERRLEN] = "";
    CHECK(read_all(fd, NULL, err, 0) == -1 && strstr(err, "after the trailer"),
          "stream: data after the trailer is an error for a single-stream reader: %s", err);
    close(fd);
    free(pa);
    free(pb);
    free(all);
    close(a);
    close(b);
}

/* framing errors on hand-made byte strings */
static void expect_err(const void *p, size_t n, const char *want, const char *needle,
                       const char *what) {
    int fd = mem_fd(p, n);
    char err[VL_ERRLEN] = "";
    long r = read_all(fd, want, err, 0);
    CHECK(r == -1 && strstr(err, needle) && strncmp(err, "<test>: ", 8) == 0, "stream: %s: %s",
          what, err);
    close(fd);
}

static void test_errors(void) {
    int fd = write_embedding(3, 4, 1);
    size_t n;
    uint8_t *good = slurp(fd, &n);
    close(fd);
    /* where the records start: re-read to find offsets */
    sr *r = sr_open(mem_fd(good, n), "<x>");
    sr_header(r, NULL);
    size_t hdr_end = r->start;
    const mp_val *item;
    sr_next(r, &item);
    size_t item1_end = r->start;
    close(r->fd);
    sr_close(r);

    static const char garbage[] = "id,vec\nimg1,0.5 0.25\n";
    expect_err(garbage, sizeof garbage - 1, NULL, "header", "CSV text is refused");
    static const uint8_t junk[] = {0xc1, 0x00};
    expect_err(junk, 2, NULL, "not a valid MessagePack stream", "invalid type byte refused");
    expect_err("", 0, NULL, "empty input", "empty input refused");
    expect_err(good, hdr_end - 3, NULL, "truncated", "truncated inside the header");
    expect_err(good, hdr_end + 10, NULL, "record 1: truncated", "truncated inside an item");
    expect_err(good, item1_end, NULL, "without a trailer after 1 records",
               "truncated between items");
    expect_err(good, n - 2, NULL, "truncated", "truncated inside the trailer");
    expect_err(good, n, "image", "schema is 'embedding', expected 'image'", "wrong schema refused");

    /* version 2 */
    mpw w;
    mpw_init(&w, -1);
    mpw_map(&w);
    mpw_str(&w, "schema");
    mpw_str(&w, "embedding");
    mpw_str(&w, "version");
    mpw_int(&w, 2);
    mpw_end(&w);
    expect_err(w.buf, w.len, NULL, "version 2 is not supported: this tool reads version 1",
               "newer version refused");
    w.len = 0;
    /* header without schema */
    mpw_map(&w);
    mpw_str(&w, "version");
    mpw_int(&w, 1);
    mpw_end(&w);
    expect_err(w.buf, w.len, NULL, "no 'schema'", "header without schema refused");
    w.len = 0;
    /* header that is an array */
    mpw_array(&w);
    mpw_end(&w);
    expect_err(w.buf, w.len, NULL, "not a map", "header that is not a map refused");

    /* an item claiming a 2 GiB bin: refused at once, nothing allocated */
    uint8_t *bad = xmalloc(hdr_end + 16);
    memcpy(bad, good, hdr_end);
    static const uint8_t huge[] = {0x81, 0xa3, 'v',  'e', 'c', 0xc6, 0x80,
                                   0x00, 0x00, 0x00, 1,   2,   3};
    memcpy(bad + hdr_end, huge, sizeof huge);
    expect_err(bad, hdr_end + sizeof huge, NULL, "exceeds the limit", "2 GiB bin length refused");
    /* an item that is not a map */
    bad[hdr_end] = 0x05;
    expect_err(bad, hdr_end + 1, NULL, "record 1: not a map", "item that is not a map refused");
    free(bad);

    /* trailer that lies about the record count */
    uint8_t *lie = xmalloc(n + 16);
    memcpy(lie, good, item1_end);
    static const uint8_t trl[] = {0x83, 0xa3, 'e', 'n', 'd', 0xc3, 0xa7, 'r',
                                  'e',  'c',  'o', 'r', 'd', 's',  0x05, 0xa7,
                                  'd',  'r',  'o', 'p', 'p', 'e',  'd',  0x00};
    memcpy(lie + item1_end, trl, sizeof trl);
    expect_err(lie, item1_end + sizeof trl, NULL, "says 5 records but the stream has 1",
               "trailer count mismatch");
    lie[item1_end + 14] = 0x01;
    lie[item1_end + sizeof trl - 1] = 0xff; /* dropped: -1 */
    expect_err(lie, item1_end + sizeof trl, NULL, "'dropped' is not a count",
               "trailer with dropped -1 refused");
    lie[item1_end + 5] = 0xc2; /* end: false */
    expect_err(lie, item1_end + sizeof trl, NULL, "'end' is not true",
               "trailer with end false refused");
    free(lie);
    mpw_free(&w);

    /* a smaller record limit: a 4 KiB record is refused when the limit is 1 KiB */
    int big = write_embedding(1, 1024, 1);
    r = sr_open(big, "<lim>");
    r->max_record = 1024;
    int h = sr_header(r, NULL);
    int rc = sr_next(r, &item);
    CHECK(h == 0 && rc == -1 && strstr(r->err, "limit"),
          "stream: record over max_record refused: %s", r->err);
    sr_close(r);
    close(big);
    free(good);
}

/* a header of the schema, with the library's writers (no history) */
static void put_header(sw *s, const char *schema) {
    static const char *const cls[] = {"dog", "cat"};
    stream_prediction_info pi = {.classes = cls, .nclasses = 2};
    if (!strcmp(schema, "embedding"))
        sw_header_embedding(s, 2, "t", NULL, 0, NULL);
    else if (!strcmp(schema, "image"))
        sw_header_image(s, NULL, 0, NULL);
    else
        sw_header_prediction(s, &pi, NULL, 0, NULL);
    mpw_end(&s->w);
}

/* checks one item (built by fn) against a schema; returns sr_check_item's result and message */
static int check_one(const char *schema, void (*fn)(mpw *), char *err) {
    sw s;
    sw_init(&s, -1);
    put_header(&s, schema);
    mpw_map(&s.w);
    fn(&s.w);
    mpw_end(&s.w);
    int fd = mem_fd(s.w.buf, s.w.len);
    sw_free(&s);
    sr *r = sr_open(fd, "<in>");
    const mp_val *item;
    int rc = -1;
    err[0] = 0;
    if (sr_header(r, schema) == 0 && sr_next(r, &item) == 1)
        rc = sr_check_item(r, item, err);
    else
        strcpy(err, r->err);
    sr_close(r);
    close(fd);
    return rc;
}

static void kv_id(mpw *w, const char *id) {
    mpw_str(w, "id");
    mpw_str(w, id);
}
static void emb_ok(mpw *w) {
    float v[2] = {1, -2};
    kv_id(w, "a");
    mpw_str(w, "vec");
    mpw_bin(w, v, 8);
    mpw_str(w, "label");
    mpw_nil(w);
}
static void emb_noid(mpw *w) {
    float v[2] = {1, -2};
    mpw_str(w, "vec");
    mpw_bin(w, v, 8);
}
static void emb_short(mpw *w) {
    float v[1] = {1};
    kv_id(w, "short");
    mpw_str(w, "vec");
    mpw_bin(w, v, 4);
}
static void emb_nan(mpw *w) {
    float v[2] = {1, NAN};
    kv_id(w, "nan");
    mpw_str(w, "vec");
    mpw_bin(w, v, 8);
}
static void emb_label_str(mpw *w) {
    emb_ok(w);
    mpw_str(w, "domain");
    mpw_int(w, 3);
}
static void img_ok(mpw *w) {
    kv_id(w, "i");
    mpw_str(w, "h");
    mpw_int(w, 2);
    mpw_str(w, "w");
    mpw_int(w, 1);
    mpw_str(w, "pix");
    mpw_bin(w, "abcdef", 6);
}
static void img_bad(mpw *w) {
    kv_id(w, "i");
    mpw_str(w, "h");
    mpw_int(w, 2);
    mpw_str(w, "w");
    mpw_int(w, 2);
    mpw_str(w, "pix");
    mpw_bin(w, "abcdef", 6);
}
static void pred_ok(mpw *w) {
    float l[2] = {0.5f, 0.25f};
    kv_id(w, "p");
    mpw_str(w, "pred");
    mpw_int(w, 1);
    mpw_str(w, "logits");
    mpw_bin(w, l, 8);
}
static void pred_bad(mpw *w) {
    float l[2] = {0.5f, 0.25f};
    kv_id(w, "p");
    mpw_str(w, "pred");
    mpw_int(w, 2);
    mpw_str(w, "logits");
    mpw_bin(w, l, 8);
}

/* a 20-dim vector with one special value at position pos (bits given) */
static uint32_t special_bits;
static int special_pos;
static void emb_special(mpw *w) {
    float v[20];
    for (int i = 0; i < 20; i++)
        v[i] = (float)i - 10.5f;
    memcpy(&v[special_pos], &special_bits, 4);
    kv_id(w, "s");
    mpw_str(w, "vec");
    mpw_bin(w, v, sizeof v);
}

static int check_dim20(uint32_t bits, int pos, char *err) {
    special_bits = bits;
    special_pos = pos;
    mpw w;
    mpw_init(&w, -1);
    mpw_map(&w);
    mpw_str(&w, "schema");
    mpw_str(&w, "embedding");
    mpw_str(&w, "version");
    mpw_int(&w, 1);
    mpw_str(&w, "dim");
    mpw_int(&w, 20);
    mpw_str(&w, "dtype");
    mpw_str(&w, "f32le");
    mpw_str(&w, "space");
    mpw_str(&w, "t");
    mpw_end(&w);
    mpw_map(&w);
    emb_special(&w);
    mpw_end(&w);
    int fd = mem_fd(w.buf, w.len);
    mpw_free(&w);
    sr *r = sr_open(fd, "<in>");
    const mp_val *item;
    int rc = -2;
    if (sr_header(r, NULL) == 0 && sr_next(r, &item) == 1) rc = sr_check_item(r, item, err);
    sr_close(r);
    close(fd);
    return rc;
}

static void test_finite(void) {
    /* NaN, +-infinity in the vectorised part and in the tail; the largest finite values pass */
    static const uint32_t bad[] = {0x7fc00000u, 0x7f800001u, 0xffc00000u, 0x7f800000u, 0xff800000u};
    static const uint32_t good[] = {0x7f7fffffu, 0xff7fffffu, 0x00000001u, 0x80000000u,
                                    0x00800000u};
    int all_bad = 1, all_good = 1;
    char err[VL_ERRLEN];
    for (int pos = 0; pos < 20; pos++) {
        for (size_t k = 0; k < sizeof bad / sizeof bad[0]; k++)
            if (check_dim20(bad[k], pos, err) != -1) all_bad = 0;
        for (size_t k = 0; k < sizeof good / sizeof good[0]; k++)
            if (check_dim20(good[k], pos, err) != 0) all_good = 0;
    }
    CHECK(all_bad, "stream: NaN and infinities found at every position of a 20-dim vector");
    CHECK(all_good, "stream: largest finite, subnormal and -0 values pass at every position");
}

static void test_items(void) {
    char err[VL_ERRLEN];
    CHECK(check_one("embedding", emb_ok, err) == 0,
          "stream: good embedding item passes (label nil allowed) %s", err);
    CHECK(check_one("embedding", emb_noid, err) == -1 && strstr(err, "<in>: record 1: no 'id'"),
          "stream: item without id refused: %s", err);
    CHECK(check_one("embedding", emb_short, err) == -1 && strstr(err, "(id 'short')") &&
              strstr(err, "dim 2"),
          "stream: wrong vector size refused with its id: %s", err);
    CHECK(check_one("embedding", emb_nan, err) == -1 && strstr(err, "NaN"),
          "stream: NaN in a vector refused: %s", err);
    CHECK(check_one("embedding", emb_label_str, err) == -1 &&
              strstr(err, "'domain' is not a string"),
          "stream: mistyped meta key refused: %s", err);
    CHECK(check_one("image", img_ok, err) == 0, "stream: good image item passes %s", err);
    CHECK(check_one("image", img_bad, err) == -1 && strstr(err, "expected 2x2x3"),
          "stream: pix size mismatch: %s", err);
    CHECK(check_one("prediction", pred_ok, err) == 0, "stream: good prediction item passes %s",
          err);
    CHECK(check_one("prediction", pred_bad, err) == -1 && strstr(err, "'pred'"),
          "stream: pred out of range: %s", err);
}

/* An item of many one-byte values: its tree would cost 16 bytes a value, so
 * the reader bounds the values by max_record / sizeof(mp_val). */
static void test_value_bound(void) {
    int fd = write_embedding(0, 4, 0);
    size_t n;
    uint8_t *hdr = slurp(fd, &n);
    close(fd);
    mpw w;
    mpw_init(&w, -1);
    mpw_raw(&w, hdr, n);
    mpw_map(&w);
    mpw_str(&w, "id");
    mpw_str(&w, "x");
    mpw_str(&w, "junk");
    mpw_array(&w);
    for (int i = 0; i < 100000; i++) mpw_nil(&w);
    mpw_end(&w);
    mpw_end(&w);
    sr *r = sr_open_mem(w.buf, w.len, "<mem>");
    r->max_record = 1 << 20; /* 100 kB of input: 1.6 MB of tree */
    const mp_val *item;
    int rc = sr_header(r, NULL) == 0 ? sr_next(r, &item) : 1;
    CHECK(rc == -1 && strstr(r->err, "more than 65536 values"),
          "stream: 100000 one-byte values refused under a 1 MiB record bound (rc %d, %s)", rc, r->err);
    sr_close(r);
    r = sr_open_mem(w.buf, w.len, "<mem>");
    rc = sr_header(r, NULL) == 0 ? sr_next(r, &item) : -1;
    CHECK(rc == 1 && mp_get(item, "junk")->len == 100000,
          "stream: the same item read under the default bound (rc %d)", rc);
    sr_close(r);
    mpw_free(&w);
    free(hdr);
}


/* one embedding item (dim 1) with id[0..idlen) and view: >= 0, -1 absent, -2 nil */
static void key_item(sw *s, const char *id, size_t idlen, int64_t view) {
    float v = 1;
    sw_item_begin(s);
    mpw_str(&s->w, "id");
    mpw_strn(&s->w, id, idlen);
    mpw_str(&s->w, "vec");
    mpw_bin(&s->w, &v, 4);
    if (view != -1) {
        mpw_str(&s->w, "view");
        if (view == -2)
            mpw_nil(&s->w);
        else
            mpw_int(&s->w, view);
    }
    sw_item_end(s);
}

static void test_keys(void) {
    /* stream 1: 3000 distinct ids (the table grows), then one id in views 0
     * and 1 and without a view, and ids that differ only after a NUL; stream
     * 2: a new key, then the view-1 key of stream 1 again, and the id
     * without a view again as a nil view (a nil optional key is absent) */
    int fd = memfd_create("keys", 0);
    sw s;
    sw_init(&s, fd);
    for (int st = 0; st < 2; st++) {
        sw_header_embedding(&s, 1, "teacher:test", NULL, 3, ARGV1);
        sw_header_end(&s);
        if (st == 0) {
            for (int i = 0; i < 3000; i++) {
                char id[32];
                snprintf(id, sizeof id, "img/%05d.jpg", i);
                key_item(&s, id, strlen(id), -1);
            }
            key_item(&s, "a", 1, 0);
            key_item(&s, "a", 1, 1);
            key_item(&s, "a", 1, -1);
            key_item(&s, "a\0x", 3, 1);
            key_item(&s, "a\0y", 3, 1);
        } else {
            key_item(&s, "b", 1, 0);
            key_item(&s, "a", 1, 1);
            key_item(&s, "a", 1, -2);
        }
        sw_trailer_begin(&s);
        sw_trailer_end(&s);
        s.records = 0;
    }
    size_t n;
    uint8_t *all = slurp(fd, &n);
    close(fd);
    sw_free(&s);
    sr *r = sr_open_mem(all, n, "<keys>");
    stream_keys *k = stream_keys_new();
    char err[VL_ERRLEN] = "", first[VL_ERRLEN] = "";
    const mp_val *item;
    int rc, dups = 0, items = 0;
    sr_header(r, "embedding");
    do {
        while ((rc = sr_next(r, &item)) == 1) {
            items++;
            if (stream_keys_add(k, r, item, err) != 0 && dups++ == 0) strcpy(first, err);
        }
    } while (rc == 0 && sr_next_stream(r, "embedding") == 1);
    CHECK(items == 3008 && dups == 2,
          "stream_keys: 3006 distinct keys (view 0, view 1, no view; ids equal up to a NUL), 2 repeats (%d)", dups);
    CHECK(strcmp(first, "<keys>: stream 2, record 2 (id 'a', view 1): duplicate (id, view), first at <keys>: stream 1, "
                        "record 3002") == 0,
          "stream_keys: the repeat named with where it came first: %s", first);
    CHECK(strstr(err, "record 3 (id 'a'): duplicate (id, view), first at <keys>: stream 1, record 3003") != NULL,
          "stream_keys: a nil view is no view: %s", err);
    sr_close(r);
    r = sr_open_mem(all, n, "<again>");
    sr_header(r, "embedding");
    for (int i = 0; i < 3003; i++) sr_next(r, &item);
    rc = stream_keys_add(k, r, item, err);
    CHECK(rc == -1 && strcmp(err, "<again>: record 3003 (id 'a'): duplicate (id, view), first at <keys>: record 3003") == 0,
          "stream_keys: across readers, the first one's name kept: %s", err);
    CHECK(stream_keys_find(k, "img/00000.jpg", 13, STREAM_NONE) == 0 &&
              stream_keys_find(k, "img/02999.jpg", 13, STREAM_NONE) == 2999 && stream_keys_find(k, "a", 1, 0) == 3000 &&
              stream_keys_find(k, "a", 1, 1) == 3001 && stream_keys_find(k, "a", 1, STREAM_NONE) == 3002 &&
              stream_keys_find(k, "a\0y", 3, 1) == 3004 && stream_keys_find(k, "b", 1, 0) == 3005,
          "stream_keys_find: each key's insertion number, by id and view (no view its own)");
    CHECK(stream_keys_find(k, "a", 1, 2) == -1 && stream_keys_find(k, "b", 1, STREAM_NONE) == -1 &&
              stream_keys_find(k, "a\0z", 3, 1) == -1 && stream_keys_find(k, "img/00000.jpg", 13, 0) == -1,
          "stream_keys_find: -1 for keys never added (another view, no view, another id)");
    stream_keys_free(k);
    /* keys from outside a stream (imgdecode's manifest rows), by line */
    k = stream_keys_new();
    int ok = 1;
    char id[32];
    for (int i = 0; i < 5000 && ok; i++) {
        snprintf(id, sizeof id, "row%d", i);
        ok = stream_keys_put(k, id, strlen(id), STREAM_NONE, (uint64_t)i + 2) == 0;
    }
    CHECK(ok && stream_keys_put(k, "row1234", 7, STREAM_NONE, 9999) == 1236 && stream_keys_put(k, "row1234", 7, 0, 9999) == 0 &&
              stream_keys_put(k, "row0", 4, STREAM_NONE, 10000) == 2 && stream_keys_find(k, "row4999", 7, STREAM_NONE) == 4999,
          "stream_keys_put: 0 for a new key (5000, the table grown), the first one's line for a repeat; a view is another key");
    stream_keys_free(k);
    sr_close(r);
    free(all);
}


/* The header writers: what each writes is what the reader checks, with the
 * input's history followed by argv. */
static void test_writers(void) {
    static const char *const classes[] = {"dog", "cat"}, *const sources[] = {"photo", "art"};
    stream_prediction_info pi = {.classes = classes, .nclasses = 2, .method = "adip-stage1", .has_seed = 1,
                                 .seed = 7, .sources = sources, .nsources = 2, .settings = "{\"lr\":0.1}"};
    int fd = memfd_create("hdr", 0);
    sw s;
    sw_init(&s, fd);
    sw_header_image(&s, NULL, 3, ARGV1);
    sw_header_end(&s);
    sw_trailer_begin(&s);
    sw_trailer_end(&s);
    sw_header_embedding(&s, 5, "student:resnet18", NULL, 3, ARGV1);
    mpw_str(&s.w, "normalize");
    mpw_str(&s.w, "l2");
    sw_header_end(&s);
    sw_trailer_begin(&s);
    sw_trailer_end(&s);
    sw_header_prediction(&s, &pi, NULL, 3, ARGV1);
    sw_header_end(&s);
    sw_trailer_begin(&s);
    sw_trailer_end(&s);
    pi = (stream_prediction_info){.classes = classes, .nclasses = 1}; /* zero-shot: no seed, sources, settings */
    sw_header_prediction(&s, &pi, NULL, 3, ARGV1);
    sw_header_end(&s);
    sw_trailer_begin(&s);
    sw_trailer_end(&s);
    sw_header_log(&s, NULL, 3, ARGV1);
    sw_header_end(&s);
    sw_item_begin(&s);
    mpw_str(&s.w, "step");
    mpw_int(&s.w, 10);
    mpw_str(&s.w, "loss");
    mpw_f64(&s.w, 0.25);
    sw_item_end(&s);
    sw_item_begin(&s);
    mpw_str(&s.w, "loss");
    mpw_f64(&s.w, 0.25);
    sw_item_end(&s);
    sw_trailer_begin(&s);
    sw_trailer_end(&s);
    sw_free(&s);
    size_t n;
    uint8_t *all = slurp(fd, &n);
    close(fd);
    sr *r = sr_open_mem(all, n, "<hdr>");
    const mp_val *item;
    char err[VL_ERRLEN] = "";
    int ok = sr_header(r, "image") == 0 && r->schema == SCHEMA_IMAGE && sr_next(r, &item) == 0;
    const mp_val *hist = mp_get(&r->header, "history");
    CHECK(ok && hist && hist->len == 1 && mp_str_eq(&hist->v.a[0].v.a[0], "teacher-embed"),
          "sw_header_image: read back as image with argv as history %s", r->err);
    ok = sr_next_stream(r, "embedding") == 1 && r->dim == 5 && mp_str_eq(mp_get(&r->header, "space"), "student:resnet18") &&
         mp_str_eq(mp_get(&r->header, "normalize"), "l2") && sr_next(r, &item) == 0;
    CHECK(ok, "sw_header_embedding: dim, space and a producer's key read back %s", r->err);
    ok = sr_next_stream(r, "prediction") == 1 && r->nclasses == 2;
    int64_t seed = -1;
    const mp_val *src = mp_get(&r->header, "sources");
    ok = ok && mp_str_eq(mp_get(&r->header, "method"), "adip-stage1") && mp_get_i64(&r->header, "seed", &seed) == 0 &&
         seed == 7 && src && src->len == 2 && mp_str_eq(&src->v.a[1], "art") &&
         mp_str_eq(mp_get(&r->header, "settings"), "{\"lr\":0.1}") && sr_next(r, &item) == 0;
    CHECK(ok, "sw_header_prediction: classes, method, seed, sources, settings read back %s", r->err);
    ok = sr_next_stream(r, "prediction") == 1 && r->nclasses == 1 && mp_get(&r->header, "seed")->type == MP_NIL &&
         mp_get(&r->header, "sources")->len == 0 && mp_str_eq(mp_get(&r->header, "method"), "") &&
         mp_str_eq(mp_get(&r->header, "settings"), "") && sr_next(r, &item) == 0;
    CHECK(ok, "sw_header_prediction: zero-shot defaults: seed nil, no sources, empty method and settings %s", r->err);
    ok = sr_next_stream(r, "log") == 1 && r->schema == SCHEMA_LOG && sr_next(r, &item) == 1 &&
         sr_check_item(r, item, err) == 0;
    CHECK(ok, "sw_header_log: a log stream; an item with step and loss (no id) passes %s%s", r->err, err);
    ok = sr_next(r, &item) == 1 && sr_check_item(r, item, err) == -1 && strstr(err, "record 2: no 'step'");
    CHECK(ok, "stream: a log item without step refused: %s", err);
    sr_close(r);
    free(all);

    /* the reader checks the run keys' types in a prediction header */
    mpw w;
    mpw_init(&w, -1);
    mpw_map(&w);
    mpw_str(&w, "schema");
    mpw_str(&w, "prediction");
    mpw_str(&w, "version");
    mpw_int(&w, 1);
    mpw_str(&w, "classes");
    mpw_array(&w);
    mpw_str(&w, "a");
    mpw_end(&w);
    mpw_str(&w, "sources");
    mpw_str(&w, "photo");
    mpw_end(&w);
    r = sr_open_mem(w.buf, w.len, "<pred>");
    CHECK(sr_header(r, NULL) == -1 && strstr(r->err, "'sources' is not an array"),
          "stream: a prediction header whose sources are no array refused: %s", r->err);
    sr_close(r);
    mpw_free(&w);
}

static void emb_neg_view(mpw *w) {
    emb_ok(w);
    mpw_str(w, "view");
    mpw_int(w, -1);
}

/* one item of the matrix streams: a 3-vector from x, and its keys */
static void mat_item(sw *s, const char *id, float x, int64_t label, int64_t view, const char *domain) {
    float v[3] = {x, x + 0.5f, -x};
    sw_item_begin(s);
    mpw_str(&s->w, "id");
    mpw_str(&s->w, id);
    mpw_str(&s->w, "vec");
    mpw_bin(&s->w, v, sizeof v);
    if (label >= 0) {
        mpw_str(&s->w, "label");
        mpw_int(&s->w, label);
        mpw_str(&s->w, "class");
        mpw_str(&s->w, label ? "cat" : "dog");
    }
    if (view >= 0) {
        mpw_str(&s->w, "view");
        mpw_int(&s->w, view);
    }
    if (domain) {
        mpw_str(&s->w, "domain");
        mpw_str(&s->w, domain);
        mpw_str(&s->w, "split");
        mpw_nil(&s->w);
    }
    sw_item_end(s);
}

/* a stream of dim 3 (or dim) in space: kind 0 good items, 1 one with NaN, 2 a repeated key */
static uint8_t *mat_stream(int64_t dim, const char *space, int kind, size_t *n, int64_t dropped) {
    int fd = memfd_create("mat", 0);
    sw s;
    sw_init(&s, fd);
    sw_header_embedding(&s, dim, space, NULL, 3, ARGV2);
    sw_header_end(&s);
    if (kind == 0) {
        mat_item(&s, "a", 1, 0, 0, "photo");
        mat_item(&s, "a", 2, 1, 1, NULL);
        mat_item(&s, "b", 3, -1, -1, "art");
    } else if (kind == 1) {
        mat_item(&s, "c", NAN, 1, -1, NULL);
        mat_item(&s, "d", 4, 1, -1, NULL);
    } else {
        mat_item(&s, "e", 5, 0, -1, NULL);
        mat_item(&s, "a", 6, 0, 1, NULL);
    }
    s.dropped = (uint64_t)dropped;
    sw_trailer_begin(&s);
    sw_trailer_end(&s);
    sw_free(&s);
    uint8_t *p = slurp(fd, n);
    close(fd);
    return p;
}

static int count_bad(void *ctx, const char *msg) {
    int *n = ctx;
    if (++*n == 1) CHECK(strstr(msg, "<mat>: record 1 (id 'c'): 'vec' holds NaN") != NULL, "stream_matrix_read: the bad item's message names it: %s", msg);
    return 0;
}

static int stop_bad(void *ctx, const char *msg) { return 1; }

static void test_matrix(void) {
    char err[VL_ERRLEN] = "";
    CHECK(check_one("embedding", emb_neg_view, err) == -1 && strstr(err, "'view' is not an integer >= 0"),
          "stream: a negative view refused: %s", err);

    /* two streams back to back in one input (the second with a NaN item),
     * then a third stream from another reader */
    size_t n1, n2, n3;
    uint8_t *s1 = mat_stream(3, "teacher:m", 0, &n1, 2), *s2 = mat_stream(3, "teacher:m", 1, &n2, 1);
    uint8_t *both = xmalloc(n1 + n2);
    memcpy(both, s1, n1);
    memcpy(both + n1, s2, n2);
    stream_matrix m;
    stream_matrix_init(&m);
    sr *r = sr_open_mem(both, n1 + n2, "<mat>");
    int nbad = 0;
    err[0] = 0;
    int rc = stream_matrix_read(&m, r, count_bad, &nbad, err);
    sr_close(r);
    CHECK(rc == 0 && m.n == 4 && m.dim == 3 && nbad == 1 && m.bad == 1 && m.dropped == 3 &&
              !strcmp(m.space, "teacher:m"),
          "stream_matrix_read: two streams, 4 rows of 3, one bad item dropped, trailers' dropped 3 (rc %d n %lld %s)",
          rc, (long long)m.n, err);
    int ok = rc == 0 && m.rows[0] == 1 && m.rows[1] == 1.5f && m.rows[2] == -1 && m.rows[9] == 4 && m.rows[11] == -4 &&
             !strcmp(m.id[1], "a") && m.view[1] == 1 && m.label[1] == 1 && !strcmp(m.cls[1], "cat") && !m.domain[1] &&
             !strcmp(m.domain[2], "art") && !m.split[2] && m.label[2] == STREAM_NONE && m.view[2] == STREAM_NONE &&
             !m.cls[2] && !strcmp(m.id[3], "d");
    CHECK(ok, "stream_matrix_read: rows and per-row id, view, label, class, domain, split (absent: NULL, STREAM_NONE)");
    const mp_val *hist = mp_get(&m.header, "history");
    CHECK(hist && hist->len == 1 && mp_str_eq(&hist->v.a[0].v.a[0], "mpcat"),
          "stream_matrix_read: the first header kept, with its history");
    CHECK(stream_matrix_find(&m, "a", 0) == 0 && stream_matrix_find(&m, "a", 1) == 1 &&
              stream_matrix_find(&m, "b", STREAM_NONE) == 2 && stream_matrix_find(&m, "d", STREAM_NONE) == 3 &&
              stream_matrix_find(&m, "c", STREAM_NONE) == -1 && stream_matrix_find(&m, "a", STREAM_NONE) == -1,
          "stream_matrix_find: rows by (id, view); the dropped item and an absent view not found");
    size_t n4;
    uint8_t *s4 = mat_stream(3, "teacher:m", 2, &n4, 0);
    r = sr_open_mem(s4, n4, "<more>");
    rc = stream_matrix_read(&m, r, NULL, NULL, err);
    sr_close(r);
    CHECK(rc == -1 && !strcmp(err, "<more>: record 2 (id 'a', view 1): duplicate (id, view), first at <mat>: record 2"),
          "stream_matrix_read: a key seen in another reader fails the load: %s", err);
    stream_matrix_free(&m);

    /* an id with a NUL byte could not be a row's C string: a bad item */
    int fd = memfd_create("nul", 0);
    sw s;
    sw_init(&s, fd);
    sw_header_embedding(&s, 1, "t", NULL, 0, NULL);
    sw_header_end(&s);
    key_item(&s, "a\0b", 3, -1);
    key_item(&s, "a", 1, -1);
    sw_trailer_begin(&s);
    sw_trailer_end(&s);
    sw_free(&s);
    size_t nn;
    uint8_t *nul = slurp(fd, &nn);
    close(fd);
    stream_matrix_init(&m);
    r = sr_open_mem(nul, nn, "<nul>");
    rc = stream_matrix_read(&m, r, NULL, NULL, err);
    CHECK(rc == -1 && strstr(err, "<nul>: record 1 (id 'a'): 'id' holds a NUL byte"),
          "stream_matrix_read: an id holding a NUL byte is a bad item: %s", err);
    sr_close(r);
    stream_matrix_free(&m);
    free(nul);

    /* a bad item with no callback, or one that says stop, fails the load */
    stream_matrix_init(&m);
    r = sr_open_mem(s2, n2, "<mat>");
    rc = stream_matrix_read(&m, r, NULL, NULL, err);
    CHECK(rc == -1 && strstr(err, "(id 'c'): 'vec' holds NaN"), "stream_matrix_read: no callback: a bad item fails: %s",
          err);
    sr_close(r);
    stream_matrix_free(&m);
    stream_matrix_init(&m);
    r = sr_open_mem(s2, n2, "<mat>");
    rc = stream_matrix_read(&m, r, stop_bad, NULL, err);
    CHECK(rc == -1 && m.bad == 1 && strstr(err, "(id 'c')"), "stream_matrix_read: a callback that stops fails the load");
    sr_close(r);
    stream_matrix_free(&m);

    /* another dim or space in a later stream: the streams do not join */
    uint8_t *s3 = mat_stream(4, "teacher:m", 1, &n3, 0), *s5 = mat_stream(3, "student:x", 1, &n4, 0);
    for (int k = 0; k < 2; k++) {
        stream_matrix_init(&m);
        r = sr_open_mem(s1, n1, "<mat>");
        rc = stream_matrix_read(&m, r, NULL, NULL, err);
        sr_close(r);
        r = k ? sr_open_mem(s5, n4, "<other>") : sr_open_mem(s3, n3, "<other>");
        rc = rc == 0 ? stream_matrix_read(&m, r, NULL, NULL, err) : 0;
        sr_close(r);
        CHECK(rc == -1 && !strcmp(err, k ? "<other>: header: space 'student:x', but <mat> has space 'teacher:m': the streams do not join"
                                         : "<other>: header: dim 4, but <mat> has dim 3: the streams do not join"),
              "stream_matrix_read: another %s refused: %s", k ? "space" : "dim", err);
        stream_matrix_free(&m);
    }
    stream_matrix_init(&m);
    r = sr_open_mem("", 0, "<empty>");
    rc = stream_matrix_read(&m, r, NULL, NULL, err);
    CHECK(rc == -1 && strstr(err, "<empty>: empty input"), "stream_matrix_read: empty input fails: %s", err);
    sr_close(r);
    stream_matrix_free(&m);
    sw w;
    sw_init(&w, -1);
    put_header(&w, "image");
    stream_matrix_init(&m);
    r = sr_open_mem(w.w.buf, w.w.len, "<img>");
    rc = stream_matrix_read(&m, r, NULL, NULL, err);
    CHECK(rc == -1 && !strcmp(err, "<img>: header: schema is 'image', expected 'embedding'"),
          "stream_matrix_read: another schema fails: %s", err);
    sr_close(r);
    stream_matrix_free(&m);
    sw_free(&w);
    free(s1), free(s2), free(s3), free(s4), free(s5), free(both);
}

int main(void) {
    test_round_trip();
    test_value_bound();
    test_big();
    test_pipe_trickle();
    test_concat();
    test_errors();
    test_items();
    test_finite();
    test_keys();
    test_writers();
    test_matrix();
    CHECK_EXIT();
}
