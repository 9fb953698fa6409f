#!/bin/bash
# Interoperability of the stream helpers with independent code: streams,
# .npy and safetensors files written by python3-msgpack / numpy / json+struct
# (tests/ref/msgpack_interop.py, following schemas/*.md) are read by the
# tools, and what the tools write is read back by msgpack and numpy.
set -u
root=${VL2V_ROOT:-$(cd "$(dirname "$0")/../.." && pwd)}
export PATH=$root/bin:$PATH LC_ALL=C
py=${PYTHON:-/usr/bin/python3}
ref=$root/tests/ref/msgpack_interop.py
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cd "$tmp" || exit 1
"$py" "$ref" write . || { echo "FAIL: writing the inputs with msgpack"; exit 1; }
fails=0
run() { # run WHAT COMMAND...: PASS when the command succeeds
    local what=$1
    shift
    if "$@" >log 2>&1; then echo "PASS: $what"; else echo "FAIL: $what"; cat log; fails=$((fails + 1)); fi
}
py_check() { # the python checker prints its own PASS/FAIL line
    "$py" "$ref" "$@" || fails=$((fails + 1))
}

# msgpack -> tools
for f in emb emb40 emb_unknown image pred two; do
    run "mpcat --check accepts msgpack's $f.mp" mpcat --check $f.mp
done
for f in emb emb40 emb_unknown image pred; do
    mpdump --full $f.mp >$f.jsonl 2>log || { echo "FAIL: mpdump --full $f.mp"; cat log; fails=$((fails + 1)); }
    py_check check-dump $f.mp $f.jsonl
done
run "mpcmp: msgpack's stream equals itself at atol 0" mpcmp --atol 0 --rtol 0 emb.mp emb.mp

# tools -> msgpack
mpcat emb.mp emb_b.mp >cat.mp 2>log && py_check check-stream cat.mp embedding 6 || { echo "FAIL: mpcat"; fails=$((fails + 1)); }
mpcat --max-errors 3 emb_bad.mp >clean.mp 2>log && py_check check-stream clean.mp embedding 2 ||
    { echo "FAIL: mpcat --max-errors"; fails=$((fails + 1)); }
mpcat image.mp >img.mp 2>log && py_check check-stream img.mp image 2 || { echo "FAIL: mpcat image"; fails=$((fails + 1)); }
mpcat pred.mp >pred2.mp 2>log && py_check check-stream pred2.mp prediction 2 || { echo "FAIL: mpcat pred"; fails=$((fails + 1)); }
mpcat emb.mp >one.mp 2>log && py_check same-vectors emb.mp one.mp || { echo "FAIL: mpcat emb.mp"; fails=$((fails + 1)); }
mpcat emb_unknown.mp >unk.mp 2>log && py_check same-item-bytes emb_unknown.mp unk.mp ||
    { echo "FAIL: mpcat emb_unknown.mp"; fails=$((fails + 1)); }

# numpy <-> mpnpy
mpnpy export -o x.npy --ids x.ids --labels x.labels emb.mp 2>log && py_check check-npy emb.mp x.npy x.ids x.labels ||
    { echo "FAIL: mpnpy export"; cat log; fails=$((fails + 1)); }
mpnpy export -o l.npy --ids l.ids --labels l.labels emb40.mp 2>log && py_check check-npy emb40.mp l.npy l.ids l.labels ||
    { echo "FAIL: mpnpy export emb40"; cat log; fails=$((fails + 1)); }
mpnpy import --ids vecs.ids --labels vecs.labels --space text:x vecs.npy >imp.mp 2>log &&
    py_check check-stream imp.mp embedding 3 || { echo "FAIL: mpnpy import"; cat log; fails=$((fails + 1)); }
"$py" - <<'PY' || fails=$((fails + 1))
import msgpack, numpy as np
objs = list(msgpack.Unpacker(open("imp.mp", "rb"), raw=False))
a = np.load("vecs.npy")
got = np.stack([np.frombuffer(o["vec"], dtype="<f4") for o in objs[1:-1]])
ids = [o["id"] for o in objs[1:-1]]
labels = [o.get("label", -1) for o in objs[1:-1]]
ok = np.array_equal(a, got) and ids == ["a/1.jpg", "b/2.jpg", "c/3.jpg"] and labels == [0, -1, 6] \
    and objs[0]["space"] == "text:x" and objs[0]["dim"] == 3
print(("PASS" if ok else "FAIL") + ": mpnpy import of numpy's array: vectors bit-exact, ids, labels (-1 = none), space")
raise SystemExit(0 if ok else 1)
PY

# safetensors written by hand -> stinfo
stinfo model.safetensors >info.txt 2>log
if grep -q '^6 tensors, 27 parameters, 116 bytes of data' info.txt && grep -q '^embed.half  *F16  *\[2, 2\]  *4$' info.txt; then
    echo "PASS: stinfo reads a safetensors file written from the format description"
else
    echo "FAIL: stinfo on model.safetensors"; cat info.txt log; fails=$((fails + 1))
fi
if [ -f "${SHARED:-/nonexistent}/data/pretrained/mobilenet_v2_imagenet.safetensors" ]; then
    n=$("$py" -c "
import json, struct, sys
f = open(sys.argv[1], 'rb'); h = json.loads(f.read(struct.unpack('<Q', f.read(8))[0]))
import math
print(len([k for k in h if k != '__metadata__']), sum(math.prod(v['shape']) for k, v in h.items() if k != '__metadata__'))
" "$SHARED/data/pretrained/mobilenet_v2_imagenet.safetensors")
    set -- $n
    if stinfo "$SHARED/data/pretrained/mobilenet_v2_imagenet.safetensors" | grep -q "^$1 tensors, $2 parameters"; then
        echo "PASS: stinfo on the real MobileNetV2: $1 tensors, $2 parameters as json+struct count them"
    else
        echo "FAIL: stinfo on the real MobileNetV2"; fails=$((fails + 1))
    fi
fi
[ $fails -eq 0 ]
