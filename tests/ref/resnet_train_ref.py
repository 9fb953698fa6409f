"""resnet_train_ref: PyTorch side of the convolutional students' training
parity tests (tests/ref/resnet_train.sh, resnet50_train.sh,
mobilenet_train.sh, through tests/ref/cnn_train).

  resnet_train_ref.py prepare DIR GROUP   weights and a batch for each case
                                          of GROUP; DIR/cases lists them
  resnet_train_ref.py compare DIR GROUP   the float64 reference of each
                                          case, taking the engine's
                                          decisions at ties
                                          (DIR/dec_TAG.safetensors), and
                                          PASS/FAIL lines for the C outputs

With VL2V_F32_REF=1 in the environment, compare also trains float32
PyTorch and prints its error beside each case's.

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
train). Learning rates are those used with these networks: Adam at the
method's 5e-5 and at 1e-3, with PyTorch's default eps 1e-8; SGD with
momentum 0.9 at 0.01 with BatchNorm frozen and 1e-3 in training mode (at
0.01 an untrained network's training-mode gradients move its first layers
by a sizeable part of their values per step, a divergence that amplifies
every rounding: float32 PyTorch lands 0.2-0.5 from float64). Every case
checks that every trainable tensor moved.

Decisions: a ReLU (ReLU6) whose input lies within float32 rounding of 0
(or 6), or a max pool whose two largest inputs do, goes one way or the
other by rounding, and a decision taken the other way moves the gradient of
every tensor before it by up to 1e-2. The reference therefore takes the
engine's decisions (student_train's DECISIONS file) where its own values
lie within FOLLOW of a tie, relative to the layer's largest, and decides
for itself elsewhere (Follow). Each case fails on a decision of the engine
away from every tie that differs from float64's, and prints how many it
took.

Adam with eps 1e-8 (train_check.py): the bound is checked over the elements
whose float64 gradient stays above 1e-3 of the tensor's largest at every
step, and the error over all elements is printed. At lr 1e-3 one step is
compared, and the test shows the ideal float32 implementation (every op
exact, every tensor rounded to float32) missing the bound over all
elements: after that step the weights whose gradient was rounding noise
differ by up to 2 lr in any float32 implementation, and every later
gradient carries it."""
import os
import sys

import numpy as np
import torch
import torch.nn.functional as Fn
import torchvision

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from resnet_ref import features  # noqa: E402
from st_io import rel_err, st_load, st_save  # noqa: E402
from train_check import TOL, GradRecord, compare as compare_tensors, cosine_loss, exact_f32  # noqa: E402

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
}
# MobileNetV2 trains from the real pretrained weights of $SHARED on PACS images
PRETRAINED = os.path.join(os.environ.get("SHARED", "../shared"), "data", "pretrained",
                          "mobilenet_v2_imagenet.safetensors")
ADAM_EPS = 1e-8


def tag(case):
    arch, opt, bn, lr, _, _, im2col = case
    return "%s_%s_%s_%g%s" % (arch, opt, bn, lr, "_im2col" if im2col else "")


def make_model(arch):
    torch.manual_seed(200 + sorted(GROUPS).index(arch))
    m = getattr(torchvision.models, arch)(weights=None)
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
    if group == "mobilenet_v2":
        x = pacs_images()
    it = Fn.normalize(torch.randn(B, D, generator=g), dim=1)
    t = Fn.normalize(torch.randn(NC, D, generator=g), dim=1)
    y = torch.randint(0, NC, (B,), generator=g)
    return x, it, t, y


# a decision between values within FOLLOW of each other, relative to the
# layer's largest, is one float32 rounding (some 1e-6 of a layer's scale;
# Winograd's some 1e-5) may take either way
FOLLOW = 1e-5


class Follow:
    """The engine's discrete decisions of one case (student_train's
    DECISIONS file), taken by the reference where its own values lie within
    FOLLOW of a tie: a ReLU (ReLU6) input that near 0 (or 6), a max pool
    input the engine chose that near the window's largest. Elsewhere the
    reference decides for itself. Counts the decisions taken from the engine
    that differ from the reference's own (taken) and the engine's decisions
    away from every tie that differ from the reference's (apart: a real
    disagreement, which the test fails)."""

    def __init__(self, path):
        self.d, _ = st_load(path)
        self.s = self.k = 0
        self.taken = self.apart = 0

    def begin(self, step):
        self.s, self.k = step, 0

    def next(self, kind, shape):
        key = "%d.%d" % (self.s, self.k)
        if "d." + key not in self.d:
            raise SystemExit("step %d: the engine recorded %d decision sites, the reference has more" % (self.s, self.k))
        kd, a = int(self.d["dkind." + key][0]), self.d["d." + key]
        if kd != kind or tuple(a.shape) != tuple(shape):
            raise SystemExit("step %d decision site %d: the engine's is kind %d %s, the reference's kind %d %s" % (
                self.s, self.k, kd, list(a.shape), kind, list(shape)))
        self.k += 1
        return torch.from_numpy(a.astype(np.int64))

    def act(self, x, six):
        """ReLU (ReLU6 with six) of x as the decisions say: 0 at or below 0,
        1 passes, 2 at or above 6."""
        c = self.next(2 if six else 1, x.shape)
        xd = x.detach()
        own = (xd > 0).long() + ((xd >= 6).long() if six else 0)
        tol = FOLLOW * xd.abs().max()
        near = (xd.abs() < tol) & (c <= 1)
        if six:
            near |= ((xd - 6).abs() < tol) & (c >= 1)
        st = torch.where(near, c, own)
        self.taken += int((st != own).sum())
        self.apart += int(((c != own) & ~near).sum())
        return torch.where(st == 1, x, torch.where(st == 2, torch.full_like(x, 6.0), torch.zeros_like(x)))

    def maxpool(self, x):
        """3x3/2 max pool (padding 1) of x with the engine's argmax where the
        input it chose lies within FOLLOW of the window's largest."""
        out, idx = Fn.max_pool2d(x, 3, 2, 1, return_indices=True)
        c = self.next(0, out.shape).flatten(2)
        own, flat = idx.flatten(2), x.flatten(2)
        near = out.detach().flatten(2) - flat.detach().gather(2, c) < FOLLOW * x.detach().abs().max()
        use = torch.where(near, c, own)
        self.taken += int((use != own).sum())
        self.apart += int(((c != own) & ~near).sum())
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
        f = features(m, x)
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
    rec.still, rec.ntrain = [n for (n, p), p0 in zip(named, init) if torch.equal(p.detach(), p0)], len(named)
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
        m = make_model(arch)
        st_save(os.path.join(d, "w_%s.safetensors" % arch), dict(m.state_dict()))
        head = make_head(arch)
        for case in GROUPS[group]:
            if case[0] == arch:
                st_save(os.path.join(d, "batch_%s.safetensors" % tag(case)),
                        {"x": x, "it": it, "t": t, "y": y.float(), "proj.weight": head.weight,
                         "proj.bias": head.bias, "lambda": torch.tensor([0.5]), "adam_eps": torch.tensor([ADAM_EPS]),
                         "lr": torch.tensor([case[3]])})


def make_head(arch):
    torch.manual_seed(5)
    return torch.nn.Linear(1280 if arch == "mobilenet_v2" else {"resnet50": 2048}.get(arch, 512), D)


def reference(d, group, case):
    """The case's float64 run (and the ideal float32 and float32 PyTorch
    runs where asked), each following the engine's decisions: name ->
    (tensors, gradient record, follow counts)."""
    x, it, t, y = batch(group)
    arch, ideal = case[0], case[5]
    runs = [("", False, torch.float64)] + ([("_exact32", True, torch.float64)] if ideal else [])
    if os.environ.get("VL2V_F32_REF"):
        runs.append(("_f32", False, torch.float32))
    res = {}
    for suffix, ideal, dtype in runs:
        fol = Follow(os.path.join(d, "dec_%s.safetensors" % tag(case)))
        out, rec = train(make_model(arch), make_head(arch), case, x, it, t, y, fol, ideal, dtype)
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
        runs = reference(d, group, case)
        want, rec, fol = runs[""]
        want = {k: v.detach().numpy() for k, v in want.items()}
        check(fol.apart == 0, "%s: every decision of the engine's (ReLU, max pool) that differs from float64's lies "
              "within %g of a tie, relative to the layer's largest (%d taken the engine's way, %d not)" % (
                  name, FOLLOW, fol.taken, fol.apart))
        e = rel_err(got["loss"], want["loss"])
        check(e < TOL, "%s: losses of %d steps match (%s vs %s)" % (
            name, steps, np.round(got["loss"], 6), np.round(want["loss"], 6)))
        fe = rel_err(got["feat0"], want["feat0"])
        check(fe < TOL, "%s: step-1 features within %g of float64 PyTorch, relative to their largest (%.2g)" % (
            name, TOL, fe))
        gmin = {k[5:]: v.numpy() for k, v in rec.tensors().items()} if opt == "adam" else None
        (worst, wname, missing), (cw, cname, excl, total) = compare_tensors(got, want, gmin)
        if "_f32" in runs:  # VL2V_F32_REF: float32 PyTorch's own error, for comparison
            w32 = {k: v.detach().numpy() for k, v in runs["_f32"][0].items()}
            (e32, n32, _), (c32, cn32, _, _) = compare_tensors(w32, want, gmin)
            print("float32 PyTorch: %s: worst %.2g (%s)%s" % (name, e32, n32, "; conditioned elements %.2g (%s)"
                                                              % (c32, cn32) if gmin is not None else ""))
        check(not missing, "%s: every tensor present%s" % (name, (" (missing %s)" % missing[:3]) if missing else ""))
        check(not rec.still, "%s: every trainable tensor moved (%d of %d did not%s)" % (
            name, len(rec.still), rec.ntrain, (": " + ", ".join(rec.still[:3])) if rec.still else ""))
        # SGD: the bound over all elements; Adam: over the well conditioned
        # elements (eps: train_check.py), and the rest is printed
        cond = opt == "adam"
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
