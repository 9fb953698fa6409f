#!/bin/bash
# clip: lib/models/clip and teacher-embed against the PyTorch reference
# (tests/ref/clip_ref.py) with random weights in both naming schemes: a tiny
# configuration in F32, F16 and BF16, and the real ViT-B/16 configuration.
# Normalised embeddings must agree to 1e-4. Also: the loaders' errors.
set -u
: "${VL2V_ROOT:=$(cd "$(dirname "$0")/../.." && pwd)}"
: "${PYTHON:=/usr/bin/python3}"
cd "$VL2V_ROOT" || exit 1
export PATH="$VL2V_ROOT/bin:$PATH"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
ref="$PYTHON tests/ref/clip_ref.py"
fail=0
pass() { echo "PASS: $*"; }
failed() { echo "FAIL: $*"; fail=1; }

cc -O2 -std=c11 -D_GNU_SOURCE -Ilib tests/ref/clip_encode.c build/libvl2v.a \
    -lopenblas -ljpeg -lpng -lz -lmsgpackc -lm -lpthread -o "$tmp/clip_encode" ||
    { failed "clip_encode driver builds"; exit 1; }

# check DIR NAME NTEXTS T: both schemes, images through teacher-embed, text through the driver
check() {
    local d=$1 name=$2 nt=$3 T=$4 m
    for m in "$d/hf" "$d/openai.safetensors"; do
        local scheme=hf
        [ "$m" = "$d/hf" ] || scheme=openai
        if teacher-embed --model "$m" <"$d/images.mp" >"$d/o_$scheme.mp" 2>"$d/err"; then
            $ref compare "$d/ref_clip.f64" "$d/o_$scheme.mp" "$name $scheme: teacher-embed = PyTorch"
        else
            failed "$name $scheme: teacher-embed runs ($(head -c 300 "$d/err"))"
        fi
        if "$tmp/clip_encode" "$m" text "$d/tokens.i32" "$nt" "$T" "$d/t_$scheme.f32" >/dev/null 2>"$d/err"; then
            $ref compare "$d/ref_text.f64" "$d/t_$scheme.f32" "$name $scheme: text encoder = PyTorch"
        else
            failed "$name $scheme: text encoder runs ($(head -c 300 "$d/err"))"
        fi
    done
    if cmp -s "$d/o_hf.mp" "$d/o_openai.mp" 2>/dev/null || \
        $PYTHON -c 'import sys,msgpack
a,b=[list(msgpack.Unpacker(open(p,"rb"),raw=False))[1:] for p in sys.argv[1:]]
sys.exit(0 if a==b else 1)' "$d/o_hf.mp" "$d/o_openai.mp"; then
        pass "$name: both naming schemes give the same items"
    else
        failed "$name: both naming schemes give the same items"
    fi
}

for dt in f32 f16 bf16; do
    d="$tmp/tiny_$dt"
    $ref make --config tiny --dtype $dt --out "$d" --images 5 --texts 4 || { failed "tiny $dt: reference"; continue; }
    check "$d" "tiny $dt" 4 16
done

# layer_norm_eps from config.json (Hugging Face layout only)
d="$tmp/tiny_eps"
if $ref make --config tiny_eps --out "$d" --images 3 --texts 2; then
    teacher-embed --model "$d/hf" <"$d/images.mp" >"$d/o.mp" &&
        $ref compare "$d/ref_clip.f64" "$d/o.mp" "tiny, layer_norm_eps 0.1 (vision): teacher-embed = PyTorch"
    "$tmp/clip_encode" "$d/hf" text "$d/tokens.i32" 2 16 "$d/t.f32" >/dev/null &&
        $ref compare "$d/ref_text.f64" "$d/t.f32" "tiny, layer_norm_eps 0.05 (text): text encoder = PyTorch"
else
    failed "tiny_eps: reference"
fi

d="$tmp/tiny_f32"
teacher-embed --model "$d/hf" --normalize imagenet <"$d/images.mp" >"$d/o.mp" &&
    $ref compare "$d/ref_imagenet.f64" "$d/o.mp" "tiny: --normalize imagenet = PyTorch"
teacher-embed --model "$d/hf" --resize <"$d/resize.mp" >"$d/o.mp" &&
    $ref compare "$d/ref_resize.f64" "$d/o.mp" "tiny: --resize (PIL bilinear) = PyTorch"
teacher-embed --model "$d/hf" --batch 2 <"$d/images.mp" >"$d/o2.mp" &&
    $PYTHON -c 'import sys,msgpack
a,b=[list(msgpack.Unpacker(open(p,"rb"),raw=False))[1:] for p in sys.argv[1:]]
import numpy as np
va=np.array([np.frombuffer(x["vec"],"<f4") for x in a[:-1]]); vb=np.array([np.frombuffer(x["vec"],"<f4") for x in b[:-1]])
sys.exit(0 if np.abs(va-vb).max() < 1e-6 else 1)' "$d/o_hf.mp" "$d/o2.mp" &&
    pass "tiny: --batch 2 agrees with --batch 16" || failed "tiny: --batch 2 agrees with --batch 16"

teacher-embed --model "$d/hf" --threads 1 <"$d/images.mp" >"$d/t1.mp" &&
    teacher-embed --model "$d/hf" --threads 2 <"$d/images.mp" >"$d/t2.mp" &&
    $PYTHON -c 'import sys,msgpack,numpy as np
v=[np.array([np.frombuffer(x["vec"],"<f4") for x in list(msgpack.Unpacker(open(p,"rb"),raw=False))[1:-1]]) for p in sys.argv[1:]]
sys.exit(0 if np.abs(v[0]-v[1]).max() <= 1e-6 else 1)' "$d/t1.mp" "$d/t2.mp" &&
    pass "tiny: --threads 1 and --threads 2 agree within 1e-6" || failed "tiny: --threads 1 and --threads 2 agree within 1e-6"

# errors: a size mismatch, a missing tensor, a wrong shape, a bad path
teacher-embed --model "$d/hf" <"$d/resize.mp" >"$d/o.mp" 2>"$d/err"
rc=$?
[ $rc = 1 ] && grep -q "64x35 image, the model takes 32x32" "$d/err" && ! $PYTHON -c 'import msgpack,sys
o=list(msgpack.Unpacker(open(sys.argv[1],"rb"),raw=False)); sys.exit(0 if o and o[-1].get("end") else 1)' "$d/o.mp" &&
    pass "a size mismatch without --resize is an error naming the record" ||
    failed "a size mismatch without --resize is an error naming the record (rc $rc: $(cat "$d/err"))"
$PYTHON - "$d" <<'PY'
import json, struct, sys
d = sys.argv[1]
def load(p):
    b = open(p, "rb").read(); n = struct.unpack("<Q", b[:8])[0]
    return json.loads(b[8:8 + n]), b[8 + n:]
def save(p, h, data):
    j = json.dumps(h).encode(); j += b" " * (-len(j) % 8)
    open(p, "wb").write(struct.pack("<Q", len(j)) + j + data)
h, data = load(d + "/openai.safetensors")
h2 = dict(h); del h2["visual.transformer.resblocks.1.attn.in_proj_bias"]
save(d + "/missing.safetensors", h2, data)
h5 = dict(h)  # with OpenCLIP's layer scale, which the model would not read
h5["visual.transformer.resblocks.0.ls_1.gamma"] = {"dtype": "F32", "shape": [96], "data_offsets": [len(data), len(data) + 384]}
save(d + "/extra.safetensors", h5, data + bytes(384))
h3 = dict(h); e = dict(h3["ln_final.weight"]); e["shape"] = [2, e["shape"][0] // 2]; h3["ln_final.weight"] = e
save(d + "/shape.safetensors", h3, data)
# an OpenCLIP hub directory: the same tensors without metadata, sizes in open_clip_config.json
import os
os.makedirs(d + "/oc", exist_ok=True)
h4 = dict(h); h4.pop("__metadata__", None)
save(d + "/oc/open_clip_model.safetensors", h4, data)
json.dump({"model_cfg": {"embed_dim": 48, "quick_gelu": False,
                         "vision_cfg": {"width": 96, "head_width": 32, "layers": 2, "patch_size": 8, "image_size": 32},
                         "text_cfg": {"width": 64, "heads": 4, "layers": 2, "context_length": 16, "vocab_size": 300}}},
          open(d + "/oc/open_clip_config.json", "w"))
PY
teacher-embed --model "$d/oc" <"$d/images.mp" >"$d/o.mp" &&
    $ref compare "$d/ref_clip.f64" "$d/o.mp" "tiny: OpenCLIP hub directory (open_clip_config.json) = PyTorch"
mkdir -p "$d/oc2" && ln -s "$d/oc/open_clip_model.safetensors" "$d/oc2/" && $PYTHON -c 'import json,sys
c=json.load(open(sys.argv[1])); c["model_cfg"]["text_cfg"]["pool_type"] = "last"; json.dump(c, open(sys.argv[2], "w"))' \
    "$d/oc/open_clip_config.json" "$d/oc2/open_clip_config.json"
"$tmp/clip_encode" "$d/oc2" text "$d/tokens.i32" 4 16 "$d/t.f32" >/dev/null 2>"$d/err"
[ $? != 0 ] && grep -q "text pool_type 'last'" "$d/err" &&
    pass "an OpenCLIP variant without tensors of its own (text pool_type 'last') is an error" ||
    failed "an OpenCLIP variant without tensors of its own (text pool_type 'last') is an error ($(cat "$d/err"))"
teacher-embed --model "$d/missing.safetensors" <"$d/images.mp" >/dev/null 2>"$d/err"
[ $? = 1 ] && grep -q "missing tensor 'visual.transformer.resblocks.1.attn.in_proj_bias'" "$d/err" &&
    pass "a missing tensor is an error naming it" || failed "a missing tensor is an error naming it ($(cat "$d/err"))"
teacher-embed --model "$d/extra.safetensors" <"$d/images.mp" >/dev/null 2>"$d/err"
[ $? = 1 ] && grep -q "tensor 'visual.transformer.resblocks.0.ls_1.gamma' is not part of CLIP" "$d/err" &&
    pass "a tensor the model would not read (OpenCLIP's layer scale) is an error naming it" ||
    failed "a tensor the model would not read (OpenCLIP's layer scale) is an error naming it ($(cat "$d/err"))"
mkdir -p "$d/hf3" && ln -s "$d/hf/model.safetensors" "$d/hf3/model.safetensors" && $PYTHON -c 'import json,sys
c=json.load(open(sys.argv[1])); c["vision_config"]["num_hidden_layers"] -= 1; json.dump(c, open(sys.argv[2], "w"))' \
    "$d/hf/config.json" "$d/hf3/config.json"
teacher-embed --model "$d/hf3" <"$d/images.mp" >/dev/null 2>"$d/err"
[ $? = 1 ] && grep -q "tensor 'vision_model.encoder.layers.1.*' is not part of CLIP as .*config.json gives it" "$d/err" &&
    pass "config.json with fewer layers than the weights is an error, not a shorter model" ||
    failed "config.json with fewer layers than the weights is an error, not a shorter model ($(cat "$d/err"))"
teacher-embed --model "$d/shape.safetensors" <"$d/images.mp" >/dev/null 2>"$d/err"
[ $? = 1 ] && grep -q "'ln_final.weight'" "$d/err" &&
    pass "a wrong shape is an error naming the tensor" || failed "a wrong shape is an error naming the tensor ($(cat "$d/err"))"
sed 's/"intermediate_size": 160/"intermediate_size": 161/' "$d/hf/config.json" >"$d/c.json" && mkdir -p "$d/hf2" &&
    cp "$d/c.json" "$d/hf2/config.json" && ln -s "$d/hf/model.safetensors" "$d/hf2/model.safetensors"
teacher-embed --model "$d/hf2" <"$d/images.mp" >/dev/null 2>"$d/err"
[ $? = 1 ] && grep -q "vision_model.encoder.layers.0.mlp.fc1.weight.*expected \[161, 96\]" "$d/err" &&
    pass "config.json sizes that do not fit the weights are an error" ||
    failed "config.json sizes that do not fit the weights are an error ($(cat "$d/err"))"
$PYTHON -c 'import json,sys; c=json.load(open(sys.argv[1]))
c["vision_config"].update(hidden_size=65536, num_attention_heads=16, intermediate_size=1<<20, num_hidden_layers=1024)
json.dump(c, open(sys.argv[2], "w"))' "$d/hf/config.json" "$d/hf2/config.json"
teacher-embed --model "$d/hf2" <"$d/images.mp" >/dev/null 2>"$d/err"
rc=$?
[ $rc = 1 ] && grep -q "config.json: its sizes need .* parameters, more than .*model.safetensors holds" "$d/err" &&
    pass "config.json sizes far beyond the weights file are refused before allocating" ||
    failed "config.json sizes far beyond the weights file are refused before allocating (rc $rc: $(head -c 300 "$d/err"))"
teacher-embed --model "$tmp/nonexistent" <"$d/images.mp" >/dev/null 2>"$d/err"
[ $? = 1 ] && grep -q "nonexistent" "$d/err" && pass "a missing model path is an error naming it" ||
    failed "a missing model path is an error naming it"

# the real ViT-B/16 configuration (random weights), F32 and BF16
for dt in f32 bf16; do
    d="$tmp/vitb16_$dt"
    $ref make --config vitb16 --dtype $dt --out "$d" --images 2 --texts 2 || { failed "vitb16 $dt: reference"; continue; }
    # the f32 model's config.json leaves out every key at transformers' default
    # (CLIPTextConfig, CLIPVisionConfig, CLIPConfig): the loader must supply them
    [ $dt = f32 ] && $PYTHON - "$d/hf/config.json" <<'PY'
import json, sys
p = sys.argv[1]
c = json.load(open(p))
common = dict(num_hidden_layers=12, hidden_act="quick_gelu", layer_norm_eps=1e-5)
dflt = {"text_config": dict(common, hidden_size=512, intermediate_size=2048, num_attention_heads=8,
                            max_position_embeddings=77, vocab_size=49408),
        "vision_config": dict(common, hidden_size=768, intermediate_size=3072, num_attention_heads=12,
                              image_size=224, patch_size=32, num_channels=3)}
for k, d in dflt.items():
    c[k] = {x: v for x, v in c[k].items() if d.get(x, object()) != v}
if c.get("projection_dim") == 512:
    del c["projection_dim"]
json.dump(c, open(p, "w"), indent=2)
PY
    check "$d" "ViT-B/16 $dt" 2 77
    rm -rf "$d"
done
exit $fail
