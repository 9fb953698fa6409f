/* libFuzzer target: the record-stream reader and the MessagePack codec.
 * Any input must give a clean result or a clean error: no crash, no read
 * outside the input, no leak, no unbounded allocation. Decoded values are
 * re-encoded and decoded again, and must come back the same; a loaded
 * embedding matrix finds each of its rows by (id, view). */
#include "mp.h"
#include "stream.h"

#include <stdlib.h>
#include <string.h>

static int keep_going(void *ctx, const char *msg) {
    (void)ctx, (void)msg;
    return 0;
}

static mpw w, w2; /* reused: a fresh 1 MiB buffer per run would dominate the run time */

static void reencode(const mp_val *v) {
    if (!w.buf) {
        mpw_init(&w, -1);
        mpw_init(&w2, -1);
    }
    w.len = w2.len = 0;
    mpw_value(&w, v);
    mp_arena a = {0};
    mp_val back;
    size_t used;
    char err[VL_ERRLEN];
    if (mp_decode(&a, w.buf, w.len, (size_t)1 << 30, &back, &used, err) != 1 || used != w.len)
        abort();
    mpw_value(&w2, &back);
    /* floats are re-encoded as float64, so the second encoding equals the first */
    if (w2.len != w.len || memcmp(w2.buf, w.buf, w.len) != 0) abort();
    mp_arena_free(&a);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    /* the codec alone */
    mp_arena a = {0};
    mp_val v;
    size_t used;
    char err[VL_ERRLEN];
    if (mp_decode(&a, data, size, 1 << 16, &v, &used, err) == 1) {
        if (used > size) abort();
        reencode(&v);
    }
    mp_arena_free(&a);

    /* the stream reader, as mpcat drives it */
    sr *r = sr_open_mem(data, size, "<fuzz>");
    r->max_record = 1 << 16;
    stream_keys *keys = stream_keys_new();
    if (sr_header(r, NULL) == 0) {
        int more = 1;
        while (more == 1) {
            const mp_val *item;
            int rc;
            while ((rc = sr_next(r, &item)) == 1) {
                char where[256];
                if (sr_check_item(r, item, err) == 0) stream_keys_add(keys, r, item, err);
                sr_where(r, item, where, sizeof where);
                reencode(item);
            }
            if (rc < 0) break;
            sr_trailer_records(r);
            sr_trailer_dropped(r);
            more = sr_next_stream(r, NULL);
        }
    }
    stream_keys_free(keys);
    sr_close(r);

    /* the whole-stream loader, as predict drives it: every row found again by its key */
    stream_matrix m;
    stream_matrix_init(&m);
    r = sr_open_mem(data, size, "<fuzz>");
    r->max_record = 1 << 16;
    if (stream_matrix_read(&m, r, keep_going, NULL, err) == 0)
        for (int64_t i = 0; i < m.n; i++)
            if (stream_matrix_find(&m, m.id[i], m.view[i]) != i) abort();
    stream_matrix_free(&m);
    sr_close(r);
    return 0;
}
