#!/bin/bash
# predict_score: predict and score against numpy (tests/ref/predict_score.py)
# on generated streams: a cosine head on student features and on projected
# features, a linear head, zero-shot text rows; one run's accuracy table and
# the DomainBed table over runs of several methods, held-out domains and seeds.
set -u
: "${VL2V_ROOT:=$(cd "$(dirname "$0")/../.." && pwd)}"
: "${PYTHON:=/usr/bin/python3}"
PY=$PYTHON
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
# --weights: the student in-process gives the items student-embed | predict gives
"$PY" - "$d" <<'PY' || { echo "FAIL: predict_score: making the student"; exit 1; }
import sys, json, numpy as np, torch, torchvision
sys.path.insert(0, "tests/ref")
from st_io import st_save, write_image_stream
d = sys.argv[1]
torch.manual_seed(0)
st_save(d + "/r18.safetensors", dict(torchvision.models.resnet18().state_dict()))
r = np.random.default_rng(2)
C = 3
st_save(d + "/r18head.safetensors", {"fc.weight": r.standard_normal((C, 512)).astype(np.float32),
                                     "fc.bias": r.standard_normal(C).astype(np.float32)},
        {"vl2v.head": "linear", "vl2v.classes": json.dumps(["a", "b", "c"]), "vl2v.student_space": "student:resnet18",
         "vl2v.method": "erm-probe", "vl2v.seed": "1", "vl2v.sources": "[]", "vl2v.settings": "{}"})
write_image_stream(d + "/img.mp", [("i%d" % i, r.integers(0, 256, (32 + 16 * (i // 3), 32, 3), dtype=np.uint8))
                                   for i in range(7)], labels=[i % 3 for i in range(7)])
PY
student-embed --weights "$d/r18.safetensors" --batch 2 "$d/img.mp" | predict --model "$d/r18head.safetensors" >"$d/two.mp" &&
    predict --weights "$d/r18.safetensors" --batch 2 --model "$d/r18head.safetensors" "$d/img.mp" >"$d/one.mp" &&
    [ "$(items "$d/one.mp")" = "$(items "$d/two.mp")" ] && [ "$(items "$d/one.mp" | wc -l)" = 8 ]
if [ $? = 0 ]; then echo "PASS: predict_score: predict --weights on images: the items of student-embed | predict"
else echo "FAIL: predict_score: predict --weights differs from student-embed | predict"; fail=1; fi
exit $fail
