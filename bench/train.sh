#!/bin/bash
# train: student training and inference in C (bench/train.c on lib/) side by
# side with PyTorch (bench/train_ref.py, Debian's torch, float32) in one run,
# 2 threads, random weights, 224x224 inputs:
#   a training step (forward, projection to 512, cosine loss, backward, Adam;
#   BatchNorm frozen as the method trains) of ResNet-50 and ResNet-18 at
#   batch 32 and ViT-B/16 at batch 16: images/s (goal: at least 1.2x PyTorch)
#   and peak resident memory (goal: no more than PyTorch's);
#   forward-only throughput (what student-embed runs) likewise.
# The two sides run one after the other, never at once. Steps are few (the
# first one is a warm-up and not timed): expect 10-20% noise on a busy
# machine. Usage: bench/train.sh [STEPS] (default 2) [CASE...], a CASE being
# ARCH:train|forward:BATCH, e.g. resnet18:train:32 (default: all six).
set -eu
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PYTHON=${PYTHON:-/usr/bin/python3}
STEPS=${1:-2}
[ $# -gt 0 ] && shift
CASES=${*:-resnet50:train:32 resnet18:train:32 vit_b16:train:16 resnet50:forward:32 resnet18:forward:32 vit_b16:forward:16}
cd "$ROOT"
make -s build/libvl2v.a
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cc -O2 -march=native -std=c11 -D_GNU_SOURCE -Ilib bench/train.c build/libvl2v.a -lopenblas -lm -lpthread \
    -o "$tmp/train"
export OPENBLAS_NUM_THREADS=2 THREADS=2
echo "machine: $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg)"
get() { awk -v k="$1" '$1 == k { print $2 }' "$2"; }
printf '%-26s %10s %10s %7s %9s %9s %7s\n' case "C img/s" "torch" ratio "C MB" "torch MB" ratio
for cfg in $CASES; do
    IFS=: read -r a m b <<<"$cfg"
    "$tmp/train" $a $m $b 224 "$STEPS" >"$tmp/c.txt"
    "$PYTHON" bench/train_ref.py $a $m $b 224 "$STEPS" >"$tmp/t.txt"
    ci=$(get ips "$tmp/c.txt") ti=$(get ips "$tmp/t.txt") cm=$(get peak_mb "$tmp/c.txt") tm=$(get peak_mb "$tmp/t.txt")
    printf '%-26s %10s %10s %7s %9s %9s %7s\n' "$a $m b$b" "$ci" "$ti" \
        "$(awk -v a="$ci" -v b="$ti" 'BEGIN { printf "%.2fx", a / b }')" "$cm" "$tm" \
        "$(awk -v a="$cm" -v b="$tm" 'BEGIN { printf "%.2fx", a / b }')"
done
