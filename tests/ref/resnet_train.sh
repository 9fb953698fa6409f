#!/bin/bash
# resnet_train.sh: training parity of resnet18 against torch.optim in float64 (Adam, SGD with
# momentum; BatchNorm frozen and in training mode): see resnet_train_ref.py.
exec "$(dirname "$0")/cnn_train" resnet18
