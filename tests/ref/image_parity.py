#!/usr/bin/python3
"""image_parity: lib/image, lib/augment and imgdecode against PIL and
torchvision (Debian's), on real PACS images and on files made here.

usage: image_parity.py IMAGE_OPS TMPDIR [IMAGE_OPS_OTHER,...]

IMAGE_OPS is tests/ref/image_ops.c compiled against the library;
IMAGE_OPS_OTHER the same built for other instruction sets (their resize and
colour operations are checked against PIL too). Prints one
PASS/FAIL line per check. Tolerances: the evaluation resize may differ from
PIL's by 0.5 grey levels on average and 2 at worst per image; each
augmentation operation by 1.0 on average (both are in fact expected to be
bit-identical, and the worst differences are printed)."""
import glob
import io
import math
import os
import struct
import subprocess
import sys
import zlib

import msgpack
import numpy as np
import torch
import torchvision.transforms as T
import torchvision.transforms.functional as F
from PIL import Image

OPS, TMP = sys.argv[1], sys.argv[2]
OTHERS = sys.argv[3].split(",") if len(sys.argv) > 3 and sys.argv[3] else []
SHARED = os.environ.get("SHARED", "../shared")
PACS = os.path.join(SHARED, "data", "PACS")
failures = 0


def check(ok, what):
    global failures
    print(("PASS: " if ok else "FAIL: ") + what, flush=True)
    if not ok:
        failures += 1


def enc(a):
    return b"%d %d\n" % (a.shape[1], a.shape[0]) + np.ascontiguousarray(a).tobytes()


def dec(out):
    nl = out.index(b"\n")
    w, h = map(int, out[:nl].split())
    return np.frombuffer(out[nl + 1:nl + 1 + w * h * 3], np.uint8).reshape(h, w, 3)


def ops(*args, inp=None, prog=None):
    r = subprocess.run([prog or OPS] + [str(a) for a in args], input=inp, capture_output=True, check=True)
    return r.stdout


def ops_img(*args, inp=None, prog=None):
    out = ops(*args, inp=inp, prog=prog)
    if out.startswith(b"ERR"):
        raise RuntimeError(out.decode())
    return dec(out)


def pil_rgb(path):
    return np.asarray(Image.open(path).convert("RGB"))


def diff(a, b):
    d = np.abs(a.astype(np.int32) - b.astype(np.int32))
    return float(d.mean()), int(d.max())


def read_stream(data):
    u = msgpack.Unpacker(io.BytesIO(data), raw=False, max_bin_len=1 << 30)
    header = next(u)
    items, trailer = [], None
    for obj in u:
        if obj.get("end") is True:
            trailer = obj
            break
        items.append(obj)
    return header, items, trailer


def pix(item):
    return np.frombuffer(item["pix"], np.uint8).reshape(item["h"], item["w"], 3)


def imgdecode(*args, manifest):
    return subprocess.run(["imgdecode"] + [str(a) for a in args] + [manifest], capture_output=True)


# ---- a sample of PACS: every 200th file, all domains, JPEG and PNG ----
files = sorted(glob.glob(os.path.join(PACS, "*", "*", "*")))
if len(files) != 9991:
    check(False, f"PACS at {PACS} has 9991 images (found {len(files)})")
sample = files[::200]
kinds = sorted({os.path.splitext(f)[1] for f in sample})
manifest = os.path.join(TMP, "sample.tsv")
with open(manifest, "w") as fp:
    fp.write("id\tpath\tlabel\tclass\tdomain\tsplit\n")
    for f in sample:
        rel = os.path.relpath(f, PACS)
        dom, cls, _ = rel.split("/")
        fp.write(f"{rel}\t{f}\t0\t{cls}\t{dom}\tin\n")

# ---- decoding equals PIL's Image.open(p).convert("RGB") ----
worst = 0
for f in sample:
    worst = max(worst, diff(ops_img("decode", f), pil_rgb(f))[1])
check(worst == 0, f"decode: {len(sample)} PACS images ({', '.join(kinds)}) equal PIL's RGB pixels (max diff {worst})")

# ---- evaluation resize through imgdecode vs torchvision Resize((S,S)) on PIL ----
for size, extra in ((224, []), (100, ["--exact"]), (331, [])):
    r = imgdecode("--size", size, *extra, manifest=manifest)
    _, items, trailer = read_stream(r.stdout)
    ok = r.returncode == 0 and len(items) == len(sample) and trailer["dropped"] == 0
    tf = T.Resize((size, size), interpolation=T.InterpolationMode.BILINEAR)
    means, maxes = [], []
    for it in items:
        ref = np.asarray(tf(Image.open(it["path"]).convert("RGB")))
        m, x = diff(pix(it), ref)
        means.append(m)
        maxes.append(x)
    ok = ok and max(means) <= 0.5 and max(maxes) <= 2
    check(ok, f"eval resize {size}x{size} {' '.join(extra)}: {len(items)} PACS images vs torchvision Resize "
          f"(worst mean {max(means):.3f} <= 0.5, worst max {max(maxes)} <= 2)")

# the builds for other instruction sets
for PLAIN in OTHERS:
    worst = 0
    for k, f in enumerate(sample[::5]):
        a = pil_rgb(f)
        for size in (224, 100, 301):
            ref = np.asarray(Image.fromarray(a).resize((size, size), Image.BILINEAR))
            worst = max(worst, diff(ops_img("resize", size, size, inp=enc(a), prog=PLAIN), ref)[1])
        worst = max(worst, diff(ops_img("hue", 0.21, inp=enc(a), prog=PLAIN), np.asarray(F.adjust_hue(Image.fromarray(a), 0.21)))[1])
    check(worst == 0, f"{os.path.basename(PLAIN)} build: resize to 224/100/301 and hue on {len(sample[::5])} PACS images equal PIL's (max diff {worst})")

# DCT-domain scaling (227 -> 112 decodes at 1/2) is PIL's own draft() followed
# by the resize of the exact source extent
r = imgdecode("--size", 112, manifest=manifest)
_, items, _ = read_stream(r.stdout)
worst, vs_full = 0, []
for it in items:
    im = Image.open(it["path"])
    if im.format == "JPEG":
        w, h = im.size
        im.draft("RGB", (112, 112))
        s = w // 112
        s = 8 if s >= 8 else 4 if s >= 4 else 2 if s >= 2 else 1
        ref = np.asarray(im.convert("RGB").resize((112, 112), Image.BILINEAR, box=(0, 0, w / s, h / s)))
        worst = max(worst, diff(pix(it), ref)[1])
        vs_full.append(diff(pix(it), np.asarray(Image.open(it["path"]).convert("RGB").resize((112, 112), Image.BILINEAR)))[0])
check(worst == 0, f"DCT-scaled decode (112 from 227) equals PIL draft() + resize of the source extent (max diff {worst}); "
      f"vs PIL's full-size resize: mean {np.mean(vs_full):.2f} (documented)")

# ---- large photos: 1600x1200 JPEGs, DCT scaling 1/4 ----
rng = np.random.default_rng(5)
big = []
for k, f in enumerate([x for x in sample if x.endswith(".jpg")][:4]):
    src = Image.open(f).convert("RGB").resize((1600, 1200), Image.BICUBIC)
    a = (np.asarray(src).astype(np.float32) + rng.normal(0, 3, (1200, 1600, 3))).clip(0, 255).astype(np.uint8)
    p = os.path.join(TMP, f"big{k}.jpg")
    Image.fromarray(a).save(p, quality=90)
    big.append(p)
bm = os.path.join(TMP, "big.tsv")
with open(bm, "w") as fp:
    fp.writelines(f"big{k}\t{p}\n" for k, p in enumerate(big))
for extra, tol in (([], 1.0), (["--exact"], 0.0)):
    r = imgdecode("--size", 224, *extra, manifest=bm)
    _, items, _ = read_stream(r.stdout)
    res = [diff(pix(it), np.asarray(Image.open(it["path"]).convert("RGB").resize((224, 224), Image.BILINEAR))) for it in items]
    wm, wx = max(m for m, _ in res), max(x for _, x in res)
    check(len(items) == len(big) and wm <= tol,
          f"1600x1200 JPEG -> 224 {' '.join(extra) or '(DCT 1/4)'} vs PIL full-size resize: worst mean {wm:.3f} <= {tol}, max {wx}")

# ---- augmentation operations, the same parameters on both sides ----
prng = np.random.default_rng(11)
op_worst = {}
for k, f in enumerate(sample):
    base = np.asarray(Image.open(f).convert("RGB").resize((224, 224), Image.BILINEAR))
    pil = Image.fromarray(base)
    b, c, s = prng.uniform(0.7, 1.3, 3)
    hue = prng.uniform(-0.3, 0.3)
    cases = [("brightness", b, lambda im, v: F.adjust_brightness(im, v)),
             ("contrast", c, lambda im, v: F.adjust_contrast(im, v)),
             ("saturation", s, lambda im, v: F.adjust_saturation(im, v)),
             ("hue", hue, lambda im, v: F.adjust_hue(im, v)),
             ("hue", [0.3, -0.3, 0.5, -0.5, 0.0][k % 5], lambda im, v: F.adjust_hue(im, v)),
             ("brightness", [0.7, 1.3, 1.0][k % 3], lambda im, v: F.adjust_brightness(im, v)),
             ("gray", 0, lambda im, v: F.rgb_to_grayscale(im, num_output_channels=3)),
             ("flip", 0, lambda im, v: F.hflip(im))]
    for name, v, fn in cases:
        ours = ops_img(name, repr(float(v)), inp=enc(base))
        ref = np.asarray(fn(pil, float(v)))
        m, x = diff(ours, ref)
        pm, px = op_worst.get(name, (0, 0))
        op_worst[name] = (max(pm, m), max(px, x))
for name, (m, x) in op_worst.items():
    check(m <= 1.0, f"augment op {name}: {len(sample)} PACS images vs torchvision (PIL path), worst mean {m:.3f} <= 1.0, max {x}")

# the per-colour operations on every one of the 2^24 colours
allc = np.arange(1 << 24, dtype=np.uint32)
every = np.stack([(allc >> 16) & 255, (allc >> 8) & 255, allc & 255], -1).astype(np.uint8).reshape(4096, 4096, 3)
every_pil = Image.fromarray(every)
for name, v, fn in (("hue", 0.2791, F.adjust_hue), ("hue", -0.3, F.adjust_hue), ("saturation", 1.2345, F.adjust_saturation),
                    ("saturation", 0.7, F.adjust_saturation)):
    ours = ops_img(name, repr(v), inp=enc(every))
    bad = int((ours != np.asarray(fn(every_pil, v))).any(-1).sum())
    check(bad == 0, f"augment op {name} {v}: all 2^24 RGB colours equal torchvision's ({bad} differ)")
del every, every_pil, allc


# ---- whole views: our sampled parameters replayed through torchvision ----
def replay(path, prm, size):
    x, y, w, h, flip, o0, o1, o2, o3 = map(int, prm[:9])
    b, c, s, hue = map(float, prm[9:13])
    gray = int(prm[13])
    im = F.resized_crop(Image.open(path).convert("RGB"), y, x, h, w, [size, size], T.InterpolationMode.BILINEAR)
    if flip:
        im = F.hflip(im)
    for o in (o0, o1, o2, o3):
        im = [F.adjust_brightness, F.adjust_contrast, F.adjust_saturation, F.adjust_hue][o](im, [b, c, s, hue][o])
    if gray:
        im = F.rgb_to_grayscale(im, num_output_channels=3)
    return np.asarray(im)


worst_m, worst_x, nviews = 0.0, 0, 0
views = {}
for k, f in enumerate(sample):
    rel = os.path.relpath(f, PACS)
    for v in range(2):
        out = ops("augment", 7, rel, v, 224, f)
        line, rest = out.split(b"\n", 1)
        prm = line.decode().split()
        ours = dec(rest)
        views[(rel, v)] = ours
        m, x = diff(ours, replay(f, prm, 224))
        worst_m, worst_x, nviews = max(worst_m, m), max(worst_x, x), nviews + 1
check(worst_m <= 1.0, f"augmented views: {nviews} views (crop, flip, jitter order, grayscale) replayed with torchvision, "
      f"worst mean {worst_m:.3f} <= 1.0, max {worst_x}")

# views of the 1600x1200 photos: decoded at full size (exact) they equal
# torchvision's; with the DCT-domain scaling the crop is resampled from the
# scaled decode, which differs a little
for exact, tol in ((1, 0.0), (0, 1.5)):
    res = []
    for k, p in enumerate(big):
        for v in range(2):
            out = ops("augment", 1, f"big{k}", v, 224, p, exact)
            line, rest = out.split(b"\n", 1)
            res.append(diff(dec(rest), replay(p, line.decode().split(), 224)))
    wm, wx = max(m for m, _ in res), max(x for _, x in res)
    check(wm <= tol, f"augmented views of 1600x1200 JPEGs {'at full size' if exact else 'with DCT scaling'}: {len(res)} views "
          f"vs torchvision, worst mean {wm:.3f} <= {tol}, max {wx}")

# imgdecode --augment gives those views, and the same bytes twice
r1 = imgdecode("--augment", "--views", 2, "--seed", 7, manifest=manifest)
r2 = imgdecode("--augment", "--views", 2, "--seed", 7, manifest=manifest)
_, items, trailer = read_stream(r1.stdout)
same = all(np.array_equal(pix(it), views[(it["id"], it["view"])]) for it in items)
check(r1.returncode == 0 and len(items) == 2 * len(sample) and same,
      f"imgdecode --augment --views 2: {len(items)} items equal the library's views for (seed, id, view)")
check(r1.stdout == r2.stdout, "imgdecode --augment: the same command twice gives the same bytes")

# the sampler's distribution against torchvision's get_params (227x227, 4000 draws)
N = 4000
ours = np.array([l.split() for l in ops("samples", 3, N, 227, 227).decode().splitlines()], dtype=float)
torch.manual_seed(0)
ref = np.array([T.RandomResizedCrop.get_params(torch.zeros(3, 227, 227), [0.7, 1.0], [3 / 4, 4 / 3]) for _ in range(N)], dtype=float)
area_o = ours[:, 2] * ours[:, 3] / 227**2
area_r = ref[:, 2] * ref[:, 3] / 227**2
ar_o = np.log(ours[:, 2] / ours[:, 3])
ar_r = np.log(ref[:, 3] / ref[:, 2])
se = 4 / math.sqrt(N)
ok = (abs(area_o.mean() - area_r.mean()) < 0.1 * se * 10 and abs(area_o.std() - area_r.std()) < 0.01
      and abs(ar_o.mean() - ar_r.mean()) < 0.02 and abs(ar_o.std() - ar_r.std()) < 0.01
      and area_o.min() >= 0.69 and area_o.max() <= 1.0)
check(ok, f"crop sampler: area fraction mean {area_o.mean():.4f}/{area_r.mean():.4f} (ours/torchvision), sd "
      f"{area_o.std():.4f}/{area_r.std():.4f}; log aspect mean {ar_o.mean():.4f}/{ar_r.mean():.4f}, sd {ar_o.std():.4f}/{ar_r.std():.4f}")
flip, gray = ours[:, 4].mean(), ours[:, 13].mean()
perms = {}
for row in ours[:, 5:9].astype(int):
    perms[tuple(row)] = perms.get(tuple(row), 0) + 1
pmin, pmax = min(perms.values()), max(perms.values())
ok = abs(flip - 0.5) < 4 * math.sqrt(0.25 / N) and abs(gray - 0.1) < 4 * math.sqrt(0.09 / N) and len(perms) == 24 \
    and pmin > N / 24 * 0.6 and pmax < N / 24 * 1.4
ok = ok and ours[:, 9:12].min() >= 0.7 and ours[:, 9:12].max() <= 1.3 and abs(ours[:, 12]).max() <= 0.3
check(ok, f"jitter sampler: flip rate {flip:.3f} (0.5), grayscale rate {gray:.3f} (0.1), 24 orders seen {pmin}..{pmax} times, factors in range")


# ---- formats, made here with PIL (and by hand where PIL cannot write them) ----
def png_chunk(t, d):
    return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d) & 0xffffffff)


def write_png(path, arr, color_type, depth, extra=b""):
    """A plain PNG writer for what PIL cannot save (16-bit RGB, 2-bit grey);
    extra: chunks to put before IDAT (tRNS)."""
    h, w = arr.shape[:2]
    if depth == 16:
        raw = b"".join(b"\0" + arr[y].astype(">u2").tobytes() for y in range(h))
    elif depth < 8:
        per = 8 // depth
        rows = []
        for y in range(h):
            bits = bytearray()
            for x0 in range(0, w, per):
                v = 0
                for i in range(per):
                    v <<= depth
                    if x0 + i < w:
                        v |= int(arr[y, x0 + i])
                bits.append(v)
            rows.append(b"\0" + bytes(bits))
        raw = b"".join(rows)
    else:
        raw = b"".join(b"\0" + arr[y].tobytes() for y in range(h))
    ihdr = struct.pack(">IIBBBBB", w, h, depth, color_type, 0, 0, 0)
    with open(path, "wb") as fp:
        fp.write(b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + extra + png_chunk(b"IDAT", zlib.compress(raw)) + png_chunk(b"IEND", b""))


photo = Image.open([f for f in sample if f.endswith(".jpg")][0]).convert("RGB")
a = np.asarray(photo)
made = {}
photo.convert("CMYK").save(p := os.path.join(TMP, "cmyk.jpg"), quality=92); made["CMYK JPEG"] = (p, None)
photo.save(p := os.path.join(TMP, "prog.jpg"), quality=85, progressive=True); made["progressive JPEG"] = (p, None)
photo.convert("L").save(p := os.path.join(TMP, "gray.jpg"), quality=85); made["greyscale JPEG"] = (p, None)
photo.save(p := os.path.join(TMP, "sub444.jpg"), quality=95, subsampling=0); made["4:4:4 JPEG"] = (p, None)
pal = photo.quantize(64)
pal.save(p := os.path.join(TMP, "pal.png")); made["palette PNG"] = (p, None)
pal.save(p := os.path.join(TMP, "paltrns.png"), transparency=3); made["palette PNG with transparency"] = (p, None)
photo.convert("L").save(p := os.path.join(TMP, "l.png")); made["grey PNG"] = (p, None)
photo.convert("1").save(p := os.path.join(TMP, "bw.png")); made["1-bit PNG"] = (p, None)
rgba = photo.copy(); rgba.putalpha(Image.fromarray((np.arange(a.shape[1])[None, :] % 256).repeat(a.shape[0], 0).astype(np.uint8)))
rgba.save(p := os.path.join(TMP, "rgba.png")); made["RGBA PNG"] = (p, None)
photo.convert("LA").save(p := os.path.join(TMP, "la.png")); made["grey+alpha PNG"] = (p, None)
g16 = (a[..., 1].astype(np.uint16) * 257 + 123).astype(np.uint16)
Image.fromarray(g16.astype(np.int32), "I").convert("I;16").save(p := os.path.join(TMP, "g16.png"))
made["16-bit grey PNG"] = (p, None)
rgb16 = a.astype(np.uint16) * 257 + 77
write_png(p := os.path.join(TMP, "rgb16.png"), rgb16, 2, 16); made["16-bit RGB PNG"] = (p, None)
# small 16-bit images with every value class: below, at and above 255, the
# high byte's edges, the top; PIL clips 16-bit grey to 255 and takes the high
# byte of the other 16-bit modes
v16 = np.array([0, 1, 254, 255, 256, 257, 511, 1000, 32767, 32768, 65279, 65280, 65534, 65535], np.uint16)
v16 = np.concatenate([v16, np.random.default_rng(16).integers(0, 65536, 5 * 14 - v16.size)]).astype(np.uint16).reshape(5, 14)
for name, ct, arr, extra in [
        ("grey", 0, v16, b""),
        ("grey with tRNS", 0, v16, png_chunk(b"tRNS", struct.pack(">H", 257))),
        ("grey+alpha", 4, np.stack([v16, v16[::-1]], -1), b""),
        ("RGB", 2, np.stack([v16, v16[:, ::-1], v16[::-1]], -1), b""),
        ("RGB with tRNS", 2, np.stack([v16, v16[:, ::-1], v16[::-1]], -1), png_chunk(b"tRNS", struct.pack(">HHH", 1, 2, 3))),
        ("RGBA", 6, np.stack([v16, v16[:, ::-1], v16[::-1], v16.T.reshape(5, 14)], -1), b"")]:
    write_png(p := os.path.join(TMP, f"small16_{ct}_{len(extra)}.png"), arr, ct, 16, extra)
    made[f"small 16-bit {name} PNG (values 0..65535)"] = (p, None)
g2 = (a[..., 0] >> 6).astype(np.uint8)
write_png(p := os.path.join(TMP, "g2.png"), g2, 0, 2); made["2-bit grey PNG"] = (p, None)
for what, (p, want) in made.items():
    try:
        ours = ops_img("decode", p)
    except RuntimeError as e:
        check(False, f"decode {what}: {e}")
        continue
    ref = want if want is not None else pil_rgb(p)
    m, x = diff(ours, ref)
    check(ours.shape == ref.shape and x == 0, f"decode {what}: equals PIL's convert('RGB') (max diff {x})")

# ---- bad files: reported with their path, dropped, counted; never a crash ----
good = [f for f in sample if f.endswith(".jpg")][0]
jb = open(good, "rb").read()
pb = open([f for f in sample if f.endswith(".png")][0], "rb").read()
bad = {}


def put(name, data):
    p = os.path.join(TMP, name)
    with open(p, "wb") as fp:
        fp.write(data)
    bad[name] = p


put("truncated.jpg", jb[: len(jb) // 2])
put("header-only.jpg", jb[:300])
dht = jb.index(b"\xff\xc4")
put("badhuffman.jpg", jb[:dht + 5] + b"\xff" * 16 + jb[dht + 21:])
dqt = jb.index(b"\xff\xc0")
put("badsof.jpg", jb[:dqt + 5] + b"\0\0\0\0" + jb[dqt + 9:])
put("truncated.png", pb[: len(pb) // 2])
ib = pb.index(b"IDAT")
put("badcrc.png", pb[:ib + 8] + bytes([pb[ib + 8] ^ 0xff]) + pb[ib + 9:])
put("garbage.jpg", bytes(np.random.default_rng(1).integers(0, 256, 5000, dtype=np.uint8)))
put("empty.png", b"")
photo.save(os.path.join(TMP, "gif.jpg"), format="GIF"); bad["gif.jpg"] = os.path.join(TMP, "gif.jpg")
photo.save(os.path.join(TMP, "bmp.png"), format="BMP"); bad["bmp.png"] = os.path.join(TMP, "bmp.png")
bad["missing.jpg"] = os.path.join(TMP, "no-such-file.jpg")
os.mkdir(os.path.join(TMP, "adir.jpg")); bad["adir.jpg"] = os.path.join(TMP, "adir.jpg")
# damaged entropy-coded data: libjpeg recovers with a warning, as PIL does, and
# the pixels are PIL's
sos = jb.index(b"\xff\xda")
damaged = os.path.join(TMP, "damaged.jpg")
with open(damaged, "wb") as fp:
    fp.write(jb[:sos + 200] + bytes(range(255)) * 4 + jb[sos + 1220:])
m, x = diff(ops_img("decode", damaged), pil_rgb(damaged))
check(x == 0, f"JPEG with damaged scan data: decoded as PIL decodes it (max diff {x})")
for name, p in bad.items():
    out = ops("decode", p)
    pil_ok = True
    try:
        Image.open(p).convert("RGB")
    except Exception:
        pil_ok = False
    check(out.startswith(b"ERR") and p.encode() in out,
          f"bad file {name}: refused with its path ({out.decode(errors='replace').strip()[4:90]}...){'' if not pil_ok else ' [PIL reads it as ' + Image.open(p).format + ']'}")
bm = os.path.join(TMP, "bad.tsv")
with open(bm, "w") as fp:
    fp.write("id\tpath\n")
    fp.write(f"good1\t{good}\n")
    for name, p in bad.items():
        fp.write(f"{name}\t{p}\n")
    fp.write(f"good2\t{good}\n")
r = imgdecode("--size", 32, manifest=bm)
_, items, trailer = read_stream(r.stdout)
err = r.stderr.decode()
first, fp_ = next(iter(bad.items()))
named = fp_ in err and f"id '{first}'" in err and not any(p in err for name, p in list(bad.items())[1:])
check(r.returncode == 1 and [it["id"] for it in items] == ["good1"] and trailer is None and named,
      f"imgdecode on {len(bad)} bad files among 2 good: exit 1 at the first bad file (more dropped than "
      f"--max-errors 0), named on stderr with its id, the good item before it written, no trailer")
r = imgdecode("--size", 32, "--max-errors", len(bad), manifest=bm)
_, items, trailer = read_stream(r.stdout)
err = r.stderr.decode()
named = all(p in err and f"id '{name}'" in err for name, p in bad.items())
check(r.returncode == 0 and trailer is not None and trailer["dropped"] == len(bad) and trailer["records"] == 2 and named,
      f"imgdecode --max-errors {len(bad)}: exit 0, each bad file named on stderr with its id, trailer records 2 "
      f"dropped {len(bad)}")

print(f"{failures} failures", file=sys.stderr)
sys.exit(1 if failures else 0)
