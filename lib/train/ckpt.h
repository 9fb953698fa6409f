/* ckpt: a training stage's state as one safetensors file, written
 * atomically (style.md: weights, optimiser moments, averaging state, sampler
 * position and the settings that made it). The parts are parameter stores
 * (values and buffers under their own names) with their optimisers' state
 * behind "optim.K." for part K; the caller adds what else the stage needs as
 * extra float tensors (an average of weights) and as metadata (the step,
 * from which the sampler's next draw follows, and the settings, which a
 * resumed run compares with its own). */
#ifndef VL_TRAIN_CKPT_H
#define VL_TRAIN_CKPT_H

#include "param.h"
#include "st.h"
#include "train/optim.h"

typedef struct {
    params *p;
    optim *o; /* NULL: no optimiser state */
} ckpt_part;

/* An extra tensor (1-D float, n values) saved and restored by name. */
typedef struct {
    const char *name;
    float *data;
    size_t n;
} ckpt_extra;

/* meta: nmeta key/value pairs (keys[i], vals[i]). Atomic: on failure the
 * previous file at path stays. 0, or -1 with err. */
int ckpt_save(const char *path, const ckpt_part *parts, int n, const ckpt_extra *extra, int nextra,
              const char *const *keys, const char *const *vals, int nmeta, char *err);
/* Restores every part and extra from path (shapes must match: the same model
 * and stage). f is left open for the caller's st_meta look-ups; st_close it.
 * On -1 (err set, f closed) the parts may hold some of the checkpoint's
 * values: the caller starts afresh or fails. */
int ckpt_load(const char *path, ckpt_part *parts, int n, ckpt_extra *extra, int nextra, st_file *f, char *err);

#endif
