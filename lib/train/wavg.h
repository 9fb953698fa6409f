/* wavg: a uniform average of snapshots of a parameter block, kept as a
 * running mean in float, avg += (x - avg) / (n + 1), the update of
 * torch.optim.swa_utils.AveragedModel that SWAD averages with. Building
 * block of SWAD: a segment is the average of the iterates since the last
 * evaluation; the final model is the average of the chosen segments. */
#ifndef VL_TRAIN_WAVG_H
#define VL_TRAIN_WAVG_H

#include <stddef.h>
#include <stdint.h>

typedef struct {
    size_t numel;
    int64_t n;  /* snapshots averaged */
    float *avg; /* numel floats, 64-byte aligned */
} wavg;

void wavg_init(wavg *w, size_t numel);
void wavg_free(wavg *w);
/* Forgets every snapshot. */
void wavg_reset(wavg *w);
/* Adds a snapshot x (numel floats): the first one is copied. */
void wavg_add(wavg *w, const float *x);

#endif
