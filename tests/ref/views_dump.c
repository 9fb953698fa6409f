/* views_dump: the training views distill-train makes, for
 * tests/golden/distill_train.sh: for each manifest row (id, path) and view
 * 0..K-1, aug_view_keyed's S x S x 3 bytes, appended to OUT in that order.
 * Usage: views_dump MANIFEST K SEED S OUT */
#include "augment.h"
#include "manifest.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int main(int argc, char **argv)
{
    if (argc != 6) return 2;
    FILE *f = fopen(argv[1], "r"), *out = fopen(argv[5], "wb");
    if (!f || !out) return 1;
    int K = atoi(argv[2]), S = atoi(argv[4]);
    uint64_t seed = strtoull(argv[3], NULL, 10);
    mf_reader m;
    mf_row row;
    char err[VL_ERRLEN];
    mf_open(&m, f, argv[1]);
    while (mf_next(&m, &row, err) > 0) {
        img_src src;
        if (img_src_open(&src, row.path, NULL, err)) return fprintf(stderr, "%s\n", err), 1;
        for (int v = 0; v < K; v++) {
            img pic;
            if (aug_view_keyed(&pic, &src, seed, row.id, strlen(row.id), v, S, 0, err))
                return fprintf(stderr, "%s\n", err), 1;
            fwrite(pic.pix, 1, (size_t)S * S * 3, out);
            img_free(&pic);
        }
        img_src_free(&src);
    }
    mf_close(&m);
    return fclose(out) != 0;
}
