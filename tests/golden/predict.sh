#!/bin/bash
# predict.sh: predict's interface and error paths, each with its exit status
# and message (the numbers themselves are checked against numpy in
# tests/ref/predict_score.sh): streams that do not join, a space or a dim the
# classifier does not take, labels outside the classes or the text rows, NaN
# in the input and in the head, and no output left behind by a failure.
set -u
cd "${VL2V_ROOT:-$(dirname "$0")/../..}" || exit 2
PY=${PYTHON:-/usr/bin/python3}
d=$(mktemp -d)
trap 'rm -rf "$d"' EXIT
ok() { if [ "$1" = 0 ]; then echo "PASS: predict: $2"; else echo "FAIL: predict: $2"; fi; }
# expect STATUS MESSAGE -- ARGS: predict ARGS -o d/out.mp exits STATUS with stderr MESSAGE and leaves no output
expect() {
    local want=$1 msg=$2
    shift 3
    rm -f "$d/out.mp"
    predict "$@" -o "$d/out.mp" 2>"$d/e"
    local rc=$?
    if [ $rc = "$want" ] && [ "$(cat "$d/e")" = "$msg" ] && [ ! -e "$d/out.mp" ]; then
        echo "PASS: predict: ${msg%%$'\n'*} (exit $rc, no output)"
    else
        echo "FAIL: predict: exit $rc, want $want; stderr:"; cat "$d/e"; echo "want: $msg"
    fi
}

"$PY" - "$d" <<'PY' || { echo "FAIL: predict: making the fixtures"; exit 1; }
import sys, json, numpy as np, msgpack
sys.path.insert(0, "tests/ref")
from st_io import st_save
d = sys.argv[1]
r = np.random.default_rng(0)
f32 = np.float32
cls = ["dog", "cat", "bird"]
def stream(path, header, items, dropped=0, mode="wb"):
    with open(path, mode) as f:
        f.write(msgpack.packb(dict({"version": 1, "history": [["gen"]]}, **header)))
        for it in items:
            f.write(msgpack.packb(it, use_bin_type=True))
        f.write(msgpack.packb({"end": True, "records": len(items), "dropped": dropped}))
def emb(path, space, X, labels=None, mode="wb", ids=None):
    items = [dict({"id": ids[i] if ids else "i%d" % i, "vec": x.astype(f32).tobytes()},
                  **({"label": int(labels[i])} if labels is not None else {})) for i, x in enumerate(X)]
    stream(path, {"schema": "embedding", "dim": X.shape[1], "dtype": "f32le", "space": space}, items, mode=mode)
meta = {"vl2v.head": "cosine", "vl2v.classes": json.dumps(cls), "vl2v.student_space": "student:resnet18",
        "vl2v.teacher_space": "teacher:m", "vl2v.method": "adip-stage1", "vl2v.seed": "0",
        "vl2v.sources": json.dumps(["a", "b"]), "vl2v.settings": "{}"}
W, b, T = r.standard_normal((4, 6)).astype(f32), r.standard_normal(4).astype(f32), r.standard_normal((3, 4)).astype(f32)
st_save(d + "/cos.safetensors", {"proj.weight": W, "proj.bias": b, "text": T}, meta)
Wn = W.copy(); Wn[2, 5] = np.nan
st_save(d + "/nan.safetensors", {"proj.weight": Wn, "proj.bias": b, "text": T}, meta)
st_save(d + "/rows.safetensors", {"proj.weight": W, "proj.bias": b, "text": T[:2]}, meta)
st_save(d + "/nohead.safetensors", {"proj.weight": W}, {})
st_save(d + "/lin.safetensors", {"fc.weight": r.standard_normal((3, 6)).astype(f32), "fc.bias": np.zeros(3, f32)},
        dict(meta, **{"vl2v.head": "linear"}))
F = r.standard_normal((4, 6)).astype(f32)
emb(d + "/f.mp", "student:resnet18", F, [0, 1, 2, 0])
emb(d + "/f_other.mp", "student:mobilenet_v2", F)
emb(d + "/f_dim.mp", "student:resnet18", r.standard_normal((2, 5)).astype(f32))
emb(d + "/z.mp", "teacher:m", r.standard_normal((3, 4)).astype(f32), [0, 2, 1])
emb(d + "/z_lab.mp", "teacher:m", r.standard_normal((3, 4)).astype(f32), [0, 3, 1])
emb(d + "/z_other.mp", "teacher:other", r.standard_normal((3, 4)).astype(f32))
# two streams back to back that do not join (another space), and a repeated id
emb(d + "/join.mp", "student:resnet18", F)
emb(d + "/join.mp", "student:other", F[:1], mode="ab")
emb(d + "/z6.mp", "teacher:m", F)
emb(d + "/dup.mp", "student:resnet18", F[:3], ids=["a", "b", "a"])
# a NaN item (msgpack directly: the vector is bad on purpose)
Fn = F.copy(); Fn[1, 3] = np.nan
emb(d + "/f_nan.mp", "student:resnet18", Fn, [0, 1, 2, 0])
data = open(d + "/f.mp", "rb").read()
open(d + "/trunc.mp", "wb").write(data[:-30])
# text rows: good (out of order), a label past the rows, a repeated label, no class
def text(path, rows, space="text:m"):
    stream(path, {"schema": "embedding", "dim": 4, "dtype": "f32le", "space": space},
           [dict({"id": c or "x", "vec": r.standard_normal(4).astype(f32).tobytes(), "label": l}, **({"class": c} if c else {}))
            for c, l in rows])
text(d + "/text.mp", [("cat", 1), ("dog", 0), ("bird", 2)])
text(d + "/text_lab.mp", [("cat", 1), ("dog", 0), ("bird", 3)])
text(d + "/text_rep.mp", [("cat", 1), ("dog", 0), ("bird", 1)])
text(d + "/text_nocls.mp", [("cat", 1), ("", 0)])
text(d + "/text_space.mp", [("cat", 0)], space="teacher:m")
PY

out=$(predict --help); rc=$?
[ $rc = 0 ] && [[ $out == "usage: predict "* ]]; ok $? "--help prints the usage on stdout, exit 0"
syn=$(sed -n '/^\.Sh SYNOPSIS/,/^\.Sh DESCRIPTION/p' man/predict.1 | grep -c '^\.Fl -\|^\.Op Fl\|^\.Fl')
[ "$syn" -ge 7 ]; ok $? "man page SYNOPSIS lists the options of --help ($syn)"
predict "$d/f.mp" >/dev/null 2>&1; [ $? = 2 ]; ok $? "neither --model nor --text: usage error, exit 2"
predict --model "$d/cos.safetensors" --text "$d/text.mp" "$d/f.mp" >/dev/null 2>&1; [ $? = 2 ]
ok $? "both --model and --text: usage error, exit 2"

predict --model "$d/cos.safetensors" "$d/f.mp" | mpdump >"$d/p.txt"
[ "$(grep -c '"pred"' "$d/p.txt")" = 4 ] && head -n 1 "$d/p.txt" | grep -q '"method": "adip-stage1", "seed": 0, "sources": \["a", "b"\], "settings": "{}"'
ok $? "a cosine head on features: 4 predictions, the run's keys in the header"
predict --text "$d/text.mp" --method clip-zs "$d/z.mp" | mpdump >"$d/p.txt"
head -n 1 "$d/p.txt" | grep -q '"classes": \["dog", "cat", "bird"\], "method": "clip-zs", "seed": null, "sources": \[\], "settings": ""'
ok $? "zero-shot: classes in label order, --method overrides, seed nil, no sources"
predict --max-errors 1 --model "$d/cos.safetensors" "$d/f_nan.mp" 2>"$d/e" | mpdump >"$d/p.txt"
tail -n 1 "$d/p.txt" | grep -q '"records": 3, "dropped": 1' && grep -q "id 'i1'" "$d/e"
ok $? "--max-errors 1: the NaN item dropped and counted"

H=$d/cos.safetensors
expect 1 "predict: $d/f_other.mp: header: space 'student:mobilenet_v2', but $H takes 'student:resnet18' (features) or 'teacher:m' (projected features)" -- \
    --model "$H" "$d/f_other.mp"
expect 1 "predict: $d/f_other.mp: header: space 'student:mobilenet_v2', but $d/lin.safetensors takes 'student:resnet18'" -- \
    --model "$d/lin.safetensors" "$d/f_other.mp"
expect 1 "predict: $d/z_other.mp: header: space 'teacher:other', but the text rows of $d/text.mp are for 'teacher:m' (the teacher's image embeddings)" -- \
    --text "$d/text.mp" "$d/z_other.mp"
expect 1 "predict: $d/f_dim.mp: header: dim 5, but $H takes 6-dimensional features (tensor 'proj.weight')" -- \
    --model "$H" "$d/f_dim.mp"
expect 1 "predict: $d/f_dim.mp: header: dim 5, but $d/lin.safetensors takes 6-dimensional features (tensor 'fc.weight')" -- \
    --model "$d/lin.safetensors" "$d/f_dim.mp"
expect 1 "predict: $d/join.mp: header: space 'student:other', but $d/join.mp has space 'student:resnet18': the streams do not join" -- \
    --model "$H" "$d/join.mp"
expect 1 "predict: $d/dup.mp: record 3 (id 'a'): duplicate (id, view), first at $d/dup.mp: record 1" -- \
    --model "$H" "$d/dup.mp"
expect 1 "predict: $d/f_nan.mp: record 2 (id 'i1'): 'vec' holds NaN or infinity: dropped
predict: more than 0 items dropped (--max-errors 0)" -- --model "$H" "$d/f_nan.mp"
expect 1 "predict: $d/nan.safetensors: tensor 'proj.weight': NaN at [2, 5]" -- \
    --model "$d/nan.safetensors" "$d/f.mp"
expect 1 "predict: $d/rows.safetensors: tensor 'text' has 2 rows but metadata 'vl2v.classes' names 3 classes" -- \
    --model "$d/rows.safetensors" "$d/f.mp"
expect 1 "predict: $d/nohead.safetensors: no metadata 'vl2v.head' (\"cosine\" or \"linear\"): not a head file" -- \
    --model "$d/nohead.safetensors" "$d/f.mp"
expect 1 "predict: $d/z_lab.mp: id 'i1': label 3 outside the 3 classes of $d/text.mp: dropped
predict: more than 0 items dropped (--max-errors 0)" -- --text "$d/text.mp" "$d/z_lab.mp"
expect 1 "predict: $d/text_lab.mp: id 'bird': label 3 outside 0..2 (3 text rows)" -- --text "$d/text_lab.mp" "$d/z.mp"
expect 1 "predict: $d/text_rep.mp: id 'bird': label 1 again (first for class 'cat'): one row a label" -- \
    --text "$d/text_rep.mp" "$d/z.mp"
expect 1 "predict: $d/text_nocls.mp: id 'x': no class: a text row needs a label and a class" -- \
    --text "$d/text_nocls.mp" "$d/z.mp"
expect 1 "predict: $d/text_space.mp: header: space 'teacher:m' is no text space ('text:MODEL', as text-embed writes)" -- \
    --text "$d/text_space.mp" "$d/z.mp"
expect 1 "predict: $d/z6.mp: header: dim 6, but $d/text.mp takes 4-dimensional embeddings (its text rows)" -- \
    --text "$d/text.mp" "$d/z6.mp"
expect 1 "predict: $d/trunc.mp: record 4: truncated: end of input inside it" -- \
    --model "$H" "$d/trunc.mp"

# --weights: the student must be the head's, the input an image stream
"$PY" - "$d" <<'PY' || { echo "FAIL: predict: making the student"; exit 1; }
import sys, json, numpy as np, torch, torchvision
sys.path.insert(0, "tests/ref")
from st_io import st_save, write_image_stream
d = sys.argv[1]
torch.manual_seed(0)
st_save(d + "/r18.safetensors", dict(torchvision.models.resnet18().state_dict()))
meta = {"vl2v.head": "linear", "vl2v.classes": json.dumps(["a", "b"]), "vl2v.student_space": "student:resnet18"}
st_save(d + "/h512.safetensors", {"fc.weight": np.ones((2, 512), np.float32), "fc.bias": np.zeros(2, np.float32)}, meta)
st_save(d + "/hmb.safetensors", {"fc.weight": np.ones((2, 512), np.float32), "fc.bias": np.zeros(2, np.float32)},
        dict(meta, **{"vl2v.student_space": "student:mobilenet_v2"}))
r = np.random.default_rng(0)
write_image_stream(d + "/img.mp", [("a", r.integers(0, 256, (32, 32, 3), dtype=np.uint8)),
                                   ("b", r.integers(0, 256, (32, 32, 3), dtype=np.uint8))], labels=[0, 5])
PY
predict --weights "$d/r18.safetensors" --text "$d/text.mp" "$d/img.mp" >/dev/null 2>&1; [ $? = 2 ]
ok $? "--weights with --text: usage error, exit 2"
expect 1 "predict: $d/r18.safetensors: a 'student:resnet18' student, but $d/hmb.safetensors takes 'student:mobilenet_v2'" -- \
    --weights "$d/r18.safetensors" --model "$d/hmb.safetensors" "$d/img.mp"
expect 1 "predict: $d/f.mp: header: schema is 'embedding', expected 'image'" -- \
    --weights "$d/r18.safetensors" --model "$d/h512.safetensors" "$d/f.mp"
expect 1 "predict: $d/img.mp: id 'b': label 5 outside the 2 classes of $d/h512.safetensors: dropped
predict: more than 0 items dropped (--max-errors 0)" -- --weights "$d/r18.safetensors" --model "$d/h512.safetensors" "$d/img.mp"
