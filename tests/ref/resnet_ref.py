"""resnet_ref: PyTorch side of the convolutional students' feature parity
test (tests/ref/resnet.sh): torchvision ResNet-18/34/50 and MobileNetV2.
Training parity is resnet_train_ref.py's.

  resnet_ref.py prepare DIR   random torchvision ResNets as safetensors, an
                              image stream and reference features
  resnet_ref.py compare DIR   prints PASS/FAIL lines for the C outputs"""
import os
import sys

import numpy as np
import torch
import torch.nn.functional as Fn
import torchvision

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from st_io import rel_err, st_load, st_save, write_image_stream  # noqa: E402

torch.set_num_threads(2)
ARCHS = ["resnet18", "resnet34", "resnet50", "mobilenet_v2"]
TOL = 1e-4


def make_model(arch, seed):
    torch.manual_seed(seed)
    m = getattr(torchvision.models, arch)(weights=None)
    with torch.no_grad():
        for mod in m.modules():
            if isinstance(mod, torch.nn.BatchNorm2d):
                mod.weight.uniform_(0.5, 1.5)
                mod.bias.uniform_(-0.2, 0.2)
                mod.running_mean.uniform_(-0.2, 0.2)
                mod.running_var.uniform_(0.5, 1.5)
    return m


def features(m, x):
    if isinstance(m, torchvision.models.MobileNetV2):
        return torch.flatten(Fn.adaptive_avg_pool2d(m.features(x), 1), 1)
    x = m.maxpool(m.relu(m.bn1(m.conv1(x))))
    x = m.layer4(m.layer3(m.layer2(m.layer1(x))))
    return torch.flatten(m.avgpool(x), 1)


def prepare(d):
    rng = np.random.default_rng(7)
    # images of two sizes, to exercise batching by size in student-embed
    imgs = [("img%d" % i, rng.integers(0, 256, size=(72, 88, 3), dtype=np.uint8)) for i in range(3)]
    imgs += [("big%d" % i, rng.integers(0, 256, size=(96, 64, 3), dtype=np.uint8)) for i in range(2)]
    write_image_stream(os.path.join(d, "img.mp"), imgs, labels=[0, 1, 2, 3, 4])
    mean = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)
    for k, arch in enumerate(ARCHS):
        m = make_model(arch, 100 + k)
        m.eval()
        st_save(os.path.join(d, arch + ".safetensors"), dict(m.state_dict()))
        if arch == "resnet18":
            # a DataParallel training checkpoint, for tools/pth2safetensors
            torch.save({"epoch": 3, "state_dict": {"module." + k: v for k, v in m.state_dict().items()}},
                       os.path.join(d, "resnet18.pth"))
        feats = []
        with torch.no_grad():
            for _, im in imgs:
                x = (torch.from_numpy(im).permute(2, 0, 1).float() / 255.0 - mean) / std
                feats.append(features(m, x[None])[0].numpy())
        np.save(os.path.join(d, arch + ".feat.npy"), np.stack(feats))
    real = os.path.join(os.environ.get("SHARED", "../shared"), "data", "pretrained",
                        "mobilenet_v2_imagenet.safetensors")
    if os.path.exists(real):
        # the one real pretrained student, on real PACS images, its own normalisation (0.5, 0.5)
        sd, _ = st_load(real)
        m = torchvision.models.mobilenet_v2()
        m.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in sd.items()})
        m.eval()
        from PIL import Image
        root = os.path.join(os.path.dirname(os.path.dirname(real)), "PACS")
        paths = [os.path.join(root, dom, "dog", sorted(os.listdir(os.path.join(root, dom, "dog")))[0])
                 for dom in ("photo", "art_painting", "cartoon")]
        ims = [np.asarray(Image.open(p).convert("RGB").resize((224, 224), Image.BILINEAR)) for p in paths]
        write_image_stream(os.path.join(d, "real.mp"), [("real%d" % i, im) for i, im in enumerate(ims)])
        with torch.no_grad():
            x = torch.stack([(torch.from_numpy(im.copy()).permute(2, 0, 1).float() / 255.0 - 0.5) / 0.5 for im in ims])
            f = features(m, x)
            np.save(os.path.join(d, "real.feat.npy"), f.numpy())
            np.save(os.path.join(d, "real.top1.npy"), m.classifier(f).argmax(1).numpy())


def compare(d):
    from st_io import read_stream
    fails = 0

    def check(ok, what):
        nonlocal fails
        print(("PASS: " if ok else "FAIL: ") + what)
        fails += not ok

    for arch in ARCHS:
        path = os.path.join(d, arch + ".emb.mp")
        if not os.path.exists(path):
            check(False, "%s: student-embed produced no output" % arch)
            continue
        hdr, items, trl = read_stream(path)
        want = np.load(os.path.join(d, arch + ".feat.npy"))
        check(hdr.get("schema") == "embedding" and hdr.get("space") == "student:" + arch
              and hdr.get("dim") == want.shape[1] and trl.get("records") == len(items) == len(want),
              "%s: student-embed header (space %s, dim %s) and trailer" % (arch, hdr.get("space"), hdr.get("dim")))
        got = np.stack([np.frombuffer(it["vec"], dtype="<f4") for it in items])
        ids_ok = [it["id"] for it in items] == ["img0", "img1", "img2", "big0", "big1"]
        check(ids_ok and [it.get("label") for it in items] == [0, 1, 2, 3, 4],
              "%s: ids and labels carried over in order" % arch)
        e = rel_err(got, want)
        check(e < TOL, "%s: student-embed features match torchvision (rel err %.2g)" % (arch, e))

    if os.path.exists(os.path.join(d, "real.feat.npy")):
        path = os.path.join(d, "real.emb.mp")
        if os.path.exists(path) and os.path.getsize(path):
            got = np.stack([np.frombuffer(it["vec"], dtype="<f4") for it in read_stream(path)[1]])
            e = rel_err(got, np.load(os.path.join(d, "real.feat.npy")))
            check(e < TOL, "mobilenet_v2: the real pretrained weights on 3 PACS images match torchvision "
                  "(rel err %.2g)" % e)
        else:
            check(False, "mobilenet_v2: no features for the real weights")

    path = os.path.join(d, "pth.emb.mp")
    if os.path.exists(path) and os.path.getsize(path):
        a = [it["vec"] for it in read_stream(path)[1]]
        b = [it["vec"] for it in read_stream(os.path.join(d, "resnet18.emb.mp"))[1]]
        check(a == b, "pth2safetensors: a converted DataParallel checkpoint gives the same features, bit for bit")
    else:
        check(False, "pth2safetensors: no features from the converted checkpoint")

    return 1 if fails else 0


if __name__ == "__main__":
    if sys.argv[1] == "prepare":
        prepare(sys.argv[2])
    else:
        sys.exit(compare(sys.argv[2]))
