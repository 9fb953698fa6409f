#!/bin/bash
# Golden tests of imglist and imgdecode: a small DomainBed tree committed in
# tests/golden/imgdecode/tree (JPEG baseline/progressive/CMYK, PNG palette and
# grey, a truncated JPEG, a text file), each command's stdout (streams
# rendered as text by render.py), stderr and exit status against the files in
# tests/golden/imgdecode/expected; usage errors; Fashion-MNIST from Debian's
# dataset-fashion-mnist; and sharding a PACS manifest with GNU parallel --pipe,
# joined by mpcat, byte-identical to the unsharded run.
# UPDATE=1 rewrites the expected files (review the diff before committing).
set -u
root=${VL2V_ROOT:-$(cd "$(dirname "$0")/../.." && pwd)}
export PATH=$root/bin:$PATH LC_ALL=C
dir=$root/tests/golden/imgdecode
exp=$dir/expected
py=${PYTHON:-/usr/bin/python3}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$exp"
# the commands run in $w, where tree/ is the committed tree
w=$tmp/work
mkdir -p "$w"
ln -s "$dir/tree" "$w/tree"

pass() { echo "PASS: $*"; }
fail() { echo "FAIL: $*"; }

# golden NAME RENDER CMD...: runs CMD in $w; stdout through RENDER (cat or
# the stream renderer), stderr with $dir removed, and the exit status must
# equal expected/NAME.{out,err,rc}
golden() {
    local name=$1 render=$2
    shift 2
    (cd "$w" && "$@") >"$tmp/$name.raw" 2>"$tmp/$name.err"
    echo $? >"$tmp/$name.rc"
    if [ "$render" = stream ]; then
        "$py" "$dir/render.py" <"$tmp/$name.raw" >"$tmp/$name.out"
    else
        cp "$tmp/$name.raw" "$tmp/$name.out"
    fi
    # paths and timings vary from run to run; of the progress lines before
    # the final one, the first stays (how many follow depends on the time)
    sed -i -E "s|$w/||g; s/[0-9]+\.[0-9]+ (images\/s|s elapsed|s$)/N \1/g; s/ETA [0-9]+ s/ETA N s/" "$tmp/$name.err"
    awk '/^imgdecode: [0-9]+\/[0-9]+ images/ { if (seen++) next } { print }' "$tmp/$name.err" >"$tmp/$name.err2" &&
        mv "$tmp/$name.err2" "$tmp/$name.err"
    if [ "${UPDATE:-0}" = 1 ]; then
        cp "$tmp/$name.out" "$tmp/$name.err" "$tmp/$name.rc" "$exp/"
    fi
    local bad=
    for k in out err rc; do
        if ! diff -u "$exp/$name.$k" "$tmp/$name.$k" >"$tmp/$name.$k.diff" 2>&1; then
            bad="$bad $k"
            head -n 20 "$tmp/$name.$k.diff"
        fi
    done
    if [ -z "$bad" ]; then pass "$name: $*"; else fail "$name: $* (differs in:$bad)"; fi
}

# ---- imglist ----
golden imglist cat imglist --seed 1 tree
golden imglist-v cat imglist -v --seed 1 tree/
printf 'photo/cat/b.JPG\tout\nphoto/cat/c.png\tin\nphoto/dog/a.jpg\tin\nsketch/dog/broken.jpg\tin\nsketch/dog/d.png\tout\nsketch/zebra/e.jpg\tout\nnot/there.jpg\tin\n' >"$w/splits.tsv"
golden imglist-splits cat imglist --splits splits.tsv tree
head -n 3 "$w/splits.tsv" >"$w/some-splits.tsv"
golden imglist-splits-missing cat imglist --splits some-splits.tsv tree
golden imglist-noroot cat imglist no-such-dir
golden imglist-usage cat imglist
(cd "$w" && imglist --seed 1 tree >m.tsv && cp m.tsv "$tmp/m.tsv")
# the split of a file depends only on (seed, id): adding files changes no other row
mkdir -p "$tmp/tree2"
cp -r "$dir/tree/." "$tmp/tree2/"
cp "$dir/tree/photo/dog/a.jpg" "$tmp/tree2/photo/dog/zz-new.jpg"
(cd "$tmp" && imglist --seed 1 tree2 | sed 's|tree2/|tree/|' | grep -v zz-new >"$tmp/m3.tsv")
if cmp -s "$tmp/m.tsv" "$tmp/m3.tsv"; then pass "imglist: adding a file changes no other row"; else fail "imglist: adding a file changed other rows"; fi
# imglist lists only what imgdecode decodes: BMP, WebP, TIFF (ImageFolder
# extensions) are counted in one warning, and every listed row decodes
mkdir -p "$tmp/tree4/photo/dog"
"$py" - "$tmp/tree4/photo/dog" <<'PY'
import sys
from PIL import Image
im = Image.new("RGB", (9, 7), (200, 30, 4))
for name in ("a.jpg", "b.PNG", "c.bmp", "d.webp", "e.tif"):
    im.save(f"{sys.argv[1]}/{name}")
PY
(cd "$tmp" && imglist tree4 >m4.tsv 2>m4.err && imgdecode --size 4 m4.tsv 2>m4d.err | mpcat --check >m4.chk 2>&1)
if [ "$(grep -c . "$tmp/m4.tsv")" = 3 ] && grep -q "3 image files in formats imgdecode does not decode are not listed (the first: tree4/photo/dog/" "$tmp/m4.err" &&
    [ "$(grep -c . "$tmp/m4.err")" = 1 ] && grep -q "^ok: 1 streams, 2 records, 0 dropped" "$tmp/m4.chk"; then
    pass "imglist: lists only JPEG and PNG (what imgdecode decodes), one warning for the other images"
else
    fail "imglist: other formats: $(cat "$tmp/m4.err" "$tmp/m4d.err" "$tmp/m4.chk" | head -n 5)"
fi

# ---- imgdecode ----
golden eval stream imgdecode --size 16 m.tsv
golden eval-tolerant stream imgdecode --size 16 --max-errors 1 -v m.tsv
golden augment stream imgdecode --augment --views 2 --seed 3 --size 12 --max-errors 1 m.tsv
mkdir -p "$w/sub"
golden root stream imgdecode --size 8 --root sub/.. --max-errors 1 m.tsv
printf 'id\tpath\tlabel\na\ttree/photo/dog/a.jpg\tx\n\ttree/photo/dog/a.jpg\t1\nc\ttree/photo/dog/a.jpg\t2\n' >"$w/bad.tsv"
golden bad-rows stream imgdecode --size 4 --max-errors 2 bad.tsv
# an id twice (a manifest listed twice): no later tool could join the
# stream, so it fails at once whatever --max-errors, naming both lines
{ cat "$tmp/m.tsv"; sed -n 3p "$tmp/m.tsv"; } >"$w/dup.tsv"
golden dup-id stream imgdecode --size 4 --max-errors 5 dup.tsv
# no rows: an error unless --allow-empty
: >"$w/empty.tsv"
head -n 1 "$tmp/m.tsv" >"$w/header-only.tsv"
golden empty cat imgdecode --size 4 empty.tsv
golden header-only cat imgdecode --size 4 -o out.mp header-only.tsv
golden allow-empty stream imgdecode --size 4 --allow-empty header-only.tsv
golden views-without-augment cat imgdecode --views 2 m.tsv
golden views-too-many cat imgdecode --augment --views 100000 --size 224 m.tsv
golden bad-size cat imgdecode --size 0 m.tsv
golden missing-manifest cat imgdecode no-such-manifest.tsv
# a manifest written in another directory: its relative paths are not found
# here; said once, with the fix, and the run stops after --max-errors
# instead of reporting every row
golden root-hint cat bash -c "cd sub && imgdecode --size 4 --max-errors 2 ../m.tsv >/dev/null"
{ printf 'id\tpath\n'; for i in $(seq 20); do printf 'x%d\tnowhere/x%d.jpg\n' $i $i; done; } >"$w/missing.tsv"
golden missing-stops cat bash -c "imgdecode --size 4 --max-errors 3 missing.tsv >/dev/null"
golden help cat imgdecode --help
golden imglist-help cat imglist --help

# -o writes atomically: a run that fails leaves no file behind, also when it
# stops for too many dropped files
(cd "$w" && imgdecode --size 8 -o "$tmp/out.mp" m.tsv 2>"$tmp/out.err")
rc=$?
if [ $rc = 1 ] && [ ! -e "$tmp/out.mp" ] && ! ls "$tmp"/out.mp.* >/dev/null 2>&1 && grep -q 'more than 0 items dropped' "$tmp/out.err"; then
    pass "imgdecode -o: more dropped than --max-errors: exit 1 and no output file"
else
    fail "imgdecode -o: exit $rc, or a file left behind after too many dropped files"
fi
(cd "$w" && imgdecode --size 8 --max-errors 1 -o "$tmp/out.mp" m.tsv 2>/dev/null)
rc=$?
if [ $rc = 0 ] && mpcat --check "$tmp/out.mp" | grep -q '1 dropped upstream'; then
    pass "imgdecode -o: within --max-errors: exit 0, complete stream counting the dropped file"
else
    fail "imgdecode -o: within --max-errors: exit $rc or an incomplete stream"
fi
# the stream on stdout of a failed run has no trailer: readers downstream fail
(cd "$w" && imgdecode --size 8 m.tsv 2>/dev/null) | mpcat --check >/dev/null 2>"$tmp/chk.err"
if [ "${PIPESTATUS[0]}" = 1 ] && grep -q 'without a trailer' "$tmp/chk.err"; then
    pass "imgdecode: a failed run's stream ends without its trailer (mpcat --check refuses it)"
else
    fail "imgdecode: a failed run's stream looks complete downstream"
fi
(cd "$w" && imgdecode --size 8 -o "$tmp/none.mp" no-such.tsv 2>/dev/null)
if [ ! -e "$tmp/none.mp" ] && ! ls "$tmp"/none.mp.* >/dev/null 2>&1; then
    pass "imgdecode -o: no output file when the manifest cannot be read"
else
    fail "imgdecode -o: left a file after failing"
fi

# a 200 MB manifest line under a 150 MB memory limit: reported and dropped,
# never taken for the end of the manifest (an exit 0 with an empty stream)
[ -z "${VL2V_SANITIZED:-}" ] &&
{ printf 'id\tpath\n'; head -c 200000000 /dev/zero | tr '\0' a; printf '\nx\tnone.png\n'; } |
    (ulimit -v 150000; imgdecode --size 8 --max-errors 2 2>"$tmp/long.err") | mpcat --check >"$tmp/long.out" 2>&1
if [ -n "${VL2V_SANITIZED:-}" ]; then
    # a sanitizer's shadow memory does not fit under the limit (make check-asan)
    echo "SKIP: imgdecode: a huge manifest line under a memory limit: not under a sanitizer"
elif grep -q '0 records, 2 dropped upstream' "$tmp/long.out" && grep -q '<stdin>:2: line longer than' "$tmp/long.err"; then
    pass "imgdecode: a huge manifest line costs no memory: dropped with its line number, reading goes on"
else
    fail "imgdecode: huge manifest line: $(cat "$tmp/long.out")"
fi

# a stream is never written to a terminal; warnings replace a progress line
# instead of running on after it (script(1) gives the commands a terminal)
if command -v script >/dev/null; then
    (cd "$w" && script -qec "imgdecode --size 8 m.tsv" /dev/null >"$tmp/tty.out" 2>&1)
    rc=$?
    (cd "$w" && script -qec "imgdecode --size 8 m.tsv | cat >/dev/null" /dev/null >"$tmp/tty2.out" 2>&1)
    (cd "$w" && script -qec "imglist --seed 1 tree" /dev/null | tr -d '\r' >"$tmp/tty3.out" 2>&1)
    if cmp -s "$tmp/tty3.out" "$tmp/m.tsv"; then
        pass "imglist on a terminal: the manifest (text) is shown there"
    else
        fail "imglist on a terminal: $(head -n 2 "$tmp/tty3.out")"
    fi
    if [ $rc = 2 ] && grep -q "standard output is a terminal" "$tmp/tty.out" && ! grep -qP "images/s\\x1b\\[Kimgdecode" "$tmp/tty2.out"; then
        pass "imgdecode on a terminal: refuses to write the stream there (exit 2); messages start on their own line"
    else
        fail "imgdecode on a terminal: exit $rc: $(head -c 300 "$tmp/tty.out" "$tmp/tty2.out" | tr '\r\033' '^[')"
    fi
fi

# mpcat joins shards of one run only: a header setting that differs is refused
(cd "$w" && imgdecode --size 8 --max-errors 1 m.tsv >"$tmp/s8.mp" 2>/dev/null &&
    imgdecode --size 16 --max-errors 1 m.tsv >"$tmp/s16.mp" 2>/dev/null &&
    imgdecode --augment --seed 1 --size 8 --max-errors 1 m.tsv >"$tmp/a1.mp" 2>/dev/null &&
    imgdecode --augment --seed 2 --size 8 --max-errors 1 m.tsv >"$tmp/a2.mp" 2>/dev/null)
mpcat "$tmp/s8.mp" "$tmp/s16.mp" >/dev/null 2>"$tmp/j1.err"
rc1=$?
mpcat "$tmp/a1.mp" "$tmp/a2.mp" >/dev/null 2>"$tmp/j2.err"
rc2=$?
# two shards of the --size 8 run: the manifest's first row, and the others
(cd "$w" && head -n 2 m.tsv | imgdecode --size 8 --max-errors 1 >"$tmp/s8a.mp" 2>/dev/null &&
    { head -n 1 m.tsv; tail -n +3 m.tsv; } | imgdecode --size 8 --max-errors 1 >"$tmp/s8b.mp" 2>/dev/null)
if [ $rc1 = 1 ] && grep -q "'size' differs" "$tmp/j1.err" && [ $rc2 = 1 ] && grep -q "'seed' differs" "$tmp/j2.err" &&
    mpcat "$tmp/s8a.mp" "$tmp/s8b.mp" | mpcat --check >/dev/null; then
    pass "mpcat refuses to join image streams made with another --size or --seed, joins the same run's shards"
else
    fail "mpcat joined image streams of different runs, or not the shards of one (exit $rc1, $rc2)"
fi
mpcat "$tmp/s8.mp" "$tmp/s8a.mp" >/dev/null 2>"$tmp/j3.err"
if [ $? = 1 ] && grep -q "s8a.mp: record 1 (id '.*'): duplicate (id, view), first at .*s8.mp: record 1" "$tmp/j3.err"; then
    pass "mpcat refuses a shard joined twice, naming the id and where it came first"
else
    fail "mpcat joined a shard twice ($(cat "$tmp/j3.err"))"
fi

# mpcmp pairs the items of augmented streams by (id, view)
(cd "$w" && imgdecode --augment --views 2 --size 8 --max-errors 1 m.tsv >"$tmp/v1.mp" 2>/dev/null &&
    { head -n 1 m.tsv; tail -n +2 m.tsv | sort -r; } | imgdecode --augment --views 2 --size 8 --max-errors 1 >"$tmp/v2.mp" 2>/dev/null &&
    imgdecode --augment --views 2 --seed 5 --size 8 --max-errors 1 m.tsv >"$tmp/v3.mp" 2>/dev/null)
mpcmp --atol 0 --rtol 0 "$tmp/v1.mp" "$tmp/v2.mp" >"$tmp/cmp1.out" 2>&1
rc1=$?
mpcmp --atol 0 --rtol 0 "$tmp/v1.mp" "$tmp/v3.mp" >"$tmp/cmp2.out" 2>&1
rc2=$?
if [ $rc1 = 0 ] && grep -q '^10 pairs compared (by id)' "$tmp/cmp1.out" && [ $rc2 = 1 ] && grep -q "view [01]" "$tmp/cmp2.out"; then
    pass "mpcmp pairs augmented views by (id, view): another row order is equal, another seed differs"
else
    fail "mpcmp on augmented views: exit $rc1, $rc2: $(head -n 2 "$tmp/cmp1.out")"
fi

# ---- pipelines/pacs-images.mk on the tree (its sketch domain holds a broken JPEG) ----
pm="make -s --no-print-directory -f $root/pipelines/pacs-images.mk PACS=$dir/tree OUT=$tmp/pipe DOMAINS=sketch SIZE=8"
$pm eval >/dev/null 2>"$tmp/pipe.err"
rc=$?
if [ $rc != 0 ] && grep -q "broken.jpg: corrupt JPEG" "$tmp/pipe.err" && [ ! -e "$tmp/pipe/pacs/eval/sketch.mp" ]; then
    pass "pacs-images.mk: a stage that drops too much fails, shows its log's end (the bad file) and leaves no stream"
else
    fail "pacs-images.mk: exit $rc, bad file not shown or a stream left behind"
fi
if $pm MAX_ERRORS=1 eval >/dev/null 2>&1 && mpcat --check "$tmp/pipe/pacs/eval/sketch.mp" | grep -q '2 records, 1 dropped upstream'; then
    pass "pacs-images.mk MAX_ERRORS=1: the stream holds the good images and counts the dropped one"
else
    fail "pacs-images.mk MAX_ERRORS=1"
fi

# ---- man pages: lint, and --help's usage lines are the SYNOPSIS ----
for t in imgdecode imglist; do
    page=$root/man/$t.1
    syn=$(mandoc -Tascii -O width=250 "$page" 2>/dev/null | col -bx | awk '/^SYNOPSIS/ {on = 1; next} /^[A-Z]/ {on = 0} on' | tr -s ' \n' '  ' | sed 's/^ //; s/ $//')
    help=$("$t" --help | awk '/^  -/ {exit} 1' | sed 's/^usage: //; s/^       //' | tr -s ' \n' '  ' | sed 's/^ //; s/ $//')
    if [ -n "$syn" ] && [ "$syn" = "$help" ]; then
        pass "$t --help usage equals the SYNOPSIS of man/$t.1"
    else
        fail "$t --help differs from man/$t.1: '$help' vs '$syn'"
    fi
    if mandoc -Tlint -W warning "$page" >"$tmp/lint.txt" 2>&1; then
        pass "mandoc -Tlint -W warning man/$t.1"
    else
        fail "mandoc -Tlint man/$t.1"
        cat "$tmp/lint.txt"
    fi
done

# ---- Fashion-MNIST (Debian's dataset-fashion-mnist) ----
fm=/usr/share/datasets/fashion-mnist
if [ -r "$fm/train-images-idx3-ubyte.gz" ]; then
    imglist --fashion-mnist "$fm" >"$tmp/fm.tsv"
    n=$(($(wc -l <"$tmp/fm.tsv") - 1))
    ntest=$(grep -c $'\ttest$' "$tmp/fm.tsv")
    if [ "$n" = 70000 ] && [ "$ntest" = 10000 ]; then
        pass "imglist --fashion-mnist: 60000 train + 10000 test rows"
    else
        fail "imglist --fashion-mnist: $n rows, $ntest test"
    fi
    { head -n 4 "$tmp/fm.tsv"; sed -n '60001,60003p;70001p' "$tmp/fm.tsv"; } >"$tmp/fm-head.tsv"
    imgdecode --size 28 "$tmp/fm-head.tsv" >"$tmp/fm.mp"
    if "$py" - "$tmp/fm.mp" "$tmp/fm-head.tsv" <<'EOF'; then
import gzip, sys, msgpack, numpy as np
names = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
u = msgpack.Unpacker(open(sys.argv[1], "rb"), raw=False)
next(u)
items = [o for o in u if "id" in o]
assert len(items) == 7, len(items)
cache = {}
for it in items:
    f, n = it["path"].rsplit("#", 1)
    part = "train" if "/train-" in f else "t10k"
    if f not in cache:
        imgs = np.frombuffer(gzip.open(f).read()[16:], np.uint8).reshape(-1, 28, 28)
        labs = np.frombuffer(gzip.open(f.replace("images-idx3", "labels-idx1")).read()[8:], np.uint8)
        cache[f] = (imgs, labs)
    imgs, labs = cache[f]
    p = np.frombuffer(it["pix"], np.uint8).reshape(28, 28, 3)
    assert (p == imgs[int(n)][..., None]).all(), it["id"]
    assert it["label"] == labs[int(n)] and it["class"] == names[labs[int(n)]], it["id"]
EOF
        pass "imgdecode on Fashion-MNIST FILE#N paths: pixels, labels and class names equal the IDX files' (numpy)"
    else
        fail "imgdecode on Fashion-MNIST differs from the IDX files"
    fi
else
    fail "Fashion-MNIST not installed ($fm; make deps installs dataset-fashion-mnist)"
fi

# ---- ids starting with '#' (a domain folder named #art) ----
# imglist writes them after its header, where the manifest reader takes
# them as rows; a chunk without the header (parallel --pipe without
# --header) starts with such a row; --splits takes entries like them
mkdir -p "$tmp/hash/#art" "$tmp/hash/photo"
cp -r "$dir/tree/photo/." "$tmp/hash/#art/"
cp -r "$dir/tree/photo/dog" "$tmp/hash/photo/"
(cd "$tmp" && imglist --seed 1 hash >hash.tsv)
(cd "$tmp" && imgdecode --size 4 hash.tsv 2>hash.err | "$py" "$dir/render.py" >hash.txt)
n=$(grep -c "^item .*id=#art/" "$tmp/hash.txt")
if [ "$n" = 3 ] && [ "$(grep -c '^item' "$tmp/hash.txt")" = 4 ] && grep -q 'records=4' "$tmp/hash.txt" && [ ! -s "$tmp/hash.err" ]; then
    pass "ids starting with '#': imglist writes 3 of them, imgdecode decodes all 4 rows"
else
    fail "ids starting with '#': $n of 3 '#art' items ($(head -c 200 "$tmp/hash.err"))"
fi
(cd "$tmp" && tail -n +2 hash.tsv | imgdecode --size 4 2>/dev/null | "$py" "$dir/render.py" | grep -c '^item') >"$tmp/hash.n"
if [ "$(cat "$tmp/hash.n")" = 4 ]; then
    pass "ids starting with '#': a manifest without its header, starting with one, keeps all 4 rows"
else
    fail "ids starting with '#': without the header $(cat "$tmp/hash.n") of 4 rows"
fi
cut -f1,6 "$tmp/hash.tsv" | sed 's/\tin$/\tout/' >"$tmp/hash.splits"
(cd "$tmp" && imglist --splits hash.splits hash >hash2.tsv 2>hash2.err)
if [ $? = 0 ] && [ "$(awk -F'\t' 'NR > 1 && $6 == "out"' "$tmp/hash2.tsv" | wc -l)" = 4 ]; then
    pass "ids starting with '#': imglist --splits takes their entries (all 4 rows 'out')"
else
    fail "ids starting with '#': imglist --splits ($(head -c 200 "$tmp/hash2.err"))"
fi

# ---- sharding with GNU parallel --pipe, joined by mpcat ----
pacs=${SHARED:-$root/../shared}/data/PACS
if [ -d "$pacs" ]; then
    imglist "$pacs" | awk 'NR == 1 || NR % 40 == 0' >"$tmp/pacs.tsv"
    rows=$(($(wc -l <"$tmp/pacs.tsv") - 1))
    set -o pipefail
    imgdecode --augment --views 2 --seed 9 --size 64 <"$tmp/pacs.tsv" | mpcat >"$tmp/whole.mp"
    parallel --pipe -k --block 8k -j 2 imgdecode --augment --views 2 --seed 9 --size 64 \
        <"$tmp/pacs.tsv" >"$tmp/shards.mp"
    shards=$(mpcat --check "$tmp/shards.mp" | sed -n 's/^ok: \([0-9]*\) streams.*/\1/p')
    mpcat <"$tmp/shards.mp" >"$tmp/joined.mp"
    if [ "${shards:-0}" -gt 1 ] && cmp -s "$tmp/whole.mp" "$tmp/joined.mp"; then
        pass "parallel --pipe: $rows PACS rows in $shards shards, joined by mpcat, byte-identical to the unsharded stream"
    else
        fail "parallel --pipe: $shards shards; joined stream differs from the unsharded one"
    fi
    # the man page's recipe for DomainBed's own split, run as printed
    mandoc -Tascii "$root/man/imglist.1" | col -bx |
        awk '/<<.EOF.$/ {on = 1; next} on && /^ *EOF$/ {on = 0} on' | sed 's/^           //' >"$tmp/dbsplit.py"
    if "$py" "$tmp/dbsplit.py" "$pacs" 0 0.2 >"$tmp/dbsplits.tsv" && imglist --splits "$tmp/dbsplits.tsv" "$pacs" >"$tmp/db.tsv"; then
        counts=$(awk -F'\t' 'NR > 1 {n[$5]++; if ($6 == "out") o[$5]++} END {for (d in n) printf "%s=%d/%d\n", d, o[d], n[d]}' "$tmp/db.tsv" | sort | tr '\n' ' ' | sed 's/ $//')
        ok=$(awk -F'\t' 'NR > 1 {n[$5]++; if ($6 == "out") o[$5]++} END {for (d in n) if (o[d] != int(n[d] * 0.2)) bad = 1; print bad ? "no" : "yes"}' "$tmp/db.tsv")
        if [ "$ok" = yes ]; then pass "imglist(1)'s DomainBed split recipe + --splits: out = int(0.2 n) per domain ($counts)"; else fail "DomainBed split recipe: $counts"; fi
    else
        fail "imglist(1)'s DomainBed split recipe does not run"
    fi
    # another order gives the same pixels for each (id, view)
    { head -n 1 "$tmp/pacs.tsv"; tail -n +2 "$tmp/pacs.tsv" | sort -r; } |
        imgdecode --augment --views 2 --seed 9 --size 64 >"$tmp/rev.mp"
    "$py" "$dir/render.py" <"$tmp/whole.mp" | grep '^item' | sort >"$tmp/a.txt"
    "$py" "$dir/render.py" <"$tmp/rev.mp" | grep '^item' | sort >"$tmp/b.txt"
    if [ -s "$tmp/a.txt" ] && cmp -s "$tmp/a.txt" "$tmp/b.txt"; then
        pass "imgdecode --augment: reversed manifest order gives the same pixels for every (id, view)"
    else
        fail "imgdecode --augment: pixels depend on the manifest order"
    fi
    # columns in another order: parallel --header 1 repeats the header line
    awk -F'\t' -v OFS='\t' '{print $6, $2, $1, $3}' "$tmp/pacs.tsv" >"$tmp/reordered.tsv"
    parallel --pipe -k --header 1 --block 8k -j 2 imgdecode --size 32 <"$tmp/reordered.tsv" | mpcat >"$tmp/r1.mp"
    imgdecode --size 32 <"$tmp/reordered.tsv" | mpcat >"$tmp/r2.mp"
    shards=$(parallel --pipe -k --header 1 --block 8k -j 2 imgdecode --size 32 <"$tmp/reordered.tsv" | mpcat --check | sed -n 's/^ok: \([0-9]*\) streams.*/\1/p')
    if [ "${shards:-0}" -gt 1 ] && cmp -s "$tmp/r1.mp" "$tmp/r2.mp" && mpcat --check "$tmp/r1.mp" | grep -q " $rows records"; then
        pass "parallel --pipe --header 1 on a manifest with reordered columns: $shards shards, joined stream identical"
    else
        fail "parallel --pipe --header 1 on reordered columns"
    fi
    # the pipelines' own sharding command (pipelines/common.mk) on the same manifest
    sharded=$(make -s --no-print-directory -f "$root/pipelines/common.mk" \
        --eval 'print-sharded: ; @echo $(SHARDED)' print-sharded BLOCK=8k JOBS=2)
    $sharded imgdecode --size 32 <"$tmp/reordered.tsv" 2>/dev/null | mpcat >"$tmp/r3.mp" 2>/dev/null
    if cmp -s "$tmp/r3.mp" "$tmp/r2.mp"; then
        pass "pipelines/common.mk's SHARDED ($sharded) on reordered columns: joined stream identical"
    else
        fail "pipelines/common.mk's SHARDED ($sharded) loses the manifest's header in later shards"
    fi
    parallel --pipe -k --block 8k -j 2 imgdecode --size 32 <"$tmp/pacs.tsv" | mpcat >"$tmp/e1.mp"
    imgdecode --size 32 <"$tmp/pacs.tsv" | mpcat >"$tmp/e2.mp"
    if cmp -s "$tmp/e1.mp" "$tmp/e2.mp"; then
        pass "parallel --pipe, eval transform: joined shards byte-identical to the unsharded stream"
    else
        fail "parallel --pipe, eval transform: joined shards differ"
    fi
else
    fail "PACS not found at $pacs"
fi
