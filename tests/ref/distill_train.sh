#!/bin/bash
# distill_train.sh: distill-train's ADiP stage 2, ERM, naive KD and SD
# against an independent float64 PyTorch implementation
# (distill_train_ref.py check): a small
# generated MobileNetV2 at 32 px, full-batch Adam from given weights with
# BatchNorm frozen, evaluated at every step; SWAD's window by the reference
# rule on the reference's validation losses, and the backbone averaged over
# it (and the linear head of erm and kd) within 1e-4.
set -u
cd "${VL2V_ROOT:-$(dirname "$0")/../..}" || exit 2
PY=${PYTHON:-/usr/bin/python3}
d=$(mktemp -d)
trap 'rm -rf "$d"' EXIT
"$PY" tests/ref/distill_train_ref.py make "$d" || { echo "FAIL: distill_train parity: making the data"; exit 1; }
imgdecode --size 32 -o "$d/val.mp" "$d/val.tsv" && imgdecode --augment --views 2 --seed 5 --size 32 \
    -o "$d/views.mp" "$d/train.tsv" || { echo "FAIL: distill_train parity: imgdecode"; exit 1; }
steps=6 lr=1e-4 lam=0.5 tau=4 every=1
common=(--weights "$d/student.safetensors" --manifest "$d/train.tsv" --views 2 --seed 5 --size 32 --val "$d/val.mp"
    --test-domain c --full-batch --steps $steps --eval-every $every --lr $lr)
objs=()
for obj in adip erm kd sd; do
    case $obj in
    adip) args=(--teacher "$d/teacher.mp" --model "$d/stage1.safetensors" --lambda $lam) ;;
    erm) args=(--text "$d/text.mp" --init "$d/init.safetensors") ;;
    kd) args=(--teacher "$d/teacher.mp" --text "$d/text.mp" --init "$d/init.safetensors" --tau $tau) ;;
    sd) args=(--teacher "$d/teacher_sd.mp" --text "$d/text_sd.mp" --lambda $lam) ;;
    esac
    distill-train "${common[@]}" "${args[@]}" --objective $obj -o "$d/${obj}_ref.safetensors" 2>"$d/err" &&
        objs+=($obj) || echo "FAIL: distill_train parity $obj: distill-train: $(cat "$d/err")"
done
"$PY" tests/ref/distill_train_ref.py check "$d" $steps $lr $lam $tau $every "${objs[@]}"
