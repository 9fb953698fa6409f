/* libFuzzer target: the safetensors header parser and the JSON parser.
 * Any input must give a clean result or a clean error, and every tensor the
 * parser accepts must lie inside the input. */
#include "json.h"
#include "st.h"
#include "util.h"

#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char err[VL_ERRLEN];
    /* an exact-size copy so that any read past the end is caught */
    uint8_t *buf = malloc(size ? size : 1);
    memcpy(buf, data, size);
    st_file f;
    if (st_parse(&f, buf, size, "<fuzz>", err) == 0) {
        for (int i = 0; i < f.n; i++) {
            const st_tensor *t = &f.t[i];
            if (t->data < buf || t->data + t->nbytes > buf + size) abort();
            if (t->nbytes != (size_t)t->numel * st_dtype_size(t->dtype)) abort();
            if (st_find(&f, t->name) != t) abort();
            if (t->numel <= (1 << 20) &&
                (t->dtype == ST_F32 || t->dtype == ST_F16 || t->dtype == ST_BF16)) {
                float *x = malloc((size_t)(t->numel ? t->numel : 1) * sizeof(float));
                st_to_f32(t, x);
                free(x);
            }
            char shape[128];
            st_shape_str(t->ndim, t->shape, shape, sizeof shape);
        }
        for (int i = 0; i < f.nmeta; i++)
            if (st_meta(&f, f.meta_key[i]) == NULL) abort();
        st_close(&f);
    }
    /* the JSON parser on the raw bytes, and its writer on what it parsed */
    json *j = json_parse((const char *)buf, size, err);
    if (j && j->type == JSON_STR) {
        json_buf b = {0};
        json_buf_str(&b, j->s, j->slen);
        json *k = json_parse(b.p, b.len, err);
        if (!k || k->slen != j->slen || memcmp(k->s, j->s, j->slen) != 0) abort();
        json_free(k);
        free(b.p);
    }
    json_free(j);
    free(buf);
    return 0;
}
