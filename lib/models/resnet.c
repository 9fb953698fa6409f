/* resnet: torchvision ResNet-18/34/50 described to the convnet engine; see
 * resnet.h. The stem (conv1, bn1, ReLU, 3x3/2 max pool) is the first block;
 * each BasicBlock / Bottleneck is a block joined by add-then-ReLU, with a
 * downsample shortcut where the stride or the width changes. */
#include "resnet.h"

#include "models/convnet.h"
#include "util.h"

#include <stdio.h>
#include <stdlib.h>

struct resnet {
    convnet *cn;
    int depth;
};

resnet *resnet_new(int depth, int nclasses)
{
    static const int L18[4] = {2, 2, 2, 2}, L34[4] = {3, 4, 6, 3};
    const int *layers = depth == 18 ? L18 : depth == 34 || depth == 50 ? L34 : NULL;
    if (!layers) return NULL;
    resnet *m = xcalloc(1, sizeof *m);
    m->depth = depth;
    convnet *cn = m->cn = cn_new();
    int bottleneck = depth == 50, exp = bottleneck ? 4 : 1;
    cn_block_begin(cn, CN_PLAIN);
    cn_unit(cn, "conv1", "bn1", 3, 64, 7, 2, 1, CN_RELU);
    cn_block_end(cn, 1);
    int inplanes = 64;
    char a[128], b[128];
    for (int l = 0; l < 4; l++) {
        int planes = 64 << l;
        for (int i = 0; i < layers[l]; i++) {
            int stride = i == 0 && l > 0 ? 2 : 1;
            cn_block_begin(cn, CN_ADD_RELU);
#define UNIT(n, cin, cout, k, s, act)                                                                              \
    snprintf(a, sizeof a, "layer%d.%d.conv%d", l + 1, i, n);                                                       \
    snprintf(b, sizeof b, "layer%d.%d.bn%d", l + 1, i, n);                                                         \
    cn_unit(cn, a, b, cin, cout, k, s, 1, act)
            if (bottleneck) {
                UNIT(1, inplanes, planes, 1, 1, CN_RELU);
                UNIT(2, planes, planes, 3, stride, CN_RELU);
                UNIT(3, planes, planes * 4, 1, 1, CN_NONE);
            } else {
                UNIT(1, inplanes, planes, 3, stride, CN_RELU);
                UNIT(2, planes, planes, 3, 1, CN_NONE);
            }
#undef UNIT
            if (stride != 1 || inplanes != planes * exp) {
                snprintf(a, sizeof a, "layer%d.%d.downsample.0", l + 1, i);
                snprintf(b, sizeof b, "layer%d.%d.downsample.1", l + 1, i);
                cn_down(cn, a, b, inplanes, planes * exp, stride);
            }
            cn_block_end(cn, 0);
            inplanes = planes * exp;
        }
    }
    if (nclasses > 0) {
        /* fc is not part of the feature: registered frozen, no gradient work */
        int64_t fw[2] = {nclasses, inplanes}, fb[1] = {nclasses};
        cn_extra(cn, "fc.weight", 2, fw);
        cn_extra(cn, "fc.bias", 1, fb);
    }
    cn_finish(cn);
    return m;
}

void resnet_free(resnet *m)
{
    if (!m) return;
    cn_free(m->cn);
    free(m);
}

int resnet_detect(const st_file *f, int *depth, int *nclasses, char *err)
{
    const st_tensor *c1 = st_find(f, "conv1.weight");
    if (!c1 || c1->ndim != 4 || c1->shape[0] != 64 || c1->shape[1] != 3 || c1->shape[2] != 7)
        return vl_error(err, "%s: no 'conv1.weight' of shape [64, 3, 7, 7]: not a torchvision ResNet", f->path);
    if (st_find(f, "layer1.0.conv3.weight"))
        *depth = 50;
    else if (st_find(f, "layer3.5.conv1.weight"))
        *depth = 34;
    else if (st_find(f, "layer4.1.conv1.weight"))
        *depth = 18;
    else
        return vl_error(err, "%s: the layers match none of ResNet-18, -34, -50", f->path);
    if (*depth == 50 && st_find(f, "layer3.6.conv1.weight"))
        return vl_error(err, "%s: tensor 'layer3.6.conv1.weight': deeper than ResNet-50 (not supported)", f->path);
    const st_tensor *fc = st_find(f, "fc.weight");
    *nclasses = fc && fc->ndim == 2 ? (int)fc->shape[0] : 0;
    return 0;
}

params *resnet_params(resnet *m) { return cn_params(m->cn); }
int resnet_decisions(const resnet *m, cn_decision *d, int max) { return cn_decisions(m->cn, d, max); }
int resnet_depth(const resnet *m) { return m->depth; }
int resnet_feature_dim(const resnet *m) { return cn_feature_dim(m->cn); }
int resnet_load(resnet *m, const st_file *f, char *err) { return cn_load(m->cn, f, err); }
void resnet_set_bn_train(resnet *m, int bn_train) { cn_set_bn_train(m->cn, bn_train); }
void resnet_fold_bn(resnet *m) { cn_fold_bn(m->cn); }

int resnet_forward(resnet *m, float *feat, const float *x, int B, int H, int W, int save, char *err)
{
    return cn_forward(m->cn, feat, x, B, H, W, save, err);
}

void resnet_backward(resnet *m, const float *dfeat) { cn_backward(m->cn, dfeat); }
size_t resnet_buffer_bytes(const resnet *m) { return cn_buffer_bytes(m->cn); }
void resnet_release(resnet *m) { cn_release(m->cn); }
convnet *resnet_convnet(resnet *m) { return m->cn; }
