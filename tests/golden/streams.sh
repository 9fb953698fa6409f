#!/bin/bash
# Golden tests of the stream helpers (mpdump, mpcat, mpcmp, mpnpy, stinfo):
# each case runs a command line in a scratch directory holding streams,
# .npy and safetensors files written by an independent writer
# (tests/ref/msgpack_interop.py: python3-msgpack, numpy); its stdout, stderr
# and exit status, rendered as text, must equal tests/golden/streams/NAME.out.
# UPDATE_GOLDEN=1 rewrites the expected files (review the diff before committing).
set -u
root=${VL2V_ROOT:-$(cd "$(dirname "$0")/../.." && pwd)}
export PATH=$root/bin:$PATH LC_ALL=C
py=${PYTHON:-/usr/bin/python3}
want=$root/tests/golden/streams
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cd "$tmp" || exit 1
"$py" "$root/tests/ref/msgpack_interop.py" write . || { echo "FAIL: writing the test inputs"; exit 1; }
# twelve items with distinct ids (emb.mp's three, four times over); one id
# in views 0 and 1 and without a view (three keys), and with view 1 twice
"$py" - <<'PY' || { echo "FAIL: writing the streams of distinct and repeated ids"; exit 1; }
import msgpack
o = list(msgpack.Unpacker(open("emb.mp", "rb"), raw=False))
def write(path, items):
    with open(path, "wb") as f:
        for x in [o[0]] + items + [dict(o[-1], records=len(items))]:
            f.write(msgpack.packb(x, use_bin_type=True))
write("e12.mp", [dict(x, id=f"{k}/{x['id']}") for k in range(4) for x in o[1:-1]])
x = o[1]
write("views.mp", [dict(x, view=0), dict(x, view=1), dict(x), dict(x, id=x["id"] + " ", view=1)])
write("views_dup.mp", [dict(x, view=0), dict(x, view=1), dict(x), dict(x, view=1)])
PY

fails=0
# case NAME 'COMMAND LINE': runs it with bash -o pipefail in the scratch directory
case_() {
    local name=$1 cmd=$2 got
    got=$(
        printf '$ %s\n' "$cmd"
        bash -o pipefail -c "$cmd" >out.txt 2>err.txt
        rc=$?
        cat out.txt
        if [ -s err.txt ]; then
            echo "[stderr]"
            cat err.txt
        fi
        echo "[exit $rc]"
    )
    if [ "${UPDATE_GOLDEN:-0}" = 1 ]; then
        printf '%s\n' "$got" >"$want/$name.out"
    fi
    if [ -f "$want/$name.out" ] && diff -u "$want/$name.out" <(printf '%s\n' "$got") >diff.txt; then
        echo "PASS: $name: $cmd"
    else
        echo "FAIL: $name: $cmd"
        if [ -f "$want/$name.out" ]; then head -n 40 diff.txt; else echo "  (no $want/$name.out)"; printf '%s\n' "$got"; fi
        fails=$((fails + 1))
    fi
}

for t in mpdump mpcat mpcmp mpnpy stinfo mpselect; do
    case_ "$t-help" "$t --help"
    case_ "$t-badopt" "$t --no-such-option"
done

# mpdump
case_ mpdump-emb "mpdump emb.mp"
case_ mpdump-short "mpdump emb40.mp"
case_ mpdump-full "mpdump --full emb40.mp"
case_ mpdump-head "mpdump --head 1 emb.mp"
case_ mpdump-head0 "mpdump --head 0 emb.mp two.mp"
# integers are decimal even with a leading zero (not octal), or 0x hexadecimal
case_ mpdump-head-decimal "mpdump --head 08 e12.mp | wc -l; mpdump --head 010 e12.mp | wc -l; mpdump --head 0x3 e12.mp | wc -l"
case_ mpdump-image "mpdump image.mp"
case_ mpdump-image-full "mpdump --full image.mp"
case_ mpdump-pred "mpdump pred.mp"
case_ mpdump-unknown "mpdump emb_unknown.mp"
case_ mpdump-bad-items "mpdump emb_bad.mp"
case_ mpdump-stdin-two "mpdump < two.mp"
case_ mpdump-v2 "mpdump v2.mp"
case_ mpdump-trunc-item "mpdump trunc_item.mp"
case_ mpdump-trunc-between "mpdump trunc_between.mp"
case_ mpdump-garbage "mpdump garbage.txt"
case_ mpdump-oversized "mpdump oversized.mp"
case_ mpdump-empty "mpdump < /dev/null"
case_ mpdump-missing "mpdump no-such-file.mp"
case_ mpdump-badhead "mpdump --head -1 emb.mp"

# mpselect: items by domain, split, label, view or id list, and the
# complement; any schema; header history extended, trailer counted
printf 'art_painting/horse/pic_001.jpg\nnot-there\n\n3/sketch/person/pic_002.jpg\r\n' >sel.ids
case_ mpselect-domain "mpselect --domain photo,sketch emb.mp | mpdump"
case_ mpselect-exclude "mpselect --domain photo --exclude emb.mp | mpdump"
case_ mpselect-and "mpselect --domain sketch --split train --label 6 e12.mp | mpdump --head 0 && mpselect --domain sketch --label 5 e12.mp | mpcat --check"
case_ mpselect-complement "for a in '' --exclude; do mpselect --label 0,4 \$a e12.mp | mpcat --check; done"
case_ mpselect-ids "mpselect --ids sel.ids e12.mp | mpdump && mpselect --ids sel.ids --exclude e12.mp | mpcat --check"
case_ mpselect-view "mpselect --view 1 views.mp | mpdump --head 9 | cut -c1-60"
case_ mpselect-pred "mpselect --domain cartoon pred.mp | mpdump"
case_ mpselect-image "mpselect --split nowhere image.mp | mpdump"
case_ mpselect-bad "mpselect --max-errors 3 --split train emb_bad.mp | mpdump"
case_ mpselect-bad-fail "mpselect --split train emb_bad.mp | mpcat --check"
case_ mpselect-stdin "mpselect --label 4 < emb.mp | mpdump"
case_ mpselect-none "mpselect emb.mp"
case_ mpselect-badlabel "mpselect --label 1,,2 emb.mp"
case_ mpselect-noids "mpselect --ids no-such.ids emb.mp"
case_ mpselect-two "mpselect --label 0 two.mp | mpcat --check"
case_ mpselect-trunc "mpselect --label 0 trunc_item.mp | mpcat --check"
# --version: one version string, the same for every program
case_ version "for t in mpdump mpcat mpcmp mpnpy stinfo mpselect; do \$t --version; done"

# mpcat
case_ mpcat-two-files "mpcat emb.mp emb_b.mp | mpdump"
case_ mpcat-stdin "mpcat < two.mp | mpdump"
case_ mpcat-check "mpcat --check two.mp"
case_ mpcat-check-trunc "mpcat --check emb_b.mp trunc_between.mp"
case_ mpcat-bad "mpcat emb_bad.mp > out.mp; echo \"status \$?\"; mpcat --check out.mp"
case_ mpcat-max-errors "mpcat --max-errors 3 emb_bad.mp | mpdump"
# -v: a first progress line, then the totals at the end (timings vary: N)
case_ mpcat-progress "mpcat -v e12.mp 2>&1 >/dev/null | sed -E 's/[0-9]+\.[0-9]+/N/g; s/ETA [0-9]+/ETA N/'"
case_ mpcat-progress-file "mpcat -v --max-errors 3 emb_bad.mp 2>&1 >/dev/null | sed -E 's/[0-9]+\.[0-9]+/N/g; s/ETA [0-9]+/ETA N/'"
case_ mpcat-dim "mpcat emb.mp emb_dim8.mp > /dev/null"
case_ mpcat-space "mpcat emb.mp emb_space.mp > /dev/null"
case_ mpcat-schema "mpcat emb.mp image.mp > /dev/null"
case_ mpcat-v2 "mpcat emb.mp v2.mp > /dev/null"
case_ mpcat-output "mpcat -o cat.mp emb.mp image.mp; echo \"status \$?\"; find . -name 'cat.mp*' | wc -l; mpcat -o cat.mp emb.mp emb_b.mp && mpcat --check cat.mp && ls cat.mp*"
case_ mpcat-unknown-keys "mpcat emb_unknown.mp | mpdump"
# an (id, view) seen twice is fatal, in one stream, across streams and across files
case_ mpcat-duplicate-files "mpcat emb.mp emb_near.mp > dup.mp; echo \"status \$?\"; mpcat --check emb_b.mp emb.mp emb_b.mp"
case_ mpcat-duplicate-streams "cat emb.mp emb_b.mp emb.mp | mpcat -o joined.mp; echo \"status \$?\"; ls joined.mp* 2>/dev/null | wc -l; true"
case_ mpcat-duplicate-view "mpcat --check views.mp && mpcat --check views_dup.mp"
# every write is checked: a full disk is a failure, never a silent success
case_ full-disk "for c in 'mpcat --check emb.mp' 'mpcat emb.mp' 'mpdump emb.mp' 'mpcmp emb.mp emb.mp' 'stinfo model.safetensors' 'mpcat --help'; do \$c > /dev/full; echo \"\$c: status \$?\"; done"
case_ mpcat-check-output "mpcat --check -o x.mp emb.mp; echo \"status \$?\"; ls x.mp* 2>/dev/null | wc -l"
# only the documented short options exist
case_ short-options "mpdump -n 1 emb.mp; mpcmp -a 1 emb.mp emb.mp; mpcat -E 3 emb.mp"

# mpcmp
case_ mpcmp-near "mpcmp emb.mp emb_near.mp"
case_ mpcmp-far "mpcmp emb.mp emb_far.mp"
case_ mpcmp-order "mpcmp --order emb.mp emb_near.mp"
case_ mpcmp-order-same "mpcmp --order emb.mp emb.mp"
case_ mpcmp-tight "mpcmp --atol 1e-8 --rtol 0 emb.mp emb_near.mp"
case_ mpcmp-quiet "mpcmp -q emb.mp emb_far.mp"
case_ mpcmp-report "mpcmp --max-report 1 emb.mp emb_far.mp"
case_ mpcmp-dim "mpcmp emb.mp emb_dim8.mp"
case_ mpcmp-pred "mpcmp pred.mp pred.mp"
case_ mpcmp-image "mpcmp image.mp image.mp"
case_ mpcmp-stdin "mpcmp - emb_near.mp < emb.mp"
case_ mpcmp-trunc "mpcmp emb.mp trunc_item.mp"
case_ mpcmp-one "mpcmp emb.mp"

# mpnpy
case_ mpnpy-export "mpnpy export -o x.npy --ids x.ids --labels x.labels emb.mp && od -A d -t x1 -N 10 x.npy && cat x.ids x.labels && ls x.*"
case_ mpnpy-round-trip "mpnpy import --ids vecs.ids --labels vecs.labels vecs.npy > a.mp && mpnpy export -o y.npy --ids y.ids --labels y.labels a.mp && mpnpy import --ids y.ids --labels y.labels y.npy | mpcmp --atol 0 --rtol 0 a.mp - && cmp vecs.npy y.npy && cmp vecs.ids y.ids && cmp vecs.labels y.labels"
case_ mpnpy-loses-meta "mpnpy export -o x.npy --ids x.ids --labels x.labels emb.mp && mpnpy import --ids x.ids --labels x.labels --space teacher:test-clip x.npy | mpcmp --max-report 3 --atol 0 --rtol 0 emb.mp -"
case_ mpnpy-import "mpnpy import --ids vecs.ids --labels vecs.labels --space text:test vecs.npy | mpdump"
case_ mpnpy-import-f64 "mpnpy import vecs64.npy | mpdump"
case_ mpnpy-import-stdin "cat vecs.npy | mpnpy import --ids vecs.ids - | mpdump && mpnpy import < vecs64.npy | mpcat --check"
case_ mpnpy-import-output "mpnpy import -o v.mp vecs.npy && mpcat --check v.mp"
case_ mpnpy-nan "mpnpy import vecs_nan.npy > /dev/null"
case_ mpnpy-nan-allowed "mpnpy import --max-errors 1 vecs_nan.npy | mpdump"
case_ mpnpy-fortran "mpnpy import vecs_fortran.npy"
case_ mpnpy-int "mpnpy import vecs_int.npy"
case_ mpnpy-idcount "mpnpy import --ids vecs2.ids vecs.npy"
case_ mpnpy-not-npy "mpnpy import emb.mp"
case_ mpnpy-no-o "mpnpy export emb.mp"
case_ mpnpy-schema "mpnpy export -o i.npy image.mp; echo \"status \$?\"; find . -name 'i.npy*' | wc -l"
# an interrupted run leaves no temporary file behind
case_ interrupted-mpcat "{ cat emb.mp; sleep 3; } | mpcat -o int.mp & for i in \$(seq 100); do [ -e int.mp.tmp.\$! ] && break; sleep 0.1; done; ls int.* | sed 's/[0-9]*\$/PID/'; kill -TERM \$!; wait \$!; echo \"status \$?\"; ls int.* 2>/dev/null | wc -l; true"
case_ interrupted-mpnpy "{ cat emb.mp; sleep 3; } | mpnpy export -o int.npy --ids int.ids & for i in \$(seq 100); do [ -e int.ids.tmp.\$! ] && break; sleep 0.1; done; ls int.* | sed 's/[0-9]*\$/PID/'; kill -TERM \$!; wait \$!; echo \"status \$?\"; ls int.* 2>/dev/null | wc -l; true"
case_ mpnpy-trunc "mpnpy export -o t.npy --ids t.ids trunc_item.mp; echo \"status \$?\"; find . -name 't.*' | wc -l"
case_ mpnpy-nocmd "mpnpy"
case_ mpnpy-badcmd "mpnpy convert x.npy"

# stinfo
case_ stinfo-model "stinfo model.safetensors"
# '-' is standard input, a pipe or a file
case_ stinfo-stdin "cat model.safetensors | stinfo - && stinfo -q - < model.safetensors"
case_ stinfo-meta "stinfo -m model.safetensors"
case_ stinfo-quiet "stinfo -q model.safetensors model.safetensors"
case_ stinfo-bad-len "stinfo bad_len.safetensors"
case_ stinfo-truncated "stinfo truncated.safetensors"
case_ stinfo-bad-shape "stinfo model.safetensors bad_shape.safetensors"
case_ stinfo-overflow "stinfo overflow.safetensors"
case_ stinfo-stream "stinfo emb.mp"
# names and metadata from the file are shown escaped: no terminal escapes, one line each
"$py" - <<'EOF'
import json, struct
hdr = {"__metadata__": {"note\nkey": "a\tb\x1b[2J"}, "w\x1b[31m\nx": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}
h = json.dumps(hdr).encode()
open("ctl.safetensors", "wb").write(struct.pack("<Q", len(h)) + h + b"\0\0\x80\x3f")
EOF
case_ stinfo-control "stinfo ctl.safetensors | cat -v"
case_ stinfo-none "stinfo"

# each --help is the man page's SYNOPSIS (compared with spacing normalised),
# then a line for each option (tests/golden/help.sh checks those)
for t in mpdump mpcat mpcmp mpnpy stinfo mpselect; do
    page=$root/man/$t.1
    syn=$(mandoc -Tascii -O width=250 "$page" 2>/dev/null | col -bx | awk '/^SYNOPSIS/ {on = 1; next} /^[A-Z]/ {on = 0} on' | tr -s ' \n' '  ' | sed 's/^ //; s/ $//')
    help=$("$t" --help | awk '/^  -/ {exit} 1' | sed 's/^usage: //; s/^ *//' | tr -s ' \n' '  ' | sed 's/^ //; s/ $//')
    if [ -n "$syn" ] && [ "$syn" = "$help" ]; then
        echo "PASS: $t --help equals the SYNOPSIS of man/$t.1"
    else
        echo "FAIL: $t --help differs from man/$t.1: '$help' vs '$syn'"
        fails=$((fails + 1))
    fi
    if mandoc -Tlint -W warning "$page" >lint.txt 2>&1; then
        echo "PASS: mandoc -Tlint -W warning man/$t.1"
    else
        echo "FAIL: mandoc -Tlint man/$t.1"; cat lint.txt; fails=$((fails + 1))
    fi
done

for page in "$root/man/vl2v-stream.5" "$root/man/vl2v.7"; do
    if mandoc -Tlint -W warning "$page" >lint.txt 2>&1; then
        echo "PASS: mandoc -Tlint -W warning man/${page##*/}"
    else
        echo "FAIL: mandoc -Tlint man/${page##*/}"; cat lint.txt; fails=$((fails + 1))
    fi
done

# out of memory (util's oom aborts) leaves no temporary of -o behind: mpcat's
# key check on 300,000 records under a 60 MB address-space limit
"$py" - <<'PY' || { echo "FAIL: writing the stream of 300,000 records"; exit 1; }
import msgpack
o = list(msgpack.Unpacker(open("emb.mp", "rb"), raw=False))
with open("many.mp", "wb") as f:
    f.write(msgpack.packb(o[0], use_bin_type=True))
    for i in range(300000):
        f.write(msgpack.packb(dict(o[1], id="photo/dog/pic_%07d.jpg" % i), use_bin_type=True))
    f.write(msgpack.packb(dict(o[-1], records=300000), use_bin_type=True))
PY
mkdir oom
[ -z "${VL2V_SANITIZED:-}" ] && (ulimit -v 60000; mpcat -o oom/out.mp many.mp) 2>oom.err
rc=$?
# a sanitizer's shadow memory does not fit under the limit (make check-asan)
if [ -n "${VL2V_SANITIZED:-}" ]; then
    echo "SKIP: mpcat out of memory: not under a sanitizer"
elif [ $rc -ne 0 ] && grep -q "out of memory" oom.err && [ -z "$(ls oom)" ]; then
    echo "PASS: mpcat out of memory (exit $rc): no temporary of -o left"
else
    echo "FAIL: mpcat out of memory: exit $rc, left: $(ls oom), stderr: $(head -c 200 oom.err)"; fails=$((fails + 1))
fi

[ $fails -eq 0 ]
