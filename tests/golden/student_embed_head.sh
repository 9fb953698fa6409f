#!/bin/bash
# student_embed_head.sh: student-embed --head (the cosine head's projection
# z = F Wp^T + bp in the teacher's space, against numpy on the features of
# a run without it, and the heads it refuses, naming both sides), the
# normalisation the weights declare (metadata, open_clip_config.json,
# CLIP's own) unless --mean/--std are given, and --arch clip_vision and
# openclip_timm.
set -u
cd "${VL2V_ROOT:-$(dirname "$0")/../..}" || exit 2
PY=${PYTHON:-/usr/bin/python3}
d=$(mktemp -d)
trap 'rm -rf "$d"' EXIT
ok() { if [ "$1" = 0 ]; then echo "PASS: student-embed: $2"; else echo "FAIL: student-embed: $2"; fi; }
# refuse WHAT PATTERN... -- ARGS: student-embed ARGS -o d/out.mp exits 1, stderr matching every PATTERN, no output
refuse() {
    local what=$1 pats=()
    shift
    while [ "$1" != -- ]; do pats+=("$1"); shift; done
    shift
    rm -f "$d/out.mp"
    student-embed "$@" -o "$d/out.mp" 2>"$d/e"
    local rc=$? good=1
    for p in "${pats[@]}"; do grep -qF -- "$p" "$d/e" || good=0; done
    [ $rc = 1 ] && [ $good = 1 ] && [ ! -e "$d/out.mp" ]
    ok $? "$what: exit 1, no output, naming ${pats[*]} ($(head -c 220 "$d/e"))"
}
# vecs A B: the items' vec bytes of two streams are the same
vecs() {
    "$PY" -c 'import sys; sys.path.insert(0, "tests/ref"); from st_io import read_stream
a, b = (read_stream(p)[1] for p in sys.argv[1:3]); sys.exit(0 if [x["vec"] for x in a] == [x["vec"] for x in b] and a else 1)' "$1" "$2"
}

"$PY" - "$d" <<'PY' || { echo "FAIL: student-embed: making the fixtures"; exit 1; }
import sys, json, numpy as np, torch, torchvision
sys.path.insert(0, "tests/ref")
from st_io import st_save, write_image_stream
d = sys.argv[1]
torch.manual_seed(0)
st_save(d + "/r18.safetensors", dict(torchvision.models.resnet18().state_dict()))
r = np.random.default_rng(2)
f32 = np.float32
write_image_stream(d + "/img.mp", [("a", r.integers(0, 256, (32, 32, 3), dtype=np.uint8)),
                                   ("b", r.integers(0, 256, (40, 32, 3), dtype=np.uint8)),
                                   ("c", r.integers(0, 256, (32, 32, 3), dtype=np.uint8))])
write_image_stream(d + "/img16.mp", [("p", r.integers(0, 256, (16, 16, 3), dtype=np.uint8)),
                                     ("q", r.integers(0, 256, (16, 16, 3), dtype=np.uint8))])
meta = {"vl2v.head": "cosine", "vl2v.classes": json.dumps(["dog", "cat", "bird"]),
        "vl2v.student_space": "student:resnet18", "vl2v.teacher_space": "teacher:t8", "vl2v.method": "adip-stage1",
        "vl2v.seed": "0", "vl2v.sources": json.dumps(["a", "b"]), "vl2v.settings": "{}"}
def cos(path, D, Ds, **m):
    W, b = (r.standard_normal((D, Ds)) * 0.05).astype(f32), r.standard_normal(D).astype(f32)
    T = r.standard_normal((3, D)).astype(f32)
    T /= np.linalg.norm(T, axis=1, keepdims=True)
    st_save(path, {"proj.weight": W, "proj.bias": b, "text": T}, dict(meta, **m))
    return W, b
W, b = cos(d + "/head.safetensors", 8, 512)
np.save(d + "/W.npy", W), np.save(d + "/b.npy", b)
cos(d + "/r50.safetensors", 8, 2048, **{"vl2v.student_space": "student:resnet50"})
cos(d + "/ds.safetensors", 8, 100)
st_save(d + "/lin.safetensors", {"fc.weight": r.standard_normal((3, 512)).astype(f32), "fc.bias": np.zeros(3, f32)},
        dict(meta, **{"vl2v.head": "linear"}))
# a tiny CLIP (OpenAI names): width 64 (one head), 8x8 patches of 16x16 images, D 16, one block a tower
C, P, T, D, H = 64, 8, 5, 16, 128
t = {"visual.conv1.weight": (C, 3, P, P), "visual.class_embedding": (C,), "visual.positional_embedding": (T, C),
     "visual.ln_pre.weight": (C,), "visual.ln_pre.bias": (C,), "visual.ln_post.weight": (C,),
     "visual.ln_post.bias": (C,), "visual.proj": (C, D), "ln_final.weight": (C,), "ln_final.bias": (C,),
     "token_embedding.weight": (10, C), "positional_embedding": (4, C), "text_projection": (C, D),
     "logit_scale": ()}
for pre in ("visual.", ""):
    for k, s in (("ln_1.weight", (C,)), ("ln_1.bias", (C,)), ("attn.in_proj_weight", (3 * C, C)),
                 ("attn.in_proj_bias", (3 * C,)), ("attn.out_proj.weight", (C, C)), ("attn.out_proj.bias", (C,)),
                 ("ln_2.weight", (C,)), ("ln_2.bias", (C,)), ("mlp.c_fc.weight", (H, C)), ("mlp.c_fc.bias", (H,)),
                 ("mlp.c_proj.weight", (C, H)), ("mlp.c_proj.bias", (C,))):
        t[pre + "transformer.resblocks.0." + k] = s
st_save(d + "/clip.safetensors", {k: (r.standard_normal(s) * 0.1 + (1 if "ln_" in k and "weight" in k else 0))
                                  .astype(f32) for k, s in t.items()})
PY

student-embed --help | grep -q -- "--head MODEL"; ok $? "--help shows --head"
sed -n '/^\.Sh SYNOPSIS/,/^\.Sh DESCRIPTION/p' man/student-embed.1 | grep -q '^\.Op Fl -head Ar MODEL'
ok $? "the man page's SYNOPSIS has --head"
student-embed --weights "$d/r18.safetensors" <"$d/img.mp" >"$d/f.mp" &&
    student-embed --weights "$d/r18.safetensors" --head "$d/head.safetensors" <"$d/img.mp" >"$d/z.mp"
ok $? "--head runs"
"$PY" - "$d" <<'PY'
import sys, numpy as np
sys.path.insert(0, "tests/ref")
from st_io import read_stream, rel_err
d = sys.argv[1]
hf, f, _ = read_stream(d + "/f.mp")
hz, z, tz = read_stream(d + "/z.mp")
F = np.stack([np.frombuffer(x["vec"], "<f4") for x in f]).astype(np.float64)
Z = np.stack([np.frombuffer(x["vec"], "<f4") for x in z])
want = F @ np.load(d + "/W.npy").astype(np.float64).T + np.load(d + "/b.npy")
ok = hz.get("space") == "teacher:t8" and hz.get("dim") == 8 and tz.get("records") == 3
print(("PASS" if ok else "FAIL") + ": student-embed: --head: the header's space is the head's vl2v.teacher_space "
      "(%s), dim D (%s)" % (hz.get("space"), hz.get("dim")))
e = rel_err(Z, want)
ok = e < 1e-6 and [x["id"] for x in z] == ["a", "b", "c"]
print(("PASS" if ok else "FAIL") + ": student-embed: --head: z = F Wp^T + bp of the features without it, "
      "within 1e-6 (%.2g), ids in order" % e)
PY
refuse "--head made for another student" "student:resnet50" "student:resnet18" -- \
    --weights "$d/r18.safetensors" --head "$d/r50.safetensors" <"$d/img.mp"
refuse "--head of another feature size" "100-dim" "gives 512" -- \
    --weights "$d/r18.safetensors" --head "$d/ds.safetensors" <"$d/img.mp"
refuse "--head with a linear head" "lin.safetensors" "linear head" -- \
    --weights "$d/r18.safetensors" --head "$d/lin.safetensors" <"$d/img.mp"
refuse "--head file missing" "none.safetensors" -- --weights "$d/r18.safetensors" --head "$d/none.safetensors" <"$d/img.mp"

# the normalisation the weights declare
student-embed --arch clip_vision --weights "$d/clip.safetensors" <"$d/img16.mp" >"$d/c1.mp" &&
    student-embed --weights "$d/clip.safetensors" --mean 0.48145466,0.4578275,0.40821073 \
        --std 0.26862954,0.26130258,0.27577711 <"$d/img16.mp" >"$d/c2.mp" && vecs "$d/c1.mp" "$d/c2.mp" &&
    mpdump "$d/c1.mp" | head -n 1 | grep -q '"dim": 16, "dtype": "f32le", "space": "student:clip_vision"'
ok $? "--arch clip_vision: the CLIP tower's embedding (dim 16), with CLIP's normalisation unless told"
refuse "--arch clip_vision on an image of another size" "the CLIP image tower takes 16x16 images" -- \
    --weights "$d/clip.safetensors" <"$d/img.mp"
student-embed --weights "$d/r18.safetensors" --mean 0.485,0.456,0.406 --std 0.229,0.224,0.225 <"$d/img.mp" \
    >"$d/f2.mp" && vecs "$d/f.mp" "$d/f2.mp"
ok $? "weights that declare nothing: ImageNet's normalisation"
mnv2=$SHARED/data/pretrained/mobilenet_v2_imagenet.safetensors
if [ -e "$mnv2" ]; then
    student-embed --weights "$mnv2" <"$d/img.mp" >"$d/m1.mp" &&
        student-embed --weights "$mnv2" --mean 0.5,0.5,0.5 --std 0.5,0.5,0.5 <"$d/img.mp" >"$d/m2.mp" &&
        student-embed --weights "$mnv2" --mean 0.485,0.456,0.406 <"$d/img.mp" >"$d/m3.mp" &&
        vecs "$d/m1.mp" "$d/m2.mp" && ! vecs "$d/m1.mp" "$d/m3.mp"
    ok $? "the shared MobileNetV2: its metadata's mean and std 0.5 unless --mean/--std say otherwise"
fi
vendor=$SHARED/data/vendor/pacs-mnv2
if [ -e "$vendor/open_clip_model.safetensors" ]; then
    student-embed --arch openclip_timm --weights "$vendor" <"$d/img.mp" >"$d/v1.mp" &&
        student-embed --weights "$vendor/open_clip_model.safetensors" --mean 0.5,0.5,0.5 --std 0.5,0.5,0.5 \
            <"$d/img.mp" >"$d/v2.mp" && vecs "$d/v1.mp" "$d/v2.mp" &&
        mpdump "$d/v1.mp" | head -n 1 | grep -q '"dim": 512, "dtype": "f32le", "space": "student:openclip_timm"'
    ok $? "--arch openclip_timm: the vendor model's 512-d image embedding, its open_clip_config.json's normalisation"
fi
