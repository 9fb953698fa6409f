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
exec "${PYTHON:-/usr/bin/python3}" "$root/tests/ref/image_parity.py" "$tmp/image_ops" "$tmp"
