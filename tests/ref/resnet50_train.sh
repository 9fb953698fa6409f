#!/bin/bash
# resnet50_train.sh: ResNet-50 training parity against torch.optim in float64
# (SGD with momentum and Adam; BatchNorm frozen and training): see
# resnet_train_ref.py.
exec "$(dirname "$0")/cnn_train" resnet50
