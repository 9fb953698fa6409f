#!/bin/bash
# predict_score: predict and score against numpy (tests/ref/predict_score.py)
# on generated streams: a cosine head on student features and on projected
# features, a linear head, zero-shot text rows; one run's accuracy table and
# the DomainBed table over runs of several methods, held-out domains and seeds.
set -u
: "${VL2V_ROOT:=$(cd "$(dirname "$0")/../.." && pwd)}"
: "${PYTHON:=/usr/bin/python3}"
cd "$VL2V_ROOT" || exit 1
export PATH="$VL2V_ROOT/bin:$PATH"
d=$(mktemp -d)
trap 'rm -rf "$d"' EXIT
ref="$PYTHON tests/ref/predict_score.py"
fail=0
step() { "$@" 2>"$d/err" || { echo "FAIL: predict_score: $* ($(head -c 300 "$d/err"))"; fail=1; }; }

$ref gen "$d" || { echo "FAIL: predict_score: generating the streams"; exit 1; }
step predict --model "$d/cos.safetensors" -o "$d/p_cos.mp" "$d/feat.mp"
step predict --model "$d/cos.safetensors" -o "$d/p_proj.mp" "$d/proj.mp"
step predict --model "$d/lin.safetensors" -o "$d/p_lin.mp" "$d/feat.mp"
step predict --text "$d/text.mp" -o "$d/p_zs.mp" "$d/proj.mp"
step score --json -o "$d/single.json" "$d/run00.mp"
step score --json -o "$d/table.json" $(cat "$d/runs.txt")
$ref check "$d" || fail=1

# the same items on 1 and 2 threads (the headers differ in their history only)
items() { mpdump "$1" | tail -n +2; }
predict --threads 1 --model "$d/cos.safetensors" "$d/feat.mp" >"$d/t1.mp" &&
    predict --threads 2 --model "$d/cos.safetensors" "$d/feat.mp" >"$d/t2.mp" &&
    [ "$(items "$d/t1.mp")" = "$(items "$d/t2.mp")" ] && [ "$(items "$d/t1.mp")" = "$(items "$d/p_cos.mp")" ] &&
    [ "$(items "$d/t1.mp" | wc -l)" = 301 ]
if [ $? = 0 ]; then echo "PASS: predict_score: the same items on 1 and 2 threads, to stdout and to -o"
else echo "FAIL: predict_score: the items depend on the thread count"; fail=1; fi
exit $fail
