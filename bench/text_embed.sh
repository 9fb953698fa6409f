#!/bin/bash
# text-embed against PyTorch (tests/ref/text_embed_ref.py bench: the same
# tokenizer port, clip_ref's text tower in float32), side by side in one run:
# random weights at ViT-B/16's text tower (12 layers, width 512, vocabulary
# 49408, context 77), BENCH_TE_CLASSES (default PACS's 7) x CLIP's 80
# ImageNet templates, batch 64, BENCH_THREADS (default 2) threads. PyTorch
# runs twice: with batches cut to their longest prompt (as text-embed does),
# and padded to 77 as CLIP's own code does (on the first class only: it is
# slow). Reports prompts/s (best of BENCH_REPS, default 2; tokenising and
# loading excluded from PyTorch's time, included in text-embed's) and the
# ratios. Takes a few minutes on 2 cores.
set -eu -o pipefail
root=${VL2V_ROOT:-$(cd "$(dirname "$0")/.." && pwd)}
cd "$root"
export PATH=$root/bin:$PATH
py=${PYTHON:-/usr/bin/python3}
bpe=${SHARED:-$root/../shared}/data/clip/bpe_simple_vocab_16e6.txt.gz
classes=${BENCH_TE_CLASSES:-tests/ref/classnames/pacs.txt}
threads=${BENCH_THREADS:-2}
reps=${BENCH_REPS:-2}
tmp=$(mktemp -d "${TMPDIR:-/tmp}/vl2v-bench.XXXXXX")
trap 'rm -rf "$tmp"' EXIT

$py tests/ref/text_embed_ref.py make --text vitb16 --bpe "$bpe" --out "$tmp/m"
n=$(($(grep -c . "$classes") * 80))

best() { # the smallest of $reps numbers printed by CMD...
    local b= t
    for _ in $(seq "$reps"); do
        t=$("$@")
        b=$(awk -v a="${b:-$t}" -v t="$t" 'BEGIN { print (t < a ? t : a) }')
    done
    echo "$b"
}
te() {
    local s e
    s=$(date +%s.%N)
    text-embed --model "$tmp/m/hf" --classes "$classes" --templates tests/ref/imagenet_templates.txt \
        --threads "$threads" --batch 64 -o "$tmp/o.mp"
    e=$(date +%s.%N)
    awk -v a="$s" -v b="$e" 'BEGIN { print b - a }'
}
pt() { OMP_NUM_THREADS=$threads $py tests/ref/text_embed_ref.py bench "$tmp/m" --classes "$classes" \
    --templates tests/ref/imagenet_templates.txt --bpe "$bpe" --batch 64 --threads "$threads" "$@"; }

c=$(best te)
p=$(best pt)
pp=$(reps=1 best pt --pad --max-classes 1)
awk -v n="$n" -v c="$c" -v p="$p" -v pp="$pp" -v th="$threads" 'BEGIN {
    pp = pp * n / 80
    printf "ViT-B/16 text tower, %d prompts, %d threads, batch 64\n", n, th
    printf "  text-embed            %8.1f prompts/s  (%.2f s, loading included)\n", n / c, c
    printf "  PyTorch, cut batches  %8.1f prompts/s  (%.2f s)   text-embed %.2fx\n", n / p, p, p / c
    printf "  PyTorch, padded to 77 %8.1f prompts/s  (%.2f s, scaled from 80 prompts)   text-embed %.2fx\n", n / pp, pp, pp / c }'
