"""clip_train_ref: PyTorch side of tests/ref/clip_train.sh (VL2V-SD, the
CLIP image tower as the student). Uses the CLIP reference model of
tests/ref/clip_ref.py (transformers' names).

  clip_train_ref.py prepare DIR   a training batch for the tiny CLIP made by
                                  clip_ref.py in DIR/m, and the tower's
                                  tensors after 3 steps (float64) per optimiser
  clip_train_ref.py compare DIR   PASS/FAIL lines for the C outputs

Loss: L = -mean(lambda cos(out, It) + (1 - lambda) cos(out, T[y])) on the
projected image features out = visual_projection(vision_model(pix))."""
import os
import sys

import numpy as np
import torch
import torch.nn.functional as Fn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import clip_ref  # noqa: E402
from st_io import rel_err, st_load, st_save  # noqa: E402
from train_check import GradRecord, compare as compare_tensors, cosine_loss  # noqa: E402

torch.set_num_threads(2)
TOL = 1e-4
STEPS = 3
# Adam as the method runs it (lr 5e-5, PyTorch's eps 1e-8; see train_check.py)
OPTS = {"adam": 5e-5, "sgd": 0.01}
ADAM_EPS = 1e-8


def load_model(d):
    cfg = clip_ref.CONFIGS["tiny"]
    m = clip_ref.CLIP(cfg)
    sd, _ = st_load(os.path.join(d, "m", "hf", "model.safetensors"))
    m.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in sd.items() if not k.endswith("position_ids")})
    return m.double(), cfg


def prepare(d):
    m, cfg = load_model(d)
    S, D = cfg["vision"]["image_size"], cfg["projection_dim"]
    g = torch.Generator().manual_seed(21)
    B, NC = 4, 6
    pix = torch.randn(B, 3, S, S, generator=g)
    it = Fn.normalize(torch.randn(B, D, generator=g), dim=1)
    t = Fn.normalize(torch.randn(NC, D, generator=g), dim=1)
    y = torch.tensor([5, 0, 2, 5])
    for opt, lr in OPTS.items():
        st_save(os.path.join(d, "batch_%s.safetensors" % opt),
                {"pix": pix, "it": it, "t": t, "y": y.float(), "lambda": torch.tensor([0.5]),
                 "lr": torch.tensor([lr]), "adam_eps": torch.tensor([ADAM_EPS])})
        m, _ = load_model(d)
        named = [(n, p) for n, p in m.named_parameters() if n.startswith(("vision_model.", "visual_projection."))]
        ps = [p for _, p in named]
        o = torch.optim.Adam(ps, lr=lr, eps=ADAM_EPS) if opt == "adam" else torch.optim.SGD(ps, lr=lr, momentum=0.9)
        rec = GradRecord()
        losses = []
        for _ in range(STEPS):
            o.zero_grad()
            out = m.visual_projection(m.vision_model(pix.double()))
            loss = cosine_loss(out, it.double(), t.double(), y)
            loss.backward()
            rec.add(named)
            o.step()
            losses.append(loss.item())
        want = {k: v.float() for k, v in m.state_dict().items()
                if k.startswith("vision_model.") or k.startswith("visual_projection.")}
        want["loss"] = torch.tensor(losses)
        if opt == "adam":
            want.update(rec.tensors())
        st_save(os.path.join(d, "want_%s.safetensors" % opt), want)


def compare(d):
    fails = 0
    for opt in OPTS:
        tag = "clip image tower (VL2V-SD) %s" % opt
        gp = os.path.join(d, "got_%s.safetensors" % opt)
        if not os.path.exists(gp):
            print("FAIL: %s: no C training output" % tag)
            fails += 1
            continue
        got, _ = st_load(gp)
        want, _ = st_load(os.path.join(d, "want_%s.safetensors" % opt))
        e = rel_err(got["loss"], want["loss"])
        ok = e < TOL
        print("%s: %s: losses of %d steps match (%s vs %s)" % ("PASS" if ok else "FAIL", tag, STEPS,
                                                              np.round(got["loss"], 6), np.round(want["loss"], 6)))
        fails += not ok
        gmin = {k[5:]: v for k, v in want.items() if k.startswith("gmin.")} if opt == "adam" else None
        (worst, wname, missing), (cw, cname, excl, total) = compare_tensors(got, want, gmin)
        if missing:
            worst, wname = float("inf"), missing[0]
        if gmin is None or worst < TOL:
            ok = worst < TOL
            print("%s: %s: every tower tensor after %d steps within %g of float64 PyTorch (worst %.2g, %s)"
                  % ("PASS" if ok else "FAIL", tag, STEPS, TOL, worst, wname))
        else:
            ok = cw < TOL
            print("%s: %s: every tower tensor after %d steps within %g of float64 PyTorch over the %d of %d "
                  "elements whose gradient stays above 1e-3 of the tensor's largest (worst %.2g, %s; over all "
                  "elements %.2g, %s)" % ("PASS" if ok else "FAIL", tag, STEPS, TOL, total - excl, total, cw, cname,
                                          worst, wname))
        fails += not ok
    return 1 if fails else 0


if __name__ == "__main__":
    if sys.argv[1] == "prepare":
        prepare(sys.argv[2])
    else:
        sys.exit(compare(sys.argv[2]))
