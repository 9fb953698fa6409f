#!/bin/bash
# openclip_timm_train.sh: training parity of the OpenCLIP timm image tower
# (trunk and projection) against torch.optim in float64 (SGD with momentum
# and Adam, BatchNorm frozen), from the vendor model of
# $SHARED on PACS images: see resnet_train_ref.py.
exec "$(dirname "$0")/cnn_train" openclip_timm
