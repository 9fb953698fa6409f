#!/usr/bin/python3
"""The PyTorch side of bench/teacher.sh: tests/ref/clip_ref.py's CLIP at the
ViT-B/16 configuration (random weights, float32, inference mode), timed on
the same inputs as the C side.

    teacher_ref.py image PIX.f32 B REPEAT THREADS
    teacher_ref.py text TOKENS.i32 B T REPEAT THREADS
prints "encode SECONDS" (fastest repetition) and "maxrss KIB"."""
import os
import resource
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "ref"))
import numpy as np
import torch

import clip_ref


def main():
    what = sys.argv[1]
    if what == "image":
        path, B, repeat, threads = sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
    else:
        path, B, T, repeat, threads = sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6])
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = clip_ref.CLIP(clip_ref.CONFIGS["vitb16"]).eval()
    clip_ref.randomise(model, 0)
    if what == "image":
        x = torch.from_numpy(np.fromfile(path, np.float32).reshape(B, 3, 224, 224))
        run = lambda: model.encode_image(x)
    else:
        x = torch.from_numpy(np.fromfile(path, np.int32).reshape(B, T)).long()
        run = lambda: model.encode_text(x)
    best = 1e30
    with torch.inference_mode():
        for _ in range(repeat):
            t0 = time.perf_counter()
            run()
            best = min(best, time.perf_counter() - t0)
    print(f"encode {best:.4f}")
    print(f"maxrss {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}")


if __name__ == "__main__":
    main()
