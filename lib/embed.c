/* embed: a student over an image stream (see embed.h). */
#include "embed.h"

#include "util.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

void embed_pixels(float *dst, const uint8_t *pix, size_t hw, const float mean[3], const float std[3])
{
    for (int ch = 0; ch < 3; ch++) {
        float m = mean[ch], sd = std[ch];
        float *d = dst + ch * hw;
        for (size_t i = 0; i < hw; i++) d[i] = ((float)pix[3 * i + ch] / 255.0f - m) / sd;
    }
}

typedef struct {
    const embed_opts *o;
    int B, H, W, dim;
    float *x, *feat;
    size_t xcap;
    mpw *meta;   /* each item's keys, encoded */
    mp_val *keys;
    mp_arena arena;
} batch;

/* Runs the batch and hands it over. */
static int flush(batch *b, char *err)
{
    if (!b->B) return 0;
    if (student_forward(b->o->st, b->feat, b->x, b->B, b->H, b->W, 0, err) != 0) return -1;
    mp_arena_reset(&b->arena);
    for (int i = 0; i < b->B; i++) {
        size_t used;
        if (mp_decode(&b->arena, b->meta[i].buf, b->meta[i].len, STREAM_MAX_RECORD, &b->keys[i], &used, err) != 1)
            return -1;
    }
    int rc = b->o->emit(b->o->ctx, b->keys, b->B, b->feat, err);
    for (int i = 0; i < b->B; i++) mpw_free(&b->meta[i]);
    b->B = 0;
    return rc;
}

/* A bad item: to the caller's callback, which may stop the run. */
static int bad_item(const embed_opts *o, const char *msg, char *err)
{
    if (!o->bad || o->bad(o->bad_ctx, msg)) return vl_error(err, "%s", msg);
    return 0;
}

static int add(batch *b, sr *r, const mp_val *item, char *err)
{
    static const char *const ID[] = {"id", NULL};
    const embed_opts *o = b->o;
    int64_t h, w;
    mp_get_i64(item, "h", &h);
    mp_get_i64(item, "w", &w);
    char why[VL_ERRLEN];
    if (student_check_input(o->st, (int)h, (int)w, why) != 0) {
        char where[256], msg[VL_ERRLEN];
        snprintf(msg, sizeof msg, "%s: %" PRId64 "x%" PRId64 " image: %s", sr_where(r, item, where, sizeof where), h, w,
                 why);
        return bad_item(o, msg, err);
    }
    if (b->B && (h != b->H || w != b->W || b->B == o->batch) && flush(b, err) != 0) return -1;
    b->H = (int)h, b->W = (int)w;
    size_t hw = (size_t)h * w, need = (size_t)o->batch * 3 * hw;
    if (need > b->xcap) {
        free(b->x);
        b->x = xmalloc_aligned(need * sizeof(float));
        b->xcap = need;
    }
    embed_pixels(b->x + (size_t)b->B * 3 * hw, mp_get(item, "pix")->v.p, hw, o->mean, o->std);
    mpw *m = &b->meta[b->B++];
    mpw_init(m, -1);
    mpw_map(m);
    stream_copy_keys(m, item, ID);
    stream_copy_keys(m, item, STREAM_META_KEYS);
    mpw_end(m);
    return 0;
}

static int run(batch *b, sr *r, uint64_t *upstream_dropped, char *err)
{
    const mp_val *item;
    int rc;
    stream_keys *keys = stream_keys_new();
    if (r->state == 0 && sr_header(r, "image") != 0) goto stream_err;
    if (r->schema != SCHEMA_IMAGE) {
        vl_error(err, "%s: header: schema is '%s', expected 'image'", r->name, r->schema_name);
        goto fail;
    }
    for (;;) {
        while ((rc = sr_next(r, &item)) == 1) {
            char msg[VL_ERRLEN];
            if (sr_check_item(r, item, msg) != 0) {
                if (bad_item(b->o, msg, err) != 0) goto fail;
                continue;
            }
            /* a repeated (id, view) could not be joined downstream: the
             * input was put together wrongly (vl2v-stream(5)) */
            if (stream_keys_add(keys, r, item, err) != 0 || add(b, r, item, err) != 0) goto fail;
        }
        if (rc < 0) goto stream_err;
        *upstream_dropped += (uint64_t)sr_trailer_dropped(r);
        int more = sr_next_stream(r, "image");
        if (more < 0) goto stream_err;
        if (!more) break;
    }
    stream_keys_free(keys);
    return flush(b, err);
stream_err:
    vl_error(err, "%s", r->err);
fail:
    stream_keys_free(keys);
    return -1;
}

int embed_stream(sr *r, const embed_opts *o, uint64_t *upstream_dropped, char *err)
{
    batch b = {.o = o, .dim = student_feature_dim(o->st)};
    b.feat = xmalloc((size_t)o->batch * b.dim * sizeof(float));
    b.meta = xcalloc((size_t)o->batch, sizeof *b.meta);
    b.keys = xcalloc((size_t)o->batch, sizeof *b.keys);
    *upstream_dropped = 0;
    int rc = run(&b, r, upstream_dropped, err);
    for (int i = 0; i < b.B; i++) mpw_free(&b.meta[i]);
    mp_arena_free(&b.arena);
    free(b.x), free(b.feat), free(b.meta), free(b.keys);
    return rc;
}
