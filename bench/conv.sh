#!/bin/bash
# conv: ResNet-18's 3x3 stride-1 convolutions (layer1..layer4, 224x224 input,
# batch B) in C - im2col + sgemm and Winograd F(4x4,3x3) (bench/conv.c) -
# side by side with PyTorch's conv2d (bench/conv_ref.py) in one run, on
# THREADS threads (default 2): forward, input gradient alone, weight
# gradient alone, milliseconds (best of REPS after a warm-up), and the
# Winograd workspace. The two sides run one after the other, never at once;
# expect 10-20% noise on a busy machine.
# Usage: bench/conv.sh [B] [REPS]   (defaults 32, 3)
set -eu
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PYTHON=${PYTHON:-/usr/bin/python3}
B=${1:-32}
REPS=${2:-3}
cd "$ROOT"
make -s build/libvl2v.a
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cc -O2 -march=native -std=c11 -D_GNU_SOURCE -Ilib bench/conv.c build/libvl2v.a -lopenblas -lm -lpthread -o "$tmp/conv"
export THREADS=${THREADS:-2} OPENBLAS_NUM_THREADS=${THREADS:-2}
echo "machine: $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg); batch $B, $THREADS threads, ms"
"$tmp/conv" "$B" "$REPS" >"$tmp/c.txt"
"$PYTHON" bench/conv_ref.py "$B" "$REPS" >"$tmp/t.txt"
printf '%-7s %4s %3s | %8s %8s %8s %6s | %8s %8s %8s %6s | %8s %8s %8s %6s | %6s\n' layer C HW \
    "fwd i2c" wino torch w/t "dx i2c" wino torch w/t "dw i2c" wino torch w/t "ws MB"
join "$tmp/c.txt" "$tmp/t.txt" | awk '{
    printf "%-7s %4s %3s | %8.1f %8.1f %8.1f %5.2fx | %8.1f %8.1f %8.1f %5.2fx | %8.1f %8.1f %8.1f %5.2fx | %6.1f\n",
        $1, $2, $3, $4, $5, $13, $13 / $5, $6, $7, $14, $14 / $7, $8, $9, $15, $15 / $9, $10
    for (i = 4; i <= 9; i++) c[i] += $i
    for (i = 13; i <= 15; i++) c[i] += $i
} END {
    printf "%-7s %4s %3s | %8.1f %8.1f %8.1f %5.2fx | %8.1f %8.1f %8.1f %5.2fx | %8.1f %8.1f %8.1f %5.2fx |\n",
        "sum", "", "", c[4], c[5], c[13], c[13] / c[5], c[6], c[7], c[14], c[14] / c[7], c[8], c[9], c[15], c[15] / c[9]
}'
echo "w/t: PyTorch's time over Winograd's (above 1: Winograd faster)"
