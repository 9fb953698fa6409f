#!/bin/bash
# tool_common: what tools/common.c promises the tools, on a driver built here
# against it: die() from two threads at once (teacher-embed --exec has two)
# reports one error and exits once, leaving no output temporary; the files
# it opens are close-on-exec, so a child process holds none of them.
set -u
root=${VL2V_ROOT:-$(cd "$(dirname "$0")/../.." && pwd)}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail=0
ok() { if [ "$1" = 0 ]; then echo "PASS: $2"; else echo "FAIL: $2"; fail=1; fi; }

cat >"$tmp/drv.c" <<'C'
#include "common.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static pthread_barrier_t bar;

static void *fail_too(void *arg)
{
    pthread_barrier_wait(&bar);
    die(1, "second thread's error");
}

int main(int argc, char **argv)
{
    tool_init("drv");
    if (strcmp(argv[1], "die") == 0) { /* drv die OUT: both threads die at once, an -o file pending */
        tool_out o;
        output_open(&o, argv[2]);
        pthread_t t;
        pthread_barrier_init(&bar, NULL, 2);
        pthread_create(&t, NULL, fail_too, NULL);
        pthread_barrier_wait(&bar);
        die(1, "first thread's error");
    }
    /* drv fds IN OUT: the descriptors a child process holds while both are open */
    sr *r = open_stream(argv[2]);
    tool_out o;
    output_open(&o, argv[3]);
    (void)r;
    return system("ls /proc/$$/fd") == 0 ? 0 : 1;
}
C
if ! ${CC:-cc} -O1 -std=c11 -D_GNU_SOURCE -I"$root/lib" -I"$root/tools" -o "$tmp/drv" "$tmp/drv.c" \
    "$root/tools/common.c" "$root/build/libvl2v.a" -lm -lpthread; then
    echo "FAIL: tool_common: cannot build the driver"
    exit 1
fi

twice=0 left=0 status=0
for i in $(seq 30); do
    "$tmp/drv" die "$tmp/out$i.mp" 2>"$tmp/err"
    rc=$?
    [ $rc = 1 ] || status=$rc
    [ "$(wc -l <"$tmp/err")" = 1 ] || { twice=$((twice + 1)); cp "$tmp/err" "$tmp/err.twice"; }
    [ -z "$(ls "$tmp" | grep "^out$i")" ] || left=$((left + 1))
done
ok $([ $twice = 0 ] && [ $status = 0 ]; echo $?) \
    "die() in two threads at once: one message, exit status 1, 30 times ($twice with more: $(head -c 200 "$tmp/err.twice" 2>/dev/null))"
ok $([ $left = 0 ]; echo $?) "die() in two threads at once: the -o temporary removed ($left left)"

echo x >"$tmp/in.mp"
base=$(sh -c 'ls /proc/$$/fd' </dev/null | sort | tr '\n' ' ')
got=$("$tmp/drv" fds "$tmp/in.mp" "$tmp/o.mp" </dev/null | sort | tr '\n' ' ')
ok $([ "$got" = "$base" ]; echo $?) "the input and the -o file are close-on-exec: a child holds [$got], as without them [$base]"
exit $fail
