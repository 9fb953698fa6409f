/* util: allocation helpers, error buffers, file helpers, float conversions. */
#include "util.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static void oom(size_t n)
{
    fprintf(stderr, "out of memory allocating %zu bytes\n", n);
    abort();
}

void *xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (!p) oom(n);
    return p;
}

void *xcalloc(size_t n, size_t size)
{
    void *p = calloc(n ? n : 1, size ? size : 1);
    if (!p) oom(n * size);
    return p;
}

void *xrealloc(void *p, size_t n)
{
    p = realloc(p, n ? n : 1);
    if (!p) oom(n);
    return p;
}

char *xstrdup(const char *s) { return xstrndup(s, strlen(s)); }

char *xstrndup(const char *s, size_t n)
{
    char *p = xmalloc(n + 1);
    memcpy(p, s, n);
    p[n] = 0;
    return p;
}

void *xmalloc_aligned(size_t n)
{
    void *p = NULL;
    if (posix_memalign(&p, 64, n ? (n + 63) / 64 * 64 : 64)) oom(n);
    return p;
}

int vl_error(char *err, const char *fmt, ...)
{
    if (err) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, VL_ERRLEN, fmt, ap);
        va_end(ap);
    }
    return -1;
}

char *vl_read_file(const char *path, size_t max, size_t *len, char *err)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC); /* no child process holds it */
    if (fd < 0) {
        vl_error(err, "%s: %s", path, strerror(errno));
        return NULL;
    }
    size_t cap = max < 65536 ? max : 65536, n = 0;
    char *buf = xmalloc(cap + 1);
    for (;;) {
        if (n == cap) {
            if (cap >= max) {
                /* full: larger than max only if more bytes follow */
                char probe;
                ssize_t r = read(fd, &probe, 1);
                if (r < 0 && errno == EINTR) continue;
                if (r == 0) break;
                vl_error(err, "%s: larger than %zu bytes", path, max);
                free(buf);
                close(fd);
                return NULL;
            }
            cap = cap * 2 > max ? max : cap * 2;
            buf = xrealloc(buf, cap + 1);
        }
        ssize_t r = read(fd, buf + n, cap - n);
        if (r < 0) {
            if (errno == EINTR) continue;
            vl_error(err, "%s: %s", path, strerror(errno));
            free(buf);
            close(fd);
            return NULL;
        }
        if (r == 0) break;
        n += r;
    }
    close(fd);
    buf[n] = 0;
    if (len) *len = n;
    return buf;
}

/* The descriptor an output name stands for (/dev/stdout, /dev/stderr,
 * /dev/fd/N, /proc/self/fd/N), or -1. Following such a name as a link would
 * reach "pipe:[N]" or, for a regular file, a path a rename would replace
 * behind the shell's back. */
static int fd_name(const char *p)
{
    if (strcmp(p, "/dev/stdout") == 0) return 1;
    if (strcmp(p, "/dev/stderr") == 0) return 2;
    const char *d = strncmp(p, "/dev/fd/", 8) == 0 ? p + 8 : strncmp(p, "/proc/self/fd/", 14) == 0 ? p + 14 : NULL;
    if (!d || *d < '0' || *d > '9') return -1;
    char *end;
    long n = strtol(d, &end, 10);
    return *end || n > INT_MAX ? -1 : (int)n;
}

/* path with its symbolic links followed to the last name, which need not
 * exist (malloc'ed); *fd >= 0 when a name on the way is an open descriptor.
 * NULL with err on a loop or a link that cannot be read. */
static char *link_target(const char *path, int *fd, char *err)
{
    char *cur = xstrdup(path);
    *fd = -1;
    for (int hops = 0;; hops++) {
        struct stat st;
        if ((*fd = fd_name(cur)) >= 0 || lstat(cur, &st) != 0 || !S_ISLNK(st.st_mode)) return cur;
        char link[4096];
        ssize_t n = hops < 40 ? readlink(cur, link, sizeof link - 1) : -1;
        if (n < 0) {
            vl_error(err, "%s: %s", path, hops < 40 ? strerror(errno) : strerror(ELOOP));
            free(cur);
            return NULL;
        }
        link[n] = 0;
        char *slash = strrchr(cur, '/'), *next;
        if (link[0] == '/' || !slash) {
            next = xstrdup(link);
        } else { /* relative to the link's directory */
            size_t dl = (size_t)(slash - cur) + 1;
            next = xmalloc(dl + (size_t)n + 1);
            memcpy(next, cur, dl);
            memcpy(next + dl, link, (size_t)n + 1);
        }
        free(cur);
        cur = next;
    }
}

int vl_afile_open(vl_afile *a, const char *path, char *err)
{
    memset(a, 0, sizeof *a);
    int fd;
    char *target = link_target(path, &fd, err);
    if (!target) return -1;
    struct stat st;
    if (fd >= 0 || (stat(target, &st) == 0 && !S_ISREG(st.st_mode))) {
        /* in place: a rename would replace the device node, the FIFO or the
         * descriptor's file instead of writing to it */
        free(target);
        if (fd < 0 && S_ISDIR(st.st_mode)) return vl_error(err, "%s: is a directory", path);
        int d = fd >= 0 ? fcntl(fd, F_DUPFD_CLOEXEC, 3) : open(path, O_WRONLY | O_CLOEXEC | O_NOCTTY);
        if (d < 0 || !(a->fp = fdopen(d, "wb"))) {
            vl_error(err, "%s: %s", path, strerror(errno));
            if (d >= 0) close(d);
            return -1;
        }
        a->path = xstrdup(path);
    } else {
        size_t n = strlen(target) + 32;
        a->path = target;
        a->tmp = xmalloc(n);
        snprintf(a->tmp, n, "%s.tmp.%ld", target, (long)getpid());
        a->fp = fopen(a->tmp, "wbe"); /* close-on-exec from the start: no child process holds the unfinished file */
        if (!a->fp) {
            vl_error(err, "%s: %s", a->tmp, strerror(errno));
            free(a->path);
            free(a->tmp);
            a->path = a->tmp = NULL;
            return -1;
        }
    }
    /* large writes: output files are often gigabytes (glibc ignores the size
     * when setvbuf is given no buffer, so give it one) */
    a->buf = xmalloc(1 << 20);
    setvbuf(a->fp, a->buf, _IOFBF, 1 << 20);
    return 0;
}

int vl_afile_commit(vl_afile *a, char *err)
{
    int rc = 0;
    const char *name = a->tmp ? a->tmp : a->path;
    if (fflush(a->fp) != 0 || ferror(a->fp)) rc = vl_error(err, "%s: %s", name, strerror(errno ? errno : EIO));
    /* a device or a pipe has nothing to sync (EINVAL) */
    if (rc == 0 && a->tmp && fsync(fileno(a->fp)) != 0) rc = vl_error(err, "%s: fsync: %s", name, strerror(errno));
    if (fclose(a->fp) != 0 && rc == 0) rc = vl_error(err, "%s: %s", name, strerror(errno));
    a->fp = NULL;
    free(a->buf);
    a->buf = NULL;
    if (rc == 0 && a->tmp && rename(a->tmp, a->path) != 0)
        rc = vl_error(err, "rename %s -> %s: %s", a->tmp, a->path, strerror(errno));
    if (rc != 0 && a->tmp) unlink(a->tmp);
    free(a->path);
    free(a->tmp);
    a->path = a->tmp = NULL;
    return rc;
}

void vl_afile_abort(vl_afile *a)
{
    if (a->fp) fclose(a->fp);
    free(a->buf);
    a->buf = NULL;
    if (a->tmp) unlink(a->tmp);
    free(a->path);
    free(a->tmp);
    a->fp = NULL;
    a->path = a->tmp = NULL;
}

int vl_write_all(int fd, const void *buf, size_t n)
{
    const char *p = buf;
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0) {
            if (errno == EINTR) continue;
            return -1;
        }
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

float vl_f16_to_f32(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000) << 16, exp = (h >> 10) & 0x1f, man = h & 0x3ff, bits;
    if (exp == 0) {
        if (man == 0) {
            bits = sign;
        } else { /* subnormal: normalise */
            exp = 127 - 15 + 1;
            while (!(man & 0x400)) {
                man <<= 1;
                exp--;
            }
            man &= 0x3ff;
            bits = sign | (exp << 23) | (man << 13);
        }
    } else if (exp == 31) {
        bits = sign | 0x7f800000u | (man << 13);
    } else {
        bits = sign | ((exp + 127 - 15) << 23) | (man << 13);
    }
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

float vl_bf16_to_f32(uint16_t h)
{
    uint32_t bits = (uint32_t)h << 16;
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

uint16_t vl_f32_to_bf16(float f)
{
    uint32_t b;
    memcpy(&b, &f, 4);
    if ((b & 0x7fffffff) > 0x7f800000) return (uint16_t)((b >> 16) | 0x40); /* NaN */
    b += 0x7fff + ((b >> 16) & 1); /* round to nearest even */
    return (uint16_t)(b >> 16);
}

uint16_t vl_f32_to_f16(float f)
{
    uint32_t b;
    memcpy(&b, &f, 4);
    uint32_t sign = (b >> 16) & 0x8000;
    int32_t exp = (int32_t)((b >> 23) & 0xff) - 127 + 15;
    uint32_t man = b & 0x7fffff;
    if (((b >> 23) & 0xff) == 0xff) return (uint16_t)(sign | 0x7c00 | (man ? 0x200 : 0));
    if (exp >= 31) return (uint16_t)(sign | 0x7c00);
    if (exp <= 0) {
        if (exp < -10) return (uint16_t)sign;
        man |= 0x800000;
        uint32_t shift = (uint32_t)(14 - exp);
        uint32_t h = man >> shift, rem = man & ((1u << shift) - 1), half = 1u << (shift - 1);
        if (rem > half || (rem == half && (h & 1))) h++;
        return (uint16_t)(sign | h);
    }
    uint32_t h = sign | ((uint32_t)exp << 10) | (man >> 13);
    uint32_t rem = man & 0x1fff;
    if (rem > 0x1000 || (rem == 0x1000 && (h & 1))) h++;
    return (uint16_t)h;
}

double vl_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

const char *vl_norm_fault(const float mean[3], const float std[3], char *buf, size_t n)
{
    for (int c = 0; c < 3; c++) {
        if (!isfinite(mean[c])) {
            snprintf(buf, n, "mean %d: %g is not finite", c, mean[c]);
            return buf;
        }
        if (!isnormal(std[c]) || std[c] < 0) {
            snprintf(buf, n, "std %d: %g is not a normal positive number", c, std[c]);
            return buf;
        }
    }
    return NULL;
}
