#!/bin/bash
# distill_train.sh: distill-train on a small generated MobileNetV2 at 32 px
# (tests/ref/distill_train_ref.py make): the views it trains on are
# imgdecode's bytes; the model file is deployable (predict reads it) and
# carries the steps averaged; a log item per evaluation; every objective
# runs; the same bytes on 1 and 2 threads; SIGKILL at random points then
# the same command gives the same bytes as an uninterrupted run; a changed
# setting is refused unless --restart; a missing teacher embedding, weights
# that do not move, a NaN loss and a repeated id are errors.
set -u
cd "${VL2V_ROOT:-$(dirname "$0")/../..}" || exit 2
PY=${PYTHON:-/usr/bin/python3}
d=$(mktemp -d)
trap 'rm -rf "$d"' EXIT
"$PY" tests/ref/distill_train_ref.py make "$d" || { echo "FAIL: distill_train: making the data"; exit 1; }
imgdecode --size 32 -o "$d/val.mp" "$d/val.tsv" || { echo "FAIL: distill_train: imgdecode val"; exit 1; }

# the training views are imgdecode --augment's bytes
cc -O2 -std=c11 -D_GNU_SOURCE -Ilib -o "$d/views_dump" tests/ref/views_dump.c build/libvl2v.a \
    -lopenblas -ljpeg -lpng -lz -lmsgpackc -lm -lpthread || echo "FAIL: distill_train: building views_dump"
"$d/views_dump" "$d/train.tsv" 2 5 32 "$d/views.raw"
imgdecode --augment --views 2 --seed 5 --size 32 -o "$d/views.mp" "$d/train.tsv"
"$PY" - "$d" <<'PY'
import sys, msgpack
d = sys.argv[1]
items = list(msgpack.Unpacker(open(f"{d}/views.mp", "rb"), raw=False))[1:-1]
raw = open(f"{d}/views.raw", "rb").read()
ok = b"".join(x["pix"] for x in items) == raw and len(items) == 12
print("%s: distill_train: the %d training views are imgdecode --augment's bytes" % ("PASS" if ok else "FAIL", len(items)))
PY

base=(--weights "$d/student.safetensors" --manifest "$d/train.tsv" --views 2 --seed 5 --size 32
    --teacher "$d/teacher.mp" --val "$d/val.mp" --test-domain c --lr 1e-3)
adip=("${base[@]}" --model "$d/stage1.safetensors")
distill-train "${adip[@]}" --full-batch --steps 14 --eval-every 2 --log "$d/log.mp" -o "$d/adip.safetensors" \
    || echo "FAIL: distill_train: adip exited with $?"
predict --model "$d/adip.safetensors" --weights "$d/adip.safetensors" -o "$d/pred.mp" "$d/val.mp" \
    && echo "PASS: distill_train: predict reads the model file as it is (backbone and head)" \
    || echo "FAIL: distill_train: predict on the model file"
"$PY" - "$d" <<'PY'
import json, sys, msgpack
sys.path.insert(0, "tests/ref")
from st_io import st_load
d = sys.argv[1]
t, m = st_load(f"{d}/adip.safetensors")
names = {"features.0.0.weight", "features.18.1.running_var", "proj.weight", "proj.bias", "text"}
w = json.loads(m.get("vl2v.steps_averaged", "{}"))
ok = names <= set(t) and m.get("vl2v.method") == "adip-stage2" and w.get("iterates", 0) > 0 and \
    json.loads(m["vl2v.sources"]) == ["a", "b"] and "vl2v.inputs" in m and m.get("vl2v.mean") == "0.5,0.5,0.5"
print("%s: distill_train: the model file has the backbone's torchvision names, the head, the text and the steps "
      "averaged (%s)" % ("PASS" if ok else "FAIL", m.get("vl2v.steps_averaged")))
log = list(msgpack.Unpacker(open(f"{d}/log.mp", "rb"), raw=False))
steps = [x["step"] for x in log[1:-1]]
keys = {"loss", "cos_image", "cos_text", "val_acc", "val_loss", "val_acc.a", "swad"}
ok = steps == [0, 2, 4, 6, 8, 10, 12, 13] and all(keys <= set(x) for x in log[1:-1])
print("%s: distill_train: one log item per evaluation with the loss terms, validation and SWAD state (steps %s)" % (
    "PASS" if ok else "FAIL", steps))
PY

# --val-manifest: the evaluation transform in-process, the same model as with imgdecode's stream
args=()
for a in "${adip[@]}"; do [ "$a" = "$d/val.mp" ] && args+=("$d/val.tsv") || args+=("$a"); done
args=("${args[@]/#--val/--val-manifest}")
distill-train "${args[@]}" --steps 4 --eval-every 2 --batch-per-domain 2 -o "$d/vm.safetensors" 2>"$d/err" &&
    distill-train "${adip[@]}" --steps 4 --eval-every 2 --batch-per-domain 2 -o "$d/vs.safetensors" 2>/dev/null &&
    "$PY" -c "
import sys; sys.path.insert(0, 'tests/ref'); from st_io import st_load
(a, ma), (b, mb) = st_load('$d/vm.safetensors'), st_load('$d/vs.safetensors')
sys.exit(not (a.keys() == b.keys() and all((a[k] == b[k]).all() for k in a) and ma['vl2v.val_acc'] == mb['vl2v.val_acc']))" &&
    echo "PASS: distill_train: --val-manifest gives the model --val with imgdecode's stream gives" ||
    echo "FAIL: distill_train: --val-manifest: $(cat "$d/err")"

for o in erm kd; do
    distill-train "${base[@]}" --text "$d/text.mp" --objective $o --steps 6 --eval-every 2 --batch-per-domain 2 \
        -o "$d/$o.safetensors" 2>"$d/err" && predict --model "$d/$o.safetensors" --weights "$d/$o.safetensors" \
        -o "$d/pred_$o.mp" "$d/val.mp" && echo "PASS: distill_train: --objective $o trains a model predict reads" \
        || echo "FAIL: distill_train: --objective $o: $(cat "$d/err")"
done
distill-train "${adip[@]}" --no-swad --steps 6 --eval-every 2 --batch-per-domain 2 -o "$d/noswad.safetensors" &&
    "$PY" -c "
import sys, json; sys.path.insert(0, 'tests/ref'); from st_io import st_load
m = st_load('$d/noswad.safetensors')[1]; w = json.loads(m['vl2v.steps_averaged'])
sys.exit(not (w['swad'] is False and w['from'] == w['to'] == int(m['vl2v.best_step'])))" &&
    echo "PASS: distill_train: --no-swad keeps one step's weights, the best validation accuracy's" ||
    echo "FAIL: distill_train: --no-swad"

# --bn train: BatchNorm on batch statistics moves the running statistics
distill-train "${adip[@]}" --bn train --steps 4 --eval-every 2 --batch-per-domain 2 -o "$d/bn.safetensors" 2>/dev/null &&
    "$PY" -c "
import sys; sys.path.insert(0, 'tests/ref'); from st_io import st_load
a, b = st_load('$d/student.safetensors')[0], st_load('$d/bn.safetensors')[0]
f, t = st_load('$d/adip.safetensors')[0], 'features.18.1.running_var'
sys.exit(not ((a[t] != b[t]).any() and (a[t] == f[t]).all()))" &&
    echo "PASS: distill_train: --bn train moves BatchNorm's running statistics; frozen (the default) keeps them" ||
    echo "FAIL: distill_train: --bn train"

# the same bytes on 1 and 2 threads
for t in 1 2; do
    distill-train "${adip[@]}" --steps 4 --eval-every 2 --batch-per-domain 2 --threads $t -o "$d/t$t.safetensors"
done
cmp -s "$d/t1.safetensors" "$d/t2.safetensors" && echo "PASS: distill_train: the same model file on 1 and 2 threads" ||
    echo "FAIL: distill_train: the model files of 1 and 2 threads differ"

# exact resume: SIGKILL at random points, then the same command again
run=("${adip[@]}" --steps 12 --eval-every 2 --batch-per-domain 2 --checkpoint "$d/ck" --checkpoint-every 2
    -o "$d/resumed.safetensors")
distill-train "${adip[@]}" --steps 12 --eval-every 2 --batch-per-domain 2 -o "$d/whole.safetensors"
kills=0
for delay in 0.4 0.9; do
    distill-train "${run[@]}" 2>/dev/null &
    pid=$!
    sleep $delay
    kill -9 $pid 2>/dev/null && kills=$((kills + 1))
    wait $pid 2>/dev/null
done
distill-train "${run[@]}" || echo "FAIL: distill_train: the resumed run exited with $?"
cmp -s "$d/whole.safetensors" "$d/resumed.safetensors" &&
    echo "PASS: distill_train: killed $kills times (SIGKILL) and rerun, the model file is byte-identical" ||
    echo "FAIL: distill_train: the resumed model file differs from the uninterrupted run's"

# a changed setting is refused, naming it; --restart overrides
distill-train "${run[@]}" 2>/dev/null &
pid=$!
for _ in $(seq 100); do [ -f "$d/ck" ] && break; sleep 0.05; done
kill -9 $pid 2>/dev/null
wait $pid 2>/dev/null
if [ -f "$d/ck" ]; then
    distill-train "${run[@]}" --lr 2e-3 2>"$d/err" && echo "FAIL: distill_train: a changed --lr was accepted" ||
        { grep -q "'lr'" "$d/err" && echo "PASS: distill_train: a changed setting is refused: $(cat "$d/err")" ||
            echo "FAIL: distill_train: refusal message: $(cat "$d/err")"; }
    distill-train "${run[@]}" --lr 2e-3 --restart && echo "PASS: distill_train: --restart overrides the checkpoint" ||
        echo "FAIL: distill_train: --restart"
else
    echo "FAIL: distill_train: no checkpoint written"
fi

# errors
"$PY" - "$d" <<'PY'
import sys, msgpack
d = sys.argv[1]
objs = list(msgpack.Unpacker(open(f"{d}/teacher.mp", "rb"), raw=False))
items = [x for x in objs[1:-1] if not (x["id"] == "b/1" and x["view"] == 1)]
objs[-1]["records"] = len(items)
with open(f"{d}/teacher_missing.mp", "wb") as f:
    for x in [objs[0]] + items + [objs[-1]]:
        f.write(msgpack.packb(x, use_bin_type=True))
PY
fails() { # NAME PATTERN ARGS...
    local name=$1 pat=$2
    shift 2
    rm -f "$d/bad.safetensors"
    if distill-train "$@" -o "$d/bad.safetensors" 2>"$d/err"; then
        echo "FAIL: distill_train: $name: exit 0"
    elif ! grep -q -- "$pat" "$d/err" || [ -e "$d/bad.safetensors" ]; then
        echo "FAIL: distill_train: $name: $(cat "$d/err")"
    else
        echo "PASS: distill_train: $name: $(head -c 200 "$d/err")"
    fi
}
fails "a view without its teacher embedding" "id 'b/1' view 1 has no teacher embedding" "${adip[@]}" --steps 2 \
    --teacher "$d/teacher_missing.mp"
fails "weights that do not move" "did not move" "${adip[@]}" --steps 2 --lr 0
"$PY" - "$d" <<'PY'
import sys
import numpy as np
sys.path.insert(0, "tests/ref")
from st_io import st_load, st_save
d = sys.argv[1]
t, m = st_load(f"{d}/stage1.safetensors")
t = {k: v.copy() for k, v in t.items()}
t["proj.weight"][3, :] = 3e38  # z overflows: cos is inf / inf
st_save(f"{d}/stage1_nan.safetensors", t, m)
rows = open(f"{d}/train.tsv").read().splitlines(True)
open(f"{d}/train_dup.tsv", "w").write("".join(rows + rows[1:2]))
PY
fails "a NaN loss, named with its step" "step 0: the loss is nan" "${adip[@]}" --steps 2 \
    --model "$d/stage1_nan.safetensors"
fails "a repeated id in the manifest" "id 'a/0' repeats" "${adip[@]}" --steps 2 --manifest "$d/train_dup.tsv"
fails "no --model for adip" "--model is required" "${base[@]}" --steps 2

# the man page names every option of --help
missing=$(distill-train --help | grep -o -- '--[a-z-]*' | grep -v -- '^--augment$' | sort -u | while read -r o; do
    grep -q -- "Fl -${o#--}\b" man/distill-train.1 || echo "$o"; done)
[ -z "$missing" ] && echo "PASS: distill_train: the man page names every option of --help" ||
    echo "FAIL: distill_train: the man page lacks $missing"
