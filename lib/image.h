/* image: decoding of JPEG (libjpeg-turbo), PNG (libpng) and gzip IDX images
 * (MNIST / Fashion-MNIST) into 8-bit RGB, and PIL's antialiased resampling.
 *
 * Every decoder reports errors through err and returns -1; a corrupt file
 * never ends the process (libjpeg's and libpng's error exits are replaced by
 * setjmp/longjmp). Colour conversions follow PIL's Image.convert("RGB") so
 * that pixels equal those of a PIL-based loader: grey is replicated, alpha is
 * dropped (not composited), palettes are looked up, CMYK/YCCK JPEGs are taken
 * as Adobe-inverted and mapped with PIL's cmyk2rgb, 16-bit samples keep their
 * high byte except 16-bit grey, which PIL clips to 255. JPEG decoding uses libjpeg's defaults (integer slow DCT, fancy
 * upsampling), as PIL does, so full-size decodes are bit-identical to PIL's. */
#ifndef VL_IMAGE_H
#define VL_IMAGE_H

#include <stddef.h>
#include <stdint.h>

/* An RGB image, rows top to bottom, 3 bytes per pixel, no padding. */
typedef struct {
    int w, h;
    uint8_t *pix; /* h*w*3 bytes, owned; release with img_free */
} img;

void img_free(img *im);
/* Allocates im->pix for w x h (contents undefined). */
void img_alloc(img *im, int w, int h);

enum img_format { IMG_UNKNOWN, IMG_JPEG, IMG_PNG, IMG_IDX };

/* Largest accepted side, and largest accepted pixel count (PIL's
 * decompression-bomb limit), checked before any pixel is allocated. */
#define IMG_MAX_SIDE 65535
#define IMG_MAX_PIXELS ((int64_t)178956970)

/* The decompressed IDX files last used, so that the 70,000 images of
 * Fashion-MNIST cost one gunzip, not one each. Zero-initialise; release with
 * img_idx_cache_free. */
typedef struct {
    char *path;
    uint8_t *data;
    size_t len;
} img_idx_cache;
void img_idx_cache_free(img_idx_cache *c);

/* A source that has been read and probed: its format and full size are known,
 * its pixels not yet decoded. */
typedef struct {
    const char *name; /* for messages: the path as given */
    int format;       /* enum img_format */
    int w, h;         /* full-resolution size */
    uint8_t *data;    /* the file's bytes (owned), or an IDX image (not owned) */
    size_t len;
    int channels;     /* JPEG: 1 (grey), 3 (YCbCr/RGB) or 4 (CMYK/YCCK); IDX: 1 or 3 */
    int owns_data;
} img_src;

/* Reads and probes path. A path of the form FILE#N names image N (from 0) of
 * an IDX file (FILE gzip-compressed or plain); cache may be NULL. The format
 * is recognised from the content, not the name. Returns 0, or -1 with err
 * naming the path (missing file, unknown format, corrupt header, size over
 * the bounds). On success release with img_src_free. */
int img_src_open(img_src *s, const char *path, img_idx_cache *cache, char *err);
/* The same on bytes in memory (copied); name is used in messages only. */
int img_src_open_mem(img_src *s, const char *name, const uint8_t *data, size_t len, char *err);
void img_src_free(img_src *s);

/* The DCT scaling denominator for a decode whose result must keep at least
 * need_w x need_h pixels: the largest of 1, 2, 4, 8 with w >= d*need_w and
 * h >= d*need_h for JPEG sources, 1 for others. */
int img_dct_denom(const img_src *s, int need_w, int need_h);

/* Decodes s at 1/denom of its full size (denom 1, 2, 4 or 8; only JPEG
 * scales, in the DCT domain; other formats ignore denom). The result is
 * ceil(w/denom) x ceil(h/denom) RGB in *out, which the caller frees with
 * img_free. Returns 0, or -1 with err ("PATH: what"); *out is then empty. */
int img_decode(img_src *s, int denom, img *out, char *err);

/* Convenience: open, decode at full size, close. */
int img_load(const char *path, img *out, char *err);

/* PIL's ImagingResample with the bilinear (triangle) filter, support widened
 * by the downscaling factor (antialiasing), 22-bit fixed-point coefficients,
 * horizontal pass first with an 8-bit intermediate, as Image.resize(size,
 * BILINEAR, box) computes it.
 * out (oh,ow,3); in (ih,iw,3) with rows `stride` bytes apart;
 * box = {x0, y0, x1, y1}: the source region in input pixel coordinates
 * (NULL: the whole input). Returns 0, or -1 if a size is out of bounds. */
int img_resize(uint8_t *out, int ow, int oh, const uint8_t *in, int iw, int ih, size_t stride, const float *box);

/* Squash-resize of a whole image into a new w x h image (a copy when the
 * size is unchanged, as PIL does). */
void img_resize_to(img *out, const img *in, int w, int h);

/* Naive reference of img_resize: the same coefficients applied with double
 * arithmetic per output pixel, then rounded; for tests. */
void img_resize_ref(uint8_t *out, int ow, int oh, const uint8_t *in, int iw, int ih, size_t stride, const float *box);

#endif
