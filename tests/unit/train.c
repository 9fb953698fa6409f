/* Unit tests of lib/train: the heads (PyTorch's Linear initialisation, the
 * Predict rule through the GEMM projection and the classifier against a
 * naive double computation, writing a model file and loading its weights), the training step (its gradient against finite differences of
 * the loss, for the cosine and the cross-entropy objectives), the evaluation
 * (per-domain accuracy, their unweighted mean, the cross-entropy), the
 * sampler (a pure function of seed and step, per-domain counts, with
 * replacement), the running weight average, and the checkpoint (a run
 * stopped after 3 steps and resumed from its file ends with the bytes of an
 * uninterrupted one). */
#include "check.h"
#include "nn/loss.h"
#include "rng.h"
#include "train/ckpt.h"
#include "train/head.h"
#include "train/step.h"
#include "train/wavg.h"
#include "util.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void fill(float *x, size_t n, rng *r, double scale)
{
    for (size_t i = 0; i < n; i++) x[i] = (float)(scale * rng_normal(r));
}

static void test_init(void)
{
    head h;
    head_init(&h, HEAD_COSINE, 400, 64, 7);
    head_reset(&h, 3);
    float *w = param_data(&h.p, 0), *b = param_data(&h.p, 1);
    double bound = 1 / sqrt(400.0), mx = 0, s = 0, s2 = 0;
    size_t n = h.p.t[0].numel;
    for (size_t i = 0; i < n; i++) {
        if (fabs(w[i]) > mx) mx = fabs(w[i]);
        s += w[i], s2 += (double)w[i] * w[i];
    }
    for (int i = 0; i < 64; i++)
        if (fabs(b[i]) > mx) mx = fabs(b[i]);
    double var = s2 / n - (s / n) * (s / n);
    CHECK(mx <= bound && fabs(var - bound * bound / 3) < 0.05 * bound * bound / 3 && fabs(s / n) < 0.01 * bound,
          "head: Linear default init is uniform in +-1/sqrt(fan_in) (max %.4g <= %.4g, var %.4g vs %.4g)", mx, bound,
          var, bound * bound / 3);
    head g;
    head_init(&g, HEAD_COSINE, 400, 64, 7);
    head_reset(&g, 3);
    int same = memcmp(param_data(&g.p, 0), w, n * 4) == 0;
    head_reset(&g, 4);
    CHECK(same && memcmp(param_data(&g.p, 0), w, n * 4) != 0, "head: the init is a pure function of the seed");
    head_free(&g);
    head_free(&h);
}

static void test_logits(void)
{
    rng r;
    rng_seed(&r, 1);
    int B = 9, Ds = 33, D = 16, C = 5;
    head h;
    head_init(&h, HEAD_COSINE, Ds, D, C);
    head_reset(&h, 0);
    float T[5 * 16], F[9 * 33], z[9 * 16], lg[9 * 5];
    fill(T, sizeof T / 4, &r, 2);
    fill(F, sizeof F / 4, &r, 1);
    char err[VL_ERRLEN];
    CHECK(head_set_text(&h, T, err) == 0, "head: text set");
    head_forward(&h, z, F, B);
    head_predict(&h, lg, F, B, z);
    double worst = 0;
    for (int i = 0; i < B; i++)
        for (int c = 0; c < C; c++) {
            double zz[16], nz = 0, nt = 0, dot = 0;
            for (int k = 0; k < D; k++) {
                double a = param_data(&h.p, 1)[k];
                for (int j = 0; j < Ds; j++) a += (double)F[i * Ds + j] * param_data(&h.p, 0)[k * Ds + j];
                zz[k] = a;
                nz += a * a;
                nt += (double)T[c * D + k] * T[c * D + k];
            }
            for (int k = 0; k < D; k++) dot += zz[k] * T[c * D + k];
            double ref = 100 * dot / sqrt(nz * nt);
            if (fabs(ref - lg[i * C + c]) > worst) worst = fabs(ref - lg[i * C + c]);
        }
    CHECK(worst < 1e-4, "head: the Predict rule 100 cos(F Wp^T + bp, T) equals a double computation (worst %.2g)",
          worst);
    float zero[5 * 16] = {0};
    CHECK(head_set_text(&h, zero, err) != 0 && strstr(err, "row 0"), "head: a zero text row is refused: %s", err);

    /* model file round trip */
    char path[] = "/tmp/vl2v-train-XXXXXX";
    int fd = mkstemp(path);
    close(fd);
    stw *w = stw_new();
    head_set_text(&h, T, err);
    head_add_to_writer(&h, w);
    int wrote = stw_write(w, path, err) == 0;
    stw_free(w);
    st_file f;
    head g;
    head_init(&g, HEAD_COSINE, Ds, D, C);
    int ok = wrote && st_open(&f, path, err) == 0 && head_load_weights(&g, &f, err) == 0;
    const st_tensor *tt = ok ? st_find(&f, "text") : NULL;
    CHECK(ok && tt && memcmp(param_data(&g.p, 0), param_data(&h.p, 0), (size_t)D * Ds * 4) == 0 &&
              memcmp(param_data(&g.p, 1), param_data(&h.p, 1), (size_t)D * 4) == 0 &&
              memcmp(tt->data, h.text, sizeof T) == 0,
          "head: written and loaded back (--init), the same tensors (%s)", ok ? "ok" : err);
    if (ok) st_close(&f);
    head_free(&g);
    unlink(path);
    head_free(&h);
}

/* finite differences of the loss against the step's gradient, taken before
 * the optimiser moves anything (lr 0) */
static void test_grad(int objective)
{
    rng r;
    rng_seed(&r, 7 + objective);
    int B = 6, Ds = 12, D = 8, C = 4;
    head h;
    head_init(&h, objective == TRAIN_COSINE ? HEAD_COSINE : HEAD_LINEAR, Ds, D, C);
    head_reset(&h, 5);
    float T[4 * 8], F[6 * 12], it[6 * 8];
    int y[6] = {0, 1, 2, 3, 1, 2};
    char err[VL_ERRLEN];
    fill(T, sizeof T / 4, &r, 1);
    fill(F, sizeof F / 4, &r, 1);
    fill(it, sizeof it / 4, &r, 1);
    if (objective == TRAIN_COSINE) head_set_text(&h, T, err);
    optim o;
    optim_init(&o, OPTIM_SGD, 0.0f, &h.p);
    train_ws ws = {0};
    train_terms terms;
    float lambda = 0.3f;
    train_head_step(&h, &o, F, it, y, B, objective, lambda, &terms, &ws);
    double worst = 0;
    for (int t = 0; t < 2; t++) {
        float *p = param_data(&h.p, t), *g = param_grad(&h.p, t);
        for (size_t i = 0; i < h.p.t[t].numel; i += 3) {
            float keep = p[i];
            double l[2];
            for (int s = 0; s < 2; s++) {
                p[i] = keep + (s ? -1e-2f : 1e-2f);
                float out[6 * 8], probs[6 * 4];
                head_forward(&h, out, F, B);
                l[s] = objective == TRAIN_COSINE ? cosloss_forward(NULL, NULL, out, it, h.text, y, B, D, lambda)
                                                 : crossentropy_forward(probs, out, y, B, C);
            }
            p[i] = keep;
            double fd = (l[0] - l[1]) / 2e-2, e = fabs(fd - g[i]) / (fabs(fd) + 1e-2);
            if (e > worst) worst = e;
        }
    }
    CHECK(worst < 1e-2, "step: the %s objective's head gradient equals finite differences (rel err %.2g)",
          objective == TRAIN_COSINE ? "cosine" : "cross-entropy", worst);
    if (objective == TRAIN_COSINE)
        CHECK(fabs(terms.loss + lambda * terms.cos_image + (1 - lambda) * terms.cos_text) < 1e-5,
          "step: the loss is -(lambda cos_image + (1-lambda) cos_text) (%g, %g, %g)", terms.loss, terms.cos_image,
          terms.cos_text);
    optim_free(&o);
    train_ws_free(&ws);
    head_free(&h);
}

static void test_evaluate(void)
{
    head h;
    head_init(&h, HEAD_LINEAR, 2, 0, 2);
    /* logits = F: the class is the larger feature */
    float *w = param_data(&h.p, 0);
    w[0] = 1, w[3] = 1;
    float F[5 * 2] = {1, 0, 0, 1, 1, 0, 1, 0, 0, 1};
    int y[5] = {0, 1, 1, 1, 1}, dom[5] = {0, 0, 0, 1, 1};
    double da[3], acc, loss;
    train_evaluate(&h, F, y, dom, 5, 3, da, &acc, &loss);
    double ce = (3 * log(1 + exp(-1.0)) + 2 * log(1 + exp(1.0))) / 5;
    CHECK(fabs(da[0] - 2.0 / 3) < 1e-12 && fabs(da[1] - 0.5) < 1e-12 && isnan(da[2]) &&
              fabs(acc - (2.0 / 3 + 0.5) / 2) < 1e-12 && fabs(loss - ce) < 1e-6,
          "evaluate: per-domain accuracies 2/3 and 1/2, their unweighted mean %.4f, an empty domain NaN, CE %.6f",
          acc, loss);
    head_free(&h);
}

static void test_sampler(void)
{
    int N = 50, dom[50];
    for (int i = 0; i < N; i++) dom[i] = i < 5 ? 0 : i < 20 ? 2 : 1;
    train_sampler s;
    train_sampler_init(&s, dom, N, 3);
    int a[96], b[96], c[96];
    int na = train_sampler_batch(&s, 9, 17, 32, a), nb = train_sampler_batch(&s, 9, 17, 32, b);
    train_sampler_batch(&s, 9, 18, 32, c);
    int doms_ok = 1, repeat = 0;
    for (int k = 0; k < 96; k++) doms_ok &= dom[a[k]] == k / 32;
    for (int k = 1; k < 32; k++)
        for (int j = 0; j < k; j++) repeat |= a[j] == a[k];
    CHECK(na == 96 && nb == 96 && memcmp(a, b, sizeof a) == 0 && memcmp(a, c, sizeof a) != 0 && doms_ok && repeat,
          "sampler: 32 per domain in domain order, drawn with replacement, a pure function of (seed, step)");
    train_sampler_free(&s);
}

static void test_wavg(void)
{
    wavg w;
    wavg_init(&w, 3);
    float x[3][3] = {{1, 2, 3}, {3, 2, 1}, {2, 8, -1}};
    for (int k = 0; k < 3; k++) wavg_add(&w, x[k]);
    /* torch's AveragedModel update, step by step in float */
    float ref[3];
    for (int i = 0; i < 3; i++) {
        ref[i] = x[0][i];
        ref[i] += (x[1][i] - ref[i]) / 2.0f;
        ref[i] += (x[2][i] - ref[i]) / 3.0f;
    }
    CHECK(w.n == 3 && memcmp(w.avg, ref, sizeof ref) == 0 && fabsf(w.avg[1] - 4) < 1e-6f,
          "wavg: the running mean of 3 snapshots, AveragedModel's update (%g %g %g)", w.avg[0], w.avg[1], w.avg[2]);
    wavg_reset(&w);
    wavg_add(&w, x[2]);
    CHECK(w.n == 1 && memcmp(w.avg, x[2], sizeof ref) == 0, "wavg: after a reset the first snapshot is copied");
    wavg_free(&w);
}

/* steps k0..k1-1 of a small cosine-head run */
static void run_steps(head *h, optim *o, int k0, int k1)
{
    rng r;
    float F[8 * 10], it[8 * 6];
    int y[8];
    train_ws ws = {0};
    for (int k = k0; k < k1; k++) {
        rng_seed(&r, 100 + k);
        fill(F, 80, &r, 1);
        fill(it, 48, &r, 1);
        for (int i = 0; i < 8; i++) y[i] = (int)rng_below(&r, 3);
        train_head_step(h, o, F, it, y, 8, TRAIN_COSINE, 0.5f, NULL, &ws);
    }
    train_ws_free(&ws);
}

static void test_ckpt(void)
{
    float T[3 * 6] = {1, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 1, 1, 0, 0};
    char err[VL_ERRLEN];
    head a, b;
    optim oa, ob;
    for (int k = 0; k < 2; k++) {
        head *h = k ? &b : &a;
        head_init(h, HEAD_COSINE, 10, 6, 3);
        head_reset(h, 1);
        head_set_text(h, T, err);
        optim_init(k ? &ob : &oa, OPTIM_ADAM, 1e-2f, &h->p);
    }
    run_steps(&a, &oa, 0, 5);
    run_steps(&b, &ob, 0, 3);
    float avg[4] = {1, 2, 3, 4}, avg2[4] = {0};
    char path[] = "/tmp/vl2v-ckpt-XXXXXX";
    int fd = mkstemp(path);
    close(fd);
    ckpt_part part = {&b.p, &ob};
    ckpt_extra ex = {"swad.avg", avg, 4};
    const char *keys[] = {"vl2v.step"}, *vals[] = {"3"};
    int saved = ckpt_save(path, &part, 1, &ex, 1, keys, vals, 1, err) == 0;
    /* a fresh run loads it and goes on */
    head c;
    optim oc;
    head_init(&c, HEAD_COSINE, 10, 6, 3);
    head_set_text(&c, T, err);
    optim_init(&oc, OPTIM_ADAM, 1e-2f, &c.p);
    ckpt_part pc = {&c.p, &oc};
    ckpt_extra ec = {"swad.avg", avg2, 4};
    st_file f;
    int loaded = saved && ckpt_load(path, &pc, 1, &ec, 1, &f, err) == 0;
    const char *m = loaded ? st_meta(&f, "vl2v.step") : NULL;
    char *step = m ? xstrdup(m) : NULL;
    if (loaded) st_close(&f);
    run_steps(&c, &oc, 3, 5);
    CHECK(loaded && step && strcmp(step, "3") == 0 && memcmp(avg, avg2, sizeof avg) == 0 &&
              memcmp(c.p.data, a.p.data, a.p.numel * 4) == 0 && memcmp(oc.m, oa.m, a.p.numel * 4) == 0,
          "ckpt: 3 steps, checkpoint, load into a fresh run, 2 more: the bytes of 5 uninterrupted steps (%s)",
          loaded ? "ok" : err);
    head d;
    head_init(&d, HEAD_LINEAR, 10, 0, 3);
    ckpt_part pd = {&d.p, NULL};
    CHECK(ckpt_load(path, &pd, 1, NULL, 0, &f, err) != 0 && strstr(err, "fc.weight"),
          "ckpt: a checkpoint of another model is refused, naming the tensor: %s", err);
    unlink(path);
    free(step);
    head_free(&a), head_free(&b), head_free(&c), head_free(&d);
    optim_free(&oa), optim_free(&ob), optim_free(&oc);
}

int main(void)
{
    test_init();
    test_logits();
    test_grad(TRAIN_COSINE);
    test_grad(TRAIN_CE);
    test_evaluate();
    test_sampler();
    test_wavg();
    test_ckpt();
    CHECK_EXIT();
}
