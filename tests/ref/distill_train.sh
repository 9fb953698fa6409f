#!/bin/bash
# distill_train.sh: distill-train's ADiP stage 2 against an independent
# float64 PyTorch implementation (distill_train_ref.py check): a small
# generated MobileNetV2 at 32 px, full-batch Adam from given weights with
# BatchNorm frozen, evaluated at every step; SWAD's window by the reference
# rule on the reference's validation losses, and the backbone averaged over
# it within 1e-4.
set -u
cd "${VL2V_ROOT:-$(dirname "$0")/../..}" || exit 2
PY=${PYTHON:-/usr/bin/python3}
d=$(mktemp -d)
trap 'rm -rf "$d"' EXIT
"$PY" tests/ref/distill_train_ref.py make "$d" || { echo "FAIL: distill_train parity: making the data"; exit 1; }
imgdecode --size 32 -o "$d/val.mp" "$d/val.tsv" && imgdecode --augment --views 2 --seed 5 --size 32 \
    -o "$d/views.mp" "$d/train.tsv" || { echo "FAIL: distill_train parity: imgdecode"; exit 1; }
steps=8 lr=1e-4 lam=0.5 every=1
distill-train --weights "$d/student.safetensors" --manifest "$d/train.tsv" --views 2 --seed 5 --size 32 \
    --teacher "$d/teacher.mp" --val "$d/val.mp" --test-domain c --model "$d/stage1.safetensors" --full-batch \
    --steps $steps --eval-every $every --lr $lr --lambda $lam -o "$d/adip_ref.safetensors" 2>/dev/null ||
    { echo "FAIL: distill_train parity: distill-train exited with $?"; exit 1; }
"$PY" tests/ref/distill_train_ref.py check "$d" $steps $lr $lam $every
