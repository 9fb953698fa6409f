"""openclip_timm_ref: PyTorch side of tests/ref/openclip_timm.sh, and the
model of the openclip_timm training cases (resnet_train_ref.py).

An independent rebuild (torch only: no timm, no open_clip) of the image
tower of an OpenCLIP model made with TimmModel('mobilenetv2_100',
pool='avg', proj='linear'): timm's MobileNetV2 trunk (conv_stem, bn1, the
blocks: blocks.0.0 a depthwise-separable block conv_dw/bn1 then conv_pw/bn2,
no activation after it; the others inverted residuals conv_pw/bn1,
conv_dw/bn2, conv_pwl/bn3, ReLU6 after bn1 and bn2, a skip where the stride
is 1 and the width is kept; conv_head, bn2), global average pooling to 1280
and visual.head.proj (Linear 1280 -> D, no bias), in exactly open_clip's
state_dict names (visual.trunk.*, visual.head.proj.weight). BatchNorm eps
1e-5, symmetric padding k // 2.

  openclip_timm_ref.py prepare DIR   a generated model (DIR/gen: an
                                     OpenCLIP hub directory, with a stand-in
                                     text tower the student must not read)
                                     and image streams, and the rebuild's
                                     features of them; the vendor model of
                                     $SHARED on PACS images when it is there
  openclip_timm_ref.py compare DIR   PASS/FAIL lines for student-embed's
                                     outputs"""
import json
import os
import sys

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as Fn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from st_io import read_stream, rel_err, st_load, st_save, write_image_stream  # noqa: E402

TOL = 1e-4
VENDOR = os.path.join(os.environ.get("SHARED", "../shared"), "data", "vendor", "pacs-mnv2")
# stage: expansion, output width, blocks, stride of the first block
STAGES = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)]


class DepthwiseSeparable(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv_dw = nn.Conv2d(cin, cin, 3, stride, 1, groups=cin, bias=False)
        self.bn1 = nn.BatchNorm2d(cin)
        self.act1 = nn.ReLU6()
        self.conv_pw = nn.Conv2d(cin, cout, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.skip = stride == 1 and cin == cout

    def forward(self, x):
        y = self.bn2(self.conv_pw(self.act1(self.bn1(self.conv_dw(x)))))
        return x + y if self.skip else y


class InvertedResidual(nn.Module):
    def __init__(self, cin, cout, stride, t):
        super().__init__()
        mid = cin * t
        self.conv_pw = nn.Conv2d(cin, mid, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(mid)
        self.act1 = nn.ReLU6()
        self.conv_dw = nn.Conv2d(mid, mid, 3, stride, 1, groups=mid, bias=False)
        self.bn2 = nn.BatchNorm2d(mid)
        self.act2 = nn.ReLU6()
        self.conv_pwl = nn.Conv2d(mid, cout, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(cout)
        self.skip = stride == 1 and cin == cout

    def forward(self, x):
        y = self.act1(self.bn1(self.conv_pw(x)))
        y = self.act2(self.bn2(self.conv_dw(y)))
        y = self.bn3(self.conv_pwl(y))
        return x + y if self.skip else y


class Trunk(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv_stem = nn.Conv2d(3, 32, 3, 2, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(32)
        self.act1 = nn.ReLU6()
        stages, cin = [], 32
        for t, c, n, s in STAGES:
            blocks = []
            for i in range(n):
                stride = s if i == 0 else 1
                blocks.append(DepthwiseSeparable(cin, c, stride) if t == 1 else InvertedResidual(cin, c, stride, t))
                cin = c
            stages.append(nn.Sequential(*blocks))
        self.blocks = nn.Sequential(*stages)
        self.conv_head = nn.Conv2d(cin, 1280, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(1280)
        self.act2 = nn.ReLU6()

    def forward(self, x):
        x = self.act1(self.bn1(self.conv_stem(x)))
        x = self.blocks(x)
        x = self.act2(self.bn2(self.conv_head(x)))
        return x.mean((2, 3))


class Head(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.proj = nn.Linear(1280, dim, bias=False)


class Visual(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.trunk = Trunk()
        self.head = Head(dim)

    def forward(self, x):
        return self.head.proj(self.trunk(x))


class Tower(nn.Module):
    """The image tower under the names of open_clip's CLIP.state_dict();
    forward gives the projected embedding, not normalised."""

    def __init__(self, dim=512):
        super().__init__()
        self.visual = Visual(dim)

    def forward(self, x):
        return self.visual(x)


def load(path):
    """The rebuild with the visual.* tensors of an OpenCLIP file (its text
    tower left out), strict on the image tower."""
    sd, _ = st_load(path)
    vis = {k: torch.from_numpy(v.copy()) for k, v in sd.items() if k.startswith("visual.")}
    m = Tower(vis["visual.head.proj.weight"].shape[0])
    m.load_state_dict(vis)
    return m


def make_model(seed):
    """Random weights as torchvision initialises a MobileNetV2 (Kaiming
    normal, fan out, for the convolutions), BatchNorm a little off identity
    and running statistics of data like the inputs, eval mode."""
    torch.manual_seed(seed)
    m = Tower(64)
    bns = [mod for mod in m.modules() if isinstance(mod, nn.BatchNorm2d)]
    with torch.no_grad():
        for mod in m.modules():
            if isinstance(mod, nn.Conv2d):
                nn.init.kaiming_normal_(mod.weight, mode="fan_out")
        for mod in bns:
            mod.weight.uniform_(0.8, 1.2)
            mod.bias.uniform_(-0.1, 0.1)
        cal = torch.randn(16, 3, 64, 64, generator=torch.Generator().manual_seed(99))
        for mod in bns:
            mod.reset_running_stats()
            mod.momentum = None
        m.train()
        m(cal)
        for mod in bns:
            mod.momentum = 0.1
    m.eval()
    return m


def to_x(im, mean, std):
    return (torch.from_numpy(im.copy()).permute(2, 0, 1).float() / 255.0 - mean) / std


def pacs(n, side):
    from PIL import Image
    root = os.path.join(os.path.dirname(os.path.dirname(VENDOR)), "PACS")
    ims = []
    for i, dom in enumerate(("photo", "art_painting", "cartoon", "sketch")[:n]):
        cls = sorted(os.listdir(os.path.join(root, dom)))[i]
        f = sorted(os.listdir(os.path.join(root, dom, cls)))[i]
        ims.append(np.asarray(Image.open(os.path.join(root, dom, cls, f)).convert("RGB").resize((side, side),
                                                                                              Image.BILINEAR)))
    return ims


def prepare(d):
    rng = np.random.default_rng(3)
    imgs = [("img%d" % i, rng.integers(0, 256, size=(64, 80, 3), dtype=np.uint8)) for i in range(3)]
    imgs += [("big%d" % i, rng.integers(0, 256, size=(96, 96, 3), dtype=np.uint8)) for i in range(2)]
    write_image_stream(os.path.join(d, "img.mp"), imgs)
    m = make_model(7)
    gen = os.path.join(d, "gen")
    os.makedirs(gen)
    sd = dict(m.state_dict())
    # a stand-in text tower and the rest of an OpenCLIP state dict
    g = torch.Generator().manual_seed(1)
    sd.update({"text_projection": torch.randn(32, 64, generator=g), "logit_scale": torch.tensor(2.6),
               "token_embedding.weight": torch.randn(50, 32, generator=g),
               "positional_embedding": torch.randn(77, 32, generator=g)})
    st_save(os.path.join(gen, "open_clip_model.safetensors"), sd)
    cfg = {"model_cfg": {"embed_dim": 64, "vision_cfg": {"timm_model_name": "mobilenetv2_100", "timm_pool": "avg",
                                                         "timm_proj": "linear", "timm_proj_bias": False}},
           "preprocess_cfg": {"mean": [0.25, 0.5, 0.75], "std": [0.5, 0.25, 0.125]}}
    with open(os.path.join(gen, "open_clip_config.json"), "w") as f:
        json.dump(cfg, f)
    # the same tensors under metadata that declares another normalisation
    st_save(os.path.join(d, "meta.safetensors"), sd, {"vl2v.mean": "0.5,0.5,0.5", "vl2v.std": "0.25,0.25,0.25"})
    # a timm trunk of another kind, and a mobilenetv2 named by another config
    other = {k.replace("conv_stem", "stem.conv"): v for k, v in sd.items()}
    st_save(os.path.join(d, "efficient.safetensors"), other)
    bad = os.path.join(d, "badcfg")
    os.makedirs(bad)
    os.link(os.path.join(gen, "open_clip_model.safetensors"), os.path.join(bad, "open_clip_model.safetensors"))
    cfg["model_cfg"]["vision_cfg"]["timm_model_name"] = "efficientnet_b0"
    with open(os.path.join(bad, "open_clip_config.json"), "w") as f:
        json.dump(cfg, f)
    # an unknown tensor in the image tower
    st_save(os.path.join(d, "extra.safetensors"), dict(sd, **{"visual.trunk.blocks.0.0.se.weight": torch.zeros(4)}))
    m64 = m.double()
    for tag, mean, std in (("gen", [0.25, 0.5, 0.75], [0.5, 0.25, 0.125]), ("meta", [0.5] * 3, [0.25] * 3)):
        mu, sd_ = torch.tensor(mean).view(3, 1, 1), torch.tensor(std).view(3, 1, 1)
        with torch.no_grad():
            f64 = np.concatenate([m64(to_x(im, mu, sd_)[None].double()).numpy() for _, im in imgs])
        np.save(os.path.join(d, tag + ".feat.npy"), f64)
    if os.path.exists(os.path.join(VENDOR, "open_clip_model.safetensors")):
        ims = pacs(4, 224)
        write_image_stream(os.path.join(d, "real.mp"), [("real%d" % i, im) for i, im in enumerate(ims)])
        v = load(os.path.join(VENDOR, "open_clip_model.safetensors")).double().eval()
        with torch.no_grad():
            x = torch.stack([to_x(im, 0.5, 0.5) for im in ims]).double()
            np.save(os.path.join(d, "real.feat.npy"), v(x).numpy())


def compare(d):
    fails = 0

    def check(ok, what):
        nonlocal fails
        print(("PASS: " if ok else "FAIL: ") + what)
        fails += not ok

    def feats(path):
        if not os.path.exists(path) or not os.path.getsize(path):
            return None, None
        hdr, items, _ = read_stream(path)
        return hdr, np.stack([np.frombuffer(it["vec"], dtype="<f4") for it in items])

    for tag, what in (("gen", "a generated OpenCLIP hub directory (--arch auto; its open_clip_config.json "
                              "normalisation)"),
                      ("file", "its open_clip_model.safetensors named as a file (--arch openclip_timm)"),
                      ("meta", "the same tensors with vl2v.mean/vl2v.std metadata")):
        hdr, got = feats(os.path.join(d, tag + ".emb.mp"))
        if got is None:
            check(False, "openclip_timm: %s: no student-embed output" % what)
            continue
        want = np.load(os.path.join(d, ("meta" if tag == "meta" else "gen") + ".feat.npy"))
        check(hdr.get("space") == "student:openclip_timm" and hdr.get("dim") == want.shape[1],
              "openclip_timm: %s: header space %s, dim %s" % (what, hdr.get("space"), hdr.get("dim")))
        e = rel_err(got, want)
        check(got.shape == want.shape and e < TOL, "openclip_timm: %s: features match the float64 PyTorch rebuild "
              "(rel err %.2g)" % (what, e))
    if os.path.exists(os.path.join(d, "real.feat.npy")):
        hdr, got = feats(os.path.join(d, "real.emb.mp"))
        if got is None:
            check(False, "openclip_timm: no features for the vendor model")
        else:
            e = rel_err(got, np.load(os.path.join(d, "real.feat.npy")))
            check(e < TOL, "openclip_timm: the vendor model of $SHARED (its directory, --arch auto) on 4 PACS "
                  "images at 224x224 matches the float64 PyTorch rebuild (rel err %.2g)" % e)
    return 1 if fails else 0


if __name__ == "__main__":
    if sys.argv[1] == "prepare":
        prepare(sys.argv[2])
    else:
        sys.exit(compare(sys.argv[2]))
