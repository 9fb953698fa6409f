/* Unit tests of lib/classifier: the cosine rule on hand-computed values, a
 * zero vector, argmax ties, the linear rule, the projection, the same bytes
 * on 1 and 4 threads, and head files: a good one read back, and shapes,
 * NaN and metadata refused with the tensor or key named. */
#include "check.h"
#include "classifier.h"
#include "par.h"
#include "st.h"
#include "util.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char *CLASSES[] = {"a", "b", "c"};

static void test_cosine(void)
{
    /* text rows (3, 2), not normalised: (1,0), (0,2), (3,0) */
    float T[6] = {1, 0, 0, 2, 3, 0}, z[6] = {1, 1, 0, 0, -2, 0}, lg[9];
    clf_head h;
    char err[VL_ERRLEN];
    CHECK(clf_from_text(&h, T, 3, 2, CLASSES, err) == 0 && h.C == 3 && h.D == 2 && !strcmp(h.classes[2], "c"),
          "clf_from_text: 3 rows of 2, the names copied");
    clf_logits(&h, lg, z, 3, 1);
    float s = (float)(100 / sqrt(2.0));
    CHECK(lg[0] == s && lg[1] == s && lg[2] == s, "cosine: (1,1) scores 100/sqrt(2) against each row (%g %g %g)",
          lg[0], lg[1], lg[2]);
    CHECK(lg[3] == 0 && lg[4] == 0 && lg[5] == 0, "cosine: a zero vector scores 0 against every row");
    CHECK(lg[6] == -100 && lg[7] == 0 && lg[8] == -100, "cosine: (-2,0) scores -100, 0, -100 (%g %g %g)", lg[6], lg[7],
          lg[8]);
    CHECK(clf_argmax(lg, 3) == 0 && clf_argmax(lg + 6, 3) == 1, "argmax: ties go to the lowest index");
    clf_free(&h);
    CHECK(clf_from_text(&h, (float[]){1, 0, 0, 0}, 2, 2, CLASSES, err) == -1 && strstr(err, "row 1 ('b') is zero"),
          "clf_from_text: a zero text row refused: %s", err);
}

/* a head file in a temporary directory */
static char dir[64];
static const char *head_file(const char *name, int kind, int nan_at, const char *classes, int rows)
{
    static char path[128];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    static float W[4 * 3], b[4], T[3 * 4];
    for (int i = 0; i < 12; i++) W[i] = (float)(i % 5) - 2, T[i] = (float)(i % 7) - 3;
    for (int i = 0; i < 4; i++) b[i] = 0.5f * i;
    if (nan_at >= 0) W[nan_at] = NAN;
    stw *w = stw_new();
    if (kind == CLF_COSINE) {
        stw_add(w, "proj.weight", ST_F32, 2, (int64_t[]){4, 3}, W);
        stw_add(w, "proj.bias", ST_F32, 1, (int64_t[]){4}, b);
        stw_add(w, "text", ST_F32, 2, (int64_t[]){rows, 4}, T);
        stw_meta(w, "vl2v.head", "cosine");
        stw_meta(w, "vl2v.teacher_space", "teacher:m");
    } else {
        stw_add(w, "fc.weight", ST_F32, 2, (int64_t[]){rows, 4}, W);
        stw_add(w, "fc.bias", ST_F32, 1, (int64_t[]){rows}, b);
        stw_meta(w, "vl2v.head", "linear");
    }
    stw_meta(w, "vl2v.classes", classes);
    stw_meta(w, "vl2v.student_space", "student:x");
    stw_meta(w, "vl2v.seed", "42");
    stw_meta(w, "vl2v.sources", "[\"p\",\"q\"]");
    char err[VL_ERRLEN];
    if (stw_write(w, path, err) != 0) abort();
    stw_free(w);
    return path;
}

static void test_files(void)
{
    char err[VL_ERRLEN];
    clf_head h;
    int rc = clf_open(&h, head_file("cos.st", CLF_COSINE, -1, "[\"a\",\"b\",\"c\"]", 3), err);
    CHECK(rc == 0 && h.kind == CLF_COSINE && h.C == 3 && h.D == 4 && h.Ds == 3 && h.has_seed && h.seed == 42 &&
              h.nsources == 2 && !strcmp(h.sources[1], "q") && !strcmp(h.teacher_space, "teacher:m") &&
              !strcmp(h.method, "") && !strcmp(h.settings, ""),
          "clf_open: a cosine head and its metadata %s", rc ? err : "");
    if (rc == 0) {
        /* the projection and the logits against a double reference */
        float x[2 * 3] = {1, -2, 0.5f, 3, 0, -1}, z[2 * 4], lg[2 * 3];
        clf_project(&h, z, x, 2);
        clf_logits(&h, lg, x, 2, 0);
        double worst = 0;
        for (int i = 0; i < 2; i++) {
            double zz[4], nz = 0;
            for (int j = 0; j < 4; j++) {
                zz[j] = h.proj_b[j];
                for (int k = 0; k < 3; k++) zz[j] += (double)x[i * 3 + k] * h.proj_w[j * 3 + k];
                nz += zz[j] * zz[j];
                if (z[i * 4 + j] != (float)zz[j]) worst = 1;
            }
            for (int c = 0; c < 3; c++) {
                double s = 0, nt = 0;
                for (int j = 0; j < 4; j++) s += zz[j] * h.text[c * 4 + j], nt += (double)h.text[c * 4 + j] * h.text[c * 4 + j];
                worst = fmax(worst, fabs(lg[i * 3 + c] - 100 * s / sqrt(nz) / sqrt(nt)));
            }
        }
        CHECK(worst < 1e-5, "cosine head: projection exact, logits within 1e-5 of the double reference (%g)", worst);
        clf_free(&h);
    }
    rc = clf_open(&h, head_file("lin.st", CLF_LINEAR, -1, "[\"a\",\"b\",\"c\"]", 3), err);
    if (rc == 0) {
        float x[4] = {1, 2, 3, 4}, lg[3];
        clf_logits(&h, lg, x, 1, 0);
        /* rows of fc.weight: (-2,-1,0,1) (2,-2,-1,0) (1,2,-2,-1), bias 0, .5, 1 */
        CHECK(lg[0] == 0 && lg[1] == -4.5f && lg[2] == -4, "linear head: F W^T + b (%g %g %g)", lg[0], lg[1], lg[2]);
        clf_free(&h);
    } else
        CHECK(0, "clf_open: a linear head: %s", err);
    rc = clf_open(&h, head_file("nan.st", CLF_COSINE, 7, "[\"a\",\"b\",\"c\"]", 3), err);
    CHECK(rc == -1 && strstr(err, "nan.st: tensor 'proj.weight': NaN at [2, 1]"), "clf_open: NaN named: %s",
          err);
    rc = clf_open(&h, head_file("rows.st", CLF_COSINE, -1, "[\"a\",\"b\",\"c\"]", 2), err);
    CHECK(rc == -1 && strstr(err, "tensor 'text' has 2 rows but metadata 'vl2v.classes' names 3 classes"),
          "clf_open: text rows and classes disagree: %s", err);
    rc = clf_open(&h, head_file("cls.st", CLF_LINEAR, -1, "[\"a\",3]", 2), err);
    CHECK(rc == -1 && strstr(err, "metadata 'vl2v.classes': not a JSON array of strings"),
          "clf_open: classes not strings: %s", err);
    rc = clf_open(&h, head_file("json.st", CLF_LINEAR, -1, "[\"a\"", 1), err);
    CHECK(rc == -1 && strstr(err, "metadata 'vl2v.classes': not JSON"), "clf_open: classes not JSON: %s", err);
}

/* many rows: the same bytes on 1 and 4 threads */
static void test_threads(void)
{
    int n = 3000, D = 64, C = 10;
    float *T = xmalloc(sizeof(float) * C * D), *z = xmalloc(sizeof(float) * n * D);
    float *a = xmalloc(sizeof(float) * n * C), *b = xmalloc(sizeof(float) * n * C);
    for (int i = 0; i < C * D; i++) T[i] = (float)((i * 37) % 101) / 50 - 1;
    for (int i = 0; i < n * D; i++) z[i] = (float)((i * 53) % 97) / 40 - 1.2f;
    clf_head h;
    char err[VL_ERRLEN], *names[10] = {"0", "1", "2", "3", "4", "5", "6", "7", "8", "9"};
    clf_from_text(&h, T, C, D, names, err);
    par_set_threads(1);
    clf_logits(&h, a, z, n, 1);
    par_set_threads(4);
    clf_logits(&h, b, z, n, 1);
    CHECK(memcmp(a, b, sizeof(float) * n * C) == 0, "clf_logits: the same bytes on 1 and 4 threads");
    clf_free(&h);
    free(T), free(z), free(a), free(b);
}

int main(void)
{
    snprintf(dir, sizeof dir, "/tmp/clf-test.XXXXXX");
    if (!mkdtemp(dir)) abort();
    test_cosine();
    test_files();
    test_threads();
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    if (system(cmd) != 0) return 1;
    CHECK_EXIT();
}
