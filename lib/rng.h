/* rng: explicit random number state (xoshiro256**, seeded through splitmix64).
 * rng_for_key() derives a state that is a pure function of (seed, key, index),
 * so that the randomness of an item never depends on run order or sharding. */
#ifndef VL_RNG_H
#define VL_RNG_H

#include <stddef.h>
#include <stdint.h>

typedef struct {
    uint64_t s[4];
} rng;

void rng_seed(rng *r, uint64_t seed);
/* state for (seed, key bytes, index), e.g. (--seed, item id, view) */
void rng_for_key(rng *r, uint64_t seed, const void *key, size_t keylen, uint64_t index);
uint64_t rng_u64(rng *r);
/* uniform in [0, 1) with 53 random bits */
double rng_uniform(rng *r);
/* uniform in [0, n) without modulo bias; n > 0 */
uint64_t rng_below(rng *r, uint64_t n);
/* standard normal (Box-Muller; one value per call) */
double rng_normal(rng *r);
/* 64-bit FNV-1a of bytes, for stable keyed choices */
uint64_t rng_hash(const void *p, size_t n, uint64_t h);

#endif
