"""openclip_clip_ref: PyTorch side of tests/ref/openclip_clip.sh.

An independent rebuild (torch only: no open_clip, no timm) of a whole
OpenCLIP model with a timm image tower, as open_clip's CLIP class computes
it: the image tower of openclip_timm_ref.py (timm mobilenetv2_100, average
pool, visual.head.proj), then L2 normalisation; the text tower open_clip's
TextTransformer: token_embedding + positional_embedding, resblocks (ln_1,
nn.MultiheadAttention with a causal mask, ln_2, mlp.c_fc, exact GELU (or
QuickGELU when quick_gelu), mlp.c_proj), ln_final, the end-of-text token
(argmax of the ids), @ text_projection, L2 normalisation. Tokens from
tok_ref.py's CLIP BPE. Everything in float64.

  openclip_clip_ref.py make DIR BPE      a small generated model in the hub
                                         directory format (DIR/gen:
                                         open_clip_config.json +
                                         open_clip_model.safetensors), an
                                         image stream and the reference's
                                         image and text embeddings
  openclip_clip_ref.py vendor DIR BPE    the same for the vendor model of
                                         $SHARED on 16 PACS images and the 7
                                         class prompts
  openclip_clip_ref.py compare DIR TAG IMAGES TEXT
                                         PASS/FAIL lines: teacher-embed's
                                         IMAGES and text-embed's TEXT against
                                         DIR/TAG.{img,txt}.npy"""
import json
import os
import sys

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import openclip_timm_ref as timm_ref  # noqa: E402
import tok_ref  # noqa: E402
from st_io import read_stream, st_load, st_save, write_image_stream  # noqa: E402

TOL = 1e-4
CLASSES = ["dog", "elephant", "giraffe", "guitar", "horse", "house", "person"]
PROMPT = "a photo of a {}"


class QuickGELU(nn.Module):
    def forward(self, x):
        return x * torch.sigmoid(1.702 * x)


class Block(nn.Module):
    def __init__(self, width, heads, quick):
        super().__init__()
        self.ln_1 = nn.LayerNorm(width)
        self.attn = nn.MultiheadAttention(width, heads)
        self.ln_2 = nn.LayerNorm(width)
        self.mlp = nn.Sequential()
        self.mlp.add_module("c_fc", nn.Linear(width, 4 * width))
        self.mlp.add_module("gelu", QuickGELU() if quick else nn.GELU())
        self.mlp.add_module("c_proj", nn.Linear(4 * width, width))

    def forward(self, x, mask):  # x (T, B, C), as open_clip's batch_first=False
        y = self.ln_1(x)
        x = x + self.attn(y, y, y, need_weights=False, attn_mask=mask)[0]
        return x + self.mlp(self.ln_2(x))


class Transformer(nn.Module):
    def __init__(self, width, layers, heads, quick):
        super().__init__()
        self.resblocks = nn.ModuleList([Block(width, heads, quick) for _ in range(layers)])


class OpenCLIP(nn.Module):
    """open_clip's CLIP with TimmModel('mobilenetv2_100') as its image tower,
    under the names of its state_dict()."""

    def __init__(self, embed, ctx, vocab, width, layers, heads, quick):
        super().__init__()
        self.visual = timm_ref.Visual(embed)
        self.transformer = Transformer(width, layers, heads, quick)
        self.token_embedding = nn.Embedding(vocab, width)
        self.positional_embedding = nn.Parameter(torch.empty(ctx, width))
        self.ln_final = nn.LayerNorm(width)
        self.text_projection = nn.Parameter(torch.empty(width, embed))
        self.logit_scale = nn.Parameter(torch.tensor(float(np.log(1 / 0.07)), dtype=torch.float32))
        self.register_buffer("attn_mask", torch.full((ctx, ctx), float("-inf")).triu_(1), persistent=False)

    def encode_image(self, x):
        return F.normalize(self.visual(x), dim=-1)

    def encode_text(self, ids):
        T = ids.shape[1]
        x = self.token_embedding(ids) + self.positional_embedding[:T]
        x = x.permute(1, 0, 2)
        for b in self.transformer.resblocks:
            x = b(x, self.attn_mask[:T, :T])
        x = self.ln_final(x.permute(1, 0, 2))
        x = x[torch.arange(x.shape[0]), ids.argmax(dim=-1)] @ self.text_projection
        return F.normalize(x, dim=-1)


def build(cfg):
    mc = cfg["model_cfg"]
    tc = mc["text_cfg"]
    return OpenCLIP(mc["embed_dim"], tc["context_length"], tc["vocab_size"], tc["width"], tc["layers"], tc["heads"],
                    mc.get("quick_gelu", False))


def load(d):
    cfg = json.load(open(os.path.join(d, "open_clip_config.json")))
    m = build(cfg)
    sd, _ = st_load(os.path.join(d, "open_clip_model.safetensors"))
    m.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in sd.items()}, strict=True)
    return cfg, m.double().eval()


def references(d, tag, model_dir, images, bpe):
    cfg, m = load(model_dir)
    pc = cfg["preprocess_cfg"]
    mean, std = torch.tensor(pc["mean"]).view(3, 1, 1).double(), torch.tensor(pc["std"]).view(3, 1, 1).double()
    tok = tok_ref.SimpleTokenizer(bpe)
    ctx = cfg["model_cfg"]["text_cfg"]["context_length"]
    with torch.no_grad():
        x = torch.stack([(torch.from_numpy(im.copy()).permute(2, 0, 1).double() / 255.0 - mean) / std
                         for _, im in images])
        np.save(os.path.join(d, tag + ".img.npy"), m.encode_image(x).numpy())
        ids = torch.tensor([tok.tokenize(PROMPT.format(c), ctx, False) for c in CLASSES])
        np.save(os.path.join(d, tag + ".txt.npy"), m.encode_text(ids).numpy())
    write_image_stream(os.path.join(d, tag + ".mp"), images)


def make(d, bpe):
    """A small model: width 32, 2 layers, 4 heads, image tower of
    openclip_timm_ref's make_model (BatchNorm off identity, projection to
    64), exact GELU, the real vocabulary and context, a mean/std of its own."""
    cfg = {"model_cfg": {"embed_dim": 64,
                         "vision_cfg": {"timm_model_name": "mobilenetv2_100", "timm_model_pretrained": False,
                                        "timm_pool": "avg", "timm_proj": "linear", "timm_proj_bias": False,
                                        "image_size": 64},
                         "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 4, "layers": 2},
                         "quick_gelu": False},
           "preprocess_cfg": {"mean": [0.25, 0.5, 0.75], "std": [0.5, 0.25, 0.125], "interpolation": "bilinear",
                              "resize_mode": "squash"}}
    m = build(cfg)
    vis = timm_ref.make_model(7)
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for name, p in m.named_parameters():
            if not name.startswith("visual."):
                p.copy_(torch.randn(p.shape, generator=g) * (0.5 if p.dim() > 1 else 0.2)
                        + (1.0 if name.endswith("ln_1.weight") or name.endswith("ln_2.weight")
                           or name == "ln_final.weight" else 0.0))
        m.visual.load_state_dict(vis.visual.state_dict())
    gen = os.path.join(d, "gen")
    os.makedirs(gen)
    st_save(os.path.join(gen, "open_clip_model.safetensors"), {k: v for k, v in m.state_dict().items()})
    with open(os.path.join(gen, "open_clip_config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
    rng = np.random.default_rng(11)
    images = [("g%d" % i, rng.integers(0, 256, size=(64, 64, 3), dtype=np.uint8)) for i in range(5)]
    references(d, "gen", gen, images, bpe)


def vendor(d, bpe):
    """16 PACS images (4 per domain, 4 classes each), squashed to 224x224
    with PIL's bilinear filter, and the 7 class prompts."""
    from PIL import Image
    root = os.path.join(os.path.dirname(os.path.dirname(timm_ref.VENDOR)), "PACS")
    images = []
    for dom in ("art_painting", "cartoon", "photo", "sketch"):
        for k, cls in enumerate(sorted(os.listdir(os.path.join(root, dom)))[:4]):
            f = sorted(os.listdir(os.path.join(root, dom, cls)))[k]
            im = Image.open(os.path.join(root, dom, cls, f)).convert("RGB").resize((224, 224), Image.BILINEAR)
            images.append(("%s/%s/%s" % (dom, cls, f), np.asarray(im)))
    references(d, "vendor", timm_ref.VENDOR, images, bpe)


def vecs(path):
    _, items, _ = read_stream(path)
    return [o["id"] for o in items], np.stack([np.frombuffer(o["vec"], "<f4") for o in items])


def compare(d, tag, img_path, txt_path):
    fails = 0
    for what, path, want_ids in (("image", img_path, None), ("text", txt_path, CLASSES)):
        want = np.load(os.path.join(d, tag + (".img.npy" if what == "image" else ".txt.npy")))
        try:
            ids, got = vecs(path)
        except Exception as e:  # noqa: BLE001
            print("FAIL: openclip_clip: %s: %s embeddings unreadable: %s" % (tag, what, e))
            fails += 1
            continue
        ok = got.shape == want.shape and (want_ids is None or ids == want_ids)
        err = float(np.abs(got - want).max()) if got.shape == want.shape else float("inf")
        ok = ok and err <= TOL
        print("%s: openclip_clip: %s: %d %s embeddings = PyTorch (max |diff| %.3g, tolerance %g)"
              % ("PASS" if ok else "FAIL", tag, len(want), what, err, TOL))
        fails += not ok
    return fails


def main():
    cmd = sys.argv[1]
    if cmd == "make":
        make(sys.argv[2], sys.argv[3])
    elif cmd == "vendor":
        vendor(sys.argv[2], sys.argv[3])
    elif cmd == "compare":
        sys.exit(1 if compare(*sys.argv[2:6]) else 0)
    else:
        sys.exit("usage: openclip_clip_ref.py make|vendor|compare ...")


if __name__ == "__main__":
    main()
