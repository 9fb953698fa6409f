#!/bin/bash
# clip_train.sh: the white-box student of VL2V-SD, the CLIP image tower
# trained in place (lib/models/clip's clip_vision_forward/backward, lib/train/optim)
# with the cosine loss, 3 steps of Adam and of SGD with momentum, against the
# PyTorch CLIP reference in float64: every tower tensor within 1e-4.
set -u
cd "${VL2V_ROOT:-$(dirname "$0")/../..}" || exit 2
PY=${PYTHON:-/usr/bin/python3}
d=$(mktemp -d)
trap 'rm -rf "$d"' EXIT

cc -O2 -march=native -std=c11 -D_GNU_SOURCE -Ilib -o "$d/clip_train" tests/ref/clip_train.c build/libvl2v.a \
    -lopenblas -lm -lpthread || { echo "FAIL: clip_train: building the training driver"; exit 1; }
"$PY" tests/ref/clip_ref.py make --config tiny --out "$d/m" --weights-only >/dev/null \
    && "$PY" tests/ref/clip_train_ref.py prepare "$d" || { echo "FAIL: clip_train: PyTorch reference"; exit 1; }
for o in adam sgd; do
    "$d/clip_train" "$d/m/hf" "$d/batch_$o.safetensors" $o 3 "$d/got_$o.safetensors" \
        || echo "FAIL: clip_train: $o exited with $?"
done
"$PY" tests/ref/clip_train_ref.py compare "$d"
