#!/bin/bash
# image_parity: decoding, the evaluation resize and every augmentation
# operation against Debian's PIL and torchvision on real PACS images, plus
# JPEG/PNG variants and broken files made by the test (image_parity.py).
set -u
root=${VL2V_ROOT:-$(cd "$(dirname "$0")/../.." && pwd)}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
if ! ${CC:-cc} -O2 -std=c11 -D_GNU_SOURCE -I"$root/lib" -o "$tmp/image_ops" "$root/tests/ref/image_ops.c" \
    "$root/build/libvl2v.a" -ljpeg -lpng -lz -lm; then
    echo "FAIL: image_parity: cannot build tests/ref/image_ops.c"
    exit 1
fi
# the same driver with the library's sources built for plain x86-64 and for
# x86-64-v2 (SSE4.1, no AVX2), or the machine's baseline elsewhere: every
# SIMD level must give the same bytes
archs="x86-64 x86-64-v2"
[ "$(uname -m)" = x86_64 ] || archs=native
plain=
for a in $archs; do
    if ! ${CC:-cc} -O2 -march=$a -std=c11 -D_GNU_SOURCE -I"$root/lib" -o "$tmp/image_ops_$a" "$root/tests/ref/image_ops.c" \
        "$root/lib/image.c" "$root/lib/resize.c" "$root/lib/augment.c" "$root/lib/rng.c" "$root/lib/util.c" -ljpeg -lpng -lz -lm; then
        echo "FAIL: image_parity: cannot build tests/ref/image_ops.c with -march=$a"
        exit 1
    fi
    plain="$plain,$tmp/image_ops_$a"
done
exec "${PYTHON:-/usr/bin/python3}" "$root/tests/ref/image_parity.py" "$tmp/image_ops" "$tmp" "${plain#,}"
