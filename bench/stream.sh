#!/bin/bash
# Record-stream throughput: reading and writing embedding streams must run at
# >= 1 GB/s. Makes a large embedding stream (BENCH_STREAM_MB, default 1536
# MB, dim 512) from a NumPy array, then times, side by side in one run and
# with the file in the page cache:
#   cat FILE > /dev/null                       the floor: bytes through a pipe
#   mpcat --check FILE                         read + frame + schema checks
#   mpcat FILE > /dev/null                     read + check + write (re-encode)
#   cat FILE | mpcat > /dev/null               the same through a pipe
#   cat FILE | mpcat | cat > /dev/null         in the middle of a pipeline (vs cat | cat | cat)
#   mpnpy import X.npy > /dev/null             write a stream from raw vectors
#   dd of=Y conv=fsync                         the floor for a file written to disk
#   mpnpy export -o Y.npy FILE                 read a stream into a .npy file (fsync'ed)
# and reports GB/s (stream bytes / wall seconds) and the ratio to cat.
set -eu -o pipefail
mb=${BENCH_STREAM_MB:-1536}
dim=512
reps=${BENCH_REPS:-3}
tmp=$(mktemp -d "${TMPDIR:-/tmp}/vl2v-bench.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
rows=$((mb * 1024 * 1024 / (dim * 4 + 40)))
"$PYTHON" - "$tmp/x.npy" "$rows" "$dim" <<'PY'
import sys, numpy as np
rows, dim = int(sys.argv[2]), int(sys.argv[3])
a = np.lib.format.open_memmap(sys.argv[1], mode="w+", dtype="<f4", shape=(rows, dim))
rng = np.random.default_rng(0)
for i in range(0, rows, 65536):
    a[i:i + 65536] = rng.standard_normal((min(65536, rows - i), dim), dtype=np.float32)
a.flush()
PY
seq -f 'photo/dog/%08g.jpg' 0 $((rows - 1)) >"$tmp/ids"
mpnpy import --ids "$tmp/ids" --space bench:random -o "$tmp/s.mp" "$tmp/x.npy"
bytes=$(stat -c %s "$tmp/s.mp")
echo "stream: $rows items of dim $dim, $bytes bytes ($(awk -v b=$bytes 'BEGIN{printf "%.2f", b/1e9}') GB)"
echo "machine: $(nproc) cores, shared with other work: figures vary run to run; compare the ratios"
cat "$tmp/s.mp" >/dev/null # into the page cache

# best of $reps wall times for a command line
best() {
    local t b=
    for _ in $(seq "$reps"); do
        local s=$(date +%s.%N)
        bash -o pipefail -c "$1" >/dev/null
        t=$(awk -v a="$s" -v b="$(date +%s.%N)" 'BEGIN{print b - a}')
        b=$(awk -v t="$t" -v b="${b:-1e9}" 'BEGIN{print (t < b) ? t : b}')
    done
    echo "$b"
}
f=$tmp/s.mp
base=$(best "cat $f > /dev/null")
report() {
    local what=$1 secs=$2
    awk -v w="$what" -v s="$secs" -v n="$bytes" -v c="$base" \
        'BEGIN{printf "%-34s %7.3f s  %6.2f GB/s  %5.2fx the time of cat\n", w, s, n / s / 1e9, s / c}'
}
report "cat > /dev/null" "$base"
report "mpcat --check" "$(best "mpcat --check $f")"
report "mpcat > /dev/null" "$(best "mpcat $f > /dev/null")"
pipe_cat=$(best "cat $f | cat > /dev/null")
report "cat | cat > /dev/null" "$pipe_cat"
report "cat | mpcat > /dev/null" "$(best "cat $f | mpcat > /dev/null")"
report "cat | cat | cat > /dev/null" "$(best "cat $f | cat | cat > /dev/null")"
report "cat | mpcat | cat > /dev/null" "$(best "cat $f | mpcat | cat > /dev/null")"
report "mpnpy import > /dev/null" "$(best "mpnpy import --ids $tmp/ids $tmp/x.npy > /dev/null")"
report "dd of=y conv=fsync (disk floor)" "$(best "dd if=$f of=$tmp/y bs=1M conv=fsync status=none")"
rm -f "$tmp/y"
report "mpnpy export -o y.npy" "$(best "mpnpy export -o $tmp/y.npy $f")"
report "mpdump --head 0 (header only)" "$(best "mpdump --head 0 $f")"
