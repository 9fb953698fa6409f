#!/bin/bash
# openclip_clip: an OpenCLIP model with a timm image tower (hub directory:
# open_clip_config.json + open_clip_model.safetensors) through teacher-embed
# and text-embed against an independent PyTorch rebuild
# (openclip_clip_ref.py): image embeddings (timm mobilenetv2_100, average
# pool, projection, normalised, with the config's mean/std by default) and
# text embeddings (exact GELU, the shipped CLIP BPE) within 1e-4, on a
# small generated model and on the vendor model of $SHARED with 16 PACS
# images and the 7 class prompts; the config's sizes honoured, other trunks
# refused by name.
set -u
: "${VL2V_ROOT:=$(cd "$(dirname "$0")/../.." && pwd)}"
: "${PYTHON:=/usr/bin/python3}"
cd "$VL2V_ROOT" || exit 1
export PATH="$VL2V_ROOT/bin:$PATH"
SHARED=${SHARED:-$(cd .. && pwd)/shared}
export SHARED
BPE=share/bpe_simple_vocab_16e6.txt.gz
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
ref="$PYTHON tests/ref/openclip_clip_ref.py"
fail=0
pass() { echo "PASS: $*"; }
failed() { echo "FAIL: $*"; fail=1; }
CN=tests/ref/classnames

$ref make "$tmp" "$BPE" || { failed "openclip_clip: reference model"; exit 1; }
M=$tmp/gen
teacher-embed --model "$M" --batch 2 <"$tmp/gen.mp" >"$tmp/gen.img.mp" 2>"$tmp/err" ||
    failed "openclip_clip: teacher-embed on the generated model ($(head -c 300 "$tmp/err"))"
text-embed --model "$M" --classes $CN/pacs.txt -o "$tmp/gen.txt.mp" 2>"$tmp/err" ||
    failed "openclip_clip: text-embed on the generated model ($(head -c 300 "$tmp/err"))"
$ref compare "$tmp" gen "$tmp/gen.img.mp" "$tmp/gen.txt.mp" || fail=1
$PYTHON - "$tmp/gen.img.mp" <<'PY' && pass "openclip_clip: the header names the config's normalisation" ||
import msgpack, sys
h = next(iter(msgpack.Unpacker(open(sys.argv[1], "rb"), raw=False)))
sys.exit(0 if h["normalize"] == "mean 0.25 0.5 0.75 std 0.5 0.25 0.125" else 1)
PY
    failed "openclip_clip: the header names the config's normalisation"
teacher-embed --model "$M" --normalize clip <"$tmp/gen.mp" >"$tmp/clipnorm.mp" 2>/dev/null &&
    ! cmp -s <(mpdump "$tmp/clipnorm.mp" | sed 1d) <(mpdump "$tmp/gen.img.mp" | sed 1d) &&
    pass "openclip_clip: --normalize clip overrides the config's" ||
    failed "openclip_clip: --normalize clip overrides the config's"

# the black-box form against the same model as its vendor
teacher-embed --exec "teacher-embed --model $M" --model-id gen <"$tmp/gen.mp" >"$tmp/bb.img.mp" 2>"$tmp/err" &&
    text-embed --exec "teacher-embed --model $M" --model-id gen --classes $CN/pacs.txt >"$tmp/bb.txt.mp" 2>>"$tmp/err" &&
    $ref compare "$tmp" gen "$tmp/bb.img.mp" "$tmp/bb.txt.mp" | sed 's/openclip_clip: gen/openclip_clip: gen, --exec/' ||
    failed "openclip_clip: the black-box forms ($(head -c 300 "$tmp/err"))"

# the config is honoured: sizes that are not the tensors', another trunk
mkdir "$tmp/bad"
ln -s "$M/open_clip_model.safetensors" "$tmp/bad/open_clip_model.safetensors"
expect() { # NAME PATTERN TOOL ARGS...
    local name=$1 pat=$2
    shift 2
    "$@" >/dev/null 2>"$tmp/err"
    local rc=$?
    [ $rc = 1 ] && grep -q -- "$pat" "$tmp/err" && pass "openclip_clip: $name ($(head -c 200 "$tmp/err"))" ||
        failed "openclip_clip: $name: status $rc, want 1 and '$pat': $(head -c 300 "$tmp/err")"
}
sed 's/"width": 32/"width": 48/' "$M/open_clip_config.json" >"$tmp/bad/open_clip_config.json"
expect "a text width other than the tensors' is an error" "text_cfg.width is not the tensors' 32" \
    text-embed --model "$tmp/bad" --classes $CN/pacs.txt
sed 's/"layers": 2/"layers": 3/' "$M/open_clip_config.json" >"$tmp/bad/open_clip_config.json"
expect "a layer count other than the tensors' is an error" "text_cfg.layers is not the tensors' 2" \
    text-embed --model "$tmp/bad" --classes $CN/pacs.txt
sed 's/mobilenetv2_100/convnext_tiny/' "$M/open_clip_config.json" >"$tmp/bad/open_clip_config.json"
expect "another timm trunk is an error naming it" "timm trunk 'convnext_tiny' is not supported" \
    teacher-embed --model "$tmp/bad" <"$tmp/gen.mp"
expect "the weights file alone is an error asking for the directory" "needs its directory" \
    teacher-embed --model "$M/open_clip_model.safetensors" <"$tmp/gen.mp"
sed 's/"quick_gelu": false/"quick_gelu": true/' "$M/open_clip_config.json" >"$tmp/bad/open_clip_config.json"
text-embed --model "$tmp/bad" --classes $CN/pacs.txt >"$tmp/qg.mp" 2>/dev/null &&
    ! $ref compare "$tmp" gen "$tmp/gen.img.mp" "$tmp/qg.mp" >/dev/null &&
    pass "openclip_clip: quick_gelu true gives other text embeddings (the activation is the config's)" ||
    failed "openclip_clip: quick_gelu true gives other text embeddings"

# the vendor model
V=$SHARED/data/vendor/pacs-mnv2
if [ -r "$V/open_clip_model.safetensors" ] && [ -d "$SHARED/data/PACS" ]; then
    if $ref vendor "$tmp" "$BPE"; then
        teacher-embed --model "$V" <"$tmp/vendor.mp" >"$tmp/v.img.mp" 2>"$tmp/err" ||
            failed "openclip_clip: teacher-embed on the vendor model ($(head -c 300 "$tmp/err"))"
        text-embed --model "$V" --classes $CN/pacs.txt -o "$tmp/v.txt.mp" 2>"$tmp/err" ||
            failed "openclip_clip: text-embed on the vendor model ($(head -c 300 "$tmp/err"))"
        $ref compare "$tmp" vendor "$tmp/v.img.mp" "$tmp/v.txt.mp" || fail=1
    else
        failed "openclip_clip: vendor reference"
    fi
else
    echo "PASS: openclip_clip: (no vendor model or PACS in $SHARED: skipped)"
fi
exit $fail
