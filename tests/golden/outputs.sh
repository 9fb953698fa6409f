#!/bin/bash
# Golden tests of -o PATH on what is not a regular file: a character device
# (a private node of /dev/null's, so that a regression replaces only that
# copy; /dev/null itself when not root), a FIFO, /dev/stdout into a pipe and
# into a file, and symbolic links. The device and the FIFO must be written
# in place and stay what they were; a link must stay a link whose target is
# replaced atomically. Streams by imgdecode and mpcat, arrays by mpnpy
# export (which patches its header: in place it cannot seek), safetensors by
# stw_write (tests/unit/st.c) and text by imglist.
set -u
root=${VL2V_ROOT:-$(cd "$(dirname "$0")/../.." && pwd)}
export PATH=$root/bin:$PATH LC_ALL=C
py=${PYTHON:-/usr/bin/python3}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cd "$tmp" || exit 1
"$py" "$root/tests/ref/msgpack_interop.py" write . || { echo "FAIL: writing the test inputs"; exit 1; }
ln -s "$root/tests/golden/imgdecode/tree" tree
imglist --seed 1 tree | grep -v broken >m.tsv || { echo "FAIL: imglist"; exit 1; }

pass() { echo "PASS: $*"; }
fail() { echo "FAIL: $*"; }
# check WHAT COMMAND...: PASS when the command succeeds
check() {
    local what=$1
    shift
    if "$@"; then pass "$what"; else fail "$what"; fi
}

dev=/dev/null
mknod "$tmp/null" c 1 3 2>/dev/null && dev=$tmp/null
check "imgdecode -o a character device: exit 0, still a character device" \
    bash -c "imgdecode --size 8 -o '$dev' m.tsv && [ -c '$dev' ]"
check "mpnpy export -o a character device: exit 0, still a character device" \
    bash -c "mpnpy export -o '$dev' emb.mp && [ -c '$dev' ]"
check "mpcat -o a character device: exit 0, still a character device" \
    bash -c "mpcat -o '$dev' emb.mp && [ -c '$dev' ]"

mkfifo fifo
# each reader gives up after 20 s: a writer that replaced the FIFO by a file
# would leave it waiting for ever
# the reader checks the stream and the FIFO is still a FIFO after
check "imgdecode -o FIFO: the reader gets the whole stream, the FIFO stays" \
    bash -c "timeout 20 sh -c 'mpcat --check <fifo' >check.txt & imgdecode --size 8 -o fifo m.tsv && wait \$! && grep -q '^ok: 1 streams, 5 records' check.txt && [ -p fifo ]"
check "mpnpy export -o FIFO: numpy reads the array, the FIFO stays" \
    bash -c "timeout 20 '$py' -c 'import io, numpy, sys; a = numpy.load(io.BytesIO(open(\"fifo\", \"rb\").read())); sys.exit(0 if a.shape == (3, 4) else 1)' & mpnpy export -o fifo emb.mp && wait \$! && [ -p fifo ]"

check "imgdecode -o /dev/stdout into a pipe: a complete stream" \
    bash -c "imgdecode --size 8 -o /dev/stdout m.tsv | mpcat --check | grep -q '^ok: 1 streams, 5 records'"
check "mpnpy export -o /dev/stdout into a pipe: the array, equal to -o FILE's" \
    bash -c "mpnpy export -o x.npy emb.mp && mpnpy export -o /dev/stdout emb.mp | cmp - x.npy"
check "mpnpy export -o /dev/stdout into a file: the same bytes" \
    bash -c "mpnpy export -o /dev/stdout emb.mp >y.npy && cmp y.npy x.npy"
check "mpnpy export -o /dev/stdout --ids /dev/stderr: the ids on stderr" \
    bash -c "mpnpy export -o /dev/stdout --ids /dev/stderr emb.mp 2>ids.txt >/dev/null && [ \$(wc -l <ids.txt) = 3 ]"
# after what the shell wrote to the same file: written on, not over
check "imgdecode -o /dev/stdout after other output to the same file: appended at the offset" \
    bash -c "{ echo header; imgdecode --size 8 -o /dev/stdout m.tsv; } >both.out && head -n 1 both.out | grep -qx header && tail -c +8 both.out | mpcat --check | grep -q '5 records'"
check "imglist -o /dev/stdout: the manifest" \
    bash -c "imglist --seed 1 -o /dev/stdout tree | cmp - <(imglist --seed 1 tree)"

echo old >target.mp
mkdir sub
ln -s ../target.mp sub/link.mp
check "imgdecode -o a relative link: the link stays, its target holds the stream" \
    bash -c "imgdecode --size 8 -o sub/link.mp m.tsv && [ -L sub/link.mp ] && mpcat --check target.mp | grep -q '5 records' && ! ls sub/*.tmp.* target.mp.tmp.* 2>/dev/null"
ln -s "$tmp/new.mp" abs.mp
check "mpcat -o a dangling absolute link: the target is created, the link stays" \
    bash -c "mpcat -o abs.mp emb.mp && [ -L abs.mp ] && [ -f new.mp ] && mpcat --check new.mp | grep -q '3 records'"
ln -s target.mp failing.mp
cp target.mp before.mp
check "imgdecode -o a link, failing: the target is left as it was, no temporary" \
    bash -c "! imgdecode --size 8 -o failing.mp no-such.tsv 2>/dev/null && cmp target.mp before.mp && [ -L failing.mp ] && ! ls *.tmp.* 2>/dev/null"
mkdir adir
check "imgdecode -o a directory: exit 1, named" \
    bash -c "imgdecode --size 8 -o adir m.tsv 2>err.txt; [ \$? = 1 ] && grep -q 'adir: is a directory' err.txt"
