/* param: a model's named tensors in one block. Models register each tensor
 * (name as in the weight file, shape, parameter or buffer), then allocate
 * once: values live in one float block and the gradients of the parameters in
 * a second block of the same layout. Buffers (BatchNorm running statistics)
 * have no gradient. A frozen tensor reports a NULL gradient, and the ops skip
 * every bit of work whose only purpose is a NULL gradient. */
#ifndef VL_PARAM_H
#define VL_PARAM_H

#include "st.h"

#include <stddef.h>
#include <stdint.h>

#define PARAM_MAX_DIMS 4

typedef struct {
    char *name;
    int ndim;
    int64_t shape[PARAM_MAX_DIMS];
    size_t numel;
    size_t off;    /* offset in the value (and gradient) block, in floats */
    int is_buffer; /* running statistics: loaded and saved, never trained */
    int frozen;
} param_tensor;

typedef struct {
    int n, cap;
    param_tensor *t;
    size_t numel;  /* floats in the value block */
    float *data;   /* values, 64-byte aligned, NULL before param_alloc */
    float *grad;   /* gradients of the same layout (buffers' slots unused),
                      NULL until the first param_zero_grad */
    int external;  /* data and grad belong to someone else (param_wrap) */
} params;

void param_init(params *p);
void param_free(params *p);

/* A store over a parameter block that lives elsewhere (e.g. a CLIP tower's
 * own block): one tensor `name` of n floats at data, gradient at grad.
 * param_free leaves both blocks alone. */
void param_wrap(params *p, const char *name, float *data, float *grad, size_t n);

/* Registers a tensor; returns its index. Must precede param_alloc. The name is
 * copied. Shapes are PyTorch's (e.g. conv weights (OC, C/groups, KH, KW)). */
int param_add(params *p, const char *name, int ndim, const int64_t *shape, int is_buffer);
/* Allocates the value block, zeroed. The gradient block is allocated by the
 * first param_zero_grad (inference never pays for it). */
void param_alloc(params *p);

/* Index of a tensor by name, or -1. */
int param_find(const params *p, const char *name);
float *param_data(const params *p, int i);
/* The gradient of tensor i, or NULL if it is a buffer, frozen, or no
 * gradient block exists yet (call param_zero_grad before a training step's
 * forward pass: models plan what to keep from the trainable tensors). */
float *param_grad(const params *p, int i);

/* Freezes (frozen=1) or unfreezes every tensor whose name equals prefix or
 * starts with prefix followed by '.' (a module); "" matches all. Returns the
 * number of tensors changed in state or matched. */
int param_freeze(params *p, const char *prefix, int frozen);
/* Number of trainable (non-buffer, unfrozen) floats. */
size_t param_trainable(const params *p);

/* Zeroes the gradients of the trainable tensors, allocating the gradient
 * block on first use. */
void param_zero_grad(params *p);

/* Loads every registered tensor from f, checking shapes. Missing tensors and
 * shape mismatches are errors naming the tensor; tensors in f that the model
 * does not have are errors too unless listed in `ignore` (NULL-terminated
 * suffixes, e.g. "num_batches_tracked"). Returns 0 or -1 with err. */
int param_load(params *p, const st_file *f, const char *const *ignore, char *err);
/* Adds every tensor to a writer (pointers into p->data: keep p alive until
 * stw_write). */
void param_add_to_writer(const params *p, stw *w);

#endif
