/* image: JPEG, PNG and IDX decoding into 8-bit RGB (see image.h for the
 * colour rules). libjpeg and libpng report fatal errors by calling a handler
 * that must not return; ours longjmp back to the decode call, which frees
 * what it allocated and returns -1. */
#include "image.h"
#include "util.h"

#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jpeglib.h>
#include <jerror.h>
#include <png.h>
#include <zlib.h>

/* a file larger than this is refused before it is read */
#define IMG_MAX_FILE ((size_t)1 << 30)

void img_free(img *im)
{
    free(im->pix);
    im->pix = NULL;
    im->w = im->h = 0;
}

void img_alloc(img *im, int w, int h)
{
    im->w = w;
    im->h = h;
    im->pix = xmalloc((size_t)w * h * 3 + 1);
}

void img_idx_cache_free(img_idx_cache *c)
{
    free(c->path);
    free(c->data);
    memset(c, 0, sizeof(*c));
}

/* Reads a whole regular file; NULL with err on failure. */
static uint8_t *read_whole(const char *path, size_t *len, char *err)
{
    int fd = open(path, O_RDONLY);
    if (fd < 0) {
        vl_error(err, "%s: %s", path, strerror(errno));
        return NULL;
    }
    struct stat st;
    if (fstat(fd, &st) != 0) {
        vl_error(err, "%s: %s", path, strerror(errno));
        close(fd);
        return NULL;
    }
    if (!S_ISREG(st.st_mode)) {
        vl_error(err, "%s: %s", path, S_ISDIR(st.st_mode) ? "is a directory" : "not a regular file");
        close(fd);
        return NULL;
    }
    if ((uint64_t)st.st_size > IMG_MAX_FILE) {
        vl_error(err, "%s: larger than %zu bytes", path, IMG_MAX_FILE);
        close(fd);
        return NULL;
    }
    size_t n = (size_t)st.st_size, got = 0;
    uint8_t *buf = xmalloc(n + 1);
    while (got < n) {
        ssize_t r = read(fd, buf + got, n - got);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) {
            vl_error(err, "%s: %s", path, r < 0 ? strerror(errno) : "file shrank while being read");
            free(buf);
            close(fd);
            return NULL;
        }
        got += (size_t)r;
    }
    close(fd);
    *len = n;
    return buf;
}

/* ---- JPEG ---- */

struct jerr {
    struct jpeg_error_mgr pub;
    jmp_buf jb;
    int truncated;
    char msg[JMSG_LENGTH_MAX];
};

static void jpeg_fail(j_common_ptr c)
{
    struct jerr *e = (struct jerr *)c->err;
    (*c->err->format_message)(c, e->msg);
    longjmp(e->jb, 1);
}

/* Warnings are not printed; a premature end of data makes the decode fail,
 * as PIL refuses truncated files, instead of returning grey-filled pixels. */
static void jpeg_message(j_common_ptr c, int level)
{
    struct jerr *e = (struct jerr *)c->err;
    if (level < 0) {
        if (c->err->msg_code == JWRN_JPEG_EOF) e->truncated = 1;
        c->err->num_warnings++;
    }
}

static void jpeg_setup(struct jpeg_decompress_struct *ci, struct jerr *e)
{
    memset(e, 0, sizeof(*e));
    ci->err = jpeg_std_error(&e->pub);
    e->pub.error_exit = jpeg_fail;
    e->pub.emit_message = jpeg_message;
}

static int jpeg_probe(img_src *s, char *err)
{
    struct jpeg_decompress_struct ci;
    struct jerr e;
    jpeg_setup(&ci, &e);
    if (setjmp(e.jb)) {
        jpeg_destroy_decompress(&ci);
        return vl_error(err, "%s: corrupt JPEG: %s", s->name, e.msg);
    }
    jpeg_create_decompress(&ci);
    jpeg_mem_src(&ci, s->data, (unsigned long)s->len);
    jpeg_read_header(&ci, TRUE);
    if (e.truncated) {
        jpeg_destroy_decompress(&ci);
        return vl_error(err, "%s: truncated JPEG (the header is incomplete)", s->name);
    }
    s->w = (int)ci.image_width;
    s->h = (int)ci.image_height;
    s->channels = ci.num_components;
    int cs = ci.jpeg_color_space;
    jpeg_destroy_decompress(&ci);
    if (s->channels != 1 && s->channels != 3 && s->channels != 4)
        return vl_error(err, "%s: unsupported JPEG with %d components", s->name, s->channels);
    if (cs == JCS_UNKNOWN) return vl_error(err, "%s: unsupported JPEG colour space", s->name);
    return 0;
}

/* PIL's cmyk2rgb on Adobe-inverted samples (as PIL reads CMYK as "CMYK;I"). */
static inline uint8_t cmyk_channel(int c_inv, int k_inv)
{
    int c = 255 - c_inv, nk = k_inv; /* nk = 255 - K */
    int tmp = c * nk + 128;
    int v = nk - (((tmp >> 8) + tmp) >> 8);
    return (uint8_t)(v < 0 ? 0 : v > 255 ? 255 : v);
}

static int jpeg_decode(img_src *s, int denom, img *out, char *err)
{
    struct jpeg_decompress_struct ci;
    struct jerr e;
    uint8_t *volatile row = NULL;
    jpeg_setup(&ci, &e);
    if (setjmp(e.jb)) {
        jpeg_destroy_decompress(&ci);
        free(row);
        img_free(out);
        return vl_error(err, "%s: corrupt JPEG: %s", s->name, e.msg);
    }
    jpeg_create_decompress(&ci);
    jpeg_mem_src(&ci, s->data, (unsigned long)s->len);
    jpeg_read_header(&ci, TRUE);
    int nc = ci.num_components;
    ci.out_color_space = nc == 1 ? JCS_GRAYSCALE : nc == 3 ? JCS_RGB : JCS_CMYK;
    ci.scale_num = 1;
    ci.scale_denom = (unsigned)denom;
    jpeg_start_decompress(&ci);
    int w = (int)ci.output_width, h = (int)ci.output_height;
    img_alloc(out, w, h);
    if (nc != 3) row = xmalloc((size_t)w * 4);
    while (ci.output_scanline < ci.output_height) {
        uint8_t *dst = out->pix + (size_t)ci.output_scanline * w * 3;
        JSAMPROW rp = nc == 3 ? dst : row;
        if (jpeg_read_scanlines(&ci, &rp, 1) != 1) break;
        if (nc == 1) {
            for (int x = 0; x < w; x++) dst[3 * x] = dst[3 * x + 1] = dst[3 * x + 2] = row[x];
        } else if (nc == 4) {
            for (int x = 0; x < w; x++) {
                const uint8_t *p = row + 4 * x;
                dst[3 * x] = cmyk_channel(p[0], p[3]);
                dst[3 * x + 1] = cmyk_channel(p[1], p[3]);
                dst[3 * x + 2] = cmyk_channel(p[2], p[3]);
            }
        }
        if (e.truncated) break;
    }
    int complete = ci.output_scanline == ci.output_height && !e.truncated;
    if (complete) jpeg_finish_decompress(&ci);
    jpeg_destroy_decompress(&ci);
    free(row);
    if (!complete || e.truncated) {
        img_free(out);
        return vl_error(err, "%s: truncated JPEG (data ends before the last scanline)", s->name);
    }
    return 0;
}

/* ---- PNG ---- */

struct pngctx {
    jmp_buf jb;
    const uint8_t *data;
    size_t len, pos;
    volatile int too_large;
    char msg[200];
};

static void png_fail(png_structp p, png_const_charp msg)
{
    struct pngctx *c = png_get_error_ptr(p);
    snprintf(c->msg, sizeof(c->msg), "%s", msg);
    longjmp(c->jb, 1);
}

static void png_warn(png_structp p, png_const_charp msg) {}

static void png_read_mem(png_structp p, png_bytep out, png_size_t n)
{
    struct pngctx *c = png_get_io_ptr(p);
    if (n > c->len - c->pos) png_error(p, "truncated PNG (data ends early)");
    memcpy(out, c->data + c->pos, n);
    c->pos += n;
}

/* Reads the header, or the whole image when out is not NULL. */
static int png_run(img_src *s, img *out, char *err)
{
    struct pngctx c = {.data = s->data, .len = s->len};
    png_structp p = png_create_read_struct(PNG_LIBPNG_VER_STRING, &c, png_fail, png_warn);
    png_infop info = p ? png_create_info_struct(p) : NULL;
    uint8_t *volatile buf = NULL;
    png_bytep *volatile rows = NULL;
    if (!info) {
        png_destroy_read_struct(&p, NULL, NULL);
        return vl_error(err, "%s: out of memory for the PNG decoder", s->name);
    }
    if (setjmp(c.jb)) {
        png_destroy_read_struct(&p, &info, NULL);
        free(buf);
        free(rows);
        if (out) img_free(out);
        if (c.too_large) return vl_error(err, "%s: %dx%d is over the size limit", s->name, s->w, s->h);
        return vl_error(err, "%s: corrupt PNG: %s", s->name, c.msg);
    }
    png_set_read_fn(p, &c, png_read_mem);
    /* pixels are bounded by us, before allocation */
    png_set_user_limits(p, IMG_MAX_SIDE, IMG_MAX_SIDE);
    png_read_info(p, info);
    png_uint_32 w = png_get_image_width(p, info), h = png_get_image_height(p, info);
    s->w = (int)w;
    s->h = (int)h;
    if ((int64_t)w * h > IMG_MAX_PIXELS) {
        c.too_large = 1;
        png_error(p, "image too large");
    }
    if (!out) {
        png_destroy_read_struct(&p, &info, NULL);
        return 0;
    }
    int ct = png_get_color_type(p, info), depth = png_get_bit_depth(p, info);
    /* PIL opens 16-bit grey as 32-bit integers ("I"), which convert("RGB")
     * clips to 255; its other 16-bit modes keep the high byte */
    int grey16 = ct == PNG_COLOR_TYPE_GRAY && depth == 16;
    if (depth == 16 && !grey16) png_set_strip_16(p);
    if (ct == PNG_COLOR_TYPE_PALETTE) png_set_palette_to_rgb(p);
    if ((ct == PNG_COLOR_TYPE_GRAY || ct == PNG_COLOR_TYPE_GRAY_ALPHA) && depth < 8)
        png_set_expand_gray_1_2_4_to_8(p);
    png_set_interlace_handling(p);
    png_read_update_info(p, info);
    int ch = png_get_channels(p, info), bytes = grey16 ? 2 : 1;
    if (ch < 1 || ch > 4 || (grey16 && ch != 1) || png_get_bit_depth(p, info) != 8 * bytes)
        png_error(p, "unsupported sample layout");
    size_t rb = png_get_rowbytes(p, info);
    if (rb != (size_t)w * ch * bytes) png_error(p, "unexpected row size");
    buf = xmalloc(rb * h + 1);
    rows = xmalloc(sizeof(png_bytep) * h);
    for (png_uint_32 y = 0; y < h; y++) rows[y] = buf + rb * y;
    png_read_image(p, rows);
    png_read_end(p, NULL);
    png_destroy_read_struct(&p, &info, NULL);
    free(rows);
    img_alloc(out, (int)w, (int)h);
    size_t n = (size_t)w * h;
    uint8_t *d = out->pix;
    const uint8_t *q = buf;
    switch (ch) {
    case 1:
        if (grey16) /* big-endian samples, clipped */
            for (size_t i = 0; i < n; i++, d += 3) {
                unsigned v = (unsigned)q[2 * i] << 8 | q[2 * i + 1];
                d[0] = d[1] = d[2] = (uint8_t)(v > 255 ? 255 : v);
            }
        else
            for (size_t i = 0; i < n; i++, d += 3) d[0] = d[1] = d[2] = q[i];
        break;
    case 2: /* grey + alpha: alpha dropped, as PIL's LA -> RGB */
        for (size_t i = 0; i < n; i++, d += 3) d[0] = d[1] = d[2] = q[2 * i];
        break;
    case 3: memcpy(d, q, n * 3); break;
    case 4:
        for (size_t i = 0; i < n; i++, d += 3, q += 4) {
            d[0] = q[0];
            d[1] = q[1];
            d[2] = q[2];
        }
        break;
    }
    free(buf);
    return 0;
}

/* ---- IDX (gzip or plain) ---- */

static uint32_t be32(const uint8_t *p) { return (uint32_t)p[0] << 24 | p[1] << 16 | p[2] << 8 | p[3]; }

/* Reads an IDX file through zlib (which passes plain files through). */
static uint8_t *read_gz(const char *path, size_t *len, char *err)
{
    gzFile f = gzopen(path, "rb");
    if (!f) {
        vl_error(err, "%s: %s", path, errno ? strerror(errno) : "cannot open");
        return NULL;
    }
    gzbuffer(f, 1 << 17);
    size_t cap = 1 << 20, n = 0;
    uint8_t *buf = xmalloc(cap);
    for (;;) {
        if (n == cap) {
            if (cap >= IMG_MAX_FILE) {
                vl_error(err, "%s: decompresses to more than %zu bytes", path, IMG_MAX_FILE);
                goto fail;
            }
            cap *= 2;
            buf = xrealloc(buf, cap);
        }
        int r = gzread(f, buf + n, (unsigned)(cap - n));
        if (r < 0) {
            int e;
            const char *m = gzerror(f, &e);
            vl_error(err, "%s: %s", path, e == Z_ERRNO ? strerror(errno) : m);
            goto fail;
        }
        if (r == 0) break;
        n += (size_t)r;
    }
    if (!gzeof(f)) {
        vl_error(err, "%s: read error", path);
        goto fail;
    }
    gzclose(f);
    *len = n;
    return buf;
fail:
    gzclose(f);
    free(buf);
    return NULL;
}

/* Splits "FILE#N" when N is a decimal number; returns N or -1. */
static long long idx_index(const char *path, size_t *filelen)
{
    const char *h = strrchr(path, '#');
    if (!h || !h[1]) return -1;
    long long v = 0;
    for (const char *q = h + 1; *q; q++) {
        if (*q < '0' || *q > '9' || v > (long long)1 << 40) return -1;
        v = v * 10 + (*q - '0');
    }
    *filelen = (size_t)(h - path);
    return v;
}

static int idx_open(img_src *s, const char *path, size_t flen, long long index, img_idx_cache *cache,
                    char *err)
{
    char *file = xstrndup(path, flen);
    img_idx_cache local = {0};
    img_idx_cache *c = cache ? cache : &local;
    if (!c->path || strcmp(c->path, file) != 0) {
        img_idx_cache_free(c);
        size_t n;
        uint8_t *d = read_gz(file, &n, err);
        if (!d) {
            free(file);
            return -1;
        }
        c->path = file;
        c->data = d;
        c->len = n;
    } else {
        free(file);
    }
    int rc = -1;
    const uint8_t *d = c->data;
    if (c->len < 16 || d[0] || d[1] || d[2] != 0x08 || (d[3] != 3 && d[3] != 4)) {
        vl_error(err, "%s: not an IDX file of unsigned bytes with 3 or 4 dimensions", path);
        goto out;
    }
    int nd = d[3];
    uint64_t count = be32(d + 4), rows = be32(d + 8), cols = be32(d + 12), chans = 1;
    if (nd == 4) {
        if (c->len < 20 || (chans = be32(d + 16)) != 3) {
            vl_error(err, "%s: a 4-dimensional IDX file must have 3 channels", path);
            goto out;
        }
    }
    size_t off = 4 + 4 * (size_t)nd;
    if (rows < 1 || cols < 1 || rows > IMG_MAX_SIDE || cols > IMG_MAX_SIDE ||
        (c->len - off) / (rows * cols * chans) < count) {
        vl_error(err, "%s: IDX dimensions do not match its size", path);
        goto out;
    }
    if ((uint64_t)index >= count) {
        vl_error(err, "%s: image %lld out of range (the file holds %llu)", path, index,
                 (unsigned long long)count);
        goto out;
    }
    s->format = IMG_IDX;
    s->w = (int)cols;
    s->h = (int)rows;
    s->channels = (int)chans;
    s->data = (uint8_t *)d + off + (size_t)index * rows * cols * chans;
    s->len = rows * cols * chans;
    rc = 0;
out:
    if (!cache) {
        if (rc == 0) { /* the image must outlive the local cache */
            uint8_t *own = xmalloc(s->len);
            memcpy(own, s->data, s->len);
            s->data = own;
            s->owns_data = 1;
        }
        img_idx_cache_free(&local);
    }
    return rc;
}

/* ---- sources ---- */

static int probe(img_src *s, char *err)
{
    const uint8_t *d = s->data;
    size_t n = s->len;
    if (n >= 3 && d[0] == 0xff && d[1] == 0xd8 && d[2] == 0xff) {
        s->format = IMG_JPEG;
        return jpeg_probe(s, err);
    }
    if (n >= 8 && memcmp(d, "\x89PNG\r\n\x1a\n", 8) == 0) {
        s->format = IMG_PNG;
        return png_run(s, NULL, err);
    }
    const char *what = NULL;
    if (n == 0) what = "empty file";
    else if (n >= 6 && (memcmp(d, "GIF87a", 6) == 0 || memcmp(d, "GIF89a", 6) == 0)) what = "GIF";
    else if (n >= 2 && d[0] == 'B' && d[1] == 'M') what = "BMP";
    else if (n >= 12 && memcmp(d, "RIFF", 4) == 0 && memcmp(d + 8, "WEBP", 4) == 0) what = "WebP";
    else if (n >= 4 && (memcmp(d, "II*\0", 4) == 0 || memcmp(d, "MM\0*", 4) == 0)) what = "TIFF";
    if (what && n == 0) return vl_error(err, "%s: empty file", s->name);
    if (what) return vl_error(err, "%s: unsupported image format (%s)", s->name, what);
    return vl_error(err, "%s: unsupported image format (not JPEG, PNG or IDX)", s->name);
}

int img_src_open(img_src *s, const char *path, img_idx_cache *cache, char *err)
{
    memset(s, 0, sizeof(*s));
    s->name = path;
    size_t flen;
    long long index = idx_index(path, &flen);
    if (index >= 0 && access(path, F_OK) != 0) return idx_open(s, path, flen, index, cache, err);
    s->data = read_whole(path, &s->len, err);
    if (!s->data) return -1;
    s->owns_data = 1;
    if (probe(s, err) != 0) {
        img_src_free(s);
        return -1;
    }
    return 0;
}

int img_src_open_mem(img_src *s, const char *name, const uint8_t *data, size_t len, char *err)
{
    memset(s, 0, sizeof(*s));
    s->name = name;
    s->data = xmalloc(len + 1);
    s->owns_data = 1;
    memcpy(s->data, data, len);
    s->len = len;
    if (probe(s, err) != 0) {
        img_src_free(s);
        return -1;
    }
    return 0;
}

void img_src_free(img_src *s)
{
    if (s->owns_data) free(s->data);
    s->data = NULL;
    s->len = 0;
}

int img_dct_denom(const img_src *s, int need_w, int need_h)
{
    if (s->format != IMG_JPEG || need_w < 1 || need_h < 1) return 1;
    int d = 1;
    while (d < 8 && (int64_t)s->w >= (int64_t)2 * d * need_w && (int64_t)s->h >= (int64_t)2 * d * need_h)
        d *= 2;
    return d;
}

int img_decode(img_src *s, int denom, img *out, char *err)
{
    memset(out, 0, sizeof(*out));
    if (denom != 1 && denom != 2 && denom != 4 && denom != 8)
        return vl_error(err, "%s: bad scaling denominator %d", s->name, denom);
    if ((int64_t)s->w * s->h > IMG_MAX_PIXELS || s->w > IMG_MAX_SIDE || s->h > IMG_MAX_SIDE)
        return vl_error(err, "%s: %dx%d is over the size limit", s->name, s->w, s->h);
    switch (s->format) {
    case IMG_JPEG: return jpeg_decode(s, denom, out, err);
    case IMG_PNG: return png_run(s, out, err);
    case IMG_IDX: {
        img_alloc(out, s->w, s->h);
        size_t n = (size_t)s->w * s->h;
        if (s->channels == 3) {
            memcpy(out->pix, s->data, n * 3);
        } else {
            for (size_t i = 0; i < n; i++) out->pix[3 * i] = out->pix[3 * i + 1] = out->pix[3 * i + 2] = s->data[i];
        }
        return 0;
    }
    }
    return vl_error(err, "%s: no decoder", s->name);
}

int img_load(const char *path, img *out, char *err)
{
    img_src s;
    memset(out, 0, sizeof(*out));
    if (img_src_open(&s, path, NULL, err) != 0) return -1;
    int rc = img_decode(&s, 1, out, err);
    img_src_free(&s);
    return rc;
}
