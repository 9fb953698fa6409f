#!/bin/bash
# resnet_train.sh: ResNet-18 training parity against torch.optim in float64
# (SGD with momentum and Adam; BatchNorm frozen and training): see
# resnet_train_ref.py.
exec "$(dirname "$0")/cnn_train" resnet18
