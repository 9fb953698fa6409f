/* mobilenet: torchvision MobileNetV2 described to the convnet engine; see
 * mobilenet.h. */
#include "mobilenet.h"

#include "models/convnet.h"
#include "util.h"

#include <stdio.h>
#include <stdlib.h>

struct mobilenet {
    convnet *cn;
};

mobilenet *mobilenet_new(int nclasses)
{
    /* expansion t, output channels c, repeats n, first stride s */
    static const int CFG[7][4] = {{1, 16, 1, 1}, {6, 24, 2, 2}, {6, 32, 3, 2}, {6, 64, 4, 2},
                                  {6, 96, 3, 1}, {6, 160, 3, 2}, {6, 320, 1, 1}};
    mobilenet *m = xcalloc(1, sizeof *m);
    convnet *cn = m->cn = cn_new();
    cn_block_begin(cn, CN_PLAIN);
    cn_unit(cn, "features.0.0", "features.0.1", 3, 32, 3, 2, 1, CN_RELU6);
    cn_block_end(cn, 0);
    int inp = 32, idx = 1;
    char a[128], b[128];
    for (int g = 0; g < 7; g++)
        for (int i = 0; i < CFG[g][2]; i++, idx++) {
            int t = CFG[g][0], oup = CFG[g][1], stride = i == 0 ? CFG[g][3] : 1, hidden = inp * t, j = 0;
            cn_block_begin(cn, stride == 1 && inp == oup ? CN_ADD : CN_PLAIN);
            if (t != 1) {
                snprintf(a, sizeof a, "features.%d.conv.0.0", idx);
                snprintf(b, sizeof b, "features.%d.conv.0.1", idx);
                cn_unit(cn, a, b, inp, hidden, 1, 1, 1, CN_RELU6);
                j = 1;
            }
            snprintf(a, sizeof a, "features.%d.conv.%d.0", idx, j);
            snprintf(b, sizeof b, "features.%d.conv.%d.1", idx, j);
            cn_unit(cn, a, b, hidden, hidden, 3, stride, hidden, CN_RELU6);
            snprintf(a, sizeof a, "features.%d.conv.%d", idx, j + 1);
            snprintf(b, sizeof b, "features.%d.conv.%d", idx, j + 2);
            cn_unit(cn, a, b, hidden, oup, 1, 1, 1, CN_NONE);
            cn_block_end(cn, 0);
            inp = oup;
        }
    cn_block_begin(cn, CN_PLAIN);
    snprintf(a, sizeof a, "features.%d.0", idx);
    snprintf(b, sizeof b, "features.%d.1", idx);
    cn_unit(cn, a, b, inp, 1280, 1, 1, 1, CN_RELU6);
    cn_block_end(cn, 0);
    if (nclasses > 0) {
        int64_t fw[2] = {nclasses, 1280}, fb[1] = {nclasses};
        cn_extra(cn, "classifier.1.weight", 2, fw);
        cn_extra(cn, "classifier.1.bias", 1, fb);
    }
    cn_finish(cn);
    return m;
}

void mobilenet_free(mobilenet *m)
{
    if (!m) return;
    cn_free(m->cn);
    free(m);
}

int mobilenet_detect(const st_file *f, int *nclasses, char *err)
{
    const st_tensor *c0 = st_find(f, "features.0.0.weight"), *last = st_find(f, "features.18.0.weight");
    if (!c0 || c0->ndim != 4 || c0->shape[0] != 32 || c0->shape[1] != 3 || !last || last->ndim != 4 ||
        last->shape[0] != 1280 || last->shape[1] != 320)
        return vl_error(err, "%s: no 'features.0.0.weight' [32, 3, 3, 3] and 'features.18.0.weight' [1280, 320, 1, 1]:"
                             " not a torchvision MobileNetV2",
                        f->path);
    const st_tensor *fc = st_find(f, "classifier.1.weight");
    *nclasses = fc && fc->ndim == 2 ? (int)fc->shape[0] : 0;
    return 0;
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
