"""align_fit_ref: an independent PyTorch float64 implementation of stage 1 of
VL2V-ADiP (and of the linear probe) for tests/ref/align_fit.sh.

  align_fit_ref.py make DIR      writes the streams and the initial heads
  align_fit_ref.py check DIR     compares align-fit's model files with the reference

The data: 3 source domains and a held-out one, training items with two views
each (split 'in', plus 'out' items that must be ignored), teacher embeddings
for every (id, view) and a few of other items, 5 classes of text, validation
items of the source domains (split 'out') and of the held-out domain. The
reference trains full-batch from the given head with torch.optim.Adam,
evaluates with the Predict rule after step 0, every EVERY steps and after
the last, keeps the best mean per-domain accuracy (ties: the later)."""
import json
import sys

import msgpack
import numpy as np
import torch
import torch.nn.functional as Fn

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from st_io import rel_err, st_load, st_save  # noqa: E402

DS, D, C = 24, 16, 5
DOMS = ["art", "cartoon", "photo", "sketch"]  # sketch is held out
STEPS, EVERY, LR, LAM = 25, 6, 3e-3, 0.5


def write(path, header, items):
    with open(path, "wb") as f:
        f.write(msgpack.packb(dict(header, version=1, history=[["align_fit_ref.py"]]), use_bin_type=True))
        for it in items:
            f.write(msgpack.packb(it, use_bin_type=True))
        f.write(msgpack.packb({"end": True, "records": len(items), "dropped": 0}))


def emb(dim, space):
    return {"schema": "embedding", "dim": dim, "dtype": "f32le", "space": space}


def f32(v):
    return np.asarray(v, np.float32).tobytes()


def make(d):
    g = np.random.default_rng(0)
    proto = g.normal(size=(C, DS))           # class directions in feature space
    shift = g.normal(size=(len(DOMS), DS))   # domain shifts
    tdir = g.normal(size=(C, D))
    feats, teach = [], []
    n = 0
    for di, dom in enumerate(DOMS):
        for k in range(14):
            y = int(g.integers(C))
            iid = f"{dom}/{k}.jpg"
            split = "in" if k < 10 else "out"
            for v in range(2):
                x = proto[y] + 0.8 * shift[di] + 1.2 * g.normal(size=DS)
                feats.append({"id": iid, "view": v, "vec": f32(x), "label": y, "domain": dom, "split": split,
                              "class": f"c{y}"})
                t = tdir[y] + 0.7 * g.normal(size=D)
                teach.append({"id": iid, "view": v, "vec": f32(t), "label": y, "domain": dom})
            n += 1
    teach.append({"id": "unused/0.jpg", "view": 0, "vec": f32(g.normal(size=D))})
    val = []
    for di, dom in enumerate(DOMS):
        for k in range(9):
            y = int(g.integers(C))
            x = proto[y] + 0.8 * shift[di] + 1.5 * g.normal(size=DS)
            val.append({"id": f"{dom}/v{k}.jpg", "vec": f32(x), "label": y, "domain": dom, "split": "out"})
    text = [{"id": f"c{c}", "vec": f32(tdir[c] + 0.3 * g.normal(size=D)), "label": c, "class": f"c{c}"}
            for c in range(C)]
    write(f"{d}/feat.mp", emb(DS, "student:toy"), feats)
    write(f"{d}/teacher.mp", emb(D, "teacher:toy"), teach)
    write(f"{d}/text.mp", emb(D, "text:toy"), text)
    write(f"{d}/val.mp", emb(DS, "student:toy"), val)
    b = 1 / np.sqrt(DS)
    st_save(f"{d}/init_cos.safetensors", {"proj.weight": g.uniform(-b, b, (D, DS)).astype(np.float32),
                                          "proj.bias": g.uniform(-b, b, D).astype(np.float32)})
    st_save(f"{d}/init_ce.safetensors", {"fc.weight": g.uniform(-b, b, (C, DS)).astype(np.float32),
                                         "fc.bias": g.uniform(-b, b, C).astype(np.float32)})


def read(path):
    with open(path, "rb") as f:
        objs = list(msgpack.Unpacker(f, raw=False))
    h, items = objs[0], objs[1:-1]
    return h, items


def vec(it):
    return np.frombuffer(it["vec"], np.float32).astype(np.float64)


def reference(d, loss):
    _, feats = read(f"{d}/feat.mp")
    _, teach = read(f"{d}/teacher.mp")
    _, text = read(f"{d}/text.mp")
    _, val = read(f"{d}/val.mp")
    tmap = {(t["id"], t.get("view")): vec(t) for t in teach}
    train = [f for f in feats if f["split"] == "in" and f["domain"] != "sketch"]
    X = torch.tensor(np.stack([vec(f) for f in train]))
    It = torch.tensor(np.stack([tmap[(f["id"], f["view"])] for f in train]))
    y = torch.tensor([f["label"] for f in train])
    T = torch.tensor(np.stack([vec(t) for t in sorted(text, key=lambda t: t["label"])]))
    T = Fn.normalize(T, dim=1)
    vs = [v for v in val if v["domain"] != "sketch"]
    XV = torch.tensor(np.stack([vec(v) for v in vs]))
    yv = torch.tensor([v["label"] for v in vs])
    dv = [v["domain"] for v in vs]
    init, _ = st_load(f"{d}/init_{loss}.safetensors")
    name = "proj" if loss == "cos" else "fc"
    lin = torch.nn.Linear(DS, D if loss == "cos" else C).double()
    with torch.no_grad():
        lin.weight.copy_(torch.tensor(init[f"{name}.weight"].astype(np.float64)))
        lin.bias.copy_(torch.tensor(init[f"{name}.bias"].astype(np.float64)))
    opt = torch.optim.Adam(lin.parameters(), lr=LR)

    def logits(x):
        z = lin(x)
        return 100 * Fn.normalize(z, dim=1) @ T.t() if loss == "cos" else z

    best, best_step, best_w, accs = -1, -1, None, []
    for step in range(STEPS):
        opt.zero_grad()
        z = lin(X)
        if loss == "cos":
            L = -(LAM * Fn.cosine_similarity(z, It) + (1 - LAM) * Fn.cosine_similarity(z, T[y])).mean()
        else:
            L = Fn.cross_entropy(z, y)
        L.backward()
        opt.step()
        if step % EVERY == 0 or step == STEPS - 1:
            with torch.no_grad():
                pred = logits(XV).argmax(1)
            per = [float((pred[[i for i, x in enumerate(dv) if x == dom]] ==
                          yv[[i for i, x in enumerate(dv) if x == dom]]).double().mean())
                   for dom in sorted(set(dv))]
            acc = float(np.mean(per))
            accs.append((step, acc))
            if acc >= best:
                best, best_step = acc, step
                best_w = {k: v.detach().clone() for k, v in lin.state_dict().items()}
    return best_w, best_step, best, accs, name


def check(d):
    ok = True
    for loss in ("cos", "ce"):
        w, step, acc, accs, name = reference(d, loss)
        got, meta = st_load(f"{d}/model_{loss}.safetensors")
        e = max(rel_err(got[f"{name}.weight"], w["weight"].numpy()), rel_err(got[f"{name}.bias"], w["bias"].numpy()))
        good = e < 1e-4
        ok &= good
        print(f"{'PASS' if good else 'FAIL'}: align_fit: --loss {loss}, {STEPS} full-batch Adam steps from a given head: "
              f"the selected head within 1e-4 of float64 PyTorch (rel err {e:.2e})")
        good = int(meta["vl2v.best_step"]) == step and abs(float(meta["vl2v.val_acc"]) - acc) < 1e-9
        ok &= good
        print(f"{'PASS' if good else 'FAIL'}: align_fit: --loss {loss}: the same selected step ({meta['vl2v.best_step']} "
              f"vs {step}) and source validation accuracy ({float(meta['vl2v.val_acc']):.4f} vs {acc:.4f}); "
              f"evaluations {[(s, round(a, 3)) for s, a in accs]}")
        _, preds = read(f"{d}/pred_{loss}.mp")
        per = {}
        for p in preds:
            if p["domain"] != "sketch":
                per.setdefault(p["domain"], []).append(p["pred"] == p["label"])
        pacc = float(np.mean([np.mean(v) for v in per.values()]))
        good = abs(pacc - float(meta["vl2v.val_acc"])) < 1e-12
        ok &= good
        print(f"{'PASS' if good else 'FAIL'}: align_fit: --loss {loss}: predict on the validation items gives the "
              f"accuracy align-fit selected with ({pacc:.4f} vs {float(meta['vl2v.val_acc']):.4f})")
        moved = len(set(round(a, 6) for _, a in accs)) > 1
        print(f"{'PASS' if moved else 'FAIL'}: align_fit: --loss {loss}: the validation accuracy moves during training")
        ok &= moved
        if loss == "cos":
            _, text = read(f"{d}/text.mp")
            T = np.stack([vec(t) for t in sorted(text, key=lambda t: t["label"])])
            T /= np.linalg.norm(T, axis=1, keepdims=True)
            e = rel_err(got["text"], T)
            good = e < 1e-6 and json.loads(meta["vl2v.classes"]) == [f"c{c}" for c in range(C)] and \
                json.loads(meta["vl2v.sources"]) == ["art", "cartoon", "photo"] and \
                meta["vl2v.student_space"] == "student:toy" and meta["vl2v.teacher_space"] == "teacher:toy"
            ok &= good
            print(f"{'PASS' if good else 'FAIL'}: align_fit: the model file holds the normalised text matrix "
                  f"(rel err {e:.1e}), the classes, the source domains and both spaces")
    return ok


if __name__ == "__main__":
    if sys.argv[1] == "make":
        make(sys.argv[2])
    else:
        sys.exit(0 if check(sys.argv[2]) else 1)
