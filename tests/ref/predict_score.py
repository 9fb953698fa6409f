"""predict_score: numpy references for predict and score.

gen DIR: random heads (cosine, linear), a text stream, feature streams in the
student's and the teacher's spaces, and prediction streams of many runs
(methods x held-out domains x seeds, and a zero-shot run), written in the
real formats. check DIR: compares what predict and score made of them with
the rules computed here in float64: cosine logits 100 cos(F Wp^T + bp, T),
linear logits F W^T + b, argmax with ties to the lowest index; per run the
accuracy per domain x split; over runs, per method and held-out domain the
mean and the standard error (population std / sqrt(n), DomainBed's
collect_results) and the average of the per-domain means."""
import json
import sys

import msgpack
import numpy as np

sys.path.insert(0, "tests/ref")
from st_io import read_stream, st_save  # noqa: E402

CLASSES = ["dog", "elephant", "giraffe", "guitar", "horse", "house", "person"]
DOMAINS = ["art_painting", "cartoon", "photo", "sketch"]
C, D, DS, N = len(CLASSES), 24, 40, 300
TOL = 1e-5
failures = 0


def report(ok, what):
    global failures
    print(("PASS: " if ok else "FAIL: ") + "predict_score: " + what)
    failures += not ok


def write_stream(path, header, items):
    with open(path, "wb") as f:
        f.write(msgpack.packb(dict({"version": 1, "history": [["gen"]]}, **header)))
        for it in items:
            f.write(msgpack.packb(it, use_bin_type=True))
        f.write(msgpack.packb({"end": True, "records": len(items), "dropped": 0}))


def emb_stream(path, space, X, meta):
    items = []
    for i, x in enumerate(X):
        it = {"id": meta["id"][i], "vec": x.astype("<f4").tobytes()}
        for k in ("label", "domain", "split", "view"):
            if meta[k][i] is not None:
                it[k] = meta[k][i]
        items.append(it)
    write_stream(path, {"schema": "embedding", "dim": X.shape[1], "dtype": "f32le", "space": space}, items)


def head_meta(kind, method, seed, sources):
    return {"vl2v.head": kind, "vl2v.classes": json.dumps(CLASSES), "vl2v.student_space": "student:mobilenet_v2",
            "vl2v.teacher_space": "teacher:clip-test", "vl2v.method": method, "vl2v.seed": str(seed),
            "vl2v.sources": json.dumps(sources), "vl2v.settings": '{"lr":0.001,"steps":5000}'}


def gen(d):
    r = np.random.default_rng(7)
    f32 = np.float32
    Wp, bp = r.standard_normal((D, DS)).astype(f32) * 0.2, r.standard_normal(D).astype(f32)
    T = r.standard_normal((C, D)).astype(f32)
    T /= np.linalg.norm(T, axis=1, keepdims=True)
    st_save(d + "/cos.safetensors", {"proj.weight": Wp, "proj.bias": bp, "text": T},
            head_meta("cosine", "adip-stage1", 3, DOMAINS[1:]))
    Wf, bf = r.standard_normal((C, DS)).astype(f32), r.standard_normal(C).astype(f32)
    st_save(d + "/lin.safetensors", {"fc.weight": Wf, "fc.bias": bf}, head_meta("linear", "erm-probe", 0, DOMAINS[:3]))
    # features: some rows tied (two equal text rows make equal logits), a zero vector
    F = r.standard_normal((N, DS)).astype(f32) * 3
    meta = {"id": ["%s/%d.jpg" % (DOMAINS[i % 4], i) for i in range(N)],
            "label": [int(r.integers(0, C)) if i % 10 else None for i in range(N)],
            "domain": [DOMAINS[i % 4] for i in range(N)],
            "split": ["out" if r.random() < 0.2 else "in" for i in range(N)],
            "view": [i % 2 if i % 3 == 0 else None for i in range(N)]}
    emb_stream(d + "/feat.mp", "student:mobilenet_v2", F, meta)
    Z = r.standard_normal((N, D)).astype(f32)
    Z[5] = 0
    emb_stream(d + "/proj.mp", "teacher:clip-test", Z, meta)
    # the zero-shot text stream, out of label order, with two equal rows (ties)
    Tt = r.standard_normal((C, D)).astype(f32) * 2
    Tt[4] = Tt[2]
    order = r.permutation(C)
    write_stream(d + "/text.mp", {"schema": "embedding", "dim": D, "dtype": "f32le", "space": "text:clip-test"},
                 [{"id": CLASSES[k], "vec": Tt[k].tobytes(), "label": int(k), "class": CLASSES[k]} for k in order])
    np.savez(d + "/ref.npz", Wp=Wp, bp=bp, T=T, Wf=Wf, bf=bf, F=F, Z=Z, Tt=Tt)

    # prediction streams of runs: methods x held-out domains x seeds; each
    # run scores every domain; adip has one (domain, seed) run missing
    runs = []
    for method, seeds, settings in (("erm-probe", (0, 1, 2), '{"lr":0.01}'), ("adip-stage1", (0, 1), '{"lr":0.001}')):
        for h in DOMAINS:
            for s in seeds:
                if method == "adip-stage1" and h == "photo" and s == 1:
                    continue
                runs.append((method, s, [x for x in DOMAINS if x != h], settings))
    runs.append(("zeroshot", None, [], ""))
    for i, (method, seed, sources, settings) in enumerate(runs):
        items = []
        for j in range(int(r.integers(150, 250))):
            label = int(r.integers(0, C))
            pred = label if r.random() < 0.4 + 0.1 * (i % 5) else int(r.integers(0, C))
            lg = np.zeros(C, dtype=f32)
            lg[pred] = 1
            items.append({"id": "x%d" % j, "pred": pred, "logits": lg.tobytes(), "label": label,
                          "domain": DOMAINS[j % 4], "split": "out" if r.random() < 0.2 else "in"})
        items.append({"id": "unlabelled", "pred": 0, "logits": np.zeros(C, dtype=f32).tobytes(), "domain": "photo"})
        write_stream("%s/run%02d.mp" % (d, i), {"schema": "prediction", "classes": CLASSES, "method": method,
                                                 "seed": seed, "sources": sources, "settings": settings}, items)
    with open(d + "/runs.txt", "w") as f:
        f.write("\n".join("%s/run%02d.mp" % (d, i) for i in range(len(runs))) + "\n")


def normalize(x):
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def check_pred(path, want, ids_from, what, method=None):
    h, items, trl = read_stream(path)
    _, inp, _ = read_stream(ids_from)
    got = np.array([np.frombuffer(it["logits"], "<f4") for it in items])
    pred = np.array([it["pred"] for it in items])
    err = np.abs(got - want).max()
    report(len(items) == len(inp) and err < TOL, "%s: logits within %g of float64 numpy (max %.2e)" % (what, TOL, err))
    # argmax of the float32 logits, ties to the lowest index, as np.argmax
    report((pred == got.argmax(1)).all() and (pred == want.astype(np.float32).argmax(1)).all(),
           "%s: pred is the argmax (ties: lowest index)" % what)
    keys = all(it["id"] == x["id"] and all(it.get(k) == x.get(k) for k in ("label", "domain", "split", "view"))
               for it, x in zip(items, inp))
    report(keys, "%s: id, label, domain, split and view carried over" % what)
    if method:
        report(h["classes"] == CLASSES and h["method"] == method, "%s: header classes and method %s" % (what, method))
    return h, items


def check(d):
    z = np.load(d + "/ref.npz")
    Wp, bp, T = (z[k].astype(np.float64) for k in ("Wp", "bp", "T"))
    F, Z, Tt = (z[k].astype(np.float64) for k in ("F", "Z", "Tt"))
    Wf, bf = z["Wf"].astype(np.float64), z["bf"].astype(np.float64)
    h, _ = check_pred(d + "/p_cos.mp", 100 * normalize(F @ Wp.T + bp) @ normalize(T).T, d + "/feat.mp",
                      "cosine head on student features", "adip-stage1")
    report(h["seed"] == 3 and h["sources"] == DOMAINS[1:] and h["settings"] == '{"lr":0.001,"steps":5000}',
           "cosine head: seed, sources and settings from the head's metadata")
    check_pred(d + "/p_proj.mp", 100 * normalize(Z) @ normalize(T).T, d + "/proj.mp",
               "cosine head on projected features (a zero vector scores 0)")
    check_pred(d + "/p_lin.mp", F @ Wf.T + bf, d + "/feat.mp", "linear head", "erm-probe")
    h, items = check_pred(d + "/p_zs.mp", 100 * normalize(Z) @ normalize(Tt).T, d + "/proj.mp",
                          "zero-shot text rows (out of label order, two equal)", "zeroshot")
    report(h["seed"] is None and h["sources"] == [] and h["settings"] == "",
           "zero-shot: seed nil, no sources, no settings")
    check_score(d)


def accuracies(path):
    """(domain, split) -> (correct, total), split 'all' for the whole domain; and the header."""
    h, items, _ = read_stream(path)
    acc = {}
    for it in items:
        if it.get("label") is None:
            continue
        for s in (it.get("split"), "all"):
            c = acc.setdefault((it.get("domain"), s), [0, 0])
            c[0] += it["pred"] == it["label"]
            c[1] += 1
    return acc, h


def check_score(d):
    acc, h = accuracies(d + "/run00.mp")
    with open(d + "/single.json") as f:
        got = json.load(f)
    cells = {(c["domain"], c["split"]): c for c in got["cells"]}
    ok = len(cells) == len(acc) and got["unlabelled"] == 1
    for k, (cor, tot) in acc.items():
        c = cells.get(k)
        ok = ok and c is not None and c["correct"] == cor and c["total"] == tot and \
            c["accuracy"] == 100 * cor / tot and c["held_out"] == (k[0] not in h["sources"])
    report(ok, "score, one run: correct, total and accuracy per domain x split and per domain")

    with open(d + "/runs.txt") as f:
        paths = f.read().split()
    runs = [accuracies(p) for p in paths]
    with open(d + "/table.json") as f:
        got = json.load(f)
    ok = [fg["figure"] for fg in got["figures"]] == ["in", "all"]
    for fg in got["figures"]:
        rows = {r["method"]: r for r in fg["rows"]}
        ok = ok and list(rows) == ["erm-probe", "adip-stage1", "zeroshot"]
        for method, row in rows.items():
            means = []
            for dom in DOMAINS:
                a = [100 * acc[(dom, fg["figure"])][0] / acc[(dom, fg["figure"])][1]
                     for acc, h in runs if h["method"] == method and dom not in h["sources"]]
                mean, se = np.mean(a), np.std(a) / np.sqrt(len(a))
                cell = row["domains"][dom]
                ok = ok and cell["runs"] == len(a) and abs(cell["mean"] - mean) < 1e-9 and abs(cell["se"] - se) < 1e-9
                means.append(mean)
            ok = ok and abs(row["avg"] - np.mean(means)) < 1e-9
    report(ok, "score, %d runs: per method and held-out domain mean +- SE over seeds, and the average of the means,"
           " for the in split and the whole domain (zero-shot fills every column)" % len(paths))


if __name__ == "__main__":
    {"gen": gen, "check": check}[sys.argv[1]](sys.argv[2])
    sys.exit(1 if failures else 0)
