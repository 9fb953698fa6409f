#!/bin/bash
# text_blackbox: text-embed --exec, the black-box text tower: the prompts go
# to a vendor command as a text stream (query numbers and text only) and
# the class vectors are ensembled from its answers; teacher-embed --model is
# the vendor (it answers text streams with its text tower). Query counts,
# cache hits (a re-run never starts the vendor, and writes the same bytes),
# --max-queries, a vendor that fails or is killed mid-stream (clear error,
# no complete-looking output, what was answered kept in the cache).
set -u
: "${VL2V_ROOT:=$(cd "$(dirname "$0")/../.." && pwd)}"
: "${PYTHON:=/usr/bin/python3}"
cd "$VL2V_ROOT" || exit 1
export PATH="$VL2V_ROOT/bin:$PATH"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail=0
ok() { if [ "$1" = 0 ]; then echo "PASS: $2"; else echo "FAIL: $2"; fail=1; fi; }
BPE=share/bpe_simple_vocab_16e6.txt.gz
CN=tests/ref/classnames/pacs.txt

$PYTHON tests/ref/text_embed_ref.py make --text tiny --bpe "$BPE" --out "$tmp/m" >/dev/null || exit 1
M=$tmp/m/hf
head -n 5 tests/ref/imagenet_templates.txt >"$tmp/t5.txt"
N=35 # 7 classes x 5 templates
T=(--classes $CN --templates "$tmp/t5.txt")

. tests/golden/blackbox.inc

V="teacher-embed --model $M"
text-embed --model "$M" "${T[@]}" -o "$tmp/white.mp" || exit 1

text-embed --exec "tee $tmp/sent.mp | $V" --model-id tiny --cache "$tmp/c" "${T[@]}" >"$tmp/b1.mp" 2>"$tmp/err"
ok $? "text --exec: runs against a local vendor ($(head -c 200 "$tmp/err"))"
[ "$(summary "$tmp/b1.mp")" = "complete 7 $N 0" ]
ok $? "text --exec: 7 classes, the trailer counts $N queries (one per prompt), 0 cache hits ($(summary "$tmp/b1.mp"))"
same_items "$tmp/white.mp" "$tmp/b1.mp"
ok $? "text --exec: the class vectors equal the white-box run's (within 1e-6)"
$PYTHON - "$tmp/sent.mp" "$tmp/b1.mp" <<'PY'
import msgpack, sys
o = list(msgpack.Unpacker(open(sys.argv[1], "rb"), raw=False))
b = list(msgpack.Unpacker(open(sys.argv[2], "rb"), raw=False))
keys = set(k for it in o[1:-1] for k in it)
ok = (o[0]["schema"] == "text" and o[0]["history"] == [] and keys == {"id", "text"}
      and [it["id"] for it in o[1:-1]] == [str(i) for i in range(35)]
      and o[1]["text"] == "a bad photo of a dog." and b[0]["space"] == "text:tiny")
sys.exit(0 if ok else 1)
PY
ok $? "text --exec: the vendor sees a text stream of query numbers and prompts only; the space is text:ID"
[ "$(entries "$tmp/c")" = $N ]
ok $? "text --cache: one entry per prompt"

text-embed --exec "touch $tmp/started; $V" --model-id tiny --cache "$tmp/c" "${T[@]}" >"$tmp/b2.mp" 2>"$tmp/err"
[ $? = 0 ] && [ "$(summary "$tmp/b2.mp")" = "complete 7 0 $N" ] && [ ! -e "$tmp/started" ]
ok $? "text --cache: a re-run makes zero queries and never starts the vendor ($(summary "$tmp/b2.mp"))"
text-embed --exec "tee $tmp/sent.mp | $V" --model-id tiny --cache "$tmp/c" "${T[@]}" >"$tmp/b2.mp" 2>"$tmp/err"
same_bytes "$tmp/b1.mp" "$tmp/b2.mp"
ok $? "text --cache: the same command gives the same bytes (header and items) from the cache as from queries"
text-embed --exec "$V" --model-id other --cache "$tmp/c" "${T[@]}" >"$tmp/b3.mp" 2>"$tmp/err"
[ "$(summary "$tmp/b3.mp")" = "complete 7 $N 0" ]
ok $? "text --cache: another --model-id shares no answers ($(summary "$tmp/b3.mp"))"
printf 'giraffe\ncat\n' >"$tmp/two.txt"
text-embed --exec "$V" --model-id tiny --cache "$tmp/c" --classes "$tmp/two.txt" --templates "$tmp/t5.txt" >"$tmp/b4.mp" 2>"$tmp/err"
[ "$(summary "$tmp/b4.mp")" = "complete 2 5 5" ]
ok $? "text --cache: only the prompts not seen before are queried ($(summary "$tmp/b4.mp"))"

# budget
text-embed --exec "$V" --model-id tiny --cache "$tmp/q" --max-queries 10 "${T[@]}" >"$tmp/q1.mp" 2>"$tmp/err"
rc=$?
[ $rc = 1 ] && grep -q "class 'giraffe', prompt 'a bad photo of a giraffe.': query budget of 10 exceeded" "$tmp/err" &&
    [ "$(summary "$tmp/q1.mp" | cut -d' ' -f1)" = incomplete ] && [ "$(entries "$tmp/q")" = 10 ]
ok $? "text --max-queries: exceeding it is a clear error naming the prompt, no trailer, the 10 paid answers cached (rc $rc: $(head -c 300 "$tmp/err"))"
text-embed --exec "$V" --model-id tiny --cache "$tmp/q" --max-queries $((N - 10)) "${T[@]}" >"$tmp/q2.mp" 2>"$tmp/err"
[ $? = 0 ] && [ "$(summary "$tmp/q2.mp")" = "complete 7 $((N - 10)) 10" ] && same_items "$tmp/white.mp" "$tmp/q2.mp"
ok $? "text --max-queries: a budget of exactly the missing prompts suffices ($(summary "$tmp/q2.mp"))"
text-embed --exec "$V" --model-id tiny --max-queries 0 "${T[@]}" >/dev/null 2>"$tmp/err"
[ $? = 1 ] && grep -q "query budget of 0 exceeded.*there is no --cache" "$tmp/err"
ok $? "text --max-queries 0 without --cache: fails, not claiming answers are kept ($(head -c 200 "$tmp/err"))"

# a vendor killed after answering K prompts
K=12
killing_vendor "$tmp/vendor.py" "$V --batch 1" $K
text-embed --exec "exec $PYTHON $tmp/vendor.py" --model-id tiny --cache "$tmp/k" "${T[@]}" -o "$tmp/k1.mp" 2>"$tmp/err"
rc=$?
[ $rc = 1 ] && grep -q "killed by signal 9" "$tmp/err" && grep -q "failed after $K of $N answers" "$tmp/err" &&
    [ ! -e "$tmp/k1.mp" ] && [ -z "$(ls "$tmp" | grep '^k1\.mp')" ] && [ "$(entries "$tmp/k")" = $K ]
ok $? "text, killed vendor: exit 1 with a clear error, no output file, the $K answers cached (rc $rc: $(head -c 300 "$tmp/err"))"
text-embed --exec "$V" --model-id tiny --cache "$tmp/k" "${T[@]}" >"$tmp/k2.mp" 2>"$tmp/err"
[ "$(summary "$tmp/k2.mp")" = "complete 7 $((N - K)) $K" ] && same_items "$tmp/white.mp" "$tmp/k2.mp"
ok $? "text, killed vendor: the re-run queries only the $((N - K)) unanswered prompts ($(summary "$tmp/k2.mp"))"

# a vendor that stops answering: --timeout
hanging_vendor "$tmp/hang.py" "$V --batch 1" $K
text-embed --exec "exec $PYTHON $tmp/hang.py" --model-id tiny --timeout 1 --cache "$tmp/h" "${T[@]}" -o "$tmp/h1.mp" 2>"$tmp/err"
rc=$?
[ $rc = 1 ] && grep -q "failed after $K of [0-9]* answers (killed by signal 9): nothing came for 1 s (--timeout) while query $K (class '[a-z]*', prompt '.*') waited" "$tmp/err" &&
    [ ! -e "$tmp/h1.mp" ] && [ "$(entries "$tmp/h")" = $K ]
ok $? "text --timeout: a hung vendor is killed, exit 1 naming the answers and the waiting prompt, the answers cached (rc $rc: $(head -c 300 "$tmp/err"))"

# other failures of the vendor
text-embed --exec "exit 3" --model-id x "${T[@]}" >"$tmp/e.mp" 2>"$tmp/err"
[ $? = 1 ] && grep -q "exit status 3" "$tmp/err" && [ "$(summary "$tmp/e.mp" | cut -d' ' -f1)" = incomplete ]
ok $? "text: a vendor that exits at once is a clear error ($(head -c 200 "$tmp/err"))"
text-embed --exec "cat >/dev/null; echo garbage" --model-id x "${T[@]}" >"$tmp/e.mp" 2>"$tmp/err"
[ $? = 1 ] && grep -q "not a vl2v stream" "$tmp/err" && [ "$(summary "$tmp/e.mp" | cut -d' ' -f1)" = incomplete ]
ok $? "text: a vendor that answers garbage is a clear error ($(head -c 200 "$tmp/err"))"
text-embed --exec "teacher-embed --model $tmp/m/nomodel" --model-id x "${T[@]}" >"$tmp/e.mp" 2>"$tmp/err"
[ $? = 1 ] && grep -q "failed after 0 of" "$tmp/err" && grep -q "nomodel" "$tmp/err"
ok $? "text: a vendor that fails reports its own error first ($(head -c 300 "$tmp/err" | tr '\n' '|'))"
text-embed --exec "$V" --bpe "$BPE" "${T[@]}" >/dev/null 2>&1
[ $? = 2 ]
ok $? "text --exec with --bpe is a usage error"
text-embed --model "$M" --cache "$tmp/c" "${T[@]}" >/dev/null 2>&1
[ $? = 2 ]
ok $? "text --model with --cache is a usage error"
teacher-embed --exec "$V" --model-id x <"$tmp/sent.mp" >/dev/null 2>"$tmp/err"
[ $? = 1 ] && grep -q "text stream goes to --model" "$tmp/err"
ok $? "teacher-embed --exec refuses a text stream, pointing to text-embed --exec ($(head -c 200 "$tmp/err"))"

# teacher-embed's man page: --help's usage is its SYNOPSIS (text-embed's is
# checked by tests/ref/text_embed.sh); mandoc finds nothing to warn about
syn=$(mandoc -Tascii -O width=250 man/teacher-embed.1 2>/dev/null | col -bx |
    awk '/^SYNOPSIS/ {on = 1; next} /^[A-Z]/ {on = 0} on' | tr -s ' \n' '  ' | sed 's/^ //; s/ $//')
help=$(teacher-embed --help | awk '/^  -/ {exit} 1' | sed 's/^usage: //; s/^       //' | tr -s ' \n' '  ' | sed 's/^ //; s/ $//')
ok $([ -n "$syn" ] && [ "$syn" = "$help" ]; echo $?) "teacher-embed --help's usage is the SYNOPSIS of man/teacher-embed.1"
mandoc -Tlint -W warning man/teacher-embed.1 >/dev/null 2>&1
ok $? "mandoc -Tlint -W warning man/teacher-embed.1"
exit $fail
