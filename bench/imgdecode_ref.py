#!/usr/bin/python3
"""imgdecode_ref: the PIL + torchvision reference of bench/imgdecode.sh.

usage: imgdecode_ref.py MODE MANIFEST SIZE

Runs DomainBed's transforms on PIL images for every path of the manifest on
one thread and prints "N WALL_SECONDS CPU_SECONDS". MODE:
  eval     ImageFolder's loader (open, convert RGB) + Resize((S, S)), pixels
           taken out as a uint8 array (what imgdecode writes)
  evalt    the same + ToTensor + Normalize (DomainBed's whole eval transform)
  augment  loader + RandomResizedCrop(S, (0.7, 1)) + RandomHorizontalFlip +
           ColorJitter(.3, .3, .3, .3) + RandomGrayscale, as a uint8 array"""
import sys
import time

import numpy as np
import torch
import torchvision.transforms as T
from PIL import Image

torch.set_num_threads(1)
mode, manifest, size = sys.argv[1], sys.argv[2], int(sys.argv[3])
paths = []
with open(manifest) as fp:
    for line in fp:
        f = line.rstrip("\n").split("\t")
        if f[0] != "id":
            paths.append(f[1])

if mode == "eval":
    tf = T.Resize((size, size), interpolation=T.InterpolationMode.BILINEAR)
    out = np.asarray
elif mode == "evalt":
    tf = T.Compose([T.Resize((size, size)), T.ToTensor(), T.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])])
    out = lambda x: x
elif mode == "augment":
    tf = T.Compose([T.RandomResizedCrop(size, scale=(0.7, 1.0)), T.RandomHorizontalFlip(),
                    T.ColorJitter(0.3, 0.3, 0.3, 0.3), T.RandomGrayscale()])
    out = np.asarray
else:
    sys.exit(f"imgdecode_ref.py: unknown mode {mode}")

torch.manual_seed(0)
t0, c0 = time.perf_counter(), time.process_time()
for p in paths:
    with open(p, "rb") as f:
        img = Image.open(f).convert("RGB")
    out(tf(img))
print(len(paths), time.perf_counter() - t0, time.process_time() - c0)
