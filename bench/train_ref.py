"""train_ref: the PyTorch side of bench/train.sh (Debian's torch, float32).
Same work as bench/train.c: a training step is forward, projection to 512,
the cosine loss, backward and Adam over backbone and head (BatchNorm frozen:
model.eval()); forward-only passes run under torch.no_grad().
Prints "ips N" and "peak_mb N".

  train_ref.py ARCH(resnet18|resnet50|vit_b16) train|forward B SIZE STEPS"""
import os
import resource
import sys
import time

import torch
import torch.nn.functional as Fn
import torchvision

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "ref"))

torch.set_num_threads(int(os.environ.get("THREADS", "2")))
arch, mode, B, S, steps = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
if arch.startswith("resnet"):
    m = getattr(torchvision.models, arch)()
    m.fc = torch.nn.Identity()
    F = 512 if arch == "resnet18" else 2048
    feats = m
else:
    from vit_ref import ViT
    m = ViT(img=224, dim=768, heads=12, classes=1000)
    F = 768
    feats = m.features
m.eval()
head = torch.nn.Linear(F, 512)
x = torch.randn(B, 3, S, S)
it = Fn.normalize(torch.randn(B, 512), dim=1)
t = Fn.normalize(torch.randn(7, 512), dim=1)
y = torch.arange(B) % 7
ps = [p for n, p in m.named_parameters() if not n.startswith("head.")] + list(head.parameters())
opt = torch.optim.Adam(ps, lr=5e-5)
for s in range(1 + steps):
    if s == 1:
        t0 = time.time()
    if mode == "forward":
        with torch.no_grad():
            feats(x)
        continue
    opt.zero_grad()
    z = head(feats(x))
    loss = -(0.5 * Fn.cosine_similarity(z, it, dim=1) + 0.5 * Fn.cosine_similarity(z, t[y], dim=1)).mean()
    loss.backward()
    opt.step()
dt = time.time() - t0
print("ips %.3f" % (B * steps / dt))
print("peak_mb %.0f" % (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024))
