/* classifier: the head file (safetensors) that align-fit writes and predict
 * reads, and the two rules that turn features into class scores.
 *
 * Cosine head (ADiP stage 1): proj.weight [D, Ds], proj.bias [D] map a
 * student feature F to z = F Wp^T + bp in the teacher's space, and the
 * logits are 100 cos(z, text row c) over the C rows of text [C, D]. Linear
 * head (a linear probe): fc.weight [C, Ds], fc.bias [C], logits F W^T + b.
 * The metadata (vl2v.head, vl2v.classes, vl2v.student_space,
 * vl2v.teacher_space, vl2v.method, vl2v.seed, vl2v.sources, vl2v.settings)
 * says which and how the head was made.
 *
 * Every product is summed in double and rounded to float once, so a logit is
 * the exact rule's value to float precision whatever the sizes, and the same
 * bytes on any thread count. */
#ifndef VL_CLASSIFIER_H
#define VL_CLASSIFIER_H

#include <stdint.h>

enum { CLF_COSINE, CLF_LINEAR };

typedef struct {
    int kind;              /* CLF_COSINE or CLF_LINEAR */
    int C, D, Ds;          /* classes; the projection's output (cosine; 0 linear); the feature size */
    float *proj_w, *proj_b; /* cosine: [D, Ds], [D] */
    float *text;           /* cosine: [C, D] */
    double *text_norm;     /* cosine: the text rows' L2 norms, [C] */
    float *fc_w, *fc_b;    /* linear: [C, Ds], [C] */
    char **classes;        /* C names */
    char *student_space;   /* the features' space */
    char *teacher_space;   /* cosine: the space of z and of the text rows' teacher; NULL linear */
    char *method, *settings; /* "" when absent */
    int has_seed;
    int64_t seed;
    char **sources;        /* nsources names */
    int nsources;
} clf_head;

/* Reads and checks a head file: the tensors of its kind with consistent
 * shapes, all finite, and the metadata above. Returns 0, or -1 with err
 * naming the file and the tensor or key ("PATH: tensor 'text': ..."). */
int clf_open(clf_head *h, const char *path, char *err);
void clf_free(clf_head *h);

/* A cosine rule over text rows not read from a head file (zero-shot: a text
 * stream's matrix): text [C, D] (copied) and the class names (copied). The
 * rows need not be normalised. Returns 0, or -1 with err when a row is zero. */
int clf_from_text(clf_head *h, const float *text, int C, int D, char *const *classes, char *err);

/* z (n, D) = x (n, Ds) Wp^T + bp: the cosine head's projection. */
void clf_project(const clf_head *h, float *z, const float *x, int n);
/* logits (n, C) of n inputs x. projected: x is z (n, D), already in the
 * teacher's space (cosine only); else x is student features (n, Ds). */
void clf_logits(const clf_head *h, float *logits, const float *x, int n, int projected);
/* The index of the largest of C logits; the lowest index among equals. */
int clf_argmax(const float *logits, int C);

#endif
