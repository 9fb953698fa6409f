#!/bin/bash
# vit.sh: timm-named ViT-S/16 parity against a timm-compatible PyTorch ViT:
# student-embed's features (native grid, and pos_embed resized up, down and
# to a non-square grid) and 3 training steps (Adam on a resized grid, SGD
# with momentum) of the backbone and a projection head under the cosine loss:
# every parameter within 1e-4 relative of float64 PyTorch.
set -u
cd "${VL2V_ROOT:-$(dirname "$0")/../..}" || exit 2
PY=${PYTHON:-/usr/bin/python3}
d=$(mktemp -d)
trap 'rm -rf "$d"' EXIT

cc -O2 -march=native -std=c11 -D_GNU_SOURCE -Ilib -o "$d/student_train" tests/ref/student_train.c \
    build/libvl2v.a -lopenblas -lm -lpthread || { echo "FAIL: vit: building the training driver"; exit 1; }
"$PY" tests/ref/vit_ref.py prepare "$d" || { echo "FAIL: vit: PyTorch reference"; exit 1; }
student-embed --arch auto --weights "$d/vit_s16.safetensors" <"$d/img.mp" >"$d/emb.mp" \
    || echo "FAIL: vit: student-embed exited with $?"
for o in adam sgd; do
    "$d/student_train" vit_s16 "$d/vit_s16.safetensors" "$d/batch_$o.safetensors" $o frozen 3 "$d/got_$o.safetensors" \
        || echo "FAIL: vit: student_train $o exited with $?"
done
if student-embed --arch vit_b16 --weights "$d/vit_s16.safetensors" <"$d/img.mp" >/dev/null 2>"$d/err"; then
    echo "FAIL: vit: --arch vit_b16 with ViT-S/16 weights succeeded"
elif grep -q "cls_token\|pos_embed\|patch_embed" "$d/err"; then
    echo "PASS: vit: wrong --arch is an error naming the tensor ($(head -c 160 "$d/err"))"
else
    echo "FAIL: vit: wrong --arch message does not name a tensor: $(cat "$d/err")"
fi
"$PY" tests/ref/vit_ref.py compare "$d"
