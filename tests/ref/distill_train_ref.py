"""distill_train_ref: data for distill-train's tests, and an independent
float64 PyTorch implementation of its full-batch step for the parity test.

  distill_train_ref.py make DIR        writes the images, manifests, the
                                       student, the stage-1 model, the text
                                       and teacher streams
  distill_train_ref.py check DIR STEPS LR LAMBDA TAU EVERY OBJ...
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
from resnet_ref import features  # noqa: E402
import swad_ref  # noqa: E402

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
    st_save(f"{d}/init.safetensors", {"fc.weight": (0.03 * g.normal(size=(C, 1280))).astype(np.float32),
                                      "fc.bias": (0.1 * g.normal(size=C)).astype(np.float32)})
    # SD: the tower's own output is the embedding (here 1280-dim)
    teach = [dict(t, vec=g.normal(size=1280).astype(np.float32).tobytes()) for t in teach]
    write(f"{d}/teacher_sd.mp", dict(emb("teacher:test"), dim=1280), teach)
    T2 = g.normal(size=(C, 1280))
    T2 /= np.linalg.norm(T2, axis=1, keepdims=True)
    write(f"{d}/text_sd.mp", dict(emb("text:test"), dim=1280),
          [{"id": c, "vec": T2[y].astype(np.float32).tobytes(), "label": y, "class": c} for y, c in enumerate(CLASSES)])
    st_save(f"{d}/stage1.safetensors",
            {"proj.weight": (0.05 * g.normal(size=(D, 1280))).astype(np.float32),
             "proj.bias": (0.1 * g.normal(size=D)).astype(np.float32), "text": T.astype(np.float32)},
            {"vl2v.head": "cosine", "vl2v.classes": json.dumps(CLASSES), "vl2v.method": "adip-stage1"})


def read(path):
    return list(msgpack.Unpacker(open(path, "rb"), raw=False))[1:-1]


def pixels(items):
    x = np.stack([np.frombuffer(it["pix"], np.uint8).reshape(it["h"], it["w"], 3) for it in items])
    x = torch.from_numpy(x.astype(np.float64) / 255).permute(0, 3, 1, 2)
    return (x - 0.5) / 0.5


def check(d, obj, steps, lr, lam, tau, every):
    """The objective obj (adip, erm, kd, sd), full batch, BatchNorm frozen,
    Adam, in float64: the iterates, the validation loss (the Predict rule's
    cross-entropy) at each evaluation, SWAD's window by the reference rule
    and the average over it, against distill-train's model d/OBJ_ref.safetensors
    and its window."""
    torch.set_default_dtype(torch.float64)
    torch.set_num_threads(1)
    m = student().double()
    sd, _ = st_load(f"{d}/student.safetensors")
    m.load_state_dict({k: torch.from_numpy(v.astype(np.float64)) for k, v in sd.items()}, strict=False)
    m.eval()
    views = [x for x in read(f"{d}/views.mp") if x["domain"] != "c"]
    x = pixels(views)
    tfile, xfile = (f"{d}/teacher_sd.mp", f"{d}/text_sd.mp") if obj == "sd" else (f"{d}/teacher.mp", f"{d}/text.mp")
    teach = {(t["id"], t["view"]): np.frombuffer(t["vec"], np.float32) for t in read(tfile)}
    it = torch.tensor(np.stack([teach[(v["id"], v["view"])] for v in views]), dtype=torch.float64)
    y = torch.tensor([v["label"] for v in views])
    val = [v for v in read(f"{d}/val.mp") if v["domain"] != "c"]
    xv, yv = pixels(val), torch.tensor([v["label"] for v in val])
    if obj == "adip":
        h, _ = st_load(f"{d}/stage1.safetensors")
        W = torch.tensor(h["proj.weight"], dtype=torch.float64)
        b = torch.tensor(h["proj.bias"], dtype=torch.float64)
        T = torch.tensor(h["text"], dtype=torch.float64)
    else:
        T = torch.tensor(np.stack([np.frombuffer(t["vec"], np.float32) for t in sorted(read(xfile), key=lambda t: t["label"])]),
                         dtype=torch.float64)
    T = T / T.norm(dim=1, keepdim=True)
    names = [k for k, _ in m.named_parameters() if k.startswith("features.")]
    params = [p for k, p in m.named_parameters() if k.startswith("features.")]
    if obj in ("erm", "kd"):
        h, _ = st_load(f"{d}/init.safetensors")
        W = torch.tensor(h["fc.weight"], dtype=torch.float64, requires_grad=True)
        b = torch.tensor(h["fc.bias"], dtype=torch.float64, requires_grad=True)
        params += [W, b]
        names += ["fc.weight", "fc.bias"]
    opt = torch.optim.Adam(params, lr=lr)

    def cosine(z):
        return -(lam * Fn.cosine_similarity(z, it, dim=1) + (1 - lam) * Fn.cosine_similarity(z, T[y], dim=1)).mean()

    def logits(xx):
        f = features(m, xx)
        if obj in ("erm", "kd"):
            return f @ W.T + b
        z = f @ W.T + b if obj == "adip" else f
        return 100 * Fn.normalize(z, dim=1) @ T.T

    iters, losses, ends = [], [], []
    for step in range(steps):
        opt.zero_grad()
        f = features(m, x)
        if obj == "adip":
            loss = cosine(f @ W.T + b)
        elif obj == "sd":
            loss = cosine(f)
        else:
            s = f @ W.T + b
            loss = Fn.cross_entropy(s, y)
            if obj == "kd":
                tl = 100 * Fn.normalize(it, dim=1) @ T.T
                loss = loss + tau * tau * Fn.kl_div(Fn.log_softmax(s / tau, 1), Fn.log_softmax(tl / tau, 1),
                                                    reduction="batchmean", log_target=True)
        loss.backward()
        opt.step()
        iters.append([p.detach().clone() for p in params])
        if step % every == 0 or step == steps - 1:
            with torch.no_grad():
                losses.append(float(Fn.cross_entropy(logits(xv), yv)))
                ends.append(step)
    t_s, t_e, conv, stop = swad_ref.rule(losses, 3, 6, 0.3)
    if t_s is None:
        t_s = t_e = len(losses) - 1
    lo = ends[t_s - 1] + 1 if t_s > 0 else 0
    hi = ends[t_e]
    got, meta = st_load(f"{d}/{obj}_ref.safetensors")
    w = json.loads(meta["vl2v.steps_averaged"])
    print("%s: distill_train parity %s: SWAD's window on the real run is the reference's (steps %d..%d; got %d..%d)" % (
        "PASS" if (w["from"], w["to"]) == (lo, hi) else "FAIL", obj, lo, hi, w["from"], w["to"]))
    worst, which = 0, ""
    for k, name in enumerate(names):
        want = torch.stack([iters[s][k] for s in range(lo, hi + 1)]).mean(0).numpy()
        e = rel_err(got[name], want)
        if e > worst:
            worst, which = e, name
    moved = max(rel_err(iters[-1][k].numpy(), sd[n]) for k, n in enumerate(names) if n in sd)
    print("%s: distill_train parity %s: %d full-batch Adam steps: the averaged backbone%s within 1e-4 of float64 "
          "torch (worst %.2g at %s; the weights moved %.2g)" % (
              "PASS" if worst < 1e-4 and moved > 1e-6 else "FAIL", obj, steps,
              " and head are" if obj in ("erm", "kd") else " is", worst, which, moved))


if __name__ == "__main__":
    if sys.argv[1] == "make":
        make(sys.argv[2])
    elif sys.argv[1] == "check":
        for obj in sys.argv[8:]:
            check(sys.argv[2], obj, int(sys.argv[3]), float(sys.argv[4]), float(sys.argv[5]), float(sys.argv[6]),
                  int(sys.argv[7]))
