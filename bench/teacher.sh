#!/bin/bash
# teacher: the CLIP teacher in C (lib/models/clip through tests/ref/clip_encode)
# side by side with the PyTorch reference (bench/teacher_ref.py, Debian's
# torch, float32) in one run, at the ViT-B/16 configuration with random
# weights, 2 threads, batch 16:
#   images/s (goal: at least 1.5x PyTorch), achieved GFLOP/s against the
#   machine's sgemm figure measured in the same run (goal: 85%), text
#   sequences/s (full 77-token sequences, and 8-token prompts), peak memory.
# The two sides run one after the other, never at once, in REPEAT rounds
# that interleave them with the sgemm measurement; each figure is the best
# over the rounds (the sgemm figure too: the fastest run of each shape), so
# achieved / sgemm is best against best. On a busy machine expect scatter.
# Usage: bench/teacher.sh [REPEAT] (default 3).
set -eu
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PYTHON=${PYTHON:-/usr/bin/python3}
REPEAT=${1:-3}
THREADS=2
B=16
cd "$ROOT"
make -s build/libvl2v.a
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
LIBS="build/libvl2v.a -lopenblas -ljpeg -lpng -lz -lmsgpackc -lm -lpthread"
cc -O2 -march=native -std=c11 -D_GNU_SOURCE -Ilib tests/ref/clip_encode.c $LIBS -o "$tmp/clip_encode"
cc -O2 -march=native -std=c11 -D_GNU_SOURCE -Ilib bench/sgemm.c $LIBS -o "$tmp/sgemm"
echo "machine: $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg); $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2)"
echo "making random ViT-B/16 weights ..."
$PYTHON tests/ref/clip_ref.py make --config vitb16 --out "$tmp/m" --weights-only
M="$tmp/m/openai.safetensors"
$PYTHON - "$tmp" $B <<'PY'
import sys, numpy as np
d, B = sys.argv[1], int(sys.argv[2])
r = np.random.default_rng(0)
r.standard_normal((B, 3, 224, 224)).astype(np.float32).tofile(d + "/pix.f32")
for name, n in (("full", 77), ("short", 8)):
    t = np.zeros((B, 77), np.int32)
    t[:, 0] = 49406
    t[:, 1:n - 1] = r.integers(1, 49000, (B, n - 2))
    t[:, n - 1] = 49407
    t.tofile(f"{d}/tok_{name}.i32")
PY
# one value of KEY from FILE; the smallest (or largest) over several files
get() { awk -v k="$1" '$1 == k { print $2 }' "$2"; }
best_min() { local k=$1; shift; cat "$@" | awk -v k="$k" '$1 == k && (m == "" || $2 < m) { m = $2 } END { print m }'; }
best_max() { local k=$1; shift; cat "$@" | awk -v k="$k" '$1 == k && (m == "" || $2 > m) { m = $2 } END { print m }'; }
# Rounds interleave the two sides and the sgemm figure, so that a busy spell
# of the machine falls on both; each figure is the best over the rounds.
for r in $(seq "$REPEAT"); do
    echo "round $r of $REPEAT ..."
    "$tmp/sgemm" $THREADS 3 >"$tmp/sg.$r"
    "$tmp/clip_encode" "$M" image "$tmp/pix.f32" $B "$tmp/o" 2 $THREADS >"$tmp/ci.$r"
    "$tmp/sgemm" $THREADS 3 >"$tmp/sg.$r.after"
    $PYTHON bench/teacher_ref.py image "$tmp/pix.f32" $B 2 $THREADS >"$tmp/pi.$r"
    "$tmp/clip_encode" "$M" text "$tmp/tok_full.i32" $B 77 "$tmp/o" 2 $THREADS >"$tmp/ct.$r"
    $PYTHON bench/teacher_ref.py text "$tmp/tok_full.i32" $B 77 2 $THREADS >"$tmp/pt.$r"
    "$tmp/clip_encode" "$M" text "$tmp/tok_short.i32" $B 77 "$tmp/o" 2 $THREADS >"$tmp/cs.$r"
    $PYTHON bench/teacher_ref.py text "$tmp/tok_short.i32" $B 77 2 $THREADS >"$tmp/ps.$r"
done
"$tmp/sgemm" $THREADS 3 >"$tmp/sg.end"
for k in ci pi ct pt cs ps; do
    printf 'encode %s\nmaxrss %s\n' "$(best_min encode "$tmp/$k".*)" "$(best_max maxrss "$tmp/$k".*)" >"$tmp/$k"
done
printf 'sgemm %s\n' "$(best_max sgemm "$tmp"/sg.*)" >"$tmp/sg1"
printf 'sgemm %s\n' "$(best_min sgemm "$tmp"/sg.*)" >"$tmp/sg2"

# FLOPs (2 per multiply-add) of one ViT-B/16 image and one full text sequence
awk -v B=$B -v sg1="$(get sgemm "$tmp/sg1")" -v sg2="$(get sgemm "$tmp/sg2")" \
    -v ci="$(get encode "$tmp/ci")" -v pi="$(get encode "$tmp/pi")" \
    -v ct="$(get encode "$tmp/ct")" -v pt="$(get encode "$tmp/pt")" \
    -v cs="$(get encode "$tmp/cs")" -v ps="$(get encode "$tmp/ps")" \
    -v cim="$(get maxrss "$tmp/ci")" -v pim="$(get maxrss "$tmp/pi")" \
    -v ctm="$(get maxrss "$tmp/ct")" -v ptm="$(get maxrss "$tmp/pt")" -v th=$THREADS 'BEGIN {
    C = 768; T = 197; L = 12; D = 512
    fi = 2 * 196 * C * 768 + L * (2 * T * 12 * C * C + 4 * T * T * C) + 2 * C * D
    C = 512; T = 77
    ft = L * (2 * T * 12 * C * C + 4 * T * T * C) + 2 * C * D
    sg = sg1
    printf "sgemm (%d threads, ViT-B/16 linear shapes): %.1f GFLOP/s (best round; the worst %.1f)\n", th, sg1, sg2
    printf "ViT-B/16 image tower, batch %d, %d threads:\n", B, th
    printf "  C        %7.2f images/s  %6.1f GFLOP/s = %3.0f%% of sgemm  peak memory %5.0f MiB\n", B / ci, B * fi / ci / 1e9, 100 * B * fi / ci / 1e9 / sg, cim / 1024
    printf "  PyTorch  %7.2f images/s  %6.1f GFLOP/s = %3.0f%% of sgemm  peak memory %5.0f MiB\n", B / pi, B * fi / pi / 1e9, 100 * B * fi / pi / 1e9 / sg, pim / 1024
    printf "  C / PyTorch: %.2fx (goal 1.5x); C / sgemm: %.0f%% (goal 85%%)\n", pi / ci, 100 * B * fi / ci / 1e9 / sg
    printf "text tower, batch %d, 77-token sequences:\n", B
    printf "  C        %7.1f sequences/s  %6.1f GFLOP/s = %3.0f%% of sgemm  peak memory %5.0f MiB\n", B / ct, B * ft / ct / 1e9, 100 * B * ft / ct / 1e9 / sg, ctm / 1024
    printf "  PyTorch  %7.1f sequences/s  %6.1f GFLOP/s = %3.0f%% of sgemm  peak memory %5.0f MiB\n", B / pt, B * ft / pt / 1e9, 100 * B * ft / pt / 1e9 / sg, ptm / 1024
    printf "  C / PyTorch: %.2fx\n", pt / ct
    printf "text tower, batch %d, 8-token prompts padded to 77 (C skips the positions after the end token):\n", B
    printf "  C %.1f sequences/s, PyTorch %.1f sequences/s: %.2fx\n", B / cs, B / ps, ps / cs
}'
# Per round, the image tower against the sgemm figures taken just before and
# just after it, and against PyTorch in the same round: ratios less exposed
# to the machine's busy spells than best against best.
for r in $(seq "$REPEAT"); do
    awk -v r=$r -v B=$B -v a="$(get sgemm "$tmp/sg.$r")" -v b="$(get sgemm "$tmp/sg.$r.after")" \
        -v c="$(get encode "$tmp/ci.$r")" -v p="$(get encode "$tmp/pi.$r")" 'BEGIN {
        C = 768; T = 197; L = 12; D = 512
        fi = 2 * 196 * C * 768 + L * (2 * T * 12 * C * C + 4 * T * T * C) + 2 * C * D
        printf "round %d: sgemm %.1f / %.1f GFLOP/s around the C run; C %.1f GFLOP/s = %.0f%% of their mean; C / PyTorch %.2fx\n", r, a, b, B * fi / c / 1e9, 100 * B * fi / c / 1e9 / ((a + b) / 2), p / c
    }'
done
echo "machine load average after the run: $(cut -d' ' -f1-3 /proc/loadavg)"
