#!/bin/bash
# The CLIP tokenizer (lib/tok.c, through the build/tests/tok driver) against
# the Python port of simple_tokenizer (tests/ref/tok_ref.py, with the regex
# module), side by side in one run, each on one core (taskset -c 0):
#   prompts: CLIP's 80 ImageNet templates x DomainNet's 345 classes (27,600
#            prompts, mostly cached words: the text-embed workload)
#   random:  BENCH_TOK_RANDOM (default 5000) strings of random words in many
#            scripts (few cache hits: the BPE itself)
# Reports tokens/s (best of BENCH_REPS, default 3; the time each program
# reports for its lines, reading JSON and writing ids included, loading not),
# the ratio C / Python, and the wall time of loading the merges file. Token
# ids are checked equal.
set -eu -o pipefail
root=${VL2V_ROOT:-$(cd "$(dirname "$0")/.." && pwd)}
cd "$root"
py=${PYTHON:-/usr/bin/python3}
bpe=${SHARED:-$root/../shared}/data/clip/bpe_simple_vocab_16e6.txt.gz
reps=${BENCH_REPS:-3}
nrand=${BENCH_TOK_RANDOM:-5000}
tmp=$(mktemp -d "${TMPDIR:-/tmp}/vl2v-bench.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
one=
command -v taskset >/dev/null && one="taskset -c 0"
[ -x build/tests/tok ] || make -s build/tests/tok >/dev/null

"$py" - "$tmp" "$nrand" <<'PY'
import json, random, sys
tmp, n = sys.argv[1], int(sys.argv[2])
names = [l.strip().replace("_", " ") for l in open("tests/ref/classnames/domainnet.txt")]
tmpl = [l.rstrip("\n") for l in open("tests/ref/imagenet_templates.txt")]
with open(tmp + "/prompts.jsonl", "w") as f:
    for t in tmpl:
        for c in names:
            f.write(json.dumps(t.replace("{}", c)) + "\n")
rng = random.Random(7)
blocks = [(0x61, 0x7A), (0xE0, 0xFF), (0x3B1, 0x3C9), (0x430, 0x44F), (0x5D0, 0x5EA), (0x905, 0x939),
          (0x4E00, 0x9FFF), (0xAC00, 0xD7A3), (0x1F600, 0x1F64F)]
with open(tmp + "/random.jsonl", "w") as f:
    for _ in range(n):
        words = []
        for _ in range(rng.randint(3, 12)):
            lo, hi = rng.choice(blocks)
            words.append("".join(chr(rng.randint(lo, hi)) for _ in range(rng.randint(2, 9))))
        f.write(json.dumps(" ".join(words)) + "\n")
PY

# best of $reps: the seconds the program reports for the lines (load excluded)
best() { # INPUT OUTPUT CMD...
    local input=$1 output=$2 b= t
    shift 2
    for _ in $(seq "$reps"); do
        t=$(TOK_TIME=1 $one "$@" < "$input" 2>&1 > "$output" | tail -n 1)
        b=$(awk -v a="${b:-$t}" -v t="$t" 'BEGIN { print (t < a ? t : a) }')
    done
    echo "$b"
}
# wall time of loading the merges file alone (start-up included)
load() {
    local s e
    s=$(date +%s.%N)
    $one "$@" < /dev/null > /dev/null
    e=$(date +%s.%N)
    awk -v a="$s" -v b="$e" 'BEGIN { print b - a }'
}

printf 'load %s: C %.3f s, Python %.3f s (start-up included)\n' "$(basename "$bpe")" \
    "$(load build/tests/tok --encode "$bpe")" "$(load "$py" tests/ref/tok_ref.py "$bpe")"
for set in prompts random; do
    n=$(wc -l < "$tmp/$set.jsonl")
    c=$(best "$tmp/$set.jsonl" "$tmp/c.txt" build/tests/tok --encode "$bpe")
    p=$(best "$tmp/$set.jsonl" "$tmp/p.txt" "$py" tests/ref/tok_ref.py "$bpe")
    cmp -s "$tmp/c.txt" "$tmp/p.txt" || { echo "bench/tok: $set: token ids differ" >&2; exit 1; }
    ntok=$(wc -w < "$tmp/c.txt")
    awk -v set="$set" -v n="$n" -v k="$ntok" -v c="$c" -v p="$p" 'BEGIN {
        printf "%-8s %6d strings %7d tokens: C %9.0f tok/s  Python %8.0f tok/s  ratio %.1fx\n",
            set, n, k, k / c, k / p, p / c }'
done
