#!/bin/bash
# openclip_timm_train.sh: training parity of the OpenCLIP timm image tower
# (trunk and projection) against torch.optim in float64 (SGD with momentum
# and Adam, BatchNorm frozen): a generated tower on random inputs, and the
# vendor model of $SHARED on PACS images when it is there; see
# resnet_train_ref.py.
dir=$(dirname "$0")
"$dir/cnn_train" openclip_timm_gen
rc=$?
if [ -e "${SHARED:-../shared}/data/vendor/pacs-mnv2/open_clip_model.safetensors" ]; then
    "$dir/cnn_train" openclip_timm || rc=1
fi
exit $rc
