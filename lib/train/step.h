/* step: one training step of the method and the evaluation that selects a
 * model. The objectives, on a head's output:
 *   TRAIN_COSINE: the distillation loss of VL2V (method.md),
 *     L = -(1/B) sum_i [lambda cos(z_i, It_i) + (1 - lambda) cos(z_i, T[y_i])];
 *   TRAIN_CE: softmax cross-entropy of the head's logits (a linear head: the
 *     linear probe and ERM).
 * A step zeroes the trainable gradients, runs the head forward from the
 * features, the loss and its backward, and applies the optimiser. */
#ifndef VL_TRAIN_STEP_H
#define VL_TRAIN_STEP_H

#include "train/head.h"
#include "train/optim.h"

enum train_objective { TRAIN_COSINE, TRAIN_CE };

/* What a step measured: the loss and its terms (batch means). cos_image and
 * cos_text are the means of cos(z, It) and cos(z, T[y]) (cosine objective;
 * 0 otherwise). */
typedef struct {
    double loss, cos_image, cos_text;
} train_terms;

/* Buffers for batches of up to cap rows, grown on demand. */
typedef struct {
    float *out, *dout, *probs, *c1, *c2;
    int cap;
} train_ws;
void train_ws_free(train_ws *ws);

/* One update of the head h from features F (B,Ds): it (B,D) the teacher's
 * embeddings of the same items (cosine objective; NULL when lambda is 0),
 * y (B) the labels. Returns the loss (also in *terms, if given). */
float train_head_step(head *h, optim *o, const float *F, const float *it, const int *y, int B, int objective,
                      float lambda, train_terms *terms, train_ws *ws);

/* The evaluation of the Predict rule on N items, F (N,Ds), y (N), dom (N) in
 * [0, ndom): dom_acc (ndom) each domain's accuracy (NaN for a domain without
 * items), *acc the unweighted mean over the domains that have items (as
 * DomainBed and the release average the source domains' validation
 * accuracies), *loss the mean cross-entropy of the logits over all items. */
void train_evaluate(const head *h, const float *F, const int *y, const int *dom, int N, int ndom, double *dom_acc,
                    double *acc, double *loss);

/* Batches drawn with replacement, per_domain items from each domain's list,
 * concatenated in domain order. Each batch is a pure function of (seed,
 * step), so a resumed run draws what an uninterrupted one does. */
typedef struct {
    int ndom;
    int *n;     /* items of each domain */
    int **rows; /* each domain's rows */
} train_sampler;
/* dom (N) in [0, ndom); a domain without rows is allowed (it adds none). */
void train_sampler_init(train_sampler *s, const int *dom, int N, int ndom);
void train_sampler_free(train_sampler *s);
/* idx (ndom * per_domain at most): the batch's rows; returns their number. */
int train_sampler_batch(const train_sampler *s, uint64_t seed, int64_t step, int per_domain, int *idx);

#endif
