#!/bin/bash
# align_fit.sh: align-fit (stage 1 of VL2V-ADiP, and the linear probe)
# against an independent float64 PyTorch implementation (align_fit_ref.py):
# full-batch Adam from a given head, the selected step and head; then its
# error paths: streams that do not join, a label outside the text matrix, a
# head of another dim, an empty validation set, one source domain only, NaN.
set -u
cd "${VL2V_ROOT:-$(dirname "$0")/../..}" || exit 2
PY=${PYTHON:-/usr/bin/python3}
d=$(mktemp -d)
trap 'rm -rf "$d"' EXIT
"$PY" tests/ref/align_fit_ref.py make "$d" || { echo "FAIL: align_fit: making the data"; exit 1; }
common=(--features "$d/feat.mp" --text "$d/text.mp" --val "$d/val.mp" --test-domain sketch
    --full-batch --steps 25 --eval-every 6 --lr 3e-3)
align-fit "${common[@]}" --teacher "$d/teacher.mp" --init "$d/init_cos.safetensors" --log "$d/log.mp" \
    -o "$d/model_cos.safetensors" || echo "FAIL: align_fit: align-fit --loss cos exited with $?"
align-fit "${common[@]}" --loss ce --init "$d/init_ce.safetensors" -o "$d/model_ce.safetensors" \
    || echo "FAIL: align_fit: align-fit --loss ce exited with $?"
for l in cos ce; do
    predict --model "$d/model_$l.safetensors" -o "$d/pred_$l.mp" "$d/val.mp" || echo "FAIL: align_fit: predict --loss $l"
done
"$PY" tests/ref/align_fit_ref.py check "$d"

# the log: one item per evaluation (steps 0, 6, 12, 18, 24)
steps=$(mpdump "$d/log.mp" | grep -o '"step": [0-9]*' | awk '{printf "%s ", $2}')
[ "$steps" = "0 6 12 18 24 " ] && echo "PASS: align_fit: the log has one item per evaluation (steps $steps)" \
    || echo "FAIL: align_fit: log steps '$steps'"
mpdump "$d/log.mp" | sed -n 2p | grep -q '"cos_image".*"cos_text".*"val_acc".*"val_loss".*"val_acc.art"' \
    && echo "PASS: align_fit: each log item has the loss terms, the validation accuracy and loss, per domain too" \
    || echo "FAIL: align_fit: log item: $(mpdump "$d/log.mp" | sed -n 2p)"

# the sampled run: the same bytes twice, and on 1 and 2 threads
for t in 1 2 2; do
    align-fit --features "$d/feat.mp" --teacher "$d/teacher.mp" --text "$d/text.mp" --val "$d/val.mp" \
        --test-domain sketch --steps 40 --eval-every 10 --batch-per-domain 4 --seed 3 --threads $t \
        -o "$d/s$t.safetensors" 2>/dev/null
    cat "$d/s$t.safetensors" >>"$d/s$t.all"
done
cmp -s "$d/s1.all" <(head -c "$(stat -c %s "$d/s1.safetensors")" "$d/s2.all") &&
    cmp -s "$d/s2.safetensors" <(tail -c "$(stat -c %s "$d/s2.safetensors")" "$d/s2.all") &&
    echo "PASS: align_fit: sampled batches: the same model file on a rerun and on 1 and 2 threads" ||
    echo "FAIL: align_fit: sampled runs differ"

# error paths: each fails with a message naming the place and leaves no file
fails() { # NAME PATTERN ARGS...
    local name=$1 pat=$2
    shift 2
    rm -f "$d/bad.safetensors"
    if align-fit "$@" -o "$d/bad.safetensors" 2>"$d/err"; then
        echo "FAIL: align_fit: $name: exit 0"
    elif ! grep -q -- "$pat" "$d/err"; then
        echo "FAIL: align_fit: $name: message lacks '$pat': $(cat "$d/err")"
    elif ls "$d" | grep -q '^bad\.'; then
        echo "FAIL: align_fit: $name: left $(ls "$d" | grep '^bad\.')"
    else
        echo "PASS: align_fit: $name: $(head -c 200 "$d/err")"
    fi
}
base=(--features "$d/feat.mp" --teacher "$d/teacher.mp" --text "$d/text.mp" --val "$d/val.mp" --steps 3)
"$PY" - "$d" <<'PY'
import sys, msgpack, numpy as np
d = sys.argv[1]
def rw(src, dst, f):
    objs = list(msgpack.Unpacker(open(src, "rb"), raw=False))
    h, items, t = objs[0], objs[1:-1], objs[-1]
    items = f(items)
    t["records"] = len(items)
    with open(dst, "wb") as o:
        for x in [h] + items + [t]:
            o.write(msgpack.packb(x, use_bin_type=True))
rw(f"{d}/teacher.mp", f"{d}/teacher_missing.mp", lambda it: [x for x in it if not (x["id"] == "art/3.jpg" and x["view"] == 1)])
rw(f"{d}/text.mp", f"{d}/text4.mp", lambda it: it[:4])
def extra(it):
    x = dict(it[0]); x["id"] = "clipart/0.jpg"; x["domain"] = "clipart"; return it + [x]
rw(f"{d}/val.mp", f"{d}/val_extra.mp", extra)
def nan(it):
    v = np.frombuffer(it[5]["vec"], np.float32).copy(); v[2] = np.nan; it[5]["vec"] = v.tobytes(); return it
rw(f"{d}/feat.mp", f"{d}/feat_nan.mp", nan)
PY
fails "a view without its teacher embedding" "art/3.jpg' (view 1) has no teacher embedding" \
    --features "$d/feat.mp" --teacher "$d/teacher_missing.mp" --text "$d/text.mp" --val "$d/val.mp" --test-domain sketch
fails "a label outside the text matrix" "is not one of the 4 classes" \
    --features "$d/feat.mp" --teacher "$d/teacher.mp" --text "$d/text4.mp" --val "$d/val.mp" --test-domain sketch
fails "teacher and text of another dim" "dim" \
    --features "$d/feat.mp" --teacher "$d/feat.mp" --text "$d/text.mp" --val "$d/val.mp" --test-domain sketch
fails "a head of another dim (--init)" "proj.weight" "${base[@]}" --test-domain sketch --init "$d/init_ce.safetensors"
fails "an empty validation set" "no validation item" "${base[@]}" --test-domain sketch --val-split nosuch
fails "one source domain only" "one source domain only" "${base[@]}" --test-domain sketch --test-domain art \
    --test-domain cartoon
fails "a validation domain that is neither source nor test" "neither a source domain nor a --test-domain" \
    --features "$d/feat.mp" --teacher "$d/teacher.mp" --text "$d/text.mp" --val "$d/val_extra.mp" --test-domain sketch
fails "NaN in a feature vector" "not finite\|NaN" --max-errors 0 \
    --features "$d/feat_nan.mp" --teacher "$d/teacher.mp" --text "$d/text.mp" --val "$d/val.mp" --test-domain sketch
