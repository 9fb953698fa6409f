#!/bin/bash
# teacher_blackbox: teacher-embed --exec against a local vendor (teacher-embed
# --model on a tiny random CLIP): answers equal white-box ones, the cache
# answers re-runs without queries, a vendor killed mid-stream is a clear
# error with no complete-looking output, a budget is enforced, a damaged
# cache entry is detected and queried again, and concurrent writers agree;
# a bad answer (NaN, wrong size) drops its item only, the vendor holds no
# descriptor of ours, and a repeated (id, view) in the input is refused.
set -u
: "${VL2V_ROOT:=$(cd "$(dirname "$0")/../.." && pwd)}"
: "${PYTHON:=/usr/bin/python3}"
cd "$VL2V_ROOT" || exit 1
export PATH="$VL2V_ROOT/bin:$PATH"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail=0
ok() { if [ "$1" = 0 ]; then echo "PASS: $2"; else echo "FAIL: $2"; fail=1; fi; }

$PYTHON tests/ref/clip_ref.py make --config tiny --out "$tmp/m" --images 12 --texts 1 >/dev/null || exit 1
M="$tmp/m/hf"
IN="$tmp/m/images.mp"
N=12

. tests/golden/blackbox.inc

# the vendor: any command reading an image stream and writing an embedding stream
V="teacher-embed --model $M --batch 4"
teacher-embed --model "$M" <"$IN" >"$tmp/white.mp"

teacher-embed --exec "tee $tmp/sent.mp | $V" --model-id tiny --cache "$tmp/c" <"$IN" >"$tmp/b1.mp" 2>"$tmp/err"
ok $? "--exec: runs against a local vendor"
[ "$(summary "$tmp/b1.mp")" = "complete $N $N 0" ]
ok $? "--exec: trailer counts $N queries, 0 cache hits ($(summary "$tmp/b1.mp"))"
same_items "$tmp/white.mp" "$tmp/b1.mp"
ok $? "--exec: items (ids, labels, vectors) equal the white-box run's"
$PYTHON - "$tmp/sent.mp" <<'PY'
import msgpack, sys
o = list(msgpack.Unpacker(open(sys.argv[1], "rb"), raw=False))
keys = set(k for it in o[1:-1] for k in it)
sys.exit(0 if keys == {"id", "h", "w", "pix"} and o[0]["history"] == [] else 1)
PY
ok $? "--exec: the vendor sees pixels and query numbers only (no ids, labels or history)"
[ "$(entries "$tmp/c")" = $N ]
ok $? "--cache: one entry per image"

teacher-embed --exec "touch $tmp/started; $V" --model-id tiny --cache "$tmp/c" <"$IN" >"$tmp/b2.mp" 2>"$tmp/err"
ok $? "--cache: a re-run succeeds"
[ "$(summary "$tmp/b2.mp")" = "complete $N 0 $N" ] && [ ! -e "$tmp/started" ]
ok $? "--cache: a re-run makes zero queries and never starts the vendor ($(summary "$tmp/b2.mp"))"
same_items "$tmp/b1.mp" "$tmp/b2.mp"
ok $? "--cache: the items from the cache equal those from queries"
teacher-embed --exec "tee $tmp/sent.mp | $V" --model-id tiny --cache "$tmp/c" <"$IN" >"$tmp/b3.mp" 2>"$tmp/err"
[ "$(summary "$tmp/b3.mp")" = "complete $N 0 $N" ] && same_bytes "$tmp/b1.mp" "$tmp/b3.mp"
ok $? "--cache: the same command gives the same bytes (header and items) from the cache as from queries"

# -v: the last line gives the totals of the run (the records written), not a
# count from the middle of it
teacher-embed -v --exec "$V" --model-id tiny <"$IN" 2>"$tmp/err" >/dev/null
tail -n 1 "$tmp/err" | grep -Eq "^teacher-embed: done: $N images, 0 dropped, [0-9.]+ images/s, [0-9.]+ s elapsed; $N queries, 0 from the cache$" &&
    head -n 1 "$tmp/err" | grep -q "^teacher-embed: 1 images"
ok $? "-v: a first progress line and a final line with the totals ($(tail -n 1 "$tmp/err"))"

# a vendor killed mid-stream after answering K images
K=5
killing_vendor "$tmp/vendor.py" "$V --batch 1" $K
teacher-embed --exec "exec $PYTHON $tmp/vendor.py" --model-id tiny --cache "$tmp/k" <"$IN" >"$tmp/k1.mp" 2>"$tmp/err"
rc=$?
[ $rc = 1 ] && grep -q "killed by signal 9" "$tmp/err" && grep -q "failed after $K of $N answers" "$tmp/err"
ok $? "killed vendor: exit 1 with a clear error (rc $rc: $(head -c 300 "$tmp/err"))"
[ "$(summary "$tmp/k1.mp" | cut -d' ' -f1)" = incomplete ]
ok $? "killed vendor: the output has no trailer, so it cannot look complete"
[ "$(entries "$tmp/k")" = $K ]
ok $? "killed vendor: the $K answered images are in the cache"
teacher-embed --exec "$V" --model-id tiny --cache "$tmp/k" <"$IN" >"$tmp/k2.mp" 2>"$tmp/err"
[ "$(summary "$tmp/k2.mp")" = "complete $N $((N - K)) $K" ]
ok $? "killed vendor: the re-run queries only the $((N - K)) unanswered images ($(summary "$tmp/k2.mp"))"
same_items "$tmp/b1.mp" "$tmp/k2.mp"
ok $? "killed vendor: the re-run's items equal an uninterrupted run's"

# budget
teacher-embed --exec "$V" --model-id tiny --cache "$tmp/q" --max-queries 3 <"$IN" >"$tmp/q1.mp" 2>"$tmp/err"
rc=$?
[ $rc = 1 ] && grep -q "query budget of 3 exceeded" "$tmp/err" && grep -q "record 4 (id '3')" "$tmp/err"
ok $? "--max-queries: exceeding the budget is a clear error (rc $rc: $(head -c 300 "$tmp/err"))"
[ "$(summary "$tmp/q1.mp" | cut -d' ' -f1)" = incomplete ] && [ "$(entries "$tmp/q")" = 3 ]
ok $? "--max-queries: no trailer; the 3 paid answers are kept in the cache"
teacher-embed --exec "$V" --model-id tiny --cache "$tmp/q" --max-queries $((N - 3)) <"$IN" >"$tmp/q2.mp" 2>"$tmp/err"
[ $? = 0 ] && [ "$(summary "$tmp/q2.mp")" = "complete $N $((N - 3)) 3" ]
ok $? "--max-queries: a budget of exactly the missing images suffices ($(summary "$tmp/q2.mp"))"
teacher-embed --model "$M" --max-queries 0 <"$IN" >/dev/null 2>"$tmp/err"
[ $? = 1 ] && grep -q "query budget of 0 exceeded" "$tmp/err" && ! grep -q "kept in\|answer so far kept" "$tmp/err"
ok $? "--max-queries applies to the white-box teacher too, and without --cache does not claim answers are kept ($(cat "$tmp/err"))"

# a damaged entry: detected by its checksum, queried again, rewritten
f=$(find "$tmp/c" -type f ! -name '.tmp*' | sort | head -1)
printf '\x7f' | dd of="$f" bs=1 seek=60 conv=notrunc status=none
teacher-embed --exec "$V" --model-id tiny --cache "$tmp/c" <"$IN" >"$tmp/d1.mp" 2>"$tmp/err"
[ $? = 0 ] && grep -q "damaged entry" "$tmp/err" && [ "$(summary "$tmp/d1.mp")" = "complete $N 1 $((N - 1))" ]
ok $? "damaged cache entry: detected, queried again ($(summary "$tmp/d1.mp"))"
same_items "$tmp/b1.mp" "$tmp/d1.mp"
ok $? "damaged cache entry: the output is unchanged"
teacher-embed --exec "$V" --model-id tiny --cache "$tmp/c" <"$IN" >"$tmp/d2.mp" 2>"$tmp/err"
[ "$(summary "$tmp/d2.mp")" = "complete $N 0 $N" ] && [ ! -s "$tmp/err" ]
ok $? "damaged cache entry: rewritten, the next run is all hits"
truncate -s 20 "$f"
teacher-embed --exec "$V" --model-id tiny --cache "$tmp/c" <"$IN" >"$tmp/d3.mp" 2>"$tmp/err"
[ "$(summary "$tmp/d3.mp")" = "complete $N 1 $((N - 1))" ]
ok $? "truncated cache entry: detected and queried again"

# several processes filling one cache at once
for i in 1 2 3; do
    teacher-embed --exec "$V --batch 1" --model-id tiny --cache "$tmp/p" <"$IN" >"$tmp/p$i.mp" 2>"$tmp/perr$i" &
done
wait
same_items "$tmp/b1.mp" "$tmp/p1.mp" && same_items "$tmp/b1.mp" "$tmp/p2.mp" && same_items "$tmp/b1.mp" "$tmp/p3.mp" &&
    [ "$(entries "$tmp/p")" = $N ] && [ -z "$(find "$tmp/p" -name '.tmp*')" ]
ok $? "concurrent writers: identical outputs, one whole entry per image, no temporaries left"
teacher-embed --exec "$V" --model-id tiny --cache "$tmp/p" <"$IN" >"$tmp/p4.mp" 2>"$tmp/err"
[ "$(summary "$tmp/p4.mp")" = "complete $N 0 $N" ] && [ ! -s "$tmp/err" ]
ok $? "concurrent writers: every entry they left is valid"

# the white-box teacher shares the cache machinery
teacher-embed --model "$M" --cache "$tmp/w" <"$IN" >"$tmp/w1.mp" 2>"$tmp/err" &&
    teacher-embed --model "$M" --cache "$tmp/w" <"$IN" >"$tmp/w2.mp" 2>>"$tmp/err"
[ $? = 0 ] && [ "$(summary "$tmp/w1.mp")" = "complete $N $N 0" ] && [ "$(summary "$tmp/w2.mp")" = "complete $N 0 $N" ] &&
    same_bytes "$tmp/w1.mp" "$tmp/w2.mp"
ok $? "--model with --cache: a re-run computes nothing and writes the same bytes"

# a vendor whose answers come out of order, or with ids that are wrong
cat >"$tmp/shuffle.py" <<PY
import msgpack, subprocess, sys
mode = sys.argv[1]
p = subprocess.Popen("$V".split(), stdout=subprocess.PIPE)
o = list(msgpack.Unpacker(p.stdout, raw=False))
head, items, tail = o[0], o[1:-1], o[-1]
if mode == "reverse":
    items = items[::-1]
elif mode == "unknown":
    items[2]["id"] = "99"
elif mode == "twice":
    items[3] = dict(items[1])
elif mode == "missing":
    del items[4]
elif mode == "extra":
    items.append(dict(items[0]))
elif mode == "dim":
    head["dim"] = head["dim"] + 1
elif mode == "bad":
    items[2]["vec"] = b"\x00\x00\xc0\x7f" + items[2]["vec"][4:]  # a NaN
    items[5]["vec"] = items[5]["vec"][:-4]  # one value short
    items[7]["vec"] = b"\x00\x00\x80\x7f" + items[7]["vec"][4:]  # +inf
tail["records"] = len(items)
for x in [head] + items + [tail]:
    sys.stdout.buffer.write(msgpack.packb(x, use_bin_type=True))
PY
teacher-embed --exec "$PYTHON $tmp/shuffle.py reverse" --model-id tiny --cache "$tmp/o" <"$IN" >"$tmp/o1.mp" 2>"$tmp/err"
[ $? = 0 ] && [ "$(summary "$tmp/o1.mp")" = "complete $N $N 0" ] && same_items "$tmp/b1.mp" "$tmp/o1.mp" &&
    [ "$(entries "$tmp/o")" = $N ]
ok $? "answers out of order: joined by id, items in input order ($(head -c 200 "$tmp/err"))"
for m in "unknown:no query sent to it has that id" "twice:answered id '1' a second time" \
    "missing:ended before query 4 was answered" "extra:more items than it was sent" "dim:'vec' has"; do
    teacher-embed --exec "$PYTHON $tmp/shuffle.py ${m%%:*}" --model-id x <"$IN" >"$tmp/e.mp" 2>"$tmp/err"
    rc=$?
    [ $rc = 1 ] && grep -q "${m#*:}" "$tmp/err" && [ "$(summary "$tmp/e.mp" | cut -d' ' -f1)" = incomplete ]
    ok $? "a vendor answering ${m%%:*} ids or sizes is a clear error, no complete output (rc $rc: $(head -c 200 "$tmp/err"))"
done

# bad answers: each drops its item (named by its input id), counted up to --max-errors
teacher-embed --exec "$PYTHON $tmp/shuffle.py bad" --model-id x <"$IN" >"$tmp/n1.mp" 2>"$tmp/err"
rc=$?
[ $rc = 1 ] && grep -q "record 3 (id '2'): the teacher's answer is bad: teacher: record 3 (id '2'): 'vec' holds NaN or infinity: dropped" "$tmp/err" &&
    grep -q "more than 0 items dropped" "$tmp/err" && [ "$(summary "$tmp/n1.mp" | cut -d' ' -f1)" = incomplete ]
ok $? "a NaN answer drops its item; past --max-errors 0 the run fails, no complete output (rc $rc: $(head -c 300 "$tmp/err"))"
teacher-embed --exec "$PYTHON $tmp/shuffle.py bad" --model-id tiny --max-errors 2 <"$IN" >"$tmp/n2.mp" 2>"$tmp/err"
[ $? = 1 ] && [ "$(grep -c ': dropped$' "$tmp/err")" = 3 ] && grep -q "more than 2 items dropped" "$tmp/err"
ok $? "three bad answers are more than --max-errors 2 ($(tail -1 "$tmp/err"))"
teacher-embed --exec "$PYTHON $tmp/shuffle.py bad" --model-id tiny --cache "$tmp/n" --max-errors 3 <"$IN" >"$tmp/n3.mp" 2>"$tmp/err"
rc=$?
$PYTHON - "$tmp/b1.mp" "$tmp/n3.mp" <<'PY'
import msgpack, sys
a, b = [list(msgpack.Unpacker(open(p, "rb"), raw=False)) for p in sys.argv[1:]]
want = [x for x in a[1:-1] if x["id"] not in ("2", "5", "7")]
t = b[-1]
sys.exit(0 if b[1:-1] == want and t["end"] and t["records"] == 9 and t["dropped"] == 3 and t["queries"] == 12 else 1)
PY
ok $([ $rc = 0 ] && [ $? = 0 ]; echo $?) "--max-errors 3: the 3 items with bad answers dropped and counted, the other 9 as a good vendor's (rc $rc)"
[ "$(entries "$tmp/n")" = 9 ] &&
    teacher-embed --exec "$V" --model-id tiny --cache "$tmp/n" <"$IN" >"$tmp/n4.mp" 2>"$tmp/err" &&
    [ "$(summary "$tmp/n4.mp")" = "complete $N 3 9" ] && same_items "$tmp/b1.mp" "$tmp/n4.mp"
ok $? "bad answers are not cached: a re-run queries those 3 only ($(summary "$tmp/n4.mp"))"

# the vendor holds its standard input and output and what we were given: not
# our input file, our output file or the other ends of its pipes
sh -c "ls /proc/\$\$/fd >$tmp/fds0" <"$IN" >/dev/null
base=$(sort "$tmp/fds0" | tr '\n' ' ')
teacher-embed --exec "ls /proc/\$\$/fd >$tmp/fds; exec $V" --model-id x -o "$tmp/f.mp" "$IN" </dev/null 2>"$tmp/err"
got=$(sort "$tmp/fds" | tr '\n' ' ')
ok $([ "$got" = "$base" ]; echo $?) "the vendor holds no descriptor of ours: [$got], a plain child [$base] ($(head -c 200 "$tmp/err"))"

# a failed vendor with -o: one message, no output file, no temporary
teacher-embed --exec "$PYTHON $tmp/shuffle.py unknown" --model-id x -o "$tmp/fo.mp" <"$IN" 2>"$tmp/err"
rc=$?
[ $rc = 1 ] && [ "$(wc -l <"$tmp/err")" = 1 ] && [ -z "$(ls "$tmp" | grep '^fo\.mp')" ]
ok $? "a failed vendor with -o: exit 1, one message, no output file or temporary (rc $rc: $(head -c 300 "$tmp/err"))"

# a repeated (id, view) in the input: refused before it is paid for twice
$PYTHON - "$IN" "$tmp/dup.mp" <<'PY'
import msgpack, sys
o = list(msgpack.Unpacker(open(sys.argv[1], "rb"), raw=False))
items = [dict(o[1], view=0), dict(o[1], view=1), dict(o[2]), dict(o[1], view=1)]
with open(sys.argv[2], "wb") as f:
    for x in [o[0]] + items + [dict(o[-1], records=len(items))]:
        f.write(msgpack.packb(x, use_bin_type=True))
PY
teacher-embed --exec "$V" --model-id x <"$tmp/dup.mp" >"$tmp/d.mp" 2>"$tmp/err"
rc=$?
[ $rc = 1 ] && grep -q "record 4 (id '0', view 1): duplicate (id, view), first at <stdin>: record 2" "$tmp/err" &&
    [ "$(summary "$tmp/d.mp" | cut -d' ' -f1)" = incomplete ]
ok $? "a repeated (id, view) in the input is an error naming it (rc $rc: $(head -c 300 "$tmp/err"))"

# other failures of the vendor
teacher-embed --exec "yes | head -1 >/dev/null; exec $V" --model-id x <"$IN" >"$tmp/e.mp" 2>"$tmp/err"
[ $? = 0 ] && ! grep -q "Broken pipe" "$tmp/err"
ok $? "the vendor runs with SIGPIPE as usual ($(head -c 200 "$tmp/err"))"
teacher-embed --exec "exit 3" --model-id x <"$IN" >"$tmp/e.mp" 2>"$tmp/err"
[ $? = 1 ] && grep -q "exit status 3" "$tmp/err" && [ "$(summary "$tmp/e.mp" | cut -d' ' -f1)" = incomplete ]
ok $? "a vendor that exits at once is a clear error ($(head -c 200 "$tmp/err"))"
teacher-embed --exec "cat >/dev/null; echo garbage" --model-id x <"$IN" >"$tmp/e.mp" 2>"$tmp/err"
[ $? = 1 ] && grep -q "teacher" "$tmp/err" && [ "$(summary "$tmp/e.mp" | cut -d' ' -f1)" = incomplete ]
ok $? "a vendor that answers garbage is a clear error ($(head -c 200 "$tmp/err"))"
teacher-embed --exec "$V" --model "$M" <"$IN" >/dev/null 2>&1
[ $? = 2 ]
ok $? "--exec with --model is a usage error"
teacher-embed --model "$M" --timeout 3 <"$IN" >/dev/null 2>&1
[ $? = 2 ]
ok $? "--timeout with --model is a usage error"

# a vendor that stops answering after K answers (it and its child live on,
# holding the pipes): --timeout kills the whole command, the error says how
# many answers came and which query (and input item) waits, the answers are
# in the cache
K=3
hanging_vendor "$tmp/hang.py" "$V --batch 1" $K
start=$(date +%s)
teacher-embed --exec "exec $PYTHON $tmp/hang.py" --model-id tiny --timeout 1 --cache "$tmp/h" <"$IN" -o "$tmp/h1.mp" 2>"$tmp/err"
rc=$?
secs=$(($(date +%s) - start))
sleep 0.2
[ $rc = 1 ] && [ $secs -lt 20 ] && grep -q "failed after $K of [0-9]* answers (killed by signal 9): nothing came for 1 s (--timeout) while query $K (<stdin>: record $((K + 1)) (id '$K')) waited" "$tmp/err" &&
    [ ! -e "$tmp/h1.mp" ] && [ "$(entries "$tmp/h")" = $K ] && ! pgrep -f "$tmp/hang.py" >/dev/null
ok $? "--timeout: a hung vendor is killed, exit 1 naming the answers and the waiting query, the $K answers cached (rc $rc, ${secs}s: $(head -c 300 "$tmp/err"))"
teacher-embed --exec "sleep 100" --timeout 0.5 <"$IN" >/dev/null 2>"$tmp/err"
rc=$?
# the killed vendor is reaped by init after teacher-embed exits: give it 2 s
for _ in $(seq 20); do pgrep -f "^sleep 100$" >/dev/null || break; sleep 0.1; done
[ $rc = 1 ] && grep -q "while its header waited" "$tmp/err" && ! pgrep -f "^sleep 100$" >/dev/null
ok $? "--timeout: a vendor that never answers is killed ($(head -c 300 "$tmp/err"))"

# a cache that cannot be written (a file where the directory should be): one
# warning, and the run succeeds
touch "$tmp/cachefile"
teacher-embed --exec "$V" --model-id tiny --cache "$tmp/cachefile" <"$IN" >"$tmp/cf.mp" 2>"$tmp/err"
[ $? = 0 ] && [ "$(grep -c cache "$tmp/err")" = 1 ] && grep -q "answers are not kept in the cache" "$tmp/err" &&
    [ "$(summary "$tmp/cf.mp")" = "complete $N $N 0" ]
ok $? "an unwritable cache: one warning, not one per image ($(head -c 300 "$tmp/err"))"
exit $fail
