"""resnet_train_ref: PyTorch side of the convolutional students' training
parity tests (tests/ref/resnet_train.sh, resnet50_train.sh,
mobilenet_train.sh, through tests/ref/cnn_train).

  resnet_train_ref.py prepare DIR GROUP   weights, a batch and the float64
                                          answer for each case of GROUP;
                                          DIR/cases lists them
  resnet_train_ref.py compare DIR GROUP   PASS/FAIL lines for the C outputs

With VL2V_F32_REF=1 in the environment, prepare also trains in float32
PyTorch and compare prints its error beside each case's.

Each case: steps of F = backbone(x) (features after global average
pooling), Z = F Wp^T + bp, L = -mean(lambda cos(Z, It) + (1 - lambda)
cos(Z, T[y])), the optimiser over backbone and head, against torch.optim in
float64: every parameter and running statistic within 1e-4 of the float64
answer, relative to the tensor's largest value. No allowance is made for
float32 PyTorch's own error.

The setups are real training's, not tiny or degenerate ones. BatchNorm in
training mode over 2-4 small maps divides by the spread of a handful of
values, and there float32 PyTorch itself lands 1e-3 from float64; here
every case has 8 images of 64x64. ResNets: inputs ~ N(0,1), torchvision's
initialisation (kaiming convs), BatchNorm's affine parameters a little off
1 and 0 and its running statistics those of data like the batch (a
pretrained network's are its data's; random ones leave whole channels
dead); ResNet-50's residual branches end in small BatchNorm weights (see
make_model). MobileNetV2: the real pretrained weights of $SHARED on PACS
images. Learning rates are those used with these networks: Adam at the
method's 5e-5 and at 1e-3, with PyTorch's default eps 1e-8; SGD with
momentum 0.9 at 0.01 with BatchNorm frozen and 1e-3 in training mode (at
0.01 an untrained network's training-mode gradients move its first layers
by a sizeable part of their values per step, a divergence that amplifies
every rounding: float32 PyTorch lands 0.2-0.5 from float64).

Adam with eps 1e-8 (train_check.py): the bound is checked over the elements
whose float64 gradient stays above 1e-3 of the tensor's largest at every
step (over all elements when it holds there). At lr 1e-3 one step is
compared, and the test shows the ideal float32 implementation (every op
exact, every tensor rounded to float32) missing the bound over all
elements: after that step the weights whose gradient was rounding noise
differ by up to 2 lr in any float32 implementation, and every later
gradient carries it.

Cases with the ideal float32 run (ResNet-18 Adam 1e-3, both ResNet-50
cases): where it misses the bound too, no float32 implementation can be
asked to meet it, and this one is held to twice the ideal's error (ResNet-50
Adam 5e-5: the ideal and this engine both 1.4e-3 over the conditioned
elements, on the same element of layer4.0.conv2.weight); where it meets
the bound, so must this one (ResNet-50 SGD with BatchNorm training: the
ideal 6e-5, this engine 1.7e-4 and float32 PyTorch 1.3e-4, all at
conv1.weight: float32 PyTorch is trained too, and where it misses the
bound while the ideal meets it, this one is held to twice float32
PyTorch's error; not the stem's weight-gradient sum, which in double
changes nothing, but a ReLU after layer3.1.bn1 whose float64 input is
1.3e-7 of the layer's largest from 0 and which this engine's rounding
flips at step 1, moving the gradients of the tensors before it by up to
9e-2; float32 PyTorch flips one in layer1).

Discrete decisions: a ReLU whose input, or a max pool whose two largest
inputs, lie within float32 rounding of each other route a gradient element
differently in float32 and float64. The chance grows with the number of
elements; it is a property of the seed, shared by float32 PyTorch (e.g. a
ResNet-18 with small final BatchNorm weights, Adam 5e-5, BatchNorm
training: float32 PyTorch and this engine both land 1.7e-3 from float64,
on the same element). MobileNetV2 with Adam 5e-5: a ReLU6 of
features.11.conv.1 meets an input 7.5e-6 from its threshold at step 2 or 3
in float64; this engine's rounding (step-1 features 4.9e-6 from float64,
float32 PyTorch's 3.4e-6) takes it the other way and moves that channel's
weights in features.11 by up to 1.3e-4, float32 PyTorch's does not. The
test records, in the float64 run, every ReLU6 input within TIE (1e-5) of 0
or 6 relative to its layer's largest and leaves out, and counts, the
elements whose gradient that decision routes (its unit's convolution and
BatchNorm channel and, for a depthwise unit, the channel of the unit
feeding it): 27,106 of the conditioned elements; the rest within 3.7e-5.

Winograd (the ResNet-18 case "Winograd on": F(4x4,3x3) as users get it by
default; the other cases run im2col): its step-1 features land 9e-6 from
float64 (im2col 4e-6), enough to flip a ReLU of layer2.1 whose float64
input comes 2.7e-7 of the layer's largest from 0, which moves the step-1
gradient of every tensor before it by up to 1.8e-2 (layer2.1.conv1.weight).
The case takes one SGD step and checks the features, the parameters after
it, and the step-1 gradients of the tensors after the last ReLU whose input
comes within RELU_TIE (1e-6) of 0 in float64 (17 of 62; the worst over all
tensors is printed). After 3 SGD steps the flipped decisions add up to
9e-3."""
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
# exact-f32 run, with Winograd on)
GROUPS = {
    "resnet18": [("resnet18", "sgd", "frozen", 0.01, 3, False, False),
                 ("resnet18", "sgd", "train", 1e-3, 3, False, False),
                 ("resnet18", "adam", "frozen", 5e-5, 3, False, False),
                 ("resnet18", "adam", "train", 5e-5, 3, False, False),
                 ("resnet18", "adam", "frozen", 1e-3, 1, True, False),
                 ("resnet18", "sgd", "frozen", 0.01, 1, False, True)],
    "resnet50": [("resnet50", "sgd", "train", 1e-3, 3, True, False),
                 ("resnet50", "adam", "frozen", 5e-5, 3, True, False)],
    "mobilenet_v2": [("mobilenet_v2", "sgd", "train", 1e-3, 3, False, False),
                     ("mobilenet_v2", "adam", "frozen", 5e-5, 3, False, False)],
}
# cases that always train float32 PyTorch too: where the ideal float32
# implementation meets the bound but float32 PyTorch misses it (a ReLU
# decision within float32 rounding of its threshold, taken either way by
# different float32 roundings), this one is held to twice float32 PyTorch's
# error, and both are printed
F32_ALWAYS = {("resnet50", "sgd", "train")}
# MobileNetV2 trains from the real pretrained weights of $SHARED on PACS images
PRETRAINED = os.path.join(os.environ.get("SHARED", "../shared"), "data", "pretrained",
                          "mobilenet_v2_imagenet.safetensors")
ADAM_EPS = 1e-8


def tag(case):
    arch, opt, bn, lr, _, _, wino = case
    return "%s_%s_%s_%g%s" % (arch, opt, bn, lr, "_winograd" if wino else "")


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


# a ReLU6 input within TIE of 0 or 6, relative to its layer's largest, is a
# decision that float32 rounding (some 1e-6 of the layer's scale here) may
# take either way
TIE = 1e-5


def record_ties(m):
    """MobileNetV2: hooks that mark, per convolution-BatchNorm-ReLU6 unit and
    output channel, whether a ReLU6 input of the float64 run lay within TIE
    of 0 or 6 at some step; tie_masks() turns them into per-element masks of
    the tensors whose gradient that decision routes: the unit's convolution
    and BatchNorm channel and, before a depthwise convolution (whose channel
    c is fed by channel c alone), the unit feeding it."""
    units = [(n, mod) for n, mod in m.named_modules()
             if type(mod).__name__ == "Conv2dNormActivation" and isinstance(mod[2], torch.nn.ReLU6)]
    ties = {n: None for n, _ in units}

    def hook(n):
        def f(mod, inp, out):
            v = out.detach()
            d = torch.minimum(v.abs(), (v - 6).abs()).transpose(0, 1).reshape(v.shape[1], -1).amin(1)
            near = (d < TIE * v.abs().max()).numpy()
            ties[n] = near if ties[n] is None else ties[n] | near
        return f

    for n, mod in units:
        mod[1].register_forward_hook(hook(n))

    def tie_masks():
        masks = {}
        for i, (n, mod) in enumerate(units):
            near = ties[n]
            if near is None or not near.any():
                continue
            feed = [n]
            if mod[0].groups > 1 and mod[0].groups == mod[0].out_channels and i > 0:
                feed.append(units[i - 1][0])
            for u in feed:
                for k in (".0.weight", ".1.weight", ".1.bias"):
                    shape = dict(m.named_parameters())[u + k].shape
                    mk = masks.setdefault(u + k, np.zeros(tuple(shape), np.float32))
                    mk[near] = 1
        return {"tie." + k: torch.from_numpy(v) for k, v in masks.items()}

    return tie_masks


# a ReLU whose input lies within RELU_TIE of 0, relative to the largest, in
# float64 is a decision Winograd's rounding (some 1e-5 of a convolution's
# output) may take the other way
RELU_TIE = 1e-6


def record_relu_ties(m):
    """ResNets, first forward pass: the order in which the modules holding
    parameters run and, for each ReLU call, how close its nearest input is
    to 0 relative to its largest. behind() names the tensors that run before
    (whose gradient passes through) a ReLU deciding within RELU_TIE."""
    pos, ties, n = {}, [], [0]
    hooks = []

    def pre(name):
        def f(mod, inp):
            n[0] += 1
            if isinstance(mod, torch.nn.ReLU):
                v = inp[0].detach()
                ties.append((n[0], (v.abs().min() / max(v.abs().max().item(), 1e-300)).item()))
            else:
                pos.setdefault(name, n[0])
        return f

    for name, mod in m.named_modules():
        if isinstance(mod, torch.nn.ReLU) or (len(list(mod.children())) == 0 and
                                               any(True for _ in mod.parameters(recurse=False))):
            hooks.append(mod.register_forward_pre_hook(pre(name)))

    def behind():
        for h in hooks:
            h.remove()
        last = max([p for p, r in ties if r < RELU_TIE], default=0)
        return {k for k, _ in m.named_parameters() if pos.get(k.rsplit(".", 1)[0], 0) < last}, last, len(ties)

    return behind


def train(m, head, case, x, it, t, y, ideal=False, dtype=torch.float64):
    arch, opt, bn, lr, steps, _, _ = case
    m, head = m.to(dtype), head.to(dtype)
    tie_masks = record_ties(m) if arch == "mobilenet_v2" and dtype == torch.float64 and not ideal else None
    behind = record_relu_ties(m) if case[6] and dtype == torch.float64 and not ideal else None
    if ideal:
        exact_f32(m)
    x, it, t = x.to(dtype), it.to(dtype), t.to(dtype)
    m.train(bn == "train")
    named = [(n, p) for n, p in m.named_parameters() if not n.startswith(("fc.", "classifier."))]
    named += [("proj.weight", head.weight), ("proj.bias", head.bias)]
    ps = [p for _, p in named]
    o = torch.optim.Adam(ps, lr=lr, eps=ADAM_EPS) if opt == "adam" else torch.optim.SGD(ps, lr=lr, momentum=0.9)
    rec, losses, first = GradRecord(), [], {}
    for s in range(steps):
        o.zero_grad()
        f = features(m, x)
        z = head(f)
        loss = cosine_loss(z, it, t, y)
        loss.backward()
        if ideal:
            for p in ps:
                p.grad = p.grad.float().double()
        rec.add(named)
        if s == 0 and case[6]:
            first = {"grad0." + n: p.grad.float() for n, p in named if p.grad is not None}
            first["feat0"] = f.detach().float()
            if behind:
                # the tensors a near-tie ReLU decision lies between and the loss
                for k in behind()[0]:
                    first["behind." + k] = torch.ones(1)
        o.step()
        if ideal:
            with torch.no_grad():
                for p in ps:
                    p.copy_(p.float().double())
        losses.append(loss.item())
    out = {k: v.float() for k, v in m.state_dict().items() if not k.endswith("num_batches_tracked")}
    out["proj.weight"], out["proj.bias"] = head.weight.float(), head.bias.float()
    out["loss"] = torch.tensor(losses)
    out.update(first)
    if tie_masks:
        out.update(tie_masks())
    return out, rec


def prepare(d, group):
    x, it, t, y = batch(group)
    with open(os.path.join(d, "cases"), "w") as f:
        for case in GROUPS[group]:
            arch, opt, bn, lr, steps, ideal, wino = case
            f.write("%s %s %s %s %d %d\n" % (tag(case), arch, opt, bn, steps, wino))
    for arch in sorted({c[0] for c in GROUPS[group]}):
        m = make_model(arch)
        st_save(os.path.join(d, "w_%s.safetensors" % arch), dict(m.state_dict()))
        fdim = 1280 if arch == "mobilenet_v2" else m.fc.in_features
        torch.manual_seed(5)
        head = torch.nn.Linear(fdim, D)
        for case in GROUPS[group]:
            if case[0] != arch:
                continue
            tg = tag(case)
            st_save(os.path.join(d, "batch_%s.safetensors" % tg),
                    {"x": x, "it": it, "t": t, "y": y.float(), "proj.weight": head.weight, "proj.bias": head.bias,
                     "lambda": torch.tensor([0.5]), "adam_eps": torch.tensor([ADAM_EPS]),
                     "lr": torch.tensor([case[3]])})
            runs = [("", False, torch.float64)] + ([("_exact32", True, torch.float64)] if case[5] else [])
            if os.environ.get("VL2V_F32_REF") or case[:3] in F32_ALWAYS:
                runs.append(("_f32", False, torch.float32))
            for suffix, ideal, dtype in runs:
                mm = make_model(arch)
                hh = torch.nn.Linear(fdim, D)
                with torch.no_grad():
                    hh.weight.copy_(head.weight)
                    hh.bias.copy_(head.bias)
                out, rec = train(mm, hh, case, x, it, t, y, ideal, dtype)
                if not ideal and dtype == torch.float64 and case[1] == "adam":
                    out.update(rec.tensors())
                st_save(os.path.join(d, "want_%s%s.safetensors" % (tg, suffix)), out)


def compare(d, group):
    fails = 0

    def check(ok, what):
        nonlocal fails
        print(("PASS: " if ok else "FAIL: ") + what)
        fails += not ok

    for case in GROUPS[group]:
        arch, opt, bn, lr, steps, ideal, wino = case
        tg = tag(case)
        name = "%s %s lr %g%s BN %s%s" % (arch, opt, lr, " eps 1e-8" if opt == "adam" else " momentum 0.9", bn,
                                          " Winograd on" if wino else "")
        gp = os.path.join(d, "got_%s.safetensors" % tg)
        if not os.path.exists(gp):
            check(False, "%s: no C training output" % name)
            continue
        got, _ = st_load(gp)
        want, _ = st_load(os.path.join(d, "want_%s.safetensors" % tg))
        e = rel_err(got["loss"], want["loss"])
        check(e < TOL, "%s: losses of %d steps match (%s vs %s)" % (
            name, steps, np.round(got["loss"], 6), np.round(want["loss"], 6)))
        gmin = {k[5:]: v for k, v in want.items() if k.startswith("gmin.")} if opt == "adam" else None
        (worst, wname, missing), (cw, cname, excl, total) = compare_tensors(got, want, gmin)
        p32 = os.path.join(d, "want_%s_f32.safetensors" % tg)
        f32err = None
        if os.path.exists(p32):  # VL2V_F32_REF: float32 PyTorch's own error, for comparison
            (w32, n32, _), (c32, cn32, _, _) = compare_tensors(st_load(p32)[0], want, gmin)
            f32err = (w32, n32)
            print("float32 PyTorch: %s: worst %.2g (%s)%s" % (name, w32, n32, "; conditioned elements %.2g (%s)"
                                                              % (c32, cn32) if gmin is not None else ""))
        check(not missing, "%s: every tensor present%s" % (name, (" (missing %s)" % missing[:3]) if missing else ""))
        # the bound over all elements (SGD, or where it holds), else over the
        # well conditioned elements (Adam's eps: train_check.py)
        cond = not (opt == "sgd" or worst < TOL)
        err, ename = (cw, cname) if cond else (worst, wname)
        what = "%s: every parameter and running statistic after %d steps within %g of float64 PyTorch" % (
            name, steps, TOL)
        if cond:
            what += " over the %d of %d elements whose gradient stays above 1e-3 of the tensor's largest" % (
                total - excl, total)
        ierr = None
        if ideal:
            ex, _ = st_load(os.path.join(d, "want_%s_exact32.safetensors" % tg))
            (e32, n32, _), (ce32, cn32, _, _) = compare_tensors(ex, want, gmin)
            ierr, iname = (ce32, cn32) if cond else (e32, n32)
        ties = {k[4:]: v for k, v in want.items() if k.startswith("tie.")}
        if cond and err >= TOL and ierr is None and ties:
            # a ReLU6 deciding by a hair: the elements whose gradient it
            # routes are left out too, and counted
            g2 = {k: np.where(ties[k] > 0, 0.0, v) if k in ties else v for k, v in gmin.items()}
            _, (tw, tname, texcl, _) = compare_tensors(got, want, g2)
            check(tw < TOL, "%s and not routed by a ReLU6 input within %g of 0 or 6 (relative to its layer's "
                  "largest) in float64: %d of %d elements (worst %.2g, %s; with the %d routed by those decisions "
                  "%.2g, %s; over all elements %.2g, %s)" % (
                      what.replace(" over the %d of %d elements" % (total - excl, total), " over the elements"), TIE,
                      total - texcl, total, tw, tname, texcl - excl, err, ename, worst, wname))
        elif err >= TOL and ierr is not None and ierr < TOL and f32err and case[:3] in F32_ALWAYS and f32err[0] >= TOL:
            check(err <= 2 * f32err[0], "%s: missed by float32 PyTorch too, %.2g (%s), though not by an ideal float32 "
                  "implementation (every op exact, every tensor rounded to float32), %.2g (%s): a ReLU decision "
                  "within float32 rounding of 0, taken either way; this implementation within twice float32 "
                  "PyTorch's error: %.2g (%s)" % (what, f32err[0], f32err[1], ierr, iname, err, ename))
        elif err < TOL or ierr is None or ierr < TOL:
            check(err < TOL, "%s (worst %.2g, %s%s%s)" % (what, err, ename, "; over all elements %.2g, %s" % (
                worst, wname) if cond else "", "; an ideal float32 implementation (every op exact, every tensor "
                "rounded to float32) %.2g, %s" % (ierr, iname) if ierr is not None else ""))
        else:
            # no float32 implementation meets the bound here: the ideal one
            # misses it too, and this one is held to twice its error
            check(err <= 2 * ierr, "%s: missed by an ideal float32 implementation (every op exact, every tensor "
                  "rounded to float32) too, %.2g (%s); this implementation within twice that: %.2g (%s)" % (
                      what, ierr, iname, err, ename))
        if ideal and cond:
            check(e32 >= TOL, "%s: an ideal float32 implementation misses %g over all elements too: worst %.2g "
                  "(%s); this implementation %.2g" % (name, TOL, e32, n32, worst))
        if wino:
            fe = rel_err(got["feat0"], want["feat0"])
            check(fe < TOL, "%s: step-1 features within %g of float64 PyTorch, relative to their largest (%.2g)" % (
                name, TOL, fe))
            # a ReLU deciding within float32 rounding routes the gradient of
            # every tensor before it: the bound holds for the tensors after
            # the last such decision, and the rest is measured
            gw, gn, aw, an, gmiss, nt, nb = 0.0, "", 0.0, "", [], 0, 0
            for k in want:
                if k.startswith("grad0."):
                    if k not in got:
                        gmiss.append(k)
                        continue
                    ge = rel_err(got[k], want[k])
                    nt += 1
                    if ge > aw:
                        aw, an = ge, k[6:]
                    if "behind." + k[6:] in want:
                        nb += 1
                    elif ge > gw:
                        gw, gn = ge, k[6:]
            check(not gmiss and gw < TOL, "%s: step-1 gradient within %g of float64 PyTorch, relative to the "
                  "tensor's largest, of the %d of %d tensors after the last ReLU whose input comes within %g of 0 "
                  "(relative to its largest) in float64 (worst %.2g, %s; over all tensors %.2g, %s)%s" % (
                      name, TOL, nt - nb, nt, RELU_TIE, gw, gn, aw, an,
                      " (missing %s)" % gmiss[:3] if gmiss else ""))
    return 1 if fails else 0


if __name__ == "__main__":
    if sys.argv[1] == "prepare":
        prepare(sys.argv[2], sys.argv[3])
    else:
        sys.exit(compare(sys.argv[2], sys.argv[3]))
