/* Unit tests of lib/rng: the published xoshiro256** and splitmix64 sequences,
 * keyed derivation as a pure function of (seed, key, index), and the
 * distributions of rng_uniform, rng_below and rng_normal. */
#include "check.h"
#include "rng.h"

#include <math.h>
#include <string.h>

int main(void) {
    /* xoshiro256** from state {1, 2, 3, 4}: first outputs of the reference C code */
    rng r = {{1, 2, 3, 4}};
    static const uint64_t want[] = {11520ull, 0ull, 1509978240ull, 1215971899390074240ull};
    int ok = 1;
    for (int i = 0; i < 4; i++)
        if (rng_u64(&r) != want[i]) ok = 0;
    CHECK(ok, "rng: xoshiro256** matches the reference sequence from state {1,2,3,4}");

    /* seeding with splitmix64(0): its first output is 0xe220a8397b1dcdaf */
    rng_seed(&r, 0);
    CHECK(r.s[0] == 0xe220a8397b1dcdafull && r.s[1] == 0x6e789e6aa1b965f4ull,
          "rng: rng_seed uses splitmix64 (reference values for seed 0)");

    rng a, b;
    rng_for_key(&a, 42, "img/1.jpg", 9, 3);
    rng_for_key(&b, 42, "img/1.jpg", 9, 3);
    int same = 1;
    for (int i = 0; i < 100; i++)
        if (rng_u64(&a) != rng_u64(&b)) same = 0;
    CHECK(same, "rng: rng_for_key is a pure function of (seed, key, index)");
    rng c, d, e;
    rng_for_key(&a, 42, "img/1.jpg", 9, 3);
    rng_for_key(&c, 43, "img/1.jpg", 9, 3);
    rng_for_key(&d, 42, "img/2.jpg", 9, 3);
    rng_for_key(&e, 42, "img/1.jpg", 9, 4);
    uint64_t x = rng_u64(&a);
    CHECK(x != rng_u64(&c) && x != rng_u64(&d) && x != rng_u64(&e),
          "rng: seed, key and index each change the stream");

    rng_seed(&r, 7);
    double sum = 0, sum2 = 0, lo = 1, hi = 0;
    const int N = 1000000;
    for (int i = 0; i < N; i++) {
        double u = rng_uniform(&r);
        sum += u;
        sum2 += u * u;
        if (u < lo) lo = u;
        if (u > hi) hi = u;
    }
    double mean = sum / N, var = sum2 / N - mean * mean;
    CHECK(lo >= 0 && hi < 1 && fabs(mean - 0.5) < 0.002 && fabs(var - 1.0 / 12) < 0.001,
          "rng: uniform in [0,1), mean %.4f, variance %.4f", mean, var);

    int counts[7] = {0};
    for (int i = 0; i < 700000; i++)
        counts[rng_below(&r, 7)]++;
    double chi = 0;
    for (int k = 0; k < 7; k++)
        chi += (counts[k] - 100000.0) * (counts[k] - 100000.0) / 100000.0;
    CHECK(chi < 22.5, "rng: rng_below(7) uniform (chi-square %.2f, 6 dof, p > 0.001)", chi);
    uint64_t big = (1ull << 63) + 5, maxv = 0;
    int inrange = 1;
    for (int i = 0; i < 1000; i++) {
        uint64_t v = rng_below(&r, big);
        if (v >= big) inrange = 0;
        if (v > maxv) maxv = v;
        if (rng_below(&r, 1) != 0) inrange = 0;
    }
    CHECK(inrange, "rng: rng_below stays below n for n = 1 and n = 2^63 + 5");

    sum = sum2 = 0;
    double s3 = 0, s4 = 0;
    for (int i = 0; i < N; i++) {
        double g = rng_normal(&r);
        sum += g;
        sum2 += g * g;
        s3 += g * g * g;
        s4 += g * g * g * g;
    }
    mean = sum / N;
    var = sum2 / N;
    CHECK(fabs(mean) < 0.005 && fabs(var - 1) < 0.01 && fabs(s3 / N) < 0.02 &&
              fabs(s4 / N - 3) < 0.05,
          "rng: normal moments mean %.4f var %.4f skew %.4f kurt %.4f", mean, var, s3 / N, s4 / N);

    CHECK(rng_hash("", 0, 0) == 0xcbf29ce484222325ull &&
              rng_hash("a", 1, 0) == 0xaf63dc4c8601ec8cull,
          "rng: rng_hash is FNV-1a 64 (reference values)");
    CHECK_EXIT();
}
