/* student_train: the C side of the student training parity tests (compiled
 * by tests/ref/cnn_train and vit.sh against build/libvl2v.a).
 *
 *   student_train ARCH WEIGHTS BATCH OPT BN STEPS OUT [DECISIONS]
 *
 * ARCH one of student.h's architectures (or auto); WEIGHTS the student's
 * safetensors (or directory); BATCH a safetensors file with x (B,3,H,W),
 * it (B,D), t (NC,D), y (B) (float), proj.weight (D,F), proj.bias (D),
 * lambda (1); OPT adam|sgd|adamw; BN train|frozen (the convolutional
 * students). Runs STEPS steps of Z = F(x) Wp^T + bp, the cosine loss,
 * backward and the optimiser on the backbone and the head, then writes
 * every tensor (backbone, proj.*), the losses ("loss", STEPS) and the first
 * step's features ("feat0") to OUT.
 * Convolutions take the paths users get (Winograd F(4x4,3x3) where it
 * pays); with STUDENT_TRAIN_IM2COL set (non-empty) in the environment, every
 * convolution runs as im2col.
 *
 * DECISIONS (the convolutional students): every step's discrete decisions
 * (cn_decisions in convnet.h), in forward order, for the float64 reference
 * to take where its own values lie within rounding of a tie: "d.S.K" for
 * step S and site K, uint8 per element for an activation (0: at or below
 * 0, 1: passes, 2: at or above 6, ReLU6) and int32 argmax for a max pool;
 * "dkind.S.K" (1) is 1 (ReLU), 2 (ReLU6) or 0 (max pool). */
#include "models/student.h"
#include "nn/conv.h"
#include "nn/linear.h"
#include "nn/loss.h"
#include "train/optim.h"
#include "param.h"
#include "st.h"
#include "util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static float *get(const st_file *f, const char *name, int ndim, const int64_t *shape)
{
    char err[VL_ERRLEN];
    float *p = st_load_f32(f, name, ndim, shape, err);
    if (!p) {
        fprintf(stderr, "student_train: %s\n", err);
        exit(1);
    }
    return p;
}

/* adds step s's decisions to w (kept until exit) */
static void save_decisions(stw *w, const cn_decision *d, int n, int s)
{
    for (int k = 0; k < n; k++) {
        int64_t shape[4] = {d[k].B, d[k].C, d[k].H, d[k].W}, one[1] = {1};
        size_t numel = (size_t)d[k].B * d[k].C * d[k].H * d[k].W;
        char name[64];
        float *kind = xmalloc(sizeof(float));
        *kind = d[k].act == CN_RELU ? 1 : d[k].act == CN_RELU6 ? 2 : 0;
        snprintf(name, sizeof name, "dkind.%d.%d", s, k);
        stw_add(w, xstrdup(name), ST_F32, 1, one, kind);
        snprintf(name, sizeof name, "d.%d.%d", s, k);
        if (d[k].idx) {
            int *c = xmalloc(numel * sizeof(int));
            memcpy(c, d[k].idx, numel * sizeof(int));
            stw_add(w, xstrdup(name), ST_I32, 4, shape, c);
        } else {
            unsigned char *c = xmalloc(numel);
            for (size_t i = 0; i < numel; i++) {
                float y = d[k].y[i];
                c[i] = y <= 0 ? 0 : d[k].act == CN_RELU6 && y >= 6 ? 2 : 1;
            }
            stw_add(w, xstrdup(name), ST_U8, 4, shape, c);
        }
    }
}

int main(int argc, char **argv)
{
    if (argc != 8 && argc != 9) {
        fprintf(stderr, "usage: student_train ARCH WEIGHTS BATCH OPT BN STEPS OUT [DECISIONS]\n");
        return 2;
    }
    const char *arch = argv[1], *opt = argv[4];
    int bn_train = strcmp(argv[5], "train") == 0, steps = atoi(argv[6]);
    char err[VL_ERRLEN];
    st_file bf;
    const char *im2col = getenv("STUDENT_TRAIN_IM2COL");
    if (im2col && *im2col) conv_set_winograd(0);
    if (st_open(&bf, argv[3], err) != 0) {
        fprintf(stderr, "student_train: %s\n", err);
        return 1;
    }
    student *sm;
    if (student_open(&sm, arch, argv[2], err) != 0) goto fail;
    student_set_bn_train(sm, bn_train);
    params *p = student_params(sm);
    int F = student_feature_dim(sm);
    const st_tensor *xt = st_find(&bf, "x"), *tt = st_find(&bf, "t"), *wt = st_find(&bf, "proj.weight");
    if (!xt || !tt || !wt) {
        fprintf(stderr, "student_train: batch file lacks x, t or proj.weight\n");
        return 1;
    }
    int B = (int)xt->shape[0], H = (int)xt->shape[2], W = (int)xt->shape[3];
    int D = (int)wt->shape[0], NC = (int)tt->shape[0];
    int64_t sx[4] = {B, 3, H, W}, sit[2] = {B, D}, st_[2] = {NC, D}, sy[1] = {B}, sw[2] = {D, F}, sb[1] = {D},
            s1[1] = {1};
    float *x = get(&bf, "x", 4, sx), *it = get(&bf, "it", 2, sit), *t = get(&bf, "t", 2, st_);
    float *yf = get(&bf, "y", 1, sy), *lam = get(&bf, "lambda", 1, s1);
    int *y = xmalloc(B * sizeof(int));
    for (int i = 0; i < B; i++) y[i] = (int)yf[i];

    params head;
    param_init(&head);
    param_add(&head, "proj.weight", 2, sw, 0);
    param_add(&head, "proj.bias", 1, sb, 0);
    param_alloc(&head);
    float *wp0 = get(&bf, "proj.weight", 2, sw), *bp0 = get(&bf, "proj.bias", 1, sb);
    memcpy(param_data(&head, 0), wp0, (size_t)D * F * sizeof(float));
    memcpy(param_data(&head, 1), bp0, (size_t)D * sizeof(float));

    int kind = strcmp(opt, "sgd") == 0 ? OPTIM_SGD : strcmp(opt, "adamw") == 0 ? OPTIM_ADAMW : OPTIM_ADAM;
    float lr = kind == OPTIM_SGD ? 0.01f : 1e-3f;
    optim o1, o2;
    optim_init(&o1, kind, lr, p);
    optim_init(&o2, kind, lr, &head);
    if (kind == OPTIM_SGD) o1.momentum = o2.momentum = 0.9f;
    if (st_find(&bf, "adam_eps")) {
        float *e = get(&bf, "adam_eps", 1, s1);
        o1.eps = o2.eps = e[0];
    }
    if (st_find(&bf, "lr")) o1.lr = o2.lr = get(&bf, "lr", 1, s1)[0];

    stw *w = stw_new(), *dw = argc == 9 ? stw_new() : NULL;
    cn_decision dec[256];
    float *feat = xmalloc((size_t)B * F * sizeof(float)), *dfeat = xmalloc((size_t)B * F * sizeof(float));
    float *z = xmalloc((size_t)B * D * sizeof(float)), *dz = xmalloc((size_t)B * D * sizeof(float));
    float *feat0 = xmalloc((size_t)B * F * sizeof(float)), *losses = xmalloc(steps * sizeof(float));
    for (int s = 0; s < steps; s++) {
        param_zero_grad(p);
        param_zero_grad(&head);
        if (student_forward(sm, feat, x, B, H, W, 1, err) != 0) goto fail;
        if (s == 0) memcpy(feat0, feat, (size_t)B * F * sizeof(float));
        if (dw) {
            int nd = student_decisions(sm, dec, 256);
            if (nd < 0 || nd > 256) {
                fprintf(stderr, "student_train: %d decision sites\n", nd);
                return 1;
            }
            save_decisions(dw, dec, nd, s);
        }
        linear_forward(z, feat, param_data(&head, 0), param_data(&head, 1), B, F, D);
        losses[s] = cosloss_forward(NULL, NULL, z, it, t, y, B, D, lam[0]);
        memset(dz, 0, (size_t)B * D * sizeof(float));
        memset(dfeat, 0, (size_t)B * F * sizeof(float));
        cosloss_backward(dz, z, it, t, y, B, D, lam[0], 1.0f);
        linear_backward(dfeat, param_grad(&head, 0), param_grad(&head, 1), dz, feat, param_data(&head, 0), B, F, D);
        student_backward(sm, dfeat);
        optim_step(&o1, p);
        optim_step(&o2, &head);
    }
    param_add_to_writer(p, w);
    param_add_to_writer(&head, w);
    int64_t sl[1] = {steps}, sf[2] = {B, F};
    stw_add(w, "loss", ST_F32, 1, sl, losses);
    stw_add(w, "feat0", ST_F32, 2, sf, feat0);
    if (stw_write(w, argv[7], err) != 0) goto fail;
    stw_free(w);
    if (dw) {
        if (stw_write(dw, argv[8], err) != 0) goto fail;
        stw_free(dw);
    }
    return 0;
fail:
    fprintf(stderr, "student_train: %s\n", err);
    return 1;
}
