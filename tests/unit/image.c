/* Unit tests of lib/image (decoders, resize), lib/augment and lib/manifest on
 * images and files made here (JPEG and PNG written with libjpeg and libpng,
 * IDX with zlib). The pixel parity with PIL is tests/ref/image_parity. */
#include "augment.h"
#include "check.h"
#include "image.h"
#include "manifest.h"
#include "util.h"

#include <jpeglib.h>
#include <math.h>
#include <png.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zlib.h>

static char tmpdir[] = "/tmp/vl2v-image-XXXXXX";

static char *tpath(const char *name)
{
    static char buf[8][512];
    static int k;
    char *p = buf[k++ % 8];
    snprintf(p, 512, "%s/%s", tmpdir, name);
    return p;
}

/* a smooth test pattern, so JPEG round trips stay close */
static void pattern(uint8_t *p, int w, int h, int c)
{
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++)
            for (int k = 0; k < c; k++) p[((size_t)y * w + x) * c + k] = (uint8_t)((x * 3 + y * 2 + k * 60) % 256);
}

static void write_jpeg(const char *path, const uint8_t *pix, int w, int h, int c, J_COLOR_SPACE cs, int progressive)
{
    struct jpeg_compress_struct ci;
    struct jpeg_error_mgr je;
    ci.err = jpeg_std_error(&je);
    jpeg_create_compress(&ci);
    FILE *fp = fopen(path, "wb");
    jpeg_stdio_dest(&ci, fp);
    ci.image_width = w;
    ci.image_height = h;
    ci.input_components = c;
    ci.in_color_space = cs;
    jpeg_set_defaults(&ci);
    jpeg_set_quality(&ci, 95, TRUE);
    if (progressive) jpeg_simple_progression(&ci);
    jpeg_start_compress(&ci, TRUE);
    while (ci.next_scanline < ci.image_height) {
        JSAMPROW row = (JSAMPROW)pix + (size_t)ci.next_scanline * w * c;
        jpeg_write_scanlines(&ci, &row, 1);
    }
    jpeg_finish_compress(&ci);
    jpeg_destroy_compress(&ci);
    fclose(fp);
}

static void write_png(const char *path, const uint8_t *data, int w, int h, int ct, int depth, const png_color *pal,
                      int npal, const png_byte *trns, int ntrns)
{
    FILE *fp = fopen(path, "wb");
    png_structp p = png_create_write_struct(PNG_LIBPNG_VER_STRING, NULL, NULL, NULL);
    png_infop info = png_create_info_struct(p);
    png_init_io(p, fp);
    png_set_IHDR(p, info, w, h, depth, ct, PNG_INTERLACE_ADAM7, PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
    if (pal) png_set_PLTE(p, info, pal, npal);
    if (trns) png_set_tRNS(p, info, trns, ntrns, NULL);
    png_write_info(p, info);
    if (depth == 16) png_set_swap(p); /* rows hold host-order uint16 */
    int ch = ct == PNG_COLOR_TYPE_RGB ? 3 : ct == PNG_COLOR_TYPE_RGBA ? 4 : ct == PNG_COLOR_TYPE_GRAY_ALPHA ? 2 : 1;
    size_t rb = (size_t)w * ch * (depth == 16 ? 2 : 1);
    png_bytep *rows = malloc(sizeof(png_bytep) * h);
    for (int y = 0; y < h; y++) rows[y] = (png_bytep)data + rb * y;
    png_write_image(p, rows);
    png_write_end(p, NULL);
    png_destroy_write_struct(&p, &info);
    free(rows);
    fclose(fp);
}

static void write_bytes(const char *path, const void *d, size_t n)
{
    FILE *fp = fopen(path, "wb");
    fwrite(d, 1, n, fp);
    fclose(fp);
}

static double mean_abs(const uint8_t *a, const uint8_t *b, size_t n)
{
    double s = 0;
    for (size_t i = 0; i < n; i++) s += abs(a[i] - b[i]);
    return s / n;
}

static void test_jpeg(void)
{
    char err[VL_ERRLEN];
    int w = 64, h = 48;
    uint8_t rgb[64 * 48 * 3], gray[64 * 48], cmyk[64 * 48 * 4];
    pattern(rgb, w, h, 3);
    pattern(gray, w, h, 1);
    pattern(cmyk, w, h, 4);
    write_jpeg(tpath("a.jpg"), rgb, w, h, 3, JCS_RGB, 0);
    write_jpeg(tpath("p.jpg"), rgb, w, h, 3, JCS_RGB, 1);
    write_jpeg(tpath("g.jpg"), gray, w, h, 1, JCS_GRAYSCALE, 0);
    write_jpeg(tpath("c.jpg"), cmyk, w, h, 4, JCS_CMYK, 0);

    img a, p, g, c;
    CHECK(img_load(tpath("a.jpg"), &a, err) == 0 && a.w == w && a.h == h, "baseline JPEG decodes to 64x48");
    CHECK(a.pix && mean_abs(a.pix, rgb, sizeof(rgb)) < 6, "baseline JPEG pixels close to the encoded ones (%.2f)",
          a.pix ? mean_abs(a.pix, rgb, sizeof(rgb)) : -1);
    CHECK(img_load(tpath("p.jpg"), &p, err) == 0 && p.w == w && mean_abs(p.pix, a.pix, sizeof(rgb)) < 1,
          "progressive JPEG decodes like the baseline one");
    int grey_ok = img_load(tpath("g.jpg"), &g, err) == 0;
    for (int i = 0; grey_ok && i < w * h; i++)
        grey_ok = g.pix[3 * i] == g.pix[3 * i + 1] && g.pix[3 * i] == g.pix[3 * i + 2];
    CHECK(grey_ok, "greyscale JPEG: three equal channels");
    /* CMYK as written by libjpeg without Adobe inversion is read as inverted
     * (Adobe's convention, PIL's "CMYK;I"): R = K' - C'K'/255 per channel */
    int cmyk_ok = img_load(tpath("c.jpg"), &c, err) == 0 && c.w == w;
    double worst = 0;
    for (int i = 0; cmyk_ok && i < w * h; i++)
        for (int k = 0; k < 3; k++) {
            double cc = 255 - cmyk[4 * i + k], nk = cmyk[4 * i + 3];
            double want = nk - cc * nk / 255;
            double d = fabs(want - c.pix[3 * i + k]);
            if (d > worst) worst = d;
        }
    CHECK(cmyk_ok && worst < 24, "CMYK JPEG converted with PIL's cmyk2rgb (worst %.1f after JPEG loss)", worst);

    /* DCT scaling */
    img_src s;
    img half;
    CHECK(img_src_open(&s, tpath("a.jpg"), NULL, err) == 0 && s.format == IMG_JPEG && s.w == w && s.h == h,
          "probe gives format and size before decoding");
    CHECK(img_dct_denom(&s, 32, 24) == 2 && img_dct_denom(&s, 33, 24) == 1 && img_dct_denom(&s, 8, 6) == 8 &&
              img_dct_denom(&s, 16, 12) == 4 && img_dct_denom(&s, 64, 1) == 1,
          "DCT denominator: largest of 1,2,4,8 that keeps the target size");
    CHECK(img_decode(&s, 2, &half, err) == 0 && half.w == 32 && half.h == 24, "decode at 1/2 gives 32x24");
    img third;
    CHECK(img_decode(&s, 3, &third, err) != 0, "denominator 3 refused");
    img_src_free(&s);

    /* odd sizes round up, as libjpeg does */
    write_jpeg(tpath("odd.jpg"), rgb, 63, 47, 3, JCS_RGB, 0);
    img q;
    CHECK(img_src_open(&s, tpath("odd.jpg"), NULL, err) == 0 && img_decode(&s, 4, &q, err) == 0 && q.w == 16 &&
              q.h == 12,
          "63x47 at 1/4 gives 16x12");
    img_src_free(&s);

    /* broken files: an error naming the file, never an exit */
    size_t n;
    char *data = vl_read_file(tpath("a.jpg"), 1 << 20, &n, err);
    write_bytes(tpath("trunc.jpg"), data, n / 2);
    write_bytes(tpath("hdr.jpg"), data, 100);
    write_bytes(tpath("empty.jpg"), "", 0);
    write_bytes(tpath("junk.jpg"), "\xff\xd8\xff\xe0junkjunkjunk", 15);
    const char *bad[] = {"trunc.jpg", "hdr.jpg", "empty.jpg", "junk.jpg", "missing.jpg"};
    for (int i = 0; i < 5; i++) {
        img x;
        err[0] = 0;
        int rc = img_load(tpath(bad[i]), &x, err);
        CHECK(rc == -1 && strstr(err, bad[i]) && x.pix == NULL, "%s refused: %s", bad[i], err);
    }
    /* a header claiming 60000x60000 pixels is refused before any allocation */
    for (size_t i = 0; i + 9 < n; i++)
        if ((uint8_t)data[i] == 0xff && (uint8_t)data[i + 1] == 0xc0) {
            data[i + 5] = (char)0xea, data[i + 6] = 0x60, data[i + 7] = (char)0xea, data[i + 8] = 0x60;
            break;
        }
    img huge;
    CHECK(img_src_open_mem(&s, "huge.jpg", (uint8_t *)data, n, err) == 0 && s.w == 60000 &&
              img_decode(&s, 1, &huge, err) == -1 && strstr(err, "size limit"),
          "JPEG of 60000x60000 refused: %s", err);
    img_src_free(&s);
    free(data);
    data = vl_read_file(tpath("a.jpg"), 1 << 20, &n, err);
    img mem;
    CHECK(img_src_open_mem(&s, "in-memory", (uint8_t *)data, n, err) == 0 && img_decode(&s, 1, &mem, err) == 0 &&
              memcmp(mem.pix, a.pix, sizeof(rgb)) == 0,
          "decoding from memory equals decoding the file");
    img_src_free(&s);
    free(data);
    img_free(&a), img_free(&p), img_free(&g), img_free(&c), img_free(&half), img_free(&q), img_free(&mem);
}

static void test_png(void)
{
    char err[VL_ERRLEN];
    int w = 19, h = 7;
    uint8_t rgba[19 * 7 * 4], pal_idx[19 * 7], la[19 * 7 * 2];
    uint16_t g16[19 * 7];
    pattern(rgba, w, h, 4);
    pattern(la, w, h, 2);
    for (int i = 0; i < w * h; i++) {
        pal_idx[i] = (uint8_t)(i % 5);
        g16[i] = (uint16_t)(i % 2 ? i * 471 + 3 : 2 * i + 200); /* even: 200..464, about the clip */
    }
    png_color pal[5] = {{1, 2, 3}, {250, 0, 0}, {0, 250, 0}, {0, 0, 250}, {9, 99, 199}};
    png_byte trns[5] = {0, 128, 255, 7, 7};
    write_png(tpath("rgba.png"), rgba, w, h, PNG_COLOR_TYPE_RGBA, 8, NULL, 0, NULL, 0);
    write_png(tpath("pal.png"), pal_idx, w, h, PNG_COLOR_TYPE_PALETTE, 8, pal, 5, trns, 5);
    write_png(tpath("g16.png"), (uint8_t *)g16, w, h, PNG_COLOR_TYPE_GRAY, 16, NULL, 0, NULL, 0);
    write_png(tpath("la.png"), la, w, h, PNG_COLOR_TYPE_GRAY_ALPHA, 8, NULL, 0, NULL, 0);

    img a, p, g, l;
    int ok = img_load(tpath("rgba.png"), &a, err) == 0 && a.w == w && a.h == h;
    for (int i = 0; ok && i < w * h; i++) ok = memcmp(a.pix + 3 * i, rgba + 4 * i, 3) == 0;
    CHECK(ok, "RGBA PNG (interlaced): alpha dropped, colours exact");
    ok = img_load(tpath("pal.png"), &p, err) == 0;
    for (int i = 0; ok && i < w * h; i++) {
        const png_color *c = &pal[pal_idx[i]];
        ok = p.pix[3 * i] == c->red && p.pix[3 * i + 1] == c->green && p.pix[3 * i + 2] == c->blue;
    }
    CHECK(ok, "palette PNG with tRNS: palette colours, transparency ignored");
    ok = img_load(tpath("g16.png"), &g, err) == 0;
    for (int i = 0; ok && i < w * h; i++) {
        int v = g16[i] > 255 ? 255 : g16[i];
        ok = g.pix[3 * i] == v && g.pix[3 * i + 1] == v && g.pix[3 * i + 2] == v;
    }
    CHECK(ok, "16-bit grey PNG: clipped to 255 (PIL's I -> RGB), replicated");
    ok = img_load(tpath("la.png"), &l, err) == 0;
    for (int i = 0; ok && i < w * h; i++) ok = l.pix[3 * i] == la[2 * i] && l.pix[3 * i + 1] == la[2 * i];
    CHECK(ok, "grey+alpha PNG: grey replicated, alpha dropped");

    /* IHDR of 30000x30000 RGB: refused when probed */
    uint8_t bomb[45] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n', 0, 0, 0, 13, 'I', 'H', 'D', 'R',
                        0, 0, 0x75, 0x30, 0, 0, 0x75, 0x30, 8, 2, 0, 0, 0, 0, 0, 0, 0,
                        0, 0, 0, 0, 'I', 'D', 'A', 'T'};
    uint32_t crc = (uint32_t)crc32(0, bomb + 12, 17);
    bomb[29] = crc >> 24, bomb[30] = crc >> 16, bomb[31] = crc >> 8, bomb[32] = crc;
    crc = (uint32_t)crc32(0, bomb + 37, 4);
    bomb[41] = crc >> 24, bomb[42] = crc >> 16, bomb[43] = crc >> 8, bomb[44] = crc;
    img_src s;
    CHECK(img_src_open_mem(&s, "bomb.png", bomb, sizeof(bomb), err) == -1 && strstr(err, "30000x30000 is over the size limit"),
          "PNG of 30000x30000 refused: %s", err);
    size_t n;
    char *data = vl_read_file(tpath("rgba.png"), 1 << 20, &n, err);
    write_bytes(tpath("trunc.png"), data, n - 20);
    data[40] ^= 0x55; /* inside IHDR/IDAT: a CRC error */
    write_bytes(tpath("crc.png"), data, n);
    free(data);
    img x;
    CHECK(img_load(tpath("trunc.png"), &x, err) == -1 && strstr(err, "trunc.png"), "truncated PNG refused: %s", err);
    CHECK(img_load(tpath("crc.png"), &x, err) == -1 && strstr(err, "crc.png"), "PNG with a bad CRC refused: %s", err);
    img_free(&a), img_free(&p), img_free(&g), img_free(&l);
}

static void test_idx(void)
{
    char err[VL_ERRLEN];
    uint8_t hdr[16] = {0, 0, 8, 3, 0, 0, 0, 3, 0, 0, 0, 5, 0, 0, 0, 4};
    uint8_t px[3 * 5 * 4];
    for (int i = 0; i < 60; i++) px[i] = (uint8_t)(i * 4);
    gzFile f = gzopen(tpath("imgs.idx.gz"), "wb");
    gzwrite(f, hdr, 16);
    gzwrite(f, px, 60);
    gzclose(f);
    char path[600];
    snprintf(path, sizeof(path), "%s#1", tpath("imgs.idx.gz"));
    img_idx_cache cache = {0};
    img_src s;
    img a;
    int ok = img_src_open(&s, path, &cache, err) == 0 && s.format == IMG_IDX && s.w == 4 && s.h == 5 &&
             img_decode(&s, 1, &a, err) == 0;
    for (int i = 0; ok && i < 20; i++) ok = a.pix[3 * i] == px[20 + i] && a.pix[3 * i + 2] == px[20 + i];
    CHECK(ok, "IDX image #1 of a gzip file, grey replicated");
    img_src_free(&s);
    snprintf(path, sizeof(path), "%s#2", tpath("imgs.idx.gz"));
    img b;
    CHECK(img_src_open(&s, path, &cache, err) == 0 && img_decode(&s, 1, &b, err) == 0 && b.pix[0] == px[40],
          "IDX #2 through the cache");
    img_src_free(&s);
    snprintf(path, sizeof(path), "%s#3", tpath("imgs.idx.gz"));
    CHECK(img_src_open(&s, path, &cache, err) == -1 && strstr(err, "out of range"), "IDX #3 of 3 refused: %s", err);
    img c;
    snprintf(path, sizeof(path), "%s#0", tpath("imgs.idx.gz"));
    CHECK(img_load(path, &c, err) == 0 && c.pix[0] == 0 && c.w == 4, "IDX without a cache");
    img_free(&a), img_free(&b), img_free(&c);
    img_idx_cache_free(&cache);
}

static void test_resize(void)
{
    int iw = 37, ih = 29;
    uint8_t *in = malloc(iw * ih * 3);
    srand(3);
    for (int i = 0; i < iw * ih * 3; i++) in[i] = (uint8_t)rand();
    int sizes[][2] = {{37, 29}, {16, 16}, {5, 40}, {80, 61}, {1, 1}, {36, 29}, {37, 10}};
    for (int k = 0; k < 7; k++) {
        int ow = sizes[k][0], oh = sizes[k][1];
        uint8_t *a = malloc(ow * oh * 3), *b = malloc(ow * oh * 3);
        img_resize(a, ow, oh, in, iw, ih, iw * 3, NULL);
        img_resize_ref(b, ow, oh, in, iw, ih, iw * 3, NULL);
        int worst = 0;
        for (int i = 0; i < ow * oh * 3; i++) worst = abs(a[i] - b[i]) > worst ? abs(a[i] - b[i]) : worst;
        CHECK(worst <= 1, "resize 37x29 -> %dx%d: fixed point within 1 of the double reference (%d)", ow, oh, worst);
        if (k == 0) CHECK(memcmp(a, in, iw * ih * 3) == 0, "resize to the same size is a copy");
        free(a);
        free(b);
    }
    /* a constant image stays constant; a box picks a region */
    memset(in, 77, iw * ih * 3);
    uint8_t out[10 * 10 * 3];
    float box[4] = {3.5f, 2.0f, 20.25f, 28.0f};
    img_resize(out, 10, 10, in, iw, ih, iw * 3, box);
    int ok = 1;
    for (int i = 0; i < 300; i++) ok &= out[i] == 77;
    CHECK(ok, "constant image resized through a fractional box stays constant");
    float badbox[4] = {0, 0, 38, 29};
    CHECK(img_resize(out, 10, 10, in, iw, ih, iw * 3, badbox) == -1, "box outside the image refused");
    free(in);
}

static void test_augment(void)
{
    rng r1, r2, r3;
    aug_params a, b, c;
    rng_for_key(&r1, 5, "x/y.jpg", 7, 0);
    rng_for_key(&r2, 5, "x/y.jpg", 7, 0);
    rng_for_key(&r3, 5, "x/y.jpg", 7, 1);
    aug_sample(&a, &AUG_DOMAINBED, &r1, 227, 227);
    aug_sample(&b, &AUG_DOMAINBED, &r2, 227, 227);
    aug_sample(&c, &AUG_DOMAINBED, &r3, 227, 227);
    CHECK(memcmp(&a, &b, sizeof(a)) == 0, "same (seed, id, view): same parameters");
    CHECK(memcmp(&a, &c, sizeof(a)) != 0, "another view: other parameters");
    int ok = 1;
    for (int i = 0; i < 2000; i++) {
        rng r;
        aug_params p;
        rng_for_key(&r, 1, &i, sizeof(i), 0);
        int w = 50 + i % 300, h = 20 + i % 97;
        aug_sample(&p, &AUG_DOMAINBED, &r, w, h);
        ok &= p.crop_w >= 1 && p.crop_h >= 1 && p.crop_x >= 0 && p.crop_y >= 0 && p.crop_x + p.crop_w <= w &&
              p.crop_y + p.crop_h <= h;
        int seen = 0;
        for (int k = 0; k < 4; k++) seen |= 1 << p.order[k];
        ok &= seen == 15 && p.brightness >= 0.7 && p.brightness <= 1.3 && fabs(p.hue) <= 0.3;
    }
    CHECK(ok, "2000 draws: crops inside the image, orders are permutations, factors in range");
    /* a tall strip always falls back to the centre crop of ratio 3/4 */
    rng r;
    aug_params p;
    rng_for_key(&r, 1, "strip", 5, 0);
    aug_sample(&p, &AUG_DOMAINBED, &r, 10, 1000);
    CHECK(p.crop_w == 10 && p.crop_h == 13 && p.crop_y == (1000 - 13) / 2 && p.crop_x == 0,
          "10x1000: centre-crop fallback 10x13 at y %d", p.crop_y);

    uint8_t px[16 * 8 * 3], orig[16 * 8 * 3];
    pattern(orig, 16, 8, 3);
    memcpy(px, orig, sizeof(px));
    aug_brightness(px, 128, 1.0);
    aug_contrast(px, 128, 1.0);
    aug_saturation(px, 128, 1.0);
    CHECK(memcmp(px, orig, sizeof(px)) == 0, "brightness, contrast, saturation 1.0 leave the image unchanged");
    aug_hflip(px, 16, 8);
    CHECK(memcmp(px + 0, orig + 15 * 3, 3) == 0, "flip moves the last column first");
    aug_hflip(px, 16, 8);
    CHECK(memcmp(px, orig, sizeof(px)) == 0, "flip twice is the identity");
    aug_saturation(px, 128, 0.0);
    ok = 1;
    for (int i = 0; i < 128; i++) ok &= px[3 * i] == aug_luma(orig + 3 * i) && px[3 * i + 2] == px[3 * i];
    CHECK(ok, "saturation 0 is the L image");
    uint8_t grey[6] = {90, 90, 90, 200, 200, 200};
    aug_hue(grey, 2, 0.3);
    CHECK(grey[0] == 90 && grey[5] == 200, "hue leaves greys unchanged");
    aug_brightness(px, 128, 0.0);
    ok = 1;
    for (int i = 0; i < 384; i++) ok &= px[i] == 0;
    CHECK(ok, "brightness 0 is black");
}

static void test_manifest(void)
{
    char err[VL_ERRLEN];
    const char *text = "# a comment before the header\n"
                       "#\tanother\n"
                       "id\tsplit\tpath\textra\tlabel\n"
                       "a/1.jpg\tin\t/x/1.jpg\tzz\t3\n"
                       "\n"
                       "#art/1.jpg\tin\t/x/#art/1.jpg\t\t\n"
                       "b/2.jpg\t\t/x/2.jpg\t\t\n"
                       "c/3.jpg\tout\t/x/3.jpg\t\tnine\n"
                       "id\tsplit\tpath\textra\tlabel\n"
                       "\tin\t/x/4.jpg\t\t1\n"
                       "d/5.jpg\tin\t/x/5.jpg\t\t2\n";
    FILE *fp = fmemopen((void *)text, strlen(text), "r");
    mf_reader m;
    mf_open(&m, fp, "t.tsv");
    mf_row r;
    int rc = mf_next(&m, &r, err);
    CHECK(rc == 1 && strcmp(r.id, "a/1.jpg") == 0 && strcmp(r.path, "/x/1.jpg") == 0 && r.label == 3 &&
              strcmp(r.split, "in") == 0 && r.cls == NULL && r.line == 4,
          "comments before the header; header with columns in any order and extra columns");
    rc = mf_next(&m, &r, err);
    CHECK(rc == 1 && strcmp(r.id, "#art/1.jpg") == 0 && strcmp(r.path, "/x/#art/1.jpg") == 0 && r.line == 6,
          "after the header a line starting with '#' is a row (a folder named #art)");
    rc = mf_next(&m, &r, err);
    CHECK(rc == 1 && r.label == -1 && r.split == NULL && r.line == 7, "empty fields are unknown; blank lines skipped");
    rc = mf_next(&m, &r, err);
    CHECK(rc == -1 && strstr(err, "t.tsv:8") && strstr(err, "nine"), "bad label: %s", err);
    rc = mf_next(&m, &r, err);
    CHECK(rc == -1 && strstr(err, "empty id"), "repeated header skipped, then an empty id: %s", err);
    rc = mf_next(&m, &r, err);
    CHECK(rc == 1 && strcmp(r.id, "d/5.jpg") == 0, "reading goes on after bad rows");
    CHECK(mf_next(&m, &r, err) == 0, "end of the manifest");
    mf_close(&m);
    fclose(fp);

    const char *nopath = "id\tfile\n" "a\tb\n";
    fp = fmemopen((void *)nopath, strlen(nopath), "r");
    mf_open(&m, fp, "nopath.tsv");
    CHECK(mf_next(&m, &r, err) == -2 && strstr(err, "'path'"), "a header without a path column is fatal: %s", err);
    mf_close(&m);
    fclose(fp);

    const char *late = "split\tpath\tid\nin\t/a.png\ta\nsplit\tpath\tid\nout\t/b.png\tb\n";
    fp = fmemopen((void *)late, strlen(late), "r");
    mf_open(&m, fp, "late.tsv");
    rc = mf_next(&m, &r, err);
    int rc2 = mf_next(&m, &r, err);
    CHECK(rc == 1 && rc2 == 1 && strcmp(r.id, "b") == 0 && strcmp(r.split, "out") == 0 && mf_next(&m, &r, err) == 0,
          "a header with id not first; its repetition skipped");
    mf_close(&m);
    fclose(fp);

    /* a chunk cut from a manifest (parallel --pipe, no header) whose first
     * rows start with '#': rows, in order, with their lines */
    const char *hashes = "#art/1.png\t/p/1.png\n\n#art/2.png\t/p/2.png\nz\t/p/z.png\n#art/3.png\t/p/3.png\n";
    fp = fmemopen((void *)hashes, strlen(hashes), "r");
    mf_open(&m, fp, "hashes");
    const char *want[] = {"#art/1.png", "#art/2.png", "z", "#art/3.png"};
    const uint64_t lines[] = {1, 3, 4, 5};
    int ok = 1;
    for (int i = 0; i < 4; i++) {
        rc = mf_next(&m, &r, err);
        ok &= rc == 1 && strcmp(r.id, want[i]) == 0 && r.line == lines[i] && r.path[0] == '/';
    }
    CHECK(ok && mf_next(&m, &r, err) == 0, "no header: '#' lines are rows, in order, with their line numbers");
    mf_close(&m);
    fclose(fp);
    const char *only = "#art/1.png\t/p/1.png\n#art/2.png\t/p/2.png\n";
    fp = fmemopen((void *)only, strlen(only), "r");
    mf_open(&m, fp, "only");
    rc = mf_next(&m, &r, err);
    rc2 = mf_next(&m, &r, err);
    CHECK(rc == 1 && rc2 == 1 && strcmp(r.id, "#art/2.png") == 0 && r.line == 2 && mf_next(&m, &r, err) == 0,
          "a chunk of '#' rows only: rows");
    mf_close(&m);
    fclose(fp);

    const char *bare = "x\t/p/x.png\t4\tcat\tsketch\tout\n";
    fp = fmemopen((void *)bare, strlen(bare), "r");
    mf_open(&m, fp, "chunk");
    rc = mf_next(&m, &r, err);
    CHECK(rc == 1 && r.label == 4 && strcmp(r.cls, "cat") == 0 && strcmp(r.domain, "sketch") == 0 &&
              strcmp(r.split, "out") == 0,
          "a chunk without header uses the standard columns");
    mf_close(&m);
    fclose(fp);

    char *buf = NULL;
    size_t len = 0;
    FILE *out = open_memstream(&buf, &len);
    mf_write_header(out);
    mf_row w = {.id = "i", .path = "p", .label = 2, .cls = "c", .domain = "d", .split = "in"};
    mf_row u = {.id = "j", .path = "q", .label = -1};
    mf_row bad = {.id = "t\tab", .path = "q", .label = -1};
    CHECK(mf_write_row(out, &w, err) == 0 && mf_write_row(out, &u, err) == 0 && mf_write_row(out, &bad, err) == -1,
          "rows written; a tab in a field refused");
    fclose(out);
    CHECK(strcmp(buf, "id\tpath\tlabel\tclass\tdomain\tsplit\ni\tp\t2\tc\td\tin\nj\tq\t\t\t\t\n") == 0,
          "written manifest text");
    free(buf);
}

int main(void)
{
    if (!mkdtemp(tmpdir)) return 1;
    test_jpeg();
    test_png();
    test_idx();
    test_resize();
    test_augment();
    test_manifest();
    char cmd[600];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmpdir);
    if (system(cmd) != 0) return 1;
    CHECK_EXIT();
}
