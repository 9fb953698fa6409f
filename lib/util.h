/* util: allocation helpers that abort on exhaustion (the only library code that
 * may end the process), error-message buffers, whole-file reads and atomic file
 * writes. */
#ifndef VL_UTIL_H
#define VL_UTIL_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

/* Length of the error buffers the library fills: char err[VL_ERRLEN]. */
#define VL_ERRLEN 512

void *xmalloc(size_t n);
void *xcalloc(size_t n, size_t size);
void *xrealloc(void *p, size_t n);
char *xstrdup(const char *s);
char *xstrndup(const char *s, size_t n);
/* aligned to 64 bytes; release with free() */
void *xmalloc_aligned(size_t n);

/* Formats into err (VL_ERRLEN bytes) and returns -1, so library code can write
 * `return vl_error(err, "...")`. err may be NULL. */
int vl_error(char *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Reads a whole file (at most max bytes) into a NUL-terminated buffer the
 * caller frees. Returns NULL and fills err on failure. */
char *vl_read_file(const char *path, size_t max, size_t *len, char *err);

/* Output file. A regular file, or a path that does not exist yet, is written
 * atomically: data goes to TARGET.tmp.PID and becomes TARGET only at
 * vl_afile_commit() (fsync + rename), where TARGET is path or, when path is
 * a symbolic link, the file the links lead to (the link stays a link).
 * Anything else is written in place and never replaced: a character device
 * (/dev/null), a FIFO, or an open descriptor (/dev/stdout, /dev/stderr,
 * /dev/fd/N, /proc/self/fd/N: the descriptor itself, as a shell's
 * redirection left it). Then tmp is NULL, path is the name as given, commit
 * flushes and closes, and what was written stays written on failure.
 * vl_afile_abort() removes the temporary. */
typedef struct {
    FILE *fp;
    char *path; /* the file the commit replaces, or the name written in place */
    char *tmp;  /* NULL: written in place */
    char *buf;  /* fp's buffer */
} vl_afile;
int vl_afile_open(vl_afile *a, const char *path, char *err);
int vl_afile_commit(vl_afile *a, char *err);
void vl_afile_abort(vl_afile *a);

/* Writes all of buf to fd, retrying short writes and EINTR. 0 or -1 (errno). */
int vl_write_all(int fd, const void *buf, size_t n);

/* IEEE half and bfloat16 to float. */
float vl_f16_to_f32(uint16_t h);
float vl_bf16_to_f32(uint16_t h);
uint16_t vl_f32_to_f16(float f);
uint16_t vl_f32_to_bf16(float f);

/* Monotonic clock in seconds. */
double vl_now(void);

/* Checks a per-channel input normalisation ((x / 255 - mean) / std): every
 * mean finite, every std a normal positive float (a zero, subnormal,
 * infinite or NaN std makes every input zero, infinite or NaN). Returns
 * NULL when it is valid, else what is wrong ("std 2: 1e-45 is not a normal
 * positive number"), in buf. */
const char *vl_norm_fault(const float mean[3], const float std[3], char *buf, size_t n);

#endif
