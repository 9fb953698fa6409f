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

torch.set_num_threads(2)
TOL = 1e-4
STEPS = 3
OPTS = {"adam": 1e-4, "sgd": 0.01}


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
                 "lr": torch.tensor([lr]), "adam_eps": torch.tensor([1e-6])})
        m, _ = load_model(d)
        ps = list(m.vision_model.parameters()) + list(m.visual_projection.parameters())
        o = torch.optim.Adam(ps, lr=lr, eps=1e-6) if opt == "adam" else torch.optim.SGD(ps, lr=lr, momentum=0.9)
        losses = []
        for _ in range(STEPS):
            o.zero_grad()
            out = m.visual_projection(m.vision_model(pix.double()))
            loss = -(0.5 * Fn.cosine_similarity(out, it.double(), dim=1)
                     + 0.5 * Fn.cosine_similarity(out, t.double()[y], dim=1)).mean()
            loss.backward()
            o.step()
            losses.append(loss.item())
        want = {k: v.float() for k, v in m.state_dict().items()
                if k.startswith("vision_model.") or k.startswith("visual_projection.")}
        want["loss"] = torch.tensor(losses)
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
        worst, wname = 0.0, ""
        for name, w in want.items():
            e = rel_err(got[name], w) if name in got else float("inf")
            if e > worst:
                worst, wname = e, name
        ok = worst < TOL
        print("%s: %s: every tower tensor after %d steps within %g of float64 PyTorch (worst %.2g, %s)"
              % ("PASS" if ok else "FAIL", tag, STEPS, TOL, worst, wname))
        fails += not ok
    return 1 if fails else 0


if __name__ == "__main__":
    if sys.argv[1] == "prepare":
        prepare(sys.argv[2])
    else:
        sys.exit(compare(sys.argv[2]))
