#!/bin/bash
# tok: the C tokenizer (lib/tok.c, driven by build/tests/tok) against the
# Python port of CLIP's simple_tokenizer (tests/ref/tok_ref.py) on the corpus
# of tests/ref/tok_corpus.py (and on every code point of planes 0-3 and 14),
# from the real merges file and from a Hugging Face model directory
# (vocab.json + merges.txt) written from it; the clean-up alone; and the
# generated Unicode tables against a fresh generation.
set -u
cd "${VL2V_ROOT:-$(dirname "$0")/../..}" || exit 2
PYTHON=${PYTHON:-/usr/bin/python3}
SHARED=${SHARED:-$(cd .. && pwd)/shared}
BPE=$SHARED/data/clip/bpe_simple_vocab_16e6.txt.gz
TOK=build/tests/tok
tmp=$(mktemp -d) || exit 1
trap 'rm -rf "$tmp"' EXIT

fail=0
pass() { echo "PASS: $*"; }
failed() { echo "FAIL: $*"; fail=1; }

[ -x $TOK ] || { failed "tok: $TOK not built (make units)"; exit 1; }
[ -r "$BPE" ] || { failed "tok: no merges file $BPE"; exit 1; }

if $PYTHON tests/ref/tok_unicode_gen.py > "$tmp/tok_unicode.c" && cmp -s "$tmp/tok_unicode.c" lib/tok_unicode.c; then
    pass "tok: lib/tok_unicode.c is what tests/ref/tok_unicode_gen.py generates"
else
    failed "tok: lib/tok_unicode.c differs from a fresh tests/ref/tok_unicode_gen.py"
    diff "$tmp/tok_unicode.c" lib/tok_unicode.c | head -n 10
fi

$PYTHON tests/ref/tok_corpus.py > "$tmp/corpus.jsonl" || { failed "tok: corpus"; exit 1; }
n=$(wc -l < "$tmp/corpus.jsonl")

compare() { # what reference output
    if cmp -s "$2" "$3"; then
        pass "tok: $1: identical token ids on $n strings"
    else
        failed "tok: $1: token ids differ"
        paste -d '\n' "$tmp/corpus.jsonl" "$2" "$3" | awk 'NR % 3 == 1 { s = $0 } NR % 3 == 2 { a = $0 }
            NR % 3 == 0 && a != $0 { print "  text " s "\n  ref  " a "\n  C    " $0; if (++k == 5) exit }'
    fi
}

$PYTHON tests/ref/tok_ref.py "$BPE" < "$tmp/corpus.jsonl" > "$tmp/ref.txt" || { failed "tok: reference"; exit 1; }
[ "$n" -ge 1000 ] && [ "$(wc -l < "$tmp/ref.txt")" -eq "$n" ] && pass "tok: corpus of $n strings (at least 1000)" ||
    failed "tok: corpus of $n strings"
$TOK --encode "$BPE" < "$tmp/corpus.jsonl" > "$tmp/c.txt"
compare "merges file $(basename "$BPE")" "$tmp/ref.txt" "$tmp/c.txt"

# every code point of planes 0-3 and 14 in context
$PYTHON tests/ref/tok_corpus.py --all-code-points > "$tmp/all.jsonl"
$PYTHON tests/ref/tok_ref.py "$BPE" < "$tmp/all.jsonl" > "$tmp/all_ref.txt"
$TOK --encode "$BPE" < "$tmp/all.jsonl" > "$tmp/all_c.txt"
if cmp -s "$tmp/all_ref.txt" "$tmp/all_c.txt"; then
    pass "tok: every code point of planes 0-3 and 14: identical token ids ($(wc -l < "$tmp/all.jsonl") lines)"
else
    failed "tok: every code point of planes 0-3 and 14: token ids differ"
    diff "$tmp/all_ref.txt" "$tmp/all_c.txt" | head -n 4
fi

# the clean-up alone, string by string
$PYTHON - "$tmp/corpus.jsonl" <($TOK --clean < "$tmp/corpus.jsonl") <<'PY'
import json, sys
sys.path.insert(0, "tests/ref")
import tok_ref
texts = [json.loads(l) for l in open(sys.argv[1], encoding="utf-8")]
got = [l.rstrip("\n") for l in open(sys.argv[2], encoding="utf-8")]
bad = [(t, g) for t, g in zip(texts, got)
       if g.startswith("ERROR") or json.loads(g) != tok_ref.whitespace_clean(tok_ref.basic_clean(t)).lower()]
if len(got) != len(texts) or bad:
    print("FAIL: tok: clean-up differs on %d of %d strings" % (len(bad) + abs(len(got) - len(texts)), len(texts)))
    for t, g in bad[:5]:
        print("  text %s\n  ref  %s\n  C    %s" % (json.dumps(t),
              json.dumps(tok_ref.whitespace_clean(tok_ref.basic_clean(t)).lower()), g))
else:
    print("PASS: tok: clean-up (ftfy's fixes, NFC, html.unescape, spaces, lower case) identical on %d strings"
          % len(texts))
PY
[ $? = 0 ] || fail=1

# a Hugging Face directory as transformers writes it
mkdir "$tmp/hf"
$PYTHON - "$BPE" "$tmp/hf" <<'PY' || failed "tok: writing vocab.json and merges.txt"
import gzip, json, os, sys
sys.path.insert(0, "tests/ref")
import tok_ref
t = tok_ref.SimpleTokenizer(sys.argv[1])
with open(os.path.join(sys.argv[2], "vocab.json"), "w", encoding="utf-8") as f:
    json.dump(t.encoder, f, ensure_ascii=False)
merges = sorted(t.bpe_ranks, key=t.bpe_ranks.get)
with open(os.path.join(sys.argv[2], "merges.txt"), "w", encoding="utf-8") as f:
    f.write("#version: 0.2\n" + "".join(" ".join(m) + "\n" for m in merges))
PY
$TOK --encode "$tmp/hf" < "$tmp/corpus.jsonl" > "$tmp/hf.txt"
compare "vocab.json + merges.txt" "$tmp/ref.txt" "$tmp/hf.txt"

exit $fail
