/* Unit tests of lib/sha256: the FIPS 180-4 test vectors (empty, "abc", the
 * 448-bit message, a million 'a' fed in uneven pieces) and sha256_file
 * against the digest of the same bytes in memory. */
#include "check.h"
#include "sha256.h"
#include "util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void hex(const uint8_t *d, char *out)
{
    for (int i = 0; i < 32; i++) snprintf(out + 2 * i, 3, "%02x", d[i]);
}

static const char *digest(const char *msg, size_t n, size_t piece, char *out)
{
    sha256 s;
    uint8_t d[32];
    sha256_init(&s);
    for (size_t i = 0; i < n; i += piece) sha256_update(&s, msg + i, n - i < piece ? n - i : piece);
    sha256_final(&s, d);
    hex(d, out);
    return out;
}

int main(void)
{
    char h[65];
    CHECK(strcmp(digest("", 0, 1, h), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855") == 0,
          "sha256: empty message");
    CHECK(strcmp(digest("abc", 3, 3, h), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad") == 0,
          "sha256: 'abc'");
    const char *m448 = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
    CHECK(strcmp(digest(m448, strlen(m448), 7, h),
                 "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1") == 0,
          "sha256: the 448-bit message, in pieces of 7");
    char *a = xmalloc(1000000);
    memset(a, 'a', 1000000);
    CHECK(strcmp(digest(a, 1000000, 4099, h), "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0") ==
              0,
          "sha256: a million 'a', in pieces of 4099");
    char path[] = "/tmp/vl2v-sha-XXXXXX", err[VL_ERRLEN], fh[65];
    int fd = mkstemp(path);
    int ok = fd >= 0 && vl_write_all(fd, a, 1000000) == 0;
    close(fd);
    CHECK(ok && sha256_file(path, fh, err) == 0 && strcmp(fh, h) == 0, "sha256: sha256_file equals the digest in memory");
    unlink(path);
    CHECK(sha256_file("/nonexistent/x", fh, err) != 0 && strstr(err, "/nonexistent/x"),
          "sha256: a missing file is an error naming it: %s", err);
    free(a);
    CHECK_EXIT();
}
