/* Unit test of lib/train/swad: the state survives a save and a restore at
 * every evaluation (the rule's JSON and the weights' extras), giving the
 * same average byte for byte as an uninterrupted run. The rule itself is
 * checked against the reference in tests/ref/swad.sh. */
#include "check.h"
#include "train/swad.h"
#include "util.h"

#include <stdlib.h>
#include <string.h>

enum { NUMEL = 7, EVERY = 5 };
static const double LOSS[] = {2.0, 1.5, 1.0, 1.1, 1.2, 1.3, 1.4, 1.2, 1.1, 1.3, 1.2, 1.25};
#define NEV ((int)(sizeof LOSS / sizeof LOSS[0]))

static void x_at(float *x, int t)
{
    for (int i = 0; i < NUMEL; i++) x[i] = (float)((7 * t + 13 * i) % 101) / 101.0f - 0.5f;
}

/* Runs the script, restoring from a copy of the state after evaluation
 * `cut` (-1: never). Returns the average (malloc'd). */
static float *run(int cut, int64_t *from, int64_t *to)
{
    swad s;
    swad_init(&s, NUMEL, 3, 6, 0.3);
    float x[NUMEL];
    for (int e = 0, t = 0; e < NEV; e++) {
        for (; t <= e * EVERY; t++) x_at(x, t), swad_update(&s, x);
        swad_evaluate(&s, LOSS[e], e * EVERY);
        if (e == cut) {
            char *js = swad_state_json(&s), err[VL_ERRLEN];
            ckpt_extra a[3], b[3];
            swad_extras(&s, a);
            swad r;
            swad_init(&r, NUMEL, 3, 6, 0.3);
            int rc = swad_state_load(&r, js, err);
            swad_extras(&r, b);
            for (int k = 0; k < 3; k++) memcpy(b[k].data, a[k].data, a[k].n * sizeof(float));
            if (rc) CHECK(0, "swad: restoring the state: %s", err);
            swad_free(&s);
            s = r;
            free(js);
        }
    }
    const float *avg = swad_finish(&s);
    float *out = xmalloc(sizeof(float) * NUMEL);
    memcpy(out, avg, sizeof(float) * NUMEL);
    swad_window(&s, from, to);
    swad_free(&s);
    return out;
}

int main(void)
{
    int64_t f0, t0;
    float *want = run(-1, &f0, &t0);
    CHECK(f0 == 6 && t0 == 55, "swad: the scripted run averages steps 6..55 (got %lld..%lld)", (long long)f0,
          (long long)t0);
    int same = 1;
    for (int cut = 0; cut < NEV; cut++) {
        int64_t f, t;
        float *got = run(cut, &f, &t);
        same &= f == f0 && t == t0 && !memcmp(got, want, sizeof(float) * NUMEL);
        free(got);
    }
    CHECK(same, "swad: a state saved and restored at any evaluation gives the same average, byte for byte");
    swad s;
    swad_init(&s, 0, 3, 6, 0.3);
    char err[VL_ERRLEN], *js = swad_state_json(&s);
    swad o;
    swad_init(&o, 0, 3, 5, 0.3);
    CHECK(swad_state_load(&o, js, err) == -1 && strstr(err, "settings"), "swad: a state of other settings is refused (%s)",
          err);
    free(js);
    swad_free(&s);
    swad_free(&o);
    free(want);
    CHECK_EXIT();
}
