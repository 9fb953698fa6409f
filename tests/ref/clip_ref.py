#!/usr/bin/python3
"""PyTorch reference of CLIP (ViT image tower, causal text tower, projections),
written with torch.nn and named as transformers' CLIPModel, so its state dict
is the Hugging Face checkpoint layout. Random weights are saved in both naming
schemes (Hugging Face directory; OpenAI / OpenCLIP single file) in F32, F16
or BF16, with a writer of the safetensors format (8-byte little-endian header
length, JSON header, raw data). Reference embeddings are computed in float64
from the same (rounded) weights.

    clip_ref.py make --config tiny|vitb16 --dtype f32|f16|bf16 --out DIR [--seed N]
        [--images N] [--texts N] [--weights-only]
      DIR/hf/{config.json,model.safetensors}, DIR/openai.safetensors,
      DIR/images.mp (image stream), DIR/resize.mp (images of other sizes),
      DIR/tokens.i32 (texts x context, int32), DIR/pix.f32 (the images as
      CLIP-normalised model input), reference outputs DIR/ref_{clip,imagenet,
      resize,text}.f64
    clip_ref.py compare REF.f64 (STREAM.mp | RAW.f32) NAME [--tol T]
      prints PASS/FAIL: NAME with the worst |difference| of the L2-normalised
      embeddings (a stream's ids must be 0..N-1 in order, labels carried).
"""
import argparse
import json
import math
import os
import struct
import sys

import msgpack
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

CONFIGS = {
    # small enough for seconds; several heads, GELU, a partial check of every path
    "tiny": dict(
        text=dict(hidden_size=64, intermediate_size=96, num_attention_heads=4, num_hidden_layers=2,
                  max_position_embeddings=16, vocab_size=300, hidden_act="gelu"),
        vision=dict(hidden_size=96, intermediate_size=160, num_attention_heads=3, num_hidden_layers=2,
                    image_size=32, patch_size=8, hidden_act="gelu"),
        projection_dim=48),
    # the same with LayerNorm epsilons far from 1e-5: config.json's layer_norm_eps is read
    # (Hugging Face layout only: the OpenAI names carry no epsilon)
    "tiny_eps": dict(
        text=dict(hidden_size=64, intermediate_size=96, num_attention_heads=4, num_hidden_layers=2,
                  max_position_embeddings=16, vocab_size=300, hidden_act="gelu", layer_norm_eps=0.05),
        vision=dict(hidden_size=96, intermediate_size=160, num_attention_heads=3, num_hidden_layers=2,
                    image_size=32, patch_size=8, hidden_act="gelu", layer_norm_eps=0.1),
        projection_dim=48),
    # openai/clip-vit-base-patch16
    "vitb16": dict(
        text=dict(hidden_size=512, intermediate_size=2048, num_attention_heads=8, num_hidden_layers=12,
                  max_position_embeddings=77, vocab_size=49408, hidden_act="quick_gelu"),
        vision=dict(hidden_size=768, intermediate_size=3072, num_attention_heads=12, num_hidden_layers=12,
                    image_size=224, patch_size=16, hidden_act="quick_gelu"),
        projection_dim=512),
}


def act_fn(name):
    if name == "quick_gelu":
        return lambda x: x * torch.sigmoid(1.702 * x)
    return F.gelu


class Attention(nn.Module):
    def __init__(self, c, heads):
        super().__init__()
        self.heads = heads
        self.q_proj = nn.Linear(c, c)
        self.k_proj = nn.Linear(c, c)
        self.v_proj = nn.Linear(c, c)
        self.out_proj = nn.Linear(c, c)

    def forward(self, x, causal):
        B, T, C = x.shape
        hs = C // self.heads
        def split(t):
            return t.view(B, T, self.heads, hs).transpose(1, 2)
        q, k, v = split(self.q_proj(x)), split(self.k_proj(x)), split(self.v_proj(x))
        s = (q @ k.transpose(-1, -2)) / math.sqrt(hs)
        if causal:
            mask = torch.ones(T, T, dtype=torch.bool).triu(1)
            s = s.masked_fill(mask, float("-inf"))
        y = torch.softmax(s, dim=-1) @ v
        return self.out_proj(y.transpose(1, 2).reshape(B, T, C))


class MLP(nn.Module):
    def __init__(self, c, hidden, act):
        super().__init__()
        self.fc1 = nn.Linear(c, hidden)
        self.fc2 = nn.Linear(hidden, c)
        self.act = act_fn(act)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


class Layer(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        c = cfg["hidden_size"]
        self.self_attn = Attention(c, cfg["num_attention_heads"])
        self.layer_norm1 = nn.LayerNorm(c, eps=cfg.get("layer_norm_eps", 1e-5))
        self.mlp = MLP(c, cfg["intermediate_size"], cfg["hidden_act"])
        self.layer_norm2 = nn.LayerNorm(c, eps=cfg.get("layer_norm_eps", 1e-5))

    def forward(self, x, causal):
        x = x + self.self_attn(self.layer_norm1(x), causal)
        return x + self.mlp(self.layer_norm2(x))


class Encoder(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.layers = nn.ModuleList([Layer(cfg) for _ in range(cfg["num_hidden_layers"])])

    def forward(self, x, causal):
        for l in self.layers:
            x = l(x, causal)
        return x


class VisionEmbeddings(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        c, p = cfg["hidden_size"], cfg["patch_size"]
        self.class_embedding = nn.Parameter(torch.zeros(c))
        self.patch_embedding = nn.Conv2d(3, c, p, stride=p, bias=False)
        self.position_embedding = nn.Embedding((cfg["image_size"] // p) ** 2 + 1, c)

    def forward(self, pix):
        x = self.patch_embedding(pix).flatten(2).transpose(1, 2)
        cls = self.class_embedding.expand(x.shape[0], 1, -1)
        return torch.cat([cls, x], 1) + self.position_embedding.weight


class VisionModel(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.embeddings = VisionEmbeddings(cfg)
        self.pre_layrnorm = nn.LayerNorm(cfg["hidden_size"], eps=cfg.get("layer_norm_eps", 1e-5))  # sic
        self.encoder = Encoder(cfg)
        self.post_layernorm = nn.LayerNorm(cfg["hidden_size"], eps=cfg.get("layer_norm_eps", 1e-5))

    def forward(self, pix):
        x = self.encoder(self.pre_layrnorm(self.embeddings(pix)), False)
        return self.post_layernorm(x[:, 0])


class TextEmbeddings(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.token_embedding = nn.Embedding(cfg["vocab_size"], cfg["hidden_size"])
        self.position_embedding = nn.Embedding(cfg["max_position_embeddings"], cfg["hidden_size"])

    def forward(self, tok):
        return self.token_embedding(tok) + self.position_embedding.weight[: tok.shape[1]]


class TextModel(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.embeddings = TextEmbeddings(cfg)
        self.encoder = Encoder(cfg)
        self.final_layer_norm = nn.LayerNorm(cfg["hidden_size"], eps=cfg.get("layer_norm_eps", 1e-5))

    def forward(self, tok):
        x = self.final_layer_norm(self.encoder(self.embeddings(tok), True))
        # pooled at the end-of-text token: the highest id of each sequence
        return x[torch.arange(x.shape[0]), tok.argmax(dim=-1)]


class CLIP(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.vision_model = VisionModel(cfg["vision"])
        self.text_model = TextModel(cfg["text"])
        d = cfg["projection_dim"]
        self.visual_projection = nn.Linear(cfg["vision"]["hidden_size"], d, bias=False)
        self.text_projection = nn.Linear(cfg["text"]["hidden_size"], d, bias=False)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))

    def encode_image(self, pix):
        return F.normalize(self.visual_projection(self.vision_model(pix)), dim=-1)

    def encode_text(self, tok):
        return F.normalize(self.text_projection(self.text_model(tok)), dim=-1)


def randomise(model, seed):
    g = torch.Generator().manual_seed(seed)
    for name, p in model.named_parameters():
        # about 1/sqrt(fan-in): every layer changes the tokens and attention is far from uniform
        std = 1.0 / math.sqrt(p.shape[-1]) if p.dim() == 2 else 0.05
        with torch.no_grad():
            if "layer_norm" in name or "layrnorm" in name:
                base = 1.0 if name.endswith("weight") else 0.0
                p.copy_(base + 0.1 * torch.randn(p.shape, generator=g))
            elif name == "logit_scale":
                pass
            elif "patch_embedding" in name:
                # strong enough that images differ clearly after the towers
                p.copy_(0.2 * torch.randn(p.shape, generator=g))
            else:
                p.copy_(std * torch.randn(p.shape, generator=g))


# ---- safetensors ----

DTYPES = {torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16", torch.int64: "I64"}


def st_bytes(t):
    t = t.contiguous()
    if t.dtype == torch.bfloat16:
        return t.view(torch.int16).numpy().tobytes()
    return t.numpy().tobytes()


def write_safetensors(path, tensors, metadata=None):
    header, blobs, off = {}, [], 0
    for name, t in tensors.items():
        b = st_bytes(t)
        header[name] = {"dtype": DTYPES[t.dtype], "shape": list(t.shape), "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    if metadata:
        header["__metadata__"] = metadata
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    with open(path + ".tmp", "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)
    os.replace(path + ".tmp", path)


def openai_names(sd, cfg):
    """transformers' CLIPModel names -> OpenAI / OpenCLIP names"""
    o = {}
    def blocks(src, dst, n):
        for i in range(n):
            s, d = f"{src}.encoder.layers.{i}.", f"{dst}.resblocks.{i}."
            o[d + "ln_1.weight"], o[d + "ln_1.bias"] = sd[s + "layer_norm1.weight"], sd[s + "layer_norm1.bias"]
            o[d + "attn.in_proj_weight"] = torch.cat([sd[s + f"self_attn.{x}_proj.weight"] for x in "qkv"])
            o[d + "attn.in_proj_bias"] = torch.cat([sd[s + f"self_attn.{x}_proj.bias"] for x in "qkv"])
            o[d + "attn.out_proj.weight"] = sd[s + "self_attn.out_proj.weight"]
            o[d + "attn.out_proj.bias"] = sd[s + "self_attn.out_proj.bias"]
            o[d + "ln_2.weight"], o[d + "ln_2.bias"] = sd[s + "layer_norm2.weight"], sd[s + "layer_norm2.bias"]
            o[d + "mlp.c_fc.weight"], o[d + "mlp.c_fc.bias"] = sd[s + "mlp.fc1.weight"], sd[s + "mlp.fc1.bias"]
            o[d + "mlp.c_proj.weight"], o[d + "mlp.c_proj.bias"] = sd[s + "mlp.fc2.weight"], sd[s + "mlp.fc2.bias"]
    o["visual.class_embedding"] = sd["vision_model.embeddings.class_embedding"]
    o["visual.positional_embedding"] = sd["vision_model.embeddings.position_embedding.weight"]
    o["visual.conv1.weight"] = sd["vision_model.embeddings.patch_embedding.weight"]
    o["visual.ln_pre.weight"] = sd["vision_model.pre_layrnorm.weight"]
    o["visual.ln_pre.bias"] = sd["vision_model.pre_layrnorm.bias"]
    blocks("vision_model", "visual.transformer", cfg["vision"]["num_hidden_layers"])
    o["visual.ln_post.weight"] = sd["vision_model.post_layernorm.weight"]
    o["visual.ln_post.bias"] = sd["vision_model.post_layernorm.bias"]
    o["visual.proj"] = sd["visual_projection.weight"].t()
    o["token_embedding.weight"] = sd["text_model.embeddings.token_embedding.weight"]
    o["positional_embedding"] = sd["text_model.embeddings.position_embedding.weight"]
    blocks("text_model", "transformer", cfg["text"]["num_hidden_layers"])
    o["ln_final.weight"] = sd["text_model.final_layer_norm.weight"]
    o["ln_final.bias"] = sd["text_model.final_layer_norm.bias"]
    o["text_projection"] = sd["text_projection.weight"].t()
    o["logit_scale"] = sd["logit_scale"]
    return o


# ---- streams ----

def image_stream(path, images, labels=True):
    with open(path, "wb") as f:
        f.write(msgpack.packb({"schema": "image", "version": 1, "history": [["clip_ref.py"]],
                               "dtype": "u8", "layout": "hwc", "c": 3}))
        for i, im in enumerate(images):
            item = {"id": str(i), "h": im.shape[0], "w": im.shape[1], "pix": im.tobytes()}
            if labels:
                item.update(label=i % 3, **{"class": f"class{i % 3}", "domain": "photo"})
            f.write(msgpack.packb(item, use_bin_type=True))
        f.write(msgpack.packb({"end": True, "records": len(images), "dropped": 0}))


def normalise(images, mean, std):
    x = torch.from_numpy(np.stack(images)).double().permute(0, 3, 1, 2) / 255.0
    return (x - torch.tensor(mean, dtype=torch.float64).view(1, 3, 1, 1)) / torch.tensor(
        std, dtype=torch.float64).view(1, 3, 1, 1)


def make(a):
    cfg = CONFIGS[a.config]
    torch.manual_seed(a.seed)
    model = CLIP(cfg)
    randomise(model, a.seed)
    dt = {"f32": torch.float32, "f16": torch.float16, "bf16": torch.bfloat16}[a.dtype]
    sd = {k: v.detach().to(dt) for k, v in model.state_dict().items()}
    # the reference computes with the weights as stored
    model.load_state_dict({k: v.float() for k, v in sd.items()})
    model = model.double().eval()

    os.makedirs(os.path.join(a.out, "hf"), exist_ok=True)
    hf = dict(sd)
    # older transformers checkpoints carry these int64 buffers: readers must skip them
    hf["text_model.embeddings.position_ids"] = torch.arange(cfg["text"]["max_position_embeddings"]).view(1, -1)
    write_safetensors(os.path.join(a.out, "hf", "model.safetensors"), hf, {"format": "pt"})
    conf = {"architectures": ["CLIPModel"], "model_type": "clip", "projection_dim": cfg["projection_dim"],
            "logit_scale_init_value": 2.6592, "text_config": dict(dict(layer_norm_eps=1e-5), **cfg["text"]),
            "vision_config": dict(dict(layer_norm_eps=1e-5, num_channels=3), **cfg["vision"]),
            "torch_dtype": {"f32": "float32", "f16": "float16", "bf16": "bfloat16"}[a.dtype]}
    with open(os.path.join(a.out, "hf", "config.json"), "w") as f:
        json.dump(conf, f, indent=2)
    meta = {"format": "pt"}
    v, t = cfg["vision"], cfg["text"]
    if v["hidden_size"] // 64 != v["num_attention_heads"] or t["hidden_size"] // 64 != t["num_attention_heads"]:
        meta.update(vision_heads=str(v["num_attention_heads"]), text_heads=str(t["num_attention_heads"]))
    if v["hidden_act"] == "gelu":
        meta["hidden_act"] = "gelu"
    write_safetensors(os.path.join(a.out, "openai.safetensors"), openai_names(sd, cfg), meta)
    if a.weights_only:
        return

    rng = np.random.default_rng(a.seed)
    S = v["image_size"]
    # random coarse patterns, upsampled, plus noise: images that differ clearly
    images = []
    for i in range(a.images):
        coarse = rng.uniform(0, 255, (4, 4, 3))
        im = np.kron(coarse, np.ones((S // 4 + 1, S // 4 + 1, 1)))[:S, :S] + rng.normal(0, 20, (S, S, 3))
        images.append(np.clip(im, 0, 255).astype(np.uint8))
    image_stream(os.path.join(a.out, "images.mp"), images)
    with torch.no_grad():
        pix = normalise(images, CLIP_MEAN, CLIP_STD)
        pix.float().numpy().tofile(os.path.join(a.out, "pix.f32"))
        model.encode_image(pix).numpy().tofile(os.path.join(a.out, "ref_clip.f64"))
        model.encode_image(normalise(images, IMAGENET_MEAN, IMAGENET_STD)).numpy().tofile(
            os.path.join(a.out, "ref_imagenet.f64"))
        # other sizes, resized with PIL's bilinear filter (what --resize promises)
        from PIL import Image
        other = [np.clip(rng.normal(128, 60, (S + 7 * k + 3, S * 2 - k, 3)), 0, 255).astype(np.uint8)
                 for k in range(2)]
        image_stream(os.path.join(a.out, "resize.mp"), other)
        rs = [np.asarray(Image.fromarray(im).resize((S, S), Image.BILINEAR)) for im in other]
        model.encode_image(normalise(rs, CLIP_MEAN, CLIP_STD)).numpy().tofile(os.path.join(a.out, "ref_resize.f64"))
        # token sequences: start token, random ids, end token (the highest id), zero padding
        ctx, V = t["max_position_embeddings"], t["vocab_size"]
        tok = np.zeros((a.texts, ctx), np.int32)
        for i in range(a.texts):
            n = int(rng.integers(0, ctx - 1))
            tok[i, 0] = V - 2
            tok[i, 1:n + 1] = rng.integers(1, V - 2, n)
            tok[i, min(n + 1, ctx - 1)] = V - 1
        tok.tofile(os.path.join(a.out, "tokens.i32"))
        model.encode_text(torch.from_numpy(tok).long()).numpy().tofile(os.path.join(a.out, "ref_text.f64"))


def read_stream(path):
    with open(path, "rb") as f:
        objs = list(msgpack.Unpacker(f, raw=False))
    h, items, tr = objs[0], objs[1:-1], objs[-1]
    assert h["schema"] == "embedding" and tr.get("end") is True, "not a complete embedding stream"
    d = h["dim"]
    ids = [it["id"] for it in items]
    assert ids == [str(i) for i in range(len(items))], f"ids out of order: {ids[:5]}"
    for i, it in enumerate(items):
        if "label" in it:
            assert it["label"] == i % 3 and it["class"] == f"class{i % 3}", f"item {i}: labels not carried over"
    return np.stack([np.frombuffer(it["vec"], "<f4") for it in items]).reshape(-1, d) if items else np.zeros((0, d))


def compare(a):
    ref = np.fromfile(a.ref, np.float64)
    try:
        if a.got.endswith(".mp"):
            got = read_stream(a.got)
        else:
            got = np.fromfile(a.got, np.float32)
        got = got.reshape(-1)
        if got.shape != ref.shape:
            raise AssertionError(f"{got.size} values, the reference has {ref.size}")
        diff = float(np.abs(got - ref).max()) if ref.size else 0.0
        ok = diff <= a.tol
        print(f"{'PASS' if ok else 'FAIL'}: {a.name} (max |diff| {diff:.2e}, tolerance {a.tol:g})")
    except Exception as e:  # any malformed output is a failed check, with the reason
        print(f"FAIL: {a.name} ({e})")


def main():
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("make")
    m.add_argument("--config", choices=CONFIGS, default="tiny")
    m.add_argument("--dtype", choices=["f32", "f16", "bf16"], default="f32")
    m.add_argument("--out", required=True)
    m.add_argument("--seed", type=int, default=1)
    m.add_argument("--images", type=int, default=5)
    m.add_argument("--texts", type=int, default=4)
    m.add_argument("--weights-only", action="store_true", help="no inputs or reference outputs")
    c = sub.add_parser("compare")
    c.add_argument("ref")
    c.add_argument("got")
    c.add_argument("name")
    c.add_argument("--tol", type=float, default=1e-4)
    a = p.parse_args()
    torch.set_num_threads(1)
    make(a) if a.cmd == "make" else compare(a)


if __name__ == "__main__":
    main()
