#!/bin/bash
# swad.sh: lib/train/swad's LossValley rule and average against swad_ref.py,
# an independent rendering of the paper's rule, on scripted loss sequences.
set -u
cd "${VL2V_ROOT:-$(dirname "$0")/../..}" || exit 2
d=$(mktemp -d)
trap 'rm -rf "$d"' EXIT
cc -O2 -std=c11 -D_GNU_SOURCE -Ilib -o "$d/swad_run" tests/ref/swad_run.c build/libvl2v.a -lopenblas -lm -lpthread ||
    { echo "FAIL: swad: building the driver"; exit 1; }
exec "${PYTHON:-/usr/bin/python3}" tests/ref/swad_ref.py "$d/swad_run"
