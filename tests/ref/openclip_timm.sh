#!/bin/bash
# openclip_timm.sh: the OpenCLIP image tower with a timm mobilenetv2_100
# trunk (student --arch openclip_timm) against an independent PyTorch
# rebuild (openclip_timm_ref.py): student-embed's features of a generated
# model (a hub directory with a text tower the student must not read, the
# file itself, normalisation from open_clip_config.json and from metadata)
# and of the vendor model of $SHARED on PACS images, within 1e-4 relative of
# float64; the refusals of other trunks and unknown tensors. Training
# parity: openclip_timm_train.sh.
set -u
cd "${VL2V_ROOT:-$(dirname "$0")/../..}" || exit 2
PY=${PYTHON:-/usr/bin/python3}
d=$(mktemp -d)
trap 'rm -rf "$d"' EXIT

"$PY" tests/ref/openclip_timm_ref.py prepare "$d" || { echo "FAIL: openclip_timm: PyTorch reference"; exit 1; }
student-embed --weights "$d/gen" --batch 2 <"$d/img.mp" >"$d/gen.emb.mp" \
    || echo "FAIL: openclip_timm: student-embed on the directory exited with $?"
student-embed --arch openclip_timm --weights "$d/gen/open_clip_model.safetensors" --batch 2 <"$d/img.mp" \
    >"$d/file.emb.mp" || echo "FAIL: openclip_timm: student-embed on the file exited with $?"
student-embed --weights "$d/meta.safetensors" <"$d/img.mp" >"$d/meta.emb.mp" \
    || echo "FAIL: openclip_timm: student-embed with metadata exited with $?"
if [ -e "$d/real.mp" ]; then
    student-embed --weights "$SHARED/data/vendor/pacs-mnv2" <"$d/real.mp" >"$d/real.emb.mp" \
        || echo "FAIL: openclip_timm: student-embed on the vendor model exited with $?"
fi
refuse() { # refuse WHAT PATTERN student-embed ARGS...
    local what=$1 pat=$2
    shift 2
    if "$@" <"$d/img.mp" >/dev/null 2>"$d/err"; then
        echo "FAIL: openclip_timm: $what: accepted"
    elif grep -q -- "$pat" "$d/err"; then
        echo "PASS: openclip_timm: $what: refused, naming it ($(head -c 200 "$d/err"))"
    else
        echo "FAIL: openclip_timm: $what: the message does not name '$pat': $(cat "$d/err")"
    fi
}
refuse "another timm trunk's tensors" "unsupported timm trunk.*visual.trunk.conv_stem.weight" student-embed --weights "$d/efficient.safetensors"
refuse "a config naming another timm trunk" "efficientnet_b0" student-embed --weights "$d/badcfg"
refuse "an unknown tensor in the image tower" "visual.trunk.blocks.0.0.se.weight" \
    student-embed --weights "$d/extra.safetensors"
refuse "--arch resnet18 on it" "conv1.weight" student-embed --arch resnet18 --weights "$d/meta.safetensors"
"$PY" tests/ref/openclip_timm_ref.py compare "$d"
