#!/bin/bash
# man_examples: EXAMPLES of the manual pages run as written (as rendered:
# roff must not eat their quotes), on small streams made here: mpdump(1)'s
# grep finds its item, mpnpy(1)'s round trip through NumPy and PyTorch
# compares equal with mpcmp --payload; the rendered pages hold no nested
# quotes, and man -M man finds every page once make has run.
set -u
root=${VL2V_ROOT:-$(cd "$(dirname "$0")/../.." && pwd)}
export PATH=$root/bin:$PATH LC_ALL=C
py=${PYTHON:-/usr/bin/python3}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fails=0
ok() { if [ "$1" = 0 ]; then echo "PASS: $2"; else echo "FAIL: $2"; fails=$((fails + 1)); fi; }
# the literal example lines of PAGE (the indented lines of EXAMPLES, as rendered)
examples() {
    mandoc -Tascii -O width=400 "$root/man/$1" | col -bx |
        awk '/^EXAMPLES/ {on = 1; next} /^[A-Z]/ {on = 0} on && /^       / {sub(/^ +/, ""); print}'
}
cd "$tmp" || exit 1
# the examples' python3 is the one with numpy and torch
mkdir bin && ln -s "$(command -v "$py")" bin/python3 && export PATH=$tmp/bin:$PATH
"$py" - <<'PY' || exit 1
import numpy as np
np.save("v.npy", np.arange(12, dtype="<f4").reshape(3, 4) / 7)
open("v.ids", "w").write("photo/dog/056_0001.jpg\nphoto/dog/056_0002.jpg\nsketch/cat/1.png\n")
PY
# an embedding stream with classes and domains, as teacher-embed writes them
mpnpy import --ids v.ids --labels <(printf '0\n0\n1\n') --space teacher:test v.npy >emb.mp || exit 1

line=$(examples mpdump.1 | grep 'grep -F')
out=$(bash -o pipefail -c "$line" 2>&1)
ok $([ -n "$line" ] && grep -q '"id": "photo/dog/056_0001.jpg"' <<<"$out"; echo $?) "mpdump(1): '$line' finds its item"

examples mpnpy.1 >ex.sh
out=$(bash -e -o pipefail ex.sh 2>&1)
rc=$?
ok $([ $rc = 0 ] && [ "$(grep -c . ex.sh)" = 4 ]; echo $?) "mpnpy(1): the examples run as written, the round trip compares equal (rc $rc: $(tail -n 3 <<<"$out"))"

for m in "$root"/man/*.[157]; do
    n=$(mandoc -Tutf8 "$m" | col -b | grep -c "‘[^’]*‘")
    ok $([ "$n" = 0 ]; echo $?) "${m##*/}: no nested quotes when rendered ($n lines)"
done
# make puts the pages where man -M man finds them, before any install
if command -v man >/dev/null; then
    for page in mpselect mpcat vl2v-stream vl2v; do
        out=$(man -M "$root/man" -P cat "$page" 2>&1 | head -n 1)
        ok $(grep -qi "^${page}(" <<<"$out"; echo $?) "man -M man $page: ${out:0:60}"
    done
fi
exit $((fails > 0))
