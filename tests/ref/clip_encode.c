/* clip_encode: runs lib/models/clip's encoders on raw arrays, for the parity
 * tests and the benchmark (teacher-embed covers images through streams; text
 * has no stream tool of this module's own).
 *
 *   clip_encode MODEL text TOKENS.i32 B T OUT.f32 [REPEAT [THREADS]]
 *   clip_encode MODEL image PIX.f32 B OUT.f32 [REPEAT [THREADS]]
 *
 * Writes the (B,D) embeddings of the last repetition to OUT and, on stdout,
 * "load SECONDS", "encode SECONDS" (the fastest repetition) and "maxrss KIB"
 * (peak resident memory). */
#include "blas.h"
#include "models/clip.h"
#include "util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

static void *read_all(const char *path, size_t want)
{
    char err[VL_ERRLEN];
    size_t len;
    char *p = vl_read_file(path, (size_t)1 << 34, &len, err);
    if (!p) fprintf(stderr, "clip_encode: %s\n", err), exit(1);
    if (len != want) fprintf(stderr, "clip_encode: %s: %zu bytes, expected %zu\n", path, len, want), exit(1);
    return p;
}

int main(int argc, char **argv)
{
    if (argc < 6) {
        fprintf(stderr, "usage: clip_encode MODEL text TOKENS.i32 B T OUT.f32 [REPEAT [THREADS]]\n"
                        "       clip_encode MODEL image PIX.f32 B OUT.f32 [REPEAT [THREADS]]\n");
        return 2;
    }
    int text = strcmp(argv[2], "text") == 0;
    int B = atoi(argv[4]), T = text ? atoi(argv[5]) : 0;
    int ai = text ? 7 : 6;
    int repeat = argc > ai ? atoi(argv[ai]) : 1;
    if (argc > ai + 1) blas_set_threads(atoi(argv[ai + 1]));
    char err[VL_ERRLEN];
    clip_model *m;
    double t0 = vl_now();
    if (clip_load(&m, argv[1], err) != 0) return fprintf(stderr, "clip_encode: %s\n", err), 1;
    printf("load %.3f\n", vl_now() - t0);
    int S = clip_image_size(m), D = clip_embed_dim(m);
    void *in = text ? read_all(argv[3], (size_t)B * T * 4) : read_all(argv[3], (size_t)B * 3 * S * S * 4);
    float *out = xmalloc((size_t)B * D * sizeof(float));
    double best = 1e30;
    for (int r = 0; r < repeat; r++) {
        t0 = vl_now();
        int rc = text ? clip_encode_text(m, in, B, T, out, err) : clip_encode_image(m, in, B, out, err);
        if (rc != 0) return fprintf(stderr, "clip_encode: %s\n", err), 1;
        double t = vl_now() - t0;
        if (t < best) best = t;
    }
    printf("encode %.4f\n", best);
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    printf("maxrss %ld\n", ru.ru_maxrss);
    FILE *f = fopen(argv[text ? 6 : 5], "wb");
    if (!f || fwrite(out, sizeof(float), (size_t)B * D, f) != (size_t)B * D || fclose(f) != 0)
        return fprintf(stderr, "clip_encode: cannot write %s\n", argv[text ? 6 : 5]), 1;
    clip_free(m);
    free(in), free(out);
    return 0;
}
