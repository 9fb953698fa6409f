/* train: the C side of bench/train.sh. Random weights, random inputs; runs
 * WARMUP + STEPS training steps (forward, projection to 512, cosine loss,
 * backward, Adam over backbone and head; BatchNorm frozen as the method
 * trains) or forward-only passes (student-embed's: BatchNorm folded into the
 * convolutions for the ResNets), and prints "ips N" (images/s over the
 * timed steps), "peak_mb N" (peak resident memory) and "best_step_s N" (the
 * fastest timed step: on a busy machine the least disturbed one).
 *
 *   train ARCH train|forward|forward-unfolded B SIZE STEPS
 *
 * ARCH: an architecture of lib/models/student.h but clip_vision (resnet18,
 * resnet50 and vit_b16 are bench/train.sh's).
 *
 * forward-unfolded: the forward pass with BatchNorm as its own pass (what
 * folding saves; not a case of bench/train.sh). */
#include "models/student.h"
#include "nn/linear.h"
#include "nn/loss.h"
#include "train/optim.h"
#include "param.h"
#include "rng.h"
#include "util.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

static void fill(float *p, size_t n, rng *r, float scale)
{
    for (size_t i = 0; i < n; i++) p[i] = (float)(rng_normal(r) * scale);
}

int main(int argc, char **argv)
{
    if (argc != 6) {
        fprintf(stderr, "usage: train ARCH train|forward|forward-unfolded B SIZE STEPS\n");
        return 2;
    }
    const char *arch = argv[1];
    int training = strcmp(argv[2], "train") == 0, B = atoi(argv[3]), S = atoi(argv[4]), steps = atoi(argv[5]);
    rng r;
    rng_seed(&r, 1);
    char err[VL_ERRLEN];
    student *sm = student_new(arch, 1000, err);
    if (!sm) {
        fprintf(stderr, "train: %s\n", err);
        return 2;
    }
    params *p = student_params(sm);
    int F = student_feature_dim(sm);
    for (int i = 0; i < p->n; i++) {
        const char *n = p->t[i].name;
        float *d = param_data(p, i);
        size_t k = p->t[i].numel;
        if (strstr(n, "running_var") || ((strstr(n, "bn") || strstr(n, "norm") || strstr(n, "downsample.1")) &&
                                         strstr(n, "weight")))
            for (size_t j = 0; j < k; j++) d[j] = 1.0f;
        else if (!strstr(n, "running_mean") && !strstr(n, "bias"))
            fill(d, k, &r, 0.02f);
    }
    const int D = 512, NC = 7;
    params head;
    param_init(&head);
    int64_t sw[2] = {D, F}, sb[1] = {D};
    param_add(&head, "proj.weight", 2, sw, 0);
    param_add(&head, "proj.bias", 1, sb, 0);
    param_alloc(&head);
    fill(param_data(&head, 0), (size_t)D * F, &r, 0.02f);
    /* forward-only is what student-embed runs: BatchNorm folded */
    if (!training && strcmp(argv[2], "forward-unfolded") != 0) student_fold_bn(sm);
    float *x = xmalloc_aligned((size_t)B * 3 * S * S * sizeof(float));
    fill(x, (size_t)B * 3 * S * S, &r, 1.0f);
    float *it = xmalloc((size_t)B * D * 4), *t = xmalloc((size_t)NC * D * 4);
    fill(it, (size_t)B * D, &r, 1.0f);
    fill(t, (size_t)NC * D, &r, 1.0f);
    int *y = xmalloc(B * sizeof(int));
    for (int i = 0; i < B; i++) y[i] = i % NC;
    float *feat = xmalloc((size_t)B * F * 4), *dfeat = xmalloc((size_t)B * F * 4);
    float *z = xmalloc((size_t)B * D * 4), *dz = xmalloc((size_t)B * D * 4);
    optim o1, o2;
    if (training) {
        optim_init(&o1, OPTIM_ADAM, 5e-5f, p);
        optim_init(&o2, OPTIM_ADAM, 5e-5f, &head);
    }
    double t0 = 0, ts = 0, best = INFINITY;
    for (int s = 0; s < 1 + steps; s++) {
        if (s >= 1) {
            double t = vl_now();
            if (s == 1) t0 = t;
            if (s >= 2 && t - ts < best) best = t - ts;
            ts = t;
        }
        if (training) {
            param_zero_grad(p);
            param_zero_grad(&head);
        }
        if (student_forward(sm, feat, x, B, S, S, training, err) != 0) {
            fprintf(stderr, "train: %s\n", err);
            return 1;
        }
        if (!training) continue;
        linear_forward(z, feat, param_data(&head, 0), param_data(&head, 1), B, F, D);
        cosloss_forward(NULL, NULL, z, it, t, y, B, D, 0.5f);
        memset(dz, 0, (size_t)B * D * 4);
        memset(dfeat, 0, (size_t)B * F * 4);
        cosloss_backward(dz, z, it, t, y, B, D, 0.5f, 1.0f);
        linear_backward(dfeat, param_grad(&head, 0), param_grad(&head, 1), dz, feat, param_data(&head, 0), B, F, D);
        student_backward(sm, dfeat);
        optim_step(&o1, p);
        optim_step(&o2, &head);
    }
    double t1 = vl_now(), dt = t1 - t0;
    if (t1 - ts < best) best = t1 - ts;
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    printf("ips %.3f\npeak_mb %.0f\nbest_step_s %.4f\n", B * steps / dt, ru.ru_maxrss / 1024.0, best);
    return 0;
}
