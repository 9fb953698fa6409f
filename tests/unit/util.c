/* Unit tests of lib/util: f16/bf16 conversions (exhaustive over all 65536
 * half values, rounding to nearest even on the way back), whole-file reads
 * with their size bound, atomic files (and what is written in place: devices,
 * FIFOs, descriptors; links followed), and error buffers. */
#include "check.h"
#include "util.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

/* reference half -> float by arithmetic, not bit manipulation */
static float f16_ref(uint16_t h) {
    int s = h >> 15, e = (h >> 10) & 31, m = h & 1023;
    float v;
    if (e == 0)
        v = ldexpf((float)m, -24);
    else if (e == 31)
        v = m ? NAN : INFINITY;
    else
        v = ldexpf((float)(1024 + m), e - 25);
    return s ? -v : v;
}

static void test_f16(void) {
    int ok = 1, back = 1;
    for (uint32_t h = 0; h < 65536; h++) {
        float f = vl_f16_to_f32((uint16_t)h), r = f16_ref((uint16_t)h);
        if (isnan(r) ? !isnan(f) : (f != r || signbit(f) != signbit(r))) ok = 0;
        if (!isnan(r) && vl_f32_to_f16(f) != h) back = 0;
        if (isnan(r) && !isnan(vl_f16_to_f32(vl_f32_to_f16(f)))) back = 0;
    }
    CHECK(ok, "util: f16 -> f32 exact for all 65536 half values");
    CHECK(back, "util: f32 -> f16 -> f32 is the identity on every half value (NaN stays NaN)");

    /* rounding: halfway cases go to even, overflow to infinity, underflow to zero */
    CHECK(vl_f32_to_f16(1.0f + ldexpf(1, -11)) == 0x3c00,
          "util: f16 tie 1+2^-11 rounds down to even 1.0");
    CHECK(vl_f32_to_f16(1.0f + 3 * ldexpf(1, -11)) == 0x3c02,
          "util: f16 tie 1+3*2^-11 rounds up to even");
    CHECK(vl_f32_to_f16(1.0f + ldexpf(1, -11) + ldexpf(1, -20)) == 0x3c01,
          "util: f16 above the tie rounds up");
    CHECK(vl_f32_to_f16(65504.0f) == 0x7bff && vl_f32_to_f16(65520.0f) == 0x7c00 &&
              vl_f32_to_f16(-1e10f) == 0xfc00,
          "util: f16 max 65504, 65520 and beyond overflow to infinity");
    CHECK(vl_f32_to_f16(ldexpf(1, -24)) == 0x0001 && vl_f32_to_f16(ldexpf(1, -25)) == 0x0000 &&
              vl_f32_to_f16(ldexpf(1.5f, -25)) == 0x0001 &&
              vl_f32_to_f16(-ldexpf(1, -30)) == 0x8000,
          "util: f16 subnormals: 2^-24 kept, 2^-25 ties to zero, 1.5*2^-25 to 2^-24, sign kept");
    CHECK(vl_f32_to_f16(ldexpf(1023, -24) + ldexpf(1, -25)) == 0x0400,
          "util: f16 rounding carries into the exponent");

    /* randomised: the f16 nearest to x (among the two neighbours) */
    uint32_t st = 12345;
    int near = 1;
    for (int i = 0; i < 200000; i++) {
        st = st * 1664525u + 1013904223u;
        float x = ldexpf((float)(st >> 8) / (1 << 24), (int)(st % 40) - 26) * ((st & 1) ? -1 : 1);
        uint16_t h = vl_f32_to_f16(x);
        float y = vl_f16_to_f32(h);
        float up = vl_f16_to_f32((uint16_t)(h + 1)),
              dn = h & 0x7fff ? vl_f16_to_f32((uint16_t)(h - 1)) : y;
        if (fabsf(x - y) > fabsf(x - up) || fabsf(x - y) > fabsf(x - dn)) near = 0;
    }
    CHECK(near, "util: f32 -> f16 picks the nearest half for 200000 random values");
}

static void test_bf16(void) {
    int ok = 1;
    for (uint32_t h = 0; h < 65536; h++) {
        float f = vl_bf16_to_f32((uint16_t)h);
        uint32_t b;
        memcpy(&b, &f, 4);
        if (b != h << 16) ok = 0;
        if (!isnan(f) && vl_f32_to_bf16(f) != h) ok = 0;
        if (isnan(f) && !isnan(vl_bf16_to_f32(vl_f32_to_bf16(f)))) ok = 0;
    }
    CHECK(ok, "util: bf16 <-> f32 exact on all 65536 values");
    float one_tie, one_up;
    uint32_t b = 0x3f808000; /* 1.0 + half an ulp of bf16 */
    memcpy(&one_tie, &b, 4);
    b = 0x3f818000;
    memcpy(&one_up, &b, 4);
    CHECK(vl_f32_to_bf16(one_tie) == 0x3f80 && vl_f32_to_bf16(one_up) == 0x3f82,
          "util: bf16 ties round to even (0x3f808000 -> 0x3f80, 0x3f818000 -> 0x3f82)");
    float nan_low;
    b = 0x7f800001; /* NaN with only low mantissa bits: must not become infinity */
    memcpy(&nan_low, &b, 4);
    CHECK(isnan(vl_bf16_to_f32(vl_f32_to_bf16(nan_low))), "util: bf16 keeps a low-bit NaN a NaN");
    CHECK(vl_f32_to_bf16(3.4e38f) == 0x7f80, "util: bf16 rounding overflows to infinity");
}

/* what vl_afile does to what is not a regular file: a device, a FIFO and a
 * descriptor are written in place and stay what they are; a symbolic link
 * stays a link to its target, which is replaced atomically */
static void test_in_place(const char *dir) {
    char path[256], target[256], err[VL_ERRLEN];
    struct stat sb;
    vl_afile a;
    CHECK(vl_afile_open(&a, "/dev/null", err) == 0 && a.tmp == NULL && fputs("x", a.fp) >= 0 &&
              vl_afile_commit(&a, err) == 0 && stat("/dev/null", &sb) == 0 && S_ISCHR(sb.st_mode),
          "util: /dev/null is written in place and stays a character device");

    snprintf(path, sizeof path, "%s/fifo", dir);
    if (mkfifo(path, 0600) != 0) abort();
    pid_t pid = fork();
    if (pid == 0) { /* the reader: counts the bytes, exits with 0 when there are 5 */
        int fd = open(path, O_RDONLY);
        char b[16];
        ssize_t n, got = 0;
        while ((n = read(fd, b, sizeof b)) > 0) got += n;
        _exit(got == 5 ? 0 : 1);
    }
    int st = -1, ok = vl_afile_open(&a, path, err) == 0 && a.tmp == NULL && fputs("hello", a.fp) >= 0 &&
                      vl_afile_commit(&a, err) == 0;
    waitpid(pid, &st, 0);
    CHECK(ok && WIFEXITED(st) && WEXITSTATUS(st) == 0 && stat(path, &sb) == 0 && S_ISFIFO(sb.st_mode),
          "util: a FIFO is written in place (the reader got the bytes) and stays a FIFO");

    /* a link in a subdirectory, relative to it, to a file that exists */
    snprintf(target, sizeof target, "%s/target", dir);
    FILE *fp = fopen(target, "w");
    fputs("old", fp);
    fclose(fp);
    snprintf(path, sizeof path, "%s/sub", dir);
    mkdir(path, 0700);
    snprintf(path, sizeof path, "%s/sub/link", dir);
    if (symlink("../target", path) != 0) abort();
    char *text = NULL;
    CHECK(vl_afile_open(&a, path, err) == 0 && a.tmp && strstr(a.tmp, "/sub/../target.tmp.") &&
              fputs("new!", a.fp) >= 0 && vl_afile_commit(&a, err) == 0 && lstat(path, &sb) == 0 &&
              S_ISLNK(sb.st_mode) && (text = vl_read_file(path, 100, NULL, err)) && strcmp(text, "new!") == 0,
          "util: a symbolic link stays a link; its target is replaced beside it");
    free(text);
    snprintf(path, sizeof path, "%s/dangling", dir);
    snprintf(target, sizeof target, "%s/made", dir);
    if (symlink("made", path) != 0) abort();
    CHECK(vl_afile_open(&a, path, err) == 0 && vl_afile_commit(&a, err) == 0 && lstat(path, &sb) == 0 &&
              S_ISLNK(sb.st_mode) && stat(target, &sb) == 0 && S_ISREG(sb.st_mode),
          "util: a dangling link gets its target created");
    snprintf(path, sizeof path, "%s/loop", dir);
    if (symlink("loop", path) != 0) abort();
    CHECK(vl_afile_open(&a, path, err) == -1 && strstr(err, "symbolic links"), "util: a link loop: %s", err);
    CHECK(vl_afile_open(&a, dir, err) == -1 && strstr(err, "directory"), "util: a directory: %s", err);

    /* /dev/fd/N: the descriptor itself, not a file opened again at 0 */
    snprintf(path, sizeof path, "%s/fdfile", dir);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    if (fd < 0 || write(fd, "ab", 2) != 2) abort();
    char name[64];
    snprintf(name, sizeof name, "/dev/fd/%d", fd);
    ok = vl_afile_open(&a, name, err) == 0 && a.tmp == NULL && fputs("cd", a.fp) >= 0 && vl_afile_commit(&a, err) == 0;
    close(fd);
    text = vl_read_file(path, 100, NULL, err);
    CHECK(ok && text && strcmp(text, "abcd") == 0, "util: /dev/fd/N writes on at the descriptor's offset");
    free(text);
}

static void test_files(void) {
    char dir[] = "/tmp/vl2v-util-XXXXXX";
    if (!mkdtemp(dir)) abort();
    char path[256], err[VL_ERRLEN];
    snprintf(path, sizeof path, "%s/f", dir);
    FILE *fp = fopen(path, "wb");
    for (int i = 0; i < 200000; i++)
        fputc('a' + i % 26, fp);
    fclose(fp);
    size_t n = 0;
    char *p = vl_read_file(path, 1 << 20, &n, err);
    CHECK(p && n == 200000 && p[n] == 0 && p[199999] == 'a' + 199999 % 26,
          "util: vl_read_file reads 200000 bytes");
    free(p);
    p = vl_read_file(path, 200000, &n, err);
    CHECK(p && n == 200000, "util: a file of exactly max bytes is accepted");
    free(p);
    p = vl_read_file(path, 199999, &n, err);
    CHECK(!p && strstr(err, "larger than 199999"), "util: a file one byte over max is refused: %s",
          err);
    p = vl_read_file(path, 100, &n, err);
    CHECK(!p && strstr(err, "larger than 100"), "util: a small max is enforced too: %s", err);
    free(p);
    snprintf(path, sizeof path, "%s/missing", dir);
    p = vl_read_file(path, 100, &n, err);
    CHECK(!p && strstr(err, "missing") && strstr(err, "No such file"),
          "util: missing file named: %s", err);

    /* atomic file: invisible until commit; abort leaves nothing */
    snprintf(path, sizeof path, "%s/out", dir);
    vl_afile a;
    CHECK(vl_afile_open(&a, path, err) == 0, "util: vl_afile_open");
    fputs("hello", a.fp);
    struct stat sb;
    int hidden = stat(path, &sb) != 0;
    char tmp[300];
    snprintf(tmp, sizeof tmp, "%s", a.tmp);
    CHECK(vl_afile_commit(&a, err) == 0 && hidden && stat(path, &sb) == 0 && sb.st_size == 5 &&
              stat(tmp, &sb) != 0,
          "util: atomic file appears only at commit, temporary gone");
    snprintf(path, sizeof path, "%s/aborted", dir);
    vl_afile_open(&a, path, err);
    fputs("partial", a.fp);
    snprintf(tmp, sizeof tmp, "%s", a.tmp);
    vl_afile_abort(&a);
    CHECK(stat(path, &sb) != 0 && stat(tmp, &sb) != 0,
          "util: aborted atomic file leaves nothing behind");
    snprintf(path, sizeof path, "%s/nodir/x", dir);
    CHECK(vl_afile_open(&a, path, err) == -1 && strstr(err, "nodir"),
          "util: atomic file in a missing directory: %s", err);

    test_in_place(dir);

    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    if (system(cmd) != 0) abort();

    char e[VL_ERRLEN];
    CHECK(vl_error(e, "%s: %d", "x", 5) == -1 && strcmp(e, "x: 5") == 0 &&
              vl_error(NULL, "y") == -1,
          "util: vl_error formats and returns -1; NULL buffer allowed");
    char longs[2000];
    memset(longs, 'x', sizeof longs - 1);
    longs[sizeof longs - 1] = 0;
    vl_error(e, "%s", longs);
    CHECK(strlen(e) == VL_ERRLEN - 1, "util: vl_error truncates to the buffer");
    void *al = xmalloc_aligned(100);
    CHECK(((uintptr_t)al & 63) == 0, "util: xmalloc_aligned is 64-byte aligned");
    free(al);
    char *d = xstrndup("abcdef", 3);
    CHECK(strcmp(d, "abc") == 0, "util: xstrndup");
    free(d);
}

int main(void) {
    test_f16();
    test_bf16();
    test_files();
    CHECK_EXIT();
}
