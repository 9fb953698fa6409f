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

#include "models/student.h"
#include "train/head.h"
#include "train/optim.h"

enum train_objective { TRAIN_COSINE, TRAIN_CE };

/* What a step measured: the loss and its terms (batch means). cos_image and
 * cos_text are the means of cos(z, It) and cos(z, T[y]) (cosine objective;
 * 0 otherwise). */
typedef struct {
    double loss, cos_image, cos_text;
    double ce, kl; /* the naive KD's cross-entropy and tau^2 KL terms (ce also ERM's) */
} train_terms;

/* Buffers for batches of up to cap rows, grown on demand. */
typedef struct {
    float *out, *dout, *probs, *c1, *c2;
    int cap, wcap, ccap; /* rows, output width and classes reserved */
    /* the backbone step's: features, their gradient, KD's logits */
    float *feat, *dfeat, *tlog;
    size_t fcap, lcap;
} train_ws;
void train_ws_free(train_ws *ws);

/* One update of the head h from features F (B,Ds): it (B,D) the teacher's
 * embeddings of the same items (cosine objective; NULL when lambda is 0),
 * y (B) the labels. Returns the loss (also in *terms, if given). */
float train_head_step(head *h, optim *o, const float *F, const float *it, const int *y, int B, int objective,
                      float lambda, train_terms *terms, train_ws *ws);

/* Stage 2: the objectives of a backbone step, on the student's features F
 * (B,Ds):
 *   TRAIN_ADIP: the cosine loss above on z = F Wp^T + bp through the frozen
 *     cosine head h (its projection and text matrix);
 *   TRAIN_ERM: cross-entropy of the linear head h's logits F W^T + b, the
 *     head trained too (DomainBed's ERM);
 *   TRAIN_KD: naive knowledge distillation, CE + tau^2 KL(p_t || p_s) with
 *     p_s = softmax(s / tau) of the linear head's logits s and p_t =
 *     softmax(100 cos(It, T_c) / tau), the teacher's zero-shot logits from
 *     its embedding It and the text matrix T; the KL summed over classes,
 *     averaged over the batch, from log-probabilities;
 *   TRAIN_SD: the student is the teacher's own image tower (no projection):
 *     the cosine loss directly on F (Ds = D) against It and T. */
enum train_stage2 { TRAIN_ADIP, TRAIN_ERM, TRAIN_KD, TRAIN_SD };

typedef struct {
    int objective; /* enum train_stage2 */
    float lambda;  /* ADIP, SD: the image term's weight */
    float tau;     /* KD: the temperature */
    head *h;       /* ADIP: the frozen cosine head; ERM, KD: the linear head (trained) */
    const float *text; /* KD, SD: T (C,D), unit rows */
    int C, D;          /* KD, SD: T's size */
} train_objective;

/* The loss of a batch at the features F (B,Ds) (it (B,D): the teacher's
 * embeddings, for ADIP with lambda > 0, KD and SD; y (B) the labels), with
 * its gradient set in dF (B,Ds); for ERM and KD the linear head's gradients
 * accumulate (zero them first). Returns the loss (also in *terms). */
double train_objective_loss(const train_objective *ob, float *dF, const float *F, const float *it, const int *y, int B,
                            train_terms *terms, train_ws *ws);

/* One update of a student's backbone: the gradients of s's store and (ERM,
 * KD) of the head are zeroed, the forward saves, the objective's gradient
 * at the features goes back through the backbone, o (over
 * student_params(s)) steps, and oh (over the head's store; ERM, KD) too.
 * x (B,3,H,W) normalised. 0 with the loss in *terms, or -1 with err (the
 * forward's error). */
int train_backbone_step(student *s, optim *o, const train_objective *ob, optim *oh, const float *x, int B, int H, int W,
                        const float *it, const int *y, train_terms *terms, train_ws *ws, char *err);

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
