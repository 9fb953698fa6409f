#!/bin/bash
# resnet.sh: torchvision ResNet-18/34/50 and MobileNetV2 feature parity:
# student-embed's features of an image stream against torchvision's, random
# weights made here, and the real pretrained MobileNetV2 of $SHARED on real
# PACS images. Training parity: resnet_train.sh, resnet50_train.sh,
# mobilenet_train.sh.
set -u
cd "${VL2V_ROOT:-$(dirname "$0")/../..}" || exit 2
PY=${PYTHON:-/usr/bin/python3}
d=$(mktemp -d)
trap 'rm -rf "$d"' EXIT

"$PY" tests/ref/resnet_ref.py prepare "$d" || { echo "FAIL: resnet: PyTorch reference"; exit 1; }
for a in resnet18 resnet34 resnet50 mobilenet_v2; do
    arch=$a
    # detection by names and shapes for one of them
    [ $a = resnet34 ] && arch=auto
    student-embed --arch $arch --weights "$d/$a.safetensors" --batch 2 <"$d/img.mp" >"$d/$a.emb.mp" \
        || echo "FAIL: resnet: student-embed --arch $arch exited with $?"
done
if [ -e "$d/real.mp" ]; then
    student-embed --weights "$SHARED/data/pretrained/mobilenet_v2_imagenet.safetensors" --mean 0.5,0.5,0.5 \
        --std 0.5,0.5,0.5 <"$d/real.mp" >"$d/real.emb.mp" || echo "FAIL: resnet: student-embed on the real MobileNetV2"
fi
tools/pth2safetensors "$d/resnet18.pth" "$d/pth.safetensors" \
    && student-embed --weights "$d/pth.safetensors" --batch 2 <"$d/img.mp" >"$d/pth.emb.mp" \
    || echo "FAIL: resnet: pth2safetensors | student-embed exited with $?"

# a mismatched weight file is an error naming the tensor
if student-embed --arch resnet50 --weights "$d/resnet18.safetensors" <"$d/img.mp" >/dev/null 2>"$d/err"; then
    echo "FAIL: resnet: --arch resnet50 with ResNet-18 weights succeeded"
elif grep -q "layer1.0.conv1.weight\|conv3" "$d/err"; then
    echo "PASS: resnet: wrong --arch is an error naming the tensor ($(head -c 160 "$d/err"))"
else
    echo "FAIL: resnet: wrong --arch message does not name a tensor: $(cat "$d/err")"
fi
"$PY" tests/ref/resnet_ref.py compare "$d"
