"""vit_ref: PyTorch side of the ViT parity test (tests/ref/vit.sh): a small
timm-compatible VisionTransformer (timm's module and tensor names, LayerNorm
eps 1e-6, exact GELU, class-token feature after the final norm, position
embeddings resized as timm.layers.resample_abs_pos_embed does: bicubic with
antialias) written here because timm is not packaged in Debian.

  vit_ref.py prepare DIR   random ViT-S/16 weights (pos_embed for 32x32
                           inputs), an image stream with 32x32, 48x48 and
                           16x16 images, reference features, a training batch
                           and the parameters after 3 steps (float64)
  vit_ref.py compare DIR   PASS/FAIL lines for the C outputs"""
import math
import os
import sys

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as Fn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from st_io import read_stream, rel_err, st_load, st_save, write_image_stream  # noqa: E402
from train_check import GradRecord, compare as compare_tensors, cosine_loss  # noqa: E402

torch.set_num_threads(2)
TOL = 1e-4
STEPS = 3
TRAIN = [("adam", 48), ("sgd", 32)]  # (optimiser, training image side: 48 resizes pos_embed)
# Adam as the method runs it (lr 5e-5, PyTorch's eps 1e-8; see train_check.py)
ADAM_LR, ADAM_EPS = 5e-5, 1e-8


class Attention(nn.Module):
    def __init__(self, dim, heads):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        B, N, C = x.shape
        qkv = self.qkv(x).reshape(B, N, 3, self.heads, C // self.heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        att = (q @ k.transpose(-2, -1)) * (C // self.heads) ** -0.5
        x = att.softmax(dim=-1) @ v
        return self.proj(x.transpose(1, 2).reshape(B, N, C))


class Mlp(nn.Module):
    def __init__(self, dim, hidden):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    def __init__(self, dim, heads):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, 4 * dim)

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class PatchEmbed(nn.Module):
    def __init__(self, dim, p):
        super().__init__()
        self.proj = nn.Conv2d(3, dim, p, p)


class ViT(nn.Module):
    def __init__(self, img=224, p=16, dim=384, depth=12, heads=6, classes=10):
        super().__init__()
        self.p = p
        self.patch_embed = PatchEmbed(dim, p)
        self.cls_token = nn.Parameter(torch.randn(1, 1, dim) * 0.02)
        self.pos_embed = nn.Parameter(torch.randn(1, 1 + (img // p) ** 2, dim) * 0.02)
        self.blocks = nn.Sequential(*[Block(dim, heads) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.head = nn.Linear(dim, classes)

    def pos(self, gh, gw):
        pe = self.pos_embed
        n = pe.shape[1] - 1
        g = int(math.sqrt(n))
        if (gh, gw) == (g, g):
            return pe
        # timm.layers.resample_abs_pos_embed
        grid = pe[:, 1:].reshape(1, g, g, -1).permute(0, 3, 1, 2)
        grid = Fn.interpolate(grid, size=(gh, gw), mode="bicubic", antialias=True)
        grid = grid.permute(0, 2, 3, 1).reshape(1, gh * gw, -1)
        return torch.cat([pe[:, :1], grid], dim=1)

    def features(self, x):
        B, _, H, W = x.shape
        t = self.patch_embed.proj(x).flatten(2).transpose(1, 2)
        t = torch.cat([self.cls_token.expand(B, -1, -1), t], dim=1) + self.pos(H // self.p, W // self.p)
        return self.norm(self.blocks(t))[:, 0]


def make_model():
    torch.manual_seed(3)
    m = ViT(img=32)
    with torch.no_grad():
        for n, p in m.named_parameters():
            if "norm" in n:
                p.uniform_(0.5, 1.5) if n.endswith("weight") else p.uniform_(-0.2, 0.2)
            elif n.endswith("bias"):
                p.uniform_(-0.1, 0.1)
        m.pos_embed.normal_(0, 0.5)
    return m


def prepare(d):
    rng = np.random.default_rng(9)
    sizes = [(32, 32), (32, 32), (48, 48), (48, 64), (16, 16)]
    imgs = [("im%d" % i, rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)) for i, (h, w) in enumerate(sizes)]
    write_image_stream(os.path.join(d, "img.mp"), imgs)
    m = make_model()
    st_save(os.path.join(d, "vit_s16.safetensors"), dict(m.state_dict()))
    mean = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)
    md = make_model().double()
    feats = []
    with torch.no_grad():
        for _, im in imgs:
            x = (torch.from_numpy(im).permute(2, 0, 1).float() / 255.0 - mean) / std
            feats.append(md.features(x[None].double())[0].numpy())
    np.save(os.path.join(d, "feat.npy"), np.stack(feats))

    D, NC = 16, 5
    g = torch.Generator().manual_seed(12)
    it = Fn.normalize(torch.randn(3, D, generator=g), dim=1)
    t = Fn.normalize(torch.randn(NC, D, generator=g), dim=1)
    y = torch.tensor([4, 0, 2])
    for opt, side in TRAIN:
        x = torch.randn(3, 3, side, side, generator=g)
        torch.manual_seed(5)
        head = nn.Linear(384, D)
        lr = ADAM_LR if opt == "adam" else 0.01
        st_save(os.path.join(d, "batch_%s.safetensors" % opt),
                {"x": x, "it": it, "t": t, "y": y.float(), "proj.weight": head.weight, "proj.bias": head.bias,
                 "lambda": torch.tensor([0.5]), "adam_eps": torch.tensor([ADAM_EPS]), "lr": torch.tensor([lr])})
        m = make_model().double()
        hd = nn.Linear(384, D).double()
        with torch.no_grad():
            hd.weight.copy_(head.weight)
            hd.bias.copy_(head.bias)
        named = [(n, p) for n, p in m.named_parameters() if not n.startswith("head.")]
        named += [("proj.weight", hd.weight), ("proj.bias", hd.bias)]
        ps = [p for _, p in named]
        o = torch.optim.Adam(ps, lr=lr, eps=ADAM_EPS) if opt == "adam" else torch.optim.SGD(ps, lr=lr, momentum=0.9)
        rec = GradRecord()
        losses = []
        xd, itd, td = x.double(), it.double(), t.double()
        for _ in range(STEPS):
            o.zero_grad()
            z = hd(m.features(xd))
            loss = cosine_loss(z, itd, td, y)
            loss.backward()
            rec.add(named)
            o.step()
            losses.append(loss.item())
        out = {k: v.float() for k, v in m.state_dict().items()}
        out["proj.weight"], out["proj.bias"] = hd.weight.float(), hd.bias.float()
        out["loss"] = torch.tensor(losses)
        if opt == "adam":
            out.update(rec.tensors())
        st_save(os.path.join(d, "want_%s.safetensors" % opt), out)


def compare(d):
    fails = 0

    def check(ok, what):
        nonlocal fails
        print(("PASS: " if ok else "FAIL: ") + what)
        fails += not ok

    path = os.path.join(d, "emb.mp")
    if os.path.exists(path) and os.path.getsize(path):
        hdr, items, trl = read_stream(path)
        want = np.load(os.path.join(d, "feat.npy"))
        check(hdr.get("space") == "student:vit_s16" and hdr.get("dim") == 384 and trl.get("records") == 5,
              "vit: student-embed header (space %s, dim %s) and trailer" % (hdr.get("space"), hdr.get("dim")))
        got = np.stack([np.frombuffer(it["vec"], dtype="<f4") for it in items])
        for i, what in enumerate(["32x32 (native grid)", "32x32", "48x48 (pos_embed resized up)",
                                  "48x64 (resized, non-square)", "16x16 (pos_embed resized down)"]):
            e = rel_err(got[i], want[i])
            check(e < TOL, "vit: student-embed features of a %s image match (rel err %.2g)" % (what, e))
    else:
        check(False, "vit: student-embed produced no output")
    for opt, side in TRAIN:
        tag = "vit_s16 %s %dx%d" % (opt, side, side)
        gp = os.path.join(d, "got_%s.safetensors" % opt)
        if not os.path.exists(gp):
            check(False, "%s: no C training output" % tag)
            continue
        got, _ = st_load(gp)
        want, _ = st_load(os.path.join(d, "want_%s.safetensors" % opt))
        e = rel_err(got["loss"], want["loss"])
        check(e < TOL, "%s: losses of %d steps match (%s vs %s)" % (tag, STEPS, np.round(got["loss"], 6),
                                                                     np.round(want["loss"], 6)))
        gmin = {k[5:]: v for k, v in want.items() if k.startswith("gmin.")} if opt == "adam" else None
        (worst, wname, missing), (cw, cname, excl, total) = compare_tensors(got, want, gmin)
        if missing:
            worst, wname = float("inf"), missing[0]
        if gmin is None or worst < TOL:
            check(worst < TOL, "%s: every parameter after %d steps within %g of float64 PyTorch (worst %.2g, %s)"
                  % (tag, STEPS, TOL, worst, wname))
        else:
            check(cw < TOL, "%s: every parameter after %d steps within %g of float64 PyTorch over the %d of %d "
                  "elements whose gradient stays above 1e-3 of the tensor's largest (worst %.2g, %s; over all "
                  "elements %.2g, %s)" % (tag, STEPS, TOL, total - excl, total, cw, cname, worst, wname))
    return 1 if fails else 0


if __name__ == "__main__":
    if sys.argv[1] == "prepare":
        prepare(sys.argv[2])
    else:
        sys.exit(compare(sys.argv[2]))
