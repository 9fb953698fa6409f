/* augment: DomainBed's training augmentation on RGB images, with the
 * semantics of torchvision's transforms on PIL images:
 *   RandomResizedCrop(S, scale=(0.7, 1), ratio=(3/4, 4/3)) -> the crop is
 *     cut, then resized with PIL's antialiased bilinear filter;
 *   RandomHorizontalFlip(p=0.5);
 *   ColorJitter(0.3, 0.3, 0.3, 0.3): brightness, contrast, saturation, hue in
 *     a random order; each is PIL's ImageEnhance / HSV operation;
 *   RandomGrayscale(p=0.1): PIL "L" (ITU-R 601-2 luma), replicated to RGB.
 * The random draws come from the caller's rng (rng_for_key(seed, id, view)),
 * so a view is a pure function of (seed, id, view); the sampled parameters are
 * a plain struct so that each operation can be replayed and tested alone. */
#ifndef VL_AUGMENT_H
#define VL_AUGMENT_H

#include "image.h"
#include "rng.h"

enum { AUG_BRIGHTNESS, AUG_CONTRAST, AUG_SATURATION, AUG_HUE };

typedef struct {
    double scale_lo, scale_hi; /* crop area as a fraction of the image: 0.7, 1 */
    double ratio_lo, ratio_hi; /* crop aspect ratio w/h: 3/4, 4/3 */
    double flip_p;             /* 0.5 */
    double brightness, contrast, saturation, hue; /* 0.3 each: factors in [1-x, 1+x], hue in [-x, x] */
    double gray_p;             /* 0.1 */
} aug_config;

/* DomainBed's values. */
extern const aug_config AUG_DOMAINBED;

typedef struct {
    int crop_x, crop_y, crop_w, crop_h; /* in the full-size source */
    int flip;
    int order[4]; /* AUG_* in the order applied */
    double brightness, contrast, saturation, hue;
    int gray;
} aug_params;

/* Draws the parameters for a w x h source, as torchvision does: ten tries of
 * (area fraction, log-uniform ratio) with round-half-even sides, then the
 * centre-crop fallback; then flip, the jitter order (a uniform permutation)
 * and factors, then grayscale. */
void aug_sample(aug_params *p, const aug_config *cfg, rng *r, int w, int h);

/* The operations, in place on n pixels (3 bytes each). Factors are used as
 * PIL uses them (a float blend factor; hue shift as numpy's uint8 of
 * hue * 255). */
void aug_brightness(uint8_t *pix, size_t n, double factor);
void aug_contrast(uint8_t *pix, size_t n, double factor);
void aug_saturation(uint8_t *pix, size_t n, double factor);
void aug_hue(uint8_t *pix, size_t n, double hue);
void aug_grayscale(uint8_t *pix, size_t n);
void aug_hflip(uint8_t *pix, int w, int h);
/* PIL's L conversion of one pixel: (19595 R + 38470 G + 7471 B + 2^15) >> 16 */
static inline uint8_t aug_luma(const uint8_t *p)
{
    return (uint8_t)((p[0] * 19595 + p[1] * 38470 + p[2] * 7471 + 0x8000) >> 16);
}

/* Applies everything after the crop to an S x S image: flip, jitter in the
 * drawn order, grayscale. */
void aug_apply_color(img *im, const aug_params *p);

/* The whole augmentation of a source: decodes it (scaled in the DCT domain
 * when the crop keeps at least size x size pixels and exact is 0, see
 * img_dct_denom), crops, resizes to size x size and applies aug_apply_color.
 * Returns 0, or -1 with err. */
int aug_view(img *out, img_src *src, const aug_params *p, int size, int exact, char *err);
/* View `view` of the image id[0..idlen) as imgdecode --augment --seed seed
 * makes it: DomainBed's parameters drawn from rng_for_key(seed, id, view),
 * then aug_view. The pixels a training view is made of, wherever it is
 * made. 0, or -1 with err. */
int aug_view_keyed(img *out, img_src *src, uint64_t seed, const char *id, size_t idlen, int64_t view, int size,
                   int exact, char *err);

#endif
