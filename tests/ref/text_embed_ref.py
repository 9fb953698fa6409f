#!/usr/bin/python3
"""PyTorch reference of text-embed: CLIP's prompt ensembling over the text
tower of tests/ref/clip_ref.py, tokenised by tests/ref/tok_ref.py.

    text_embed_ref.py make --text tiny|vitb16 --bpe GZ --out DIR [--seed N] [--openai]
      random weights with the real vocabulary (49408) and context (77), a
      tiny image tower: DIR/hf/{config.json,model.safetensors,vocab.json,
      merges.txt} and, with --openai, DIR/openai.safetensors
    text_embed_ref.py compare DIR STREAM NAME --classes FILE [--template T ...]
        [--templates FILE] [--truncate] [--tol T]
      recomputes the class embeddings in float64 from DIR's weights and prints
      PASS/FAIL: NAME with the worst |difference| (ids, labels, classes and
      first prompts checked too)
    text_embed_ref.py bench DIR --classes FILE --templates FILE --bpe GZ
        [--batch N] [--threads N] [--pad] [--max-classes K]
      the same in float32, timed (tokenising excluded): prints the seconds
"""
import argparse
import json
import os
import sys

import msgpack
import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import clip_ref  # noqa: E402
import tok_ref  # noqa: E402

TEXT = {
    "tiny": dict(hidden_size=64, intermediate_size=96, num_attention_heads=4, num_hidden_layers=2),
    "vitb16": dict(hidden_size=512, intermediate_size=2048, num_attention_heads=8, num_hidden_layers=12),
}


def config(name):
    cfg = json.loads(json.dumps(clip_ref.CONFIGS["tiny"]))
    cfg["text"].update(TEXT[name], max_position_embeddings=77, vocab_size=49408,
                       hidden_act="quick_gelu" if name == "vitb16" else "gelu")
    cfg["projection_dim"] = 512 if name == "vitb16" else 48
    return cfg


def build(name, seed):
    cfg = config(name)
    torch.manual_seed(seed)
    model = clip_ref.CLIP(cfg)
    clip_ref.randomise(model, seed)
    return cfg, model


def make(a):
    cfg, model = build(a.text, a.seed)
    sd = {k: v.detach().float() for k, v in model.state_dict().items()}
    hf = os.path.join(a.out, "hf")
    os.makedirs(hf, exist_ok=True)
    clip_ref.write_safetensors(os.path.join(hf, "model.safetensors"), sd, {"format": "pt"})
    conf = {"architectures": ["CLIPModel"], "model_type": "clip", "projection_dim": cfg["projection_dim"],
            "logit_scale_init_value": 2.6592, "text_config": dict(cfg["text"], layer_norm_eps=1e-5),
            "vision_config": dict(cfg["vision"], layer_norm_eps=1e-5, num_channels=3), "torch_dtype": "float32"}
    with open(os.path.join(hf, "config.json"), "w") as f:
        json.dump(conf, f, indent=2)
    tok = tok_ref.SimpleTokenizer(a.bpe)
    with open(os.path.join(hf, "vocab.json"), "w", encoding="utf-8") as f:
        json.dump(tok.encoder, f, ensure_ascii=False)
    merges = sorted(tok.bpe_ranks, key=tok.bpe_ranks.get)
    with open(os.path.join(hf, "merges.txt"), "w", encoding="utf-8") as f:
        f.write("#version: 0.2\n" + "".join(" ".join(m) + "\n" for m in merges))
    if a.openai:
        meta = {"format": "pt"}
        v, t = cfg["vision"], cfg["text"]
        if v["hidden_size"] // 64 != v["num_attention_heads"] or t["hidden_size"] // 64 != t["num_attention_heads"]:
            meta.update(vision_heads=str(v["num_attention_heads"]), text_heads=str(t["num_attention_heads"]))
        if t["hidden_act"] == "gelu":
            meta["hidden_act"] = "gelu"
        clip_ref.write_safetensors(os.path.join(a.out, "openai.safetensors"), clip_ref.openai_names(sd, cfg), meta)
    with open(os.path.join(a.out, "name"), "w") as f:
        f.write("%s %d\n" % (a.text, a.seed))


def reference(d, classes, templates, truncate, bpe):
    name, seed = open(os.path.join(d, "name")).read().split()
    cfg, model = build(name, int(seed))
    model = model.double().eval()
    tok = tok_ref.SimpleTokenizer(bpe)
    out, first = [], []
    with torch.no_grad():
        for c in classes:
            prompts = [t.replace("{}", c.replace("_", " ")) for t in templates]
            toks = torch.tensor([tok.tokenize(p, 77, truncate) for p in prompts])
            T = int((toks != 0).sum(1).max())
            e = model.encode_text(toks[:, :T])  # causal: the padding after the end token changes nothing
            out.append(F.normalize(e.mean(0), dim=0).numpy())
            first.append(prompts[0])
    return np.stack(out), first


def bench(a):
    """PyTorch float32 prompt ensembling, timed: batches of a.batch prompts,
    each cut to its longest prompt (as text-embed does) or padded to 77 (as
    CLIP's own code does)"""
    import time
    torch.set_num_threads(a.threads)
    name, seed = open(os.path.join(a.dir, "name")).read().split()
    cfg, model = build(name, int(seed))
    model = model.float().eval()
    tok = tok_ref.SimpleTokenizer(a.bpe)
    classes = [ln.rstrip("\r\n") for ln in open(a.classes, encoding="utf-8") if ln.rstrip("\r\n")]
    templates = [ln.rstrip("\r\n") for ln in open(a.templates, encoding="utf-8") if ln.rstrip("\r\n")]
    classes = classes[:a.max_classes] if a.max_classes else classes
    toks = torch.tensor([tok.tokenize(t.replace("{}", c.replace("_", " "))) for c in classes for t in templates])
    t0 = time.perf_counter()
    embs = []
    with torch.no_grad():
        for i in range(0, len(toks), a.batch):
            b = toks[i:i + a.batch]
            if not a.pad:
                b = b[:, :int((b != 0).sum(1).max())]
            embs.append(model.encode_text(b))
        e = torch.cat(embs).view(len(classes), len(templates), -1)
        F.normalize(e.mean(1), dim=-1)
    print("%.6f" % (time.perf_counter() - t0))


def compare(a):
    classes = [ln.rstrip("\r\n") for ln in open(a.classes, encoding="utf-8") if ln.rstrip("\r\n")]
    templates = list(a.template or [])
    if a.templates:
        templates += [ln.rstrip("\r\n") for ln in open(a.templates, encoding="utf-8") if ln.rstrip("\r\n")]
    templates = templates or ["a photo of a {}"]
    try:
        ref, first = reference(a.dir, classes, templates, a.truncate, a.bpe)
        with open(a.stream, "rb") as f:
            objs = list(msgpack.Unpacker(f, raw=False))
        h, items, tr = objs[0], objs[1:-1], objs[-1]
        assert h["schema"] == "embedding" and tr.get("end") is True, "not a complete embedding stream"
        assert h["space"].startswith("text:"), f"space {h['space']}"
        assert h["templates"] == templates, f"header templates {h['templates']}"
        assert tr["records"] == len(classes) == len(items), f"{len(items)} items for {len(classes)} classes"
        for k, it in enumerate(items):
            want = dict(id=classes[k], label=k, text=first[k], **{"class": classes[k]})
            for key, v in want.items():
                assert it.get(key) == v, f"item {k}: {key} is {it.get(key)!r}, want {v!r}"
        got = np.stack([np.frombuffer(it["vec"], "<f4") for it in items]).astype(np.float64)
        assert got.shape == ref.shape, f"shape {got.shape}, reference {ref.shape}"
        diff = float(np.abs(got - ref).max())
        ok = diff <= a.tol
        print(f"{'PASS' if ok else 'FAIL'}: {a.name} (max |diff| {diff:.2e}, tolerance {a.tol:g})")
    except Exception as e:  # any malformed output is a failed check, with the reason
        print(f"FAIL: {a.name} ({e})")


def main():
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("make")
    m.add_argument("--text", choices=TEXT, default="tiny")
    m.add_argument("--bpe", required=True)
    m.add_argument("--out", required=True)
    m.add_argument("--seed", type=int, default=1)
    m.add_argument("--openai", action="store_true")
    c = sub.add_parser("compare")
    c.add_argument("dir")
    c.add_argument("stream")
    c.add_argument("name")
    c.add_argument("--classes", required=True)
    c.add_argument("--template", action="append")
    c.add_argument("--templates")
    c.add_argument("--truncate", action="store_true")
    c.add_argument("--bpe", required=True)
    c.add_argument("--tol", type=float, default=1e-4)
    b = sub.add_parser("bench")
    b.add_argument("dir")
    b.add_argument("--classes", required=True)
    b.add_argument("--templates", required=True)
    b.add_argument("--bpe", required=True)
    b.add_argument("--batch", type=int, default=64)
    b.add_argument("--threads", type=int, default=2)
    b.add_argument("--pad", action="store_true")
    b.add_argument("--max-classes", type=int, default=0)
    a = p.parse_args()
    {"make": make, "compare": compare, "bench": bench}[a.cmd](a)


if __name__ == "__main__":
    main()
