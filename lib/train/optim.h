/* optim: optimisers over a parameter store (lib/param.h), with PyTorch's
 * update rules so that training matches torch.optim step for step:
 *   SGD: momentum (buffer initialised to the first gradient), dampening 0,
 *        Nesterov, weight decay added to the gradient;
 *   Adam: bias-corrected moments, weight decay as L2 added to the gradient;
 *   AdamW: the same with decoupled decay p *= 1 - lr * wd.
 * Only trainable (non-buffer, unfrozen) tensors are updated, and each keeps
 * its own step count, as PyTorch keeps per-parameter state. The state can be
 * saved to and restored from safetensors, so training resumes exactly. */
#ifndef VL_TRAIN_OPTIM_H
#define VL_TRAIN_OPTIM_H

#include "param.h"

#include <stdint.h>

enum optim_kind { OPTIM_SGD, OPTIM_ADAM, OPTIM_ADAMW };

typedef struct {
    int kind;
    float lr, wd;
    float beta1, beta2, eps; /* Adam, AdamW */
    float momentum;          /* SGD; 0 = plain SGD */
    int nesterov;
    /* state, laid out like the parameter block */
    float *m; /* exp_avg, or SGD's momentum_buffer */
    float *v; /* exp_avg_sq */
    int64_t *steps; /* per tensor */
    int n;          /* tensors */
    size_t numel;
} optim;

/* Defaults of torch.optim: betas (0.9, 0.999), eps 1e-8, AdamW weight decay
 * 0.01, otherwise 0. */
void optim_init(optim *o, int kind, float lr, const params *p);
void optim_free(optim *o);
/* Applies one update to every trainable tensor of p from p's gradients. */
void optim_step(optim *o, params *p);
/* The same update one element at a time on the calling thread: the
 * reference optim_step (16 lanes at a time, pieces of tensors side by side
 * on the thread pool) matches byte for byte. */
void optim_step_ref(optim *o, params *p);

/* Saves the state as safetensors: "<tensor>.exp_avg", "<tensor>.exp_avg_sq",
 * "<tensor>.momentum_buffer" (F32) and "<tensor>.step" (I64) for each tensor
 * that has state, and the hyperparameters as metadata. Atomic. */
int optim_save(const optim *o, const params *p, const char *path, char *err);
/* The same state added to a writer (a checkpoint's), every name and
 * metadata key behind prefix ("" for none); pointers into o. */
void optim_add_to_writer(const optim *o, const params *p, stw *w, const char *prefix);
/* Restores a state saved for the same parameter names and shapes; the
 * hyperparameters in o are kept. -1 with err naming the tensor on mismatch. */
int optim_load(optim *o, const params *p, const char *path, char *err);
/* The same from an open file, reading the names behind prefix (other
 * tensors of f are left alone). */
int optim_load_file(optim *o, const params *p, const st_file *f, const char *prefix, char *err);

#endif
