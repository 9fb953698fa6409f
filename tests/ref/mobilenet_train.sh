#!/bin/bash
# mobilenet_train.sh: MobileNetV2 training parity against torch.optim in
# float64 (SGD with momentum and Adam, BatchNorm frozen), from the real
# pretrained weights of $SHARED on PACS images: see resnet_train_ref.py.
exec "$(dirname "$0")/cnn_train" mobilenet_v2
