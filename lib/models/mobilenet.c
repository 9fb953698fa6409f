/* mobilenet: MobileNetV2 described to the convnet engine, under
 * torchvision's or timm's names; see mobilenet.h. */
#include "mobilenet.h"

#include "models/convnet.h"
#include "util.h"

#include <stdio.h>
#include <stdlib.h>

struct mobilenet {
    convnet *cn;
};

/* The tensor names of unit role r (STEM, PW expansion, DW depthwise, PWL
 * linear projection, HEAD) of torchvision block k (features.k), which is
 * timm's block J of stage I (blocks.I.J), in either naming. Block 1 has no
 * expansion: torchvision numbers its units from 0, and timm makes it a
 * depthwise-separable block (conv_dw/bn1, then conv_pw/bn2 projecting). */
enum { STEM, PW, DW, PWL, HEAD };

static void unit_names(char *conv, char *bn, size_t n, int names, const char *pre, int r, int k, int I, int J,
                       int expand)
{
    if (names == MOBILENET_TORCHVISION) {
        int j = expand ? r - PW : r - DW; /* the unit's position in features.k.conv */
        if (r == STEM || r == HEAD) {
            snprintf(conv, n, "%sfeatures.%d.0", pre, k);
            snprintf(bn, n, "%sfeatures.%d.1", pre, k);
        } else if (r == PWL) {
            snprintf(conv, n, "%sfeatures.%d.conv.%d", pre, k, j);
            snprintf(bn, n, "%sfeatures.%d.conv.%d", pre, k, j + 1);
        } else {
            snprintf(conv, n, "%sfeatures.%d.conv.%d.0", pre, k, j);
            snprintf(bn, n, "%sfeatures.%d.conv.%d.1", pre, k, j);
        }
        return;
    }
    static const char *const CONV[] = {"conv_stem", "conv_pw", "conv_dw", "conv_pwl", "conv_head"};
    static const char *const BN[] = {"bn1", "bn1", "bn2", "bn3", "bn2"};
    if (r == STEM || r == HEAD) {
        snprintf(conv, n, "%s%s", pre, CONV[r]);
        snprintf(bn, n, "%s%s", pre, BN[r]);
    } else if (!expand) {
        snprintf(conv, n, "%sblocks.%d.%d.%s", pre, I, J, r == DW ? "conv_dw" : "conv_pw");
        snprintf(bn, n, "%sblocks.%d.%d.%s", pre, I, J, r == DW ? "bn1" : "bn2");
    } else {
        snprintf(conv, n, "%sblocks.%d.%d.%s", pre, I, J, CONV[r]);
        snprintf(bn, n, "%sblocks.%d.%d.%s", pre, I, J, BN[r]);
    }
}

mobilenet *mobilenet_new_named(int names, const char *prefix, const mobilenet_head *head)
{
    /* expansion t, output channels c, repeats n, first stride s */
    static const int CFG[7][4] = {{1, 16, 1, 1}, {6, 24, 2, 2}, {6, 32, 3, 2}, {6, 64, 4, 2},
                                  {6, 96, 3, 1}, {6, 160, 3, 2}, {6, 320, 1, 1}};
    mobilenet *m = xcalloc(1, sizeof *m);
    convnet *cn = m->cn = cn_new();
    char a[160], b[160];
    const char *pre = prefix ? prefix : "";
    unit_names(a, b, sizeof a, names, pre, STEM, 0, 0, 0, 0);
    cn_block_begin(cn, CN_PLAIN);
    cn_unit(cn, a, b, 3, 32, 3, 2, 1, CN_RELU6);
    cn_block_end(cn, 0);
    int inp = 32, idx = 1;
    for (int g = 0; g < 7; g++)
        for (int i = 0; i < CFG[g][2]; i++, idx++) {
            int t = CFG[g][0], oup = CFG[g][1], stride = i == 0 ? CFG[g][3] : 1, hidden = inp * t;
            cn_block_begin(cn, stride == 1 && inp == oup ? CN_ADD : CN_PLAIN);
            if (t != 1) {
                unit_names(a, b, sizeof a, names, pre, PW, idx, g, i, 1);
                cn_unit(cn, a, b, inp, hidden, 1, 1, 1, CN_RELU6);
            }
            unit_names(a, b, sizeof a, names, pre, DW, idx, g, i, t != 1);
            cn_unit(cn, a, b, hidden, hidden, 3, stride, hidden, CN_RELU6);
            unit_names(a, b, sizeof a, names, pre, PWL, idx, g, i, t != 1);
            cn_unit(cn, a, b, hidden, oup, 1, 1, 1, CN_NONE);
            cn_block_end(cn, 0);
            inp = oup;
        }
    unit_names(a, b, sizeof a, names, pre, HEAD, idx, 0, 0, 0);
    cn_block_begin(cn, CN_PLAIN);
    cn_unit(cn, a, b, inp, 1280, 1, 1, 1, CN_RELU6);
    cn_block_end(cn, 0);
    if (head && head->rows > 0) {
        /* not part of the feature: registered frozen, no gradient work */
        int64_t fw[2] = {head->rows, 1280}, fb[1] = {head->rows};
        snprintf(a, sizeof a, "%s.weight", head->name);
        cn_extra(cn, a, 2, fw);
        if (head->bias) {
            snprintf(a, sizeof a, "%s.bias", head->name);
            cn_extra(cn, a, 1, fb);
        }
    }
    cn_finish(cn);
    return m;
}

mobilenet *mobilenet_new(int nclasses)
{
    mobilenet_head fc = {"classifier.1", nclasses, 1};
    return mobilenet_new_named(MOBILENET_TORCHVISION, "", &fc);
}

void mobilenet_free(mobilenet *m)
{
    if (!m) return;
    cn_free(m->cn);
    free(m);
}

int mobilenet_detect_named(const st_file *f, int names, const char *prefix, int *nclasses, char *err)
{
    char stem[160], head[160], fc[160];
    const char *pre = prefix ? prefix : "";
    int tv = names == MOBILENET_TORCHVISION;
    snprintf(stem, sizeof stem, "%s%s.weight", pre, tv ? "features.0.0" : "conv_stem");
    snprintf(head, sizeof head, "%s%s.weight", pre, tv ? "features.18.0" : "conv_head");
    snprintf(fc, sizeof fc, "%s%s.weight", pre, tv ? "classifier.1" : "classifier");
    const st_tensor *c0 = st_find(f, stem), *last = st_find(f, head);
    if (!c0 || c0->ndim != 4 || c0->shape[0] != 32 || c0->shape[1] != 3 || !last || last->ndim != 4 ||
        last->shape[0] != 1280 || last->shape[1] != 320)
        return vl_error(err, "%s: no '%s' [32, 3, 3, 3] and '%s' [1280, 320, 1, 1]: not a %s", f->path, stem, head,
                        tv ? "torchvision MobileNetV2" : "timm mobilenetv2_100");
    const st_tensor *t = st_find(f, fc);
    *nclasses = t && t->ndim == 2 ? (int)t->shape[0] : 0;
    return 0;
}

int mobilenet_detect(const st_file *f, int *nclasses, char *err)
{
    return mobilenet_detect_named(f, MOBILENET_TORCHVISION, "", nclasses, err);
}

params *mobilenet_params(mobilenet *m) { return cn_params(m->cn); }
int mobilenet_decisions(const mobilenet *m, cn_decision *d, int max) { return cn_decisions(m->cn, d, max); }
int mobilenet_feature_dim(const mobilenet *m) { return cn_feature_dim(m->cn); }
int mobilenet_load(mobilenet *m, const st_file *f, char *err) { return cn_load(m->cn, f, err); }
void mobilenet_set_bn_train(mobilenet *m, int bn_train) { cn_set_bn_train(m->cn, bn_train); }
void mobilenet_fold_bn(mobilenet *m) { cn_fold_bn(m->cn); }

int mobilenet_forward(mobilenet *m, float *feat, const float *x, int B, int H, int W, int save, char *err)
{
    return cn_forward(m->cn, feat, x, B, H, W, save, err);
}

void mobilenet_backward(mobilenet *m, const float *dfeat) { cn_backward(m->cn, dfeat); }
void mobilenet_release(mobilenet *m) { cn_release(m->cn); }
convnet *mobilenet_convnet(mobilenet *m) { return m->cn; }
