#!/bin/bash
# student_embed.sh: student-embed's interface and error paths (features
# themselves are checked against PyTorch in tests/ref/resnet.sh and vit.sh).
set -u
cd "${VL2V_ROOT:-$(dirname "$0")/../..}" || exit 2
PY=${PYTHON:-/usr/bin/python3}
d=$(mktemp -d)
trap 'rm -rf "$d"' EXIT
ok() { if [ "$1" = 0 ]; then echo "PASS: student-embed: $2"; else echo "FAIL: student-embed: $2"; fi; }

"$PY" - "$d" <<'PY' || { echo "FAIL: student-embed: making test weights"; exit 1; }
import sys, numpy as np, torch, torchvision
sys.path.insert(0, "tests/ref")
from st_io import st_save, write_image_stream
import vit_ref
d = sys.argv[1]
torch.manual_seed(0)
st_save(d + "/r18.safetensors", dict(torchvision.models.resnet18().state_dict()))
st_save(d + "/vit.safetensors", dict(vit_ref.make_model().state_dict()))
st_save(d + "/other.safetensors", {"encoder.weight": torch.zeros(3, 3)})
# a mean that is not a number
st_save(d + "/r18nanmean.safetensors", dict(torchvision.models.resnet18().state_dict()),
        {"vl2v.mean": "0.5,nan,0.5", "vl2v.std": "0.5,0.5,0.5"})
r = np.random.default_rng(1)
write_image_stream(d + "/img.mp", [("a", r.integers(0, 256, (32, 32, 3), dtype=np.uint8)),
                                   ("b", r.integers(0, 256, (30, 32, 3), dtype=np.uint8)),
                                   ("c", r.integers(0, 256, (48, 32, 3), dtype=np.uint8))])
data = open(d + "/img.mp", "rb").read()
open(d + "/trunc.mp", "wb").write(data[:-20])
# a stream whose producer dropped 2 items, and it followed by a stream (as
# cat joins them) with a good and a bad item
import msgpack
def stream(path, items, dropped):
    with open(path, "wb") as f:
        f.write(msgpack.packb({"schema": "image", "version": 1, "history": [["test"]], "dtype": "u8",
                               "layout": "hwc", "c": 3}))
        for it in items:
            f.write(msgpack.packb(it, use_bin_type=True))
        f.write(msgpack.packb({"end": True, "records": len(items), "dropped": dropped}))
good = {"id": "g", "h": 32, "w": 32, "pix": r.integers(0, 256, (32, 32, 3), dtype=np.uint8).tobytes()}
bad = {"id": "short", "h": 32, "w": 32, "pix": bytes(100)}
stream(d + "/up2.mp", [good], 2)
stream(d + "/bad.mp", [dict(good, id="g2"), bad], 0)
stream(d + "/dup.mp", [good, dict(good, id="h"), good], 0)
open(d + "/up2bad.mp", "wb").write(open(d + "/up2.mp", "rb").read() + open(d + "/bad.mp", "rb").read())
PY

out=$(student-embed --help); rc=$?
[ $rc = 0 ] && [[ $out == "usage: student-embed "* ]]; ok $? "--help prints the usage on stdout, exit 0"
syn=$(sed -n '/^\.Sh SYNOPSIS/,/^\.Sh DESCRIPTION/p' man/student-embed.1 | grep -c '^\.Fl -\|^\.Op Fl')
[ "$syn" -ge 9 ]; ok $? "man page SYNOPSIS lists the options of --help ($syn)"
student-embed <"$d/img.mp" >/dev/null 2>"$d/e"; [ $? = 2 ] && grep -q "weights" "$d/e"; ok $? "no --weights: usage error, exit 2"
student-embed --arch vgg16 --weights "$d/r18.safetensors" <"$d/img.mp" >/dev/null 2>&1; [ $? = 2 ]
ok $? "unknown --arch: exit 2"
student-embed --weights "$d/none.safetensors" <"$d/img.mp" >/dev/null 2>"$d/e"; [ $? = 1 ] && grep -q none.safetensors "$d/e"
ok $? "missing weights file: exit 1 naming it"
student-embed --weights "$d/other.safetensors" <"$d/img.mp" >/dev/null 2>"$d/e"; [ $? = 1 ] && grep -q "conv1.weight" "$d/e"
ok $? "--arch auto on a file that is no student: exit 1 ($(head -c 120 "$d/e"))"
student-embed --weights "$d/r18.safetensors" -o "$d/t.mp" <"$d/trunc.mp" 2>"$d/e"; rc=$?
[ $rc = 1 ] && [ ! -e "$d/t.mp" ]; ok $? "truncated input: exit 1 and no output file ($(head -c 100 "$d/e"))"
student-embed --weights "$d/r18.safetensors" --batch 2 <"$d/img.mp" >"$d/r1.mp" && \
    student-embed --weights "$d/r18.safetensors" --batch 2 <"$d/img.mp" >"$d/r2.mp" && \
    cmp -s "$d/r1.mp" "$d/r2.mp"; ok $? "same input, same bytes"
n=$(mpdump "$d/r1.mp" | grep -c '"vec"'); [ "$n" = 3 ]; ok $? "ResNet takes images of any size (3 records)"
student-embed --weights "$d/vit.safetensors" <"$d/img.mp" >/dev/null 2>"$d/e"; [ $? = 1 ] && grep -q "id 'b'" "$d/e" &&
    grep -q '^student-embed: more than 0 items dropped (--max-errors 0)$' "$d/e"
ok $? "ViT: an image whose sides are not multiples of 16 is dropped naming its id; too many drops exit 1, as every tool says it"
student-embed --weights "$d/vit.safetensors" --max-errors 1 <"$d/img.mp" 2>/dev/null | mpdump >"$d/v.txt"
tail -n 1 "$d/v.txt" | grep -q '"records": 2, "dropped": 1'; ok $? "ViT: --max-errors 1 keeps the rest and counts the drop"
head -n 1 "$d/v.txt" | grep -q '"space": "student:vit_s16"'; ok $? "ViT: header space student:vit_s16"
student-embed --weights "$d/r18.safetensors" <"$d/up2.mp" 2>"$d/e" | mpdump >"$d/u.txt" 2>/dev/null; rc=${PIPESTATUS[0]}
[ $rc = 0 ] && [ ! -s "$d/e" ] && tail -n 1 "$d/u.txt" | grep -q '"records": 1, "dropped": 2'
ok $? "upstream drops do not count against --max-errors 0, and the trailer carries them"
student-embed --weights "$d/r18.safetensors" --max-errors 1 <"$d/up2bad.mp" 2>"$d/e" | mpdump >"$d/u.txt" 2>/dev/null
rc=${PIPESTATUS[0]}
[ $rc = 0 ] && grep -q "id 'short'" "$d/e" && tail -n 1 "$d/u.txt" | grep -q '"records": 2, "dropped": 3'
ok $? "--max-errors 1: 2 dropped upstream, then one bad item here: exit 0, trailer dropped 3"
student-embed --weights "$d/r18.safetensors" -o "$d/u.mp" <"$d/up2bad.mp" 2>"$d/e"; rc=$?
[ $rc = 1 ] && [ ! -e "$d/u.mp" ] && grep -q '^student-embed: more than 0 items dropped (--max-errors 0)$' "$d/e"
ok $? "--max-errors 0: the bad item here fails the run (exit 1, no output)"
student-embed --weights "$d/r18.safetensors" --max-errors 5 -o "$d/dup_out.mp" <"$d/dup.mp" 2>"$d/e"; rc=$?
[ $rc = 1 ] && [ ! -e "$d/dup_out.mp" ] && \
    grep -q "^student-embed: <stdin>: record 3 (id 'g'): duplicate (id, view), first at <stdin>: record 1$" "$d/e"
ok $? "a repeated (id, view) fails the run naming both records, whatever --max-errors (exit 1, no output)"
cat "$d/up2.mp" "$d/up2.mp" | student-embed --weights "$d/r18.safetensors" --max-errors 1 >/dev/null 2>"$d/e"
[ $? = 1 ] && grep -q "duplicate (id, view)" "$d/e"; ok $? "a repeat across the streams of one input is caught too"
# a normalisation that is not finite, or a std that is zero, subnormal or
# negative, would make every feature zero or NaN: a usage error, exit 2
for a in "--mean nan,0,0" "--mean 0,inf,0" "--mean 1e39,0,0" "--std 0,1,1" "--std 1e-45,1,1" "--std 1,-1,1" \
    "--std 1,1,inf" "--std nan,1,1"; do
    student-embed --weights "$d/r18.safetensors" $a -o "$d/n.mp" <"$d/img.mp" 2>"$d/e"
    [ $? = 2 ] && grep -q "^student-embed: --mean/--std: .*not" "$d/e" && [ ! -e "$d/n.mp" ]
    ok $? "$a: usage error, exit 2 ($(head -n 1 "$d/e"))"
done
student-embed --weights "$d/r18nanmean.safetensors" <"$d/img.mp" >/dev/null 2>"$d/e"
[ $? = 1 ] && grep -q "metadata 'vl2v.mean' and 'vl2v.std': mean 1: nan is not finite" "$d/e"
ok $? "a NaN mean in the weights' metadata: exit 1 naming it ($(head -c 160 "$d/e"))"
