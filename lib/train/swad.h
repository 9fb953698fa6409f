/* swad: SWAD's dense weight averaging with its LossValley rule (Cha et al.,
 * NeurIPS 2021), as the paper describes it.
 *
 * Training is cut into segments by the evaluations: segment e holds the
 * iterates after the updates since evaluation e-1 (segment 0: those up to
 * and including evaluation 0), and its loss l_e is the source-validation
 * loss measured at evaluation e. With Ns = n_converge, Ne = n_tolerance and
 * r = tolerance_ratio:
 *   convergence: at the first evaluation e >= Ns-1 where the oldest of the
 *     last Ns losses is the least (ties: the oldest), c = e-Ns+1 is the
 *     convergence segment and the threshold is t = (1+r) mean(l_c..l_e);
 *   the walk back: going back from c-1 over at most Ne-Ns segments (none
 *     before segment 0), the segments whose loss is <= t join, stopping at
 *     the first one above t: the average starts at the earliest joined;
 *   the lagged additions: a segment j > c is decided once Ne losses from it
 *     are known (at evaluation j+Ne-1): it joins when min(l_j..l_j+Ne-1) <=
 *     t; otherwise the valley is dead, j and every later segment stay out
 *     and training ends;
 *   at the end of training (valley alive) the undecided segments j join in
 *     order while min(l_j..l_last) <= t.
 * The chosen segments are therefore one run [first, last], each segment at
 * most once, and the result is the uniform average of every iterate in
 * them (the paper's theta_swad; segments of unequal length weigh by their
 * iterates). Without convergence the result is the last segment's average
 * (SWAD's fallback) and swad_converged says so.
 *
 * Only what the caller passes as iterates is averaged (a backbone's
 * parameters, not its BatchNorm buffers). The state is saved into and
 * restored from a checkpoint exactly (swad_state_json, swad_extras). */
#ifndef VL_TRAIN_SWAD_H
#define VL_TRAIN_SWAD_H

#include "train/ckpt.h"
#include "train/wavg.h"

#include <stddef.h>
#include <stdint.h>

/* SWAD's defaults */
#define SWAD_N_CONVERGE 3
#define SWAD_N_TOLERANCE 6
#define SWAD_TOLERANCE_RATIO 0.3

typedef struct {
    int n_converge, n_tolerance;
    double ratio;
    /* the rule, over the closed segments */
    int nseg, cap;
    double *loss;  /* (nseg) each segment's validation loss */
    int64_t *end;  /* (nseg) the step of its evaluation */
    int64_t *n;    /* (nseg) its iterates */
    int conv;      /* the convergence segment, -1 before */
    double threshold;
    int first, last; /* the chosen segments so far: [first, last], none when last < first */
    int dead;        /* the valley died (at evaluation dead - 1) */
    /* the weights */
    size_t numel;
    int K;            /* segments kept: max(Ns, Ne) */
    wavg open;        /* the open segment */
    float *ring;      /* (K, numel) segment j at row j % K */
    float *avg;       /* (numel) the average of the chosen segments */
    int64_t avg_n;    /* its iterates */
} swad;

/* numel: the size of an iterate (0: the rule alone, for a scripted loss
 * sequence). */
void swad_init(swad *s, size_t numel, int n_converge, int n_tolerance, double ratio);
void swad_free(swad *s);
/* Adds an iterate x (numel floats) to the open segment. */
void swad_update(swad *s, const float *x);
/* Closes the open segment at evaluation step `step` with the validation
 * loss measured there, and applies the rule. Returns 1 when the valley is
 * dead (training should end), else 0. An empty segment (no update since
 * the last evaluation) is not closed: 0. */
int swad_evaluate(swad *s, double loss, int64_t step);
/* Ends training: decides the undecided segments and returns the averaged
 * iterate (numel floats, owned by s), or the last segment's average when
 * the rule never converged (NULL when nothing was evaluated). Call once. */
const float *swad_finish(swad *s);
int swad_converged(const swad *s);
/* The steps whose iterates are in the average after swad_finish: from
 * *from to *to inclusive, and their number; 0 when none. */
int64_t swad_window(const swad *s, int64_t *from, int64_t *to);

/* The rule's state as one JSON object (caller frees), for a checkpoint's
 * metadata; numbers are written so they read back exactly. */
char *swad_state_json(const swad *s);
/* The weights' state as checkpoint extras "swad.open", "swad.segments" and
 * "swad.average": fills 3 entries of x (pointers into s), returns 3. */
int swad_extras(swad *s, ckpt_extra *x);
/* Restores the rule from swad_state_json's text into an s initialised with
 * the same settings and numel (then ckpt_load fills the extras). 0, or -1
 * with err. */
int swad_state_load(swad *s, const char *json_text, char *err);

#endif
