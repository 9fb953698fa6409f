#!/bin/bash
# score.sh: score's interface, its tables on a small hand-made case and its
# error paths with message and exit status (the figures over many random
# runs are checked against numpy in tests/ref/predict_score.sh).
set -u
cd "${VL2V_ROOT:-$(dirname "$0")/../..}" || exit 2
PY=${PYTHON:-/usr/bin/python3}
d=$(mktemp -d)
trap 'rm -rf "$d"' EXIT
ok() { if [ "$1" = 0 ]; then echo "PASS: score: $2"; else echo "FAIL: score: $2"; fi; }
# expect STATUS MESSAGE -- ARGS: score ARGS exits STATUS with stderr MESSAGE and prints nothing
expect() {
    local want=$1 msg=$2
    shift 3
    score "$@" >"$d/o" 2>"$d/e"
    local rc=$?
    if [ $rc = "$want" ] && [ "$(cat "$d/e")" = "$msg" ] && [ ! -s "$d/o" ]; then
        echo "PASS: score: ${msg%%$'\n'*} (exit $rc)"
    else
        echo "FAIL: score: exit $rc, want $want; stderr:"; cat "$d/e"; echo "want: $msg"
    fi
}

"$PY" - "$d" <<'PY' || { echo "FAIL: score: making the fixtures"; exit 1; }
import sys, msgpack
d = sys.argv[1]
def stream(path, method, seed, sources, items, settings="{}", mode="wb", classes=("a", "b"), first=0):
    with open(path, mode) as f:
        f.write(msgpack.packb({"schema": "prediction", "version": 1, "history": [["gen"]], "classes": list(classes),
                               "method": method, "seed": seed, "sources": sources, "settings": settings}))
        for i, (pred, label, dom, split) in enumerate(items):
            it = {"id": "x%d" % (first + i), "pred": pred, "logits": bytes(4 * len(classes)), "domain": dom, "split": split}
            if label is not None:
                it["label"] = label
            f.write(msgpack.packb(it, use_bin_type=True))
        f.write(msgpack.packb({"end": True, "records": len(items), "dropped": 0}))
# two domains p, q; erm held out p (seeds 0, 1) and q (seed 0); zero-shot on both
stream(d + "/e0p.mp", "erm", 0, ["q"], [(0, 0, "p", "in"), (1, 0, "p", "in"), (1, 1, "p", "out"), (0, 0, "q", "in")])
stream(d + "/e1p.mp", "erm", 1, ["q"], [(0, 0, "p", "in"), (0, 0, "p", "in"), (0, 1, "p", "out"), (0, None, "p", "in")])
stream(d + "/e0q.mp", "erm", 0, ["p"], [(1, 1, "q", "in"), (1, 0, "q", "out")])
stream(d + "/zs.mp", "zeroshot", None, [], [(0, 0, "p", "in"), (1, 0, "p", "in"), (1, 1, "q", "in"), (0, 0, "q", "out")])
stream(d + "/e2p.mp", "erm", 2, ["q"], [(0, 0, "p", "in")], settings='{"lr":0.1}')
stream(d + "/dup.mp", "erm", 0, ["q"], [(0, 0, "p", "in")])
stream(d + "/lab.mp", "erm", 0, ["q"], [(0, 0, "p", "in"), (0, 5, "p", "in")])
stream(d + "/join.mp", "erm", 0, ["q"], [(0, 0, "p", "in")])
stream(d + "/join.mp", "erm", 1, ["q"], [(0, 0, "p", "in")], mode="ab")
stream(d + "/shards.mp", "erm", 0, ["q"], [(0, 0, "p", "in")])
stream(d + "/shards.mp", "erm", 0, ["q"], [(1, 0, "p", "in")], mode="ab", first=1)
with open(d + "/emb.mp", "wb") as f:
    f.write(msgpack.packb({"schema": "embedding", "version": 1, "dim": 1, "dtype": "f32le", "space": "x"}))
    f.write(msgpack.packb({"end": True, "records": 0, "dropped": 0}))
PY

out=$(score --help); rc=$?
[ $rc = 0 ] && [[ $out == "usage: score "* ]]; ok $? "--help prints the usage on stdout, exit 0"
syn=$(sed -n '/^\.Sh SYNOPSIS/,/^\.Sh DESCRIPTION/p' man/score.1 | grep -c '^\.Op Fl\|^\.Ar')
[ "$syn" -ge 6 ]; ok $? "man page SYNOPSIS lists the options of --help ($syn)"
score >/dev/null 2>&1; [ $? = 2 ]; ok $? "no file: usage error, exit 2"
score --tsv --json "$d/zs.mp" >/dev/null 2>&1; [ $? = 2 ]; ok $? "--tsv and --json: usage error, exit 2"

cat >"$d/want" <<EOF
$d/e1p.mp: method erm, seed 1, sources q

| domain | held out | split | correct | total | accuracy |
| --- | --- | --- | --- | --- | --- |
| p | yes | in | 2 | 2 | 100.00 |
| p | yes | out | 0 | 1 | 0.00 |
| p | yes | all | 2 | 3 | 66.67 |

1 items without a label are not counted.
EOF
score "$d/e1p.mp" >"$d/got" 2>"$d/e"; rc=$?
[ $rc = 0 ] && [ ! -s "$d/e" ] && diff "$d/want" "$d/got"; ok $? "one run: accuracy per domain x split and per domain"

# erm: p in: seeds 0 (1/2 = 50) and 1 (2/2 = 100): 75 +/- 25 / sqrt(2); q in: 100; whole p: 2/3 and 2/3
cat >"$d/want" <<EOF
held-out domain, split 'in' (DomainBed):

| method | p | q | avg |
| --- | --- | --- | --- |
| erm | 75.0 +/- 17.7 | 100.0 +/- 0.0 | 87.5 |
| zeroshot | 50.0 +/- 0.0 | 100.0 +/- 0.0 | 75.0 |

whole held-out domain (the release):

| method | p | q | avg |
| --- | --- | --- | --- |
| erm | 66.7 +/- 0.0 | 50.0 +/- 0.0 | 58.3 |
| zeroshot | 50.0 +/- 0.0 | 100.0 +/- 0.0 | 75.0 |
EOF
score "$d/e0p.mp" "$d/e1p.mp" "$d/e0q.mp" "$d/zs.mp" >"$d/got" 2>"$d/e"; rc=$?
[ $rc = 0 ] && [ ! -s "$d/e" ] && diff "$d/want" "$d/got"
ok $? "runs: a row per method, a column per held-out domain, mean +/- SE over seeds, zero-shot in every column"
score --tsv "$d/e0p.mp" "$d/e1p.mp" "$d/e0q.mp" | grep -qx $'in\term\tp\t75.000000\t17.677670\t2'
ok $? "--tsv: a line per cell"
score --split out "$d/e0p.mp" "$d/e1p.mp" | grep -q '^| erm | 50.0 +/- 35.4 | X | X |$'
ok $? "--split out: the other split; a column no run fills is X, and so is the average"
score "$d/shards.mp" 2>/dev/null | grep -q '^| p | yes | in | 1 | 2 | 50.00 |$'
ok $? "two shards of one run back to back in one file: one run"
score --mixed "$d/e0p.mp" "$d/e2p.mp" >/dev/null 2>&1; [ $? = 0 ]; ok $? "--mixed: other settings in one row"

expect 1 "score: $d/e2p.mp: method 'erm' with settings '{\"lr\":0.1}', but $d/e0p.mp has settings '{}': one row holds one setting (--mixed puts them together)" -- \
    "$d/e0p.mp" "$d/e2p.mp"
expect 1 "score: $d/dup.mp: method 'erm', seed 0, held-out domain 'p' again (first in $d/e0p.mp): which run counts?" -- \
    "$d/e0p.mp" "$d/dup.mp"
expect 1 "score: $d/join.mp: stream 2: header: 'seed' is not that of stream 1: the streams do not join (one run a file)" -- \
    "$d/join.mp"
expect 1 "score: $d/lab.mp: record 2 (id 'x1'): label 5 is no class (2 classes): dropped
score: more than 0 items dropped (--max-errors 0)" -- "$d/lab.mp"
expect 1 "score: $d/emb.mp: header: schema is 'embedding', expected 'prediction'" -- "$d/emb.mp"
score --max-errors 1 "$d/lab.mp" 2>/dev/null | grep -q '^| p | yes | in | 1 | 1 | 100.00 |$'
ok $? "--max-errors 1: the bad item dropped, the rest scored"
