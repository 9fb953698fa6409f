/* head: what sits on a student's features and how the method classifies
 * from it. Two kinds:
 *   HEAD_COSINE: the projection into the teacher's space, z = F Wp^T + bp
 *     (proj.weight (D,Ds), proj.bias (D)), and the Predict rule against a
 *     fixed text matrix T (C,D) of unit rows: logits = 100 cos(z, T_c);
 *   HEAD_LINEAR: a linear classifier, logits = F W^T + b (fc.weight (C,Ds),
 *     fc.bias (C)): the linear probe and ERM.
 * The tensors live in a parameter store under those names, the names of the
 * model file (man align-fit), so the optimiser, the checkpoint and the writer
 * take them as they take a backbone's. */
#ifndef VL_TRAIN_HEAD_H
#define VL_TRAIN_HEAD_H

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

/* out (B,D): z (cosine) or the logits (linear), from F (B,Ds). */
void head_forward(const head *h, float *out, const float *F, int B);
/* logits (B,C) from head_forward's out: the Predict rule 100 cos(z, T_c)
 * (z normalised with F.normalize's 1e-12 floor), or a copy for a linear head. */
void head_logits(const head *h, float *logits, const float *out, int B);
/* The class of each row: the first largest logit. */
void head_argmax(int *pred, const float *logits, int B, int C);

/* Reads a head from a model file: its kind from the tensors present
 * (proj.* and text, or fc.*), sizes from their shapes; h is initialised
 * here. -1 with err naming the file and the tensor. */
int head_load(head *h, const st_file *f, char *err);
/* Loads only the weights (proj.* or fc.*) of f into h, whose sizes must
 * match: --init. */
int head_load_weights(head *h, const st_file *f, char *err);
/* Adds the head's tensors (and text) to a writer; pointers into h. */
void head_add_to_writer(const head *h, stw *w);

#endif
