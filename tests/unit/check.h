/* check.h: the unit tests' reporting: one "PASS: what" or "FAIL: what" line
 * per check, read by tests/run. */
#ifndef VL_CHECK_H
#define VL_CHECK_H

#include <stdio.h>

static int check_failures;

#define CHECK(cond, ...)                                                                           \
    do {                                                                                           \
        if (cond) {                                                                                \
            printf("PASS: ");                                                                      \
            printf(__VA_ARGS__);                                                                   \
            printf("\n");                                                                          \
        } else {                                                                                   \
            check_failures++;                                                                      \
            printf("FAIL: ");                                                                      \
            printf(__VA_ARGS__);                                                                   \
            printf("  [%s:%d]\n", __FILE__, __LINE__);                                             \
        }                                                                                          \
        fflush(stdout);                                                                            \
    } while (0)

#define CHECK_EXIT() return check_failures ? 1 : 0

#endif
