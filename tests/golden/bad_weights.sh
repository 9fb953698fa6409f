#!/bin/bash
# bad_weights.sh: weights holding NaN or infinity fail every model loader at
# load, naming the file and the tensor, with exit 1, no output file and
# nothing cached: teacher-embed --model (a CLIP file and a Hugging Face
# directory, tests/ref/clip_ref.py's tiny model), text-embed --model,
# student-embed --weights and predict --weights (a ResNet-18, a NaN in a
# BatchNorm buffer). Valid weights run, so the failures are the values'.
set -u
cd "${VL2V_ROOT:-$(dirname "$0")/../..}" || exit 2
export PATH=$PWD/bin:$PATH
PY=${PYTHON:-/usr/bin/python3}
d=$(mktemp -d)
trap 'rm -rf "$d"' EXIT
ok() { if [ "$1" = 0 ]; then echo "PASS: bad weights: $2"; else echo "FAIL: bad weights: $2"; fi; }

"$PY" tests/ref/clip_ref.py make --config tiny --dtype f32 --out "$d/clip" --images 2 --texts 1 >/dev/null ||
    { echo "FAIL: bad weights: making the tiny CLIP"; exit 1; }
"$PY" - "$d" <<'PY' || { echo "FAIL: bad weights: making the test weights"; exit 1; }
import json, shutil, struct, sys, torch, torchvision
sys.path.insert(0, "tests/ref")
from st_io import st_save
d = sys.argv[1]

def poison(src, dst, name, index, value):
    """src with element index of tensor name (F32, F16 or BF16) set to value."""
    raw = bytearray(open(src, "rb").read())
    n = struct.unpack("<Q", raw[:8])[0]
    t = json.loads(raw[8:8 + n])[name]
    size = {"F32": 4, "F16": 2, "BF16": 2}[t["dtype"]]
    at = 8 + n + t["data_offsets"][0] + index * size
    x = torch.tensor([value], dtype=torch.float32)
    if t["dtype"] == "F16": b = x.half().view(torch.int16).numpy().tobytes()
    elif t["dtype"] == "BF16": b = x.bfloat16().view(torch.int16).numpy().tobytes()
    else: b = x.numpy().tobytes()
    raw[at:at + size] = b
    open(dst, "wb").write(bytes(raw))

c = d + "/clip"
poison(c + "/openai.safetensors", d + "/nan.safetensors", "visual.proj", 3, float("nan"))
poison(c + "/openai.safetensors", d + "/inf.safetensors", "visual.conv1.weight", 48, float("-inf"))
poison(c + "/openai.safetensors", d + "/text-inf.safetensors", "token_embedding.weight", 0, float("-inf"))
shutil.copytree(c + "/hf", d + "/hfbad")
poison(c + "/hf/model.safetensors", d + "/hfbad/model.safetensors", "visual_projection.weight", 1, float("inf"))
torch.manual_seed(0)
st_save(d + "/r18.safetensors", dict(torchvision.models.resnet18().state_dict()))
poison(d + "/r18.safetensors", d + "/r18nan.safetensors", "layer1.0.bn1.running_var", 2, float("nan"))
meta = {"vl2v.head": "linear", "vl2v.classes": json.dumps(["a", "b"]), "vl2v.student_space": "student:resnet18"}
st_save(d + "/head.safetensors", {"fc.weight": torch.ones(2, 512), "fc.bias": torch.zeros(2)}, meta)
PY

c=$d/clip
teacher-embed --model "$c/openai.safetensors" <"$c/images.mp" | mpcat --check >/dev/null
ok $? "teacher-embed: the valid model runs"
for m in nan inf; do
    mkdir -p "$d/cache-$m"
    teacher-embed --model "$d/$m.safetensors" --cache "$d/cache-$m" -o "$d/t-$m.mp" <"$c/images.mp" 2>"$d/e"
    rc=$?
    want="tensor 'visual.proj': NaN at \[0, 3\]"
    [ $m = inf ] && want="tensor 'visual.conv1.weight': -infinity at \[0, 0, 6, 0\]"
    [ $rc = 1 ] && grep -q "$m.safetensors: $want" "$d/e" && [ ! -e "$d/t-$m.mp" ] &&
        [ -z "$(find "$d/cache-$m" -type f)" ]
    ok $? "teacher-embed --model with $m: exit 1 naming the tensor, no output, nothing cached ($(head -c 160 "$d/e"))"
done
# the text tower is loaded (and checked) only where it is used
teacher-embed --model "$d/text-inf.safetensors" <"$c/images.mp" | mpcat --check >/dev/null
ok $? "teacher-embed: -infinity in the text tower, which images do not load: the images run"
teacher-embed --model "$d/hfbad" <"$c/images.mp" 2>"$d/e" | mpcat --check >/dev/null 2>&1
[ "${PIPESTATUS[0]}" = 1 ] && grep -q "tensor 'visual_projection.weight': +infinity at \\[0, 1\\]" "$d/e"
ok $? "teacher-embed --model DIR (Hugging Face names) with +infinity: exit 1 ($(head -c 160 "$d/e"))"
printf 'cat\ndog\n' >"$d/classes.txt"
text-embed --model "$d/text-inf.safetensors" --classes "$d/classes.txt" -o "$d/text.mp" 2>"$d/e"
[ $? = 1 ] && grep -q "tensor 'token_embedding.weight': -infinity at \[0, 0\]" "$d/e" && [ ! -e "$d/text.mp" ]
ok $? "text-embed --model with -infinity: exit 1 naming the tensor, no output ($(head -c 160 "$d/e"))"

"$PY" - "$d/img.mp" <<'PY'
import sys, numpy as np
sys.path.insert(0, "tests/ref")
from st_io import write_image_stream
r = np.random.default_rng(1)
write_image_stream(sys.argv[1], [("a", r.integers(0, 256, (32, 32, 3), dtype=np.uint8))])
PY
student-embed --weights "$d/r18.safetensors" <"$d/img.mp" | mpcat --check >/dev/null
ok $? "student-embed: the valid weights run"
student-embed --weights "$d/r18nan.safetensors" -o "$d/s.mp" <"$d/img.mp" 2>"$d/e"
[ $? = 1 ] && grep -q "r18nan.safetensors: tensor 'layer1.0.bn1.running_var': NaN at \\[2\\]" "$d/e" && [ ! -e "$d/s.mp" ]
ok $? "student-embed --weights with NaN in a buffer: exit 1 naming the tensor, no output ($(head -c 160 "$d/e"))"
predict --model "$d/head.safetensors" --weights "$d/r18nan.safetensors" -o "$d/p.mp" <"$d/img.mp" 2>"$d/e"
[ $? = 1 ] && grep -q "^predict: .*r18nan.safetensors: tensor 'layer1.0.bn1.running_var': NaN at \\[2\\]" "$d/e" &&
    [ ! -e "$d/p.mp" ]
ok $? "predict --weights with NaN: exit 1 naming the tensor, no output ($(head -c 160 "$d/e"))"
