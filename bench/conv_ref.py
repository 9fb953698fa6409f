"""conv_ref: PyTorch's side of bench/conv.sh: the 3x3 stride-1 convolutions of
ResNet-18 at 224x224 (layer1..layer4), torch.nn.functional.conv2d forward,
input gradient alone and weight gradient alone, in milliseconds, the best of
REPS runs after one warm-up.

    conv_ref.py [B] [REPS]      (defaults 32, 3; threads: THREADS, default 2)

Output: one line per layer, "name C HW fwd dx dw"."""
import os
import sys
import time

import torch
import torch.nn.functional as F

B = int(sys.argv[1]) if len(sys.argv) > 1 else 32
REPS = int(sys.argv[2]) if len(sys.argv) > 2 else 3
torch.set_num_threads(int(os.environ.get("THREADS", "2")))
torch.manual_seed(1)


def best(fn):
    t = []
    for r in range(REPS + 1):
        t0 = time.perf_counter()
        fn()
        t.append(time.perf_counter() - t0)
    return min(t[1:]) * 1e3


for name, C, HW in (("layer1", 64, 56), ("layer2", 128, 28), ("layer3", 256, 14), ("layer4", 512, 7)):
    x = torch.randn(B, C, HW, HW)
    w = torch.randn(C, C, 3, 3)
    g = torch.randn(B, C, HW, HW)
    with torch.no_grad():
        fwd = best(lambda: F.conv2d(x, w, padding=1))
    xg = x.clone().requires_grad_(True)
    wg = w.clone().requires_grad_(True)

    def dx():
        y = F.conv2d(xg, w, padding=1)
        torch.autograd.grad(y, xg, g)

    def dw():
        y = F.conv2d(x, wg, padding=1)
        torch.autograd.grad(y, wg, g)

    # the gradient timings include the forward autograd needs: it is
    # measured above and taken off
    tdx, tdw = best(dx) - fwd, best(dw) - fwd
    print("%s %d %d %.2f %.2f %.2f" % (name, C, HW, fwd, tdx, tdw), flush=True)
