"""train_check: what the training parity tests (resnet_train.sh, vit.sh,
clip_train.sh) share: the float64 reference run with the gradient record
that conditions the comparison, the "exact float32" run, the comparison, and
the loss every case trains with.

Adam with PyTorch's default eps (1e-8) divides each gradient element by its
own running magnitude: an element whose exact gradient is near eps moves by
up to lr whatever its sign, and the update's sensitivity to the gradient is
lr / (4 eps) there. A float32 gradient carries an absolute error of about
2^-24 times the sizes of the terms it sums, so where the float64 gradient is
within a few orders of magnitude of that error no float32 implementation can
reproduce the step: exact_f32() measures it (every op computed exactly in
float64, every tensor it produces or receives rounded to float32, as an ideal
float32 implementation would). The tests therefore state the bound over the
elements whose float64 gradient stays above GMIN times the tensor's largest
gradient at every step, and check, in the same run, that the ideal float32
implementation itself misses the unconditioned bound."""
import numpy as np
import torch
import torch.nn.functional as Fn

from st_io import rel_err

TOL = 1e-4
# elements whose float64 gradient falls below GMIN x the tensor's largest at
# some step are where Adam's g / (|g| + eps) amplifies float32 rounding
GMIN = 1e-3


def cosine_loss(z, it, t, y):
    """The method's loss with lambda 0.5: minus the mean over the batch of
    0.5 cos(z, image embedding) + 0.5 cos(z, text embedding of the label)."""
    return -(0.5 * Fn.cosine_similarity(z, it, dim=1) + 0.5 * Fn.cosine_similarity(z, t[y], dim=1)).mean()


class Round(torch.autograd.Function):
    """x rounded to float32 (kept in float64), and its gradient likewise."""

    @staticmethod
    def forward(ctx, x):
        return x.float().double()

    @staticmethod
    def backward(ctx, g):
        return g.float().double()


def exact_f32(model):
    """Rounds every leaf module's output (and the gradient arriving at it)
    to float32: run in float64, the model is then an ideal float32
    implementation whose every op is exact before the rounding."""
    for mod in model.modules():
        if len(list(mod.children())) == 0:
            mod.register_forward_hook(lambda mod, inp, out: Round.apply(out))


class GradRecord:
    """Per tensor and element, the smallest |gradient| over the steps,
    relative to the tensor's largest |gradient| at that step."""

    def __init__(self):
        self.rel = {}

    def add(self, named):
        for n, p in named:
            if p.grad is None:
                continue
            g = p.grad.detach().double().abs()
            r = (g / max(g.max().item(), 1e-300)).numpy()
            self.rel[n] = np.minimum(self.rel[n], r) if n in self.rel else r

    def tensors(self):
        return {"gmin." + n: torch.from_numpy(v.astype(np.float32)) for n, v in self.rel.items()}


def compare(got, want, gmin=None):
    """Worst error relative to each tensor's scale over every tensor of want
    (but "loss", "feat0" and "gmin.*"): (worst, name, missing); with gmin
    (name -> relative minimum gradient, from GradRecord) also over the well
    conditioned elements only: (worst, name, excluded elements, all elements)."""
    worst, wname, missing = 0.0, "", []
    cw, cname, excl, total = 0.0, "", 0, 0
    for name, w in want.items():
        if name in ("loss", "feat0") or name.startswith("gmin."):
            continue
        if name not in got:
            missing.append(name)
            continue
        g = np.asarray(got[name], dtype=np.float64)
        w64 = np.asarray(w, dtype=np.float64)
        e = rel_err(g, w64)
        if e > worst:
            worst, wname = e, name
        if gmin is not None:
            scale = max(np.abs(w64).max(), 1e-12)
            keep = gmin[name] >= GMIN if name in gmin else np.ones(w64.shape, bool)
            total += keep.size
            excl += int(keep.size - keep.sum())
            ce = float((np.abs(g - w64) * keep).max() / scale)
            if ce > cw:
                cw, cname = ce, name
    return (worst, wname, missing), (cw, cname, excl, total)
