/* Unit test of lib/train/step's stage-2 objectives (ADiP's cosine loss
 * through the frozen head, ERM, naive KD, SD): the gradient at the features
 * equals central finite differences of the loss, and a backbone step moves
 * a small student's weights and lowers the loss. */
#include "check.h"
#include "rng.h"
#include "train/step.h"
#include "util.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

enum { B = 3, DS = 6, D = 5, C = 4 };

static void fill(float *x, size_t n, rng *r, float scale)
{
    for (size_t i = 0; i < n; i++) x[i] = scale * (2.0f * (float)rng_uniform(r) - 1.0f);
}

static void fd_check(const char *name, train_objective *ob, int ds)
{
    rng r;
    rng_seed(&r, 7);
    float F[B * DS], dF[B * DS], it[B * D];
    int y[B] = {0, 3, 1};
    fill(F, (size_t)B * ds, &r, 1.0f);
    fill(it, B * D, &r, 1.0f);
    train_ws ws = {0};
    if (ob->objective == TRAIN_ERM || ob->objective == TRAIN_KD) param_zero_grad(&ob->h->p);
    train_terms t;
    train_objective_loss(ob, dF, F, it, y, B, &t, &ws);
    double worst = 0, big = 0;
    for (int k = 0; k < B * ds; k++) {
        float keep = F[k], h = 1e-2f, g[B * DS];
        F[k] = keep + h;
        double lp = train_objective_loss(ob, g, F, it, y, B, NULL, &ws);
        F[k] = keep - h;
        double lm = train_objective_loss(ob, g, F, it, y, B, NULL, &ws);
        F[k] = keep;
        double fd = (lp - lm) / (2.0 * (double)h);
        worst = fmax(worst, fabs(fd - dF[k]));
        big = fmax(big, fabs(dF[k]));
    }
    CHECK(big > 1e-3 && worst / big < 2e-3, "objective %s: the gradient at the features equals finite differences "
          "(rel err %.2g)", name, worst / big);
    if (ob->objective == TRAIN_KD)
        CHECK(fabs(t.loss - t.ce - t.kl) < 1e-9 && t.kl > 0, "objective kd: the loss is CE %.4f + tau^2 KL %.4f", t.ce,
              t.kl);
    train_ws_free(&ws);
}

int main(void)
{
    char err[VL_ERRLEN];
    rng r;
    rng_seed(&r, 3);
    float T[C * D];
    fill(T, C * D, &r, 1.0f);
    head hc, hl;
    head_init(&hc, HEAD_COSINE, DS, D, C);
    head_reset(&hc, 1);
    head_set_text(&hc, T, err);
    head_init(&hl, HEAD_LINEAR, DS, 0, C);
    head_reset(&hl, 2);
    for (int lam = 0; lam <= 2; lam++) {
        train_objective ob = {.objective = TRAIN_ADIP, .lambda = lam * 0.5f, .h = &hc};
        char name[32];
        snprintf(name, sizeof name, "adip (lambda %.1f)", lam * 0.5);
        fd_check(name, &ob, DS);
        train_objective sd = {.objective = TRAIN_SD, .lambda = lam * 0.5f, .text = hc.text, .C = C, .D = D};
        snprintf(name, sizeof name, "sd (lambda %.1f)", lam * 0.5);
        fd_check(name, &sd, D);
    }
    train_objective erm = {.objective = TRAIN_ERM, .h = &hl};
    fd_check("erm", &erm, DS);
    for (int k = 0; k < 2; k++) {
        train_objective kd = {.objective = TRAIN_KD, .tau = k ? 4.0f : 1.0f, .h = &hl, .text = hc.text, .C = C, .D = D};
        fd_check(k ? "kd (tau 4)" : "kd (tau 1)", &kd, DS);
    }

    /* a backbone step on a small MobileNetV2 at 32 px: the weights move, the loss falls */
    student *s = student_new("mobilenet_v2", 0, err);
    CHECK(s != NULL, "objective: a small student: %s", s ? "mobilenet_v2" : err);
    if (s) {
        params *p = student_params(s);
        rng_seed(&r, 5);
        fill(param_data(p, 0), p->numel, &r, 0.05f); /* every tensor, buffers too: BatchNorm stays sane below */
        for (int i = 0; i < p->n; i++)
            if (strstr(p->t[i].name, "running_var") || (strstr(p->t[i].name, ".weight") && p->t[i].ndim == 1))
                for (size_t k = 0; k < p->t[i].numel; k++) param_data(p, i)[k] = 1.0f;
        int ds = student_feature_dim(s);
        head h;
        head_init(&h, HEAD_COSINE, ds, D, C);
        head_reset(&h, 4);
        head_set_text(&h, T, err);
        enum { N = 2, S = 32 };
        float *x = xmalloc(sizeof(float) * N * 3 * S * S), it[N * D];
        int y[N] = {1, 2};
        fill(x, (size_t)N * 3 * S * S, &r, 1.0f);
        fill(it, N * D, &r, 1.0f);
        float *w0 = xmalloc(p->numel * sizeof(float));
        memcpy(w0, param_data(p, 0), p->numel * sizeof(float));
        optim o;
        optim_init(&o, OPTIM_ADAM, 1e-3f, p);
        train_objective ob = {.objective = TRAIN_ADIP, .lambda = 0.5f, .h = &h};
        train_ws ws = {0};
        train_terms t0, t;
        int ok = 1;
        for (int k = 0; k < 5 && ok; k++) ok = train_backbone_step(s, &o, &ob, NULL, x, N, S, S, it, y, k ? &t : &t0,
                                                                   &ws, err) == 0;
        CHECK(ok && memcmp(w0, param_data(p, 0), p->numel * sizeof(float)) && t.loss < t0.loss,
              "objective: five ADiP backbone steps move the weights and lower the loss (%.4f -> %.4f)", t0.loss,
              t.loss);
        train_ws_free(&ws);
        optim_free(&o);
        head_free(&h);
        free(x);
        free(w0);
        student_free(s);
    }
    head_free(&hc);
    head_free(&hl);
    CHECK_EXIT();
}
