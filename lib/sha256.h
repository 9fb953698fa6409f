/* sha256: SHA-256 (FIPS 180-4), for cache keys, entry checksums and the
 * provenance of a model file's inputs. */
#ifndef VL_SHA256_H
#define VL_SHA256_H

#include <stddef.h>
#include <stdint.h>

typedef struct {
    uint32_t h[8];
    uint8_t buf[64];
    uint64_t len;
} sha256;

void sha256_init(sha256 *s);
void sha256_update(sha256 *s, const void *data, size_t n);
void sha256_final(sha256 *s, uint8_t out[32]);
/* The digest of a whole file as 64 lower-case hex digits and a NUL. 0, or
 * -1 with err naming the file. */
int sha256_file(const char *path, char hex[65], char *err);

#endif
