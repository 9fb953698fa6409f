/* head: what sits on a student's features and how the method classifies
 * from it. Two kinds:
 *   HEAD_COSINE: the projection into the teacher's space, z = F Wp^T + bp
 *     (proj.weight (D,Ds), proj.bias (D)), and the Predict rule against a
 *     fixed text matrix T (C,D) of unit rows: logits = 100 cos(z, T_c);
 *   HEAD_LINEAR: a linear classifier, logits = F W^T + b (fc.weight (C,Ds),
 *     fc.bias (C)): the linear probe and ERM.
 * The tensors live in a parameter store under those names, the names of the
 * model file (man align-fit), so the optimiser, the checkpoint and the writer
 * take them as they take a backbone's. The Predict rule itself is
 * lib/classifier's (the one predict applies): the head keeps a classifier
 * view of its own tensors. */
#ifndef VL_TRAIN_HEAD_H
#define VL_TRAIN_HEAD_H

#include "classifier.h"
#include "param.h"
#include "st.h"

#include <stdint.h>

enum head_kind { HEAD_COSINE, HEAD_LINEAR };

/* the Predict rule's logit scale */
#define HEAD_LOGIT_SCALE 100.0f

typedef struct {
    int kind;
    int Ds;      /* feature size */
    int D;       /* output size: the teacher's dimension (cosine) or C (linear) */
    int C;       /* classes */
    params p;    /* proj.weight, proj.bias | fc.weight, fc.bias */
    float *text; /* (C,D) unit rows (cosine); owned */
    clf_head view; /* the classifier over these tensors (pointers into p and text) */
} head;

/* A head of the kind for Ds features and C classes; D is the teacher's
 * dimension for a cosine head (ignored for a linear one). Zero weights. */
void head_init(head *h, int kind, int Ds, int D, int C);
void head_free(head *h);
/* PyTorch's nn.Linear initialisation (weight and bias uniform in
 * [-1/sqrt(Ds), 1/sqrt(Ds)]) from a seeded generator: a pure function of
 * seed. */
void head_reset(head *h, uint64_t seed);
/* Copies T (C,D) in, each row scaled to unit length. -1 with err when a row
 * is zero or not finite (naming its index). */
int head_set_text(head *h, const float *T, char *err);

/* out (B,D): z (cosine) or the logits (linear), from F (B,Ds), in float
 * through the GEMM (the training path). */
void head_forward(const head *h, float *out, const float *F, int B);
/* logits (B,C) of the Predict rule for features F (B,Ds), as predict
 * computes them (clf_logits): the cosine head projects here through the
 * GEMM and takes the classifier's 100 cos(z, T_c); the linear head is the
 * classifier's. ws: B * D floats (cosine). */
void head_predict(const head *h, float *logits, const float *F, int B, float *ws);

/* Loads only the weights (proj.* or fc.*) of f into h, whose sizes must
 * match: --init. */
int head_load_weights(head *h, const st_file *f, char *err);
/* Adds the head's tensors (and text) to a writer; pointers into h. */
void head_add_to_writer(const head *h, stw *w);

#endif
