"""resnet_train_ref: PyTorch side of the convolutional students' training
parity tests (tests/ref/resnet_train.sh, resnet50_train.sh,
mobilenet_train.sh, openclip_timm_train.sh, through tests/ref/cnn_train).

  resnet_train_ref.py prepare DIR GROUP   weights and a batch for each case
                                          of GROUP; DIR/cases lists them
  resnet_train_ref.py compare DIR GROUP   the float64 reference of each
                                          case, taking the engine's
                                          decisions at ties
                                          (DIR/dec_TAG.safetensors), and
                                          PASS/FAIL lines for the C outputs

With VL2V_F32_REF=1 in the environment, compare also trains float32
PyTorch, deciding for itself at ties, and prints its error beside each
case's.

Each case: steps of F = backbone(x) (features after global average
pooling), Z = F Wp^T + bp, L = -mean(lambda cos(Z, It) + (1 - lambda)
cos(Z, T[y])), the optimiser over backbone and head, against torch.optim in
float64: every parameter and running statistic within 1e-4 of the float64
answer, relative to the tensor's largest value. No allowance is made for
float32 PyTorch's own error. The engine's convolutions take the paths users
get (Winograd F(4x4,3x3) where it pays); the "im2col" cases turn it off.

The setups are real training's, not tiny or degenerate ones. BatchNorm in
training mode over 2-4 small maps divides by the spread of a handful of
values, and there float32 PyTorch itself lands 1e-3 from float64; here
every case has 8 images of 64x64. ResNets: inputs ~ N(0,1), torchvision's
initialisation (kaiming convs), BatchNorm's affine parameters a little off
1 and 0 and its running statistics those of data like the batch (a
pretrained network's are its data's; random ones leave whole channels
dead); ResNet-50's residual branches end in small BatchNorm weights (see
make_model). MobileNetV2: the real pretrained weights of $SHARED on PACS
images, BatchNorm frozen (the weights have it folded in, and in training
mode the last unit's output lies below 0 everywhere, so nothing would
train). openclip_timm: the image tower of the vendor model of $SHARED (a
timm mobilenetv2_100 trunk with real BatchNorm, and its projection to 512,
rebuilt in openclip_timm_ref.py) on the same PACS images, and (group
openclip_timm_gen) the generated tower of openclip_timm_ref.py (random
weights as torchvision initialises a MobileNetV2, running statistics of
data like the batch, a projection to 64) on inputs ~ N(0,1), BatchNorm
frozen; the feature is the projection. The untrained tower takes SGD at
1e-3: at 0.01 its steps part from float64's away from any tie, as an
untrained network's do (below). (In training mode these 8 images of 64x64
give the deep layers batch statistics over 2x2 maps: the engine's
decisions part from float64's away from any tie, 512 of them in 3 steps of
SGD at 1e-3, and the biases of BatchNorms followed by a training-mode
BatchNorm, whose exact gradient is 0, get rounding only. The training-mode
path is the ResNets' cases'.) Learning rates are those used with these
networks: Adam at the method's 5e-5 and at 1e-3, with PyTorch's default eps 1e-8; SGD with
momentum 0.9 at 0.01 with BatchNorm frozen and 1e-3 in training mode (at
0.01 an untrained network's training-mode gradients move its first layers
by a sizeable part of their values per step, a divergence that amplifies
every rounding: float32 PyTorch lands 0.2-0.5 from float64). Every case
also checks that each of the engine's trainable tensors moved and that its
change over the steps matches float64's to UPD_TOL in L2 norm, beyond what
float32 can hold of the values: the 1e-4 bound on the values alone cannot
see a tensor whose change is small beside them.

Decisions: a ReLU (ReLU6) whose input lies within float32 rounding of 0
(or 6), or a max pool whose two largest inputs do, goes one way or the
other by rounding, and a decision taken the other way moves the gradient of
every tensor before it by up to 1e-2. Float32 PyTorch deciding for itself
misses the bound here in 12 of the 13 cases (1.6e-4 to 2.1e-2). The
reference therefore takes the engine's decisions (student_train's
DECISIONS file) where its own values lie within FOLLOW of a tie, relative
to the layer's largest, and decides for itself elsewhere (Follow). Each
case fails on a decision of the engine away from every tie that differs
from float64's, on more than MAX_TAKEN taken, and on sites that do not line
up with the reference's calls, and prints how many it took and the
farthest from its tie.

Adam with eps 1e-8 (train_check.py): the bound is checked over the elements
whose float64 gradient stays above 1e-3 of the tensor's largest at every
step, and the error over all elements is printed. At lr 1e-3 one step is
compared, and the test shows the ideal float32 implementation (every op
exact, every tensor rounded to float32, the engine's decisions taken)
missing the bound over all elements: after that step the weights whose gradient was rounding noise
differ by up to 2 lr in any float32 implementation, and every later
gradient carries it."""
import os
import sys

import numpy as np
import torch
import torch.nn.functional as Fn
import torchvision

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import openclip_timm_ref  # noqa: E402
from resnet_ref import features  # noqa: E402
from st_io import rel_err, st_load, st_save  # noqa: E402
from train_check import GMIN, TOL, GradRecord, compare as compare_tensors, cosine_loss, exact_f32  # noqa: E402

torch.set_num_threads(2)
B, SIDE, D, NC = 8, 64, 16, 5
# group -> cases: (arch, optimiser, BatchNorm mode, lr, steps, with the
# exact-f32 run, with every convolution as im2col rather than as users get
# them, Winograd F(4x4,3x3) where it pays)
GROUPS = {
    "resnet18": [("resnet18", "sgd", "frozen", 0.01, 3, False, False),
                 ("resnet18", "sgd", "train", 1e-3, 3, False, False),
                 ("resnet18", "adam", "frozen", 5e-5, 3, False, False),
                 ("resnet18", "adam", "train", 5e-5, 3, False, False),
                 ("resnet18", "adam", "frozen", 1e-3, 1, True, False),
                 ("resnet18", "sgd", "frozen", 0.01, 3, False, True),
                 ("resnet18", "sgd", "train", 1e-3, 3, False, True)],
    "resnet50": [("resnet50", "sgd", "frozen", 0.01, 3, False, False),
                 ("resnet50", "sgd", "train", 1e-3, 3, False, False),
                 ("resnet50", "adam", "frozen", 5e-5, 3, False, False),
                 ("resnet50", "adam", "train", 5e-5, 3, False, False)],
    "mobilenet_v2": [("mobilenet_v2", "sgd", "frozen", 0.01, 3, False, False),
                     ("mobilenet_v2", "adam", "frozen", 5e-5, 3, False, False)],
    "openclip_timm": [("openclip_timm", "sgd", "frozen", 0.01, 3, False, False),
                      ("openclip_timm", "adam", "frozen", 5e-5, 3, False, False)],
    "openclip_timm_gen": [("openclip_timm", "sgd", "frozen", 1e-3, 3, False, False),
                          ("openclip_timm", "adam", "frozen", 5e-5, 3, False, False)],
}
# MobileNetV2 trains from the real pretrained weights of $SHARED on PACS images
PRETRAINED = os.path.join(os.environ.get("SHARED", "../shared"), "data", "pretrained",
                          "mobilenet_v2_imagenet.safetensors")
# openclip_timm: the image tower of the vendor model of $SHARED (real
# BatchNorm), rebuilt in openclip_timm_ref.py
VENDOR = os.path.join(os.path.dirname(os.path.dirname(PRETRAINED)), "vendor", "pacs-mnv2",
                      "open_clip_model.safetensors")


def new_model(arch, sd):
    """An untrained model for the state dict sd."""
    if arch == "openclip_timm":
        return openclip_timm_ref.Tower(sd["visual.head.proj.weight"].shape[0])
    return getattr(torchvision.models, arch)(weights=None)


def feats(m, x):
    """The student's feature: the pool (torchvision), the projection
    (openclip_timm)."""
    return m(x) if isinstance(m, openclip_timm_ref.Tower) else features(m, x)


ADAM_EPS = 1e-8


def tag(case):
    arch, opt, bn, lr, _, _, im2col = case
    return "%s_%s_%s_%g%s" % (arch, opt, bn, lr, "_im2col" if im2col else "")


def make_model(arch, group):
    if arch == "openclip_timm":
        return openclip_timm_ref.make_model(7) if group == "openclip_timm_gen" else openclip_timm_ref.load(VENDOR)
    # the seeds the ResNets have always had (200 + the index among the first
    # groups), whatever groups come later
    torch.manual_seed(200 + ["mobilenet_v2", "resnet18", "resnet50"].index(arch))
    m = new_model(arch, None)
    if arch == "mobilenet_v2":
        sd, _ = st_load(PRETRAINED)
        m.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in sd.items()})
        return m
    bns = [mod for mod in m.modules() if isinstance(mod, torch.nn.BatchNorm2d)]
    with torch.no_grad():
        for mod in bns:
            mod.weight.uniform_(0.8, 1.2)
            mod.bias.uniform_(-0.1, 0.1)
        # ResNet-50: a residual branch ends in a small BatchNorm weight, as in
        # pretrained ResNets (and torchvision's zero_init_residual); with
        # all of them near 1 an untrained ResNet-50 in training mode has
        # exploding gradients (the stem's 30 times ResNet-18's) and float32
        # PyTorch lands 2e-3 from float64 after one SGD step
        for mod in m.modules() if arch == "resnet50" else ():
            last = getattr(mod, "bn3", None) if isinstance(mod, torchvision.models.resnet.Bottleneck) else \
                getattr(mod, "bn2", None) if isinstance(mod, torchvision.models.resnet.BasicBlock) else None
            if last is not None:
                last.weight.uniform_(0.0, 0.3)
        # running statistics of 32 images like the batch (cumulative average)
        cal = torch.randn(32, 3, SIDE, SIDE, generator=torch.Generator().manual_seed(99))
        for mod in bns:
            mod.reset_running_stats()
            mod.momentum = None
        m.train()
        features(m, cal)
        for mod in bns:
            mod.momentum = 0.1
    return m


def pacs_images():
    """8 PACS images (two per domain, different classes), SIDE x SIDE, with
    the pretrained MobileNetV2's normalisation (mean and std 0.5)."""
    from PIL import Image
    root = os.path.join(os.path.dirname(os.path.dirname(PRETRAINED)), "PACS")
    ims = []
    for i, dom in enumerate(("photo", "art_painting", "cartoon", "sketch") * 2):
        cls = sorted(os.listdir(os.path.join(root, dom)))[i % 7]
        f = sorted(os.listdir(os.path.join(root, dom, cls)))[i]
        im = Image.open(os.path.join(root, dom, cls, f)).convert("RGB").resize((SIDE, SIDE), Image.BILINEAR)
        ims.append((torch.from_numpy(np.asarray(im).copy()).permute(2, 0, 1).float() / 255.0 - 0.5) / 0.5)
    return torch.stack(ims)


def batch(group):
    g = torch.Generator().manual_seed(11)
    x = torch.randn(B, 3, SIDE, SIDE, generator=g)
    if group in ("mobilenet_v2", "openclip_timm"):
        x = pacs_images()
    it = Fn.normalize(torch.randn(B, D, generator=g), dim=1)
    t = Fn.normalize(torch.randn(NC, D, generator=g), dim=1)
    y = torch.randint(0, NC, (B,), generator=g)
    return x, it, t, y


# a decision between values within FOLLOW of each other, relative to the
# layer's largest, is one float32 rounding may take either way (the engine's
# decisions that differ from float64's lie within about 1e-6: Winograd's
# error, a few 1e-6 of a layer's scale, and im2col's smaller one)
FOLLOW = 1e-5
# a bias of the engine's at a threshold would take hundreds of decisions
# within FOLLOW its way; rounding takes a few dozen at most
MAX_TAKEN = 100
# a tensor's change over the steps against float64's, in L2 norm relative
# to the change's, beyond the half spacing of float32 at each value per step
# (what no float32 implementation can hold): the 1e-4 bound on the values
# cannot see a change that is small beside them (a tensor left untrained by
# mistake); here 1e-6 to 7e-5
UPD_TOL = 1e-3


class FollowError(Exception):
    pass


class Follow:
    """The engine's discrete decisions of one case (student_train's
    DECISIONS file), in forward order, one site per ReLU or ReLU6 call and
    max pool. With take, the reference takes them where its own values lie
    within FOLLOW of a tie, relative to the layer's largest: a ReLU (ReLU6)
    input that near 0 (or 6), the max-pool input the engine chose (in its
    window) that near the window's largest; elsewhere it decides for itself.
    Without take (the float32 PyTorch run) it always decides for itself and
    only checks that the sites line up. Counts the decisions
    taken that differ from the reference's own (taken, the farthest from its
    tie at dist) and the engine's decisions away from every tie that differ
    from the reference's (apart: a real disagreement, which the test fails).
    A site of another kind or shape than the reference's call, or a step
    with more or fewer sites, raises FollowError."""

    def __init__(self, path, take=True):
        self.path, self.take = path, take
        self.d, _ = st_load(path)
        self.s = self.k = 0
        self.taken = self.apart = 0
        self.dist = 0.0

    def fail(self, what):
        raise FollowError("%s: step %d, decision site %d: %s" % (os.path.basename(self.path), self.s + 1, self.k,
                                                                  what))

    def begin(self, step):
        self.s, self.k = step, 0

    def end(self):
        if "d.%d.%d" % (self.s, self.k) in self.d:
            self.fail("the engine recorded more sites than the reference's %d calls" % self.k)

    def finish(self, steps):
        if "d.%d.0" % steps in self.d:
            self.fail("the engine recorded more steps than the reference's %d" % steps)

    def next(self, kind, shape):
        key = "%d.%d" % (self.s, self.k)
        if "d." + key not in self.d:
            self.fail("the engine recorded %d sites, the reference calls more" % self.k)
        kd, a = int(self.d["dkind." + key][0]), self.d["d." + key]
        if kd != kind or tuple(a.shape) != tuple(shape):
            self.fail("the engine's is kind %d %s, the reference's kind %d %s" % (kd, list(a.shape), kind,
                                                                                 list(shape)))
        self.k += 1
        return torch.from_numpy(a.astype(np.int64))

    def tally(self, c, own, near, dist):
        """near: where the engine's decision c is taken; dist: each element's
        distance from its tie, relative to the layer's largest."""
        st = torch.where(near, c, own) if self.take else own
        diff = st != own
        self.taken += int(diff.sum())
        if diff.any():
            self.dist = max(self.dist, float(dist[diff].max()))
        self.apart += int(((c != own) & ~near).sum())
        return st

    def act(self, x, six):
        """ReLU (ReLU6 with six) of x as the decisions say: 0 at or below 0,
        1 passes, 2 at or above 6."""
        c = self.next(2 if six else 1, x.shape)
        xd = x.detach()
        own = (xd > 0).long() + ((xd >= 6).long() if six else 0)
        scale = max(float(xd.abs().max()), 1e-300)
        dist = xd.abs() / scale
        near = (dist < FOLLOW) & (c <= 1)
        if six:
            d6 = (xd - 6).abs() / scale
            near6 = (d6 < FOLLOW) & (c >= 1)
            dist = torch.where(near6, d6, dist)
            near |= near6
        st = self.tally(c, own, near, dist)
        return torch.where(st == 1, x, torch.where(st == 2, torch.full_like(x, 6.0), torch.zeros_like(x)))

    def maxpool(self, x):
        """3x3/2 max pool (padding 1) of x, with the engine's argmax where
        the input it chose lies in its window and within FOLLOW of the
        window's largest."""
        out, idx = Fn.max_pool2d(x, 3, 2, 1, return_indices=True)
        H, W = x.shape[2], x.shape[3]
        OH, OW = out.shape[2], out.shape[3]
        c = self.next(0, out.shape)
        r, q = torch.div(c, W, rounding_mode="floor"), c % W
        oh = torch.arange(OH).view(1, 1, OH, 1)
        ow = torch.arange(OW).view(1, 1, 1, OW)
        inwin = (c >= 0) & (c < H * W) & (r >= 2 * oh - 1) & (r <= 2 * oh + 1) & (q >= 2 * ow - 1) & \
            (q <= 2 * ow + 1)
        c = torch.where(inwin, c, idx).flatten(2)
        own, flat = idx.flatten(2), x.flatten(2)
        gap = (out.detach().flatten(2) - flat.detach().gather(2, c)) / max(float(x.detach().abs().max()), 1e-300)
        near = inwin.flatten(2) & (gap < FOLLOW)
        c = torch.where(inwin.flatten(2), c, -1)
        use = self.tally(c, own, near, gap)
        return flat.gather(2, use).view_as(out)


class FollowAct(torch.nn.Module):
    def __init__(self, fol, six):
        super().__init__()
        self.fol, self.six = fol, six

    def forward(self, x):
        return self.fol.act(x, self.six)


class FollowPool(torch.nn.Module):
    def __init__(self, fol):
        super().__init__()
        self.fol = fol

    def forward(self, x):
        return self.fol.maxpool(x)


def follow(m, fol):
    """Puts the engine's decisions into m's activations and max pool (the
    same calls, in forward order, as the engine's sites)."""
    if isinstance(m, openclip_timm_ref.Tower):
        for mod in m.modules():
            for name, ch in mod.named_children():
                if isinstance(ch, torch.nn.ReLU6):
                    setattr(mod, name, FollowAct(fol, True))
        return
    if isinstance(m, torchvision.models.MobileNetV2):
        for mod in m.modules():
            if type(mod).__name__ == "Conv2dNormActivation" and isinstance(mod[2], torch.nn.ReLU6):
                mod[2] = FollowAct(fol, True)
        return
    m.relu, m.maxpool = FollowAct(fol, False), FollowPool(fol)
    for layer in (m.layer1, m.layer2, m.layer3, m.layer4):
        for blk in layer:
            blk.relu = FollowAct(fol, False)


def train(m, head, case, x, it, t, y, fol, ideal=False, dtype=torch.float64):
    arch, opt, bn, lr, steps, _, _ = case
    m, head = m.to(dtype), head.to(dtype)
    follow(m, fol)
    if ideal:
        exact_f32(m)
    x, it, t = x.to(dtype), it.to(dtype), t.to(dtype)
    m.train(bn == "train")
    named = [(n, p) for n, p in m.named_parameters() if not n.startswith(("fc.", "classifier."))]
    named += [("proj.weight", head.weight), ("proj.bias", head.bias)]
    ps = [p for _, p in named]
    o = torch.optim.Adam(ps, lr=lr, eps=ADAM_EPS) if opt == "adam" else torch.optim.SGD(ps, lr=lr, momentum=0.9)
    rec, losses, feat0 = GradRecord(), [], None
    init = [p.detach().clone() for p in ps]
    for s in range(steps):
        o.zero_grad()
        fol.begin(s)
        f = feats(m, x)
        fol.end()
        if s == 0:
            feat0 = f.detach().float()
        z = head(f)
        loss = cosine_loss(z, it, t, y)
        loss.backward()
        if ideal:
            for p in ps:
                p.grad = p.grad.float().double()
        rec.add(named)
        o.step()
        if ideal:
            with torch.no_grad():
                for p in ps:
                    p.copy_(p.float().double())
        losses.append(loss.item())
    out = {k: v.float() for k, v in m.state_dict().items() if not k.endswith("num_batches_tracked")}
    out["proj.weight"], out["proj.bias"] = head.weight.float(), head.bias.float()
    out["loss"] = torch.tensor(losses)
    out["feat0"] = feat0
    fol.finish(steps)
    rec.init = {n: p0.numpy() for (n, _), p0 in zip(named, init)}
    return out, rec


def prepare(d, group):
    """The weights, the batch and the cases (DIR/cases: tag arch optimiser
    BatchNorm steps im2col) for student_train."""
    x, it, t, y = batch(group)
    with open(os.path.join(d, "cases"), "w") as f:
        for case in GROUPS[group]:
            arch, opt, bn, lr, steps, ideal, im2col = case
            f.write("%s %s %s %s %d %d\n" % (tag(case), arch, opt, bn, steps, im2col))
    for arch in sorted({c[0] for c in GROUPS[group]}):
        m = make_model(arch, group)
        st_save(os.path.join(d, "w_%s.safetensors" % arch), dict(m.state_dict()))
        torch.manual_seed(5)
        fdim = 1280 if arch == "mobilenet_v2" else m.visual.head.proj.out_features if arch == "openclip_timm" else \
            m.fc.in_features
        head = torch.nn.Linear(fdim, D)
        for case in GROUPS[group]:
            if case[0] == arch:
                st_save(os.path.join(d, "batch_%s.safetensors" % tag(case)),
                        {"x": x, "it": it, "t": t, "y": y.float(), "proj.weight": head.weight,
                         "proj.bias": head.bias, "lambda": torch.tensor([0.5]), "adam_eps": torch.tensor([ADAM_EPS]),
                         "lr": torch.tensor([case[3]])})


def reference(d, group, case):
    """The case's float64 run and, where asked, the ideal float32 run,
    both taking the engine's decisions at ties, and the float32 PyTorch run
    (VL2V_F32_REF), deciding for itself: name -> (tensors, gradient record,
    Follow)."""
    arch, ideal = case[0], case[5]
    # the weights and the batch prepare wrote, as the engine read them
    sd = {k: torch.from_numpy(v.copy()) for k, v in st_load(os.path.join(d, "w_%s.safetensors" % arch))[0].items()}
    bt = {k: torch.from_numpy(v.copy()) for k, v in st_load(os.path.join(d, "batch_%s.safetensors" % tag(case)))[0].items()}
    x, it, t, y = bt["x"], bt["it"], bt["t"], bt["y"].long()
    runs = [("", False, torch.float64)] + ([("_exact32", True, torch.float64)] if ideal else [])
    if os.environ.get("VL2V_F32_REF"):
        runs.append(("_f32", False, torch.float32))
    res = {}
    for suffix, ideal, dtype in runs:
        m = new_model(arch, sd)
        m.load_state_dict(sd)
        head = torch.nn.Linear(*bt["proj.weight"].shape[::-1])
        head.load_state_dict({"weight": bt["proj.weight"], "bias": bt["proj.bias"]})
        fol = Follow(os.path.join(d, "dec_%s.safetensors" % tag(case)), take=suffix != "_f32")
        out, rec = train(m, head, case, x, it, t, y, fol, ideal, dtype)
        res[suffix] = (out, rec, fol)
    return res


def compare(d, group):
    fails = 0

    def check(ok, what):
        nonlocal fails
        print(("PASS: " if ok else "FAIL: ") + what)
        fails += not ok

    for case in GROUPS[group]:
        arch, opt, bn, lr, steps, ideal, im2col = case
        tg = tag(case)
        name = "%s %s lr %g%s BN %s%s" % (arch, opt, lr, " eps 1e-8" if opt == "adam" else " momentum 0.9", bn,
                                          ", im2col" if im2col else "")
        gp, dp = os.path.join(d, "got_%s.safetensors" % tg), os.path.join(d, "dec_%s.safetensors" % tg)
        if not os.path.exists(gp) or not os.path.exists(dp):
            check(False, "%s: no C training output" % name)
            continue
        got, _ = st_load(gp)
        try:
            runs = reference(d, group, case)
        except FollowError as ex:
            check(False, "%s: the engine's decisions do not line up with the reference's calls: %s" % (name, ex))
            continue
        want, rec, fol = runs[""]
        want = {k: v.detach().numpy() for k, v in want.items()}
        check(fol.apart == 0 and fol.taken <= MAX_TAKEN, "%s: every decision of the engine's (ReLU, ReLU6, max "
              "pool) that differs from float64's lies within %g of a tie, relative to the layer's largest: %d "
              "taken the engine's way (at most %d; the farthest %.2g from its tie), %d away from a tie" % (
                  name, FOLLOW, fol.taken, MAX_TAKEN, fol.dist, fol.apart))
        e = rel_err(got["loss"], want["loss"])
        check(e < TOL, "%s: losses of %d steps match (%s vs %s)" % (
            name, steps, np.round(got["loss"], 6), np.round(want["loss"], 6)))
        fe = rel_err(got["feat0"], want["feat0"])
        check(fe < TOL, "%s: step-1 features within %g of float64 PyTorch, relative to their largest (%.2g)" % (
            name, TOL, fe))
        gmin = {k[5:]: v.numpy() for k, v in rec.tensors().items()} if opt == "adam" else None
        (worst, wname, missing), (cw, cname, excl, total) = compare_tensors(got, want, gmin)
        if "_f32" in runs:  # VL2V_F32_REF: float32 PyTorch's own error (its own decisions), for comparison
            w32 = {k: v.detach().numpy() for k, v in runs["_f32"][0].items()}
            (e32, n32, _), (c32, cn32, _, _) = compare_tensors(w32, want, gmin)
            print("float32 PyTorch: %s: worst %.2g (%s)%s" % (name, e32, n32, "; conditioned elements %.2g (%s)"
                                                              % (c32, cn32) if gmin is not None else ""))
        check(not missing, "%s: every tensor present%s" % (name, (" (missing %s)" % missing[:3]) if missing else ""))
        # SGD: the bound over all elements; Adam: over the well conditioned
        # elements (eps: train_check.py), and the rest is printed
        cond = opt == "adam"
        still = [n for n, v in rec.init.items() if n in got and np.array_equal(got[n], v.astype(np.float32))]
        check(not still, "%s: every trainable tensor of the engine's moved (%d of %d did not%s)" % (
            name, len(still), len(rec.init), (": " + ", ".join(still[:3])) if still else ""))
        uw, un = 0.0, ""
        for n, v in rec.init.items():
            if n not in got:
                continue
            keep = gmin[n] >= GMIN if cond and n in gmin else np.ones(v.shape, bool)
            dw = (want[n].astype(np.float64) - v) * keep
            # float32 holds each value to half its spacing, once per step
            ex = np.maximum(np.abs(got[n].astype(np.float64) - want[n]) - steps * np.spacing(np.abs(want[n])) / 2, 0)
            eu = float(np.linalg.norm(ex * keep) / max(np.linalg.norm(dw), 1e-300))
            if eu > uw:
                uw, un = eu, n
        check(uw < UPD_TOL, "%s: every trainable tensor's change over %d steps within %g of float64 PyTorch's "
              "in L2 norm, relative to its norm, beyond float32's half spacing at each value per step%s (worst "
              "%.2g, %s)" % (
                  name, steps, UPD_TOL, " over the well conditioned elements" if cond else "", uw, un))
        err, ename = (cw, cname) if cond else (worst, wname)
        what = "%s: every parameter and running statistic after %d steps within %g of float64 PyTorch" % (
            name, steps, TOL)
        if cond:
            what += " over the %d of %d elements whose gradient stays above 1e-3 of the tensor's largest" % (
                total - excl, total)
        ierr = None
        if ideal:
            ex = {k: v.detach().numpy() for k, v in runs["_exact32"][0].items()}
            (e32, n32, _), (ce32, cn32, _, _) = compare_tensors(ex, want, gmin)
            ierr, iname = (ce32, cn32) if cond else (e32, n32)
        check(err < TOL, "%s (worst %.2g, %s%s%s)" % (what, err, ename, "; over all elements %.2g, %s" % (
            worst, wname) if cond else "", "; an ideal float32 implementation (every op exact, every tensor rounded "
            "to float32) %.2g, %s" % (ierr, iname) if ierr is not None else ""))
        if ideal and cond and worst >= TOL:
            check(e32 >= TOL, "%s: an ideal float32 implementation misses %g over all elements too: worst %.2g "
                  "(%s); this implementation %.2g" % (name, TOL, e32, n32, worst))
    return 1 if fails else 0


if __name__ == "__main__":
    if sys.argv[1] == "prepare":
        prepare(sys.argv[2], sys.argv[3])
    else:
        sys.exit(compare(sys.argv[2], sys.argv[3]))
