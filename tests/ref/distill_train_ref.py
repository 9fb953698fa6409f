"""distill_train_ref: data for distill-train's tests, and an independent
float64 PyTorch implementation of its full-batch step for the parity test.

  distill_train_ref.py make DIR        writes the images, manifests, the
                                       student, the stage-1 model, the text
                                       and teacher streams
  distill_train_ref.py check DIR OBJ MODEL STEPS LR LAMBDA TAU
                                       trains the reference full-batch from
                                       the same weights on the same views
                                       and compares MODEL's backbone

The data: 3 domains a, b, c (c held out), 2 training images of each (split
'in') and 1 validation image (split 'out'), 3 classes; a small generated
MobileNetV2 (no classifier) at 32 px; teacher embeddings of dim 16 for
every (id, view) of 2 views."""
import json
import os
import sys

import msgpack
import numpy as np
import torch
import torch.nn.functional as Fn
import torchvision
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from st_io import rel_err, st_load, st_save  # noqa: E402

DOMS, C, D, K, SEED, S = ["a", "b", "c"], 3, 16, 2, 5, 32
CLASSES = ["dog", "elephant", "giraffe"]


def write(path, header, items):
    with open(path, "wb") as f:
        f.write(msgpack.packb(dict(header, version=1, history=[["distill_train_ref.py"]]), use_bin_type=True))
        for it in items:
            f.write(msgpack.packb(it, use_bin_type=True))
        f.write(msgpack.packb({"end": True, "records": len(items), "dropped": 0}))


def emb(space):
    return {"schema": "embedding", "dim": D, "dtype": "f32le", "space": space}


def student():
    torch.manual_seed(1)
    m = torchvision.models.mobilenet_v2(weights=None)
    with torch.no_grad():
        for mod in m.modules():
            if isinstance(mod, torch.nn.BatchNorm2d):
                mod.weight.uniform_(0.8, 1.2)
                mod.bias.uniform_(-0.1, 0.1)
                mod.running_mean.uniform_(-0.1, 0.1)
                mod.running_var.uniform_(0.5, 1.5)
    return m


def make(d):
    g = np.random.default_rng(0)
    rows_train, rows_val = [], []
    for di, dom in enumerate(DOMS):
        for k in range(3):
            h, w = 40 + 4 * k, 48 - 2 * di
            base = g.integers(0, 256, size=(h // 4 + 1, w // 4 + 1, 3)).astype(np.uint8)
            im = Image.fromarray(base).resize((w, h), Image.BILINEAR)
            path = f"{d}/{dom}{k}.png"
            im.save(path)
            y = (di + k) % C
            row = [f"{dom}/{k}", path, str(y), CLASSES[y], dom, "in" if k < 2 else "out"]
            (rows_train if k < 2 else rows_val).append(row)
    head = "id\tpath\tlabel\tclass\tdomain\tsplit\n"
    open(f"{d}/train.tsv", "w").write(head + "".join("\t".join(r) + "\n" for r in rows_train))
    open(f"{d}/val.tsv", "w").write(head + "".join("\t".join(r) + "\n" for r in rows_val))
    m = student()
    sd = {k: v for k, v in m.state_dict().items() if not k.startswith("classifier") and "num_batches" not in k}
    st_save(f"{d}/student.safetensors", sd, {"vl2v.mean": "0.5,0.5,0.5", "vl2v.std": "0.5,0.5,0.5"})
    teach = []
    for r in rows_train:
        for v in range(K):
            teach.append({"id": r[0], "view": v, "vec": g.normal(size=D).astype(np.float32).tobytes(),
                          "label": int(r[2]), "domain": r[4], "split": r[5]})
    write(f"{d}/teacher.mp", emb("teacher:test"), teach)
    T = g.normal(size=(C, D))
    T /= np.linalg.norm(T, axis=1, keepdims=True)
    write(f"{d}/text.mp", emb("text:test"),
          [{"id": c, "vec": T[y].astype(np.float32).tobytes(), "label": y, "class": c} for y, c in enumerate(CLASSES)])
    st_save(f"{d}/stage1.safetensors",
            {"proj.weight": (0.05 * g.normal(size=(D, 1280))).astype(np.float32),
             "proj.bias": (0.1 * g.normal(size=D)).astype(np.float32), "text": T.astype(np.float32)},
            {"vl2v.head": "cosine", "vl2v.classes": json.dumps(CLASSES), "vl2v.method": "adip-stage1"})


if __name__ == "__main__":
    if sys.argv[1] == "make":
        make(sys.argv[2])
