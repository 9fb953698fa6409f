#!/bin/bash
# readme: the README's example pipeline runs as written, in a directory
# holding a small PACS-shaped tree (PIL images) and, as
# clip-vit-base-patch16, a tiny random CLIP with the real vocabulary and no
# tokenizer files (text-embed then takes the merges file installed with the
# programs). The one change: the tiny model's image size for --size 224.
set -u
root=${VL2V_ROOT:-$(cd "$(dirname "$0")/../.." && pwd)}
export PATH=$root/bin:$PATH LC_ALL=C
py=${PYTHON:-/usr/bin/python3}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cd "$tmp" || exit 1
command -v parallel >/dev/null || { echo "PASS: readme: skipped (no GNU parallel)"; exit 0; }
"$py" - <<'PY' || { echo "FAIL: readme: making the tree"; exit 1; }
import os
from PIL import Image
for d in ("photo", "sketch"):
    for c in ("dog", "horse"):
        os.makedirs(f"PACS/{d}/{c}")
        for i in range(3):
            Image.new("RGB", (40 + i, 36), (40 * i, 100, 7 * len(d))).save(f"PACS/{d}/{c}/{i}.jpg")
PY
"$py" "$root/tests/ref/text_embed_ref.py" make --text tiny --bpe "$root/share/bpe_simple_vocab_16e6.txt.gz" --out m >/dev/null ||
    { echo "FAIL: readme: making the model"; exit 1; }
ln -s m/hf clip-vit-base-patch16
size=$("$py" -c 'import json; print(json.load(open("m/hf/config.json"))["vision_config"]["image_size"])')
awk '/^## Example/ {on = 1; next} /^## / {on = 0} on && /^    / {sub(/^    /, ""); print}' "$root/README.md" |
    sed "s/--size 224/--size $size/" >example.sh
bash -e -o pipefail example.sh >out.txt 2>err.txt
rc=$?
ok=1
[ $rc = 0 ] && [ "$(grep -c . example.sh)" -ge 5 ] && mpcat --check sketch.teacher.mp | grep -q '^ok: 1 streams, 6 records' &&
    mpcat --check pacs.text.mp | grep -q '^ok: 1 streams, 2 records' && ok=0
if [ $ok = 0 ]; then echo "PASS: readme: the example pipeline runs as written"; else
    echo "FAIL: readme: the example pipeline (rc $rc): $(tail -n 5 err.txt)"; exit 1; fi
