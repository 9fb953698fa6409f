/* image_ops: drives single lib/image and lib/augment operations for the
 * parity tests (tests/ref/image_parity.py), which compile it against
 * build/libvl2v.a. Images travel as "W H\n" followed by W*H*3 RGB bytes.
 *
 *   image_ops decode PATH            decoded file to stdout (or "ERR msg")
 *   image_ops resize OW OH [X0 Y0 X1 Y1]   stdin image resized to stdout
 *   image_ops OP VALUE               brightness|contrast|saturation|hue|gray|flip
 *   image_ops sample SEED ID VIEW W H        the drawn augmentation parameters
 *   image_ops samples SEED N W H              parameters for ids "0".."N-1", view 0
 *   image_ops augment SEED ID VIEW SIZE PATH [EXACT]  a whole augmented view */
#include "augment.h"
#include "image.h"
#include "util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static img read_img(void)
{
    img im;
    int w, h;
    if (scanf("%d %d", &w, &h) != 2 || getchar() != '\n') exit(3);
    img_alloc(&im, w, h);
    if (fread(im.pix, 3, (size_t)w * h, stdin) != (size_t)w * h) exit(3);
    return im;
}

static void write_img(const img *im)
{
    printf("%d %d\n", im->w, im->h);
    fwrite(im->pix, 3, (size_t)im->w * im->h, stdout);
}

static void print_params(const aug_params *p)
{
    printf("%d %d %d %d %d %d %d %d %d %.17g %.17g %.17g %.17g %d\n", p->crop_x, p->crop_y, p->crop_w, p->crop_h,
           p->flip, p->order[0], p->order[1], p->order[2], p->order[3], p->brightness, p->contrast, p->saturation,
           p->hue, p->gray);
}

int main(int argc, char **argv)
{
    char err[VL_ERRLEN];
    if (argc < 2) return 2;
    const char *op = argv[1];
    if (strcmp(op, "decode") == 0 && argc == 3) {
        img im;
        if (img_load(argv[2], &im, err) != 0) {
            printf("ERR %s\n", err);
            return 0;
        }
        write_img(&im);
        return 0;
    }
    if (strcmp(op, "resize") == 0 && (argc == 4 || argc == 8)) {
        img in = read_img(), out;
        int ow = atoi(argv[2]), oh = atoi(argv[3]);
        float box[4];
        for (int i = 0; i < 4 && argc == 8; i++) box[i] = (float)atof(argv[4 + i]);
        img_alloc(&out, ow, oh);
        if (img_resize(out.pix, ow, oh, in.pix, in.w, in.h, (size_t)in.w * 3, argc == 8 ? box : NULL) != 0) return 4;
        write_img(&out);
        return 0;
    }
    if (strcmp(op, "sample") == 0 && argc == 7) {
        rng r;
        rng_for_key(&r, strtoull(argv[2], NULL, 0), argv[3], strlen(argv[3]), strtoull(argv[4], NULL, 0));
        aug_params p;
        aug_sample(&p, &AUG_DOMAINBED, &r, atoi(argv[5]), atoi(argv[6]));
        print_params(&p);
        return 0;
    }
    if (strcmp(op, "samples") == 0 && argc == 6) {
        int n = atoi(argv[3]);
        for (int i = 0; i < n; i++) {
            char id[32];
            snprintf(id, sizeof(id), "%d", i);
            rng r;
            rng_for_key(&r, strtoull(argv[2], NULL, 0), id, strlen(id), 0);
            aug_params p;
            aug_sample(&p, &AUG_DOMAINBED, &r, atoi(argv[4]), atoi(argv[5]));
            print_params(&p);
        }
        return 0;
    }
    if (strcmp(op, "augment") == 0 && (argc == 7 || argc == 8)) {
        img_src s;
        if (img_src_open(&s, argv[6], NULL, err) != 0) {
            printf("ERR %s\n", err);
            return 0;
        }
        rng r;
        rng_for_key(&r, strtoull(argv[2], NULL, 0), argv[3], strlen(argv[3]), strtoull(argv[4], NULL, 0));
        aug_params p;
        aug_sample(&p, &AUG_DOMAINBED, &r, s.w, s.h);
        print_params(&p);
        img out;
        if (aug_view(&out, &s, &p, atoi(argv[5]), argc == 8 && atoi(argv[7]), err) != 0) {
            printf("ERR %s\n", err);
            return 0;
        }
        write_img(&out);
        return 0;
    }
    if (argc == 3) {
        img im = read_img();
        double v = atof(argv[2]);
        size_t n = (size_t)im.w * im.h;
        if (strcmp(op, "brightness") == 0) aug_brightness(im.pix, n, v);
        else if (strcmp(op, "contrast") == 0) aug_contrast(im.pix, n, v);
        else if (strcmp(op, "saturation") == 0) aug_saturation(im.pix, n, v);
        else if (strcmp(op, "hue") == 0) aug_hue(im.pix, n, v);
        else if (strcmp(op, "gray") == 0) aug_grayscale(im.pix, n);
        else if (strcmp(op, "flip") == 0) aug_hflip(im.pix, im.w, im.h);
        else return 2;
        write_img(&im);
        return 0;
    }
    return 2;
}
