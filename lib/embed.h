/* embed: a student network over an image stream, the loop that
 * student-embed and predict --weights share. Items are checked, consecutive
 * images of one size are run as one batch, and each batch's features go to
 * the caller with the items' keys, in input order. */
#ifndef VL_EMBED_H
#define VL_EMBED_H

#include "models/student.h"
#include "stream.h"

#include <stddef.h>
#include <stdint.h>

/* dst (3, hw) from hwc bytes pix: each channel (x / 255 - mean) / std, as
 * torchvision's ToTensor and Normalize. */
void embed_pixels(float *dst, const uint8_t *pix, size_t hw, const float mean[3], const float std[3]);

typedef struct {
    student *st;
    float mean[3], std[3]; /* the input normalisation */
    int batch;             /* images a forward at most, >= 1 */
    /* each bad item's message (a failed check, an image the student does
     * not take), as stream_matrix_read's; NULL: a bad item is fatal */
    stream_bad_fn bad;
    void *bad_ctx;
    /* each batch: B maps of the items' id and STREAM_META_KEYS (valid for
     * the call) and their features feat (B, Ds). Returns 0, or -1 with err
     * to stop. */
    int (*emit)(void *ctx, const mp_val *keys, int B, const float *feat, char *err);
    void *ctx;
} embed_opts;

/* Runs o->st over every image of every stream of r, from its header (read
 * here unless the caller did; schema image) to the end of input. Returns 0 with *upstream_dropped the trailers' dropped
 * counts, or -1 with err: a bad stream, a repeated (id, view), a failed
 * forward, a bad item o->bad stops at, or an emit that failed. */
int embed_stream(sr *r, const embed_opts *o, uint64_t *upstream_dropped, char *err);

#endif
